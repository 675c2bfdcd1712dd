"""Prefect task: the source-pretrained backbone, built once per machine and copied into the run."""

from __future__ import annotations

import sys
from typing import Any

from prefect import get_run_logger, task

from camflow import storage
from camflow.models.pretrained import card_uri, read_card
from camflow.pretrain import PretrainConfig, embedded_backbone, entry_dir, pretrain
from tasks.common import RETRIED


def _copy(source: str, target: str) -> None:
    with storage.open_uri(source, "rb") as f:
        storage.write_bytes(f.read(), target)


@task(name="pretrain-backbone", **RETRIED)
def pretrain_backbone(recipe: dict[str, Any], run_dir: str | None = None,
                      out: str | None = None) -> dict[str, Any]:
    """Weights of the recipe's backbone: from the cache (trained there on first use), or at ``out``.

    With ``run_dir`` the weights and card are copied to ``<run_dir>/models/pretrained/``, so that
    training workers on other machines read them from the run's storage, and the run keeps them.
    """
    log = get_run_logger()
    config = PretrainConfig.from_dict(recipe)
    progress = sys.stderr.isatty()
    if out is not None:
        result = pretrain(config, out, progress=progress)
        weights, card = result.weights_uri, result.card
    else:
        if not entry_dir(config).exists():
            log.info("pretraining the %s backbone on the source benchmark: once per machine, a "
                     "few minutes on a CPU; then cached in %s", config.backbone, entry_dir(config))
        weights = embedded_backbone(config.backbone, config, progress=progress)
        card = read_card(card_uri(weights)) or {}
    if run_dir is not None:
        target = storage.join(run_dir, "models", "pretrained", f"{config.backbone}.safetensors")
        _copy(weights, target)
        _copy(card_uri(weights), card_uri(target))
        weights = target
    val = card.get("val", {})
    log.info("%s backbone pretrained on %d source classes (source-val mAP %.3f, %s s): %s",
             config.backbone, len(card.get("source", {}).get("classes", [])),
             val.get("mAP", float("nan")), card.get("seconds"), storage.redact(weights))
    return {"weights": weights, "card": card}
