"""Classifier training under Ray Train: the core loop of camflow.train on N workers with DDP.

Each worker runs :func:`camflow.train.train` with a Runtime that wraps the objective in
DistributedDataParallel and shards the training loader; rank 0 validates and writes the best
checkpoint to ``out_uri`` through fsspec (local path or s3://), so checkpoints never go through
Ray's own storage. Locally this is one CPU worker; on a cluster, ``use_gpu=True`` puts one GPU
under each worker.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from typing import Any

import ray
import ray.train
import ray.train.torch
from torch.utils.data import Dataset

from camflow import storage
from camflow.train import TrainConfig, TrainResult
from camflow.train.loop import BEST_CHECKPOINT, HISTORY, Runtime, train
from cluster.connect import torch_threads_for, worker_cpus

__all__ = ["MAX_FAILURES", "train_distributed"]

MAX_FAILURES = 3  # worker-group restarts a training survives (each resumes from its last epoch)


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    # Ray Train wants flat, serialisable metrics.
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}


def _worker(loop_config: dict[str, Any]) -> None:
    context = ray.train.get_context()
    config = TrainConfig.from_dict(loop_config["config"])
    if config.threads is None:
        config = config.replace(threads=loop_config["threads"])
    runtime = Runtime(
        device=ray.train.torch.get_device(),
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        prepare_model=ray.train.torch.prepare_model,
        # Batches carry a list of rejects next to the tensors: the loop moves tensors itself.
        prepare_loader=lambda loader: ray.train.torch.prepare_data_loader(loader, move_to_device=False),
        report=lambda record: ray.train.report(_plain(record)),
    )
    train(
        config,
        loop_config["train_dataset"],
        loop_config["val_dataset"],
        out_uri=loop_config["out_uri"],
        classes=loop_config["classes"],
        num_classes=loop_config["num_classes"],
        runtime=runtime,
        storage_options=loop_config["storage_options"],
    )


def train_distributed(
    config: TrainConfig,
    train_dataset: Dataset,
    val_dataset: Dataset,
    *,
    out_uri: str,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    num_workers: int = 1,
    use_gpu: bool | None = None,
    cpus_per_worker: float | None = None,
    storage_options: dict[str, Any] | None = None,
    max_failures: int = MAX_FAILURES,
) -> TrainResult:
    """Train with Ray Train's TorchTrainer (DDP over ``num_workers``); same result as ``train``.

    Up to ``max_failures`` lost workers are survived: the group restarts and goes on after the
    last finished epoch.

    ``use_gpu=None`` uses GPUs when the Ray cluster has any. Datasets are shipped to the workers
    with the loop config, so they must be picklable by Ray (ManifestDataset is). ``step_losses`` of
    the result are rank 0's.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    config.validate()
    if not ray.is_initialized():
        from cluster.connect import connect

        connect()
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    cpus_per_worker = worker_cpus(num_workers, cpus_per_worker)
    loop_config = {
        "config": config.to_dict(),
        "threads": torch_threads_for(cpus_per_worker),
        "train_dataset": train_dataset,
        "val_dataset": val_dataset,
        "out_uri": out_uri,
        "classes": list(classes) if classes is not None else None,
        "num_classes": num_classes,
        "storage_options": storage_options,
    }
    trainer = ray.train.torch.TorchTrainer(
        _worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name="camflow-train",
            # Only metrics go through Ray; checkpoints are written by rank 0 to out_uri.
            storage_path=tempfile.mkdtemp(prefix="camflow-ray-train-"),
            # A lost worker (a node gone) restarts the worker group, whose loop resumes after
            # the last epoch whose state rank 0 saved in out_uri (camflow.train.resume).
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"distributed training into {storage.redact(out_uri)} failed") from result.error
    with storage.open_uri(storage.join(out_uri, HISTORY), "rb", storage_options) as f:
        summary = json.load(f)
    best_epoch = summary["best_epoch"]
    return TrainResult(
        checkpoint_uri=storage.join(out_uri, BEST_CHECKPOINT),
        best_epoch=best_epoch,
        best_metrics=summary["best_metrics"],
        history=summary["history"],
        step_losses=summary["step_losses"],
        elapsed_s=summary["elapsed_s"],
        num_train=summary["num_train"],
        data_hash=summary["data_hash"],
        rejects=[tuple(r) for r in summary["rejects"]],
    )
