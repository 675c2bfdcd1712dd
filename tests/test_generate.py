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
)
from camflow.models import build
from camflow.options import CamOptions, MaskOptions
from camflow.outputs import quantize_seed
from camflow.postprocess import decode_label_png
from camflow.run_metrics import summarize


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


def test_maps_are_own_classes_at_image_size_normalised_once_with_their_seeds(images, model):
    opts = dataclasses.replace(OPTS, cam=CamOptions(scales=(1.0, 0.5), flip=True, seed_stride=4))
    for im, made in zip(images[:4], class_maps(model, images[:4], [CAM], opts)["cam"]):
        h, w = im.pixels.shape[:2]
        assert made.maps.shape == (len(im.labels), h, w)
        peaks = made.maps.astype(np.float32).max(axis=(1, 2))
        assert np.all((peaks == 1) | (peaks == 0))  # divided by its max after the resize
        assert made.seeds.dtype == np.uint8
        assert made.seeds.shape == (len(im.labels), -(-h // 4), -(-w // 4))
        want, _, _ = quantize_seed(torch.from_numpy(made.maps.astype(np.float32)), 4)
        # Quantised on the worker from the float32 maps, before their float16 copy was made.
        assert np.abs(want.astype(int) - made.seeds.astype(int)).max() <= 1


def test_class_maps_of_several_methods_equal_each_alone(images, model):
    methods = [CAM, CamMethod("gradcam", ("stage5",)),
               CamMethod("layercam", ("stage4", "stage5"), label="layercam-multi")]
    opts = dataclasses.replace(OPTS, cam=CamOptions(scales=(1.0, 0.5), flip=True))
    together = class_maps(model, images[:4], methods, opts)
    assert list(together) == ["cam", "gradcam", "layercam-multi"]
    for method in methods:
        (alone,) = class_maps(model, images[:4], [method], opts).values()
        for a, b in zip(together[method.key], alone):
            assert a.maps.dtype == np.float16 and a.maps.shape == b.maps.shape
            np.testing.assert_allclose(a.maps.astype(np.float32), b.maps.astype(np.float32),
                                       atol=1e-3)
            assert np.abs(a.seeds.astype(int) - b.seeds.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="keys must be distinct"):
        class_maps(model, images[:1], [CAM, CAM], OPTS)


def test_a_mask_value_outside_the_classes_is_a_reject_and_the_rest_go_on(tmp_path):
    from PIL import Image

    records = []
    for name, value in (("good", 3), ("bad", 77), ("ignored", 255)):
        pixels = np.full((8, 10, 3), 90, np.uint8)
        mask = np.zeros((8, 10), np.uint8)
        mask[2:5, 3:7] = value
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / f"{name}-mask.png")
        records.append({"image_id": name, "uri": str(tmp_path / f"{name}.png"),
                        "mask_uri": str(tmp_path / f"{name}-mask.png"), "labels": [2]})
    decoded, rejects = decode_records(records, num_classes=10)
    assert [im.image_id for im in decoded] == ["good", "ignored"]
    assert [r["image_id"] for r in rejects] == ["bad"]
    assert "[77]" in rejects[0]["reason"] and "10 classes" in rejects[0]["reason"]
    # Without the class count nothing can be checked: the mask is taken as it is.
    assert len(decode_records(records)[0]) == 3
