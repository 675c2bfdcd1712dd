"""Synthetic multi-label images for fast training tests: class k is a bright square in channel k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset


class Squares(Dataset):
    """``n`` images of ``size`` px; each has 1-2 of ``num_classes`` classes drawn as squares.

    ``broken`` indices raise OSError, like an unreadable image file would.
    """

    def __init__(self, n: int, *, num_classes: int = 3, size: int = 32, seed: int = 0, broken=()):
        rng = np.random.default_rng(seed)
        self.size = size
        self.labels = np.zeros((n, num_classes), dtype=np.float32)
        self.images = rng.normal(0, 0.3, (n, 3, size, size)).astype(np.float32)
        for i in range(n):
            present = rng.choice(num_classes, size=rng.integers(1, 3), replace=False)
            for k in present:
                self.labels[i, k] = 1
                side = size // 3
                y, x = rng.integers(0, size - side, 2)
                self.images[i, k % 3, y : y + side, x : x + side] += 2.0 + k // 3
        self.image_ids = [f"sq_{i:04d}" for i in range(n)]
        self.broken = set(broken)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        if index in self.broken:
            raise OSError(f"cannot decode image {self.image_ids[index]}")
        return {
            "image": torch.from_numpy(self.images[index]),
            "labels": torch.from_numpy(self.labels[index]),
            "index": index,
            "image_id": self.image_ids[index],
        }


@pytest.fixture()
def squares():
    return Squares
