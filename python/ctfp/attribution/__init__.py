"""Which model, and which training subset, made each generated image (the task's subtask 2).

- :mod:`~ctfp.attribution.features`: fingerprint features as scikit-learn transformers (noise
  residual spectrum, pixels, closeness to each subset's real images, CNN embeddings).
- :mod:`~ctfp.attribution.estimators`: :class:`SourceAttributor` (supervised, also with the
  subsets' real images), :class:`ResidualCorrelation` (Marra et al.), :class:`NearestRealSubset`
  (pixel baseline), :class:`SourceClustering` (unknown number of sources, optional seeds),
  :func:`cnn_finetune` (the multi-class :class:`ctfp.FingerprintClassifier`, a CNN trained on
  the labelled generated images).
- :mod:`~ctfp.attribution.layout` / :mod:`~ctfp.attribution.workflow`: the 2025 and 2024-style
  folder layouts and :func:`attribute_layout` / :func:`cluster_folder` (what the CLI calls).
- :mod:`~ctfp.attribution.gans` / :mod:`~ctfp.attribution.dataset`: the benchmark's trained
  generators and the writer of its datasets.

Importing this package pulls in numpy and scikit-learn; torch only when a generator or a CNN
is used.
"""

from __future__ import annotations

from .estimators import (
    FEATURES,
    NearestRealSubset,
    ResidualCorrelation,
    SourceAttributor,
    SourceClustering,
    cnn_finetune,
    make_features,
)
from .features import (
    CNNEmbedding,
    PixelFeatures,
    ResidualSpectrum,
    SubsetCloseness,
    azimuthal_average,
    denoise,
    noise_residual,
)
from .layout import Development, TestSet, read_development, read_test, read_truth
from .metrics import attribution_metrics, clustering_metrics, purity
from .workflow import (
    METHODS,
    AttributionResult,
    ClusteringResult,
    attribute_layout,
    cluster_folder,
    make_method,
)

__all__ = [
    "FEATURES",
    "METHODS",
    "AttributionResult",
    "CNNEmbedding",
    "ClusteringResult",
    "Development",
    "NearestRealSubset",
    "PixelFeatures",
    "ResidualCorrelation",
    "ResidualSpectrum",
    "SourceAttributor",
    "SourceClustering",
    "SubsetCloseness",
    "TestSet",
    "attribute_layout",
    "attribution_metrics",
    "azimuthal_average",
    "cluster_folder",
    "clustering_metrics",
    "cnn_finetune",
    "denoise",
    "make_features",
    "make_method",
    "noise_residual",
    "purity",
    "read_development",
    "read_test",
    "read_truth",
]
