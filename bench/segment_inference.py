"""How the segmentation model's inference was checked: mIoU of held-out *training* images by
inference (one pass, its flip, DeepLabV3's scales with and without flips), for a segmentation
model that did not learn from them.

    .venv/bin/python bench/segment_inference.py RUN_DIR [--label p1] [--method broadcam]
        [--train-images 1500] [--model PATH]

RUN_DIR is a finished ``camflow run`` with ``cams.split: train`` and ``refine.enabled``
(configs/full.yaml). A segmentation model is trained, with the segment stage's defaults, on the
refined pseudo masks of the first ``--train-images`` training images (no true mask of theirs is
read) and saved to ``--model`` (default RUN_DIR/models/LABEL/segmenter-heldout.safetensors; an
existing one is reused). The remaining training images are scored against their true masks with
each inference, beside their own unrefined and refined pseudo masks. The val split, which the
segment stage is scored on, is not read: the choice is made on training images only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camflow.data.manifest import read_manifest  # noqa: E402
from camflow.generate import decode_records  # noqa: E402
from camflow.metrics.seg import SegConfusion  # noqa: E402
from camflow.models.checkpoint import load_checkpoint  # noqa: E402
from camflow.models.classifier import dense_prep_of  # noqa: E402
from camflow.postprocess.png import decode_label_png  # noqa: E402
from camflow.segment import (  # noqa: E402
    MaskItems,
    SegInference,
    SegTraining,
    fit_segmenter,
    load_segmenter,
    save_segmenter,
    score_segmenter,
    segmenter_from_classifier,
)
from camflow.segment.infer import DEEPLAB_SCALES  # noqa: E402
from camflow.shards import ShardStore  # noqa: E402

SIZE = 112  # the segment stage's input: the size the masks are made at
INFERENCES = {
    "one pass": SegInference.single(),
    "flip": SegInference(scales=(1.0,), flip=True),
    "DeepLabV3 scales": SegInference(flip=False),
    "DeepLabV3 scales + flip (default)": SegInference(),
}


def _masks(run: Path, run_id: str, table: str, method: str) -> dict[str, torch.Tensor]:
    rows = ShardStore(str(run / "outputs"), run_id).read(table, method).to_pylist()
    return {r["image_id"]: torch.from_numpy(
        decode_label_png(r["mask_png"]["bytes"], name=r["image_id"]).copy()) for r in rows}


def _at(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == tuple(size):
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)


def _fit(model_path: Path, classifier: torch.nn.Module, num_labels: int, prep, images, refined,
         n: int) -> None:
    chosen = [im for im in images if im.image_id in refined][:n]
    prepared = [prep(Image.fromarray(im.pixels)) for im in chosen]
    items = MaskItems(prepared, [_at(refined[im.image_id], x.shape[-2:])
                                 for im, x in zip(chosen, prepared)], [im.image_id for im in chosen])
    model = segmenter_from_classifier(classifier, num_labels)
    model.image_prep = prep
    started = time.monotonic()
    history = fit_segmenter(model, items, SegTraining())
    save_segmenter(model, str(model_path), {"history": history, "train_images": len(items),
                                            "seconds": time.monotonic() - started,
                                            "ids": [chosen[0].image_id, chosen[-1].image_id]})


def _mask_miou(masks: dict[str, torch.Tensor], images, num_labels: int) -> float:
    confusion = SegConfusion(num_labels)
    for im in images:
        mask = _at(masks[im.image_id], im.gt_mask.shape)
        confusion.update(mask[None], torch.from_numpy(im.gt_mask)[None], image_ids=[im.image_id])
    return confusion.compute()["mIoU"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--label", default="p1")
    parser.add_argument("--method", default="broadcam")
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run = args.run_dir
    classifier, meta = load_checkpoint(str(run / "models" / args.label / "best.safetensors"))
    num_classes = len(meta["classes"])
    prep = dense_prep_of(classifier, SIZE)
    records = read_manifest(str(run / "manifests" / "train.parquet")).to_pylist()
    images, _ = decode_records(records, num_classes=num_classes)
    refined = _masks(run, f"{args.label}-refine", "refined_masks", args.method)
    unrefined = _masks(run, args.label, "masks", args.method)
    model_path = args.model or run / "models" / args.label / "segmenter-heldout.safetensors"
    if not model_path.exists():
        _fit(model_path, classifier, num_classes + 1, prep, images, refined, args.train_images)
    model, saved = load_segmenter(str(model_path))
    learned = [im for im in images if im.image_id in refined][:saved["train_images"]]
    seen = {im.image_id for im in learned}
    held = [im for im in images if im.image_id not in seen and im.gt_mask is not None
            and im.image_id in refined and im.image_id in unrefined]
    num_labels = num_classes + 1
    print(f"segmentation model: {saved['train_images']} training images, "
          f"{saved['seconds']:.0f} s; scored: {len(held)} held-out training images")
    results = {"unrefined pseudo masks": _mask_miou(unrefined, held, num_labels),
               "refined pseudo masks": _mask_miou(refined, held, num_labels)}
    for name, value in results.items():
        print(f"{name:36s} mIoU {value:.4f}")
    batch = [prep(Image.fromarray(im.pixels)) for im in held]
    truths = [torch.from_numpy(im.gt_mask) for im in held]
    ids = [im.image_id for im in held]
    for name, inference in INFERENCES.items():
        started = time.monotonic()
        scores = score_segmenter(model, batch, truths, ids, inference=inference)
        results[name] = scores["mIoU"]
        print(f"{name:36s} mIoU {scores['mIoU']:.4f}  background IoU {scores['IoU'][0]:.3f}  "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    print(json.dumps({"scales": DEEPLAB_SCALES, "mIoU": results}))


if __name__ == "__main__":
    main()
