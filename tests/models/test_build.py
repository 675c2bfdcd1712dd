"""Model building: named stages, heads, output strides, bad names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camflow.models import build, wrap
from camflow.models.heads import ThresholdedAvgPool


def _x(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_resnet_has_named_stages_and_returns_logits() -> None:
    model = build("resnet18", 7).eval()
    names = dict(model.named_children())
    assert list(names) == ["stage1", "stage2", "stage3", "stage4", "stage5", "head"]
    assert [n for n, _ in model.stage1.named_children()] == ["conv1", "bn1", "relu", "maxpool"]
    with torch.no_grad():
        logits, maps = model(_x(), return_stages=True)
        assert torch.equal(logits, model(_x()))
    assert logits.shape == (2, 7)
    assert maps["stage4"].shape == (2, 256, 4, 4) and maps["stage5"].shape == (2, 512, 2, 2)


def test_gap_head_is_the_last_1x1_conv_and_its_weights_give_the_cam() -> None:
    model = build("resnet18", 3).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert convs[-1] is model.head.classifier and convs[-1].bias is not None
    with torch.no_grad():
        logits, maps = model(_x(), return_stages=True)
        cam_mean = torch.nn.functional.conv2d(maps["stage5"], model.head.classifier.weight).mean((2, 3))
    torch.testing.assert_close(logits, cam_mean + model.head.classifier.bias, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
@pytest.mark.parametrize(("stride", "grid"), [(32, 2), (16, 4), (8, 8)])
def test_output_stride_sets_the_stage5_grid(name: str, stride: int, grid: int) -> None:
    model = build(name, 2, output_stride=stride).eval()
    with torch.no_grad():
        _, maps = model(_x(1), return_stages=True)
    assert maps["stage5"].shape[-2:] == (grid, grid)


def test_resnet50_and_101_build_with_bottleneck_channels() -> None:
    for name in ("resnet50", "resnet101"):
        model = build(name, 4, output_stride=16)
        assert model.head.classifier.in_channels == 2048
        assert model.stage5[0].conv2.stride == (1, 1)
        assert model.stage5[1].conv2.dilation == (2, 2)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "convnext_tiny"])
def test_other_torchvision_classifiers_are_cut_by_resolution(name: str) -> None:
    model = build(name, 3).eval()
    with torch.no_grad():
        _, maps = model(_x(1), return_stages=True)
    sizes = [maps[f"stage{i}"].shape[-1] for i in range(1, 6)]
    assert sizes[-1] == 2 and sizes == sorted(sizes, reverse=True)


def test_wrap_any_five_modules() -> None:
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    stem = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool)
    model = wrap([stem, tv.layer1, tv.layer2, tv.layer3, tv.layer4], 5, head="tap")
    assert model.head.classifier.in_channels == 512
    assert model(_x()).shape == (2, 5)


def test_tap_averages_only_activations_above_tau_times_the_channel_max() -> None:
    feature = torch.tensor([[[[10.0, 0.5], [4.0, 0.0]]]])  # peak 10, tau 0.1 -> keep > 1
    assert ThresholdedAvgPool(0.1)(feature).item() == pytest.approx(7.0)
    assert ThresholdedAvgPool(0.0)(feature).item() == pytest.approx(14.5 / 3)
    assert ThresholdedAvgPool(0.1)(torch.zeros(1, 1, 2, 2)).item() == 0.0
    model = build("resnet18", 2, head="tap")
    assert model.head.pool.tau == 0.1


def test_recam_keeps_the_main_head_last_and_exposes_recam_head() -> None:
    model = build("resnet18", 4, head="recam")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert convs[-1] is model.head.classifier
    assert isinstance(model.recam_head, nn.Conv2d) and model.recam_head.weight.shape == (4, 512, 1, 1)
    assert model.recam_head.bias is None


def test_unknown_backbone_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'"):
        build("resnet19", 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": 1, "head": "recam"}, "recam.*num_classes >= 2"),
        ({"num_classes": 3, "head": "max"}, "unknown head 'max'"),
        ({"num_classes": 3, "output_stride": 4}, "output_stride must be one of"),
        ({"num_classes": 3, "head": "tap", "tau": 1.5}, "tau must be in"),
    ],
)
def test_bad_head_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build("resnet18", **kwargs)
