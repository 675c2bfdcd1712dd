"""What travels from the CAM worker to post-processing (no Ray: the stages called directly)."""

from __future__ import annotations

import numpy as np
import pytest

from camflow.generate import CamMethod, DecodedImage
from camflow.models import build
from camflow.options import CamOptions, GenerateOptions, MaskOptions
from camflow.shards import ShardStore
from cluster.generate import GenerationJob
from cluster.stages import CamWorker, _finish_stage, _image_columns, _images_of


def _images() -> list[DecodedImage]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        pixels = rng.integers(0, 256, (24 + 4 * i, 32, 3), dtype=np.uint8)
        mask = np.zeros(pixels.shape[:2], np.uint8)
        mask[4:12, 6:20] = 2
        out.append(DecodedImage(f"im{i}", pixels, [1], mask, None))
    return out


def _worker_output(crf: bool) -> tuple[dict, GenerateOptions]:
    options = GenerateOptions(num_classes=3, image_size=32,
                              cam=CamOptions(scales=(1.0,), flip=False),
                              mask=MaskOptions(bg_threshold=0.3, crf=crf))
    worker = CamWorker(lambda: build("resnet18", num_classes=3), [CamMethod("cam", ("stage5",))],
                       options, num_threads=1, use_gpu=False)
    row = {"shard": "shard-00000", "rejects": "[]", **_image_columns(_images(), pixels=True)}
    batch = {key: np.array([value]) if isinstance(value, str) else [value]
             for key, value in row.items()}
    out = worker(batch)
    return {key: values[0] for key, values in out.items()}, options


@pytest.mark.parametrize("crf", [False, True])
def test_pixels_travel_on_only_for_the_crf(crf):
    row, _ = _worker_output(crf)
    assert ("pixels" in row) == crf
    # Every column is a plain array: a flat one and its shapes, or JSON text.
    assert all(isinstance(v, (np.ndarray, str, np.str_)) for v in row.values())
    assert row["maps/cam"].dtype == np.float16 and row["seeds/cam"].dtype == np.uint8
    after = _images_of(row)
    for before, im in zip(_images(), after):
        assert (im.pixels is not None) == crf
        if crf:
            np.testing.assert_array_equal(im.pixels, before.pixels)
        np.testing.assert_array_equal(im.gt_mask, before.gt_mask)
        assert (im.image_id, im.labels) == (before.image_id, before.labels)


def test_post_processing_commits_without_the_pixels(tmp_path):
    row, options = _worker_output(crf=False)
    job = GenerationJob(output=str(tmp_path), run_id="r1", methods=(CamMethod("cam", ("stage5",)),),
                        options=options)
    done = _finish_stage(row, job)
    store = ShardStore(str(tmp_path), "r1")
    masks = store.read("masks", "cam")
    assert done["shard"] == "shard-00000" and masks.num_rows == 3
    assert masks["height"].to_pylist() == [24, 28, 32]
