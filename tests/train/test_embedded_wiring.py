"""Training wired to the real data layer: embedded benchmark -> VOC manifest -> ManifestDataset."""

from __future__ import annotations

import pytest

from camflow.models import load_checkpoint
from camflow.train import TrainConfig, train
from camflow.train.data import dataset_labels, manifest_datasets, select_subset


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    from camflow.data import embedded
    from camflow.data.voc import read_voc

    root = embedded.build(tmp_path_factory.mktemp("emb") / "voc", train=40, val=12, size=64)
    return read_voc(root, "train"), read_voc(root, "val"), list(embedded.CLASSES)


@pytest.mark.slow
def test_trains_on_a_stratified_proportion_of_the_embedded_benchmark(tmp_path, tiny_benchmark) -> None:
    train_manifest, val_manifest, classes = tiny_benchmark
    config = TrainConfig.embedded(proportion=0.5, epochs=1, image_size=48, batch_size=8, threads=1)
    train_ds, val_ds = manifest_datasets(train_manifest, val_manifest, len(classes),
                                         image_size=config.image_size)
    assert train_ds[0]["image"].shape == (3, 48, 48)
    result = train(config, train_ds, val_ds, out_uri=str(tmp_path / "run"), classes=classes)
    assert result.num_train == 20
    _, meta = load_checkpoint(result.checkpoint_uri)
    assert meta["proportion"] == 0.5 and meta["classes"] == classes
    # Same seed, same subset, same fingerprint; another seed picks other images.
    again = train(config, train_ds, val_ds, out_uri=str(tmp_path / "again"), classes=classes)
    assert again.data_hash == result.data_hash
    labels = dataset_labels(train_ds)
    assert list(select_subset(labels, 0.5, 1)) != list(select_subset(labels, 0.5, 0))


def test_an_empty_proportion_subset_is_refused(tmp_path, tiny_benchmark) -> None:
    train_manifest, val_manifest, classes = tiny_benchmark
    train_ds, val_ds = manifest_datasets(train_manifest, val_manifest, len(classes), image_size=48)
    config = TrainConfig(proportion=0.001, epochs=1, image_size=48, threads=1)
    with pytest.raises(ValueError, match="selects no image"):
        train(config, train_ds, val_ds, out_uri=str(tmp_path / "run"), classes=classes)


def test_the_training_subset_is_the_one_the_bls_is_fitted_on(tiny_benchmark) -> None:
    from camflow.data.subsets import take_subset
    from camflow.train.data import dataset_image_ids

    train_manifest, val_manifest, classes = tiny_benchmark
    train_ds, _ = manifest_datasets(train_manifest, val_manifest, len(classes), image_size=48)
    labels, ids = dataset_labels(train_ds), dataset_image_ids(train_ds)
    for seed in (0, 1):
        picked = select_subset(labels, 0.25, seed, image_ids=ids)
        expected = take_subset(train_manifest, 0.25, seed=seed)["image_id"].to_pylist()
        assert [ids[i] for i in picked] == expected
