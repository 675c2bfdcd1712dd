"""Dense CRF refinement (Krähenbühl & Koltun) through ``pydensecrf2``.

Two uses, as in the reference WSSS pipelines:

- :func:`crf_from_probs` refines per-label scores (unary = -log p). Defaults are the
  psa/PuzzleCAM ``crf_inference`` values: Gaussian sxy=3 compat=3, bilateral sxy=80 srgb=13
  compat=10, 10 mean-field iterations; spatial widths divide by ``scale_factor``.
- :func:`crf_from_labels` refines a hard label map whose labels are trusted with probability
  ``gt_prob`` (IRN's ``crf_inference_label``): bilateral sxy=50 srgb=5, gt_prob=0.7.

``pydensecrf2`` ships as a source distribution and compiles with the system C++ compiler at
install time (it builds with gcc 12 on Debian 12).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camflow.postprocess.validate import as_numpy

__all__ = ["CRFParams", "IRN_LABEL_CRF", "crf_from_labels", "crf_from_probs"]


@dataclass(frozen=True)
class CRFParams:
    """Pairwise kernels and iteration count of a fully connected CRF."""

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 10
    # Images processed at a reduced size keep the same physical kernel width.
    scale_factor: float = 1.0

    def __post_init__(self) -> None:
        for field in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb", "scale_factor"):
            if not getattr(self, field) > 0:
                raise ValueError(f"CRFParams.{field} must be > 0, got {getattr(self, field)}")
        if self.iterations < 1:
            raise ValueError(f"CRFParams.iterations must be >= 1, got {self.iterations}")


IRN_LABEL_CRF = CRFParams(bilateral_sxy=50.0, bilateral_srgb=5.0)


def _check_image(image, shape: tuple[int, int], name: str) -> np.ndarray:
    img = as_numpy(image, name)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != shape:
        raise ValueError(
            f"{name}: expected an RGB image [H, W, 3] with H, W = {shape}, got {tuple(img.shape)}"
        )
    if img.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 RGB, got dtype {img.dtype}")
    # pydensecrf wants a writable buffer; images decoded from PIL or shipped by Ray are read-only.
    return np.require(img, requirements=("C", "W"))


def _infer(image: np.ndarray, unary: np.ndarray, params: CRFParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf  # compiled extension: imported only when a CRF runs

    n_labels = unary.shape[0]
    h, w = image.shape[:2]
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n_labels, -1), dtype=np.float32))
    crf.addPairwiseGaussian(
        sxy=params.gaussian_sxy / params.scale_factor, compat=params.gaussian_compat
    )
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy / params.scale_factor,
        srgb=params.bilateral_srgb,
        # The extension writes through a typed buffer: it needs a C-ordered, writable array.
        rgbim=np.require(image, np.uint8, ["C", "W"]),
        compat=params.bilateral_compat,
    )
    q = crf.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)


def crf_from_probs(
    image, probs, params: CRFParams | None = None, *, clip: float = 1e-5, name: str = "image"
) -> np.ndarray:
    """Mean-field marginals [L, H, W] (float32) from scores ``probs`` [L, H, W] in [0, 1].

    ``probs`` need not sum to one per pixel: -log p shifted per pixel leaves the CRF unchanged.
    ``image`` is uint8 RGB [H, W, 3]; numpy arrays or torch tensors are accepted.
    """
    p = as_numpy(probs, f"{name}: probs").astype(np.float32, copy=False)
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(f"{name}: probs must be [L, H, W], got {tuple(p.shape)}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name}: probs contain NaN or inf")
    img = _check_image(image, p.shape[1:], name)
    unary = -np.log(np.clip(p, clip, 1.0))
    return _infer(img, unary, params or CRFParams())


def crf_from_labels(
    image,
    label_map,
    n_labels: int,
    params: CRFParams = IRN_LABEL_CRF,
    *,
    gt_prob: float = 0.7,
    name: str = "image",
) -> np.ndarray:
    """Refined hard labels [H, W] (int64) from a label map with values 0..n_labels-1."""
    labels = as_numpy(label_map, f"{name}: label_map")
    if labels.ndim != 2:
        raise ValueError(f"{name}: label_map must be [H, W], got {tuple(labels.shape)}")
    if not 0.0 < gt_prob < 1.0:
        raise ValueError(f"gt_prob must lie in (0, 1), got {gt_prob}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"{name}: label_map values must lie in 0..{n_labels - 1}")
    if n_labels == 1:
        return np.zeros(labels.shape, dtype=np.int64)
    img = _check_image(image, labels.shape, name)
    other = -np.log((1.0 - gt_prob) / (n_labels - 1))
    unary = np.full((n_labels, *labels.shape), other, dtype=np.float32)
    np.put_along_axis(unary, labels[None].astype(np.int64), -np.log(gt_prob), axis=0)
    return _infer(img, unary, params).argmax(axis=0).astype(np.int64)
