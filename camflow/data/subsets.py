"""Deterministic, label-stratified, nested training subsets (1 % ... 100 % of the images).

One fixed priority order over all images defines every subset: the subset for proportion p is
the first round(p * n) images of that order, so 1 % is always inside 2 %, 2 % inside 5 %, etc.
The order is built so that its every prefix is stratified:

1. each image gets a key from BLAKE2b(seed, image_id) - the same on every machine and Python,
   and independent of the other rows (adding images does not reshuffle the old ones);
2. a short head covers every class once: classes from rarest to most common, each contributes
   its lowest-key image unless an earlier pick already shows it;
3. the rest is interleaved by stratum (an image's stratum is its rarest label): the j-th image
   (by key) of a stratum with n_s images sits at position (j + 0.5) / n_s, so any prefix holds
   each stratum in proportion to its size (systematic sampling).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["PROPORTIONS", "priority_order", "stratified_subset", "subset_size", "take_subset"]

PROPORTIONS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.08, 0.1, 0.2, 0.5, 0.8, 1.0)


def _labels_and_ids(
    labels: Sequence[Sequence[int]] | pa.Table,
) -> tuple[list[list[int]], list[str]]:
    if isinstance(labels, pa.Table):
        rows = [list(r or ()) for r in labels.column("labels").to_pylist()]
        if "image_id" in labels.column_names:
            return rows, [str(i) for i in labels.column("image_id").to_pylist()]
        return rows, [str(i) for i in range(len(rows))]
    rows = [[int(k) for k in r] for r in labels]
    return rows, [str(i) for i in range(len(rows))]


def _key(seed: int, identity: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{identity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def priority_order(labels: Sequence[Sequence[int]] | pa.Table, *, seed: int = 0) -> np.ndarray:
    """All row indices in subset priority order (see the module docstring)."""
    rows, ids = _labels_and_ids(labels)
    n = len(rows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.array([_key(seed, i) for i in ids], dtype=np.uint64)
    counts: dict[int, int] = {}
    for row in rows:
        for k in set(row):
            counts[k] = counts.get(k, 0) + 1
    # Stratum = rarest label (ties to the lower id); unlabelled rows form their own stratum.
    strata = np.array(
        [min(set(r), key=lambda k: (counts[k], k)) if r else -1 for r in rows], dtype=np.int64
    )
    by_key = np.lexsort((np.arange(n), keys))
    first_of_class: dict[int, int] = {}
    for i in by_key.tolist():
        for k in rows[i]:
            first_of_class.setdefault(k, i)
    head: list[int] = []
    covered: set[int] = set()
    for k in sorted(counts, key=lambda c: (counts[c], c)):
        if k not in covered:
            # The lowest-key image of an uncovered class cannot already be in the head.
            head.append(first_of_class[k])
            covered.update(rows[first_of_class[k]])
    position = np.empty(n, dtype=np.float64)
    for s in np.unique(strata):
        members = by_key[strata[by_key] == s]
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    rest = np.lexsort((keys, position))
    in_head = np.zeros(n, dtype=bool)
    in_head[head] = True
    return np.concatenate([np.array(head, dtype=np.int64), rest[~in_head[rest]].astype(np.int64)])


def subset_size(n: int, proportion: float) -> int:
    """round(proportion * n), halves rounded up; ValueError for a proportion outside (0, 1]."""
    if not 0 < proportion <= 1:
        raise ValueError(f"proportion must be in (0, 1], got {proportion!r}")
    return int(np.floor(proportion * n + 0.5))


def stratified_subset(
    labels: Sequence[Sequence[int]] | pa.Table, proportion: float, *, seed: int = 0
) -> np.ndarray:
    """Sorted row indices of the ``proportion`` subset; nested across proportions for one seed.

    ``labels`` is a sequence of per-image class-id lists or a manifest table (whose image_ids
    then key the order, so the subset follows the images, not their row positions). Raises
    ValueError when the subset would be empty.
    """
    order = priority_order(labels, seed=seed)
    m = subset_size(len(order), proportion)
    if m == 0:
        raise ValueError(
            f"proportion {proportion} of {len(order)} images selects no image; "
            "use a larger proportion or more data"
        )
    return np.sort(order[:m])


def take_subset(manifest: pa.Table, proportion: float, *, seed: int = 0) -> pa.Table:
    """The manifest rows of :func:`stratified_subset`."""
    return manifest.take(pa.array(stratified_subset(manifest, proportion, seed=seed)))
