"""Affinity refinement of CAM seeds (AffinityNet / IRN): confident labels -> an affinity network
-> a random walk on its affinities -> refined seeds, then pseudo masks as before.

Defaults are the papers': seeds put on IRN's scale (``seed_power``: the method's calibrated
background score becomes IRN's CAM threshold, 0.15), confident labels foreground above 0.30 and
background below 0.05 of the normalised seed, each refined by IRN's label CRF (IRN); pixel
features on IRN's stride-4 grid; neighbours within radius 5, transition affinity^8 and 256 steps
(AffinityNet: beta 8, T^(2^8)); after the walk the scores are normalised by the image's maximum
and compared with a constant background of 0.25 (IRN).
"""

from camflow.refine.affinity import (
    AFFINITY_STRIDE,
    AFFINITY_STRIDES,
    AffinityNet,
    AffinityTargets,
    affinity_loss,
    affinity_targets,
    labels_on_grid,
)
from camflow.refine.masks import IRN_CAM_THRESHOLD, RefineOptions, refined_scores, seed_power
from camflow.refine.walk import (
    half_offsets,
    pair_affinities,
    random_walk,
    transition,
    window_offsets,
)

__all__ = [
    "AFFINITY_STRIDE",
    "AFFINITY_STRIDES",
    "IRN_CAM_THRESHOLD",
    "AffinityNet",
    "AffinityTargets",
    "RefineOptions",
    "affinity_loss",
    "affinity_targets",
    "half_offsets",
    "labels_on_grid",
    "pair_affinities",
    "random_walk",
    "refined_scores",
    "seed_power",
    "transition",
    "window_offsets",
]
