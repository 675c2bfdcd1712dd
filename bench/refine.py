"""Affinity refinement of one method's train-split seeds: pseudo-mask mIoU before and after.

    .venv/bin/python -m flows.cli run --set cams.split=train --set train.proportions=[1.0] \
        --run-id refine-src                              # seeds of the training images
    .venv/bin/python bench/refine.py runs/refine-src [--method broadcam] [--run p1]

From the run: the method's seeds of the train split, the classifier the seeds came from, the
train manifest and its true masks. Confident labels of every training image's seeds (IRN's 0.30
/ 0.05) train AffinityNet, its backbone started from that classifier; every seed is then walked
on its image's affinities and made into a pseudo mask again (constant background 0.25, IRN's).
Both the run's own pseudo masks (``masks`` table, background score calibrated on val images) and
the refined ones are scored against the train masks with one SegConfusion each. Every
hyper-parameter is the papers' default (camflow.refine); nothing is tuned on any split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from camflow.data.dataset import ManifestDataset  # noqa: E402
from camflow.data.manifest import read_manifest  # noqa: E402
from camflow.data.masks import load_mask  # noqa: E402
from camflow.data.validate import resolve_record_uri  # noqa: E402
from camflow.metrics.seg import SegConfusion  # noqa: E402
from camflow.models.checkpoint import load_checkpoint  # noqa: E402
from camflow.postprocess.png import decode_label_png  # noqa: E402
from camflow.refine import AffinityNet, RefineOptions  # noqa: E402
from camflow.refine.seeds import confident_labels, refine_masks, seed_maps  # noqa: E402
from camflow.refine.train import AffinityTraining, ConfidentItems, fit_affinity  # noqa: E402
from camflow.shards import ShardStore  # noqa: E402


def _nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    t = torch.from_numpy(mask)[None, None].float()
    return torch.nn.functional.interpolate(t, size=shape, mode="nearest")[0, 0].byte().numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--method", default="broadcam")
    parser.add_argument("--run", default="p1", help="the training run (proportion label)")
    parser.add_argument("--epochs", type=int, default=AffinityTraining().epochs)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    run_dir = Path(args.run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())[args.run]
    if metrics.get("seeds_split") != "train":
        raise SystemExit(f"{run_dir}: its seeds are of the {metrics.get('seeds_split')} split; "
                         "make the run with --set cams.split=train")
    classifier, meta = load_checkpoint(str(run_dir / "models" / args.run / "best.safetensors"))
    num_classes = len(meta["classes"])
    manifest = read_manifest(str(run_dir / "manifests" / "train.parquet"))
    records = {r["image_id"]: r for r in manifest.to_pylist()}
    prep = classifier.image_prep
    size = tuple(prep.size)
    dataset = ManifestDataset(manifest, num_classes, transform=prep)
    store = ShardStore(str(run_dir / "outputs"), args.run)
    seeds = store.read("seeds", args.method).to_pylist()
    by_image: dict[str, list[dict]] = {}
    for row in seeds:
        by_image.setdefault(row["image_id"], []).append(row)
    options = RefineOptions()
    started = time.monotonic()
    images, labels, maps, ids, image_ids = [], [], [], [], []
    for index in range(len(dataset)):
        image_id = dataset.image_id(index)
        if image_id not in by_image:
            continue  # rejected by generation
        item = dataset[index]
        classes, seed = seed_maps(by_image[image_id], size)
        images.append(item["image"])
        maps.append(seed)
        ids.append(classes)
        image_ids.append(image_id)
        labels.append(torch.from_numpy(confident_labels(seed, classes, num_classes, options,
                                                        image_id)))
    confident = torch.stack(labels)
    decided = float((confident != 255).float().mean())
    print(f"{len(images)} training images with seeds ({args.method}); confident labels on "
          f"{decided:.1%} of their pixels ({time.monotonic() - started:.0f} s)")

    net = AffinityNet.from_classifier(classifier)
    started = time.monotonic()
    history = fit_affinity(net, ConfidentItems(images, labels, image_ids), radius=options.radius,
                           config=AffinityTraining(epochs=args.epochs))
    print(f"AffinityNet ({classifier.spec.get('name')}), {args.epochs} epochs: loss "
          f"{history[0]:.3f} -> {history[-1]:.3f} ({time.monotonic() - started:.0f} s)")

    started = time.monotonic()
    refined_conf = SegConfusion(num_classes + 1)
    stored_conf = SegConfusion(num_classes + 1)
    stored = {r["image_id"]: r for r in store.read("masks", args.method).to_pylist()}
    for start in range(0, len(images), 16):
        batch = slice(start, start + 16)
        masks = refine_masks(net, torch.stack(images[batch]), maps[batch], ids[batch], options,
                             image_ids[batch])
        for image_id, mask in zip(image_ids[batch], masks):
            record = records[image_id]
            gt = load_mask(resolve_record_uri(record["mask_uri"], None))
            refined_conf.update([_nearest(mask, gt.shape)], [gt], image_ids=[image_id])
            own = decode_label_png(stored[image_id]["mask_png"]["bytes"], name=image_id)
            stored_conf.update([_nearest(own, gt.shape)], [gt], image_ids=[image_id])
    before, after = stored_conf.compute()["mIoU"], refined_conf.compute()["mIoU"]
    print(f"refined {len(images)} images in {time.monotonic() - started:.0f} s")
    print(f"train pseudo-mask mIoU, {args.method} at {args.run}: run's masks {before:.3f} "
          f"(metrics.json: {metrics['methods'][args.method]['mask_mIoU']:.3f}), refined "
          f"{after:.3f}; ratio {after / before:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
