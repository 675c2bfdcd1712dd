"""read_voc on a tiny fixture in the exact VOC 2012 (+ SBD aug) layout, and on the embedded benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camflow.data import embedded
from camflow.data.manifest import MANIFEST_SCHEMA, class_names
from camflow.data.rejects import Rejects
from camflow.data.voc import VOC_CLASSES, read_voc

# Two objects per image, class ids for each id; "dog" = 11, "person" = 14.
OBJECTS = {"2007_000032": (0, 14), "2007_000039": (11,), "2008_000123": (4, 19)}


def _xml(image_id: str, classes) -> str:
    objects = "".join(
        f"<object><name>{VOC_CLASSES[k]}</name><difficult>0</difficult>"
        f"<bndbox><xmin>{3 + 7 * i}</xmin><ymin>4</ymin><xmax>{7 + 7 * i}</xmax><ymax>12</ymax>"
        "</bndbox></object>"
        for i, k in enumerate(classes)
    )
    return (
        f"<annotation><filename>{image_id}.jpg</filename><size><width>24</width>"
        f"<height>16</height><depth>3</depth></size>{objects}</annotation>"
    )


@pytest.fixture()
def voc(tmp_path, write_image, write_mask, make_object_mask) -> Path:
    root = tmp_path / "VOC2012"
    for seed, (image_id, classes) in enumerate(OBJECTS.items()):
        write_image(root / "JPEGImages" / f"{image_id}.jpg", seed=seed)
        mask = make_object_mask(classes=classes)
        mask[2, :] = 255  # a void band, as VOC draws around objects
        write_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, classes))
    # SBD-style augmented image: only in SegmentationClassAug (grayscale PNG), no XML.
    write_image(root / "JPEGImages" / "2011_003276.jpg", seed=9)
    write_mask(
        root / "SegmentationClassAug" / "2011_003276.png",
        make_object_mask(classes=(7,)),
        palette=False,
    )
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n2007_000039\n")
    (lists / "val.txt").write_text("2008_000123\n")
    (lists / "train_aug.txt").write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClass/2007_000032.png\n"
        "/JPEGImages/2011_003276.jpg /SegmentationClassAug/2011_003276.png\n"
    )
    return root


def test_labels_masks_and_boxes(voc) -> None:
    table = read_voc(voc, "train")
    assert table.schema.equals(MANIFEST_SCHEMA) and class_names(table) == list(VOC_CLASSES)
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert rows["2007_000032"]["labels"] == [0, 14] and rows["2007_000039"]["labels"] == [11]
    row = rows["2007_000032"]
    assert row["uri"] == str(voc / "JPEGImages/2007_000032.jpg")
    assert row["mask_uri"] == str(voc / "SegmentationClass/2007_000032.png")
    assert (row["width"], row["height"], row["split"]) == (24, 16, "train")
    # 1-based inclusive VOC box (3, 4)-(7, 12) becomes pixel edges (2, 3)-(7, 12).
    assert row["boxes"][0] == {"class_id": 0, "x0": 2.0, "y0": 3.0, "x1": 7.0, "y1": 12.0}


def test_labels_from_xml(voc) -> None:
    table = read_voc(voc, "val", labels_from="xml")
    assert table.column("labels").to_pylist() == [[4, 19]]


def test_train_aug_pair_list_and_aug_masks(voc) -> None:
    table = read_voc(voc, "train_aug")
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert rows["2011_003276"]["labels"] == [7]
    assert rows["2011_003276"]["mask_uri"].endswith("SegmentationClassAug/2011_003276.png")
    assert rows["2011_003276"]["boxes"] is None


def test_missing_list_names_the_places_searched(voc) -> None:
    with pytest.raises(FileNotFoundError, match="trainval"):
        read_voc(voc, "trainval")


def _read_with(voc: Path, lines: str) -> tuple[list[str], Rejects]:
    (voc / "ImageSets/Segmentation/train.txt").write_text(lines)
    rejects = Rejects()
    table = read_voc(voc, "train", rejects=rejects)
    return table.column("image_id").to_pylist(), rejects


def test_missing_image_is_rejected_and_the_rest_goes_on(voc) -> None:
    ids, rejects = _read_with(voc, "2007_000032\n2099_000001\n2007_000039\n")
    assert ids == ["2007_000032", "2007_000039"]
    [record] = rejects
    assert (record.image_id, record.stage) == ("2099_000001", "read")
    assert "not found" in record.reason


def test_corrupt_image(voc) -> None:
    (voc / "JPEGImages/2007_000039.jpg").write_bytes(b"not a jpeg")
    ids, rejects = _read_with(voc, "2007_000032\n2007_000039\n")
    assert ids == ["2007_000032"] and "2007_000039" in rejects.reasons()


def test_mask_size_mismatch(voc, write_mask) -> None:
    write_mask(voc / "SegmentationClass/2007_000039.png", np.zeros((5, 5), np.uint8))
    ids, rejects = _read_with(voc, "2007_000032\n2007_000039\n")
    assert ids == ["2007_000032"]
    assert "differs from the image size" in rejects.reasons()["2007_000039"]


def test_mask_label_out_of_range(voc, write_mask, make_object_mask) -> None:
    write_mask(voc / "SegmentationClass/2007_000039.png", make_object_mask(classes=(40,)))
    ids, rejects = _read_with(voc, "2007_000032\n2007_000039\n")
    assert ids == ["2007_000032"] and "out of range" in rejects.reasons()["2007_000039"]


def test_empty_label_set(voc, write_mask) -> None:
    write_mask(voc / "SegmentationClass/2007_000039.png", np.zeros((16, 24), np.uint8))
    ids, rejects = _read_with(voc, "2007_000032\n2007_000039\n")
    assert ids == ["2007_000032"] and "empty label set" in rejects.reasons()["2007_000039"]


def test_duplicate_image_id(voc) -> None:
    ids, rejects = _read_with(voc, "2007_000032\n2007_000039\n2007_000032\n")
    assert ids == ["2007_000032", "2007_000039"]
    assert "duplicate" in rejects.reasons()["2007_000032"]


def test_path_escaping_the_root(voc, write_image) -> None:
    write_image(voc.parent / "secret.jpg")
    ids, rejects = _read_with(voc, "../secret.jpg SegmentationClass/2007_000039.png\n2007_000039\n")
    assert ids == ["2007_000039"] and "escapes the dataset root" in rejects.reasons()["secret"]


def test_unknown_xml_class(voc) -> None:
    (voc / "Annotations/2008_000123.xml").write_text(
        "<annotation><object><name>unicorn</name></object></annotation>"
    )
    rejects = Rejects()
    assert read_voc(voc, "val", labels_from="xml", rejects=rejects).num_rows == 0
    assert "unicorn" in rejects.reasons()["2008_000123"]


def test_reads_the_embedded_benchmark(tmp_path) -> None:
    root = embedded.build(tmp_path / "emb", seed=1, train=6, val=3, size=64)
    rejects = Rejects()
    train = read_voc(root, "train", rejects=rejects)
    val = read_voc(root, "val", labels_from="xml", rejects=rejects)
    assert (train.num_rows, val.num_rows, len(rejects)) == (6, 3, 0)
    assert class_names(train) == list(embedded.CLASSES)
    from_xml = read_voc(root, "train", labels_from="xml")
    assert from_xml.column("labels").equals(train.column("labels"))
    assert all(len(b) >= 1 for b in train.column("boxes").to_pylist())


@pytest.mark.slow
def test_reads_from_object_storage(voc, s3_bucket) -> None:
    from camflow import storage

    for path in sorted(p for p in voc.rglob("*") if p.is_file()):
        storage.write_bytes(path.read_bytes(), f"s3://{s3_bucket}/voc/{path.relative_to(voc)}")
    rejects = Rejects()
    table = read_voc(f"s3://{s3_bucket}/voc", "train", rejects=rejects)
    assert len(rejects) == 0
    assert table.column("uri").to_pylist() == [
        f"s3://{s3_bucket}/voc/JPEGImages/2007_000032.jpg",
        f"s3://{s3_bucket}/voc/JPEGImages/2007_000039.jpg",
    ]
    assert table.column("labels").to_pylist() == [[0, 14], [11]]
