"""Applying a trained segmentation model to image files: one palette PNG per image.

A file that cannot be read as an image is reported with its reason and skipped; the others are
still done.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import torch
from torch import nn

from camflow import storage
from camflow.data.images import BadImageError, load_rgb
from camflow.data.transforms import ImagePrep
from camflow.postprocess.png import encode_label_png
from camflow.segment.infer import SegInference, predict

__all__ = ["Predictions", "predict_files"]


@dataclass
class Predictions:
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)


def _out_name(uri: str, taken: set[str]) -> str:
    stem = PurePosixPath(uri.replace(os.sep, "/").rstrip("/")).stem or "image"
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name


def predict_files(model: nn.Module, uris: Sequence[str], out_dir: str, *,
                  image_size: int = 112, inference: SegInference | None = None,
                  storage_options: Mapping[str, Any] | None = None) -> Predictions:
    """``out_dir/<stem>.png`` for each image of ``uris``, at the image's own size, labelled with
    ``inference`` (default: DeepLabV3's scales and flips)."""
    inference = inference or SegInference()
    prep = model.image_prep or ImagePrep(image_size)
    done, taken = Predictions(), set()
    for uri in uris:
        try:
            image = load_rgb(uri, storage_options)
        except (BadImageError, OSError, ValueError) as exc:
            done.failed.append((uri, str(exc) or type(exc).__name__))
            continue
        with torch.no_grad():
            mask = predict(model, prep(image)[None], size=(image.height, image.width),
                           inference=inference)[0]
        out = storage.join(out_dir, _out_name(uri, taken))
        storage.write_bytes(encode_label_png(mask.numpy(), name=uri), out, storage_options)
        done.written.append(out)
    return done
