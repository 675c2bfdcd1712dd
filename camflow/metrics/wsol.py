"""WSOL metrics as in clovaai/wsolevaluation (Choe et al., CVPR 2020), as accumulators.

- :class:`BoxAccuracy`: box accuracy at every CAM threshold and IoU level. MaxBoxAcc(delta) is
  the best accuracy over thresholds; MaxBoxAccV2 averages it over IoU 30/50/70, with
  ``multi_contour`` taking the best IoU among all components' boxes. GT-known loc and top-1
  loc are read at IoU >= 0.5 at the threshold that is best for IoU 0.5.
- :class:`PixelAP`: PxAP, the area under the pixel precision-recall curve, from per-threshold
  score histograms of ground-truth positive and negative pixels.

Scores are fractions in [0, 1] (wsolevaluation prints percentages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from camflow.metrics.accumulator import Accumulator
from camflow.postprocess.boxes import sweep_best_iou, sweep_boxes
from camflow.postprocess.validate import (
    Rejected,
    as_numpy,
    batch_ids,
    map_range_problem,
    raise_or_collect,
    split_batch,
)

__all__ = ["BoxAccuracy", "PixelAP", "box_iou"]


def _default_thresholds() -> np.ndarray:
    return np.round(np.arange(0, 100) * 0.01, 2)


def _check_thresholds(thresholds) -> np.ndarray:
    thr = _default_thresholds() if thresholds is None else np.asarray(thresholds, np.float64)
    if thr.ndim != 1 or thr.size == 0:
        raise ValueError("thresholds must be a non-empty 1-d sequence")
    if (np.diff(thr) <= 0).any() or thr[0] < 0 or thr[-1] > 1:
        raise ValueError("thresholds must increase strictly within [0, 1]")
    return thr


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [n, m] of inclusive-corner boxes a [n, 4] and b [m, 4] (pixel counts: x1 - x0 + 1)."""
    a = np.asarray(a, np.float64)[:, None, :]
    b = np.asarray(b, np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _boxes_problem(boxes: np.ndarray, shape: tuple[int, int]) -> str | None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        return f"ground-truth boxes must be [n, 4] (x0, y0, x1, y1), got {tuple(boxes.shape)}"
    if boxes.shape[0] == 0:
        return "empty ground truth (no box)"
    if not np.isfinite(boxes).all():
        return "ground-truth boxes contain NaN or inf"
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        return "ground-truth box with x1 < x0 or y1 < y0"
    h, w = shape
    if (boxes[:, :2] < 0).any() or (boxes[:, 2] > w - 1).any() or (boxes[:, 3] > h - 1).any():
        return (
            f"ground-truth box outside the {w}x{h} score map (shape mismatch: boxes must be in "
            "the score map's pixel coordinates)"
        )
    return None


class BoxAccuracy(Accumulator):
    """Per-threshold box-accuracy counts; MaxBoxAcc, MaxBoxAccV2, GT-known and top-1 loc.

    ``thresholds`` are relative: threshold t keeps cam > t x max(cam) (wsolevaluation), or
    cam > t x the ``percentile``-th percentile when ``percentile`` < 100 (PaS, Bae et al.).
    ``iou`` levels are percentages. An image whose CAM yields no box at a threshold counts
    as a miss there.
    """

    _config = ("thresholds", "iou", "iou_levels", "multi_contour", "percentile")
    _counts = ("correct", "top1_correct", "n_images", "n_top1")

    def __init__(
        self,
        thresholds: Sequence[float] | np.ndarray | None = None,
        iou: Sequence[int] = (30, 50, 70),
        multi_contour: bool = True,
        percentile: float = 100.0,
    ) -> None:
        self.thresholds = _check_thresholds(thresholds)
        if not 0.0 < float(percentile) <= 100.0:
            raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
        self.percentile = float(percentile)
        levels = np.asarray(iou, dtype=np.int64).ravel()
        if levels.size == 0 or (levels <= 0).any() or (levels > 100).any():
            raise ValueError(f"iou levels must be percentages in (0, 100], got {list(iou)}")
        self.iou = levels
        # IoU 50 is always tracked: GT-known and top-1 loc are defined at IoU >= 0.5.
        self.iou_levels = np.unique(np.append(levels, 50))
        self.multi_contour = bool(multi_contour)
        shape = (self.iou_levels.size, self.thresholds.size)
        self.correct = np.zeros(shape, np.int64)
        self.top1_correct = np.zeros(shape, np.int64)
        self.n_images = np.zeros((), np.int64)
        self.n_top1 = np.zeros((), np.int64)

    @classmethod
    def _from_config(cls, state: dict[str, np.ndarray]) -> BoxAccuracy:
        return cls(
            state["thresholds"],
            state["iou"],
            bool(state["multi_contour"]),
            float(state["percentile"]),
        )

    def best_iou_per_threshold(self, cam: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
        """[T] best IoU with any ground-truth box among the boxes found at each threshold."""
        method = "max" if self.percentile == 100.0 else "pas"
        if self.multi_contour:
            return sweep_best_iou(cam, self.thresholds, gt_boxes, method=method,
                                  percentile=self.percentile)
        boxes, owner = sweep_boxes(cam, self.thresholds, multi_contour=False, method=method,
                                   percentile=self.percentile)
        best = np.zeros(self.thresholds.size)
        if len(boxes):
            np.maximum.at(best, owner, box_iou(boxes, gt_boxes).max(axis=1))
        return best

    def update(
        self,
        cams: Any,
        gt_boxes: Sequence[Any],
        pred_correct: Any = None,
        *,
        image_ids: Sequence[Any] | None = None,
        on_error: str = "raise",
    ) -> list[Rejected]:
        """Add score maps [B, H, W] in [0, 1] and ground-truth boxes (one [n, 4] per image).

        ``pred_correct`` (bool [B]) says whether the classifier's top-1 class was right; it
        feeds top-1 loc. Boxes are (x0, y0, x1, y1) inclusive, in score-map pixels.
        """
        maps = split_batch(cams, "cams", 2)
        if len(gt_boxes) != len(maps):
            raise ValueError(f"gt_boxes has {len(gt_boxes)} entries for {len(maps)} score maps")
        ids = batch_ids(image_ids, len(maps))
        correct_top1 = None
        if pred_correct is not None:
            correct_top1 = as_numpy(pred_correct, "pred_correct").astype(bool).ravel()
            if correct_top1.size != len(maps):
                raise ValueError(f"pred_correct has {correct_top1.size} entries for {len(maps)}")
        boxes_list, problems = [], {}
        for i, (m, b) in enumerate(zip(maps, gt_boxes)):
            raw = b if isinstance(b, (list, tuple)) else as_numpy(b, f"gt_boxes[{i}]")
            boxes = np.asarray(raw, dtype=np.float64)
            boxes_list.append(boxes.reshape(-1, 4) if boxes.size == 0 else boxes)
            problem = map_range_problem(m) or _boxes_problem(boxes_list[-1], m.shape)
            if problem:
                problems[i] = problem
        rejects = raise_or_collect(problems, ids, on_error, "BoxAccuracy.update")
        levels = self.iou_levels[:, None] / 100.0
        for i, m in enumerate(maps):
            if i in problems:
                continue
            hit = self.best_iou_per_threshold(m, boxes_list[i])[None, :] >= levels
            self.correct += hit
            self.n_images += 1
            if correct_top1 is not None:
                self.top1_correct += hit & correct_top1[i]
                self.n_top1 += 1
        return rejects

    def compute(self) -> dict[str, Any]:
        """MaxBoxAccV2, MaxBoxAcc and best_threshold per IoU, GT-known loc, top-1 loc.

        Everything is NaN while no image has been counted.
        """
        if self.n_images == 0:
            nan = float("nan")
            return {
                "MaxBoxAccV2": nan,
                "MaxBoxAcc": {int(d): nan for d in self.iou},
                "best_threshold": {int(d): nan for d in self.iou},
                "GT-known loc": nan,
                "top-1 loc": nan,
                "n_images": 0,
            }
        acc = self.correct / float(self.n_images)
        best_idx = acc.argmax(axis=1)
        row = {int(level): j for j, level in enumerate(self.iou_levels)}
        max_acc = {int(d): float(acc[row[int(d)], best_idx[row[int(d)]]]) for d in self.iou}
        best_thr = {int(d): float(self.thresholds[best_idx[row[int(d)]]]) for d in self.iou}
        j50 = row[50]
        top1 = (
            float(self.top1_correct[j50, best_idx[j50]] / self.n_top1)
            if self.n_top1 > 0
            else float("nan")
        )
        return {
            "MaxBoxAccV2": float(np.mean(list(max_acc.values()))),
            "MaxBoxAcc": max_acc,
            "best_threshold": best_thr,
            "GT-known loc": float(acc[j50, best_idx[j50]]),
            "top-1 loc": top1,
            "n_images": int(self.n_images),
        }


class PixelAP(Accumulator):
    """PxAP: precision-recall area over absolute score thresholds, from pixel histograms.

    A pixel is predicted foreground at threshold t when its score is >= t. The curve's
    operating points are the thresholds plus 1.0, as wsolevaluation bins them.
    """

    _config = ("thresholds",)
    _counts = ("positive_hist", "negative_hist")

    def __init__(self, thresholds: Sequence[float] | np.ndarray | None = None) -> None:
        self.thresholds = _check_thresholds(thresholds)
        self._edges = np.union1d(self.thresholds, [1.0])
        # bin b holds scores with exactly b edges <= score (bin 0: below every edge).
        self.positive_hist = np.zeros(self._edges.size + 1, np.int64)
        self.negative_hist = np.zeros(self._edges.size + 1, np.int64)

    @classmethod
    def _from_config(cls, state: dict[str, np.ndarray]) -> PixelAP:
        return cls(state["thresholds"])

    def update(
        self,
        cams: Any,
        masks: Any,
        ignore: Any = None,
        *,
        image_ids: Sequence[Any] | None = None,
        on_error: str = "raise",
    ) -> list[Rejected]:
        """Add score maps [B, H, W] in [0, 1] and ground-truth masks [B, H, W].

        Masks are bool or 0/1 (255 = ignore, as wsolevaluation's OpenImages masks); ``ignore``
        (bool [B, H, W]) marks further pixels to skip.
        """
        maps = split_batch(cams, "cams", 2)
        gts = split_batch(masks, "masks", 2)
        skips = split_batch(ignore, "ignore", 2) if ignore is not None else [None] * len(maps)
        if not len(maps) == len(gts) == len(skips):
            raise ValueError(
                f"batch sizes differ: cams {len(maps)}, masks {len(gts)}, ignore {len(skips)}"
            )
        ids = batch_ids(image_ids, len(maps))
        problems, kept = {}, []
        for i, (m, g, s) in enumerate(zip(maps, gts, skips)):
            kept.append(None)
            if g.shape != m.shape or (s is not None and s.shape != m.shape):
                other = g.shape if g.shape != m.shape else s.shape
                problems[i] = f"score map shape {m.shape} != ground truth shape {other}"
                continue
            problem = map_range_problem(m)
            if problem is None and g.dtype != bool and not ((g == 0) | (g == 1) | (g == 255)).all():
                problem = "mask values must be 0/1 (255 = ignore)"
            if problem is None:
                valid = g != 255 if s is None else (g != 255) & ~s.astype(bool)
                if not (g[valid] == 1).any():
                    problem = "empty ground truth (no foreground pixel)"
                kept[-1] = valid
            if problem:
                problems[i] = problem
        rejects = raise_or_collect(problems, ids, on_error, "PixelAP.update")
        n_bins = self._edges.size + 1
        for i, (m, g) in enumerate(zip(maps, gts)):
            if i in problems:
                continue
            valid = kept[i]
            edges = self._edges.astype(m.dtype)
            bins = np.searchsorted(edges, m[valid], side="right")
            # One histogram of (bin, positive) pairs: row 0 negatives, row 1 positives.
            hist = np.bincount((g[valid] == 1) * n_bins + bins, minlength=2 * n_bins)
            self.negative_hist += hist[:n_bins]
            self.positive_hist += hist[n_bins:]
        return rejects

    def compute(self) -> dict[str, Any]:
        """``PxAP`` and the ``precision`` / ``recall`` at each threshold (NaN before any data)."""
        n_pos = int(self.positive_hist.sum())
        if n_pos == 0:
            nan = [float("nan")] * self.thresholds.size
            return {
                "PxAP": float("nan"),
                "thresholds": [float(t) for t in self.thresholds],
                "precision": nan,
                "recall": list(nan),
            }
        # Pixels predicted positive at edge j are those in bins j+1 and above.
        tp = np.cumsum(self.positive_hist[::-1])[::-1][1:].astype(np.float64)
        fp = np.cumsum(self.negative_hist[::-1])[::-1][1:].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
        recall = tp / n_pos
        # Walk the curve from the strictest edge down; the empty prediction has recall 0.
        prec_desc, rec_desc = precision[::-1], recall[::-1]
        gain = np.diff(np.concatenate([[0.0], rec_desc]))
        defined = (tp + fp)[::-1] > 0
        pxap = float((prec_desc * gain)[defined].sum())
        on_grid = np.isin(self._edges, self.thresholds)
        return {
            "PxAP": pxap,
            "thresholds": [float(t) for t in self.thresholds],
            "precision": [float(v) for v in precision[on_grid]],
            "recall": [float(v) for v in recall[on_grid]],
        }
