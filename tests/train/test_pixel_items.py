"""``pixel_items``: the (prepared image, per-pixel target) pairs both dense models train on."""

from __future__ import annotations

import numpy as np
import torch

from camflow.data.transforms import ImagePrep
from camflow.train.dense import pixel_items


def test_targets_are_made_at_the_prepared_size_and_none_leaves_an_image_out():
    g = np.random.default_rng(0)
    images = [(f"im{i}", g.integers(0, 255, (40, 30, 3), dtype=np.uint8)) for i in range(3)]
    seen = {}

    def target(image_id: str, pixels: np.ndarray) -> torch.Tensor | None:
        seen[image_id] = pixels.shape
        if image_id == "im1":
            return None
        return torch.from_numpy((pixels[..., 0] > 127).astype(np.uint8))

    items = pixel_items(images, ImagePrep((20, 16)), target)
    assert seen == {f"im{i}": (20, 16, 3) for i in range(3)}
    assert items.ids == ["im0", "im2"] and len(items) == 2
    image, mask = items[1]
    assert image.shape == (3, 20, 16) and mask.shape == (20, 16) and mask.dtype == torch.uint8


def test_pixels_already_at_the_prepared_size_are_passed_as_they_are():
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    got = []
    pixel_items([("a", pixels)], ImagePrep(16),
                lambda image_id, p: got.append(p) or torch.zeros(16, 16, dtype=torch.uint8))
    assert got[0] is pixels
