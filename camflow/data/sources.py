"""Which dataset a run reads, as a typed option, and its splits as manifests.

``DataOptions`` is the run configuration's ``data`` section itself; ``read_split`` turns one of
its splits into a manifest table, whatever the dataset's layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from camflow import storage
from camflow.data import embedded
from camflow.data.bcss import read_bcss
from camflow.data.manifest import class_names, read_manifest
from camflow.data.rejects import Rejects
from camflow.data.voc import read_voc
from camflow.data.wsol import read_wsol

__all__ = ["DataOptions", "Kind", "read_split", "split_classes"]

Kind = Literal["embedded", "voc", "bcss", "wsol", "manifest"]


@dataclass(frozen=True)
class DataOptions:
    """The dataset of a run: its ``kind`` and where it lies, its split names, the image side the
    models see, and for the embedded benchmark its seed and sizes.

    ``root`` defaults, for the embedded benchmark only, to ``<output>/data/embedded`` (built once
    and shared by the runs there); ``manifest`` is a manifest Parquet file (``kind="manifest"``).
    """

    kind: Kind = "embedded"
    root: str | None = None
    manifest: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 112
    seed: int = 0
    embedded_train: int = 2000
    embedded_val: int = 500

    def __post_init__(self) -> None:
        if self.kind not in ("embedded", "voc", "bcss", "wsol", "manifest"):
            raise ValueError(f"unknown data kind {self.kind!r}")
        if self.kind in ("voc", "bcss", "wsol") and not self.root:
            raise ValueError(f"data.root is required for data.kind={self.kind!r}")
        if self.kind == "manifest" and not self.manifest:
            raise ValueError("data.manifest is required for data.kind='manifest'")
        if not 16 <= self.image_size <= 2048:
            raise ValueError(f"data.image_size must lie in [16, 2048], got {self.image_size}")
        if min(self.embedded_train, self.embedded_val) < 10:
            raise ValueError("data.embedded_train and data.embedded_val must be >= 10, got "
                             f"{self.embedded_train} and {self.embedded_val}")


def read_split(options: DataOptions, root: str, split: str, rejects: Rejects) -> pa.Table:
    """The manifest of ``split``; records that fail validation go to ``rejects``."""
    if options.kind in ("embedded", "voc"):
        return read_voc(root, split, rejects=rejects)
    if options.kind == "bcss":
        return read_bcss(root, split, rejects=rejects)
    if options.kind == "wsol":
        return read_wsol(f"{root}/metadata/{split}", root, split=split, rejects=rejects)
    table = read_manifest(options.manifest)
    return table.filter(pc.equal(table["split"], split))


def split_classes(table: pa.Table, options: DataOptions, root: str) -> list[str]:
    """The class names of a split's manifest (the embedded benchmark's own where it has none)."""
    names = class_names(table)
    if names:
        return names
    if options.kind == "embedded":
        return list(embedded.CLASSES)
    source = options.manifest if options.kind == "manifest" else root
    raise ValueError(f"the {options.kind} dataset {storage.redact(str(source))} names no classes: "
                     "its manifest needs class names (camflow.data.manifest.with_classes adds them)")
