"""validate_manifest: one test per kind of bad input; the bad record is quarantined, the rest kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camflow.data.manifest import make_manifest
from camflow.data.rejects import Rejects
from camflow.data.validate import validate_manifest

NUM_CLASSES = 5


@pytest.fixture()
def dataset(tmp_path, write_image, write_mask, make_object_mask) -> Path:
    root = tmp_path / "root"
    write_image(root / "good.jpg")
    write_mask(root / "good.png", make_object_mask(classes=(1,)))
    return root


def _row(root: Path, image_id: str, name: str = "good.jpg", **overrides) -> dict:
    row = {
        "image_id": image_id,
        "uri": str(root / name),
        "split": "train",
        "labels": [1],
        "width": 24,
        "height": 16,
        "mask_uri": str(root / "good.png"),
    }
    row.update(overrides)
    return row


def _validate(root: Path, bad: dict) -> tuple[list[str], Rejects]:
    """Validate [good, bad, good2]; the two good rows must survive whatever the bad one is."""
    manifest = make_manifest([_row(root, "first"), bad, _row(root, "last")])
    rejects = Rejects()
    kept = validate_manifest(manifest, num_classes=NUM_CLASSES, rejects=rejects, root=root)
    ids = kept.column("image_id").to_pylist()
    assert ids[0] == "first" and ids[-1] == "last"
    if len(rejects):
        record = list(rejects)[0]
        assert record.stage == "validate" and record.image_id == bad["image_id"]
    return ids, rejects


def test_good_rows_pass(dataset) -> None:
    ids, rejects = _validate(dataset, _row(dataset, "middle"))
    assert ids == ["first", "middle", "last"] and len(rejects) == 0


def test_missing_file(dataset) -> None:
    ids, rejects = _validate(dataset, _row(dataset, "gone", "gone.jpg"))
    assert "gone" not in ids and "not found" in rejects.reasons()["gone"]


def test_corrupt_image(dataset) -> None:
    (dataset / "junk.jpg").write_bytes(b"\xff\xd8garbage" * 20)
    ids, rejects = _validate(dataset, _row(dataset, "junk", "junk.jpg"))
    assert "junk" not in ids and "junk.jpg" in rejects.reasons()["junk"]


def test_truncated_image(dataset, write_image) -> None:
    data = write_image(dataset / "big.jpg", size=(24, 16), seed=3).read_bytes()
    (dataset / "cut.jpg").write_bytes(data[: len(data) // 2])
    ids, rejects = _validate(dataset, _row(dataset, "cut", "cut.jpg"))
    assert "cut" not in ids and "truncated" in rejects.reasons()["cut"]


def test_zero_size_image(dataset) -> None:
    (dataset / "empty.jpg").write_bytes(b"")
    ids, rejects = _validate(dataset, _row(dataset, "empty", "empty.jpg"))
    assert "empty" not in ids and "zero-size" in rejects.reasons()["empty"]


@pytest.mark.parametrize(
    ("mode", "name"), [("L", "gray.png"), ("RGBA", "rgba.png"), ("I;16", "deep.png")]
)
def test_grayscale_rgba_16_bit_are_accepted(dataset, write_image, mode, name) -> None:
    write_image(dataset / name, mode=mode)
    ids, rejects = _validate(dataset, _row(dataset, "odd", name))
    assert "odd" in ids and len(rejects) == 0


def test_label_out_of_range(dataset) -> None:
    ids, rejects = _validate(dataset, _row(dataset, "wide", labels=[1, 7]))
    assert "wide" not in ids and "[7] out of range" in rejects.reasons()["wide"]


def test_empty_label_set(dataset) -> None:
    ids, rejects = _validate(dataset, _row(dataset, "unlabelled", labels=[]))
    assert "unlabelled" not in ids and "empty label set" in rejects.reasons()["unlabelled"]


def test_mask_size_differs_from_image(dataset, write_mask) -> None:
    write_mask(dataset / "small.png", np.zeros((10, 10), np.uint8))
    ids, rejects = _validate(
        dataset, _row(dataset, "mismatch", mask_uri=str(dataset / "small.png"))
    )
    reason = rejects.reasons()["mismatch"]
    assert "mismatch" not in ids and "10x10 differs from the image size 24x16" in reason


def test_duplicate_image_id_keeps_the_first(dataset) -> None:
    ids, rejects = _validate(dataset, _row(dataset, "first"))
    assert ids == ["first", "last"] and "duplicate image_id" in rejects.reasons()["first"]


@pytest.mark.parametrize("uri", ["../outside.jpg", "/etc/hostname"])
def test_path_escaping_the_root(dataset, write_image, uri) -> None:
    write_image(dataset.parent / "outside.jpg")
    ids, rejects = _validate(dataset, _row(dataset, "escape", uri=uri))
    assert "escape" not in ids
    assert (
        "outside the dataset root" in rejects.reasons()["escape"]
        or "escapes" in rejects.reasons()["escape"]
    )


def test_declared_size_must_match(dataset) -> None:
    ids, rejects = _validate(dataset, _row(dataset, "liar", width=99))
    assert "liar" not in ids and "99x16" in rejects.reasons()["liar"]


def test_box_outside_the_image(dataset) -> None:
    bad = _row(dataset, "box", boxes=[(1, 0.0, 0.0, 30.0, 5.0)])
    ids, rejects = _validate(dataset, bad)
    assert "box" not in ids and "outside" in rejects.reasons()["box"]


def test_relative_uris_resolve_under_root(dataset) -> None:
    ids, rejects = _validate(dataset, _row(dataset, "rel", uri="good.jpg", mask_uri="good.png"))
    assert "rel" in ids and len(rejects) == 0


def test_num_classes_is_checked(dataset) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        validate_manifest(make_manifest([]), num_classes=0, rejects=Rejects())
