"""Mixed precision: which autocast dtype a device runs natively, for training and for inference."""

from __future__ import annotations

from functools import lru_cache

import torch

__all__ = ["autocast_dtype", "cpu_runs_bfloat16", "default_device"]


def default_device() -> torch.device:
    """The best local device: CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=1)
def cpu_runs_bfloat16() -> bool:
    """Whether bfloat16 is faster than float32 on this CPU: oneDNN with AMX tiles.

    AVX-512 BF16 alone is not enough: on such a 2-core Xeon without AMX a ResNet-18 training step
    at 64 px took 1.24x the float32 time and a CAM forward and backward 1.43x.
    """
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return bool(torch.backends.mkldnn.is_available() and amx()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(device: torch.device | str, amp: bool = True, *,
                   training: bool = True) -> torch.dtype | None:
    """The autocast dtype on ``device``; None means full float32.

    CUDA: float16 with loss scaling for training, bfloat16 for inference (CAMs). CPUs with AMX:
    bfloat16 (a ResNet-18 training step at 64 px takes 0.6x the time of float32 on two cores, a
    CAM read-out of four methods 0.57x). Other CPUs: float32, since bfloat16 is slower there.
    """
    device = torch.device(device)
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16 if training else torch.bfloat16
    if device.type == "cpu" and cpu_runs_bfloat16():
        return torch.bfloat16
    return None
