"""Model checkpoints: one safetensors object whose header carries the JSON metadata.

Keeping tensors and metadata in one object means one atomic write and no sidecar that can drift
out of sync. The header is plain JSON (``__metadata__["camflow"]``), so :func:`read_checkpoint_meta`
reads it without touching the tensors. Files go through fsspec (local paths or ``s3://``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from camflow import storage
from camflow.data.transforms import ImagePrep
from camflow.models.classifier import build
from camflow.tensorfile import HeaderError, header_bytes, read_header

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "init_from_checkpoint",
    "load_checkpoint",
    "load_weights_into",
    "read_checkpoint_meta",
    "save_checkpoint",
]

FORMAT_VERSION = 1
_META_KEY = "camflow"
_ARCH_KEYS = ("name", "num_classes", "head", "output_stride")


class CheckpointError(ValueError):
    """A checkpoint that is unreadable, not camflow's, or does not fit the model."""


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel (and similar wrappers) keep the real model in .module.
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def save_checkpoint(
    model: nn.Module,
    uri: str,
    meta: Mapping[str, Any] | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model``'s weights and ``meta`` (classes, proportion, seed, metrics, data hash...)."""
    model = _unwrap(model)
    spec = getattr(model, "spec", None)
    if not spec:
        raise CheckpointError(
            f"cannot checkpoint {type(model).__name__} to {storage.redact(uri)}: "
            "build it with camflow.models.build() or wrap() so it carries its architecture"
        )
    header = {**dict(meta or {}), "model": dict(spec), "format_version": FORMAT_VERSION}
    prep = getattr(model, "image_prep", None)
    if prep is not None:
        header["image_prep"] = prep.to_dict()
    try:
        text = json.dumps(header, sort_keys=True)
    except TypeError as err:
        raise CheckpointError(f"checkpoint metadata for {storage.redact(uri)} is not JSON: {err}") from err
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors(tensors, metadata={_META_KEY: text})
    storage.write_bytes(data, uri, storage_options)


def _parse_meta(raw_header: dict[str, Any], uri: str) -> dict[str, Any]:
    text = (raw_header.get("__metadata__") or {}).get(_META_KEY)
    if text is None:
        raise CheckpointError(f"{storage.redact(uri)} is a safetensors file but not a camflow checkpoint")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{storage.redact(uri)}: checkpoint metadata is not valid JSON ({err})") from err
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{storage.redact(uri)}: checkpoint format version {version!r} is not supported "
            f"(this camflow reads versions 1..{FORMAT_VERSION})"
        )
    if not isinstance(meta.get("model"), dict) or any(k not in meta["model"] for k in _ARCH_KEYS):
        raise CheckpointError(f"{storage.redact(uri)}: checkpoint metadata lacks the model architecture")
    return meta


def _read_header(data: bytes, uri: str) -> dict[str, Any]:
    try:
        return read_header(data)
    except HeaderError as err:
        raise CheckpointError(f"{storage.redact(uri)} is not a safetensors checkpoint: {err}") from err


def _read(uri: str, storage_options: Mapping[str, Any] | None) -> bytes:
    try:
        with storage.open_uri(uri, "rb", storage_options) as f:
            return f.read()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no checkpoint at {storage.redact(uri)}") from err


def read_checkpoint_meta(uri: str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata of a checkpoint, reading only its header."""
    try:
        with storage.open_uri(uri, "rb", storage_options) as f:
            head = header_bytes(f)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no checkpoint at {storage.redact(uri)}") from err
    return _parse_meta(_read_header(head, uri), uri)


def _check_state(model: nn.Module, state: Mapping[str, torch.Tensor], uri: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if extra:
        problems.append(f"{len(extra)} unexpected keys (e.g. {extra[:3]})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:3]})")
    if problems:
        raise CheckpointError(f"{storage.redact(uri)} does not fit the model: " + "; ".join(problems))


def _load(uri: str, storage_options, map_location) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    data = _read(uri, storage_options)
    meta = _parse_meta(_read_header(data, uri), uri)
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{storage.redact(uri)} holds corrupt tensor data ({err})") from err
    if map_location is not None:
        state = {k: v.to(map_location) for k, v in state.items()}
    return state, meta


def load_weights_into(
    model: nn.Module,
    uri: str,
    *,
    map_location: str | torch.device | None = "cpu",
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load checkpoint weights into an existing ``model`` after full validation; returns the meta."""
    state, meta = _load(uri, storage_options, map_location)
    target = _unwrap(model)
    spec = getattr(target, "spec", None) or {}
    differing = [k for k in _ARCH_KEYS if k in spec and spec[k] != meta["model"].get(k)]
    if differing:
        detail = ", ".join(f"{k}: checkpoint {meta['model'].get(k)!r} vs model {spec[k]!r}" for k in differing)
        raise CheckpointError(f"{storage.redact(uri)} was saved for another architecture ({detail})")
    _check_state(target, state, uri)
    target.load_state_dict(state, strict=True)
    return meta


def init_from_checkpoint(
    model: nn.Module,
    uri: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Start ``model`` from a checkpoint of the same backbone that may lack some of its heads.

    For a second training stage such as ReCAM's: a ``recam`` model starts from a ``gap``
    checkpoint, whose stages and main head it takes, and only ``recam_head`` starts fresh.
    Every tensor of the checkpoint must fit; the model may have extra head tensors only.
    """
    state, meta = _load(uri, storage_options, "cpu")
    target = _unwrap(model)
    spec = getattr(target, "spec", None) or {}
    differing = [k for k in ("name", "num_classes", "output_stride")
                 if k in spec and spec[k] != meta["model"].get(k)]
    if differing:
        detail = ", ".join(f"{k}: checkpoint {meta['model'].get(k)!r} vs model {spec[k]!r}" for k in differing)
        raise CheckpointError(f"{storage.redact(uri)} was saved for another architecture ({detail})")
    expected = target.state_dict()
    fresh = {k for k in expected if k not in state}
    if any(not k.startswith("recam_head.") for k in fresh):
        _check_state(target, state, uri)  # names what is missing
    _check_state(target, {**state, **{k: expected[k] for k in fresh}}, uri)
    target.load_state_dict(state, strict=False)
    return meta


def load_checkpoint(
    uri: str,
    *,
    map_location: str | torch.device = "cpu",
    model: nn.Module | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was saved from and load its weights: ``(model, meta)``.

    Models made with ``wrap()`` cannot be rebuilt from metadata: pass the freshly wrapped ``model``.
    """
    if model is None:
        meta = read_checkpoint_meta(uri, storage_options=storage_options)
        arch = meta["model"]
        if arch.get("wrapped"):
            raise CheckpointError(
                f"{storage.redact(uri)} holds a wrapped custom model; pass model=wrap(...) to load it"
            )
        try:
            model = build(
                arch["name"], arch["num_classes"], head=arch["head"],
                output_stride=arch["output_stride"], tau=arch.get("tau", 0.1),
            )
        except ValueError as err:
            raise CheckpointError(f"{storage.redact(uri)}: cannot rebuild its model ({err})") from err
        model.spec["pretrained"] = arch.get("pretrained", False)
    meta = load_weights_into(model, uri, map_location=map_location, storage_options=storage_options)
    if "image_prep" in meta:
        try:
            model.image_prep = ImagePrep.from_dict(meta["image_prep"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{storage.redact(uri)}: bad image_prep ({err})") from err
    model.to(map_location)
    model.eval()
    return model, meta
