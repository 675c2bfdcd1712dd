"""One image preparation: training evaluation, BLS features and CAMs give a model the same tensor,
and that preparation travels with the model through its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from camflow.data import embedded
from camflow.data.rejects import Rejects
from camflow.data.transforms import ImagePrep
from camflow.data.voc import read_voc
from camflow.generate import decode_records
from camflow.models import build, load_checkpoint, save_checkpoint
from camflow.models.classifier import image_prep_of
from camflow.train.data import manifest_datasets
from cluster.features import ManifestShard, _manifest_batches


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = embedded.build(tmp_path_factory.mktemp("prep") / "voc", seed=2, train=0, val=4, size=64)
    return read_voc(root, "val")


def test_training_eval_bls_and_cam_paths_prepare_an_image_identically(manifest, tmp_path):
    torch.manual_seed(0)
    trained = build("resnet18", len(embedded.CLASSES))
    trained.image_prep = ImagePrep(56)  # what the training loop sets: its image size
    save_checkpoint(trained, str(tmp_path / "model.safetensors"), {})
    model, meta = load_checkpoint(str(tmp_path / "model.safetensors"))
    assert model.image_prep == ImagePrep(56) and meta["image_prep"]["size"] == [56, 56]

    _, val = manifest_datasets(manifest, manifest, len(embedded.CLASSES), image_size=56)
    training_eval = torch.stack([val[i]["image"] for i in range(len(manifest))])
    # The shards ask for another size: the model's own preparation wins.
    shard = ManifestShard(manifest.to_pylist(), len(embedded.CLASSES), size=224)
    (bls_images, _, _), = list(_manifest_batches(shard, Rejects(), model))
    decoded, rejects = decode_records(manifest.to_pylist())
    assert not rejects
    cam_inputs = torch.stack([image_prep_of(model, 224)(im.pixels) for im in decoded])

    assert training_eval.shape == (4, 3, 56, 56)
    assert torch.equal(training_eval, bls_images)
    assert torch.equal(training_eval, cam_inputs)


def test_image_prep_inputs_agree_and_bad_ones_are_named():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    prep = ImagePrep((20, 24))
    from_array = prep(pixels)
    from_pil = prep(Image.fromarray(pixels))
    from_tensor = prep(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    assert from_array.shape == (3, 20, 24)
    assert torch.equal(from_array, from_pil) and torch.allclose(from_array, from_tensor)
    assert ImagePrep.from_dict(prep.to_dict()) == prep
    with pytest.raises(ValueError, match="uint8"):
        prep(pixels.astype(np.float32))
    with pytest.raises(ValueError, match="size must be positive"):
        ImagePrep(0)
    with pytest.raises(ValueError, match="unknown resize"):
        ImagePrep.from_dict({**prep.to_dict(), "resize": "nearest"})


def test_an_untrained_model_falls_back_to_the_requested_size():
    model = build("resnet18", 3)
    assert model.image_prep is None
    assert image_prep_of(model, 32) == ImagePrep(32)
