"""The pipeline with seeds of the training split and affinity refinement, end to end on a tiny
embedded benchmark: train seeds scored on train masks, background scores chosen on val images,
a refined_masks table of every seeded training image, and the report's refined-mask table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camflow.shards import ShardStore
from tests.flows.test_pipeline import TINY

pytestmark = pytest.mark.slow

REFINED = {
    **TINY,
    "name": "tiny-refine",
    "data": {"embedded_train": 20, "embedded_val": 10, "image_size": 64},
    "train": {"proportions": [1.0], "epochs": 1, "batch_size": 8},
    "cams": {"scales": [1.0], "flip": False, "shard_size": 8, "methods": ["broadcam", "cam"],
             "split": "train"},
    "refine": {"enabled": True, "options": {"steps": 32},
               "training": {"epochs": 1, "batch_size": 4}},
}


def test_train_seeds_are_refined_and_reported(tmp_path, prefect_harness, ray_session):
    from flows.pipeline import pipeline

    result = pipeline({**REFINED, "output": str(tmp_path), "run_id": "r1"})
    run_dir = Path(result["run_dir"])
    entry = json.loads((run_dir / "metrics.json").read_text())["p1"]
    assert entry["seeds_split"] == "train" and entry["bg_calibration"]["split"] == "val"
    broadcam = entry["methods"]["broadcam"]
    assert 0 <= broadcam["refined_mask_mIoU"] <= 1 and 0 <= broadcam["mask_mIoU"] <= 1
    assert "refined_mask_mIoU" not in entry["methods"]["cam"]
    assert entry["times"]["refine"] > 0
    assert (run_dir / "models/p1/affinity-broadcam.safetensors").is_file()
    seeds = ShardStore(str(run_dir / "outputs"), "p1").read("seeds", "broadcam")
    refined = ShardStore(str(run_dir / "outputs"), "p1-refine").read("refined_masks", "broadcam")
    ids = refined["image_id"].to_pylist()
    assert sorted(ids) == sorted(set(seeds["image_id"].to_pylist())) and len(ids) == 20
    report = (run_dir / "report.md").read_text()
    assert "## Refined pseudo masks (train split)" in report
    assert "seeds, masks and boxes of the train split; background scores chosen on the first" \
        in report and "val images with masks" in report


def test_refinement_needs_train_seeds():
    from flows.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="refine.enabled needs cams.split: train"):
        load_config(None, {"refine": {"enabled": True}})
    with pytest.raises(ConfigError, match="refine.method 'gradcam' is not one of"):
        load_config(None, {"refine": {"enabled": True, "method": "gradcam"},
                           "cams": {"split": "train", "methods": ["cam"]}})
