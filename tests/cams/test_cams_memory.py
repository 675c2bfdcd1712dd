"""Repeated calls leave nothing behind: no hooks, no live tensors, no growing Python objects."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from camflow.cams import compute


def _live_tensors() -> int:
    # type(), not isinstance(): isinstance reads __class__, which warns on deprecated torch stubs.
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_no_memory_growth_over_1000_calls(method: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()
    images = torch.randn(2, 3, 12, 12)
    classes = torch.tensor([[0, 4], [2, 3]])

    def call() -> None:
        compute(model, images, method, "3", classes, size=(12, 12), normalize=True)

    # One thread: on a busy shared CPU, thread hand-offs dominate such tiny ops 50-fold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(20):  # warm caches (allocator, dispatcher) before measuring
            call()
        gc.collect()
        tensors_before, objects_before = _live_tensors(), len(gc.get_objects())
        for _ in range(1000):
            call()
        gc.collect()
        objects_after = len(gc.get_objects())
    finally:
        torch.set_num_threads(threads)
    assert _hooks(model) == 0
    assert _live_tensors() == tensors_before
    # A leak of even one object per call would show as 1000 more; allow for lazy caches.
    assert objects_after - objects_before < 100, objects_after - objects_before
