"""BLS files: one safetensors file whose header carries JSON metadata with a format version.

Tensors: ``coef`` (d x C), ``intercept`` (C), ``preliminary_coef`` (d x C), ``enhancement_weights``
(d x m), ``node_classes`` (m), ``constant_features`` (d), and with ``include_stats`` the sums
``stats.n``, ``stats.sum_x``, ``stats.sum_y``, ``stats.scatter_xx``, ``stats.scatter_xy`` that let
a model be re-solved with other hyper-parameters. Metadata (JSON under the ``camflow.bls`` key):
format_version, alpha, step, enhance, n_features, n_classes, n_samples, nodes_per_class,
feature_layout ([[layer, width], ...] or null) and has_stats.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import safetensors.numpy

from camflow import storage
from camflow.bls.errors import BLSFormatError
from camflow.bls.estimator import BLS
from camflow.bls.solve import Solution
from camflow.bls.stats import Moments

__all__ = ["FORMAT_VERSION", "load_bls", "save_bls"]

FORMAT_VERSION = 1
_META_KEY = "camflow.bls"
_STATS_PREFIX = "stats."


def save_bls(
    bls: BLS,
    uri: str,
    *,
    include_stats: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Write ``bls`` (fitted) to ``uri`` atomically: the file is complete or absent."""
    coef = bls.coef_  # raises NotFittedError on an unfitted model
    solution = bls._solution
    tensors = {
        "coef": coef,
        "intercept": solution.intercept,
        "preliminary_coef": solution.preliminary_coef,
        "enhancement_weights": solution.enhancement_weights,
        "node_classes": solution.node_classes.astype(np.int64),
        "constant_features": solution.constant_features.astype(np.uint8),
    }
    stats = bls.state() if include_stats else {}
    tensors.update({_STATS_PREFIX + k: v for k, v in stats.items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "alpha": bls.alpha,
        "step": bls.step,
        "enhance": bls.enhance,
        "n_features": int(coef.shape[0]),
        "n_classes": int(coef.shape[1]),
        "n_samples": int(bls.n_samples_),
        "nodes_per_class": int(solution.nodes_per_class),
        "feature_layout": bls.feature_layout,
        "has_stats": bool(stats),
    }
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    data = safetensors.numpy.save(tensors, metadata={_META_KEY: json.dumps(meta)})
    storage.write_bytes(data, uri, storage_options=storage_options)


def _header(data: bytes, where: str) -> dict[str, Any]:
    # safetensors layout: u64 little-endian header size, then that many bytes of JSON.
    if len(data) < 8:
        raise BLSFormatError(f"{where}: not a safetensors file (only {len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise BLSFormatError(f"{where}: not a safetensors file (header size {size} exceeds file)")
    try:
        return json.loads(data[8 : 8 + size])
    except ValueError as exc:
        raise BLSFormatError(f"{where}: not a safetensors file ({exc})") from None


def _expect(tensors: dict[str, np.ndarray], key: str, shape: tuple[int, ...], where: str) -> None:
    if key not in tensors:
        raise BLSFormatError(f"{where}: tensor {key!r} is missing")
    if tuple(tensors[key].shape) != shape:
        raise BLSFormatError(f"{where}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                             f"expected {shape}")


def load_bls(uri: str, *, storage_options: dict[str, Any] | None = None) -> BLS:
    """Read a BLS written by :func:`save_bls`; raises :class:`BLSFormatError` naming the file."""
    where = f"BLS file {storage.redact(uri)}"
    with storage.open_uri(uri, "rb", storage_options=storage_options) as f:
        data = f.read()
    header = _header(data, where)
    raw_meta = (header.get("__metadata__") or {}).get(_META_KEY)
    if raw_meta is None:
        raise BLSFormatError(f"{where}: no {_META_KEY!r} metadata; not a camflow BLS file")
    meta = json.loads(raw_meta)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BLSFormatError(f"{where}: format version {version!r}, this camflow reads version "
                             f"{FORMAT_VERSION}")
    try:
        d, c = int(meta["n_features"]), int(meta["n_classes"])
        k = int(meta["nodes_per_class"])
        bls = BLS(alpha=meta["alpha"], step=meta["step"], enhance=meta["enhance"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BLSFormatError(f"{where}: bad metadata ({exc})") from None
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as exc:  # the library raises its own error types for corrupt payloads
        raise BLSFormatError(f"{where}: unreadable tensors ({exc})") from None

    m = tensors["node_classes"].shape[0] if "node_classes" in tensors else 0
    for key, shape in {
        "coef": (d, c),
        "intercept": (c,),
        "preliminary_coef": (d, c),
        "enhancement_weights": (d, m),
        "node_classes": (m,),
        "constant_features": (d,),
    }.items():
        _expect(tensors, key, shape, where)
    if k and m % k:
        raise BLSFormatError(f"{where}: {m} enhancement nodes is not a multiple of "
                             f"nodes_per_class={k}")

    bls._solution = Solution(
        coef=tensors["coef"].astype(np.float64),
        intercept=tensors["intercept"].astype(np.float64),
        preliminary_coef=tensors["preliminary_coef"].astype(np.float64),
        enhancement_weights=tensors["enhancement_weights"].astype(np.float64),
        node_classes=tensors["node_classes"].astype(np.int64),
        nodes_per_class=k,
        constant_features=tensors["constant_features"].astype(bool),
    )
    stats = {k[len(_STATS_PREFIX):]: v for k, v in tensors.items() if k.startswith(_STATS_PREFIX)}
    if stats:
        try:
            moments = Moments.from_arrays(stats, source=where)
        except ValueError as exc:
            raise BLSFormatError(str(exc)) from None
        if (moments.n_features, moments.n_classes) != (d, c):
            raise BLSFormatError(f"{where}: stored statistics are for {moments.n_features} "
                                 f"features x {moments.n_classes} classes, the model for {d} x {c}")
        bls._moments = moments
    layout = meta.get("feature_layout")
    if layout is not None:
        bls.feature_layout = [(str(name), int(width)) for name, width in layout]
        if sum(w for _, w in bls.feature_layout) != d:
            raise BLSFormatError(f"{where}: feature_layout widths sum to "
                                 f"{sum(w for _, w in bls.feature_layout)}, not {d}")
    return bls
