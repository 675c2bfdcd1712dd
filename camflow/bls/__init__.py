"""BroadCAM's broad learning system (BLS): an exact streaming fit from summed statistics.

``BLS`` accumulates n, sum(x), the feature scatter and the feature-label cross products in one
pass (chunks, or shard accumulators merged), then solves the whole BroadCAM BLS - standardisation,
preliminary ridge, per-class enhancement nodes, final ridge on [Z, H] - from those sums and
collapses it into one linear map ``coef_`` on the raw pooled features.
"""

from camflow.bls.errors import BLSFormatError, NonFiniteFeaturesError, NotFittedError
from camflow.bls.estimator import BLS
from camflow.bls.io import FORMAT_VERSION

__all__ = [
    "BLS",
    "FORMAT_VERSION",
    "BLSFormatError",
    "NonFiniteFeaturesError",
    "NotFittedError",
]
