"""Errors raised by the BLS estimator, each naming the input at fault."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class NotFittedError(ValueError, AttributeError):
    """The estimator was used before :meth:`BLS.finalize` (or after new data invalidated it).

    It is an ``AttributeError`` too, so ``hasattr(bls, "coef_")`` is ``False`` on an unfitted model.
    """


class NonFiniteFeaturesError(ValueError):
    """Feature rows holding NaN or inf; ``rows`` are their positions in the chunk, ``ids`` their ids."""

    def __init__(self, message: str, rows: Sequence[int], ids: Sequence[Any] | None = None) -> None:
        super().__init__(message)
        self.rows = list(rows)
        self.ids = None if ids is None else list(ids)


class BLSFormatError(ValueError):
    """A saved BLS file that is not one, is from another format version, or is inconsistent."""
