"""CAM seeds -> pseudo masks (palette PNG) and boxes; optional dense CRF.

Inputs are numpy arrays or torch tensors (moved to host memory); outputs are numpy arrays.
"""

from camflow.postprocess.boxes import (
    BoxSet,
    box_threshold,
    class_boxes,
    component_boxes,
    extract_boxes,
    sweep_best_iou,
    sweep_boxes,
)
from camflow.postprocess.crf import IRN_LABEL_CRF, CRFParams, crf_from_labels, crf_from_probs
from camflow.postprocess.masks import (
    IGNORE,
    background_score,
    class_ids,
    confident_mask,
    pseudo_mask,
    pseudo_mask_of_classes,
    top_channel,
)
from camflow.postprocess.png import VOC_PALETTE, decode_label_png, encode_label_png
from camflow.postprocess.validate import BadInputError, Rejected

__all__ = [
    "IGNORE",
    "IRN_LABEL_CRF",
    "VOC_PALETTE",
    "BadInputError",
    "BoxSet",
    "CRFParams",
    "Rejected",
    "background_score",
    "box_threshold",
    "class_boxes",
    "class_ids",
    "component_boxes",
    "confident_mask",
    "crf_from_labels",
    "crf_from_probs",
    "decode_label_png",
    "encode_label_png",
    "extract_boxes",
    "pseudo_mask",
    "pseudo_mask_of_classes",
    "sweep_best_iou",
    "sweep_boxes",
    "top_channel",
]
