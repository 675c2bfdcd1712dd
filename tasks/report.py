"""Prefect task: the run report on disk and in the dashboard (artifacts)."""

from __future__ import annotations

import base64
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from camflow import report, storage
from camflow.data.manifest import read_manifest
from camflow.shards import ShardStore
from tasks.common import RETRIED


def _artifact_key(run_dir: str, what: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    name = "".join(c if c.isalnum() else "-" for c in run_dir.rsplit("/", 1)[-1].lower())
    return f"{name}-{what}".strip("-")[:100]


@task(name="report", **RETRIED)
def write_report(results: dict[str, dict[str, Any]], generated: dict[str, list[dict[str, Any]]],
                 prepared: dict[str, Any], methods: list[str], split: str, run_dir: str,
                 overlay_images: int = 6, title: str = "camflow run") -> dict[str, str]:
    """report.md, metrics.json, plots and overlays; the same tables and pictures as artifacts.

    Overlays are drawn for the runs of the first training seed of each proportion, of accepted
    images only. The outputs are committed by now, so overlays that cannot be drawn leave a
    warning and a note in the report, never a failed (and retried) task.
    """
    log = get_run_logger()
    overlays: dict[str, bytes] = {}
    notes: list[str] = []
    try:
        manifest = read_manifest(prepared[f"{split}_manifest"])
    except Exception as exc:  # noqa: BLE001 - the overlays are not worth the run
        manifest = None
        notes.append(f"no overlays: the {split} manifest is unreadable: {type(exc).__name__}: "
                     f"{storage.redact(exc)}")
        log.warning("%s", notes[-1])
    first_seed = min((entry["seed"] for entry in results.values()), default=0)
    for label, jobs in generated.items():
        if manifest is None or results[label]["seed"] != first_seed:
            continue
        stores: dict[str, ShardStore] = {}
        for job in jobs:
            store = ShardStore(job["outputs"], job["run_id"])  # one per run, shared by its methods
            stores.update(dict.fromkeys(job["metrics"], store))
        png, missing = report.draw_overlays(label, {m: stores[m] for m in methods if m in stores},
                                            manifest, overlay_images)
        notes += missing
        if png is not None:
            overlays[label] = png
    written = report.write_report(run_dir, results, overlays, title=title, notes=notes)

    rows = report.metrics_rows(results)
    create_table_artifact(key=_artifact_key(run_dir, "metrics"), table=rows,
                          description=f"Seed, mask and box metrics of {storage.redact(run_dir)}")
    comparison: dict[str, dict[str, float]] = {}
    for row in report.summary_rows(results):
        comparison.setdefault(row["method"], {})[f"{row['proportion']:g}"] = row["seed_mIoU"]
    create_table_artifact(key=_artifact_key(run_dir, "methods"),
                          table=[{"method": m, **v} for m, v in comparison.items()],
                          description="Seed mIoU per method (columns: training proportion; "
                                      "mean over seeds)")
    pictures = "\n\n".join(
        f"### {name}\n\n![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"
        for name, png in overlays.items())
    create_markdown_artifact(
        key=_artifact_key(run_dir, "overlays"),
        markdown=f"# {title}\n\n{report.summary_table(report.summary_rows(results))}\n\n{pictures}",
        description="CAM seeds, pseudo masks and boxes on validation images")
    log.info("report written to %s", storage.redact(written["report"]))
    return written
