"""load_batch / BatchStream with one augmentation config per source (the paper's training set)."""

from __future__ import annotations

import numpy as np
import pytest

import ctfp
from ctfp.data import synthetic

FLIP_ONLY = ctfp.Augment(hflip=1.0, max_angle_deg=0.0, zoom=(1.0, 1.0), shift_frac=0.0)


@pytest.fixture(scope="module")
def images():
    return list(synthetic.make_slices(6, n_patients=2, size=64, seed=3))


def test_each_source_gets_its_own_config(images):
    aug = ctfp.Augment()
    configs = [None, FLIP_ONLY, aug, None, aug, ctfp.Augment(hflip=0.0)]
    ids = [10, 11, 12, 13, 14, 15]
    out = ctfp.load_batch(images, augment=configs, sample_ids=ids, size=48, seed=5, epoch=2)
    for k, (img, cfg) in enumerate(zip(images, configs, strict=True)):
        one = ctfp.load_batch([img], augment=cfg, sample_ids=[ids[k]], size=48, seed=5, epoch=2)
        np.testing.assert_array_equal(out[k], one[0])
    # without a resize, the flip-only config is an exact mirror (with one, within rounding)
    flipped = ctfp.load_batch([images[1]], augment=[FLIP_ONLY], size=64)
    np.testing.assert_array_equal(flipped[0, 0], images[1][:, ::-1])
    plain = ctfp.load_batch([images[1]], size=48).astype(int)
    assert np.abs(out[1] - plain[0][:, :, ::-1]).max() <= 1


def test_same_result_for_any_thread_count(images):
    configs = [ctfp.Augment(), None] * 3
    ref = ctfp.load_batch(images, augment=configs, size=40, n_threads=1, dtype="float32")
    for n in (2, 8):
        got = ctfp.load_batch(images, augment=configs, size=40, n_threads=n, dtype="float32")
        np.testing.assert_array_equal(got, ref)


def test_stream_slices_configs_with_the_sources(images):
    configs = [None, ctfp.Augment(), FLIP_ONLY, ctfp.Augment(), None, FLIP_ONLY]
    stream = ctfp.BatchStream(images, augment=configs, batch_size=4, size=32, seed=9)
    for batch_idx, batch in zip(stream._batches(0), stream.iter_epoch(0), strict=True):
        want = ctfp.load_batch(
            [images[i] for i in batch_idx],
            augment=[configs[i] for i in batch_idx],
            sample_ids=batch_idx,
            size=32,
            seed=9,
            epoch=0,
        )
        np.testing.assert_array_equal(batch, want)


def test_errors_name_the_problem(images):
    with pytest.raises(ValueError, match="expected 6 configs"):
        ctfp.load_batch(images, augment=[None] * 5)
    with pytest.raises(TypeError, match=r"augment\[1\]"):
        ctfp.load_batch(images[:2], augment=[None, "flip"])
    with pytest.raises(TypeError, match="augment: expected"):
        ctfp.load_batch(images[:2], augment="flip")
    with pytest.raises(ValueError, match="one per source"):
        ctfp.BatchStream(images, augment=[None])
