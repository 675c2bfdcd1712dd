"""The 8-connected components of a map's level sets at every threshold, in one pass.

A box sweep (MaxBoxAcc) needs the components of ``cam > t`` at a hundred thresholds t. Tracing
each thresholded mask again costs a hundred passes over the image; here pixels join a union-find
forest in decreasing order of score instead, so each pixel is touched once, and after each
threshold's pixels have joined, the live roots are exactly that threshold's components.

Two uses share the one kernel: every component's box (:func:`level_set_boxes`), or only the best
IoU of any component with ground-truth boxes (:func:`level_set_best_iou`). A noisy map has
hundreds of specks at low thresholds; the second keeps each component's IoU and recomputes it
only when the component changes, instead of listing tens of thousands of boxes.

The kernel is compiled by numba on first use and cached next to this file (or in numba's user
cache when that is read-only), so a process pays the compilation once per machine.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["level_set_best_iou", "level_set_boxes"]


@njit(cache=True, nogil=True)
def _iou(box: np.ndarray, gt: np.ndarray) -> float:  # pragma: no cover - jit
    """The best IoU of one inclusive-corner box with any of ``gt`` [G, 4] (metrics.box_iou's
    arithmetic, operation for operation, so that both give the same floats)."""
    best = 0.0
    area_a = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    for g in range(gt.shape[0]):
        iw = min(float(box[2]), gt[g, 2]) - max(float(box[0]), gt[g, 0]) + 1.0
        ih = min(float(box[3]), gt[g, 3]) - max(float(box[1]), gt[g, 1]) + 1.0
        inter = max(iw, 0.0) * max(ih, 0.0)
        area_b = (gt[g, 2] - gt[g, 0] + 1.0) * (gt[g, 3] - gt[g, 1] + 1.0)
        union = area_a + area_b - inter
        iou = inter / union if union > 0 else 0.0
        best = max(best, iou)
    return best


@njit(cache=True, nogil=True)
def _sweep(levels: np.ndarray, n_levels: int, gt: np.ndarray,
           emit: bool) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - jit
    h, w = levels.shape
    n = h * w
    flat = levels.ravel()
    # Pixels bucketed by level (counting sort): bucket v holds the pixels of level v.
    start = np.zeros(n_levels + 2, np.int64)
    for p in range(n):
        start[flat[p] + 1] += 1
    for v in range(1, n_levels + 2):
        start[v] += start[v - 1]
    order = np.empty(n, np.int32)
    fill = start.copy()
    for p in range(n):
        order[fill[flat[p]]] = p
        fill[flat[p]] += 1

    parent = np.full(n, -1, np.int32)  # -1: not yet above the threshold
    size = np.zeros(n, np.int32)
    box = np.empty((n, 5), np.int32)  # per root: x0, y0, x1, y1, first pixel in raster order
    live = np.empty(n, np.int32)  # the current roots, compact; slot[r] is r's place in it
    slot = np.empty(n, np.int32)
    n_live = 0
    iou = np.zeros(n, np.float64)  # per root, valid unless changed[r]
    changed = np.zeros(n, np.bool_)
    best = np.zeros(n_levels, np.float64)
    out = np.empty((max(64, 4 * n_levels) if emit else 0, 6), np.int64)
    n_out = 0
    for v in range(n_levels, 0, -1):  # threshold index v - 1 keeps the pixels of level >= v
        for k in range(start[v], start[v + 1]):
            p = order[k]
            py = p // w
            px = p - py * w
            parent[p] = p
            size[p] = 1
            box[p, 0] = px
            box[p, 1] = py
            box[p, 2] = px
            box[p, 3] = py
            box[p, 4] = p
            changed[p] = True
            slot[p] = n_live
            live[n_live] = p
            n_live += 1
            root = p
            for qy in range(max(py - 1, 0), min(py + 2, h)):
                for qx in range(max(px - 1, 0), min(px + 2, w)):
                    q = qy * w + qx
                    if parent[q] < 0:
                        continue
                    while parent[q] != q:  # find, halving the path on the way
                        parent[q] = parent[parent[q]]
                        q = parent[q]
                    if q == root:
                        continue
                    a, b = (root, q) if size[root] >= size[q] else (q, root)
                    parent[b] = a
                    size[a] += size[b]
                    box[a, 0] = min(box[a, 0], box[b, 0])
                    box[a, 1] = min(box[a, 1], box[b, 1])
                    box[a, 2] = max(box[a, 2], box[b, 2])
                    box[a, 3] = max(box[a, 3], box[b, 3])
                    box[a, 4] = min(box[a, 4], box[b, 4])
                    changed[a] = True
                    moved = live[n_live - 1]
                    live[slot[b]] = moved
                    slot[moved] = slot[b]
                    n_live -= 1
                    root = a
        if gt.shape[0]:
            top = 0.0
            for k in range(n_live):
                r = live[k]
                if changed[r]:
                    iou[r] = _iou(box[r], gt)
                    changed[r] = False
                top = max(top, iou[r])
            best[v - 1] = top
        if emit:
            if n_out + n_live > out.shape[0]:
                grown = np.empty((2 * (n_out + n_live), 6), np.int64)
                grown[:n_out] = out[:n_out]
                out = grown
            for k in range(n_live):
                r = live[k]
                for c in range(5):
                    out[n_out, c] = box[r, c]
                out[n_out, 5] = v - 1
                n_out += 1
    return out[:n_out], best


def _checked(levels: np.ndarray, n_levels: int) -> np.ndarray:
    lv = np.ascontiguousarray(levels, dtype=np.int64)
    if lv.ndim != 2:
        raise ValueError(f"levels must be [H, W], got shape {lv.shape}")
    if lv.size and (lv.min() < 0 or lv.max() > n_levels):
        raise ValueError(f"levels must lie in 0..{n_levels}")
    return lv


_NO_GT = np.zeros((0, 4), np.float64)


def level_set_boxes(levels: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the 8-connected components of ``levels > j`` for every j in 0..n_levels-1.

    ``levels`` [H, W] holds integers in 0..n_levels. Returns (boxes [N, 4] int64 as x0, y0, x1,
    y1 inclusive, owner [N] int64 = j), ordered by j, then by each component's first pixel in
    raster order.
    """
    lv = _checked(levels, n_levels)
    if lv.size == 0 or n_levels < 1:
        return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    found, _ = _sweep(lv, int(n_levels), _NO_GT, True)
    order = np.lexsort((found[:, 4], found[:, 5]))
    return found[order, :4], found[order, 5]


def level_set_best_iou(levels: np.ndarray, n_levels: int, gt_boxes: np.ndarray) -> np.ndarray:
    """[n_levels] the best IoU of any 8-connected component's box of ``levels > j`` with any of
    ``gt_boxes`` [G, 4] (x0, y0, x1, y1 inclusive); 0 where there is no component."""
    lv = _checked(levels, n_levels)
    gt = np.ascontiguousarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if lv.size == 0 or n_levels < 1 or gt.shape[0] == 0:
        return np.zeros(max(int(n_levels), 0), np.float64)
    return _sweep(lv, int(n_levels), gt, False)[1]
