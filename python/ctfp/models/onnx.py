"""ONNX export of a fitted :class:`~ctfp.FingerprintClassifier`, and a predictor that runs the
exported file with onnxruntime and ctfp's Rust preprocessing, without torch.

The exported graph takes ``images``: float32 ``(batch, 3, H, W)``, already resized and normalised
(what :func:`ctfp.load_batch` returns with ``dtype="float32"`` and the model's ``normalize``), with
a dynamic batch axis, and returns ``logit`` and ``probability``: for two classes both
``(batch,)`` (the probability of ``classes_[1]``, the sigmoid of the logit); for ``K > 2``
classes both ``(batch, K)`` (the logits, and their softmax in ``classes_`` order). What
preprocessing and decision need is stored in the model's ``metadata_props`` under ``ctfp.*``
keys (JSON values): ``image_size``, ``normalize_mean``, ``normalize_std``, ``classes``,
``classes_dtype``, ``threshold``, ``image_shape``, ``image_channels``, ``backbone``, ``version``.
The number of classes (and so the outputs' shape) follows from ``classes``.

Only :func:`export_onnx` imports torch (and ``onnx``); :class:`OnnxFingerprintModel` needs
onnxruntime and numpy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from typing import Any, ClassVar

import numpy as np

from ctfp._util import (
    N_JOBS,
    Interval,
    n_jobs_to_threads,
    softmax,
    validate_params,
    write_bytes_atomic,
)
from ctfp.data.stream import BatchStream
from ctfp.models.inputs import check_image_contract, validate_images
from ctfp.models.persistence import decode_classes, encode_classes

__all__ = ["OnnxFingerprintModel", "export_onnx"]

_FORMAT = "ctfp.FingerprintClassifier/onnx"
_FORMAT_VERSION = 1
_INPUT = "images"
_OUTPUTS = ("logit", "probability")
EXPORTERS = ("auto", "dynamo", "torchscript")


def _metadata(estimator: Any) -> dict[str, str]:
    from ctfp import __version__

    mean, std = estimator.normalize_
    classes = encode_classes(estimator.classes_)
    values: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "version": __version__,
        "backbone": estimator.backbone,
        "image_size": list(estimator.image_size_),
        "normalize_mean": list(mean),
        "normalize_std": list(std),
        "classes": classes["values"],
        "classes_dtype": classes["dtype"],
        "threshold": float(estimator.threshold),
        "image_shape": None if estimator.image_shape_ is None else list(estimator.image_shape_),
        "image_channels": estimator.image_channels_,
        "input": _INPUT,
        "outputs": list(_OUTPUTS),
    }
    try:
        return {f"ctfp.{k}": json.dumps(v) for k, v in values.items()}
    except TypeError as exc:
        raise TypeError(
            f"export_onnx: the classes {estimator.classes_.tolist()!r} cannot be stored as JSON "
            f"in the ONNX metadata ({exc}); use str or int labels"
        ) from None


def export_onnx(
    estimator: Any,
    path: str | os.PathLike[str],
    *,
    exporter: str = "auto",
    opset_version: int | None = None,
) -> str:
    """Write a fitted :class:`~ctfp.FingerprintClassifier` to ``path`` as an ONNX model.

    Parameters
    ----------
    estimator : FingerprintClassifier
        A fitted classifier (its model is copied to the CPU in float32; the estimator is left
        as it was).
    path : str or os.PathLike
        Output file; weights are stored inside it (no external data files).
    exporter : {"auto", "dynamo", "torchscript"}
        ``"dynamo"`` is torch's ``torch.export``-based exporter (needs the ``onnxscript``
        package); ``"torchscript"`` is the older tracing exporter (faster to run, deprecated by
        torch). ``"auto"`` takes ``"dynamo"`` when onnxscript is installed.
    opset_version : int, optional
        ONNX opset; the exporter's default when omitted (17 for ``"torchscript"``).

    Returns
    -------
    str
        The path written.
    """
    if not hasattr(estimator, "model_") or not hasattr(estimator, "classes_"):
        from ctfp.exceptions import NotFittedError

        raise NotFittedError(
            f"export_onnx: this {type(estimator).__name__} is not fitted yet; call fit() first"
        )
    if exporter not in EXPORTERS:
        raise ValueError(
            f"exporter: expected one of {', '.join(map(repr, EXPORTERS))}, found {exporter!r}"
        )
    if exporter == "auto":
        exporter = "dynamo" if importlib.util.find_spec("onnxscript") is not None else "torchscript"
    import copy

    import onnx
    import torch

    class _Exported(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logit = self.net(images)
            if logit.dim() == 2:  # K > 2 classes: (batch, K) logits
                return logit, torch.softmax(logit, dim=1)
            return logit, torch.sigmoid(logit)

    net = copy.deepcopy(estimator.model_).to("cpu").float().eval()
    module = _Exported(net).eval()
    h, w = estimator.image_size_
    example = torch.zeros(2, 3, h, w)
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", "Constant folding", UserWarning)
            if exporter == "dynamo":
                how: dict[str, Any] = {
                    "dynamo": True,
                    "dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},),
                    "opset_version": opset_version,
                    "external_data": False,
                    "verbose": False,
                }
            else:
                how = {
                    "dynamo": False,
                    "dynamic_axes": {name: {0: "batch"} for name in (_INPUT, *_OUTPUTS)},
                    "opset_version": opset_version or 17,
                }
            torch.onnx.export(
                module, (example,), tmp, input_names=[_INPUT], output_names=list(_OUTPUTS), **how
            )
        model = onnx.load(tmp)
        del model.metadata_props[:]
        for key, value in _metadata(estimator).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        outputs = (
            f"logit, probability of {estimator.classes_[1]!r}"
            if len(estimator.classes_) == 2
            else f"logits and softmax probabilities (batch, {len(estimator.classes_)}) of the "
            f"classes {estimator.classes_.tolist()!r}"
        )
        model.doc_string = (
            f"ctfp FingerprintClassifier ({estimator.backbone}): images float32 (batch, 3, {h}, "
            f"{w}) normalised per ctfp.normalize_mean/std -> {outputs}"
        )
        onnx.checker.check_model(model)
        write_bytes_atomic(path, model.SerializeToString())  # weights inside: one file
    finally:
        for leftover in (tmp, tmp + ".data"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return path


class OnnxFingerprintModel:
    """Predict with an ONNX file written by :func:`export_onnx`, without torch.

    Images go through the same Rust preprocessing as in training (resize, the backbone's
    normalisation; no augmentation), then onnxruntime. What the file holds is read when the model
    is made, into attributes ending in ``_`` (scikit-learn's mark of what was learnt or loaded);
    the constructor's arguments are kept as given.

    Parameters
    ----------
    path : str or os.PathLike
        An ONNX file written by :func:`export_onnx`.
    providers : list of str, optional
        onnxruntime execution providers; default: CUDA when onnxruntime has it, then CPU.
    batch_size : int, default=32
        Images per inference batch.
    n_jobs : int, optional
        Threads that decode and resize images: ``None``: all cores, ``-1``: all, ``-2``: all but
        one.

    Attributes
    ----------
    session_ : onnxruntime.InferenceSession
    classes_ : ndarray of shape (n_classes,)
    threshold_ : float
        Two classes: ``predict`` returns ``classes_[1]`` where its probability is
        ``>= threshold_``; more classes: not used (the most probable class).
    image_size_ : (int, int)
    normalize_ : (mean, std)
    image_shape_ : (int, int) or None
        Source size of the training images, checked like ``FingerprintClassifier.predict``.
    image_channels_ : int or None
    backbone_ : str or None
    metadata_ : dict
        All ``ctfp.*`` metadata, decoded.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "batch_size": [Interval(int, 1, None)],
        "n_jobs": N_JOBS,
    }

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: list[str] | None = None,
        batch_size: int = 32,
        n_jobs: int | None = None,
    ) -> None:
        self.path = path
        self.providers = providers
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        validate_params(
            {"batch_size": batch_size, "n_jobs": n_jobs},
            self._parameter_constraints,
            type(self).__name__,
        )
        import onnxruntime as ort

        file = os.fspath(path)
        if not os.path.exists(file):
            raise FileNotFoundError(f"no such ONNX file {file!r}")
        if providers is None:
            available = ort.get_available_providers()
            providers = [
                p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
            ]
        self.session_ = ort.InferenceSession(file, providers=providers)
        raw = self.session_.get_modelmeta().custom_metadata_map
        if raw.get("ctfp.format") != json.dumps(_FORMAT):
            raise ValueError(
                f"{file!r} was not written by ctfp.export_onnx (no ctfp.format metadata)"
            )
        meta = {k[len("ctfp.") :]: json.loads(v) for k, v in raw.items() if k.startswith("ctfp.")}
        if meta.get("format_version", 0) > _FORMAT_VERSION:
            raise ValueError(f"{file!r} was written by a newer ctfp ({meta.get('version')})")
        self.metadata_ = meta
        self.classes_ = decode_classes({"values": meta["classes"], "dtype": meta["classes_dtype"]})
        self.threshold_ = float(meta["threshold"])
        self.image_size_ = tuple(meta["image_size"])
        self.normalize_ = (tuple(meta["normalize_mean"]), tuple(meta["normalize_std"]))
        self.image_shape_ = None if meta["image_shape"] is None else tuple(meta["image_shape"])
        self.image_channels_ = meta["image_channels"]
        self.backbone_ = meta.get("backbone")

    def __repr__(self) -> str:
        return (
            f"OnnxFingerprintModel({os.fspath(self.path)!r}, backbone={self.backbone_!r}, "
            f"classes={self.classes_.tolist()!r})"
        )

    def _run(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Logits and probabilities, float32: ``(N,)`` each for two classes, ``(N, K)`` for
        ``K > 2``."""
        images = validate_images(X, allow_empty=True)
        check_image_contract(images, self.image_shape_, self.image_channels_)
        n = len(images)
        k = len(self.classes_)
        shape = (n,) if k == 2 else (n, k)
        logits = np.empty(shape, dtype=np.float32)
        probs = np.empty(shape, dtype=np.float32)
        if n == 0:
            return logits, probs
        stream = BatchStream(
            images.sources,
            batch_size=self.batch_size,
            shuffle=False,
            size=self.image_size_,
            dtype="float32",
            normalize=self.normalize_,
            n_threads=n_jobs_to_threads(self.n_jobs),
        )
        pos = 0
        for xb in stream.iter_epoch(0):
            logit, prob = self.session_.run(list(_OUTPUTS), {_INPUT: xb})
            logits[pos : pos + len(xb)] = logit.reshape(len(xb), *shape[1:])
            probs[pos : pos + len(xb)] = prob.reshape(len(xb), *shape[1:])
            pos += len(xb)
        return logits, probs

    def decision_function(self, X: Any) -> np.ndarray:
        """Two classes: the model's logit per image, shape ``(N,)``, positive values favour
        ``classes_[1]``; ``K > 2`` classes: the logits ``(N, K)`` in ``classes_`` order."""
        return self._run(X)[0].astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities ``(N, n_classes)``, columns in ``classes_`` order; rows sum to 1. For
        ``K > 2`` classes the softmax of the logits in float64, as
        :meth:`FingerprintClassifier.predict_proba` computes it."""
        if len(self.classes_) > 2:
            return softmax(self._run(X)[0].astype(np.float64))
        p1 = self._run(X)[1].astype(np.float64)
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        """Labels from ``classes_``. Two classes: ``classes_[1]`` where its probability is
        ``>= threshold_``; more: the most probable class (the first on ties)."""
        if len(self.classes_) > 2:
            return self.classes_[self._run(X)[0].argmax(axis=1)]
        p1 = self._run(X)[1].astype(np.float64)
        return self.classes_[(p1 >= self.threshold_).astype(np.intp)]
