"""Bad input to the BLS gets a clear error naming what is wrong, and leaves the sums untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camflow.bls import BLS, NonFiniteFeaturesError, NotFittedError


def chunk(n: int = 20, d: int = 6, c: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), (rng.random((n, c)) > 0.5).astype(np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_rejected_by_row_number(bad: float) -> None:
    X, Y = chunk()
    bls = BLS(step=2).partial_fit(X, Y)
    X2, Y2 = chunk(seed=1)
    X2[3, 1] = bad
    X2[17, 5] = bad
    with pytest.raises(NonFiniteFeaturesError, match=r"2 row\(s\): rows \[3, 17\]") as info:
        bls.partial_fit(X2, Y2)
    assert info.value.rows == [3, 17]
    assert "of the whole stream" in str(info.value)  # where they sit in the stream, too
    assert bls.n_samples_ == 20  # the whole chunk was refused


def test_non_finite_rows_are_named_by_id_when_ids_are_given() -> None:
    X, Y = chunk()
    X[5, 0] = np.nan
    ids = [f"img_{i:03d}" for i in range(len(X))]
    with pytest.raises(NonFiniteFeaturesError, match="img_005") as info:
        BLS().partial_fit(torch.from_numpy(X), Y, ids=ids)
    assert info.value.ids == ["img_005"]


def test_dimension_mismatch_between_chunks() -> None:
    X, Y = chunk()
    bls = BLS().partial_fit(X, Y)
    with pytest.raises(ValueError, match="7 features but the accumulated data has 6"):
        bls.partial_fit(np.hstack([X, X[:, :1]]), Y)
    with pytest.raises(ValueError, match="2 classes but the accumulated data has 3"):
        bls.partial_fit(X, Y[:, :2])
    with pytest.raises(ValueError, match="Y has 19 rows but the features have 20"):
        bls.partial_fit(X, Y[:19])
    with pytest.raises(ValueError, match="2-D"):
        bls.partial_fit(X[0], Y[0])


def test_dimension_mismatch_in_merge() -> None:
    X, Y = chunk()
    a = BLS().partial_fit(X, Y)
    with pytest.raises(ValueError, match="merged accumulator has 5 features"):
        a.merge(BLS().partial_fit(X[:, :5], Y))
    with pytest.raises(ValueError, match="merged accumulator has 2 classes"):
        a.merge(BLS().partial_fit(X, Y[:, :2]))
    with pytest.raises(TypeError, match="merge expects a BLS"):
        a.merge(a.state())
    b = BLS().partial_fit(X, Y)
    a.feature_layout, b.feature_layout = [("layer3", 6)], [("layer4", 6)]
    with pytest.raises(ValueError, match="feature layouts differ"):
        a.merge(b)


def test_labels_must_be_multi_hot() -> None:
    X, Y = chunk()
    Y[4, 2] = 2.0
    with pytest.raises(ValueError, match=r"not multi-hot .* rows \[4\]"):
        BLS().partial_fit(X, Y)
    with pytest.raises(ValueError, match="class indices"):
        BLS().partial_fit(X, np.arange(len(X)) % 3)
    Y[4, 2] = np.nan
    with pytest.raises(ValueError, match="not multi-hot"):
        BLS().partial_fit(X, Y)


def test_unfitted_use_is_refused() -> None:
    bls = BLS()
    with pytest.raises(NotFittedError, match="not fitted"):
        _ = bls.coef_
    with pytest.raises(NotFittedError, match="no data accumulated"):
        bls.finalize()
    X, Y = chunk()
    bls.partial_fit(X, Y)
    with pytest.raises(NotFittedError, match="finalize"):
        bls.predict(X)
    with pytest.raises(NotFittedError):
        bls.save("unused.safetensors")
    bls.finalize()
    with pytest.raises(ValueError, match="5 features but the model was fitted on 6"):
        bls.predict(X[:, :5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"alpha": 0}, "alpha"), ({"alpha": float("nan")}, "alpha"), ({"step": 0}, "step"),
     ({"step": 2.5}, "step")],
)
def test_bad_hyper_parameters(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        BLS(**kwargs)
