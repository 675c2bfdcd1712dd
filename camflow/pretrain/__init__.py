"""Source-pretrained backbones: camflow's own offline stand-in for ImageNet weights.

>>> from camflow.pretrain import embedded_backbone
>>> path = embedded_backbone("resnet18")       # pretrained once per machine, then cached
>>> model = camflow.models.build("resnet18", num_classes=10, pretrained=path)

``pretrain(config, out_uri)`` trains a backbone on the source benchmark (camflow.data.source) and
writes a torchvision-layout safetensors file with a JSON card; ``embedded_backbone`` keeps one
per recipe in the cache folder (``$CAMFLOW_CACHE``). Weights are never downloaded.
"""

from camflow.pretrain.cache import cache_dir, cache_key, embedded_backbone, entry_dir
from camflow.pretrain.recipe import PretrainConfig, PretrainResult, SourceDataset, pretrain

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "SourceDataset",
    "cache_dir",
    "cache_key",
    "embedded_backbone",
    "entry_dir",
    "pretrain",
]
