"""The machine-wide cache of source-pretrained backbones: built on first use, then reused.

An entry is a folder ``<cache>/backbones/<backbone>-<key>/`` holding ``<backbone>.safetensors``
and its card. The key hashes everything that determines the weights (the recipe, the source
benchmark's parameters and format, the pretraining code's version, the torch release, the
device and its mixed precision). An entry
is built in a hidden sibling folder and renamed into place, so it is either whole or absent; a
lock file makes a second process that wants the same entry wait for the first instead of
training twice. An entry whose weights do not match its card is corrupt: it is rebuilt, never used.

The cache folder is ``$CAMFLOW_CACHE``, else ``$XDG_CACHE_HOME/camflow``, else ``~/.cache/camflow``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch

from camflow.models.pretrained import card_uri, check_card, read_card
from camflow.precision import autocast_dtype, default_device
from camflow.pretrain.recipe import PRETRAIN_VERSION, PretrainConfig, pretrain

__all__ = ["cache_dir", "cache_key", "embedded_backbone", "entry_dir"]

log = logging.getLogger("camflow.pretrain")


def cache_dir() -> Path:
    """The cache root (not created)."""
    if os.environ.get("CAMFLOW_CACHE"):
        return Path(os.environ["CAMFLOW_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "camflow"


def cache_key(config: PretrainConfig) -> str:
    """16 hex digits over everything that determines the weights ``config`` gives."""
    release = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    # The device and its mixed precision change the weights too (bfloat16 on CPUs with AMX,
    # float16 on CUDA): a cache shared between machines must not mix them.
    device = default_device()  # where pretrain() trains
    dtype = autocast_dtype(device, config.train_config().amp)
    payload = {"config": config.to_dict(), "pretrain_version": PRETRAIN_VERSION, "torch": release,
               "compute": f"{device.type}:{dtype}"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def entry_dir(config: PretrainConfig) -> Path:
    return cache_dir() / "backbones" / f"{config.backbone}-{cache_key(config)}"


def _weights(entry: Path, config: PretrainConfig) -> Path:
    return entry / f"{config.backbone}.safetensors"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if this process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _problem(entry: Path, config: PretrainConfig) -> str | None:
    """Why the entry cannot be used (None when it can); a missing entry is 'absent'."""
    weights = _weights(entry, config)
    if not entry.exists():
        return "absent"
    try:
        card = read_card(card_uri(str(weights)))
        if card is None:
            return "its card is missing"
        if card.get("cache_key") != cache_key(config):
            return "its card belongs to another key"
        check_card(card, weights.read_bytes(), str(weights), config.backbone)
    except (OSError, ValueError) as err:
        return str(err)
    return None


def embedded_backbone(
    backbone: str = "resnet18", config: PretrainConfig | None = None, *, progress: bool = False
) -> str:
    """The path of the source-pretrained ``backbone`` weights, pretraining them on first use.

    ``config`` defaults to the standard recipe for ``backbone``. Safe to call from several
    processes at once: one builds, the others wait and reuse its entry.
    """
    config = config or PretrainConfig(backbone=backbone)
    if config.backbone != backbone:
        raise ValueError(f"backbone {backbone!r} differs from the config's {config.backbone!r}")
    entry = entry_dir(config)
    with _locked(entry.parent / f".{entry.name}.lock"):
        problem = _problem(entry, config)
        if problem is None:
            log.info("reusing the pretrained %s backbone in %s", backbone, entry)
            return str(_weights(entry, config))
        if problem != "absent":
            log.warning("the cached backbone %s is corrupt (%s): rebuilding it", entry, problem)
            _remove(entry)
        log.info("pretraining the %s backbone on the source benchmark (once per machine) -> %s",
                 backbone, entry)
        staging = entry.parent / f".{entry.name}.building-{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True)
        try:
            pretrain(config, str(_weights(staging, config)), progress=progress,
                     extra_card={"cache_key": cache_key(config)})
            staging.rename(entry)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return str(_weights(entry, config))


def _remove(entry: Path) -> None:
    trash = entry.parent / f".{entry.name}.corrupt-{uuid.uuid4().hex[:12]}"
    entry.rename(trash)  # out of the way at once, even if the deletion below is slow
    shutil.rmtree(trash, ignore_errors=True)
