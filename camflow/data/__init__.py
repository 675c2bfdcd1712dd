"""camflow's data layer: the embedded benchmark, dataset readers, manifests, subsets, Dataset.

Submodules (import what you need; nothing heavy is imported by this package itself):

- ``embedded``: build the embedded VOC-layout benchmark (``python -m camflow.data.embedded``);
- ``manifest``: ``MANIFEST_SCHEMA``, ``make_manifest``, ``read_manifest``/``write_manifest``;
- ``voc``, ``bcss``, ``wsol``: dataset readers producing manifests;
- ``images``: ``load_rgb`` (any source to 8-bit RGB) and ``BadImageError``;
- ``masks``: the label-mask convention and palette;
- ``rejects``: the ``Rejects`` collector (quarantined records);
- ``validate``: ``validate_manifest`` and the per-record checks;
- ``subsets``: deterministic stratified nested subsets;
- ``transforms`` / ``dataset``: ImageNet normalisation, ``ImagePrep`` and ``ManifestDataset``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BadImageError": "images",
    "load_rgb": "images",
    "MANIFEST_SCHEMA": "manifest",
    "make_manifest": "manifest",
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "class_names": "manifest",
    "Rejects": "rejects",
    "REJECTS_SCHEMA": "rejects",
    "read_voc": "voc",
    "read_bcss": "bcss",
    "read_wsol": "wsol",
    "validate_manifest": "validate",
    "PROPORTIONS": "subsets",
    "stratified_subset": "subsets",
    "take_subset": "subsets",
    "MEAN": "transforms",
    "STD": "transforms",
    "normalize": "transforms",
    "denormalize": "transforms",
    "ImagePrep": "transforms",
    "ManifestDataset": "dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m camflow.data.embedded` and `load_rgb` users do not pay for torch.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"camflow.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'camflow.data' has no attribute {name!r}")
