"""The embedded benchmark: VOC layout, consistent annotations, byte-identical rebuilds."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camflow.data import embedded
from camflow.data.embedded_render import digit_pool
from camflow.data.masks import IGNORE


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path:
    return embedded.build(tmp_path_factory.mktemp("emb") / "bench", seed=3, train=8, val=4, size=96)


def test_same_seed_gives_byte_identical_files(small_build: Path, tmp_path: Path) -> None:
    again = embedded.build(tmp_path / "again", seed=3, train=8, val=4, size=96)
    assert _digests(again) == _digests(small_build)
    other = embedded.build(tmp_path / "other", seed=4, train=8, val=4, size=96)
    assert _digests(other) != _digests(small_build)


def test_voc_layout(small_build: Path) -> None:
    train = (small_build / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (small_build / "ImageSets/Segmentation/val.txt").read_text().split()
    assert len(train) == 8 and len(val) == 4 and not set(train) & set(val)
    assert json.loads((small_build / "classes.json").read_text()) == list(embedded.CLASSES)
    assert (small_build / "contact_sheet.png").stat().st_size > 0
    for image_id in train + val:
        image = Image.open(small_build / "JPEGImages" / f"{image_id}.jpg")
        assert image.mode == "RGB" and image.size == (96, 96)
        mask = Image.open(small_build / "SegmentationClass" / f"{image_id}.png")
        assert mask.mode == "P" and mask.size == (96, 96)
        assert (small_build / "Annotations" / f"{image_id}.xml").exists()


def test_masks_boxes_and_labels_agree(small_build: Path) -> None:
    ids = (small_build / "ImageSets/Segmentation/train.txt").read_text().split()
    for image_id in ids:
        mask = np.asarray(Image.open(small_build / "SegmentationClass" / f"{image_id}.png"))
        values = set(np.unique(mask).tolist())
        assert values <= set(range(11)) | {IGNORE}
        assert IGNORE in values and 0 in values  # a thin void band around each object
        # The band is thin: most object pixels stay labelled.
        assert np.count_nonzero((mask > 0) & (mask < IGNORE)) > np.count_nonzero(mask == IGNORE) / 3
        objects = ET.parse(small_build / "Annotations" / f"{image_id}.xml").findall("object")
        assert 1 <= len(objects) <= 3
        xml_classes = {embedded.CLASSES.index(o.findtext("name")) for o in objects}
        assert {v - 1 for v in values if 0 < v < IGNORE} == xml_classes
        for obj in objects:
            k = embedded.CLASSES.index(obj.findtext("name"))
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (int(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x0 <= x1 <= 96 and 1 <= y0 <= y1 <= 96
            inside = mask[y0 - 1 : y1, x0 - 1 : x1]
            assert np.any(inside == k + 1)
            assert (x1 - x0 + 1) >= 10 and (y1 - y0 + 1) >= 0.2 * 96  # objects are not tiny


def test_existing_identical_build_is_reused(small_build: Path, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("rebuilt although an identical build exists")

    monkeypatch.setattr(embedded, "_build_into", fail)
    assert embedded.build(small_build, seed=3, train=8, val=4, size=96) == small_build


def test_other_parameters_replace_an_earlier_build(tmp_path: Path) -> None:
    root = embedded.build(tmp_path / "b", seed=0, train=3, val=1, size=64)
    root = embedded.build(tmp_path / "b", seed=0, train=2, val=1, size=64)
    assert (root / "ImageSets/Segmentation/train.txt").read_text().split() == [
        "train_00000",
        "train_00001",
    ]
    assert len(list((root / "JPEGImages").iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an embedded benchmark"):
        embedded.build(tmp_path, train=1, val=0, size=64)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_train_and_val_use_different_digit_samples() -> None:
    train, val = digit_pool(0, "train"), digit_pool(0, "val")
    total = sum(len(a) for a in train.by_class) + sum(len(a) for a in val.by_class)
    assert total == 1797
    for k in range(10):
        train_rows = {a.tobytes() for a in train.by_class[k]}
        shared = [a for a in val.by_class[k] if a.tobytes() in train_rows]
        # scikit-learn's digits hold no exact duplicates across a class, so nothing is shared.
        assert not shared


def test_cli_prints_class_frequencies(tmp_path: Path, capsys) -> None:
    assert (
        embedded.main(["--out", str(tmp_path / "c"), "--train", "4", "--val", "2", "--size", "64"])
        == 0
    )
    out = capsys.readouterr().out
    assert "train imgs" in out and "nine" in out
    frequencies = embedded.class_frequencies(tmp_path / "c")
    assert sum(frequencies["val"]["objects"].values()) >= 2
    assert embedded.main(["--out", str(tmp_path / "d"), "--train", "-1"]) == 2


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="size"):
        embedded.build("/nonexistent/never", size=8)
