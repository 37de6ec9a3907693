"""VCMI's SSIM baseline: its real-real threshold computed on half the pairs gives the same
value, and its decision follows ctfp's one tie rule, like the CLI's ``base-vcmi``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ctfp.data.synthetic import make_slices
from ctfp.membership.baselines import VCMISSIM, threshold_max
from ctfp.membership.decision import SingleClassRuleWarning, at_or_above, make_rule
from ctfp.membership.index import ssim_matrix


def _full_matrix_max(real: np.ndarray) -> float:
    s = ssim_matrix(real, real).astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    return float(s.max())


@pytest.fixture(scope="module")
def slices() -> np.ndarray:
    return make_slices(40, n_patients=20, size=32, seed=5)


@pytest.mark.parametrize("n", [2, 3, 16, 17, 33, 40])
def test_threshold_max_is_the_full_matrix_maximum(slices, n):
    real = slices[:n].copy()
    assert threshold_max(real) == _full_matrix_max(real)
    assert threshold_max(real, n_threads=1) == threshold_max(real)


def test_ssim_kernel_is_symmetric_bit_for_bit(slices):
    """What lets threshold_max compute half the pairs."""
    s = ssim_matrix(slices, slices)
    np.testing.assert_array_equal(s, s.T)


def test_threshold_max_finds_a_pair_in_any_band(slices):
    real = slices[:35].copy()
    real[33] = real[2]  # an exact pair across bands: SSIM 1
    assert threshold_max(real) == 1.0
    with pytest.raises(ValueError, match="at least two real images, found 1"):
        threshold_max(real[:1])


def test_vcmi_ties_are_used_like_the_clis_decision(slices):
    """An image whose best SSIM equals threshold_max is used: VCMISSIM.predict and the CLI's
    base-vcmi decision (``threshold:0`` on decision_function) agree on every image."""
    real = slices[:12].copy()
    real[11] = real[10]  # two identical real images: threshold_max is 1.0
    gen = np.concatenate([real[:3], slices[20:30]])  # exact copies of images 0-2
    est = VCMISSIM().fit(real, generated=gen)
    assert est.threshold_ == 1.0
    queries = real[:6]
    d = est.decision_function(queries)
    assert (d[:3] == 0).all() and (d[3:] < 0).all()  # ties at the threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassRuleWarning)
        pred = est.predict(queries)
    assert pred.tolist() == [1, 1, 1, 0, 0, 0]
    cli = make_rule("threshold:0").predict(d)
    assert cli.tolist() == pred.tolist()
    assert at_or_above(est.score_samples(queries), est.threshold_).tolist() == pred.tolist()
