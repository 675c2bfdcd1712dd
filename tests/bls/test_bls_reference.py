"""The collapsed linear BLS == the two-layer BLS computed the long way, as the official code does.

The reference below materialises Z, the enhancement nodes H (with the official min/max rescaling)
and A = [Z, H], and solves each ridge the way scikit-learn's old ``Ridge(normalize=True)`` did:
centre, divide every column by its norm, solve with ``alpha``, scale the coefficients back.
It shares no code with camflow.bls.
"""

from __future__ import annotations

import numpy as np
import pytest

from camflow.bls import BLS


def ridge_normalize(A: np.ndarray, Y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    a_mean, y_mean = A.mean(axis=0), Y.mean(axis=0)
    centred = A - a_mean
    norms = np.linalg.norm(centred, axis=0)
    norms[norms == 0] = 1.0
    unit = centred / norms
    w = np.linalg.solve(unit.T @ unit + alpha * np.eye(A.shape[1]), unit.T @ (Y - y_mean))
    coef = w / norms[:, None]
    return coef, y_mean - a_mean @ coef


class TwoLayerBLS:
    """The BroadCAM BLS with explicit matrices (every class fitted, even with an odd count)."""

    def __init__(self, alpha: float, step: int) -> None:
        self.alpha, self.step = alpha, step

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std

    def _nodes(self, Z: np.ndarray) -> np.ndarray:
        return (Z @ self.xi - self.h_min) / (self.h_max + 1e-8)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> TwoLayerBLS:
        X, Y = X.astype(np.float64), Y.astype(np.float64)
        self.mean, self.std = X.mean(axis=0), X.std(axis=0)
        self.std[self.std == 0] = 1.0
        Z = self._standardise(X)
        w_pre, _ = ridge_normalize(Z, Y, self.alpha)
        P = w_pre / self.std[:, None]
        k = int((P > 0).sum(axis=0).min() / self.step)
        blocks = []
        for c in range(Y.shape[1]):
            ranked = np.flip(np.argsort(P[:, c]))
            block = np.zeros((X.shape[1], k))
            for j in range(k):
                block[ranked[j * self.step : (j + 1) * self.step], j] = 1.0 / self.step
            blocks.append(block * P[:, c : c + 1])
        self.xi = np.hstack(blocks)
        self.k = k
        raw_h = Z @ self.xi
        self.h_min, self.h_max = raw_h.min(axis=0), raw_h.max(axis=0)
        A = np.hstack([Z, self._nodes(Z)])
        self.W, self.b = ridge_normalize(A, Y, self.alpha)
        d = X.shape[1]
        # The official collapse onto raw features.
        self.collapsed = (self.W[:d] / self.std[:, None]
                          + (self.xi / self.std[:, None]) / (self.h_max + 1e-8) @ self.W[d:])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = self._standardise(X.astype(np.float64))
        return np.hstack([Z, self._nodes(Z)]) @ self.W + self.b


def data(n: int, d: int, c: int, seed: int):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n + 50, 6))
    X = np.maximum(latent @ rng.standard_normal((6, d)) + rng.standard_normal((n + 50, d)), 0)
    X = X * rng.uniform(0.1, 10.0, d) + rng.uniform(0, 3, d)
    scores = X @ rng.standard_normal((d, c))
    Y = (scores > np.median(scores, axis=0)).astype(np.float32)
    return X[:n].astype(np.float32), Y[:n], X[n:].astype(np.float32)


@pytest.mark.parametrize(
    ("n", "d", "c", "step", "alpha"),
    [(400, 48, 3, 4, 1.0), (60, 150, 2, 8, 0.5), (300, 40, 5, 2, 50.0)],
)
def test_collapsed_model_equals_explicit_two_layer_bls(n, d, c, step, alpha) -> None:
    X, Y, X_new = data(n, d, c, seed=n + d)
    reference = TwoLayerBLS(alpha, step).fit(X, Y)
    assert reference.k > 0
    ours = BLS(alpha=alpha, step=step).fit(X, Y)
    assert ours.nodes_per_class_ == reference.k
    np.testing.assert_allclose(ours.enhancement_weights_, reference.xi, rtol=1e-8, atol=1e-12)
    for rows in (X, X_new):
        expected = reference.predict(rows)
        err = np.abs(ours.predict(rows) - expected).max() / np.abs(expected).max()
        assert err <= 1e-9  # the issue asks for 1e-6; agreement is at rounding level
    coef_err = np.abs(ours.coef_ - reference.collapsed).max() / np.abs(reference.collapsed).max()
    assert coef_err <= 1e-9
