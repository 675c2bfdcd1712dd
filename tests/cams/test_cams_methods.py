"""Each weight rule against its definition, and the engine's options (size, modes, dtypes)."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from camflow.cams import METHODS, class_maps, compute, multiscale


@functools.cache
def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _images(batch: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _layer4(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    body = nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        return body(images)


def test_all_methods_registered() -> None:
    expected = {"cam", "cam_nwc", "recam", "broadcam", "gradcam", "gradcampp", "xgradcam"}
    assert expected | {"layercam", "scorecam"} <= set(METHODS)


def test_cam_spatial_mean_is_logit_minus_bias() -> None:
    model, images = _resnet(), _images()
    classes = torch.tensor([[0, 7, 999], [42, 7, 1]])
    maps = class_maps(model, images, "cam", "layer4", classes)
    with torch.no_grad():
        logits = model(images)
    expected = logits.gather(1, classes) - model.fc.bias[classes]
    torch.testing.assert_close(maps.mean(dim=(-2, -1)), expected, rtol=1e-4, atol=1e-5)
    assert (maps < 0).any()  # the signed map really is unclamped
    assert (compute(model, images, "cam", "layer4", classes) >= 0).all()


def test_cam_head_sources_agree() -> None:
    model, images = _resnet(), _images()
    auto = compute(model, images, "cam", "layer4", [3, 5])
    explicit = compute(model, images, "cam", "layer4", [3, 5], head=model.fc)
    matrix = compute(model, images, "cam", "layer4", [3, 5], weights=model.fc.weight.detach())
    torch.testing.assert_close(auto, explicit)
    torch.testing.assert_close(auto, matrix)


def test_cam_with_1x1_conv_head() -> None:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    model = nn.Sequential(body, nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    images = _images(size=16)
    maps = class_maps(model, images, "cam", "0", [2])
    with torch.no_grad():
        logits = model(images)
    torch.testing.assert_close(maps.mean(dim=(-2, -1))[:, 0], logits[:, 2] - model[1].bias[2])


def test_cam_nwc_uses_no_negative_weights() -> None:
    model, images = _resnet(), _images()
    weights = model.fc.weight.detach().clone()
    weights[5] = -weights[5].abs()  # class 5: every weight negative
    nwc = class_maps(model, images, "cam_nwc", "layer4", [5, 6], weights=weights)
    plain = class_maps(model, images, "cam", "layer4", [5, 6], weights=weights)
    assert (plain[:, 0] <= 0).all() and (plain[:, 0] < 0).any()
    assert (nwc[:, 0] == 0).all()  # ResNet stage outputs are >= 0: only positive weights act
    expected = torch.einsum("kc,bchw->bkhw", weights[[5, 6]].clamp_min(0), _layer4(model, images))
    torch.testing.assert_close(nwc, expected, rtol=1e-4, atol=1e-5)


def test_recam_reads_the_given_head_only() -> None:
    model, images = _resnet(), _images()
    torch.manual_seed(3)
    recam_head = nn.Linear(512, 1000)
    got = compute(model, images, "recam", "layer4", [1, 2], head=recam_head)
    want = compute(model, images, "cam", "layer4", [1, 2], head=recam_head)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, compute(model, images, "cam", "layer4", [1, 2]))


class _Coef:
    """Duck-typed fitted estimator: coef_ in scikit-learn's [num_classes, D] layout."""

    def __init__(self, coef) -> None:
        self.coef_ = coef


def test_broadcam_splits_weights_per_layer() -> None:
    model, images = _resnet(), _images()
    torch.manual_seed(4)
    depth, num_classes = 256 + 512, 20
    weights = torch.randn(depth, num_classes)
    classes = torch.tensor([[0, 19], [4, 4]])
    got = class_maps(model, images, "broadcam", ["layer3", "layer4"], classes, weights=weights)

    feats = {}
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        feats["layer3"] = model.layer3(model.layer2(model.layer1(x)))
        feats["layer4"] = model.layer4(feats["layer3"])
    w3, w4 = weights[:256], weights[256:]
    m3 = torch.stack(
        [torch.einsum("ck,chw->khw", w3[:, c], feats["layer3"][b]) for b, c in enumerate(classes)]
    )
    m4 = torch.stack(
        [torch.einsum("ck,chw->khw", w4[:, c], feats["layer4"][b]) for b, c in enumerate(classes)]
    )
    m4 = F.interpolate(m4, size=m3.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, m3 + m4, rtol=1e-4, atol=1e-4)

    from_coef = class_maps(
        model, images, "broadcam", ["layer3", "layer4"], classes, weights=_Coef(weights.T.numpy())
    )
    torch.testing.assert_close(from_coef, got)


def test_broadcam_works_with_multiscale_and_flip() -> None:
    model, images = _resnet(), _images(size=48)
    weights = torch.randn(256 + 512, 5, generator=torch.Generator().manual_seed(0)).abs()
    maps = multiscale(model, images, "broadcam", ["layer3", "layer4"], [0, 3], weights=weights)
    assert maps.shape == (2, 2, 48, 48)
    torch.testing.assert_close(maps.amax(dim=(-2, -1)), torch.ones(2, 2))


def test_gradient_modes_agree() -> None:
    model, images = _resnet(), _images()
    classes = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for method in ("gradcam", "gradcampp", "layercam"):
        batched = class_maps(model, images, method, ["layer3", "layer4"], classes)
        expanded = class_maps(
            model, images, method, ["layer3", "layer4"], classes, gradient_mode="expand"
        )
        torch.testing.assert_close(batched, expanded, rtol=1e-4, atol=1e-6)


def test_gradcam_matches_one_backward_per_class() -> None:
    model, images = _resnet(), _images()
    maps = class_maps(model, images, "gradcam", "layer4", [7, 300])
    feats = _layer4(model, images).requires_grad_(True)
    logits = model.fc(torch.flatten(model.avgpool(feats), 1))
    for k, c in enumerate([7, 300]):
        (grad,) = torch.autograd.grad(logits[:, c].sum(), feats, retain_graph=True)
        want = (grad.mean(dim=(-2, -1))[:, :, None, None] * feats).sum(1)
        torch.testing.assert_close(maps[:, k], want.detach(), rtol=1e-4, atol=1e-6)


def test_size_and_normalize() -> None:
    model, images = _resnet(), _images()
    raw = compute(model, images, "gradcam", "layer4", [1, 2])
    assert raw.shape == (2, 2, 2, 2)
    big = compute(model, images, "gradcam", "layer4", [1, 2], size=(64, 48), normalize=True)
    assert big.shape == (2, 2, 64, 48)
    peaks = big.amax(dim=(-2, -1))
    assert ((peaks - 1).abs() < 1e-6).logical_or(peaks == 0).all()


def test_frozen_model_still_gets_gradients() -> None:
    model = _resnet()
    images = _images()
    want = compute(model, images, "gradcam", "layer4", [1])
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            got = compute(model, images, "gradcam", "layer4", [1])
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    ("method", "layer"), [("cam", "layer4"), ("gradcam", "layer4"), ("layercam", "layer3")]
)
def test_bf16_autocast_close_to_float32(method: str, layer: str) -> None:
    model, images = _resnet(), _images()
    want = class_maps(model, images, method, layer, [1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = class_maps(model, images, method, layer, [1, 2])
        assert compute(model, images, method, layer, [1, 2]).dtype == torch.float32
    assert got.dtype == torch.float32
    # bf16 keeps ~3 significant digits through the network: a few percent of the map's range.
    scale = want.abs().amax(dim=(-2, -1), keepdim=True)
    assert ((got - want).abs() <= 0.05 * scale).all()


def test_channels_last_gives_the_same_maps() -> None:
    model, images = _resnet(), _images()
    want = {m: compute(model, images, m, "layer4", [1, 2]) for m in ("cam", "gradcam")}
    model_cl = torchvision.models.resnet18(weights=None).eval()
    model_cl.load_state_dict(model.state_dict())
    model_cl = model_cl.to(memory_format=torch.channels_last)
    x = images.contiguous(memory_format=torch.channels_last)
    for method, expected in want.items():
        got = compute(model_cl, x, method, "layer4", [1, 2])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_multiscale_single_scale_is_normalised_compute() -> None:
    model, images = _resnet(), _images()
    got = multiscale(model, images, "gradcam", "layer4", [3], scales=(1.0,), flip=False)
    want = compute(model, images, "gradcam", "layer4", [3], size=(64, 64), normalize=True)
    torch.testing.assert_close(got, want)


def test_multiscale_is_flip_equivariant() -> None:
    model, images = _resnet(), _images(size=40)
    maps = multiscale(model, images, "cam", "layer4", [3, 9], scales=(1.0, 0.5, 1.5))
    mirrored = multiscale(model, images.flip(-1), "cam", "layer4", [3, 9], scales=(1.0, 0.5, 1.5))
    assert maps.shape == (2, 2, 40, 40)
    torch.testing.assert_close(mirrored, maps.flip(-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps.amax(dim=(-2, -1)), torch.ones(2, 2))
    sized = multiscale(model, images, "cam", "layer4", [3], size=(20, 30))
    assert sized.shape == (2, 1, 20, 30)


def test_scorecam_masked_forwards_keep_the_callers_autocast() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()
    seen = []
    model[-1].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    images = _images(size=16)
    want = class_maps(model, images, "scorecam", "1", [0, 3])
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = class_maps(model, images, "scorecam", "1", [0, 3], batch_size=5)
    assert set(seen) == {torch.bfloat16} and len(seen) == 1 + 3  # 1 forward + 12 masks / 5
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


def test_broadcam_with_a_fitted_camflow_bls() -> None:
    from camflow.bls import BLS
    from camflow.cams import capture

    model, layers = _resnet(), ["layer3", "layer4"]
    images = _images(batch=24, size=32, seed=5)
    labels = (torch.rand(24, 3, generator=torch.Generator().manual_seed(6)) > 0.5).float()
    with torch.no_grad(), capture(model, layers) as cap:
        model(images)
    pooled = torch.cat([cap.activations[n].relu().mean(dim=(-2, -1)) for n in layers], dim=1)
    bls = BLS(alpha=50.0, enhance=False).fit(pooled.double().numpy(), labels.numpy())
    bls.feature_layout = [("layer3", 256), ("layer4", 512)]

    got = class_maps(model, images[:2], "broadcam", layers, [0, 2], weights=bls)
    want = class_maps(
        model, images[:2], "broadcam", layers, [0, 2], weights=torch.from_numpy(bls.coef_)
    )
    torch.testing.assert_close(got, want)
    # At 32 px layer4 is 1x1, so resizing it to layer3's 2x2 keeps its mean: the spatial mean of
    # the signed map is then exactly the BLS score without its intercept.
    scores = bls.predict(pooled[:2].double().numpy()) - bls.intercept_
    torch.testing.assert_close(
        got.mean(dim=(-2, -1)), torch.from_numpy(scores[:, [0, 2]]).float(), rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match=r"fitted on layers \[\('layer3', 256\)"):
        class_maps(model, images[:2], "broadcam", ["layer4", "layer3"], [0], weights=bls)
    with pytest.raises(ValueError, match=r"broadcam: weights BLS has no coef_"):
        class_maps(model, images[:2], "broadcam", layers, [0], weights=BLS())
