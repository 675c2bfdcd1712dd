"""CAM generation for one shard of a manifest: decode -> class maps -> seeds, masks, boxes, metrics.

The three steps are separate functions so that a pipeline can run them on different workers
(decoding and post-processing on CPUs while a GPU worker computes maps), and so that each works
on plain numpy/pyarrow values that travel between processes without pickling model state.

Box conventions: the manifest and the ``boxes`` table use pixel edges (x1 exclusive);
``camflow.postprocess`` and ``camflow.metrics`` count inclusive pixel corners as wsolevaluation does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from camflow import cams as cam_engine
from camflow.data.images import BadImageError, load_rgb
from camflow.data.masks import load_mask
from camflow.data.validate import mask_value_problem
from camflow.metrics import SeedSweep
from camflow.models.classifier import image_prep_of
from camflow.options import GenerateOptions
from camflow.outputs import (
    BOXES_SCHEMA,
    MASKS_SCHEMA,
    SEEDS_SCHEMA,
    png_cell,
    quantize_seed,
    seed_rows,
)
from camflow.postprocess import (
    crf_from_labels,
    encode_label_png,
    extract_boxes,
    pseudo_mask_of_classes,
)
from camflow.run_metrics import new_metrics


@dataclass(frozen=True)
class CamMethod:
    """One way of making maps: a registered method, its layers and its options.

    ``weights`` (broadcam, or any head given as a matrix) travels as a numpy array;
    ``head_attr`` names a head module of the model (``recam_head`` for ReCAM).
    """

    name: str
    layers: tuple[str, ...]
    weights: np.ndarray | None = None
    head_attr: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def key(self) -> str:
        return self.label or self.name

    def request(self, model: nn.Module) -> cam_engine.CamRequest:
        """What the CAM engine needs of this method, for ``model``."""
        options = dict(self.options)
        if self.weights is not None:
            # Arrays arriving through Ray are read-only views: torch wants its own copy.
            options["weights"] = torch.tensor(np.array(self.weights, dtype=np.float32))
        head = getattr(model, self.head_attr) if self.head_attr is not None else None
        return cam_engine.CamRequest(self.name, self.layers, head=head, options=options)


@dataclass
class DecodedImage:
    image_id: str
    pixels: np.ndarray | None  # uint8 [H, W, 3]; None after the CAMs when no CRF needs it
    labels: list[int]
    gt_mask: np.ndarray | None = None  # uint8 [H, W]: 0 background, k+1 class k, 255 ignore
    gt_boxes: list[dict[str, float]] | None = None  # manifest rows (pixel edges)


# -- 1. decode --------------------------------------------------------------------------------

def decode_records(
    records: Sequence[Mapping[str, Any]], *, num_classes: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[list[DecodedImage], list[dict[str, str]]]:
    """Decode each manifest record; a bad one becomes a ``rejects`` row and the rest go on.

    With ``num_classes``, a true mask holding a value outside its classes is such a reject.
    """
    images, rejects = [], []
    for rec in records:
        image_id, uri = str(rec["image_id"]), str(rec["uri"])
        try:
            pixels = np.array(load_rgb(uri, storage_options))  # writable: torch and the CRF want it
            gt = None
            if rec.get("mask_uri"):
                gt = load_mask(rec["mask_uri"], storage_options)
                if gt.shape != pixels.shape[:2]:
                    raise BadImageError(
                        f"mask {gt.shape[1]}x{gt.shape[0]} differs from image "
                        f"{pixels.shape[1]}x{pixels.shape[0]}")
                problem = None if num_classes is None else mask_value_problem(gt, num_classes)
                if problem:
                    raise BadImageError(problem)
            labels = sorted({int(c) for c in rec["labels"] or []})
            if not labels:
                raise BadImageError("empty label set")
            images.append(DecodedImage(image_id, pixels, labels, gt, rec.get("boxes")))
        except (BadImageError, OSError, ValueError) as exc:
            rejects.append({"image_id": image_id, "uri": uri, "stage": "decode", "reason": str(exc)})
    return images, rejects


# -- 2. maps ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageMaps:
    """One method's maps of one image's own classes, in the forms post-processing and storage
    want them, made on the CAM worker's device and moved to the host once."""

    maps: np.ndarray  # float16 [K, H, W] in [0, 1] at the image's size, max-normalised
    seeds: np.ndarray  # uint8 [K, h, w]: the maps quantised at the seed stride (``quantize_seed``)


@torch.inference_mode(False)
def class_maps(
    model: nn.Module, images: Sequence[DecodedImage], methods: Sequence[CamMethod],
    opts: GenerateOptions,
) -> dict[str, list[ImageMaps]]:
    """Per method key and image, the maps and seeds of the image's own classes (in label order)
    at its own size; all methods share each batch's passes (``multiscale_many``)."""
    device = next(model.parameters()).device
    prep = image_prep_of(model, opts.image_size)
    requests = {m.key: m.request(model) for m in methods}
    if len(requests) != len(methods):
        raise ValueError(f"methods: keys must be distinct, got {[m.key for m in methods]}")
    out: dict[str, list[ImageMaps]] = {key: [] for key in requests}
    for start in range(0, len(images), opts.cam.batch_size):
        batch = images[start:start + opts.cam.batch_size]
        x = torch.stack([prep(im.pixels) for im in batch]).to(device)
        k = max(len(im.labels) for im in batch)
        # Images with fewer classes repeat their first class; the extra maps are dropped below.
        classes = torch.tensor([im.labels + im.labels[:1] * (k - len(im.labels)) for im in batch])
        # Normalised once, after the resize to each image's size.
        sums = cam_engine.multiscale_many(model, x, requests, classes, scales=opts.cam.scales,
                                          flip=opts.cam.flip, normalize=False)
        for key, method_sums in sums.items():
            for im, m in zip(batch, method_sums):
                out[key].append(_at_image_size(m[: len(im.labels)], im.pixels.shape[:2],
                                               opts.cam.seed_stride))
    return out


def _at_image_size(sums: torch.Tensor, size: tuple[int, int], stride: int) -> ImageMaps:
    m = sums.float()[None]
    if m.shape[-2:] != tuple(size):
        m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
    m = cam_engine.normalize_max(m[0]).clamp_(0, 1)
    seeds, _, _ = quantize_seed(m, stride)
    return ImageMaps(m.to(torch.float16).cpu().numpy(), seeds)


# -- 3. outputs and metrics ---------------------------------------------------------------------

def shard_outputs(
    images: Sequence[DecodedImage], maps: Sequence[ImageMaps], opts: GenerateOptions,
    *, scales: Sequence[float] | None = None,
) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """The ``seeds``, ``masks`` and ``boxes`` tables of a shard, and its metric accumulators."""
    mask_opts, box = opts.mask, opts.box
    threshold = mask_opts.threshold
    metrics = new_metrics(opts.num_classes)
    seeds, masks, boxes = [], [], []
    for im, made in zip(images, maps):
        own = made.maps.astype(np.float32)
        size = own.shape[-2:]
        seeds.extend(seed_rows(im.image_id, im.labels, made.seeds, size=size,
                               stride=opts.cam.seed_stride, scales=scales or opts.cam.scales))
        mask = pseudo_mask_of_classes(own, im.labels, background=mask_opts.background,
                                      threshold=threshold, alpha=mask_opts.bg_alpha,
                                      image_id=im.image_id)
        if mask_opts.crf:
            mask = _crf_refine(im, mask)
        masks.append({"image_id": im.image_id, "height": size[0], "width": size[1],
                      "mask_png": png_cell(encode_label_png(mask, name=im.image_id), im.image_id),
                      "bg_threshold": threshold, "crf": mask_opts.crf})
        for k, cam in zip(im.labels, own):
            found = extract_boxes(cam, tau=box.tau, method=box.method, percentile=box.percentile,
                                  components=box.components, image_id=im.image_id)
            # Inclusive corners from postprocess; the boxes table uses pixel edges.
            boxes.extend({"image_id": im.image_id, "class_id": k, "score": float(score),
                          "x0": float(x0), "y0": float(y0), "x1": float(x1 + 1),
                          "y1": float(y1 + 1)}
                         for (x0, y0, x1, y1), score in zip(found.boxes, found.scores))
        _update_metrics(metrics, im, own, mask)
    tables = {
        "seeds": pa.Table.from_pylist(seeds, schema=SEEDS_SCHEMA),
        "masks": pa.Table.from_pylist(masks, schema=MASKS_SCHEMA),
        "boxes": pa.Table.from_pylist(boxes, schema=BOXES_SCHEMA),
    }
    return tables, metrics


def _crf_refine(im: DecodedImage, mask: np.ndarray) -> np.ndarray:
    """The pseudo mask after a dense CRF over background and the image's own classes."""
    if im.pixels is None:
        raise ValueError(f"image {im.image_id!r}: the CRF needs the image's pixels")
    values = np.array([0, *(k + 1 for k in im.labels)])  # sorted: labels are sorted
    compact = np.searchsorted(values, mask)
    refined = crf_from_labels(im.pixels, compact, len(values), name=im.image_id)
    return values[refined].astype(mask.dtype)


def best_bg_thresholds(model: nn.Module, images: Sequence[DecodedImage],
                       methods: Sequence[CamMethod], opts: GenerateOptions) -> dict[str, float]:
    """Per method key, the constant background score at which its seeds reach their best mIoU
    on ``images``, scored against their masks; methods with nothing to score are left out.

    Pseudo masks made with that score are the seeds at their best threshold; choosing it on a few
    training images keeps the evaluated split out of the choice.
    """
    scored = [im for im in images if im.gt_mask is not None]
    if not scored:
        return {}
    best = {}
    for key, maps in class_maps(model, scored, methods, opts).items():
        sweep = SeedSweep(opts.num_classes)
        sweep.update_classes([m.maps.astype(np.float32) for m in maps],
                             [im.labels for im in scored], [im.gt_mask for im in scored],
                             image_ids=[im.image_id for im in scored], on_error="skip")
        result = sweep.compute()
        if np.isfinite(result["best_mIoU"]):
            best[key] = float(result["best_threshold"])
    return best


def _update_metrics(metrics: dict[str, Any], im: DecodedImage, own: np.ndarray,
                    mask: np.ndarray) -> None:
    # An image whose ground truth cannot be scored (e.g. a labelled class hidden entirely under
    # the ignore band) is left out of that metric; its outputs are still written.
    if im.gt_mask is not None:
        metrics["seed"].update_classes([own], [im.labels], [im.gt_mask], image_ids=[im.image_id],
                                       on_error="skip")
        metrics["mask"].update([mask], [im.gt_mask], image_ids=[im.image_id], on_error="skip")
        ignore = im.gt_mask == 255
        for k, cam in zip(im.labels, own):
            metrics["pixel"].update([cam], [im.gt_mask == k + 1], [ignore],
                                    image_ids=[f"{im.image_id}/class {k}"], on_error="skip")
    if im.gt_boxes:
        for k, cam in zip(im.labels, own):
            gt = np.array([[b["x0"], b["y0"], b["x1"] - 1, b["y1"] - 1]
                           for b in im.gt_boxes if b["class_id"] == k], np.float64)
            if len(gt):
                metrics["box"].update([cam], [gt], image_ids=[f"{im.image_id}/class {k}"],
                                      on_error="skip")
