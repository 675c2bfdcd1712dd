"""The run report: metrics.json, a markdown summary, plots and CAM overlay grids.

``results`` maps a training proportion to what the pipeline measured for it::

    {"p0.05": {"proportion": 0.05, "seed": 0, "train": {"mAP": ..},
               "methods": {"broadcam": {"seed_mIoU": .., ...}, ...},
               "times": {"train": s, "fit_bls": s, "generate": s}}, ...}

keyed by run label (``p0.05``, ``p0.05-s1`` for another training seed). A sweep's several seeds
per proportion are summarised as mean and standard deviation.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
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
# The metrics a sweep summarises over its seeds (and plots), with the classifier's own.
SUMMARY = ("classifier_mAP", "seed_mIoU", "mask_mIoU", "MaxBoxAccV2", "PxAP")
# cluster.generate.DECODE, the method partition of each shard's rejects table (importing it from
# there would import Ray into every report).
REJECTS_PARTITION = "decode"

log = logging.getLogger("camflow.report")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _entries(results: Mapping[Any, Mapping[str, Any]]) -> list[tuple[float, int, Mapping[str, Any]]]:
    """(proportion, seed, entry) sorted; entries keyed by a proportion alone have seed 0."""
    out = [(float(entry.get("proportion", key)), int(entry.get("seed", 0)), entry)
           for key, entry in results.items()]
    return sorted(out, key=lambda t: (t[0], t[1]))


def metrics_rows(results: Mapping[Any, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per run (proportion, seed) and method: the headline metrics, flat."""
    rows = []
    for proportion, seed, entry in _entries(results):
        for method, metrics in entry["methods"].items():
            row = {"proportion": proportion, "seed": seed, "method": method,
                   "classifier_mAP": entry.get("train", {}).get("mAP", float("nan"))}
            row.update({k: metrics.get(k, float("nan")) for k in HEADLINE})
            rows.append(row)
    return rows


def summary_rows(results: Mapping[Any, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per proportion and method: mean and standard deviation over the seeds of each metric.

    ``<metric>`` is the mean, ``<metric>_std`` the population standard deviation (0 with one
    seed), ``seeds`` their number.
    """
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for row in metrics_rows(results):
        groups.setdefault((row["proportion"], row["method"]), []).append(row)
    out = []
    for (proportion, method), rows in groups.items():
        summary: dict[str, Any] = {"proportion": proportion, "method": method, "seeds": len(rows)}
        for key in SUMMARY:
            values = np.array([r[key] for r in rows], dtype=np.float64)
            values = values[~np.isnan(values)]
            summary[key] = float(values.mean()) if values.size else float("nan")
            summary[f"{key}_std"] = float(values.std()) if values.size else float("nan")
        out.append(summary)
    return out


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per proportion and method, ``mean ± std`` per metric."""
    def cell(row: Mapping[str, Any], key: str) -> str:
        mean, std = row[key], row[f"{key}_std"]
        return _fmt(mean) if row["seeds"] == 1 or math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"

    header = ["proportion", "method", "seeds", *SUMMARY]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([f"{r['proportion']:g}", r["method"], str(r["seeds"]),
                                 *(cell(r, k) for k in SUMMARY)]) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no results)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def metric_curves(results: Mapping[Any, Mapping[str, Any]]
                  ) -> dict[str, dict[str, dict[float, tuple[float, float]]]]:
    """{metric: {method: {proportion: (mean, std)}}} over the seeds, for the plots."""
    curves: dict[str, dict[str, dict[float, tuple[float, float]]]] = {}
    for row in summary_rows(results):
        for key in SUMMARY[1:]:
            curves.setdefault(key, {}).setdefault(row["method"], {})[row["proportion"]] = (
                row[key], row[f"{key}_std"])
    # The last mile's figures, for the methods that have them (the refined method).
    for key in LAST_MILE:
        found: dict[str, dict[float, list[float]]] = {}
        for proportion, _, entry in _entries(results):
            for method, metrics in entry["methods"].items():
                if key in metrics:
                    found.setdefault(method, {}).setdefault(proportion, []).append(metrics[key])
        for method, by in found.items():
            curves.setdefault(key, {})[method] = {
                p: (float(np.mean(v)), float(np.std(v))) for p, v in sorted(by.items())}
    return curves


def _rows_for(table: pa.Table, image_id: str) -> list[dict[str, Any]]:
    if table.num_rows == 0:
        return []
    return table.filter(pc.equal(table["image_id"], image_id)).to_pylist()


def accepted_images(stores: Iterable[ShardStore], manifest: pa.Table, count: int) -> list[str]:
    """The first ``count`` images of ``manifest`` that generation did not reject.

    Rejects are those of the runs of ``stores``. The manifest is read in growing windows from its
    start, so only the rejects files whose id range meets a window are read.
    """
    unique = {(s.root, s.run_id): s for s in stores}.values()
    decoded = [(s, s.commits(REJECTS_PARTITION)) for s in unique]
    ids = [str(i) for i in manifest["image_id"].to_pylist()]
    chosen: list[str] = []
    start, size = 0, max(count, 1)
    while len(chosen) < count and start < len(ids):
        window = ids[start:start + size]
        start, size = start + size, size * 2  # a run of rejects costs a few windows, not one each
        rejected: set[str] = set()
        for store, commits in decoded:
            found = store.read("rejects", REJECTS_PARTITION, image_ids=window, commits=commits)
            if found.num_rows:
                rejected.update(found["image_id"].to_pylist())
        chosen += [i for i in window if i not in rejected][: count - len(chosen)]
    return chosen


def _image_row(record: Mapping[str, Any], methods: Sequence[str],
               tables: Mapping[str, Mapping[str, pa.Table]]) -> list[Any]:
    image_id = record["image_id"]
    image = np.asarray(load_rgb(record["uri"]))
    gt_boxes = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in record.get("boxes") or []]
    row = [viz.overlay(image, boxes=gt_boxes)]
    for m in methods:
        seeds = _rows_for(tables[m]["seeds"], image_id)
        cam = (np.max([dequantize_seed(s).numpy() for s in seeds], axis=0)
               if seeds else np.zeros(image.shape[:2], np.float32))
        masks = _rows_for(tables[m]["masks"], image_id)
        mask = decode_label_png(masks[0]["mask_png"]["bytes"]) if masks else None
        boxes = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in _rows_for(tables[m]["boxes"], image_id)]
        row += [viz.overlay(image, cam=cam), viz.overlay(image, mask=mask, boxes=boxes)]
    return row


def _draw(stores: Mapping[str, ShardStore], manifest: pa.Table, image_ids: Sequence[str],
          cell: int) -> tuple[bytes | None, dict[str, str]]:
    """The grid PNG (None when no image could be drawn) and {image id: why it was skipped}."""
    wanted = pa.array(list(image_ids), pa.string())
    by_id = {r["image_id"]: r for r in
             manifest.filter(pc.is_in(manifest["image_id"], value_set=wanted)).to_pylist()}
    methods = list(stores)
    tables = {}
    for m in methods:
        commits = stores[m].commits(m)  # one listing for the three tables
        tables[m] = {t: stores[m].read(t, m, image_ids=image_ids, commits=commits)
                     for t in ("seeds", "masks", "boxes")}
    rows, labels, skipped = [], [], {}
    for image_id in image_ids:
        if image_id not in by_id:
            skipped[image_id] = "not in the manifest"
        elif not any(_rows_for(tables[m]["seeds"], image_id) for m in methods):
            # Generation rejected it, or its shard is not committed: nothing to show, and its
            # file may well be what generation could not decode.
            skipped[image_id] = "no committed seed rows"
        else:
            try:
                rows.append(_image_row(by_id[image_id], methods, tables))
                labels.append(image_id)
            except Exception as exc:  # noqa: BLE001 - a picture that fails must not cost the run
                skipped[image_id] = f"{type(exc).__name__}: {storage.redact(exc)}"
        if image_id in skipped:
            log.warning("overlays: image %r not drawn: %s", image_id, skipped[image_id])
    if not rows:
        return None, skipped
    columns = ["image, true boxes"] + [f"{m} {what}" for m in methods for what in ("seed", "mask")]
    return viz.png_bytes(viz.grid(rows, row_labels=labels, column_labels=columns, cell=cell)), skipped


def overlay_grid(stores: Mapping[str, ShardStore], manifest: pa.Table,
                 image_ids: Sequence[str], *, cell: int = 112) -> bytes | None:
    """PNG: per image a row with the image, then seed heat map and pseudo mask + boxes per method.

    ``stores`` maps each method to the store of the run that holds it (ReCAM's classifier
    writes a run of its own). An image without committed seed rows, or that fails to draw, is
    left out with a warning; None when no image is left.
    """
    return _draw(stores, manifest, image_ids, cell)[0]


def draw_overlays(name: str, stores: Mapping[str, ShardStore], manifest: pa.Table, count: int,
                  *, cell: int = 112) -> tuple[bytes | None, list[str]]:
    """The overlay grid of the first ``count`` accepted images, and notes on what is missing.

    Never raises: the overlays illustrate outputs that are already committed, so a failure
    here (unreadable images, tables or storage) costs the picture, logged, never the run.
    """
    if not stores or count <= 0:
        return None, []
    try:
        png, skipped = _draw(stores, manifest, accepted_images(stores.values(), manifest, count),
                             cell)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        reason = f"{type(exc).__name__}: {storage.redact(exc)}"
        log.warning("overlays of %s not drawn: %s", name, reason)
        return None, [f"overlays of {name} not drawn: {reason}"]
    notes = [f"overlays of {name}: image {i} not drawn: {why}" for i, why in skipped.items()]
    if png is None:
        notes.append(f"overlays of {name}: no image to draw")
    return png, notes


def calibration_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which split the seeds were scored on, and which images chose the pseudo masks'
    background scores (never the scored ones), per run; nothing for results without either."""
    lines = []
    for entry in entries:
        split, chosen = entry.get("seeds_split"), entry.get("bg_calibration")
        if split is None:
            continue
        run = entry.get("run") or f"p{entry['proportion']:g}"
        where = (f"chosen on the first {chosen['images']} {chosen['split']} images with masks"
                 if chosen else "configured (postprocess.mask), not calibrated")
        lines.append(f"- {run}: seeds, masks and boxes of the {split} split; background scores "
                     f"{where}.")
    return ["## Seeds and background scores", "", *lines, ""] if lines else []


LAST_MILE = ("refined_mask_mIoU", "segment_val_mIoU_one_pass", "segment_val_mIoU")


def refined_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """WSSS's last mile per run: the method's train pseudo masks, refined ones, and the val mIoU
    of the segmentation model trained on them (the columns a run has)."""
    keys = [k for k in LAST_MILE
            if any(k in m for e in entries for m in e["methods"].values())]
    rows = [{"run": entry.get("run") or f"p{entry['proportion']:g}", "method": method,
             "mask_mIoU": metrics.get("mask_mIoU", float("nan")),
             **{k: metrics.get(k, float("nan")) for k in keys}}
            for entry in entries for method, metrics in entry["methods"].items()
            if any(k in metrics for k in keys)]
    if not rows:
        return []
    return ["## Pseudo masks of the training split, refined, and the segmentation model", "",
            markdown_table(rows), "",
            "mask_mIoU: the method's pseudo masks of the training images; refined_mask_mIoU: its "
            "seeds walked on AffinityNet's affinities (camflow.refine); both against the "
            "training images' true masks. segment_val_mIoU: DeepLabV3 trained on those pseudo "
            "masks (refined when refined), against the val images' true masks, with the "
            "configured inference (segment.inference: DeepLabV3's scales and flips by "
            "default); segment_val_mIoU_one_pass: the same model in one pass.", ""]


def write_report(run_dir: str, results: Mapping[str, Mapping[str, Any]],
                 overlays: Mapping[str, bytes], *, title: str = "camflow run",
                 notes: Sequence[str] = ()) -> dict[str, str]:
    """Write metrics.json, report.md and the PNGs under ``run_dir``; returns their URIs."""
    metrics_uri = storage.join(run_dir, "metrics.json")
    ordered = [entry for _, _, entry in _entries(results)]
    doc = {entry.get("run", f"p{entry['proportion']:g}"): entry for entry in ordered}
    storage.write_bytes(json.dumps(doc, indent=2, default=float).encode(), metrics_uri)
    plot = viz.metric_panels(metric_curves(results), xlabel="training proportion (%)",
                             title="Against the training data (mean ± std over seeds)")
    plot_uri = storage.join(run_dir, "metrics_vs_proportion.png")
    storage.write_bytes(plot, plot_uri)
    summary = summary_rows(results)
    lines = [f"# {title}", "", "## Metrics", "", summary_table(summary), "",
             "Columns: the classifier's val mAP, seed mIoU at the best background threshold of "
             "the sweep, pseudo-mask mIoU at the calibrated (or configured) background score, "
             "MaxBoxAccV2 and PxAP against the benchmark's boxes and masks. With several training "
             "seeds per proportion: mean ± standard deviation over them.", "",
             *calibration_lines(ordered), *refined_lines(ordered),
             "## Every run", "", markdown_table(metrics_rows(results)), "",
             "## Time per stage (seconds)", ""]
    stages = sorted({s for entry in ordered for s in entry.get("times", {})})
    time_rows = [{"run": entry.get("run", f"p{entry['proportion']:g}"),
                  **{s: entry.get("times", {}).get(s, float("nan")) for s in stages}}
                 for entry in ordered]
    lines += [markdown_table(time_rows), "", "## Metrics against training proportion", "",
              "![metrics](metrics_vs_proportion.png)", ""]
    written = {"metrics": metrics_uri, "plot": plot_uri}
    for name, png in overlays.items():
        uri = storage.join(run_dir, f"overlays_{name}.png")
        storage.write_bytes(png, uri)
        written[f"overlays_{name}"] = uri
        lines += [f"## Overlays: {name}", "",
                  "Per row: the image with its true boxes, then per method the seed heat map and "
                  "the pseudo mask with predicted boxes.", "", f"![overlays](overlays_{name}.png)", ""]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    report_uri = storage.join(run_dir, "report.md")
    storage.write_bytes("\n".join(lines).encode(), report_uri)
    written["report"] = report_uri
    return written
