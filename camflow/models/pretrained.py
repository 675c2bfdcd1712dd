"""ImageNet weights through torchvision's weights API, with a bounded wait and no hidden retries.

torchvision downloads weights with no network timeout; on a machine without internet (or behind a
black-holing firewall) that can hang forever. Here the file is fetched into torch.hub's cache with
an explicit timeout first, so torchvision then only reads the cache. A user may also point
``pretrained`` at a local or remote file holding a torchvision state dict; a JSON *card* beside it
(``x.card.json`` for ``x.safetensors``) records where the weights came from and their sha256,
and a file that does not match its card is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camflow import storage

__all__ = [
    "EMBEDDED",
    "IMAGENET",
    "PretrainedUnavailable",
    "apply_pretrained",
    "card_uri",
    "check_card",
    "load_imagenet_weights",
    "load_state_dict_file",
    "read_card",
    "weights_digest",
]

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 20.0
IMAGENET = "imagenet"  # torchvision's ImageNet weights (needs a network)
EMBEDDED = "embedded"  # camflow's own backbone, pretrained on the source benchmark
CARD_SUFFIX = ".card.json"
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


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
    """A state dict from a ``.safetensors`` or torch file (read with weights_only=True).

    When a card (:func:`card_uri`) lies beside the file, the file must be the one it describes.
    """
    try:
        with storage.open_uri(uri, "rb") as f:
            data = f.read()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"pretrained weights {storage.redact(uri)} do not exist") from err
    card = read_card(card_uri(uri))
    if card is not None:
        check_card(card, data, uri)
    if uri.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise ValueError(f"pretrained weights {storage.redact(uri)} are corrupt ({err})") from err
    import io

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not one of its own
        raise ValueError(f"pretrained weights {storage.redact(uri)} are not a readable torch file "
                         f"({type(err).__name__}: {err})") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{storage.redact(uri)} does not hold a state dict (found {type(state).__name__})")
    return state


def card_uri(weights_uri: str) -> str:
    """Where the card of a weights file lies: ``x.safetensors`` -> ``x.card.json``."""
    stem = weights_uri[: -len(".safetensors")] if weights_uri.endswith(".safetensors") else weights_uri
    return stem + CARD_SUFFIX


def read_card(uri: str) -> dict[str, Any] | None:
    """The card at ``uri``, None when there is none; a card that is not JSON is an error."""
    try:
        with storage.open_uri(uri, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        card = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"the card {storage.redact(uri)} is not valid JSON ({err})") from err
    if not isinstance(card, dict):
        raise ValueError(f"the card {storage.redact(uri)} is not a JSON object")
    return card


def weights_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_card(card: dict[str, Any], data: bytes, uri: str, backbone: str | None = None) -> None:
    """Raise when ``data`` (the bytes of ``uri``) is not what ``card`` describes."""
    expected = card.get("weights_sha256")
    if expected != weights_digest(data):
        raise ValueError(f"the card {storage.redact(card_uri(uri))} does not match its weights "
                         f"{storage.redact(uri)} (sha256 {weights_digest(data)[:12]}..., the card "
                         f"says {str(expected)[:12]}...)")
    if backbone is not None and card.get("backbone") != backbone:
        raise ValueError(f"the card {storage.redact(card_uri(uri))} describes a "
                         f"{card.get('backbone')!r} backbone, not {backbone!r}")


def _describe_misfit(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    given = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k} (file {tuple(given[k].shape)}, model {tuple(v.shape)})"
             for k, v in expected.items() if k in given and tuple(given[k].shape) != tuple(v.shape)]
    problems = [f"{len(keys)} {what} (first: {', '.join(keys[:3])})"
                for what, keys in (("shape mismatches", wrong), ("missing keys", missing),
                                   ("unexpected keys", unexpected)) if keys]
    return "; ".join(problems) or None


def apply_pretrained(model: nn.Module, name: str, pretrained: bool | str | None) -> bool:
    """Load weights into a torchvision ``model``; True when pretrained weights were applied.

    ``pretrained``: False/None (random init), True or ``"imagenet"`` (torchvision's ImageNet
    weights; random init with a logged warning when they cannot be fetched, e.g. offline), or the
    path/URI of a torchvision state dict, which must fit ``name`` (an error names the file and the
    first mismatched keys). ``"embedded"`` must be resolved to a file first
    (``camflow.pretrain.embedded_backbone``).
    """
    if pretrained is False or pretrained is None:
        return False
    if pretrained == EMBEDDED:
        raise ValueError("pretrained='embedded' names camflow's source-pretrained backbone: get its "
                         "file with camflow.pretrain.embedded_backbone(name) and pass that path")
    if pretrained is True or pretrained == IMAGENET:
        try:
            state = load_imagenet_weights(name)
        except PretrainedUnavailable as err:
            log.warning("%s; continuing with RANDOM initialisation", err)
            return False
        source = f"torchvision {name} DEFAULT"
    elif isinstance(pretrained, str):
        state = load_state_dict_file(pretrained)
        source = storage.redact(pretrained)
    else:
        raise ValueError(f"pretrained must be a bool, 'imagenet', 'embedded' or a path, got {pretrained!r}")
    # Classifier layers (fc / classifier) are dropped by the stage split: never load them, so a
    # file trained for another number of classes still provides its backbone.
    misfit = _describe_misfit(model, state)
    if misfit:
        raise ValueError(f"pretrained weights {source} do not fit {name}: {misfit}")
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    model.load_state_dict(state, strict=False)
    log.info("loaded pretrained weights for %s from %s", name, source)
    return True
