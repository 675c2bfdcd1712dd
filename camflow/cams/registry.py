"""The method registry: each CAM method is a small rule that turns captured tensors into weights.

Every CAM in camflow is ``relu(sum_c w[b, k, c] * A_c)`` over the feature maps ``A`` of one or more
layers. A method only decides ``w``. It receives a ``MethodInputs`` and returns, for every layer,
either channel weights of shape ``[B, K, C]`` or per-pixel weights of shape ``[B, K, C, h, w]``
(LayerCAM); the engine (``camflow.cams.engine``) does the weighted sum, the per-layer resizing, the
ReLU and everything else.

Register a new method with::

    @register_method("mymethod", gradients=True, options=("alpha",))
    def mymethod(inputs: MethodInputs) -> dict[str, Tensor]:
        return {name: g.mean(dim=(-2, -1)) for name, g in inputs.gradients.items()}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

__all__ = ["METHODS", "MethodInputs", "MethodSpec", "get_method", "register_method"]


@dataclass(frozen=True)
class MethodInputs:
    """What a weight rule may look at.

    ``activations[layer]`` is ``[B, C, h, w]`` float32 (ReLU'd first when the method asks for it);
    ``gradients[layer]`` is ``[B, K, C, h, w]`` float32, d logit[b, classes[b, k]] / d A, present
    only for methods registered with ``gradients=True``. ``classes`` is ``[B, K]`` on the model's
    device; ``images`` are the (validated) inputs, for methods that run extra forward passes.
    Rules run with autocast off, so their arithmetic is float32; ``logits_of(x)`` runs the model
    on a batch the way the caller would have (under the caller's autocast) and returns its logits.
    """

    model: nn.Module
    logits_of: Callable[[Tensor], Tensor]
    images: Tensor
    classes: Tensor
    layers: tuple[str, ...]
    activations: Mapping[str, Tensor]
    gradients: Mapping[str, Tensor] | None
    head: nn.Module | None
    options: Mapping[str, Any] = field(default_factory=dict)


WeightRule = Callable[[MethodInputs], Mapping[str, Tensor]]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its weight rule and what the engine must prepare for it."""

    name: str
    rule: WeightRule
    gradients: bool
    options: frozenset[str]
    rectify_activations: bool
    single_layer: bool
    uses_logits: bool


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    gradients: bool = False,
    options: tuple[str, ...] = (),
    rectify_activations: bool = False,
    single_layer: bool = False,
    uses_logits: bool = False,
) -> Callable[[WeightRule], WeightRule]:
    """Register ``rule`` under ``name`` in ``METHODS``.

    ``gradients``: the engine computes d score / d activation for all K classes (one backward).
    ``options``: names of the keyword options the method accepts (anything else is an error).
    ``rectify_activations``: the engine applies ReLU to the activations before weighting them.
    ``single_layer``: the method is defined on exactly one layer (a classifier head's input).
    ``uses_logits``: the method scores classes with the model's logits, so class ids are checked
    against the model's output width (implied by ``gradients``).
    """

    def decorator(rule: WeightRule) -> WeightRule:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered")
        METHODS[name] = MethodSpec(
            name=name,
            rule=rule,
            gradients=gradients,
            options=frozenset(options),
            rectify_activations=rectify_activations,
            single_layer=single_layer,
            uses_logits=uses_logits or gradients,
        )
        return rule

    return decorator


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``; ``ValueError`` listing the known names otherwise."""
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(
            f"method: unknown CAM method {name!r}; known: {', '.join(sorted(METHODS))}"
        )
    return METHODS[name]
