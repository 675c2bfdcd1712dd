"""Parity with the peer library pytorch-grad-cam 1.5.7 on two random-initialised architectures.

Both sides are compared at image resolution after per-map min-max normalisation, which is what
pytorch-grad-cam returns (it min-max normalises, then resizes with cv2, then normalises again).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from camflow.cams import compute

PEERS = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
}

# (architecture, method) -> layer. Score-CAM runs one forward per channel: a narrow layer keeps
# the test fast. LayerCAM is read at an inner layer, where it differs most from Grad-CAM.
LAYERS = {
    "resnet18": {"layercam": "layer3", "scorecam": "layer2", None: "layer4"},
    "mobilenet_v3_small": {"layercam": "features.8", "scorecam": "features.3", None: "features.12"},
}


@functools.cache
def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None).eval()


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return (maps - low) / torch.where(span > 0, span, torch.ones_like(span))


@pytest.mark.parametrize("arch", sorted(LAYERS))
@pytest.mark.parametrize("method", sorted(PEERS))
def test_matches_pytorch_grad_cam(arch: str, method: str) -> None:
    model = _model(arch)
    layer = LAYERS[arch].get(method, LAYERS[arch][None])
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    classes = torch.tensor([[3, 17], [250, 3]])

    ours = compute(model, images, method, layer, classes, size=(64, 64))
    ours = _min_max(ours)

    module = dict(model.named_modules())[layer]
    with PEERS[method](model=model, target_layers=[module]) as peer:
        if method == "scorecam":
            peer.batch_size = 64
        theirs = torch.stack(
            [
                torch.from_numpy(
                    peer(images, targets=[ClassifierOutputTarget(int(c)) for c in classes[:, k]])
                )
                for k in range(classes.shape[1])
            ],
            dim=1,
        )
    # Re-normalise theirs too: its 1e-7 in the denominator matters when a raw map is tiny.
    theirs = _min_max(theirs)
    assert ours.shape == theirs.shape == (2, 2, 64, 64)
    # A random-init net can give a class an all-zero map; most maps must be real ones.
    assert (theirs.amax(dim=(-2, -1)) == 1).sum() >= 3
    assert (ours - theirs).abs().max().item() <= 1e-4
