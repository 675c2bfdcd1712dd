"""The source benchmark: deterministic, classes disjoint from the digits, its own splits."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from camflow.data import embedded
from camflow.data.glyphs import SOURCE_CLASSES, SOURCE_GLYPHS, font_faces, glyph_pool
from camflow.data.source import SourceParams, build_source, contact_sheet

SMALL = SourceParams(seed=1, train=12, val=6, size=64)


@pytest.fixture(scope="module")
def small():
    return build_source(SMALL, processes=1)


def test_same_parameters_give_identical_pixels_whatever_the_process_count(small) -> None:
    again = build_source(SMALL, processes=2)
    assert again.data_hash == small.data_hash
    assert np.array_equal(again.train.images, small.train.images)
    assert np.array_equal(again.val.labels, small.val.labels)
    other = build_source(SourceParams(seed=2, train=12, val=6, size=64), processes=1)
    assert other.data_hash != small.data_hash
    assert not np.array_equal(other.train.images, small.train.images)


def test_shapes_labels_and_splits(small) -> None:
    assert small.classes == SOURCE_CLASSES
    assert small.train.images.shape == (12, 64, 64, 3) and small.train.images.dtype == np.uint8
    assert small.val.labels.shape == (6, len(SOURCE_CLASSES))
    per_image = small.train.labels.sum(axis=1)
    assert per_image.min() >= 1 and per_image.max() <= 3
    assert set(np.unique(small.train.labels)) <= {0, 1}
    assert small.train.images.std() > 10  # real textures, not flat colour
    assert contact_sheet(small.train, small.classes, count=4)[:8] == b"\x89PNG\r\n\x1a\n"


def _names_a_digit(char: str) -> bool:
    name = unicodedata.name(char, "")
    numeral = unicodedata.numeric(char, None)
    return char.isdigit() or numeral is not None or "DIGIT" in name or "NUMERAL" in name


def test_classes_are_disjoint_from_the_digits() -> None:
    target = {name.lower() for name in embedded.CLASSES}
    assert not target & {name.lower() for name in SOURCE_CLASSES}
    # No digit of any script, no numeral (the Roman I and V read as 1 and 5), no digit look-alike.
    lookalikes = set("OoQDIl|iZzSsGbBgq") | {"I", "V"}
    for name, char in SOURCE_GLYPHS.items():
        assert len(char) == 1 and not _names_a_digit(char), name
        assert char not in lookalikes, name
    # Greek letters alpha..theta are the Greek numerals 1..9.
    greek_numerals = set("\u0391\u0392\u0393\u0394\u0395\u0396\u0397\u0398\u03b1\u03b2\u03b3\u03b4"
                         "\u03b5\u03b6\u03b7\u03b8\u03db")
    assert not greek_numerals & set(SOURCE_GLYPHS.values())
    assert len(set(SOURCE_GLYPHS.values())) == len(SOURCE_GLYPHS) >= 20


def test_train_and_val_glyphs_come_from_different_fonts() -> None:
    assert not set(font_faces("train")) & set(font_faces("val"))
    train, val = glyph_pool(0, "train", 8), glyph_pool(0, "val", 8)
    assert len(train.by_class) == len(SOURCE_CLASSES) == len(val.by_class)
    for bitmaps in train.by_class:
        assert bitmaps.shape == (8, 8, 8)
        assert bitmaps.min() >= 0 and bitmaps.max() <= 16 and bitmaps.max() > 8  # as optdigits


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="train"):
        SourceParams(train=0)
    with pytest.raises(ValueError, match="size"):
        SourceParams(size=16)
