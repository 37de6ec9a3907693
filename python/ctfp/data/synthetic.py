"""Synthetic CT-like axial lung slices for demos and tests.

No lung CT ships with any package we can depend on, so ctfp draws its own: 8-bit grey axial slices
that look like a chest CT in a soft-tissue/lung window (dark air, a curved patient table, an
elliptical body with skin and fat layers, two dark lung fields around the mediastinum and heart,
bright vessels and branching bronchovascular structures, ribs, a vertebra, CT-like noise and, for
some patients, tuberculosis-like nodules and cavities).

A *patient* (integer id) fixes the anatomy: body size and shape, lung shape, rib positions, the
vessel tree and any lesions. A *slice* index within a patient moves smoothly through that anatomy,
as neighbouring axial slices do: lung and heart sizes change, vessels drift, branches fade in and
out.
Everything is drawn from ``numpy.random.Generator(numpy.random.PCG64(...))`` seeded with
``(seed, patient)`` for the anatomy and ``(seed, patient, slice_index)`` for the noise, so the same
``(seed, patient, slice_index, size)`` always gives bit-identical output.

Examples
--------
>>> from ctfp.data.synthetic import make_slice, make_slices
>>> img = make_slice(3, slice_index=5)
>>> img.shape, img.dtype
((256, 256), dtype('uint8'))
>>> make_slices(20, n_patients=2).shape
(20, 256, 256)
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ctfp._util import write_image_png

__all__ = ["make_masks", "make_slice", "make_slices", "write_pngs"]

# Domain tags mixed into the seed sequences so anatomy and noise streams never coincide.
_TAG_ANATOMY = 0x43_54_46_50_41  # "CTFPA"
_TAG_NOISE = 0x43_54_46_50_4E  # "CTFPN"

_MIN_SIZE = 32
_REFERENCE_SIZE = 256  # pixel-based widths (blur, edges) are tuned at this size and scaled with it
_N_ANGLE_BINS = 1024  # angular lookup tables for the rib cage


# --------------------------------------------------------------------------------------------------
# argument checks


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer >= ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, found {type(value).__name__} {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, found {v}")
    return v


# --------------------------------------------------------------------------------------------------
# anatomy (one per (seed, patient))


class _Lung(NamedTuple):
    side: float  # -1: image left (patient right), +1: image right (patient left)
    cx: float
    cy: float
    ax: float  # half width
    ay: float  # half height
    tilt: float
    harm: np.ndarray  # (K, 3): k, amplitude, phase of the boundary's Fourier terms
    dent: float  # depth of the medial (hilar) indentation, as a fraction of the radius
    dent_angle: float
    scale_amp: float  # lung size over slices: 1 + scale_amp * sin(scale_omega * z + scale_phase)
    scale_omega: float
    scale_phase: float
    dots: np.ndarray  # (N, 8): u0, v0, drift u, drift v, omega, phase, width class, amplitude
    segs: np.ndarray  # (S, 12): u0, v0, u1, v1, drift u, drift v, omega, phase, width class,
    #                   visibility omega, visibility phase, amplitude
    bronchi: np.ndarray  # (B, 7): u0, v0, drift, omega, phase, radius, visibility phase


class _Anatomy(NamedTuple):
    body: tuple[float, float, float, float]  # half width, half height, centre y, posterior flat
    body_harm: np.ndarray
    fat: float  # subcutaneous fat thickness
    wall: float  # depth of the pleura under the skin
    lungs: tuple[_Lung, _Lung]
    heart: tuple[float, ...]  # cx, cy, ax, ay, tilt, size amplitude, omega, phase
    spine: tuple[float, float, float]  # x, y, radius of the vertebral body
    aorta: tuple[float, float, float]  # x, y, radius (descending aorta)
    esophagus: tuple[float, float, float, float]  # x, y, radius, lumen radius
    ribs: np.ndarray  # (R, 7): angle, half arc, depth, half thickness, drift, omega, phase
    lesions: np.ndarray  # (L, 8): side, u, v, z centre, z half extent, radius, kind, grey
    table: tuple[float, float, float]  # y of the top surface, curvature, half width
    grey: dict[str, float]


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _harmonics(rng: np.random.Generator, ks: tuple[int, ...], sd: float) -> np.ndarray:
    k = np.asarray(ks, dtype=np.float64)
    return np.stack([k, rng.normal(0.0, sd, k.size), rng.uniform(0.0, 2 * np.pi, k.size)], axis=1)


def _vessel_tree(rng: np.random.Generator) -> np.ndarray:
    """Branching segments in lung coordinates (u lateral, v posterior), rooted at the hilum."""
    segs: list[list[float]] = []
    root = np.array([-0.55 + rng.uniform(-0.08, 0.08), rng.uniform(-0.15, 0.1)])
    n_main = int(rng.integers(3, 5))
    base_angles = np.linspace(-1.3, 1.3, n_main) + rng.uniform(-0.2, 0.2, n_main)
    lengths = (0.36, 0.25, 0.16)
    stack = [(root, float(a), 0) for a in base_angles]
    while stack:
        start, angle, level = stack.pop()
        length = lengths[level] * rng.uniform(0.75, 1.25)
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        segs.append(
            [
                *start,
                *end,
                rng.uniform(0.015, 0.03) * (level + 1),
                rng.uniform(0.015, 0.03) * (level + 1),
                rng.uniform(0.08, 0.2),
                rng.uniform(0.0, 2 * np.pi),
                float(level),
                rng.uniform(0.06, 0.16),
                rng.uniform(0.0, 2 * np.pi),
                rng.uniform(0.55, 0.9),
            ]
        )
        if level < len(lengths) - 1:
            spread = rng.uniform(0.3, 0.65)
            stack.append((end, angle - spread + rng.normal(0, 0.1), level + 1))
            stack.append((end, angle + spread + rng.normal(0, 0.1), level + 1))
    return np.asarray(segs, dtype=np.float64)


def _vessel_dots(rng: np.random.Generator) -> np.ndarray:
    """Vessels crossing the slice plane: points in the unit disk of lung coordinates."""
    n = int(rng.integers(40, 70))
    rad = 0.97 * np.sqrt(rng.uniform(0.0, 1.0, n))
    ang = rng.uniform(0.0, 2 * np.pi, n)
    u0, v0 = rad * np.cos(ang), rad * np.sin(ang)
    # Vessels near the hilum (u ~ -0.6) are wider: width class 0 (widest) to 2 (finest).
    hilum_dist = np.sqrt((u0 + 0.6) ** 2 + v0**2)
    cls = np.clip(np.floor(hilum_dist / 0.35 + rng.uniform(-0.4, 0.4, n)), 0, 2)
    return np.stack(
        [
            u0,
            v0,
            rng.uniform(0.02, 0.06, n),
            rng.uniform(0.02, 0.06, n),
            rng.uniform(0.1, 0.3, n),
            rng.uniform(0.0, 2 * np.pi, n),
            cls,
            rng.uniform(0.5, 1.0, n),
        ],
        axis=1,
    )


def _bronchi(rng: np.random.Generator) -> np.ndarray:
    """Bronchi seen end-on near the hilum: air lumens with a thin bright wall."""
    n = int(rng.integers(2, 5))
    return np.stack(
        [
            rng.uniform(-0.6, -0.15, n),
            rng.uniform(-0.45, 0.45, n),
            rng.uniform(0.02, 0.05, n),
            rng.uniform(0.1, 0.25, n),
            rng.uniform(0.0, 2 * np.pi, n),
            rng.uniform(0.012, 0.03, n),
            rng.uniform(0.0, 2 * np.pi, n),
        ],
        axis=1,
    )


def _make_lung(rng: np.random.Generator, side: float, bax: float, bay: float, bcy: float) -> _Lung:
    return _Lung(
        side=side,
        cx=side * bax * _uniform(rng, 0.42, 0.48),
        cy=bcy + bay * _uniform(rng, -0.04, 0.08),
        ax=bax * _uniform(rng, 0.36, 0.41),
        ay=bay * _uniform(rng, 0.78, 0.88),
        tilt=side * _uniform(rng, -0.15, 0.15),
        harm=_harmonics(rng, (2, 3, 4), 0.03),
        dent=_uniform(rng, 0.12, 0.25),
        dent_angle=(np.pi if side > 0 else 0.0) - side * _uniform(rng, 0.2, 0.5),
        scale_amp=_uniform(rng, 0.04, 0.09),
        scale_omega=_uniform(rng, 0.06, 0.12),
        scale_phase=_uniform(rng, 0.0, 2 * np.pi),
        dots=_vessel_dots(rng),
        segs=_vessel_tree(rng),
        bronchi=_bronchi(rng),
    )


def _make_lesions(rng: np.random.Generator) -> np.ndarray:
    n = 0 if rng.uniform() < 0.45 else int(rng.integers(1, 5))
    rows = []
    for _ in range(n):
        rad = 0.7 * np.sqrt(rng.uniform())
        ang = rng.uniform(0.0, 2 * np.pi)
        rows.append(
            [
                rng.choice([-1.0, 1.0]),
                rad * np.cos(ang),
                rad * np.sin(ang),
                rng.uniform(0.0, 40.0),  # slice index of the largest cross-section
                rng.uniform(3.0, 9.0),  # visible over +- this many slices
                rng.uniform(0.035, 0.09),
                float(rng.integers(0, 3)),  # 0 nodule, 1 cavity, 2 cluster of small nodules
                rng.uniform(120.0, 160.0),
            ]
        )
    return np.asarray(rows, dtype=np.float64).reshape(n, 8)


def _make_ribs(rng: np.random.Generator, fat: float) -> np.ndarray:
    rows = []
    for side in (1.0, -1.0):
        n = int(rng.integers(6, 10))
        # theta = 0 is image right (lateral), -pi/2 anterior (top), +pi/2 posterior (bottom).
        angles = np.linspace(-1.25, 1.3, n) + rng.uniform(-0.1, 0.1, n)
        for a in angles:
            theta = a if side > 0 else np.pi - a
            half_thick = rng.uniform(0.016, 0.024)
            half_arc = rng.uniform(0.04, 0.1) + (0.05 if a > 0.7 else 0.0)
            rows.append(
                [
                    theta,
                    half_arc,
                    fat + rng.uniform(0.008, 0.018) + half_thick,
                    half_thick,
                    rng.uniform(0.02, 0.06),
                    rng.uniform(0.08, 0.2),
                    rng.uniform(0.0, 2 * np.pi),
                ]
            )
    half_thick = rng.uniform(0.016, 0.022)  # sternum: one wider, flatter piece at the top
    rows.append(
        [-np.pi / 2, rng.uniform(0.06, 0.09), fat + 0.012 + half_thick, half_thick, 0.0, 0.1, 0.0]
    )
    return np.asarray(rows, dtype=np.float64)


@functools.lru_cache(maxsize=128)
def _anatomy(seed: int, patient: int) -> _Anatomy:
    seq = np.random.SeedSequence([_TAG_ANATOMY, seed, patient])
    rng = np.random.Generator(np.random.PCG64(seq))
    bax = _uniform(rng, 0.80, 0.92)
    bay = bax * _uniform(rng, 0.60, 0.72)
    bcy = _uniform(rng, -0.1, -0.03)
    flat = _uniform(rng, 0.03, 0.08)
    body_harm = _harmonics(rng, (2, 3, 4, 5), 0.012)
    fat = _uniform(rng, 0.025, 0.06)
    wall = fat + _uniform(rng, 0.07, 0.085)
    lungs = (_make_lung(rng, -1.0, bax, bay, bcy), _make_lung(rng, 1.0, bax, bay, bcy))
    heart = (
        _uniform(rng, 0.05, 0.13),
        bcy - bay * _uniform(rng, 0.18, 0.3),
        bax * _uniform(rng, 0.27, 0.33),
        bay * _uniform(rng, 0.30, 0.38),
        _uniform(rng, -0.6, -0.3),
        _uniform(rng, 0.06, 0.14),
        _uniform(rng, 0.06, 0.12),
        _uniform(rng, 0.0, 2 * np.pi),
    )
    rvb = _uniform(rng, 0.08, 0.1)
    body_bottom = bcy + bay * (1.0 - flat)
    sx, sy = _uniform(rng, -0.01, 0.01), body_bottom - _uniform(rng, 0.3, 0.34)
    aorta = (
        sx + rvb * _uniform(rng, 0.8, 1.1),
        sy - rvb * _uniform(rng, 0.4, 0.8),
        _uniform(rng, 0.045, 0.06),
    )
    eso_r = _uniform(rng, 0.022, 0.03)
    esophagus = (
        sx - rvb * _uniform(rng, 0.0, 0.4),
        sy - rvb - eso_r - _uniform(rng, 0.005, 0.02),
        eso_r,
        eso_r * _uniform(rng, 0.0, 0.45),
    )
    table = (
        body_bottom + _uniform(rng, 0.025, 0.05),
        _uniform(rng, 0.08, 0.16),
        _uniform(rng, 0.8, 0.97),
    )
    muscle = _uniform(rng, 132.0, 148.0)
    grey = {
        "air": _uniform(rng, 2.0, 6.0),
        "table": _uniform(rng, 85.0, 105.0),
        "table_core": _uniform(rng, 25.0, 40.0),
        "fat": muscle - _uniform(rng, 22.0, 32.0),
        "muscle": muscle,
        "skin": muscle + _uniform(rng, 18.0, 28.0),
        "heart": muscle + _uniform(rng, 4.0, 14.0),
        "pericardial_fat": muscle - _uniform(rng, 15.0, 25.0),
        "lung": _uniform(rng, 18.0, 30.0),
        "lung_gradient": _uniform(rng, 5.0, 14.0),
        "vessel": _uniform(rng, 110.0, 140.0),
        "bone": _uniform(rng, 228.0, 245.0),
        "marrow": _uniform(rng, 170.0, 195.0),
        "noise": _uniform(rng, 11.0, 15.0),
    }
    return _Anatomy(
        body=(bax, bay, bcy, flat),
        body_harm=body_harm,
        fat=fat,
        wall=wall,
        lungs=lungs,
        heart=heart,
        spine=(sx, sy, rvb),
        aorta=aorta,
        esophagus=esophagus,
        ribs=_make_ribs(rng, fat),
        lesions=_make_lesions(rng),
        table=table,
        grey=grey,
    )


# --------------------------------------------------------------------------------------------------
# rendering helpers

_f32 = np.float32


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], y pointing down (anterior at the top)."""
    c = ((np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    x = np.broadcast_to(c[None, :], (size, size))
    y = np.broadcast_to(c[:, None], (size, size))
    return x, y


def _win(size: int, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
    """Index window covering the normalised box [x0, x1] x [y0, y1] plus a small margin."""
    to = size / 2.0
    c0 = min(max(int(np.floor((x0 + 1.0) * to)) - 2, 0), size)
    c1 = min(max(int(np.ceil((x1 + 1.0) * to)) + 2, c0), size)
    r0 = min(max(int(np.floor((y0 + 1.0) * to)) - 2, 0), size)
    r1 = min(max(int(np.ceil((y1 + 1.0) * to)) + 2, r0), size)
    return slice(r0, r1), slice(c0, c1)


def _ramp(d: np.ndarray, px: float) -> np.ndarray:
    """Soft inside-indicator for a signed distance ``d`` (> 0 inside), about ``px`` wide."""
    return np.clip(d * _f32(1.0 / px) + _f32(0.5), _f32(0.0), _f32(1.0))


def _star(
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    tilt: float = 0.0,
    harm: np.ndarray | None = None,
    scale: float = 1.0,
    dent: float = 0.0,
    dent_angle: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radial signed distance to a star-shaped outline (ellipse times Fourier terms).

    Returns the distance (> 0 inside) and the cosine and sine of each pixel's angle in the
    shape's own frame.
    """
    dx = x - _f32(cx)
    dy = y - _f32(cy)
    if tilt:
        c, s = _f32(np.cos(tilt)), _f32(np.sin(tilt))
        dx, dy = c * dx + s * dy, c * dy - s * dx
    r = np.sqrt(dx * dx + dy * dy)
    inv = _f32(1.0) / np.maximum(r, _f32(1e-6))
    cos_t, sin_t = dx * inv, dy * inv
    ex, ey = cos_t * _f32(1.0 / ax), sin_t * _f32(1.0 / ay)
    radius = _f32(scale) / np.sqrt(ex * ex + ey * ey)
    if harm is not None or dent:
        factor = np.ones_like(r)
        if harm is not None:
            # cos(k theta + phase) from powers of (cos + i sin), without arctan2
            ck, sk = cos_t, sin_t
            k_done = 1
            for k, amp, phase in harm:
                while k_done < int(k):
                    ck, sk = ck * cos_t - sk * sin_t, sk * cos_t + ck * sin_t
                    k_done += 1
                factor += _f32(amp * np.cos(phase)) * ck - _f32(amp * np.sin(phase)) * sk
        if dent:
            toward = np.clip(
                cos_t * _f32(np.cos(dent_angle)) + sin_t * _f32(np.sin(dent_angle)), _f32(0.0), None
            )
            toward *= toward
            factor -= _f32(dent) * toward * toward
        radius *= factor
    return radius - r, cos_t, sin_t


def _disc(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float, px: float) -> np.ndarray:
    dx, dy = x - _f32(cx), y - _f32(cy)
    return _ramp(_f32(r) - np.sqrt(dx * dx + dy * dy), px)


def _segment_dist(
    x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]
) -> np.ndarray:
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    wx, wy = x - _f32(p0[0]), y - _f32(p0[1])
    t = np.clip(
        (wx * _f32(vx) + wy * _f32(vy)) * _f32(1.0 / (vx * vx + vy * vy)), _f32(0.0), _f32(1.0)
    )
    ox, oy = wx - t * _f32(vx), wy - t * _f32(vy)
    return np.sqrt(ox * ox + oy * oy)


def _splat(
    n_layers: int, size: int, layer: np.ndarray, px_x: np.ndarray, px_y: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Bilinearly splat weights at sub-pixel positions (pixels) into ``(n_layers, size, size)``."""
    fx, fy = px_x - 0.5, px_y - 0.5
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    tx, ty = fx - x0, fy - y0
    idx, wt = [], []
    base = layer.astype(np.int64) * (size * size)
    for ox, oy, ww in (
        (0, 0, (1 - tx) * (1 - ty)),
        (1, 0, tx * (1 - ty)),
        (0, 1, (1 - tx) * ty),
        (1, 1, tx * ty),
    ):
        xi, yi = x0 + ox, y0 + oy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        idx.append((base + yi * size + xi)[ok])
        wt.append((w * ww)[ok])
    flat = np.bincount(
        np.concatenate(idx), weights=np.concatenate(wt), minlength=n_layers * size * size
    )
    return flat.reshape(n_layers, size, size).astype(np.float32)


# Width (Gaussian sigma, pixels at 256x256) of vessel classes 0 (hilar) .. 2 (peripheral).
_VESSEL_SIGMA_PX = (1.25, 0.95, 0.7)


def _lung_scale(lung: _Lung, z: float) -> float:
    return 1.0 + lung.scale_amp * float(np.sin(lung.scale_omega * z + lung.scale_phase))


def _lung_to_image(
    lung: _Lung, scale: float, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map lung coordinates (u lateral, v posterior, unit disk ~ the lung) to image coordinates."""
    ex = lung.side * u * lung.ax * scale
    ey = v * lung.ay * scale
    c, s = np.cos(lung.tilt), np.sin(lung.tilt)
    return lung.cx + c * ex - s * ey, lung.cy + s * ex + c * ey


def _vessels(anat: _Anatomy, z: float, size: int) -> np.ndarray:
    """Vessel and bronchovascular intensity (about 0..1), before masking by the lungs."""
    scale_px = size / _REFERENCE_SIZE
    to_px = size / 2.0
    sigmas = np.asarray(_VESSEL_SIGMA_PX) * scale_px
    xs, ys, ws, cs = [], [], [], []
    for lung in anat.lungs:
        lscale = _lung_scale(lung, z)
        # vessels crossing the slice: Gaussian blobs of peak ~ amplitude
        d = lung.dots
        phase = d[:, 4] * z + d[:, 5]
        xi, yi = _lung_to_image(
            lung, lscale, d[:, 0] + d[:, 2] * np.sin(phase), d[:, 1] + d[:, 3] * np.cos(phase)
        )
        cls = d[:, 6].astype(np.int64)
        xs.append((xi + 1) * to_px)
        ys.append((yi + 1) * to_px)
        ws.append(d[:, 7] * 2 * np.pi * sigmas[cls] ** 2 * 1.5)
        cs.append(cls)
        # branches in the slice plane: Gaussian lines sampled every half pixel
        s = lung.segs
        drift = np.sin(s[:, 6] * z + s[:, 7])
        vis = np.clip(1.6 * np.cos(s[:, 9] * z + s[:, 10]) + 0.4, 0.0, 1.0) * s[:, 11]
        x0, y0 = _lung_to_image(lung, lscale, s[:, 0] + s[:, 4] * drift, s[:, 1] + s[:, 5] * drift)
        x1, y1 = _lung_to_image(
            lung, lscale, s[:, 2] + s[:, 4] * drift * 1.5, s[:, 3] + s[:, 5] * drift * 1.5
        )
        lengths_px = np.sqrt((x1 - x0) ** 2 + (y1 - y0) ** 2) * to_px
        n_samples = np.maximum(np.ceil(lengths_px / 0.5).astype(np.int64), 1)
        seg_of = np.repeat(np.arange(len(s)), n_samples)
        starts = np.cumsum(n_samples) - n_samples
        t = (np.arange(seg_of.size) - starts[seg_of] + 0.5) / n_samples[seg_of]
        xs.append((x0[seg_of] + t * (x1 - x0)[seg_of] + 1) * to_px)
        ys.append((y0[seg_of] + t * (y1 - y0)[seg_of] + 1) * to_px)
        cls = s[seg_of, 8].astype(np.int64)
        spacing = lengths_px[seg_of] / n_samples[seg_of]
        ws.append(vis[seg_of] * spacing * np.sqrt(2 * np.pi) * sigmas[cls] * 1.25)
        cs.append(cls)
    px_x, px_y, cls = np.concatenate(xs), np.concatenate(ys), np.concatenate(cs)
    layers = _splat(len(sigmas), size, cls, px_x, px_y, np.concatenate(ws))
    out = np.zeros((size, size), np.float32)
    for c, sigma in enumerate(sigmas):
        sel = cls == c
        if not sel.any():
            continue
        # filter only the box holding this layer's points plus the kernel's reach
        pad = 3.0 * sigma + 2.0
        r0, r1 = int(max(px_y[sel].min() - pad, 0)), int(min(px_y[sel].max() + pad + 1, size))
        c0, c1 = int(max(px_x[sel].min() - pad, 0)), int(min(px_x[sel].max() + pad + 1, size))
        if r0 >= r1 or c0 >= c1:
            continue
        out[r0:r1, c0:c1] += ndimage.gaussian_filter(
            layers[c, r0:r1, c0:c1], sigma, mode="constant", truncate=3.0
        )
    return np.clip(out, _f32(0.0), _f32(1.0))


def _lesions(
    anat: _Anatomy,
    z: float,
    img: np.ndarray,
    lung: np.ndarray,
    px: float,
    lung_scales: tuple[float, float],
) -> None:
    """Paint tuberculosis-like lesions crossing this slice into ``img`` (inside the lungs)."""
    x, y = _grid(img.shape[0])
    for side, u, v, zc, half, rad, kind, level in anat.lesions:
        frac = 1.0 - ((z - zc) / half) ** 2
        if frac <= 0.0:
            continue
        r = rad * np.sqrt(frac)
        li = 0 if side < 0 else 1
        cxa, cya = _lung_to_image(anat.lungs[li], lung_scales[li], np.array([u]), np.array([v]))
        cx, cy = float(cxa[0]), float(cya[0])
        w = _win(img.shape[0], cx - 1.6 * r, cx + 1.6 * r, cy - 1.6 * r, cy + 1.6 * r)
        xw, yw = x[w], y[w]
        if kind == 0:  # solid nodule
            cover = _disc(xw, yw, cx, cy, r, px)
            grey = _f32(level)
        elif kind == 1:  # cavity: thick bright wall, air inside
            cover = _disc(xw, yw, cx, cy, r, px)
            cover *= _f32(1.0) - _disc(xw, yw, cx + 0.15 * r, cy - 0.1 * r, 0.6 * r, px)
            grey = _f32(level)
        else:  # cluster of small nodules (tree-in-bud-like)
            cover = np.zeros_like(xw)
            for k, a in enumerate(np.linspace(0.0, 2 * np.pi, 7, endpoint=False) + zc):
                rr = r * (0.4 + 0.6 * ((k * 0.37 + zc) % 1.0))
                cover = np.maximum(
                    cover,
                    _disc(xw, yw, cx + rr * np.cos(a), cy + rr * np.sin(a), 0.25 * r + px, px),
                )
            grey = _f32(0.85 * level)
        cover *= lung[w]
        img[w] += (grey - img[w]) * cover


def _ribs_lut(anat: _Anatomy, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pseudo-angle bin (see ``_pseudo_angle_bin``), the nearest rib's angular offset.

    Returns the offset from the rib's centre as a fraction of its half arc, the rib's depth under
    the skin and its half thickness.
    """
    ribs = anat.ribs
    n = _N_ANGLE_BINS
    p = (np.arange(n) + 0.5) / n * 2.0 - 1.0  # pseudo-angle bin centres in [-1, 1]
    theta = np.concatenate([np.arctan2(p, 1.0 - np.abs(p)), np.arctan2(p, np.abs(p) - 1.0)])
    centres = ribs[:, 0] + ribs[:, 4] * np.sin(ribs[:, 5] * z + ribs[:, 6])
    delta = np.abs((theta[None, :] - centres[:, None] + np.pi) % (2 * np.pi) - np.pi)
    frac = delta / ribs[:, 1:2]
    which = np.argmin(frac, axis=0)
    nearest = np.minimum(frac[which, np.arange(2 * n)], 2.0)
    return (
        nearest.astype(np.float32),
        ribs[which, 2].astype(np.float32),
        ribs[which, 3].astype(np.float32),
    )


def _pseudo_angle_bin(cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
    """Bin index of a direction: monotonic in angle on each half plane, no arctan2 needed."""
    n = _N_ANGLE_BINS
    p = sin_t / (np.abs(cos_t) + np.abs(sin_t) + _f32(1e-12))
    idx = np.clip(((p + _f32(1.0)) * _f32(n / 2.0)).astype(np.int32), 0, n - 1)
    idx += (cos_t < 0).astype(np.int32) * n
    return idx


def _render(
    seed: int, patient: int, slice_index: int, size: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw one slice; return the uint8 image and boolean anatomy masks."""
    anat = _anatomy(seed, patient)
    g = anat.grey
    x, y = _grid(size)
    px = 2.0 / size
    z = float(slice_index)
    f32 = _f32

    img = np.full((size, size), f32(g["air"]), np.float32)

    # patient table: a curved shell (bright) around a darker foam core, and a lower rail
    ytop, curv, halfw = anat.table
    tw = _win(size, -1.0, 1.0, ytop - curv, ytop + 0.16)
    xt, yt = x[tw], y[tw]
    depth = yt - (f32(ytop) - f32(curv) * xt * xt)
    ends = _ramp(f32(halfw) - np.abs(xt), px * 3)
    shell = _ramp(depth, px) * _ramp(f32(0.075) - depth, px)
    core = _ramp(depth - f32(0.018), px) * _ramp(f32(0.057) - depth, px)
    lower = _ramp(depth - f32(0.13), px) * _ramp(f32(0.145) - depth, px)
    table = np.maximum(shell, lower) * ends
    img[tw] += (f32(g["table"]) - img[tw]) * table
    img[tw] += (f32(g["table_core"]) - img[tw]) * (core * ends)

    # body: skin, subcutaneous fat, fascia, muscle; the back flattened where it lies on the table
    bax, bay, bcy, flat = anat.body
    d_body, cos_b, sin_b = _star(x, y, 0.0, bcy, bax, bay, harm=anat.body_harm)
    s2 = np.clip(sin_b, f32(0.0), None)
    s2 *= s2
    d_body -= f32(flat * bay) * s2 * s2 * s2
    body = _ramp(d_body, px)
    muscle = _ramp(d_body - f32(anat.fat), px * 1.5)
    img += (f32(g["fat"]) - img) * body
    img += (f32(g["muscle"]) - img) * muscle
    img += (f32(g["skin"]) - img) * (
        body * np.clip(f32(1.0) - d_body * f32(1 / (1.6 * px)), f32(0.0), f32(1.0))
    )
    img += f32(10.0) * np.clip(
        f32(1.0) - np.abs(d_body - f32(anat.fat)) * f32(1 / px), f32(0.0), f32(1.0)
    )

    # mediastinum: heart with pericardial fat, descending aorta, esophagus
    hcx, hcy, hax, hay, htilt, hamp, homega, hphase = anat.heart
    hscale = 1.0 + hamp * float(np.sin(homega * z + hphase))
    hr = max(hax, hay) * hscale + 0.06
    hw = _win(size, hcx - hr, hcx + hr, hcy - hr, hcy + hr)
    d_heart = _star(x[hw], y[hw], hcx, hcy, hax, hay, tilt=htilt, scale=hscale)[0]
    img[hw] += (f32(g["pericardial_fat"]) - img[hw]) * (_ramp(d_heart + f32(0.02), px) * muscle[hw])
    img[hw] += (f32(g["heart"]) - img[hw]) * _ramp(d_heart, px)
    acx, acy, ar = anat.aorta
    aw = _win(size, acx - ar - 0.05, acx + ar + 0.05, acy - ar - 0.05, acy + ar + 0.05)
    img[aw] += (f32(g["heart"] + 6.0) - img[aw]) * _disc(x[aw], y[aw], acx, acy, ar, px)
    ecx, ecy, er, elumen = anat.esophagus
    ew = _win(size, ecx - er, ecx + er, ecy - er, ecy + er)
    img[ew] += (f32(g["muscle"] - 8.0) - img[ew]) * _disc(x[ew], y[ew], ecx, ecy, er, px)
    if elumen > px:
        img[ew] += (f32(g["air"] + 15.0) - img[ew]) * _disc(x[ew], y[ew], ecx, ecy, elumen, px)

    # lungs, inside the chest wall, kept off the heart, aorta and spine
    sx, sy, rvb = anat.spine
    lung = np.zeros((size, size), np.float32)
    lung_scales = (_lung_scale(anat.lungs[0], z), _lung_scale(anat.lungs[1], z))
    for lg, lscale in zip(anat.lungs, lung_scales, strict=True):
        rx, ry = 1.15 * lg.ax * lscale, 1.15 * lg.ay * lscale
        lw = _win(size, lg.cx - rx, lg.cx + rx, lg.cy - ry, lg.cy + ry)
        d_lung = _star(
            x[lw],
            y[lw],
            lg.cx,
            lg.cy,
            lg.ax,
            lg.ay,
            tilt=lg.tilt,
            harm=lg.harm,
            scale=lscale,
            dent=lg.dent,
            dent_angle=lg.dent_angle,
        )[0]
        lung[lw] = np.maximum(lung[lw], _ramp(d_lung, px * 1.5))
    lung *= _ramp(d_body - f32(anat.wall), px * 2)
    lung[hw] *= f32(1.0) - _ramp(d_heart + f32(0.035), px * 2)
    lung[aw] *= f32(1.0) - _disc(x[aw], y[aw], acx, acy, ar + 0.02, px * 2)
    sw = _win(size, sx - 0.3, sx + 0.3, sy - rvb - 0.06, sy + 0.32)
    lung[sw] *= f32(1.0) - _disc(x[sw], y[sw], sx, sy, rvb + 0.045, px * 2)
    lung *= _ramp(np.abs(x - f32(0.5 * (hcx + sx))) - f32(0.035), px * 2)  # midline gap
    lung_grey = f32(g["lung"]) + f32(g["lung_gradient"] / bay) * (y - f32(bcy))
    img += (lung_grey - img) * lung

    # vessels, bronchovascular branches, bronchi seen end-on, lesions
    img += (f32(g["vessel"]) - img) * (_vessels(anat, z, size) * lung)
    for lg, lscale in zip(anat.lungs, lung_scales, strict=True):
        for u0, v0, drift, omega, phase, br, vphase in lg.bronchi:
            vis = float(np.clip(1.5 * np.cos(0.5 * omega * z + vphase) + 0.3, 0.0, 1.0))
            if vis * br < 1.2 * px:
                continue
            r = vis * br * lscale
            bxa, bya = _lung_to_image(
                lg,
                lscale,
                np.array([u0 + drift * np.sin(omega * z + phase)]),
                np.array([v0 + drift * np.cos(omega * z + phase)]),
            )
            bx, by = float(bxa[0]), float(bya[0])
            bw = _win(size, bx - r - 0.02, bx + r + 0.02, by - r - 0.02, by + r + 0.02)
            m = lung[bw]
            img[bw] += (f32(g["vessel"]) - img[bw]) * _disc(x[bw], y[bw], bx, by, r + px, px) * m
            img[bw] += (f32(g["air"] + 6.0) - img[bw]) * _disc(x[bw], y[bw], bx, by, r - px, px) * m
    _lesions(anat, z, img, lung, px, lung_scales)

    # spine: vertebral body (cortex + marrow), canal, posterior arch, spinous/transverse processes
    xs, ys = x[sw], y[sw]
    dxs, dys = xs - f32(sx), ys - f32(sy)
    vd = np.sqrt(dxs * dxs + dys * dys)
    vb = _ramp(f32(rvb) - vd, px)
    img[sw] += (f32(g["bone"]) - img[sw]) * vb
    img[sw] += (f32(g["marrow"]) - img[sw]) * _ramp(f32(rvb - 0.016) - vd, px)
    cy_canal = sy + rvb + 0.04
    dyc = ys - f32(cy_canal)
    cd = np.sqrt(dxs * dxs + dyc * dyc)
    arch = _ramp(f32(0.062) - cd, px) * _ramp(dyc + f32(0.012), px)
    for p0, p1, hw_ in (
        ((sx, cy_canal + 0.05), (sx, cy_canal + 0.13), 0.016),
        ((sx - 0.045, cy_canal + 0.015), (sx - 0.125, cy_canal - 0.005), 0.014),
        ((sx + 0.045, cy_canal + 0.015), (sx + 0.125, cy_canal - 0.005), 0.014),
    ):
        arch = np.maximum(arch, _ramp(f32(hw_) - _segment_dist(xs, ys, p0, p1), px))
    arch *= body[sw]
    img[sw] += (f32(g["bone"] - 20.0) - img[sw]) * arch
    img[sw] += (f32(g["muscle"] - 12.0) - img[sw]) * _ramp(f32(0.034) - cd, px)
    bone = np.zeros((size, size), np.float32)
    bone[sw] = np.maximum(vb, arch * (f32(1.0) - _ramp(f32(0.034) - cd, px)))

    # ribs and sternum: arcs at a fixed depth under the skin, looked up by angle
    lut_arc, lut_depth, lut_half = _ribs_lut(anat, z)
    ib = _pseudo_angle_bin(cos_b, sin_b)
    half = lut_half[ib]
    off = (d_body - lut_depth[ib]) / half  # -1..1 across the rib's thickness
    arc = lut_arc[ib]  # -1..1 along the rib's arc
    ell = np.sqrt(off * off + arc * arc)  # 1 on the rib's elliptical outline
    rib = _ramp((f32(1.0) - ell) * half, px)
    rib_grey = f32(g["marrow"]) + f32(g["bone"] - g["marrow"]) * np.clip(ell, f32(0.0), f32(1.0))
    img += (rib_grey - img) * rib
    np.maximum(bone, rib, out=bone)

    # CT-like noise (weaker in the air outside), then one blur for partial volume and noise texture
    nrng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([_TAG_NOISE, seed, patient, slice_index]))
    )
    noise = nrng.standard_normal((size, size), dtype=np.float32)
    solid = body.copy()
    solid[tw] = np.maximum(solid[tw], table)
    img += noise * (f32(g["noise"]) * (f32(0.45) + f32(0.55) * solid))
    img = ndimage.gaussian_filter(img, 0.6 * size / _REFERENCE_SIZE, truncate=3.0)
    out = np.ascontiguousarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    masks = {"body": body > 0.5, "lung": lung > 0.5, "bone": bone * body > 0.5}
    return out, masks


# --------------------------------------------------------------------------------------------------
# public API


def make_slice(patient: int, slice_index: int = 0, *, size: int = 256, seed: int = 0) -> np.ndarray:
    """Draw one synthetic CT-like axial lung slice.

    Parameters
    ----------
    patient : int
        Patient id (>= 0). Fixes the anatomy: body and lung shape, ribs, vessel tree, lesions.
    slice_index : int, default 0
        Axial position within the patient (>= 0). Neighbouring indices give similar slices.
    size : int, default 256
        Height and width in pixels (>= 32). Anatomy scales with the image.
    seed : int, default 0
        Global seed (>= 0); a different seed gives a different population of patients.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(size, size)``, C-contiguous. The same arguments always give
        bit-identical output.

    Raises
    ------
    TypeError
        If an argument is not an integer.
    ValueError
        If an argument is out of range.
    """
    patient = _check_int("patient", patient, 0)
    slice_index = _check_int("slice_index", slice_index, 0)
    size = _check_int("size", size, _MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    return _render(seed, patient, slice_index, size)[0]


def make_masks(
    patient: int, slice_index: int = 0, *, size: int = 256, seed: int = 0
) -> dict[str, np.ndarray]:
    """Ground-truth anatomy masks of the slice that :func:`make_slice` draws.

    Parameters
    ----------
    patient, slice_index, size, seed
        As for :func:`make_slice`.

    Returns
    -------
    dict of str to numpy.ndarray
        Boolean ``(size, size)`` masks: ``"body"`` (inside the skin), ``"lung"`` (lung fields,
        vessels included) and ``"bone"`` (ribs, sternum, vertebra).
    """
    patient = _check_int("patient", patient, 0)
    slice_index = _check_int("slice_index", slice_index, 0)
    size = _check_int("size", size, _MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    return _render(seed, patient, slice_index, size)[1]


def _assignments(n: int, n_patients: int | None) -> list[tuple[int, int]]:
    """(patient, slice_index) for each of ``n`` slices: contiguous runs of slices per patient."""
    n = _check_int("n", n, 0)
    if n_patients is None:
        n_patients = max(1, n // 10)
    else:
        n_patients = _check_int("n_patients", n_patients, 1)
    out = []
    for i in range(n):
        p = i * n_patients // n
        first = -(-p * n // n_patients)  # first i with i * n_patients // n == p
        out.append((p, i - first))
    return out


def make_slices(
    n: int, *, n_patients: int | None = None, size: int = 256, seed: int = 0
) -> np.ndarray:
    """Draw ``n`` synthetic slices spread across patients.

    Slices come in contiguous runs, one run per patient (patients ``0 .. n_patients - 1``), each
    run holding neighbouring slice indices ``0, 1, 2, ...`` of that patient.

    Parameters
    ----------
    n : int
        Number of slices (>= 0).
    n_patients : int, optional
        Number of patients (>= 1); defaults to ``max(1, n // 10)``. Patients beyond ``n`` get no
        slices.
    size : int, default 256
        Height and width in pixels (>= 32).
    seed : int, default 0
        Global seed (>= 0).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(n, size, size)``, C-contiguous; slice ``i`` equals
        ``make_slice(patient, slice_index, size=size, seed=seed)`` for its assignment.
    """
    plan = _assignments(n, n_patients)
    size = _check_int("size", size, _MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    out = np.empty((len(plan), size, size), np.uint8)
    for i, (p, s) in enumerate(plan):
        out[i] = _render(seed, p, s, size)[0]
    return out


def write_pngs(
    directory: str | os.PathLike[str],
    n: int,
    *,
    prefix: str = "slice",
    n_patients: int | None = None,
    size: int = 256,
    seed: int = 0,
) -> list[pathlib.Path]:
    """Write ``n`` synthetic slices as 8-bit greyscale PNG files.

    Files are named ``{prefix}_{i:04d}.png`` and hold ``make_slices(n, ...)[i]``. Each file is
    written to a temporary name in ``directory`` and then moved into place, so a reader never sees
    a partial file. Requires Pillow.

    Parameters
    ----------
    directory : str or os.PathLike
        Output folder, created (with parents) if missing.
    n : int
        Number of slices (>= 0).
    prefix : str, default "slice"
        File-name prefix; must not contain a path separator.
    n_patients, size, seed
        As for :func:`make_slices`.

    Returns
    -------
    list of pathlib.Path
        The written paths, in slice order.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected a str, found {type(prefix).__name__} {prefix!r}")
    if os.sep in prefix or (os.altsep and os.altsep in prefix):
        raise ValueError(
            f"prefix: expected a file-name prefix without path separators, found {prefix!r}"
        )
    plan = _assignments(n, n_patients)
    size = _check_int("size", size, _MIN_SIZE)
    seed = _check_int("seed", seed, 0)

    out_dir = pathlib.Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (p, s) in enumerate(plan):
        path = out_dir / f"{prefix}_{i:04d}.png"
        write_image_png(path, _render(seed, p, s, size)[0])
        paths.append(path)
    return paths
