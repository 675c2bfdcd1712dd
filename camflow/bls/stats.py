"""Sufficient statistics of (X, Y) for the BLS fit, accumulated in one streaming pass.

Everything the BroadCAM BLS needs is a function of n, sum(x), X^T X, sum(y) and X^T Y. They are
kept here in *centred* form: the scatter matrices sum (x - mean)(x - mean)^T and
sum (x - mean_x)(y - mean_y)^T, updated block by block with the pairwise rule of Chan, Golub and
LeVeque. This holds exactly the same information as the raw sums (X^T X = S + n mean mean^T), but
raw sums lose digits to cancellation once features carry large offsets (a column at 1e4 +- 1 keeps
only ~8 of float64's 16 digits in its variance); centred blocks keep them all whatever n is.
Two accumulators merge exactly, so shards from many workers combine in any order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import blas

from camflow.bls.errors import NonFiniteFeaturesError

__all__ = [
    "Moments",
    "as_features",
    "as_labels",
    "check_finite_rows",
    "invalid_label_rows",
    "nonfinite_rows",
]

# Rows per float64 block: bounds the temporaries (block x d x 8 bytes) whatever the chunk size.
DEFAULT_BLOCK_ROWS = 2048
_MAX_LISTED = 10


def _is_tensor(x: Any) -> bool:
    # torch is only looked up, never imported here: a numpy-only fit does not pay for loading it,
    # and a tensor can only exist once torch is loaded.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _describe_rows(rows: Sequence[int], ids: Sequence[Any] | None, row_offset: int) -> str:
    shown = list(rows[:_MAX_LISTED])
    more = f" and {len(rows) - len(shown)} more" if len(rows) > len(shown) else ""
    if ids is not None:
        return f"ids {[ids[r] for r in shown]}{more}"
    where = f" (rows {row_offset + shown[0]}.. of the whole stream)" if row_offset else ""
    return f"rows {shown}{more}{where}"


def as_features(X: Any, name: str = "X") -> Any:
    """A 2-D float array (numpy) or tensor (kept on its accelerator) for ``X``.

    CPU tensors become numpy views, so BLAS does the work on the host; tensors on another device
    stay there and their blocks are reduced on that device.
    """
    if _is_tensor(X):
        import torch

        X = X.detach()
        if X.device.type == "cpu":
            X = X.numpy() if X.dtype != torch.bfloat16 else X.float().numpy()
        elif not (X.is_floating_point() or X.dtype in (torch.int32, torch.int64, torch.uint8)):
            raise TypeError(f"{name} must hold real numbers, got a tensor of {X.dtype}")
    if not _is_tensor(X):
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_samples x n_features) matrix, got shape "
                         f"{tuple(X.shape)}")
    return X


def nonfinite_rows(X: Any) -> np.ndarray:
    """Positions of the rows of a 2-D array or tensor that hold NaN or inf."""
    bad = []
    for start in range(0, X.shape[0], DEFAULT_BLOCK_ROWS):
        block = X[start : start + DEFAULT_BLOCK_ROWS]
        if _is_tensor(block):
            ok = block.isfinite().all(dim=1).cpu().numpy()
        else:
            ok = np.isfinite(block).all(axis=1)
        bad.append(start + np.flatnonzero(~ok))
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def invalid_label_rows(Y: np.ndarray) -> np.ndarray:
    """Positions of the rows of a 2-D label matrix with entries other than 0 and 1."""
    return np.flatnonzero(~((Y == 0) | (Y == 1)).all(axis=1))


def check_finite_rows(
    X: Any, *, ids: Sequence[Any] | None = None, row_offset: int = 0, name: str = "X"
) -> None:
    """Raise :class:`NonFiniteFeaturesError` naming every row of ``X`` that holds NaN or inf."""
    bad = nonfinite_rows(X).tolist()
    if bad:
        raise NonFiniteFeaturesError(
            f"{name} has NaN or inf in {len(bad)} row(s): {_describe_rows(bad, ids, row_offset)}",
            rows=bad,
            ids=None if ids is None else [ids[r] for r in bad],
        )


def as_labels(
    Y: Any,
    n_rows: int,
    *,
    ids: Sequence[Any] | None = None,
    row_offset: int = 0,
    name: str = "Y",
) -> np.ndarray:
    """``Y`` as a float64 (n x C) multi-hot matrix, or a ValueError saying what is wrong with it."""
    if _is_tensor(Y):
        Y = Y.detach().cpu().numpy()
    Y = np.asarray(Y)
    if Y.ndim != 2:
        hint = (" (class indices? turn them into a multi-hot matrix first)" if Y.ndim == 1 else "")
        raise ValueError(f"{name} must be a 2-D multi-hot (n_samples x n_classes) matrix, got shape "
                         f"{Y.shape}{hint}")
    if Y.shape[0] != n_rows:
        raise ValueError(f"{name} has {Y.shape[0]} rows but the features have {n_rows}")
    if Y.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold 0/1 values, got dtype {Y.dtype}")
    Y = Y.astype(np.float64, copy=False)
    bad = invalid_label_rows(Y).tolist()
    if bad:
        raise ValueError(f"{name} is not multi-hot (entries other than 0/1) in {len(bad)} row(s): "
                         f"{_describe_rows(bad, ids, row_offset)}")
    return Y


class Moments:
    """Running centred moments of features X (n x d) and multi-hot labels Y (n x C), in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.sum_x: np.ndarray | None = None
        self.sum_y: np.ndarray | None = None
        # Fortran order lets BLAS update it in place; only the upper triangle is kept current.
        self._scatter_xx: np.ndarray | None = None
        self.scatter_xy: np.ndarray | None = None

    @property
    def n_features(self) -> int | None:
        return None if self.sum_x is None else self.sum_x.shape[0]

    @property
    def n_classes(self) -> int | None:
        return None if self.sum_y is None else self.sum_y.shape[0]

    @property
    def mean_x(self) -> np.ndarray:
        return self.sum_x / self.n

    @property
    def mean_y(self) -> np.ndarray:
        return self.sum_y / self.n

    @property
    def scatter_xx(self) -> np.ndarray:
        """sum (x - mean)(x - mean)^T, symmetric (d x d)."""
        out = np.triu(self._scatter_xx)
        out += np.triu(out, 1).T
        return out

    def _allocate(self, d: int, c: int) -> None:
        self.sum_x = np.zeros(d)
        self.sum_y = np.zeros(c)
        self._scatter_xx = np.zeros((d, d), order="F")
        self.scatter_xy = np.zeros((d, c))

    def check_shapes(self, d: int, c: int, what: str) -> None:
        if self.sum_x is None:
            return
        if d != self.n_features:
            raise ValueError(f"{what} has {d} features but the accumulated data has "
                             f"{self.n_features}")
        if c != self.n_classes:
            raise ValueError(f"{what} has {c} classes but the accumulated data has "
                             f"{self.n_classes}")

    def update(self, X: Any, Y: np.ndarray, block_rows: int = DEFAULT_BLOCK_ROWS) -> None:
        """Add the rows of validated X (numpy or tensor) and Y (float64 numpy)."""
        d, c = X.shape[1], Y.shape[1]
        self.check_shapes(d, c, "this chunk")
        if self.sum_x is None:
            self._allocate(d, c)
        for start in range(0, X.shape[0], block_rows):
            stop = min(start + block_rows, X.shape[0])
            self._add_block(X[start:stop], Y[start:stop])

    def _add_block(self, xb: Any, yb: np.ndarray) -> None:
        nb = xb.shape[0]
        if _is_tensor(xb):
            import torch

            xb = xb.to(torch.float64)
            bsum_x = xb.sum(dim=0)
            xc = xb - bsum_x / nb
            block_xx = (xc.T @ xc).cpu().numpy()
            xc_host = None
            bsum_x = bsum_x.cpu().numpy()
        else:
            xc = np.array(xb, dtype=np.float64, order="C")
            bsum_x = xc.sum(axis=0)
            xc -= bsum_x / nb
            block_xx = None
            xc_host = xc
        bsum_y = yb.sum(axis=0)
        yc = yb - bsum_y / nb
        # Pairwise update: S = S_a + S_b + (n_a n_b / n) delta delta^T, delta = mean_b - mean_a.
        n_a = self.n
        weight = n_a * nb / (n_a + nb)
        delta_x = bsum_x / nb - (self.sum_x / n_a if n_a else 0.0)
        delta_y = bsum_y / nb - (self.sum_y / n_a if n_a else 0.0)
        if xc_host is not None:
            out = blas.dsyrk(1.0, xc_host.T, beta=1.0, c=self._scatter_xx, overwrite_c=1)
            self.scatter_xy += xc_host.T @ yc
        else:
            out = self._scatter_xx
            out += block_xx
            self.scatter_xy += (xc.T @ torch.from_numpy(yc).to(xc)).cpu().numpy()
        if n_a:
            out = blas.dsyr(weight, np.ascontiguousarray(delta_x), a=out, overwrite_a=1)
            self.scatter_xy += weight * np.outer(delta_x, delta_y)
        self._scatter_xx = out
        self.sum_x += bsum_x
        self.sum_y += bsum_y
        self.n += nb

    def merge(self, other: Moments) -> None:
        """Add ``other``'s rows (exact: the same result as streaming them here)."""
        if other.n == 0:
            return
        self.check_shapes(other.n_features, other.n_classes, "the merged accumulator")
        if self.n == 0:
            self._allocate(other.n_features, other.n_classes)
        n_a, n_b = self.n, other.n
        weight = n_a * n_b / (n_a + n_b)
        delta_x = other.mean_x - (self.mean_x if n_a else 0.0)
        delta_y = other.mean_y - (self.mean_y if n_a else 0.0)
        self._scatter_xx += other._scatter_xx
        self.scatter_xy += other.scatter_xy
        if n_a:
            self._scatter_xx += weight * np.outer(delta_x, delta_x)
            self.scatter_xy += weight * np.outer(delta_x, delta_y)
        self.sum_x += other.sum_x
        self.sum_y += other.sum_y
        self.n += n_b

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The statistics as plain arrays (to ship between processes or save)."""
        if self.n == 0:
            return {}
        return {
            "n": np.array([self.n], dtype=np.int64),
            "sum_x": self.sum_x.copy(),
            "sum_y": self.sum_y.copy(),
            "scatter_xx": self.scatter_xx,
            "scatter_xy": self.scatter_xy.copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "state") -> Moments:
        """Inverse of :meth:`to_arrays`; raises ValueError naming ``source`` on bad shapes."""
        out = cls()
        if not arrays:
            return out
        missing = {"n", "sum_x", "sum_y", "scatter_xx", "scatter_xy"} - set(arrays)
        if missing:
            raise ValueError(f"{source}: statistics lack {sorted(missing)}")
        sum_x = np.asarray(arrays["sum_x"], dtype=np.float64)
        sum_y = np.asarray(arrays["sum_y"], dtype=np.float64)
        d, c = sum_x.shape[0], sum_y.shape[0]
        expected = {"sum_x": (d,), "sum_y": (c,), "scatter_xx": (d, d), "scatter_xy": (d, c),
                    "n": (1,)}
        for key, shape in expected.items():
            if tuple(np.shape(arrays[key])) != shape:
                raise ValueError(f"{source}: {key} has shape {tuple(np.shape(arrays[key]))}, "
                                 f"expected {shape}")
        n = int(np.asarray(arrays["n"])[0])
        if n <= 0:
            raise ValueError(f"{source}: n must be positive, got {n}")
        out.n = n
        out.sum_x, out.sum_y = sum_x.copy(), sum_y.copy()
        out._scatter_xx = np.asfortranarray(np.asarray(arrays["scatter_xx"], dtype=np.float64))
        out.scatter_xy = np.array(arrays["scatter_xy"], dtype=np.float64)
        return out
