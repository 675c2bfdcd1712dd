"""The Ray feature pass: a distributed BLS fit equals the single-process fit on the same data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from camflow.bls import BLS
from camflow.data import embedded
from camflow.data.dataset import ManifestDataset
from camflow.data.rejects import Rejects
from camflow.data.voc import read_voc
from camflow.features import accumulate, refit_from_features
from camflow.models import build, load_checkpoint, save_checkpoint
from cluster.features import ManifestShard, ShardSums, fit_bls_distributed
from cluster.generate import CheckpointModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    uri = str(tmp_path_factory.mktemp("bls") / "model.safetensors")
    save_checkpoint(build("resnet18", 3), uri, {"classes": ["a", "b", "c"]})
    return uri


def tensor_shards(n_shards: int, batches_per_shard: int = 2, size: int = 6):
    gen = torch.Generator().manual_seed(1)
    shards = []
    for s in range(n_shards):
        shard = []
        for b in range(batches_per_shard):
            images = torch.randn(size, 3, 48, 48, generator=gen)
            labels = (torch.rand(size, 3, generator=gen) > 0.5).float()
            shard.append((images, labels, [f"s{s}b{b}i{i}" for i in range(size)]))
        shards.append(shard)
    return shards


def manifest_shards(tmp_path) -> list[ManifestShard]:
    """Two shards of embedded-benchmark rows (labels folded onto 3 classes), one corrupt image."""
    root = embedded.build(tmp_path / "data", seed=2, train=0, val=9, size=64)
    rows = read_voc(root, "val").to_pylist()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows.insert(3, {**rows[0], "image_id": "corrupt", "uri": str(corrupt)})
    for row in rows:
        row["labels"] = [k % 3 for k in row["labels"]]
    return [ManifestShard(rows[i : i + 5], num_classes=3, size=48, batch_size=4)
            for i in range(0, len(rows), 5)]


def same_batches_in_process(shards) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The workers' batches, built here (float32 convolutions depend on batch composition)."""
    batches = []
    for shard in shards:
        if not isinstance(shard, ManifestShard):
            batches.extend((images, labels) for images, labels, _ in shard)
            continue
        good = pa.Table.from_pylist([r for r in shard.rows if r["image_id"] != "corrupt"])
        dataset = ManifestDataset(good, 3, size=48)
        items = [dataset[i] for i in range(len(dataset))]
        for start in range(0, len(items), shard.batch_size):
            chunk = items[start : start + shard.batch_size]
            batches.append((torch.stack([it["image"] for it in chunk]),
                            torch.stack([it["labels"] for it in chunk])))
    return batches


def test_distributed_fit_equals_single_process_fit_and_refits_from_parquet(
    ray_session, checkpoint, tmp_path
) -> None:
    # One run mixes both kinds of shard, so the (costly) actors start once.
    shards = tensor_shards(2) + manifest_shards(tmp_path)
    features_uri = str(tmp_path / "features")
    rejects = Rejects()
    distributed = fit_bls_distributed(CheckpointModel(checkpoint), shards, num_workers=2,
                                      alpha=1.0, step=32, features_uri=features_uri,
                                      rejects=rejects)
    assert set(rejects.reasons()) == {"corrupt"}

    model, _ = load_checkpoint(checkpoint)
    single = accumulate(model, same_batches_in_process(shards),
                        bls=BLS(alpha=1.0, step=32)).finalize()
    assert distributed.n_samples_ == single.n_samples_ == 24 + 9
    assert distributed.feature_layout == [("stage4", 256), ("stage5", 512)]
    assert single.nodes_per_class_ > 0
    scale = np.abs(single.coef_).max()
    assert np.abs(distributed.coef_ - single.coef_).max() <= 1e-8 * scale

    # The Parquet features refit to the same model without touching the network again.
    refit = refit_from_features(features_uri, ["stage4", "stage5"], 3,
                                BLS(alpha=1.0, step=32)).finalize()
    assert np.abs(refit.coef_ - single.coef_).max() <= 1e-8 * scale


def test_shard_sums_travel_as_safetensors_bytes() -> None:
    rng = np.random.default_rng(0)
    bls = BLS().partial_fit(rng.random((5, 4)), np.eye(5, 2))
    sums = ShardSums("shard-00001", bls.state(), [("stage5", 4)],
                     [{"image_id": "x", "uri": "", "stage": "decode", "reason": "bad"}])
    back = ShardSums.unpack(sums.pack())
    assert (back.name, back.feature_layout, back.rejects) == (sums.name, sums.feature_layout,
                                                              sums.rejects)
    for key, value in sums.state.items():
        np.testing.assert_array_equal(back.state[key], value)
