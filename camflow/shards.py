"""Exactly-once shard output: deterministic paths, commit markers, run leases, retried writes.

Layout under an output root (local path or ``s3://bucket/prefix``)::

    {table}/run={run_id}/method={method}/{shard}.parquet      data (Hive partitions)
    {name}/run={run_id}/method={method}/{shard}.safetensors   binary beside it (metric states)
    _commits/run={run_id}/method={method}/{shard}.json         one marker per committed shard
    _runs/run={run_id}/lease.json                              who is writing this run

A marker is small (a few hundred bytes per file: path, rows, size, hash, id range); anything
bulky, such as metric states, is a binary file beside the data. A shard's files are written
first and its marker last, each whole or not at all
(``storage.put_whole``: one PUT on an object store, a hidden temporary file renamed into place on
local disk). The marker is the commit: :meth:`ShardStore.read` returns only files named by
markers, a rerun skips shards that have a marker, and a shard redone after a crash lands on the
same paths, so nothing is ever doubled.

Markers and data files are read in batches (``fs.cat`` of many paths: one request each, run
concurrently on an object store) inside camflow's one retry layer, ``storage.with_retries``; the
store's filesystem makes one attempt per request itself. The run lease is ``camflow.lease``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from camflow import storage
from camflow.lease import LEASE_TTL, RunInUseError, RunLease
from camflow.storage import with_retries

__all__ = ["RunInUseError", "RunLease", "ShardCommit", "ShardStore", "table_digest", "with_retries"]

FORMAT_VERSION = 2  # 2: metric states in binary files beside the data, not in the marker
READABLE_VERSIONS = (1, 2)  # a version-1 run's outputs still read (its metrics do not resume)


def table_digest(table: pa.Table) -> str:
    """Content hash of a table's rows (independent of Parquet encoding details)."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue()).hexdigest()


@dataclass(frozen=True)
class ShardCommit:
    run_id: str
    method: str
    shard: str
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {"format_version": FORMAT_VERSION, "run_id": self.run_id, "method": self.method,
             "shard": self.shard, "files": self.files, "extra": self.extra},
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ShardCommit:
        try:
            doc = json.loads(data)
            if doc.get("format_version") not in READABLE_VERSIONS:
                raise ValueError(f"format_version {doc.get('format_version')!r}")
            return cls(doc["run_id"], doc["method"], doc["shard"], doc["files"], doc.get("extra", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable commit marker {storage.redact(where)}: {exc}") from exc


def _check_name(kind: str, value: str) -> str:
    # Glob characters too: names end up in the patterns and batched reads that find markers.
    if not value or any(c in value for c in "/=\\*?[]") or value.startswith(("_", ".")):
        raise ValueError(f"invalid {kind} {value!r}: no '/', '=', '\\', '*', '?', '[', ']', "
                         "no leading '_' or '.'")
    return value


class ShardStore:
    """Committed shards of one run under ``root``, one writer per run (see :meth:`lease`)."""

    def __init__(
        self, root: str, run_id: str, *, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.root = os.fspath(root).rstrip("/")
        self.run_id = _check_name("run id", run_id)
        self.storage_options = dict(storage_options or {})
        self.fs, self._root_path = storage.resolve(self.root, self.storage_options, retried=True)

    # -- paths -------------------------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return "/".join([self._root_path, *parts])

    def data_path(self, table: str, method: str, shard: str) -> str:
        return self._p(table, f"run={self.run_id}", f"method={method}", f"{shard}.parquet")

    def file_path(self, name: str, method: str, shard: str) -> str:
        return self._p(name, f"run={self.run_id}", f"method={method}", f"{shard}.safetensors")

    def run_path(self, name: str) -> str:
        """A file of the run itself (beside its lease), as a URI."""
        return storage.join(self.root, "_runs", f"run={self.run_id}", _check_name("file", name))

    def put_run_file(self, name: str, data: bytes) -> None:
        """Write a file of the run itself whole (one writer: the lease holder)."""
        path = self._p("_runs", f"run={self.run_id}", _check_name("file", name))
        with_retries(lambda: storage.put_whole(self.fs, path, data), what=f"write {name}")

    def get_run_file(self, name: str) -> bytes | None:
        """A file of the run itself, or None where it was never written."""
        path = self._p("_runs", f"run={self.run_id}", _check_name("file", name))
        return self._cat([path], what=f"read {name}", missing_ok=True).get(path)

    def marker_path(self, method: str, shard: str) -> str:
        return self._p("_commits", f"run={self.run_id}", f"method={method}", f"{shard}.json")

    # -- reading -----------------------------------------------------------------------------
    def _markers(self, method: str | None) -> list[str]:
        base = self._p("_commits", f"run={self.run_id}")
        pattern = f"{base}/method={method}/*.json" if method else f"{base}/method=*/*.json"
        self.fs.invalidate_cache()  # an object store's listing cache would hide new markers
        return with_retries(lambda: sorted(self.fs.glob(pattern)), what="list commits")

    def _cat(self, paths: list[str], *, what: str, missing_ok: bool) -> dict[str, bytes]:
        """The bytes of ``paths``, read as one batch; a retry rereads only what failed.

        A path gone since it was listed is left out when ``missing_ok``, else it raises.
        """
        got: dict[str, bytes] = {}

        def attempt() -> None:
            todo = [p for p in paths if p not in got]
            if not todo:
                return
            asked = set(todo)
            failed = None
            for path, value in self.fs.cat(todo, on_error="return").items():
                if path not in asked:  # respelled by the filesystem: it would pass for missing
                    raise RuntimeError(f"{what}: asked for {todo[:3]}.., got {path}")
                if isinstance(value, FileNotFoundError) and missing_ok:
                    continue
                if isinstance(value, BaseException):
                    failed = failed or value
                else:
                    got[path] = value
            if failed is not None:
                raise failed

        with_retries(attempt, what=what)
        return got

    def commits(self, method: str | None = None) -> list[ShardCommit]:
        """Committed shards of this run (of one method, or all), in shard order."""
        paths = self._markers(method)
        data = self._cat(paths, what=f"read {len(paths)} commit markers", missing_ok=True)
        return [ShardCommit.from_json(data[p], p) for p in paths if p in data]

    def read_files(self, name: str, method: str, shards: Iterable[str], *,
                   batch: int = 1000) -> Iterator[tuple[str, bytes]]:
        """The binary ``name`` file of each committed shard in ``shards``, ``batch`` at a time
        (one batched read each, no marker reads: the paths follow from the names)."""
        todo = list(shards)
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            paths = [self.file_path(name, method, shard) for shard in chunk]
            data = self._cat(paths, what=f"read {len(paths)} {name} files", missing_ok=False)
            yield from ((shard, data[path]) for shard, path in zip(chunk, paths))

    def committed(self, method: str) -> set[str]:
        """Names of the committed shards of ``method`` (one listing, no reads)."""
        return {p.rsplit("/", 1)[1][: -len(".json")] for p in self._markers(method)}

    def methods(self) -> list[str]:
        """Names of the methods with commit markers in this run, sorted (one listing, no reads).

        Lists only the ``method=`` folders, not the markers in them: one request on an object
        store, however many shards. On an object store a folder exists only while a marker is in
        it; on local disk a crash inside a method's very first commit can leave its folder
        without one, and then :meth:`commits` of that method is empty.
        """
        base = self._p("_commits", f"run={self.run_id}")

        def listing() -> list[dict[str, Any]]:
            try:
                return self.fs.ls(base, detail=True)
            except FileNotFoundError:  # nothing committed yet
                return []

        self.fs.invalidate_cache()  # an object store's listing cache would hide new methods
        entries = with_retries(listing, what="list methods")
        names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries
                 if e.get("type") == "directory")
        return sorted(n[len("method="):] for n in names if n.startswith("method="))

    def read(
        self, table: str, method: str | None = None, *, image_ids: Iterable[str] | None = None,
        commits: Iterable[ShardCommit] | None = None,
    ) -> pa.Table:
        """Rows of ``table`` from committed shards only, with ``run`` and ``method`` columns.

        ``image_ids``: only the rows of these images; shard files whose recorded range of image
        ids holds none of them are not read at all. ``commits``: the markers to read from, as
        :meth:`commits` returned them (saves a listing when reading several tables).
        """
        chosen = self.commits(method) if commits is None else [
            c for c in commits if method is None or c.method == method]
        chosen = [c for c in chosen if table in c.files]
        where = None
        if image_ids is not None:
            ids = sorted(set(image_ids))
            chosen = [c for c in chosen if _may_hold(c.files[table], ids)]
            where = pc.field("image_id").isin(ids)
        paths = [c.files[table]["path"] for c in chosen]
        data = self._cat(paths, what=f"read {len(paths)} {table} files", missing_ok=False)
        parts = []
        for commit, path in zip(chosen, paths):
            part = pq.read_table(pa.BufferReader(data[path]), filters=where)
            n = part.num_rows
            part = part.append_column("run", pa.array([self.run_id] * n, pa.string()))
            parts.append(part.append_column("method", pa.array([commit.method] * n, pa.string())))
        if not parts:
            return pa.table({})
        return pa.concat_tables(parts, promote_options="default")

    # -- writing -----------------------------------------------------------------------------
    def commit(
        self, method: str, shard: str, tables: Mapping[str, pa.Table],
        extra: Mapping[str, Any] | None = None, *, files: Mapping[str, bytes] | None = None,
    ) -> ShardCommit:
        """Write every table and binary file (``files``: name -> bytes) of one shard, then its
        marker. Safe to repeat after a crash."""
        _check_name("method", method)
        _check_name("shard", shard)
        written: dict[str, dict[str, Any]] = {}
        if set(tables) & set(files or {}):
            raise ValueError(f"shard {shard}: {sorted(set(tables) & set(files or {}))} named as "
                             "both a table and a file")
        for name, table in tables.items():
            _check_name("table", name)
            final = self.data_path(name, method, shard)
            sink = io.BytesIO()
            pq.write_table(table, sink, compression="zstd")
            payload = sink.getvalue()
            with_retries(lambda a=(final, payload): storage.put_whole(self.fs, *a),
                         what=f"write {name} shard {shard}")
            written[name] = {"path": final, "rows": table.num_rows, "bytes": len(payload),
                             "sha256": table_digest(table), **_id_range(table)}
        for name, payload in (files or {}).items():
            _check_name("file", name)
            final = self.file_path(name, method, shard)
            with_retries(lambda a=(final, payload): storage.put_whole(self.fs, *a),
                         what=f"write {name} of shard {shard}")
            written[name] = {"path": final, "bytes": len(payload),
                             "sha256": hashlib.sha256(payload).hexdigest()}
        record = ShardCommit(self.run_id, method, shard, written, dict(extra or {}))
        marker = self.marker_path(method, shard)

        with_retries(lambda: storage.put_whole(self.fs, marker, record.to_json()),
                     what=f"commit shard {shard}")
        return record

    # -- one writer per run --------------------------------------------------------------------
    def lease(self, *, ttl: float = LEASE_TTL, owner: str | None = None) -> RunLease:
        """The run's lease (not yet acquired); ``owner`` names an existing holder to check."""
        return RunLease(self.fs, self._p("_runs", f"run={self.run_id}", "lease.json"),
                        run_id=self.run_id, where=self.root, ttl=ttl, owner=owner)


def _id_range(table: pa.Table) -> dict[str, list[str]]:
    """The smallest and largest image id of ``table``, so readers of a few images skip files."""
    if "image_id" not in table.column_names:
        return {}
    bounds = pc.min_max(table["image_id"])
    if not bounds["min"].is_valid:
        return {"image_ids": []}  # no rows (or no ids): no image is in this file
    return {"image_ids": [bounds["min"].as_py(), bounds["max"].as_py()]}


def _may_hold(info: Mapping[str, Any], ids: list[str]) -> bool:
    """Whether a shard file whose marker entry is ``info`` may hold rows of any of ``ids``."""
    bounds = info.get("image_ids")
    if bounds is None:
        return True  # a marker written before markers recorded the range
    return bool(bounds) and any(bounds[0] <= i <= bounds[1] for i in ids)
