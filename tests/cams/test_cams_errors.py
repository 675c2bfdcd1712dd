"""Bad input gets a clear error that names the argument at fault."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import nn

from camflow.cams import compute, multiscale


@functools.cache
def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@functools.cache
def _images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match=r"method: unknown CAM method 'gradcam2'.*known: broadcam"):
        compute(_resnet(), _images(), "gradcam2", "layer4", [1])


def test_unknown_layer_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'layer5'.*valid names include: conv1"):
        compute(_resnet(), _images(), "gradcam", "layer5", [1])


@pytest.mark.parametrize("method", ["cam", "gradcam", "scorecam", "broadcam", "recam"])
def test_class_ids_out_of_range(method: str) -> None:
    options = {
        "broadcam": {"weights": torch.ones(512, 20)},
        "recam": {"head": nn.Linear(512, 20)},
    }.get(method, {})
    limit = 20 if method in ("broadcam", "recam") else 1000
    classes = torch.tensor([[1, limit], [-1, 2]])
    with pytest.raises(
        ValueError,
        match=rf"classes: ids out of range \[0, {limit}\).*image 0 -> "
        rf"{limit}, image 1 -> -1",
    ):
        compute(_resnet(), _images(), method, "layer4", classes, **options)


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.randn(3, 32, 32), ValueError, r"images: expected shape \[B, 3, H, W\], got \[3, 32"),
        (torch.randn(2, 1, 32, 32), ValueError, r"images: expected shape \[B, 3, H, W\]"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError, r"images: expected a floating"),
        ([[0.0]], TypeError, r"images: expected a torch.Tensor"),
    ],
)
def test_bad_images(images, error, match) -> None:
    with pytest.raises(error, match=match):
        compute(_resnet(), images, "cam", "layer4", [1])


def test_non_finite_image_is_named() -> None:
    images = _images().clone()
    images[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"images: image\(s\) at batch index \[1\] contain NaN"):
        compute(_resnet(), images, "gradcam", "layer4", [1])


@pytest.mark.parametrize(
    ("classes", "error", "match"),
    [
        (torch.tensor([1, 2]), ValueError, r"classes: a tensor must be \[B, K\]"),
        (torch.ones(3, 1, dtype=torch.long), ValueError, r"classes: 3 rows for a batch of 2"),
        (torch.ones(2, 1), TypeError, r"classes: expected integer class ids"),
        ([1.5], TypeError, r"classes: expected a list of int"),
        ([], ValueError, r"classes: give at least one class id"),
    ],
)
def test_bad_classes(classes, error, match) -> None:
    with pytest.raises(error, match=match):
        compute(_resnet(), _images(), "cam", "layer4", classes)


def test_cam_on_a_model_without_head() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"head: Sequential has no nn.Linear or 1x1 nn.Conv2d"):
        compute(model, _images(), "cam", "1", [0])


def test_cam_head_that_does_not_read_the_layer() -> None:
    with pytest.raises(ValueError, match=r"cam: .*expects 512 input channels but layer 'layer3'"):
        compute(_resnet(), _images(), "cam", "layer3", [0])
    with pytest.raises(ValueError, match=r"head: expected an nn.Linear or a 1x1 nn.Conv2d"):
        compute(_resnet(), _images(), "cam", "layer4", [0], head=nn.Conv2d(512, 10, 3))


def test_recam_needs_its_head() -> None:
    with pytest.raises(ValueError, match=r"recam: needs head="):
        compute(_resnet(), _images(), "recam", "layer4", [0])


def test_broadcam_weights_must_cover_the_layers() -> None:
    with pytest.raises(ValueError, match=r"broadcam: needs weights="):
        compute(_resnet(), _images(), "broadcam", ["layer3", "layer4"], [0])
    with pytest.raises(
        ValueError, match=r"weights have shape \[512, 20\] but the layers give D = 768"
    ):
        compute(
            _resnet(), _images(), "broadcam", ["layer3", "layer4"], [0], weights=torch.ones(512, 20)
        )


def test_unknown_option_and_bad_option_values() -> None:
    with pytest.raises(TypeError, match=r"gradcam: unknown option\(s\) \['batch_size'\]"):
        compute(_resnet(), _images(), "gradcam", "layer4", [0], batch_size=4)
    with pytest.raises(ValueError, match=r"batch_size: expected a positive int"):
        compute(_resnet(), _images(), "scorecam", "layer4", [0], batch_size=0)
    with pytest.raises(ValueError, match=r"gradient_mode: expected one of"):
        compute(_resnet(), _images(), "gradcam", "layer4", [0], gradient_mode="loop")
    with pytest.raises(ValueError, match=r"size: expected None or \(H, W\)"):
        compute(_resnet(), _images(), "cam", "layer4", [0], size=(0, 4))
    with pytest.raises(ValueError, match=r"layers: cam reads the one layer"):
        compute(_resnet(), _images(), "cam", ["layer3", "layer4"], [0])
    with pytest.raises(ValueError, match=r"scales: expected positive numbers"):
        multiscale(_resnet(), _images(), "cam", "layer4", [0], scales=(1.0, -0.5))


def test_model_that_does_not_return_logits() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(TypeError, match=r"model: expected the forward to return logits"):
        compute(model, _images(), "gradcam", "0", [0])
