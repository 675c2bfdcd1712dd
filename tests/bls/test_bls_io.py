"""Saving and loading a BLS: round trip, re-solving from stored sums, refusing foreign files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy

from camflow.bls import BLS, FORMAT_VERSION, BLSFormatError


def fitted(alpha: float = 1.0) -> tuple[BLS, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.abs(rng.standard_normal((300, 24))).astype(np.float32)
    Y = (X @ rng.standard_normal((24, 3)) > 0).astype(np.float32)
    bls = BLS(alpha=alpha, step=2).fit(X, Y)
    bls.feature_layout = [("layer3", 8), ("layer4", 16)]
    return bls, X, Y


def test_round_trip_keeps_the_model_and_the_sums(tmp_path) -> None:
    bls, X, Y = fitted()
    path = tmp_path / "bls" / "weights.safetensors"
    bls.save(str(path))
    loaded = BLS.load(str(path))
    assert (loaded.alpha, loaded.step, loaded.enhance) == (1.0, 2, True)
    assert loaded.feature_layout == [("layer3", 8), ("layer4", 16)]
    assert loaded.nodes_per_class_ == bls.nodes_per_class_ > 0
    np.testing.assert_array_equal(loaded.coef_, bls.coef_)
    np.testing.assert_array_equal(loaded.intercept_, bls.intercept_)
    np.testing.assert_array_equal(loaded.predict(X), bls.predict(X))
    # The stored sums re-solve with another alpha exactly like a fresh fit on the features.
    loaded.alpha = 7.0
    np.testing.assert_allclose(loaded.finalize().coef_, BLS(alpha=7.0, step=2).fit(X, Y).coef_,
                               rtol=1e-12, atol=1e-15)


def test_without_stats_the_file_is_small_and_still_predicts(tmp_path) -> None:
    bls, X, _ = fitted()
    small, full = tmp_path / "small.safetensors", tmp_path / "full.safetensors"
    bls.save(str(small), include_stats=False)
    bls.save(str(full))
    assert small.stat().st_size < full.stat().st_size
    loaded = BLS.load(str(small))
    assert loaded.n_samples_ == 0 and loaded.n_features_in_ == 24
    np.testing.assert_array_equal(loaded.predict(X), bls.predict(X))


def rewrite(path, *, meta_update=None, tensor_update=None) -> None:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    meta = json.loads(json.loads(raw[8 : 8 + size])["__metadata__"]["camflow.bls"])
    meta.update(meta_update or {})
    tensors = safetensors.numpy.load(raw)
    tensors.update(tensor_update or {})
    path.write_bytes(safetensors.numpy.save(tensors, metadata={"camflow.bls": json.dumps(meta)}))


def test_a_file_of_another_version_is_refused(tmp_path) -> None:
    bls, _, _ = fitted()
    path = tmp_path / "w.safetensors"
    bls.save(str(path))
    rewrite(path, meta_update={"format_version": FORMAT_VERSION + 1})
    with pytest.raises(BLSFormatError, match=rf"w.safetensors: format version {FORMAT_VERSION + 1}"):
        BLS.load(str(path))


def test_a_file_with_wrong_shapes_is_refused(tmp_path) -> None:
    bls, _, _ = fitted()
    path = tmp_path / "w.safetensors"
    bls.save(str(path))
    rewrite(path, tensor_update={"coef": np.zeros((24, 4))})
    with pytest.raises(BLSFormatError, match=r"'coef' has shape \(24, 4\), expected \(24, 3\)"):
        BLS.load(str(path))
    bls.save(str(path))
    rewrite(path, tensor_update={"stats.scatter_xx": np.zeros((23, 23))})
    with pytest.raises(BLSFormatError, match="scatter_xx has shape"):
        BLS.load(str(path))


def test_files_that_are_not_bls_files_are_refused(tmp_path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01not a model at all")
    with pytest.raises(BLSFormatError, match="junk.safetensors: not a safetensors file"):
        BLS.load(str(junk))
    other = tmp_path / "other.safetensors"
    other.write_bytes(safetensors.numpy.save({"w": np.zeros(3)}))
    with pytest.raises(BLSFormatError, match="not a camflow BLS file"):
        BLS.load(str(other))


@pytest.mark.slow
def test_round_trip_through_object_storage(s3_bucket) -> None:
    bls, X, _ = fitted()
    uri = f"s3://{s3_bucket}/runs/r1/bls.safetensors"
    bls.save(uri)
    np.testing.assert_array_equal(BLS.load(uri).predict(X), bls.predict(X))
