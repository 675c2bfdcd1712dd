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
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.numpy

from camflow import storage
from camflow.bls.errors import BLSFormatError
from camflow.bls.solve import Solution
from camflow.bls.stats import Moments
from camflow.tensorfile import HeaderError, read_header

__all__ = ["FORMAT_VERSION", "BLSFile", "read_bls_file", "write_bls_file"]

FORMAT_VERSION = 1
_META_KEY = "camflow.bls"
_STATS_PREFIX = "stats."


@dataclass(frozen=True)
class BLSFile:
    """What a BLS file holds: hyper-parameters, the solution and (optionally) the statistics.

    ``camflow.bls.BLS.save`` / ``BLS.load`` convert to and from the estimator; this module does
    not know the estimator, so the two stay one-directional.
    """

    alpha: float
    step: int
    enhance: bool
    solution: Solution
    moments: Moments | None
    feature_layout: list[tuple[str, int]] | None
    n_samples: int


def write_bls_file(
    content: BLSFile, uri: str, *, storage_options: dict[str, Any] | None = None
) -> None:
    """Write ``content`` to ``uri`` atomically: the file is complete or absent."""
    solution = content.solution
    coef = solution.coef
    tensors = {
        "coef": coef,
        "intercept": solution.intercept,
        "preliminary_coef": solution.preliminary_coef,
        "enhancement_weights": solution.enhancement_weights,
        "node_classes": solution.node_classes.astype(np.int64),
        "constant_features": solution.constant_features.astype(np.uint8),
    }
    stats = content.moments.to_arrays() if content.moments is not None else {}
    tensors.update({_STATS_PREFIX + k: v for k, v in stats.items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "alpha": content.alpha,
        "step": content.step,
        "enhance": content.enhance,
        "n_features": int(coef.shape[0]),
        "n_classes": int(coef.shape[1]),
        "n_samples": int(content.n_samples),
        "nodes_per_class": int(solution.nodes_per_class),
        "feature_layout": content.feature_layout,
        "has_stats": bool(stats),
    }
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    data = safetensors.numpy.save(tensors, metadata={_META_KEY: json.dumps(meta)})
    storage.write_bytes(data, uri, storage_options=storage_options)


def _header(data: bytes, where: str) -> dict[str, Any]:
    try:
        return read_header(data)
    except HeaderError as exc:
        raise BLSFormatError(f"{where}: not a safetensors file ({exc})") from None


def _expect(tensors: dict[str, np.ndarray], key: str, shape: tuple[int, ...], where: str) -> None:
    if key not in tensors:
        raise BLSFormatError(f"{where}: tensor {key!r} is missing")
    if tuple(tensors[key].shape) != shape:
        raise BLSFormatError(f"{where}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                             f"expected {shape}")


def read_bls_file(uri: str, *, storage_options: dict[str, Any] | None = None) -> BLSFile:
    """Read a file written by :func:`write_bls_file`; :class:`BLSFormatError` names the file."""
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
        params = (float(meta["alpha"]), int(meta["step"]), bool(meta["enhance"]))
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

    solution = Solution(
        coef=tensors["coef"].astype(np.float64),
        intercept=tensors["intercept"].astype(np.float64),
        preliminary_coef=tensors["preliminary_coef"].astype(np.float64),
        enhancement_weights=tensors["enhancement_weights"].astype(np.float64),
        node_classes=tensors["node_classes"].astype(np.int64),
        nodes_per_class=k,
        constant_features=tensors["constant_features"].astype(bool),
    )
    stats = {k[len(_STATS_PREFIX):]: v for k, v in tensors.items() if k.startswith(_STATS_PREFIX)}
    moments = None
    if stats:
        try:
            moments = Moments.from_arrays(stats, source=where)
        except ValueError as exc:
            raise BLSFormatError(str(exc)) from None
        if (moments.n_features, moments.n_classes) != (d, c):
            raise BLSFormatError(f"{where}: stored statistics are for {moments.n_features} "
                                 f"features x {moments.n_classes} classes, the model for {d} x {c}")
    layout = meta.get("feature_layout")
    if layout is not None:
        layout = [(str(name), int(width)) for name, width in layout]
        if sum(w for _, w in layout) != d:
            raise BLSFormatError(f"{where}: feature_layout widths sum to "
                                 f"{sum(w for _, w in layout)}, not {d}")
    alpha, step, enhance = params
    return BLSFile(alpha, step, enhance, solution, moments, layout,
                   int(meta.get("n_samples", 0)))
