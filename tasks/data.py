"""Prefect task: resolve the configured dataset to train/val manifests written beside the run."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from camflow import storage
from camflow.data import embedded
from camflow.data.manifest import write_manifest
from camflow.data.rejects import Rejects
from camflow.data.sources import DataOptions, read_split, split_classes
from tasks.common import CACHED, RETRIED


@task(name="prepare-data", **CACHED, **RETRIED)
def prepare_data(data: DataOptions, run_dir: str, output: str | None = None) -> dict[str, Any]:
    """Manifests of the train and val splits (URIs), class names, and how many were rejected.

    The embedded benchmark is built under ``<output>/data/embedded`` (the run's own folder when no
    output root is given), where later runs reuse an identical build.
    """
    log = get_run_logger()
    root = data.root or storage.join(output or run_dir, "data", "embedded")
    if data.kind == "embedded":
        root = str(embedded.build(root, seed=data.seed, train=data.embedded_train,
                                  val=data.embedded_val, size=max(64, data.image_size)))
    out: dict[str, Any] = {"root": root, "rejects": {}}
    for split_key in ("train_split", "val_split"):
        split = getattr(data, split_key)
        rejects = Rejects()
        table = read_split(data, root, split, rejects)
        uri = storage.join(run_dir, "manifests", f"{split}.parquet")
        write_manifest(table, uri)
        if len(rejects):
            storage.write_table(rejects.to_table(), storage.join(run_dir, "rejects", f"{split}.parquet"))
            log.warning("%d %s records rejected (see rejects/%s.parquet)", len(rejects), split, split)
        out[split_key.replace("_split", "_manifest")] = uri
        if "classes" not in out:
            out["classes"] = split_classes(table, data, root)
        out["rejects"][split] = len(rejects)
        log.info("%s: %d images", split, table.num_rows)
    out["num_classes"] = len(out["classes"])
    return out
