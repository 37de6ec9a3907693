"""Decode + augment + assemble throughput, 64 CT-like PNGs 256 -> 224, ctfp against its peers.

Each group times ctfp and the same pipeline written with OpenCV (plain, and one warpAffine that
folds the resize in), Pillow and torchvision.transforms.v2, on the same files in the same run.
Before anything is timed, ``test_outputs_agree`` checks that every peer computes the same batch
as ctfp for the same parameters. ``benches/report.py`` turns the saved JSON into the README table
of median ratios (peer / ctfp).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import SEED, SIZE, interior_mask
from peers import PEERS

import ctfp

# Peers may differ from ctfp only by their own rounding and interpolation: OpenCV quantises
# sample positions to 1/32 pixel and its weights to 1/2^15 (differences up to a few grey
# levels at sharp edges); the plain OpenCV and torchvision pipelines resize and rotate in two
# samplings, not one, which blurs a little more; Pillow's fixed-point sampler ends half a grey
# level lower on average. The thresholds are in grey levels, on pixels away from the borders.
TOLERANCE = {  # (mean absolute difference, 99th percentile)
    "opencv_single_warp": (0.25, 2.0),
    "opencv_plain": (2.0, 12.0),
    "pillow": (0.6, 1.0),
    "torchvision_v2": (2.0, 12.0),
}


def _ctfp(pngs, augment, dtype, n_threads, cache=None):
    normalize = "imagenet" if dtype == "float32" else None
    return ctfp.load_batch(
        pngs,
        size=SIZE,
        augment=augment,
        seed=SEED,
        dtype=dtype,
        normalize=normalize,
        n_threads=n_threads,
        cache=cache,
    )


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_outputs_agree(peer, pngs, augment, params):
    # torchvision only scales isotropically: compare on draws with one zoom for both axes.
    iso = ctfp.Augment(zoom_per_axis=False) if peer == "torchvision_v2" else augment
    ps = [iso.sample_params(k, seed=SEED) for k in range(len(pngs))]
    ours = _ctfp(pngs, iso, "uint8", None)[:, 0].astype(np.int16)
    theirs = PEERS[peer](pngs, ps, SIZE, "uint8")
    assert theirs.shape == (len(pngs), 3, *SIZE) and theirs.dtype == np.uint8
    assert (theirs[:, 0] == theirs[:, 2]).all()
    diff = np.abs(theirs[:, 0].astype(np.int16) - ours)[interior_mask(ps)]
    mean, p99 = diff.mean(), np.percentile(diff, 99)
    tol_mean, tol_p99 = TOLERANCE[peer]
    assert mean <= tol_mean and p99 <= tol_p99, f"{peer}: mean {mean:.3f}, p99 {p99:.1f}"
    # float32: the same batch, normalised per channel with ImageNet's mean and std.
    f = PEERS[peer](pngs[:4], ps[:4], SIZE, "float32")
    g = _ctfp(pngs[:4], iso, "float32", None)
    assert f.shape == g.shape and f.dtype == g.dtype == np.float32
    assert np.abs(f - g)[:, :, interior_mask(ps[:4])[0]].mean() < 4 * tol_mean / 255 / 0.224 + 1e-3


def _threads(n):
    cv2.setNumThreads(n)
    torch.set_num_threads(n)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
class TestPipeline:
    @pytest.mark.parametrize("threads", ["1", "all"])
    def test_ctfp(self, benchmark, dtype, threads, pngs, augment, all_threads):
        n = 1 if threads == "1" else all_threads
        benchmark.group = f"load+augment {dtype}"
        benchmark.extra_info.update(threads=n, library="ctfp")
        benchmark(_ctfp, pngs, augment, dtype, n)

    @pytest.mark.parametrize("threads", ["1", "all"])
    def test_ctfp_cached(self, benchmark, dtype, threads, pngs, augment, all_threads):
        """Second epoch onward: decoded images come from ctfp.ImageCache, only augmentation runs."""
        n = 1 if threads == "1" else all_threads
        cache = ctfp.ImageCache()
        _ctfp(pngs, augment, dtype, n, cache)  # epoch 0 fills the cache
        benchmark.group = f"load+augment {dtype}"
        benchmark.extra_info.update(threads=n, library="ctfp", cache=True)
        benchmark(_ctfp, pngs, augment, dtype, n, cache)
        assert cache.stats()["hits"] >= len(pngs)

    @pytest.mark.parametrize("peer", sorted(PEERS))
    def test_peer(self, benchmark, dtype, peer, pngs, params):
        _threads(1)
        benchmark.group = f"load+augment {dtype}"
        benchmark.extra_info.update(threads=1, library=peer)
        benchmark(PEERS[peer], pngs, params, SIZE, dtype)
