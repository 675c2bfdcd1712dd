"""Capture the outputs (and, on request, gradients) of named layers of any ``nn.Module``.

``capture`` is the one place in camflow that installs forward hooks. The CAM engine uses it to get
feature maps and their gradients; feature extraction for the BLS uses it to read pooled stage
features. Hooks are removed when the ``with`` block ends, also when it ends with an exception, so
a model never accumulates hooks however often it is used.

Example::

    with capture(model, ["layer3", "layer4"]) as cap:
        logits = model(images)
    feats = {name: a.mean(dim=(2, 3)) for name, a in cap.activations.items()}

    with capture(model, ["layer4"], retain_grad=True) as cap:
        logits = model(images)
        (grad,) = cap.gradients(logits[:, 3].sum()).values()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["Capture", "capture", "resolve_layers"]


def resolve_layers(model: nn.Module, layers: Sequence[str] | str) -> dict[str, nn.Module]:
    """Map layer names (as ``model.named_modules()`` spells them) to their modules, in order.

    Raises ``ValueError`` naming the unknown layer and a few valid names when one does not exist.
    """
    if isinstance(layers, str):
        layers = [layers]
    names = list(layers)
    if not names:
        raise ValueError("layers: give at least one layer name")
    if len(set(names)) != len(names):
        raise ValueError(f"layers: duplicate layer names in {names}")
    modules = dict(model.named_modules())
    resolved = {}
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layers: layer names must be strings, got {name!r}")
        if name not in modules or name == "":
            valid = [n for n in modules if n]
            # The last named modules are the ones CAM users usually want: show those.
            hint = ", ".join(valid[:3] + (["..."] if len(valid) > 8 else []) + valid[-5:])
            raise ValueError(
                f"layers: unknown layer {name!r} in {type(model).__name__}; "
                f"valid names include: {hint}"
            )
        resolved[name] = modules[name]
    return resolved


class Capture:
    """What one ``capture`` block recorded.

    ``activations`` maps each requested layer name to the tensor its module returned during the
    most recent forward pass (when a module runs several times in one forward, the last output is
    kept). The model continues with a copy of that tensor, so in-place operations after the layer
    (``ReLU(inplace=True)``) do not alter what was recorded. Without ``retain_grad`` the tensors
    are detached; with it they stay in the autograd graph so that ``gradients`` can differentiate
    through them.
    """

    def __init__(self, layers: Sequence[str], retain_grad: bool) -> None:
        self.layers = list(layers)
        self.retain_grad = retain_grad
        self.activations: dict[str, Tensor] = {}

    def _record(self, name: str, output: object) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"layer {name!r} returned {type(output).__name__}, not a Tensor; "
                "choose a layer whose output is a single tensor"
            )
        self.activations[name] = output if self.retain_grad else output.detach()
        # The rest of the model gets a copy: a later in-place op (a Conv followed by
        # ReLU(inplace=True)) would otherwise overwrite the recorded output.
        return output.clone()

    def gradients(
        self,
        outputs: Tensor,
        grad_outputs: Tensor | None = None,
        *,
        is_grads_batched: bool = False,
        retain_graph: bool = False,
        layers: Sequence[str] | None = None,
    ) -> dict[str, Tensor]:
        """Gradients of ``outputs`` with respect to the captured activations of ``layers``
        (default: every captured layer).

        ``grad_outputs`` and ``is_grads_batched`` are passed to ``torch.autograd.grad``: with
        ``is_grads_batched=True`` and ``grad_outputs`` of shape ``[K, *outputs.shape]`` one call
        returns K gradients per layer (shape ``[K, *activation.shape]``) from one vectorised
        backward. Parameter gradients are not computed.
        """
        if not self.retain_grad:
            raise RuntimeError("gradients() needs capture(..., retain_grad=True)")
        wanted = self.layers if layers is None else list(layers)
        unknown = [n for n in wanted if n not in self.layers]
        if unknown:
            raise ValueError(f"layers {unknown} were not captured (captured: {self.layers})")
        missing = [n for n in wanted if n not in self.activations]
        if missing:
            raise RuntimeError(f"layers {missing} did not run during the forward pass")
        inputs = [self.activations[n] for n in wanted]
        not_in_graph = [n for n, a in zip(wanted, inputs) if not a.requires_grad]
        if not_in_graph:
            raise RuntimeError(
                f"layers {not_in_graph} are not in the autograd graph: run the forward with "
                "gradients enabled and with parameters or inputs that require grad"
            )
        grads = torch.autograd.grad(
            outputs,
            inputs,
            grad_outputs=grad_outputs,
            retain_graph=retain_graph,
            is_grads_batched=is_grads_batched,
        )
        return dict(zip(wanted, grads))

    def clear(self) -> None:
        """Drop the recorded tensors (and with them any autograd graph they keep alive)."""
        self.activations.clear()


@contextmanager
def capture(
    model: nn.Module, layers: Sequence[str] | str, *, retain_grad: bool = False
) -> Iterator[Capture]:
    """Record the outputs of ``layers`` of ``model`` during the forward passes run in the block.

    ``layers`` are names from ``model.named_modules()`` (for example ``"layer4"`` or
    ``"features.12"``). With ``retain_grad=True`` activations are kept in the autograd graph and
    ``Capture.gradients`` returns d outputs / d activation. All hooks are removed on exit; the
    recorded activations stay readable after the block (call ``clear()`` or drop the ``Capture``
    to free them).
    """
    modules = resolve_layers(model, layers)
    cap = Capture(list(modules), retain_grad)
    handles = []
    try:
        for name, module in modules.items():
            handles.append(
                module.register_forward_hook(
                    lambda _m, _inp, out, _name=name: cap._record(_name, out)
                )
            )
        yield cap
    finally:
        for handle in handles:
            handle.remove()
