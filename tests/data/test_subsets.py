"""Deterministic, stratified, nested subsets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from camflow.data.manifest import make_manifest
from camflow.data.subsets import PROPORTIONS, priority_order, stratified_subset, take_subset

GOLDEN_LABELS = [
    [4], [0, 5], [1], [2], [2], [2, 5], [1], [4, 5], [0, 3], [1], [4], [1, 2], [0, 3], [5],
    [1, 5], [1, 3], [1], [0], [0], [1, 2], [0], [2], [4], [5], [3], [3, 5], [1, 2], [5], [4],
    [1, 2], [2, 5], [1, 3], [0, 3], [3], [1, 3], [1, 5], [1, 2], [4], [2], [4],
]  # fmt: skip


def _random_labels(n: int, num_classes: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # Skewed class frequencies, as in real data: class k appears ~ 1 / (k + 1) as often.
    weights = 1.0 / np.arange(1, num_classes + 1)
    weights /= weights.sum()
    return [
        sorted(set(rng.choice(num_classes, size=int(rng.integers(1, 4)), p=weights).tolist()))
        for _ in range(n)
    ]


def test_same_subset_on_any_machine() -> None:
    # Recorded once: BLAKE2b keys and IEEE arithmetic give these indices everywhere.
    assert stratified_subset(GOLDEN_LABELS, 0.2, seed=0).tolist() == [6, 10, 11, 24, 27, 28, 29, 32]
    assert stratified_subset(GOLDEN_LABELS, 0.2, seed=1).tolist() == [0, 4, 9, 17, 20, 25, 29, 35]


def test_subsets_nest_and_have_the_right_size() -> None:
    labels = _random_labels(1000, 20, seed=0)
    previous: set[int] = set()
    for proportion in PROPORTIONS:
        subset = stratified_subset(labels, proportion, seed=7)
        assert len(subset) == round(proportion * 1000)
        assert np.all(np.diff(subset) > 0)  # sorted, unique
        assert previous <= set(subset.tolist())
        previous = set(subset.tolist())
    assert previous == set(range(1000))


def test_every_class_present_once_the_subset_is_large_enough() -> None:
    labels = _random_labels(1000, 20, seed=1)
    subset = stratified_subset(labels, 0.02, seed=3)  # 20 images for 20 classes
    assert {k for i in subset for k in labels[i]} == set(range(20))


def test_stratified_class_shares_follow_the_full_set_better_than_random() -> None:
    labels = _random_labels(2000, 10, seed=2)
    full = np.bincount([k for r in labels for k in r], minlength=10) / len(labels)

    def deviation(indices) -> np.ndarray:
        part = np.bincount([k for i in indices for k in labels[i]], minlength=10) / len(indices)
        return np.abs(part - full)

    stratified = np.mean([deviation(stratified_subset(labels, 0.1, seed=s)) for s in range(10)], 0)
    random = np.mean(
        [deviation(np.random.default_rng(s).permutation(2000)[:200]) for s in range(10)], 0
    )
    assert stratified.mean() < 0.7 * random.mean()
    rarest = int(np.argmin(full))
    assert stratified[rarest] < 0.5 * random[rarest]


def test_seeds_differ_and_repeat() -> None:
    labels = _random_labels(300, 5, seed=3)
    a = stratified_subset(labels, 0.1, seed=0)
    assert np.array_equal(a, stratified_subset(labels, 0.1, seed=0))
    assert not np.array_equal(a, stratified_subset(labels, 0.1, seed=1))


def test_manifest_input_follows_image_ids_not_row_positions() -> None:
    labels = _random_labels(200, 6, seed=4)
    rows = [
        {"image_id": f"img{i}", "uri": f"/x/{i}.jpg", "split": "train", "labels": r,
         "width": 1, "height": 1}
        for i, r in enumerate(labels)
    ]  # fmt: skip
    table = make_manifest(rows)
    shuffled = make_manifest(rows[::-1])
    picked = set(take_subset(table, 0.1, seed=5).column("image_id").to_pylist())
    assert picked == set(take_subset(shuffled, 0.1, seed=5).column("image_id").to_pylist())
    assert len(picked) == 20


def test_empty_result_and_bad_proportion_raise() -> None:
    with pytest.raises(ValueError, match="selects no image"):
        stratified_subset([[0]] * 10, 0.01)
    with pytest.raises(ValueError, match="selects no image"):
        stratified_subset([], 0.5)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="proportion"):
            stratified_subset([[0]] * 10, bad)


def test_priority_order_is_a_permutation() -> None:
    labels = _random_labels(57, 4, seed=6) + [[]]
    order = priority_order(labels, seed=2)
    assert sorted(order.tolist()) == list(range(58))
    assert priority_order(pa.table({"labels": [[1], [0]]})).tolist() in ([0, 1], [1, 0])
