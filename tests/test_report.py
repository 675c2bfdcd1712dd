from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from camflow import report, viz


def test_overlay_blends_cam_and_mask_and_draws_boxes_on_pixel_edges():
    image = np.zeros((8, 8, 3), np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[2:4, 2:4] = 1.0
    mask = np.zeros((8, 8), np.uint8)
    mask[5:, 5:] = 1
    out = np.asarray(viz.overlay(image, cam=cam, mask=mask, boxes=[(0, 0, 4, 4)]))
    assert out.shape == (8, 8, 3)
    assert (out[3, 3] != out[6, 6]).any()  # hot CAM vs class-1 colour
    assert tuple(out[0, 3]) == (255, 255, 0) and tuple(out[3, 0]) == (255, 255, 0)
    assert tuple(out[0, 4]) != (255, 255, 0)  # x1 = 4 is an edge: the last box pixel is 3


def test_grid_tiles_rows_with_labels():
    pics = [[Image.new("RGB", (10, 10), (255, 0, 0))] * 3, [Image.new("RGB", (10, 10))] * 2]
    sheet = viz.grid(pics, row_labels=["a", "b"], column_labels=["x", "y", "z"], pad=2)
    assert sheet.size == (90 + 3 * 12 + 2, 16 + 2 * 12 + 2)


def test_line_plot_and_metric_panels_are_pngs():
    png = viz.line_plot({"cam": {0.05: 0.3, 1.0: 0.5}}, xlabel="x", ylabel="y", title="t")
    assert Image.open(io.BytesIO(png)).format == "PNG"
    panels = {"seed_mIoU": {"cam": {0.05: (0.3, 0.02), 1.0: (0.5, 0.0)}},
              "PxAP": {"cam": {0.05: (0.2, 0.01), 1.0: (0.4, 0.0)}}}
    png = viz.metric_panels(panels, xlabel="x", title="t")
    assert Image.open(io.BytesIO(png)).size[0] > Image.open(io.BytesIO(png)).size[1]


def _entry(proportion, seed, m_ap, seed_miou, **extra):
    return {"proportion": proportion, "seed": seed, "train": {"mAP": m_ap},
            "methods": {"cam": {"seed_mIoU": seed_miou, **extra}}}


def test_metrics_rows_summaries_and_markdown():
    results = {"p1": _entry(1.0, 0, 0.9, 0.5, PxAP=float("nan")),
               "p0.05": _entry(0.05, 0, 0.4, 0.3),
               "p0.05-s1": _entry(0.05, 1, 0.6, 0.4)}
    rows = report.metrics_rows(results)
    assert [(r["proportion"], r["seed"]) for r in rows] == [(0.05, 0), (0.05, 1), (1.0, 0)]
    assert math.isnan(rows[2]["PxAP"]) and rows[2]["classifier_mAP"] == 0.9
    table = report.markdown_table(rows)
    assert "| 0.050 | 0 | cam | 0.400 | 0.300 |" in table and "n/a" in table
    summary = {r["proportion"]: r for r in report.summary_rows(results)}
    assert summary[0.05]["seeds"] == 2 and summary[0.05]["seed_mIoU"] == pytest.approx(0.35)
    assert summary[0.05]["seed_mIoU_std"] == pytest.approx(0.05)
    assert summary[1.0]["seed_mIoU_std"] == 0.0 and math.isnan(summary[1.0]["PxAP"])
    text = report.summary_table(list(summary.values()))
    assert "| 0.05 | cam | 2 | 0.500 ± 0.100 | 0.350 ± 0.050 |" in text
    assert "| 1 | cam | 1 | 0.900 | 0.500 |" in text
    curves = report.metric_curves(results)
    assert curves["seed_mIoU"]["cam"][0.05] == pytest.approx((0.35, 0.05))


def _overlay_store(tmp_path):
    """A run of two shards of two images each, a manifest pointing at real images."""
    import pyarrow as pa
    import torch

    from camflow.outputs import BOXES_SCHEMA, MASKS_SCHEMA, png_cell, seed_rows
    from camflow.postprocess.png import encode_label_png
    from camflow.shards import ShardStore

    store = ShardStore(str(tmp_path / "out"), "r1")
    records = []
    for shard, ids in enumerate((["a0", "a1"], ["b0", "b1"])):
        seeds, masks, boxes = [], [], []
        for k, image_id in enumerate(ids):
            uri = str(tmp_path / f"{image_id}.png")
            Image.new("RGB", (16, 12), (40 * k, 80, 120)).save(uri)
            records.append({"image_id": image_id, "uri": uri, "boxes": None})
            cams = torch.zeros(1, 12, 16)
            cams[0, 2 + k:6, 3:9] = 1.0
            seeds += seed_rows(image_id, [k + 1], cams, stride=2, scales=[1.0])
            label = np.zeros((12, 16), np.uint8)
            label[2:6, 3:9] = k + 1
            masks.append({"image_id": image_id, "height": 12, "width": 16,
                          "mask_png": png_cell(encode_label_png(label), image_id),
                          "bg_threshold": 0.3, "crf": False})
            boxes.append({"image_id": image_id, "class_id": k + 1, "score": 0.9,
                          "x0": 3.0, "y0": 2.0, "x1": 9.0, "y1": 6.0})
        store.commit("cam", f"shard-{shard:05d}", {
            "seeds": pa.Table.from_pylist(seeds), "masks": pa.Table.from_pylist(masks, MASKS_SCHEMA),
            "boxes": pa.Table.from_pylist(boxes, BOXES_SCHEMA)})
    return store, pa.Table.from_pylist(records)


def test_overlay_grid_reads_only_the_shards_and_rows_it_draws(tmp_path, monkeypatch):
    from camflow.shards import ShardStore

    store, manifest = _overlay_store(tmp_path)
    read_paths = []
    real_cat = store.fs.cat
    monkeypatch.setattr(store.fs, "cat", lambda paths, **kw: (read_paths.extend(paths),
                                                               real_cat(paths, **kw))[1])
    png = report.overlay_grid({"cam": store}, manifest, ["b1", "b0"])
    data_files = sorted(p for p in read_paths if p.endswith(".parquet"))
    assert data_files == [store.data_path(t, "cam", "shard-00001") for t in ("boxes", "masks", "seeds")]
    assert store.read("seeds", "cam", image_ids=["b1"])["image_id"].to_pylist() == ["b1"]

    # The same picture as drawing from whole tables.
    real_read = ShardStore.read
    monkeypatch.setattr(ShardStore, "read", lambda self, table, method=None, **kw:
                        real_read(self, table, method))
    assert report.overlay_grid({"cam": store}, manifest, ["b1", "b0"]) == png
