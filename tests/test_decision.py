"""Decision rules from scores to labels (python/ctfp/membership/decision.py), on scores whose
best threshold is known by construction; ctfp's one threshold calibration (best_threshold)."""

from __future__ import annotations

import numpy as np
import pytest

from ctfp.membership.decision import (
    CalibratedThreshold,
    Threshold,
    TopFraction,
    best_threshold,
    make_rule,
)


def test_threshold_at_half_is_inclusive() -> None:
    rule = Threshold()
    assert rule.threshold == 0.5
    assert rule.fit() is rule
    assert rule.predict([0.2, 0.5, 0.7, 0.49999, 1.0, 0.0]).tolist() == [0, 1, 1, 0, 1, 0]
    assert rule.predict(np.array([0.5], np.float32)).dtype.kind == "i"
    assert rule.describe() == {"rule": "threshold", "threshold": 0.5}
    assert Threshold(0.8).predict([0.79, 0.8]).tolist() == [0, 1]


@pytest.mark.parametrize(
    ("scores", "match"),
    [([[0.1, 0.2]], "1-D"), ([0.1, float("nan")], "finite"), ([float("inf")], "finite")],
)
def test_bad_scores(scores: list, match: str) -> None:
    for rule in (Threshold(), TopFraction()):
        with pytest.raises(ValueError, match=match):
            rule.predict(scores)


def test_threshold_refuses_nan() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Threshold(float("nan"))


# --------------------------------------------------------------------------------------------------
# calibrated


def test_calibrated_separable() -> None:
    s = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    y = [0, 0, 0, 1, 1, 1]
    for metric in CalibratedThreshold.METRICS:
        rule = CalibratedThreshold(metric).fit(s, y)
        assert rule.threshold_ == pytest.approx(0.45)  # midway between 0.3 and 0.6
        assert rule.dev_value_ == pytest.approx(1.0)
        assert rule.predict([0.44, 0.45, 0.46]).tolist() == [0, 1, 1]


def test_calibrated_metric_decides_the_threshold() -> None:
    # Ten images scored 0.0 ... 0.9; the one used image is 8th of 10 (score 0.7).
    s = np.arange(10) / 10
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
    # accuracy: calling everything "not used" is right 9 times in 10; any threshold that catches
    # the used image also flags the two above it (0.8 at best) -> threshold above every score.
    acc = CalibratedThreshold("accuracy").fit(s, y)
    assert acc.threshold_ == pytest.approx(0.9 + 1.0)
    assert acc.dev_value_ == pytest.approx(0.9)
    assert acc.predict(s).sum() == 0
    # kappa: all "not used" is 0; flagging the top three (tp 1, fp 2, tn 7) gives
    # p_o = 0.8, p_e = 0.1 * 0.3 + 0.9 * 0.7 = 0.66, kappa = 0.14 / 0.34, the best -> 0.65.
    kappa = CalibratedThreshold("kappa").fit(s, y)
    assert kappa.threshold_ == pytest.approx(0.65)
    assert kappa.dev_value_ == pytest.approx(0.14 / 0.34)
    # F1: the same cut, 2 tp / (2 tp + fp + fn) = 2 / 4.
    f1 = CalibratedThreshold("f1").fit(s, y)
    assert f1.threshold_ == pytest.approx(0.65)
    assert f1.dev_value_ == pytest.approx(0.5)
    assert f1.predict(s).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]


def test_calibrated_ties_and_default_metric() -> None:
    rule = CalibratedThreshold()
    assert rule.metric == "accuracy"
    rule.fit([0.2, 0.2, 0.8, 0.8], [0, 0, 1, 1])
    assert rule.threshold_ == pytest.approx(0.5)


def test_calibrated_describe() -> None:
    rule = CalibratedThreshold("f1")
    assert rule.describe() == {
        "rule": "calibrated",
        "metric": "f1",
        "threshold": None,
        "development_value": None,
    }
    rule.fit([0.1, 0.9], [0, 1])
    d = rule.describe()
    assert d["threshold"] == pytest.approx(0.5)
    assert d["development_value"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("s", "y", "match"),
    [
        ([0.1, 0.2, 0.3], [1, 1, 1], "both labels"),
        ([0.1, 0.2, 0.3], [0, 1], "one label per score"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "labels 0"),
        ([0.1, 0.2, 0.3], [0, 1, 0.7], "labels 0"),  # would be read as 0 if cast first
        ([0.1, float("nan")], [0, 1], "finite"),
    ],
)
def test_calibrated_fit_errors(s: list, y: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CalibratedThreshold().fit(s, y)


def test_calibrated_errors() -> None:
    with pytest.raises(ValueError, match="'f1', 'accuracy', 'kappa'"):
        CalibratedThreshold("auc")
    with pytest.raises(ValueError, match="fit"):
        CalibratedThreshold().predict([0.5])


# --------------------------------------------------------------------------------------------------
# top fraction


@pytest.mark.parametrize(
    ("n", "p"), [(10, 0.3), (10, 0.5), (7, 0.5), (5, 0.5), (200, 0.5), (9, 0.0), (9, 1.0)]
)
def test_top_fraction_picks_the_highest(n: int, p: float) -> None:
    s = np.random.default_rng(n).permutation(n) / n  # distinct scores
    got = TopFraction(p).predict(s)
    k = round(p * n)
    assert got.sum() == k
    assert set(np.flatnonzero(got)) == set(np.argsort(s)[n - k :])


def test_top_fraction_ties_by_position() -> None:
    assert TopFraction(0.5).predict([0.5, 0.5, 0.5, 0.5]).tolist() == [1, 1, 0, 0]
    assert TopFraction(0.5).predict([0.1, 0.9, 0.9, 0.9]).tolist() == [0, 1, 1, 0]


def test_top_fraction_describe_and_errors() -> None:
    rule = TopFraction(0.25)
    assert rule.fit([0.1], [1]) is rule
    assert rule.describe() == {"rule": "top_fraction", "fraction": 0.25}
    assert TopFraction().fraction == 0.5
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            TopFraction(bad)


# --------------------------------------------------------------------------------------------------
# make_rule


@pytest.mark.parametrize(
    ("spec", "cls", "attrs"),
    [
        ("threshold:0.3", Threshold, {"threshold": 0.3}),
        ("threshold", Threshold, {"threshold": 0.5}),
        ("threshold:", Threshold, {"threshold": 0.5}),
        ("calibrated:f1", CalibratedThreshold, {"metric": "f1"}),
        ("calibrated:kappa", CalibratedThreshold, {"metric": "kappa"}),
        ("calibrated", CalibratedThreshold, {"metric": "accuracy"}),
        ("top:0.25", TopFraction, {"fraction": 0.25}),
        ("top", TopFraction, {"fraction": 0.5}),
    ],
)
def test_make_rule(spec: str, cls: type, attrs: dict) -> None:
    rule = make_rule(spec)
    assert type(rule) is cls
    for k, v in attrs.items():
        assert getattr(rule, k) == v


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("median", "expected 'threshold:T', 'calibrated:METRIC' or 'top:FRACTION'"),
        ("", "expected 'threshold:T'"),
        ("Threshold:0.5", "expected 'threshold:T'"),
        ("threshold:abc", "'threshold:abc'"),
        ("threshold:nan", "'threshold:nan'"),
        ("calibrated:auc", "'calibrated:auc'.*metric"),
        ("top:1.5", "'top:1.5'.*fraction"),
        ("top:x", "'top:x'"),
    ],
)
def test_make_rule_errors(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_rule(spec)


# --------------------------------------------------------------------------------------------------
# best_threshold: ctfp's one calibration (candidates, tie-break)


def test_best_threshold_known_answers() -> None:
    t, v = best_threshold([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    assert (t, v) == (pytest.approx(0.25), 1.0)
    # a plateau of equally good thresholds: the median candidate
    t, v = best_threshold([1, 2, 3, 4, 5, 6], [0, 1, 0, 1, 0, 1], metric="accuracy")
    assert v == pytest.approx(4 / 6) and t == pytest.approx(3.5)  # of 1.5, 3.5 and 5.5
    t_f1, v_f1 = best_threshold([1, 2, 3, 4], [1, 0, 1, 1], metric="f1")
    assert t_f1 == pytest.approx(0.0) and v_f1 == pytest.approx(6 / 7)  # all used: F1 6/7
    t_k, v_k = best_threshold([1, 2, 3, 4], [0, 1, 0, 1], metric="kappa")
    assert v_k == pytest.approx(0.5) and t_k == pytest.approx(3.5)
    with pytest.raises(ValueError, match="both labels"):
        best_threshold([1, 2], [1, 1])
    with pytest.raises(ValueError, match="metric"):
        best_threshold([1, 2], [0, 1], metric="auc")


def test_ties_take_the_median_candidate() -> None:
    # accuracy 4/6 at 1.5, 3.5, 5.5 (odd count): the middle one, not the lowest (1.5)
    s, y = [1, 2, 3, 4, 5, 6], [0, 1, 0, 1, 0, 1]
    assert CalibratedThreshold().fit(s, y).threshold_ == pytest.approx(3.5)
    # an even count of tied candidates: the upper of the two middle ones (accuracy 4/5 at 1.5
    # and 3.5: the lowest rule would take 1.5)
    s, y = [1, 2, 3, 4, 5], [0, 1, 0, 1, 1]
    t, v = best_threshold(s, y)
    tied = [c for c in (0.0, 1.5, 2.5, 3.5, 4.5, 6.0) if _accuracy(s, y, c) == pytest.approx(v)]
    assert tied == [1.5, 3.5] and t == pytest.approx(3.5)
    assert CalibratedThreshold().fit(s, y).threshold_ == pytest.approx(3.5)
    # four tied (accuracy 1/2), not contiguous: 0.0, 2.5, 4.5, 7.0 -> 4.5
    s, y = [1, 2, 3, 4, 5, 6], [1, 0, 1, 0, 1, 0]
    t, v = best_threshold(s, y)
    cands = (0.0, 1.5, 2.5, 3.5, 4.5, 5.5, 7.0)
    tied = [c for c in cands if _accuracy(s, y, c) == pytest.approx(v)]
    assert tied == [0.0, 2.5, 4.5, 7.0] and t == pytest.approx(4.5)


def _accuracy(s: list, y: list, t: float) -> float:
    return float(np.mean((np.asarray(s) >= t).astype(int) == np.asarray(y)))


@pytest.mark.parametrize("metric", ["accuracy", "f1", "kappa"])
@pytest.mark.parametrize("seed", range(6))
def test_best_threshold_equals_a_brute_force_search(metric: str, seed: int) -> None:
    """Every candidate scored with scikit-learn's own metrics; ties (repeated scores too) go to
    the median of the best candidates."""
    from sklearn import metrics as m

    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 40))
    s = np.round(rng.normal(size=n), 1)  # rounded: repeated scores
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    fn = {
        "accuracy": m.accuracy_score,
        "f1": lambda a, b: m.f1_score(a, b, zero_division=0),
        "kappa": lambda a, b: m.cohen_kappa_score(a, b) if len(set(b.tolist())) > 1 else 0.0,
    }[metric]
    u = np.unique(s)
    cands = np.r_[u[0] - 1, (u[:-1] + u[1:]) / 2, u[-1] + 1]
    values = np.array([fn(y, (s >= c).astype(int)) for c in cands])
    best = cands[values >= values.max() - 1e-9]
    t, v = best_threshold(s, y, metric)
    assert v == pytest.approx(values.max(), abs=1e-12)
    assert t == best[len(best) // 2]
    rule = CalibratedThreshold(metric).fit(s, y)
    assert (rule.threshold_, rule.dev_value_) == (t, v)
