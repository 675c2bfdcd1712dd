"""Normalised CAM seeds -> pseudo masks (label k+1 for class k, 0 background, 255 ignore).

A pixel takes the label of the highest score among a background score and the CAMs of the
image's own classes; ties go to background. Optional dense CRF refinement (see ``crf``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from camflow.postprocess.crf import CRFParams, crf_from_labels, crf_from_probs
from camflow.postprocess.validate import BadInputError, as_numpy, map_range_problem

__all__ = ["BG_ALPHA", "BG_THRESHOLD", "IGNORE", "background_score", "class_ids", "confident_mask", "pseudo_mask", "pseudo_mask_of_classes", "top_channel"]

IGNORE = 255
Background = Literal["constant", "power"]
# The defaults of every layer (library, config, CLI): a constant background score, or psa's power.
BG_THRESHOLD = 0.25
BG_ALPHA = 4.0


def class_ids(labels, *, num_classes: int | None = None, image_id: str = "0") -> np.ndarray:
    """Indices (int64, ascending) of the classes present in a multi-hot label vector."""
    lab = as_numpy(labels, f"image {image_id!r}: labels")
    if lab.ndim != 1 or (num_classes is not None and lab.shape[0] != num_classes):
        want = f"[{num_classes}]" if num_classes is not None else "[C]"
        raise BadInputError(
            f"image {image_id!r}: labels must be multi-hot {want}, got shape {tuple(lab.shape)}",
            [image_id],
        )
    if not ((lab == 0) | (lab == 1)).all():
        raise BadInputError(f"image {image_id!r}: labels must be 0/1 multi-hot", [image_id])
    return np.flatnonzero(lab).astype(np.int64)


def background_score(
    fg_scores: np.ndarray,
    *,
    background: Background = "constant",
    threshold: float = BG_THRESHOLD,
    alpha: float = BG_ALPHA,
) -> np.ndarray:
    """Background score [H, W] for foreground scores [K, H, W] of the image's own classes.

    ``constant``: ``threshold`` everywhere. ``power``: (1 - max_k score)^alpha, so background
    wins wherever every class is weak (psa's formulation; larger alpha = smaller background).
    """
    shape = fg_scores.shape[1:]
    if background == "constant":
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        return np.full(shape, threshold, dtype=np.float32)
    if background == "power":
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        fg_max = fg_scores.max(axis=0) if fg_scores.shape[0] else np.zeros(shape, np.float32)
        return np.power(1.0 - fg_max, alpha).astype(np.float32)
    raise ValueError(f"background: expected 'constant' or 'power', got {background!r}")


def top_channel(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax, max) over the first axis of [K, ...] scores; a tie goes to the first channel.

    Same result as ``stack.argmax(axis=0)``, but one pass per channel: numpy's argmax over a
    short first axis walks the array column by column, 10-30x slower for a handful of maps.
    """
    if stack.shape[0] == 0:
        raise ValueError("top_channel needs at least one channel")
    top = stack[0].copy()
    index = np.zeros(stack.shape[1:], np.intp)
    for k in range(1, stack.shape[0]):
        higher = stack[k] > top
        index[higher] = k
        np.maximum(top, stack[k], out=top)
    return index, top


def _own_scores(cams, labels, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    return _checked_own(*_own_maps(cams, labels, image_id), image_id)


def _own_maps(cams, labels, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The maps of the classes in ``labels`` out of all classes' ``cams``, and their ids."""
    maps = as_numpy(cams, f"image {image_id!r}: cams")
    if maps.ndim != 3:
        raise BadInputError(
            f"image {image_id!r}: cams must be [C, H, W], got shape {tuple(maps.shape)}", [image_id]
        )
    if maps.shape[0] > IGNORE - 1:
        raise ValueError(f"at most {IGNORE - 1} classes fit a uint8 mask, got {maps.shape[0]}")
    own = class_ids(labels, num_classes=maps.shape[0], image_id=image_id)
    return maps[own], own


def _checked_own(scores: np.ndarray, own: np.ndarray, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    if own.size and own.max() > IGNORE - 2:
        raise ValueError(f"at most {IGNORE - 1} classes fit a uint8 mask, got class {own.max()}")
    # Only the image's own maps are read, so only they must be valid.
    problem = map_range_problem(scores) if own.size else None
    if problem:
        raise BadInputError(f"image {image_id!r}: {problem}", [image_id])
    # keys[i] is the mask label of stacked channel i: background 0, then class k -> k + 1.
    keys = np.concatenate([[0], own + 1]).astype(np.uint8)
    return scores.astype(np.float32, copy=False), keys


def pseudo_mask(
    cams,
    labels,
    *,
    background: Background = "constant",
    threshold: float = BG_THRESHOLD,
    alpha: float = BG_ALPHA,
    image=None,
    crf: CRFParams | None = None,
    image_id: str = "0",
) -> np.ndarray:
    """Pseudo mask [H, W] uint8 from normalised CAMs [C, H, W] and multi-hot labels [C].

    ``crf`` (needs ``image``, uint8 RGB [H, W, 3]) refines the stacked scores before argmax.
    Inputs may be numpy arrays or torch tensors.
    """
    scores, own = _own_maps(cams, labels, image_id)
    return pseudo_mask_of_classes(scores, own, background=background, threshold=threshold,
                                  alpha=alpha, image=image, crf=crf, image_id=image_id)


def pseudo_mask_of_classes(
    scores,
    classes,
    *,
    background: Background = "constant",
    threshold: float = BG_THRESHOLD,
    alpha: float = BG_ALPHA,
    image=None,
    crf: CRFParams | None = None,
    image_id: str = "0",
) -> np.ndarray:
    """``pseudo_mask`` from the maps [K, H, W] of the image's own classes only: ``classes`` [K]
    are their (distinct) class ids, so nothing is padded out to every class first."""
    maps = as_numpy(scores, f"image {image_id!r}: scores")
    own = np.asarray(classes, dtype=np.int64).reshape(-1)
    if maps.ndim != 3 or maps.shape[0] != own.size:
        raise BadInputError(f"image {image_id!r}: scores must be [K, H, W] for {own.size} classes, "
                            f"got shape {tuple(maps.shape)}", [image_id])
    if own.size and (own.min() < 0 or len(set(own.tolist())) != own.size):
        raise BadInputError(f"image {image_id!r}: class ids must be distinct and >= 0, "
                            f"got {own.tolist()}", [image_id])
    scores, keys = _checked_own(maps, own, image_id)
    bg = background_score(scores, background=background, threshold=threshold, alpha=alpha)
    stacked = np.concatenate([bg[None], scores], axis=0)
    if crf is not None:
        if image is None:
            raise ValueError(f"image {image_id!r}: a CRF needs the RGB image")
        stacked = crf_from_probs(image, stacked, crf, name=f"image {image_id!r}")
    return keys[top_channel(stacked)[0]]


def confident_mask(
    cams,
    labels,
    *,
    fg_threshold: float = 0.30,
    bg_threshold: float = 0.05,
    image=None,
    crf: CRFParams | None = None,
    crf_gt_prob: float = 0.7,
    image_id: str = "0",
) -> np.ndarray:
    """IRN-style confident labels [H, W] uint8: sure foreground, sure background, 255 between.

    A pixel is foreground where its class beats ``fg_threshold``, background where no class
    beats ``bg_threshold``, and ignored otherwise. With ``crf`` (and ``image``) each of the
    two label maps is refined by a label CRF first, as IRN does (IRN: 0.30 / 0.05).
    """
    if not 0.0 <= bg_threshold <= fg_threshold <= 1.0:
        raise ValueError(
            f"need 0 <= bg_threshold <= fg_threshold <= 1, got {bg_threshold}, {fg_threshold}"
        )
    if crf is not None and image is None:
        raise ValueError(f"image {image_id!r}: a CRF needs the RGB image")
    scores, keys = _own_scores(cams, labels, image_id)

    def labelled_at(threshold: float) -> np.ndarray:
        stacked = np.concatenate([np.full((1, *scores.shape[1:]), threshold, np.float32), scores])
        idx = top_channel(stacked)[0]
        if crf is not None:
            idx = crf_from_labels(
                image, idx, len(keys), crf, gt_prob=crf_gt_prob, name=f"image {image_id!r}"
            )
        return keys[idx]

    fg = labelled_at(fg_threshold)
    bg = labelled_at(bg_threshold)
    out = fg.copy()
    out[fg == 0] = IGNORE
    out[(fg == 0) & (bg == 0)] = 0
    return out
