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
    "train": {"proportions": [0.5], "epochs": 1, "batch_size": 8},
    "bls": {"step": 16},
    "cams": {"scales": [1.0], "flip": False, "shard_size": 8,
             "methods": ["broadcam", "cam", "gradcam", "layercam"]},
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
    entry = metrics["0.5"]
    assert set(entry["methods"]) == {"broadcam", "cam", "gradcam", "layercam"}
    for values in entry["methods"].values():
        for key in ("seed_mIoU", "seed_best_threshold", "mask_mIoU", "MaxBoxAccV2", "PxAP"):
            assert 0 <= values[key] <= 1, key
    assert set(entry["times"]) >= {"prepare_data", "train", "fit_bls", "generate"}
    for name in ("report.md", "seed_miou_vs_proportion.png", "overlays_p0.5.png"):
        assert (run_dir / name).stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    assert "broadcam" in report and "Time per stage" in report


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
    assert again["results"][0.5]["methods"] == first["results"][0.5]["methods"]


@pytest.mark.slow
def test_show_prints_metrics_and_writes_overlays(finished_run, capsys):
    _, result = finished_run
    assert main(["show", result["run_dir"], "--images", "2"]) == 0
    out = capsys.readouterr().out
    assert "broadcam" in out and "show_p0.5.png" in out


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
