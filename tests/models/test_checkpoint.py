"""Checkpoint round trips through fsspec and their validation."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save as save_safetensors

from camflow.models import (
    CheckpointError,
    build,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from camflow.models.checkpoint import load_weights_into

META = {"classes": ["cat", "dog", "car"], "proportion": 0.05, "seed": 3, "metrics": {"mAP": 0.5},
        "data_hash": "abc"}


def _model(head: str = "gap", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("resnet18", 3, head=head, **kw)


@pytest.mark.parametrize("head", ["gap", "tap", "recam"])
def test_round_trip_rebuilds_the_same_model(tmp_path, head: str) -> None:
    model = _model(head, output_stride=16).eval()
    uri = str(tmp_path / "run" / "best.safetensors")
    save_checkpoint(model, uri, META)
    loaded, meta = load_checkpoint(uri)
    assert meta["classes"] == META["classes"] and meta["seed"] == 3 and meta["data_hash"] == "abc"
    assert meta["model"]["head"] == head and meta["model"]["output_stride"] == 16
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert read_checkpoint_meta(uri) == meta


def test_round_trip_through_s3(s3_bucket) -> None:
    model = _model().eval()
    uri = f"s3://{s3_bucket}/ckpt/model.safetensors"
    save_checkpoint(model, uri, META)
    loaded, meta = load_checkpoint(uri)
    assert meta["metrics"] == {"mAP": 0.5}
    assert torch.equal(loaded.head.classifier.weight, model.head.classifier.weight)


def test_channels_last_models_save(tmp_path) -> None:
    model = _model().to(memory_format=torch.channels_last)
    save_checkpoint(model, str(tmp_path / "m.safetensors"), {})
    load_checkpoint(str(tmp_path / "m.safetensors"))


def test_load_weights_into_a_built_model(tmp_path) -> None:
    model = _model()
    save_checkpoint(model, str(tmp_path / "m.safetensors"), META)
    again = build("resnet18", 3)
    load_weights_into(again, str(tmp_path / "m.safetensors"))
    assert torch.equal(again.stage5[1].conv2.weight, model.stage5[1].conv2.weight)


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(str(tmp_path / "nope.safetensors"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:100],  # truncated header
        lambda b: b"not a checkpoint at all, really not",
        lambda b: b[: len(b) // 2],  # tensor data cut off
    ],
)
def test_corrupt_checkpoint_is_rejected_with_its_name(tmp_path, damage) -> None:
    uri = tmp_path / "bad.safetensors"
    save_checkpoint(_model(), str(uri), META)
    uri.write_bytes(damage(uri.read_bytes()))
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_checkpoint(str(uri))


def test_foreign_safetensors_and_future_versions_are_rejected(tmp_path) -> None:
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(save_safetensors({"w": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="not a camflow checkpoint"):
        load_checkpoint(str(plain))
    future = tmp_path / "future.safetensors"
    header = {"format_version": 99, "model": {"name": "resnet18", "num_classes": 3, "head": "gap",
                                              "output_stride": 32}}
    future.write_bytes(save_safetensors({"w": torch.zeros(2)}, metadata={"camflow": json.dumps(header)}))
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        load_checkpoint(str(future))


def test_mismatched_architecture_is_rejected(tmp_path) -> None:
    uri = str(tmp_path / "m.safetensors")
    save_checkpoint(_model(), uri, META)
    with pytest.raises(CheckpointError, match="num_classes: checkpoint 3 vs model 5"):
        load_weights_into(build("resnet18", 5), uri)
    with pytest.raises(CheckpointError, match="head: checkpoint 'gap' vs model 'recam'"):
        load_weights_into(_model("recam"), uri)


def test_missing_extra_and_misshapen_tensors_are_listed(tmp_path) -> None:
    model = _model()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.pop("stage5.1.conv2.weight")
    state["stray.weight"] = torch.zeros(1)
    state["head.classifier.bias"] = torch.zeros(4)
    meta = {"format_version": 1, "model": model.spec}
    uri = tmp_path / "edited.safetensors"
    uri.write_bytes(save_safetensors(state, metadata={"camflow": json.dumps(meta)}))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(uri))
    text = str(err.value)
    assert "1 missing keys" in text and "stage5.1.conv2.weight" in text
    assert "1 unexpected keys" in text and "stray.weight" in text
    assert "head.classifier.bias: checkpoint (4,) vs model (3,)" in text


def test_metadata_must_be_json(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not JSON"):
        save_checkpoint(_model(), str(tmp_path / "m.safetensors"), {"when": object()})


def test_header_is_read_without_the_tensors(tmp_path) -> None:
    uri = tmp_path / "m.safetensors"
    save_checkpoint(_model(), str(uri), META)
    data = uri.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    (tmp_path / "head_only.safetensors").write_bytes(data[: 8 + length])
    assert read_checkpoint_meta(str(tmp_path / "head_only.safetensors"))["seed"] == 3
