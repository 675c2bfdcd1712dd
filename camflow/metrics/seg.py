"""WSSS metrics: a confusion-matrix mIoU and a one-pass background-threshold sweep of seeds.

Both keep int64 confusion matrices (rows: ground truth, columns: prediction), so shards from
many workers add up exactly. IoU of a label that appears in neither ground truth nor prediction
is undefined (NaN) and left out of the mean, as chainercv's evaluation (used by IRN/ReCAM) does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from camflow.metrics.accumulator import Accumulator
from camflow.postprocess.masks import top_channel
from camflow.postprocess.validate import (
    Rejected,
    batch_ids,
    map_range_problem,
    raise_or_collect,
    split_batch,
)

__all__ = ["SegConfusion", "SeedSweep", "iou_from_confusion"]


def iou_from_confusion(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-label IoU, precision and recall (NaN where undefined) of [..., L, L] confusions."""
    conf = confusion.astype(np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    gt = conf.sum(axis=-1)
    pred = conf.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "IoU": tp / (gt + pred - tp),
            "precision": tp / pred,
            "recall": tp / gt,
        }


def _nanmean(x: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(x)
    total = np.where(valid, x, 0.0).sum(axis=-1)
    n = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _tolist(x: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(x).ravel()]


def _label_problem(arr: np.ndarray, num_labels: int, ignore_index: int, what: str) -> str | None:
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        return f"{what} must hold integer labels, got dtype {arr.dtype}"
    values = arr.astype(np.int64, copy=False)
    bad = (values < 0) | ((values >= num_labels) & (values != ignore_index))
    if bad.any():
        v = int(values[bad][0])
        return f"{what} has label {v} outside 0..{num_labels - 1} (ignore {ignore_index})"
    return None


def _gt_problem(gt: np.ndarray, num_labels: int, ignore_index: int) -> str | None:
    problem = _label_problem(gt, num_labels, ignore_index, "ground truth")
    if problem:
        return problem
    if gt.size == 0 or (gt == ignore_index).all():
        return "empty ground truth (no labelled pixel)"
    return None


class SegConfusion(Accumulator):
    """Confusion matrix over labels 0..num_labels-1 (background included); mIoU and friends.

    Pixels whose ground truth is ``ignore_index`` are skipped; so are pixels the prediction
    marks ``ignore_index`` (e.g. the undecided band of IRN confident labels), which therefore
    count neither for nor against a label.
    """

    _config = ("num_labels", "ignore_index")
    _counts = ("confusion",)

    def __init__(self, num_labels: int, ignore_index: int = 255) -> None:
        if int(num_labels) < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        if 0 <= int(ignore_index) < int(num_labels):
            raise ValueError(f"ignore_index {ignore_index} collides with a label")
        self.num_labels = int(num_labels)
        self.ignore_index = int(ignore_index)
        self.confusion = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)

    @classmethod
    def _from_config(cls, state: dict[str, np.ndarray]) -> SegConfusion:
        return cls(int(state["num_labels"]), int(state["ignore_index"]))

    def update(
        self,
        pred: Any,
        gt: Any,
        *,
        image_ids: Sequence[Any] | None = None,
        on_error: str = "raise",
    ) -> list[Rejected]:
        """Count predictions [B, H, W] against ground truth [B, H, W] (ints; numpy or torch).

        Either argument may also be a sequence of [H, W] maps of differing sizes. A bad image
        raises :class:`BadInputError` naming it (state untouched), or with ``on_error="skip"``
        is left out and returned as a :class:`Rejected`.
        """
        preds = split_batch(pred, "pred", 2)
        gts = split_batch(gt, "gt", 2)
        if len(preds) != len(gts):
            raise ValueError(f"pred has {len(preds)} images but gt has {len(gts)}")
        ids = batch_ids(image_ids, len(preds))
        problems: dict[int, str] = {}
        for i, (p, g) in enumerate(zip(preds, gts)):
            if p.shape != g.shape:
                problems[i] = f"prediction shape {p.shape} != ground truth shape {g.shape}"
                continue
            problem = _gt_problem(g, self.num_labels, self.ignore_index) or _label_problem(
                p, self.num_labels, self.ignore_index, "prediction"
            )
            if problem:
                problems[i] = problem
        rejects = raise_or_collect(problems, ids, on_error, "SegConfusion.update")
        good = [i for i in range(len(preds)) if i not in problems]
        if good:
            p = np.concatenate([preds[i].ravel() for i in good]).astype(np.int64)
            g = np.concatenate([gts[i].ravel() for i in good]).astype(np.int64)
            keep = (g != self.ignore_index) & (p != self.ignore_index)
            n = self.num_labels
            self.confusion += np.bincount(g[keep] * n + p[keep], minlength=n * n).reshape(n, n)
        return rejects

    def compute(self) -> dict[str, Any]:
        """``mIoU`` (mean over defined labels) and per-label ``IoU``, ``precision``, ``recall``."""
        stats = iou_from_confusion(self.confusion)
        return {
            "mIoU": float(_nanmean(stats["IoU"])),
            "IoU": _tolist(stats["IoU"]),
            "precision": _tolist(stats["precision"]),
            "recall": _tolist(stats["recall"]),
        }


def default_seed_thresholds() -> np.ndarray:
    """0.05, 0.10, ..., 0.95."""
    return np.round(np.arange(1, 20) * 0.05, 2)


class SeedSweep(Accumulator):
    """Seed mIoU at every background threshold from a single pass over the CAMs.

    A pixel's label at threshold t is the argmax over [t, CAMs of the image's own classes]
    (ties to background): class k -> label k + 1. mIoU is over the C + 1 labels.

    How one pass gives every threshold: each pixel is summarised by (ground truth, best own
    class, number of thresholds below its best score); one histogram of those triples and a
    reverse cumulative sum give every threshold's confusion matrix.
    """

    _config = ("num_classes", "thresholds", "ignore_index")
    _counts = ("confusion",)

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] | np.ndarray | None = None,
        ignore_index: int = 255,
    ) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        thr = default_seed_thresholds() if thresholds is None else np.asarray(thresholds, float)
        if thr.ndim != 1 or thr.size == 0:
            raise ValueError("thresholds must be a non-empty 1-d sequence")
        if (np.diff(thr) <= 0).any() or thr[0] < 0 or thr[-1] > 1:
            raise ValueError("thresholds must increase strictly within [0, 1]")
        if 0 <= int(ignore_index) <= int(num_classes):
            raise ValueError(f"ignore_index {ignore_index} collides with a label")
        self.num_classes = int(num_classes)
        self.thresholds = thr.astype(np.float64)
        self.ignore_index = int(ignore_index)
        n = self.num_classes + 1
        self.confusion = np.zeros((thr.size, n, n), dtype=np.int64)

    @classmethod
    def _from_config(cls, state: dict[str, np.ndarray]) -> SeedSweep:
        return cls(int(state["num_classes"]), state["thresholds"], int(state["ignore_index"]))

    def _image_problem(self, cam: np.ndarray, lab: np.ndarray, g: np.ndarray) -> str | None:
        if cam.shape[0] != self.num_classes:
            return f"cams have {cam.shape[0]} channels, expected {self.num_classes}"
        if cam.shape[1:] != g.shape:
            return f"cam shape {cam.shape[1:]} != ground truth shape {g.shape}"
        if lab.shape != (self.num_classes,) or not ((lab == 0) | (lab == 1)).all():
            return (
                f"labels must be 0/1 multi-hot of length {self.num_classes}, "
                f"got shape {lab.shape} with values {np.unique(lab)[:5].tolist()}"
            )
        own = np.flatnonzero(lab)
        # Only the image's own classes compete with the background: only their maps are read.
        problem = map_range_problem(cam[own]) if own.size else None
        return problem or _gt_problem(g, self.num_classes + 1, self.ignore_index)

    def update(
        self,
        cams: Any,
        labels: Any,
        gt: Any,
        *,
        image_ids: Sequence[Any] | None = None,
        on_error: str = "raise",
    ) -> list[Rejected]:
        """Add normalised CAMs [B, C, H, W], multi-hot labels [B, C], ground truth [B, H, W].

        Ground truth uses 0 for background, k + 1 for class k and ``ignore_index`` to skip.
        Sequences of per-image arrays are accepted too. Bad images: see ``SegConfusion``.
        """
        cam_list = split_batch(cams, "cams", 3)
        lab_list = split_batch(labels, "labels", 1)
        gt_list = split_batch(gt, "gt", 2)
        if not len(cam_list) == len(lab_list) == len(gt_list):
            raise ValueError(
                f"batch sizes differ: cams {len(cam_list)}, labels {len(lab_list)}, "
                f"gt {len(gt_list)}"
            )
        ids = batch_ids(image_ids, len(cam_list))
        problems = {}
        for i, (c, lab, g) in enumerate(zip(cam_list, lab_list, gt_list)):
            problem = self._image_problem(c, lab, g)
            if problem:
                problems[i] = problem
        rejects = raise_or_collect(problems, ids, on_error, "SeedSweep.update")
        own = [np.flatnonzero(lab) for lab in lab_list]
        self._add([(c[o], o, g) for i, (c, o, g) in enumerate(zip(cam_list, own, gt_list))
                   if i not in problems])
        return rejects

    def update_classes(
        self,
        scores: Sequence[Any],
        classes: Sequence[Sequence[int]],
        gt: Any,
        *,
        image_ids: Sequence[Any] | None = None,
        on_error: str = "raise",
    ) -> list[Rejected]:
        """``update`` from the maps [K_i, H, W] of each image's own classes only: ``classes[i]``
        are the K_i distinct class ids of image i's maps (no padding out to every class)."""
        score_list = split_batch(scores, "scores", 3)
        gt_list = split_batch(gt, "gt", 2)
        if not len(score_list) == len(classes) == len(gt_list):
            raise ValueError(f"batch sizes differ: scores {len(score_list)}, classes "
                             f"{len(classes)}, gt {len(gt_list)}")
        ids = batch_ids(image_ids, len(score_list))
        own = [np.asarray(c, dtype=np.int64).reshape(-1) for c in classes]
        problems = {}
        for i, (c, o, g) in enumerate(zip(score_list, own, gt_list)):
            problem = self._classes_problem(c, o, g)
            if problem:
                problems[i] = problem
        rejects = raise_or_collect(problems, ids, on_error, "SeedSweep.update_classes")
        self._add([(c, o, g) for i, (c, o, g) in enumerate(zip(score_list, own, gt_list))
                   if i not in problems])
        return rejects

    def _classes_problem(self, scores: np.ndarray, own: np.ndarray, g: np.ndarray) -> str | None:
        if scores.shape[0] != own.size:
            return f"{scores.shape[0]} maps for {own.size} class ids"
        if own.size and (own.min() < 0 or own.max() >= self.num_classes
                         or np.unique(own).size != own.size):
            return f"class ids must be distinct in [0, {self.num_classes}), got {own.tolist()}"
        if scores.shape[1:] != g.shape:
            return f"cam shape {scores.shape[1:]} != ground truth shape {g.shape}"
        problem = map_range_problem(scores) if own.size else None
        return problem or _gt_problem(g, self.num_classes + 1, self.ignore_index)

    def _add(self, images: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Count (own-class maps [K, H, W], their class ids [K], ground truth) triples."""
        n_thr = self.thresholds.size
        n_lab = self.num_classes + 1
        codes = []
        for scores, own, g in images:
            gt_flat = g.ravel().astype(np.int64)
            keep = gt_flat != self.ignore_index
            if own.size:
                index, top = top_channel(scores.reshape(own.size, -1))
                best = own[index] + 1
                # Number of thresholds strictly below the score: foreground at threshold
                # index j exactly when j < below (a tie goes to background).
                # Compared in the CAM's own precision, as an explicit argmax would be.
                thr = self.thresholds.astype(scores.dtype)
                below = np.searchsorted(thr, top, side="left")
            else:
                best = below = np.zeros(gt_flat.size, np.int64)
            code = (gt_flat * n_lab + best) * (n_thr + 1) + below
            codes.append(code if keep.all() else code[keep])
        if not codes:
            return
        hist = np.bincount(np.concatenate(codes), minlength=n_lab * n_lab * (n_thr + 1))
        hist = hist.reshape(n_lab, n_lab, n_thr + 1)
        # at_or_above[g, a, j] = pixels whose score exceeds threshold j - 1 (j = 0: all).
        at_or_above = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]
        fg = np.moveaxis(at_or_above[..., 1:], -1, 0)  # [T, gt, label]: foreground at each t
        conf = fg.copy()
        conf[:, :, 0] += hist.sum(axis=(1, 2))[None, :] - fg.sum(axis=2)
        self.confusion += conf

    def compute(self) -> dict[str, Any]:
        """``mIoU`` per threshold, ``best_threshold``, ``best_mIoU`` and ``IoU`` at the best."""
        stats = iou_from_confusion(self.confusion)
        miou = _nanmean(stats["IoU"])
        best = int(np.nanargmax(miou)) if not np.isnan(miou).all() else 0
        return {
            "thresholds": _tolist(self.thresholds),
            "mIoU": _tolist(miou),
            "best_threshold": float(self.thresholds[best]),
            "best_mIoU": float(miou[best]),
            "IoU": _tolist(stats["IoU"][best]),
        }
