"""SSIM of every query against every reference: ctfp's Rust kernel against scikit-image's
``structural_similarity`` (its uint8 defaults) on the same 256x256 CT-like pairs, in one run.

    pytest benches/bench_ssim.py --benchmark-json=out/bench_ssim.json
    python benches/bench_ssim.py out/bench_ssim.json     # prints the ratios of medians

``test_outputs_agree`` checks first that both compute the same values (within 1e-5).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

N_QUERIES, N_REFERENCES, SIZE = 8, 32, 256
GROUP = f"ssim {N_QUERIES}x{N_REFERENCES} pairs {SIZE}x{SIZE}"


@pytest.fixture(scope="module")
def images():
    from ctfp import synthetic

    rng = np.random.default_rng(0)
    q = synthetic.make_slices(N_QUERIES, n_patients=N_QUERIES, size=SIZE, seed=11)
    r = synthetic.make_slices(N_REFERENCES, n_patients=N_REFERENCES // 2, size=SIZE, seed=12)
    # a few near-copies of the queries among the references, as a memorising generator makes
    r[:N_QUERIES] = np.clip(q + rng.normal(0, 4, q.shape), 0, 255).astype(np.uint8)
    return q, r


def skimage_matrix(q, r):
    from skimage.metrics import structural_similarity

    return np.array([[structural_similarity(a, b) for b in r] for a in q], dtype=np.float32)


def ctfp_matrix(q, r, n_threads):
    from ctfp.data.images import ssim_matrix

    return ssim_matrix(q, r, n_threads=n_threads)


def test_outputs_agree(images):
    q, r = images
    np.testing.assert_allclose(ctfp_matrix(q, r, 1), skimage_matrix(q, r), atol=1e-5, rtol=0)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("threads", ["1", "all"])
def test_ctfp(benchmark, images, threads):
    n = 1 if threads == "1" else len(os.sched_getaffinity(0))
    benchmark.extra_info.update(library="ctfp", threads=n)
    benchmark(ctfp_matrix, *images, n)


@pytest.mark.benchmark(group=GROUP)
def test_skimage(benchmark, images):
    benchmark.extra_info.update(library="skimage", threads=1)
    benchmark.pedantic(skimage_matrix, args=images, rounds=3, iterations=1)


def report(path: str) -> str:
    """Ratios of medians (skimage / ctfp) from a saved ``--benchmark-json`` file."""
    data = json.loads(open(path, encoding="utf-8").read())
    runs = [b for b in data["benchmarks"] if b["group"] == GROUP]
    med = {
        (b["extra_info"]["library"], b["extra_info"]["threads"]): b["stats"]["median"] for b in runs
    }
    peer = med[("skimage", 1)]
    pairs = N_QUERIES * N_REFERENCES
    cpu = data["machine_info"].get("cpu", {}).get("brand_raw", "unknown CPU")
    lines = [f"{GROUP}; {cpu}; ctfp release build"]
    lines.append(f"skimage structural_similarity: {peer / pairs * 1e3:.2f} ms per pair")
    for (lib, threads), t in sorted(med.items()):
        if lib == "ctfp":
            lines.append(
                f"ctfp ssim_matrix, {threads} thread(s): {t / pairs * 1e6:.0f} us per pair, "
                f"{peer / t:.0f}x skimage"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1]))
