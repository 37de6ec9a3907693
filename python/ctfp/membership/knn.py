"""Euclidean k-nearest-neighbour search: fast candidates, exact values.

One blocked L2 search serves the generated-set index (:mod:`ctfp.membership.index`), GAN-Leaks
(:mod:`ctfp.membership.baselines`) and the realistic benchmark's memorisation AUC
(:mod:`ctfp.imageclef.realistic`).

**Fast candidates, exact values.** Distances between all pairs come from the matrix-product form
``|q|^2 + |r|^2 - 2 q.r`` (one BLAS product per block of references, FAISS's ``IndexFlatL2``, or
torch on a GPU). Its rounding error depends on the BLAS kernel the CPU picks, and cancellation
makes it large next to small distances (an exact copy can come out at ``-0.01`` instead of 0).
So the fast form only *finds candidates*: with the error bound of :func:`sq_dist_error_bound`
(summed over chunks of :data:`CHUNK_FEATURES` features, :func:`chunked_error_bound`),
every pair whose fast distance could, within the bound, be among the ``k`` nearest (or on the
other side of a radius, or a reference's closest query) is kept, and those candidates alone are
recomputed exactly by direct differences in float64 (:func:`pair_sq_dists`), then ranked. Every
value returned is the exact one: an exact copy is at distance exactly 0 on any CPU and with any
BLAS, and rankings do not depend on the kernel.

- :class:`TopK`: the running search over blocks of closeness bounds (the ``k`` best per query,
  counts within a radius, each reference's closest query), finished by an exact recomputation of
  its candidates.
- :func:`nearest_neighbours`: that search on plain feature arrays.
- :class:`FeatureSearch`: the same behind one interface with FAISS's indexes (``faiss-flat``
  fetches more candidates until the bound proves the exact top ``k`` among them; ``faiss-ivf`` /
  ``faiss-hnsw`` stay approximate in *which* neighbours they find, the distances they return are
  exact).
- :func:`top_k_candidates`, :func:`threshold_candidates`, :func:`quantile_candidates` and
  :func:`refine`: the same candidate rules for a statistic computed from a whole matrix.

This module imports numpy only (FAISS when asked for).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ctfp._util import Interval, validate_params

__all__ = [
    "AUTO_FAISS_MIN",
    "SEARCHES",
    "SEARCH_DEFAULTS",
    "FeatureSearch",
    "TopK",
    "as_features",
    "faiss_available",
    "nearest_neighbours",
    "pair_sq_dists",
    "quantile_candidates",
    "refine",
    "resolve_search",
    "sq_dist_block",
    "CHUNK_FEATURES",
    "chunked_error_bound",
    "sq_dist_bounds",
    "sq_dist_error_bound",
    "threshold_candidates",
    "top_k_candidates",
    "top_of",
]

SEARCHES = ("auto", "brute", "faiss-flat", "faiss-ivf", "faiss-hnsw")
#: ``algorithm="auto"`` uses FAISS's exact ``IndexFlatL2`` from this many generated images on (when
#: faiss is installed), the streamed BLAS search below (docs/similarity.md, "Scale": measured).
AUTO_FAISS_MIN = 50_000
#: ``algorithm_params`` keys (FAISS's approximate indexes) and their defaults.
SEARCH_DEFAULTS = {"n_lists": None, "n_probe": 16, "hnsw_m": 32, "ef_search": 128}

#: Unit roundoff of float32 arithmetic (half its machine epsilon).
U_FLOAT32 = 2.0**-24
#: Exact pairs recomputed at a time are capped to about this many float64 values (4 MiB: the
#: working set stays in cache).
_EXACT_CHUNK = 1 << 19

# Pair-index arrays: (query rows, reference columns), int64.
Pairs = tuple[np.ndarray, np.ndarray]
#: ``exact(rows, cols)`` (or ``exact(positions)`` for 1-D bounds): exact values, float64 ``(P,)``.
Exact = Callable[..., np.ndarray]


def as_features(x: Any, name: str) -> np.ndarray:
    """``x`` as a 2-D ``(n_samples, n_features)`` numeric array (not copied)."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n_samples, n_features) array, found {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name}: expected numbers, found dtype {a.dtype}")
    return a


# --------------------------------------------------------------------------------------------------
# the fast form, its error bound, and the exact form


def sq_dist_block(q: np.ndarray, q_sq: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``|q - r|^2`` for all pairs of rows (``q_sq``: the rows' squared norms of ``q``), by one
    matrix product; clipped at 0. Fast but rounded (see :func:`sq_dist_error_bound`): use it to
    find candidates, not as a result."""
    d = q_sq[:, None] + np.einsum("ij,ij->i", r, r)[None, :]
    d -= 2.0 * (q @ r.T)
    np.maximum(d, 0.0, out=d)
    return d


def sq_dist_error_bound(n_features: int, unit_roundoff: float = U_FLOAT32) -> float:
    """``c`` such that the fast squared distance is within ``c (|q|^2 + |r|^2)`` of the exact one,
    where ``|q|^2``, ``|r|^2`` are the squared norms *as computed* in the same arithmetic.

    Derivation (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., section 3.1):
    with unit roundoff ``u`` and ``D = n_features``, a dot product of ``D`` terms summed in *any*
    order (BLAS blocking, several accumulators, FMA, which only removes roundings) is within
    ``g |x|.|y|`` of the exact one, ``g = D u / (1 - D u)``. So, writing ``N = |q|^2 + |r|^2``
    (exact norms):

    - the computed norms are within ``g |q|^2`` and ``g |r|^2``, their sum ``a`` (one more
      rounding) within ``(g + u (1 + g)) N`` of ``N``;
    - the computed ``2 q.r`` (doubling is exact) is within ``2 g |q| |r| <= g N``;
    - the difference ``s = a - 2 q.r`` is rounded once more: ``u |s| <= u (2 + 3 g) N``, as
      ``|s| <= 2 N (1 + g) + g N``; clipping at 0 only moves it towards the exact value (>= 0).

    In all ``|fast - exact| <= (2 g + 3 u + O(u g)) N``; we take ``(2 g + 4 u) N``. In terms of
    the computed norms ``N' >= (1 - g) N``, hence the factor ``1 / (1 - g)``. For float32 at
    64x64 pixels (``D = 4096``) ``c`` is about ``5e-4``; at 256x256 about ``8e-3``: a worst
    case, far above the usual error, so a few more candidates than ``k`` are recomputed.
    """
    du = n_features * unit_roundoff
    if du >= 0.5:
        return float("inf")
    g = du / (1.0 - du)
    return (2.0 * g + 4.0 * unit_roundoff) / (1.0 - g)


#: Features summed by one matrix product of the fast form: the error bound grows with the length
#: of the sums (:func:`sq_dist_error_bound`), so longer rows are split into chunks of this many
#: features whose products are added up (the same work; a bound 64 times tighter at 256x256).
CHUNK_FEATURES = 1024


def _gamma(n: int, u: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative error bound of a sum of ``n`` terms."""
    return float("inf") if n * u >= 0.5 else n * u / (1.0 - n * u)


def chunked_error_bound(
    n_features: int,
    chunk: int = CHUNK_FEATURES,
    unit_roundoff: float = U_FLOAT32,
    accumulate_roundoff: float = 2.0**-53,
) -> float:
    """``c`` such that ``|fast - exact| <= c (|q|^2 + |r|^2)`` (norms as summed chunk by chunk)
    when the fast form is computed over chunks of at most ``chunk`` features
    (:func:`sq_dist_error_bound` for each, in arithmetic of unit roundoff ``unit_roundoff``) and
    the ``m`` chunk results are added in arithmetic of unit roundoff ``accumulate_roundoff``
    (float64 on the CPU, float32 on a GPU). Each chunk's result is within ``2 (1 + c_chunk)``
    times its norms' sum, so adding ``m`` of them errs by at most ``gamma_m`` times that, hence
    ``c = c_chunk + 2.2 gamma_m``."""
    m = max(1, -(-n_features // chunk))
    c_chunk = sq_dist_error_bound(min(n_features, chunk), unit_roundoff)
    return c_chunk + (2.2 * _gamma(m, accumulate_roundoff) if m > 1 else 0.0)


def sq_dist_bounds(
    q: np.ndarray,
    r: np.ndarray,
    *,
    unit_roundoff: float | None = None,
    chunk: int = CHUNK_FEATURES,
) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(lower, upper)`` around the exact ``|q - r|^2`` of every pair of rows: the fast
    form ``|q|^2 + |r|^2 - 2 q.r`` (one BLAS product per chunk of ``chunk`` features, added in
    float64) with its proved error bound (:func:`chunked_error_bound`; ``unit_roundoff``
    defaults to that of the arrays' dtype)."""
    if unit_roundoff is None:
        unit_roundoff = float(np.finfo(np.result_type(q, r)).eps) / 2.0
    acc = np.zeros((len(q), len(r)), np.float64)
    nq, nr = np.zeros(len(q), np.float64), np.zeros(len(r), np.float64)
    for s in range(0, q.shape[1], chunk):
        qc = np.ascontiguousarray(q[:, s : s + chunk])
        rc = np.ascontiguousarray(r[:, s : s + chunk])
        q_sq, r_sq = np.einsum("ij,ij->i", qc, qc), np.einsum("ij,ij->i", rc, rc)
        d = q_sq[:, None] + r_sq[None, :]
        d -= 2.0 * (qc @ rc.T)
        acc += d
        nq += q_sq
        nr += r_sq
    c = chunked_error_bound(q.shape[1], chunk, unit_roundoff)
    return bounds_from(acc, c * (np.abs(nq)[:, None] + np.abs(nr)[None, :]))


def bounds_from(d: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(max(d - err, 0), d + err)``: the interval that holds the exact value."""
    d = d.astype(np.float64)
    return np.maximum(d - err, 0.0), d + err


def pair_sq_dists(a: np.ndarray, b: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Exact ``|a[rows[p]] - b[cols[p]]|^2`` for each pair ``p``, float64 ``(P,)``: direct
    differences in float64 (no matrix product, so no cancellation and no dependence on the
    BLAS). ``a`` may carry a transform axis, ``(Q, T, D)``: then the smallest over ``T``."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    out = np.empty(len(rows), np.float64)
    per_pair = int(np.prod(a.shape[1:])) or 1
    step = max(1, _EXACT_CHUNK // per_pair)
    for s in range(0, len(rows), step):
        diff = a[rows[s : s + step]].astype(np.float64)
        rb = b[cols[s : s + step]]
        diff -= rb[:, None, :] if diff.ndim == 3 else rb  # float32 -> float64: exact
        sq = np.einsum("...j,...j->...", diff, diff)
        out[s : s + step] = sq.min(axis=1) if sq.ndim == 2 else sq
    return out


# --------------------------------------------------------------------------------------------------
# candidate rules on bounds


def top_k_candidates(
    lower: np.ndarray, upper: np.ndarray, k: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """Mask of the entries of closeness bounds ``(Q, R)`` that may be among the ``k`` largest
    exact values of their row: those whose upper bound reaches the ``k``-th largest lower bound
    (any other is strictly below ``k`` entries whatever the exact values). With ``groups`` (one
    code per column), of the ``k`` largest groups, a group being its closest entry: the threshold
    is the ``k``-th largest of the groups' largest lower bounds."""
    nq, nr = lower.shape
    if k <= 0 or nr == 0:
        return np.zeros((nq, nr), bool)
    if groups is None:
        if k >= nr:
            return np.ones((nq, nr), bool)
        t = np.partition(lower, nr - k, axis=1)[:, nr - k]
    else:
        order = np.argsort(groups, kind="stable")
        g = np.asarray(groups)[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        n_groups = len(starts)
        if k >= n_groups:
            return np.ones((nq, nr), bool)
        best = np.maximum.reduceat(lower[:, order], starts, axis=1)  # each group's best lower
        t = np.partition(best, n_groups - k, axis=1)[:, n_groups - k]
    return upper >= t[:, None]


def threshold_candidates(lower: np.ndarray, upper: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the entries whose comparison ``exact >= threshold`` the bounds do not decide."""
    return (upper >= threshold) & (lower < threshold)


def quantile_candidates(lower: np.ndarray, upper: np.ndarray, q: float) -> np.ndarray:
    """Mask of the entries (1-D bounds) that may be the order statistics ``np.quantile(exact, q)``
    interpolates between (at ``floor`` and ``ceil`` of ``q (n - 1)``): those not surely below the
    lower one nor surely above the upper one. With the others kept at their lower bound and these
    recomputed (:func:`refine`), ``np.quantile`` of the result is the exact quantile."""
    n = len(lower)
    if n == 0:
        return np.zeros(0, bool)
    pos = q * (n - 1)
    i0, i1 = int(np.floor(pos)), min(int(np.ceil(pos)), n - 1)
    lo_t = np.partition(lower, i0)[i0]  # the i0-th exact value is at least this
    hi_t = np.partition(upper, i1)[i1]  # the i1-th exact value is at most this
    return (upper >= lo_t) & (lower <= hi_t)


def refine(lower: np.ndarray, need: np.ndarray, exact: Exact) -> np.ndarray:
    """``lower`` with the entries of ``need`` replaced by their exact values (``exact(rows,
    cols)`` for 2-D bounds, ``exact(positions)`` for 1-D ones)."""
    out = np.array(lower, np.float64, copy=True)
    where = np.nonzero(need)
    if len(where[0]):
        out[where] = exact(*where)
    return out


# --------------------------------------------------------------------------------------------------
# the running search


class TopK:
    """A running search over blocks of closeness (higher = nearer): the ``k`` largest values per
    query with their reference indices, the count of values at or above ``radius``, the number of
    finite values, and each reference's closest query (for retrieval votes).

    Blocks come with bounds (``add(lower, offset, upper)``) when their values are the fast form's:
    the search keeps every candidate the bounds cannot rule out, and :meth:`finish` recomputes
    those exactly (an ``exact(rows, cols)`` callback) and ranks by the exact values. Blocks of
    exact values (``upper=None``, e.g. SSIM) need no recomputation. ``votes=False``: no
    retrieval votes are kept (:meth:`votes` refuses), which saves their recomputation.
    """

    def __init__(
        self,
        n_queries: int,
        k: int,
        radius: float | None = None,
        dtype: Any = np.float32,
        *,
        votes: bool = True,
    ) -> None:
        self.k = k
        self.track_votes = votes
        self.radius = radius
        self.dtype = dtype
        self.n_queries = n_queries
        self.counts = np.zeros(n_queries, np.int64)
        self.finite = np.zeros(n_queries, np.int64)
        self._lo = np.full((n_queries, 0), -np.inf)
        self._hi = np.full((n_queries, 0), -np.inf)
        self._idx = np.zeros((n_queries, 0), np.int64)
        self._bounded = False
        self._band: list[Pairs] = []  # pairs near the radius, recomputed by finish
        self._best: list[np.ndarray] = []  # per block: each reference's closest query (-1: open)
        self._open: list[Pairs] = []  # candidate (query, reference) pairs of the open ones
        self._done = False

    @classmethod
    def from_arrays(cls, values: np.ndarray, index: np.ndarray) -> TopK:
        """A finished search from its top-k values and indices (a FAISS or pre-filtered
        search, values exact): no counts within a radius and no votes, which need every pair."""
        top = cls(len(values), values.shape[1], None, values.dtype)
        top.values, top.index = values, index.astype(np.int64, copy=False)
        top.finite = np.count_nonzero(np.isfinite(values), axis=1)
        top._done = True
        return top

    def add(self, block: np.ndarray, offset: int, upper: np.ndarray | None = None) -> None:
        """Take in the closeness ``(Q, B)`` of every query to references ``offset ...``: exact
        values, or with ``upper`` a lower and an upper bound of them."""
        lo = np.asarray(block, np.float64)
        hi = lo if upper is None else np.asarray(upper, np.float64)
        nq, nb = lo.shape
        if nb == 0:
            return
        self._bounded |= upper is not None
        if self.radius is not None:
            self.counts += np.count_nonzero(lo >= self.radius, axis=1)
            if upper is not None:
                r, c = np.nonzero(threshold_candidates(lo, hi, self.radius))
                self._band.append((r, c + offset))
        self.finite += np.count_nonzero(np.isfinite(lo), axis=1)
        if nq and self.track_votes:
            best = np.argmax(lo, axis=0)
            if upper is not None:
                reach = hi >= lo[best, np.arange(nb)][None, :]
                open_ = np.count_nonzero(reach, axis=0) > 1
                if open_.any():
                    r, c = np.nonzero(reach & open_[None, :])
                    self._open.append((r, c + offset))
                    best[open_] = -1
            self._best.append(best)
        lo, hi = np.concatenate([self._lo, lo], axis=1), np.concatenate([self._hi, hi], axis=1)
        idx = np.concatenate(
            [self._idx, np.broadcast_to(np.arange(offset, offset + nb), (nq, nb))], axis=1
        )
        n = lo.shape[1]
        if n > self.k and nq and not self._bounded:  # exact values: the k best (lower index)
            key_idx = np.where(idx >= 0, idx, np.iinfo(np.int64).max)
            order = np.lexsort((key_idx, -lo), axis=1)[:, : self.k]
            lo = hi = np.take_along_axis(lo, order, 1)
            idx = np.take_along_axis(idx, order, 1)
        elif n > self.k and nq:
            keep = top_k_candidates(lo, hi, self.k) & (idx >= 0)
            width = int(np.count_nonzero(keep, axis=1).max())
            order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
            kept = np.take_along_axis(keep, order, 1)
            lo = np.where(kept, np.take_along_axis(lo, order, 1), -np.inf)
            hi = np.where(kept, np.take_along_axis(hi, order, 1), -np.inf)
            idx = np.where(kept, np.take_along_axis(idx, order, 1), -1)
        self._lo, self._hi, self._idx = lo, hi, idx

    def finish(self, exact: Exact | None = None) -> TopK:
        """Recompute the candidates exactly (``exact(rows, cols)``, float64 closeness of query
        rows to reference indices; needed when bounds were added) and rank by the exact values
        (ties: lower reference index first)."""
        if self._done:
            return self
        nq = self.n_queries
        valid = self._idx >= 0
        cand_r, cand_c = np.nonzero(valid)
        band = _cat(self._band)
        open_ = _cat(self._open)
        if self._bounded:
            if exact is None:
                raise ValueError("TopK.finish: bounds were added; pass exact(rows, cols)")
            rows = np.concatenate([cand_r, band[0], open_[0]])
            cols = np.concatenate([self._idx[cand_r, cand_c], band[1], open_[1]])
            vals = np.asarray(exact(rows, cols), np.float64)
            n1, n2 = len(cand_r), len(cand_r) + len(band[0])
            ex = np.full(self._idx.shape, -np.inf)
            ex[cand_r, cand_c] = vals[:n1]
            if self.radius is not None and len(band[0]):
                hit = vals[n1:n2] >= self.radius
                self.counts += np.bincount(band[0][hit], minlength=nq)
            best = np.concatenate(self._best) if self._best else np.zeros(0, np.int64)
            if len(open_[0]):
                ov = vals[n2:]
                order = np.lexsort((open_[0], -ov, open_[1]))  # per reference: best, lowest row
                cols_sorted = open_[1][order]
                first = np.ones(len(order), bool)
                first[1:] = cols_sorted[1:] != cols_sorted[:-1]
                best[cols_sorted[first]] = open_[0][order][first]
            self._best = [best]
        else:
            ex = np.where(valid, self._lo, -np.inf)
        key_idx = np.where(valid, self._idx, np.iinfo(np.int64).max)
        order = np.lexsort((key_idx, -ex), axis=1)[:, : self.k] if ex.size else key_idx[:, :0]
        self.values = np.take_along_axis(ex, order, 1).astype(self.dtype)
        self.index = np.take_along_axis(self._idx, order, 1)
        self._done = True
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Values sorted in descending order (ties: lower reference index first), with indices."""
        if not self._done:
            self.finish()
        return self.values, self.index

    def votes(self, n_queries: int) -> np.ndarray:
        """How many references have each query as their closest one (float64 ``(Q,)``)."""
        if not self.track_votes:
            raise ValueError("TopK(votes=False) kept no votes")
        if not self._done:
            self.finish()
        best = np.concatenate(self._best) if self._best else np.zeros(0, np.int64)
        return np.bincount(best, minlength=n_queries).astype(np.float64)


def _cat(pairs: list[Pairs]) -> Pairs:
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return (
        np.concatenate([p[0] for p in pairs]).astype(np.int64),
        np.concatenate([p[1] for p in pairs]).astype(np.int64),
    )


def top_of(values: np.ndarray, index: np.ndarray, k: int) -> TopK:
    """The ``k`` largest values per row (ties: lower index first; missing ones, index -1, last)."""
    missing = index < 0
    key_idx = np.where(missing, np.iinfo(np.int64).max, index)
    order = np.lexsort((key_idx, -values), axis=1)[:, :k]
    return TopK.from_arrays(
        np.take_along_axis(values, order, 1), np.take_along_axis(index, order, 1)
    )


def nearest_neighbours(
    queries: Any, references: Any, k: int = 1, *, block_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest references of each query in Euclidean distance, streamed in blocks.

    Candidates come from ``|q|^2 + |r|^2 - 2 q.r`` (one BLAS matrix product per block of
    ``block_size`` references) with its error bound; only a running set of candidates per query
    is kept, so memory is ``O(Q (k + block_size))`` whatever the number of references. The
    distances returned are recomputed exactly (float64 differences), so a query that equals a
    reference is at distance exactly 0, whatever the BLAS.

    Returns
    -------
    distances : ``(Q, k)`` array
        Ascending along each row; float64 for float64 inputs, else float32.
    indices : ``(Q, k)`` int64 indices into ``references``
    """
    q = as_features(queries, "queries")
    r = as_features(references, "references")
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
    dtype: type[np.floating[Any]] = (
        np.float64 if q.dtype == np.float64 or r.dtype == np.float64 else np.float32
    )
    qf = q.astype(dtype, copy=False)
    top = TopK(len(q), int(k), dtype=np.float64, votes=False)
    for start in range(0, len(r), block_size):
        block = r[start : start + block_size].astype(dtype, copy=False)
        lo, hi = sq_dist_bounds(qf, block)
        top.add(-hi, start, -lo)  # closeness = minus the squared distance
    top.finish(lambda rows, cols: -pair_sq_dists(q, r, rows, cols))
    values, index = top.result()
    return np.sqrt(0.0 - values).astype(dtype), index


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
    """Whether FAISS (``faiss-cpu``) can be imported."""
    return importlib.util.find_spec("faiss") is not None


def resolve_search(search: str, n: int) -> str:
    """``algorithm`` for ``n`` references: ``"auto"`` resolved (FAISS's exact index from
    :data:`AUTO_FAISS_MIN` on when faiss is installed); a FAISS one checked to be importable."""
    if search == "auto":
        return "faiss-flat" if n >= AUTO_FAISS_MIN and faiss_available() else "brute"
    if search.startswith("faiss"):
        _faiss()
    return search


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


class FeatureSearch:
    """Euclidean k-nearest neighbours among fixed reference rows.

    ``method``: ``"brute"`` (:func:`nearest_neighbours`: BLAS blocks with a running top-k,
    exact), ``"faiss-flat"`` (FAISS ``IndexFlatL2``, exact: more candidates are fetched until
    the error bound proves the exact top ``k`` among them), ``"faiss-ivf"`` (``IndexIVFFlat``:
    ``n_lists`` k-means cells, default ``sqrt(N)``, trained on up to ``64 n_lists`` rows drawn with
    ``random_state``; ``n_probe`` cells searched per query) or ``"faiss-hnsw"``
    (``IndexHNSWFlat``: ``hnsw_m`` links per node, ``ef_search`` candidates per query). The
    approximate ones may miss true neighbours (recall < 1, measured in docs/similarity.md); they
    return index -1 and distance inf where they find fewer than ``k``. Every distance returned is
    recomputed exactly from the references (kept beside the FAISS index).
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
        r = as_features(references, "references")
        self.n_samples_fit_, self.n_features_ = r.shape
        self._r = r  # the exact distances are recomputed from these
        if self.method == "brute":
            return self
        faiss = _faiss()
        r = np.ascontiguousarray(r, dtype=np.float32)
        d = r.shape[1]
        self._r_sq_max = float(np.einsum("ij,ij->i", r, r).max()) if len(r) else 0.0
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
        """Exact distances ``(Q, k)`` in ascending order (float32; ``inf`` where none) and int64
        indices (``-1`` where none; ties: lower index first)."""
        q = as_features(queries, "queries")
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
        q32 = np.ascontiguousarray(q, dtype=np.float32)
        if self.method != "faiss-flat":  # approximate: which neighbours is theirs, values exact
            with _faiss_threads(faiss, self.n_threads):
                _, idx = self._index.search(q32, k)
            return self._exact_sorted(q, idx.astype(np.int64), k)
        # exact: fetch more until the k-th exact distance is below what any unfetched row can
        # reach (its fast distance minus the bound: sq_dist_error_bound)
        c = sq_dist_error_bound(self.n_features_)
        slack = c * (np.einsum("ij,ij->i", q32, q32).astype(np.float64) + self._r_sq_max)
        dist = np.full((len(q), k), np.inf, np.float32)
        out_idx = np.full((len(q), k), -1, np.int64)
        todo = np.arange(len(q))
        fetch = min(self.n_samples_fit_, max(2 * k, k + 16))
        while len(todo):
            with _faiss_threads(faiss, self.n_threads):
                d2, idx = self._index.search(q32[todo], fetch)
            dd, ii = self._exact_sorted(q[todo], idx.astype(np.int64), k)
            if fetch >= self.n_samples_fit_:
                proved = np.ones(len(todo), bool)
            else:
                kth = dd[:, -1].astype(np.float64) ** 2
                proved = d2[:, -1].astype(np.float64) - slack[todo] > kth * (1 + 1e-6)
            dist[todo[proved]], out_idx[todo[proved]] = dd[proved], ii[proved]
            todo = todo[~proved]
            fetch = min(self.n_samples_fit_, 4 * fetch)
        return dist, out_idx

    def _exact_sorted(
        self, q: np.ndarray, idx: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of the candidate indices ``idx`` (``-1``: none) by exact distance."""
        ok = idx >= 0
        rows, cols = np.nonzero(ok)
        d2 = np.full(idx.shape, np.inf)
        d2[rows, cols] = pair_sq_dists(q, self._r, rows, idx[rows, cols])
        top = top_of(-d2, idx, k)
        values, index = top.result()
        return np.sqrt(-values.astype(np.float64)).astype(np.float32), index
