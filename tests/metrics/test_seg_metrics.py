import json

import numpy as np
import pytest
import torch

from camflow.metrics import BadInputError, SeedSweep, SegConfusion


def test_seg_confusion_hand_computed():
    pred = np.array([[[0, 1, 1], [2, 2, 0]]])
    gt = np.array([[[0, 1, 2], [2, 255, 0]]])
    acc = SegConfusion(3)
    acc.update(pred, gt)
    # gt 0: pred 0 twice; gt 1: pred 1; gt 2: pred 1 once, pred 2 once; one pixel ignored
    np.testing.assert_array_equal(acc.confusion, [[2, 0, 0], [0, 1, 0], [0, 1, 1]])
    out = acc.compute()
    assert out["IoU"] == pytest.approx([1.0, 0.5, 0.5])
    assert out["mIoU"] == pytest.approx(2 / 3)
    assert out["precision"] == pytest.approx([1.0, 0.5, 1.0])
    assert out["recall"] == pytest.approx([1.0, 1.0, 0.5])


def test_seg_confusion_skips_predicted_ignore_and_absent_labels():
    acc = SegConfusion(4)
    acc.update(torch.tensor([[[0, 255, 1]]]), torch.tensor([[[0, 1, 1]]]))
    out = acc.compute()
    assert acc.confusion.sum() == 2
    assert np.isnan(out["IoU"][2]) and np.isnan(out["IoU"][3])
    assert out["mIoU"] == pytest.approx(1.0)


def test_seg_confusion_accepts_images_of_different_sizes():
    acc = SegConfusion(2)
    acc.update(
        [np.zeros((2, 3), int), np.ones((4, 1), int)], [np.zeros((2, 3), int), np.ones((4, 1), int)]
    )
    np.testing.assert_array_equal(acc.confusion, [[6, 0], [0, 4]])


def _random_batch(rng, b=6, c=4, h=9, w=11):
    # Multiples of 1/20 so that many scores tie exactly with thresholds.
    cams = (rng.integers(0, 21, size=(b, c, h, w)) / 20).astype(np.float32)
    labels = (rng.random((b, c)) < 0.5).astype(np.int64)
    labels[0] = 0  # an image with no class at all
    gt = rng.integers(0, c + 1, size=(b, h, w))
    gt[rng.random((b, h, w)) < 0.1] = 255
    return cams, labels, gt


def _argmax_at(cams, labels, t):
    """The definition, spelled out: argmax over [t, own-class cams], ties to background."""
    own = np.where(labels[:, :, None, None] == 1, cams, -1.0)
    stacked = np.concatenate([np.full_like(cams[:, :1], t), own], axis=1)
    return stacked.argmax(axis=1)


def test_each_sweep_entry_equals_that_threshold_alone():
    rng = np.random.default_rng(0)
    cams, labels, gt = _random_batch(rng)
    sweep = SeedSweep(4)
    sweep.update(cams, labels, gt)
    out = sweep.compute()
    for k, t in enumerate(sweep.thresholds):
        alone = SegConfusion(5)
        alone.update(_argmax_at(cams, labels, np.float32(t)), gt)
        np.testing.assert_array_equal(sweep.confusion[k], alone.confusion)
        assert out["mIoU"][k] == pytest.approx(alone.compute()["mIoU"])
        single = SeedSweep(4, thresholds=[t])
        single.update(cams, labels, gt)
        np.testing.assert_array_equal(single.confusion[0], sweep.confusion[k])


def test_seed_sweep_hand_computed():
    cams = np.array([[[[0.1, 0.4, 0.6, 0.9]]]], np.float32)
    gt = np.array([[[0, 0, 1, 1]]])
    sweep = SeedSweep(1, thresholds=[0.3, 0.5, 0.7])
    sweep.update(cams, np.array([[1]]), gt)
    out = sweep.compute()
    # t=0.3: [0,1,1,1] -> bg IoU 1/2, fg 2/3; t=0.5: perfect; t=0.7: bg 2/3, fg 1/2
    assert out["mIoU"] == pytest.approx([7 / 12, 1.0, 7 / 12])
    assert out["best_threshold"] == 0.5 and out["best_mIoU"] == 1.0
    assert out["IoU"] == [1.0, 1.0]


@pytest.mark.parametrize(
    "cls, make",
    [
        (SeedSweep, lambda: SeedSweep(4)),
        (SegConfusion, lambda: SegConfusion(5)),
    ],
)
def test_merging_shards_equals_one_pass(cls, make):
    rng = np.random.default_rng(1)
    cams, labels, gt = _random_batch(rng, b=9)
    pred = _argmax_at(cams, labels, 0.35)

    def feed(acc, sl):
        if cls is SeedSweep:
            acc.update(cams[sl], labels[sl], gt[sl])
        else:
            acc.update(pred[sl], gt[sl])

    whole = make()
    feed(whole, slice(None))
    shards = [make() for _ in range(3)]
    for i, acc in enumerate(shards):
        feed(acc, slice(3 * i, 3 * i + 3))
    # shards travel as safetensors bytes, as they do between workers
    merged = cls.from_bytes(shards[0].to_bytes())
    for acc in shards[1:]:
        merged.merge(cls.from_state(acc.state_dict()))
    np.testing.assert_array_equal(merged.confusion, whole.confusion)
    assert json.dumps(merged.compute()) == json.dumps(whole.compute())


def test_merge_refuses_different_configurations():
    with pytest.raises(ValueError, match="thresholds"):
        SeedSweep(3).merge(SeedSweep(3, thresholds=[0.1, 0.2]))
    with pytest.raises(TypeError):
        SeedSweep(3).merge(SegConfusion(4))


def _bad_cases():
    rng = np.random.default_rng(2)
    cams, labels, gt = _random_batch(rng, b=3)
    nan = cams.copy()
    nan[1, 0, 0, 0] = np.nan
    high = cams.copy()
    high[1, 2, 3, 3] = 1.01
    empty = gt.copy()
    empty[1] = 255
    return (
        cams,
        labels,
        gt,
        [
            ((nan, labels, gt), "NaN"),
            ((high, labels, gt), r"outside \[0, 1\]"),
            ((cams, labels, empty), "empty ground truth"),
            (([cams[0], cams[1][:, :5], cams[2]], labels, list(gt)), "shape"),
        ],
    )


@pytest.mark.parametrize("case", range(4))
def test_seed_sweep_bad_input_names_the_image(case):
    cams, labels, gt, cases = _bad_cases()
    args, match = cases[case]
    sweep = SeedSweep(4)
    with pytest.raises(BadInputError, match=f"image 'img_b'.*{match}") as err:
        sweep.update(*args, image_ids=["img_a", "img_b", "img_c"])
    assert err.value.image_ids == ["img_b"]
    assert sweep.confusion.sum() == 0  # nothing counted from a refused batch
    # skipping the bad image counts exactly the good ones
    rejects = sweep.update(*args, image_ids=["img_a", "img_b", "img_c"], on_error="skip")
    assert [r.image_id for r in rejects] == ["img_b"]
    good = SeedSweep(4)
    good.update(cams[[0, 2]], labels[[0, 2]], gt[[0, 2]])
    np.testing.assert_array_equal(sweep.confusion, good.confusion)


def test_seg_confusion_bad_input_defaults_to_batch_index():
    acc = SegConfusion(3)
    with pytest.raises(BadInputError, match="image '1'.*shape"):
        acc.update([np.zeros((2, 2), int)] * 2, [np.zeros((2, 2), int), np.zeros((3, 2), int)])
    with pytest.raises(BadInputError, match="image '0'.*empty ground truth"):
        acc.update(np.zeros((1, 2, 2), int), np.full((1, 2, 2), 255))
    with pytest.raises(BadInputError, match="image '0'.*label 7"):
        acc.update(np.full((1, 2, 2), 7), np.zeros((1, 2, 2), int))


def test_empty_accumulators_compute_to_nan():
    assert np.isnan(SegConfusion(3).compute()["mIoU"])
    out = SeedSweep(2).compute()
    assert np.isnan(out["best_mIoU"]) and len(out["mIoU"]) == 19


def test_seed_sweep_refuses_wrong_labels_and_channel_counts():
    cams = np.zeros((1, 3, 2, 2), np.float32)
    gt = np.zeros((1, 2, 2), int)
    with pytest.raises(BadInputError, match="image 'x'.*multi-hot of length 3"):
        SeedSweep(3).update(cams, np.array([[1, 0]]), gt, image_ids=["x"])
    with pytest.raises(BadInputError, match="image 'x'.*3 channels, expected 4"):
        SeedSweep(4).update(cams, np.array([[1, 0, 0, 0]]), gt, image_ids=["x"])
    with pytest.raises(BadInputError, match="image 'x'.*label 9"):
        SeedSweep(3).update(cams, np.array([[1, 0, 0]]), gt + 9, image_ids=["x"])


def test_seed_sweep_from_own_class_maps_equals_the_padded_update():
    rng = np.random.default_rng(3)
    padded, own_only = SeedSweep(5), SeedSweep(5)
    for classes in ([1, 3], [0], [4, 2, 0]):
        gt = rng.choice([0, *(c + 1 for c in classes), 255], size=(9, 7)).astype(np.uint8)
        own = rng.random((len(classes), 9, 7)).astype(np.float32)
        full = np.zeros((5, 9, 7), np.float32)
        full[classes] = own
        hot = np.zeros(5, np.int64)
        hot[classes] = 1
        padded.update([full], [hot], [gt])
        own_only.update_classes([own], [classes], [gt])
    np.testing.assert_array_equal(padded.confusion, own_only.confusion)


def test_seed_sweep_own_class_maps_name_a_bad_image():
    sweep = SeedSweep(3)
    gt = np.zeros((4, 4), np.uint8)
    rejected = sweep.update_classes([np.ones((1, 4, 4), np.float32), np.ones((1, 4, 4), np.float32)],
                                    [[5], [1]], [gt, gt], image_ids=["bad", "ok"], on_error="skip")
    assert [r.image_id for r in rejected] == ["bad"] and "class ids" in rejected[0].reason
    with pytest.raises(BadInputError, match="'two'"):
        sweep.update_classes([np.ones((1, 4, 4), np.float32)], [[0, 1]], [gt], image_ids=["two"])
