"""Does this generator leak its training images at all? A test before any per-image verdict.

Per-image membership predictions mean something only if the generated set carries membership
information in the first place. :func:`run_leak_test` answers that on the labelled development
images, before any threshold:

1. **Cross-fitted scores.** The development images are split into ``n_splits`` stratified folds;
   each fold is scored by the estimator fitted on the other folds (its calibration, radius,
   ... see only their labels), so every development image gets a score from a fit that never
   saw its label (:func:`cross_fit_scores`). All labelled images take part, not only a hold-out
   part: with 2 + 2 held-out images a rank test could never reach p < 0.05, with 8 + 8 it can.
2. **The test.** One-sided Mann-Whitney U of used (1) against not-used (0) scores (alternative:
   used images score higher), ``scipy.stats.mannwhitneyu`` (exact for small samples without
   ties, normal approximation with tie correction otherwise). Effect sizes: ROC-AUC
   ``U / (n1 n0)`` (0.5 = no separation) and Cliff's delta ``2 AUC - 1``.
3. **The no-generator control.** The same estimator, the same folds and the same test, with the
   generated set replaced by a stand-in that cannot hold a copy of any training image: up to
   ``max_control`` generated images with their pixels randomly permuted (each keeps its own
   grey-level histogram, so brightness and contrast match; every spatial structure is gone).
   Whatever separation the control shows comes from the pipeline or the groups themselves
   (calibration against non-members that share patients with the scored images, a used group
   that is brighter, ...), not from the generator.

Verdict: ``"no evidence"`` when the test does not reject at ``alpha``; ``"leak"`` when it
rejects and the control does not; when both reject (the groups separate without the generator
too), ``"leak"`` only if the generated set separates them *better* than the control does
(DeLong's test of the two ROC-AUCs on the same images, one-sided, :func:`auc_difference`), else
``"inconclusive"``. Only ``"leak"`` supports per-image predictions; the runner still writes them,
marked unsupported.

The test treats images as independent; slices of one patient are not, and with few patients per
group chance resemblance decides more often than ``alpha`` says (docs/similarity.md measures
it). Pass ``groups=`` (patient ids) where they are known.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctfp._util import check_binary_labels, seed_from, stratified_folds

__all__ = [
    "VERDICTS",
    "auc_difference",
    "cross_fit_scores",
    "leak_test",
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
    names, inv = np.unique(groups, return_inverse=True)
    means = np.bincount(inv, weights=scores) / np.bincount(inv)
    lab = np.zeros(len(names), np.int64)
    for g in range(len(names)):
        vals = np.unique(y[inv == g])
        if len(vals) != 1:
            raise ValueError(
                f"groups: group {names[g]!r} holds both used and not-used images; the leak "
                f"test compares whole groups (patients), each used or not"
            )
        lab[g] = vals[0]
    return means, lab


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


def _verdict(
    out: dict[str, Any], main: np.ndarray, ctrl: np.ndarray | None, lab: np.ndarray
) -> None:
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
        Cross-fitting folds, lowered to the smaller class's size (its number of groups).
    control : True, "shuffle", "vflip", images, or False/None
        The no-generator stand-in: ``True``/``"shuffle"`` (pixels permuted), ``"vflip"``
        (generated images upside down), or real images that are not development images
        (e.g. the test set's); ``False``/``None``: no control.
    max_control : int, optional
        At most this many generated images make the stand-in.
    groups : array-like, optional
        Patient (or any cluster) id of each development image. The images of one patient are
        not independent: with several slices per patient, an image-level test counts each
        patient several times and rejects too often. With ``groups``, folds keep each group
        whole (``StratifiedGroupKFold``) and the test compares the groups' mean scores.
    alpha : float
    random_state : int
        Folds and stand-in.
    fit_params : dict, optional
        More arguments of every fit besides ``generated`` (``reference=``: the unlabelled real
        images of ``calibration="real"``).

    Returns
    -------
    dict
        ``test`` (what was done), the main test's numbers (:func:`leak_test`), ``scores`` (the
        cross-fitted development scores), ``control`` (the same for the stand-in, or None),
        ``verdict`` (one of :data:`VERDICTS`), ``supported`` (whether per-image predictions
        are backed by evidence of a leak) and a one-line ``message``.
    """
    from sklearn.base import clone

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
    out: dict[str, Any] = {
        "test": (
            "one-sided Mann-Whitney U, used > not used, on cross-fitted development scores"
            + (" (group means)" if grp is not None else "")
        ),
        "n_splits": k,
        "groups": grp is not None,
        "alpha": alpha,
        "random_state": random_state,
    }
    if k < 2:
        unit = "groups" if grp is not None else "images"
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
    if control is not None and control is not False:
        if isinstance(control, str) or control is True:
            kind = "shuffle" if control is True else control
            stand = shuffled_standin(
                reuse, kind=kind, max_images=max_control, random_state=random_state
            )
            how = {"shuffle": "with their pixels permuted", "vflip": "upside down"}[kind]
            label = f"{len(stand)} generated images {how}"
        else:
            from ctfp.data.images import load_images

            stand = load_images(control)
            label = f"{len(stand)} real images that are not development images"
        ctrl = cross_fit_scores(
            estimator,
            items,
            lab,
            generated=fitted_set(stand),
            splits=splits,
            fit_params=fit_params,
        )
        out["control"] = {"reference": label, **test(ctrl)}
    if grp is None:
        _verdict(out, main, ctrl, lab)
    else:
        gm, gl = _group_means(main, lab, grp)
        _verdict(out, gm, None if ctrl is None else _group_means(ctrl, lab, grp)[0], gl)
    return out
