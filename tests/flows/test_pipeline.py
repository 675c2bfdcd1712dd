"""The pipeline flow end to end on a tiny embedded benchmark, and the camflow command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import deployments, main
from flows.config import load_config

TINY = {
    "name": "tiny",
    "data": {"embedded_train": 40, "embedded_val": 16, "image_size": 64},
    # The default backbone of the embedded benchmark, pretrained with a recipe a test affords.
    "pretrain": {"epochs": 1, "image_size": 32, "source_train": 24, "source_val": 8},
    "train": {"proportions": [0.5], "epochs": 1, "batch_size": 8},
    "bls": {"step": 16},
    "cams": {"scales": [1.0], "flip": False, "shard_size": 8,
             "methods": ["broadcam", "cam", "gradcam", "layercam", "recam"]},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, prefect_harness, ray_session):
    from flows.pipeline import pipeline

    out = tmp_path_factory.mktemp("runs")
    config = {**TINY, "output": str(out), "run_id": "t1"}
    return config, pipeline(config)


@pytest.mark.slow
def test_pipeline_writes_report_metrics_and_outputs(finished_run):
    config, result = finished_run
    run_dir = Path(result["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    entry = metrics["p0.5"]
    assert entry["proportion"] == 0.5 and entry["seed"] == 0
    assert set(entry["methods"]) == {"broadcam", "cam", "gradcam", "layercam", "recam"}
    for values in entry["methods"].values():
        for key in ("seed_mIoU", "seed_best_threshold", "mask_mIoU", "MaxBoxAccV2", "PxAP"):
            assert 0 <= values[key] <= 1, key
    assert set(entry["times"]) >= {"prepare_data", "train", "train_recam", "fit_bls", "generate"}
    for name in ("report.md", "metrics_vs_proportion.png", "overlays_p0.5.png"):
        assert (run_dir / name).stat().st_size > 0
    # The source backbone was pretrained (into the test cache) and copied into the run.
    card = json.loads((run_dir / "models/pretrained/resnet18.card.json").read_text())
    assert card["source"]["params"]["train"] == 24 and card["epochs"] == 1
    trained = json.loads((run_dir / "models/p0.5/history.json").read_text())
    assert trained["config"]["pretrained"].endswith("models/pretrained/resnet18.safetensors")
    recam = json.loads((run_dir / "models/p0.5-recam/history.json").read_text())
    assert recam["config"]["head"] == "recam"
    assert recam["config"]["init_checkpoint"].endswith("models/p0.5/best.safetensors")
    # ReCAM's maps come from its own classifier, in a run of their own.
    assert (run_dir / "outputs/seeds/run=p0.5-recam/method=recam").is_dir()
    report = (run_dir / "report.md").read_text()
    assert "broadcam" in report and "Time per stage" in report
    # Val seeds; their background scores were chosen on training images, never on val ones.
    assert entry["seeds_split"] == "val"
    assert entry["bg_calibration"]["split"] == "train" and entry["bg_calibration"]["images"] > 0
    assert (f"- p0.5: seeds, masks and boxes of the val split; background scores chosen on the "
            f"first {entry['bg_calibration']['images']} train images with masks.") in report


@pytest.mark.slow
def test_dashboard_artifacts_exist(finished_run):
    from prefect.artifacts import Artifact

    assert Artifact.get("t1-metrics").type == "table"
    assert "data:image/png;base64," in Artifact.get("t1-overlays").data
    assert "broadcam" in str(Artifact.get("t1-methods").data)


@pytest.mark.slow
def test_rerun_of_the_same_run_resumes_from_finished_stages(finished_run):
    from flows.pipeline import pipeline

    config, first = finished_run
    again = pipeline(config)
    assert again["results"]["p0.5"]["methods"] == first["results"]["p0.5"]["methods"]


@pytest.mark.slow
def test_show_prints_metrics_and_writes_overlays(finished_run, capsys):
    _, result = finished_run
    assert main(["show", result["run_dir"], "--images", "2"]) == 0
    out = capsys.readouterr().out
    assert "broadcam" in out and "show_p0.5.png" in out and "recam" in out


def test_cli_config_prints_defaults(capsys):
    assert main(["config", "--set", "cams.methods=[cam]"]) == 0
    assert "methods:\n  - cam" in capsys.readouterr().out


def test_cli_user_errors_are_one_line_with_a_hint(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {}\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("camflow: error:") and "trian" in err[0]
    assert err[1].startswith("hint:") and len(err) == 2

    assert main(["run", "--set", "data.kind=voc", "--set", f"data.root={tmp_path}/nope"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["show", str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_deployments_carry_the_cron_schedule():
    cfg = load_config(overrides={"schedule.cron": "30 1 * * *"})
    nightly, sweep = deployments(cfg)
    assert nightly.schedules[0].schedule.cron == "30 1 * * *"
    assert nightly.parameters["config"]["schedule"]["cron"] == "30 1 * * *"
    assert sweep.name.endswith("sweep")


def test_a_sweep_plans_every_seed_up_to_its_limit_and_one_above():
    from flows.pipeline import planned_runs, run_label

    cfg = load_config(overrides={"sweep.proportions": [0.01, 0.1, 0.5], "sweep.seeds": [0, 1, 2],
                                 "sweep.seeds_up_to": 0.1})
    runs = planned_runs(cfg, cfg.sweep.proportions, cfg.sweep.seeds)
    assert runs == [(0.01, 0), (0.01, 1), (0.01, 2), (0.1, 0), (0.1, 1), (0.1, 2), (0.5, 0)]
    assert planned_runs(cfg, [0.05, 1.0]) == [(0.05, 0), (1.0, 0)]
    assert [run_label(p, s, 0) for p, s in runs[:2]] == ["p0.01", "p0.01-s1"]


@pytest.mark.slow
def test_cli_pretrain_writes_weights_and_card_to_out(tmp_path, prefect_harness, capsys):
    out = tmp_path / "bb" / "resnet18.safetensors"
    tiny = ["--set", "pretrain.epochs=1", "--set", "pretrain.image_size=32",
            "--set", "pretrain.source_train=16", "--set", "pretrain.source_val=8"]
    assert main(["pretrain", *tiny, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out) and "source-val mAP" in printed[-2]
    card = json.loads(out.with_name("resnet18.card.json").read_text())
    assert card["source"]["params"]["train"] == 16 and card["backbone"] == "resnet18"
    assert main(["pretrain", *tiny, "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["run", "--set", f"model.pretrained={tmp_path}/missing.safetensors"]) == 2
    assert "is not a file" in capsys.readouterr().err
