"""VCMI's SSIM baseline (``ctfp run --method base-vcmi``,
:class:`ctfp.membership.baselines.VCMISSIM`) before and after, on the same 256x256 CT-like
images, in one run.

    pytest benches/bench_vcmi.py --benchmark-json=out/bench_vcmi.json
    python benches/bench_vcmi.py out/bench_vcmi.json     # prints the ratios of medians

Where base-vcmi's time goes (cProfile of a fit, the runner's leak test and a test split; 100
development and 100 test images, 1,000 generated at 256x256): 96% in the SSIM kernel
(``ctfp._core.ssim_matrix``), of it 23% for the real-real ``threshold_max`` (one per fit: the
runner's, and one per fold of the leak test and its control) and the rest for the exhaustive
scores, every real image against every generated image. The scores are the rule (no pre-filter
can keep them exact); the threshold is not: SSIM is symmetric, so :func:`threshold_max` computes
the pairs above the diagonal only (``threshold``: against the whole matrix, as before; the same
value, checked first). ``fit`` is one threshold and the generated images read; ``scores`` the
exhaustive pass, for scale.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

N_REAL, N_GENERATED, SIZE = 64, 64, 256
GROUP = f"vcmi threshold_max {N_REAL} real {SIZE}x{SIZE}"
GROUP_FIT = f"vcmi fit {N_REAL} real + {N_GENERATED} generated {SIZE}x{SIZE}"


@pytest.fixture(scope="module")
def images():
    from ctfp import synthetic

    real = synthetic.make_slices(N_REAL, n_patients=N_REAL // 2, size=SIZE, seed=21)
    gen = synthetic.make_slices(N_GENERATED, n_patients=N_GENERATED, size=SIZE, seed=22)
    return real, gen


def before(real: np.ndarray) -> float:
    """threshold_max as VCMISSIM computed it before: the whole N x N matrix."""
    from ctfp.membership.index import ssim_matrix

    s = ssim_matrix(real, real).astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    return float(s.max())


def after(real: np.ndarray) -> float:
    from ctfp.membership.baselines import threshold_max

    return threshold_max(real)


def vcmi_before():
    """VCMISSIM with the threshold as before (the same class otherwise)."""
    from ctfp.membership.baselines import VCMISSIM

    class VCMISSIMBefore(VCMISSIM):
        def _threshold_max(self, real):
            return before(real)

    return VCMISSIMBefore()


def test_outputs_agree(images):
    real, gen = images
    assert after(real) == before(real)
    from ctfp.membership.baselines import VCMISSIM

    a = VCMISSIM().fit(real, generated=gen)
    b = vcmi_before().fit(real, generated=gen)
    assert a.threshold_ == b.threshold_
    np.testing.assert_array_equal(a.decision_function(real[:4]), b.decision_function(real[:4]))


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("version", ["before", "after"])
def test_threshold(benchmark, images, version):
    benchmark.extra_info.update(version=version)
    benchmark.pedantic(
        before if version == "before" else after, args=(images[0],), rounds=3, iterations=1
    )


@pytest.mark.benchmark(group=GROUP_FIT)
@pytest.mark.parametrize("version", ["before", "after"])
def test_fit(benchmark, images, version):
    from ctfp.membership.baselines import VCMISSIM

    real, gen = images
    benchmark.extra_info.update(version=version)
    est = vcmi_before() if version == "before" else VCMISSIM()
    benchmark.pedantic(lambda: est.fit(real, generated=gen), rounds=3, iterations=1)


def report(path: str) -> str:
    """Ratios of medians (before / after) from a saved ``--benchmark-json`` file."""
    data = json.loads(open(path, encoding="utf-8").read())
    cpu = data["machine_info"].get("cpu", {}).get("brand_raw", "unknown CPU")
    lines = [f"{cpu}; ctfp release build; SSIM on every core"]
    for group in (GROUP, GROUP_FIT):
        med = {
            b["extra_info"]["version"]: b["stats"]["median"]
            for b in data["benchmarks"]
            if b["group"] == group
        }
        lines.append(
            f"{group}: before {med['before']:.2f} s, after {med['after']:.2f} s, "
            f"{med['before'] / med['after']:.2f}x"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1]))
