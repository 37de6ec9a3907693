"""benches/gpu_check.sh's CPU smoke of its similarity and generator stages: the script a GPU
session runs once must not rot while no GPU is lent (GPU_CHECK_ALLOW_CPU=1: the local ctfp,
tiny sizes, the CPU; the numbers mean nothing, the plumbing does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_similarity_and_gans_stages_run_on_the_cpu(tmp_path):
    pytest.importorskip("torch")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    out = tmp_path / "gpu"
    env = {**os.environ, "GPU_CHECK_ALLOW_CPU": "1", "STAGES": "similarity,gans",
           "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run(
        ["bash", str(ROOT / "benches" / "gpu_check.sh")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    for stage in ("versions", "similarity", "gans"):
        assert f"{stage}" in summary
    assert "FAILED" not in summary and "tests" not in summary.split("\n", 1)[1]
    bench = json.loads((out / "bench_similarity_gpu.json").read_text())
    assert [r["preset"] for r in bench["rows"]] == ["sim-pixel", "sim-ssim"]
    assert all(len(r["cpu_s"]) == 2 for r in bench["rows"])
    gans = sorted(p.name for p in (out / "attribution_gans").glob("gan_*.pt"))
    assert len(gans) == 9  # five 2025 subsets, four 2024 models
