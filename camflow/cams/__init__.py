"""Class activation maps: one engine, each method a small weight rule.

``compute`` returns the maps of any registered method and ``compute_many`` those of several methods
from shared passes (one forward, one batched backward); ``multiscale`` / ``multiscale_many``
aggregate them over scales and horizontal flips; ``capture`` records layer outputs (and gradients) of any ``nn.Module``.
New methods join with ``register_method``; ``METHODS`` lists them.
"""

# Importing the rule modules registers their methods.
from camflow.cams import gradient, linear, scorecam  # noqa: F401
from camflow.cams.engine import (
    GRADIENT_MODES,
    CamRequest,
    class_maps,
    class_maps_many,
    compute,
    compute_many,
    normalize_max,
    resize,
)
from camflow.cams.hooks import Capture, capture, resolve_layers
from camflow.cams.linear import broadcam_matrix, find_head, head_matrix
from camflow.cams.multiscale import SCALES, multiscale, multiscale_many
from camflow.cams.registry import METHODS, MethodInputs, MethodSpec, get_method, register_method

__all__ = [
    "GRADIENT_MODES",
    "METHODS",
    "SCALES",
    "CamRequest",
    "Capture",
    "MethodInputs",
    "MethodSpec",
    "broadcam_matrix",
    "capture",
    "class_maps",
    "class_maps_many",
    "compute",
    "compute_many",
    "find_head",
    "get_method",
    "head_matrix",
    "multiscale",
    "multiscale_many",
    "normalize_max",
    "register_method",
    "resize",
    "resolve_layers",
]
