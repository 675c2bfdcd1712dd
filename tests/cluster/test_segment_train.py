"""The segment stage's training under Ray Train: DDP over two CPU workers, rank 0 scores on the
val masks and saves a loadable model; a second call keeps it, and one with another inference
scores it again without training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from camflow.data import embedded
from camflow.data.masks import load_mask
from camflow.data.voc import read_voc
from camflow.models import build, save_checkpoint
from camflow.outputs import MASKS_SCHEMA, png_cell
from camflow.postprocess.png import encode_label_png
from camflow.segment import SegInference, SegTraining, load_segmenter
from camflow.shards import ShardStore
from cluster.segment import SegmentJob, train_segmenter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_two_ray_train_workers_train_score_and_save(ray_session, tmp_path):
    root = embedded.build(tmp_path / "data", seed=7, train=12, val=6, size=64)
    manifests = {}
    for split in ("train", "val"):
        manifests[split] = str(tmp_path / f"{split}.parquet")
        pq.write_table(read_voc(root, split), manifests[split])
    # The true masks of the training images stand in for their pseudo masks.
    rows = [{"image_id": r["image_id"], "height": r["height"], "width": r["width"],
             "mask_png": png_cell(encode_label_png(load_mask(r["mask_uri"])), r["image_id"]),
             "bg_threshold": 0.25, "crf": False}
            for r in read_voc(root, "train").to_pylist()]
    output = str(tmp_path / "outputs")
    ShardStore(output, "g").commit("cam", "shard-00000",
                                   {"masks": pa.Table.from_pylist(rows, schema=MASKS_SCHEMA)})
    torch.manual_seed(0)
    ckpt = str(tmp_path / "model.safetensors")
    save_checkpoint(build("resnet18", 10), ckpt, {"classes": list(embedded.CLASSES)})
    job = SegmentJob(output=output, run_id="g", method="cam", table="masks", num_classes=10,
                     training=SegTraining(epochs=2, batch_size=4), image_size=64)
    out = str(tmp_path / "segmenter.safetensors")
    meta = train_segmenter(job, manifests["train"], manifests["val"], ckpt, out, workers=2,
                           cpus=1)
    assert meta["workers"] == 2 and meta["train_images"] == 12 and meta["val_images"] == 6
    assert 0 <= meta["val"]["mIoU"] <= 1 and len(meta["history"]) == 2
    model, saved = load_segmenter(out)
    assert saved["classes"] == list(embedded.CLASSES)
    assert model(torch.zeros(1, 3, 64, 64))["out"].shape == (1, 11, 64, 64)
    again = train_segmenter(job, manifests["train"], manifests["val"], ckpt, out, workers=2,
                            cpus=1)
    assert again == meta
    assert meta["inference"] == {"scales": list(SegInference().scales), "flip": True}
    assert 0 <= meta["val_one_pass"]["mIoU"] <= 1

    one_pass = dataclasses.replace(job, inference=SegInference.single())
    rescored = train_segmenter(one_pass, manifests["train"], manifests["val"], ckpt, out,
                               workers=2, cpus=1)
    assert rescored["inference"] == {"scales": [1.0], "flip": False}
    np.testing.assert_equal(rescored["val"], rescored["val_one_pass"])  # NaN: a label not seen
    assert rescored["val"]["mIoU"] == pytest.approx(meta["val_one_pass"]["mIoU"], abs=1e-3)
    # Not trained again: the same weights, the same training record.
    assert rescored["history"] == meta["history"] and rescored["seconds"] == meta["seconds"]
    reloaded, _ = load_segmenter(out)
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name
