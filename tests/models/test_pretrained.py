"""Every form of ``pretrained``, the torchvision layout of exported weights, and weight cards."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors.torch import save, save_file

from camflow.models import build
from camflow.models.backbones import to_torchvision_state_dict
from camflow.models.pretrained import card_uri, weights_digest


def _tv_file(tmp_path, name: str = "resnet18", fill: float = 0.25) -> str:
    tv = torchvision.models.get_model(name, weights=None)
    with torch.no_grad():
        tv.conv1.weight.fill_(fill)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(path))
    return str(path)


def test_false_is_random_init() -> None:
    assert build("resnet18", 2, pretrained=False).spec["pretrained"] is False


@pytest.mark.parametrize("form", [True, "imagenet"])
def test_imagenet_offline_falls_back_within_the_bounded_wait(form, monkeypatch, tmp_path, caplog) -> None:
    import time

    from camflow.models import pretrained

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    seen = []

    def refuse(url, dest, timeout):
        seen.append(timeout)
        raise OSError("network is unreachable")

    monkeypatch.setattr(pretrained, "_fetch", refuse)
    start = time.monotonic()
    with caplog.at_level("WARNING"):
        model = build("resnet18", 2, pretrained=form)
    assert time.monotonic() - start < 30 and seen == [pretrained.FETCH_TIMEOUT_S]
    assert model.spec["pretrained"] is False
    assert "RANDOM initialisation" in caplog.text


def test_embedded_must_be_resolved_to_a_file_first() -> None:
    with pytest.raises(ValueError, match="embedded_backbone"):
        build("resnet18", 2, pretrained="embedded")


def test_a_path_loads_the_backbone_and_skips_the_classifier(tmp_path) -> None:
    model = build("resnet18", 3, pretrained=_tv_file(tmp_path))
    assert model.spec["pretrained"] is True and torch.all(model.stage1.conv1.weight == 0.25)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    assert build("resnet18", 3, pretrained=str(tmp_path / "r18.pth")).spec["pretrained"] is True


def test_a_file_for_another_backbone_names_the_file_and_the_first_mismatched_keys(tmp_path) -> None:
    path = _tv_file(tmp_path, "resnet50")
    with pytest.raises(ValueError, match=r"resnet50\.safetensors do not fit resnet18: .*shape "
                                         r"mismatches \(first: layer1\.0\.conv1\.weight"):
        build("resnet18", 3, pretrained=path)
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        build("resnet18", 3, pretrained=str(tmp_path / "nothing.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="junk.safetensors are corrupt"):
        build("resnet18", 3, pretrained=str(tmp_path / "junk.safetensors"))


def test_a_card_that_does_not_match_its_weights_is_refused(tmp_path) -> None:
    path = _tv_file(tmp_path)
    with open(path, "rb") as f:
        digest = weights_digest(f.read())
    card = card_uri(path)
    assert card.endswith("resnet18.card.json")
    with open(card, "w") as f:
        json.dump({"backbone": "resnet18", "weights_sha256": digest}, f)
    assert build("resnet18", 3, pretrained=path).spec["pretrained"] is True
    with open(card, "w") as f:
        json.dump({"backbone": "resnet18", "weights_sha256": "0" * 64}, f)
    with pytest.raises(ValueError, match=r"resnet18\.card\.json does not match its weights"):
        build("resnet18", 3, pretrained=path)
    with open(card, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="card .* is not valid JSON"):
        build("resnet18", 3, pretrained=path)


def test_export_is_torchvision_layout_and_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    model = build("resnet18", 5).eval()
    state = to_torchvision_state_dict(model)
    tv = torchvision.models.resnet18(num_classes=5)
    tv.load_state_dict(state, strict=True)
    tv.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(tv(x), model(x), atol=1e-5)
    save(state)  # contiguous, plain tensors: safetensors takes them as they are
    with pytest.raises(ValueError, match="only ResNet-family"):
        to_torchvision_state_dict(build("resnet18", 5, head="recam"))
