"""The paper's 50x expansion of real images, built lazily through the Rust pipeline."""

from __future__ import annotations

import numpy as np
import pytest

import ctfp
from ctfp import synthetic
from ctfp.data.expansion import FLIP_ONLY, paper_training_set


@pytest.fixture(scope="module")
def data():
    imgs = synthetic.make_slices(5, n_patients=2, size=48, seed=1)
    imgs[0, :, :12] = 255  # make real image 0 clearly brighter on its left
    return list(imgs[:3]), list(imgs[3:])  # 3 real, 2 generated


def test_counts_labels_and_layout(data):
    real, gen = data
    ts = paper_training_set(real, gen)
    assert len(ts) == 3 * 50 + 2
    assert (ts.labels[:150] == 0).all() and (ts.labels[150:] == 1).all()
    assert np.bincount(ts.origin[:150]).tolist() == [50, 50, 50]
    assert (ts.copy[:50] == np.arange(50)).all()
    first = ts.augment[:50]
    assert first[0] is None and first[1] is FLIP_ONLY
    assert all(a.hflip == 0.0 for a in first[2:26]) and all(a.hflip == 1.0 for a in first[26:])
    assert ts.augment[150:] == [None, None]  # generated images are never augmented


def test_two_hundred_real_match_ten_thousand_generated():
    ts = paper_training_set(list(range(200)), list(range(10_000)))
    assert (ts.labels == 0).sum() == (ts.labels == 1).sum() == 10_000


def test_batches_follow_the_copy_kinds(data):
    real, gen = data
    ts = paper_training_set(real, gen)
    out = ctfp.load_batch(ts.sources, augment=ts.augment, size=48, seed=4).astype(int)
    r0 = real[0].astype(int)
    np.testing.assert_array_equal(out[0, 0], r0)  # original
    np.testing.assert_array_equal(out[1, 0], r0[:, ::-1])  # its flip
    np.testing.assert_array_equal(out[150, 0], gen[0])  # generated: untouched
    # augmented copies differ from the original and from each other; flipped ones are flipped
    assert all(np.abs(out[k, 0] - r0).mean() > 0.5 for k in range(2, 50))
    assert len({out[k, 0].tobytes() for k in range(50)}) == 50
    left, right = r0[:, :24].mean(), r0[:, 24:].mean()
    if abs(left - right) > 3:  # asymmetric image: flipped copies swap the halves
        for k in range(26, 50):
            assert np.sign(out[k, 0][:, :24].mean() - out[k, 0][:, 24:].mean()) == np.sign(
                right - left
            )


def test_deterministic_and_epoch_dependent(data):
    real, gen = data
    ts = paper_training_set(real, gen)
    a = ctfp.load_batch(ts.sources, augment=ts.augment, size=32, seed=2, epoch=0)
    b = ctfp.load_batch(ts.sources, augment=ts.augment, size=32, seed=2, epoch=0, n_threads=1)
    c = ctfp.load_batch(ts.sources, augment=ts.augment, size=32, seed=2, epoch=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[2:50], c[2:50])
    np.testing.assert_array_equal(a[:2], c[:2])  # original and flip do not change with the epoch


def test_bad_copies():
    with pytest.raises(ValueError, match="even number"):
        paper_training_set([1], [2], copies=3)
