"""Independent NumPy/SciPy reference implementations of ctfp's documented conventions.

Nothing here calls ctfp: the geometry is rebuilt from the prose of the ``ctfp.preprocess`` module
docstring (resize pixel-centre aligned, then an affine transform about the centre, then a
horizontal flip), one 3x3 homogeneous matrix per step, and sampled with
``scipy.ndimage.affine_transform``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

# ctfp fill name -> scipy.ndimage mode
SCIPY_MODES = {"nearest": "nearest", "constant": "grid-constant", "reflect": "reflect"}


def _pair(value: float | tuple[float, float]) -> tuple[float, float]:
    if np.ndim(value) == 0:
        return (float(value), float(value))  # type: ignore[arg-type]
    a, b = value  # type: ignore[misc]
    return (float(a), float(b))


def _translate(t: tuple[float, float] | np.ndarray) -> np.ndarray:
    m = np.eye(3)
    m[0, 2], m[1, 2] = t[0], t[1]
    return m


def _linear(a: np.ndarray) -> np.ndarray:
    m = np.eye(3)
    m[:2, :2] = a
    return m


def forward_steps(
    flip: bool,
    angle_deg: float,
    zoom: float | tuple[float, float],
    shift: float | tuple[float, float],
    src_hw: tuple[int, int],
    out_hw: tuple[int, int],
) -> list[np.ndarray]:
    """The three documented steps as forward (source -> output) homogeneous matrices, in order.

    Coordinates are ``(row, col)`` with pixel centres at integers.

    1. Resize ``(Hs, Ws) -> (H, W)`` pixel-centre aligned: the source centre maps onto the output
       centre and distances scale by ``H / Hs`` and ``W / Ws``.
    2. About the output centre: rotate the content counter-clockwise (as displayed, row 0 on top)
       by ``angle_deg``, magnify by ``zoom`` and shift by ``shift * (H, W)`` (down/right positive).
       The docstring's inverse map is ``R (Z^-1 u - t)`` with ``R = [[c, s], [-s, c]]``, so the
       forward map of a centred point ``v`` is ``Z (R^-1 v + t)``: rotate, shift, then zoom.
    3. Mirror the columns about the centre when ``flip``.
    """
    hs, ws = src_hw
    h, w = out_hw
    zh, zw = _pair(zoom)
    sh, sw = _pair(shift)
    c_s = ((hs - 1) / 2.0, (ws - 1) / 2.0)
    c_o = ((h - 1) / 2.0, (w - 1) / 2.0)
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)

    resize = _translate(c_o) @ _linear(np.diag([h / hs, w / ws])) @ _translate((-c_s[0], -c_s[1]))

    # Content turns counter-clockwise as displayed: a point right of the centre, (0, +d), moves
    # to above it, (-d, 0). That is the inverse (transpose) of R = [[c, s], [-s, c]].
    rot_fwd = np.array([[c, -s], [s, c]])
    affine = (
        _translate(c_o)
        @ _linear(np.diag([zh, zw]))
        @ _translate((sh * h, sw * w))
        @ _linear(rot_fwd)
        @ _translate((-c_o[0], -c_o[1]))
    )

    mirror = np.diag([1.0, -1.0]) if flip else np.eye(2)
    flip_m = _translate(c_o) @ _linear(mirror) @ _translate((-c_o[0], -c_o[1]))
    return [resize, affine, flip_m]


def affine_matrix(
    flip: bool,
    angle_deg: float,
    zoom: float | tuple[float, float],
    shift: float | tuple[float, float],
    src_hw: tuple[int, int],
    out_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, offset)`` mapping an output pixel ``(i, j)`` to its source position, in the form
    ``scipy.ndimage.affine_transform`` takes: ``src = matrix @ (i, j) + offset``."""
    resize, affine, flip_m = forward_steps(flip, angle_deg, zoom, shift, src_hw, out_hw)
    forward = flip_m @ affine @ resize
    inverse = np.linalg.inv(forward)
    return inverse[:2, :2].copy(), inverse[:2, 2].copy()


def source_positions(matrix: np.ndarray, offset: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``(2, H, W)`` source coordinates sampled by each output pixel."""
    ii, jj = np.meshgrid(np.arange(out_hw[0]), np.arange(out_hw[1]), indexing="ij")
    coords = np.stack([ii, jj]).astype(np.float64)
    return np.einsum("ab,bhw->ahw", matrix, coords) + offset[:, None, None]


def interior_mask(
    matrix: np.ndarray,
    offset: np.ndarray,
    src_hw: tuple[int, int],
    out_hw: tuple[int, int],
    margin: float = 1.5,
) -> np.ndarray:
    """Output pixels whose source position lies at least ``margin`` px inside the source."""
    pos = source_positions(matrix, offset, out_hw)
    hs, ws = src_hw
    return (
        (pos[0] >= margin)
        & (pos[0] <= hs - 1 - margin)
        & (pos[1] >= margin)
        & (pos[1] <= ws - 1 - margin)
    )


def transform_ref(
    image: np.ndarray,
    *,
    flip: bool = False,
    angle_deg: float = 0.0,
    zoom: float | tuple[float, float] = 1.0,
    shift: float | tuple[float, float] = (0.0, 0.0),
    size: int | tuple[int, int] | None = None,
    fill: str = "nearest",
    cval: float = 0.0,
    order: int = 1,
) -> np.ndarray:
    """Float64 reference of ``ctfp.transform`` (unrounded)."""
    src_hw = image.shape
    if size is None:
        out_hw = src_hw
    elif np.ndim(size) == 0:
        out_hw = (int(size), int(size))  # type: ignore[arg-type]
    else:
        out_hw = (int(size[0]), int(size[1]))  # type: ignore[index]
    matrix, offset = affine_matrix(flip, angle_deg, zoom, shift, src_hw, out_hw)
    return ndimage.affine_transform(
        image.astype(np.float64),
        matrix,
        offset,
        output_shape=out_hw,
        order=order,
        mode=SCIPY_MODES[fill],
        cval=float(cval),
        prefilter=False,
    )


def round_half_up(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.asarray(x) + 0.5), 0, 255).astype(np.uint8)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """Pillow's fixed-point ITU-R 601-2 luma, ``Image.convert("L")`` on an ``(..., 3)`` uint8."""
    r, g, b = (rgb[..., k].astype(np.uint32) for k in range(3))
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).astype(np.uint8)


def from16(v: np.ndarray) -> np.ndarray:
    """16-bit sample -> 8 bits, ``round(v / 257)`` in integer arithmetic."""
    return ((v.astype(np.uint64) * 255 + 32767) // 65535).astype(np.uint8)


def scale_low_bits(v: np.ndarray, bits: int) -> np.ndarray:
    """1/2/4-bit grey -> 0..255 (``v * 255 / (2**bits - 1)``, exact for these depths)."""
    return (v.astype(np.uint32) * 255 // ((1 << bits) - 1)).astype(np.uint8)


def grey_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[None], 3, 0)


def organisers_accept(text: str, ids: list[str]) -> bool:
    """Whether the ImageCLEFmedical GANs 2023 submission validator accepts run-file ``text``,
    rebuilt from its published rules (not from ctfp): the file read in Python's text mode, each
    line parsed by the ``csv`` module with a comma delimiter and no quoting, exactly two tokens a
    line, each token stripped of white space, the id one of ``ids`` and not seen before, the score
    ``int()`` of 0 or 1, and as many distinct ids as there are test ids."""
    import csv
    import io

    expected = set(ids)
    seen: set[str] = set()
    for row in csv.reader(io.StringIO(text, newline=None), delimiter=",", quoting=csv.QUOTE_NONE):
        if len(row) != 2:
            return False
        ident, score = row[0].strip(), row[1].strip()
        if ident not in expected or ident in seen:
            return False
        try:
            if int(score) not in (0, 1):
                return False
        except ValueError:
            return False
        seen.add(ident)
    return len(seen) == len(expected)
