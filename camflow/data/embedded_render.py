"""Rendering one image of the embedded benchmarks: glyph objects on real textures, with clutter.

The glyphs are digits for the embedded benchmark and letters and symbols for the source
benchmark that pretrains its backbone (camflow.data.glyphs); both are drawn the same way.

Everything is driven by a numpy Generator and uses only integer/IEEE-basic float arithmetic and
Pillow's fixed-point resampling, so the same seed gives the same pixels on any machine.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["GlyphPool", "RenderedImage", "background_sources", "digit_pool", "render_image"]

# Shipped with scikit-image / scikit-learn (checked to load offline). Left out on purpose:
# `text`, `page`, `logo` and `clock` show characters or numerals that could pass for digits.
_SKIMAGE_SOURCES = (
    "brick",
    "grass",
    "gravel",
    "camera",
    "moon",
    "coins",
    "cell",
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)

OBJECT_COUNTS = (1, 2, 3)
OBJECT_COUNT_WEIGHTS = (0.5, 0.35, 0.15)
# Object height as a share of the image side: 37..67 px at the default 112.
MIN_OBJECT = 0.33
MAX_OBJECT = 0.6
# An object keeps at least this share of its pixels visible after later objects are drawn.
MIN_VISIBLE = 0.85
# Foreground threshold on the upsampled digit intensity (0..1): the mask is what passes it.
MASK_THRESHOLD = 0.4


@lru_cache(maxsize=1)
def background_sources() -> tuple[np.ndarray, ...]:
    """The real photos and textures the backgrounds are cropped from (uint8 H x W x 3)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    images = []
    for name in _SKIMAGE_SOURCES:
        array = np.asarray(getattr(skimage.data, name)())
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        images.append(np.ascontiguousarray(array[:, :, :3].astype(np.uint8)))
    images.extend(np.asarray(a, dtype=np.uint8) for a in load_sample_images().images)
    return tuple(images)


@dataclass(frozen=True)
class GlyphPool:
    """8x8 bitmaps (0..16) of one split, indexed by class: digits here, letters in camflow.data.glyphs."""

    by_class: tuple[np.ndarray, ...]  # by_class[k]: (n_k, 8, 8) float32


@lru_cache(maxsize=4)
def digit_pool(seed: int, split: str, val_share: float = 0.2) -> GlyphPool:
    """Split scikit-learn's 1797 digits per class, so train and val never share a source sample."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD1617]))
    by_class = []
    for k in range(10):
        idx = np.flatnonzero(digits.target == k)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_share))
        chosen = idx[n_val:] if split == "train" else idx[:n_val]
        by_class.append(digits.images[np.sort(chosen)].astype(np.float32))
    return GlyphPool(tuple(by_class))


@dataclass(frozen=True)
class RenderedImage:
    pixels: np.ndarray  # H x W x 3 uint8
    instances: np.ndarray  # H x W int32: 0 background, i + 1 for object i (visible part)
    classes: tuple[int, ...]  # class of object i


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    sources = background_sources()
    source = sources[int(rng.integers(len(sources)))]
    h, w = source.shape[:2]
    side = int(min(h, w) * rng.uniform(0.25, 0.9))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(source[y0 : y0 + side, x0 : x0 + side])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    bg = np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    if _is_gray(bg):
        # Grayscale textures get a random tint so colour alone never tells objects apart.
        tint = np.array([rng.uniform(0.55, 1.0) for _ in range(3)], dtype=np.float32)
        bg = bg * tint
    # Damp the texture so digits stay the most salient thing, but keep it clearly visible, and
    # keep the ground darker than the (always light) digits: one polarity is faster to learn.
    mean = bg.mean(axis=(0, 1), keepdims=True)
    contrast = np.float32(rng.uniform(0.3, 0.6))
    bg = mean + (bg - mean) * contrast
    brightness = max(float(_luminance(bg).mean()), 0.05)
    target = rng.uniform(0.1, 0.35)
    return np.clip(bg * np.float32(target / brightness), 0.0, 1.0)


def _is_gray(rgb: np.ndarray) -> bool:
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() < 1e-3) and bool(
        np.abs(rgb[..., 1] - rgb[..., 2]).max() < 1e-3
    )


def _random_colour(rng: np.random.Generator, bright: bool) -> tuple[float, float, float]:
    hue = rng.uniform(0.0, 1.0)
    saturation = rng.uniform(0.0, 0.9)
    value = rng.uniform(0.8, 1.0) if bright else rng.uniform(0.0, 0.25)
    return colorsys.hsv_to_rgb(hue, saturation, value)


def _legible_colour(rng: np.random.Generator, ground: float) -> np.ndarray:
    """A light colour at least ~0.3 brighter than the ground (mixed towards white if needed)."""
    colour = np.array(_random_colour(rng, bright=True), dtype=np.float32)
    floor = min(ground + 0.3, 0.9)
    while float(_luminance(colour)) < floor:
        colour = colour * np.float32(0.7) + np.float32(0.3)
    return colour


def _draw_clutter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Blobs, polygons and straight strokes: object-like texture that is not a digit."""
    size = image.shape[0]
    layer = Image.new("RGB", (size, size))
    alpha = Image.new("L", (size, size))
    draw_rgb = ImageDraw.Draw(layer)
    draw_a = ImageDraw.Draw(alpha)
    for _ in range(int(rng.integers(1, 4))):
        colour = tuple(int(c * 255) for c in _random_colour(rng, bool(rng.random() < 0.5)))
        opacity = int(rng.integers(110, 230))
        kind = int(rng.integers(3))
        cx, cy = (float(v) for v in rng.uniform(0, size, 2))
        if kind == 0:  # filled blob
            rx, ry = (float(v) for v in rng.uniform(3, size * 0.14, 2))
            box = [cx - rx, cy - ry, cx + rx, cy + ry]
            draw_rgb.ellipse(box, fill=colour)
            draw_a.ellipse(box, fill=opacity)
        elif kind == 1:  # filled triangle or quadrilateral
            n = int(rng.integers(3, 5))
            radius = rng.uniform(5, size * 0.15)
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            points = [
                (cx + radius * float(c), cy + radius * float(s))
                for c, s in zip(_cos(angles), _sin(angles))
            ]
            draw_rgb.polygon(points, fill=colour)
            draw_a.polygon(points, fill=opacity)
        else:  # one straight stroke
            length = rng.uniform(size * 0.1, size * 0.35)
            angle = rng.uniform(0, 2 * np.pi, 1)
            dx, dy = length * float(_cos(angle)[0]), length * float(_sin(angle)[0])
            width = int(rng.integers(2, 5))
            line = [(cx, cy), (cx + dx, cy + dy)]
            draw_rgb.line(line, fill=colour, width=width)
            draw_a.line(line, fill=opacity, width=width)
    a = np.asarray(alpha, dtype=np.float32)[:, :, None] / 255.0
    return image * (1 - a) + (np.asarray(layer, dtype=np.float32) / 255.0) * a


# Cosine and sine from a fixed polynomial: numpy's vectorised transcendental functions may use
# different SIMD code paths on different CPUs, and the benchmark must be byte-identical anywhere.
def _cos(x: np.ndarray) -> np.ndarray:
    return _sin(np.asarray(x, dtype=np.float64) + np.pi / 2)


def _sin(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = np.mod(x + np.pi, 2 * np.pi) - np.pi  # [-pi, pi)
    x = np.where(x > np.pi / 2, np.pi - x, x)
    x = np.where(x < -np.pi / 2, -np.pi - x, x)  # [-pi/2, pi/2]
    x2 = x * x
    # Taylor series to x^13: error < 1e-9 on [-pi/2, pi/2].
    term, total = x, x
    for n in range(1, 7):
        term = -term * x2 / ((2 * n) * (2 * n + 1))
        total = total + term
    return total


def _digit_intensity(rng: np.random.Generator, bitmap: np.ndarray, size: int) -> np.ndarray:
    """A smooth, rotated, scaled blob of strokes (0..1) from one 8x8 bitmap."""
    height = int(rng.integers(round(MIN_OBJECT * size), round(MAX_OBJECT * size) + 1))
    width = int(round(height * rng.uniform(0.7, 1.0)))
    padded = np.pad(bitmap / 16.0, 1).astype(np.float32)  # a zero rim fades the strokes out
    scale = 10 / 8
    image = Image.fromarray(padded, mode="F").resize(
        (int(round(width * scale)), int(round(height * scale))), Image.BICUBIC
    )
    image = image.rotate(float(rng.uniform(-10, 10)), resample=Image.BICUBIC, expand=True)
    intensity = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    rows = np.flatnonzero(intensity.max(axis=1) >= MASK_THRESHOLD)
    cols = np.flatnonzero(intensity.max(axis=0) >= MASK_THRESHOLD)
    return intensity[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _place(
    rng: np.random.Generator, fg: np.ndarray, instances: np.ndarray, attempts: int = 25
) -> tuple[int, int] | None:
    """Top-left corner where the new object hides little of itself and of the earlier ones."""
    size = instances.shape[0]
    h, w = fg.shape
    existing = np.bincount(instances.ravel())
    for _ in range(attempts):
        y = int(rng.integers(0, size - h + 1))
        x = int(rng.integers(0, size - w + 1))
        below = instances[y : y + h, x : x + w][fg]
        if below.size and np.count_nonzero(below) > (1 - MIN_VISIBLE) * fg.sum():
            continue
        covered = np.bincount(below, minlength=len(existing))
        remaining = existing[1:] - covered[1:]
        if np.all(remaining >= MIN_VISIBLE * existing[1:]):
            return y, x
    return None


def render_image(rng: np.random.Generator, pool: GlyphPool, size: int) -> RenderedImage:
    """One benchmark image with its instance map; every object keeps >= 85 % of its pixels."""
    image = _draw_clutter(rng, _background(rng, size))
    instances = np.zeros((size, size), dtype=np.int32)
    classes: list[int] = []
    n_objects = int(rng.choice(OBJECT_COUNTS, p=OBJECT_COUNT_WEIGHTS))
    for _ in range(n_objects):
        k = int(rng.integers(len(pool.by_class)))
        bitmaps = pool.by_class[k]
        intensity = _digit_intensity(rng, bitmaps[int(rng.integers(len(bitmaps)))], size)
        fg = intensity >= MASK_THRESHOLD
        where = _place(rng, fg, instances)
        if where is None:
            continue
        y, x = where
        h, w = fg.shape
        region = image[y : y + h, x : x + w]
        colour = _legible_colour(rng, ground=float(_luminance(region[fg]).mean()))
        shade = np.float32(0.8) + np.float32(0.2) * intensity[:, :, None]
        alpha = np.clip((intensity - np.float32(0.25)) / np.float32(0.3), 0, 1)[:, :, None]
        image[y : y + h, x : x + w] = region * (1 - alpha) + colour * shade * alpha
        instances[y : y + h, x : x + w][fg] = len(classes) + 1
        classes.append(k)
    noise = rng.integers(-6, 7, size=image.shape).astype(np.float32) / 255.0
    pixels = np.clip(np.round((image + noise) * 255.0), 0, 255).astype(np.uint8)
    return RenderedImage(pixels, instances, tuple(classes))
