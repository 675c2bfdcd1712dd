"""The image manifest: one row per image, the single input format of every pipeline stage.

Columns (``MANIFEST_SCHEMA``):

- ``image_id``: unique within the manifest;
- ``uri``: absolute local path or fsspec URI (``s3://...``) of the image;
- ``split``: ``train`` / ``val`` / ... as the source dataset names it;
- ``labels``: sorted 0-based class ids present in the image (the weak label);
- ``width``, ``height``: pixel size of the stored image;
- ``mask_uri`` (nullable): a single-channel PNG in VOC convention: 0 background, ``k + 1`` class
  ``k``, 255 ignore (readers convert other encodings);
- ``boxes`` (nullable): ``class_id`` and pixel-edge coordinates ``x0, y0, x1, y1``: (x0, y0) is the
  top-left corner of the first covered pixel and the box is ``x1 - x0`` pixels wide (a VOC box
  with 1-based inclusive xmin..xmax becomes x0 = xmin - 1, x1 = xmax).

The class names travel in the schema metadata (``camflow.classes``, a JSON list) and survive the
Parquet round trip; read them with :func:`class_names`.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from camflow import storage

__all__ = [
    "BOX_TYPE",
    "CLASSES_KEY",
    "MANIFEST_SCHEMA",
    "PathEscapeError",
    "class_names",
    "is_inside",
    "join_under",
    "make_manifest",
    "read_manifest",
    "root_uri",
    "with_classes",
    "write_manifest",
]

BOX_TYPE = pa.struct(
    [
        pa.field("class_id", pa.int16()),
        pa.field("x0", pa.float32()),
        pa.field("y0", pa.float32()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
    ]
)

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("labels", pa.list_(pa.int16()), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("mask_uri", pa.string(), nullable=True),
        pa.field("boxes", pa.list_(BOX_TYPE), nullable=True),
    ]
)

CLASSES_KEY = b"camflow.classes"


class PathEscapeError(ValueError):
    """A relative path that leaves the dataset root (``..``, absolute paths, other protocols)."""


def _split_protocol(uri: str) -> tuple[str, str]:
    if "://" in uri:
        protocol, path = uri.split("://", 1)
        return protocol + "://", path
    return "", uri


def root_uri(root: str | os.PathLike) -> str:
    """The canonical form of a dataset root: absolute local path, or a URI without trailing /."""
    text = os.fspath(root)
    protocol, path = _split_protocol(text)
    if protocol in ("", "file://"):
        return os.path.abspath(path)
    return protocol + posixpath.normpath(path).rstrip("/")


def join_under(root: str | os.PathLike, relative: str) -> str:
    """``root/relative``; PathEscapeError if ``relative`` is absolute or climbs out of ``root``."""
    base = root_uri(root)
    rel = relative.replace("\\", "/")
    if "://" in rel or rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise PathEscapeError(f"path {relative!r} is absolute, not relative to the dataset root")
    protocol, base_path = _split_protocol(base)
    joined = protocol + posixpath.normpath(posixpath.join(base_path, rel))
    if not is_inside(joined, base):
        raise PathEscapeError(f"path {relative!r} escapes the dataset root {storage.redact(base)}")
    return joined


def is_inside(uri: str, root: str | os.PathLike) -> bool:
    """True when ``uri`` (normalised, symlinks not followed) lies strictly below ``root``."""
    base_protocol, base_path = _split_protocol(root_uri(root))
    protocol, path = _split_protocol(os.fspath(uri))
    if protocol == "file://":
        protocol = ""
    if protocol != base_protocol:
        return False
    path = os.path.abspath(path) if not protocol else posixpath.normpath(path)
    base_path = base_path.rstrip("/") or "/"
    prefix = base_path if base_path.endswith("/") else base_path + "/"
    return path.startswith(prefix) and len(path) > len(prefix)


def _box_rows(boxes: Any) -> list[dict[str, float]] | None:
    if boxes is None:
        return None
    rows = []
    for box in boxes:
        if isinstance(box, Mapping):
            rows.append({k: box[k] for k in ("class_id", "x0", "y0", "x1", "y1")})
        else:
            class_id, x0, y0, x1, y1 = box
            rows.append({"class_id": class_id, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    return rows


def make_manifest(
    records: Iterable[Mapping[str, Any]], *, classes: Sequence[str] | None = None
) -> pa.Table:
    """A manifest table from row mappings (``mask_uri`` and ``boxes`` may be left out)."""
    columns: dict[str, list[Any]] = {name: [] for name in MANIFEST_SCHEMA.names}
    for record in records:
        for name in MANIFEST_SCHEMA.names:
            value = record.get(name)
            if name == "labels":
                value = sorted(int(v) for v in value)
            elif name == "boxes":
                value = _box_rows(value)
            columns[name].append(value)
    table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    return with_classes(table, classes) if classes is not None else table


def with_classes(table: pa.Table, classes: Sequence[str]) -> pa.Table:
    """The table with its class names recorded in the schema metadata."""
    metadata = dict(table.schema.metadata or {})
    metadata[CLASSES_KEY] = json.dumps([str(c) for c in classes]).encode()
    return table.replace_schema_metadata(metadata)


def class_names(table: pa.Table) -> list[str] | None:
    """Class names stored with the manifest, or None when the table carries none."""
    raw = (table.schema.metadata or {}).get(CLASSES_KEY)
    return None if raw is None else list(json.loads(raw))


def _conform(table: pa.Table, source: str) -> pa.Table:
    missing = [name for name in MANIFEST_SCHEMA.names if name not in table.column_names]
    required_missing = [n for n in missing if n not in ("mask_uri", "boxes")]
    if required_missing:
        raise ValueError(f"manifest {source} lacks the column(s) {required_missing}")
    for name in missing:
        table = table.append_column(
            MANIFEST_SCHEMA.field(name), pa.nulls(len(table), MANIFEST_SCHEMA.field(name).type)
        )
    metadata = table.schema.metadata
    try:
        table = table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"manifest {source} does not match the manifest schema: {exc}") from exc
    return table.replace_schema_metadata(metadata)


# Small row groups let a worker read a shard's rows without reading the groups around them.
ROW_GROUP_ROWS = 1024


def write_manifest(
    table: pa.Table, uri: str, *, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write the manifest as one Parquet file (atomically, through camflow.storage)."""
    storage.write_table(_conform(table, "to write"), uri, storage_options=storage_options,
                        row_group_size=ROW_GROUP_ROWS)


def manifest_rows(uri: str, *, storage_options: Mapping[str, Any] | None = None) -> int:
    """How many records a manifest file holds, from its footer alone."""
    fs, path = storage.resolve(uri, storage_options)
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


class ManifestRows:
    """Reads row ranges of one manifest file: only the row groups a range falls in.

    The file's footer is read once, when the reader is made; keep one reader per worker.
    """

    def __init__(self, uri: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        fs, path = storage.resolve(uri, storage_options)
        self.uri = uri
        self._file = fs.open(path, "rb")
        self._parquet = pq.ParquetFile(self._file)
        sizes = [self._parquet.metadata.row_group(i).num_rows
                 for i in range(self._parquet.num_row_groups)]
        self._starts = np.cumsum([0, *sizes])

    @property
    def num_rows(self) -> int:
        return int(self._starts[-1])

    def read(self, start: int, stop: int) -> pa.Table:
        """Records ``start`` to ``stop`` (exclusive), in file order."""
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"rows {start}:{stop} outside {storage.redact(self.uri)}, which "
                             f"holds {self.num_rows}")
        if stop == start:
            return self._parquet.schema_arrow.empty_table()
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        last = int(np.searchsorted(self._starts, stop - 1, side="right")) - 1
        table = self._parquet.read_row_groups(list(range(first, last + 1)))
        return table.slice(start - int(self._starts[first]), stop - start)

    def close(self) -> None:
        self._file.close()


def read_manifest(uri: str, *, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Read a manifest Parquet file (or folder) and check it against MANIFEST_SCHEMA."""
    table = storage.read_table(uri, storage_options=storage_options)
    return _conform(table, storage.redact(uri))
