"""What a model takes: images ``X``, labels ``y``, per-sample augmentation, and the image contract
a fitted model records and checks. Shared by :class:`~ctfp.FingerprintClassifier` and the
torch-free :class:`~ctfp.OnnxFingerprintModel`; imports no torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.utils.multiclass import check_classification_targets

from ctfp import _core
from ctfp.data.preprocess import _DEFAULT_LIMITS, Augment
from ctfp.exceptions import ImageContractError

__all__ = [
    "Images",
    "check_image_contract",
    "check_labels",
    "check_sample_augment",
    "validate_images",
]


@dataclasses.dataclass(frozen=True)
class Images:
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


def _png_info(path: Any, name: str) -> tuple[int, int, int | None] | None:
    """(height, width, channels) of a PNG file, its header read by the Rust core; None when the
    file is not a PNG it can read (:func:`ctfp.load_batch` then reports it, naming it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such file {os.fspath(path)!r}") from None
    try:
        return _core.read_png_info(head, limits=_DEFAULT_LIMITS)
    except ValueError:
        return None


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


def _validate_array(X: np.ndarray, name: str, allow_empty: bool) -> Images:
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
    return Images(list(X), "array", (X.shape[1], X.shape[2]), channels)


def validate_images(X: Any, *, name: str = "X", allow_empty: bool = False) -> Images:
    """Check ``X`` and turn it into sources for :func:`ctfp.load_batch`.

    ``X`` is a uint8 array ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``, a sequence of PNG
    paths (``str``/``os.PathLike``, or a numpy array of strings), or a sequence of uint8 images
    ``(H, W)``/``(H, W, 3)``.
    """
    if _is_path(X):
        raise TypeError(f"{name}: expected a sequence of images; wrap a single path in a list")
    if isinstance(X, np.ndarray) and X.dtype.kind not in "USO":
        return _validate_array(X, name, allow_empty)
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
            return Images([], "paths", None, None, [])
        raise ValueError(f"{name}: no images (found an empty sequence)")
    if all(_is_path(v) for v in items):
        per_image = [_png_info(v, name) for v in items]
        known = [p for p in per_image if p is not None]
        shape = _common([p[:2] for p in known]) if len(known) == len(items) else None
        chans = [p[2] for p in known]
        channels = _common(chans) if len(known) == len(items) and None not in chans else None
        return Images([os.fspath(v) for v in items], "paths", shape, channels, per_image)
    if all(isinstance(v, np.ndarray) for v in items):
        info = [_array_image_info(v, f"{name}[{k}]") for k, v in enumerate(items)]
        return Images(
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
    images: Images, shape: tuple[int, int] | None, channels: int | None, *, name: str = "X"
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


def check_labels(y: Any, n_images: int, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, y_idx)`` of class labels ``y`` (two or more classes, scikit-learn's
    classification targets) for ``n_images`` images: ``classes`` sorted (``np.unique``),
    ``y_idx`` each label's index in it."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y: expected a 1-D array of labels, found shape {y.shape}")
    if len(y) != n_images:
        raise ValueError(f"X and y: found {n_images} images but {len(y)} labels")
    check_classification_targets(y)
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(
            f"y: {owner} needs at least two classes to learn from, found only one class "
            f"({classes.tolist()[0]!r} for all {len(y)} images); include images of another "
            f"class (e.g. real and generated images)"
        )
    return classes, y_idx


def check_sample_augment(
    sample_augment: Sequence[Augment | None] | None, n_images: int
) -> list[Augment | None] | None:
    """One :class:`ctfp.Augment` (or None) per image, as a list; None stays None."""
    if sample_augment is None:
        return None
    configs = list(sample_augment)
    if len(configs) != n_images:
        raise ValueError(
            f"sample_augment: expected {n_images} configs (one per image), found {len(configs)}"
        )
    for k, a in enumerate(configs):
        if a is not None and not isinstance(a, Augment):
            raise TypeError(
                f"sample_augment[{k}]: expected a ctfp.Augment or None, found {type(a).__name__}"
            )
    return configs
