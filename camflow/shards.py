"""Exactly-once shard output: deterministic paths, commit markers, run leases, retried writes.

Layout under an output root (local path or ``s3://bucket/prefix``)::

    {table}/run={run_id}/method={method}/{shard}.parquet      data (Hive partitions)
    _commits/run={run_id}/method={method}/{shard}.json         one marker per committed shard
    _runs/run={run_id}/lease.json                              who is writing this run

A shard's files are written first and its marker last, each whole or not at all
(``storage.put_whole``: one PUT on an object store, a hidden temporary file renamed into place on
local disk). The marker is the commit: :meth:`ShardStore.read` returns only files named by
markers, a rerun skips shards that have a marker, and a shard redone after a crash lands on the
same paths, so nothing is ever doubled.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from camflow import storage

log = logging.getLogger("camflow.shards")
T = TypeVar("T")

FORMAT_VERSION = 1


class RunInUseError(RuntimeError):
    """Another live writer holds the lease of this run."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    name = type(exc).__name__
    # botocore/aiohttp connection failures surface under these names through s3fs.
    transient_names = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                       "ClientConnectorError", "ServerDisconnectedError", "ConnectionClosedError",
                       "ClientOSError", "ServerTimeoutError")
    if name in transient_names or isinstance(exc, OSError):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and _is_transient(cause)


def with_retries(
    fn: Callable[[], T], *, what: str, attempts: int = 8, base_delay: float = 0.25,
    max_delay: float = 8.0,
) -> T:
    """Call ``fn``, retrying transient I/O failures with jittered exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == attempts or not _is_transient(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__,
                        storage.redact(exc), attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


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
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {doc.get('format_version')!r}")
            return cls(doc["run_id"], doc["method"], doc["shard"], doc["files"], doc.get("extra", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable commit marker {storage.redact(where)}: {exc}") from exc


def _check_name(kind: str, value: str) -> str:
    if not value or any(c in value for c in "/=\\") or value.startswith(("_", ".")):
        raise ValueError(f"invalid {kind} {value!r}: no '/', '=', '\\', no leading '_' or '.'")
    return value


class ShardStore:
    """Committed shards of one run under ``root``, one writer per run (see :meth:`lease`)."""

    def __init__(
        self, root: str, run_id: str, *, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.root = os.fspath(root).rstrip("/")
        self.run_id = _check_name("run id", run_id)
        self.storage_options = dict(storage_options or {})
        self.fs, self._root_path = storage.resolve(self.root, self.storage_options)

    # -- paths -------------------------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return "/".join([self._root_path, *parts])

    def data_path(self, table: str, method: str, shard: str) -> str:
        return self._p(table, f"run={self.run_id}", f"method={method}", f"{shard}.parquet")

    def marker_path(self, method: str, shard: str) -> str:
        return self._p("_commits", f"run={self.run_id}", f"method={method}", f"{shard}.json")

    # -- reading -----------------------------------------------------------------------------
    def commits(self, method: str | None = None) -> list[ShardCommit]:
        """Committed shards of this run (of one method, or all), in shard order."""
        base = self._p("_commits", f"run={self.run_id}")
        pattern = f"{base}/method={method}/*.json" if method else f"{base}/method=*/*.json"
        paths = with_retries(lambda: sorted(self.fs.glob(pattern)), what="list commits")
        out = []
        for path in paths:
            data = with_retries(lambda p=path: self.fs.cat_file(p), what=f"read {path}")
            out.append(ShardCommit.from_json(data, path))
        return out

    def committed(self, method: str) -> set[str]:
        self.fs.invalidate_cache()
        return {c.shard for c in self.commits(method)}

    def read(self, table: str, method: str | None = None) -> pa.Table:
        """Rows of ``table`` from committed shards only, with ``run`` and ``method`` columns."""
        self.fs.invalidate_cache()
        parts = []
        for commit in self.commits(method):
            info = commit.files.get(table)
            if info is None:
                continue
            path = info["path"]
            data = with_retries(lambda p=path: self.fs.cat_file(p), what=f"read {path}")
            part = pq.read_table(pa.BufferReader(data))
            n = part.num_rows
            part = part.append_column("run", pa.array([self.run_id] * n, pa.string()))
            parts.append(part.append_column("method", pa.array([commit.method] * n, pa.string())))
        if not parts:
            return pa.table({})
        return pa.concat_tables(parts, promote_options="default")

    # -- writing -----------------------------------------------------------------------------
    def commit(
        self, method: str, shard: str, tables: Mapping[str, pa.Table],
        extra: Mapping[str, Any] | None = None,
    ) -> ShardCommit:
        """Write every table of one shard, then its marker. Safe to repeat after a crash."""
        _check_name("method", method)
        _check_name("shard", shard)
        files: dict[str, dict[str, Any]] = {}
        for name, table in tables.items():
            _check_name("table", name)
            final = self.data_path(name, method, shard)
            sink = io.BytesIO()
            pq.write_table(table, sink, compression="zstd")
            payload = sink.getvalue()
            with_retries(lambda a=(final, payload): storage.put_whole(self.fs, *a),
                         what=f"write {name} shard {shard}")
            files[name] = {"path": final, "rows": table.num_rows, "bytes": len(payload),
                           "sha256": table_digest(table)}
        record = ShardCommit(self.run_id, method, shard, files, dict(extra or {}))
        marker = self.marker_path(method, shard)

        with_retries(lambda: storage.put_whole(self.fs, marker, record.to_json()),
                     what=f"commit shard {shard}")
        return record

    # -- one writer per run --------------------------------------------------------------------
    def lease(self, *, ttl: float = 120.0, owner: str | None = None) -> RunLease:
        return RunLease(self, ttl=ttl, owner=owner)


class RunLease:
    """A lease on a run: a second live writer of the same run refuses to start.

    The lease names its owner and an expiry that :meth:`renew` pushes forward; a lease left by a
    crashed writer expires after ``ttl`` seconds, so a rerun of that run can resume.
    Object stores offer no compare-and-swap here, so after writing, the owner reads the lease back
    and gives up if another writer won the race.
    """

    def __init__(self, store: ShardStore, *, ttl: float, owner: str | None) -> None:
        self.store = store
        self.ttl = ttl
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.path = store._p("_runs", f"run={store.run_id}", "lease.json")

    def _read(self) -> dict[str, Any] | None:
        fs = self.store.fs
        fs.invalidate_cache()
        if not with_retries(lambda: fs.exists(self.path), what="check lease"):
            return None
        try:
            return json.loads(with_retries(lambda: fs.cat_file(self.path), what="read lease"))
        except FileNotFoundError:
            return None

    def _write(self) -> None:
        doc = {"owner": self.owner, "expires": time.time() + self.ttl}
        fs = self.store.fs
        fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        with_retries(lambda: fs.pipe_file(self.path, json.dumps(doc).encode()), what="write lease")

    def acquire(self) -> RunLease:
        current = self._read()
        if current and current.get("owner") != self.owner and current.get("expires", 0) > time.time():
            raise RunInUseError(
                f"run {self.store.run_id!r} under {storage.redact(self.store.root)} is being written "
                f"by {current.get('owner')} (lease valid for {current['expires'] - time.time():.0f}s"
                "); use another run id or wait for it to finish"
            )
        self._write()
        time.sleep(0.05)
        current = self._read()
        if not current or current.get("owner") != self.owner:
            raise RunInUseError(f"run {self.store.run_id!r} was taken by another writer")
        return self

    def renew(self) -> None:
        current = self._read()
        if current and current.get("owner") != self.owner:
            raise RunInUseError(f"lost the lease on run {self.store.run_id!r}")
        self._write()

    def release(self) -> None:
        current = self._read()
        if current and current.get("owner") == self.owner:
            with_retries(lambda: self.store.fs.rm_file(self.path), what="release lease")

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def pending(shards: Iterable[str], done: set[str]) -> list[str]:
    """Shards still to do, in their given order."""
    return [s for s in shards if s not in done]
