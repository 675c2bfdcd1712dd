"""URIs to filesystems: local paths, ``file://``, ``s3://`` (s3fs) and anything else fsspec knows.

Object-store settings come from the environment (or explicit ``storage_options``), never from code:

- ``CAMFLOW_S3_ENDPOINT`` (or ``AWS_ENDPOINT_URL``): an S3-compatible endpoint such as MinIO;
- the usual ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (with ``AWS_SESSION_TOKEN`` for
  temporary credentials) / ``AWS_REGION`` that botocore reads itself.

Credentials are never logged: use :func:`redact` on anything that might carry them.

:func:`with_retries` is camflow's one retry layer for storage I/O: it retries what
:func:`is_transient` names (dropped connections, timeouts, HTTP 5xx and throttling) with jittered
backoff and lets everything else through at once. A filesystem resolved with ``retried=True``,
for callers that wrap every call in it (the shard store), has botocore's retries turned off and
s3fs's set to one attempt, so a failing request costs ``attempts`` requests, not
``attempts x 5 x 5``. Other reads keep the client libraries' own retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "exists",
    "is_transient",
    "join",
    "open_uri",
    "options_for",
    "put_whole",
    "read_table",
    "redact",
    "resolve",
    "s3_options_from_env",
    "with_retries",
    "write_bytes",
    "write_table",
]

log = logging.getLogger("camflow.storage")
T = TypeVar("T")

_SECRET_KEYS = re.compile(r"(secret|token|password|key)", re.IGNORECASE)

# -- the one retry layer ---------------------------------------------------------------------------

# What reaches camflow through s3fs when a connection fails: aiobotocore turns aiohttp's errors
# into botocore's (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
# ConnectionClosedError, HTTPClientError); s3fs passes them on untranslated, and a response body
# cut short arrives as one of the read errors. Matched by name: camflow does not import botocore.
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "HTTPClientError", "ResponseStreamingError", "IncompleteReadError", "IncompleteRead",
    "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ServerTimeoutError",
    "ClientPayloadError",
    # A throttling server may answer with XML that does not parse (s3fs retries it for that).
    "ResponseParserError",
})
# Service answers worth another try: botocore's "standard" retry mode's throttling and transient
# codes, which camflow takes over by turning botocore's retries off.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
    "PriorRequestNotComplete", "InternalError", "ServiceUnavailable",
})
# Answers that another try cannot change, whatever caused them.
_PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
              NotADirectoryError)


def _transient_response(exc: BaseException) -> bool:
    """Whether ``exc`` carries a botocore response (a ``ClientError``) that is 5xx or throttling."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return False
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return (code in _TRANSIENT_CODES or (isinstance(status, int) and (status >= 500 or status == 429))
            or (code.isdigit() and (int(code) >= 500 or int(code) == 429)))


def is_transient(exc: BaseException) -> bool:
    """Whether another try of the call that raised ``exc`` may succeed.

    Yes for dropped connections and timeouts, the connection errors of botocore and aiohttp, and
    HTTP 5xx or throttling answers (s3fs raises those as a plain ``OSError`` whose ``__cause__``
    is botocore's ``ClientError``). No for anything else, a plain ``OSError`` included: a full
    disk or a refused permission stays so.
    """
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in _TRANSIENT_NAMES:
        return True
    if _transient_response(exc):
        return True
    # Only an explicit cause (``raise .. from``), as s3fs and aiobotocore chain: an error raised
    # while handling another one is not made transient by it.
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


def with_retries(
    fn: Callable[[], T], *, what: str, attempts: int = 8, base_delay: float = 0.25,
    max_delay: float = 8.0,
) -> T:
    """Call ``fn``, retrying :func:`is_transient` failures with jittered exponential backoff.

    The default waits about 24 s in all before the last attempt: an object store restarting or a
    short network outage is ridden out, a lasting one fails the call with its own error.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__,
                        redact(exc), attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _single_attempt(options: dict[str, Any]) -> dict[str, Any]:
    config = dict(options.get("config_kwargs") or {})
    # botocore's max_attempts counts retries (1 = two requests) and is rewritten in place into
    # total_max_attempts when a client is made; the total is what means one request.
    config["retries"] = {"total_max_attempts": 1, "mode": "standard"}
    return {**options, "config_kwargs": config}


def s3_options_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """s3fs options for the configured endpoint; empty when the default AWS endpoint applies."""
    env = os.environ if env is None else env
    endpoint = env.get("CAMFLOW_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL")
    options: dict[str, Any] = {}
    if endpoint:
        # Non-AWS servers (MinIO, rclone, moto) want path-style addressing.
        options["endpoint_url"] = endpoint
        options["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    return options


def options_for(uri: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Explicit storage options for ``uri`` from this process's environment.

    Worker processes may not share the driver's environment (Ray starts them once), so a driver
    resolves the options here and ships them with the work.
    """
    env = os.environ if env is None else env
    if _protocol(os.fspath(uri)) not in ("s3", "s3a"):
        return {}
    options = s3_options_from_env(env)
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = env["AWS_ACCESS_KEY_ID"]
        options["secret"] = env["AWS_SECRET_ACCESS_KEY"]
        # Temporary credentials (SSO, STS, an assumed role) are refused without their token.
        if env.get("AWS_SESSION_TOKEN"):
            options["token"] = env["AWS_SESSION_TOKEN"]
    return options


def _protocol(uri: str) -> str:
    return uri.split("://", 1)[0] if "://" in uri else "file"


def resolve(
    uri: str, storage_options: Mapping[str, Any] | None = None, *, retried: bool = False
) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and protocol-less path for ``uri``.

    ``retried``: the caller wraps every call in :func:`with_retries`, so the client libraries
    make one attempt each (see the module docstring).
    """
    if not isinstance(uri, (str, os.PathLike)):
        raise TypeError(f"storage URI must be a string or path, got {type(uri).__name__}: {uri!r}")
    uri = os.fspath(uri)
    protocol = _protocol(uri)
    options = dict(storage_options or {})
    if protocol in ("s3", "s3a"):
        options = {**s3_options_from_env(), **options}
        if retried:
            options = _single_attempt(options)
    fs, path = fsspec.core.url_to_fs(uri, **options)
    if retried and protocol in ("s3", "s3a"):
        # s3fs takes its retry count from an attribute, not an option. This instance is cached
        # under options that only retried callers pass, so no other caller shares it.
        fs.retries = 1
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/`` (object stores have no ``os.sep``)."""
    out = os.fspath(base).rstrip("/")
    for part in parts:
        out = f"{out}/{str(part).strip('/')}"
    return out


def open_uri(
    uri: str, mode: str = "rb", storage_options: Mapping[str, Any] | None = None
) -> IO[Any]:
    """Open ``uri``; for writes on local disk the parent folder is created."""
    fs, path = resolve(uri, storage_options)
    if "w" in mode and isinstance(fs, LocalFileSystem):
        fs.makedirs(fs._parent(path), exist_ok=True)
    return fs.open(path, mode)


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = resolve(uri, storage_options)
    return fs.exists(path)


def _hidden_temporary(path: str) -> str:
    # A leading "_": pyarrow, pandas and duckdb skip the file when they list its folder.
    folder, base = path.rsplit("/", 1)
    return f"{folder}/_{base}.{uuid.uuid4().hex}.tmp"


@contextlib.contextmanager
def _whole(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[str]:
    """The path to write so that ``path`` ends up absent or complete, never partial.

    An object store's PUT (or completed multipart upload) is already all or nothing, so the write
    goes straight to its key: a move there would add three requests (head, copy, delete). On
    local disk it goes to a hidden temporary file that is renamed into place.
    """
    if not isinstance(fs, LocalFileSystem):
        yield path
        return
    fs.makedirs(fs._parent(path), exist_ok=True)
    tmp = _hidden_temporary(path)
    yield tmp
    fs.mv(tmp, path)


def put_whole(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` of ``fs`` so that it is either absent or complete."""
    with _whole(fs, path) as target:
        fs.pipe_file(target, data)


def write_bytes(
    data: bytes, uri: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write ``data`` so that ``uri`` is either absent or complete, never partial."""
    put_whole(*resolve(uri, storage_options), data)


def write_table(
    table: pa.Table, uri: str, *, storage_options: Mapping[str, Any] | None = None,
    row_group_size: int | None = None,
) -> None:
    """Write one Parquet file so that ``uri`` is either absent or complete (streamed)."""
    fs, path = resolve(uri, storage_options)
    with _whole(fs, path) as target, fs.open(target, "wb") as f:
        pq.write_table(table, f, compression="zstd", row_group_size=row_group_size)


def read_table(
    uri: str,
    *,
    columns: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Read one Parquet file (or a folder of them) into a table."""
    fs, path = resolve(uri, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"no Parquet data at {redact(uri)}")
    if fs.isdir(path):
        return pq.read_table(path, columns=columns, filesystem=fs)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def redact(value: Any) -> str:
    """A printable form of a URI or options mapping with credentials masked."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(
            f"{k!r}: {'***' if _SECRET_KEYS.search(str(k)) else redact(v)}" for k, v in value.items()
        ) + "}"
    text = str(value)
    # user:password@host in URLs.
    return re.sub(r"(://[^/:@]+):[^/@]+@", r"\1:***@", text)
