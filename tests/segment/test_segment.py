"""The segmentation model: DeepLabV3 on a camflow backbone, its training loop on a tiny dataset,
its checkpoint, and ``camflow predict`` on good and bad inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camflow.data.transforms import ImagePrep
from camflow.models import build
from camflow.postprocess import decode_label_png
from camflow.segment.checkpoint import load_segmenter, save_segmenter
from camflow.segment.infer import score_segmenter
from camflow.segment.model import build_segmenter, segmenter_from_classifier
from camflow.segment.train import MaskItems, SegTraining, fit_segmenter


def _squares(n: int = 6, size: int = 48) -> MaskItems:
    """A bright square of class 1 (label 2) on a dark background; a ring of 255 around it."""
    g = torch.Generator().manual_seed(0)
    images, masks = [], []
    for i in range(n):
        y, x = 6 + 3 * i, 10 + 2 * i
        image = 0.2 * torch.randn(3, size, size, generator=g)
        image[:, y:y + 20, x:x + 20] += 2.0
        mask = torch.zeros(size, size, dtype=torch.uint8)
        mask[y - 2:y + 22, x - 2:x + 22] = 255
        mask[y:y + 20, x:x + 20] = 2
        images.append(image)
        masks.append(mask)
    return MaskItems(images, masks, [f"s{i}" for i in range(n)])


def test_training_on_a_tiny_dataset_learns_the_squares():
    torch.manual_seed(0)
    items = _squares()
    model = build_segmenter("resnet18", 3, output_stride=16)
    history = fit_segmenter(model, items, SegTraining(epochs=15, batch_size=3, lr=0.01))
    assert history[-1] < 0.5 * history[0], history
    truths = [torch.where(m == 255, torch.tensor(2, dtype=torch.uint8), m) for m in items.targets]
    scores = score_segmenter(model, items.images, truths, items.ids)
    assert scores["IoU"][0] > 0.8 and scores["IoU"][2] > 0.5, scores


def test_the_segmenter_starts_from_the_classifier_and_round_trips(tmp_path):
    classifier = build("resnet18", 4)
    classifier.image_prep = ImagePrep(48)
    model = segmenter_from_classifier(classifier, 5)
    assert torch.equal(model.backbone.stages[4][0].conv1.weight, classifier.stage5[0].conv1.weight)
    uri = str(tmp_path / "seg.safetensors")
    save_segmenter(model, uri, {"classes": ["a", "b", "c", "d"]})
    loaded, meta = load_segmenter(uri)
    assert meta["classes"] == ["a", "b", "c", "d"] and loaded.image_prep == classifier.image_prep
    x = torch.randn(1, 3, 48, 48)
    model.eval()
    assert torch.equal(loaded(x)["out"], model(x)["out"])
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_segmenter(str(tmp_path / "junk.safetensors"))


def test_camflow_predict_writes_masks_and_names_a_bad_input(tmp_path, capsys):
    from flows.cli import main

    torch.manual_seed(0)
    model = build_segmenter("resnet18", 3)
    model.image_prep = ImagePrep(48)
    ckpt = str(tmp_path / "seg.safetensors")
    save_segmenter(model, ckpt)
    good = tmp_path / "a.jpg"
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(good)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8 not an image")
    other = tmp_path / "sub" / "c.png"
    other.parent.mkdir()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(other)
    out = tmp_path / "masks"
    code = main(["predict", ckpt, str(good), str(bad), str(other), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"camflow: error: image {bad}:" in captured.err
    written = sorted(Path(p).name for p in captured.out.split())
    assert written == ["a.png", "c.png"]
    mask = decode_label_png((out / "a.png").read_bytes())
    assert mask.shape == (40, 60) and mask.max() < 3
    assert main(["predict", str(tmp_path / "none.safetensors"), str(good), "--out",
                 str(out)]) == 2


def test_camflow_predict_labels_with_the_checkpoints_inference(tmp_path, capsys):
    from camflow.segment.infer import SegInference, predict
    from flows.cli import main

    torch.manual_seed(0)
    model = build_segmenter("resnet18", 3)
    model.image_prep = ImagePrep(48)
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    x = model.image_prep(Image.fromarray(image))[None]
    for inference in (SegInference.single(), SegInference()):
        ckpt = str(tmp_path / "seg.safetensors")
        save_segmenter(model, ckpt, {"inference": dataclasses.asdict(inference)})
        out = tmp_path / f"masks-{len(inference.scales)}"
        assert main(["predict", ckpt, str(tmp_path / "a.png"), "--out", str(out)]) == 0
        got = decode_label_png((out / "a.png").read_bytes())
        assert np.array_equal(got, predict(model, x, size=(48, 48), inference=inference)[0].numpy())
