"""The random walk against hand-computed and dense-matrix cases; the refinement keeps to the
image's own classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camflow.postprocess import pseudo_mask_of_classes
from camflow.refine import (
    RefineOptions,
    affinity_targets,
    half_offsets,
    random_walk,
    refined_scores,
    transition,
    window_offsets,
)


def test_offsets_are_the_disc_and_each_pair_once():
    assert len(window_offsets(5)) == 69  # dy² + dx² < 25 on the 9 x 9 window
    half = half_offsets(5)
    assert len(half) == 34 and (0, 0) not in half
    assert {(-dy, -dx) for dy, dx in half}.isdisjoint(half)
    assert set(half) | {(-dy, -dx) for dy, dx in half} | {(0, 0)} == set(window_offsets(5))


def test_walk_on_three_pixels_by_hand():
    # One row of three pixels; radius 2 joins each to its left and right neighbour only.
    half = half_offsets(2)
    affinity = torch.zeros(1, len(half), 1, 3)
    right = half.index((0, 1))
    affinity[0, right, 0, 0] = 0.5  # pixels 0-1
    affinity[0, right, 0, 1] = 1.0  # pixels 1-2
    weights = transition(affinity, radius=2, beta=1.0)
    # A = [[1, .5, 0], [.5, 1, 1], [0, 1, 1]] (self loops 1), T = D^-1 A.
    x = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    one = random_walk(x, weights, radius=2, steps=1)[0, 0, 0]
    two = random_walk(x, weights, radius=2, steps=2)[0, 0, 0]
    assert one.tolist() == pytest.approx([1 / 1.5, 0.5 / 2.5, 0.0])
    assert two.tolist() == pytest.approx([(2 / 3 + 0.1) / 1.5, (1 / 3 + 0.2) / 2.5, 0.1])
    assert random_walk(x, weights, radius=2, steps=0).equal(x)


def test_walk_equals_the_dense_transition_matrix_power():
    torch.manual_seed(0)
    h, w, radius, beta, steps = 4, 5, 3, 2.0, 7
    half = half_offsets(radius)
    affinity = torch.rand(1, len(half), h, w, dtype=torch.float64)
    n = h * w
    a = np.eye(n)
    for p, (dy, dx) in enumerate(half):
        for y in range(h):
            for x in range(w):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    i, j = y * w + x, (y + dy) * w + x + dx
                    a[i, j] = a[j, i] = affinity[0, p, y, x].item() ** beta
    t = a / a.sum(axis=1, keepdims=True)
    maps = torch.rand(1, 3, h, w, dtype=torch.float64)
    want = np.linalg.matrix_power(t, steps) @ maps[0].reshape(3, n).numpy().T
    got = random_walk(maps, transition(affinity, radius, beta), radius, steps)
    np.testing.assert_allclose(got[0].reshape(3, n).numpy().T, want, rtol=1e-10)


def test_refinement_keeps_to_the_images_own_classes():
    torch.manual_seed(1)
    seeds = torch.zeros(2, 3, 32, 32)
    seeds[0, 0, 4:14, 4:14] = 1.0  # image 0: classes 7 and 2
    seeds[0, 1, 18:28, 18:28] = 0.8
    seeds[1, 0, 8:24, 8:24] = 1.0  # image 1: class 5 only, padded with two zero maps
    affinity = torch.rand(2, len(half_offsets(5)), 4, 4)
    refined = refined_scores(seeds, affinity, RefineOptions())
    assert refined.shape == seeds.shape
    assert refined[0, 2].abs().max() == 0 and refined[1, 1:].abs().max() == 0
    assert refined.amax(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0])
    mask0 = pseudo_mask_of_classes(refined[0, :2], [7, 2], threshold=0.25)
    mask1 = pseudo_mask_of_classes(refined[1, :1], [5], threshold=0.25)
    assert set(np.unique(mask0)) <= {0, 8, 3} and set(np.unique(mask1)) <= {0, 6}
    assert (mask1 == 6).any()


def test_affinity_targets():
    labels = torch.tensor([[[0, 0, 1, 255]]], dtype=torch.uint8)
    t = affinity_targets(labels, radius=2)
    right = half_offsets(2).index((0, 1))
    assert t.bg_positive[0, right, 0].tolist() == [True, False, False, False]
    assert t.negative[0, right, 0].tolist() == [False, True, False, False]
    assert t.fg_positive.sum() == 0
    assert (t.bg_positive | t.fg_positive | t.negative).sum() == 2  # 1-255 and edges: nothing


def test_options_are_checked():
    with pytest.raises(ValueError, match="bg_threshold <= fg_threshold"):
        RefineOptions(fg_threshold=0.1, bg_threshold=0.2)
    with pytest.raises(ValueError, match="radius"):
        RefineOptions(radius=0)
