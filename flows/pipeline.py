"""The camflow pipeline as a Prefect flow: data -> train -> BroadCAM -> seeds/masks/boxes -> report.

    python -m flows.pipeline [CONFIG.yaml]      (or: camflow run [CONFIG.yaml])
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger

from camflow import storage
from flows.config import RunConfig, load_config, parse_config
from tasks.bls import fit_broadcam
from tasks.cams import generate_cams
from tasks.data import prepare_data
from tasks.report import write_report
from tasks.train import train_classifier


def new_run_id(name: str) -> str:
    return f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"


def run_stages(cfg: RunConfig, proportions: Sequence[float], *, title: str) -> dict[str, Any]:
    """Every stage for every proportion, then the report; shared by the pipeline and the sweep."""
    log = get_run_logger()
    run_id = cfg.run_id or new_run_id(cfg.name)
    run_dir = storage.join(cfg.output, run_id)
    log.info("run %s -> %s", run_id, storage.redact(run_dir))
    data, cluster = cfg.data.model_dump(), cfg.cluster.model_dump()
    cams, post = cfg.cams.model_dump(), cfg.postprocess.model_dump()

    started = time.monotonic()
    prepared = prepare_data(data, run_dir)
    prepare_seconds = time.monotonic() - started
    results: dict[float, dict[str, Any]] = {}
    generated: dict[float, dict[str, Any]] = {}
    # Every classifier first: locally they train in this process, and a local Ray kept alive
    # beside them (it starts with the first BLS fit) slows training by a fifth on two cores.
    classifiers = {p: train_classifier(cfg.model.model_dump(), cfg.train.model_dump(), data,
                                       prepared, p, run_dir, cluster) for p in proportions}
    for proportion in proportions:
        trained = classifiers[proportion]
        fitted = None
        if "broadcam" in cfg.cams.methods:
            fitted = fit_broadcam(cfg.bls.model_dump(), prepared, trained["checkpoint"], proportion,
                                  cfg.train.seed, cfg.data.image_size, run_dir, cluster)
        generated[proportion] = generate_cams(cams, post, prepared, trained["checkpoint"], fitted,
                                              proportion, cfg.data.image_size, run_dir, cluster)
        results[proportion] = {
            "train": trained["metrics"],
            "methods": generated[proportion]["metrics"],
            "times": {"prepare_data": prepare_seconds, "train": trained["seconds"],
                      "fit_bls": fitted["seconds"] if fitted else 0.0,
                      "generate": generated[proportion]["seconds"]},
        }
    written = write_report(results, generated, prepared, list(cfg.cams.methods), cfg.cams.split,
                           run_dir, title=title)
    return {"run_id": run_id, "run_dir": run_dir, "results": results, **written}


@flow(name="camflow-pipeline", log_prints=True)
def pipeline(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on each configured proportion, fit BroadCAM, make seeds, masks and boxes, evaluate."""
    cfg = parse_config(config)
    return run_stages(cfg, cfg.train.proportions, title=f"camflow run: {cfg.name}")


@flow(name="camflow-sweep", log_prints=True)
def sweep(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """BroadCAM's central comparison: seed mIoU against training proportion, one line per method."""
    cfg = parse_config(config)
    return run_stages(cfg, cfg.sweep.proportions, title=f"camflow sweep: {cfg.name}")


if __name__ == "__main__":
    config = load_config(sys.argv[1] if len(sys.argv) > 1 else None)
    print(pipeline(config.model_dump(mode="json"))["run_dir"])
