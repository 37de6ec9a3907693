"""Membership by similarity to the generated set: which real images did the generator see?

A generator that memorises leaves near-copies of its training images among its outputs, so a real
image that comes unusually close to some generated image was probably used to train it. This is
what worked in ImageCLEFmedical GANs (docs/similarity.md): the 2023 winner's SSIM / embedding
similarity with simple decision rules, GAN-Leaks' distance to the closest generated sample
(calibrated against a reference set), Hilprecht et al.'s Monte-Carlo count of generated samples
near a record, and DOMIAS' density ratio of generated to reference data.

:class:`SimilarityMembership` puts them behind one scikit-learn estimator. ``X`` is the labelled
real (development) images, ``y`` their labels (1 used, 0 not used); the generated set is a fit
parameter, so ``clone``, ``cross_val_score``, ``GridSearchCV`` and ``Pipeline`` drive it::

    est = SimilarityMembership(measure="ssim", rule="calibrated")
    est.fit(dev_images, dev_labels, generated=generated)
    est.predict(test_images)                            # 1 / 0 per image
    est.score_samples(test_images)                      # higher = more likely used

    cross_val_score(est, dev_images, dev_labels, params={"generated": generated})
    GridSearchCV(est, {"k": [1, 5]}).fit(dev_images, dev_labels, generated=generated)

scikit-learn slices a fit parameter like ``X`` when it has as many items as ``X`` has images
(``sklearn.utils.validation._check_method_params``): a generated set of the same length as ``X``
would be cut per fold. Pass a fitted :class:`~ctfp.membership.index.GeneratedIndex` instead of
the images (it has no length, so it is never sliced); it is also reused as it is when its
settings are the estimator's, so cross-validation indexes the generated set once.

Measures (``measure=``), each a *closeness* (higher = more alike) between two images, are
computed by the generated-set index (:mod:`ctfp.membership.index`): ``"pixel"`` (minus the RMS
grey-level difference at ``image_size``), ``"ssim"`` (scikit-image's ``structural_similarity``
through ctfp's Rust kernel), ``"embedding"`` (minus the distance between L2-normalised backbone
features).

Statistics of a real image's closeness to the generated set (``statistic=``): ``"max"`` (the
closest generated image, GAN-Leaks' full black-box attack), ``"mean_k"`` (mean of the ``k``
closest), ``"count"`` (the fraction of generated images within a radius, Hilprecht et al.'s
Monte-Carlo estimate; the radius is the ``1 - radius_quantile`` quantile of the closeness of the
development real images to the generated images, labels unused, or without development images,
of generated images to each other; it is fixed at fit time), ``"centroid"`` (ctfp's: the
closeness to the *mean* of the ``k`` closest generated images, their average image (rounded to
grey levels for SSIM) or average feature vector, or to the closest one when that is closer). A
generator that memorises an image leaves several near-copies of it, each with its own noise;
their average cancels the noise and comes closer to the image than any one copy, while the
closest images of a new one are different images whose average is a blur. The closest image
still counts where it is closer than the average (an exact copy scores as high as with
``"max"``). On the realistic benchmark's development split it was the strongest statistic
(docs/benchmark_presets.md).

Calibration (``calibration=``): a real image that is close to the generated set may simply be a
typical image, close to everything; calibration divides that out.

- ``"real"`` (ctfp's, no labels needed): a k-nearest-neighbour density ratio of the generated set
  to the real images, ``log d_real(x) - log d_gen(x)``, where ``d_gen`` is the statistic's
  distance to the generated set (mean of the ``k`` closest, or the closest) and ``d_real`` the
  same distance to the *real* images the estimator knows: the development images ``X`` (labels
  unused) and any unlabelled ``reference=`` images given to ``fit`` (the task's test images, for
  instance). An image is never compared with itself (found by its pixels at ``image_size``).
  Distance is ``-closeness`` for pixels and embeddings and ``1 - SSIM`` for SSIM. With
  ``statistic="count"`` the ratio is of counts instead (Monte-Carlo): ``log((c_gen + 1) /
  (n_gen + 1)) - log((c_real + 1) / (n_real + 1))``, the images of each set within the radius.
  The real term takes its own ``k_real`` neighbours and, for ``"centroid"``, the mean of them
  alone: with several slices per patient among the real images, an image's closest real images
  are its own patient's other slices (docs/similarity.md, "Several slices per patient"). Where
  the patients are known, ``fit(groups=, reference_groups=)`` makes the real term count
  patients, not images. On the realistic
  benchmark it is the strongest calibration by a wide margin (docs/benchmark_presets.md).
- ``"reference"`` (needs labelled development images) subtracts the same statistic computed
  against the development images known not to be used (GAN-Leaks' calibrated attack, the
  non-members standing in for a reference model).
- ``"density"`` (needs labelled development images) scores ``log p_gen(x) - log p_ref(x)``,
  Gaussian kernel density estimates of the generated set and of the non-members in a whitened PCA
  space of the features (DOMIAS).

Whenever an image that is itself in the reference set is scored, it is left out of it.

Decisions (``rule=``):

- ``"calibrated"``: the threshold on the score that maximises ``metric`` on the labelled
  development images, by :class:`ctfp.membership.decision.CalibratedThreshold` (ctfp's one
  calibration: midpoints between consecutive development scores; ties: the median candidate).
- ``"real_real"`` (2023 winner): used when the closeness statistic to the generated set reaches
  the ``real_quantile`` quantile of the same statistic computed between real images (each real
  image against the other real images, labels unused): a generated image closer to a real image
  than real images are to each other points at a copy. The default, ``real_quantile=1.0``, is
  the winner's ``threshold_max``: the *largest* real-real similarity, so only an image closer to
  some generated image than any two real images are to each other is called used. The real
  images are the development images when ``fit`` gets them, else the images being predicted.
- ``"retrieval"`` (2023 winner): each generated image votes for its closest image among those
  being predicted; images with at least ``min_votes`` votes are used. Transductive: the result for
  one image depends on the others predicted with it.
- ``"top"``: the ``fraction`` of images with the highest scores are used
  (:class:`ctfp.membership.decision.TopFraction`; default: the share of used images among the
  development labels, else 0.5).
- ``None``: no decision; the estimator only scores (:meth:`SimilarityMembership.score_samples`),
  for a caller whose own decision rule decides (the experiment runner).

Thresholds and fractions come from development data (or, for ``real_real`` and ``retrieval``,
from unlabelled images) only: no label of an image being predicted is ever seen. A rule whose
threshold puts every predicted image in one class warns
(:class:`ctfp.membership.decision.SingleClassRuleWarning`).

Large generated sets: ``algorithm`` (FAISS), ``ssim_candidates`` (SSIM on pixel-pre-filtered
candidates only), ``query_transforms`` and a reusable saved index (``index_cache``, a folder:
the generated set is indexed, or embedded, once across fits and runs); see
:mod:`ctfp.membership.index`.

This module imports numpy and scikit-learn; torch only for ``measure="embedding"`` or a GPU.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ctfp._util import (
    IMAGE_SIZE,
    Constraint,
    InstanceOf,
    Interval,
    Options,
    check_binary_labels,
    images_given,
    require_fitted,
    seed_from,
    validate_params,
)
from ctfp.data.images import load_images, ssim_matrix
from ctfp.membership.decision import (
    METRICS,
    CalibratedThreshold,
    ThresholdDecisionMixin,
    TopFraction,
    at_or_above,
)
from ctfp.membership.index import INDEX_CONSTRAINTS, MEASURES, GeneratedIndex
from ctfp.membership.knn import (
    nearest_neighbours,
    quantile_candidates,
    refine,
    sq_dist_block,
    threshold_candidates,
    top_k_candidates,
)
from ctfp.membership.store import fit_or_load

__all__ = [
    "CALIBRATIONS",
    "MEASURES",
    "RULES",
    "STATISTICS",
    "GeneratedIndex",
    "SimilarityMembership",
    "evaluate_split",
    "load_images",
    "nearest_neighbours",
    "ssim_matrix",
]

STATISTICS = ("max", "mean_k", "count", "centroid")
CALIBRATIONS = (None, "real", "reference", "density")
RULES = (None, "calibrated", "real_real", "retrieval", "top")
_INDEX_PARAMS = tuple(INDEX_CONSTRAINTS)


def _group_labels(labels: Any, n: int | None, name: str, of: str) -> list | None:
    """``labels`` as a list of ``n`` hashable group labels (numpy scalars as Python values)."""
    if labels is None:
        return None
    if n is None:
        raise ValueError(f"{name}: given without the images it labels ({of})")
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"{name}: expected one group label per image of {of}, found a string")
    out = [v.item() if isinstance(v, np.generic) else v for v in labels]
    if len(out) != n:
        raise ValueError(
            f"{name}: expected {n} group labels (one per image of {of}), found {len(out)}"
        )
    for v in out:
        try:
            hash(v)
        except TypeError:
            raise TypeError(
                f"{name}: group labels must be hashable (a patient id, say), found {v!r}"
            ) from None
    return out


def _closest_per_group(c: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``c`` (queries x rows) with every row but the closest of its group set to -inf in each
    query's line, so that a k-NN over it takes one image per group."""
    out = np.full_like(c, -np.inf)
    for i, line in enumerate(c):
        order = np.argsort(-line, kind="stable")
        _, first = np.unique(groups[order], return_index=True)
        keep = order[first]
        out[i, keep] = line[keep]
    return out


class SimilarityMembership(ThresholdDecisionMixin, ClassifierMixin, BaseEstimator):
    """Predict which real images trained a generator from their similarity to its outputs.

    See the module docstring for the measures, statistics, calibrations and rules.

    The defaults are the settings that won on the realistic leak benchmark's development split
    (docs/benchmark_presets.md; ``ctfp run --method sim-pixel``): pixels at 64x64, the
    distance to the mean of the 10 closest generated images (``statistic="centroid"``), as a
    density ratio to the real images (``calibration="real"``), threshold calibrated on the
    labelled development images.

    Parameters
    ----------
    measure, image_size, backbone, weights : see :class:`~ctfp.membership.index.GeneratedIndex`
        What closeness is measured on (``"pixel"``, default, ``"ssim"`` or ``"embedding"``), at
        which size (default 64x64; ``None``: the first image's own size), and for embeddings
        with which network.
    statistic : {"max", "mean_k", "count", "centroid"}
    k : int
        Neighbours averaged by ``"mean_k"`` (their closeness) and ``"centroid"`` (their
        images).
    k_real : int, optional
        The same for the real-image term of ``calibration="real"`` (``None``: ``k``). That
        term's ``"centroid"`` is the mean of the ``k_real`` closest real images alone, without
        the closest-image clause.
    radius_quantile : float
        For ``"count"``: the radius is the ``1 - radius_quantile`` quantile of the closeness of
        the development real images (labels unused) to the generated images; without them, of
        up to ``radius_sample`` generated images to the rest of the generated set.
    radius_sample : int
    calibration : {None, "real", "reference", "density"}
        See the module docstring; ``"real"`` needs real images at fit (``X`` or ``reference``)
        but no labels, the other two labelled development images with some not used.
    n_components : int
        For ``"density"``: dimensions of the whitened PCA space of the KDEs.
    rule : {"calibrated", "real_real", "retrieval", "top", None}
        ``None``: scores only (``predict`` refuses).
    metric : {"accuracy", "f1", "kappa"}
        What ``rule="calibrated"`` maximises on the development images.
    real_quantile : float
        For ``rule="real_real"``: the quantile of the real-real similarities that is the
        threshold; default 1.0, their maximum (the 2023 winner's ``threshold_max``).
    min_votes : int
        For ``rule="retrieval"``.
    fraction : float, optional
        For ``rule="top"``.
    algorithm, algorithm_params, ssim_candidates, prefilter_size, query_transforms : see
        ``GeneratedIndex``: FAISS search, the SSIM pre-filter, transform-robust matching.
    index_cache : str or path, optional
        A folder where the fitted generated-set index is saved and from which it is reloaded
        when the same images (by content hash) are indexed with the same feature settings
        (:func:`ctfp.membership.store.fit_or_load`). Ignored when ``fit`` gets an index.
    device, batch_size, block_size, max_cache_bytes, n_jobs, torch_threads : see ``GeneratedIndex``
        How the generated set is searched: ``device="auto"`` by default, resolved by
        :func:`ctfp._util.resolve_device` (an unavailable device raises its ``ValueError``; SSIM
        always runs on the CPU cores and with ``"auto"`` imports no torch); ``n_jobs=-1`` means
        all cores for image loading and SSIM; ``torch_threads`` sets torch's for embeddings.
    random_state : int, RandomState or None
        Seeds the subsamples (radius, PCA) and a randomly initialised backbone; ``None`` is
        ctfp's default seed (:data:`ctfp._util.DEFAULT_SEED`), so results repeat.

    Attributes
    ----------
    index_ : GeneratedIndex
        The generated-set index (shared, not copied, when ``fit`` was given one).
    classes_ : array [0, 1]
    n_generated_ : int
    image_size_ : (int, int)
    device_ : str
    threshold_, dev_value_ : float or None
        ``rule="calibrated"``: the threshold and the metric value it reaches on the development
        images (from :attr:`calibrator_`, a fitted ``CalibratedThreshold``).
    real_threshold_ : float or None
        ``rule="real_real"`` with development images.
    fraction_ : float or None
        ``rule="top"``.
    radius_ : float or None
        ``statistic="count"``.
    k_real_ : int
        Neighbours of the real-image term of ``calibration="real"`` (``k_real``, or ``k``).
    dev_scores_ : array or None
        ``rule="calibrated"``: the development images' scores the threshold was chosen on.
    """

    _parameter_constraints: dict[str, list[Constraint]] = {
        **INDEX_CONSTRAINTS,
        "image_size": [None, *IMAGE_SIZE],
        "statistic": [Options(*STATISTICS)],
        "k": [Interval(int, 1, None)],
        "k_real": [None, Interval(int, 1, None)],
        "radius_quantile": [Interval(float, 0, 1)],
        "radius_sample": [Interval(int, 1, None)],
        "calibration": [None, Options("real", "reference", "density")],
        "n_components": [Interval(int, 1, None)],
        "rule": [None, Options("calibrated", "real_real", "retrieval", "top")],
        "metric": [Options(*METRICS)],
        "real_quantile": [Interval(float, 0, 1)],
        "min_votes": [Interval(int, 1, None)],
        "fraction": [None, Interval(float, 0, 1)],
        "index_cache": [None, InstanceOf((str, os.PathLike), "a folder path")],
    }

    def __init__(
        self,
        *,
        measure: str = "pixel",
        image_size: int | tuple[int, int] | None = 64,
        backbone: str = "efficientnet_lite0",
        weights: str | os.PathLike[str] | None = "auto",
        statistic: str = "centroid",
        k: int = 10,
        k_real: int | None = 30,
        radius_quantile: float = 0.01,
        radius_sample: int = 64,
        calibration: str | None = "real",
        n_components: int = 8,
        rule: str | None = "calibrated",
        metric: str = "accuracy",
        real_quantile: float = 1.0,
        min_votes: int = 1,
        fraction: float | None = None,
        algorithm: str = "auto",
        algorithm_params: dict[str, Any] | None = None,
        ssim_candidates: int | None = None,
        prefilter_size: int = 32,
        query_transforms: str | list[dict[str, Any]] | None = None,
        index_cache: str | os.PathLike[str] | None = None,
        block_size: int = 1024,
        max_cache_bytes: int = 2 << 30,
        batch_size: int = 64,
        device: Any = "auto",
        n_jobs: int | None = None,
        torch_threads: int | None = None,
        random_state: Any = None,
    ) -> None:
        self.measure = measure
        self.image_size = image_size
        self.backbone = backbone
        self.weights = weights
        self.statistic = statistic
        self.k = k
        self.k_real = k_real
        self.radius_quantile = radius_quantile
        self.radius_sample = radius_sample
        self.calibration = calibration
        self.n_components = n_components
        self.rule = rule
        self.metric = metric
        self.real_quantile = real_quantile
        self.min_votes = min_votes
        self.fraction = fraction
        self.algorithm = algorithm
        self.algorithm_params = algorithm_params
        self.ssim_candidates = ssim_candidates
        self.prefilter_size = prefilter_size
        self.query_transforms = query_transforms
        self.index_cache = index_cache
        self.block_size = block_size
        self.max_cache_bytes = max_cache_bytes
        self.batch_size = batch_size
        self.device = device
        self.n_jobs = n_jobs
        self.torch_threads = torch_threads
        self.random_state = random_state

    # ---------------------------------------------------------------------------------- checks

    def _check_params(self, has_labels: bool) -> None:
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        if self.calibration == "density" and self.measure == "ssim":
            raise ValueError(
                "calibration='density' needs a feature space: use measure='pixel' or "
                "'embedding' (or calibration='reference' with SSIM)"
            )
        if self.calibration is not None and self.rule in ("real_real", "retrieval"):
            raise ValueError(
                f"rule={self.rule!r} compares raw closeness between images; it takes "
                f"calibration=None (found {self.calibration!r}); calibrated scores go with "
                f"rule='calibrated' or 'top'"
            )
        if self.calibration in ("reference", "density") and not has_labels:
            raise ValueError(
                f"calibration={self.calibration!r} needs development images with labels "
                f"(fit(X, y, generated=...)) holding some not-used (0) images; "
                f"calibration='real' needs no labels"
            )
        if self.rule == "calibrated" and not has_labels:
            raise ValueError(
                "rule='calibrated' chooses its threshold on labelled development images: "
                "call fit(X, y, generated=...), or use rule='real_real', 'retrieval' or 'top'"
            )

    # ------------------------------------------------------------------------------------ fit

    def build_index(self, generated: Any) -> GeneratedIndex:
        """A :class:`GeneratedIndex` of ``generated`` with this estimator's index settings: a
        fitted index given as ``generated`` is reused (refitted only where its settings differ),
        else one is fitted or loaded from ``index_cache``. What :meth:`fit` uses; other
        estimators (:class:`~ctfp.membership.fused.FusedMembership`) share indexes through it."""
        params = {name: getattr(self, name) for name in _INDEX_PARAMS}
        if isinstance(generated, GeneratedIndex):
            require_fitted(generated, "n_samples_fit_")
            return generated.refit_with(params)
        return fit_or_load(params, generated, self.index_cache)

    def fit(
        self,
        X: Any = None,
        y: Any = None,
        *,
        generated: Any = None,
        reference: Any = None,
        groups: Any = None,
        reference_groups: Any = None,
    ) -> SimilarityMembership:
        """Take in the generated set and the labelled development images.

        Parameters
        ----------
        X : sequence or array, optional
            Development real images (paths, PNG bytes or uint8 arrays, or a uint8
            ``(N, H, W)`` stack). Used, without labels, by ``rule="real_real"`` and
            ``statistic="count"``; with labels, for calibration and ``rule="calibrated"``.
            ``None``: no development images (rules ``"real_real"``, ``"retrieval"``, ``"top"``).
        y : array-like of {0, 1}, optional
            Labels of ``X``: 1 used, 0 not used.
        generated : sequence, array or GeneratedIndex
            The generator's outputs (paths, PNG bytes or uint8 arrays), or a fitted
            :class:`~ctfp.membership.index.GeneratedIndex` of them: used as it is when its
            settings are this estimator's, else re-indexed with this estimator's settings. Not
            a per-sample parameter: under scikit-learn's cross-validation, pass an index when
            the generated set has as many images as ``X`` (see the module docstring).
        reference : sequence or array, optional
            More real images, unlabelled (for the task: the test images), that join ``X`` as
            the real images of ``calibration="real"``; ignored by the other calibrations. Under
            scikit-learn's cross-validation a ``reference`` list as long as ``X`` is sliced like
            ``X`` (pass a uint8 stack of another length, or add an image, to avoid it).
        groups, reference_groups : array-like, optional
            For ``calibration="real"``: one label per image of ``X`` / of ``reference`` saying
            which images belong together, e.g. the patient of each CT slice (any hashable
            values; ``None`` entries and images without a label are groups of their own). The
            real term then counts groups, not images: an image of the reference is scored
            without every image of its group, and its ``k_real`` neighbours are the closest
            image of each of the ``k_real`` closest other groups, so other slices of one patient
            neither crowd an image's neighbourhood nor count several times in another's
            (docs/similarity.md, "Several slices per patient"). Ignored by the other
            calibrations.
        """
        has_labels = y is not None
        if has_labels and X is None:
            raise ValueError("y: labels were given without the real images (X) they belong to")
        self._check_params(has_labels)
        if generated is None:
            raise ValueError(
                "generated: expected the generator's images (fit(X, y, generated=...)), found None"
            )
        if not isinstance(generated, GeneratedIndex):
            generated = images_given(generated, "generated", "generated image")
        if X is not None:
            X = images_given(X, "X", "development image (or X=None)")  # read twice: embeddings
        self.index_ = self.build_index(generated)
        self.classes_ = np.array([0, 1])
        self.n_generated_ = self.index_.n_samples_fit_
        self.image_size_ = self.index_.image_size_
        self.device_ = self.index_.device_
        rng = np.random.default_rng(seed_from(self.random_state))
        r = None if X is None else self.index_.transform(X)
        self.radius_ = self._fit_radius(rng, r) if self.statistic == "count" else None
        self.k_real_ = self.k if self.k_real is None else self.k_real

        # development images
        self.calibrator_: CalibratedThreshold | None = None
        self.threshold_: float | None = None
        self.dev_value_: float | None = None
        self.fraction_: float | None = None
        self.real_threshold_: float | None = None
        self.dev_scores_: np.ndarray | None = None
        self.reference_: Any = None  # features of the real reference images (calibration)
        self.reference_keys_: dict[bytes, int] = {}
        r_keys = None if X is None or self.calibration is None else self._image_keys(X, r)
        self.reference_groups_: np.ndarray | None = None
        g_x = _group_labels(groups, None if r is None else len(r), "groups", "X")
        if self.calibration == "real":
            self._fit_real_reference(r, r_keys, reference, g_x, reference_groups)
        if r is not None:
            if has_labels:
                yy = check_binary_labels(y, "y", len(r))
                if self.calibration in ("reference", "density"):
                    if not (yy == 0).any():
                        raise ValueError(
                            "calibration needs development images known not to be used (y == 0)"
                        )
                    self.reference_ = r[yy == 0]
                    self.reference_keys_ = {}
                    non_members = [k for k, v in zip(r_keys or [], yy, strict=True) if v == 0]
                    for row, key in enumerate(non_members):
                        self.reference_keys_.setdefault(key, row)
                    if self.calibration == "density":
                        self._fit_density(rng)
                if self.rule == "calibrated":
                    self.dev_scores_ = self._scores(r, loo=self._exclusions(r_keys))
                    self.calibrator_ = CalibratedThreshold(self.metric).fit(self.dev_scores_, yy)
                    self.threshold_ = self.calibrator_.threshold_
                    self.dev_value_ = self.calibrator_.dev_value_
                if self.rule == "top" and self.fraction is None:
                    self.fraction_ = float(yy.mean())
            if self.rule == "real_real":
                self.real_threshold_ = self._real_real_threshold(r)
        if self.rule == "top" and self.fraction_ is None:
            self.fraction_ = 0.5 if self.fraction is None else float(self.fraction)
        return self

    def _image_keys(self, X: Any, features: np.ndarray | None = None) -> list[bytes]:
        """One key per image, by which an image scored against a reference set that holds it is
        left out of it: a hash of its pixel or SSIM features (``features``, from
        ``index_.transform``: its grey pixels at the comparison size, one to one), or for
        embeddings of its grey pixels, decoded again (embeddings of one image can differ in the
        last bits between batches)."""
        if features is not None and self.measure != "embedding":
            rows = self.index_.identity(features)
        else:
            rows = load_images(X, size=self.image_size_, n_threads=self.index_.n_threads_)
        return [
            hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest()
            for row in rows
        ]

    def _exclusions(self, keys: list[bytes] | None) -> np.ndarray | None:
        """For each image (by key), the reference row that is the same image, or -1."""
        if keys is None or not self.reference_keys_:
            return None
        return np.array([self.reference_keys_.get(k, -1) for k in keys], dtype=np.int64)

    def _fit_real_reference(
        self,
        r: np.ndarray | None,
        r_keys: list | None,
        extra: Any,
        groups: list | None = None,
        extra_groups: Any = None,
    ) -> None:
        """The real images of ``calibration="real"``: ``X`` and ``reference``, each image once;
        with ``groups`` / ``extra_groups`` (labels of ``X`` / ``reference``) the group code of
        each (the first label an image was given; a group of its own without one)."""
        feats, keys = [], []
        labels: list = []
        if r is not None:
            feats.append(self.index_.identity(r))
            keys += r_keys or []
            labels += groups if groups is not None else [None] * len(r)
        if extra is not None:
            if isinstance(extra, (str, bytes, os.PathLike)):
                raise TypeError(
                    "reference: expected a sequence of images; wrap a single image in a list"
                )
            items = extra if isinstance(extra, np.ndarray) else list(extra)
            g = _group_labels(extra_groups, len(items), "reference_groups", "reference")
            labels += g if g is not None else [None] * len(items)
            if len(items):
                f = self.index_.transform(items)
                feats.append(self.index_.identity(f))
                keys += self._image_keys(items, f)
        elif extra_groups is not None:
            raise ValueError("reference_groups: given without reference images (reference=)")
        self.reference_keys_ = {}
        rows: list[int] = []
        row_label: list = []
        for i, key in enumerate(keys):
            if key not in self.reference_keys_:
                self.reference_keys_[key] = len(rows)
                rows.append(i)
                row_label.append(labels[i])
            elif row_label[self.reference_keys_[key]] is None:
                row_label[self.reference_keys_[key]] = labels[i]
        if groups is not None or extra_groups is not None:
            codes: dict = {}
            own = iter(range(-1, -len(row_label) - 1, -1))  # an unlabelled image: its own group
            self.reference_groups_ = np.array(
                [next(own) if v is None else codes.setdefault(v, len(codes)) for v in row_label],
                dtype=np.int64,
            )
        if len(rows) < 2:
            raise ValueError(
                f"calibration='real' needs at least two different real images to compare with "
                f"(fit's X and reference=), found {len(rows)}"
            )
        self.reference_ = np.concatenate(feats)[np.asarray(rows)]

    def _fit_radius(self, rng: np.random.Generator, real: np.ndarray | None) -> float:
        """Closeness at the ``1 - radius_quantile`` quantile of the (development real, generated)
        pairs, or without real images, of (generated, other generated) pairs."""
        if real is not None and len(real):
            sample, pick = real, np.zeros(0, np.int64)
        else:
            m = min(self.radius_sample, self.n_generated_)
            pick = np.sort(rng.choice(self.n_generated_, size=m, replace=False))
            sample = self.index_.take(pick)
        lows, highs = [], []
        for start, block in self.index_.blocks():
            lo, hi = self.index_.closeness_bounds(sample, block)
            hi = lo.copy() if hi is None else hi
            own = (pick >= start) & (pick < start + len(block))
            for bound in (lo, hi):
                bound[np.flatnonzero(own), pick[own] - start] = np.nan  # not against itself
            lows.append(lo)
            highs.append(hi)
        lo, hi = np.concatenate(lows, axis=1).ravel(), np.concatenate(highs, axis=1).ravel()
        at = np.flatnonzero(~np.isnan(lo))
        lo, hi = lo[at], hi[at]
        if lo.size == 0:
            raise ValueError(
                "statistic='count' needs at least two generated images to set its radius"
            )
        # the quantile of the exact values: the pairs that may be its order statistics are
        # recomputed exactly (the fast form's values are bounds only)
        q = 1.0 - self.radius_quantile
        n_gen = self.n_generated_
        values = refine(
            lo,
            quantile_candidates(lo, hi, q) & (hi > lo),
            lambda p: self.index_.exact_to_generated(sample, at[p] // n_gen, at[p] % n_gen),
        )
        return float(np.quantile(values, q))

    def _fit_density(self, rng: np.random.Generator) -> None:
        from sklearn.decomposition import PCA

        n_fit = min(self.n_generated_, 4096)
        pick = np.sort(rng.choice(self.n_generated_, size=n_fit, replace=False))
        sample = self.index_.take(pick)
        dims = min(self.n_components, sample.shape[0] - 1, sample.shape[1])
        if dims < 1:
            raise ValueError("calibration='density' needs at least two generated images")
        seed = int(rng.integers(2**31))
        self.pca_ = PCA(n_components=dims, whiten=True, random_state=seed).fit(sample)
        gen = np.concatenate([self.pca_.transform(block) for _, block in self.index_.blocks()])
        self.density_gen_ = gen.astype(np.float64)
        self.density_ref_ = self.pca_.transform(self.index_.identity(self.reference_)).astype(
            np.float64
        )

    # -------------------------------------------------------------------------------- scoring

    def _statistic(
        self, values: np.ndarray, counts: np.ndarray, finite: np.ndarray, k: int | None = None
    ) -> np.ndarray:
        """values: (Q, >= k) closeness sorted in descending order (-inf where none); ``k``
        defaults to ``self.k``."""
        if self.statistic == "max":
            return values[:, 0].astype(np.float64)
        if self.statistic == "mean_k":
            v = values[:, : self.k if k is None else k].astype(np.float64)
            ok = np.isfinite(v)
            return np.where(ok, v, 0.0).sum(1) / np.maximum(ok.sum(1), 1)
        return counts / np.maximum(finite, 1)

    def _centroid_closeness(
        self, q: np.ndarray, idx: np.ndarray, valid: np.ndarray, rows_of: Any, nearest: Any
    ) -> np.ndarray:
        """Closeness of each query ``q[i]`` to the mean of the rows ``idx[i, valid[i]]``
        (features from ``rows_of(indices)``), or ``nearest[i]`` (its closeness to the closest
        row) where that is higher; in blocks of queries."""
        out = np.full(len(q), -np.inf)
        step = 128
        for start in range(0, len(q), step):
            ii, vv = idx[start : start + step], valid[start : start + step]
            if not vv.any():
                continue
            feats = rows_of(ii[vv])
            rows = np.zeros((*ii.shape, *feats.shape[1:]), np.float64)
            rows[vv] = feats
            n = vv.sum(1).reshape(-1, *([1] * (rows.ndim - 2)))
            mean = rows.sum(1) / np.maximum(n, 1)
            if self.measure == "ssim":
                mean = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
            else:
                mean = mean.astype(np.float32)
            c = self.index_.closeness_pairs(q[start : start + step], mean)
            out[start : start + step] = np.where(vv.any(1), c, -np.inf)
        return np.maximum(out, np.asarray(nearest, dtype=np.float64))

    def _stat_against(
        self,
        q: np.ndarray,
        r: np.ndarray,
        exclude: np.ndarray | None,
        *,
        counts: bool = False,
        k: int | None = None,
        nearest: bool = True,
        groups: np.ndarray | None = None,
    ) -> Any:
        """The statistic of each query against a small in-memory set ``r``; ``exclude[i]`` is a
        row of ``r`` to leave out for query ``i`` (-1: none). ``counts``: ``(images within the
        radius, images compared)`` per query instead. ``k``: neighbours (default ``self.k``);
        ``nearest=False``: the centroid alone, without its closest-image clause. ``groups``: a
        group code per row of ``r``; the excluded row's whole group is left out, and the ``k``
        neighbours are the closest row of each of the ``k`` closest groups."""
        lo, hi = self.index_.closeness_bounds(q, r)
        if exclude is not None:
            rows = np.flatnonzero(exclude >= 0)
            for m in (lo, hi) if hi is not None else (lo,):
                if groups is None:
                    m[rows, exclude[rows]] = -np.inf
                else:
                    m[rows] = np.where(
                        groups[None, :] == groups[exclude[rows]][:, None], -np.inf, m[rows]
                    )
        k = min(self.k if k is None else k, lo.shape[1])
        c = lo
        if hi is not None:  # fast bounds: the pairs that decide the statistic, recomputed exactly
            need = np.zeros(lo.shape, bool)
            if self.radius_ is not None:
                need |= threshold_candidates(lo, hi, self.radius_)
            if not counts:
                need |= top_k_candidates(lo, hi, k, groups)
            c = refine(
                lo,
                need & np.isfinite(hi),
                lambda i, j: self.index_.exact_closeness(q, r, i, j),
            )
        within = (
            np.count_nonzero(c >= self.radius_, axis=1)
            if self.radius_ is not None
            else np.zeros(len(q))
        )
        finite = np.count_nonzero(np.isfinite(c), axis=1)
        if counts:
            return within, finite
        if groups is not None:
            c = _closest_per_group(c, groups)
        if self.statistic == "centroid":
            order = np.argsort(-c, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(c, order, axis=1)
            base = self.index_.identity(r)
            closest = top[:, 0] if nearest else np.full(len(q), -np.inf)
            return self._centroid_closeness(q, order, np.isfinite(top), lambda i: base[i], closest)
        values = -np.sort(-c, axis=1)[:, :k] if k else np.full((len(q), 1), -np.inf)
        return self._statistic(values, within, finite, k)

    def _log_kde(self, z: np.ndarray, data: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
        """Gaussian KDE log density (Scott's bandwidth, whitened space), leave-one-out rows."""
        n, d = data.shape
        keep = np.ones((len(z), n), bool)
        if exclude is not None:
            rows = np.flatnonzero(exclude >= 0)
            keep[rows, exclude[rows]] = False
        n_eff = keep.sum(1)
        h = float(n) ** (-1.0 / (d + 4))
        sq = sq_dist_block(z, np.einsum("ij,ij->i", z, z), data)
        logk = np.where(keep, -sq / (2 * h * h), -np.inf)
        mx = logk.max(1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logk - mx).sum(1))
        return lse - np.log(np.maximum(n_eff, 1)) - d * np.log(h * np.sqrt(2 * np.pi))

    def _scores(self, q: np.ndarray, loo: np.ndarray | None = None) -> np.ndarray:
        if self.calibration == "density":
            z = self.pca_.transform(self.index_.identity(q)).astype(np.float64)
            return self._log_kde(z, self.density_gen_, None) - self._log_kde(
                z, self.density_ref_, loo
            )
        top = self.index_.search(q, self.k, self.radius_)
        values, idx = top.result()
        if self.statistic == "centroid":
            valid = np.isfinite(values) & (idx >= 0)
            s = self._centroid_closeness(q, idx, valid, self.index_.take, values[:, 0])
        else:
            s = self._statistic(values, top.counts, top.finite)
        if self.calibration == "reference":
            s = s - self._stat_against(q, self.reference_, loo)
        elif self.calibration == "real" and self.statistic == "count":
            # Monte-Carlo density ratio: the share of generated images within the radius over
            # the share of real images within it (each count + 1: no log of zero)
            n_in, n_all = self._stat_against(
                q, self.reference_, loo, counts=True, groups=self.reference_groups_
            )
            s = np.log((top.counts + 1.0) / (top.finite + 1.0)) - np.log(
                (n_in + 1.0) / (n_all + 1.0)
            )
        elif self.calibration == "real":
            # k-NN density ratio: log of (distance to the real images / to the generated set)
            # the real term: k_real neighbours and, for the centroid, no closest-image clause.
            # Other slices of the same patient are near-copies among the real images; the
            # clause would let one of them set d_real (docs/similarity.md, slices per patient)
            d_real = self._distance(
                self._stat_against(
                    q,
                    self.reference_,
                    loo,
                    k=self.k_real_,
                    nearest=False,
                    groups=self.reference_groups_,
                )
            )
            s = np.log(d_real) - np.log(self._distance(s))
        return s

    def _distance(self, closeness: np.ndarray) -> np.ndarray:
        """Closeness statistic -> a positive distance (1 - SSIM; minus the pixel / embedding
        closeness), floored so that an exact copy gives a large finite score."""
        d = 1.0 - closeness if self.measure == "ssim" else -closeness
        return np.maximum(d, 1e-9)

    def _real_real_threshold(self, r: np.ndarray) -> float:
        if len(r) < 2:
            raise ValueError("rule='real_real' needs at least two real images")
        s = self._stat_against(r, r, np.arange(len(r)))
        return float(np.quantile(s, self.real_quantile))

    def score_samples(self, X: Any) -> np.ndarray:
        """Membership score of each real image (higher = more likely used).

        The (calibrated) statistic, except for ``rule="retrieval"``: the number of generated
        images whose closest image in ``X`` it is.
        """
        require_fitted(self, "index_")
        X = images_given(X, "X", "image to score")  # read twice for embeddings' keys
        q = self.index_.transform(X)
        if self.rule == "retrieval":
            return self.index_.search(q, 1, exhaustive=True).votes(len(q))
        return self._scores(q, loo=self._query_exclusions(X, q))

    def _query_exclusions(self, X: Any, q: np.ndarray) -> np.ndarray | None:
        if self.calibration is None or not self.reference_keys_:
            return None
        return self._exclusions(self._image_keys(X, q))

    def _decide(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(decision values, predictions) for ``X``: one pass over the generated set."""
        require_fitted(self, "index_")
        self._require_rule()
        X = images_given(X, "X", "image to score")  # read twice for embeddings' keys
        q = self.index_.transform(X)
        if self.rule == "retrieval":
            votes = self.index_.search(q, 1, exhaustive=True).votes(len(q))
            return votes - (self.min_votes - 0.5), (votes >= self.min_votes).astype(np.int64)
        s = self._scores(q, loo=self._query_exclusions(X, q))
        if self.rule == "calibrated":
            assert self.threshold_ is not None
            return s - self.threshold_, at_or_above(s, self.threshold_)
        if self.rule == "real_real":
            t = self.real_threshold_
            if t is None:  # no development images at fit: real-real similarities of X itself
                t = self._real_real_threshold(q)
            return s - t, at_or_above(s, t)
        assert self.fraction_ is not None
        pred = TopFraction(self.fraction_).predict(s).astype(np.int64)
        if pred.all() or not pred.any():
            cut = s.min() - 1.0 if pred.all() else s.max() + 1.0
        else:
            cut = (s[pred == 1].min() + s[pred == 0].max()) / 2.0
        return s - cut, pred

    def decision_function(self, X: Any) -> np.ndarray:
        """Score minus the decision threshold: values at or above 0 are predicted used (for
        ``rule="top"``, the threshold is midway between the last used and first unused score;
        for ``"retrieval"``, ``votes - min_votes + 0.5``)."""
        return self._decide(X)[0]

    def describe(self) -> dict[str, Any]:
        """What made the scores and the decisions, for result tables: the method's settings and
        only the decision quantities its rule uses (none for ``rule=None``)."""
        require_fitted(self, "index_")
        out: dict[str, Any] = {
            "measure": self.measure,
            "statistic": self.statistic,
            "calibration": self.calibration,
            "rule": self.rule,
            "k": self.k if self.statistic in ("mean_k", "centroid") else None,
            "radius": self.radius_,
            "n_generated": self.n_generated_,
            "image_size": tuple(int(v) for v in self.image_size_),
            "weights": self.index_.weights_,
            "algorithm": self.index_.algorithm_,
        }
        if self.index_.ssim_candidates is not None:
            out["ssim_candidates"] = self.index_.ssim_candidates
        if self.query_transforms is not None:
            out["query_transforms"] = len(self.index_.transforms_)
        if self.calibration is not None:
            out["reference_images"] = len(self.reference_)
        if self.calibration == "real" and self.statistic in ("mean_k", "centroid"):
            out["k_real"] = self.k_real_
        if self.rule == "calibrated":
            out.update(metric=self.metric, threshold=self.threshold_)
            out["development_value"] = self.dev_value_
        elif self.rule == "real_real":
            out.update(real_quantile=self.real_quantile, real_threshold=self.real_threshold_)
        elif self.rule == "retrieval":
            out["min_votes"] = self.min_votes
        elif self.rule == "top":
            out["fraction"] = self.fraction_
        return out


# --------------------------------------------------------------------------------------------------
# evaluation


def evaluate_split(
    estimator: SimilarityMembership,
    generated: Any,
    X_dev: Any,
    y_dev: Any,
    X_test: Any,
    y_test: Any,
) -> dict[str, Any]:
    """Fit on the development images, predict the test images, and score the predictions.

    The test labels are used for the metrics only, after the predictions are made: they reach
    neither the fit nor the threshold (``tests/test_similarity.py`` checks that permuting them
    changes no prediction).

    Returns
    -------
    dict
        ``metrics`` (:func:`ctfp.membership.metrics.evaluate`: accuracy, precision, recall, F1,
        kappa, ROC-AUC of the scores), ``predictions``, ``scores`` (test decision values) and
        ``describe`` (the estimator's settings and fitted threshold).
    """
    from ctfp.membership.metrics import evaluate

    estimator.fit(X_dev, y_dev, generated=generated)
    scores, pred = estimator._decide(X_test)
    y_true = check_binary_labels(y_test, "y_test", len(pred))
    return {
        "metrics": evaluate(y_true, pred, scores),
        "predictions": pred,
        "scores": scores,
        "describe": estimator.describe(),
    }
