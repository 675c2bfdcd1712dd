"""load_rgb: every supported source and kind of image, and a clear BadImageError otherwise."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from camflow.data.images import BadImageError, image_size, load_rgb


def test_rgb_jpeg_from_path_and_bytes(tmp_path, write_image) -> None:
    path = write_image(tmp_path / "a.jpg", size=(30, 20))
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (30, 20)
    assert np.array_equal(np.asarray(load_rgb(path.read_bytes())), np.asarray(image))
    assert np.array_equal(np.asarray(load_rgb(f"file://{path}")), np.asarray(image))
    assert image_size(path) == (30, 20)


def test_grayscale_is_converted_not_rejected(tmp_path, write_image) -> None:
    path = write_image(tmp_path / "g.png", mode="L")
    gray = np.asarray(Image.open(path))
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (16, 24, 3) and all(np.array_equal(rgb[..., c], gray) for c in range(3))


def test_rgba_is_composited_onto_black(tmp_path, write_image) -> None:
    path = write_image(tmp_path / "a.png", mode="RGBA")
    rgba = np.asarray(Image.open(path)).astype(np.float64)
    rgb = np.asarray(load_rgb(path)).astype(np.float64)
    expected = rgba[..., :3] * rgba[..., 3:] / 255.0
    assert np.abs(rgb - expected).max() <= 1.0


def test_palette_with_transparency(tmp_path) -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    image.info["transparency"] = 0
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    rgb = load_rgb(buffer.getvalue())
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (200, 100, 50)


def test_16_bit_is_scaled_to_8_bit(tmp_path, write_image) -> None:
    path = write_image(tmp_path / "deep.png", mode="I;16")
    raw = np.asarray(Image.open(path)).astype(np.float64)
    rgb = np.asarray(load_rgb(path))
    assert rgb.dtype == np.uint8
    assert np.abs(rgb[..., 0] - raw / 257.0).max() <= 0.5 + 1e-9


def test_missing_file(tmp_path) -> None:
    with pytest.raises(BadImageError, match="not found.*nope.jpg"):
        load_rgb(tmp_path / "nope.jpg")


def test_zero_size_file(tmp_path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match="zero-size.*empty.jpg"):
        load_rgb(tmp_path / "empty.jpg")
    with pytest.raises(BadImageError, match="zero-size"):
        image_size(tmp_path / "empty.jpg")


def test_corrupt_file(tmp_path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(BadImageError, match="junk.jpg"):
        load_rgb(tmp_path / "junk.jpg")


def test_truncated_jpeg_fails_on_decode_not_on_header(tmp_path, write_image) -> None:
    data = write_image(tmp_path / "full.jpg", size=(64, 64)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert image_size(tmp_path / "cut.jpg") == (64, 64)  # the header alone looks fine
    with pytest.raises(BadImageError, match="truncated.*cut.jpg"):
        load_rgb(tmp_path / "cut.jpg")


@pytest.mark.slow
def test_s3_uri(tmp_path, write_image, s3_bucket) -> None:
    from camflow import storage

    path = write_image(tmp_path / "x.png", size=(10, 7))
    uri = f"s3://{s3_bucket}/imgs/x.png"
    storage.write_bytes(path.read_bytes(), uri)
    assert load_rgb(uri).size == (10, 7)
    with pytest.raises(BadImageError, match="not found"):
        load_rgb(f"s3://{s3_bucket}/imgs/missing.png")
