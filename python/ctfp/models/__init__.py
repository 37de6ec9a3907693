"""Models: the torch-free backbone registry, torch builders, the classifier and ONNX.

=================  ==============================================================================
``registry``       backbone names, input sizes, normalisation, weights source, offline (no torch)
``builders``       ``FingerprintNet``, ``build_model``, ``load_weights`` (torch)
``inputs``         what ``X``/``y`` may be; the image contract a fitted model checks (no torch)
``training``       ``train_one_epoch``, ``predict_logits``, ``validate``, ``EarlyStopping`` (torch)
``feed``           the CUDA feed: uint8 grey batches via pinned memory, normalised on the GPU
``distributed``    data-parallel training under ``torchrun`` (DDP): shards, process group, ranks
``persistence``    ``save``/``load`` files, pickling, plain-data encodings
``classifier``     ``FingerprintClassifier``, the scikit-learn estimator that uses them
``onnx``           ``export_onnx`` (torch) and ``OnnxFingerprintModel`` (onnxruntime, no torch)
=================  ==============================================================================

``import ctfp.models`` imports no torch: the names below that need it load on first use.
"""

from __future__ import annotations

from ctfp.models.registry import BACKBONES, BackboneSpec, available_backbones, get_spec

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "FingerprintClassifier",
    "FingerprintNet",
    "OnnxFingerprintModel",
    "available_backbones",
    "build_model",
    "export_onnx",
    "get_spec",
    "load_weights",
]

# name -> submodule that defines it, imported on first access
_LAZY = {
    "FingerprintNet": "builders",
    "build_model": "builders",
    "load_weights": "builders",
    "FingerprintClassifier": "classifier",
    "export_onnx": "onnx",
    "OnnxFingerprintModel": "onnx",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
