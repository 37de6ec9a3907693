"""Decoding, augmentation and batch assembly: documented Python entry points over the Rust core.

Conventions shared by :func:`transform` and :func:`load_batch`
---------------------------------------------------------------
Coordinates are ``(row, col)`` with pixel centres at integer positions (as in ``scipy.ndimage``).
An output of size ``(H, W)`` is made from a source of size ``(Hs, Ws)`` as if by three steps, in
this order, fused into one inverse mapping so each output pixel is sampled once from the source:

1. resize the source to ``(H, W)``, pixel-centre aligned (like OpenCV and Pillow, no antialiasing);
2. an affine transform about the image centre: rotation by ``angle_deg`` (positive angles turn the
   content counter-clockwise as displayed, row 0 at the top), magnification by
   ``zoom = (zoom_h, zoom_w)`` (``zoom > 1`` enlarges the content; Keras' zoom factor is
   ``1 / zoom``), and a shift of ``shift = (shift_h, shift_w)`` fractions of the output size
   (positive values move the content down and right);
3. a horizontal flip when ``flip`` is true.

Output pixel ``(i, j)`` samples the source at ``M @ (i, j) + offset`` with::

    F  = diag(1, -1) if flip else I,   c_o = ((H - 1) / 2, (W - 1) / 2)
    R  = [[cos a, sin a], [-sin a, cos a]],   Z = diag(zoom_h, zoom_w)
    S  = diag(Hs / H, Ws / W),   c_s = ((Hs - 1) / 2, (Ws - 1) / 2),   t = (shift_h H, shift_w W)
    M  = S R Z^-1 F,   offset = c_s - M c_o - S R t

which is exactly the ``matrix``/``offset`` that ``scipy.ndimage.affine_transform`` takes.
Bilinear samples outside the source follow ``fill``: ``"nearest"`` repeats the edge pixels
(Keras' default), ``"constant"`` pads with ``fill_value``, ``"reflect"`` mirrors about the edge
(scipy's ``"grid-constant"`` and ``"reflect"`` modes). uint8 outputs round half up; float32
outputs are computed from the unrounded sample.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ctfp import _core

__all__ = [
    "Augment",
    "AugmentParams",
    "DecodeLimits",
    "ImageCache",
    "NORMALIZE_PRESETS",
    "decode_png",
    "default_threads",
    "load_batch",
    "transform",
]

ImageCache = _core.ImageCache

FILLS = ("nearest", "constant", "reflect")
INTERPOLATIONS = ("bilinear", "nearest")
DTYPES = ("uint8", "float32")
LAYOUTS = ("rgb", "grey", "broadcast")

#: Named (mean, std) pairs for ``load_batch(normalize=...)``, per RGB channel, on the 0..1 scale.
NORMALIZE_PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # torchvision's ImageNet statistics, used by MobileNetV2, DenseNet-121, ResNet-50, EfficientNet.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Scale to [-1, 1] (Inception/Keras "tf" style, and ESRGAN-free GAN pipelines).
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # Scale to [0, 1].
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def default_threads() -> int:
    """The number of threads ``n_threads=None`` uses: the cores this process may run on."""
    return _core.default_threads()


def _check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {accepted}, found {value!r}")
    return value


def _check_real(
    name: str, value: object, lo: float | None = None, hi: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, found {type(value).__name__}")
    v = float(value)
    if not np.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f" in [{lo}, {hi}]" if lo is not None and hi is not None else ""
        raise ValueError(f"{name}: expected a finite number{rng}, found {value!r}")
    return v


def _pair(
    name: str, value: object, lo: float | None = None, hi: float | None = None
) -> tuple[float, float]:
    """A number or a pair of numbers -> a pair of floats (height, width)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = _check_real(name, value, lo, hi)
        return (v, v)
    if isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2:
        return (
            _check_real(f"{name}[0]", value[0], lo, hi),
            _check_real(f"{name}[1]", value[1], lo, hi),
        )
    raise TypeError(f"{name}: expected a number or a pair of numbers, found {value!r}")


def _check_int(name: str, value: object, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, found {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name}: expected an integer in [{lo}, {hi}], found {v}")
    return v


def _size(value: object, name: str = "size") -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        v = _check_int(name, value, 1, 65536)
        return (v, v)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (
            _check_int(f"{name}[0]", value[0], 1, 65536),
            _check_int(f"{name}[1]", value[1], 1, 65536),
        )
    raise TypeError(f"{name}: expected an int or a (height, width) pair, found {value!r}")


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """Caps checked against a PNG's header before any pixel buffer is allocated."""

    max_width: int = 16_384
    max_height: int = 16_384
    max_pixels: int = 1 << 26

    def __post_init__(self) -> None:
        _check_int("max_width", self.max_width, 1, 2**31 - 1)
        _check_int("max_height", self.max_height, 1, 2**31 - 1)
        _check_int("max_pixels", self.max_pixels, 1, 2**63 - 1)


_DEFAULT_LIMITS = DecodeLimits()


class AugmentParams(NamedTuple):
    """The parameters drawn for one sample; ``transform(image, **params._asdict(), size=...)``
    replays them."""

    flip: bool
    angle_deg: float
    zoom: tuple[float, float]
    shift: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random augmentation ranges; the defaults are the paper's (Keras ImageDataGenerator).

    Parameters
    ----------
    hflip : float
        Probability of a horizontal flip.
    max_angle_deg : float
        Rotation angles are uniform in ``[-max_angle_deg, max_angle_deg]``.
    zoom : (float, float)
        Magnifications are uniform in ``[lo, hi]``.
    zoom_per_axis : bool
        Draw height and width zoom independently (Keras does); otherwise one factor for both.
    shift_frac : float or (float, float)
        Shifts are uniform in ``[-h, h]`` and ``[-w, w]`` as fractions of the output
        ``(height, width)``.
    fill : {"nearest", "constant", "reflect"}
        Border rule for samples outside the image ("nearest" repeats the edge, Keras' default).
    fill_value : float
        Grey level in ``[0, 255]`` that ``fill="constant"`` pads with.
    interpolation : {"bilinear", "nearest"}

    Each sample's parameters are drawn from ``(seed, epoch, sample_id)`` only, in a fixed order
    (flip, angle, zoom height, zoom width, shift height, shift width).
    """

    hflip: float = 0.5
    max_angle_deg: float = 10.0
    zoom: tuple[float, float] = (0.97, 1.03)
    zoom_per_axis: bool = True
    shift_frac: tuple[float, float] = (0.05, 0.05)
    fill: str = "nearest"
    fill_value: float = 0.0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the stored values once, here
        set_(self, "hflip", _check_real("hflip", self.hflip, 0.0, 1.0))
        set_(self, "max_angle_deg", _check_real("max_angle_deg", self.max_angle_deg, 0.0, 180.0))
        lo, hi = _pair("zoom", self.zoom, 1e-3, 1e3)
        if lo > hi:
            raise ValueError(f"zoom: expected (lo, hi) with lo <= hi, found {self.zoom!r}")
        set_(self, "zoom", (lo, hi))
        if not isinstance(self.zoom_per_axis, (bool, np.bool_)):
            raise TypeError(f"zoom_per_axis: expected a bool, found {self.zoom_per_axis!r}")
        set_(self, "zoom_per_axis", bool(self.zoom_per_axis))
        set_(self, "shift_frac", _pair("shift_frac", self.shift_frac, 0.0, 1.0))
        _check_choice("fill", self.fill, FILLS)
        _check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        set_(self, "fill_value", _check_real("fill_value", self.fill_value, 0.0, 255.0))

    def sample_params(self, sample_id: int, *, seed: int = 0, epoch: int = 0) -> AugmentParams:
        """The parameters :func:`load_batch` draws for ``sample_id`` (for debugging or replay)."""
        flip, angle, zoom, shift = _core.sample_params(
            self,
            seed=_check_int("seed", seed),
            epoch=_check_int("epoch", epoch),
            sample_id=_check_int("sample_id", sample_id),
        )
        return AugmentParams(flip, angle, zoom, shift)


def _limits(limits: DecodeLimits | None) -> DecodeLimits:
    if limits is None:
        return _DEFAULT_LIMITS
    if not isinstance(limits, DecodeLimits):
        raise TypeError(
            f"limits: expected a ctfp.DecodeLimits or None, found {type(limits).__name__}"
        )
    return limits


def decode_png(
    source: str | os.PathLike[str] | bytes, *, limits: DecodeLimits | None = None
) -> np.ndarray:
    """Decode a PNG file or PNG bytes to an 8-bit grey ``(H, W)`` uint8 array.

    8-bit grey files (the ImageCLEF format) are returned as stored. Other PNGs are converted:
    1/2/4-bit grey scaled to 0..255; 16-bit samples to ``round(v / 257)``; RGB and palette colours
    to Pillow's ITU-R 601-2 luma (equal to ``Image.convert("L")``); alpha is dropped.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ctfp.ImageDecodeError
        Empty, non-PNG, corrupt or truncated data, or an image over the ``limits`` caps.
    """
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    return _core.decode_png(source, limits=_limits(limits))


def transform(
    image: np.ndarray,
    *,
    flip: bool = False,
    angle_deg: float = 0.0,
    zoom: float | tuple[float, float] = 1.0,
    shift: float | tuple[float, float] = (0.0, 0.0),
    size: int | tuple[int, int] | None = None,
    fill: str = "nearest",
    interpolation: str = "bilinear",
    fill_value: float = 0.0,
) -> np.ndarray:
    """Apply explicit augmentation parameters to one uint8 ``(H, W)`` grey image.

    The conventions (operation order, rotation direction, signs, pixel centres) are those of the
    module docstring, and exactly what :func:`load_batch` applies for the parameters it draws:
    ``transform(img, **augment.sample_params(k)._asdict(), size=s)`` equals channel 0 of
    ``load_batch([img], sample_ids=[k], augment=augment, size=s)``.

    Parameters
    ----------
    image : np.ndarray
        uint8, shape ``(H, W)``, C-contiguous.
    zoom, shift : float or (height, width) pair
    size : int or (height, width), optional
        Output size; the input's size by default.
    fill_value : float
        Grey level in ``[0, 255]`` that ``fill="constant"`` pads with.
    """
    fill_value = _check_real("fill_value", fill_value, 0.0, 255.0)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected a numpy uint8 array, found {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(
            f"image: expected a uint8 array of shape (H, W), found {image.dtype} {image.shape}"
        )
    out_size = image.shape if size is None else _size(size)
    return _core.transform(
        image,
        flip=bool(flip),
        angle_deg=_check_real("angle_deg", angle_deg),
        zoom=_pair("zoom", zoom, 1e-3, 1e3),
        shift=_pair("shift", shift),
        size=(int(out_size[0]), int(out_size[1])),
        interpolation=_check_choice("interpolation", interpolation, INTERPOLATIONS),
        fill=_check_choice("fill", fill, FILLS),
        fill_value=fill_value,
    )


_Triple = tuple[float, float, float]


def _normalize(normalize: object, dtype: str, layout: str) -> tuple[_Triple, _Triple]:
    if normalize is None:
        if dtype == "float32":
            return NORMALIZE_PRESETS["unit"]
        return ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    if dtype != "float32":
        raise ValueError(
            "normalize: only applies to dtype='float32' (uint8 output is never normalised)"
        )
    if isinstance(normalize, str):
        if normalize not in NORMALIZE_PRESETS:
            raise ValueError(
                f"normalize: expected one of {', '.join(map(repr, NORMALIZE_PRESETS))} or a "
                f"(mean, std) pair, found {normalize!r}"
            )
        mean, std = NORMALIZE_PRESETS[normalize]
    elif isinstance(normalize, (tuple, list)) and len(normalize) == 2:
        mean, std = (
            _triple("normalize mean", normalize[0]),
            _triple("normalize std", normalize[1]),
        )
    else:
        raise TypeError(
            f"normalize: expected None, a preset name or a (mean, std) pair, found {normalize!r}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"normalize: std values must be > 0, found {std}")
    if layout in ("grey", "broadcast") and (len(set(mean)) > 1 or len(set(std)) > 1):
        raise ValueError(
            f"layout={layout!r} shares one plane between the channels, so normalize needs the same "
            f"mean and std for each channel; found mean={mean}, std={std}. Use layout='rgb'."
        )
    return mean, std


def _triple(name: str, value: object) -> tuple[float, float, float]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = _check_real(name, value)
        return (v, v, v)
    if isinstance(value, (tuple, list, np.ndarray)) and len(value) == 3:
        a, b, c = (_check_real(f"{name}[{k}]", value[k]) for k in range(3))
        return (a, b, c)
    raise TypeError(f"{name}: expected a number or 3 numbers, found {value!r}")


def _augment_table(augment: object, n: int) -> tuple[list[Augment | None], list[int] | None]:
    """One config for all (``table[0]``), or a table of distinct configs and each source's index."""
    if augment is None:
        return [], None
    if isinstance(augment, Augment):
        return [augment], None
    if isinstance(augment, (str, bytes)) or not isinstance(augment, Sequence):
        raise TypeError(
            f"augment: expected a ctfp.Augment, None, or a sequence of them (one per source), "
            f"found {type(augment).__name__}"
        )
    if len(augment) != n:
        raise ValueError(f"augment: expected {n} configs (one per source), found {len(augment)}")
    table: list[Augment | None] = []
    index: dict[Augment | None, int] = {}
    of = []
    for k, a in enumerate(augment):
        if a is not None and not isinstance(a, Augment):
            raise TypeError(
                f"augment[{k}]: expected a ctfp.Augment or None, found {type(a).__name__}"
            )
        if a not in index:
            index[a] = len(table)
            table.append(a)
        of.append(index[a])
    return table, of


def load_batch(
    sources: Sequence[Any],
    *,
    size: int | tuple[int, int] = (224, 224),
    augment: Augment | Sequence[Augment | None] | None = None,
    seed: int = 0,
    epoch: int = 0,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    dtype: str = "uint8",
    normalize: str | tuple[Any, Any] | None = None,
    layout: str = "rgb",
    interpolation: str = "bilinear",
    fill: str = "nearest",
    fill_value: float = 0.0,
    cache: ImageCache | None = None,
    limits: DecodeLimits | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Decode, augment and assemble a batch into one channels-first array.

    Parameters
    ----------
    sources : sequence
        PNG paths (``str``/``os.PathLike``), PNG ``bytes``, or uint8 arrays of shape ``(H, W)``,
        ``(H, W, 1)`` or ``(H, W, 3)`` (RGB arrays become grey by the PNG luma rule).
    size : int or (height, width)
        Output size; every source is resized to it in the same sampling pass.
    augment : ctfp.Augment, or a sequence of ctfp.Augment or None (one per source), optional
        Random augmentation; ``None`` only resizes (with ``interpolation`` and ``fill``). A
        sequence gives each source its own config, e.g. the paper's training set, where a real
        image appears as itself, flipped, and augmented with and without the flip, and generated
        images are not augmented.
    seed, epoch : int
        With ``sample_ids``, the only inputs of each image's random draws: the output is
        bit-identical for any ``n_threads`` and any split of a dataset into batches.
    sample_ids : sequence of int, optional
        Dataset ids of the sources (default ``0 .. N-1``). Use the id of an image in the whole
        dataset, not its position in the batch.
    dtype : {"uint8", "float32"}
        float32 outputs are ``(v / 255 - mean) / std``, computed in the same pass.
    normalize : str or (mean, std), optional
        For float32 only: a preset name (``"imagenet"``, ``"symmetric"``, ``"unit"``) or per-channel
        ``(mean, std)`` on the 0..1 scale. ``None`` gives ``v / 255``.
    layout : {"rgb", "grey", "broadcast"}
        ``"rgb"``: ``(N, 3, H, W)`` with the grey plane copied into each channel. ``"grey"``:
        ``(N, 1, H, W)``. ``"broadcast"``: a read-only ``(N, 3, H, W)`` view of the grey plane
        (channel stride 0, a third of the memory) for numpy consumers. In torch, take
        ``layout="grey"`` and ``torch.from_numpy(out).expand(-1, 3, -1, -1)``: the same sharing
        without a read-only array.
    interpolation, fill, fill_value
        How sources without an augmentation config are resampled to ``size``: interpolation
        ``"bilinear"``/``"nearest"``, border rule ``"nearest"``/``"constant"``/``"reflect"``, and
        the grey level in ``[0, 255]`` that ``fill="constant"`` pads with. A ``ctfp.Augment``
        carries its own three.
    cache : ctfp.ImageCache, optional
        Keep decoded images of path sources in memory (checked against each file's size and
        modification time), so later epochs only augment.
    limits : ctfp.DecodeLimits, optional
        Width/height/pixel caps checked before decoding.
    n_threads : int, optional
        Worker threads (default: all cores). ``1`` runs in the calling thread. The GIL is
        released for all the work.

    Returns
    -------
    np.ndarray
        C-contiguous ``(N, C, H, W)`` array over the buffer the core filled (no copy);
        ``torch.from_numpy(out)`` shares its memory.
    """
    if isinstance(sources, (str, bytes, os.PathLike)) or (
        isinstance(sources, np.ndarray) and sources.dtype == np.uint8 and sources.ndim == 2
    ):
        raise TypeError("sources: expected a sequence of images; wrap a single image in a list")
    sources = list(sources)
    n = len(sources)
    if sample_ids is None:
        ids = list(range(n))
    else:
        ids = [_check_int(f"sample_ids[{k}]", v) for k, v in enumerate(sample_ids)]
        if len(ids) != n:
            raise ValueError(f"sample_ids: expected {n} ids (one per source), found {len(ids)}")
    _check_choice("dtype", dtype, DTYPES)
    _check_choice("layout", layout, LAYOUTS)
    table, augment_of = _augment_table(augment, n)
    if cache is not None and not isinstance(cache, ImageCache):
        raise TypeError(f"cache: expected a ctfp.ImageCache or None, found {type(cache).__name__}")
    if n_threads is not None:
        _check_int("n_threads", n_threads, 1, 1024)
    mean, std = _normalize(normalize, dtype, layout)
    fill_value = _check_real("fill_value", fill_value, 0.0, 255.0)
    channels = 3 if layout == "rgb" else 1
    out = _core.load_batch(
        [bytes(s) if isinstance(s, (bytearray, memoryview)) else s for s in sources],
        ids,
        size=_size(size),
        channels=channels,
        dtype=dtype,
        mean=mean,
        std=std,
        augments=table,
        augment_of=augment_of,
        interpolation=_check_choice("interpolation", interpolation, INTERPOLATIONS),
        fill=_check_choice("fill", fill, FILLS),
        fill_value=fill_value,
        seed=_check_int("seed", seed),
        epoch=_check_int("epoch", epoch),
        limits=_limits(limits),
        cache=cache,
        n_threads=n_threads,
    )
    if layout == "broadcast":
        return np.broadcast_to(out, (n, 3, *out.shape[2:]))
    return out
