"""The method table: the paper's Methods 1-4 (KDE Lab, ImageCLEFmedical GANs 2024) and ctfp's
similarity presets and baselines, with their short command-line keys.

A :class:`Method` is a row of the table; :func:`get_method` finds a classifier method by key,
:func:`similarity_method` a similarity preset by key or name. Nothing here runs anything: the
runner (:mod:`ctfp.imageclef.runner`) takes a method and a scorer for its kind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctfp.exceptions import CtfpError

__all__ = [
    "METHODS",
    "SIMILARITY_KEYS",
    "SIMILARITY_PRESETS",
    "Method",
    "MethodUnavailable",
    "get_method",
    "similarity_method",
]


class MethodUnavailable(CtfpError, RuntimeError):
    """The method needs something this installation lacks (e.g. ESRGAN for Method 4)."""


@dataclass(frozen=True)
class Method:
    """One row of the paper's Table 1, or one of ctfp's similarity methods."""

    key: str
    title: str
    backbone: str = "mobilenet_v2"
    weights: str | None = "imagenet"
    super_resolution: bool = False
    kind: str = "classifier"  # or "similarity"
    options: dict = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a run's record says of the method: a similarity method's own settings
        (``options``), without the classifier fields (backbone, weights, super-resolution)
        that do not apply to it; a classifier's fields without the empty ``options``."""
        out = asdict(self)
        if self.kind == "similarity":
            for name in ("backbone", "weights", "super_resolution"):
                out.pop(name)
        elif not self.options:
            out.pop("options")
        return out

    def with_weights(self, weights: str | None) -> Method:
        """This classifier method trained from ``weights`` (``"default"``: its own), titled for
        them: ``"Method 1: MobileNetV2, not pretrained"`` with ``weights=None``."""
        if weights == "default" or weights == self.weights or self.kind != "classifier":
            return self
        net = _NETWORKS.get(self.key)
        if net is None:  # a method of the caller's own: only the weights change
            return dataclasses.replace(self, weights=weights)
        return dataclasses.replace(
            self, weights=weights, title=_title(self.key, net, weights, self.super_resolution)
        )


def _weights_text(weights: str | None) -> str:
    if weights is None:
        return "not pretrained"
    if weights == "imagenet":
        return "ImageNet-pretrained"
    return f"weights from {Path(weights).name}"


def _title(key: str, net: str, weights: str | None, super_resolution: bool) -> str:
    on = " on ESRGAN x4 images" if super_resolution else ""
    return f"Method {key}: {net}{on}, {_weights_text(weights)}"


#: The paper's networks by method key (the titles are built from them and the weights).
_NETWORKS = {"1": "MobileNetV2", "2": "DenseNet-121", "3": "ResNet-50", "4": "MobileNetV2"}


def _paper(key: str, backbone: str, weights: str | None, sr: bool = False) -> Method:
    return Method(key, _title(key, _NETWORKS[key], weights, sr), backbone, weights, sr)


METHODS: dict[str, Method] = {
    "1": _paper("1", "mobilenet_v2", "imagenet"),
    "2": _paper("2", "densenet121", "imagenet"),
    "3": _paper("3", "resnet50", "imagenet"),
    "4": _paper("4", "mobilenet_v2", None, sr=True),
}


def get_method(key: str | int) -> Method:
    k = str(key)
    if k not in METHODS:
        raise ValueError(f"method: unknown method {key!r}; expected one of {', '.join(METHODS)}")
    return METHODS[k]


#: ctfp's similarity methods (docs/similarity.md) as presets next to the paper's Methods 1-4:
#: options for :class:`ctfp.membership.similarity.SimilarityMembership` (scores only: no
#: ``rule``; the runner's ``decision`` decides). ``"estimator"`` names another membership
#: estimator (:func:`ctfp.membership.estimators.make_estimator`: the fused scores, the published
#: baselines); ``"decision"`` is a preset's own default decision (VCMI's real-real threshold:
#: its ``decision_function`` is the score minus ``threshold_max``, so ``threshold:0``).
#: The sim-* settings are those that won on the realistic benchmark's development split
#: (few-hundred regime, 10,000 generated images, the test split's images unlabelled in the real
#: reference as here; cross-validated development ROC-AUC,
#: benches/membership_presets.py, docs/benchmark_presets.md): comparison at 64x64 (16, 32, 128
#: and SSIM at the task's 256 did worse) and calibration="real", the k-NN density ratio of the
#: generated set to every real image of the dataset (the runner passes the development and test
#: images, labels unused, as ``reference``), which beat no calibration and calibration against
#: the development non-members in every family; statistic="centroid" (closeness to the mean of
#: the k closest images) beat the closest and the mean closeness for pixels and SSIM, but not
#: with query transforms. The real term's 30 neighbours (``k_real``) were chosen by the mean of
#: the same development ROC-AUC with one, three and five slices per patient among the real
#: images (benches/slices_per_patient.py, docs/slices_per_patient.md): 10 won with one slice and
#: fell 0.06-0.09 with more, 30 held for every family.
#: The neighbour count (``statistic="count"``, once ``sim-count``) is no preset: it sat below the
#: GAN-Leaks baseline on every generator of the benchmark (test ROC-AUC 0.631 / 0.709 / 0.523
#: against 0.664 / 0.784 / 0.516, docs/benchmark.md); the statistic stays in the library.
_CENTROID = {
    "measure": "pixel",
    "image_size": 64,
    "statistic": "centroid",
    "k": 10,
    "k_real": 30,
    "calibration": "real",
}
SIMILARITY_PRESETS: dict[str, dict] = {
    "SSIM to the mean of 10 closest, density ratio": {**_CENTROID, "measure": "ssim"},
    "Pixel to the mean of 10 closest, density ratio": dict(_CENTROID),
    "Pixel 10 closest, transform-robust, density ratio": {
        "measure": "pixel",
        "image_size": 64,
        "statistic": "mean_k",
        "k": 10,
        "k_real": 30,
        "calibration": "real",
        "query_transforms": "small",
    },
    "Fused similarity": {  # the pixel and SSIM presets above, combined
        "estimator": "fused",
        "members": [dict(_CENTROID), {**_CENTROID, "measure": "ssim"}],
    },
    "GAN-Leaks (baseline)": {"estimator": "ganleaks", "image_size": 64},
    "VCMI SSIM (baseline)": {"estimator": "vcmi", "decision": "threshold:0"},
}


#: Short names for the command line (``ctfp run --method sim-ssim``); also the method's key in
#: its record and its folder name in a folder of several methods.
SIMILARITY_KEYS = {
    "sim-ssim": "SSIM to the mean of 10 closest, density ratio",
    "sim-pixel": "Pixel to the mean of 10 closest, density ratio",
    "sim-shift": "Pixel 10 closest, transform-robust, density ratio",
    "sim-fused": "Fused similarity",
    "base-ganleaks": "GAN-Leaks (baseline)",
    "base-vcmi": "VCMI SSIM (baseline)",
}


def similarity_method(name: str, *, image_size: int | None = None) -> Method:
    """The similarity preset ``name`` (a key of :data:`SIMILARITY_KEYS` or a name of
    :data:`SIMILARITY_PRESETS`) as a :class:`Method` keyed by its short name; ``image_size``
    replaces the preset's comparison size."""
    title = SIMILARITY_KEYS.get(name, name)
    if title not in SIMILARITY_PRESETS:
        known = ", ".join(map(repr, [*SIMILARITY_KEYS, *SIMILARITY_PRESETS]))
        raise ValueError(f"similarity preset {name!r}: expected one of {known}")
    key = next(k for k, v in SIMILARITY_KEYS.items() if v == title)
    options = dict(SIMILARITY_PRESETS[title])
    if image_size is not None:
        options["image_size"] = image_size
    return Method(key, title, kind="similarity", weights=None, options=options)


def estimator_takes(options: dict, name: str) -> bool:
    """Whether the estimator of a preset's ``options`` takes the setting ``name`` (``device``,
    ``torch_threads``, ...); imports the estimator's module."""
    import importlib

    from ctfp.membership.estimators import ESTIMATORS

    module, cls = ESTIMATORS[options.get("estimator", "similarity")].split(":")
    return name in getattr(importlib.import_module(module), cls)().get_params()
