"""How the refinement's affinity grid was chosen, and what the walk's length does: refined
pseudo-mask mIoU of held-out images, by AffinityNet stride and number of walk steps.

    .venv/bin/python bench/refine_walk.py RUN_DIR [--label p1] [--method broadcam]
        [--strides 4 8] [--train-images 1000] [--scored train|val] [--scored-images 150]
        [--steps 0 4 16 64 256]

RUN_DIR is a finished ``camflow run`` with ``cams.split: train`` (configs/full.yaml): its
classifier, BLS, stored train seeds and calibrated background score are used. For each stride an
AffinityNet is trained, with the refine stage's defaults, on the confident labels of the first
``--train-images`` training images (no mask of theirs is read). The scored images are held out
from that net: with ``--scored train`` (the default, and how the choice was made: the val split,
which the segmentation model is scored on, tunes nothing) the next ``--scored-images`` training
images, read from their stored seeds; with ``--scored val`` the first val images, whose seeds are
made as generation makes them. Their seeds are put on IRN's scale, walked on each net's
affinities and scored against their true masks. Printed: mIoU per stride and steps, with the
unrefined masks of the same images as the baseline, and each net's training time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camflow.bls import BLS  # noqa: E402
from camflow.data.manifest import read_manifest  # noqa: E402
from camflow.generate import CamMethod, class_maps, decode_records  # noqa: E402
from camflow.metrics.seg import SegConfusion  # noqa: E402
from camflow.models.checkpoint import load_checkpoint  # noqa: E402
from camflow.models.classifier import dense_prep_of  # noqa: E402
from camflow.options import BLSOptions, CamOptions, GenerateOptions  # noqa: E402
from camflow.outputs import dequantize_seed  # noqa: E402
from camflow.postprocess.masks import pseudo_mask_of_classes  # noqa: E402
from camflow.refine import AffinityNet, RefineOptions, seed_power  # noqa: E402
from camflow.refine.seeds import confident_labels, refine_masks, seed_maps  # noqa: E402
from camflow.refine.train import AffinityTraining, fit_affinity  # noqa: E402
from camflow.shards import ShardStore  # noqa: E402
from camflow.train.dense import pixel_items  # noqa: E402


def _val_seeds(run: Path, label: str, model: torch.nn.Module, method: str, layers: tuple,
               n: int, num_classes: int, size: int) -> tuple[list, list[torch.Tensor]]:
    records = read_manifest(str(run / "manifests" / "val.parquet")).to_pylist()
    images, _ = decode_records([r for r in records if r.get("mask_uri")][:n],
                               num_classes=num_classes)
    if method == "broadcam":
        made = CamMethod(method, layers,
                         weights=BLS.load(str(run / "bls" / f"{label}.safetensors")).coef_)
    else:
        made = CamMethod(method, CamOptions().layers)
    maps = class_maps(model, images, [made], GenerateOptions(num_classes, image_size=size))
    # As the refine stage reads them: quantised seeds, back at the image's size.
    seeds = []
    for im, m in zip(images, maps[made.key]):
        rows = [{"cam": m.seeds[k].tobytes(), "cam_height": m.seeds.shape[1],
                 "cam_width": m.seeds.shape[2], "height": im.pixels.shape[0],
                 "width": im.pixels.shape[1]} for k in range(len(im.labels))]
        seeds.append(torch.stack([dequantize_seed(r) for r in rows]))
    return images, seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--label", default="p1")
    parser.add_argument("--method", default="broadcam")
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--scored", choices=("train", "val"), default="train")
    parser.add_argument("--scored-images", type=int, default=150)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 4, 16, 64, 256])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--bls-layers", nargs="+", default=list(BLSOptions().layers))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    metrics = json.loads((args.run / "metrics.json").read_text())[args.label]
    background = metrics["methods"][args.method]["mask_bg_threshold"]
    model, _ = load_checkpoint(str(args.run / "models" / args.label / "best.safetensors"))
    model.eval()
    num_classes = int(model.spec["num_classes"])
    prep = dense_prep_of(model, args.image_size)
    base = RefineOptions()
    power = seed_power(background, base)
    train = read_manifest(str(args.run / "manifests" / "train.parquet")).to_pylist()
    train_images, _ = decode_records(train[:args.train_images], num_classes=num_classes)
    stored: dict[str, list] = {}
    for row in ShardStore(str(args.run / "outputs"), args.label).read(
            "seeds", args.method).to_pylist():
        stored.setdefault(row["image_id"], []).append(row)
    if args.scored == "val":
        images, seeds = _val_seeds(args.run, args.label, model, args.method,
                                   tuple(args.bls_layers), args.scored_images, num_classes,
                                   args.image_size)
        classes = [np.array(im.labels) for im in images]
    else:
        held_out = [r for r in train[args.train_images:]
                    if r.get("mask_uri") and r["image_id"] in stored][:args.scored_images]
        images, _ = decode_records(held_out, num_classes=num_classes)
        pairs = [seed_maps(stored[im.image_id], im.pixels.shape[:2]) for im in images]
        classes, seeds = [c for c, _ in pairs], [m for _, m in pairs]
    unrefined = SegConfusion(num_classes + 1)
    for im, c, s in zip(images, classes, seeds):
        unrefined.update(pseudo_mask_of_classes(s.numpy(), c, threshold=background)[None],
                         im.gt_mask[None])
    print(f"{args.method}: background {background}, power {power:.2f}; {len(images)} "
          f"{args.scored} images held out from the nets, unrefined mIoU "
          f"{unrefined.compute()['mIoU']:.3f}", flush=True)

    def labels(image_id: str, pixels: np.ndarray) -> torch.Tensor | None:
        if image_id not in stored:
            return None
        classes, maps = seed_maps(stored[image_id], pixels.shape[:2])
        return torch.from_numpy(confident_labels(maps, classes, num_classes, base, image_id,
                                                 power=power, image=pixels))

    items = pixel_items(((im.image_id, im.pixels) for im in train_images), prep, labels)
    x = torch.stack([prep(im.pixels) for im in images])
    for stride in args.strides:
        torch.manual_seed(0)
        net = AffinityNet.from_classifier(model, stride=stride)
        started = time.monotonic()
        history = fit_affinity(net, items, radius=base.radius, config=AffinityTraining())
        seconds = time.monotonic() - started
        row = []
        for steps in args.steps:
            options = RefineOptions(stride=stride, steps=steps)
            confusion = SegConfusion(num_classes + 1)
            for start in range(0, len(images), 32):
                batch = images[start:start + 32]
                masks = refine_masks(net, x[start:start + 32], seeds[start:start + 32],
                                     classes[start:start + 32], options,
                                     power=power)
                for im, mask in zip(batch, masks):
                    confusion.update(mask[None], im.gt_mask[None])
            row.append(f"{steps} steps {confusion.compute()['mIoU']:.3f}")
        print(f"stride {stride} ({len(items)} images, loss {history[0]:.3f} -> {history[-1]:.3f},"
              f" {seconds:.0f} s): " + ", ".join(row), flush=True)


if __name__ == "__main__":
    main()
