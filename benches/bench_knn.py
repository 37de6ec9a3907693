"""k-nearest-neighbour search over a large generated set: ctfp's streamed BLAS search
(``algorithm="brute"``) against FAISS's exact ``IndexFlatL2`` and approximate IVF / HNSW indexes,
through :class:`ctfp.membership.knn.FeatureSearch` (what :class:`GeneratedIndex` uses).

    python benches/bench_knn.py                    # 10k, 50k, 100k references; out/bench_knn.json
    python benches/bench_knn.py --sizes 10000 --threads 1
    python benches/bench_knn.py --ssim        # SSIM pre-filter; out/bench_ssim_prefilter.json

Setting: 200 queries, 4,096-d float32 features (a 64x64 image's pixels), k = 5. References are
``--data random`` (standard normal: no structure, the worst case for an approximate index, whose
k-means cells degenerate) or ``--data clustered`` (closer to image features: 500 clusters in a
64-d subspace of the 4,096 dimensions, plus isotropic noise). Two kinds of queries: ``fresh``
(new draws from the references' distribution) and ``near-copy`` (a reference plus noise of 0.1
of its norm: what a memorised training image looks like among generated ones).
Timings are the median of ``--repeats`` runs of the 200 queries (and of 5 runs of one query:
the latency of a single lookup), after one warm-up; build time
is the one-off cost of the index (FAISS: copying and, for IVF/HNSW, training/graph building).
Recall@k of an approximate index is the share of the exact k nearest (brute force) it returns;
recall@1 whether its first answer is the exact nearest (for near-copy queries: the copied one).
Exact FAISS results are checked to equal brute force (indices equal, distances within 1e-3
relative) before any timing is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def _references(rng: np.random.Generator, n: int, dim: int, kind: str) -> np.ndarray:
    if kind == "random":
        return rng.standard_normal((n, dim), dtype=np.float32)
    basis = rng.standard_normal((64, dim), dtype=np.float32) / np.float32(np.sqrt(64))
    centres = 3.0 * rng.standard_normal((500, 64), dtype=np.float32)
    z = centres[rng.integers(500, size=n)] + rng.standard_normal((n, 64), dtype=np.float32)
    ref = z @ basis
    ref += 0.1 * rng.standard_normal((n, dim), dtype=np.float32)
    return ref


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def ssim_prefilter(argv: list[str]) -> None:
    """``--ssim``: SSIM with every generated image against SSIM with the pre-filter's candidates
    only, on the demo's leaky data at 256x256 (the development real images as queries)."""
    from ctfp.data.datasets import find_datasets
    from ctfp.imageclef.leaky import LeakyDataSpec, make_leaky_dataset
    from ctfp.membership.index import GeneratedIndex, load_images

    ap = argparse.ArgumentParser()
    ap.add_argument("--ssim", action="store_true")
    ap.add_argument("--generated", type=int, default=2000)
    ap.add_argument("--candidates", type=int, nargs="+", default=[20, 100, 400])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="out/bench_ssim_prefilter.json")
    args = ap.parse_args(argv)
    root = Path("out/bench_ssim_prefilter_data")
    if not (root / "leak.json").exists():
        make_leaky_dataset(root, LeakyDataSpec(n_generated=args.generated, seed=0))
    ds = find_datasets(root / "development", require="development")[0]
    real, labels = ds.real()
    q = load_images(real)
    gen = load_images(ds.generated)
    rows = []
    full = GeneratedIndex(measure="ssim", n_neighbors=1, n_jobs=args.threads).fit(gen)
    t0 = time.perf_counter()
    v0, i0 = full.kneighbors(q)
    t_full = time.perf_counter() - t0
    rows.append({"candidates": None, "query_s": round(t_full, 3)})
    print(json.dumps(rows[-1]), flush=True)
    for c in args.candidates:
        idx = GeneratedIndex(
            measure="ssim", n_neighbors=1, ssim_candidates=c, n_jobs=args.threads
        ).fit(gen)
        t0 = time.perf_counter()
        v, i = idx.kneighbors(q)
        dt = time.perf_counter() - t0
        rows.append(
            {
                "candidates": c,
                "query_s": round(dt, 3),
                "speedup": round(t_full / dt, 1),
                "same_nearest": float(np.mean(i[:, 0] == i0[:, 0])),
                "same_nearest_used": float(np.mean((i[:, 0] == i0[:, 0])[np.array(labels) == 1])),
                "max_abs_score_diff": float(np.abs(v[:, 0] - v0[:, 0]).max()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    meta = {"queries": len(q), "generated": len(gen), "size": list(gen.shape[1:])}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    from threadpoolctl import threadpool_limits

    from ctfp.membership.knn import FeatureSearch

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hnsw-max", type=int, default=10_000, help="largest set given to HNSW")
    ap.add_argument("--data", choices=["random", "clustered"], default="random")
    ap.add_argument("--out", default="out/bench_knn.json")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        ref = _references(rng, n + args.queries, args.dim, args.data)
        ref, fresh = ref[:n], ref[n:]
        queries = {
            "fresh": fresh,
            "near-copy": ref[rng.choice(n, args.queries, replace=False)]
            + 0.1
            * np.linalg.norm(ref[0])
            / np.sqrt(args.dim)
            * rng.standard_normal((args.queries, args.dim), dtype=np.float32),
        }
        for threads in args.threads:
            with threadpool_limits(limits=threads):
                truth = {}
                brute = FeatureSearch("brute", n_threads=threads).fit(ref)
                for kind, q in queries.items():
                    truth[kind] = brute.search(q, args.k)
                methods = ["brute", "faiss-flat", "faiss-ivf"]
                if n <= args.hnsw_max:
                    methods.append("faiss-hnsw")
                for method in methods:
                    t0 = time.perf_counter()
                    fs = brute if method == "brute" else FeatureSearch(method, n_threads=threads)
                    if method != "brute":
                        fs.fit(ref)
                    build = time.perf_counter() - t0
                    q = queries["fresh"]
                    seconds = _time(lambda fs=fs, q=q: fs.search(q, args.k), args.repeats)
                    one = _time(lambda fs=fs, q=q: fs.search(q[:1], args.k), 5)
                    row = {
                        "n_references": n,
                        "dim": args.dim,
                        "queries": args.queries,
                        "k": args.k,
                        "threads": threads,
                        "method": method,
                        "data": args.data,
                        "build_s": round(build, 3),
                        "query_s": round(seconds, 4),
                        "one_query_s": round(one, 5),
                    }
                    for kind, qq in queries.items():
                        d, i = fs.search(qq, args.k)
                        row[f"recall_{kind}"] = round(_recall(i, truth[kind][1]), 4)
                        row[f"recall1_{kind}"] = round(_recall(i[:, :1], truth[kind][1][:, :1]), 4)
                        if method == "faiss-flat":
                            assert np.array_equal(i, truth[kind][1]), "faiss-flat != brute"
                            np.testing.assert_allclose(d, truth[kind][0], rtol=1e-3)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    del fs
        del ref
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "data": args.data,
    }
    try:
        import faiss

        meta["faiss"] = faiss.__version__
    except ImportError:
        pass
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    if "--ssim" in sys.argv:
        ssim_prefilter(sys.argv[1:])
    else:
        main()
