import numpy as np
import pytest
import torch

from camflow.postprocess import (
    BadInputError,
    CRFParams,
    background_score,
    confident_mask,
    decode_label_png,
    encode_label_png,
    pseudo_mask,
)


def _blobs():
    """Three classes on 20x20: class 0 blob left, class 2 blob right, class 1 everywhere."""
    cams = np.zeros((3, 20, 20), np.float32)
    cams[0, 5:15, 2:8] = 0.9
    cams[2, 5:15, 12:18] = 0.8
    cams[1] = 1.0  # absent from the labels: must never win
    labels = np.array([1, 0, 1])
    expected = np.zeros((20, 20), np.uint8)
    expected[5:15, 2:8] = 1
    expected[5:15, 12:18] = 3
    return cams, labels, expected


def test_pseudo_mask_on_blobs_uses_only_own_classes():
    cams, labels, expected = _blobs()
    mask = pseudo_mask(cams, labels, threshold=0.25)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)
    # torch input, same answer
    np.testing.assert_array_equal(
        pseudo_mask(torch.from_numpy(cams), torch.from_numpy(labels), threshold=0.25), expected
    )
    np.testing.assert_array_equal(decode_label_png(encode_label_png(mask)), expected)


def test_ties_go_to_background_and_no_class_means_background():
    cams = np.full((2, 3, 3), 0.25, np.float32)
    assert (pseudo_mask(cams, [1, 1], threshold=0.25) == 0).all()
    assert (pseudo_mask(np.ones((2, 3, 3), np.float32), [0, 0]) == 0).all()


def test_power_background_by_hand():
    scores = np.array([[[0.5, 0.2]], [[0.1, 0.6]]], np.float32)
    bg = background_score(scores, background="power", alpha=2.0)
    np.testing.assert_allclose(bg, [[0.25, 0.16]], rtol=1e-6)
    # (1 - 0.5)^2 = 0.25 < 0.5 -> class; (1 - 0.6)^2 = 0.16 < 0.6 -> class
    mask = pseudo_mask(np.concatenate([scores, np.zeros((1, 1, 2), np.float32)]), [1, 1, 0],
                       background="power", alpha=2.0)
    np.testing.assert_array_equal(mask, [[1, 2]])
    weak = np.array([[[0.3]]], np.float32)  # (0.7)^1 = 0.7 > 0.3 -> background
    assert pseudo_mask(weak, [1], background="power", alpha=1.0)[0, 0] == 0


def test_confident_mask_three_bands():
    cams = np.array([[[0.9, 0.2, 0.01, 0.3]]], np.float32)
    mask = confident_mask(cams, [1], fg_threshold=0.3, bg_threshold=0.05)
    # 0.9 > 0.3 fg; 0.2 between -> ignore; 0.01 < 0.05 bg; 0.3 ties fg threshold -> ignore
    np.testing.assert_array_equal(mask, [[1, 255, 0, 255]])


def test_pseudo_mask_with_crf_follows_the_image():
    img = np.zeros((20, 20, 3), np.uint8)
    img[5:15, 2:8] = (220, 40, 40)
    cams, labels, expected = _blobs()
    blurred = cams.copy()
    blurred[0, 4:16, 1:9] = np.maximum(blurred[0, 4:16, 1:9], 0.4)  # bleeds one pixel out
    assert (pseudo_mask(blurred, labels, threshold=0.25) != expected).any()
    img[5:15, 12:18] = (40, 40, 220)
    out = pseudo_mask(blurred, labels, background="power", alpha=1.0, image=img,
                      crf=CRFParams())
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="needs the RGB image"):
        pseudo_mask(cams, labels, crf=CRFParams(), image_id="im1")


def test_confident_mask_with_label_crf_runs():
    cams, labels, expected = _blobs()
    img = np.zeros((20, 20, 3), np.uint8)
    img[5:15, 2:8] = (220, 40, 40)
    img[5:15, 12:18] = (40, 40, 220)
    from camflow.postprocess import IRN_LABEL_CRF

    out = confident_mask(cams, labels, image=img, crf=IRN_LABEL_CRF)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda c: c.__setitem__((0, 0, 0), np.nan), "NaN"),
        (lambda c: c.__setitem__((0, 0, 0), 1.5), r"outside \[0, 1\]"),
        (lambda c: c.__setitem__((0, 0, 0), -0.1), r"outside \[0, 1\]"),
    ],
)
def test_bad_maps_name_the_image(mutate, match):
    cams, labels, _ = _blobs()
    mutate(cams)
    with pytest.raises(BadInputError, match=f"'cat_042'.*{match}") as err:
        pseudo_mask(cams, labels, image_id="cat_042")
    assert err.value.image_ids == ["cat_042"]


def test_bad_labels_name_the_image():
    cams, _, _ = _blobs()
    with pytest.raises(BadInputError, match="'dog_1'.*multi-hot"):
        pseudo_mask(cams, [1, 0], image_id="dog_1")
    with pytest.raises(BadInputError, match="'dog_2'.*0/1"):
        confident_mask(cams, [2, 0, 1], image_id="dog_2")


def test_top_channel_is_argmax_with_ties_to_the_first():
    from camflow.postprocess import top_channel

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4, (5, 30, 20)).astype(np.float32)  # many ties
    index, top = top_channel(stack)
    np.testing.assert_array_equal(index, stack.argmax(axis=0))
    np.testing.assert_array_equal(top, stack.max(axis=0))


def test_pseudo_mask_of_own_classes_equals_the_padded_call():
    from camflow.postprocess import pseudo_mask_of_classes

    cams, labels, _ = _blobs()
    own = np.flatnonzero(labels)
    for background in ("constant", "power"):
        want = pseudo_mask(cams, labels, background=background, threshold=0.3)
        got = pseudo_mask_of_classes(cams[own], own, background=background, threshold=0.3)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(BadInputError, match="'x'"):
        pseudo_mask_of_classes(cams[own], [0], image_id="x")
    with pytest.raises(BadInputError, match="distinct"):
        pseudo_mask_of_classes(cams[:2], [1, 1], image_id="x")
