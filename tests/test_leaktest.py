"""The leak test's permutation p-value, its exact level and the family-wise verdict
(ctfp.membership.leaktest; docs/leaktest.md)."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
from scipy.stats import binom

from ctfp._util import stratified_folds
from ctfp.membership.baselines import VCMISSIM, GANLeaks
from ctfp.membership.fused import FusedMembership
from ctfp.membership.leaktest import (
    cross_fit_scores,
    family_verdict,
    holm,
    permutation_pvalue,
    permutation_test,
    pipeline_of,
    relabelings,
    run_leak_test,
)
from ctfp.membership.similarity import SimilarityMembership


@pytest.fixture(scope="module")
def ct():
    from ctfp.data.synthetic import make_slices

    return make_slices(30, n_patients=15, size=32, seed=5)


def brute_u(scores, y):
    """Mann-Whitney's U of the used scores by counting pairs (ties 1/2)."""
    s, y = np.asarray(scores, float), np.asarray(y)
    pos, neg = s[y == 1], s[y == 0]
    return float(sum((p > n) + 0.5 * (p == n) for p in pos for n in neg))


def brute_p(scores, y):
    """The exact permutation p-value by enumerating every labelling with the same counts."""
    n, n1 = len(y), int(np.sum(y))
    obs = brute_u(scores, y)
    hits = total = 0
    for ones in combinations(range(n), n1):
        lab = np.zeros(n, int)
        lab[list(ones)] = 1
        hits += brute_u(scores, lab) >= obs - 1e-9
        total += 1
    return hits / total


# --------------------------------------------------------------------------------------------
# the p-value against brute force


@pytest.mark.parametrize(
    "scores,y",
    [
        ([3.0, 4.0, 5.0, 1.0, 2.0], [1, 1, 1, 0, 0]),
        ([0.2, 0.9, 0.4, 0.4, 0.1, 0.7, 0.4], [1, 1, 0, 1, 0, 0, 0]),  # ties
        ([1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 3.0, 1.0], [0, 1, 0, 1, 1, 0, 1, 0]),
    ],
)
def test_permutation_pvalue_equals_brute_force_enumeration(scores, y):
    r = permutation_test(scores, y)
    assert r["exact_enumeration"]
    assert r["p_value"] == pytest.approx(brute_p(scores, y), abs=1e-12)
    assert r["u"] == brute_u(scores, y)
    assert r["p_value_resolution"] == pytest.approx(1 / r["n_permutations"])
    json.dumps(r)


def test_grouped_pvalue_enumerates_whole_groups():
    """With groups, the statistic is the groups' mean scores and the relabelings move whole
    groups: the brute force on the group means."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(7), [2, 3, 1, 2, 3, 2, 1])
    glab = np.array([1, 0, 1, 1, 0, 0, 0])
    y = glab[groups]
    s = rng.normal(size=len(y)) + 0.5 * y
    means = np.array([s[groups == g].mean() for g in range(7)])
    r = permutation_test(s, y, groups=groups)
    assert r["n_used"] == 3 and r["n_not_used"] == 4 and r["n_permutations"] == 35
    assert r["p_value"] == pytest.approx(brute_p(means, glab), abs=1e-12)


def test_monte_carlo_pvalue_counts_the_observed_labelling():
    """Random relabelings: (1 + hits) / (B + 1); never below 1 / (B + 1)."""
    s = np.arange(40, dtype=float)
    y = (s >= 20).astype(int)
    r = permutation_test(s, y, n_permutations=199, random_state=1)
    assert not r["exact_enumeration"] and r["n_permutations"] == 199
    assert r["p_value"] == pytest.approx(1 / 200) and r["p_value_resolution"] == 1 / 200
    assert permutation_pvalue(2.0, [1.0, 2.0, 3.0], exact=False) == 3 / 4
    assert permutation_pvalue(2.0, [1.0, 2.0, 3.0], exact=True) == 2 / 3
    # Monte-Carlo close to the exact value where both exist
    rng = np.random.default_rng(0)
    s2, y2 = rng.normal(size=12), np.array([1] * 6 + [0] * 6)
    mc = permutation_test(s2, y2, n_permutations=20_000, random_state=2)["p_value"]
    assert mc == pytest.approx(brute_p(s2, y2), abs=0.015)


def test_relabelings_keep_the_class_sizes_and_are_seeded():
    lab = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0] * 3)
    a, exact = relabelings(lab, 500, random_state=7)
    b, _ = relabelings(lab, 500, random_state=7)
    assert not exact and a.shape == (500, 30) and (a.sum(1) == lab.sum()).all()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="n_permutations"):
        relabelings(lab, 0)


def test_a_refitted_pipeline_equals_brute_force(ct):
    """calibration="reference" uses the labels: every relabelling refits the cross-fitting with
    its own folds. 4 + 4 images: all 70 labellings, checked by doing them one by one."""
    gen, real = ct[:10], ct[10:18]
    y = np.array([1, 0, 1, 0, 0, 1, 1, 0])
    est = SimilarityMembership(measure="pixel", image_size=16, calibration="reference")
    assert pipeline_of(est) == "refit"
    r = run_leak_test(est, real, y, generated=gen, control=False, n_splits=2)
    assert r["exact_enumeration"] and r["n_permutations"] == 70 and r["pipeline"] == "refit"
    all_u, obs = [], None
    for ones in combinations(range(8), 4):
        lab = np.zeros(8, int)
        lab[list(ones)] = 1
        s = cross_fit_scores(est, real, lab, generated=gen, splits=stratified_folds(lab, 2, 0))
        all_u.append(brute_u(s, lab))
        if (lab == y).all():
            obs = all_u[-1]
            np.testing.assert_allclose(r["scores"], s)
    assert obs == r["u"]
    assert r["p_value"] == pytest.approx(np.mean(np.array(all_u) >= obs - 1e-9))


def test_pipelines_of_the_presets():
    assert pipeline_of(SimilarityMembership()) == "scores"  # calibration="real"
    assert pipeline_of(SimilarityMembership(calibration=None)) == "scores"
    assert pipeline_of(SimilarityMembership(calibration="density")) == "refit"
    assert pipeline_of(GANLeaks()) == "scores" and pipeline_of(VCMISSIM()) == "scores"
    assert pipeline_of(FusedMembership()) == "combiner"
    assert pipeline_of(FusedMembership(members=[{"calibration": "reference"}])) == "refit"


def test_fused_leak_test_refits_only_the_combiner(ct):
    gen, real = ct[:10], ct[10:26]
    y = np.array([1, 0] * 8)
    members = [{"measure": "pixel", "image_size": 16}, {"measure": "ssim", "image_size": 16}]
    est = FusedMembership(members=members, random_state=0)
    r = run_leak_test(est, real, y, generated=gen, control=False, n_permutations=99)
    assert r["pipeline"] == "combiner" and r["n_permutations"] == 99
    assert r["p_value_resolution"] == 1 / 100 and 1 / 100 <= r["p_value"] <= 1
    assert np.isfinite(r["scores"]).all()
    lo, hi = r["auc_interval"]
    assert 0 <= lo <= r["auc"] <= hi <= 1
    json.dumps(r)


def test_errors_name_the_argument(ct):
    with pytest.raises(ValueError, match="test: expected one of"):
        run_leak_test(GANLeaks(), ct[:8], [1, 0] * 4, generated=ct[8:], test="t")
    with pytest.raises(ValueError, match="pipeline: expected one of"):
        run_leak_test(GANLeaks(), ct[:8], [1, 0] * 4, generated=ct[8:], pipeline="x")
    with pytest.raises(ValueError, match="group 0 holds both"):
        permutation_test([1.0, 2.0, 3.0, 4.0], [1, 0, 1, 0], groups=[0, 0, 1, 2])


# --------------------------------------------------------------------------------------------
# exact level on a synthetic null


def _bound(n: int, alpha: float) -> int:
    """The largest count of rejections that a test of level ``alpha`` exceeds with probability
    below 1e-6 in ``n`` independent replicates (binomial tail): the check cannot flake."""
    c = int(binom.isf(1e-6, n, alpha))
    assert binom.sf(c, n, alpha) < 1e-6
    return c


def test_exact_level_on_a_synthetic_null():
    """2,000 seeded null replicates (labels assigned at random, continuous scores, 8 + 8
    images, 99 random relabelings): rejections at alpha 0.05 are Binomial(2000, <= 0.05);
    a level of 0.05 exceeds the bound (149) with probability < 1e-6, a level of 0.08 (160
    expected) stays within it with probability 0.19."""
    n, alpha = 2000, 0.05
    rng = np.random.default_rng(20261207)
    rejections = 0
    for i in range(n):
        s = rng.normal(size=16)
        y = rng.permutation([1] * 8 + [0] * 8)
        rejections += permutation_test(s, y, n_permutations=99, random_state=i)["reject"]
    assert rejections <= _bound(n, alpha)
    assert rejections >= 50  # not trivially conservative either (P < 1e-6 at level 0.05)


def test_exact_level_with_several_slices_per_patient():
    """Patients with a strong patient effect (3 slices each, 7 + 7 patients), labels drawn per
    patient: relabelling whole patients holds the level; relabelling slices does not."""
    n, alpha = 1000, 0.05
    rng = np.random.default_rng(7)
    grouped = by_image = 0
    groups = np.repeat(np.arange(14), 3)
    for i in range(n):
        glab = rng.permutation([1] * 7 + [0] * 7)
        s = rng.normal(size=14)[groups] + 0.2 * rng.normal(size=42)
        y = glab[groups]
        grouped += permutation_test(s, y, groups=groups, n_permutations=99, random_state=i)[
            "reject"
        ]
        by_image += permutation_test(s, y, n_permutations=99, random_state=i)["reject"]
    assert grouped <= _bound(n, alpha)
    assert by_image > _bound(n, alpha)  # the reason for groups=


# --------------------------------------------------------------------------------------------
# one verdict for several methods


def test_holm_against_a_hand_computation():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # 0.5 x 2 capped at 1
    np.testing.assert_allclose(holm([0.02]), [0.02])


def test_family_verdict_leads_with_the_adjusted_decision():
    res = {
        "sim-pixel": {"p_value": 0.01, "verdict": "leak"},
        "sim-ssim": {"p_value": 0.04, "verdict": "leak"},
        "sim-fused": {"p_value": 0.03, "verdict": "leak"},
        "base-ganleaks": {"p_value": 0.005, "verdict": "inconclusive"},
        "base-vcmi": {"verdict": "not tested"},
    }
    f = family_verdict(res, alpha=0.05)
    assert f["n_tests"] == 4 and f["method"] == "holm"
    adj = {t["name"]: t["p_adjusted"] for t in f["tests"]}
    assert adj.pop("base-vcmi") is None
    assert adj == pytest.approx(
        {"sim-pixel": 0.03, "sim-ssim": 0.06, "sim-fused": 0.06, "base-ganleaks": 0.02}
    )
    assert [t["reject"] for t in f["tests"]] == [True, False, False, True, False]
    assert f["verdict"] == "leak" and f["supported"]  # sim-pixel: adjusted 0.03, own "leak"
    assert f["message"].startswith("family of 4 leak tests (Holm, alpha 0.05): leak")
    # alone each of these three says "leak"; as a family none survives
    three = {
        k: {"p_value": p, "verdict": "leak"} for k, p in zip("abc", [0.02, 0.03, 0.04], strict=True)
    }
    assert family_verdict(three)["verdict"] == "no evidence"
    assert family_verdict(three, method="none")["verdict"] == "leak"
    assert family_verdict(three, method="bonferroni")["tests"][0]["p_adjusted"] == 0.06
    only_inconclusive = {"a": {"p_value": 0.001, "verdict": "inconclusive"}}
    assert family_verdict(only_inconclusive)["verdict"] == "inconclusive"
    assert family_verdict({"a": {"verdict": "not tested"}})["verdict"] == "not tested"
    with pytest.raises(ValueError, match="method: expected one of"):
        family_verdict(three, method="fisher")


def test_family_level_on_dependent_nulls():
    """Three strongly dependent tests per replicate (the same labels, correlated scores), all
    nulls: Holm's family-wise false-alarm rate stays within its binomial bound."""
    n, alpha = 1000, 0.05
    rng = np.random.default_rng(11)
    alarms = 0
    for i in range(n):
        base = rng.normal(size=20)
        y = rng.permutation([1] * 10 + [0] * 10)
        res = {
            f"m{j}": permutation_test(
                base + 0.5 * rng.normal(size=20), y, n_permutations=99, random_state=i
            )
            | {"verdict": "leak"}
            for j in range(3)
        }
        alarms += family_verdict(res, alpha=alpha)["verdict"] == "leak"
    assert alarms <= _bound(n, alpha)


def test_the_fast_logistic_combiner_equals_scikit_learns():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ctfp.membership.leaktest import logistic_log_odds

    rng = np.random.default_rng(0)
    for n, d, c in ((30, 2, 1.0), (160, 3, 0.1), (12, 2, 10.0)):
        Z = rng.normal(size=(n, d))
        y = (Z[:, 0] + rng.normal(size=n) > 0).astype(int)
        new = rng.normal(size=(7, d))
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, tol=1e-10))
        np.testing.assert_allclose(
            logistic_log_odds(Z, y, new, C=c), ref.fit(Z, y).decision_function(new), atol=1e-6
        )


def test_null_distribution_figure(tmp_path):
    from ctfp.membership.leaktest import plot_null_distribution

    rng = np.random.default_rng(1)
    r = permutation_test(
        rng.normal(size=20) + np.r_[np.ones(10), np.zeros(10)], [1] * 10 + [0] * 10
    )
    assert sum(r["null_histogram"]["counts"]) == r["n_permutations"]
    path = tmp_path / "null.png"
    plot_null_distribution(r, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="null_histogram"):
        plot_null_distribution({"p_value": 0.5}, path)
