"""From stored seeds to what the refinement needs: the maps of an image's own classes, their
confident labels, and refined pseudo masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from camflow.outputs import dequantize_seed
from camflow.postprocess.crf import IRN_LABEL_CRF
from camflow.postprocess.masks import confident_mask, pseudo_mask_of_classes
from camflow.refine.affinity import AffinityNet
from camflow.refine.masks import RefineOptions, refined_scores

__all__ = ["confident_labels", "refine_masks", "seed_maps"]


def seed_maps(rows: Sequence[dict], size: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
    """The ``seeds`` rows of one image -> its class ids [K] (ascending) and maps [K, H, W] in
    [0, 1] at ``size``."""
    ordered = sorted(rows, key=lambda r: int(r["class_id"]))
    ids = np.array([int(r["class_id"]) for r in ordered], dtype=np.int64)
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"image {ordered[0]['image_id']!r}: a class has two seeds")
    maps = (torch.stack([dequantize_seed(r, size) for r in ordered]) if ordered
            else torch.zeros((0, *size)))
    return ids, maps


def confident_labels(maps: torch.Tensor, class_ids: np.ndarray, num_classes: int,
                     options: RefineOptions, image_id: str = "0", *, power: float = 1.0,
                     image: np.ndarray | None = None) -> np.ndarray:
    """IRN's confident labels [H, W] uint8 of one image's seeds (0 background, k+1 class k,
    255 undecided): the seeds raised to ``power`` (``seed_power``), thresholded, and each of
    the two label maps refined by IRN's label CRF on ``image`` (uint8 [H, W, 3]) when
    ``options.crf``."""
    if options.crf and image is None:
        raise ValueError(f"image {image_id!r}: confident labels with a CRF need the image")
    full = np.zeros((num_classes, *maps.shape[-2:]), dtype=np.float32)
    full[class_ids] = maps.numpy() ** power
    labels = np.zeros(num_classes, dtype=np.float32)
    labels[class_ids] = 1
    return confident_mask(full, labels, fg_threshold=options.fg_threshold,
                          bg_threshold=options.bg_threshold, image_id=image_id,
                          image=image if options.crf else None,
                          crf=IRN_LABEL_CRF if options.crf else None)


@torch.no_grad()
def refine_masks(net: AffinityNet, images: torch.Tensor, maps: Sequence[torch.Tensor],
                 class_ids: Sequence[np.ndarray], options: RefineOptions,
                 image_ids: Sequence[str] | None = None, *, power: float = 1.0
                 ) -> list[np.ndarray]:
    """Refined pseudo masks of a batch: images [B, 3, H', W'] (prepared for ``net``), each
    image's seed maps [K_i, H, W] of its classes ``class_ids[i]`` (one size H, W for the batch:
    the masks' size, which may differ from the prepared one), raised to ``power`` before the
    walk (``seed_power``); one uint8 mask [H, W] per image."""
    b = images.shape[0]
    ids = list(image_ids or [str(i) for i in range(b)])
    sizes = {tuple(m.shape[-2:]) for m in maps}
    if len(sizes) != 1:
        raise ValueError(f"images {ids}: one seed size per batch, got {sorted(sizes)}")
    width = max([m.shape[0] for m in maps] + [1])
    padded = torch.zeros((b, width, *sizes.pop()), dtype=torch.float32, device=images.device)
    for i, m in enumerate(maps):
        padded[i, :m.shape[0]] = m.to(images.device) ** power
    affinity = net.affinities(images, options.radius)
    scores = refined_scores(padded, affinity, options).cpu()
    return [pseudo_mask_of_classes(scores[i, :len(class_ids[i])], class_ids[i],
                                   threshold=options.mask_bg_threshold, image_id=ids[i])
            for i in range(b)]
