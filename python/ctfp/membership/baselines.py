"""The published methods, implemented plainly, so that every table can show ctfp against them.

- :class:`GANLeaks`: GAN-Leaks' full black-box attack (Chen et al., "GAN-Leaks: A Taxonomy of
  Membership Inference Attacks against Generative Models", CCS 2020): the Euclidean (L2)
  distance from a real image to its nearest generated image in pixel space (k = 1); the score
  is minus that distance. Pixels are the grey levels (0-255) at ``image_size``; no calibration.
  A threshold on the score decides: chosen on labelled development images
  (``rule="calibrated"``, ctfp's one calibration,
  :class:`~ctfp.membership.decision.CalibratedThreshold`) or by the caller (``rule=None``:
  scores only).
- :class:`VCMISSIM`: the 2023 ImageCLEFmedical GANs winner's SSIM rule (VCMI): the score of a
  real image is its largest SSIM with any generated image; ``threshold_max`` is the largest SSIM
  between two different real images (the development images, labels unused; without them, the
  images being predicted); an image is used when its score reaches ``threshold_max`` (ctfp's
  one tie rule, :func:`~ctfp.membership.decision.at_or_above`): no two real images are closer
  to each other than some generated image is to it.

Both are scikit-learn estimators with the generated set as a fit parameter, like
:class:`~ctfp.membership.similarity.SimilarityMembership`: ``fit(X, y, generated=...)``,
``score_samples``, ``decision_function`` (score minus threshold), ``predict``, ``describe``.
They share no code with ctfp's estimators beyond image loading, the SSIM kernel (equal to
scikit-image's) and the exact k-NN search, so they are an independent check on them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ctfp._util import (
    IMAGE_SIZE,
    N_JOBS,
    Constraint,
    Interval,
    Options,
    check_binary_labels,
    images_given,
    n_jobs_to_threads,
    require_fitted,
    validate_params,
)
from ctfp.data.images import as_hw, load_images, ssim_matrix
from ctfp.membership.decision import METRICS, CalibratedThreshold, ThresholdDecisionMixin
from ctfp.membership.knn import SEARCHES, FeatureSearch, resolve_search

__all__ = ["GANLeaks", "VCMISSIM", "threshold_max"]


def _generated(generated: Any, size: Any, n_threads: int | None) -> np.ndarray:
    if generated is None:
        raise ValueError(
            "generated: expected the generator's images (fit(X, y, generated=...)), found None"
        )
    generated = images_given(generated, "generated", "generated image")
    return load_images(generated, size=size, n_threads=n_threads)


#: Real images per row band of :func:`threshold_max`'s triangle.
_BAND = 16


def threshold_max(real: np.ndarray, *, n_threads: int | None = None) -> float:
    """VCMI's ``threshold_max``: the largest SSIM between two different images of ``real``
    (a uint8 ``(N, H, W)`` stack, ``N >= 2``).

    SSIM is symmetric, and ctfp's kernel bit for bit so (integer window sums, the same
    float operations for ``(a, b)`` as for ``(b, a)``): the pairs above the diagonal are
    computed, in bands of rows, not the whole ``N x N`` matrix, about half the work of
    ``ssim_matrix(real, real)`` and the same maximum.
    """
    n = len(real)
    if n < 2:
        raise ValueError(f"VCMISSIM: threshold_max needs at least two real images, found {n}")
    best = -np.inf
    for start in range(0, n - 1, _BAND):
        band = real[start : start + _BAND]
        s = ssim_matrix(band, real[start:], n_threads=n_threads).astype(np.float64)
        rows = np.arange(len(band))
        own = s[:, : len(band)]  # the band against itself: a view
        own[rows[:, None] >= rows[None, :]] = -np.inf  # no self, no lower triangle
        best = max(best, float(s.max()))
    return best


class GANLeaks(ThresholdDecisionMixin, ClassifierMixin, BaseEstimator):
    """GAN-Leaks' full black-box attack: minus the L2 pixel distance to the nearest generated
    image.

    Parameters
    ----------
    image_size : int or (height, width)
        Images are compared at this size (resized by :func:`ctfp.load_batch`); default 64.
    rule : {"calibrated", None}
        ``"calibrated"``: threshold maximising ``metric`` on the labelled development images;
        ``None``: scores only (``predict`` refuses).
    metric : {"accuracy", "f1", "kappa"}
    algorithm : {"auto", "brute", "faiss-flat", "faiss-ivf", "faiss-hnsw"}
        The nearest-neighbour search (:class:`~ctfp.membership.knn.FeatureSearch`).
    n_jobs : int, optional

    Attributes
    ----------
    generated_ : uint8 ``(N, H, W)``
        The generated images at ``image_size`` (pass it as ``generated=`` to refit cheaply).
    threshold_ : float or None
    """

    _parameter_constraints: dict[str, list[Constraint]] = {
        "image_size": IMAGE_SIZE,
        "rule": [None, Options("calibrated")],
        "metric": [Options(*METRICS)],
        "algorithm": [Options(*SEARCHES)],
        "n_jobs": N_JOBS,
    }

    def __init__(
        self,
        *,
        image_size: int = 64,
        rule: str | None = "calibrated",
        metric: str = "accuracy",
        algorithm: str = "auto",
        n_jobs: int | None = None,
    ) -> None:
        self.image_size = image_size
        self.rule = rule
        self.metric = metric
        self.algorithm = algorithm
        self.n_jobs = n_jobs

    def _features(self, X: Any) -> np.ndarray:
        imgs = load_images(images_given(X, "X"), size=self.image_size, n_threads=self.n_threads_)
        return imgs.reshape(len(imgs), -1).astype(np.float32)

    def fit(self, X: Any = None, y: Any = None, *, generated: Any = None) -> GANLeaks:
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        if self.rule == "calibrated" and (X is None or y is None):
            raise ValueError(
                "GANLeaks(rule='calibrated') chooses its threshold on labelled development "
                "images: call fit(X, y, generated=...), or set rule=None"
            )
        self.n_threads_ = n_jobs_to_threads(self.n_jobs)
        self.classes_ = np.array([0, 1])
        self.generated_ = _generated(generated, self.image_size, self.n_threads_)
        g = self.generated_.reshape(len(self.generated_), -1).astype(np.float32)
        self.algorithm_ = resolve_search(self.algorithm, len(g))
        self.search_ = FeatureSearch(self.algorithm_, n_threads=self.n_threads_).fit(g)
        self.threshold_: float | None = None
        if self.rule == "calibrated":
            dev = self.score_samples(X)
            cal = CalibratedThreshold(self.metric).fit(dev, check_binary_labels(y, "y", len(dev)))
            self.threshold_, self.dev_value_ = cal.threshold_, cal.dev_value_
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Minus the L2 distance (grey levels) to the nearest generated image."""
        require_fitted(self, "search_")
        dist, _ = self.search_.search(self._features(X), 1)
        return -dist[:, 0].astype(np.float64)

    def describe(self) -> dict[str, Any]:
        require_fitted(self, "search_")
        return {
            "method": "GAN-Leaks (full black-box, k=1, L2 pixels)",
            "measure": "pixel",
            "image_size": list(as_hw(self.image_size)),
            "n_generated": int(len(self.generated_)),
            "algorithm": self.algorithm_,
            "rule": self.rule,
            "threshold": self.threshold_,
        }


class VCMISSIM(ThresholdDecisionMixin, ClassifierMixin, BaseEstimator):
    """The 2023 winner's SSIM rule: used when the largest SSIM to a generated image reaches
    ``threshold_max``, the largest SSIM between two different real images.

    Why it is slower than ctfp's SSIM presets: the rule is exhaustive, every real image against
    every generated image at the generated images' own size (256x256 for ImageCLEF), with no
    pre-filter (``SimilarityMembership(ssim_candidates=...)`` compares at 64x64 and computes SSIM
    for a few candidates only). A 200-image test split against 10,000 generated images is 2
    million SSIMs of 256x256; ``ctfp run``'s leak test scores the development images the same way
    (plus 2,000 stand-in images), about 4.4 million in all (60 microseconds each on 2 cores here).
    The work scales with ``n_jobs`` (all cores by default). Only the real-real threshold has a
    shortcut that changes no number (:func:`threshold_max`: SSIM is symmetric, half the pairs).

    Parameters
    ----------
    image_size : int, optional
        Compare at this size (default: the generated images' own size, as VCMI did).
    block_size : int
        Generated images compared per SSIM call (bounds memory).
    n_jobs : int, optional

    Attributes
    ----------
    generated_ : uint8 ``(N, H, W)``
    threshold_ : float or None
        ``threshold_max`` of the development images (None when ``fit`` got none: then each
        ``predict`` takes it from the images it predicts).
    """

    _parameter_constraints: dict[str, list[Constraint]] = {
        "image_size": [None, *IMAGE_SIZE],
        "block_size": [Interval(int, 1, None)],
        "n_jobs": N_JOBS,
    }

    def __init__(
        self, *, image_size: int | None = None, block_size: int = 1024, n_jobs: int | None = None
    ) -> None:
        self.image_size = image_size
        self.block_size = block_size
        self.n_jobs = n_jobs

    def fit(self, X: Any = None, y: Any = None, *, generated: Any = None) -> VCMISSIM:
        """``X``: real images for ``threshold_max`` (labels ``y`` are not used)."""
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        self.n_threads_ = n_jobs_to_threads(self.n_jobs)
        self.classes_ = np.array([0, 1])
        self.generated_ = _generated(generated, self.image_size, self.n_threads_)
        self.size_ = self.generated_.shape[1:]
        self.threshold_: float | None = None
        if X is not None:
            self.threshold_ = self._threshold_max(self._images(X))
        return self

    def _images(self, X: Any) -> np.ndarray:
        return load_images(images_given(X, "X"), size=self.size_, n_threads=self.n_threads_)

    def _threshold_max(self, real: np.ndarray) -> float:
        return threshold_max(real, n_threads=self.n_threads_)

    def _max_ssim(self, q: np.ndarray) -> np.ndarray:
        best = np.full(len(q), -np.inf)
        for start in range(0, len(self.generated_), self.block_size):
            block = self.generated_[start : start + self.block_size]
            best = np.maximum(best, ssim_matrix(q, block, n_threads=self.n_threads_).max(1))
        return best

    def score_samples(self, X: Any) -> np.ndarray:
        """The largest SSIM of each image with any generated image."""
        require_fitted(self, "generated_")
        return self._max_ssim(self._images(X))

    def _scores_and_threshold(self, X: Any) -> tuple[np.ndarray, float]:
        """Scores and ``threshold_max`` (of the images themselves when ``fit`` got none), the
        images read once; ``decision_function`` is the score minus it (at or above 0: used)."""
        require_fitted(self, "generated_")
        q = self._images(X)
        t = self.threshold_ if self.threshold_ is not None else self._threshold_max(q)
        return self._max_ssim(q), t

    def _decision_name(self) -> str:
        return "VCMISSIM(threshold_max)"

    def describe(self) -> dict[str, Any]:
        require_fitted(self, "generated_")
        return {
            "method": "VCMI SSIM, threshold_max of real-real SSIM (ImageCLEFmedical GANs 2023)",
            "measure": "ssim",
            "image_size": [int(v) for v in self.size_],
            "n_generated": int(len(self.generated_)),
            "threshold_max": self.threshold_,
        }
