"""ctfp.attribution: features against independent references, estimators under scikit-learn's
checks and GridSearchCV, on tiny data (fast: seconds). Layouts and generators:
test_attribution_layout.py."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from ctfp.attribution import (
    NearestRealSubset,
    PixelFeatures,
    ResidualCorrelation,
    ResidualSpectrum,
    SourceAttributor,
    SourceClustering,
    SubsetCloseness,
    attribution_metrics,
    azimuthal_average,
    clustering_metrics,
    denoise,
    noise_residual,
    purity,
)


def _sources(n: int = 12, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three toy "generators": noise, noise plus a fixed period-8 pattern (an upsampling
    artefact), and smoother, brighter noise."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(3):
        x = rng.normal(128, 20, (n, size, size))
        if k == 1:  # a fixed periodic pattern (period 8 px), like an upsampling artefact
            x += 25 * np.cos(2 * np.pi * np.arange(size) / 8)[None, None, :]
        if k == 2:  # smoother (another spectrum) and brighter
            x = scipy.ndimage.uniform_filter1d(x, 3, axis=2) + 30
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return np.concatenate(out), np.repeat(np.array(["a", "b", "c"]), n)


# ---------------------------------------------------------------------------------- features


@pytest.mark.parametrize("sigma", [0.7, 1.0, 1.6])
def test_gaussian_denoiser_matches_scipy_and_direct_convolution(sigma):
    x = np.random.default_rng(1).integers(0, 256, (3, 20, 17)).astype(np.float32)
    got = denoise(x, "gaussian", sigma=sigma)
    ref = scipy.ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), truncate=2.0, mode="reflect")
    np.testing.assert_allclose(got, ref, atol=1e-4)
    r = int(2.0 * sigma + 0.5)
    t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k2 = np.outer(t, t) / t.sum() ** 2
    for i in range(3):  # an independent 2-D convolution, border mirrored the same way
        direct = scipy.signal.convolve2d(x[i], k2, mode="same", boundary="symm")
        np.testing.assert_allclose(got[i], direct, atol=1e-3)
    np.testing.assert_allclose(noise_residual(x, sigma=sigma), x - got, atol=1e-5)


def test_median_denoiser_equals_scipy_median_filter():
    x = np.random.default_rng(2).integers(0, 256, (4, 15, 22)).astype(np.float32)
    ref = scipy.ndimage.median_filter(x, size=(1, 3, 3), mode="reflect")
    np.testing.assert_array_equal(denoise(x, "median"), ref)
    with pytest.raises(ValueError, match="denoiser: expected one of 'gaussian', 'median'"):
        denoise(x, "wavelet")


def test_fft_spectrum_equals_numpy_fft():
    x = np.random.default_rng(3).integers(0, 256, (3, 16, 16)).astype(np.uint8)
    t = ResidualSpectrum(residual=False, band=0.5, pool=1).fit(x)
    ref = np.log1p(np.abs(np.fft.rfft2(x.astype(np.float64))))
    np.testing.assert_allclose(t.transform(x), ref.reshape(3, -1), rtol=1e-4, atol=1e-4)
    # the low band: rows |f_y| < band, columns 0 <= f_x < band
    low = ResidualSpectrum(residual=False, band=0.25, pool=1).fit(x).transform(x)
    rows = np.r_[0:4, 12:16]
    np.testing.assert_allclose(low, ref[:, rows, :4].reshape(3, -1), rtol=1e-4, atol=1e-4)
    # of the residual, magnitudes pooled 2x2 before the log
    res = ResidualSpectrum(band=0.5, pool=2).fit(x).transform(x)
    r = np.abs(np.fft.rfft2(noise_residual(x).astype(np.float64)))[:, :, :8]
    pooled = np.log1p(r.reshape(3, 8, 2, 4, 2).mean(axis=(2, 4)))
    np.testing.assert_allclose(res, pooled.reshape(3, -1), rtol=1e-3, atol=1e-3)


def test_dct_spectrum_equals_dct_matrix():
    n = 12
    x = np.random.default_rng(4).normal(100, 30, (2, n, n))
    k = np.arange(n)
    C = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    C[0] /= np.sqrt(2.0)  # orthonormal DCT-II
    ref = np.log1p(np.abs(np.einsum("ij,njk,lk->nil", C, x, C)))
    got = ResidualSpectrum(basis="dct", residual=False, band=0.5, pool=1).fit(x).transform(x)
    np.testing.assert_allclose(got, ref.reshape(2, -1), rtol=1e-4, atol=1e-4)


def test_azimuthal_average_matches_loop():
    p = np.random.default_rng(5).random((2, 10, 10))
    got = azimuthal_average(p, 5)
    f = np.fft.fftfreq(10) * 10
    want = np.zeros((2, 5))
    cnt = np.zeros(5)
    for i in range(10):
        for j in range(10):
            b = int(np.floor(np.hypot(f[i], f[j]) / 5 * 5))
            if b < 5:
                want[:, b] += p[:, i, j]
                cnt[b] += 1
    np.testing.assert_allclose(got, want / cnt, rtol=1e-5)


def test_pixel_features_area_average():
    x = np.random.default_rng(6).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    got = PixelFeatures(size=4).fit(x).transform(x)
    want = np.array([[x[n, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean() for i in range(4)
                      for j in range(4)] for n in range(2)])  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="size: expected a divisor"):
        PixelFeatures(size=3).fit(x)


def test_subset_closeness_equals_brute_force():
    real, subsets = _sources(n=6, size=16, seed=7)
    queries, _ = _sources(n=2, size=16, seed=8)
    t = SubsetCloseness(n_neighbors=3, image_size=16).fit(real, subsets)
    got = t.transform(queries)
    q = queries.reshape(len(queries), -1).astype(np.float64)
    for j, s in enumerate(t.classes_):
        r = real[subsets == s].reshape(-1, 256).astype(np.float64)
        rms = np.sqrt(((q[:, None, :] - r[None]) ** 2).mean(-1))
        np.testing.assert_allclose(got[:, 2 * j], -np.sort(rms, 1)[:, :3].mean(1), atol=1e-3)
        cen = np.sqrt(((q - r.mean(0)) ** 2).mean(-1))
        np.testing.assert_allclose(got[:, 2 * j + 1], -cen, atol=1e-3)
    with pytest.raises(ValueError, match="y: SubsetCloseness is fitted on the subsets' real"):
        SubsetCloseness().fit(real)


def test_transform_checks_the_image_size():
    x, _ = _sources(n=2, size=16)
    t = ResidualSpectrum().fit(x)
    with pytest.raises(ValueError, match="X: expected images of 16x16 .as in fit., found 8x8"):
        t.transform(x[:, :8, :8])
    with pytest.raises(ValueError, match="expected finite grey levels"):
        t.transform(np.full((1, 16, 16), np.nan))


# -------------------------------------------------------------------------------- estimators


def test_residual_correlation_is_pearson_with_mean_residual():
    X, y = _sources(n=5, size=16)
    est = ResidualCorrelation().fit(X, y)
    for j, s in enumerate(est.classes_):
        np.testing.assert_allclose(
            est.fingerprints_[j], noise_residual(X[y == s]).mean(0), atol=1e-4
        )
    c = est.correlations(X[:3])
    for i in range(3):
        r = noise_residual(X[i]).ravel()
        for j in range(3):
            want = np.corrcoef(r, est.fingerprints_[j].ravel())[0, 1]
            assert c[i, j] == pytest.approx(want, abs=1e-5)
    p = est.predict_proba(X)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("features", ["pixel", ("spectrum", "pixel")])
@pytest.mark.parametrize("classifier", ["logistic", "svm", "centroid"])
def test_source_attributor_separates_toy_sources(features, classifier):
    X, y = _sources()
    Xt, yt = _sources(seed=1)
    est = SourceAttributor(features=features, classifier=classifier, random_state=0).fit(X, y)
    assert (est.predict(Xt) == yt).mean() >= 0.9
    p = est.predict_proba(Xt)
    assert p.shape == (len(Xt), 3)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    assert list(est.classes_) == ["a", "b", "c"]
    assert set(est.predict(Xt)) <= {"a", "b", "c"}


@pytest.mark.parametrize("features", ["spectrum", "dct", "image-spectrum"])
def test_spectra_see_a_periodic_artefact_pixels_cannot_place(features):
    """Noise plus a periodic pattern (period 8 px, like an upsampling artefact) at a random
    phase per image: pixel means cannot place it, any spectrum sees it."""
    rng = np.random.default_rng(0)

    def make(n):
        x = rng.normal(128, 20, (2 * n, 32, 32))
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        x[n:] += 15 * np.cos(2 * np.pi * np.arange(32)[None, None, :] / 8 + phase)
        return x, np.repeat(["plain", "pattern"], n)

    X, y = make(30)
    Xt, yt = make(30)
    est = SourceAttributor(features=features, random_state=0).fit(X, y)
    # the DCT is not shift-invariant: the pattern's phase moves its energy between coefficients
    assert (est.predict(Xt) == yt).mean() >= (0.85 if features == "dct" else 0.95)


def test_subset_attribution_uses_real_images():
    real, subsets = _sources(n=10, size=16, seed=3)
    X, y = _sources(n=10, size=16, seed=4)
    est = SourceAttributor(features=("closeness", "spectrum"), random_state=0)
    with pytest.raises(ValueError, match="real_images, real_sources: the 'closeness' feature"):
        clone(est).fit(X, y)
    est.fit(X, y, real_images=real, real_sources=subsets)
    assert (est.predict(_sources(n=10, size=16, seed=5)[0]) == y).mean() >= 0.9
    near = NearestRealSubset(statistic="centroid").fit(real, subsets)
    assert (near.predict(X) == y).mean() >= 0.6  # contrast alone separates c; a/b look alike


def test_not_fitted_and_pickle():
    X, y = _sources(n=4, size=16)
    with pytest.raises(Exception, match="not fitted"):
        SourceAttributor().predict(X)
    est = SourceAttributor(features="pixel", feature_params={"pixel": {"size": 8}}).fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def test_clustering_finds_the_count_and_uses_seeds():
    X, y = _sources(n=20, size=16, seed=2)
    c = SourceClustering(
        features="pixel", feature_params={"pixel": {"size": 8}}, max_sources=6, random_state=0
    )
    labels = c.fit_predict(X)
    assert c.n_sources_ == 2 and set(c.silhouette_) == {2, 3, 4, 5, 6}  # a and b are alike
    assert clustering_metrics(y, labels)["n_clusters"] == 2
    seeds = np.array([v if i % 20 < 3 else -1 for i, v in enumerate(y)], dtype=object)
    s = SourceClustering(
        features="pixel", feature_params={"pixel": {"size": 8}}, n_sources=3, random_state=0
    ).fit(X, seed_labels=seeds)
    assert set(s.labels_) == {"a", "b", "c"}
    assert all(s.labels_[i] == y[i] for i in range(len(y)) if seeds[i] != -1)  # seeds stay
    assert (s.labels_ == y).mean() >= 0.9
    with pytest.raises(ValueError, match="n_sources: expected at least the 3 seed labels"):
        SourceClustering(n_sources=2).fit(X, seed_labels=seeds)


def test_clustering_count_criterion_calinski_harabasz():
    """``criterion="calinski_harabasz"``: each count's value is scikit-learn's index of that
    count's k-means labels on the reduced features, and the count chosen is its argmax; the
    default stays the silhouette."""
    from sklearn.metrics import calinski_harabasz_score

    X, y = _sources(n=20, size=16, seed=2)
    kw = dict(features="pixel", feature_params={"pixel": {"size": 8}}, max_sources=6,
              random_state=0)  # fmt: skip
    sil = SourceClustering(**kw).fit(X)
    assert sil.criterion_ == sil.silhouette_
    ch = SourceClustering(criterion="calinski_harabasz", **kw).fit(X)
    assert set(ch.criterion_) == {2, 3, 4, 5, 6}
    assert ch.n_sources_ == max(ch.criterion_, key=ch.criterion_.get)
    Z = ch.embed(X)
    assert ch.criterion_[ch.n_sources_] == pytest.approx(
        calinski_harabasz_score(Z, ch.labels_), rel=1e-4
    )
    assert ch.silhouette_ == sil.silhouette_  # the same k-means solutions, both measures kept
    with pytest.raises(ValueError, match="criterion"):
        SourceClustering(criterion="bic").fit(X)


def test_metrics_by_hand():
    m = attribution_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert m["accuracy"] == 0.75 and m["confusion"] == [[1, 1], [0, 2]]
    assert m["recall"] == {"a": 0.5, "b": 1.0}
    assert purity(["a", "a", "b", "b"], [0, 0, 0, 1]) == 0.75
    c = clustering_metrics(["a", "a", "b", "b"], [1, 1, 0, 0])
    assert c["ari"] == 1.0 and c["nmi"] == pytest.approx(1.0) and c["n_clusters"] == 2


def test_grid_search_and_pipeline():
    X, y = _sources(n=9, size=16)
    est = SourceAttributor(features="pixel", feature_params={"pixel": {"size": 8}})
    g = GridSearchCV(est, {"C": [0.1, 1.0], "classifier": ["logistic", "centroid"]}, cv=3)
    g.fit(X.reshape(len(X), -1), y)  # rows of square images
    assert g.best_score_ >= 0.9
    pipe = make_pipeline(ResidualSpectrum(pool=1), LogisticRegression(max_iter=500))
    g2 = GridSearchCV(pipe, {"residualspectrum__band": [0.25, 0.5]}, cv=3).fit(X, y)
    assert g2.best_score_ >= 0.9


_IMAGES = "images, not tables: the image contract (size) is recorded, n_features_in_ is not faked"
_FLOAT32 = "features are float32 whatever the input dtype (images are 0-255 grey levels)"


def _sk_expected(est):
    out = {"check_n_features_in": _IMAGES, "check_n_features_in_after_fitting": _IMAGES}
    if isinstance(est, (PixelFeatures, ResidualSpectrum)):
        out["check_transformer_preserve_dtypes"] = _FLOAT32
    if isinstance(est, ResidualCorrelation):
        why = "Marra's residual fingerprint: tabular toy blobs have no noise residual to correlate"
        out["check_classifiers_train"] = why
        out["check_classifiers_classes"] = why
    return out


@parametrize_with_checks(
    [
        PixelFeatures(size=None),
        ResidualSpectrum(band=0.5, pool=1),
        SourceAttributor(features="pixel", feature_params={"pixel": {"size": None}}),
        ResidualCorrelation(),
        SourceClustering(features="pixel", feature_params={"pixel": {"size": None}}, n_sources=3),
    ],
    expected_failed_checks=_sk_expected,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
