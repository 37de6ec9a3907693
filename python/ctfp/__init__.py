"""ctfp: find the training-data fingerprints that generated lung-CT images leak.

``import ctfp`` loads the Rust core and numpy only; torch and onnxruntime are imported by the
parts that use them.
"""

from __future__ import annotations

from ._core import __version__
from .exceptions import CtfpError, ImageDecodeError
from .preprocess import (
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
from .stream import BatchStream

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
    "synthetic",
    "transform",
]


def __getattr__(name: str) -> object:
    # ``ctfp.synthetic`` pulls in scipy: load it on first use, not at ``import ctfp``.
    if name == "synthetic":
        import importlib

        return importlib.import_module(".synthetic", __name__)
    raise AttributeError(f"module 'ctfp' has no attribute {name!r}")
