import io

import numpy as np
import pytest
import torch
from PIL import Image

from camflow.postprocess import VOC_PALETTE, decode_label_png, encode_label_png


def test_roundtrip_keeps_labels_and_writes_voc_palette():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 5, 20, 255], size=(17, 23)).astype(np.uint8)
    data = encode_label_png(labels)
    img = Image.open(io.BytesIO(data))
    assert img.mode == "P"
    palette = np.frombuffer(bytes(img.getpalette()), np.uint8).reshape(-1, 3)
    assert palette[1].tolist() == [128, 0, 0]  # VOC aeroplane
    assert palette[15].tolist() == [192, 128, 128]  # VOC person
    assert palette[255].tolist() == [224, 224, 192]  # VOC void
    np.testing.assert_array_equal(palette[:256], VOC_PALETTE)
    np.testing.assert_array_equal(decode_label_png(data), labels)


def test_accepts_torch_int_tensor():
    t = torch.tensor([[0, 1], [2, 255]], dtype=torch.int64)
    np.testing.assert_array_equal(decode_label_png(encode_label_png(t)), t.numpy())


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 2, 3), np.uint8), r"\[H, W\]"),
        (np.array([[0, 256]]), "0..255"),
        (np.array([[0.5, 1.0]]), "integer"),
    ],
)
def test_bad_label_maps_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        encode_label_png(bad, name="img_7")


def test_corrupt_png_names_the_record():
    with pytest.raises(ValueError, match="img_9: not a readable PNG"):
        decode_label_png(b"not a png", name="img_9")
