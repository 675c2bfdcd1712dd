"""Segmentation checkpoints (``camflow.modelfile``): the weights, and the JSON that rebuilds the
model (``spec``), prepares its images and names its classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from camflow.modelfile import load_model_file, read_model_meta, save_model_file
from camflow.segment.model import build_segmenter

__all__ = ["load_segmenter", "read_segmenter_meta", "save_segmenter"]

_META_KEY = "camflow.segmenter"


def save_segmenter(model: nn.Module, uri: str, meta: Mapping[str, Any] | None = None, *,
                   storage_options: Mapping[str, Any] | None = None) -> None:
    save_model_file(model, uri, _META_KEY, {**dict(meta or {}), "model": dict(model.spec)},
                    storage_options=storage_options)


def _build(meta: dict[str, Any]) -> nn.Module:
    spec = meta["model"]
    return build_segmenter(spec["backbone"], spec["num_labels"], output_stride=spec["output_stride"])


def load_segmenter(uri: str, *, storage_options: Mapping[str, Any] | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """The model and the checkpoint's JSON; ValueError naming ``uri`` for anything else."""
    return load_model_file(uri, _META_KEY, "segmentation checkpoint", _build,
                           storage_options=storage_options)


def read_segmenter_meta(uri: str, *, storage_options: Mapping[str, Any] | None = None
                        ) -> dict[str, Any] | None:
    """The checkpoint's JSON from its header alone, or None when there is no such checkpoint."""
    return read_model_meta(uri, _META_KEY, storage_options=storage_options)
