"""Fused membership scores: several similarity scores combined by a model fitted on the
development labels, with cross-validation so that the combiner never sees in-sample scores.

Each member is a :class:`~ctfp.membership.similarity.SimilarityMembership` setting (pixel, SSIM,
embedding; statistics, ``k``, calibration, comparison size, query transforms): different
measures and scales catch different traces of a copy. :class:`FusedMembership` fits them and a
combiner:

1. Each member's generated-set index is fitted once (reused by every fold; ``index_cache``
   keeps it across fits and runs).
2. **Out-of-fold base scores** over stratified folds
   (:func:`ctfp.membership.leaktest.cross_fit_scores`, ``cross_val_predict`` for
   ``score_samples``): every development image's base scores come from member fits
   (calibration, radius) that did not see its label.
3. The combiner (``"logistic"``: ``StandardScaler`` + ``LogisticRegression``; ``"hgb"``:
   ``HistGradientBoostingClassifier``) is fitted on those out-of-fold scores and the labels.
4. The members are refitted on all development images; a new image's fused score is the
   combiner's log-odds (``decision_function``; for ``"hgb"``, the logit of its probability) of
   the members' scores.
5. ``rule="calibrated"``: the threshold maximising ``metric`` on *out-of-fold fused* scores
   (the combiner itself cross-validated on the out-of-fold base scores, same folds), by
   :class:`~ctfp.membership.decision.CalibratedThreshold`.

Only development data enter: test images are scored, never fitted on, and their labels are never
seen (``tests/test_membership_extra.py`` checks that permuting them changes nothing).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from ctfp._util import (
    DEVICE,
    IMAGE_SIZE,
    N_JOBS,
    RANDOM_STATE,
    Check,
    Constraint,
    InstanceOf,
    Interval,
    Options,
    check_binary_labels,
    images_given,
    require_fitted,
    seed_from,
    stratified_folds,
    validate_params,
)
from ctfp.membership.decision import METRICS, CalibratedThreshold, ThresholdDecisionMixin
from ctfp.membership.index import GeneratedIndex

__all__ = ["DEFAULT_MEMBERS", "FusedGenerated", "FusedMembership"]

#: The default members: the best pixel and SSIM settings of the realistic leak benchmark's
#: development split (docs/benchmark_presets.md, docs/slices_per_patient.md; ``ctfp run
#: --method sim-fused``): the distance to the mean of the 10 closest generated images at 64x64,
#: by pixels and by SSIM, each as a density ratio to the real images (``calibration="real"``,
#: the real term over the 30 closest real images).
DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = tuple(
    {"measure": m, "image_size": 64, "statistic": "centroid", "k": 10, "k_real": 30,
     "calibration": "real"}
    for m in ("pixel", "ssim")
)  # fmt: skip

_SHARED = ("device", "n_jobs", "random_state", "index_cache")


def _is_members(v: object) -> bool:
    return (
        isinstance(v, (list, tuple))
        and len(v) > 0
        and all(isinstance(m, dict) and "rule" not in m for m in v)
    )


class FusedGenerated:
    """The generated set as a fitted :class:`FusedMembership` holds it: one fitted
    :class:`GeneratedIndex` per member. Pass it back as ``generated=`` to refit without
    indexing again (it has no length, so scikit-learn never slices it per fold)."""

    def __init__(self, indexes: list[GeneratedIndex], sources: Any) -> None:
        self.indexes = indexes
        self.sources = sources


class FusedMembership(ThresholdDecisionMixin, ClassifierMixin, BaseEstimator):
    """Several similarity scores fused by a cross-validated model of the development labels.

    Parameters
    ----------
    members : list of dict, optional
        :class:`~ctfp.membership.similarity.SimilarityMembership` settings, one per base score
        (no ``rule``: members only score). Default :data:`DEFAULT_MEMBERS`.
    combiner : {"logistic", "hgb"}
        ``"logistic"``: ``StandardScaler`` + ``LogisticRegression(C=C)``; ``"hgb"``:
        ``HistGradientBoostingClassifier`` (shallow, for many members / development images).
    C : float
        Inverse regularisation of the logistic combiner.
    image_size : int, optional
        Replaces every member's comparison size (None: each member's own).
    cv : int
        Stratified folds for the out-of-fold scores (lowered to the smaller class's size).
    rule : {"calibrated", None}
    metric : {"accuracy", "f1", "kappa"}
    index_cache, device, n_jobs, random_state :
        Passed to every member (see ``SimilarityMembership``); ``random_state`` also seeds the
        folds and the combiner.

    Attributes
    ----------
    estimators_ : list of SimilarityMembership
        The members, fitted on all development images.
    combiner_ : estimator
        Fitted on the out-of-fold base scores.
    oof_scores_ : float64 ``(n_dev, n_members)``
        The out-of-fold base scores the combiner was fitted on.
    dev_scores_ : float64 ``(n_dev,)``
        Out-of-fold fused scores (the threshold's).
    threshold_ : float or None
    generated_ : FusedGenerated
    """

    _parameter_constraints: dict[str, list[Constraint]] = {
        "members": [
            None,
            Check(
                _is_members,
                "a non-empty list of dicts of settings, no 'rule'",
                types=(list, tuple),
            ),
        ],
        "combiner": [Options("logistic", "hgb")],
        "C": [Interval(float, 0, None, closed="neither")],
        "image_size": [None, *IMAGE_SIZE],
        "cv": [Interval(int, 2, None)],
        "rule": [None, Options("calibrated")],
        "metric": [Options(*METRICS)],
        "index_cache": [None, InstanceOf((str, os.PathLike), "a folder path")],
        "device": DEVICE,
        "n_jobs": N_JOBS,
        "random_state": RANDOM_STATE,
    }

    def __init__(
        self,
        *,
        members: list[dict[str, Any]] | None = None,
        combiner: str = "logistic",
        C: float = 1.0,
        image_size: int | None = None,
        cv: int = 5,
        rule: str | None = "calibrated",
        metric: str = "accuracy",
        index_cache: str | os.PathLike[str] | None = None,
        device: Any = "auto",
        n_jobs: int | None = None,
        random_state: Any = None,
    ) -> None:
        self.members = members
        self.combiner = combiner
        self.C = C
        self.image_size = image_size
        self.cv = cv
        self.rule = rule
        self.metric = metric
        self.index_cache = index_cache
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _member(self, settings: dict[str, Any]) -> Any:
        from ctfp.membership.similarity import SimilarityMembership

        shared = {k: getattr(self, k) for k in _SHARED}
        size = {} if self.image_size is None else {"image_size": self.image_size}
        return SimilarityMembership(**{**shared, **settings, **size, "rule": None})

    def _combiner(self, seed: int) -> Any:
        if self.combiner == "hgb":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(
                max_depth=3, max_iter=100, learning_rate=0.1, random_state=seed
            )
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))

    @staticmethod
    def _log_odds(model: Any, Z: np.ndarray) -> np.ndarray:
        if hasattr(model, "decision_function"):
            return np.asarray(model.decision_function(Z), dtype=np.float64)
        p = np.clip(model.predict_proba(Z)[:, 1], 1e-9, 1 - 1e-9)
        return np.log(p / (1 - p))

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        generated: Any = None,
        reference: Any = None,
        groups: Any = None,
        reference_groups: Any = None,
    ) -> FusedMembership:
        """Fit the members and the combiner on the labelled development images ``(X, y)``;
        ``generated``: the generated images, or the ``generated_`` of a fitted
        ``FusedMembership`` with the same members (reused as it is); ``reference``: unlabelled
        real images for the members with ``calibration="real"``; ``groups`` /
        ``reference_groups``: group labels (the patient) of ``X`` / ``reference`` for them
        (:meth:`SimilarityMembership.fit <ctfp.membership.similarity.SimilarityMembership.fit>`)."""
        from ctfp.membership.leaktest import cross_fit_scores

        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        if generated is None:
            raise ValueError(
                "generated: expected the generator's images (fit(X, y, generated=...)), found None"
            )
        if not isinstance(generated, FusedGenerated):
            generated = images_given(generated, "generated", "generated image")
        items = images_given(X, "X", "development image")
        lab = check_binary_labels(y, "y", len(items))
        folds = int(min(self.cv, (lab == 1).sum(), (lab == 0).sum()))
        if folds < 2:
            raise ValueError(
                "FusedMembership needs at least 2 used and 2 not-used development images for "
                "its cross-validation"
            )
        seed = seed_from(self.random_state) % (2**32)
        settings = list(self.members or DEFAULT_MEMBERS)
        given = generated.indexes if isinstance(generated, FusedGenerated) else None
        if given is not None and len(given) != len(settings):
            raise ValueError(
                f"generated: a fitted set of {len(given)} member indexes for "
                f"{len(settings)} members"
            )
        splits = stratified_folds(lab, folds, seed)
        self.estimators_, indexes = [], []
        oof = np.empty((len(lab), len(settings)), np.float64)
        for j, m in enumerate(settings):
            member = self._member(m)
            index = member.build_index(given[j] if given is not None else generated)
            indexes.append(index)
            extra = {
                k: v
                for k, v in (
                    ("reference", reference),
                    ("groups", groups),
                    ("reference_groups", reference_groups),
                )
                if v is not None
            }
            oof[:, j] = cross_fit_scores(
                member, items, lab, generated=index, splits=splits, fit_params=extra
            )
            self.estimators_.append(clone(member).fit(items, lab, generated=index, **extra))
        self.oof_scores_ = oof
        model = self._combiner(seed)
        self.combiner_ = clone(model).fit(oof, lab)
        self.dev_scores_ = np.empty(len(lab), np.float64)
        for train, test in splits:
            fold = clone(model).fit(oof[train], lab[train])
            self.dev_scores_[test] = self._log_odds(fold, oof[test])
        self.classes_ = np.array([0, 1])
        self.calibrator_: CalibratedThreshold | None = None
        self.threshold_: float | None = None
        if self.rule == "calibrated":
            self.calibrator_ = CalibratedThreshold(self.metric).fit(self.dev_scores_, lab)
            self.threshold_ = self.calibrator_.threshold_
        sources = generated.sources if isinstance(generated, FusedGenerated) else generated
        self.generated_ = FusedGenerated(indexes, sources)
        return self

    def base_scores(self, X: Any) -> np.ndarray:
        """The members' scores of ``X``, ``(n, n_members)``."""
        require_fitted(self, "combiner_")
        return np.column_stack([e.score_samples(X) for e in self.estimators_])

    def score_samples(self, X: Any) -> np.ndarray:
        """The fused score (the combiner's log-odds of "used"; higher = more likely used)."""
        require_fitted(self, "combiner_")
        return self._log_odds(self.combiner_, self.base_scores(X))

    def describe(self) -> dict[str, Any]:
        require_fitted(self, "combiner_")
        out: dict[str, Any] = {
            "method": "fused",
            "combiner": self.combiner,
            "members": [e.describe() for e in self.estimators_],
            "rule": self.rule,
            "threshold": self.threshold_,
        }
        model = self.combiner_
        if self.combiner == "logistic":
            out["coefficients"] = model[-1].coef_.ravel().tolist()
        return out
