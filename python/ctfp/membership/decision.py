"""Decision rules from membership scores (higher = more likely used) to labels (1 used, 0 not).

Every rule is fitted on development data only and records itself (``describe()``) next to the
results it produced, so a table says which threshold made it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CalibratedThreshold", "Threshold", "TopFraction", "make_rule"]


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


class CalibratedThreshold:
    """The threshold that maximises ``metric`` ("f1", "accuracy" or "kappa") on development
    scores and labels; candidates are the midpoints between consecutive distinct scores."""

    METRICS = ("f1", "accuracy", "kappa")

    def __init__(self, metric: str = "accuracy") -> None:
        if metric not in self.METRICS:
            raise ValueError(
                f"metric: expected one of {', '.join(map(repr, self.METRICS))}, found {metric!r}"
            )
        self.metric = metric
        self.threshold_: float | None = None

    def fit(self, scores: object, y: object) -> CalibratedThreshold:
        from sklearn import metrics as m

        s = _scores(scores)
        y = np.asarray(y)
        if y.shape != s.shape:
            raise ValueError(
                f"y: expected one label per score, shape {s.shape}, found shape {y.shape}"
            )
        # Checked before the cast to int, so that 0.7 or 2 is refused rather than read as 0 or 1.
        if not np.isin(y, (0, 1)).all():
            raise ValueError("y: expected labels 0 (not used) and 1 (used)")
        y = y.astype(int)
        if len(set(y.tolist())) != 2:
            raise ValueError("calibration needs development scores with both labels (0 and 1)")
        u = np.unique(s)
        cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
        score_fn = {
            "f1": lambda p: m.f1_score(y, p, zero_division=0),
            "accuracy": lambda p: m.accuracy_score(y, p),
            "kappa": lambda p: m.cohen_kappa_score(y, p) if len(set(p.tolist())) > 1 else 0.0,
        }[self.metric]
        values = [score_fn((s >= t).astype(int)) for t in cands]
        self.threshold_ = float(cands[int(np.argmax(values))])
        self.dev_value_ = float(np.max(values))
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
