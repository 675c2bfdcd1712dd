"""The refinement stage on Ray: AffinityNet trained once, then every seeded image refined into
``refined_masks`` exactly once, under a killed worker and on a rerun."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from camflow.data import embedded
from camflow.data.voc import read_voc
from camflow.generate import CamMethod
from camflow.models import build, save_checkpoint
from camflow.options import CamOptions, GenerateOptions
from camflow.refine import RefineOptions
from camflow.refine.train import AffinityTraining
from camflow.shards import ShardStore
from cluster.generate import CheckpointModel, GenerationJob, run_generation
from cluster.refine import REFINED_TABLE, RefineJob, run_refinement, train_affinity_net
from tests.cluster.multinode import pids_titled

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

IMAGES = 16


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, ray_session):
    """Seeds of a tiny embedded benchmark (cam, from a seeded untrained resnet18)."""
    base = tmp_path_factory.mktemp("refine")
    root = embedded.build(base / "data", seed=5, train=0, val=IMAGES, size=64)
    manifest = read_voc(root, "val")
    manifest_uri = str(base / "manifest.parquet")
    import pyarrow.parquet as pq

    pq.write_table(manifest, manifest_uri)
    torch.manual_seed(0)
    ckpt = str(base / "model.safetensors")
    save_checkpoint(build("resnet18", 10), ckpt, {"classes": list(embedded.CLASSES)})
    output = str(base / "outputs")
    opts = GenerateOptions(num_classes=10, image_size=64,
                           cam=CamOptions(scales=(1.0,), flip=False, seed_stride=1))
    run_generation(GenerationJob(output=output, run_id="g", shard_size=4, options=opts,
                                 methods=(CamMethod("cam", ("stage5",)),)),
                   manifest_uri, CheckpointModel(ckpt))
    job = RefineJob(output=output, run_id="g", method="cam", num_classes=10,
                    options=RefineOptions(radius=3, steps=32), shard_size=2, image_size=64,
                    training=AffinityTraining(epochs=2, batch_size=4))
    affinity = str(base / "affinity.safetensors")
    trained = train_affinity_net(job, manifest_uri, ckpt, affinity)
    return {"job": job, "manifest": manifest_uri, "ckpt": ckpt, "affinity": affinity,
            "trained": trained, "ids": sorted(manifest["image_id"].to_pylist())}


def _check_once(seeded) -> None:
    store = ShardStore(seeded["job"].output, "g-refine")
    refined = store.read(REFINED_TABLE, "cam")
    assert sorted(refined["image_id"].to_pylist()) == seeded["ids"]
    assert len(store.committed("cam")) == IMAGES // 2


def test_the_affinity_net_is_trained_once(seeded):
    trained = seeded["trained"]
    assert trained["images"] == IMAGES and len(trained["history"]) == 2
    again = train_affinity_net(seeded["job"], seeded["manifest"], seeded["ckpt"],
                               seeded["affinity"])
    assert again == trained  # the saved net, not a new one


def test_a_killed_refine_worker_is_replaced_and_nothing_is_doubled(seeded):
    result, errors, killed = {}, [], []

    def run() -> None:
        try:
            result["r"] = run_refinement(seeded["job"], seeded["manifest"], seeded["affinity"])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 300
    while thread.is_alive() and not killed and time.monotonic() < deadline:
        # A worker at work on a shard (its title ends in .submit): that shard must be redone.
        busy = pids_titled(b"RefineWorker", b".submit")
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])
        time.sleep(0.01)
    thread.join(600)
    assert not errors, errors
    assert killed, "no refine worker was seen at work"
    first = result["r"]
    assert first.shards_total == IMAGES // 2 and first.rejects == 0
    assert 0 <= first.metrics["refined_mask_mIoU"] <= 1
    _check_once(seeded)

    again = run_refinement(seeded["job"], seeded["manifest"], seeded["affinity"])
    assert again.shards_skipped == IMAGES // 2
    assert again.metrics == first.metrics
    _check_once(seeded)
