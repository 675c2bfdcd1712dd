"""What every metric accumulator shares: additive numpy counts, merge, and a flat state.

A state is a ``dict[str, np.ndarray]``: the configuration arrays (which must agree for two
accumulators to merge) plus the int64/float64 counts (which add). It round-trips through
safetensors bytes, so shards can travel between workers without pickling.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

__all__ = ["Accumulator"]


class Accumulator:
    """Base class: subclasses list their config and count attribute names."""

    _config: ClassVar[tuple[str, ...]] = ()
    _counts: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Configuration and counts as named numpy arrays (copies)."""
        state = {k: np.array(getattr(self, k)) for k in self._config}
        state.update({k: getattr(self, k).copy() for k in self._counts})
        return state

    @classmethod
    def _from_config(cls, state: dict[str, np.ndarray]) -> Accumulator:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Accumulator:
        """An accumulator holding exactly ``state`` (as produced by :meth:`state_dict`)."""
        missing = [k for k in (*cls._config, *cls._counts) if k not in state]
        if missing:
            raise ValueError(f"{cls.__name__}.from_state: missing keys {missing}")
        acc = cls._from_config(state)
        for k in cls._counts:
            current = getattr(acc, k)
            value = np.asarray(state[k])
            if value.shape != current.shape:
                raise ValueError(
                    f"{cls.__name__}.from_state: {k} has shape {value.shape}, "
                    f"expected {current.shape}"
                )
            setattr(acc, k, value.astype(current.dtype, copy=True))
        return acc

    def to_bytes(self) -> bytes:
        """The state as safetensors bytes."""
        # np.ascontiguousarray would turn 0-d config values into shape (1,).
        return st_save({k: np.require(v, requirements="C") for k, v in self.state_dict().items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> Accumulator:
        """Inverse of :meth:`to_bytes`."""
        return cls.from_state(st_load(data))

    def merge(self, other: Accumulator) -> Accumulator:
        """Add ``other``'s counts into this accumulator (in place) and return it."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for k in self._config:
            if not np.array_equal(np.asarray(getattr(self, k)), np.asarray(getattr(other, k))):
                raise ValueError(f"{type(self).__name__}.merge: configurations differ in {k!r}")
        for k in self._counts:
            mine = getattr(self, k)
            np.add(mine, getattr(other, k), out=mine)
        return self

    def reset(self) -> None:
        """Zero every count, keeping the configuration."""
        for k in self._counts:
            getattr(self, k)[...] = 0
