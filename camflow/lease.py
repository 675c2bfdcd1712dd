"""One live writer per run: a lease file created only where absent, renewed by its owner.

``_runs/run={run_id}/lease.json`` names the writer and when its lease expires; the writer pushes
the expiry forward with :meth:`RunLease.renew`, and a lease left by a crashed writer expires, so a
rerun of that run can take it over.

Acquiring creates the file only if it is absent, in one step that two writers cannot both win:
on local disk a hard link from a complete temporary file (or ``open(.., "xb")`` where the
filesystem has no hard links), on an object store a PUT with ``If-None-Match: *``. Not every
S3-compatible server honours that header (moto does, ``rclone serve s3`` silently overwrites), so
the lease probes the store once; where the header is ignored, and on other filesystems, creating
is a read then a plain write, and two writers racing there may both write.

A lease also records its writer's host, pid and process start time (and boot and pid namespace),
so a rerun right after a crash need not wait out the dead writer's lease: one whose writer is
provably gone (same host, boot and pid namespace, and that pid not running, a zombie, or a newer
process with the recycled pid) is taken over at once, like an expired one. A writer on another
host, or recorded without these fields, is judged by the expiry alone.

An expired (or orphaned) lease is taken over by deleting it and creating it again the same
way, so of two writers taking over at once only one creation succeeds. Stores offer no
conditional delete, though: a slow taker that read the expired lease before the winner replaced
it still deletes the winner's fresh one. So every acquisition ends by reading the lease back after
a pause, and the writer whose name is no longer there gives up; that settles both races above.
Should two writers pass even so (a taker's delete and create straddling the other's pause), the
next renewal of one finds the other's name and raises :class:`RunInUseError`, which stops it.
The lease keeps a second writer from starting by mistake; it is no fence: exactly-once output
comes from the deterministic paths and commit markers of ``camflow.shards``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from camflow import storage
from camflow.storage import with_retries

log = logging.getLogger("camflow.lease")

# Long enough for a racing taker's delete and create to land on an object store; paid once a run.
CONFIRM_PAUSE = 0.25
# Seconds a lease outlives its last renewal (renewed every third of it). Short, so a writer that
# died where its death cannot be proven (another host) blocks a rerun of its run only briefly.
LEASE_TTL = 30.0


class RunInUseError(RuntimeError):
    """Another live writer holds the lease of this run (or has taken it from this one)."""


def _link_new(fs: LocalFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; atomic, never seen half written."""
    folder, base = path.rsplit("/", 1)
    fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/_{base}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
            raise
        # No hard links here (FUSE mounts, some network filesystems): O_EXCL still creates
        # atomically, though a reader may briefly see the file empty.
        try:
            with open(path, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
    finally:
        os.unlink(tmp)


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _namespace() -> str | None:
    """This kernel boot and pid namespace: where a pid names the same process as it does here.

    Containers may share a hostname yet not their pids, and pids restart after a reboot."""
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    with contextlib.suppress(OSError):
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    return boot


def _started(pid: int) -> str | None:
    """When process ``pid`` started, as a token a recycled pid does not share; ``""`` if no such
    process runs (or it is a zombie: dead, not yet reaped), None if that cannot be told."""
    try:
        import psutil  # optional: gives start times where there is no /proc
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return ""
            return f"psutil:{proc.create_time():.3f}"
        except psutil.NoSuchProcess:
            return ""
        except psutil.Error:
            return None
    if os.path.isdir("/proc/self"):
        stat = _read_text(f"/proc/{pid}/stat")
        if stat is not None:
            # The name (field 2) may hold spaces and ")": count from its last ")". After it come
            # the state (field 3) and, 19 further on, the start time in ticks since boot (22).
            fields = stat.rsplit(")", 1)[1].split()
            return "" if fields[0] == "Z" else f"proc:{fields[19]}"
    try:
        # No psutil, and no /proc entry (none, or hidden by hidepid): the kernel still says
        # whether the pid runs, though not which process it is.
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except OSError:
        pass
    return None


def _ray_job() -> str | None:
    """The Ray job this process drives, if Ray is loaded and initialised (never imports it)."""
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            return str(ray.get_runtime_context().get_job_id())
    except Exception:  # noqa: BLE001 - only a note in the lease; the expiry still governs
        pass
    return None


def identity() -> dict[str, Any]:
    """What a lease records about the process writing it, to prove later that it is gone."""
    pid = os.getpid()
    ident = {"host": socket.gethostname(), "pid": pid, "started": _started(pid),
             "namespace": _namespace()}
    job = _ray_job()
    return {**ident, "ray_job": job} if job else ident


def owner_gone(doc: dict[str, Any]) -> bool:
    """Whether the process that wrote lease ``doc`` is provably no longer running.

    Only a writer on this host, boot and pid namespace can be looked up; elsewhere (or in a
    lease without these fields) this is False and the expiry decides. A recorded Ray job is not
    looked up: that needs a Ray client, and its driver's pid says as much on its own host."""
    pid = doc.get("pid")
    if (doc.get("host") != socket.gethostname() or doc.get("namespace") != _namespace()
            or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
        return False
    # This very pid may be ours: another lease object in this process (same start time, alive),
    # or a dead writer's pid recycled to us (another start time, gone).
    now, then = _started(pid), doc.get("started")
    if now == "":
        return True
    # Alive under that pid: gone only if provably another process (same kind of start time).
    return (now is not None and isinstance(then, str) and then != now
            and then.split(":", 1)[0] == now.split(":", 1)[0])


def _holder(doc: dict[str, Any]) -> str:
    where = f" on {doc['host']}, pid {doc.get('pid')}" if doc.get("host") else ""
    return f"{doc.get('owner')}{where}"


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


class RunLease:
    """The lease on one run of a shard store (see the module docstring)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, *, run_id: str, where: str,
                 ttl: float = LEASE_TTL, owner: str | None = None) -> None:
        self.fs = fs
        self.path = path
        self.run_id = run_id
        self.where = where  # the store's root, for messages
        self.ttl = ttl
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._atomic: bool | None = None  # whether creation here is atomic (probed once)

    # -- the file ------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any] | None:
        try:
            data = with_retries(lambda: self.fs.cat_file(self.path), what="read lease")
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise ValueError(f"not an object: {doc!r}")
            return doc
        except ValueError as exc:
            # A lease being created without hard links is empty for an instant; one left so by a
            # crash must be removed by hand, and saying so beats guessing whose it is.
            raise RunInUseError(
                f"unreadable lease {storage.redact(self.path)} on run {self.run_id!r} ({exc}); "
                "another writer may be creating it, else delete it") from exc

    def _doc(self) -> bytes:
        doc = {"owner": self.owner, "expires": time.time() + self.ttl, **identity()}
        return json.dumps(doc).encode()

    def _atomic_create(self) -> bool:
        if self._atomic is None:
            if isinstance(self.fs, LocalFileSystem):
                self._atomic = True
            elif {"s3", "s3a"} & set(_protocols(self.fs)):
                self._atomic = self._probe_if_none_match()
            else:
                self._atomic = False  # fsspec's generic create is exists-then-write
        return self._atomic

    def _probe_if_none_match(self) -> bool:
        """Whether the object store refuses a second conditional PUT of one key."""
        probe = f"{self.path.rsplit('/', 1)[0]}/_probe-{uuid.uuid4().hex}"
        try:
            with_retries(lambda: self.fs.pipe_file(probe, b"", mode="create"), what="probe store")
        except OSError:
            return False  # the header is refused outright (501, 400): plain PUTs only
        try:
            with_retries(lambda: self.fs.pipe_file(probe, b"", mode="create"), what="probe store")
            return False
        except FileExistsError:
            return True
        finally:
            with_retries(lambda: self.fs.rm_file(probe), what="remove probe")

    def _create(self) -> bool:
        """Write the lease naming this owner if none exists; False if one does."""
        data = self._doc()
        if isinstance(self.fs, LocalFileSystem):
            return with_retries(lambda: _link_new(self.fs, self.path, data), what="create lease")
        mode = "create" if self._atomic_create() else "overwrite"
        if mode == "overwrite" and self._read() is not None:
            return False
        try:
            with_retries(lambda: self.fs.pipe_file(self.path, data, mode=mode), what="create lease")
            return True
        except FileExistsError:
            return False

    def _confirm(self) -> None:
        time.sleep(CONFIRM_PAUSE)
        current = self._read()
        if not current or current.get("owner") != self.owner:
            raise RunInUseError(f"run {self.run_id!r} was taken by another writer "
                                f"({(current or {}).get('owner', 'lease removed')})")

    # -- the protocol --------------------------------------------------------------------------
    def acquire(self) -> RunLease:
        """Take the lease; :class:`RunInUseError` if another live writer holds it."""
        for _ in range(3):  # a lease released between the create and the read: try again
            if self._create():
                self._confirm()
                return self
            current = self._read()
            if current is None:
                continue
            left = float(current.get("expires", 0)) - time.time()
            if current.get("owner") != self.owner and left > 0:
                if not owner_gone(current):
                    raise RunInUseError(
                        f"run {self.run_id!r} under {storage.redact(self.where)} is being written "
                        f"by {_holder(current)} (lease expires in {math.ceil(left)} s; rerun "
                        "then, or use another run id)")
                log.info("run %r: its previous writer %s is gone; taking over its lease",
                         self.run_id, _holder(current))
            # Expired or orphaned (its writer died), or this owner's own: replace it. Another
            # taker may have removed it first; the create and the read-back decide.
            with contextlib.suppress(FileNotFoundError):
                with_retries(lambda: self.fs.rm_file(self.path), what="remove stale lease")
        raise RunInUseError(f"run {self.run_id!r}: the lease keeps changing hands; try again")

    def check(self) -> None:
        """:class:`RunInUseError` unless the lease still names this owner (one read)."""
        current = self._read()
        if current is None or current.get("owner") != self.owner:
            holder = (current or {}).get("owner", "nobody: it was removed")
            raise RunInUseError(f"lost the lease on run {self.run_id!r} to {holder}")

    def renew(self) -> None:
        """Push the expiry forward, rewriting the lease only while it names this owner."""
        self.check()
        with_retries(lambda: storage.put_whole(self.fs, self.path, self._doc()), what="renew lease")

    def release(self) -> None:
        current = self._read()
        if current and current.get("owner") == self.owner:
            with contextlib.suppress(FileNotFoundError):
                with_retries(lambda: self.fs.rm_file(self.path), what="release lease")

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class LeaseKeeper:
    """Renews a held lease from a thread every ``ttl / 3`` seconds while the block runs.

    A failed renewal is logged and tried again at the next tick; a lease that another writer has
    taken ends the renewals and is kept, for the writer to stop on with :meth:`raise_if_lost`.
    """

    def __init__(self, lease: RunLease, every: float | None = None) -> None:
        self.lease = lease
        self.every = lease.ttl / 3 if every is None else every
        self.lost: RunInUseError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.lease.renew()
            except RunInUseError as exc:
                log.error("%s: this writer stops", exc)
                self.lost = exc
                return
            except Exception as exc:  # noqa: BLE001 - logged; the next renewal may succeed
                log.warning("could not renew the lease on run %r: %s", self.lease.run_id,
                            storage.redact(exc))

    def raise_if_lost(self, *, read: bool = False) -> None:
        """:class:`RunInUseError` if a renewal found the lease taken; with ``read``, also look
        at the lease now (one read) rather than trust the last renewal."""
        if self.lost is not None:
            raise self.lost
        if read:
            self.lease.check()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
