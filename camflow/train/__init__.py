"""Classifier training: config, augmentations, optimisers, metrics and the (DDP-ready) loop.

>>> config = TrainConfig.embedded(proportion=0.05)
>>> result = train(config, train_ds, val_ds, out_uri="runs/r1/classifier")
>>> model, meta = camflow.models.load_checkpoint(result.checkpoint_uri)
"""

from camflow.train.augment import eval_transform, train_transform
from camflow.train.config import TrainConfig
from camflow.train.loop import (
    BEST_CHECKPOINT,
    Runtime,
    TrainResult,
    evaluate,
    seed_everything,
    train,
)
from camflow.train.metrics import (
    average_precision,
    classification_metrics,
    f1_scores,
    mean_average_precision,
)

__all__ = [
    "BEST_CHECKPOINT",
    "Runtime",
    "TrainConfig",
    "TrainResult",
    "average_precision",
    "classification_metrics",
    "eval_transform",
    "evaluate",
    "f1_scores",
    "mean_average_precision",
    "seed_everything",
    "train",
    "train_transform",
]
