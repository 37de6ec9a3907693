"""ctfp: find the training-data fingerprints that generated lung-CT images leak.

``import ctfp`` loads the Rust core and numpy only; torch and onnxruntime are imported by the
parts that use them.
"""

from __future__ import annotations

from ._core import __version__
from .data.preprocess import (
    NORMALIZE_PRESETS,
    Augment,
    AugmentParams,
    DecodeLimits,
    ImageCache,
    decode_png,
    default_threads,
    load_batch,
    transform,
)
from .data.stream import BatchStream
from .exceptions import CtfpError, ImageDecodeError

__all__ = [
    "NORMALIZE_PRESETS",
    "Augment",
    "AugmentParams",
    "BatchStream",
    "CtfpError",
    "DecodeLimits",
    "ImageCache",
    "ImageDecodeError",
    "__version__",
    "decode_png",
    "default_threads",
    "load_batch",
    "transform",
    "synthetic",
    # loaded on first use (most pull in scikit-learn, ssim_matrix does not; torch and
    # onnxruntime only when used)
    "FingerprintClassifier",
    "GeneratedIndex",
    "ImageContractError",
    "NotFittedError",
    "OnnxFingerprintModel",
    "SimilarityMembership",
    "WeightsError",
    "export_onnx",
    "ssim_matrix",
]

# name -> module that defines it, imported on first access (see __getattr__)
_LAZY = {
    "FingerprintClassifier": ".models.classifier",
    "export_onnx": ".models.onnx",
    "OnnxFingerprintModel": ".models.onnx",
    "NotFittedError": ".exceptions",
    "WeightsError": ".exceptions",
    "ImageContractError": ".exceptions",
    "SimilarityMembership": ".membership.similarity",
    "ssim_matrix": ".data.images",
    "GeneratedIndex": ".membership.index",
}


def __getattr__(name: str) -> object:
    # ``ctfp.synthetic`` pulls in scipy: load it on first use, not at ``import ctfp``.
    if name == "synthetic":
        import importlib

        return importlib.import_module(".data.synthetic", __name__)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'ctfp' has no attribute {name!r}")
