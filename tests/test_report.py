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
