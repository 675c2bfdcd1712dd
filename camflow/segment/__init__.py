"""The segmentation model WSSS trains on pseudo masks: torchvision's DeepLabV3 on a camflow
backbone (``model``), its training loop (``train``), DeepLabV3's multi-scale inference and the
scoring with it (``infer``), safetensors + JSON checkpoints (``checkpoint``) and applying it to
image files (``predict``)."""

from camflow.segment.checkpoint import load_segmenter, save_segmenter
from camflow.segment.infer import SegInference, predict, score_segmenter
from camflow.segment.model import build_segmenter, segmenter_from_classifier
from camflow.segment.train import MaskItems, SegTraining, fit_segmenter

__all__ = ["MaskItems", "SegInference", "SegTraining", "build_segmenter", "fit_segmenter",
           "load_segmenter", "predict", "save_segmenter", "score_segmenter",
           "segmenter_from_classifier"]
