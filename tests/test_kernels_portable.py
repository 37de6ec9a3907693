"""The portable and AVX2+FMA builds of the warp and SSIM kernels give identical outputs.

The core picks its kernel build once per process (``CTFP_CPU`` overrides the detection when it is
first read), so each build runs in its own subprocess on the same inputs, and the outputs are
compared bit for bit. On a CPU without AVX2+FMA only the portable build can run, and the
comparison is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Runs in a fresh interpreter: computes transform / load_batch / ssim_matrix outputs on fixed
# inputs and saves them, with the kernel build the core reports, to argv[1].
_WORKER = r"""
import sys
import numpy as np
import ctfp
from ctfp import _core

rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:83, 0:61]
base = ((yy * 3 + xx * 5) % 256).astype(np.uint8)
noisy = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
images = [base, noisy, np.ascontiguousarray(noisy.T), rng.integers(0, 256, (40, 40), np.uint8)]
out = {"kernel": np.array(_core._cpu_features())}
k = 0
for fill in ("nearest", "constant", "reflect"):
    for interpolation in ("bilinear", "nearest"):
        for img in images:
            out[f"transform_{k}"] = ctfp.transform(
                img, flip=k % 2 == 1, angle_deg=7.0 * k - 40.0, zoom=(0.8 + 0.03 * k, 1.1),
                shift=(0.04, -0.07), size=(57 + k, 45), fill=fill, interpolation=interpolation,
                fill_value=123.0,
            )
            k += 1
        aug = ctfp.Augment(max_angle_deg=35.0, zoom=(0.7, 1.4), shift_frac=0.2, fill=fill,
                           fill_value=17.0, interpolation=interpolation)
        for dtype, normalize in (("uint8", None), ("float32", "imagenet")):
            for n_threads in (1, 2):
                out[f"batch_{fill}_{interpolation}_{dtype}_{n_threads}"] = ctfp.load_batch(
                    images * 3, size=(50, 37), augment=aug, seed=4, epoch=1, dtype=dtype,
                    normalize=normalize, n_threads=n_threads,
                )
stack = np.stack([np.ascontiguousarray(im[:40, :40]) for im in images])
out["ssim"] = _core.ssim_matrix(stack, stack[::-1].copy(), n_threads=2)
big = rng.integers(0, 256, (5, 67, 93), np.uint8)
out["ssim_big"] = _core.ssim_matrix(big, big[:3], n_threads=1)
np.savez(sys.argv[1], **out)
"""


def _run(tmp_path: Path, cpu: str) -> dict[str, np.ndarray]:
    path = tmp_path / f"{cpu}.npz"
    env = {**os.environ, "CTFP_CPU": cpu, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _auto_kernel() -> str:
    env = {**os.environ, "CTFP_CPU": "auto"}
    code = "from ctfp import _core; print(_core._cpu_features())"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_portable_and_avx2_outputs_are_identical(tmp_path):
    if _auto_kernel() != "avx2":
        pytest.skip("this CPU has no AVX2+FMA: only the portable kernels can run")
    portable = _run(tmp_path, "portable")
    simd = _run(tmp_path, "avx2")
    assert str(portable.pop("kernel")) == "portable"
    assert str(simd.pop("kernel")) == "avx2"
    assert portable.keys() == simd.keys()
    assert len(portable) > 40
    for key in portable:
        a, b = portable[key], simd[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        # bit for bit, float32 batches and SSIM values included
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=key)


def test_portable_build_is_forced_by_environment(tmp_path):
    code = "from ctfp import _core; print(_core._cpu_features())"
    env = {**os.environ, "CTFP_CPU": "portable"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "portable"


def test_unknown_cpu_setting_is_a_clear_error():
    code = (
        "import numpy as np, ctfp\n"
        "try:\n"
        "    ctfp.load_batch([np.zeros((8, 8), np.uint8)], size=8)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "CTFP_CPU": "sse9"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    msg = proc.stdout.strip()
    assert "CTFP_CPU" in msg and "'sse9'" in msg and "'portable'" in msg, msg
