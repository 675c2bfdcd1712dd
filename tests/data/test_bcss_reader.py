"""read_bcss on a tiny fixture in the BCSS-WSSS layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camflow.data.bcss import BCSS_CLASSES, parse_bcss_name, read_bcss
from camflow.data.manifest import MANIFEST_SCHEMA, class_names
from camflow.data.masks import load_mask
from camflow.data.rejects import Rejects

PATCH = "TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500"


@pytest.fixture()
def bcss(tmp_path, write_image, write_mask) -> Path:
    root = tmp_path / "BCSS-WSSS"
    for i, flags in enumerate(("1101", "0010", "0001")):
        write_image(root / "train" / f"{PATCH}+{i}[{flags}].png", size=(20, 20), seed=i)
    mask = np.full((20, 20), 4, np.uint8)  # 4: white background / exclude
    mask[2:8, 2:8] = 0  # TUM
    mask[10:15, 10:15] = 2  # LYM
    write_image(root / "val" / "img" / f"{PATCH}+0.png", size=(20, 20))
    write_mask(root / "val" / "mask" / f"{PATCH}+0.png", mask)
    return root


def test_parse_name() -> None:
    assert parse_bcss_name(f"{PATCH}+0[1101].png") == (f"{PATCH}+0", [0, 1, 3])
    with pytest.raises(ValueError, match="no \\[abcd\\]"):
        parse_bcss_name("plain.png")
    with pytest.raises(ValueError, match="4 digits"):
        parse_bcss_name("x[12].png")


def test_train_labels_from_file_names(bcss) -> None:
    table = read_bcss(bcss, "train")
    assert table.schema.equals(MANIFEST_SCHEMA) and class_names(table) == list(BCSS_CLASSES)
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert rows[f"{PATCH}+0"]["labels"] == [0, 1, 3]
    assert rows[f"{PATCH}+1"]["labels"] == [2]
    assert rows[f"{PATCH}+2"]["uri"] == str(bcss / "train" / f"{PATCH}+2[0001].png")
    assert (rows[f"{PATCH}+2"]["width"], rows[f"{PATCH}+2"]["height"]) == (20, 20)


def test_val_labels_and_converted_masks(bcss, tmp_path) -> None:
    table = read_bcss(bcss, "val", mask_out=tmp_path / "masks")
    [row] = table.to_pylist()
    assert row["labels"] == [0, 2]
    converted = load_mask(row["mask_uri"])
    assert converted[3, 3] == 1 and converted[12, 12] == 3 and converted[0, 0] == 255
    assert read_bcss(bcss, "val").column("mask_uri").to_pylist() == [None]


def test_bad_names_and_empty_labels_are_rejected(bcss, write_image) -> None:
    write_image(bcss / "train" / "no_flags.png")
    write_image(bcss / "train" / f"{PATCH}+9[0000].png")
    (bcss / "train" / f"{PATCH}+8[1000].png").write_bytes(b"")
    rejects = Rejects()
    table = read_bcss(bcss, "train", rejects=rejects)
    assert table.num_rows == 3
    reasons = rejects.reasons()
    assert "no [abcd]" in reasons["no_flags"]
    assert "empty label set" in reasons[f"{PATCH}+9[0000]"]
    assert "zero-size" in reasons[f"{PATCH}+8[1000]"]


def test_val_mask_size_mismatch(bcss, write_image, write_mask) -> None:
    write_image(bcss / "val" / "img" / "odd+1.png", size=(20, 20))
    write_mask(bcss / "val" / "mask" / "odd+1.png", np.zeros((8, 8), np.uint8))
    rejects = Rejects()
    assert read_bcss(bcss, "val", rejects=rejects).num_rows == 1
    assert "differs from the image size" in rejects.reasons()["odd+1"]


def test_missing_split_folder(bcss) -> None:
    with pytest.raises(FileNotFoundError, match="test"):
        read_bcss(bcss, "test")
