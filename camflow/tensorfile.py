"""The safetensors header, read in one place: checkpoints, BLS files and worker messages use it.

A safetensors payload starts with a little-endian u64 header length, then that many bytes of
JSON (tensor offsets and the ``__metadata__`` strings). Reading only the header lets metadata be
read without touching the tensors.
"""

from __future__ import annotations

import json
import struct
from typing import IO, Any

__all__ = ["HeaderError", "header_bytes", "metadata", "read_header"]

# A header larger than this is not one camflow wrote (guards against reading garbage lengths).
MAX_HEADER = 1 << 27


class HeaderError(ValueError):
    """Bytes that do not start with a safetensors header; the message says what is wrong."""


def read_header(data: bytes) -> dict[str, Any]:
    """The JSON header of safetensors ``data`` (the whole payload or just its first bytes)."""
    if len(data) < 8:
        raise HeaderError(f"truncated: {len(data)} bytes, no header length")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8 or size > MAX_HEADER:
        raise HeaderError(f"truncated or corrupt: header size {size} exceeds the {len(data)} bytes")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeaderError(f"corrupt header ({exc})") from None
    if not isinstance(header, dict):
        raise HeaderError("corrupt header (not a JSON object)")
    return header


def header_bytes(stream: IO[bytes]) -> bytes:
    """The length prefix and header of a safetensors file open for reading, nothing more."""
    prefix = stream.read(8)
    if len(prefix) < 8:
        return prefix
    (size,) = struct.unpack("<Q", prefix)
    return prefix + stream.read(size) if 0 < size <= MAX_HEADER else prefix


def metadata(data: bytes, key: str) -> str | None:
    """The ``__metadata__[key]`` string of a safetensors header, or None."""
    return (read_header(data).get("__metadata__") or {}).get(key)
