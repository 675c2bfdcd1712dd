"""CAM -> boxes: threshold, connected components, one box per component.

Boxes are integer pixel coordinates (x0, y0, x1, y1) with x1, y1 *inclusive* (the
wsolevaluation convention, whose IoU counts x1 - x0 + 1 pixels).

Thresholds:
- ``"max"`` (classic CAM): keep pixels with cam > tau * max(cam), tau = 0.2 by default;
- ``"pas"`` (percentile as a standard, Bae et al.): cam > tau * percentile_p(cam), p = 90.

Components are 8-connected (every one, also a component lying in another's hole); a component's
box is its bounding rectangle. "Largest" means the largest area enclosed by the outer contour
(OpenCV's contour tracer), as wsolevaluation and rethinkingCAM choose it. A sweep over many
thresholds finds every threshold's components in one union-find pass (``components``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import cv2
import numpy as np

from camflow.postprocess.masks import class_ids
from camflow.postprocess.validate import BadInputError, as_numpy, map_range_problem

__all__ = [
    "BOX_PERCENTILE",
    "BOX_TAU",
    "BoxSet",
    "box_threshold",
    "class_boxes",
    "component_boxes",
    "extract_boxes",
    "sweep_best_iou",
    "sweep_boxes",
]

Method = Literal["max", "pas"]
Components = Literal["largest", "all"]
# The defaults of every layer: the classic CAM box threshold, and PaS's percentile.
BOX_TAU = 0.2
BOX_PERCENTILE = 90.0
_NO_BOXES = np.zeros((0, 4), dtype=np.int64)
_SWEEP_BLOCK_BYTES = 16 * 2**20


class BoxSet(NamedTuple):
    """Boxes [n, 4] int64 (x0, y0, x1, y1 inclusive) and one score [n] float32 per box."""

    boxes: np.ndarray
    scores: np.ndarray


def _check_cam(cam, image_id: str) -> np.ndarray:
    arr = as_numpy(cam, f"image {image_id!r}: cam")
    if arr.ndim != 2:
        raise BadInputError(
            f"image {image_id!r}: cam must be [H, W], got shape {tuple(arr.shape)}", [image_id]
        )
    problem = map_range_problem(arr)
    if problem:
        raise BadInputError(f"image {image_id!r}: {problem}", [image_id])
    return arr


def _base_value(cam: np.ndarray, method: Method, percentile: float) -> float:
    if method == "max":
        return float(cam.max())
    if method == "pas":
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
        return float(np.percentile(cam, percentile))
    raise ValueError(f"method: expected 'max' or 'pas', got {method!r}")


def box_threshold(
    cam, *, tau: float = BOX_TAU, method: Method = "max", percentile: float = BOX_PERCENTILE
) -> float:
    """The CAM value above which pixels are foreground: tau x max, or tau x p-th percentile."""
    arr = as_numpy(cam, "cam")
    return tau * _base_value(arr, method, percentile)


def _outer_contours(mask: np.ndarray, largest_only: bool) -> tuple[np.ndarray, ...]:
    m = mask.view(np.uint8) if mask.dtype == np.bool_ else mask
    contours, _ = cv2.findContours(
        np.ascontiguousarray(m, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if largest_only and len(contours) > 1:
        return (max(contours, key=cv2.contourArea),)
    return tuple(contours)


def _contour_boxes(contours: list[np.ndarray]) -> np.ndarray:
    """Inclusive bounding boxes of many contours in one vectorised pass over their points."""
    if not contours:
        return _NO_BOXES
    lengths = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    points = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    lo = np.minimum.reduceat(points, starts, axis=0)
    hi = np.maximum.reduceat(points, starts, axis=0)
    return np.concatenate([lo, hi], axis=1)


def component_boxes(mask: np.ndarray, *, largest_only: bool = False) -> np.ndarray:
    """Boxes [n, 4] int64 of the 8-connected components of a boolean/uint8 mask [H, W]
    (in raster order of their first pixel), or of the largest one by contour area."""
    if largest_only:
        return _contour_boxes(list(_outer_contours(mask, largest_only=True)))
    from camflow.postprocess.components import level_set_boxes

    return level_set_boxes(np.asarray(mask) != 0, 1)[0]


def _sorted_levels(arr: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """levels[p] = how many thresholds lie below pixel p (kept at sorted threshold j < levels[p]),
    and the sorting permutation of ``thr`` (None when already sorted)."""
    if np.all(thr[1:] >= thr[:-1]):
        return np.searchsorted(thr, arr, side="left"), None
    order = np.argsort(thr, kind="stable")
    return np.searchsorted(thr[order], arr, side="left"), order


def _all_component_boxes(arr: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every component of ``arr > t`` for each t of ``thr``: (boxes, owner index into thr)."""
    # Imported in the functions: numba costs a second to import and most processes never need it.
    from camflow.postprocess.components import level_set_boxes

    levels, order = _sorted_levels(arr, thr)
    boxes, owner = level_set_boxes(levels, len(thr))
    if order is None:
        return boxes, owner
    owner = order[owner]
    regroup = np.argsort(owner, kind="stable")
    return boxes[regroup], owner[regroup]


def _box_scores(cam: np.ndarray, boxes: np.ndarray, score: str) -> np.ndarray:
    reduce = {"mean": np.mean, "max": np.max}.get(score)
    if reduce is None:
        raise ValueError(f"score: expected 'mean' or 'max', got {score!r}")
    # One reduction per box (a handful per image), not per pixel.
    return np.array(
        [reduce(cam[y0 : y1 + 1, x0 : x1 + 1]) for x0, y0, x1, y1 in boxes], dtype=np.float32
    )


def extract_boxes(
    cam,
    *,
    tau: float = BOX_TAU,
    method: Method = "max",
    percentile: float = BOX_PERCENTILE,
    components: Components = "largest",
    score: Literal["mean", "max"] = "mean",
    image_id: str = "0",
) -> BoxSet:
    """Boxes of one normalised CAM [H, W] (numpy or torch), scored by the CAM inside each box.

    An all-zero CAM yields no boxes.
    """
    arr = _check_cam(cam, image_id)
    if components not in ("largest", "all"):
        raise ValueError(f"components: expected 'largest' or 'all', got {components!r}")
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    # Compared in the map's own precision, as sweep_boxes compares.
    thr = arr.dtype.type(tau * _base_value(arr, method, percentile))
    boxes = component_boxes(arr > thr, largest_only=components == "largest")
    return BoxSet(boxes, _box_scores(arr, boxes, score))


def class_boxes(
    cams,
    labels,
    *,
    tau: float = BOX_TAU,
    method: Method = "max",
    percentile: float = BOX_PERCENTILE,
    components: Components = "largest",
    score: Literal["mean", "max"] = "mean",
    image_id: str = "0",
) -> dict[str, np.ndarray]:
    """Boxes for every class present in ``labels`` [C] from normalised CAMs [C, H, W].

    Returns columns ``class_id`` (int64), ``score`` (float32), ``x0, y0, x1, y1`` (int64),
    one row per box: the layout of the ``boxes`` table.
    """
    maps = as_numpy(cams, f"image {image_id!r}: cams")
    if maps.ndim != 3:
        raise BadInputError(
            f"image {image_id!r}: cams must be [C, H, W], got shape {tuple(maps.shape)}", [image_id]
        )
    rows_cls, sets = [], []
    for c in class_ids(labels, num_classes=maps.shape[0], image_id=image_id):
        found = extract_boxes(
            maps[c],
            tau=tau,
            method=method,
            percentile=percentile,
            components=components,
            score=score,
            image_id=image_id,
        )
        rows_cls.append(np.full(len(found.boxes), c, dtype=np.int64))
        sets.append(found)
    boxes = np.concatenate([s.boxes for s in sets]) if sets else _NO_BOXES
    return {
        "class_id": np.concatenate(rows_cls) if sets else np.zeros(0, np.int64),
        "score": np.concatenate([s.scores for s in sets]) if sets else np.zeros(0, np.float32),
        "x0": boxes[:, 0],
        "y0": boxes[:, 1],
        "x1": boxes[:, 2],
        "y1": boxes[:, 3],
    }


def _relative_thresholds(arr: np.ndarray, thresholds, method: Method,
                         percentile: float) -> np.ndarray:
    rel = np.asarray(thresholds, dtype=np.float64).ravel()
    # Compared in the map's own precision, as extract_boxes compares.
    return (rel * _base_value(arr, method, percentile)).astype(arr.dtype)


def sweep_best_iou(
    cam,
    thresholds,
    gt_boxes,
    *,
    method: Method = "max",
    percentile: float = BOX_PERCENTILE,
    image_id: str = "0",
) -> np.ndarray:
    """[T] the best IoU with any of ``gt_boxes`` [G, 4] (inclusive corners) among the boxes of
    every component at each relative threshold: ``sweep_boxes`` with ``multi_contour``, scored,
    without listing each threshold's boxes (a noisy map has hundreds of specks per threshold)."""
    from camflow.postprocess.components import level_set_best_iou

    arr = _check_cam(cam, image_id)
    thr = _relative_thresholds(arr, thresholds, method, percentile)
    levels, order = _sorted_levels(arr, thr)
    best = level_set_best_iou(levels, len(thr), np.asarray(gt_boxes, np.float64))
    if order is None:
        return best
    out = np.empty_like(best)
    out[order] = best
    return out


def sweep_boxes(
    cam,
    thresholds,
    *,
    multi_contour: bool = True,
    method: Method = "max",
    percentile: float = BOX_PERCENTILE,
    image_id: str = "0",
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of one CAM at every relative threshold in one call.

    Returns (boxes [N, 4] int64, owner [N] int64): ``owner[i]`` is the index of the threshold
    that produced box i. Threshold t keeps cam > t x max (or x percentile for ``"pas"``);
    ``multi_contour`` keeps every component's box, otherwise only the largest.
    """
    arr = _check_cam(cam, image_id)
    thr = _relative_thresholds(arr, thresholds, method, percentile)
    if multi_contour:
        return _all_component_boxes(arr, thr)
    # The largest component by contour area needs each threshold's contours: many thresholded
    # masks at once (a bounded block of them, for large maps), traced one by one.
    block = max(1, _SWEEP_BLOCK_BYTES // arr.size)
    contours: list[np.ndarray] = []
    counts = np.zeros(len(thr), dtype=np.int64)
    for start in range(0, len(thr), block):
        stack = (arr[None] > thr[start : start + block, None, None]).view(np.uint8)
        for k, mask in enumerate(stack, start):
            found = _outer_contours(mask, largest_only=True)
            contours.extend(found)
            counts[k] = len(found)
    if not contours:
        return _NO_BOXES, np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(thr), dtype=np.int64), counts)
    return _contour_boxes(contours), owner
