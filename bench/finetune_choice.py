"""How the embedded preset's training hyper-parameters were chosen: on training images only.

    .venv/bin/python bench/finetune_choice.py [--pretrained embedded|PATH|none] \\
        [--proportions 0.01 0.05 1] [--seeds 0 1] [--set lr=0.001 backbone_lr_scale=0.3 ...]

The embedded benchmark's training split is cut in two: the first 1600 images are the pool that
the proportions are taken from, the last 400 a *dev* set that scores the classifiers. The val
split, on which camflow scores classifiers and CAMs, is never read. Each line prints dev mAP
against the preset's own figure measured in the same run (``--set`` changes one or more fields),
so every choice can be re-checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camflow.data import embedded  # noqa: E402
from camflow.data.voc import read_voc  # noqa: E402
from camflow.pretrain import embedded_backbone  # noqa: E402
from camflow.train import TrainConfig, train  # noqa: E402
from camflow.train.data import manifest_datasets  # noqa: E402

POOL = 1600  # training images the proportions are drawn from; the rest score


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a plain string such as a schedule name


def _dev_map(config: TrainConfig, pool, dev, out: str) -> tuple[float, float]:
    train_ds, dev_ds = manifest_datasets(pool, dev, len(embedded.CLASSES),
                                         image_size=config.image_size, min_scale=config.min_scale,
                                         hflip=config.hflip, color_jitter=config.color_jitter)
    start = time.monotonic()
    result = train(config, train_ds, dev_ds, out_uri=out, classes=list(embedded.CLASSES))
    return result.best_metrics["mAP"], time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/bench/embedded")
    parser.add_argument("--out", default="runs/bench/finetune_choice")
    parser.add_argument("--pretrained", default="embedded",
                        help="embedded (the cached source backbone), a state-dict file, or none")
    parser.add_argument("--proportions", type=float, nargs="+", default=[0.01, 0.05, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    root = embedded.build(args.data)
    train_split = read_voc(root, "train")
    pool, dev = train_split.slice(0, POOL), train_split.slice(POOL)
    pretrained: bool | str = False
    if args.pretrained == "embedded":
        pretrained = embedded_backbone("resnet18")
    elif args.pretrained != "none":
        pretrained = args.pretrained
    changes = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}

    print(f"pool {len(pool)} / dev {len(dev)} training images; pretrained: {args.pretrained}; "
          f"changes: {changes or 'none'}")
    print(f"{'proportion':>10} {'seed':>4} {'preset dev mAP':>14} {'changed':>8} {'ratio':>6} "
          f"{'preset s':>8} {'changed s':>9}")
    for proportion in args.proportions:
        for seed in args.seeds:
            preset = TrainConfig.embedded(proportion, pretrained=pretrained, seed=seed)
            base, base_s = _dev_map(preset, pool, dev, f"{args.out}/preset")
            if changes:
                new, new_s = _dev_map(preset.replace(**changes), pool, dev, f"{args.out}/changed")
            else:
                new, new_s = np.nan, np.nan
            print(f"{proportion:>10.0%} {seed:>4} {base:>14.3f} {new:>8.3f} {new / base:>6.2f} "
                  f"{base_s:>8.0f} {new_s:>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
