"""``BLS``: BroadCAM's broad learning system as a streaming, mergeable estimator."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from camflow.bls.errors import NotFittedError
from camflow.bls.io import BLSFile, read_bls_file, write_bls_file
from camflow.bls.solve import Solution, solve
from camflow.bls.stats import Moments, as_features, as_labels, check_finite_rows

# BroadCAM's defaults, of every layer: the ridge penalty and features per enhancement node.
ALPHA = 50.0
STEP = 256

__all__ = ["BLS"]


class BLS:
    """BroadCAM's BLS, fitted exactly from streamed sufficient statistics.

    Feed chunks with :meth:`partial_fit` (or shard accumulators with :meth:`merge`), then
    :meth:`finalize` solves; :meth:`fit` does both on one matrix. The result is one linear map on
    the raw pooled features: ``coef_`` (d x C) and ``intercept_`` (C), which BroadCAM uses as CAM
    weights. The model (standardisation, preliminary ridge, per-class enhancement nodes, final
    ridge on [Z, H] with every column standardised and penalty ``alpha * n``, collapse) is the one
    of the official BroadCAM code; :mod:`camflow.bls.solve` derives every step from the sums.
    Memory is O(d^2) whatever the number of rows, and accumulation is in float64.

    Where this differs from the official code, on purpose:

    - Every class is fitted. The official loops over classes in pairs and silently drops the last
      class when their number is odd (its weights stay 0), which also makes its node count 0.
    - Classes whose labels never vary in the data (no positive, or no negative) carry no signal
      and get no enhancement nodes; the official code lets such a class force zero nodes for all.
    - Ties in the ranking of preliminary weights resolve by feature index (stable sort), not by
      the arbitrary order of an unstable sort.
    - ``intercept_`` is that of the collapsed model, so ``predict`` works on raw features
      directly; the official per-column min/max rescaling of H is dropped because the final
      standardised ridge is invariant to it (predictions are unchanged).

    Parameters
    ----------
    alpha: ridge penalty per standardised column, scaled by n as in the official code (> 0).
    step: features averaged by one enhancement node.
    enhance: add enhancement nodes; without them the model is a standardised ridge regression.
    """

    def __init__(self, alpha: float = ALPHA, step: int = STEP, enhance: bool = True) -> None:
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
            raise ValueError(f"step must be a positive integer, got {step!r}")
        self.alpha = float(alpha)
        self.step = int(step)
        self.enhance = bool(enhance)
        self.feature_layout: list[tuple[str, int]] | None = None
        self._moments = Moments()
        self._solution: Solution | None = None

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else f"{self.n_samples_} rows accumulated"
        return f"BLS(alpha={self.alpha}, step={self.step}, enhance={self.enhance}; {state})"

    # -- accumulation ---------------------------------------------------------------------------

    @property
    def n_samples_(self) -> int:
        return self._moments.n

    @property
    def n_features_in_(self) -> int | None:
        if self._moments.n_features is None and self._solution is not None:
            return self._solution.coef.shape[0]
        return self._moments.n_features

    @property
    def n_classes_(self) -> int | None:
        if self._moments.n_classes is None and self._solution is not None:
            return self._solution.coef.shape[1]
        return self._moments.n_classes

    @property
    def moments(self) -> Moments:
        """The accumulated statistics (read-only use; see :mod:`camflow.bls.stats`)."""
        return self._moments

    def partial_fit(self, X: Any, Y: Any, *, ids: Sequence[Any] | None = None) -> BLS:
        """Accumulate a chunk of features X (n x d) and multi-hot labels Y (n x C).

        X and Y may be numpy arrays or torch tensors (tensors on an accelerator are reduced
        there). ``ids`` (one per row, e.g. image ids) name the offending rows in errors. A chunk
        with NaN/inf features, labels that are not 0/1, or shapes that disagree with what was
        accumulated is rejected whole, leaving the accumulator unchanged. A previous solution is
        dropped: call :meth:`finalize` again.
        """
        X = as_features(X)
        if ids is not None and len(ids) != X.shape[0]:
            raise ValueError(f"ids has {len(ids)} entries but X has {X.shape[0]} rows")
        offset = self._moments.n
        check_finite_rows(X, ids=ids, row_offset=offset)
        Y = as_labels(Y, X.shape[0], ids=ids, row_offset=offset)
        self._moments.check_shapes(X.shape[1], Y.shape[1], "this chunk")
        if X.shape[0] == 0:
            return self
        self._moments.update(X, Y)
        self._invalidate()
        return self

    def merge(self, other: BLS) -> BLS:
        """Add the sums another accumulator (e.g. a shard's) collected; exact and order-free."""
        if not isinstance(other, BLS):
            raise TypeError(f"merge expects a BLS, got {type(other).__name__}")
        if (self.feature_layout and other.feature_layout
                and list(self.feature_layout) != list(other.feature_layout)):
            raise ValueError(f"merge: feature layouts differ: {self.feature_layout} vs "
                             f"{other.feature_layout}")
        self._moments.merge(other._moments)
        if self.feature_layout is None:
            self.feature_layout = other.feature_layout
        if other.n_samples_:
            self._invalidate()
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The accumulated sums as plain arrays: what a worker ships to the driver."""
        return self._moments.to_arrays()

    @classmethod
    def from_state(
        cls,
        state: dict[str, np.ndarray],
        *,
        alpha: float = ALPHA,
        step: int = STEP,
        enhance: bool = True,
        feature_layout: Sequence[tuple[str, int]] | None = None,
    ) -> BLS:
        """An accumulator holding the sums of :meth:`state` (not yet solved)."""
        out = cls(alpha=alpha, step=step, enhance=enhance)
        out._moments = Moments.from_arrays(state)
        out.feature_layout = None if feature_layout is None else [
            (str(name), int(width)) for name, width in feature_layout
        ]
        return out

    def _invalidate(self) -> None:
        self._solution = None

    # -- solving --------------------------------------------------------------------------------

    def finalize(self) -> BLS:
        """Solve the BLS from the accumulated sums."""
        if self._moments.n == 0:
            raise NotFittedError("finalize: no data accumulated; call partial_fit or merge first")
        self._solution = solve(self._moments, self.alpha, self.step, self.enhance)
        return self

    def fit(self, X: Any, Y: Any, *, ids: Sequence[Any] | None = None) -> BLS:
        """Fit on X, Y from scratch (previously accumulated sums are discarded)."""
        self._moments = Moments()
        self._invalidate()
        return self.partial_fit(X, Y, ids=ids).finalize()

    @property
    def is_fitted(self) -> bool:
        return self._solution is not None

    def _fitted(self, name: str) -> Any:
        if self._solution is not None:
            return getattr(self._solution, name)
        raise NotFittedError(
            f"this BLS is not fitted{' (new data since the last solve)' if self.n_samples_ else ''}"
            "; call finalize() or fit() first"
        )

    @property
    def coef_(self) -> np.ndarray:
        """(d x C) weights on raw pooled features; BroadCAM's CAM weights."""
        return self._fitted("coef")

    @property
    def intercept_(self) -> np.ndarray:
        return self._fitted("intercept")

    @property
    def preliminary_coef_(self) -> np.ndarray:
        """P (d x C): the preliminary ridge's weights in raw units, which rank the features."""
        return self._fitted("preliminary_coef")

    @property
    def enhancement_weights_(self) -> np.ndarray:
        """xi (d x m): H = Z @ xi on standardised features Z."""
        return self._fitted("enhancement_weights")

    @property
    def node_classes_(self) -> np.ndarray:
        return self._fitted("node_classes")

    @property
    def nodes_per_class_(self) -> int:
        return int(self._fitted("nodes_per_class"))

    def predict(self, X: Any) -> Any:
        """X @ coef_ + intercept_: a float64 numpy array, or a tensor on X's device for a tensor."""
        coef, intercept = self.coef_, self.intercept_
        torch = sys.modules.get("torch")  # a tensor argument means torch is already loaded
        is_tensor = torch is not None and isinstance(X, torch.Tensor)
        X = as_features(X)
        if X.shape[1] != coef.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features but the model was fitted on "
                             f"{coef.shape[0]}")
        if is_tensor and isinstance(X, torch.Tensor):  # still a tensor: it lives off the CPU
            w = torch.from_numpy(coef).to(X.device)
            b = torch.from_numpy(intercept).to(X.device)
            return X.to(torch.float64) @ w + b
        out = np.asarray(X, dtype=np.float64) @ coef + intercept
        return torch.from_numpy(out) if is_tensor else out

    # -- persistence ----------------------------------------------------------------------------

    def save(
        self,
        uri: str,
        *,
        include_stats: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """Write the fitted model (safetensors + JSON metadata) to a path or fsspec URI.

        With ``include_stats`` the accumulated sums are stored too (O(d^2)), so the model can be
        re-solved with another ``alpha``/``step`` without recomputing features.
        """
        self.coef_  # noqa: B018 - raises NotFittedError on an unfitted model
        assert self._solution is not None
        content = BLSFile(self.alpha, self.step, self.enhance, self._solution,
                          self._moments if include_stats else None, self.feature_layout,
                          self.n_samples_)
        write_bls_file(content, uri, storage_options=storage_options)

    @classmethod
    def load(cls, uri: str, *, storage_options: dict[str, Any] | None = None) -> BLS:
        """Read a model written by :meth:`save`."""
        content = read_bls_file(uri, storage_options=storage_options)
        bls = cls(alpha=content.alpha, step=content.step, enhance=content.enhance)
        bls._solution = content.solution
        if content.moments is not None:
            bls._moments = content.moments
        bls.feature_layout = content.feature_layout
        return bls
