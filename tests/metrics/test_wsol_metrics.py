import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from camflow.metrics import BadInputError, BoxAccuracy, PixelAP, box_iou


def test_box_iou_counts_inclusive_pixels():
    iou = box_iou(np.array([[0, 0, 1, 1], [0, 0, 3, 3]]), np.array([[1, 1, 2, 2]]))
    # 2x2 boxes overlapping in one pixel: 1 / (4 + 4 - 1); second: 4 / 16
    np.testing.assert_allclose(iou[:, 0], [1 / 7, 4 / 16])


def _scene():
    """10x12 map: a big block at 1.0 (x 2..5, y 2..5), a small one at 0.5 (x 8..9, y 7..8)."""
    cam = np.zeros((10, 12), np.float32)
    cam[2:6, 2:6] = 1.0
    cam[7:9, 8:10] = 0.5
    return cam


def test_box_accuracy_hand_computed_multi_and_single_contour():
    cams = np.stack([_scene(), _scene(), _scene()])
    gt = [
        np.array([[2, 2, 5, 5]]),  # the big block: found at every threshold
        [[8, 7, 9, 8]],  # the small block: only multi-contour finds it, and only below 0.5
        np.array([[2, 2, 5, 7], [0, 0, 0, 0]]),  # big block vs 4x6 box: IoU 16/24
    ]
    thresholds = [0.0, 0.4, 0.6]
    multi = BoxAccuracy(thresholds=thresholds, multi_contour=True)
    multi.update(cams, gt, pred_correct=[True, False, True])
    out = multi.compute()
    # per threshold hits: IoU30/50 -> [3, 3, 2]; IoU70 -> [2, 2, 1]
    assert out["MaxBoxAcc"] == pytest.approx({30: 1.0, 50: 1.0, 70: 2 / 3})
    assert out["best_threshold"] == {30: 0.0, 50: 0.0, 70: 0.0}
    assert out["MaxBoxAccV2"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert out["GT-known loc"] == pytest.approx(1.0)
    assert out["top-1 loc"] == pytest.approx(2 / 3)

    single = BoxAccuracy(thresholds=thresholds, multi_contour=False)
    single.update(torch.from_numpy(cams), gt)
    out = single.compute()
    assert out["MaxBoxAcc"] == pytest.approx({30: 2 / 3, 50: 2 / 3, 70: 1 / 3})
    assert np.isnan(out["top-1 loc"])


def test_v1_setting_and_iou50_always_tracked():
    acc = BoxAccuracy(thresholds=[0.0, 0.5], iou=[70], multi_contour=False)
    acc.update(_scene()[None], [[[2, 2, 5, 7]]])
    out = acc.compute()
    assert out["MaxBoxAcc"] == {70: 0.0} and out["GT-known loc"] == 1.0


def _smooth_cams(seed, b=6, size=48):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(
        torch.rand(b, 1, 5, 5, generator=g), size=(size, size), mode="bilinear"
    )[:, 0]
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    return ((x - lo) / (hi - lo)).numpy()


def _random_boxes(rng, n_images, size):
    out = []
    for _ in range(n_images):
        k = rng.integers(1, 3)
        xy0 = rng.integers(0, size // 2, size=(k, 2))
        wh = rng.integers(4, size // 2, size=(k, 2))
        out.append(np.concatenate([xy0, np.minimum(xy0 + wh, size - 1)], axis=1))
    return out


def test_each_box_threshold_equals_that_threshold_alone():
    rng = np.random.default_rng(0)
    cams = _smooth_cams(0)
    gt = _random_boxes(rng, len(cams), 48)
    thresholds = np.arange(0, 1, 0.1)
    sweep = BoxAccuracy(thresholds=thresholds)
    sweep.update(cams, gt)
    assert sweep.correct.sum() > 0
    for k, t in enumerate(thresholds):
        alone = BoxAccuracy(thresholds=[t])
        alone.update(cams, gt)
        np.testing.assert_array_equal(alone.correct[:, 0], sweep.correct[:, k])


def test_box_accuracy_merge_equals_one_pass():
    rng = np.random.default_rng(1)
    cams = _smooth_cams(1, b=8)
    gt = _random_boxes(rng, 8, 48)
    correct = rng.random(8) < 0.5
    whole = BoxAccuracy()
    whole.update(cams, gt, correct)
    merged = BoxAccuracy()
    for i in range(0, 8, 3):
        shard = BoxAccuracy()
        shard.update(cams[i : i + 3], gt[i : i + 3], correct[i : i + 3])
        merged.merge(BoxAccuracy.from_bytes(shard.to_bytes()))
    for k in ("correct", "top1_correct", "n_images", "n_top1"):
        np.testing.assert_array_equal(getattr(merged, k), getattr(whole, k))
    assert json.dumps(merged.compute()) == json.dumps(whole.compute())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda c, b: c.__setitem__((1, 0, 0), np.nan), "NaN"),
        (lambda c, b: c.__setitem__((1, 0, 0), -0.5), r"outside \[0, 1\]"),
        (lambda c, b: b.__setitem__(1, np.zeros((0, 4))), "empty ground truth"),
        (lambda c, b: b.__setitem__(1, [[0, 0, 48, 10]]), "shape mismatch"),
        (lambda c, b: b.__setitem__(1, [[5, 5, 2, 9]]), "x1 < x0"),
    ],
)
def test_box_accuracy_bad_input_names_the_image(mutate, match):
    rng = np.random.default_rng(2)
    cams = _smooth_cams(2, b=3)
    gt = _random_boxes(rng, 3, 48)
    mutate(cams, gt)
    acc = BoxAccuracy()
    with pytest.raises(BadInputError, match=f"image 'n01_b'.*{match}"):
        acc.update(cams, gt, image_ids=["n01_a", "n01_b", "n01_c"])
    assert acc.n_images == 0
    rejects = acc.update(cams, gt, image_ids=["n01_a", "n01_b", "n01_c"], on_error="skip")
    assert [r.image_id for r in rejects] == ["n01_b"] and acc.n_images == 2


def test_pixel_ap_hand_computed():
    pxap = PixelAP(thresholds=[0.0, 0.5])
    pxap.update(np.array([[[0.2, 0.6, 0.9, 0.7]]]), np.array([[[1, 0, 1, 0]]]))
    out = pxap.compute()
    # >= 1.0: nothing predicted; >= 0.5: tp 1, fp 2 (P 1/3, R 1/2); >= 0: tp 2, fp 2 (P 1/2, R 1)
    assert out["PxAP"] == pytest.approx(1 / 3 * 1 / 2 + 1 / 2 * 1 / 2)
    assert out["precision"] == pytest.approx([0.5, 1 / 3])
    assert out["recall"] == pytest.approx([1.0, 0.5])


def test_pixel_ap_matches_sklearn_when_scores_lie_on_the_grid():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 100, size=(4, 16, 16)) / 100
    masks = rng.random((4, 16, 16)) < scores * 0.8 + 0.1
    ignore = rng.random((4, 16, 16)) < 0.1
    pxap = PixelAP(thresholds=np.arange(100) / 100)
    pxap.update(scores, masks, ignore)
    keep = ~ignore
    expected = average_precision_score(masks[keep], scores[keep])
    assert pxap.compute()["PxAP"] == pytest.approx(expected)


def test_pixel_ap_merge_and_255_ignore():
    rng = np.random.default_rng(4)
    scores = rng.random((6, 12, 12)).astype(np.float32)
    masks = (rng.random((6, 12, 12)) < scores).astype(np.uint8)
    masks[:, 0, :] = 255
    whole = PixelAP()
    whole.update(scores, masks)
    merged = PixelAP.from_state(PixelAP().state_dict())
    for i in range(0, 6, 2):
        shard = PixelAP()
        shard.update(scores[i : i + 2], masks[i : i + 2])
        merged.merge(shard)
    np.testing.assert_array_equal(merged.positive_hist, whole.positive_hist)
    assert whole.positive_hist.sum() + whole.negative_hist.sum() == 6 * 11 * 12
    assert merged.compute() == whole.compute()


def test_pixel_ap_bad_input_names_the_image():
    scores = np.full((2, 4, 4), 0.5)
    masks = np.ones((2, 4, 4), bool)
    acc = PixelAP()
    with pytest.raises(BadInputError, match="image 'p1'.*empty ground truth"):
        acc.update(scores, np.stack([masks[0], ~masks[1]]), image_ids=["p0", "p1"])
    with pytest.raises(BadInputError, match="image 'p0'.*shape"):
        acc.update([scores[0][:3], scores[1]], list(masks), image_ids=["p0", "p1"])
    bad = scores.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(BadInputError, match="image 'p0'.*NaN"):
        acc.update(bad, masks, image_ids=["p0", "p1"])
    assert acc.positive_hist.sum() == 0


def test_empty_accumulators_compute_to_nan():
    box = BoxAccuracy().compute()
    assert np.isnan(box["MaxBoxAccV2"]) and np.isnan(box["MaxBoxAcc"][50]) and box["n_images"] == 0
    px = PixelAP().compute()
    assert np.isnan(px["PxAP"]) and len(px["precision"]) == 100


def test_pas_percentile_sweep_finds_a_broad_object_next_to_a_hot_pixel():
    cam = np.zeros((30, 30), np.float32)
    cam[0:20, 0:20] = 0.15  # the object
    cam[25, 25] = 1.0  # a hot pixel
    gt = [[[0, 0, 19, 19]]]
    classic = BoxAccuracy(thresholds=[0.2, 0.5], multi_contour=False)
    classic.update(cam[None], gt)
    pas = BoxAccuracy(thresholds=[0.2, 0.5], multi_contour=False, percentile=90)
    pas.update(cam[None], gt)
    assert classic.compute()["GT-known loc"] == 0.0
    assert pas.compute()["GT-known loc"] == 1.0
    assert BoxAccuracy.from_bytes(pas.to_bytes()).percentile == 90.0
