"""Segmentation checkpoints: safetensors weights, and in their header the JSON that rebuilds the
model (``spec``), prepares its images and names its classes. Never pickled."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from camflow import storage
from camflow.data.transforms import ImagePrep
from camflow.segment.model import build_segmenter
from camflow.tensorfile import HeaderError, header_bytes, read_header

__all__ = ["load_segmenter", "read_segmenter_meta", "save_segmenter"]

_META_KEY = "camflow.segmenter"


def save_segmenter(model: nn.Module, uri: str, meta: Mapping[str, Any] | None = None, *,
                   storage_options: Mapping[str, Any] | None = None) -> None:
    header = {**dict(meta or {}), "model": dict(model.spec)}
    if getattr(model, "image_prep", None) is not None:
        header["image_prep"] = model.image_prep.to_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors(tensors, metadata={_META_KEY: json.dumps(header, sort_keys=True)})
    storage.write_bytes(data, uri, storage_options)


def load_segmenter(uri: str, *, storage_options: Mapping[str, Any] | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode, image prep restored) and the checkpoint's JSON; ValueError naming
    ``uri`` for anything that is not a camflow segmentation checkpoint."""
    where = storage.redact(uri)
    try:
        with storage.open_uri(uri, "rb", storage_options) as f:
            data = f.read()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no segmentation checkpoint at {where}") from err
    try:
        text = (read_header(data).get("__metadata__") or {}).get(_META_KEY)
    except HeaderError as exc:
        raise ValueError(f"{where}: not a safetensors file ({exc})") from exc
    if text is None:
        raise ValueError(f"{where}: not a camflow segmentation checkpoint (no {_META_KEY})")
    meta = json.loads(text)
    spec = meta["model"]
    model = build_segmenter(spec["backbone"], spec["num_labels"],
                            output_stride=spec["output_stride"])
    try:
        model.load_state_dict(load_safetensors(data))
    except (SafetensorError, RuntimeError) as exc:
        raise ValueError(f"{where}: weights do not fit the model it describes ({exc})") from exc
    if "image_prep" in meta:
        model.image_prep = ImagePrep.from_dict(meta["image_prep"])
    return model.eval(), meta


def read_segmenter_meta(uri: str, *, storage_options: Mapping[str, Any] | None = None
                        ) -> dict[str, Any] | None:
    """The checkpoint's JSON from its header alone, or None when there is no such checkpoint."""
    if not storage.exists(uri, storage_options):
        return None
    with storage.open_uri(uri, "rb", storage_options) as f:
        head = header_bytes(f)
    try:
        text = (read_header(head).get("__metadata__") or {}).get(_META_KEY)
    except HeaderError:
        return None
    return None if text is None else json.loads(text)
