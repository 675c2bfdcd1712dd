"""Seeds on IRN's scale (``seed_power``), IRN's label CRF on the confident labels, the dense
models' image preparation, and AffinityNet's grid stride through its model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camflow.models.classifier import dense_prep_of
from camflow.postprocess.masks import pseudo_mask_of_classes
from camflow.refine import IRN_CAM_THRESHOLD, AffinityNet, RefineOptions, seed_power
from camflow.refine.checkpoint import load_affinity, save_affinity
from camflow.refine.seeds import confident_labels


def test_the_calibrated_background_score_becomes_irns_cam_threshold():
    power = seed_power(0.7)
    assert 0.7 ** power == pytest.approx(IRN_CAM_THRESHOLD)
    assert seed_power(IRN_CAM_THRESHOLD) == pytest.approx(1.0)
    assert seed_power(None) == 1.0
    assert seed_power(0.5, RefineOptions(cam_threshold=0.25)) == pytest.approx(2.0)
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="seed background threshold"):
            seed_power(bad)


def test_the_power_leaves_the_unrefined_pseudo_masks_as_they_were():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 16, 16, generator=g)
    maps /= maps.amax(dim=(1, 2), keepdim=True)
    power = seed_power(0.6)
    before = pseudo_mask_of_classes(maps.numpy(), [3, 5], threshold=0.6)
    after = pseudo_mask_of_classes((maps ** power).numpy(), [3, 5], threshold=IRN_CAM_THRESHOLD)
    assert (before == after).all() and (before == 0).any() and (before > 0).any()


def _square_image_and_offset_seed(size: int = 48) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """A red square on grey, and a seed blob that spills three pixels past it on every side."""
    image = np.full((size, size, 3), 90, dtype=np.uint8)
    image[16:32, 16:32] = (220, 30, 30)
    truth = np.zeros((size, size), dtype=bool)
    truth[16:32, 16:32] = True
    yy, xx = np.mgrid[:size, :size]
    seed = np.clip(1.0 - np.maximum(abs(yy - 23.5), abs(xx - 23.5)) / 14.0, 0, 1)
    return image, torch.from_numpy(seed[None].astype(np.float32)), truth


def test_irns_label_crf_pulls_the_confident_labels_onto_the_object():
    image, seed, truth = _square_image_and_offset_seed()
    ids = np.array([2])
    plain = confident_labels(seed, ids, 4, RefineOptions(fg_threshold=0.3, bg_threshold=0.05,
                                                         crf=False))
    refined = confident_labels(seed, ids, 4, RefineOptions(fg_threshold=0.3, bg_threshold=0.05),
                               image=image)
    assert set(np.unique(refined)) <= {0, 3, 255}

    def errors(labels: np.ndarray) -> int:
        return int(((labels == 3) & ~truth).sum() + ((labels == 0) & truth).sum())

    assert errors(plain) > 0 and errors(refined) < errors(plain) / 2, (errors(plain),
                                                                      errors(refined))
    with pytest.raises(ValueError, match="image 'im7'.*need the image"):
        confident_labels(seed, ids, 4, RefineOptions(), "im7")


def test_the_power_moves_the_confident_thresholds():
    _, seed, _ = _square_image_and_offset_seed()
    options = RefineOptions(crf=False)
    ids = np.array([0])
    raw = confident_labels(seed, ids, 1, options)
    scaled = confident_labels(seed, ids, 1, options, power=seed_power(0.7))
    assert (scaled == 1).sum() < (raw == 1).sum()  # foreground now needs 0.3 ** (1 / p) ~ 0.80
    assert ((seed[0] ** seed_power(0.7)).numpy()[scaled == 1] > 0.3).all()


def test_dense_models_see_images_at_the_masks_size_with_the_classifiers_normalisation():
    from camflow.data.transforms import ImagePrep
    from camflow.models import build

    classifier = build("resnet18", 3)
    classifier.image_prep = ImagePrep(64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    prep = dense_prep_of(classifier, 112)
    assert prep.size == (112, 112) and prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.25,) * 3


@pytest.mark.parametrize("stride", [4, 8])
def test_the_affinity_grid_stride_travels_in_the_model_file(tmp_path, stride: int):
    torch.manual_seed(0)
    net = AffinityNet("resnet18", stride=stride).eval()
    x = torch.randn(1, 3, 32, 32)
    path = str(tmp_path / "aff.safetensors")
    save_affinity(net, path, {"history": [1.0]})
    loaded, meta = load_affinity(path)
    assert loaded.stride == stride and meta["stride"] == stride
    with torch.no_grad():
        assert net(x).shape[-1] == 32 // stride
        assert torch.equal(net(x), loaded(x))


def test_refine_options_are_checked():
    with pytest.raises(ValueError, match="stride must be one of"):
        RefineOptions(stride=2)
    with pytest.raises(ValueError, match="cam_threshold"):
        RefineOptions(cam_threshold=0.0)
    with pytest.raises(ValueError, match="affinity stride"):
        AffinityNet("resnet18", stride=16)
