from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

# Prefect configures logging when first imported and drops caplog's handler from the root
# logger: imported here, at collection, rather than in the middle of a test.
import tasks.report as report_task
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


def _overlay_store(tmp_path, root=None, run_id="r1"):
    """A run of two shards of two images each, a manifest pointing at real images."""
    import pyarrow as pa
    import torch

    from camflow.outputs import BOXES_SCHEMA, MASKS_SCHEMA, png_cell, quantize_seed, seed_rows
    from camflow.postprocess.png import encode_label_png
    from camflow.shards import ShardStore

    store = ShardStore(str(root or tmp_path / "out"), run_id)
    records = []
    for shard, ids in enumerate((["a0", "a1"], ["b0", "b1"])):
        seeds, masks, boxes = [], [], []
        for k, image_id in enumerate(ids):
            uri = str(tmp_path / f"{image_id}.png")
            Image.new("RGB", (16, 12), (40 * k, 80, 120)).save(uri)
            records.append({"image_id": image_id, "uri": uri, "boxes": None})
            cams = torch.zeros(1, 12, 16)
            cams[0, 2 + k:6, 3:9] = 1.0
            seeds += seed_rows(image_id, [k + 1], quantize_seed(cams, 2)[0], size=(12, 16),
                               stride=2, scales=[1.0])
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


# -- rejected and undrawable images (issue 14, item 6) ------------------------------------------

def _truncated_jpeg(path):
    """A JPEG whose header reads fine and whose pixels stop halfway, as in the issue."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _with_rejected_first(tmp_path, store, manifest):
    """The manifest with a truncated JPEG first, which generation put in the rejects table."""
    import pyarrow as pa

    from camflow.data.images import BadImageError, image_size, load_rgb
    from camflow.data.manifest import make_manifest
    from camflow.data.rejects import REJECTS_SCHEMA

    bad = _truncated_jpeg(tmp_path / "bad.jpg")
    assert image_size(bad) == (64, 48)  # the reader's check passes
    with pytest.raises(BadImageError):
        load_rgb(bad)
    rejects = pa.Table.from_pylist([{"image_id": "bad", "uri": bad, "stage": "decode",
                                     "reason": "truncated"}], schema=REJECTS_SCHEMA)
    store.commit(report.REJECTS_PARTITION, "shard-00000", {"rejects": rejects})
    records = [{"image_id": "bad", "uri": bad, "width": 64, "height": 48}] + [
        {"image_id": r["image_id"], "uri": r["uri"], "width": 16, "height": 12}
        for r in manifest.to_pylist()]
    return make_manifest([{**r, "split": "val", "labels": [0]} for r in records])


def _loads(monkeypatch):
    loaded = []
    real = report.load_rgb
    monkeypatch.setattr(report, "load_rgb", lambda uri, *a: (loaded.append(uri), real(uri, *a))[1])
    return loaded


def test_the_report_task_skips_a_rejected_truncated_image_and_writes_everything(
        tmp_path, monkeypatch, caplog):
    import logging

    from camflow.data.manifest import write_manifest

    store, manifest = _overlay_store(tmp_path)
    manifest = _with_rejected_first(tmp_path, store, manifest)
    assert report.accepted_images([store], manifest, 2) == ["a0", "a1"]
    write_manifest(manifest, str(tmp_path / "val.parquet"))
    artifacts = []
    monkeypatch.setattr(report_task, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(report_task, "create_table_artifact", lambda **kw: artifacts.append(kw))
    monkeypatch.setattr(report_task, "create_markdown_artifact", lambda **kw: artifacts.append(kw))
    loaded = _loads(monkeypatch)
    results = {"p1": {"run": "p1", "proportion": 1.0, "seed": 0, "train": {"mAP": 0.5},
                      "methods": {"cam": {"seed_mIoU": 0.4}}, "times": {"train": 1.0}}}
    generated = {"p1": [{"outputs": store.root, "run_id": store.run_id, "metrics": {"cam": {}}}]}
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="camflow.report"):
        written = report_task.write_report.fn(
            results, generated, {"val_manifest": str(tmp_path / "val.parquet")}, ["cam"], "val",
            str(run_dir), overlay_images=2)
    assert not caplog.records  # a reject is not drawn, not a problem
    assert str(tmp_path / "bad.jpg") not in loaded and len(loaded) == 2
    for name in ("metrics.json", "report.md", "metrics_vs_proportion.png", "overlays_p1.png"):
        assert (run_dir / name).stat().st_size > 0
    assert Image.open(run_dir / "overlays_p1.png").height == 16 + 2 * (112 + 2) + 2  # two rows
    assert written["overlays_p1"].endswith("overlays_p1.png") and len(artifacts) == 3

    # Asked for it all the same, overlay_grid leaves it out: it has no committed seed rows.
    with caplog.at_level(logging.WARNING, logger="camflow.report"):
        png = report.overlay_grid({"cam": store}, manifest, ["bad", "b0"])
    assert Image.open(io.BytesIO(png)).height == 16 + (112 + 2) + 2
    assert "'bad'" in caplog.text and "no committed seed rows" in caplog.text
    assert loaded.count(str(tmp_path / "bad.jpg")) == 0


def test_an_accepted_image_that_fails_to_draw_is_skipped_with_a_warning(tmp_path, caplog):
    import logging

    store, manifest = _overlay_store(tmp_path)
    (tmp_path / "a1.png").unlink()  # gone since generation
    with caplog.at_level(logging.WARNING, logger="camflow.report"):
        png = report.overlay_grid({"cam": store}, manifest, ["a0", "a1", "b0"])
    assert Image.open(io.BytesIO(png)).height == 16 + 2 * (112 + 2) + 2
    (record,) = caplog.records
    assert record.name == "camflow.report" and record.levelno == logging.WARNING
    assert "'a1'" in record.getMessage() and "not found" in record.getMessage()

    png, notes = report.draw_overlays("p1", {"cam": store}, manifest, 4)
    assert png is not None and len(notes) == 1 and "image a1 not drawn" in notes[0]
    assert report.overlay_grid({"cam": store}, manifest, ["a1"]) is None


def test_overlays_that_fail_altogether_leave_a_note_not_an_exception(tmp_path, monkeypatch, caplog):
    import logging

    store, manifest = _overlay_store(tmp_path)

    def broken(*args, **kwargs):
        raise OSError("the store went away")

    monkeypatch.setattr(store, "read", broken)
    with caplog.at_level(logging.WARNING, logger="camflow.report"):
        png, notes = report.draw_overlays("p1", {"cam": store}, manifest, 2)
    assert png is None and notes == ["overlays of p1 not drawn: OSError: the store went away"]
    assert "overlays of p1 not drawn" in caplog.text
    written = report.write_report(str(tmp_path / "run"), {"p1": _entry(1.0, 0, 0.5, 0.4)}, {},
                                  notes=notes)
    text = (tmp_path / "run" / "report.md").read_text()
    assert "## Notes" in text and "the store went away" in text and "overlays_" not in text
    assert set(written) == {"metrics", "plot", "report"}


def test_show_draws_accepted_images_and_names_methods_from_folders(tmp_path, monkeypatch, capsys):
    import json

    from camflow.data.manifest import write_manifest
    from camflow.shards import ShardStore
    from flows.cli import main

    run = tmp_path / "run"
    store, manifest = _overlay_store(tmp_path, run / "outputs", "p1")
    manifest = _with_rejected_first(tmp_path, store, manifest)
    write_manifest(manifest, str(run / "manifests" / "val.parquet"))
    (run / "metrics.json").write_text(json.dumps({"p1": _entry(1.0, 0, 0.5, 0.4) | {"run": "p1"}}))
    monkeypatch.setattr(ShardStore, "commits", _no_unscoped(ShardStore.commits))
    loaded = _loads(monkeypatch)
    assert main(["show", str(run), "--images", "2"]) == 0
    out = capsys.readouterr().out
    assert "overlays (cam): " in out and (run / "show_p1.png").stat().st_size > 0
    assert str(tmp_path / "bad.jpg") not in loaded and len(loaded) == 2


def _no_unscoped(commits):
    """ShardStore.commits that refuses to read the markers of every method at once."""
    def scoped(self, method=None):
        assert method is not None, "method names come from a listing, not from the markers"
        return commits(self, method)
    return scoped


def test_calibration_lines_name_the_images_that_chose_the_background():
    from camflow.report import calibration_lines
    from tasks.cams import calibration_split

    assert calibration_split("train") == "val" and calibration_split("val") == "train"
    lines = calibration_lines([
        {"run": "p1", "seeds_split": "train", "bg_calibration": {"split": "val", "images": 12}},
        {"run": "p0.5", "seeds_split": "val", "bg_calibration": None},
        {"run": "old"},  # results written before either was recorded
    ])
    assert lines == ["## Seeds and background scores", "",
                     "- p1: seeds, masks and boxes of the train split; background scores chosen "
                     "on the first 12 val images with masks.",
                     "- p0.5: seeds, masks and boxes of the val split; background scores "
                     "configured (postprocess.mask), not calibrated.", ""]
    assert calibration_lines([{"run": "old"}]) == []


def test_refined_lines_compare_the_refined_masks_with_the_methods_own():
    from camflow.report import refined_lines

    entries = [{"run": "p1", "methods": {"broadcam": {"mask_mIoU": 0.3, "refined_mask_mIoU": 0.4},
                                         "cam": {"mask_mIoU": 0.2}}}]
    lines = refined_lines(entries)
    assert lines[0] == "## Pseudo masks of the training split, refined, and the segmentation model"
    table = "\n".join(lines)
    assert "| p1 | broadcam | 0.300 | 0.400 |" in table and "| cam |" not in table
    assert refined_lines([{"run": "p1", "methods": {"cam": {"mask_mIoU": 0.2}}}]) == []


def test_the_sweep_plots_the_segmentation_val_miou_against_proportion():
    from camflow.report import metric_curves

    def entry(p, seed, seg):
        m = {"seed_mIoU": 0.3, "seed_best_threshold": 0.5, "mask_mIoU": 0.3, "MaxBoxAccV2": 0.4,
             "PxAP": 0.3}
        return {"proportion": p, "seed": seed, "train": {"mAP": 0.9},
                "methods": {"broadcam": {**m, "segment_val_mIoU": seg}, "cam": m}}

    results = {"a": entry(0.1, 0, 0.2), "b": entry(0.1, 1, 0.4), "c": entry(1.0, 0, 0.5)}
    curves = metric_curves(results)["segment_val_mIoU"]
    assert set(curves) == {"broadcam"}
    assert curves["broadcam"][0.1] == pytest.approx((0.3, 0.1))
    assert curves["broadcam"][1.0] == pytest.approx((0.5, 0.0))
