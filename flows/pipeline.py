"""The camflow pipeline as Prefect flows: data -> (pretrained backbone) -> train -> BroadCAM ->
seeds/masks/boxes -> report; the proportion sweep; the backbone pretraining on its own.

    python -m flows.pipeline [CONFIG.yaml]      (or: camflow run [CONFIG.yaml])
"""

from __future__ import annotations

import contextvars
import dataclasses
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger

from camflow import storage
from camflow.models.pretrained import EMBEDDED
from flows.config import RunConfig, load_config, parse_config
from tasks.bls import fit_broadcam
from tasks.cams import generate_cams
from tasks.common import concurrent_runs
from tasks.data import prepare_data
from tasks.pretrain import pretrain_backbone
from tasks.refine import refine_masks
from tasks.report import write_report
from tasks.segment import segment_model
from tasks.train import train_classifier, train_recam


def new_run_id(name: str) -> str:
    return f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"


def run_label(proportion: float, seed: int, base_seed: int) -> str:
    """The name of one training run in the outputs: ``p0.05``, or ``p0.05-s1`` for other seeds."""
    return f"p{proportion:g}" if seed == base_seed else f"p{proportion:g}-s{seed}"


def planned_runs(cfg: RunConfig, proportions: Sequence[float],
                 seeds: Sequence[int] | None = None) -> list[tuple[float, int]]:
    """(proportion, training seed) pairs: every seed up to ``sweep.seeds_up_to``, one above."""
    if seeds is None:
        return [(p, cfg.train.seed) for p in proportions]
    return [(p, s) for p in proportions for s in (seeds if p <= cfg.sweep.seeds_up_to else seeds[:1])]


def resolve_pretrained(cfg: RunConfig, run_dir: str) -> Any:
    """``model.pretrained`` as training takes it: the source backbone becomes a file in the run."""
    if cfg.model.pretrained != EMBEDDED or cfg.model.checkpoint:
        return cfg.model.pretrained
    recipe = cfg.pretrain.recipe(cfg.model.backbone)
    return pretrain_backbone(recipe.to_dict(), run_dir)["weights"]


def run_stages(cfg: RunConfig, runs: Sequence[tuple[float, int]], *, title: str) -> dict[str, Any]:
    """Every stage for every (proportion, seed), then the report; the pipeline's and the sweep's.

    The runs go one after another, or ``sweep.concurrent`` at once (by default as many as the
    cluster has room for), each its own chain of task runs: train -> ReCAM -> BLS -> CAMs.
    """
    log = get_run_logger()
    run_id = cfg.run_id or new_run_id(cfg.name)
    run_dir = storage.join(cfg.output, run_id)
    log.info("run %s -> %s", run_id, storage.redact(run_dir))
    started = time.monotonic()
    prepared = prepare_data(cfg.data, run_dir, cfg.output)
    stages = _RunStages(cfg, prepared, run_dir, resolve_pretrained(cfg, run_dir),
                        prepare_seconds=time.monotonic() - started)
    width = concurrent_runs(cfg.cluster, len(runs), cfg.sweep.concurrent)
    if width > 1:
        log.info("%d training runs, %d at once", len(runs), width)
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="camflow-run") as pool:
            # Each thread runs its tasks inside a copy of this flow run's context, so Prefect
            # records them as this flow's (concurrent) task runs.
            futures = [pool.submit(contextvars.copy_context().run, stages.whole, run)
                       for run in runs]
            outcomes = [f.result() for f in futures]
    else:
        # Every classifier first: locally they train in this process, and a local Ray kept alive
        # beside them (it starts with the first BLS fit) slows training by a fifth on two cores.
        trained = {run: stages.train(run) for run in runs}
        recams = {run: stages.recam(run, trained[run]) for run in runs}
        outcomes = [stages.finish(run, trained[run], recams[run]) for run in runs]
    results = {label: result for label, result, _ in outcomes}
    generated = {label: jobs for label, _, jobs in outcomes}
    written = write_report(results, generated, prepared, list(cfg.cams.methods), cfg.cams.split,
                           run_dir, title=title)
    return {"run_id": run_id, "run_dir": run_dir, "results": results, **written}


class _RunStages:
    """The stages of one training run (proportion, seed), as task calls."""

    def __init__(self, cfg: RunConfig, prepared: dict[str, Any], run_dir: str, pretrained: Any,
                 *, prepare_seconds: float) -> None:
        self.cfg, self.prepared, self.run_dir = cfg, prepared, run_dir
        self.pretrained, self.prepare_seconds = pretrained, prepare_seconds
        self.methods = list(cfg.cams.methods)

    def label(self, run: tuple[float, int]) -> str:
        return run_label(*run, self.cfg.train.seed)

    def train(self, run: tuple[float, int]) -> dict[str, Any]:
        return train_classifier(self.cfg.train_config(*run, self.pretrained), self.prepared,
                                self.run_dir, self.cfg.cluster, self.label(run),
                                checkpoint=self.cfg.model.checkpoint)

    def recam(self, run: tuple[float, int], trained: dict[str, Any]) -> dict[str, Any] | None:
        if "recam" not in self.methods:
            return None
        return train_recam(trained["checkpoint"], self.cfg.train_config(*run, self.pretrained),
                           self.prepared, self.run_dir, self.cfg.cluster, self.label(run))

    def last_mile(self, label: str, trained: dict[str, Any], generated: dict[str, Any] | None
                  ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """WSSS's last stages on the train split's seeds: affinity refinement, then the
        segmentation model on the (refined) pseudo masks; each when enabled."""
        cfg, cluster, size = self.cfg, self.cfg.cluster, self.cfg.data.image_size
        if generated is None:
            return None, None
        refined = segmented = None
        if cfg.refine.enabled:
            refined = refine_masks(cfg.refine.options, cfg.refine.training, cfg.refined_method,
                                   generated, self.prepared, trained["checkpoint"], self.run_dir,
                                   cluster, image_size=size, shard_size=cfg.cams.shard_size)
        if cfg.segment.enabled:
            masks = {"outputs": generated["outputs"], "table": "refined_masks" if refined else
                     "masks", "run_id": refined["run_id"] if refined else generated["run_id"]}
            segmented = segment_model(cfg.segment.training, cfg.segment.inference,
                                      cfg.segment.output_stride, cfg.refined_method, masks,
                                      self.prepared, trained["checkpoint"], self.run_dir,
                                      cluster, image_size=size, label=label)
        return refined, segmented

    def whole(self, run: tuple[float, int]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        trained = self.train(run)
        return self.finish(run, trained, self.recam(run, trained))

    def finish(self, run: tuple[float, int], trained: dict[str, Any],
               recam: dict[str, Any] | None) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        """BLS, then seeds, masks and boxes: the run's label, its results and its jobs."""
        cfg, (proportion, seed), label = self.cfg, run, self.label(run)
        post, size, cluster = cfg.postprocess, cfg.data.image_size, cfg.cluster
        generation = {"split": cfg.cams.split, "shard_size": cfg.cams.shard_size}
        # ReCAM's maps come from its own classifier, so they are a generation of their own.
        main_cams = dataclasses.replace(cfg.cams, methods=tuple(
            m for m in self.methods if m != "recam"))
        fitted = None
        if "broadcam" in self.methods:
            fitted = fit_broadcam(cfg.bls, self.prepared, trained["checkpoint"], proportion,
                                  seed, size, self.run_dir, cluster, label=label)
        jobs = []
        if main_cams.methods:
            jobs.append(generate_cams(main_cams, post.mask, post.box, self.prepared,
                                      trained["checkpoint"], fitted, proportion, size,
                                      self.run_dir, cluster, label=label, **generation))
        if recam is not None:
            jobs.append(generate_cams(dataclasses.replace(cfg.cams, methods=("recam",)), post.mask,
                                      post.box, self.prepared, recam["checkpoint"], None,
                                      proportion, size, self.run_dir, cluster,
                                      label=f"{label}-recam", **generation))
        refined, segmented = self.last_mile(label, trained, jobs[0] if jobs else None)
        result = {
            "run": label, "proportion": proportion, "seed": seed,
            "train": trained["metrics"],
            "methods": {m: v for job in jobs for m, v in job["metrics"].items()},
            "times": {"prepare_data": self.prepare_seconds, "train": trained["seconds"],
                      "train_recam": recam["seconds"] if recam else 0.0,
                      "fit_bls": fitted["seconds"] if fitted else 0.0,
                      "generate": sum(job["seconds"] for job in jobs),
                      "refine": refined["seconds"] if refined else 0.0,
                      "segment": segmented["seconds"] if segmented else 0.0},
        }
        for stage in (refined, segmented):
            if stage is not None:
                result["methods"][stage["method"]].update(stage["metrics"])
        if recam is not None:
            result["train_recam"] = recam["metrics"]
        result["seeds_split"] = cfg.cams.split
        # Which images chose the background scores (the same for every generation of the run).
        result["bg_calibration"] = next((job["calibration"] for job in jobs if job["calibration"]),
                                        None)
        return label, result, jobs


def as_config(config: RunConfig | dict[str, Any] | None) -> RunConfig:
    """The run's config, parsed once: the CLI hands its parsed config over as it is; a
    deployment's JSON parameters are parsed here."""
    return config if isinstance(config, RunConfig) else parse_config(config)


@flow(name="camflow-pipeline", log_prints=True)
def pipeline(config: RunConfig | dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on each configured proportion, fit BroadCAM, make seeds, masks and boxes, evaluate."""
    cfg = as_config(config)
    return run_stages(cfg, planned_runs(cfg, cfg.train.proportions),
                      title=f"camflow run: {cfg.name}")


@flow(name="camflow-sweep", log_prints=True)
def sweep(config: RunConfig | dict[str, Any] | None = None) -> dict[str, Any]:
    """BroadCAM's central comparison: every metric against training proportion, per method.

    Proportions up to ``sweep.seeds_up_to`` are trained with every one of ``sweep.seeds``; the
    report gives mean and standard deviation over them.
    """
    cfg = as_config(config)
    return run_stages(cfg, planned_runs(cfg, cfg.sweep.proportions, cfg.sweep.seeds),
                      title=f"camflow sweep: {cfg.name}")


@flow(name="camflow-pretrain", log_prints=True)
def pretrain(config: RunConfig | dict[str, Any] | None = None, backbone: str | None = None,
             out: str | None = None) -> dict[str, Any]:
    """Pretrain a backbone on the source benchmark: into the cache, or to ``out`` (.safetensors)."""
    cfg = as_config(config)
    recipe = cfg.pretrain.recipe(backbone or cfg.model.backbone)
    return pretrain_backbone(recipe.to_dict(), out=out)


if __name__ == "__main__":
    config = load_config(sys.argv[1] if len(sys.argv) > 1 else None)
    print(pipeline(config)["run_dir"])
