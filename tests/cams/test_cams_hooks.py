"""The hook context manager: right tensors, clear errors, nothing left behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camflow.cams import capture


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 2),
    )


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_captures_named_layer_outputs_and_removes_hooks() -> None:
    net = _net()
    x = torch.randn(2, 3, 8, 8)
    with capture(net, ["0", "2.1"]) as cap:
        net(x)
        assert _hook_count(net) == 2
    assert _hook_count(net) == 0
    assert torch.equal(cap.activations["0"], net[0](x))
    assert torch.equal(cap.activations["2.1"], net[:3](x))
    assert not cap.activations["0"].requires_grad


def test_gradients_match_autograd() -> None:
    net = _net()
    x = torch.randn(2, 3, 8, 8)
    with capture(net, "2", retain_grad=True) as cap:
        out = net(x)
        (grad,) = cap.gradients(out[:, 1].sum(), retain_graph=True).values()
        onehot = torch.eye(2).unsqueeze(1).expand(2, 2, 2)
        batched = cap.gradients(out, onehot, is_grads_batched=True)["2"]
    feat = net[:3](x).detach().requires_grad_(True)
    net[3:](feat)[:, 1].sum().backward()
    torch.testing.assert_close(grad, feat.grad)
    torch.testing.assert_close(batched[1], feat.grad)


def test_hooks_removed_when_block_raises() -> None:
    net = _net()
    with pytest.raises(RuntimeError, match="boom"), capture(net, ["0"]):
        raise RuntimeError("boom")
    assert _hook_count(net) == 0


def test_unknown_layer_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*valid names include: 0"):
        capture(_net(), ["layer9"]).__enter__()


def test_gradients_need_retain_grad() -> None:
    net = _net()
    with capture(net, ["0"]) as cap:
        out = net(torch.randn(1, 3, 8, 8))
        with pytest.raises(RuntimeError, match="retain_grad=True"):
            cap.gradients(out.sum())


def test_later_inplace_ops_do_not_alter_the_recording() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(256, 2)
    )
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want_out = net(x)
    with capture(net, "0", retain_grad=True) as cap:
        out = net(x)
        (grad,) = cap.gradients(out[:, 0].sum()).values()
    torch.testing.assert_close(out, want_out)
    pre_relu = net[0](x).detach()
    assert (pre_relu < 0).any()
    torch.testing.assert_close(cap.activations["0"].detach(), pre_relu)
    feat = pre_relu.clone().requires_grad_(True)
    net[1:](feat.clone())[:, 0].sum().backward()
    torch.testing.assert_close(grad, feat.grad)
