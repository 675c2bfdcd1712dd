"""How the embedded preset's output stride was chosen: seed quality and cost at stride 32, 16, 8.

    .venv/bin/python bench/cam_resolution.py [--strides 32 16 8] [--proportions 0.05 1]

At 112 px and output stride 32, stage5 maps are 4 x 4: no method's seeds can be sharp. For each
stride, classifiers are fine-tuned from the source backbone with the embedded preset on the
first 1600 *training* images (as bench/finetune_choice.py) and seeds of cam, gradcam and
layercam (scales 1 and 0.5, as the demo) are scored on the other 400 training images, whose
masks the benchmark ships. The val split is never read. Printed per stride: seed mIoU, training
time and CAM time per image, as ratios against stride 32 measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camflow.cams import multiscale  # noqa: E402
from camflow.data import embedded  # noqa: E402
from camflow.data.dataset import ManifestDataset  # noqa: E402
from camflow.data.voc import read_voc  # noqa: E402
from camflow.metrics import SeedSweep  # noqa: E402
from camflow.models import load_checkpoint  # noqa: E402
from camflow.pretrain import embedded_backbone  # noqa: E402
from camflow.train import TrainConfig, train  # noqa: E402
from camflow.train.data import manifest_datasets  # noqa: E402

POOL = 1600
METHODS = {"cam": ["stage5"], "gradcam": ["stage5"], "layercam": ["stage4", "stage5"]}


def _seed_miou(checkpoint: str, dev, image_size: int, batch: int = 16) -> tuple[dict, float]:
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    data = ManifestDataset(dev, len(embedded.CLASSES), size=image_size)
    sweeps = {m: SeedSweep(len(embedded.CLASSES)) for m in METHODS}
    records = dev.to_pylist()
    seconds = 0.0
    for start in range(0, len(records), batch):
        items = [data[i] for i in range(start, min(start + batch, len(records)))]
        images = torch.stack([it["image"] for it in items])
        labels = torch.stack([it["labels"] for it in items])
        masks = np.stack([np.asarray(Image.open(r["mask_uri"]).resize((image_size, image_size),
                                                                       Image.NEAREST))
                          for r in records[start:start + batch]])
        for method, layers in METHODS.items():
            begin = time.perf_counter()
            maps = multiscale(model, images, method, layers, list(range(len(embedded.CLASSES))),
                              scales=(1.0, 0.5), flip=False)
            seconds += time.perf_counter() - begin
            sweeps[method].update(maps.detach(), labels, masks)
    return {m: s.compute()["best_mIoU"] for m, s in sweeps.items()}, seconds / len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/bench/embedded")
    parser.add_argument("--out", default="runs/bench/cam_resolution")
    parser.add_argument("--strides", type=int, nargs="+", default=[32, 16, 8])
    parser.add_argument("--proportions", type=float, nargs="+", default=[0.05, 1.0])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)

    root = embedded.build(args.data)
    train_split = read_voc(root, "train")
    pool, dev = train_split.slice(0, POOL), train_split.slice(POOL)
    backbone = embedded_backbone("resnet18")
    rows = []
    for proportion in args.proportions:
        for stride in args.strides:
            config = TrainConfig.embedded(proportion, pretrained=backbone, output_stride=stride)
            train_ds, dev_ds = manifest_datasets(pool, dev, len(embedded.CLASSES),
                                                 image_size=config.image_size,
                                                 min_scale=config.min_scale, hflip=config.hflip,
                                                 color_jitter=config.color_jitter)
            begin = time.monotonic()
            result = train(config, train_ds, dev_ds, out_uri=f"{args.out}/os{stride}/p{proportion:g}",
                           classes=list(embedded.CLASSES))
            train_s = time.monotonic() - begin
            mious, cam_s = _seed_miou(result.checkpoint_uri, dev, 112)
            rows.append((proportion, stride, result.best_metrics["mAP"], mious, train_s, cam_s))
            print(f"p={proportion:g} stride {stride}: dev mAP {result.best_metrics['mAP']:.3f}, "
                  f"seed mIoU {mious}, train {train_s:.0f} s, CAMs {cam_s * 1e3:.1f} ms/img",
                  flush=True)

    print(f"\n{'proportion':>10} {'stride':>6} {'dev mAP':>7} " +
          " ".join(f"{m + ' mIoU':>13}" for m in METHODS) +
          f" {'train s':>7} {'x os32':>6} {'CAM ms/img':>10} {'x os32':>6}")
    base = {p: (t, c) for p, s, _, _, t, c in rows if s == 32}
    for proportion, stride, m_ap, mious, train_s, cam_s in rows:
        t32, c32 = base.get(proportion, (np.nan, np.nan))
        print(f"{proportion:>10.0%} {stride:>6} {m_ap:>7.3f} " +
              " ".join(f"{mious[m]:>13.3f}" for m in METHODS) +
              f" {train_s:>7.0f} {train_s / t32:>6.2f} {cam_s * 1e3:>10.1f} {cam_s / c32:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
