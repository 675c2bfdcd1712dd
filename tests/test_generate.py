"""The core of seed generation: calibrated pseudo-mask thresholds and CRF-refined masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from camflow.data import embedded
from camflow.data.voc import read_voc
from camflow.generate import (
    CamMethod,
    GenerateOptions,
    best_bg_thresholds,
    class_maps,
    decode_records,
    shard_outputs,
    summarize,
)
from camflow.models import build
from camflow.options import CamOptions, MaskOptions
from camflow.postprocess import decode_label_png


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = embedded.build(tmp_path_factory.mktemp("gen-core") / "voc", seed=5, train=0, val=12,
                          size=64)
    decoded, rejects = decode_records(read_voc(root, "val").to_pylist())
    assert not rejects and all(im.gt_mask is not None for im in decoded)
    return decoded


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build("resnet18", len(embedded.CLASSES)).eval()


OPTS = GenerateOptions(num_classes=len(embedded.CLASSES), image_size=64,
                       cam=CamOptions(scales=(1.0,), flip=False))
CAM = CamMethod("cam", ("stage5",))


def _at(threshold: float) -> GenerateOptions:
    return dataclasses.replace(OPTS, mask=MaskOptions(bg_threshold=threshold))


def test_masks_made_at_the_calibrated_threshold_score_the_best_seed_miou(images, model):
    best = best_bg_thresholds(model, images, [CAM], OPTS)["cam"]
    assert 0 <= best <= 1
    maps = class_maps(model, images, [CAM], OPTS)["cam"]
    _, at_best = shard_outputs(images, maps, _at(best))
    summary = summarize(at_best)
    assert summary["seed_best_threshold"] == pytest.approx(best)
    # A constant-background pseudo mask is the seed at that threshold: same mIoU.
    assert summary["mask_mIoU"] == pytest.approx(summary["seed_mIoU"], abs=1e-9)
    other = 0.05 if best > 0.5 else 0.95
    _, elsewhere = shard_outputs(images, maps, _at(other))
    assert summarize(elsewhere)["mask_mIoU"] <= summary["mask_mIoU"]


def test_no_masks_no_calibration(images, model):
    unmasked = [dataclasses.replace(im, gt_mask=None) for im in images[:3]]
    assert best_bg_thresholds(model, unmasked, [CAM], OPTS) == {}


def test_crf_refined_masks_keep_to_the_image_classes(images, model):
    few = images[:3]
    maps = class_maps(model, few, [CAM], OPTS)["cam"]
    tables, _ = shard_outputs(few, maps, dataclasses.replace(OPTS, mask=MaskOptions(crf=True)))
    masks = tables["masks"].to_pylist()
    assert all(row["crf"] for row in masks)
    for im, row in zip(few, masks):
        labels = decode_label_png(row["mask_png"]["bytes"])
        assert labels.shape == im.pixels.shape[:2]
        assert set(np.unique(labels)) <= {0, *(k + 1 for k in im.labels)}


def test_class_maps_of_several_methods_equal_each_alone(images, model):
    methods = [CAM, CamMethod("gradcam", ("stage5",)),
               CamMethod("layercam", ("stage4", "stage5"), label="layercam-multi")]
    opts = dataclasses.replace(OPTS, cam=CamOptions(scales=(1.0, 0.5), flip=True))
    together = class_maps(model, images[:4], methods, opts)
    assert list(together) == ["cam", "gradcam", "layercam-multi"]
    for method in methods:
        (alone,) = class_maps(model, images[:4], [method], opts).values()
        for a, b in zip(together[method.key], alone):
            assert a.dtype == np.float16 and a.shape == b.shape
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-3)
    with pytest.raises(ValueError, match="keys must be distinct"):
        class_maps(model, images[:1], [CAM, CAM], OPTS)
