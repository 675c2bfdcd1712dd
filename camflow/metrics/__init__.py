"""WSSS and WSOL metrics as mergeable accumulators: ``update`` on workers, ``merge``, ``compute``.

Every accumulator keeps small numpy int64 counts, round-trips through ``state_dict()`` /
``from_state()`` (or ``to_bytes()`` / ``from_bytes()``, safetensors), and merges by addition.
"""

from camflow.metrics.accumulator import Accumulator
from camflow.metrics.seg import SeedSweep, SegConfusion, iou_from_confusion
from camflow.metrics.wsol import BoxAccuracy, PixelAP, box_iou
from camflow.postprocess.validate import BadInputError, Rejected

__all__ = [
    "Accumulator",
    "BadInputError",
    "BoxAccuracy",
    "PixelAP",
    "Rejected",
    "SeedSweep",
    "SegConfusion",
    "box_iou",
    "iou_from_confusion",
]
