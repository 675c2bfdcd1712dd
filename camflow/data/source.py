"""The source benchmark: multi-label glyph images whose classes are disjoint from the digits.

A backbone pretrained on it gives the embedded benchmark what ImageNet gives PASCAL VOC: features
learnt on other classes, so that a classifier fine-tuned on 1-5 % of the target data starts from
something. It is drawn by the embedded benchmark's renderer (same textures, clutter, object sizes
and JPEG compression), with letters and symbols (camflow.data.glyphs) in place of the digits, and
built only from data inside installed packages: nothing is downloaded.

The images stay in memory (uint8 arrays); the same parameters give identical pixels whatever the
number of processes rendering them, and :attr:`SourceBenchmark.data_hash` fingerprints them.

    python -m camflow.data.source --out sheet.png      # build it and save a contact sheet
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

from camflow.data.embedded_render import render_image
from camflow.data.glyphs import SOURCE_CLASSES, glyph_pool

__all__ = ["FORMAT_VERSION", "SourceBenchmark", "SourceParams", "SourceSplit", "build_source",
           "contact_sheet"]

logger = logging.getLogger("camflow.data")

# Bump whenever the glyphs or the rendering change: cached backbones are keyed by it.
FORMAT_VERSION = 1
JPEG_QUALITY = 92  # the embedded benchmark's, so both carry the same compression artefacts
_SPLIT_CODES = {"train": 1, "val": 2}
POOL_SIZES = {"train": 160, "val": 60}  # glyph bitmaps per class that the images draw from


@dataclass(frozen=True)
class SourceParams:
    """Everything that determines the source benchmark's pixels and labels."""

    seed: int = 0
    train: int = 10000
    val: int = 2000
    size: int = 112  # image side, as the embedded benchmark's images

    def __post_init__(self) -> None:
        for name, low in (("seed", 0), ("train", 1), ("val", 1), ("size", 64)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"source benchmark: {name} must be an integer >= {low}, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        return {"format": FORMAT_VERSION, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SourceSplit:
    images: np.ndarray  # [N, size, size, 3] uint8
    labels: np.ndarray  # [N, C] uint8 multi-hot

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class SourceBenchmark:
    params: SourceParams
    classes: tuple[str, ...]
    train: SourceSplit
    val: SourceSplit
    data_hash: str  # sha256 (16 hex) of the parameters, every pixel and every label


def _arrays(folder: str, split: str, mode: str, params: SourceParams | None = None):
    shapes = {"images": None, "labels": None}
    if params is not None:
        count = params.train if split == "train" else params.val
        shapes = {"images": (count, params.size, params.size, 3),
                  "labels": (count, len(SOURCE_CLASSES))}
    return [np.lib.format.open_memmap(os.path.join(folder, f"{split}-{what}.npy"), mode=mode,
                                      dtype=np.uint8, shape=shape)
            for what, shape in shapes.items()]


def _render_ranges(folder: str, params: SourceParams, ranges: dict[str, tuple[int, int]]) -> None:
    """Render images [start, stop) of each split into the memory-mapped arrays in ``folder``."""
    for split, (start, stop) in ranges.items():
        images, labels = _arrays(folder, split, "r+")
        pool = glyph_pool(params.seed, split, POOL_SIZES[split])
        for index in range(start, stop):
            seed = np.random.SeedSequence([params.seed, 0x50C, _SPLIT_CODES[split], index])
            rendered = render_image(np.random.default_rng(seed), pool, params.size)
            buffer = io.BytesIO()
            Image.fromarray(rendered.pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY,
                                                  subsampling=0, optimize=False)
            images[index] = np.asarray(Image.open(buffer).convert("RGB"))
            labels[index, sorted(set(rendered.classes))] = 1
        images.flush()
        labels.flush()
        del images, labels


def _render(params: SourceParams, processes: int) -> tuple[SourceSplit, SourceSplit]:
    with tempfile.TemporaryDirectory(prefix="camflow-source-") as folder:
        shares: list[dict[str, tuple[int, int]]] = [{} for _ in range(processes)]
        for split, count in (("train", params.train), ("val", params.val)):
            for array in _arrays(folder, split, "w+", params):
                array.flush()
            bounds = np.linspace(0, count, processes + 1).round().astype(int)
            for share, a, b in zip(shares, bounds[:-1], bounds[1:]):
                share[split] = (int(a), int(b))
        # Helpers are plain subprocesses: multiprocessing would re-import the caller's __main__
        # (spawn) or copy its threads (fork), and nothing but this folder passes between them.
        helpers = [
            subprocess.Popen([sys.executable, "-m", "camflow.data.source", "--render", folder,
                              json.dumps(dataclasses.asdict(params)), json.dumps(share)], env=_env())
            for share in shares[1:]
        ]
        try:
            _render_ranges(folder, params, shares[0])
        finally:
            failed = [h.args for h in helpers if h.wait() != 0]
        if failed:
            raise RuntimeError(f"rendering the source benchmark failed in a helper: {failed[0]}")
        return tuple(SourceSplit(*(np.load(os.path.join(folder, f"{split}-{what}.npy"))
                                   for what in ("images", "labels")))
                     for split in ("train", "val"))


def _env() -> dict[str, str]:
    # The helpers import camflow from where this process found it, installed or not.
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}


def _default_processes() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def build_source(params: SourceParams | None = None, *, processes: int | None = None) -> SourceBenchmark:
    """Render the source benchmark (about 4 ms per image and core at 112 px)."""
    params = params or SourceParams()
    processes = max(1, min(processes or _default_processes(), 8))
    logger.info("rendering the source benchmark (%d train + %d val images, %d px, %d processes)",
                params.train, params.val, params.size, processes)
    train, val = _render(params, processes)
    digest = hashlib.sha256(json.dumps(params.to_dict(), sort_keys=True).encode())
    digest.update(json.dumps(SOURCE_CLASSES).encode())
    for split in (train, val):
        digest.update(split.images.tobytes())
        digest.update(split.labels.tobytes())
    return SourceBenchmark(params, SOURCE_CLASSES, train, val, digest.hexdigest()[:16])


def contact_sheet(split: SourceSplit, classes: tuple[str, ...], count: int = 24,
                  columns: int = 6) -> bytes:
    """PNG bytes: the first ``count`` images of a split with their class names."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont()
    tiles = []
    for i in range(min(count, len(split))):
        tile = Image.fromarray(split.images[i]).resize((2 * split.images.shape[2],) * 2,
                                                       Image.NEAREST)
        names = " ".join(classes[k] for k in np.flatnonzero(split.labels[i]))
        ImageDraw.Draw(tile).text((3, 3), names, fill=(255, 255, 0), font=font)
        tiles.append(tile)
    side = tiles[0].size[0]
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (side + 4) + 4, rows * (side + 4) + 4), (32, 32, 32))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (4 + (i % columns) * (side + 4), 4 + (i // columns) * (side + 4)))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"]:  # a helper process of _render_split
        folder, params, share = argv[1:]
        _render_ranges(folder, SourceParams(**json.loads(params)),
                       {split: tuple(r) for split, r in json.loads(share).items()})
        return 0
    parser = argparse.ArgumentParser(prog="python -m camflow.data.source",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="contact sheet PNG to write")
    parser.add_argument("--seed", type=int, default=SourceParams.seed)
    parser.add_argument("--train", type=int, default=SourceParams.train)
    parser.add_argument("--val", type=int, default=SourceParams.val)
    parser.add_argument("--size", type=int, default=SourceParams.size)
    args = parser.parse_args(argv)
    try:
        params = SourceParams(seed=args.seed, train=args.train, val=args.val, size=args.size)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bench = build_source(params)
    with open(args.out, "wb") as f:
        f.write(contact_sheet(bench.train, bench.classes))
    objects = bench.train.labels.sum(axis=0)
    print(f"source benchmark {bench.data_hash}: {len(bench.train)} train / {len(bench.val)} val "
          f"images, {len(bench.classes)} classes ({objects.min()}-{objects.max()} train images "
          f"per class); contact sheet {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
