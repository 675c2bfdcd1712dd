"""Prefect task: resolve the configured dataset to train/val manifests written beside the run."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from prefect import get_run_logger, task

from camflow import storage
from camflow.data import embedded
from camflow.data.bcss import read_bcss
from camflow.data.manifest import class_names, read_manifest, write_manifest
from camflow.data.rejects import Rejects
from camflow.data.voc import read_voc
from camflow.data.wsol import read_wsol
from tasks.common import CACHED, RETRIED


def _read_split(data: dict[str, Any], root: str, split: str, rejects: Rejects) -> pa.Table:
    kind = data["kind"]
    if kind in ("embedded", "voc"):
        return read_voc(root, split, rejects=rejects)
    if kind == "bcss":
        return read_bcss(root, split, rejects=rejects)
    if kind == "wsol":
        return read_wsol(f"{root}/metadata/{split}", root, split=split, rejects=rejects)
    if kind == "manifest":
        table = read_manifest(data["manifest"])
        return table.filter(pa.compute.equal(table["split"], split))
    raise ValueError(f"unknown data.kind {kind!r}")


def _classes(table: pa.Table, data: dict[str, Any], root: str) -> list[str]:
    names = class_names(table)
    if names:
        return names
    if data["kind"] == "embedded":
        return list(embedded.CLASSES)
    source = data["manifest"] if data["kind"] == "manifest" else root
    raise ValueError(f"the {data['kind']} dataset {storage.redact(str(source))} names no classes: "
                     "its manifest needs class names (camflow.data.manifest.with_classes adds them)")


@task(name="prepare-data", **CACHED, **RETRIED)
def prepare_data(data: dict[str, Any], run_dir: str, output: str | None = None) -> dict[str, Any]:
    """Manifests of the train and val splits (URIs), class names, and how many were rejected.

    The embedded benchmark is built under ``<output>/data/embedded`` (the run's own folder when no
    output root is given), where later runs reuse an identical build.
    """
    log = get_run_logger()
    root = data.get("root") or storage.join(output or run_dir, "data", "embedded")
    if data["kind"] == "embedded":
        root = str(embedded.build(root, seed=data["seed"], train=data["embedded_train"],
                                  val=data["embedded_val"], size=max(64, data["image_size"])))
    out: dict[str, Any] = {"root": root, "rejects": {}}
    for split_key in ("train_split", "val_split"):
        split = data[split_key]
        rejects = Rejects()
        table = _read_split(data, root, split, rejects)
        uri = storage.join(run_dir, "manifests", f"{split}.parquet")
        write_manifest(table, uri)
        if len(rejects):
            storage.write_table(rejects.to_table(), storage.join(run_dir, "rejects", f"{split}.parquet"))
            log.warning("%d %s records rejected (see rejects/%s.parquet)", len(rejects), split, split)
        out[split_key.replace("_split", "_manifest")] = uri
        if "classes" not in out:
            out["classes"] = _classes(table, data, root)
        out["rejects"][split] = len(rejects)
        log.info("%s: %d images", split, table.num_rows)
    out["num_classes"] = len(out["classes"])
    return out
