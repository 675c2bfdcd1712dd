"""Classifier quality on the embedded benchmark: random init against the source-pretrained backbone.

    .venv/bin/python bench/train_quality.py [--data runs/bench/embedded] [--proportions 0.01 0.05 1]
        [--starts random source] [--seed 0] [--set FIELD=VALUE ...]

For each start (``random``: random init; ``source``: the backbone pretrained on the source
benchmark, from the cache or built first, see camflow.pretrain) and each proportion, trains
resnet18 with ``TrainConfig.embedded(proportion, pretrained=...)`` and prints val mAP / F1 / wall
time. Baselines in the same run: the chance mAP of the val set, the random-init run of the same
proportion, and the 5-minute budget. The targets of the source backbone are checked at the end.
The load average is printed, since shared CPUs inflate the timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camflow.data import embedded  # noqa: E402
from camflow.data.manifest import class_names  # noqa: E402
from camflow.data.voc import read_voc  # noqa: E402
from camflow.pretrain import embedded_backbone  # noqa: E402
from camflow.train import TrainConfig, train  # noqa: E402
from camflow.train.data import dataset_labels, manifest_datasets  # noqa: E402
from camflow.train.metrics import mean_average_precision  # noqa: E402

BUDGET_S = 300.0
# Targets of the source-pretrained backbone (issue 13), val mAP by proportion.
TARGETS = {0.01: 0.35, 0.05: 0.60, 1.0: 0.95}


def _chance_map(labels: np.ndarray, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([mean_average_precision(rng.random(labels.shape), labels) for _ in range(5)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/bench/embedded", help="embedded benchmark folder")
    parser.add_argument("--out", default="runs/bench/train_quality", help="checkpoints go here")
    parser.add_argument("--proportions", type=float, nargs="+", default=[0.01, 0.05, 1.0])
    parser.add_argument("--starts", nargs="+", default=["random", "source"],
                        choices=["random", "source"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override preset fields, e.g. --set epochs=8 lr=0.002")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    root = embedded.build(args.data)  # reuses an identical earlier build
    train_manifest, val_manifest = read_voc(root, "train"), read_voc(root, "val")
    classes = class_names(train_manifest) or list(embedded.CLASSES)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value.lower() if value in ("True", "False") else value)
        except json.JSONDecodeError:
            overrides[key] = value  # a plain string such as a schedule name
    pretrain_s = None
    starts = {}
    for start in args.starts:
        if start == "source":
            begin = time.monotonic()
            starts[start] = embedded_backbone("resnet18")
            pretrain_s = time.monotonic() - begin
        else:
            starts[start] = False

    rows = []
    chance = None
    for start, pretrained in starts.items():
        for proportion in args.proportions:
            config = TrainConfig.embedded(proportion, pretrained=pretrained, seed=args.seed,
                                          **overrides)
            train_ds, val_ds = manifest_datasets(
                train_manifest, val_manifest, len(classes), image_size=config.image_size,
                min_scale=config.min_scale, hflip=config.hflip, color_jitter=config.color_jitter)
            if chance is None:
                chance = _chance_map(dataset_labels(val_ds))
            load_before = os.getloadavg()[0]
            begin, cpu_start = time.monotonic(), time.process_time()
            result = train(config, train_ds, val_ds, out_uri=f"{args.out}/{start}/p{proportion:g}",
                           classes=classes)
            wall, cpu = time.monotonic() - begin, time.process_time() - cpu_start
            rows.append((start, proportion, result, wall, cpu, load_before, os.getloadavg()[0],
                         config))

    print(f"\nembedded benchmark: {len(train_manifest)} train / {len(val_manifest)} val images, "
          f"{os.cpu_count()} CPUs; chance val mAP {chance:.3f}")
    if pretrain_s is not None:
        print(f"source backbone: {starts['source']} (ready in {pretrain_s:.0f} s; a cached one "
              "costs ~0 s)")
    random_map = {p: r.best_metrics["mAP"] for s, p, r, *_ in rows if s == "random"}
    print(f"{'start':>6} {'proportion':>10} {'images':>6} {'epochs':>6} {'val mAP':>8} "
          f"{'F1 micro':>8} {'mAP/chance':>10} {'/random':>7} {'wall s':>7} {'wall/300s':>9} "
          f"{'cpu s':>7} {'load 1m':>11}")
    for start, proportion, result, wall, cpu, before, after, config in rows:
        best = result.best_metrics
        ratio = best["mAP"] / random_map[proportion] if proportion in random_map else float("nan")
        print(f"{start:>6} {proportion:>10.0%} {result.num_train:>6} {config.epochs:>6} "
              f"{best['mAP']:>8.3f} {best['f1_micro']:>8.3f} {best['mAP'] / chance:>10.2f} "
              f"{ratio:>7.2f} {wall:>7.0f} {wall / BUDGET_S:>9.2f} {cpu:>7.0f} "
              f"{before:>5.1f}->{after:<5.1f}")
    for start, proportion, result, *_ in rows:
        if start == "source" and proportion in TARGETS:
            value, target = result.best_metrics["mAP"], TARGETS[proportion]
            print(f"target (source backbone, {proportion:.0%}: val mAP >= {target}): "
                  f"{value:.3f} {'met' if value >= target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
