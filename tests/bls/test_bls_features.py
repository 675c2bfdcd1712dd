"""Pooled multi-stage features, streaming them into a BLS, and BroadCAM == CAM for a ridge head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from camflow.bls import BLS
from camflow.cams import compute
from camflow.data.rejects import Rejects
from camflow.features import accumulate, default_layers, pooled_by_layer, pooled_features
from camflow.models import build


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build("resnet18", num_classes=3).eval()


def batches(n_batches: int = 3, size: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        images = torch.randn(size, 3, 64, 64, generator=gen)
        labels = (torch.rand(size, 3, generator=gen) > 0.5).float()
        out.append((images, labels, [f"img{b}_{i}" for i in range(size)]))
    return out


def test_pooled_features_are_the_relu_gap_of_each_stage_in_order(model) -> None:
    images = batches(1)[0][0]
    feats = pooled_features(model, images, ["stage5", "stage4"])
    assert feats.shape == (8, 512 + 256)
    maps = model.forward_stages(images)
    expected = torch.cat([maps["stage5"].relu().mean(dim=(2, 3)),
                          maps["stage4"].relu().mean(dim=(2, 3))], dim=1)
    torch.testing.assert_close(feats, expected)
    assert default_layers(model) == ("stage4", "stage5")
    assert default_layers(torchvision.models.resnet18(weights=None)) == ("layer3", "layer4")


def test_pooling_leaves_the_model_and_its_batch_norm_untouched() -> None:
    net = torchvision.models.resnet18(weights=None).train()
    before = net.bn1.running_mean.clone()
    pooled_by_layer(net, torch.randn(2, 3, 32, 32) + 3.0, ["layer3"])
    assert net.training
    torch.testing.assert_close(net.bn1.running_mean, before)


def test_unknown_layers_and_bad_images_are_named(model) -> None:
    with pytest.raises(ValueError, match="unknown layer 'stage9'"):
        pooled_features(model, torch.zeros(1, 3, 32, 32), ["stage9"])
    with pytest.raises(ValueError, match=r"images: expected a \[B, 3, H, W\]"):
        pooled_features(model, torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="name the layers"):
        default_layers(torch.nn.Linear(2, 2))


def test_accumulate_equals_a_fit_on_the_concatenated_features(model) -> None:
    data = batches()
    streamed = accumulate(model, data, bls=BLS(alpha=1.0, step=64)).finalize()
    X = torch.cat([pooled_features(model, images) for images, _, _ in data])
    Y = torch.cat([labels for _, labels, _ in data])
    direct = BLS(alpha=1.0, step=64).fit(X, Y)
    assert streamed.feature_layout == [("stage4", 256), ("stage5", 512)]
    assert streamed.n_samples_ == 24
    np.testing.assert_allclose(streamed.coef_, direct.coef_, rtol=1e-9, atol=1e-12)


def test_bad_rows_are_reported_and_the_rest_goes_on(model) -> None:
    data = batches(2)
    data[0][0][1] = float("nan")  # image img0_1 gives NaN features
    data[1][1][5, 2] = 3.0  # img1_5 has a label that is not 0/1
    rejects = Rejects()
    bls = accumulate(model, data, rejects=rejects)
    assert bls.n_samples_ == 14
    reasons = rejects.reasons()
    assert set(reasons) == {"img0_1", "img1_5"}
    assert "non-finite" in reasons["img0_1"] and "multi-hot" in reasons["img1_5"]
    assert rejects.to_table().column("stage").to_pylist() == ["features", "features"]


def test_broadcam_on_one_stage_without_enhancement_is_cam_with_the_ridge_head() -> None:
    torch.manual_seed(1)
    net = build("resnet18", num_classes=3).eval()
    data = batches(2, size=12, seed=3)
    bls = accumulate(net, data, ["stage5"], bls=BLS(alpha=0.1, enhance=False)).finalize()
    # Fit the GAP model's head by the same ridge.
    head = net.head.classifier
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(bls.coef_.T).float().reshape(head.weight.shape))
        head.bias.copy_(torch.from_numpy(bls.intercept_).float())
    images = data[0][0][:4]
    logits = net(images)
    np.testing.assert_allclose(logits.detach().numpy(),
                               bls.predict(pooled_features(net, images, ["stage5"])),
                               rtol=1e-4, atol=1e-5)
    classes = [0, 1, 2]
    broad = compute(net, images, "broadcam", ["stage5"], classes, weights=bls, size=(64, 64))
    plain = compute(net, images, "cam", "stage5", classes, size=(64, 64))
    assert broad.abs().max() > 0
    torch.testing.assert_close(broad, plain, rtol=1e-5, atol=1e-6)
