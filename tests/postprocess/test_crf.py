import numpy as np
import pytest

from camflow.postprocess import IRN_LABEL_CRF, CRFParams, crf_from_labels, crf_from_probs


def _two_colour_image(h=24, w=32):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)
    img[:, w // 2 :] = (30, 30, 200)
    return img


def test_defaults_are_the_reference_pipelines():
    p = CRFParams()
    assert (p.gaussian_sxy, p.gaussian_compat) == (3.0, 3.0)
    assert (p.bilateral_sxy, p.bilateral_srgb, p.bilateral_compat) == (80.0, 13.0, 10.0)
    assert p.iterations == 10
    assert (IRN_LABEL_CRF.bilateral_sxy, IRN_LABEL_CRF.bilateral_srgb) == (50.0, 5.0)


def test_probability_crf_snaps_noisy_scores_to_colour_edges():
    img = _two_colour_image()
    truth = np.zeros(img.shape[:2], np.int64)
    truth[:, 16:] = 1
    rng = np.random.default_rng(0)
    p1 = np.where(truth == 1, 0.65, 0.35) + rng.uniform(-0.3, 0.3, truth.shape)
    p1 = np.clip(p1, 0.01, 0.99)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    before = (probs.argmax(0) == truth).mean()
    q = crf_from_probs(img, probs)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    after = (q.argmax(0) == truth).mean()
    assert before < 0.95 and after == 1.0


def test_label_crf_fixes_a_wrong_patch_inside_a_uniform_region():
    img = _two_colour_image()
    labels = np.zeros(img.shape[:2], np.int64)
    labels[:, 16:] = 1
    noisy = labels.copy()
    noisy[8:12, 4:8] = 1  # wrong label inside the red half
    out = crf_from_labels(img, noisy, n_labels=2)
    np.testing.assert_array_equal(out, labels)


def test_crf_refuses_mismatched_or_non_uint8_images():
    probs = np.full((2, 24, 32), 0.5, np.float32)
    with pytest.raises(ValueError, match="img_3"):
        crf_from_probs(np.zeros((10, 10, 3), np.uint8), probs, name="img_3")
    with pytest.raises(ValueError, match="uint8"):
        crf_from_probs(np.zeros((24, 32, 3), np.float32), probs)
    with pytest.raises(ValueError, match="iterations"):
        CRFParams(iterations=0)
