"""Input checks shared by post-processing and metrics.

Every check names the offending record (image id, or its index in the batch when no id is
given) so a pipeline can quarantine it and carry on with the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BadInputError", "Rejected", "as_numpy", "batch_ids", "map_range_problem", "split_batch"]


class BadInputError(ValueError):
    """An input record cannot be used; ``image_ids`` names every offending record."""

    def __init__(self, message: str, image_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.image_ids = list(image_ids)


@dataclass(frozen=True)
class Rejected:
    """One record left out of an update, and why."""

    image_id: str
    reason: str


def as_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view of a numpy array, torch tensor (any device) or nested list of numbers."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    # Duck-typed on purpose: importing torch here would cost every numpy-only caller.
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    raise TypeError(f"{name}: expected a numpy array, torch tensor or list, got {type(x).__name__}")


def split_batch(x: Any, name: str, ndim: int) -> list[np.ndarray]:
    """Per-image arrays from a batched array [B, ...] or a sequence of per-image arrays.

    Sequences let images of different sizes share one call (VOC images do not share a size).
    """
    if isinstance(x, (list, tuple)):
        items = [as_numpy(v, f"{name}[{i}]") for i, v in enumerate(x)]
    else:
        arr = as_numpy(x, name)
        if arr.ndim != ndim + 1:
            raise ValueError(
                f"{name}: expected a batch of {ndim}-d arrays, shape [B, ...] with {ndim + 1} "
                f"dims, got shape {tuple(arr.shape)}"
            )
        items = list(arr)
    for i, v in enumerate(items):
        if v.ndim != ndim:
            raise ValueError(f"{name}[{i}]: expected {ndim} dims, got shape {tuple(v.shape)}")
    return items


def batch_ids(image_ids: Sequence[Any] | None, batch_size: int) -> list[str]:
    """String ids for a batch; the batch index stands in when no ids are given."""
    if image_ids is None:
        return [str(i) for i in range(batch_size)]
    ids = [str(i) for i in image_ids]
    if len(ids) != batch_size:
        raise ValueError(f"image_ids: {len(ids)} ids for a batch of {batch_size}")
    return ids


def map_range_problem(x: np.ndarray) -> str | None:
    """Why a score map is unusable (NaN/inf, or values outside [0, 1]); None when it is fine."""
    if not np.issubdtype(x.dtype, np.floating):
        return f"score map must be floating point, got dtype {x.dtype}"
    if x.size == 0:
        return "score map is empty"
    if not np.isfinite(x).all():
        return "score map contains NaN or inf"
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        return f"score map outside [0, 1] (min {lo:.4g}, max {hi:.4g}); normalise it first"
    return None


def raise_or_collect(
    problems: dict[int, str], ids: Sequence[str], on_error: str, what: str
) -> list[Rejected]:
    """Raise one error naming every bad record, or hand them back as rejects to skip."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
    rejects = [Rejected(ids[i], reason) for i, reason in sorted(problems.items())]
    if rejects and on_error == "raise":
        detail = "; ".join(f"image {r.image_id!r}: {r.reason}" for r in rejects)
        raise BadInputError(f"{what}: {detail}", [r.image_id for r in rejects])
    return rejects
