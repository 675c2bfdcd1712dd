"""AffinityNet checkpoints (``camflow.modelfile``): the weights, and the JSON that rebuilds the
net (backbone name, image preparation) and says how it was trained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from camflow.modelfile import load_model_file, read_model_meta, save_model_file
from camflow.refine.affinity import AffinityNet

__all__ = ["load_affinity", "read_affinity_meta", "save_affinity"]

_META_KEY = "camflow.affinity"


def save_affinity(net: AffinityNet, uri: str, meta: Mapping[str, Any] | None = None, *,
                  storage_options: Mapping[str, Any] | None = None) -> None:
    save_model_file(net, uri, _META_KEY, {**dict(meta or {}), "backbone": net.backbone_name,
                                        "stride": net.stride},
                    storage_options=storage_options)


def read_affinity_meta(uri: str, *, storage_options: Mapping[str, Any] | None = None
                       ) -> dict[str, Any] | None:
    """The checkpoint's JSON, or None when there is no file at ``uri``."""
    return read_model_meta(uri, _META_KEY, storage_options=storage_options)


def load_affinity(uri: str, *, storage_options: Mapping[str, Any] | None = None
                  ) -> tuple[AffinityNet, dict[str, Any]]:
    return load_model_file(uri, _META_KEY, "affinity checkpoint",
                           # Files written before the stride was recorded are stride 8.
                           lambda meta: AffinityNet(meta["backbone"],
                                                   stride=int(meta.get("stride", 8))),
                           storage_options=storage_options)
