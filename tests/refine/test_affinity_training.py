"""AffinityNet learns which neighbours share a label from confident labels of a tiny dataset."""

from __future__ import annotations

import pytest
import torch

from camflow.refine import AffinityNet, affinity_targets, half_offsets, labels_on_grid
from camflow.refine.train import AffinityTraining, ConfidentItems, fit_affinity


def _items(n: int = 4, size: int = 64) -> ConfidentItems:
    g = torch.Generator().manual_seed(0)
    images, labels = [], []
    for i in range(n):
        y, x = 8 + 4 * i, 12 + 2 * i
        image = 0.1 * torch.randn(3, size, size, generator=g)
        image[:, y:y + 28, x:x + 28] += 2.0
        label = torch.full((size, size), 255, dtype=torch.uint8)
        label[:] = 0
        label[y - 4:y + 32, x - 4:x + 32] = 255  # undecided around the object
        label[y + 4:y + 24, x + 4:x + 24] = 1
        images.append(image)
        labels.append(label)
    return ConfidentItems(images, labels, [f"im{i}" for i in range(n)])


# Radius in grid cells: each must reach across the 8-pixel undecided band for negative pairs.
@pytest.mark.parametrize(("stride", "radius"), [(4, 5), (8, 3)])
def test_affinity_training_separates_object_from_background(stride: int, radius: int):
    torch.manual_seed(0)
    items = _items()
    net = AffinityNet("resnet18", stride=stride)
    history = fit_affinity(net, items, radius=radius,
                           config=AffinityTraining(epochs=25, batch_size=4, lr=0.01))
    assert history[-1] < 0.5 * history[0], history
    images = torch.stack(items.images)
    with torch.no_grad():
        affinity = net.affinities(images, radius)
    assert affinity.shape[-1] == 64 // stride
    grid = labels_on_grid(torch.stack(items.targets), tuple(affinity.shape[-2:]))
    t = affinity_targets(grid, radius)
    same = affinity[t.bg_positive | t.fg_positive].mean()
    across = affinity[t.negative].mean()
    assert same > 0.6 and across < 0.3 and same - across > 0.5, (same.item(), across.item())


def test_items_must_fit_their_images():
    with pytest.raises(ValueError, match="image 'a'"):
        ConfidentItems([torch.zeros(3, 8, 8)], [torch.zeros(4, 4, dtype=torch.uint8)], ["a"])
    assert len(half_offsets(3)) == 12  # the 5 x 5 window: every dy² + dx² < 9


def test_affinity_net_starts_from_a_classifier_and_refines_within_its_classes():
    import numpy as np

    from camflow.models import build
    from camflow.outputs import quantize_seed, seed_rows
    from camflow.refine import RefineOptions
    from camflow.refine.seeds import confident_labels, refine_masks, seed_maps

    torch.manual_seed(0)
    classifier = build("resnet18", 5)
    net = AffinityNet.from_classifier(classifier)
    assert torch.equal(net.stages[4][0].conv1.weight, classifier.stage5[0].conv1.weight)
    maps = torch.zeros(2, 32, 32)
    maps[0, 2:14, 2:14], maps[1, 18:30, 18:30] = 1.0, 0.9
    q, h, w = quantize_seed(maps, stride=1)
    rows = seed_rows("im", [3, 1], q, size=(32, 32), stride=1, scales=[1.0])
    ids, got = seed_maps(rows[::-1], (32, 32))
    assert ids.tolist() == [1, 3] and torch.allclose(got[1], maps[0], atol=1 / 255)
    options = RefineOptions(radius=3, steps=16, crf=False)
    labels = confident_labels(got, ids, 5, options)
    assert set(np.unique(labels)) <= {0, 2, 4, 255} and (labels == 4).any()
    masks = refine_masks(net, torch.randn(1, 3, 32, 32), [got], [ids], options)
    assert masks[0].shape == (32, 32) and set(np.unique(masks[0])) <= {0, 2, 4}
