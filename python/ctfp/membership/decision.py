"""Decision rules from membership scores (higher = more likely used) to labels (1 used, 0 not).

Every rule is fitted on development data only and records itself (``describe()``) next to the
results it produced, so a table says which threshold made it. Threshold calibration has one home,
:func:`best_threshold` (one candidate set, one tie-break: the median of the equally good
candidates); :class:`CalibratedThreshold` wraps it, and every part of ctfp that calibrates
(:class:`~ctfp.membership.similarity.SimilarityMembership`, the experiment runner) uses that.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "METRICS",
    "CalibratedThreshold",
    "SingleClassRuleWarning",
    "Threshold",
    "TopFraction",
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


class Threshold:
    """Used when ``score >= threshold`` (the paper's rule: 0.5 on the classifier's probability)."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)
        if np.isnan(self.threshold):
            raise ValueError(f"threshold: expected a number, found {threshold!r}")

    def fit(self, scores: object = None, y: object = None) -> Threshold:
        return self

    def predict(self, scores: object) -> np.ndarray:
        return (_scores(scores) >= self.threshold).astype(int)

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
    if metric not in METRICS:
        raise ValueError(
            f"metric: expected one of {', '.join(map(repr, METRICS))}, found {metric!r}"
        )
    s = _scores(scores)
    y = np.asarray(y)
    if y.shape != s.shape:
        raise ValueError(f"y: expected one label per score, shape {s.shape}, found shape {y.shape}")
    # Checked before the cast to int, so that 0.7 or 2 is refused rather than read as 0 or 1.
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y: expected labels 0 (not used) and 1 (used)")
    pos = y.astype(int) == 1
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
        if metric not in self.METRICS:
            raise ValueError(
                f"metric: expected one of {', '.join(map(repr, self.METRICS))}, found {metric!r}"
            )
        self.metric = metric
        self.threshold_: float | None = None

    def fit(self, scores: object, y: object) -> CalibratedThreshold:
        """Choose the threshold; warn (:class:`SingleClassRuleWarning`) when it predicts every
        development image one class (the scores do not separate the labels better than that)."""
        self.threshold_, self.dev_value_ = best_threshold(scores, y, self.metric)
        warn_single_class(
            _scores(scores) >= self.threshold_,
            f"CalibratedThreshold({self.metric!r}) on {len(_scores(scores))} development scores",
        )
        return self

    def predict(self, scores: object) -> np.ndarray:
        if self.threshold_ is None:
            raise ValueError("CalibratedThreshold: call fit() with development scores first")
        return (_scores(scores) >= self.threshold_).astype(int)

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
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"fraction: expected a number in [0, 1], found {fraction!r}")
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
    except ValueError as exc:
        raise ValueError(f"decision rule {spec!r}: {exc}") from None
    raise ValueError(
        f"decision rule {spec!r}: expected 'threshold:T', 'calibrated:METRIC' or 'top:FRACTION'"
    )
