"""Model files of camflow's dense models (AffinityNet, the segmentation model): safetensors
weights and, under one header key per kind, the JSON that rebuilds the model, prepares its
images and says how it was trained. Never pickled; every error names the file."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from camflow import storage
from camflow.data.transforms import ImagePrep
from camflow.tensorfile import HeaderError, header_bytes, read_header

__all__ = ["load_model_file", "read_model_meta", "save_model_file"]


def save_model_file(model: nn.Module, uri: str, key: str, header: Mapping[str, Any], *,
                    storage_options: Mapping[str, Any] | None = None) -> None:
    """``model``'s weights and ``header`` (plus its ``image_prep``, when it has one)."""
    doc = dict(header)
    if getattr(model, "image_prep", None) is not None:
        doc["image_prep"] = model.image_prep.to_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors(tensors, metadata={key: json.dumps(doc, sort_keys=True)})
    storage.write_bytes(data, uri, storage_options)


def _meta(data: bytes, key: str, what: str, uri: str) -> dict[str, Any]:
    try:
        text = (read_header(data).get("__metadata__") or {}).get(key)
    except HeaderError as exc:
        raise ValueError(f"{storage.redact(uri)}: not a safetensors file ({exc})") from exc
    if text is None:
        raise ValueError(f"{storage.redact(uri)}: not a camflow {what} (no {key})")
    return json.loads(text)


def read_model_meta(uri: str, key: str, *, storage_options: Mapping[str, Any] | None = None
                    ) -> dict[str, Any] | None:
    """The file's JSON from its header alone; None where there is no such file."""
    if not storage.exists(uri, storage_options):
        return None
    with storage.open_uri(uri, "rb", storage_options) as f:
        head = header_bytes(f)
    try:
        return _meta(head, key, "model file", uri)
    except ValueError:
        return None


def load_model_file(uri: str, key: str, what: str, build: Callable[[dict[str, Any]], nn.Module],
                    *, storage_options: Mapping[str, Any] | None = None
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """``build(meta)`` with the file's weights (eval mode, image prep restored), and the JSON."""
    try:
        with storage.open_uri(uri, "rb", storage_options) as f:
            data = f.read()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no {what} at {storage.redact(uri)}") from err
    meta = _meta(data, key, what, uri)
    model = build(meta)
    try:
        model.load_state_dict(load_safetensors(data))
    except (SafetensorError, RuntimeError) as exc:
        raise ValueError(f"{storage.redact(uri)}: weights do not fit the model it describes "
                         f"({exc})") from exc
    if "image_prep" in meta:
        model.image_prep = ImagePrep.from_dict(meta["image_prep"])
    return model.eval(), meta
