"""Quarantine for bad input records: every rejection is kept (and logged), never silently dropped."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from camflow.storage import redact

__all__ = ["REJECTS_SCHEMA", "Rejected", "Rejects", "logger"]

logger = logging.getLogger("camflow.data")

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class Rejected:
    image_id: str
    uri: str
    stage: str
    reason: str


class Rejects:
    """Collects rejected records as (image_id, uri, stage, reason); one warning line per record."""

    def __init__(self) -> None:
        self._records: list[Rejected] = []

    def add(self, image_id: str, uri: str, stage: str, reason: str) -> None:
        record = Rejected(str(image_id), str(uri), str(stage), str(reason))
        self._records.append(record)
        logger.warning(
            "rejected image %r (%s) at stage %s: %s",
            record.image_id,
            redact(record.uri),
            record.stage,
            record.reason,
        )

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Rejected]:
        return iter(self._records)

    def __bool__(self) -> bool:
        # An empty collector is still a collector: `if rejects:` must not mean "if any rejected".
        return True

    def reasons(self) -> dict[str, str]:
        """image_id -> reason of its last rejection (handy in tests and summaries)."""
        return {r.image_id: r.reason for r in self._records}

    def to_table(self) -> pa.Table:
        columns = list(zip(*((r.image_id, r.uri, r.stage, r.reason) for r in self._records)))
        if not columns:
            return REJECTS_SCHEMA.empty_table()
        return pa.Table.from_arrays(
            [pa.array(c, pa.string()) for c in columns], schema=REJECTS_SCHEMA
        )
