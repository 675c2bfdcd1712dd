import numpy as np
import pytest
import torch
from scipy import ndimage

from camflow.postprocess import component_boxes, sweep_boxes
from camflow.postprocess.components import level_set_boxes


def _scipy_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return sorted((sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1)
                  for sl in ndimage.find_objects(labels))


def _bumpy_map(seed: int, shape=(37, 53)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 1, 5, 7), dtype=np.float32)) ** 3
    cam = torch.nn.functional.interpolate(coarse, size=shape, mode="bilinear")[0, 0].numpy()
    cam[rng.random(shape) < 0.05] = 0  # specks that split components apart
    return cam / cam.max()


@pytest.mark.parametrize("seed", range(6))
def test_every_level_set_matches_scipy_labelling(seed):
    cam = _bumpy_map(seed)
    thresholds = np.linspace(0, 0.95, 40).astype(np.float32)
    levels = np.searchsorted(thresholds, cam, side="left")
    boxes, owner = level_set_boxes(levels, len(thresholds))
    assert np.all(np.diff(owner) >= 0)
    for j, t in enumerate(thresholds):
        assert sorted(map(tuple, boxes[owner == j].tolist())) == _scipy_boxes(cam > t)


def test_a_component_inside_another_ones_hole_has_its_own_box():
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:8] = True
    mask[2:7, 2:7] = False  # a ring ...
    mask[4, 4] = True  # ... around a dot
    assert component_boxes(mask).tolist() == [[1, 1, 7, 7], [4, 4, 4, 4]]


def test_sweep_thresholds_in_any_order_keep_their_indices():
    cam = _bumpy_map(3)
    ordered = np.array([0.1, 0.4, 0.7])
    shuffled = ordered[[2, 0, 1]]
    boxes, owner = sweep_boxes(cam, ordered)
    boxes_s, owner_s = sweep_boxes(cam, shuffled)
    for k_shuffled, k in enumerate([2, 0, 1]):
        assert boxes_s[owner_s == k_shuffled].tolist() == boxes[owner == k].tolist()


def test_levels_out_of_range_are_refused():
    with pytest.raises(ValueError, match="0..3"):
        level_set_boxes(np.full((2, 2), 4), 3)
    empty_boxes, empty_owner = level_set_boxes(np.zeros((0, 5), np.int64), 3)
    assert empty_boxes.shape == (0, 4) and empty_owner.shape == (0,)


@pytest.mark.parametrize("seed", range(4))
def test_best_iou_sweep_equals_scoring_every_listed_box(seed):
    from camflow.metrics.wsol import box_iou
    from camflow.postprocess import sweep_best_iou

    cam = _bumpy_map(seed)
    rng = np.random.default_rng(seed)
    gt = np.sort(rng.uniform(0, 36, (3, 2, 2)), axis=1).transpose(0, 2, 1).reshape(3, 4)
    gt = gt[:, [0, 2, 1, 3]].round(1)  # x0 <= x1, y0 <= y1, fractional like real annotations
    thresholds = np.round(np.arange(0, 1, 0.01), 2)[::-1]  # any order
    boxes, owner = sweep_boxes(cam, thresholds)
    expected = np.zeros(len(thresholds))
    np.maximum.at(expected, owner, box_iou(boxes, gt).max(axis=1))
    np.testing.assert_array_equal(sweep_best_iou(cam, thresholds, gt), expected)
