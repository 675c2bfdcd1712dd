"""Fixtures of the data-layer tests: tiny images and masks written in each dataset's layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camflow.data.masks import VOC_PALETTE


def _save_image(path: Path, size=(24, 16), mode="RGB", seed=0, fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "RGB":
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    elif mode == "L":
        image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    elif mode == "RGBA":
        image = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), mode="RGBA")
    elif mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    else:
        raise ValueError(mode)
    image.save(path, format=fmt)
    return path


def _save_mask(path: Path, array: np.ndarray, palette: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette(VOC_PALETTE)
    image.save(path)
    return path


@pytest.fixture()
def write_image() -> Callable[..., Path]:
    """write_image(path, size=(w, h), mode="RGB"|"L"|"RGBA"|"I;16", seed=0, fmt=None) -> path."""
    return _save_image


@pytest.fixture()
def write_mask() -> Callable[..., Path]:
    """write_mask(path, uint8 array, palette=True) -> path."""
    return _save_mask


def object_mask(size=(24, 16), classes=(0,), value_offset=1) -> np.ndarray:
    """Background with one rectangle per class (value class + offset), VOC void band on edges."""
    w, h = size
    mask = np.zeros((h, w), dtype=np.uint8)
    for i, k in enumerate(classes):
        x0 = 2 + 7 * i
        mask[3:12, x0 : x0 + 5] = k + value_offset
    return mask


@pytest.fixture()
def make_object_mask() -> Callable[..., np.ndarray]:
    return object_mask
