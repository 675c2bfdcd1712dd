"""The BroadCAM BLS solved from sufficient statistics alone (no second pass over the data).

Notation: X raw pooled features (n x d), Y multi-hot labels (n x C), s the population std of each
feature column, Z = (X - mean) / s the standardised features (centred by construction).
All Gram matrices below are centred: G_Z = Z^T Z = diag(1/s) S_xx diag(1/s), Z^T Y_c likewise.

1. Preliminary ridge Z -> Y with intercept and old scikit-learn ``normalize=True`` semantics:
   each column is scaled to unit norm before an ``alpha`` penalty, i.e. the penalty on a column's
   coefficient is ``alpha * ||column - mean||^2``, which is ``alpha * n`` on a standardised column.
   P (d x C) is its coefficient matrix mapped back to raw units (divided by s).
2. Enhancement nodes: per class, features ranked by P descending; node j of the class averages the
   j-th block of ``step`` top-ranked standardised features weighted by their P. The d x m matrix of
   those weights is xi and H = Z xi. Nodes per class k = floor(min_c #{P[:, c] > 0} / step).
3. Final ridge on A = [Z, H] with the same normalize semantics. Because H = Z xi, its Gram and its
   cross products with Z and Y follow from G_Z by algebra: G_ZH = G_Z xi, G_H = xi^T G_Z xi.
   The official code maps H through a per-column min/max affine transform first; with per-column
   centring and scaling in the ridge that transform changes nothing, so it is not reproduced.
4. Collapse: the whole model is one linear map on raw features,
   coef = diag(1/s) (W_Z + xi W_H), intercept = mean_y - mean_x @ coef.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from camflow.bls.stats import Moments

__all__ = ["Solution", "enhancement_weights", "solve"]

# A column whose std is below this fraction of its magnitude is constant up to float64 rounding.
_CONSTANT_RTOL = 1e3 * np.finfo(np.float64).eps


@dataclass(frozen=True)
class Solution:
    coef: np.ndarray  # (d, C) on raw features
    intercept: np.ndarray  # (C,)
    preliminary_coef: np.ndarray  # P (d, C), raw units
    enhancement_weights: np.ndarray  # xi (d, m): H = Z @ xi
    node_classes: np.ndarray  # (m,) class of each enhancement node
    nodes_per_class: int
    constant_features: np.ndarray  # (d,) bool


def _standardised_ridge(
    gram: np.ndarray,
    rhs: np.ndarray,
    n: int,
    alpha: float,
    constant: np.ndarray,
    *,
    overwrite: bool = False,
) -> np.ndarray:
    """Ridge on centred columns with old ``normalize=True`` semantics, from their Gram matrix.

    Each column is scaled to its population std (norm / sqrt(n)), the penalty is ``alpha * n``,
    and the coefficients come back in the columns' own units. Columns flagged ``constant`` carry
    no signal: they get coefficient 0 (never a division by a zero std). With ``overwrite`` the
    d x d ``gram`` is used as workspace (d^2 floats are the memory this whole fit needs).
    """
    std = np.sqrt(np.clip(np.diag(gram), 0.0, None) / n)
    scale = np.where(constant, 1.0, std)
    system = gram if overwrite else gram.copy()
    system /= scale[:, None]
    system /= scale[None, :]
    system[constant, :] = 0.0
    system[:, constant] = 0.0
    system[np.diag_indices_from(system)] += alpha * n
    rhs_s = rhs / scale[:, None]
    rhs_s[constant, :] = 0.0
    # Cholesky: the system is symmetric positive definite (a Gram plus a positive ridge).
    w = linalg.solve(system, rhs_s, assume_a="pos", overwrite_a=True, check_finite=False)
    w /= scale[:, None]
    w[constant, :] = 0.0
    return w


def enhancement_weights(
    preliminary_coef: np.ndarray, informative: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """xi (d x m), the class of each node, and k: the per-class block-average node weights.

    Only ``informative`` classes (labels not constant) take part: a class with no positive (or no
    negative) sample has P = 0 and would otherwise force k = 0 for every class.
    """
    d, _ = preliminary_coef.shape
    classes = np.flatnonzero(informative)
    if classes.size == 0:
        return np.zeros((d, 0)), np.zeros(0, dtype=np.int64), 0
    positives = (preliminary_coef[:, classes] > 0).sum(axis=0)
    k = int(positives.min()) // step
    xi = np.zeros((d, k * classes.size))
    for i, c in enumerate(classes):
        p = preliminary_coef[:, c]
        # Stable descending order: ties (measure zero for real features) resolve by feature index.
        order = np.argsort(-p, kind="stable")
        for j in range(k):
            rows = order[j * step : (j + 1) * step]
            xi[rows, i * k + j] = p[rows] / step
    node_classes = np.repeat(classes, k).astype(np.int64)
    return xi, node_classes, k


def solve(moments: Moments, alpha: float, step: int, enhance: bool) -> Solution:
    """The collapsed BroadCAM BLS for the data summarised by ``moments``."""
    n = moments.n
    mean_x, mean_y = moments.mean_x, moments.mean_y
    scatter_xx, scatter_xy = moments.scatter_xx, moments.scatter_xy
    d = mean_x.shape[0]

    std_x = np.sqrt(np.clip(np.diag(scatter_xx), 0.0, None) / n)
    constant = std_x <= _CONSTANT_RTOL * np.abs(mean_x)
    s = np.where(constant, 1.0, std_x)
    gram_z = scatter_xx  # a fresh symmetric copy: standardised in place
    gram_z /= s[:, None]
    gram_z /= s[None, :]
    gram_z[constant, :] = 0.0
    gram_z[:, constant] = 0.0
    cross_zy = scatter_xy / s[:, None]
    cross_zy[constant, :] = 0.0

    preliminary = _standardised_ridge(gram_z, cross_zy, n, alpha, constant) / s[:, None]

    # A class whose labels never vary has a zero target after centring: no signal, no nodes.
    informative = (moments.sum_y > 0) & (moments.sum_y < n)
    if enhance:
        xi, node_classes, k = enhancement_weights(preliminary, informative, step)
    else:
        xi, node_classes, k = np.zeros((d, 0)), np.zeros(0, dtype=np.int64), 0

    m = xi.shape[1]
    if m:
        gram_zh = gram_z @ xi
        gram_a = np.empty((d + m, d + m))
        gram_a[:d, :d] = gram_z
        gram_a[:d, d:] = gram_zh
        gram_a[d:, :d] = gram_zh.T
        gram_a[d:, d:] = xi.T @ gram_zh
        del gram_z
        cross_ay = np.vstack([cross_zy, xi.T @ cross_zy])
        # A node is constant when its features cancel exactly; compare with its weights' size.
        std_h = np.sqrt(np.clip(np.diag(gram_a)[d:], 0.0, None) / n)
        constant_h = std_h <= _CONSTANT_RTOL * np.abs(xi).sum(axis=0)
        constant_a = np.concatenate([constant, constant_h])
    else:
        gram_a, cross_ay, constant_a = gram_z, cross_zy, constant

    w = _standardised_ridge(gram_a, cross_ay, n, alpha, constant_a, overwrite=True)
    w_z = w[:d] + xi @ w[d:]
    coef = w_z / s[:, None]
    coef[constant, :] = 0.0
    intercept = mean_y - mean_x @ coef
    return Solution(
        coef=coef,
        intercept=intercept,
        preliminary_coef=preliminary,
        enhancement_weights=xi,
        node_classes=node_classes,
        nodes_per_class=k,
        constant_features=constant,
    )
