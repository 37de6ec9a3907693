"""Membership that holds up: the published baselines, the real-real default, one-class
warnings, the leak test, the fused scores (cross-validated on development data only), FAISS
search equal to brute force, the SSIM pre-filter, query transforms, and saved indexes."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from ctfp.data.datasets import find_datasets
from ctfp.imageclef.leaky import LeakyDataSpec, make_leaky_dataset
from ctfp.membership.baselines import VCMISSIM, GANLeaks
from ctfp.membership.decision import CalibratedThreshold, SingleClassRuleWarning
from ctfp.membership.fused import FusedMembership
from ctfp.membership.index import (
    FeatureSearch,
    GeneratedIndex,
    StaleIndexError,
    content_hash,
    fit_or_load,
    nearest_neighbours,
    ssim_matrix,
)
from ctfp.membership.leaktest import cross_fit_scores, leak_test, run_leak_test
from ctfp.membership.similarity import SimilarityMembership

needs_faiss = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="needs faiss-cpu (ctfp[similarity])"
)


def flat(values, size=8):
    return np.stack([np.full((size, size), v, np.uint8) for v in values])


def leaky(root, **changes):
    make_leaky_dataset(root, LeakyDataSpec.small(**changes))
    dev = find_datasets(root / "development", require="development")[0]
    test = find_datasets(root / "test", require="test")[0]
    truth = dict(
        (line.split(",")[0], int(line.split(",")[1]))
        for line in (root / "test_labels.csv").read_text().splitlines()
    )
    return dev, test, np.array([truth[p.stem] for p in test.unknown])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's quick leaky data (what `ctfp demo --quick` makes): 8 + 8 development images."""
    return leaky(tmp_path_factory.mktemp("leak"))


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    """leak=0: the generator copies nothing. One slice per patient, so that the development
    images are independent (with 4 slices of 2 patients per group, chance resemblance of a
    patient to the generator's novel patients decides; see docs/similarity.md)."""
    return leaky(tmp_path_factory.mktemp("null"), leak=0.0, slices_per_patient=1)


@pytest.fixture(scope="module")
def ct():
    from ctfp.data.synthetic import make_slices

    return make_slices(30, n_patients=15, size=32, seed=5)


# --------------------------------------------------------------------------------------------
# baselines, the real-real default, one-class warnings


def test_baselines_run_and_give_finite_scores(demo):
    dev, test, truth = demo
    real, labels = dev.real()
    for est in (GANLeaks(), VCMISSIM()):
        est.fit(real, labels, generated=dev.generated)
        s = est.score_samples(test.unknown)
        assert s.shape == (len(test.unknown),) and np.isfinite(s).all()
        assert np.isfinite(est.decision_function(test.unknown)).all()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingleClassRuleWarning)
            assert set(est.predict(test.unknown)) <= {0, 1}
        json.dumps(est.describe())
    # on the leaky demo data both rank the test images perfectly
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(truth, GANLeaks().fit(real, labels, generated=dev.generated)
                         .score_samples(test.unknown)) == 1.0  # fmt: skip


def test_ganleaks_is_minus_the_nearest_l2_distance(ct):
    gen, q = ct[:20], ct[20:]
    s = GANLeaks(image_size=32, rule=None).fit(generated=gen).score_samples(q)
    d = np.sqrt(((q[:, None].astype(float) - gen[None].astype(float)) ** 2).sum((2, 3)))
    np.testing.assert_allclose(s, -d.min(1), rtol=1e-4)


def test_vcmi_threshold_max_is_the_largest_real_real_ssim(ct):
    gen, real = ct[:20], ct[20:]
    est = VCMISSIM().fit(real, generated=gen)
    s = ssim_matrix(real, real).astype(float)
    np.fill_diagonal(s, -np.inf)
    assert est.threshold_ == pytest.approx(s.max())
    np.testing.assert_allclose(est.score_samples(real), ssim_matrix(real, gen).max(1), atol=1e-6)


def test_real_real_default_is_the_maximum():
    assert SimilarityMembership().real_quantile == 1.0
    real = flat([0, 40, 120, 180])  # nearest other real: 40, 40, 60, 60 away
    est = SimilarityMembership(measure="pixel", rule="real_real", statistic="max", calibration=None)
    est.fit(real, generated=flat([1]))
    assert est.real_threshold_ == pytest.approx(-40, abs=1e-3)  # the max, not the median (-50)


def test_a_threshold_that_makes_one_class_warns():
    real = flat([0, 40, 120, 180])
    est = SimilarityMembership(measure="pixel", rule="real_real", statistic="max", calibration=None)
    est.fit(real, generated=flat([250]))
    with pytest.warns(SingleClassRuleWarning, match="every one of the 3 images"):
        assert est.predict(flat([10, 60, 200])).tolist() == [0, 0, 0]
    with pytest.warns(SingleClassRuleWarning):
        CalibratedThreshold("f1").fit([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 1])  # all used is best
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CalibratedThreshold().fit([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])  # separates: no warning


# --------------------------------------------------------------------------------------------
# the leak test


def test_leak_test_statistics():
    r = leak_test([3.0, 4.0, 5.0, 1.0, 2.0], [1, 1, 1, 0, 0])
    assert r["auc"] == 1.0 and r["cliffs_delta"] == 1.0 and r["u"] == 6.0
    assert r["p_value"] == pytest.approx(0.1)  # 1 of C(5, 2) = 10 orders, exact
    assert not r["reject"]


def test_leak_test_says_leak_on_the_demo_data(demo):
    dev, _, _ = demo
    real, labels = dev.real()
    # the closest image's SSIM at the images' own size: the demo's near-copies; (the default
    # density ratio is blurred by the demo's several slices per patient, docs/similarity.md)
    closest = SimilarityMembership(
        measure="ssim", statistic="max", calibration=None, image_size=None
    )
    r = run_leak_test(closest, real, labels, generated=dev.generated)
    assert r["verdict"] == "leak" and r["supported"]
    assert r["p_value"] < 0.01 and r["auc"] > 0.9
    assert r["control"]["p_value"] > 0.05 and "permuted" in r["control"]["reference"]
    json.dumps(r)


def test_leak_test_says_no_evidence_without_a_leak(null):
    dev, _, _ = null
    real, labels = dev.real()
    for est in (SimilarityMembership(measure="ssim"), SimilarityMembership(), GANLeaks()):
        r = run_leak_test(est, real, labels, generated=dev.generated)
        assert r["verdict"] == "no evidence" and not r["supported"], r["message"]
        assert r["p_value"] > 0.05


def test_leak_test_by_groups_compares_patients(demo):
    """With patient ids the test counts patients: 2 + 2 can never reach p < 0.05."""
    dev, _, _ = demo
    real, labels = dev.real()
    # ds.real(): the used files, then the not-used ones, each in name order; the demo writes 4
    # slices per patient in that order
    groups = [f"{p.parent.name}-{(int(p.stem.split('_')[-1]) - 1) // 4}" for p in real]
    r = run_leak_test(GANLeaks(), real, labels, generated=dev.generated, groups=groups)
    assert r["groups"] and r["n_used"] == 2 and r["n_not_used"] == 2
    assert r["verdict"] == "no evidence" and r["auc"] == 1.0


def test_cross_fitting_never_scores_an_image_with_its_own_label(ct):
    """Out-of-fold scores equal scores from fits on the other folds only."""
    gen, real = ct[:12], ct[12:28]
    y = np.array([1, 0] * 8)
    est = SimilarityMembership(measure="pixel", calibration="reference", rule=None)
    splits = [(np.arange(16)[np.arange(16) % 4 != f], np.arange(16)[np.arange(16) % 4 == f])
              for f in range(4)]  # fmt: skip
    oof = cross_fit_scores(est, real, y, generated=gen, splits=splits)
    for train, test in splits:
        fold = SimilarityMembership(measure="pixel", calibration="reference", rule=None)
        np.testing.assert_allclose(
            oof[test], fold.fit(real[train], y[train], generated=gen).score_samples(real[test])
        )


def test_cross_fitting_passes_the_unlabelled_reference_to_every_fit(ct):
    """calibration="real": each fold's fit gets ``reference`` (here: every development image and
    4 more), and the fused estimator hands it to its members the same way."""
    gen, real, extra = ct[:10], ct[10:26], ct[26:30]
    y = np.array([1, 0] * 8)
    ref = np.concatenate([real, extra])
    est = SimilarityMembership(
        measure="pixel", image_size=16, statistic="mean_k", k=3, calibration="real", rule=None
    )
    splits = [(np.arange(16)[np.arange(16) % 4 != f], np.arange(16)[np.arange(16) % 4 == f])
              for f in range(4)]  # fmt: skip
    oof = cross_fit_scores(
        est, real, y, generated=gen, splits=splits, fit_params={"reference": ref}
    )
    without = cross_fit_scores(est, real, y, generated=gen, splits=splits)
    for train, test in splits:
        fold = clone(est).fit(real[train], y[train], generated=gen, reference=ref)
        assert fold.describe()["reference_images"] == 20
        np.testing.assert_allclose(oof[test], fold.score_samples(real[test]))
    assert not np.allclose(oof, without)  # the reference changed the scores
    members = [{"measure": "pixel", "image_size": 16, "calibration": "real"}]
    fused = FusedMembership(members=members, cv=4, random_state=0)
    fused.fit(real, y, generated=gen, reference=ref)
    assert fused.estimators_[0].describe()["reference_images"] == 20
    r = run_leak_test(est, real, y, generated=gen, fit_params={"reference": ref}, control=False)
    np.testing.assert_allclose(
        r["scores"],
        cross_fit_scores(est, real, y, generated=gen, n_splits=r["n_splits"],
                         fit_params={"reference": ref}),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# fused scores


def test_fused_combiner_sees_out_of_fold_scores_only(ct):
    gen, real, test = ct[:10], ct[10:26], ct[26:]
    y = np.array([1, 0] * 8)
    members = [{"measure": "pixel", "image_size": 16}, {"measure": "ssim"}]
    est = FusedMembership(members=members, cv=4, random_state=0).fit(real, y, generated=gen)
    from sklearn.model_selection import StratifiedKFold

    splits = list(StratifiedKFold(4, shuffle=True, random_state=0).split(real, y))
    for j, m in enumerate(members):
        expect = cross_fit_scores(
            SimilarityMembership(**m, rule=None), real, y, generated=gen, splits=splits
        )
        np.testing.assert_allclose(est.oof_scores_[:, j], expect)
    # the combiner was fitted on exactly those scores
    from sklearn.base import clone

    again = clone(est.combiner_).fit(est.oof_scores_, y)
    np.testing.assert_allclose(again[-1].coef_, est.combiner_[-1].coef_)
    assert est.score_samples(test).shape == (len(test),)
    # refitting from the fitted generated set gives the same model
    est2 = FusedMembership(members=members, cv=4, random_state=0).fit(
        real, y, generated=est.generated_
    )
    np.testing.assert_allclose(est2.score_samples(test), est.score_samples(test))


def test_fused_run_ignores_test_labels(demo, tmp_path):
    """Through the runner: permuting the test labels changes no score, threshold or
    prediction of the fused method (it is fitted and calibrated on development data only)."""
    from ctfp.imageclef.experiments import run_similarity

    root = demo[0].root.parent
    rows = (root / "test_labels.csv").read_text().splitlines()
    perm = np.random.default_rng(0).permutation(len(rows))
    permuted = tmp_path / "permuted.csv"
    permuted.write_text(
        "".join(f"{rows[i].split(',')[0]},{rows[j].split(',')[1]}\n" for i, j in enumerate(perm))
    )
    recs = [
        run_similarity(
            "sim-fused",
            root / "development",
            tmp_path / name,
            test=root / "test",
            test_labels=labels,
            verbose=0,
            leak_test=False,
        )
        for name, labels in (("a", root / "test_labels.csv"), ("b", permuted))
    ]
    a, b = (r["datasets"][0] for r in recs)
    assert a["test_scores"] == b["test_scores"] and a["decision"] == b["decision"]
    assert [p[3] for p in a["holdout_scores"]] == [p[3] for p in b["holdout_scores"]]
    assert (tmp_path / "a" / "run_test.txt").read_text() == (
        tmp_path / "b" / "run_test.txt"
    ).read_text()


def test_runner_records_the_leak_test_and_baselines(demo, tmp_path, capsys):
    from ctfp.imageclef.experiments import SIMILARITY_KEYS, run_similarity

    assert {"base-ganleaks", "base-vcmi", "sim-fused", "sim-shift"} <= set(SIMILARITY_KEYS)
    root = demo[0].root.parent
    rec = run_similarity(
        "base-vcmi",
        root / "development",
        tmp_path,
        test=root / "test",
        test_labels=root / "test_labels.csv",
        verbose=0,
    )
    ds = rec["datasets"][0]
    assert rec["config"]["decision"] == "threshold:0"  # VCMI's own threshold_max decides
    assert ds["similarity"]["threshold_max"] is not None
    lt = ds["leak_test"]
    assert lt["verdict"] == "leak" and ds["predictions_supported"] is True
    assert "leak test [" not in capsys.readouterr().out  # a script's run prints nothing


def test_runner_scores_test_images_against_the_test_splits_generated_images(demo, tmp_path):
    """By default a similarity run scores the test images against the development split's
    generated images; "test" refits on the test split's own (same development images, same
    threshold: the realistic benchmark's protocol); "union" fits on both splits'."""
    from ctfp.imageclef.experiments import run_method, run_similarity

    root = demo[0].root.parent
    n_dev, n_test = len(demo[0].generated), len(demo[1].generated)
    recs = {
        mode: run_similarity(
            "sim-pixel",
            root / "development",
            tmp_path / mode,
            test=root / "test",
            test_labels=root / "test_labels.csv",
            verbose=0,
            leak_test=False,
            **({} if mode == "default" else {"test_generated": mode}),
        )
        for mode in ("default", "test", "union")
    }
    got = {m: r["datasets"][0]["test_generated"] for m, r in recs.items()}
    assert got["default"] == {"split": "development", "images": n_dev}
    assert got["test"] == {"split": "test", "images": n_test}
    assert got["union"] == {"split": "union", "images": n_dev + n_test}
    assert recs["default"]["config"]["test_generated"] == "development"
    # the threshold comes from the development split's held-out images either way
    d, t = (recs[m]["datasets"][0] for m in ("default", "test"))
    assert d["decision"] == t["decision"] and d["holdout_scores"] == t["holdout_scores"]
    with pytest.raises(ValueError, match="test_generated"):
        run_method(1, root / "development", tmp_path / "bad", test_generated="both")


def test_cli_accepts_the_new_methods():
    from ctfp.imageclef.cli import build_parser

    p = build_parser()
    for m in ("sim-fused", "sim-shift", "base-ganleaks", "base-vcmi"):
        args = p.parse_args(["run", "--method", m, "--data", "d", "--out", "o"])
        assert args.method == m


# --------------------------------------------------------------------------------------------
# search: FAISS, the SSIM pre-filter, transforms


@needs_faiss
def test_faiss_flat_equals_brute_force():
    rng = np.random.default_rng(0)
    r = rng.standard_normal((500, 64), dtype=np.float32)
    q = rng.standard_normal((20, 64), dtype=np.float32)
    d0, i0 = nearest_neighbours(q, r, 7)
    d1, i1 = FeatureSearch("faiss-flat", n_threads=1).fit(r).search(q, 7)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=1e-4)


@needs_faiss
def test_faiss_index_equals_the_streamed_index(ct):
    gen, q = ct[:25], ct[25:]
    brute = GeneratedIndex(measure="pixel", algorithm="brute", block_size=4).fit(gen)
    fast = brute.refit_with({"algorithm": "faiss-flat"})
    assert fast.algorithm_ == "faiss-flat" and fast._cache is brute._cache  # features shared
    v0, i0 = brute.kneighbors(q, 5)
    v1, i1 = fast.kneighbors(q, 5)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(v1, v0, rtol=1e-4, atol=1e-4)
    for algo in ("faiss-ivf", "faiss-hnsw"):  # approximate: the nearest is found here
        approx = brute.refit_with({"algorithm": algo, "algorithm_params": {"n_probe": 8}})
        assert (approx.kneighbors(gen[:5], 1)[1][:, 0] == np.arange(5)).all()


@pytest.mark.parametrize("algorithm", ["brute", pytest.param("faiss-flat", marks=needs_faiss)])
def test_prefiltered_ssim_equals_full_ssim_on_the_images_it_keeps(ct, algorithm):
    gen, q = ct[:26], ct[26:]
    idx = GeneratedIndex(
        measure="ssim", ssim_candidates=6, prefilter_size=16, n_neighbors=3, algorithm=algorithm
    )
    idx.fit(gen)
    values, indices = idx.kneighbors(q)
    full = ssim_matrix(q, gen)
    np.testing.assert_allclose(values, np.take_along_axis(full, indices, 1), atol=1e-6)
    # a query's near-copy survives the pre-filter and is its nearest
    noisy = np.clip(gen[:3].astype(int) + np.random.default_rng(1).integers(-4, 5, gen[:3].shape),
                    0, 255).astype(np.uint8)  # fmt: skip
    assert (idx.kneighbors(noisy, 1)[1][:, 0] == np.arange(3)).all()


def test_query_transforms_take_the_best_transform(ct):
    gen = ct[:10]
    flipped = np.ascontiguousarray(gen[:3, :, ::-1])
    plain = GeneratedIndex(measure="pixel", n_neighbors=1).fit(gen)
    robust = GeneratedIndex(measure="pixel", n_neighbors=1, query_transforms="flip").fit(gen)
    v, i = robust.kneighbors(flipped)
    assert (i[:, 0] == np.arange(3)).all() and np.allclose(v[:, 0], 0, atol=1e-3)
    assert (plain.kneighbors(flipped)[0][:, 0] < -1).all()
    est = SimilarityMembership(
        measure="pixel",
        image_size=None,
        query_transforms="flip",
        rule=None,
        statistic="max",
        calibration=None,
    )
    assert est.fit(generated=gen).score_samples(flipped) == pytest.approx([0, 0, 0], abs=1e-3)
    # SSIM too
    ssim = GeneratedIndex(measure="ssim", n_neighbors=1, query_transforms="flip").fit(gen)
    v, i = ssim.kneighbors(flipped)
    assert (i[:, 0] == np.arange(3)).all() and np.allclose(v[:, 0], 1, atol=1e-5)


@needs_faiss
def test_query_transforms_through_faiss_equal_the_streamed_search(ct):
    gen, q = ct[:20], ct[20:]
    robust = GeneratedIndex(measure="pixel", n_neighbors=4, query_transforms="small").fit(gen)
    v, i = robust.kneighbors(q)
    vf, i_f = robust.refit_with({"algorithm": "faiss-flat"}).kneighbors(q)
    np.testing.assert_array_equal(i_f, i)
    np.testing.assert_allclose(vf, v, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# saved indexes


def test_saved_index_round_trip_and_stale_refused(ct, tmp_path):
    gen = ct[:12]
    idx = GeneratedIndex(measure="pixel", image_size=16).fit(gen)
    path = idx.save(tmp_path / "gen.npz")
    back = GeneratedIndex.load(path, gen)
    np.testing.assert_array_equal(back.kneighbors(ct[12:])[1], idx.kneighbors(ct[12:])[1])
    assert back.content_hash_() == content_hash(gen)
    other = gen.copy()
    other[0, 0, 0] ^= 1
    with pytest.raises(StaleIndexError, match="other generated images"):
        GeneratedIndex.load(path, other)
    with pytest.raises(StaleIndexError, match="image_size"):
        GeneratedIndex.load(path, gen, image_size=32)


def test_index_cache_reuses_the_saved_index(ct, tmp_path, monkeypatch):
    gen, real = ct[:12], ct[12:20]
    y = np.array([1, 0] * 4)
    a = SimilarityMembership(measure="pixel", index_cache=tmp_path, rule=None)
    a.fit(real, y, generated=gen)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("re-indexed instead of loading the cached index")

    monkeypatch.setattr(GeneratedIndex, "fit", boom)
    b = SimilarityMembership(measure="pixel", index_cache=tmp_path, rule=None, algorithm="brute")
    b.fit(real, y, generated=gen)
    np.testing.assert_allclose(b.score_samples(ct[20:]), a.score_samples(ct[20:]))
    monkeypatch.undo()
    c = fit_or_load({"measure": "pixel", "image_size": 16}, gen, tmp_path)  # other settings
    assert len(list(tmp_path.glob("*.npz"))) == 2 and c.image_size_ == (16, 16)


@pytest.mark.parametrize("cls", [GANLeaks, VCMISSIM, FusedMembership])
def test_new_estimators_follow_scikit_learn_conventions(cls):
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_no_attributes_set_in_init

    est = cls()
    check_no_attributes_set_in_init(cls.__name__, est)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(Exception, match="not fitted"):
        est.score_samples(flat([0, 1]))
