"""Saving and loading a fitted :class:`~ctfp.FingerprintClassifier`: one file of plain data and
tensors (``torch.load(weights_only=True)`` reads it and runs no code from it), written atomically
(:func:`ctfp._util.atomic_write`: a reader never sees half a file, and the file gets the usual
``0o666 & ~umask`` permissions). Also the pickling half (the model as a CPU state dict) and the
plain-data encodings of labels and parameters that the ONNX metadata shares.

File format ``ctfp.FingerprintClassifier``, version 1: a dict with ``format``,
``format_version``, ``ctfp_version``, ``params`` (``get_params()``, encoded), ``classes``
(values and dtype), ``fitted`` (the fitted attributes below) and ``state_dict`` (CPU tensors).
A file from a newer format version is refused with a message to upgrade. The head's size follows
from ``classes``: one logit for two classes (every file written before multi-class support is
such a file and loads unchanged), ``K`` logits for ``K > 2`` classes.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ctfp._util import atomic_write, resolve_device
from ctfp.data.preprocess import Augment

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "cpu_state_dict",
    "decode_classes",
    "decode_param",
    "encode_classes",
    "encode_param",
    "load_classifier",
    "restore_model",
    "save_classifier",
]

FILE_FORMAT = "ctfp.FingerprintClassifier"
FILE_VERSION = 1
#: The fitted attributes a file stores beside ``classes_`` and the weights.
FITTED_FIELDS = (
    "image_size_",
    "normalize_",
    "image_shape_",
    "image_channels_",
    "device_",
    "history_",
    "n_iter_",
    "best_epoch_",
)
_AUGMENT_TAG = "__ctfp.Augment__"


def encode_classes(classes: np.ndarray) -> dict[str, Any]:
    return {"values": classes.tolist(), "dtype": classes.dtype.str}


def decode_classes(enc: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(enc["dtype"])
    values = list(enc["values"])
    if dtype.kind == "O":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values, dtype=dtype)


def encode_param(value: Any) -> Any:
    """A parameter as plain data (what ``torch.load(weights_only=True)`` accepts); a
    ``TypeError`` names the type that is not."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Augment):
        return {_AUGMENT_TAG: dataclasses.asdict(value)}
    if isinstance(value, (tuple, list)):
        out = [encode_param(v) for v in value]
        return tuple(out) if isinstance(value, tuple) else out
    if isinstance(value, Mapping):
        return {encode_param(k): encode_param(v) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def decode_param(value: Any) -> Any:
    if isinstance(value, Mapping):
        if _AUGMENT_TAG in value:
            return Augment(**value[_AUGMENT_TAG])
        return {k: decode_param(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_param(v) for v in value]
    if isinstance(value, tuple):
        return tuple(decode_param(v) for v in value)
    return value


def cpu_state_dict(model: Any) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def restore_model(est: Any, state_dict: Mapping[str, Any], device: object = None) -> None:
    """Rebuild ``est.model_`` from a CPU state dict on ``device`` (default: ``est.device_``); a
    device this machine lacks gives the CPU and a ``RuntimeWarning``. Leaves torch's global
    random stream as it was."""
    import torch

    from ctfp.models.builders import build_model

    target = est.device_ if device is None else str(resolve_device(device))
    try:
        resolve_device(target)
    except ValueError:
        warnings.warn(
            f"this {type(est).__name__} was trained on {target!r}, which is not available "
            f"here; it runs on the CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        target = "cpu"
    with torch.random.fork_rng(devices=[]):
        model = build_model(
            est.backbone, weights=None, dropout=float(est.dropout), image_size=est.image_size_,
            num_classes=len(est.classes_),
        )  # fmt: skip
    model.load_state_dict(state_dict)
    model.eval()
    est.model_ = model.to(torch.device(target))
    est.device_ = target


def save_classifier(est: Any, path: str | os.PathLike[str]) -> None:
    """Write fitted ``est`` to ``path`` (see the module docstring)."""
    import torch

    from ctfp import __version__

    params = {}
    for name, value in est.get_params(deep=False).items():
        if name == "callbacks" and value:
            warnings.warn("callbacks are not saved", UserWarning, stacklevel=3)
            value = None
        if name == "random_state" and isinstance(value, np.random.RandomState):
            value = None
        try:
            params[name] = encode_param(value)
        except TypeError as exc:
            raise TypeError(
                f"save: parameter {name}={value!r} cannot be saved (a {exc} is not plain data)"
            ) from None
    payload = {
        "format": FILE_FORMAT,
        "format_version": FILE_VERSION,
        "ctfp_version": __version__,
        "params": params,
        "classes": encode_classes(est.classes_),
        "fitted": {k: encode_param(getattr(est, k)) for k in FITTED_FIELDS},
        "state_dict": cpu_state_dict(est.model_),
    }
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_classifier(cls: type, path: str | os.PathLike[str], device: object = None) -> Any:
    """A ``cls`` instance read from a file :func:`save_classifier` wrote."""
    import torch

    path = os.fspath(path)
    what = f"{path!r} is not a {cls.__name__} file written by save()"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, Mapping) or payload.get("format") != FILE_FORMAT:
        raise ValueError(what)
    if payload.get("format_version", 0) > FILE_VERSION:
        raise ValueError(
            f"{path!r} was written by a newer ctfp ({payload.get('ctfp_version')}); "
            f"upgrade ctfp to read it"
        )
    est = cls(**decode_param(dict(payload["params"])))
    est.classes_ = decode_classes(payload["classes"])
    for key, value in payload["fitted"].items():
        setattr(est, key, decode_param(value))
    est.image_size_ = tuple(est.image_size_)
    est.normalize_ = (tuple(est.normalize_[0]), tuple(est.normalize_[1]))
    if est.image_shape_ is not None:
        est.image_shape_ = tuple(est.image_shape_)
    restore_model(est, payload["state_dict"], device=device)
    return est
