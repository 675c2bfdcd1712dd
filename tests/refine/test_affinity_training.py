"""AffinityNet learns which neighbours share a label from confident labels of a tiny dataset."""

from __future__ import annotations

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


def test_affinity_training_separates_object_from_background():
    torch.manual_seed(0)
    items = _items()
    net = AffinityNet("resnet18")
    radius = 3
    history = fit_affinity(net, items, radius=radius,
                           config=AffinityTraining(epochs=25, batch_size=4, lr=0.01))
    assert history[-1] < 0.5 * history[0], history
    images = torch.stack(items.images)
    with torch.no_grad():
        affinity = net.affinities(images, radius)
    grid = labels_on_grid(torch.stack(items.labels), tuple(affinity.shape[-2:]))
    t = affinity_targets(grid, radius)
    same = affinity[t.bg_positive | t.fg_positive].mean()
    across = affinity[t.negative].mean()
    assert same > 0.6 and across < 0.3 and same - across > 0.5, (same.item(), across.item())


def test_items_must_fit_their_images():
    import pytest

    with pytest.raises(ValueError, match="image 'a'"):
        ConfidentItems([torch.zeros(3, 8, 8)], [torch.zeros(4, 4, dtype=torch.uint8)], ["a"])
    assert len(half_offsets(3)) == 12  # the 5 x 5 window: every dy² + dx² < 9
