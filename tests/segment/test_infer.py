"""The segmentation model's inference: class probabilities averaged over scales and flips, each
flipped copy put back the right way round before it is averaged."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from camflow.segment.infer import DEEPLAB_SCALES, SegInference, class_probabilities, predict


class Logits(nn.Module):
    """A stand-in segmenter: the image's first ``labels`` channels, plus a fixed left-to-right
    ramp on label 0 (so that a flipped copy not flipped back would show)."""

    def __init__(self, labels: int = 2, ramp: float = 0.0) -> None:
        super().__init__()
        self.labels, self.ramp = labels, ramp

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = x[:, :self.labels].clone()
        out[:, 0] += self.ramp * torch.linspace(0, 1, x.shape[-1])
        return {"out": out}


def test_one_pass_is_the_softmax_of_the_logits():
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    got = class_probabilities(Logits(3), x, SegInference.single())
    torch.testing.assert_close(got, x.softmax(1))
    assert torch.equal(predict(Logits(3), x, inference=SegInference.single()),
                       x.argmax(1).to(torch.uint8))


def test_a_flipped_pass_is_flipped_back_before_the_mean():
    x = torch.randn(2, 2, 4, 6, generator=torch.Generator().manual_seed(1))
    model = Logits(2, ramp=3.0)
    got = class_probabilities(model, x, SegInference(scales=(1.0,), flip=True))
    ramp = 3.0 * torch.linspace(0, 1, 6)
    plain, mirrored = x.clone(), x.clone()
    plain[:, 0] += ramp
    mirrored[:, 0] += ramp.flip(-1)  # the mirrored image's ramp, seen from the original side
    torch.testing.assert_close(got, (plain.softmax(1) + mirrored.softmax(1)) / 2)


def test_scales_average_at_the_input_size_and_predict_resizes():
    # A constant image looks the same at every scale: the mean is its one-pass softmax.
    x = torch.ones(1, 2, 7, 9) * torch.tensor([0.0, 1.0])[None, :, None, None]
    got = class_probabilities(Logits(2), x, SegInference())
    assert got.shape == (1, 2, 7, 9)
    torch.testing.assert_close(got, x.softmax(1))
    labels = predict(Logits(2), x, size=(20, 30))
    assert labels.shape == (1, 20, 30) and labels.dtype == torch.uint8 and labels.eq(1).all()


def test_defaults_are_deeplabs_and_bad_scales_are_refused():
    assert SegInference().scales == DEEPLAB_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert SegInference().flip and dataclasses.asdict(SegInference.single()) == {
        "scales": (1.0,), "flip": False}
    for bad in ((), (1.0, 0.0), (-0.5,)):
        with pytest.raises(ValueError, match="scales"):
            SegInference(scales=bad)
