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

An expired lease (its writer died) is taken over by deleting it and creating it again the same
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
import os
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


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


class RunLease:
    """The lease on one run of a shard store (see the module docstring)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, *, run_id: str, where: str,
                 ttl: float, owner: str | None = None) -> None:
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
        return json.dumps({"owner": self.owner, "expires": time.time() + self.ttl}).encode()

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
                raise RunInUseError(
                    f"run {self.run_id!r} under {storage.redact(self.where)} is being written by "
                    f"{current.get('owner')} (lease valid for {left:.0f}s); use another run id or "
                    "wait for it to finish")
            # Expired (its writer died) or this owner's own: replace it. Another taker may have
            # removed it first; the create decides.
            with contextlib.suppress(FileNotFoundError):
                with_retries(lambda: self.fs.rm_file(self.path), what="remove expired lease")
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
