"""Shared inputs for the benchmarks: 64 synthetic CT-like 256x256 PNGs and per-image parameters."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ctfp
from ctfp import synthetic

N_IMAGES = 64
SIZE = (224, 224)
SEED = 7


@pytest.fixture(scope="session")
def pngs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ct")
    return [str(p) for p in synthetic.write_pngs(directory, N_IMAGES, seed=SEED)]


@pytest.fixture(scope="session")
def augment():
    return ctfp.Augment()


@pytest.fixture(scope="session")
def params(augment):
    """The parameters ctfp draws for each image (seed SEED, epoch 0), handed to the peers."""
    return [augment.sample_params(k, seed=SEED) for k in range(N_IMAGES)]


@pytest.fixture(scope="session")
def all_threads():
    return len(os.sched_getaffinity(0))


def interior_mask(params, src_hw=(256, 256), out_hw=SIZE, margin=2.0):
    """Output pixels whose source position is at least ``margin`` pixels inside the source, where
    border rules (which differ between libraries) play no part."""
    from peers import fused_matrix

    masks = []
    ii, jj = np.mgrid[0 : out_hw[0], 0 : out_hw[1]]
    for p in params:
        m, off = fused_matrix(p, src_hw, out_hw)
        r = m[0, 0] * ii + m[0, 1] * jj + off[0]
        c = m[1, 0] * ii + m[1, 1] * jj + off[1]
        masks.append(
            (r >= margin)
            & (r <= src_hw[0] - 1 - margin)
            & (c >= margin)
            & (c <= src_hw[1] - 1 - margin)
        )
    return np.stack(masks)
