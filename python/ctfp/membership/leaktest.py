"""Does this generator leak its training images at all? A test before any per-image verdict.

Per-image membership predictions mean something only if the generated set carries membership
information in the first place. :func:`run_leak_test` answers that on the labelled development
images, before any threshold, with a permutation test whose level is exact by construction
(docs/leaktest.md gives the argument and the measured size and power):

1. **The statistic.** Mann-Whitney's U of used (1) against not-used (0) development scores
   (equivalently the ROC-AUC ``U / (n1 n0)``); with ``groups`` (patients), of the patients' mean
   scores. How the scores are made depends on whether the estimator's scores use the labels
   (:func:`pipeline_of`):

   - ``"scores"``: they do not (``SimilarityMembership`` with ``calibration=None`` or
     ``"real"``, GAN-Leaks, VCMI): one fit on all development images, labels unused, scores
     every image once (an image in its own real reference is left out of it).
   - ``"combiner"``: only a combiner learns from the labels (``FusedMembership`` whose members
     use no labels): the members' scores as above, once; the combiner cross-fitted on them.
   - ``"refit"``: anything else (``calibration="reference"`` / ``"density"``, an estimator ctfp
     does not know): the whole estimator cross-fitted (:func:`cross_fit_scores`).
2. **The p-value.** The development labels are relabelled: used and not-used swapped at random
   between images (with ``groups``: between whole patients), the class sizes kept, and
   everything that uses the labels is rerun (the cross-fitting and its folds included). The
   p-value is the share of relabelings whose statistic reaches the observed one: over all of
   them when there are at most ``n_permutations + 1`` (exact enumeration), else over
   ``n_permutations`` random ones with the observed labelling counted as one of them
   (``(1 + hits) / (B + 1)``). Either way ``P(p <= alpha) <= alpha`` when, given the images and
   the generated set, every labelling with these class sizes is equally likely (no leak: the
   generator does not tell used from not-used). The record says how many relabelings, the
   resolution ``1 / (B + 1)`` and the path. Permutations are cheap where the pipeline allows:
   on the ``"scores"`` path the scores are computed once and only the labels move (ranks once,
   one matrix product for all relabelings); on ``"combiner"`` only the combiner is refitted.
3. **The no-generator control.** The same estimator, pipeline and test, with the generated set
   replaced by a stand-in that cannot hold a copy of any training image: up to ``max_control``
   generated images with their pixels randomly permuted (each keeps its own grey-level
   histogram, so brightness and contrast match; every spatial structure is gone). Whatever
   separation the control shows comes from the pipeline or the groups themselves (a used group
   that is brighter, ...), not from the generator.

Verdict: ``"no evidence"`` when the test does not reject at ``alpha`` (``p <= alpha``);
``"leak"`` when it rejects and the control does not; when both reject (the groups separate
without the generator too), ``"leak"`` only if the generated set separates them *better* than
the control does (DeLong's test of the two ROC-AUCs on the same images, one-sided,
:func:`auc_difference`), else ``"inconclusive"``. Only ``"leak"`` supports per-image
predictions; the runner still writes them, marked unsupported.

Several methods on one dataset make a family of tests: :func:`family_verdict` gives the one
verdict for all of them (Holm's step-down adjustment of the p-values; raw and adjusted kept).

Slices of one patient are not independent: relabelling single images of several-slice patients
is not a relabelling the null allows. Pass ``groups=`` (patient ids) where they are known; the
relabelings then move whole patients. ``test="mannwhitney"`` is the earlier test (one-sided
Mann-Whitney U on cross-fitted scores, scipy's exact or normal p-value): its level is not
guaranteed when the scores use the labels; kept for comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctfp._util import check_binary_labels, seed_from, stratified_folds

__all__ = [
    "ADJUSTMENTS",
    "DEFAULT_PERMUTATIONS",
    "PIPELINES",
    "TESTS",
    "VERDICTS",
    "auc_difference",
    "auc_interval",
    "cross_fit_scores",
    "family_verdict",
    "holm",
    "leak_test",
    "permutation_pvalue",
    "permutation_test",
    "pipeline_of",
    "plot_null_distribution",
    "relabelings",
    "reusable_generated",
    "run_leak_test",
    "shuffled_standin",
]

VERDICTS = ("leak", "no evidence", "inconclusive", "not tested")


def leak_test(scores: Any, y: Any, *, alpha: float = 0.05) -> dict[str, Any]:
    """One-sided Mann-Whitney U of the scores of used (``y == 1``) against not-used images.

    Returns ``n_used``, ``n_not_used``, ``u`` (the used group's U), ``p_value``, ``auc``
    (``u / (n_used n_not_used)``), ``cliffs_delta`` (``2 auc - 1``) and ``reject``
    (``p_value < alpha``).
    """
    from scipy.stats import mannwhitneyu

    s = np.asarray(scores, dtype=float)
    lab = np.asarray(y)
    if s.shape != lab.shape or s.ndim != 1:
        raise ValueError(
            f"scores and y: expected two 1-D arrays of one length, {s.shape}, {lab.shape}"
        )
    if not np.isfinite(s).all():
        raise ValueError("scores: expected finite values")
    used, not_used = s[lab == 1], s[lab == 0]
    if len(used) == 0 or len(not_used) == 0:
        raise ValueError("leak_test needs both used (1) and not-used (0) images")
    res = mannwhitneyu(used, not_used, alternative="greater")
    u = float(res.statistic)
    auc = u / (len(used) * len(not_used))
    p = float(res.pvalue)
    return {
        "n_used": int(len(used)),
        "n_not_used": int(len(not_used)),
        "u": u,
        "p_value": p,
        "auc": float(auc),
        "cliffs_delta": float(2.0 * auc - 1.0),
        "reject": bool(p < alpha),
    }


def reusable_generated(estimator: Any) -> Any:
    """What a fitted ctfp membership estimator can take back as ``generated=`` without indexing
    the generated images again: its ``index_`` (:class:`SimilarityMembership`) or its
    ``generated_`` (the baselines, :class:`FusedMembership`)."""
    for name in ("index_", "generated_"):
        v = getattr(estimator, name, None)
        if v is not None:
            return v
    raise ValueError(f"{type(estimator).__name__}: not fitted (no index_ or generated_)")


def cross_fit_scores(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    generated: Any,
    n_splits: int = 5,
    random_state: int = 0,
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
    fit_params: dict[str, Any] | None = None,
) -> np.ndarray:
    """Out-of-fold scores of the labelled images ``X``: fold ``f`` is scored
    (``score_samples``) by a clone of ``estimator`` fitted on the other folds with their
    labels (stratified folds, shuffled with ``random_state``; or the given ``splits``, pairs of
    train/test indices). ``generated`` goes to every fit as it is (pass a fitted index, see
    :func:`reusable_generated`, so that it is indexed once), with any other ``fit_params``
    (e.g. ``reference=``, unlabelled real images); those that hold one value per image of
    ``X`` (:data:`PER_IMAGE_PARAMS`: ``groups``) are cut to each fold's images like ``X``.
    ctfp's one cross-fitting, used by the
    leak test and by :class:`~ctfp.membership.fused.FusedMembership` (scikit-learn's
    ``cross_val_predict`` does not take ``method="score_samples"``)."""
    from sklearn.base import clone

    items = X if isinstance(X, np.ndarray) else list(X)
    lab = check_binary_labels(y, "y")
    out = np.full(len(lab), np.nan)
    for train, test in (
        splits if splits is not None else stratified_folds(lab, n_splits, random_state)
    ):
        est = clone(estimator)
        _scores_only(est)
        params = {
            k: _take(list(v), train) if k in PER_IMAGE_PARAMS and v is not None else v
            for k, v in (fit_params or {}).items()
        }
        est.fit(_take(items, train), lab[train], generated=generated, **params)
        out[test] = est.score_samples(_take(items, test))
    return out


#: fit parameters with one value per image of ``X``: cross-fitting gives each fold its own
PER_IMAGE_PARAMS = ("groups",)


def _take(items: Any, idx: np.ndarray) -> Any:
    return items[idx] if isinstance(items, np.ndarray) else [items[i] for i in idx]


def _scores_only(est: Any) -> None:
    """Fold fits only score: no threshold of their own (a calibrated rule would warn about, or
    fail on, folds it does not need)."""
    if "rule" in est.get_params() and est.get_params()["rule"] is not None:
        est.set_params(rule=None)


def _sources(generated: Any) -> Any:
    """The generated images behind whatever ``generated=`` was (images, index, fitted set)."""
    from ctfp.membership.index import GeneratedIndex

    if isinstance(generated, GeneratedIndex):
        if generated.sources is not None:
            return generated.sources
        if generated.images is not None:
            return generated.images
        raise ValueError("the generated index holds neither its images nor their sources")
    inner = getattr(generated, "sources", None)  # FusedMembership's fitted generated set
    if inner is not None:
        return inner
    return generated


CONTROLS = ("shuffle", "vflip")


def shuffled_standin(
    generated: Any, *, kind: str = "shuffle", max_images: int | None = 2000, random_state: int = 0
) -> np.ndarray:
    """The no-generator control's stand-in: up to ``max_images`` of the generated images (drawn
    without replacement with ``random_state``), each with its pixels randomly permuted
    (``kind="shuffle"``) or turned upside down (``"vflip"``: every image statistic kept, the
    global layout no longer matches any real image); uint8 ``(M, H, W)`` at the generated
    images' size."""
    from ctfp.data.images import is_image_stack as _is_image_stack
    from ctfp.data.images import load_images

    if kind not in CONTROLS:
        raise ValueError(f"kind: expected one of {', '.join(map(repr, CONTROLS))}, found {kind!r}")
    src = _sources(generated)
    items = src if _is_image_stack(src) else list(src)
    rng = np.random.default_rng(seed_from(random_state))
    n = len(items)
    m = n if max_images is None else min(n, int(max_images))
    pick = np.sort(rng.choice(n, m, replace=False))
    imgs = load_images(_take(items, pick))
    if kind == "vflip":
        return np.ascontiguousarray(imgs[:, ::-1, :])
    flat = imgs.reshape(m, -1)
    out = np.empty_like(flat)
    for i in range(m):
        out[i] = flat[i, rng.permutation(flat.shape[1])]
    return out.reshape(imgs.shape)


def _group_means(
    scores: np.ndarray, y: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean score and label of each group (a group must hold one label only)."""
    lab, inv = _units(y, groups)
    return _unit_means(np.asarray(scores, dtype=float), inv, len(lab)), lab


def auc_difference(a: Any, b: Any, y: Any) -> dict[str, float]:
    """DeLong's test that scores ``a`` rank used (``y == 1``) above not-used images better than
    scores ``b`` of the same images: the ROC-AUC difference, its standard error from the two
    AUCs' structural components (DeLong, DeLong & Clarke-Pearson 1988) and the one-sided p-value
    of ``AUC(a) > AUC(b)`` (normal approximation)."""
    from scipy.stats import norm

    lab = np.asarray(y)
    comps10, comps01, aucs = [], [], []
    for s in (np.asarray(a, float), np.asarray(b, float)):
        pos, neg = s[lab == 1], s[lab == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        comps10.append(psi.mean(1))
        comps01.append(psi.mean(0))
        aucs.append(float(psi.mean()))
    var = 0.0
    for comps in (comps10, comps01):
        c = np.cov(np.stack(comps), ddof=1)
        var += float(c[0, 0] + c[1, 1] - 2 * c[0, 1]) / len(comps[0])
    diff = aucs[0] - aucs[1]
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0:
        p = float(norm.sf(diff / se))
    else:  # no variation left: the difference is exact
        p = 0.0 if diff > 0 else 1.0
    return {"auc_difference": diff, "se": se, "p_value": p}


# --------------------------------------------------------------------------------------------
# the permutation test

#: the ways the statistic is recomputed under relabelling (:func:`pipeline_of`)
PIPELINES = ("scores", "combiner", "refit")
#: relabelings drawn when ``n_permutations`` is not given, per pipeline: resolution 1e-4 where
#: only labels move, 1/1000 where a combiner is refitted, 1/200 where the whole estimator is
#: (each still enough for alpha = 0.05 and a Holm family of up to 9 methods: 0.05 / 9 > 1/200)
DEFAULT_PERMUTATIONS = {"scores": 9_999, "combiner": 999, "refit": 199}
#: the tests :func:`run_leak_test` runs
TESTS = ("permutation", "mannwhitney")
#: family-wise adjustments of :func:`family_verdict`
ADJUSTMENTS = ("holm", "bonferroni", "none")

# domain tag of the relabelings' random stream
_TAG_PERMUTE = 0x4C45_414B_54


def _label_free(settings: Any) -> bool:
    return settings.get("calibration", "real") in (None, "real")


def pipeline_of(estimator: Any) -> str:
    """Which of :data:`PIPELINES` gives ``estimator``'s leak test an exact level at the least
    cost: ``"scores"`` when its scores use no labels (``SimilarityMembership`` with
    ``calibration`` None or ``"real"``, ``GANLeaks``, ``VCMISSIM``; its own threshold is never
    used), ``"combiner"`` for a ``FusedMembership`` whose members use none (only its combiner
    learns from the labels), ``"refit"`` otherwise (the whole estimator refitted per
    relabelling)."""
    from ctfp.membership.baselines import VCMISSIM, GANLeaks
    from ctfp.membership.fused import DEFAULT_MEMBERS, FusedMembership
    from ctfp.membership.similarity import SimilarityMembership

    if isinstance(estimator, (GANLeaks, VCMISSIM)):
        return "scores"
    if isinstance(estimator, SimilarityMembership):
        return "scores" if _label_free(estimator.get_params()) else "refit"
    if isinstance(estimator, FusedMembership):
        members = list(estimator.members or DEFAULT_MEMBERS)
        return "combiner" if all(_label_free(m) for m in members) else "refit"
    return "refit"


def _units(y: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(label of each unit, unit of each image): images, or groups holding one label each."""
    if groups is None:
        return y.astype(np.int64), np.arange(len(y))
    names, inv = np.unique(groups, return_inverse=True)
    lab = np.zeros(len(names), np.int64)
    for g in range(len(names)):
        vals = np.unique(y[inv == g])
        if len(vals) != 1:
            raise ValueError(
                f"groups: group {names[g].tolist()!r} holds both used and not-used images; "
                f"the leak test compares whole groups (patients), each used or not"
            )
        lab[g] = vals[0]
    return lab, inv


def _unit_means(scores: np.ndarray, inv: np.ndarray, n_units: int) -> np.ndarray:
    return np.bincount(inv, weights=scores, minlength=n_units) / np.bincount(inv, minlength=n_units)


def relabelings(labels: Any, n_permutations: int, random_state: Any = 0) -> tuple[np.ndarray, bool]:
    """The relabelings of a permutation test of ``labels`` (0/1 per unit): ``(L, exact)``.

    ``exact``: every labelling with the same number of ones, once each (the observed one
    among them), when there are at most ``n_permutations + 1``; else ``n_permutations``
    uniformly random permutations of ``labels`` (seeded by ``random_state``). ``L``: int8
    ``(B, n_units)``.
    """
    from itertools import combinations
    from math import comb

    lab = np.asarray(labels, dtype=np.int64)
    n, n1 = len(lab), int(lab.sum())
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ValueError(f"n_permutations: expected a positive integer, found {n_permutations!r}")
    if comb(n, n1) <= n_permutations + 1:
        rows = list(combinations(range(n), n1))
        out = np.zeros((len(rows), n), np.int8)
        for r, ones in enumerate(rows):
            out[r, list(ones)] = 1
        return out, True
    rng = np.random.default_rng([_TAG_PERMUTE, seed_from(random_state)])
    return rng.permuted(np.tile(lab.astype(np.int8), (int(n_permutations), 1)), axis=1), False


def _midranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def permutation_pvalue(observed: float, null: Any, *, exact: bool) -> float:
    """The one-sided (greater) p-value of ``observed`` against the statistics ``null`` of the
    relabelings: ``hits / B`` over an exact enumeration (which holds the observed labelling),
    ``(1 + hits) / (B + 1)`` over random relabelings; a hit reaches ``observed`` up to a
    rounding tolerance."""
    t = np.asarray(null, dtype=float)
    tol = 1e-9 * max(1.0, abs(float(observed)))
    hits = int((t >= observed - tol).sum())
    return hits / len(t) if exact else (1 + hits) / (len(t) + 1)


def _null_histogram(aucs: np.ndarray, bins: int = 40) -> dict[str, Any]:
    counts, edges = np.histogram(aucs, bins=bins, range=(0.0, 1.0))
    return {"edges": np.round(edges, 6).tolist(), "counts": counts.tolist()}


def auc_interval(scores: Any, y: Any, *, level: float = 0.95) -> list[float]:
    """The ROC-AUC of used (``y == 1``) over not-used scores with DeLong's ``level`` interval
    (normal, the variance from the structural components; clipped to [0, 1])."""
    from scipy.stats import norm

    s, lab = np.asarray(scores, float), np.asarray(y)
    pos, neg = s[lab == 1], s[lab == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = float(psi.mean())
    v10, v01 = psi.mean(1), psi.mean(0)
    var = (np.var(v10, ddof=1) / len(v10) if len(v10) > 1 else 0.0) + (
        np.var(v01, ddof=1) / len(v01) if len(v01) > 1 else 0.0
    )
    h = float(norm.ppf(0.5 + level / 2)) * float(np.sqrt(var))
    return [max(0.0, auc - h), min(1.0, auc + h)]


def permutation_test(
    scores: Any,
    y: Any,
    *,
    groups: Any = None,
    n_permutations: int = DEFAULT_PERMUTATIONS["scores"],
    alpha: float = 0.05,
    random_state: Any = 0,
) -> dict[str, Any]:
    """The leak test's permutation test on scores that use no labels: one-sided, used > not
    used, statistic Mann-Whitney's U (ties as 1/2) of the images' scores, or with ``groups`` of
    the groups' mean scores, labels swapped between whole groups.

    Exact level (``P(p <= alpha) <= alpha``) whenever the labelling is exchangeable given the
    scores (see docs/leaktest.md). Returns :func:`leak_test`'s keys (``p_value`` now the
    permutation p-value, ``reject`` ``p_value <= alpha``) and ``n_permutations``,
    ``exact_enumeration``, ``p_value_resolution`` (the smallest step of the p-value),
    ``p_value_mannwhitney`` (scipy's, for comparison), ``auc_interval`` (DeLong, 95 %) and
    ``null_histogram`` (the relabelings' ROC-AUCs, 40 bins over [0, 1]).
    """
    s = np.asarray(scores, dtype=float)
    lab = check_binary_labels(y, "y")
    if s.shape != lab.shape or s.ndim != 1:
        raise ValueError(
            f"scores and y: expected two 1-D arrays of one length, {s.shape}, {lab.shape}"
        )
    if not np.isfinite(s).all():
        raise ValueError("scores: expected finite values")
    grp = None if groups is None else np.asarray(groups)
    if grp is not None and grp.shape != lab.shape:
        raise ValueError(f"groups: expected one id per image ({lab.shape}), found {grp.shape}")
    ulab, inv = _units(lab, grp)
    us = s if grp is None else _unit_means(s, inv, len(ulab))
    L, exact = relabelings(ulab, n_permutations, random_state)
    return _rank_test(us, ulab, L, exact, alpha)


def _rank_test(
    us: np.ndarray, ulab: np.ndarray, L: np.ndarray, exact: bool, alpha: float
) -> dict[str, Any]:
    """The permutation test of unit scores ``us`` that stay fixed under relabelling."""
    out = leak_test(us, ulab, alpha=alpha)
    n1, n0 = out["n_used"], out["n_not_used"]
    r = _midranks(us)
    base = n1 * (n1 + 1) / 2.0
    null = np.concatenate(
        [L[i : i + 2048].astype(np.float64) @ r - base for i in range(0, len(L), 2048)]
    )
    return _finish(out, null, n1 * n0, exact, alpha, us, ulab)


def _finish(
    out: dict[str, Any],
    null_u: np.ndarray,
    n1n0: int,
    exact: bool,
    alpha: float,
    us: np.ndarray,
    ulab: np.ndarray,
) -> dict[str, Any]:
    p = permutation_pvalue(out["u"], null_u, exact=exact)
    b = len(null_u)
    out["p_value_mannwhitney"] = out["p_value"]
    out.update(
        p_value=p,
        reject=bool(p <= alpha),
        n_permutations=int(b),
        exact_enumeration=bool(exact),
        p_value_resolution=1.0 / b if exact else 1.0 / (b + 1),
        auc_interval=auc_interval(us, ulab),
        null_histogram=_null_histogram(null_u / n1n0),
    )
    return out


def _u_of(scores: np.ndarray, ulab: np.ndarray) -> float:
    r = _midranks(scores)
    n1 = int(ulab.sum())
    return float(r[ulab == 1].sum() - n1 * (n1 + 1) / 2.0)


class _Pipeline:
    """The development scores of one generated set as a function of the labels, on one of the
    :data:`PIPELINES`; what must be fitted once is fitted at construction."""

    def __init__(
        self,
        kind: str,
        estimator: Any,
        items: Any,
        lab: np.ndarray,
        generated: Any,
        *,
        k: int,
        random_state: Any,
        grp: np.ndarray | None,
        fit_params: dict[str, Any] | None,
    ) -> None:
        from sklearn.base import clone

        self.kind, self.estimator, self.items = kind, estimator, items
        self.k, self.random_state, self.grp = k, random_state, grp
        self.fit_params = fit_params or {}
        self.fixed: np.ndarray | None = None
        if kind == "combiner":
            self._fit_members(generated, lab)
            return
        full = clone(estimator)
        _scores_only(full)
        full.fit(items, lab, generated=generated, **self.fit_params)
        self.generated = reusable_generated(full)
        if kind == "scores":
            self.fixed = np.asarray(full.score_samples(items), dtype=float)

    def _fit_members(self, generated: Any, lab: np.ndarray) -> None:
        """A fused estimator's members, each fitted once on all development images (their
        scores use no labels), and their scores of them: the combiner's features."""
        from ctfp.membership.fused import DEFAULT_MEMBERS, FusedGenerated

        est = self.estimator
        settings = list(est.members or DEFAULT_MEMBERS)
        given = generated.indexes if isinstance(generated, FusedGenerated) else None
        if given is not None and len(given) != len(settings):
            raise ValueError(
                f"generated: a fitted set of {len(given)} member indexes for "
                f"{len(settings)} members"
            )
        cols, indexes = [], []
        for j, m in enumerate(settings):
            member = est._member(m)
            index = member.build_index(given[j] if given is not None else generated)
            indexes.append(index)
            member.fit(self.items, lab, generated=index, **self.fit_params)
            cols.append(np.asarray(member.score_samples(self.items), dtype=float))
        sources = generated.sources if isinstance(generated, FusedGenerated) else generated
        self.generated = FusedGenerated(indexes, sources)
        self.features = np.column_stack(cols)
        self.model = est._combiner(seed_from(est.random_state) % (2**32))
        self.logistic_c = float(est.C) if est.combiner == "logistic" else None

    def scores(self, y: np.ndarray) -> np.ndarray:
        """Each development image's score under labels ``y`` (for ``"scores"``: the same for
        every ``y``)."""
        if self.fixed is not None:
            return self.fixed
        splits = stratified_folds(y, self.k, self.random_state, groups=self.grp)
        if self.kind == "combiner":
            from sklearn.base import clone

            from ctfp.membership.fused import FusedMembership

            out = np.full(len(y), np.nan)
            for train, test in splits:
                if self.logistic_c is not None:
                    out[test] = logistic_log_odds(
                        self.features[train], y[train], self.features[test], C=self.logistic_c
                    )
                    continue
                fold = clone(self.model).fit(self.features[train], y[train])
                out[test] = FusedMembership._log_odds(fold, self.features[test])
            return out
        return cross_fit_scores(
            self.estimator,
            self.items,
            y,
            generated=self.generated,
            splits=splits,
            fit_params=self.fit_params,
        )


def logistic_log_odds(
    Z: np.ndarray, y: np.ndarray, Z_new: np.ndarray, *, C: float = 1.0
) -> np.ndarray:
    """The log-odds of ``Z_new`` under FusedMembership's logistic combiner fitted on ``(Z, y)``
    (``StandardScaler`` + ``LogisticRegression(C=C)``: L2 penalty ``0.5 |w|^2``, intercept not
    penalised), solved by damped Newton steps to 1e-10 instead of scikit-learn's lbfgs: the
    same minimum (agreeing to about 1e-6), some fifty times faster on the few features and
    hundreds of images of a leak test, which refits it for every relabelling."""
    Z = np.asarray(Z, dtype=float)
    mu = Z.mean(0)
    sd = Z.std(0)
    sd[sd == 0] = 1.0
    A = np.column_stack([(Z - mu) / sd, np.ones(len(Z))])
    yy = np.asarray(y, dtype=float)
    pen = np.ones(A.shape[1])
    pen[-1] = 0.0

    def objective(w: np.ndarray) -> float:
        z = A @ w
        return float(0.5 * (pen * w) @ w + C * (np.logaddexp(0.0, z) - yy * z).sum())

    w = np.zeros(A.shape[1])
    f = objective(w)
    for _ in range(100):
        p = 0.5 * (1.0 + np.tanh(0.5 * (A @ w)))
        g = pen * w + C * (A.T @ (p - yy))
        H = C * (A.T * (p * (1 - p))) @ A + np.diag(pen) + 1e-12 * np.eye(len(w))
        step = np.linalg.solve(H, g)
        t = 1.0
        while t > 1e-8:
            f_new = objective(w - t * step)
            if f_new <= f + 1e-15 * max(1.0, abs(f)):
                break
            t *= 0.5
        w, f = w - t * step, f_new
        if float(np.abs(t * step).max()) < 1e-10:
            break
    B = np.column_stack([(np.asarray(Z_new, dtype=float) - mu) / sd, np.ones(len(Z_new))])
    return B @ w


def _pipeline_test(
    pipe: _Pipeline,
    lab: np.ndarray,
    ulab: np.ndarray,
    inv: np.ndarray,
    L: np.ndarray,
    exact: bool,
    alpha: float,
) -> tuple[dict[str, Any], np.ndarray]:
    """The permutation test of one pipeline over the relabelings ``L`` (units); the observed
    scores beside it."""
    grouped = len(ulab) != len(lab)

    def unit_scores(s: np.ndarray) -> np.ndarray:
        return _unit_means(s, inv, len(ulab)) if grouped else s

    obs = pipe.scores(lab)
    us = unit_scores(obs)
    if pipe.fixed is not None:
        return _rank_test(us, ulab, L, exact, alpha), obs
    out = leak_test(us, ulab, alpha=alpha)
    null = np.array([_u_of(unit_scores(pipe.scores(row[inv].astype(np.int64))), row) for row in L])
    return _finish(out, null, out["n_used"] * out["n_not_used"], exact, alpha, us, ulab), obs


def plot_null_distribution(
    result: dict[str, Any], path: Any = None, *, ax: Any = None, title: str | None = None
) -> Any:
    """The relabelings' ROC-AUCs of a :func:`run_leak_test` / :func:`permutation_test` result
    (``null_histogram``) as a histogram, the observed ROC-AUC marked, the p-value and its
    resolution in the legend; written to ``path`` (PNG) when given. Returns the axes
    (matplotlib, imported here)."""
    if "null_histogram" not in result:
        raise ValueError(
            "result: expected a permutation leak test's result (with a null_histogram), "
            f"found keys {sorted(result)}"
        )
    import matplotlib

    if path is not None and ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.0))
    h = result["null_histogram"]
    edges = np.asarray(h["edges"])
    ax.bar(
        edges[:-1], h["counts"], width=np.diff(edges), align="edge", color="#9db4d0",
        label=f"{result['n_permutations']} relabelings",
    )  # fmt: skip
    ax.axvline(
        result["auc"], color="#c0392b", lw=2,
        label=f"observed {result['auc']:.2f} (p {result['p_value']:.3g}, "
        f"resolution {result['p_value_resolution']:.2g})",
    )  # fmt: skip
    ax.set_xlabel("ROC-AUC, used over not used")
    ax.set_ylabel("relabelings")
    ax.set_title(title or "Leak test: null distribution", fontsize=9)
    ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
        if path is not None:
            from ctfp._util import atomic_write

            with atomic_write(path) as f:
                fig.savefig(f, format="png", dpi=110)
            plt.close(fig)
    return ax


# --------------------------------------------------------------------------------------------
# one verdict for several methods


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): sorted ascending, the ``i``-th smallest
    (``i`` from 0) times ``m - i``, made non-decreasing, capped at 1. Rejecting where the
    adjusted p-value is at most ``alpha`` holds the family-wise error rate at ``alpha`` under
    any dependence between the tests."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def family_verdict(results: Any, *, alpha: float = 0.05, method: str = "holm") -> dict[str, Any]:
    """One verdict for the leak tests of several methods on one dataset.

    ``results``: ``{name: run_leak_test(...) result}`` (or a list of ``(name, result)``).
    Tests that were not run (``"not tested"``) take no part. Each p-value is adjusted for the
    family (``method``: ``"holm"``, Holm's step-down; ``"bonferroni"``; ``"none"``); a method
    counts as finding a leak when its adjusted p-value is at most ``alpha`` and its own verdict
    is ``"leak"`` (its control did not explain the separation away). The family's verdict:
    ``"leak"`` when one method does; ``"inconclusive"`` when adjusted p-values reject but only
    for methods whose control also separates; ``"no evidence"`` otherwise; ``"not tested"``
    when no method was tested. The family-wise false-alarm probability is at most ``alpha``
    when each p-value is valid (the permutation test's are).

    Returns ``verdict``, ``supported``, ``method``, ``alpha``, ``n_tests``, ``tests`` (per
    method, in the given order: ``name``, ``p_value`` raw, ``p_adjusted``, ``reject``,
    ``verdict`` of its own) and a one-line ``message`` that leads with the family's verdict.
    """
    if method not in ADJUSTMENTS:
        raise ValueError(
            f"method: expected one of {', '.join(map(repr, ADJUSTMENTS))}, found {method!r}"
        )
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha: expected a number in (0, 1), found {alpha!r}")
    pairs = list(results.items()) if isinstance(results, dict) else list(results)
    tested = [(n, r) for n, r in pairs if r.get("verdict", "not tested") != "not tested"]
    for n, r in tested:
        if not isinstance(r.get("p_value"), (int, float)):
            raise ValueError(f"results[{n!r}]: expected a leak-test result with a p_value")
    p = np.array([float(r["p_value"]) for _, r in tested])
    m = len(p)
    if method == "holm":
        adj = holm(p)
    elif method == "bonferroni":
        adj = np.minimum(1.0, p * m)
    else:
        adj = p.copy()
    tests = []
    by_name = {n: (float(pv), float(a)) for (n, _), pv, a in zip(tested, p, adj, strict=True)}
    for n, r in pairs:
        if n in by_name:
            raw, a = by_name[n]
            tests.append(
                {
                    "name": n,
                    "p_value": raw,
                    "p_adjusted": a,
                    "reject": bool(a <= alpha),
                    "verdict": r["verdict"],
                }
            )
        else:
            tests.append(
                {"name": n, "p_value": None, "p_adjusted": None, "reject": False,
                 "verdict": "not tested"}
            )  # fmt: skip
    rejected = [t for t in tests if t["reject"]]
    if m == 0:
        verdict = "not tested"
    elif any(t["verdict"] == "leak" for t in rejected):
        verdict = "leak"
    elif rejected:
        verdict = "inconclusive"
    else:
        verdict = "no evidence"
    which = ", ".join(
        f"{t['name']} p {t['p_value']:.3g} (adjusted {t['p_adjusted']:.3g})"
        for t in tests
        if t["p_value"] is not None
    )
    how = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "unadjusted"}[method]
    return {
        "verdict": verdict,
        "supported": verdict == "leak",
        "method": method,
        "alpha": float(alpha),
        "n_tests": m,
        "tests": tests,
        "message": (
            f"family of {m} leak test{'s' if m != 1 else ''} ({how}, alpha {alpha:g}): "
            f"{verdict}" + (f"; {which}" if which else "")
        ),
    }


def _verdict(
    out: dict[str, Any],
    main: np.ndarray,
    ctrl: np.ndarray | None,
    lab: np.ndarray,
    grp: np.ndarray | None = None,
) -> None:
    if grp is not None:
        main, lab_g = _group_means(main, lab, grp)
        ctrl = None if ctrl is None else _group_means(ctrl, lab, grp)[0]
        lab = lab_g
    c = out["control"]
    if not out["reject"]:
        verdict = "no evidence"
    elif c is not None and c["reject"]:
        # the groups separate without the generator too: does the generator add to that?
        out["difference"] = {
            "test": "DeLong, one-sided: AUC(generated set) > AUC(control)",
            **auc_difference(main, ctrl, lab),
        }
        verdict = "leak" if out["difference"]["p_value"] < out["alpha"] else "inconclusive"
    else:
        verdict = "leak"
    out["verdict"] = verdict
    out["supported"] = verdict == "leak"
    unit = "patients" if out.get("groups") else "development images"
    ctrl_text = "" if c is None else f"; control AUC {c['auc']:.2f}, p {c['p_value']:.3g}"
    if "difference" in out:
        ctrl_text += f"; difference p {out['difference']['p_value']:.3g}"
    what = {
        "leak": "the generator leaks its training images"
        + (" (beyond what the control shows)" if "difference" in out else ""),
        "no evidence": "no evidence that the generator leaks its training images",
        "inconclusive": (
            "used and not-used images separate without the generator too: no evidence "
            "specific to it"
        ),
    }[verdict]
    out["message"] = (
        f"{what} (AUC {out['auc']:.2f}, p {out['p_value']:.3g}, "
        f"{out['n_used']}+{out['n_not_used']} {unit}{ctrl_text})"
    )


def run_leak_test(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    generated: Any,
    n_splits: int = 5,
    control: Any = True,
    max_control: int | None = 2000,
    groups: Any = None,
    alpha: float = 0.05,
    random_state: int = 0,
    fit_params: dict[str, Any] | None = None,
    test: str = "permutation",
    n_permutations: int | None = None,
    pipeline: str | None = None,
) -> dict[str, Any]:
    """The leak test of the module docstring on labelled development images ``(X, y)``.

    Parameters
    ----------
    estimator
        Any ctfp membership estimator (:class:`SimilarityMembership`, :class:`FusedMembership`,
        the baselines), fitted or not (it is cloned; its own threshold is never used).
    generated
        The generated images, or an index/set a fitted estimator reuses
        (:func:`reusable_generated`).
    n_splits : int
        Cross-fitting folds where the pipeline cross-fits, lowered to the smaller class's size
        (its number of groups).
    control : True, "shuffle", "vflip", images, or False/None
        The no-generator stand-in: ``True``/``"shuffle"`` (pixels permuted), ``"vflip"``
        (generated images upside down), or real images that are not development images
        (e.g. the test set's); ``False``/``None``: no control.
    max_control : int, optional
        At most this many generated images make the stand-in.
    groups : array-like, optional
        Patient (or any cluster) id of each development image. The images of one patient are
        not independent: relabelling them one by one is not what the null allows. With
        ``groups``, relabelings move whole groups, folds keep each group whole
        (``StratifiedGroupKFold``) and the statistic compares the groups' mean scores.
    alpha : float
        The level: the test rejects when ``p_value <= alpha``.
    random_state : int
        Folds, relabelings and stand-in.
    fit_params : dict, optional
        More arguments of every fit besides ``generated`` (``reference=``: the unlabelled real
        images of ``calibration="real"``; ``groups=``, ``reference_groups=``).
    test : {"permutation", "mannwhitney"}
        ``"permutation"``: the exact test of the module docstring. ``"mannwhitney"``: the
        earlier one-sided Mann-Whitney U on cross-fitted scores (level not guaranteed when the
        scores use labels; for comparison).
    n_permutations : int, optional
        Random relabelings (``None``: :data:`DEFAULT_PERMUTATIONS` of the pipeline); all of
        them, exactly, when there are at most ``n_permutations + 1``.
    pipeline : {"scores", "combiner", "refit"}, optional
        Override :func:`pipeline_of` (``"refit"`` is exact for every estimator; ``"scores"``
        only for scores that use no labels).

    Returns
    -------
    dict
        ``test`` (what was done), the main test's numbers (:func:`permutation_test`'s keys:
        ``p_value``, ``n_permutations``, ``p_value_resolution``, ``exact_enumeration``,
        ``auc``, ``auc_interval``, ``null_histogram``, ...), ``pipeline``, ``scores`` (the
        development scores the statistic was computed on), ``control`` (the same for the
        stand-in, or None), ``verdict`` (one of :data:`VERDICTS`), ``supported`` (whether
        per-image predictions are backed by evidence of a leak) and a one-line ``message``.
    """
    if test not in TESTS:
        raise ValueError(f"test: expected one of {', '.join(map(repr, TESTS))}, found {test!r}")
    if pipeline is not None and pipeline not in PIPELINES:
        raise ValueError(
            f"pipeline: expected one of {', '.join(map(repr, PIPELINES))} or None, "
            f"found {pipeline!r}"
        )
    lab = check_binary_labels(y, "y")
    items = X if isinstance(X, np.ndarray) else list(X)
    grp = None if groups is None else np.asarray(groups)
    if grp is not None and grp.shape != lab.shape:
        raise ValueError(f"groups: expected one id per image ({lab.shape}), found {grp.shape}")
    if grp is None:
        sizes = (int((lab == 1).sum()), int((lab == 0).sum()))
    else:
        sizes = (len(np.unique(grp[lab == 1])), len(np.unique(grp[lab == 0])))
    k = int(min(n_splits, *sizes))
    kind = pipeline or pipeline_of(estimator)
    unit = "groups" if grp is not None else "images"
    if test == "mannwhitney":
        what = "one-sided Mann-Whitney U, used > not used, on cross-fitted development scores"
    else:
        what = {
            "scores": "scores of one fit on all development images (no labels used)",
            "combiner": (
                "out-of-fold combiner scores over members fitted on all development images "
                "(no labels used); the combiner refitted per relabelling"
            ),
            "refit": "cross-fitted development scores, refitted per relabelling",
        }[kind]
        what = f"permutation test of Mann-Whitney U, used > not used, {unit} relabelled; {what}"
    out: dict[str, Any] = {
        "test": what + (" (group means)" if grp is not None else ""),
        "n_splits": k,
        "groups": grp is not None,
        "alpha": alpha,
        "random_state": random_state,
    }
    if test == "permutation":
        out["pipeline"] = kind
    if k < 2:
        out.update(
            verdict="not tested",
            supported=False,
            control=None,
            message=(
                f"leak test not run: needs at least 2 used and 2 not-used development {unit} "
                f"(found {sizes[0]} and {sizes[1]})"
            ),
        )
        return out
    if test == "mannwhitney":
        return _run_mannwhitney(out, estimator, items, lab, generated, grp, k, control,
                                max_control, alpha, random_state, fit_params)  # fmt: skip

    ulab, inv = _units(lab, grp)
    b = DEFAULT_PERMUTATIONS[kind] if n_permutations is None else n_permutations
    L, exact = relabelings(ulab, b, random_state)

    def make(g: Any) -> _Pipeline:
        return _Pipeline(kind, estimator, items, lab, g, k=k, random_state=random_state,
                         grp=grp, fit_params=fit_params)  # fmt: skip

    main_pipe = make(generated)
    res, main = _pipeline_test(main_pipe, lab, ulab, inv, L, exact, alpha)
    out.update(res)
    out["scores"] = main.tolist()
    out["control"] = None
    ctrl: np.ndarray | None = None
    stand = _standin(control, main_pipe.generated, max_control, random_state)
    if stand is not None:
        images, label = stand
        cres, ctrl = _pipeline_test(make(images), lab, ulab, inv, L, exact, alpha)
        cres.pop("null_histogram")
        out["control"] = {"reference": label, **cres}
    _verdict(out, main, ctrl, lab, grp)
    return out


def _standin(
    control: Any, reuse: Any, max_control: int | None, random_state: Any
) -> tuple[np.ndarray, str] | None:
    if control is None or control is False:
        return None
    if isinstance(control, str) or control is True:
        kind = "shuffle" if control is True else control
        stand = shuffled_standin(
            reuse, kind=kind, max_images=max_control, random_state=random_state
        )
        how = {"shuffle": "with their pixels permuted", "vflip": "upside down"}[kind]
        return stand, f"{len(stand)} generated images {how}"
    from ctfp.data.images import load_images

    stand = load_images(control)
    return stand, f"{len(stand)} real images that are not development images"


def _run_mannwhitney(
    out: dict[str, Any],
    estimator: Any,
    items: Any,
    lab: np.ndarray,
    generated: Any,
    grp: np.ndarray | None,
    k: int,
    control: Any,
    max_control: int | None,
    alpha: float,
    random_state: Any,
    fit_params: dict[str, Any] | None,
) -> dict[str, Any]:
    """The earlier test: Mann-Whitney U on cross-fitted scores (``test="mannwhitney"``)."""
    from sklearn.base import clone

    splits = stratified_folds(lab, k, random_state, groups=grp)

    def fitted_set(g: Any) -> Any:
        full = clone(estimator)
        _scores_only(full)
        full.fit(items, lab, generated=g, **(fit_params or {}))
        return reusable_generated(full)

    def test(scores: np.ndarray) -> dict[str, Any]:
        if grp is None:
            return leak_test(scores, lab, alpha=alpha)
        return leak_test(*_group_means(scores, lab, grp), alpha=alpha)

    reuse = fitted_set(generated)
    main = cross_fit_scores(
        estimator, items, lab, generated=reuse, splits=splits, fit_params=fit_params
    )
    out.update(test(main))
    out["scores"] = main.tolist()
    out["control"] = None
    ctrl: np.ndarray | None = None
    stand = _standin(control, reuse, max_control, random_state)
    if stand is not None:
        images, label = stand
        ctrl = cross_fit_scores(
            estimator, items, lab, generated=fitted_set(images), splits=splits,
            fit_params=fit_params,
        )  # fmt: skip
        out["control"] = {"reference": label, **test(ctrl)}
    _verdict(out, main, ctrl, lab, grp)
    return out
