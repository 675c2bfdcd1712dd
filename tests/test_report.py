from __future__ import annotations

import io
import math

import numpy as np
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


def test_line_plot_is_a_png():
    png = viz.line_plot({"cam": {0.05: 0.3, 1.0: 0.5}}, xlabel="x", ylabel="y", title="t")
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_metrics_rows_and_markdown():
    results = {1.0: {"train": {"mAP": 0.9}, "methods": {"cam": {"seed_mIoU": 0.5, "PxAP": float("nan")}}},
               0.05: {"train": {"mAP": 0.4}, "methods": {"cam": {"seed_mIoU": 0.3}}}}
    rows = report.metrics_rows(results)
    assert [r["proportion"] for r in rows] == [0.05, 1.0]
    assert math.isnan(rows[1]["PxAP"]) and rows[1]["classifier_mAP"] == 0.9
    table = report.markdown_table(rows)
    assert "| 0.050 | cam | 0.400 | 0.300 |" in table and "n/a" in table
    assert report.seed_curve(results) == {"cam": {1.0: 0.5, 0.05: 0.3}}
