"""Config validation, metrics against scikit-learn, schedules, transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from camflow.train import TrainConfig, eval_transform, train_transform
from camflow.train.metrics import average_precision, classification_metrics, f1_scores
from camflow.train.optim import build_optimizer, build_scheduler


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"head": "avg"}, "TrainConfig.head"),
        ({"proportion": 0.0}, "TrainConfig.proportion"),
        ({"proportion": 1.5}, "TrainConfig.proportion"),
        ({"optimizer": "lbfgs"}, "TrainConfig.optimizer"),
        ({"schedule": "step"}, "TrainConfig.schedule"),
        ({"epochs": 0}, "TrainConfig.epochs"),
        ({"lr": -1.0}, "TrainConfig.lr"),
    ],
)
def test_bad_config_values_are_named(change, match) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**change)


def test_config_round_trips_through_a_dict_and_has_an_embedded_preset() -> None:
    preset = TrainConfig.embedded(proportion=0.05)
    assert preset.model == "resnet18" and preset.proportion == 0.05 and not preset.pretrained
    assert TrainConfig.from_dict(preset.to_dict()) == preset
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"epoch": 3})


def test_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, f1_score

    rng = np.random.default_rng(0)
    labels = rng.random((60, 5)) < 0.3
    scores = np.round(rng.normal(size=(60, 5)) + labels, 1)  # ties on purpose
    for c in range(5):
        assert average_precision(scores[:, c], labels[:, c]) == pytest.approx(
            average_precision_score(labels[:, c], scores[:, c]), abs=1e-12)
    probs = 1 / (1 + np.exp(-scores))
    f1 = f1_scores(probs, labels, 0.5)
    assert f1["f1_micro"] == pytest.approx(f1_score(labels, probs >= 0.5, average="micro"))
    assert f1["f1_macro"] == pytest.approx(f1_score(labels, probs >= 0.5, average="macro"))
    perfect = classification_metrics(np.where(labels, 5.0, -5.0), labels)
    assert perfect == {"mAP": 1.0, "f1_micro": 1.0, "f1_macro": 1.0, "exact_match": 1.0}
    from sklearn.metrics import accuracy_score  # multi-label: the exact-match ratio

    assert classification_metrics(scores, labels)["exact_match"] == pytest.approx(
        accuracy_score(labels, probs >= 0.5))
    with pytest.raises(ValueError, match="must both be"):
        classification_metrics(scores[:, :3], labels)


@pytest.mark.parametrize("schedule", ["poly", "cosine", "onecycle"])
def test_schedules_decay_to_almost_nothing(schedule) -> None:
    config = TrainConfig(schedule=schedule, epochs=2, lr=0.1, warmup_epochs=0.5)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert max(lrs) <= 0.1 + 1e-9 and lrs[-1] < 0.02 * 0.1
    assert optimizer.param_groups[1]["weight_decay"] == 0.0  # biases are not decayed


@pytest.mark.parametrize("schedule", ["poly", "cosine", "onecycle"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8])
def test_schedules_run_through_the_few_steps_of_a_tiny_subset(schedule, steps) -> None:
    # A 4-step onecycle run used to raise ZeroDivisionError inside torch's OneCycleLR.
    config = TrainConfig(schedule=schedule, epochs=1, lr=0.1, warmup_epochs=0.5)
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=steps)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        assert 0 <= optimizer.param_groups[0]["lr"] <= 0.1 + 1e-9


def test_transforms_give_normalised_tensors_of_the_requested_size() -> None:
    image = Image.fromarray(np.tile(np.array([124, 116, 104], dtype=np.uint8), (50, 70, 1)))
    torch.manual_seed(0)
    out = train_transform(40, min_scale=0.5)(image)
    assert out.shape == (3, 40, 40) and out.dtype == torch.float32
    ev = eval_transform(48)(image)
    assert ev.shape == (3, 48, 48)
    assert ev.abs().max() < 0.02  # the ImageNet mean colour normalises to about 0


def test_loaded_weights_learn_at_a_scaled_rate_and_new_heads_at_lr() -> None:
    from camflow.models import build
    from camflow.train.objective import Objective

    model = Objective(build("resnet18", 3, head="recam"))
    config = TrainConfig(lr=0.01, backbone_lr_scale=0.1)
    rates = {}
    for group in build_optimizer(model, config).param_groups:
        for param in group["params"]:
            rates[id(param)] = group["lr"]
    named = dict(model.named_parameters())
    assert rates[id(named["model.stage1.conv1.weight"])] == pytest.approx(0.001)
    assert rates[id(named["model.head.classifier.weight"])] == pytest.approx(0.01)
    assert rates[id(named["model.recam_head.weight"])] == pytest.approx(0.01)
    # A second stage from a checkpoint: the main head was loaded too; the ReCAM head is new.
    stage = build_optimizer(model, config.replace(init_checkpoint="x.safetensors"))
    rates = {id(p): g["lr"] for g in stage.param_groups for p in g["params"]}
    assert rates[id(named["model.head.classifier.weight"])] == pytest.approx(0.001)
    assert rates[id(named["model.recam_head.weight"])] == pytest.approx(0.01)


def test_colour_jitter_follows_torchvision_formulas() -> None:
    from torchvision.transforms.v2 import functional as F

    from camflow.train.augment import ColourJitter

    image = torch.rand(3, 16, 16) * 0.8 + 0.1
    torch.manual_seed(3)
    out = ColourJitter(0.3)(image.clone())
    torch.manual_seed(3)
    b, c, s = (1 + (torch.rand(3) * 2 - 1) * 0.3).tolist()
    expected = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(image, b), c), s)
    assert torch.allclose(out, expected, atol=1e-4) and out.shape == image.shape


def test_presets_from_random_init_and_for_fine_tuning() -> None:
    scratch, tuned = TrainConfig.embedded(0.05), TrainConfig.embedded(0.05, pretrained="b.safetensors")
    assert scratch.keep == tuned.keep == "last"
    assert (scratch.lr, scratch.backbone_lr_scale, scratch.output_stride) == (3e-3, 1.0, 32)
    assert (tuned.lr, tuned.backbone_lr_scale, tuned.output_stride) == (1e-2, 0.1, 16)
    assert [TrainConfig.embedded(p, pretrained=True).epochs for p in (0.01, 0.2, 1.0)] == [60, 30, 6]
    recam = tuned.recam_stage("ckpt.safetensors")
    assert (recam.head, recam.init_checkpoint, recam.pretrained) == ("recam", "ckpt.safetensors", False)
    assert recam.epochs == 20 and recam.backbone_lr_scale == 0.1 and recam.recam_weight == 1.0
