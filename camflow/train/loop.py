"""The training loop: one per-epoch routine shared by standalone runs and Ray Train workers.

``train()`` runs in-process by default. A distributed launcher (``cluster/train.py``) calls the
same function with a :class:`Runtime` that wraps the objective in DDP, shards the loader and
reports metrics; only rank 0 evaluates and writes checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from camflow import storage
from camflow.data.transforms import ImagePrep
from camflow.models.checkpoint import init_from_checkpoint, save_checkpoint
from camflow.models.classifier import CamClassifier, build
from camflow.precision import autocast_dtype, default_device
from camflow.train.config import TrainConfig
from camflow.train.data import (
    RobustItems,
    collate_skipping_rejects,
    data_hash,
    dataset_image_ids,
    dataset_labels,
    select_subset,
)
from camflow.train.metrics import classification_metrics
from camflow.train.objective import Objective
from camflow.train.optim import build_optimizer, build_scheduler
from camflow.train.resume import clear_state, fast_forward, load_state, save_state

__all__ = ["BEST_CHECKPOINT", "Runtime", "TrainResult", "evaluate", "seed_everything", "train"]

log = logging.getLogger("camflow.train")

BEST_CHECKPOINT = "best.safetensors"
HISTORY = "history.json"


def _identity(x):
    return x


@dataclass
class Runtime:
    """Where and how the loop runs. The default is one process on the best local device."""

    device: torch.device | None = None
    rank: int = 0
    world_size: int = 1
    prepare_model: Callable[[nn.Module], nn.Module] = _identity  # e.g. wrap in DDP
    prepare_loader: Callable[[DataLoader], DataLoader] = _identity  # e.g. add a DistributedSampler
    report: Callable[[dict[str, Any]], None] | None = None  # called once per epoch on every rank
    on_step: Callable[[int], None] | None = None  # called after every optimiser step (a progress bar)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    checkpoint_uri: str  # the kept checkpoint (config.keep: best val mAP, or the last epoch)
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, Any]]  # one record per epoch
    step_losses: list[float]  # this rank's training loss at every optimiser step
    elapsed_s: float
    num_train: int
    data_hash: str
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _default_threads(world_size: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, world_size))


def _device(runtime: Runtime) -> torch.device:
    if runtime.device is not None:
        return torch.device(runtime.device)
    return default_device()


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool):
    images = batch["image"].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["labels"].to(device, non_blocking=True).float()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
    channels_last: bool = False,
    amp: bool = False,
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """Validation metrics (mAP, F1 micro/macro, exact match, BCE loss) over ``loader``, and its
    rejects; ``amp``: in the device's mixed precision (always on CUDA)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    logits, labels, rejects = [], [], []
    for batch in loader:
        rejects.extend(batch.get("rejects", ()))
        if "image" not in batch:
            continue
        images, targets = _to_device(batch, device, channels_last)
        dtype = autocast_dtype(device, amp or device.type == "cuda")
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(images)
        logits.append(out.float().cpu())
        labels.append(targets.cpu())
    model.train(was_training)
    if not logits:
        raise ValueError("the validation set yielded no usable image")
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    metrics = classification_metrics(all_logits.numpy(), all_labels.numpy(), threshold)
    metrics["val_loss"] = float(nn.functional.binary_cross_entropy_with_logits(all_logits, all_labels))
    return metrics, rejects


def _loader(dataset: Dataset, config: TrainConfig, *, shuffle: bool, batch_size: int) -> DataLoader:
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        RobustItems(dataset),
        batch_size=batch_size,
        shuffle=shuffle,
        # A trailing batch of one image breaks batch norm; drop the remainder when training.
        drop_last=shuffle and len(dataset) > batch_size,
        num_workers=config.num_workers,
        collate_fn=collate_skipping_rejects,
        generator=generator,
        worker_init_fn=_seed_worker,
        persistent_workers=config.num_workers > 0,
    )


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    random.seed(seed)


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if labels.ndim != 2 or labels.shape[1] != num_classes:
        raise ValueError(
            f"the {what} has labels of shape {labels.shape} but the model head has {num_classes} "
            "classes (head/num_classes mismatch)"
        )


def _build_model(config: TrainConfig, num_classes: int) -> CamClassifier:
    model = build(
        config.model, num_classes, head=config.head, output_stride=config.output_stride,
        pretrained=False if config.init_checkpoint else config.pretrained, tau=config.tau,
    )
    if config.init_checkpoint:
        init_from_checkpoint(model, config.init_checkpoint)
    return model


def _run_epoch(objective, loader, optimizer, scheduler, scaler, device, config,
               on_step=None) -> tuple[list[float], list]:
    objective.train()
    losses, rejects = [], []
    for batch in loader:
        rejects.extend(batch.get("rejects", ()))
        if "image" not in batch:
            continue
        images, labels = _to_device(batch, device, config.channels_last)
        dtype = autocast_dtype(device, config.amp)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = objective(images, labels)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()}; lower TrainConfig.lr ({config.lr})")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(len(images))
    return losses, rejects


def train(
    config: TrainConfig,
    train_dataset: Dataset,
    val_dataset: Dataset,
    *,
    out_uri: str,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    runtime: Runtime | None = None,
    storage_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a classifier on ``config.proportion`` of ``train_dataset``; keep one checkpoint.

    The kept checkpoint is the best by val mAP (``config.keep="best"``) or the last epoch's
    (``"last"``: the validation set then only reports, it chooses nothing).

    Writes ``<out_uri>/best.safetensors`` (see camflow.models.checkpoint) and
    ``<out_uri>/history.json``. Items that fail to load are skipped and listed in the result.
    """
    config.validate()
    runtime = runtime or Runtime()
    device = _device(runtime)
    torch.set_num_threads(config.threads or _default_threads(runtime.world_size))
    started = time.monotonic()

    train_labels = dataset_labels(train_dataset)
    if num_classes is None:
        num_classes = len(classes) if classes is not None else int(train_labels.shape[-1])
    classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names given for num_classes={num_classes}")
    _check_labels(train_labels, num_classes, "training set")
    _check_labels(dataset_labels(val_dataset), num_classes, "validation set")
    if len(val_dataset) == 0:
        raise ValueError("the validation set is empty")

    indices = select_subset(train_labels, config.proportion, config.seed,
                            image_ids=dataset_image_ids(train_dataset))
    subset = Subset(train_dataset, indices.tolist())
    ids = dataset_image_ids(subset)
    fingerprint = data_hash(train_labels[indices], ids)

    seed_everything(config.seed)
    model = _build_model(config, num_classes).to(device)
    # Recorded in the checkpoint: BLS features and CAMs prepare images as validation did.
    model.image_prep = ImagePrep(config.image_size)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    objective = runtime.prepare_model(
        Objective(model, recam_weight=config.recam_weight, label_smoothing=config.label_smoothing)
    )
    train_loader = runtime.prepare_loader(
        _loader(subset, config, shuffle=True, batch_size=config.batch_size)
    )
    val_loader = _loader(
        val_dataset, config, shuffle=False, batch_size=config.eval_batch_size or 2 * config.batch_size
    )
    optimizer = build_optimizer(objective, config)
    steps_per_epoch = max(1, len(train_loader))
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if config.amp and device.type == "cuda" else None

    checkpoint_uri = storage.join(out_uri, BEST_CHECKPOINT)
    meta_base = {
        "classes": classes,
        "proportion": config.proportion,
        "seed": config.seed,
        "data_hash": fingerprint,
        "num_train": len(indices),
        "config": config.to_dict(),
    }
    history: list[dict[str, Any]] = []
    step_losses: list[float] = []
    rejects: list[tuple[str, str]] = []
    best_epoch, best_metrics, best_map = -1, {}, -1.0
    start_epoch = 0
    # A retry of this run (same config and data) goes on after its last epoch done.
    progress = load_state(out_uri, model, optimizer, meta_base, storage_options)
    if progress is not None:
        start_epoch = progress["epochs_done"]
        history, step_losses = progress["history"], progress["step_losses"]
        rejects = [tuple(r) for r in progress["rejects"]]
        best_epoch, best_metrics, best_map = (progress["best_epoch"], progress["best_metrics"],
                                              progress["best_map"])
        fast_forward(scheduler, start_epoch * steps_per_epoch)
        seed_everything(config.seed + start_epoch)
        log.info("resuming after epoch %d of %d (saved state in %s)", start_epoch - 1,
                 config.epochs, storage.redact(out_uri))
    log.info("training %s/%s on %d images (proportion %g), %d epochs, device %s, rank %d/%d",
             config.model, config.head, len(indices), config.proportion, config.epochs, device,
             runtime.rank, runtime.world_size)

    for epoch in range(start_epoch, config.epochs):
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        epoch_start = time.monotonic()
        losses, epoch_rejects = _run_epoch(objective, train_loader, optimizer, scheduler, scaler,
                                           device, config, runtime.on_step)
        rejects.extend(epoch_rejects)
        step_losses.extend(losses)
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_s": time.monotonic() - epoch_start,
        }
        due = (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1
        if runtime.is_chief and due:
            metrics, val_rejects = evaluate(
                model, val_loader, device=device, threshold=config.f1_threshold,
                channels_last=config.channels_last, amp=config.amp,
            )
            rejects.extend(val_rejects)
            record.update(metrics)
            last = epoch == config.epochs - 1
            if (metrics["mAP"] > best_map) if config.keep == "best" else last:
                best_map, best_epoch, best_metrics = metrics["mAP"], epoch, metrics
                save_checkpoint(
                    model, checkpoint_uri,
                    {**meta_base, "epoch": epoch, "metrics": metrics},
                    storage_options=storage_options,
                )
                record["checkpoint"] = checkpoint_uri
            log.info("epoch %d: loss %.4f  val mAP %.4f  F1 %.4f  (%.1fs)", epoch, record["train_loss"],
                     metrics["mAP"], metrics["f1_micro"], record["epoch_s"])
        elif runtime.is_chief:
            log.info("epoch %d: loss %.4f  (%.1fs)", epoch, record["train_loss"], record["epoch_s"])
        history.append(record)
        if runtime.is_chief and epoch < config.epochs - 1:
            save_state(out_uri, model, optimizer, {
                "epochs_done": epoch + 1, "history": history, "step_losses": step_losses,
                "rejects": rejects, "best_epoch": best_epoch, "best_metrics": best_metrics,
                "best_map": best_map}, meta_base, storage_options)
        if runtime.report is not None:
            runtime.report(record)

    elapsed = time.monotonic() - started
    if runtime.is_chief:
        summary = {"history": history, "best_epoch": best_epoch, "best_metrics": best_metrics,
                   "elapsed_s": elapsed, "step_losses": step_losses,
                   "rejects": sorted(dict(rejects).items()), **meta_base}
        storage.write_bytes(json.dumps(summary, indent=1, default=float).encode(),
                            storage.join(out_uri, HISTORY), storage_options)
        clear_state(out_uri, storage_options)
    for image_id, reason in dict(rejects).items():
        log.warning("skipped image %s: %s", image_id, reason)
    return TrainResult(
        checkpoint_uri=checkpoint_uri,
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        history=history,
        step_losses=step_losses,
        elapsed_s=elapsed,
        num_train=len(indices),
        data_hash=fingerprint,
        rejects=sorted(dict(rejects).items()),
    )
