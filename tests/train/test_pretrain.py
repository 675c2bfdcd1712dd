"""Pretraining on the source benchmark, its card, and the machine-wide backbone cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision

from camflow.data.source import SourceParams
from camflow.models import build
from camflow.models.pretrained import card_uri, read_card, weights_digest
from camflow.pretrain import PretrainConfig, cache_key, embedded_backbone, entry_dir, pretrain

# A recipe small enough for a test: 24 source images at 32 px, one epoch.
TINY = PretrainConfig(source=SourceParams(seed=3, train=24, val=8, size=64), image_size=32,
                      epochs=1, batch_size=8)


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CAMFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.slow
def test_pretrain_writes_torchvision_weights_and_a_card(tmp_path) -> None:
    out = str(tmp_path / "out" / "resnet18.safetensors")
    result = pretrain(TINY, out)
    card = read_card(card_uri(out))
    assert card == result.card
    assert card["backbone"] == "resnet18" and card["layout"] == "torchvision"
    assert card["source"]["classes"][:3] == ["A", "E", "F"] and len(card["source"]["classes"]) == 30
    assert len(card["source"]["data_hash"]) == 16 and card["source"]["params"]["train"] == 24
    assert card["recipe"] == TINY.to_dict() and card["epochs"] == 1
    assert {"mAP", "f1_micro", "exact_match"} <= set(card["val"]) and card["seconds"] > 0
    with open(out, "rb") as f:
        data = f.read()
    assert card["weights_sha256"] == weights_digest(data)
    # Plain torchvision loads it strictly, with the source classes as its fc.
    from safetensors.torch import load_file

    tv = torchvision.models.resnet18(num_classes=30)
    tv.load_state_dict(load_file(out), strict=True)
    model = build("resnet18", 10, pretrained=out)
    assert torch.equal(model.stage1.conv1.weight, tv.conv1.weight)


def test_the_cache_key_follows_everything_that_determines_the_weights() -> None:
    assert cache_key(TINY) == cache_key(PretrainConfig.from_dict(TINY.to_dict()))
    for other in (PretrainConfig(source=SourceParams(seed=4, train=24, val=8, size=64),
                                 image_size=32, epochs=1, batch_size=8),
                  PretrainConfig(source=TINY.source, image_size=32, epochs=2, batch_size=8),
                  PretrainConfig(backbone="resnet34", source=TINY.source, image_size=32, epochs=1,
                                 batch_size=8)):
        assert cache_key(other) != cache_key(TINY)
    with pytest.raises(ValueError, match="ResNet-family"):
        PretrainConfig(backbone="vgg16")


@pytest.mark.slow
def test_a_second_use_reuses_the_entry_and_a_corrupt_one_is_rebuilt(cache, caplog) -> None:
    path = embedded_backbone("resnet18", TINY)
    assert Path(path).parent == entry_dir(TINY) and str(cache) in path
    first = read_card(card_uri(path))
    assert first["cache_key"] == cache_key(TINY)
    assert not [p for p in entry_dir(TINY).parent.iterdir() if ".building-" in p.name]

    with caplog.at_level("INFO", logger="camflow.pretrain"):
        assert embedded_backbone("resnet18", TINY) == path
    assert "reusing" in caplog.text and read_card(card_uri(path))["created"] == first["created"]

    data = bytearray(Path(path).read_bytes())
    data[-100:] = bytes(100)  # damage the tensors; the card no longer matches
    Path(path).write_bytes(bytes(data))
    caplog.clear()
    with caplog.at_level("INFO", logger="camflow.pretrain"):
        again = embedded_backbone("resnet18", TINY)
    assert "corrupt" in caplog.text and "does not match its weights" in caplog.text
    rebuilt = read_card(card_uri(again))
    assert rebuilt["weights_sha256"] == weights_digest(Path(again).read_bytes())
    build("resnet18", 10, pretrained=again)  # and it loads

    Path(card_uri(again)).unlink()  # a card lost is corrupt too
    caplog.clear()
    with caplog.at_level("INFO", logger="camflow.pretrain"):
        embedded_backbone("resnet18", TINY)
    assert "card is missing" in caplog.text


@pytest.mark.slow
def test_two_processes_starting_at_once_train_once(cache, tmp_path) -> None:
    script = textwrap.dedent(f"""
        import json, logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        from camflow.pretrain import PretrainConfig, embedded_backbone
        config = PretrainConfig.from_dict(json.loads({json.dumps(json.dumps(TINY.to_dict()))}))
        print(embedded_backbone("resnet18", config))
    """)
    env = {**os.environ, "CAMFLOW_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(paths) == 1
    logs = "".join(err for _, err in outputs)
    assert logs.count("pretraining the resnet18 backbone") == 1 and logs.count("reusing") == 1
    entries = [p for p in entry_dir(TINY).parent.iterdir() if not p.name.endswith(".lock")]
    assert entries == [entry_dir(TINY)]
