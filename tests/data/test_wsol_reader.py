"""read_wsol on tiny fixtures in clovaai/wsolevaluation's metadata layout (CUB boxes, OpenImages masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camflow.data.manifest import MANIFEST_SCHEMA
from camflow.data.masks import load_mask
from camflow.data.rejects import Rejects
from camflow.data.wsol import read_wsol


def _write(folder: Path, name: str, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(f"{line}\n" for line in lines))


@pytest.fixture()
def cub(tmp_path, write_image) -> tuple[Path, Path]:
    images = tmp_path / "CUB_200_2011" / "images"
    write_image(images / "001.Black_footed_Albatross" / "a.jpg", size=(30, 20))
    write_image(images / "002.Laysan_Albatross" / "b.jpg", size=(30, 20), seed=1)
    meta = tmp_path / "metadata" / "CUB" / "test"
    ids = ["001.Black_footed_Albatross/a.jpg", "002.Laysan_Albatross/b.jpg"]
    _write(meta, "image_ids.txt", ids)
    _write(meta, "class_labels.txt", [f"{ids[0]},0", f"{ids[1]},1"])
    _write(meta, "image_sizes.txt", [f"{ids[0]},30,20", f"{ids[1]},30,20"])
    _write(
        meta,
        "localization.txt",
        [f"{ids[0]},1,2,10,12", f"{ids[0]},15,3,29,19", f"{ids[1]},0,0,31,20"],
    )
    return meta, images


def test_cub_boxes(cub) -> None:
    meta, images = cub
    table = read_wsol(meta, images, num_classes=200)
    assert table.schema.equals(MANIFEST_SCHEMA)
    rows = table.to_pylist()
    assert [r["split"] for r in rows] == ["test", "test"]
    assert rows[0]["image_id"] == "001.Black_footed_Albatross/a.jpg"
    assert rows[0]["uri"] == str(images / "001.Black_footed_Albatross/a.jpg")
    assert rows[0]["labels"] == [0] and rows[1]["labels"] == [1]
    assert [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in rows[0]["boxes"]] == [
        (1, 2, 10, 12),
        (15, 3, 29, 19),
    ]
    assert rows[1]["boxes"][0]["x1"] == 30  # one pixel past the edge is clipped, not rejected


def test_label_out_of_range_missing_label_and_duplicates(cub, write_image) -> None:
    meta, images = cub
    write_image(images / "x" / "c.jpg")
    ids = (meta / "image_ids.txt").read_text().split()
    _write(meta, "image_ids.txt", [*ids, "x/c.jpg", "x/nolabel.jpg", ids[0]])
    labels = (meta / "class_labels.txt").read_text().split()
    _write(meta, "class_labels.txt", [*labels, "x/c.jpg,200"])
    rejects = Rejects()
    table = read_wsol(meta, images, num_classes=200, rejects=rejects)
    assert table.num_rows == 2
    reasons = rejects.reasons()
    assert "out of range" in reasons["x/c.jpg"]
    assert "class_labels.txt" in reasons["x/nolabel.jpg"]
    assert "duplicate" in reasons[ids[0]]


def test_missing_image_and_path_escape(cub, write_image) -> None:
    meta, images = cub
    write_image(images.parent / "outside.jpg")
    _write(meta, "image_ids.txt", ["002.Laysan_Albatross/b.jpg", "../outside.jpg", "x/gone.jpg"])
    _write(
        meta,
        "class_labels.txt",
        ["002.Laysan_Albatross/b.jpg,1", "../outside.jpg,1", "x/gone.jpg,1"],
    )
    (meta / "image_sizes.txt").unlink()
    rejects = Rejects()
    table = read_wsol(meta, images, rejects=rejects)
    assert table.column("image_id").to_pylist() == ["002.Laysan_Albatross/b.jpg"]
    assert "escapes" in rejects.reasons()["../outside.jpg"]
    assert "not found" in rejects.reasons()["x/gone.jpg"]


def test_openimages_masks_are_merged(tmp_path, write_image, write_mask) -> None:
    images = tmp_path / "OpenImages"
    write_image(images / "test" / "07" / "img.jpg", size=(16, 12))
    first = np.zeros((12, 16), np.uint8)
    first[1:4, 1:4] = 255
    second = np.zeros((12, 16), np.uint8)
    second[6:9, 8:12] = 255
    ignore = np.zeros((12, 16), np.uint8)
    ignore[0, :] = 255
    write_mask(images / "test" / "07" / "img_a.png", first, palette=False)
    write_mask(images / "test" / "07" / "img_b.png", second, palette=False)
    write_mask(images / "test" / "07" / "img_ignore.png", ignore, palette=False)
    meta = tmp_path / "metadata" / "OpenImages" / "test"
    _write(meta, "image_ids.txt", ["test/07/img.jpg"])
    _write(meta, "class_labels.txt", ["test/07/img.jpg,7"])
    _write(
        meta,
        "localization.txt",
        [
            "test/07/img.jpg,test/07/img_a.png,test/07/img_ignore.png",
            "test/07/img.jpg,test/07/img_b.png,",
        ],
    )
    [row] = read_wsol(meta, images, num_classes=100, mask_out=tmp_path / "merged").to_pylist()
    merged = load_mask(row["mask_uri"])
    assert merged[2, 2] == 8 and merged[7, 9] == 8 and merged[0, 5] == 255 and merged[5, 5] == 0
    assert row["labels"] == [7] and row["boxes"] is None
