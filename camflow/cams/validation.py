"""Input checks shared by the CAM entry points: every error names the argument at fault."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["as_logits", "check_class_range", "check_classes", "check_images", "check_size"]


def check_images(images: object) -> Tensor:
    """``images`` must be a finite floating tensor ``[B, 3, H, W]`` with B, H, W >= 1."""
    if not isinstance(images, Tensor):
        raise TypeError(
            f"images: expected a torch.Tensor [B, 3, H, W], got {type(images).__name__}"
        )
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected shape [B, 3, H, W], got {list(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(
            f"images: expected a floating dtype (normalised images), got {images.dtype}; "
            "convert and normalise uint8 images first"
        )
    if images.numel() == 0:
        raise ValueError(f"images: empty batch or image, shape {list(images.shape)}")
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"images: image(s) at batch index {bad} contain NaN or inf")
    return images


def check_classes(classes: object, batch: int, device: torch.device) -> Tensor:
    """Class ids as a LongTensor ``[B, K]`` on ``device``.

    Accepts a LongTensor ``[B, K]`` (ids per image) or a list/tuple of ints (the same ids for
    every image). A 1-D tensor is refused: it is ambiguous between "one class per image" and
    "these classes for every image".
    """
    if isinstance(classes, Tensor):
        if (
            classes.dtype.is_floating_point
            or classes.dtype.is_complex
            or classes.dtype == torch.bool
        ):
            raise TypeError(f"classes: expected integer class ids, got dtype {classes.dtype}")
        if classes.dim() != 2:
            raise ValueError(
                f"classes: a tensor must be [B, K], got shape {list(classes.shape)}; use "
                "classes[:, None] for one class per image, or a list for the same ids everywhere"
            )
        if classes.shape[0] != batch:
            raise ValueError(f"classes: {classes.shape[0]} rows for a batch of {batch} images")
        out = classes.to(device=device, dtype=torch.long)
    elif isinstance(classes, Sequence) and not isinstance(classes, str):
        ids = list(classes)
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in ids):
            raise TypeError(f"classes: expected a list of int class ids, got {classes!r}")
        out = torch.tensor(ids, dtype=torch.long, device=device).reshape(1, -1).expand(batch, -1)
    else:
        raise TypeError(
            f"classes: expected a LongTensor [B, K] or a list of ints, got {type(classes).__name__}"
        )
    if out.shape[1] == 0:
        raise ValueError("classes: give at least one class id per image")
    return out


def check_class_range(classes: Tensor, num_classes: int, source: str) -> None:
    """Every id in ``classes`` must lie in ``[0, num_classes)``; ``source`` says where N is from."""
    bad = (classes < 0) | (classes >= num_classes)
    if bool(bad.any()):
        rows, cols = torch.nonzero(bad, as_tuple=True)
        examples = [
            f"image {r} -> {int(classes[r, c])}"
            for r, c in zip(rows[:5].tolist(), cols[:5].tolist())
        ]
        raise ValueError(
            f"classes: ids out of range [0, {num_classes}) of {source}: {', '.join(examples)}"
        )


def check_size(size: object) -> tuple[int, int] | None:
    """``size`` is None or a pair of positive ints (H, W)."""
    if size is None:
        return None
    if (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return int(size[0]), int(size[1])
    raise ValueError(f"size: expected None or (H, W) of positive ints, got {size!r}")


def as_logits(output: object) -> Tensor:
    """The class scores ``[B, num_classes]`` in a model's output (a tensor, or its first item)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, Tensor) or output.dim() != 2:
        shape = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise TypeError(
            f"model: expected the forward to return logits [B, num_classes], got {shape}"
        )
    return output
