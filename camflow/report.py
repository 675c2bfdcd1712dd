"""The run report: metrics.json, a markdown summary, plots and CAM overlay grids.

``results`` maps a training proportion to what the pipeline measured for it::

    {0.05: {"train": {"mAP": ..}, "methods": {"broadcam": {"seed_mIoU": .., ...}, ...},
            "times": {"train": s, "fit_bls": s, "generate": s}}, ...}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from camflow import storage, viz
from camflow.data.images import load_rgb
from camflow.outputs import dequantize_seed
from camflow.postprocess import decode_label_png
from camflow.shards import ShardStore

HEADLINE = ("seed_mIoU", "seed_best_threshold", "mask_mIoU", "mask_bg_threshold", "MaxBoxAccV2", "PxAP")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def metrics_rows(results: Mapping[float, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per proportion and method: the headline metrics, flat (for tables and CSV)."""
    rows = []
    for proportion in sorted(results):
        entry = results[proportion]
        for method, metrics in entry["methods"].items():
            row = {"proportion": proportion, "method": method,
                   "classifier_mAP": entry.get("train", {}).get("mAP", float("nan"))}
            row.update({k: metrics.get(k, float("nan")) for k in HEADLINE})
            rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no results)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def seed_curve(results: Mapping[float, Mapping[str, Any]]) -> dict[str, dict[float, float]]:
    series: dict[str, dict[float, float]] = {}
    for proportion, entry in results.items():
        for method, metrics in entry["methods"].items():
            series.setdefault(method, {})[proportion] = metrics.get("seed_mIoU", float("nan"))
    return series


def _rows_for(table: pa.Table, image_id: str) -> list[dict[str, Any]]:
    if table.num_rows == 0:
        return []
    return table.filter(pc.equal(table["image_id"], image_id)).to_pylist()


def overlay_grid(store: ShardStore, methods: Sequence[str], manifest: pa.Table,
                 image_ids: Sequence[str], *, cell: int = 112) -> bytes:
    """PNG: per image a row with the image, then seed heat map and pseudo mask + boxes per method."""
    by_id = {r["image_id"]: r for r in manifest.to_pylist()}
    tables = {m: {t: store.read(t, m) for t in ("seeds", "masks", "boxes")} for m in methods}
    rows, labels = [], []
    for image_id in image_ids:
        record = by_id[image_id]
        image = np.asarray(load_rgb(record["uri"]))
        gt_boxes = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in record.get("boxes") or []]
        row = [viz.overlay(image, boxes=gt_boxes)]
        for m in methods:
            seeds = _rows_for(tables[m]["seeds"], image_id)
            cam = (np.max([dequantize_seed(s).numpy() for s in seeds], axis=0)
                   if seeds else np.zeros(image.shape[:2], np.float32))
            masks = _rows_for(tables[m]["masks"], image_id)
            mask = decode_label_png(masks[0]["mask_png"]) if masks else None
            boxes = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in _rows_for(tables[m]["boxes"], image_id)]
            row += [viz.overlay(image, cam=cam), viz.overlay(image, mask=mask, boxes=boxes)]
        rows.append(row)
        labels.append(image_id)
    columns = ["image, true boxes"] + [f"{m} {what}" for m in methods for what in ("seed", "mask")]
    return viz.png_bytes(viz.grid(rows, row_labels=labels, column_labels=columns, cell=cell))


def write_report(run_dir: str, results: Mapping[float, Mapping[str, Any]],
                 overlays: Mapping[str, bytes], *, title: str = "camflow run",
                 notes: Sequence[str] = ()) -> dict[str, str]:
    """Write metrics.json, report.md and the PNGs under ``run_dir``; returns their URIs."""
    metrics_uri = storage.join(run_dir, "metrics.json")
    doc = {f"{p:g}": results[p] for p in sorted(results)}
    storage.write_bytes(json.dumps(doc, indent=2, default=float).encode(), metrics_uri)
    plot = viz.line_plot(seed_curve(results), xlabel="training proportion (%)",
                         ylabel="seed mIoU (best background threshold)",
                         title="Seed quality against training data")
    plot_uri = storage.join(run_dir, "seed_miou_vs_proportion.png")
    storage.write_bytes(plot, plot_uri)
    rows = metrics_rows(results)
    lines = [f"# {title}", "", "## Metrics", "", markdown_table(rows), "",
             "Columns: seed mIoU at the best background threshold of the sweep (and that "
             "threshold), pseudo-mask mIoU at the configured threshold, MaxBoxAccV2 and PxAP "
             "against the benchmark's boxes and masks.", "",
             "## Time per stage (seconds)", ""]
    stages = sorted({s for entry in results.values() for s in entry.get("times", {})})
    time_rows = [{"proportion": p, **{s: results[p].get("times", {}).get(s, float("nan"))
                                      for s in stages}} for p in sorted(results)]
    lines += [markdown_table(time_rows), "", "## Seed mIoU against training proportion", "",
              "![seed mIoU](seed_miou_vs_proportion.png)", ""]
    written = {"metrics": metrics_uri, "plot": plot_uri}
    for name, png in overlays.items():
        uri = storage.join(run_dir, f"overlays_{name}.png")
        storage.write_bytes(png, uri)
        written[f"overlays_{name}"] = uri
        lines += [f"## Overlays: {name}", "",
                  "Per row: the image with its true boxes, then per method the seed heat map and "
                  "the pseudo mask with predicted boxes.", "", f"![overlays](overlays_{name}.png)", ""]
    lines += [f"- {n}" for n in notes]
    report_uri = storage.join(run_dir, "report.md")
    storage.write_bytes("\n".join(lines).encode(), report_uri)
    written["report"] = report_uri
    return written
