"""The pipeline's WSSS last mile end to end on a tiny embedded benchmark: seeds of the training
split scored on train masks (background scores chosen on val images), a refined_masks table of
every seeded training image, a segmentation model trained on them and scored on val, the
report's table, and ``camflow predict`` with that model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camflow.shards import ShardStore
from flows.cli import main
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
    "segment": {"enabled": True, "training": {"epochs": 2, "batch_size": 4}},
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
    assert 0 <= broadcam["segment_val_mIoU"] <= 1
    assert broadcam["segment_trained_on"] == "refined_masks"
    assert len(broadcam["segment_val_IoU"]) == 11 and entry["times"]["segment"] > 0
    segmenter = run_dir / "models/p1/segmenter.safetensors"
    val_image = next((run_dir.parent / "data").rglob("*.jpg"))
    assert main(["predict", str(segmenter), str(val_image), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / f"{val_image.stem}.png").is_file()
    report = (run_dir / "report.md").read_text()
    assert "## Pseudo masks of the training split, refined, and the segmentation model" in report
    assert "seeds, masks and boxes of the train split; background scores chosen on the first" \
        in report and "val images with masks" in report


def test_refinement_needs_train_seeds():
    from flows.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="refine.enabled needs cams.split: train"):
        load_config(None, {"refine": {"enabled": True}})
    with pytest.raises(ConfigError, match="refine.method 'gradcam' is not one of"):
        load_config(None, {"refine": {"enabled": True, "method": "gradcam"},
                           "cams": {"split": "train", "methods": ["cam"]}})
