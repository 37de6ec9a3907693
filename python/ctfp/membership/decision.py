"""Decision rules from membership scores (higher = more likely used) to labels (1 used, 0 not).

Every rule is fitted on development data only and records itself (``describe()``) next to the
results it produced, so a table says which threshold made it. Threshold calibration has one home,
:func:`best_threshold` (one candidate set, one tie-break: the median of the equally good
candidates); :class:`CalibratedThreshold` wraps it, and every part of ctfp that calibrates
(:class:`~ctfp.membership.similarity.SimilarityMembership`, the experiment runner) uses that.

One tie rule, :func:`at_or_above`: an image is used when its score **reaches** the threshold
(``score >= threshold``), for every threshold in ctfp: the rules here, the estimators'
``predict`` (:class:`ThresholdDecisionMixin`, shared by the four membership estimators) and the
CLI's ``decision=``. VCMI's real-real ``threshold_max`` follows it too: an image whose best
SSIM with a generated image equals the largest SSIM between two real images is as close to the
generated set as the closest real pair, which is the rule's evidence of a copy (ties are rare
with real SSIMs; with exact copies among the real images both sides are 1.0 and ``>`` would
call no image used at all).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ctfp._util import Interval, Options, check_binary_labels, validate_params

__all__ = [
    "METRICS",
    "CalibratedThreshold",
    "SingleClassRuleWarning",
    "Threshold",
    "ThresholdDecisionMixin",
    "TopFraction",
    "at_or_above",
    "best_threshold",
    "make_rule",
    "warn_single_class",
]


class SingleClassRuleWarning(UserWarning):
    """A decision rule's fitted threshold puts every image in one class: its predictions say
    nothing about membership. The rule-level sibling of
    :class:`ctfp.imageclef.runfile.SingleClassWarning` (which a run file with one class gets)."""


def warn_single_class(pred: object, what: str, *, stacklevel: int = 3) -> bool:
    """Warn (:class:`SingleClassRuleWarning`) when the 0/1 predictions ``pred`` (two or more)
    are all one class; ``what`` names the rule and the images. Returns whether it warned."""
    p = np.asarray(pred)
    if p.size < 2 or (p.any() and not p.all()):
        return False
    label = "used (1)" if p.all() else "not used (0)"
    warnings.warn(
        f"{what}: every one of the {p.size} images is predicted {label}; the threshold lies "
        f"outside their scores, so the predictions carry no membership information",
        SingleClassRuleWarning,
        stacklevel=stacklevel,
    )
    return True


def _scores(scores: object) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"scores: expected a 1-D array, found shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores: expected finite values")
    return s


def at_or_above(scores: object, threshold: float) -> np.ndarray:
    """ctfp's one tie rule: 1 (used) where ``score >= threshold``, else 0 (int64)."""
    return (np.asarray(scores, dtype=float) >= threshold).astype(np.int64)


class Threshold:
    """Used when ``score >= threshold`` (the paper's rule: 0.5 on the classifier's probability)."""

    def __init__(self, threshold: float = 0.5) -> None:
        validate_params(
            {"threshold": threshold}, {"threshold": [Interval(float, None, None)]}, "Threshold"
        )
        self.threshold = float(threshold)

    def fit(self, scores: object = None, y: object = None) -> Threshold:
        return self

    def predict(self, scores: object) -> np.ndarray:
        return at_or_above(_scores(scores), self.threshold)

    def describe(self) -> dict:
        return {"rule": "threshold", "threshold": self.threshold}


METRICS = ("f1", "accuracy", "kappa")


def best_threshold(scores: object, y: object, metric: str = "accuracy") -> tuple[float, float]:
    """The threshold ``t`` (used when ``score >= t``) that maximises ``metric`` on development
    ``(scores, y)``, and the value it reaches there: ctfp's one threshold calibration, used by
    :class:`CalibratedThreshold` and so by every estimator and runner that calibrates.

    Candidates: the midpoints between consecutive distinct scores, plus one below all of them
    (``min - 1``: everything used) and one above (``max + 1``: nothing used), one per distinct
    way of cutting the sorted scores.

    Tie-break: among the candidates that reach the best value (within 1e-12), the **median**
    one in ascending order, the middle of the tied candidates (of an even number, the upper of
    the two middle ones). A plateau's centre moves least when one development image changes;
    its edges sit right next to a development score.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Finite membership scores, higher = more likely used.
    y : array-like of shape (n,)
        Labels 1 (used) and 0 (not used), both present.
    metric : {"accuracy", "f1", "kappa"}
        Accuracy, F1 of the used class (0 where undefined) or Cohen's kappa (0 where undefined).
    """
    validate_params({"metric": metric}, {"metric": [Options(*METRICS)]}, "best_threshold")
    s = _scores(scores)
    y = np.asarray(y)
    if y.shape != s.shape:
        raise ValueError(f"y: expected one label per score, shape {s.shape}, found shape {y.shape}")
    pos = check_binary_labels(y, "y") == 1
    if pos.all() or not pos.any():
        raise ValueError("calibration needs development scores with both labels (0 and 1)")
    u, inv = np.unique(s, return_inverse=True)
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]])
    # candidate j (j < len(u)) predicts used exactly the scores >= u[j]; the last predicts none
    tp = np.r_[np.cumsum(np.bincount(inv, weights=pos, minlength=len(u))[::-1])[::-1], 0.0]
    fp = np.r_[np.cumsum(np.bincount(inv, weights=~pos, minlength=len(u))[::-1])[::-1], 0.0]
    n, n_pos = float(len(s)), float(pos.sum())
    fn, tn = n_pos - tp, (n - n_pos) - fp
    if metric == "accuracy":
        value = (tp + tn) / n
    elif metric == "f1":
        denom = 2 * tp + fp + fn
        value = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    else:  # Cohen's kappa
        po = (tp + tn) / n
        pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
        value = np.divide(po - pe, 1 - pe, out=np.zeros_like(po), where=pe < 1)
    best = np.flatnonzero(value >= value.max() - 1e-12)
    i = int(best[len(best) // 2])
    return float(cands[i]), float(value[i])


class CalibratedThreshold:
    """The threshold that maximises ``metric`` ("f1", "accuracy" or "kappa") on development
    scores and labels, chosen by :func:`best_threshold` (candidates: midpoints between
    consecutive distinct scores; ties: the median of the equally good candidates)."""

    METRICS = METRICS

    def __init__(self, metric: str = "accuracy") -> None:
        validate_params(
            {"metric": metric}, {"metric": [Options(*self.METRICS)]}, "CalibratedThreshold"
        )
        self.metric = metric
        self.threshold_: float | None = None

    def fit(self, scores: object, y: object) -> CalibratedThreshold:
        """Choose the threshold; warn (:class:`SingleClassRuleWarning`) when it predicts every
        development image one class (the scores do not separate the labels better than that)."""
        self.threshold_, self.dev_value_ = best_threshold(scores, y, self.metric)
        warn_single_class(
            at_or_above(_scores(scores), self.threshold_),
            f"CalibratedThreshold({self.metric!r}) on {len(_scores(scores))} development scores",
        )
        return self

    def predict(self, scores: object) -> np.ndarray:
        if self.threshold_ is None:
            raise ValueError("CalibratedThreshold: call fit() with development scores first")
        return at_or_above(_scores(scores), self.threshold_)

    def describe(self) -> dict:
        return {
            "rule": "calibrated",
            "metric": self.metric,
            "threshold": self.threshold_,
            "development_value": getattr(self, "dev_value_", None),
        }


class TopFraction:
    """The ``fraction`` of images with the highest scores are used (ties broken by position)."""

    def __init__(self, fraction: float = 0.5) -> None:
        validate_params(
            {"fraction": fraction}, {"fraction": [Interval(float, 0, 1)]}, "TopFraction"
        )
        self.fraction = float(fraction)

    def fit(self, scores: object = None, y: object = None) -> TopFraction:
        return self

    def predict(self, scores: object) -> np.ndarray:
        s = _scores(scores)
        k = int(round(self.fraction * len(s)))
        out = np.zeros(len(s), dtype=int)
        out[np.argsort(-s, kind="stable")[:k]] = 1
        return out

    def describe(self) -> dict:
        return {"rule": "top_fraction", "fraction": self.fraction}


class ThresholdDecisionMixin:
    """``decision_function`` and ``predict`` of a membership estimator that compares each score
    with a threshold: the four membership estimators' one copy of "refuse without a rule, score
    minus threshold, used at or above it (:func:`at_or_above`), warn when every image is one
    class".

    The estimator provides ``score_samples`` and a fitted ``threshold_``; one whose ``rule`` is
    ``None`` only scores (``decision_function``/``predict`` refuse). Hooks: ``_scores_and_threshold
    (X)`` (scores and threshold in one pass, default ``score_samples(X)`` and ``threshold_``),
    ``_decide(X)`` (decision values and predictions, for rules that are not one threshold).
    """

    def __sklearn_tags__(self) -> Any:
        """Images in, not feature tables: scikit-learn's tabular checks do not apply (its API
        checks do: ``tests/test_sklearn_api.py``); two classes, 1 used and 0 not used."""
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_class = False
        return tags

    def _decision_name(self) -> str:
        rule = getattr(self, "rule", "")
        return type(self).__name__ + ("" if rule == "" else f"(rule={rule!r})")

    def _require_rule(self) -> None:
        if getattr(self, "rule", "") is None:
            raise ValueError(
                f"{type(self).__name__}(rule=None) only scores: use score_samples and decide "
                f"with a rule from ctfp.membership.decision, or set a rule"
            )

    def _scores_and_threshold(self, X: object) -> tuple[np.ndarray, float]:
        scores = self.score_samples(X)  # type: ignore[attr-defined]
        return np.asarray(scores, dtype=np.float64), float(self.threshold_)  # type: ignore[attr-defined]

    def _decide(self, X: object) -> tuple[np.ndarray, np.ndarray]:
        """(decision values, predictions): score minus threshold, used at or above it."""
        self._require_rule()
        s, t = self._scores_and_threshold(X)
        return s - t, at_or_above(s, t)

    def decision_function(self, X: object) -> np.ndarray:
        """Score minus the decision threshold: images at or above 0 are predicted used."""
        return self._decide(X)[0]

    def predict(self, X: object) -> np.ndarray:
        """1 (used to train the generator) or 0 (not used) per image; warns
        (:class:`SingleClassRuleWarning`) when every image is predicted one class."""
        pred = self._decide(X)[1]
        warn_single_class(pred, self._decision_name(), stacklevel=3)
        return pred


def make_rule(spec: str) -> Threshold | CalibratedThreshold | TopFraction:
    """``"threshold:0.5"``, ``"calibrated:f1"`` (or accuracy, kappa), ``"top:0.5"``."""
    name, _, arg = spec.partition(":")
    try:
        if name == "threshold":
            return Threshold(float(arg or 0.5))
        if name == "calibrated":
            return CalibratedThreshold(arg or "accuracy")
        if name == "top":
            return TopFraction(float(arg or 0.5))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"decision rule {spec!r}: {exc}") from None
    raise ValueError(
        f"decision rule {spec!r}: expected 'threshold:T', 'calibrated:METRIC' or 'top:FRACTION'"
    )
