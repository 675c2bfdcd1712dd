import numpy as np
import pytest
import torch
from scipy import ndimage

from camflow.postprocess import (
    BadInputError,
    box_threshold,
    class_boxes,
    component_boxes,
    extract_boxes,
    sweep_boxes,
)


def _two_blobs():
    """A big blob (rows 2..9, cols 3..12) at 1.0 and a small one (rows 14..16, cols 15..17)."""
    cam = np.zeros((20, 24), np.float32)
    cam[2:10, 3:13] = 1.0
    cam[14:17, 15:18] = 0.5
    return cam


def _smooth_cam(seed, size=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, 6, 6, generator=g)
    m = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")[0, 0]
    m = (m - m.min()) / (m.max() - m.min())
    return m.numpy()


def test_largest_and_all_components_on_blobs():
    cam = _two_blobs()
    largest = extract_boxes(cam, tau=0.2)
    np.testing.assert_array_equal(largest.boxes, [[3, 2, 12, 9]])
    found = extract_boxes(cam, tau=0.2, components="all")
    rows = sorted(map(tuple, found.boxes.tolist()))
    assert rows == [(3, 2, 12, 9), (15, 14, 17, 16)]
    # above half the max only the big blob survives
    np.testing.assert_array_equal(extract_boxes(cam, tau=0.6, components="all").boxes,
                                  [[3, 2, 12, 9]])


def test_scores_are_the_cam_inside_each_box():
    cam = _two_blobs()
    cam[5, 5] = 0.25  # one dip inside the big blob
    found = extract_boxes(cam, tau=0.2, components="all", score="mean")
    by_box = {tuple(b): s for b, s in zip(found.boxes.tolist(), found.scores)}
    assert by_box[(3, 2, 12, 9)] == pytest.approx((79 + 0.25) / 80)
    assert by_box[(15, 14, 17, 16)] == pytest.approx(0.5)
    peak = extract_boxes(cam, tau=0.2, components="all", score="max")
    assert sorted(peak.scores.tolist()) == [0.5, 1.0]


def test_pas_threshold_is_tau_times_percentile():
    cam = np.linspace(0, 1, 101, dtype=np.float64).reshape(1, -1)
    assert box_threshold(cam, tau=0.5, method="pas", percentile=90) == pytest.approx(0.45)
    assert box_threshold(cam, tau=0.2) == pytest.approx(0.2)
    # PaS keeps a blob that classic max-thresholding would drop next to a sharp peak
    cam2 = np.zeros((30, 30), np.float32)
    cam2[0:20, 0:20] = 0.15  # broad object: 44 % of the image
    cam2[25, 25] = 1.0  # a single hot pixel far away
    assert extract_boxes(cam2, tau=0.2).boxes.tolist() == [[25, 25, 25, 25]]
    assert extract_boxes(cam2, tau=0.5, method="pas", percentile=90).boxes.tolist() == [
        [0, 0, 19, 19]
    ]


def test_empty_cam_has_no_boxes():
    found = extract_boxes(np.zeros((8, 8), np.float32))
    assert found.boxes.shape == (0, 4) and found.scores.shape == (0,)


@pytest.mark.parametrize("multi", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_sweep_entry_equals_that_threshold_alone(seed, multi):
    cam = _smooth_cam(seed)
    thresholds = np.arange(0, 1, 0.05)
    boxes, owner = sweep_boxes(cam, thresholds, multi_contour=multi)
    for k, t in enumerate(thresholds):
        alone = extract_boxes(cam, tau=float(t), components="all" if multi else "largest")
        assert sorted(map(tuple, boxes[owner == k].tolist())) == sorted(
            map(tuple, alone.boxes.tolist())
        )


def test_class_boxes_table_columns():
    cams = np.zeros((3, 20, 24), np.float32)
    cams[0] = _two_blobs()
    cams[2, 0:4, 0:4] = 0.7
    cams[1] = 1.0
    table = class_boxes(torch.from_numpy(cams), np.array([1, 0, 1]), components="all")
    assert table["class_id"].tolist() == [0, 0, 2]
    boxes = np.stack([table[k] for k in ("x0", "y0", "x1", "y1")], axis=1)
    assert sorted(map(tuple, boxes[:2].tolist())) == [(3, 2, 12, 9), (15, 14, 17, 16)]
    assert boxes[2].tolist() == [0, 0, 3, 3]
    assert table["score"].dtype == np.float32 and len(table["score"]) == 3


@pytest.mark.parametrize("value, match", [(np.nan, "NaN"), (2.0, r"outside \[0, 1\]")])
def test_bad_maps_name_the_image(value, match):
    cam = _two_blobs()
    cam[0, 0] = value
    with pytest.raises(BadInputError, match=f"'bird_3'.*{match}"):
        extract_boxes(cam, image_id="bird_3")
    with pytest.raises(BadInputError, match="'bird_3'"):
        sweep_boxes(cam, [0.1, 0.2], image_id="bird_3")


@pytest.mark.parametrize("seed", range(4))
def test_component_boxes_agree_with_scipy_labelling(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((30, 40)) < 0.08 + 0.1 * seed  # specks, touching borders, merging
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    expected = sorted(
        (sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1)
        for sl in ndimage.find_objects(labels)
    )
    assert sorted(map(tuple, component_boxes(mask).tolist())) == expected


def test_sweep_on_a_large_map_works_in_blocks():
    cam = np.zeros((700, 700), np.float32)  # 101 masks would be 49 MB at once
    cam[100:200, 300:650] = 1.0
    cam[500:600, 50:60] = 0.3
    boxes, owner = sweep_boxes(cam, np.arange(0, 1, 0.01))
    assert np.bincount(owner).tolist() == [2] * 30 + [1] * 70
    assert boxes[owner == 99].tolist() == [[300, 100, 649, 199]]
