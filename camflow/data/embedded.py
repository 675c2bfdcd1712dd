"""The embedded WSSS/WSOL benchmark: digits on real photos and textures, in PASCAL VOC 2012 layout.

Built on first use, deterministically from a seed, only from data that ships inside installed
packages (scikit-learn's handwritten digits, scikit-image's and scikit-learn's images); nothing is
ever downloaded. The same parameters give byte-identical files (with the locked Pillow/zlib).

    python -m camflow.data.embedded --out DIR [--seed 0] [--train 2000] [--val 500] [--size 112]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camflow.data.embedded_render import RenderedImage, digit_pool, render_image
from camflow.data.masks import IGNORE, VOC_PALETTE, border_band, encode_mask_png

__all__ = ["CLASSES", "FORMAT_VERSION", "STAMP", "build", "class_frequencies", "main"]

logger = logging.getLogger("camflow.data")

CLASSES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
# Bump whenever the rendering changes: an old build with the same parameters is then rebuilt.
FORMAT_VERSION = 3
STAMP = "camflow_embedded.json"
FREQUENCIES = "class_frequencies.json"
CONTACT_SHEET = "contact_sheet.png"
JPEG_QUALITY = 92
_SPLIT_CODES = {"train": 1, "val": 2}


def _image_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _boxes(instances: np.ndarray, count: int) -> list[tuple[int, int, int, int]]:
    """VOC boxes (1-based inclusive xmin, ymin, xmax, ymax) of each object's visible pixels."""
    boxes = []
    for i in range(1, count + 1):
        ys, xs = np.nonzero(instances == i)
        boxes.append((int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1))
    return boxes


def _annotation_xml(image_id: str, size: int, classes, boxes) -> bytes:
    objects = "".join(
        "  <object>\n"
        f"    <name>{escape(CLASSES[k])}</name>\n"
        "    <pose>Unspecified</pose>\n"
        "    <truncated>0</truncated>\n"
        "    <difficult>0</difficult>\n"
        "    <bndbox>\n"
        f"      <xmin>{x0}</xmin>\n      <ymin>{y0}</ymin>\n"
        f"      <xmax>{x1}</xmax>\n      <ymax>{y1}</ymax>\n"
        "    </bndbox>\n"
        "  </object>\n"
        for k, (x0, y0, x1, y1) in zip(classes, boxes)
    )
    return (
        "<annotation>\n"
        "  <folder>camflow-embedded</folder>\n"
        f"  <filename>{escape(image_id)}.jpg</filename>\n"
        f"  <size>\n    <width>{size}</width>\n    <height>{size}</height>\n"
        "    <depth>3</depth>\n  </size>\n"
        "  <segmented>1</segmented>\n"
        f"{objects}"
        "</annotation>\n"
    ).encode()


def _class_mask(rendered: RenderedImage) -> np.ndarray:
    mask = np.zeros(rendered.instances.shape, dtype=np.uint8)
    for i, k in enumerate(rendered.classes, start=1):
        mask[rendered.instances == i] = k + 1
    mask[border_band(rendered.instances)] = IGNORE
    return mask


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False
    )
    return buffer.getvalue()


def _write_split(root: Path, split: str, count: int, seed: int, size: int) -> list[list[int]]:
    pool = digit_pool(seed, split)
    labels = []
    ids = []
    for index in range(count):
        image_id = _image_id(split, index)
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))
        rendered = render_image(rng, pool, size)
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(_jpeg(rendered.pixels))
        mask_path = root / "SegmentationClass" / f"{image_id}.png"
        mask_path.write_bytes(encode_mask_png(_class_mask(rendered)))
        boxes = _boxes(rendered.instances, len(rendered.classes))
        xml = _annotation_xml(image_id, size, rendered.classes, boxes)
        (root / "Annotations" / f"{image_id}.xml").write_bytes(xml)
        ids.append(image_id)
        labels.append(list(rendered.classes))
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
        "".join(f"{i}\n" for i in ids)
    )
    return labels


def _frequencies(labels: list[list[int]]) -> dict[str, dict[str, int]]:
    images = np.zeros(len(CLASSES), dtype=int)
    objects = np.zeros(len(CLASSES), dtype=int)
    for row in labels:
        objects += np.bincount(row, minlength=len(CLASSES))
        images += np.bincount(sorted(set(row)), minlength=len(CLASSES))
    return {
        "images": {c: int(n) for c, n in zip(CLASSES, images)},
        "objects": {c: int(n) for c, n in zip(CLASSES, objects)},
    }


def _contact_sheet(root: Path, image_ids: list[str], columns: int = 6, scale: int = 2) -> None:
    """Grid of images with their masks blended in, ignore bands in white and boxes drawn."""
    import xml.etree.ElementTree as ET

    font = ImageFont.load_default_imagefont()  # the bitmap font: same pixels everywhere
    palette = np.array(VOC_PALETTE, dtype=np.float32).reshape(256, 3)
    tiles = []
    for image_id in image_ids:
        pixels = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg"), np.float32)
        mask = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
        colour = palette[mask]
        blend = np.where((mask > 0)[:, :, None], 0.45, 0.0).astype(np.float32)
        blend[mask == IGNORE] = 0.8
        colour[mask == IGNORE] = 255.0
        tile = np.round(pixels * (1 - blend) + colour * blend).astype(np.uint8)
        h, w = mask.shape
        tile_image = Image.fromarray(tile).resize((w * scale, h * scale), Image.NEAREST)
        draw = ImageDraw.Draw(tile_image)
        tree = ET.parse(root / "Annotations" / f"{image_id}.xml")
        for obj in tree.findall("object"):
            name = obj.findtext("name")
            k = CLASSES.index(name)
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (int(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            rgb = tuple(VOC_PALETTE[3 * (k + 1) : 3 * (k + 2)])
            draw.rectangle(
                [(x0 - 1) * scale, (y0 - 1) * scale, x1 * scale - 1, y1 * scale - 1],
                outline=rgb,
                width=2,
            )
            draw.text(((x0 - 1) * scale + 3, (y0 - 1) * scale + 2), name, fill=rgb, font=font)
        draw.text((3, h * scale - 12), image_id, fill=(255, 255, 255), font=font)
        tiles.append(tile_image)
    rows = (len(tiles) + columns - 1) // columns
    tw, th = tiles[0].size
    sheet = Image.new("RGB", (columns * (tw + 4) + 4, rows * (th + 4) + 4), (32, 32, 32))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (4 + (i % columns) * (tw + 4), 4 + (i // columns) * (th + 4)))
    sheet.save(root / CONTACT_SHEET, format="PNG", optimize=False, compress_level=6)


def _build_into(root: Path, *, seed: int, train: int, val: int, size: int) -> None:
    for folder in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    frequencies = {}
    first_ids = []
    for split, count in (("train", train), ("val", val)):
        labels = _write_split(root, split, count, seed, size)
        frequencies[split] = _frequencies(labels)
        first_ids += [_image_id(split, i) for i in range(min(count, 18 if split == "train" else 6))]
    (root / "classes.json").write_text(json.dumps(list(CLASSES), indent=2) + "\n")
    (root / FREQUENCIES).write_text(json.dumps(frequencies, indent=2, sort_keys=True) + "\n")
    if first_ids:
        _contact_sheet(root, first_ids)


def _params(seed: int, train: int, val: int, size: int) -> dict[str, int]:
    return {"format": FORMAT_VERSION, "seed": seed, "train": train, "val": val, "size": size}


def _stamp_matches(root: Path, params: dict[str, int]) -> bool:
    try:
        return json.loads((root / STAMP).read_text()) == params
    except (OSError, ValueError):
        return False


def build(
    out_dir: str | os.PathLike, *, seed: int = 0, train: int = 2000, val: int = 500, size: int = 112
) -> Path:
    """Write the benchmark under ``out_dir`` and return its root; reuse an identical earlier build.

    The build happens in a sibling temporary folder that is renamed into place when complete, so
    a crash never leaves a half-built benchmark that looks finished, and concurrent builders agree.
    """
    for name, value, low in (("train", train, 0), ("val", val, 0), ("size", size, 64)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(
                f"embedded benchmark: {name} must be an integer >= {low}, got {value!r}"
            )
    if train + val == 0:
        raise ValueError("embedded benchmark: train + val must be at least 1 image")
    root = Path(out_dir)
    params = _params(int(seed), int(train), int(val), int(size))
    if _stamp_matches(root, params):
        return root
    if root.exists() and any(root.iterdir()) and not (root / STAMP).exists():
        raise FileExistsError(
            f"{root} exists and is not an embedded benchmark build; choose another --out"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.building-{uuid.uuid4().hex[:12]}"
    logger.info("building the embedded benchmark in %s (%s)", root, params)
    try:
        _build_into(staging, seed=params["seed"], train=train, val=val, size=size)
        (staging / STAMP).write_text(json.dumps(params, sort_keys=True) + "\n")
        _swap_into_place(staging, root, params)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _swap_into_place(staging: Path, root: Path, params: dict[str, int]) -> None:
    if root.exists():
        if _stamp_matches(root, params):  # a concurrent builder finished first
            return
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:12]}"
        root.rename(old)  # an empty folder or an earlier build with other parameters
        shutil.rmtree(old, ignore_errors=True)
    try:
        staging.rename(root)
    except OSError:
        if not _stamp_matches(root, params):
            raise


def class_frequencies(root: str | os.PathLike) -> dict[str, dict[str, dict[str, int]]]:
    """{split: {"images"|"objects": {class name: count}}} of a built benchmark."""
    return json.loads((Path(root) / FREQUENCIES).read_text())


def _format_frequencies(frequencies: dict) -> str:
    lines = [f"{'class':<8}" + "".join(f"{s + ' imgs':>12}{s + ' objs':>12}" for s in frequencies)]
    for name in CLASSES:
        lines.append(
            f"{name:<8}"
            + "".join(
                f"{f['images'][name]:>12}{f['objects'][name]:>12}" for f in frequencies.values()
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m camflow.data.embedded", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder (VOC 2012 layout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2000, help="number of training images")
    parser.add_argument("--val", type=int, default=500, help="number of validation images")
    parser.add_argument("--size", type=int, default=112, help="image side in pixels")
    args = parser.parse_args(argv)
    try:
        root = build(args.out, seed=args.seed, train=args.train, val=args.val, size=args.size)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"embedded benchmark at {root} (contact sheet: {root / CONTACT_SHEET})")
    print(_format_frequencies(class_frequencies(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
