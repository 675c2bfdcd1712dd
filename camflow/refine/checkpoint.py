"""AffinityNet checkpoints: safetensors weights, and in their header the JSON that rebuilds the
net (backbone name, image preparation) and says how it was trained. Never pickled."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from camflow import storage
from camflow.data.transforms import ImagePrep
from camflow.refine.affinity import AffinityNet
from camflow.tensorfile import HeaderError, read_header

__all__ = ["load_affinity", "read_affinity_meta", "save_affinity"]

_META_KEY = "camflow.affinity"


def save_affinity(net: AffinityNet, uri: str, meta: Mapping[str, Any] | None = None, *,
                  storage_options: Mapping[str, Any] | None = None) -> None:
    header = {**dict(meta or {}), "backbone": net.backbone_name}
    if net.image_prep is not None:
        header["image_prep"] = net.image_prep.to_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    data = save_safetensors(tensors, metadata={_META_KEY: json.dumps(header, sort_keys=True)})
    storage.write_bytes(data, uri, storage_options)


def _read(uri: str, storage_options: Mapping[str, Any] | None) -> bytes:
    with storage.open_uri(uri, "rb", storage_options) as f:
        return f.read()


def _meta(data: bytes, uri: str) -> dict[str, Any]:
    try:
        text = (read_header(data).get("__metadata__") or {}).get(_META_KEY)
    except HeaderError as exc:
        raise ValueError(f"{storage.redact(uri)}: not an affinity checkpoint ({exc})") from exc
    if text is None:
        raise ValueError(f"{storage.redact(uri)}: not an affinity checkpoint (no {_META_KEY})")
    return json.loads(text)


def read_affinity_meta(uri: str, *, storage_options: Mapping[str, Any] | None = None
                       ) -> dict[str, Any] | None:
    """The checkpoint's JSON, or None when there is no file at ``uri``."""
    if not storage.exists(uri, storage_options):
        return None
    return _meta(_read(uri, storage_options), uri)


def load_affinity(uri: str, *, storage_options: Mapping[str, Any] | None = None
                  ) -> tuple[AffinityNet, dict[str, Any]]:
    data = _read(uri, storage_options)
    meta = _meta(data, uri)
    net = AffinityNet(meta["backbone"])
    try:
        net.load_state_dict(load_safetensors(data))
    except (SafetensorError, RuntimeError) as exc:
        raise ValueError(f"{storage.redact(uri)}: unreadable affinity weights ({exc})") from exc
    if "image_prep" in meta:
        net.image_prep = ImagePrep.from_dict(meta["image_prep"])
    return net.eval(), meta
