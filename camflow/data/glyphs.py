"""Glyph bitmaps for the source benchmark: letters and symbols from the fonts matplotlib ships.

Each sample is made the way scikit-learn's digits were made (the UCI optdigits preprocessing): a
32 x 32 binary bitmap of the character, divided into 4 x 4 blocks whose "on" pixels are counted,
giving an 8 x 8 image with values 0..16. Drawn through the embedded benchmark's renderer, a glyph
then looks like a digit does there, but it is never one: the classes are chosen to be disjoint
from the digits (see :data:`SOURCE_GLYPHS`).

Train and val draw from different font faces, so the source val split measures generalisation to
unseen typefaces. Everything is driven by a seeded numpy Generator and Pillow's FreeType and
fixed-point resampling, so the same seed gives the same bitmaps on any machine.
"""

from __future__ import annotations

import os
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camflow.data.embedded_render import GlyphPool

__all__ = ["SOURCE_CLASSES", "SOURCE_GLYPHS", "font_faces", "glyph_bitmap", "glyph_pool"]

# Class name -> character. No digit of any script, nothing that reads as a digit 0-9 under another
# name (the Roman numerals I and V), and no character that is drawn like one: O, Q, o (0), l, i
# (1), Z, z (2), S, s (5), G, b (6), B (8), g, q (9) are left out. The Greek letters are those that
# are not Greek numerals for 1-9 (alpha..theta are).
SOURCE_GLYPHS: dict[str, str] = {
    "A": "A", "E": "E", "F": "F", "H": "H", "K": "K", "M": "M", "N": "N", "P": "P", "R": "R",
    "T": "T", "U": "U", "W": "W", "X": "X", "Y": "Y",
    "a": "a", "e": "e", "h": "h", "n": "n", "r": "r",
    "ampersand": "&", "at": "@", "hash": "#", "percent": "%", "plus": "+",
    "Lambda": "\u039b", "Pi": "\u03a0", "Sigma": "\u03a3", "Phi": "\u03a6", "Psi": "\u03a8",
    "Omega": "\u03a9",
}
SOURCE_CLASSES: tuple[str, ...] = tuple(SOURCE_GLYPHS)

# Text faces of matplotlib's DejaVu, STIX and Computer Modern families. The val faces are never
# used for training glyphs.
_TRAIN_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmtt10.ttf",
)
_VAL_FACES = (
    "DejaVuSans-BoldOblique.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSerif-Italic.ttf",
    "STIXGeneralBolIta.ttf", "cmss10.ttf", "cmti10.ttf",
)
_RENDER_PX = 48  # font size of the first drawing, before it is fitted into 32 x 32
_SPLIT_CODES = {"train": 1, "val": 2}


def _font_dir() -> str:
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


@lru_cache(maxsize=1)
def font_faces(split: str) -> tuple[str, ...]:
    """The font files (absolute paths) of a split; raises when matplotlib's fonts are missing."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    faces = _TRAIN_FACES if split == "train" else _VAL_FACES
    paths = tuple(os.path.join(_font_dir(), face) for face in faces)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"the source benchmark needs matplotlib's fonts; missing {missing}")
    return paths


@cache
def _covers(path: str, char: str) -> bool:
    from matplotlib import ft2font

    return ft2font.FT2Font(path).get_char_index(ord(char)) != 0


@lru_cache(maxsize=64)
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, _RENDER_PX)


def glyph_bitmap(char: str, font_path: str, rng: np.random.Generator) -> np.ndarray:
    """One 8 x 8 float32 bitmap (0..16) of ``char`` in a random stroke, slant and aspect."""
    canvas = 2 * _RENDER_PX
    image = Image.new("L", (canvas, canvas))
    # Handwritten digits have thick pen strokes; a stroke around the outline thickens thin faces.
    ImageDraw.Draw(image).text((canvas // 2, canvas // 2), char, fill=255, font=_font(font_path),
                               anchor="mm", stroke_width=int(rng.integers(0, 3)), stroke_fill=255)
    shear = float(rng.uniform(-0.25, 0.25))
    image = image.transform(image.size, Image.Transform.AFFINE,
                            (1.0, shear, -shear * canvas / 2, 0.0, 1.0, 0.0), Image.BICUBIC)
    on = np.asarray(image) > 127
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    if rows.size == 0:
        raise ValueError(f"{os.path.basename(font_path)} draws nothing for {char!r}")
    crop = on[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    width = width * float(rng.uniform(0.75, 1.05))  # narrower or wider than the face draws it
    # Full height, as the digits are; wide glyphs are squeezed so that a margin stays on the sides.
    scale = min(32.0 / height, 26.0 / width)
    size = (max(1, min(32, round(width * scale))), max(1, min(32, round(height * scale))))
    fitted = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) > 127
    bitmap = np.zeros((32, 32), dtype=np.uint8)
    y0, x0 = (32 - size[1]) // 2, (32 - size[0]) // 2
    bitmap[y0 : y0 + size[1], x0 : x0 + size[0]] = fitted
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.float32)


@lru_cache(maxsize=4)
def glyph_pool(seed: int, split: str, per_class: int = 160) -> GlyphPool:
    """``per_class`` bitmaps of every source class, from the fonts of ``split`` that draw it."""
    faces = font_faces(split)
    by_class = []
    for k, char in enumerate(SOURCE_GLYPHS.values()):
        covering = [f for f in faces if _covers(f, char)]
        if not covering:
            raise FileNotFoundError(f"no {split} font draws {char!r}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x61F, _SPLIT_CODES[split], k]))
        by_class.append(np.stack([
            glyph_bitmap(char, covering[int(rng.integers(len(covering)))], rng)
            for _ in range(per_class)
        ]))
    return GlyphPool(tuple(by_class))
