"""Pictures for reports and the dashboard: CAM, pseudo-mask and box overlays, and line plots."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from camflow.data.masks import VOC_PALETTE  # noqa: E402

_PALETTE = np.array(VOC_PALETTE, dtype=np.uint8).reshape(-1, 3)


def heatmap(cam: np.ndarray) -> np.ndarray:
    """A [H, W] map in [0, 1] as an RGB uint8 heat map (matplotlib's jet)."""
    rgba = plt.get_cmap("jet")(np.clip(cam, 0, 1))
    return (rgba[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, *, cam: np.ndarray | None = None, mask: np.ndarray | None = None,
            boxes: Sequence[Sequence[float]] = (), alpha: float = 0.5) -> Image.Image:
    """The RGB image with a CAM heat map or a label mask blended in, and boxes drawn (pixel edges)."""
    out = image.astype(np.float32)
    if cam is not None:
        out = (1 - alpha) * out + alpha * heatmap(cam)
    if mask is not None:
        colours = _PALETTE[mask.astype(np.int64) % len(_PALETTE)].astype(np.float32)
        shown = (mask > 0)[..., None]
        out = np.where(shown, (1 - alpha) * out + alpha * colours, out)
    picture = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 0), width=1)
    return picture


def grid(rows: Sequence[Sequence[Image.Image]], *, pad: int = 2,
         row_labels: Sequence[str] | None = None, column_labels: Sequence[str] | None = None,
         cell: int | None = None) -> Image.Image:
    """Tiles pictures in rows (resized to ``cell`` px squares when given), with optional labels."""
    rows = [[p.resize((cell, cell)) if cell else p for p in row] for row in rows]
    w = max(p.width for row in rows for p in row)
    h = max(p.height for row in rows for p in row)
    label_w = 90 if row_labels else 0
    label_h = 16 if column_labels else 0
    columns = max(len(row) for row in rows)
    sheet = Image.new("RGB", (label_w + columns * (w + pad) + pad,
                              label_h + len(rows) * (h + pad) + pad), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(column_labels or ()):
        draw.text((label_w + pad + c * (w + pad) + 2, 2), text, fill=(230, 230, 230))
    for r, row in enumerate(rows):
        y = label_h + pad + r * (h + pad)
        if row_labels:
            draw.text((4, y + h // 2 - 6), row_labels[r], fill=(230, 230, 230))
        for c, picture in enumerate(row):
            sheet.paste(picture, (label_w + pad + c * (w + pad), y))
    return sheet


def _curves(ax, series: Mapping[str, Mapping[float, float | tuple[float, float]]],
            percent_x: bool) -> None:
    for name, points in series.items():
        xs = sorted(points)
        values = [points[x] if isinstance(points[x], tuple) else (points[x], 0.0) for x in xs]
        shown = [x * 100 if percent_x else x for x in xs]
        mean = np.array([v[0] for v in values], dtype=np.float64)
        std = np.array([v[1] for v in values], dtype=np.float64)
        (line,) = ax.plot(shown, mean, marker="o", label=name)
        if np.any(std > 0):
            ax.fill_between(shown, mean - std, mean + std, color=line.get_color(), alpha=0.18,
                            linewidth=0)
    if percent_x:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)


def line_plot(series: Mapping[str, Mapping[float, float | tuple[float, float]]], *, xlabel: str,
              ylabel: str, title: str, percent_x: bool = True) -> bytes:
    """PNG bytes of one line per series (x -> y, or x -> (mean, std) drawn with a band)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    _curves(ax, series, percent_x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def metric_panels(panels: Mapping[str, Mapping[str, Mapping[float, float | tuple[float, float]]]],
                  *, xlabel: str, title: str, percent_x: bool = True) -> bytes:
    """PNG bytes: one panel per metric ({metric: series}), lines per method with std bands."""
    count = max(1, len(panels))
    columns = min(2, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), dpi=100,
                             squeeze=False)
    for ax, (metric, series) in zip(axes.flat, panels.items()):
        _curves(ax, series, percent_x)
        ax.set_title(metric)
        ax.set_xlabel(xlabel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 7), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_bytes(picture: Image.Image) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
