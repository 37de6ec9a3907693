"""Exact where it matters, on any CPU: distances and SSIM of copies under several BLAS kernels.

Neighbour search finds candidates by ``|a|^2 + |b|^2 - 2 a.b`` (a BLAS product whose rounding
depends on the kernel OpenBLAS picks for the CPU) and recomputes their values exactly. Each kernel
runs in its own subprocess (``OPENBLAS_CORETYPE`` is read once, when OpenBLAS loads); Nehalem
(SSE) and Prescott (SSE3) run on every x86-64 CPU. The data provoke cancellation: bright,
low-contrast images at full 256x256 beside dark ones (so the generated set's mean image, which
pixel features are centred on, is far from each image), with exact copies among the generated
images and flipped copies for the query transforms.

Checked: an exact copy is at exactly 0 pixel distance (and exactly 1.0 SSIM) through every path
(``kneighbors`` brute and FAISS, the statistics of ``SimilarityMembership``, GAN-Leaks,
``nearest_neighbours``, ``FeatureSearch``, the realistic benchmark's ``nearest_distances``); every
result is bit-for-bit the same under every kernel; and the values agree with a float64 reference
computed from the uint8 images as integers, within the bound the feature rounding allows (below).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ctfp

KERNELS = ("default", "Nehalem", "Prescott")
SIZE = 256
N_GEN = 24
COPIES = np.array([1, 5, 14, 22])  # generated images the queries copy (bright ones and dark ones)

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="OPENBLAS_CORETYPE names x86-64 kernels",
)


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(generated, copies, flipped copies): uint8 256x256, half bright (~215) and half dark
    (~40), each with a low-contrast texture of +-6 grey levels."""
    rng = np.random.default_rng(18)
    level = np.where(np.arange(N_GEN) % 2 == 0, 40, 215)
    gen = level[:, None, None] + rng.integers(-6, 7, (N_GEN, SIZE, SIZE))
    gen = np.clip(gen, 0, 255).astype(np.uint8)
    copies = gen[COPIES].copy()
    return gen, copies, np.ascontiguousarray(copies[:, :, ::-1])


WORKER = r"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_exact_distances import make_data
from ctfp.membership.index import (
    FeatureSearch, GeneratedIndex, nearest_neighbours, ssim_matrix,
)
from ctfp.membership.similarity import SimilarityMembership
from ctfp.membership.baselines import GANLeaks
from ctfp.imageclef.realistic import nearest_distances

gen, copies, flipped = make_data()
queries = np.concatenate([copies, gen[[0, 3]] // 2 + 100])  # copies, then two new images
out = {}
pix = GeneratedIndex(measure="pixel", n_neighbors=3, algorithm="brute").fit(gen)
out["pixel_v"], out["pixel_i"] = pix.kneighbors(queries)
try:
    fl = GeneratedIndex(measure="pixel", n_neighbors=3, algorithm="faiss-flat").fit(gen)
    out["faiss_v"], out["faiss_i"] = fl.kneighbors(queries)
    fs = FeatureSearch("faiss-flat").fit(gen.reshape(len(gen), -1).astype(np.float32))
    out["fs_faiss_d"], out["fs_faiss_i"] = fs.search(queries.reshape(len(queries), -1), 2)
except ImportError:
    pass
robust = GeneratedIndex(measure="pixel", n_neighbors=2, query_transforms="flip").fit(gen)
out["flip_v"], out["flip_i"] = robust.kneighbors(flipped)
ssim = GeneratedIndex(measure="ssim", n_neighbors=2, query_transforms="flip").fit(gen)
out["ssim_flip_v"], out["ssim_flip_i"] = ssim.kneighbors(flipped)
out["ssim_self"] = ssim_matrix(copies, copies)
for stat in ("max", "mean_k", "centroid", "count"):
    est = SimilarityMembership(
        measure="pixel", image_size=None, statistic=stat, k=3, calibration=None, rule=None,
        radius_quantile=0.05,
    ).fit(generated=gen)
    out["stat_" + stat] = est.score_samples(queries)
    if stat == "count":
        out["radius"] = np.array([est.radius_])
real = SimilarityMembership(
    measure="pixel", image_size=None, statistic="centroid", k=3, k_real=2, calibration="real",
    rule=None,
).fit(queries[:3], generated=gen, reference=queries[3:])
out["stat_real"] = real.score_samples(queries)
votes = SimilarityMembership(
    measure="pixel", image_size=None, statistic="max", calibration=None, rule="retrieval",
).fit(generated=gen)
out["votes"] = votes.score_samples(queries)
out["ganleaks"] = GANLeaks(image_size=SIZE, rule=None).fit(generated=gen).score_samples(queries)
flat_q = queries.reshape(len(queries), -1).astype(np.float32)
flat_g = gen.reshape(len(gen), -1).astype(np.float32)
out["nn_d"], out["nn_i"] = nearest_neighbours(flat_q, flat_g, 2)
out["realistic"] = nearest_distances(queries, gen, size=SIZE)
np.savez(sys.argv[1], **{k: np.asarray(v) for k, v in out.items()})
""".replace("SIZE", str(SIZE))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """Every kernel's results, each computed in its own process."""
    tmp = tmp_path_factory.mktemp("kernels")
    package = str(Path(ctfp.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parent)
    out = {}
    for kernel in KERNELS:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([package, tests])}
        env.pop("OPENBLAS_CORETYPE", None)
        if kernel != "default":
            env["OPENBLAS_CORETYPE"] = kernel
        path = tmp / f"{kernel}.npz"
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, str(path), tests],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{kernel}: {proc.stderr[-3000:]}"
        with np.load(path) as z:
            out[kernel] = {k: z[k] for k in z.files}
    return out


def rms_reference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(sum of squared differences, sum of absolute differences) of two uint8 images, exact."""
    d = a.astype(np.int64) - b.astype(np.int64)
    return float((d * d).sum()), float(np.abs(d).sum())


def closeness_tolerance(s: float, abs_sum: float, n: int) -> float:
    """How far ``D c^2`` (ctfp's exact pixel closeness ``c``, squared, times ``D`` pixels) may lie
    from the integer sum of squares ``s``. ctfp subtracts in float64 the float32 features
    ``fl(a - m)`` and ``fl(b - m)`` (``m`` the mean image): each is within half an ulp of
    ``|x| < 256``, ``2^-17``, so a difference is within ``e = 2^-16`` of the integer ``a - b``;
    the sum of squares moves by at most ``2 e sum|a - b| + D e^2``; float64 summation of ``D``
    terms adds at most ``D 2^-53`` relative, and the square root and our squaring a few ulps."""
    e = 2.0**-16
    return 2 * e * abs_sum + n * e * e + (n + 8) * 2.0**-53 * (s + 1.0) * 2


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_copies_score_exactly_zero_and_one(runs, kernel):
    r = runs[kernel]
    n_copies = len(COPIES)
    for key in ("pixel_v", "flip_v") + (("faiss_v",) if "faiss_v" in r else ()):
        assert (r[key][:n_copies, 0] == 0.0).all(), (kernel, key, r[key][:n_copies, 0])
    for key in ("pixel_i", "flip_i") + (("faiss_i",) if "faiss_i" in r else ()):
        np.testing.assert_array_equal(r[key][:n_copies, 0], COPIES)
    assert (r["ssim_flip_v"][:, 0] == 1.0).all(), (kernel, r["ssim_flip_v"][:, 0])
    assert (np.diagonal(r["ssim_self"]) == 1.0).all()
    for key in ("stat_max", "ganleaks"):
        assert (r[key][:n_copies] == 0.0).all(), (kernel, key, r[key][:n_copies])
    for key in ("nn_d", "realistic") + (("fs_faiss_d",) if "fs_faiss_d" in r else ()):
        d = r[key][:n_copies, 0] if r[key].ndim == 2 else r[key][:n_copies]
        assert (d == 0.0).all(), (kernel, key, d)
    # the centroid statistic keeps the closest image where it is closer than the mean: a copy
    assert (r["stat_centroid"][:n_copies] == 0.0).all()


def test_results_are_the_same_under_every_blas_kernel(runs):
    base = runs[KERNELS[0]]
    for kernel in KERNELS[1:]:
        other = runs[kernel]
        assert other.keys() == base.keys()
        for key in base:
            np.testing.assert_array_equal(other[key], base[key], err_msg=f"{kernel}: {key}")


def test_values_agree_with_an_integer_reference(runs):
    gen, copies, flipped = make_data()
    queries = np.concatenate([copies, gen[[0, 3]] // 2 + 100])
    n = SIZE * SIZE
    r = runs[KERNELS[0]]
    for key_v, key_i, q, transforms in (
        ("pixel_v", "pixel_i", queries, False),
        ("flip_v", "flip_i", flipped, True),
    ):
        for row in range(len(q)):
            # the reference ranking: every generated image by its exact integer distance
            exact = []
            for j in range(len(gen)):
                cands = [rms_reference(q[row], gen[j])]
                if transforms:
                    cands.append(rms_reference(np.ascontiguousarray(q[row][:, ::-1]), gen[j]))
                exact.append(min(cands))
            order = sorted(range(len(gen)), key=lambda j: (exact[j][0], j))
            k = r[key_i].shape[1]
            np.testing.assert_array_equal(r[key_i][row], order[:k], err_msg=key_i)
            for c, j in zip(r[key_v][row], order[:k], strict=True):
                s, abs_sum = exact[j]
                assert abs(n * float(c) ** 2 - s) <= closeness_tolerance(s, abs_sum, n) + (
                    # values come back as float32: half an ulp of c, squared and scaled
                    n * 2 * abs(float(c)) * np.spacing(np.float32(abs(c)))
                ), (key_v, row, j, c, s)
    # GAN-Leaks and nearest_neighbours: uint8 values as float32, no centring: exact integers
    for row in range(len(queries)):
        s = min(rms_reference(queries[row], g)[0] for g in gen)
        assert r["ganleaks"][row] == pytest.approx(-np.sqrt(s), rel=2e-7, abs=0)
        assert r["realistic"][row] == np.sqrt(s)  # float64 throughout: exactly rounded


needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs faiss")


@needs_faiss
def test_faiss_flat_equals_the_streamed_search(runs):
    r = runs[KERNELS[0]]
    np.testing.assert_array_equal(r["faiss_i"], r["pixel_i"])
    np.testing.assert_array_equal(r["faiss_v"], r["pixel_v"])
    np.testing.assert_array_equal(r["fs_faiss_i"], r["nn_i"])
    np.testing.assert_array_equal(r["fs_faiss_d"], r["nn_d"])


def test_ssim_matrix_imports_no_scikit_learn():
    code = (
        "import sys, numpy as np, ctfp\n"
        "a = np.full((2, 16, 16), 200, np.uint8)\n"
        "assert (ctfp.ssim_matrix(a, a) == 1.0).all()\n"
        "assert 'sklearn' not in sys.modules, 'ctfp.ssim_matrix imported scikit-learn'\n"
    )
    package = str(Path(ctfp.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": package}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------
# the candidate rules, in-process


def test_fast_form_stays_within_its_error_bound():
    from ctfp.membership.knn import pair_sq_dists, sq_dist_bounds

    rng = np.random.default_rng(3)
    for scale, offset in ((1.0, 0.0), (6.0, 200.0), (1e-3, 1.0)):
        q = (offset + scale * rng.standard_normal((20, 4096))).astype(np.float32)
        r = np.concatenate([q[:5], (offset + scale * rng.standard_normal((30, 4096)))])
        r = r.astype(np.float32)
        lo, hi = sq_dist_bounds(q, r)
        rows, cols = np.divmod(np.arange(len(q) * len(r)), len(r))
        exact = pair_sq_dists(q, r, rows, cols).reshape(len(q), len(r))
        assert (lo <= exact).all() and (exact <= hi).all()
        assert (np.diagonal(exact[:5, :5]) == 0.0).all()


def test_top_k_with_bounds_equals_the_exact_ranking():
    from ctfp.membership.knn import TopK, pair_sq_dists, sq_dist_bounds

    rng = np.random.default_rng(4)
    base = rng.integers(190, 220, (6, 1024)).astype(np.float32)
    refs = np.repeat(base, 20, axis=0) + rng.integers(-2, 3, (120, 1024)).astype(np.float32)
    q = np.concatenate([refs[[3, 50]], base[:3]])
    top = TopK(len(q), 4, radius=-(40.0**2))
    for start in range(0, len(refs), 32):
        block = refs[start : start + 32]
        lo, hi = sq_dist_bounds(q, block, chunk=256)
        top.add(-hi, start, -lo)
    top.finish(lambda i, j: -pair_sq_dists(q, refs, i, j))
    rows, cols = np.divmod(np.arange(len(q) * len(refs)), len(refs))
    exact = -pair_sq_dists(q, refs, rows, cols).reshape(len(q), len(refs))
    order = np.lexsort((np.broadcast_to(np.arange(len(refs)), exact.shape), -exact), axis=1)
    values, index = top.result()
    np.testing.assert_array_equal(index, order[:, :4])
    np.testing.assert_array_equal(values, np.take_along_axis(exact, order[:, :4], 1))
    np.testing.assert_array_equal(top.counts, (exact >= -(40.0**2)).sum(1))
    best = np.argmax(exact, axis=0)
    np.testing.assert_array_equal(top.votes(len(q)), np.bincount(best, minlength=len(q)))


def test_quantile_and_group_candidates_give_the_exact_statistic():
    from ctfp.membership.knn import quantile_candidates, refine, top_k_candidates

    rng = np.random.default_rng(5)
    exact = rng.standard_normal((7, 50))
    err = rng.uniform(0, 0.3, exact.shape)
    lo, hi = exact - err * rng.uniform(0, 1, exact.shape), exact + err
    for q in (0.0, 0.01, 0.37, 0.5, 1.0):
        flat = refine(
            lo.ravel(), quantile_candidates(lo.ravel(), hi.ravel(), q), lambda p: exact.ravel()[p]
        )
        assert np.quantile(flat, q) == np.quantile(exact.ravel(), q)
    groups = rng.integers(0, 12, 50)
    for k in (1, 3, 12):
        c = refine(lo, top_k_candidates(lo, hi, k, groups), lambda i, j: exact[i, j])
        for row in range(len(c)):
            best = {g: exact[row, groups == g].max() for g in np.unique(groups)}
            want = sorted(best.values(), reverse=True)[:k]
            got = sorted(
                ({g: c[row, groups == g].max() for g in np.unique(groups)}).values(), reverse=True
            )[:k]
            assert got == want


@needs_faiss
@pytest.mark.parametrize("method", ["faiss-flat", "faiss-ivf", "faiss-hnsw"])
def test_feature_search_returns_exact_distances(method):
    from ctfp.membership.knn import FeatureSearch

    rng = np.random.default_rng(6)
    r = rng.integers(180, 230, (300, 2048)).astype(np.float32)
    q = np.concatenate([r[:4], rng.integers(180, 230, (4, 2048)).astype(np.float32)])
    dist, idx = FeatureSearch(method, n_lists=4, n_probe=4).fit(r).search(q, 3)
    for row in range(len(q)):
        ok = idx[row] >= 0
        want = np.sqrt(((q[row].astype(np.float64) - r[idx[row, ok]]) ** 2).sum(1))
        np.testing.assert_array_equal(dist[row, ok], want.astype(np.float32))
        assert (np.diff(dist[row, ok]) >= 0).all()
    assert (dist[:4, 0] == 0.0).all() and (idx[:4, 0] == np.arange(4)).all()
    if method == "faiss-flat":
        full = np.sqrt(((q[:, None].astype(np.float64) - r[None]) ** 2).sum(-1))
        order = np.argsort(full, axis=1, kind="stable")[:, :3]
        np.testing.assert_array_equal(idx, order)
