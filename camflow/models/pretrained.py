"""ImageNet weights through torchvision's weights API, with a bounded wait and no hidden retries.

torchvision downloads weights with no network timeout; on a machine without internet (or behind a
black-holing firewall) that can hang forever. Here the file is fetched into torch.hub's cache with
an explicit timeout first, so torchvision then only reads the cache. A user may also point
``pretrained`` at a local or remote file holding a torchvision state dict.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from pathlib import Path

import torch
from torch import nn

from camflow import storage

__all__ = ["PretrainedUnavailable", "load_imagenet_weights", "load_state_dict_file"]

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 20.0


class PretrainedUnavailable(RuntimeError):
    """The requested pretrained weights could not be obtained."""


def _cached_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _fetch(url: str, dest: Path, timeout: float) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - https from torchvision
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_imagenet_weights(name: str, timeout: float = FETCH_TIMEOUT_S) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for ``name``; raises PretrainedUnavailable."""
    from torchvision.models import get_model_weights

    try:
        weights = get_model_weights(name).DEFAULT
    except (ValueError, KeyError) as err:
        raise PretrainedUnavailable(f"torchvision has no pretrained weights for {name!r}") from err
    cached = _cached_file(weights.url)
    if not cached.exists():
        try:
            _fetch(weights.url, cached, timeout)
        except OSError as err:
            raise PretrainedUnavailable(
                f"could not fetch ImageNet weights for {name} from {weights.url} "
                f"within {timeout:.0f}s ({err}); put the file at {cached} or pass a checkpoint"
            ) from err
    return weights.get_state_dict(progress=False, check_hash=False)


def load_state_dict_file(uri: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch file (read with weights_only=True)."""
    with storage.open_uri(uri, "rb") as f:
        data = f.read()
    if uri.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        return load_safetensors(data)
    import io

    buffer = io.BytesIO(data)
    state = torch.load(buffer, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{uri} does not hold a state dict (found {type(state).__name__})")
    return state


def apply_pretrained(model: nn.Module, name: str, pretrained: bool | str) -> bool:
    """Load weights into a torchvision ``model``; True when pretrained weights were applied.

    ``pretrained=True`` falls back to random init with a logged warning when the weights cannot be
    fetched (the machine may be offline); a file path that fails to load is an error.
    """
    if pretrained is False or pretrained is None:
        return False
    if isinstance(pretrained, str):
        state = load_state_dict_file(pretrained)
        source = pretrained
    else:
        try:
            state = load_imagenet_weights(name)
        except PretrainedUnavailable as err:
            log.warning("%s; continuing with RANDOM initialisation", err)
            return False
        source = f"torchvision {name} DEFAULT"
    # Classifier layers (fc / classifier) are dropped by the stage split: never load them, so a
    # file trained for another number of classes still provides its backbone.
    classifier_prefixes = ("fc.", "classifier.")
    state = {k: v for k, v in state.items() if not k.startswith(classifier_prefixes)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"pretrained weights from {source} do not fit {name}: {err}") from err
    missing = [k for k in missing if not k.startswith(classifier_prefixes)]
    if missing:
        raise ValueError(f"pretrained weights from {source} lack {len(missing)} keys, e.g. {missing[:5]}")
    log.info("loaded pretrained weights for %s from %s (%d unused keys)", name, source, len(unexpected))
    return True
