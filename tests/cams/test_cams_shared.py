"""The shared pass: every method's maps from ``compute_many`` equal ``compute`` of it alone,
while the model runs one forward (and one batched backward) for all of them."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import nn

from camflow.cams import CamRequest, compute, compute_many, multiscale, multiscale_many


@functools.cache
def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _images(batch: int = 2, size: int = 48) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))


def _requests(model: nn.Module) -> dict[str, CamRequest]:
    gen = torch.Generator().manual_seed(5)
    recam_head = nn.Linear(512, 1000)
    bls = torch.randn(256 + 512, 1000, generator=gen)
    return {
        "cam": CamRequest("cam", "layer4"),
        "cam_nwc": CamRequest("cam_nwc", "layer4"),
        "recam": CamRequest("recam", "layer4", head=recam_head),
        "broadcam": CamRequest("broadcam", ("layer3", "layer4"), options={"weights": bls}),
        "gradcam": CamRequest("gradcam", "layer4"),
        "gradcampp": CamRequest("gradcampp", "layer4"),
        "xgradcam": CamRequest("xgradcam", ("layer3",)),
        "layercam": CamRequest("layercam", ("layer3", "layer4")),
        "gradcam-expand": CamRequest("gradcam", "layer4", options={"gradient_mode": "expand"}),
        "scorecam": CamRequest("scorecam", "layer4", options={"batch_size": 256}),
    }


def _alone(model: nn.Module, images: torch.Tensor, request: CamRequest, classes, **kw):
    return compute(model, images, request.method, request.layers, classes, head=request.head,
                   **request.options, **kw)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)


def test_shared_pass_equals_each_method_alone() -> None:
    model, images = _resnet(), _images()
    classes = torch.tensor([[3, 17, 999], [42, 3, 0]])
    requests = _requests(model)
    shared = compute_many(model, images, requests, classes, size=(48, 48))
    assert list(shared) == list(requests)
    for key, request in requests.items():
        alone = _alone(model, images, request, classes, size=(48, 48))
        assert shared[key].shape == alone.shape == (2, 3, 48, 48), key
        diff = (_minmax(shared[key]) - _minmax(alone)).abs().max().item()
        assert diff <= 1e-5, f"{key}: max abs diff {diff:.2e} after min-max"


def test_multiscale_many_equals_multiscale() -> None:
    model, images = _resnet(), _images()
    requests = {k: r for k, r in _requests(model).items() if k != "scorecam"}
    shared = multiscale_many(model, images, requests, [5, 9], scales=(1.0, 0.5), flip=True)
    for key, r in requests.items():
        alone = multiscale(model, images, r.method, r.layers, [5, 9], scales=(1.0, 0.5),
                           flip=True, head=r.head, **r.options)
        diff = (shared[key] - alone).abs().max().item()
        assert diff <= 1e-5, f"{key}: max abs diff {diff:.2e}"


class _CountingResNet(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.forwards = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.model(x)


@pytest.mark.parametrize(
    ("keys", "forwards"),
    [
        (("cam", "cam_nwc", "recam", "broadcam"), 1),  # gradient-free: one forward
        (("broadcam", "cam", "gradcam", "layercam"), 1),  # plus gradient methods: still one
        (("cam", "gradcam", "gradcam-expand"), 2),  # a second gradient mode: its own pass
    ],
)
def test_one_forward_serves_every_method(keys: tuple[str, ...], forwards: int) -> None:
    model = _resnet()
    requests = {k: _requests(model)[k] for k in keys}
    # Layer names under the wrapper carry its prefix.
    requests = {
        k: CamRequest(r.method, tuple(f"model.{n}" for n in r.layer_names), r.head, r.options)
        for k, r in requests.items()
    }
    counting = _CountingResNet(model)
    compute_many(counting, _images(), requests, [1, 2])
    assert counting.forwards == forwards


def test_shared_pass_rejects_bad_requests_by_name() -> None:
    model = _resnet()
    with pytest.raises(ValueError, match="at least one method"):
        compute_many(model, _images(), {}, [0])
    with pytest.raises(TypeError, match="gradcam: unknown option"):
        compute_many(model, _images(), {"g": CamRequest("gradcam", "layer4", options={"x": 1})},
                     [0])
    with pytest.raises(ValueError, match="unknown CAM method 'nope'"):
        compute_many(model, _images(), {"n": CamRequest("nope", "layer4")}, [0])
