"""The streaming BLS: chunked == whole, shards merge, enhance=False is a standardised ridge, edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from camflow.bls import BLS


def make_data(n: int, d: int, c: int, seed: int = 0, offset: float = 0.0):
    """Correlated non-negative features (like pooled ReLU maps) and multi-hot labels."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 8))
    X = np.abs(latent @ rng.standard_normal((8, d)) + 0.5 * rng.standard_normal((n, d)))
    scores = X @ rng.standard_normal((d, c))
    Y = (scores > np.quantile(scores, 0.6, axis=0)).astype(np.float32)
    return (X + offset).astype(np.float32), Y


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_streaming_in_ten_chunks_equals_one_fit() -> None:
    X, Y = make_data(1200, 64, 5)
    whole = BLS(alpha=2.0, step=4).fit(X, Y)
    assert whole.nodes_per_class_ > 0  # the enhancement layer is really exercised
    stream = BLS(alpha=2.0, step=4)
    for rows in np.array_split(np.arange(len(X)), 10):
        stream.partial_fit(X[rows], Y[rows])
    stream.finalize()
    assert stream.n_samples_ == len(X)
    assert rel_err(stream.coef_, whole.coef_) <= 1e-8
    assert rel_err(stream.intercept_, whole.intercept_) <= 1e-8


def test_merging_four_shard_accumulators_equals_one() -> None:
    X, Y = make_data(1000, 48, 4, seed=1)
    single = BLS(alpha=1.0, step=4)
    single.partial_fit(X, Y).finalize()
    shards = [BLS(alpha=1.0, step=4).partial_fit(X[r], Y[r])
              for r in np.array_split(np.arange(len(X)), 4)]
    merged = BLS(alpha=1.0, step=4)
    for shard in reversed(shards):  # order does not matter
        merged.merge(shard)
    merged.finalize()
    assert merged.n_samples_ == single.n_samples_
    assert rel_err(merged.coef_, single.coef_) <= 1e-8
    # Shipping the sums as plain arrays (what a worker returns) is the same as merging objects.
    via_state = BLS(alpha=1.0, step=4)
    for shard in shards:
        via_state.merge(BLS.from_state(shard.state()))
    assert rel_err(via_state.finalize().coef_, single.coef_) <= 1e-8


def test_without_enhancement_it_is_sklearn_ridge_on_standardised_features() -> None:
    X, Y = make_data(500, 40, 3, seed=2)
    alpha = 3.0
    ours = BLS(alpha=alpha, enhance=False).fit(X, Y)
    scaler = StandardScaler().fit(X.astype(np.float64))
    ridge = Ridge(alpha=alpha * len(X)).fit(scaler.transform(X.astype(np.float64)), Y)
    coef = ridge.coef_.T / scaler.scale_[:, None]
    intercept = ridge.intercept_ - scaler.mean_ @ coef
    assert rel_err(ours.coef_, coef) <= 1e-8
    assert rel_err(ours.intercept_, intercept) <= 1e-8
    assert ours.nodes_per_class_ == 0


def test_constant_columns_get_zero_weight_and_change_nothing_else() -> None:
    X, Y = make_data(400, 30, 3, seed=3)
    constants = np.tile(np.array([0.0, 5.0, 1e4], dtype=np.float32), (len(X), 1))
    X_wide = np.hstack([X[:, :10], constants, X[:, 10:]])
    wide = BLS(alpha=1.0, step=2).fit(X_wide, Y)
    narrow = BLS(alpha=1.0, step=2).fit(X, Y)
    assert np.isfinite(wide.coef_).all() and np.isfinite(wide.intercept_).all()
    assert np.all(wide.coef_[10:13] == 0.0)
    kept = np.r_[0:10, 13:33]
    assert rel_err(wide.coef_[kept], narrow.coef_) <= 1e-8
    assert rel_err(wide.intercept_, narrow.intercept_) <= 1e-8


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_a_class_without_variation_gets_zero_weights_and_leaves_the_others(fill: float) -> None:
    X, Y = make_data(400, 32, 3, seed=4)
    Y_more = np.hstack([Y[:, :1], np.full((len(Y), 1), fill, dtype=np.float32), Y[:, 1:]])
    more = BLS(alpha=1.0, step=2).fit(X, Y_more)
    base = BLS(alpha=1.0, step=2).fit(X, Y)
    assert np.isfinite(more.coef_).all()
    assert np.all(more.coef_[:, 1] == 0.0) and more.intercept_[1] == pytest.approx(fill)
    # The degenerate class neither gets nodes nor forces zero nodes on the others.
    assert more.nodes_per_class_ == base.nodes_per_class_ > 0
    assert 1 not in set(more.node_classes_.tolist())
    assert rel_err(more.coef_[:, [0, 2, 3]], base.coef_) <= 1e-8


def test_odd_class_count_keeps_the_last_class() -> None:
    X, Y = make_data(400, 32, 3, seed=5)
    bls = BLS(alpha=1.0, step=2).fit(X, Y)
    assert np.abs(bls.coef_[:, 2]).max() > 0
    assert set(bls.node_classes_.tolist()) == {0, 1, 2}


def test_fewer_rows_than_features() -> None:
    X, Y = make_data(30, 120, 2, seed=6)
    bls = BLS(alpha=0.5, step=8).fit(X, Y)
    assert np.isfinite(bls.coef_).all()
    assert bls.nodes_per_class_ > 0
    pred = bls.predict(X)
    # A ridge fit with more features than rows still ranks its training rows by their labels.
    for c in range(2):
        assert pred[Y[:, c] == 1, c].mean() > pred[Y[:, c] == 0, c].mean()


def test_float32_with_large_offsets_over_many_rows_keeps_full_precision() -> None:
    # Repeating every row 50 times leaves the solution unchanged (all sums scale by 50, and so
    # does the alpha*n penalty); raw sums of X^T X would lose ~8 digits to the 1e4 offset here.
    X, Y = make_data(4096, 24, 3, seed=7, offset=1e4)
    reference = BLS(alpha=1.0, step=2).fit(X, Y)
    stream = BLS(alpha=1.0, step=2)
    chunks = np.array_split(np.arange(len(X)), 8)
    for _ in range(50):
        for rows in chunks:
            stream.partial_fit(X[rows], Y[rows])
    stream.finalize()
    assert stream.n_samples_ == 50 * 4096
    assert reference.nodes_per_class_ > 0
    assert rel_err(stream.coef_, reference.coef_) <= 1e-8
    assert rel_err(stream.intercept_, reference.intercept_) <= 1e-8


def test_torch_tensors_are_accepted_like_numpy() -> None:
    X, Y = make_data(300, 20, 2, seed=8)
    from_numpy = BLS(alpha=1.0, step=2).fit(X, Y)
    from_torch = BLS(alpha=1.0, step=2).fit(torch.from_numpy(X), torch.from_numpy(Y).bool())
    assert rel_err(from_torch.coef_, from_numpy.coef_) <= 1e-12
    pred = from_torch.predict(torch.from_numpy(X))
    assert isinstance(pred, torch.Tensor)
    np.testing.assert_allclose(pred.numpy(), from_numpy.predict(X), rtol=1e-12, atol=1e-12)


def test_fit_starts_over_and_new_data_drops_the_old_solution() -> None:
    X, Y = make_data(300, 20, 2, seed=9)
    bls = BLS(alpha=1.0, step=2).fit(X[:100], Y[:100])
    bls.fit(X, Y)
    assert bls.n_samples_ == 300
    assert rel_err(bls.coef_, BLS(alpha=1.0, step=2).fit(X, Y).coef_) == 0.0
    bls.partial_fit(X[:10], Y[:10])
    assert not bls.is_fitted and not hasattr(bls, "coef_")


def test_the_tensor_reduction_used_for_accelerator_features_matches_numpy() -> None:
    # partial_fit reduces tensors that live on an accelerator with torch on that device; the same
    # code runs here on a CPU tensor handed straight to the statistics.
    from camflow.bls.stats import Moments

    X, Y = make_data(700, 16, 3, seed=10, offset=100.0)
    host, device_path = Moments(), Moments()
    host.update(X, Y.astype(np.float64), block_rows=256)
    device_path.update(torch.from_numpy(X), Y.astype(np.float64), block_rows=256)
    assert device_path.n == host.n == 700
    np.testing.assert_allclose(device_path.scatter_xx, host.scatter_xx, rtol=1e-12)
    np.testing.assert_allclose(device_path.scatter_xy, host.scatter_xy, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(device_path.sum_x, host.sum_x, rtol=1e-13)
