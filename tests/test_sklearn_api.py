"""scikit-learn's API checks on every ctfp estimator: the four membership estimators
(SimilarityMembership, FusedMembership, GANLeaks, VCMISSIM), the generated-set index
(GeneratedIndex) and the classifier (FingerprintClassifier, fitted on two classes and, as
``FingerprintClassifier-3class``, on three), each with tiny settings.

scikit-learn's own checks come in two kinds. The API checks (parameters, cloning, ``repr``,
tags, unfitted estimators) apply to any estimator and run here as scikit-learn wrote them
(:data:`API_CHECKS`). The fitting checks feed tabular float data (``X`` of shape
``(n_samples, n_features)``, NaNs, sparse matrices, 1-feature tables) and look for tabular error
messages; ctfp's estimators take images (and the membership estimators a generated set as a fit
parameter), declare it in their tags (``input_tags.two_d_array = False``), and so scikit-learn's
``check_estimator`` skips those (:data:`NOT_APPLICABLE` says why for each). The properties those
checks stand for are checked here on tiny images instead, in scikit-learn's way: ``fit`` returns
``self`` and leaves every parameter as it was (``check_dont_overwrite_parameters``,
``check_estimators_overwrite_params``, ``check_estimators_fit_returns_self``), refitting gives the
same results (``check_fit_idempotent``), every method of an unfitted estimator raises
``NotFittedError`` (``check_estimators_unfitted``, for the methods it does not know), a clone
fitted again agrees, and a pickled fitted estimator predicts the same.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import sklearn
from joblib import hash as jhash
from sklearn.base import clone
from sklearn.utils import estimator_checks as ec

from ctfp.data.synthetic import make_slices
from ctfp.exceptions import NotFittedError
from ctfp.membership.baselines import VCMISSIM, GANLeaks
from ctfp.membership.fused import FusedMembership
from ctfp.membership.index import GeneratedIndex
from ctfp.membership.similarity import SimilarityMembership

#: scikit-learn's checks that apply to an estimator of images, run as scikit-learn wrote them.
API_CHECKS = [
    ec.check_no_attributes_set_in_init,
    ec.check_parameters_default_constructible,
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_estimator_cloneable,
    ec.check_estimator_repr,
    ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_mixin_order,
    ec.check_valid_tag_types,
    ec.check_estimator_tags_renamed,
    ec.check_estimators_unfitted,
]

#: scikit-learn's fitting checks that cannot apply to image inputs, one reason each; the
#: property each stands for is tested below on images where it has one.
NOT_APPLICABLE = {
    "check_fit_score_takes_y": "fits on a float table without the generated set; fit(X, y, "
    "generated=) is checked below",
    "check_dont_overwrite_parameters": "fits on a float table; run below on images",
    "check_estimators_overwrite_params": "fits on a float table; run below on images",
    "check_estimators_fit_returns_self": "fits on a float table; run below on images",
    "check_fit_idempotent": "fits on a float table; run below on images",
    "check_estimators_pickle": "fits on a float table; run below on images",
    "check_n_features_in": "n_features_in_ is a tabular idea; ctfp records the image contract",
    "check_fit2d_1feature": "a 1-feature table is no image",
    "check_estimators_nan_inf": "uint8 images hold no NaN or inf",
    "check_estimator_sparse_matrix": "images are dense arrays, files or PNG bytes",
    "check_complex_data": "images are uint8 grey levels; ctfp's loader has its own messages",
    "check_classifiers_train": "fits on a float table of Gaussian blobs",
    "check_classifiers_one_label": "membership estimators need both labels to calibrate "
    "(refused with their own message)",
    "check_classifiers_regression_target": "labels are checked by ctfp._util.check_binary_labels, "
    "with its own message",
}


def _images(n: int, seed: int) -> np.ndarray:
    return make_slices(n, n_patients=n, size=32, seed=seed)


@pytest.fixture(scope="module")
def data():
    """12 real images (6 used: each has two noisy copies among the 20 generated images)."""
    real = _images(12, seed=3)
    y = np.array([1, 0] * 6)
    rng = np.random.default_rng(0)
    copies = [
        np.clip(real[i].astype(int) + rng.integers(-6, 7, real[i].shape), 0, 255)
        for i in np.flatnonzero(y == 1)
        for _ in range(2)
    ]
    gen = np.concatenate([np.asarray(copies, np.uint8), _images(8, seed=9)])
    return real, y, gen


def _estimators() -> list:
    out = [
        SimilarityMembership(image_size=16, k=2, k_real=2, random_state=0),
        FusedMembership(
            members=[
                {
                    "measure": "pixel",
                    "image_size": 16,
                    "statistic": "mean_k",
                    "k": 2,
                    "calibration": None,
                },
                {"measure": "ssim", "image_size": 16, "statistic": "max", "calibration": None},
            ],
            cv=2,
            random_state=0,
        ),  # fmt: skip
        GANLeaks(image_size=16),
        VCMISSIM(image_size=16),
        GeneratedIndex(measure="pixel", image_size=16, n_neighbors=2),
    ]
    return out


def _classifier():
    pytest.importorskip("torch")
    from ctfp.models.classifier import FingerprintClassifier

    return FingerprintClassifier(
        weights=None, image_size=32, max_epochs=1, batch_size=8, random_state=0, n_jobs=1
    )


def _all_ids() -> list[str]:
    names = [type(e).__name__ for e in _estimators()]
    return [*names, "FingerprintClassifier", "FingerprintClassifier-3class"]


def _make(name: str):
    if name.startswith("FingerprintClassifier"):
        return _classifier()
    (est,) = [e for e in _estimators() if type(e).__name__ == name]
    return est


def _fit(est, data, name=""):
    real, y, gen = data
    if isinstance(est, GeneratedIndex):
        return est.fit(gen)
    if name.endswith("-3class"):  # three sources, string labels (subtask 2's attribution)
        return est.fit(np.concatenate([real, gen[:12]]), np.repeat(["s1", "s2", "s3"], 8))
    if type(est).__name__ == "FingerprintClassifier":
        return est.fit(np.concatenate([real, gen[:12]]), np.r_[np.zeros(12), np.ones(12)])
    return est.fit(real, y, generated=gen)


def _outputs(est, data) -> list[np.ndarray]:
    """What a fitted estimator says about the real images: every method it has."""
    real = data[0]
    if isinstance(est, GeneratedIndex):
        dist, idx = est.kneighbors(real)
        return [dist, idx, est.transform(real)]
    out = [np.asarray(est.predict(real)), np.asarray(est.decision_function(real))]
    if hasattr(est, "score_samples"):
        out.append(np.asarray(est.score_samples(real)))
    if hasattr(est, "predict_proba"):
        out.append(np.asarray(est.predict_proba(real)))
    return out


# ---------------------------------------------------------------------------------- scikit-learn


@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", _all_ids())
def test_sklearn_api_checks(name, check):
    est = _make(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.SkipTestWarning)
        check(name, est)


@pytest.mark.parametrize("name", _all_ids())
def test_check_estimator_runs_no_tabular_check_that_cannot_apply(name):
    """scikit-learn's full ``check_estimator``: with the image tags it runs only checks that
    apply, and they pass; none of the :data:`NOT_APPLICABLE` ones runs."""
    est = _make(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = ec.check_estimator(est, on_fail=None)
    failed = {r["check_name"]: repr(r["exception"]) for r in results if r["status"] == "failed"}
    assert failed == {}
    ran = {r["check_name"] for r in results if r["status"] == "passed"}
    assert "check_estimator_cloneable" in ran
    assert not ran & set(NOT_APPLICABLE), ran & set(NOT_APPLICABLE)
    tags = est.__sklearn_tags__()
    assert not tags.input_tags.two_d_array and tags.input_tags.three_d_array


# ------------------------------------------------------------------ the same properties on images


@pytest.mark.parametrize("name", _all_ids())
def test_fit_returns_self_and_overwrites_no_parameter(name, data):
    """check_dont_overwrite_parameters, check_estimators_overwrite_params and
    check_estimators_fit_returns_self, on images."""
    est = _make(name)
    before = {k: jhash(v) for k, v in est.get_params().items()}
    public = set(vars(est))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _fit(est, data, name) is est
    assert {k: jhash(v) for k, v in est.get_params().items()} == before
    added = set(vars(est)) - public
    # what fit adds is fitted state: a trailing underscore (private: a leading one)
    assert all(a.endswith("_") or a.startswith("_") for a in added), sorted(added)
    assert any(a.endswith("_") and not a.startswith("_") for a in added)


@pytest.mark.parametrize("name", _all_ids())
def test_fit_is_idempotent_clone_refits_alike_and_pickles(name, data):
    """check_fit_idempotent on images (fit twice: the same outputs), a clone fitted on the same
    data agrees, and a pickled fitted estimator gives the same outputs (check_estimators_pickle).
    """
    est = _make(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = _outputs(_fit(est, data, name), data)
        again = _outputs(_fit(est, data, name), data)
        other = _outputs(_fit(clone(est), data, name), data)
        back = _outputs(pickle.loads(pickle.dumps(est)), data)
    atol = 1e-5 if name.startswith("FingerprintClassifier") else 0
    for a, b, c, d in zip(first, again, other, back, strict=True):
        if a.dtype.kind in "USO":  # labels (strings): equal
            for x in (b, c, d):
                np.testing.assert_array_equal(x, a)
            continue
        np.testing.assert_allclose(b, a, atol=atol, rtol=0)
        np.testing.assert_allclose(c, a, atol=atol, rtol=0)
        np.testing.assert_allclose(d, a, atol=atol, rtol=0)


@pytest.mark.parametrize("name", _all_ids())
def test_every_method_of_an_unfitted_estimator_says_so(name, data):
    """check_estimators_unfitted for every public method, not only scikit-learn's four."""
    est = _make(name)
    real = data[0]
    methods = [
        m
        for m in (
            "predict",
            "predict_proba",
            "decision_function",
            "score_samples",
            "describe",
            "kneighbors",
            "transform",
        )
        if hasattr(est, m)
    ]
    assert methods
    for m in methods:
        args = () if m == "describe" else (real,)
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(est, m)(*args)
