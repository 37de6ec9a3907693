"""Membership by similarity: SSIM equals scikit-image's, distances equal plain numpy, every
statistic, calibration and decision rule on small constructed cases with known answers, and no
test label reaches a threshold."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from skimage.metrics import structural_similarity
from sklearn.base import clone

from ctfp import synthetic
from ctfp.membership.index import GeneratedIndex
from ctfp.membership.similarity import (
    SimilarityMembership,
    evaluate_split,
    load_images,
    nearest_neighbours,
    ssim_matrix,
)

# --------------------------------------------------------------------------------------------------
# helpers


def Sim(**params):
    """SimilarityMembership with the raw statistic (the closest generated image, no calibration,
    images at their own size) unless a test asks otherwise: most tests here check one mechanism
    exactly (k_real: as k). The defaults (the benchmark's winning settings) have their own test."""
    return SimilarityMembership(
        **{"statistic": "max", "calibration": None, "image_size": None, "k_real": None, **params}
    )


def flat(values, size=8):
    """Constant images: the RMS difference of two of them is the difference of their values."""
    return np.stack([np.full((size, size), v, np.uint8) for v in values])


def skimage_matrix(q, r):
    return np.array([[structural_similarity(a, b) for b in r] for a in q])


@pytest.fixture(scope="module")
def ct64():
    return synthetic.make_slices(12, n_patients=12, size=64, seed=3)


# --------------------------------------------------------------------------------------------------
# SSIM against scikit-image


@pytest.mark.parametrize("hw", [(7, 7), (7, 12), (9, 7), (16, 16), (33, 20), (61, 97)])
def test_ssim_equals_skimage_on_random_images(hw):
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    q = rng.integers(0, 256, (3, *hw), dtype=np.uint8)
    r = rng.integers(0, 256, (4, *hw), dtype=np.uint8)
    # correlated pairs too: r[0] is q[0] plus a little noise, r[1] a darker q[1]
    r[0] = np.clip(q[0] + rng.normal(0, 10, hw), 0, 255).astype(np.uint8)
    r[1] = q[1] // 3
    got = ssim_matrix(q, r, n_threads=1)
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_allclose(got, skimage_matrix(q, r), atol=1e-5, rtol=0)


def test_ssim_equals_skimage_on_ct_like_pairs(ct64):
    rng = np.random.default_rng(0)
    noisy = np.clip(ct64[:4] + rng.normal(0, 6, ct64[:4].shape), 0, 255).astype(np.uint8)
    shifted = np.roll(ct64[4:8], 2, axis=2)
    q = ct64[:6]
    r = np.concatenate([noisy, shifted, ct64[8:]])
    np.testing.assert_allclose(ssim_matrix(q, r), skimage_matrix(q, r), atol=1e-5, rtol=0)


def test_ssim_equals_skimage_at_256_and_non_square():
    big = synthetic.make_slices(2, n_patients=2, size=256, seed=5)
    got = ssim_matrix(big[:1], big)
    np.testing.assert_allclose(got[0], skimage_matrix(big[:1], big)[0], atol=1e-5)
    assert abs(got[0, 0] - 1.0) < 1e-6
    rect = np.ascontiguousarray(big[:, 40:140, 10:250])  # 100 x 240
    np.testing.assert_allclose(ssim_matrix(rect, rect), skimage_matrix(rect, rect), atol=1e-5)


def test_ssim_constant_and_extreme_images():
    imgs = np.stack([flat([0])[0], flat([255])[0], flat([128])[0]])
    rng = np.random.default_rng(1)
    imgs = np.concatenate([imgs, (rng.integers(0, 2, (2, 8, 8)) * 255).astype(np.uint8)])
    np.testing.assert_allclose(ssim_matrix(imgs, imgs), skimage_matrix(imgs, imgs), atol=1e-5)


def test_ssim_matrix_is_the_same_for_any_thread_count(ct64):
    one = ssim_matrix(ct64, ct64[:5], n_threads=1)
    for n in (2, 3):
        np.testing.assert_array_equal(ssim_matrix(ct64, ct64[:5], n_threads=n), one)


def test_ssim_matrix_inputs(ct64, tmp_path):
    paths = synthetic.write_pngs(tmp_path, 3, size=32, seed=4)
    imgs = load_images(paths)
    np.testing.assert_array_equal(ssim_matrix(paths, list(imgs)), ssim_matrix(imgs, imgs))
    assert ssim_matrix(imgs[:0], imgs).shape == (0, 3)
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim_matrix(imgs[:, :6, :6], imgs[:, :6, :6])
    with pytest.raises(ValueError, match="queries' size 32x32"):
        ssim_matrix(imgs, ct64)
    with pytest.raises(ValueError, match="n_threads"):
        ssim_matrix(imgs, imgs, n_threads=0)


# --------------------------------------------------------------------------------------------------
# distances against plain numpy


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block_size", [1, 7, 1000])
def test_nearest_neighbours_equal_brute_force(dtype, block_size):
    rng = np.random.default_rng(2)
    q = rng.normal(size=(9, 13)).astype(dtype)
    r = rng.normal(size=(50, 13)).astype(dtype)
    d, i = nearest_neighbours(q, r, k=4, block_size=block_size)
    full = np.sqrt(((q[:, None, :].astype(np.float64) - r[None]) ** 2).sum(-1))
    want_i = np.argsort(full, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(i, want_i)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(d, np.take_along_axis(full, want_i, 1), rtol=tol, atol=tol)


def test_nearest_neighbours_checks():
    with pytest.raises(ValueError, match="at most 3"):
        nearest_neighbours(np.zeros((2, 4)), np.zeros((3, 4)), k=4)
    with pytest.raises(ValueError, match="4 features"):
        nearest_neighbours(np.zeros((2, 4)), np.zeros((3, 5)))


def test_pixel_scores_equal_numpy(ct64):
    gen, real = ct64[:8], ct64[8:]
    rng = np.random.default_rng(3)
    real = np.clip(real + rng.normal(0, 5, real.shape), 0, 255).astype(np.uint8)
    est = Sim(measure="pixel", rule="top", block_size=3).fit(generated=gen)
    g = gen.reshape(8, -1).astype(np.float64)
    x = real.reshape(len(real), -1).astype(np.float64)
    rms = np.sqrt(((x[:, None] - g[None]) ** 2).mean(-1))
    np.testing.assert_allclose(est.score_samples(real), -rms.min(1), rtol=1e-4, atol=1e-3)
    est.set_params(statistic="mean_k", k=3).fit(generated=gen)
    want = -np.sort(rms, axis=1)[:, :3].mean(1)
    np.testing.assert_allclose(est.score_samples(real), want, rtol=1e-4, atol=1e-3)


def test_pixel_scale_resizes_through_load_batch(ct64):
    import ctfp

    est = Sim(measure="pixel", image_size=16, rule="top").fit(generated=ct64[:4])
    small = ctfp.load_batch(list(ct64), size=16, layout="grey")[:, 0].astype(np.float64)
    rms = np.sqrt(((small[4:, None] - small[None, :4]) ** 2).reshape(8, 4, -1).mean(-1))
    np.testing.assert_allclose(est.score_samples(ct64[4:]), -rms.min(1), rtol=1e-4, atol=1e-3)


def test_embedding_scores_are_distances_between_normalised_features(ct64):
    pytest.importorskip("torchvision")
    est = Sim(
        measure="embedding",
        backbone="mobilenet_v2",
        weights=None,
        image_size=32,
        rule="top",
        random_state=0,
        n_jobs=1,
    ).fit(generated=ct64[:5])
    assert est.describe()["weights"] == "random"
    feats = est.index_.transform(ct64)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    d = np.sqrt(((feats[5:, None].astype(np.float64) - feats[None, :5]) ** 2).sum(-1))
    np.testing.assert_allclose(est.score_samples(ct64[5:]), -d.min(1), atol=1e-5)
    # a generated image itself is at distance 0
    assert est.score_samples(ct64[:1])[0] == pytest.approx(0.0, abs=1e-3)
    # same random_state, same network
    again = Sim(**est.get_params()).fit(generated=ct64[:5])
    np.testing.assert_allclose(again.index_.transform(ct64[:2]), feats[:2], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# statistics and calibration on constructed cases


def test_count_statistic_is_fraction_within_generated_radius():
    gen = flat([0, 10, 20, 30, 100])
    est = Sim(
        measure="pixel", statistic="count", radius_quantile=0.3, radius_sample=5, rule="top"
    ).fit(generated=gen)
    v = np.array([0, 10, 20, 30, 100.0])
    pair = -np.abs(v[:, None] - v[None])
    radius = np.quantile(pair[~np.eye(5, dtype=bool)], 0.7)
    assert est.radius_ == pytest.approx(radius, abs=1e-3)
    assert radius == pytest.approx(-17)  # generated images within 17 grey levels
    # 12 is within 17 of 0, 10, 20; 60 of none; 95 of 100
    np.testing.assert_allclose(est.score_samples(flat([12, 60, 95])), [3 / 5, 0, 1 / 5])
    # with development images, the radius comes from their closeness to the generated set
    est.set_params(radius_quantile=0.2).fit(flat([5, 50]), generated=gen)
    pairs = -np.abs(np.array([5.0, 50.0])[:, None] - v[None])
    assert est.radius_ == pytest.approx(np.quantile(pairs, 0.8), abs=1e-3)
    assert est.radius_ == pytest.approx(-13.0, abs=1e-3)
    np.testing.assert_allclose(est.score_samples(flat([12, 95])), [3 / 5, 1 / 5])


def test_reference_calibration_subtracts_closeness_to_non_members():
    gen = flat([0, 100])
    real = flat([5, 40, 90, 200])
    y = np.array([1, 0, 1, 0])
    est = Sim(measure="pixel", calibration="reference").fit(real, y, generated=gen)
    # dev scores: closeness to the generated set minus closeness to the other non-members
    # 5: -5 - (-35)=30; 40: -40 - (-160)=120 (itself left out); 90: -10 - (-50)=40;
    # 200: -100 - (-160)=60
    np.testing.assert_allclose(est.dev_scores_, [30, 120, 40, 60], atol=1e-3)
    np.testing.assert_allclose(est.score_samples(flat([45])), [-45 - (-5)], atol=1e-3)


def test_real_calibration_is_a_knn_distance_ratio_to_the_real_images():
    gen = flat([0, 100, 104])
    real = flat([5, 40, 90, 200])
    extra = flat([60, 250])
    est = Sim(measure="pixel", statistic="mean_k", k=2, calibration="real", rule="top").fit(
        real, generated=gen, reference=extra
    )  # no labels needed
    assert est.describe()["reference_images"] == 6

    def want(v, others):
        d_gen = np.sort(np.abs(np.array([0, 100, 104]) - v))[:2].mean()
        d_real = np.sort(np.abs(np.asarray(others) - v))[:2].mean()
        return np.log(d_real) - np.log(d_gen)

    pool = [5, 40, 90, 200, 60, 250]
    # an image that is in the reference set is compared with the others only
    got = est.score_samples(flat([40, 250, 45]))
    expect = [want(40, [v for v in pool if v != 40]), want(250, pool[:5]), want(45, pool)]
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    # the same image given twice joins the reference once
    twice = clone(est).fit(real, generated=gen, reference=np.concatenate([extra, real[:1]]))
    assert twice.describe()["reference_images"] == 6
    np.testing.assert_allclose(twice.score_samples(flat([45])), got[2:], rtol=1e-6)
    # k_real: the real term's own number of neighbours; the generated term keeps k
    wide = clone(est).set_params(k_real=3).fit(real, generated=gen, reference=extra)
    d_gen = np.sort(np.abs(np.array([0, 100, 104]) - 45))[:2].mean()
    d_real = np.sort(np.abs(np.asarray(pool) - 45))[:3].mean()
    np.testing.assert_allclose(
        wide.score_samples(flat([45])), [np.log(d_real) - np.log(d_gen)], rtol=1e-5
    )


def test_real_calibration_with_ssim_uses_one_minus_ssim_and_labels_only_for_the_rule(ct64):
    gen, real = ct64[:6], ct64[6:]
    y = [1, 0, 1, 0, 1, 0]
    est = Sim(measure="ssim", statistic="max", calibration="real", rule="calibrated").fit(
        real, y, generated=gen
    )
    s_gen = skimage_matrix(real, gen).max(1)
    rr = skimage_matrix(real, real)
    np.fill_diagonal(rr, -np.inf)
    want = np.log(1 - rr.max(1)) - np.log(1 - s_gen)
    np.testing.assert_allclose(est.dev_scores_, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(est.score_samples(real), want, rtol=1e-4, atol=1e-5)
    assert est.threshold_ is not None


def test_real_calibration_of_counts_is_a_ratio_of_shares_within_the_radius():
    gen = flat([0, 2, 4, 100])
    real = flat([1, 3, 60, 200])
    est = Sim(
        measure="pixel", statistic="count", radius_quantile=0.25, calibration="real", rule="top"
    ).fit(real, generated=gen)
    r = est.radius_

    # closeness is minus the grey-level difference: within the radius means |a - b| <= -r
    def want(v, others):
        c_gen = sum(abs(g - v) <= -r + 1e-9 for g in (0, 2, 4, 100))
        c_real = sum(abs(o - v) <= -r + 1e-9 for o in others)
        return np.log((c_gen + 1) / 5) - np.log((c_real + 1) / (len(others) + 1))

    got = est.score_samples(flat([1, 60, 50]))
    expect = [want(1, [3, 60, 200]), want(60, [1, 3, 200]), want(50, [1, 3, 60, 200])]
    np.testing.assert_allclose(got, expect, rtol=1e-6)


@pytest.mark.parametrize(
    ("params", "fit_kw", "match"),
    [
        ({}, {}, "at least two different real images"),
        ({}, {"reference": "one"}, "at least two different real images"),
        ({}, {"reference": "path"}, "wrap a single image in a list"),
    ],
)
def test_real_calibration_errors(ct64, params, fit_kw, match):
    est = Sim(measure="pixel", calibration="real", rule="top", **params)
    ref = {"two": ct64[:2], "one": np.stack([ct64[0], ct64[0]]), "path": "x.png"}
    kw = {k: ref[v] for k, v in fit_kw.items()}
    with pytest.raises((ValueError, TypeError), match=match):
        est.fit(generated=ct64[4:], **kw)


def test_real_calibration_with_groups_counts_groups_not_images():
    """With group labels (the patient of each slice), an image of the reference is scored
    without its whole group, and its k_real neighbours are the closest image of each of the
    k_real closest other groups; an unlabelled image is a group of its own."""
    gen = flat([0, 100, 104])
    X = flat([5, 40, 90, 200])
    ref = flat([60, 250, 42])
    est = Sim(measure="pixel", statistic="mean_k", k=2, k_real=2, calibration="real", rule="top")
    est.fit(X, generated=gen, reference=ref, groups=["a", "a", "b", np.int64(7)],
            reference_groups=["b", None, "a"])  # fmt: skip
    assert len(set(est.reference_groups_.tolist())) == 4  # a, b, 7 and 250 on its own
    # 40 is in the reference (group a): 5 and 42 leave with it; closest per group: 60 (b, 20),
    # 200 (7, 160), 250 (210); generated: 40 and 60 away
    # 45 is not: a's closest is 42 (3), then b's 60 (15); generated: 45 and 55 away
    want = [np.log((20 + 160) / 2) - np.log(50), np.log((3 + 15) / 2) - np.log(50)]
    np.testing.assert_allclose(est.score_samples(flat([40, 45])), want, rtol=1e-5)
    # the same image in X and in the reference: one row, the first label it was given
    twice = clone(est).fit(
        X, generated=gen, reference=np.concatenate([ref, X[:1]]), groups=[None, "a", "b", 7],
        reference_groups=["b", None, "a", "a"],
    )  # fmt: skip
    np.testing.assert_allclose(twice.score_samples(flat([40, 45])), want, rtol=1e-5)
    # counts: the image's group is left out of the real share
    cnt = Sim(measure="pixel", statistic="count", calibration="real", rule="top").fit(
        X, generated=gen, reference=ref, groups=["a", "a", "b", 7],
        reference_groups=["b", None, "a"],
    )  # fmt: skip
    radius = cnt.radius_
    real = np.array([5, 40, 90, 200, 60, 250, 42])
    grp = ["a", "a", "b", 7, "b", None, "a"]
    others = [v for v, g in zip(real, grp, strict=True) if g != "a"]
    n_in = sum(-abs(v - 40) >= radius for v in others)
    g_in = sum(-abs(v - 40) >= radius for v in [0, 100, 104])
    want_c = np.log((g_in + 1) / 4) - np.log((n_in + 1) / (len(others) + 1))
    np.testing.assert_allclose(cnt.score_samples(flat([40])), [want_c], rtol=1e-6)


@pytest.mark.parametrize(
    ("fit_kw", "match"),
    [
        (
            {"groups": ["a", "b"]},
            r"groups: expected 4 group labels \(one per image of X\), found 2",
        ),
        ({"groups": "abcd"}, "found a string"),
        ({"groups": [[1], [2], [3], [4]]}, "must be hashable"),
        ({"reference_groups": ["a"]}, "reference_groups: given without reference images"),
        ({"reference": flat([9, 10]), "reference_groups": ["a"]}, "expected 2 group labels"),
    ],
)
def test_group_label_errors(fit_kw, match):
    est = Sim(measure="pixel", statistic="mean_k", k=2, calibration="real", rule="top")
    with pytest.raises((ValueError, TypeError), match=match):
        est.fit(flat([5, 40, 90, 200]), generated=flat([0, 100]), **fit_kw)


def test_cross_fitting_cuts_groups_per_fold():
    """groups hold one label per image of X: each fold's fit gets its own images' labels, the
    same scores as fitting the folds by hand."""
    from ctfp.membership.leaktest import cross_fit_scores

    X, gen = flat([5, 40, 90, 200, 60, 130, 20, 170]), flat([0, 100, 104, 50])
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    g = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    ref = flat([45, 95])
    est = Sim(measure="pixel", statistic="mean_k", k=2, calibration="real", rule=None)
    splits = [(np.arange(4, 8), np.arange(4)), (np.arange(4), np.arange(4, 8))]
    got = cross_fit_scores(est, X, y, generated=gen, splits=splits,
                           fit_params={"groups": g, "reference": ref,
                                       "reference_groups": ["a", "b"]})  # fmt: skip
    want = np.empty(8)
    for train, test in splits:
        f = clone(est).fit(X[train], y[train], generated=gen, groups=g[train], reference=ref,
                           reference_groups=["a", "b"])  # fmt: skip
        want[test] = f.score_samples(X[test])
    np.testing.assert_allclose(got, want)
    # FusedMembership passes them on to its members' cross-fitting and final fits
    from ctfp.membership.fused import FusedMembership

    member = {"measure": "pixel", "image_size": None, "statistic": "mean_k", "k": 2,
              "calibration": "real"}  # fmt: skip
    fused = FusedMembership(members=[member], cv=2, rule=None).fit(
        X, y, generated=gen, groups=g, reference=ref, reference_groups=["a", "b"]
    )
    (est_0,) = fused.estimators_
    assert len(set(est_0.reference_groups_.tolist())) == 4  # a-d; the reference joins a and b


def test_density_calibration_is_a_leave_one_out_kde_ratio():
    rng = np.random.default_rng(4)
    centres_used = np.array([20, 40, 60, 80, 100, 120])
    centres_unused = np.array([150, 170, 190, 210, 230, 250])
    # generated images cluster at the used images' values; features: 2 pixels vary
    gen = []
    for c in np.repeat(centres_used, 10):
        img = np.full((4, 4), 128, np.uint8)
        img[0, 0] = np.clip(c + rng.normal(0, 3), 0, 255)
        img[0, 1] = np.clip(255 - c + rng.normal(0, 3), 0, 255)
        gen.append(img)
    gen = np.stack(gen)

    def real_of(c):
        img = np.full((4, 4), 128, np.uint8)
        img[0, 0], img[0, 1] = c, 255 - c
        return img

    real = np.stack([real_of(c) for c in np.concatenate([centres_used, centres_unused])])
    y = np.r_[np.ones(6), np.zeros(6)].astype(int)
    est = Sim(measure="pixel", calibration="density", n_components=2, random_state=0).fit(
        real, y, generated=gen
    )
    assert est.pca_.n_components_ == 2
    # the fitted dev scores equal an explicit leave-one-out KDE ratio
    z = est.pca_.transform(est.index_.transform(real)).astype(np.float64)

    def log_kde(points, data, skip=None):
        n, d = data.shape
        h = n ** (-1 / (d + 4))
        out = []
        for i, p in enumerate(points):
            rows = [j for j in range(n) if skip is None or skip[i] != j]
            sq = ((data[rows] - p) ** 2).sum(1)
            out.append(
                np.log(np.mean(np.exp(-sq / (2 * h * h)))) - d * np.log(h * np.sqrt(2 * np.pi))
            )
        return np.array(out)

    skip = np.r_[np.full(6, -1), np.arange(6)]
    want = log_kde(z, est.density_gen_) - log_kde(z, est.density_ref_, skip)
    np.testing.assert_allclose(est.dev_scores_, want, rtol=1e-6, atol=1e-6)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, est.dev_scores_) == 1.0


# --------------------------------------------------------------------------------------------------
# decision rules


def test_calibrated_rule_threshold_from_development_images():
    gen = flat([0, 100, 200])
    real = flat([2, 50, 97, 150, 204, 175])
    y = np.array([1, 0, 1, 0, 1, 0])
    est = Sim(measure="pixel").fit(real, y, generated=gen)
    # closeness: -2, -50, -3, -50, -4, -25 -> threshold between -25 and -4
    assert est.threshold_ == pytest.approx(-14.5, abs=1e-3)
    assert est.dev_value_ == 1.0
    np.testing.assert_array_equal(est.predict(flat([10, 30, 199])), [1, 0, 1])
    np.testing.assert_allclose(est.decision_function(flat([10])), [-10 + 14.5], atol=1e-3)


def test_real_real_rule():
    # real images 0, 60, 120, 180: each one's nearest other real is 60 away; median -60
    real = flat([0, 60, 120, 180])
    gen = flat([1, 119])
    est = Sim(measure="pixel", rule="real_real").fit(real, generated=gen)
    assert est.real_threshold_ == pytest.approx(-60, abs=1e-3)
    # closest generated: 0 -> 1 away, 60 -> 58, 180 -> 61, 240 -> 121
    np.testing.assert_array_equal(est.predict(flat([0, 60, 180, 240])), [1, 1, 0, 0])


def test_real_real_rule_quantile_and_transductive():
    real = flat([0, 60, 120, 180])
    gen = flat([1, 119])
    strict = Sim(measure="pixel", rule="real_real", real_quantile=1.0)
    strict.fit(real, generated=gen)
    assert strict.real_threshold_ == pytest.approx(-60, abs=1e-3)
    np.testing.assert_array_equal(strict.predict(flat([0, 120, 250])), [1, 1, 0])
    # without development images, the images predicted give the real-real similarities:
    # 0, 30, 120, 250 -> nearest others 30, 30, 90, 130 -> median -60
    est = Sim(measure="pixel", rule="real_real").fit(generated=gen)
    assert est.real_threshold_ is None
    np.testing.assert_array_equal(est.predict(flat([0, 30, 120, 250])), [1, 1, 1, 0])


def test_retrieval_rule_votes():
    queries = flat([0, 100, 200, 50])
    gen = flat([1, 2, 99, 104, 180, 48, 52])
    est = Sim(measure="pixel", rule="retrieval", block_size=2).fit(generated=gen)
    # nearest query of each generated image: 0, 0, 100, 100, 200, 50, 50
    np.testing.assert_array_equal(est.score_samples(queries), [2, 2, 1, 2])
    np.testing.assert_array_equal(est.predict(queries), [1, 1, 1, 1])
    est.set_params(min_votes=2).fit(generated=gen)
    np.testing.assert_array_equal(est.predict(queries), [1, 1, 0, 1])
    np.testing.assert_allclose(est.decision_function(queries), [0.5, 0.5, -0.5, 0.5])


def test_top_fraction_rule():
    gen = flat([0])
    queries = flat([5, 50, 10, 80, 1])
    est = Sim(measure="pixel", rule="top", fraction=0.4).fit(generated=gen)
    np.testing.assert_array_equal(est.predict(queries), [1, 0, 0, 0, 1])
    dec = est.decision_function(queries)
    np.testing.assert_array_equal(dec > 0, est.predict(queries).astype(bool))
    # default fraction: the share of used images among the development labels
    est = Sim(measure="pixel", rule="top").fit(flat([1, 2, 3, 4]), [1, 0, 0, 0], generated=gen)
    assert est.fraction_ == 0.25
    np.testing.assert_array_equal(est.predict(queries[:4]), [1, 0, 0, 0])


# --------------------------------------------------------------------------------------------------
# development data only


def _leaky_split(seed=0):
    """Used images have noisy copies among the generated ones; unused images do not."""
    rng = np.random.default_rng(seed)
    real = synthetic.make_slices(24, n_patients=24, size=32, seed=seed)
    y = np.r_[np.ones(12), np.zeros(12)].astype(int)
    copies = np.repeat(real[:12], 2, axis=0) + rng.normal(0, 12, (24, 32, 32))
    gen = np.clip(np.concatenate([copies, synthetic.make_slices(16, size=32, seed=99)]), 0, 255)
    dev = np.r_[0:6, 12:18]
    test = np.r_[6:12, 18:24]
    return gen.astype(np.uint8), real[dev], y[dev], real[test], y[test]


@pytest.mark.parametrize(
    "params",
    [
        {"measure": "ssim"},
        {"measure": "pixel", "calibration": "reference", "statistic": "mean_k", "k": 2},
        {"measure": "pixel", "calibration": "density", "n_components": 3},
        {"measure": "ssim", "rule": "top"},
        {"measure": "ssim", "rule": "real_real"},
    ],
)
def test_no_test_label_reaches_the_decision(params):
    gen, x_dev, y_dev, x_test, y_test = _leaky_split()
    base = evaluate_split(Sim(random_state=0, **params), gen, x_dev, y_dev, x_test, y_test)
    rng = np.random.default_rng(5)
    for flip in (rng.permutation(y_test), 1 - y_test, np.zeros_like(y_test)):
        other = evaluate_split(Sim(random_state=0, **params), gen, x_dev, y_dev, x_test, flip)
        np.testing.assert_array_equal(other["predictions"], base["predictions"])
        np.testing.assert_array_equal(other["scores"], base["scores"])
        assert other["describe"] == base["describe"]
    if params.get("calibration") != "density":  # 6 reference images make a poor KDE
        assert base["metrics"]["roc_auc"] > 0.8  # and the leak is found


def test_development_labels_move_the_calibrated_threshold():
    gen, x_dev, y_dev, *_ = _leaky_split()
    a = Sim().fit(x_dev, y_dev, generated=gen)
    b = Sim().fit(x_dev, 1 - y_dev, generated=gen)
    assert a.threshold_ != b.threshold_


# --------------------------------------------------------------------------------------------------
# streaming, inputs and the estimator contract


def test_streamed_generated_set_equals_cached(tmp_path):
    paths = synthetic.write_pngs(tmp_path / "gen", 10, size=32, seed=6)
    real = synthetic.make_slices(4, size=32, seed=7)
    for measure in ("ssim", "pixel"):
        cached = Sim(measure=measure, rule="top", statistic="mean_k", k=3)
        streamed = Sim(**{**cached.get_params(), "max_cache_bytes": 0})
        streamed.set_params(block_size=3)
        cached.fit(generated=paths)
        streamed.fit(generated=paths)
        assert cached.index_._cache is not None and streamed.index_._cache is None
        np.testing.assert_allclose(
            streamed.score_samples(real), cached.score_samples(real), rtol=1e-5, atol=1e-4
        )


def test_load_images_from_paths_and_sizes(tmp_path):
    import ctfp

    paths = synthetic.write_pngs(tmp_path, 3, size=40, seed=8)
    imgs = load_images(paths)
    assert imgs.shape == (3, 40, 40) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[1], ctfp.decode_png(paths[1]))
    assert load_images(paths, size=(20, 24)).shape == (3, 20, 24)
    assert load_images(imgs) is imgs  # a uint8 stack of the right size is taken as it is
    with pytest.raises(TypeError, match="wrap a single image"):
        load_images(str(paths[0]))


def test_estimator_contract(ct64):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.estimator_checks import check_no_attributes_set_in_init

    est = Sim(measure="pixel", rule="top", k=3)
    check_no_attributes_set_in_init("SimilarityMembership", est)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.predict(ct64[:2])
    est.fit(generated=ct64[:6])
    np.testing.assert_array_equal(est.classes_, [0, 1])
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.score_samples(ct64[6:]), est.score_samples(ct64[6:]))


@pytest.mark.parametrize(
    ("params", "fit_args", "match"),
    [
        ({"measure": "dct"}, (), "measure: expected one of"),
        ({"rule": "calibrated"}, (), "labelled development images"),
        ({"calibration": "density", "measure": "ssim"}, ("dev",), "feature space"),
        ({"calibration": "reference", "rule": "retrieval"}, ("dev",), "calibration=None"),
        ({"calibration": "reference"}, (), "needs development images with labels"),
        ({"k": 0, "rule": "top"}, (), "k: expected an integer >= 1"),
    ],
)
def test_bad_settings_are_explained(ct64, params, fit_args, match):
    est = Sim(**params)
    args = (ct64[4:8], [1, 0, 1, 0]) if fit_args else ()
    with pytest.raises(ValueError, match=match):
        est.fit(*args, generated=ct64[:4])


def test_import_does_not_pull_in_torch():
    code = "import sys, ctfp.membership.similarity; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# the generated-set index


def test_index_kneighbors_equals_brute_force(ct64):
    gen, real = ct64[:9], ct64[9:]
    rng = np.random.default_rng(11)
    real = np.clip(real + rng.normal(0, 5, real.shape), 0, 255).astype(np.uint8)
    # pixel: closeness = minus the RMS difference
    index = GeneratedIndex(measure="pixel", n_neighbors=3, block_size=2).fit(gen)
    values, idx = index.kneighbors(real)
    g = gen.reshape(9, -1).astype(np.float64)
    x = real.reshape(len(real), -1).astype(np.float64)
    rms = np.sqrt(((x[:, None] - g[None]) ** 2).mean(-1))
    want = np.argsort(rms, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(values, -np.take_along_axis(rms, want, 1), rtol=1e-4, atol=1e-3)
    assert index.n_samples_fit_ == 9 and index.device_ == "cpu"
    # ssim: closeness = SSIM, nearest first; n_neighbors per query; indices only on request
    index = GeneratedIndex(measure="ssim", block_size=4).fit(list(gen))
    values, idx = index.kneighbors(real, n_neighbors=2)
    full = ssim_matrix(real, gen)
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1, kind="stable")[:, :2])
    np.testing.assert_allclose(values, -np.sort(-full, axis=1)[:, :2], atol=1e-6)
    np.testing.assert_array_equal(index.kneighbors(real, 2, return_distance=False), idx)
    with pytest.raises(ValueError, match="at most 9"):
        index.kneighbors(real, n_neighbors=10)
    with pytest.raises(ValueError, match="n_neighbors: expected an integer >= 1"):
        index.kneighbors(real, n_neighbors=0)


def test_index_refit_with_and_checks(ct64):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.estimator_checks import check_no_attributes_set_in_init

    check_no_attributes_set_in_init("GeneratedIndex", GeneratedIndex())
    assert clone(GeneratedIndex(n_neighbors=2)).get_params()["n_neighbors"] == 2
    index = GeneratedIndex(measure="pixel").fit(ct64[:4])
    assert index.refit_with({"measure": "pixel", "block_size": 1024}) is index
    other = index.refit_with({"measure": "ssim"})
    assert other is not index and other.measure == "ssim" and other.n_samples_fit_ == 4
    assert index.measure == "pixel"  # the shared index is left as it was
    with pytest.raises(NotFittedError):
        GeneratedIndex().kneighbors(ct64[:1])
    with pytest.raises(ValueError, match="GeneratedIndex: block_size: expected an integer >= 1"):
        GeneratedIndex(block_size=0).fit(ct64[:2])
    with pytest.raises(ValueError, match="at least one generated image"):
        GeneratedIndex().fit([])


# --------------------------------------------------------------------------------------------------
# scikit-learn drives the estimator: generated is a fit parameter


def _sk_data():
    """24 real images (12 used) and 40 generated images, from _leaky_split."""
    gen, x_dev, y_dev, x_test, y_test = _leaky_split()
    return np.concatenate([x_dev, x_test]), np.concatenate([y_dev, y_test]), gen


def _manual_cv(est, X, y, gen, cv):
    from sklearn.base import clone

    return np.array(
        [
            clone(est).fit(X[tr], y[tr], generated=gen).score(X[te], y[te])
            for tr, te in cv.split(X, y)
        ]
    )


def test_cross_val_score_routes_generated_as_a_fit_parameter():
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X, y, gen = _sk_data()
    assert len(gen) != len(X)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    est = Sim(measure="pixel", random_state=0)
    got = cross_val_score(est, list(X), y, cv=cv, params={"generated": gen})
    np.testing.assert_array_equal(got, _manual_cv(est, X, y, gen, cv))
    assert got.mean() > 0.7  # the leak is found


def test_grid_search_with_generated_as_a_fit_parameter():
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    X, y, gen = _sk_data()
    cv = StratifiedKFold(3, shuffle=True, random_state=1)
    grid = {"statistic": ["max", "mean_k"], "k": [2]}
    search = GridSearchCV(Sim(measure="ssim"), grid, cv=cv)
    search.fit(X, y, generated=gen)
    for i, params in enumerate(search.cv_results_["params"]):
        est = Sim(measure="ssim", **params)
        want = _manual_cv(est, X, y, gen, cv)
        assert search.cv_results_["mean_test_score"][i] == pytest.approx(want.mean())
    assert search.best_estimator_.n_generated_ == len(gen)
    np.testing.assert_array_equal(search.classes_, [0, 1])


def test_a_generated_set_as_long_as_X_needs_an_index():
    """scikit-learn slices fit parameters with as many items as X: a list of generated images of
    that length is cut per fold; a fitted GeneratedIndex (no length) goes through whole, and is
    shared by every fold's estimator when its settings are the estimator's."""
    from sklearn.model_selection import StratifiedKFold, cross_validate

    X, y, gen = _sk_data()
    gen = gen[: len(X)]
    cv = StratifiedKFold(3)
    est = Sim(measure="pixel", rule="top")
    sliced = cross_validate(est, X, y, cv=cv, params={"generated": gen}, return_estimator=True)
    assert [e.n_generated_ for e in sliced["estimator"]] == [16, 16, 16]  # the hazard
    index = GeneratedIndex(measure="pixel").fit(gen)
    whole = cross_validate(est, X, y, cv=cv, params={"generated": index}, return_estimator=True)
    assert all(e.index_ is index for e in whole["estimator"])
    assert [e.n_generated_ for e in whole["estimator"]] == [24, 24, 24]
    np.testing.assert_array_equal(whole["test_score"], _manual_cv(est, X, y, gen, cv))
    # other settings than the index's: re-indexed on the same images, the index left alone
    ssim = Sim(measure="ssim", rule="top").fit(X, y, generated=index)
    assert ssim.index_ is not index and ssim.index_.measure == "ssim" and index.measure == "pixel"
    assert ssim.n_generated_ == 24
    with pytest.raises(ValueError, match="not fitted"):
        est.fit(X, y, generated=GeneratedIndex())


def test_pipeline_clone_and_routing():
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y, gen = _sk_data()
    est = Sim(measure="pixel", calibration="reference", random_state=0)
    want = clone(est).fit(X[:8], y[:8], generated=gen)
    pipe = Pipeline([("m", est)]).fit(X[:8], y[:8], m__generated=gen)
    np.testing.assert_array_equal(pipe.predict(X[8:]), want.predict(X[8:]))
    pipe2 = make_pipeline(FunctionTransformer(), clone(est))
    pipe2.fit(X[:8], y[:8], similaritymembership__generated=gen)
    np.testing.assert_array_equal(pipe2.decision_function(X[8:]), want.decision_function(X[8:]))
    fitted_clone = clone(want)
    assert not hasattr(fitted_clone, "index_") and fitted_clone.get_params() == est.get_params()


def test_n_jobs_minus_one_and_random_state_objects():
    X, y, gen = _sk_data()
    one = Sim(measure="ssim", n_jobs=1).fit(X, y, generated=gen)
    every = Sim(measure="ssim", n_jobs=-1).fit(X, y, generated=gen)
    assert every.index_.n_threads_ >= 1
    np.testing.assert_array_equal(every.score_samples(X), one.score_samples(X))
    # the radius subsample is drawn from random_state: an int or a RandomState
    params = {"measure": "pixel", "statistic": "count", "radius_sample": 5, "rule": "top"}
    a = Sim(random_state=np.random.RandomState(3), **params)
    b = Sim(random_state=np.random.RandomState(3), **params)
    assert a.fit(generated=gen).radius_ == b.fit(generated=gen).radius_
    Sim(random_state=7, **params).fit(generated=gen)
    with pytest.raises(TypeError, match="random_state: expected None or an integer"):
        Sim(random_state="seed", **params).fit(generated=gen)


def test_device_defaults_to_auto_and_errors_are_resolve_devices():
    pytest.importorskip("torch")
    from ctfp._util import resolve_device

    assert Sim().device == "auto"
    X, y, gen = _sk_data()
    for bad in ("cuda:99", "mps"):
        try:
            resolve_device(bad)
        except ValueError as exc:
            want = str(exc)
        else:  # this machine has it
            continue
        for measure in ("pixel", "ssim"):
            est = Sim(measure=measure, device=bad, rule="top")
            with pytest.raises(ValueError) as got:
                est.fit(generated=gen)
            assert str(got.value) == want
    with pytest.raises(ValueError) as got:  # a malformed device: resolve_device's words too
        Sim(device="gpu").fit(X, y, generated=gen)
    with pytest.raises(ValueError) as want_gpu:
        resolve_device("gpu")
    assert str(got.value) == str(want_gpu.value)
    est = Sim(measure="pixel", device="cpu", rule="top").fit(generated=gen)
    assert est.device_ == "cpu"


def test_ssim_on_auto_device_imports_no_torch():
    code = (
        "import sys, numpy as np; from ctfp.membership.similarity import SimilarityMembership;"
        "g = np.random.default_rng(0).integers(0, 256, (6, 16, 16), dtype=np.uint8);"
        "SimilarityMembership(measure='ssim', calibration=None, rule='top')"
        ".fit(generated=g).predict(g);"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_process_wide_torch_thread_setting(ct64, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    est = Sim(
        measure="embedding", backbone="mobilenet_v2", weights=None, image_size=32, rule="top",
        n_jobs=1, device="cpu", random_state=0,
    )  # fmt: skip
    est.fit(generated=ct64[:3]).score_samples(ct64[3:5])
    assert calls == []


def test_rule_none_only_scores_and_calibration_has_one_home():
    from ctfp.membership.decision import CalibratedThreshold, best_threshold

    gen, x_dev, y_dev, x_test, _ = _leaky_split()
    est = Sim(measure="pixel", rule=None).fit(x_dev, y_dev, generated=gen)
    scores = est.score_samples(x_test)
    full = Sim(measure="pixel").fit(x_dev, y_dev, generated=gen)
    np.testing.assert_array_equal(scores, full.score_samples(x_test))
    with pytest.raises(ValueError, match="rule=None"):
        est.predict(x_test)
    assert not {"threshold", "real_threshold", "fraction"} & set(est.describe())
    assert est.threshold_ is None and est.dev_scores_ is None
    # rule="calibrated" calibrates with decision.py's CalibratedThreshold, nothing else
    assert isinstance(full.calibrator_, CalibratedThreshold)
    assert (full.threshold_, full.dev_value_) == best_threshold(full.dev_scores_, y_dev)


def test_defaults_are_the_benchmarks_winning_pixel_setting(ct64):
    """The estimator's defaults are `ctfp run --method sim-pixel`'s settings."""
    from ctfp.imageclef.experiments import SIMILARITY_KEYS, SIMILARITY_PRESETS

    preset = SIMILARITY_PRESETS[SIMILARITY_KEYS["sim-pixel"]]
    params = SimilarityMembership().get_params()
    assert {k: params[k] for k in preset} == preset
    assert params["rule"] == "calibrated"
    gen, dev = ct64[:6], ct64[6:]
    est = SimilarityMembership().fit(dev, [1, 0, 1, 0, 1, 0], generated=gen)
    assert est.describe()["calibration"] == "real" and est.image_size_ == (64, 64)
    with pytest.raises(ValueError, match="at least two different real images"):
        SimilarityMembership(rule="top").fit(generated=gen)
    with pytest.raises(ValueError, match="takes calibration=None"):
        SimilarityMembership(rule="real_real").fit(dev, generated=gen)


def test_real_calibration_leaves_an_image_out_by_its_pixels_for_embeddings_too(ct64):
    """Embeddings: the key is the image's pixels (decoded again), so an image in the reference set
    is scored against the others, as if it had never been given; iterators are read once."""
    pytest.importorskip("torch")
    gen, real = ct64[:6], ct64[6:]
    kw = dict(
        measure="embedding", backbone="mobilenet_v2", weights=None, image_size=32, device="cpu",
        torch_threads=1, calibration="real", statistic="mean_k", k=2, rule="top", random_state=0,
    )  # fmt: skip
    est = SimilarityMembership(**kw).fit(iter(list(real)), generated=gen)
    assert est.describe()["reference_images"] == 6
    got = est.score_samples(iter(list(real[:2])))
    for i in range(2):
        others = np.delete(real, i, axis=0)
        alone = SimilarityMembership(**kw).fit(others, generated=gen)
        np.testing.assert_allclose(got[i], alone.score_samples(real[i : i + 1])[0], rtol=1e-4)


def test_centroid_statistic_is_closeness_to_the_mean_of_the_k_closest(ct64):
    """pixel: minus the RMS difference to the average of the k nearest generated images (or to
    the nearest, when closer); ssim: SSIM to that average rounded to grey levels (or to the
    nearest); with calibration="real", the same against the k nearest other real images, as a
    log ratio of distances. An exact copy scores as with the closest image."""
    gen, real = ct64[:8], ct64[8:]
    g = gen.reshape(8, -1).astype(np.float64)
    r = real.reshape(len(real), -1).astype(np.float64)
    k = 3
    est = Sim(measure="pixel", statistic="centroid", k=k, rule="top").fit(generated=gen)
    want = []
    for x in r:
        near = np.argsort(((g - x) ** 2).sum(1), kind="stable")[:k]
        to_mean = np.sqrt(((g[near].mean(0) - x) ** 2).mean())
        to_nearest = np.sqrt(((g[near[0]] - x) ** 2).mean())
        want.append(-min(to_mean, to_nearest))
    np.testing.assert_allclose(est.score_samples(real), want, rtol=1e-4)
    assert est.describe()["k"] == k

    ssim = Sim(measure="ssim", statistic="centroid", k=k, rule="top").fit(generated=gen)
    s_all = skimage_matrix(real, gen)
    want_ssim = []
    for i, x in enumerate(real):
        near = np.argsort(-s_all[i], kind="stable")[:k]
        mean = np.clip(np.rint(gen[near].astype(np.float64).mean(0)), 0, 255).astype(np.uint8)
        want_ssim.append(max(structural_similarity(x, mean), s_all[i, near[0]]))
    np.testing.assert_allclose(ssim.score_samples(real), want_ssim, atol=1e-5)

    # the real term: the mean of the k_real closest other real images alone (no closest-image
    # clause: another slice of the same patient must not set it); k_real=None means k
    for k_real in (None, 2):
        cal = Sim(
            measure="pixel", statistic="centroid", k=k, k_real=k_real, calibration="real",
            rule="top",
        )  # fmt: skip
        cal.fit(real, generated=gen)
        kr = k if k_real is None else k_real
        assert cal.k_real_ == kr and cal.describe()["k_real"] == kr
        want_cal = []
        for i, x in enumerate(r):
            others = np.delete(r, i, axis=0)
            near = np.argsort(((others - x) ** 2).sum(1), kind="stable")[:kr]
            d_real = np.sqrt(((others[near].mean(0) - x) ** 2).mean())
            want_cal.append(np.log(d_real) - np.log(-want[i]))
        np.testing.assert_allclose(cal.score_samples(real), want_cal, rtol=1e-4)

    with_copy = np.concatenate([gen, real[:1]])
    copy = Sim(measure="pixel", statistic="centroid", k=k, rule="top").fit(generated=with_copy)
    got = copy.score_samples(real)
    # zero up to float error (an RMS of 0.03 grey levels, as with statistic="max"), the highest
    assert got[0] > -0.1 and got[0] > got[1:].max()
