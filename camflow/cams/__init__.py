"""Class activation maps: one engine, each method a small weight rule."""

from camflow.cams.hooks import Capture, capture, resolve_layers

__all__ = ["Capture", "capture", "resolve_layers"]
