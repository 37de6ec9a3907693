"""ctfp.transform against the SciPy reference (tests/reference.py) and exact identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import ctfp

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sizes = st.integers(16, 96)
angles = st.floats(-30, 30, allow_nan=False)
zooms = st.tuples(st.floats(0.8, 1.25), st.floats(0.8, 1.25))
fills = st.sampled_from(["nearest", "constant", "reflect"])
shifts = st.tuples(st.floats(-0.1, 0.1), st.floats(-0.1, 0.1))


@st.composite
def images(draw, min_side=16, max_side=96):
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    kind = draw(st.sampled_from(["noise", "gradient", "blocks", "constant"]))
    seed = draw(st.integers(0, 2**32 - 1))
    r = np.random.default_rng(seed)
    if kind == "noise":
        return r.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == "gradient":
        ii, jj = np.mgrid[0:h, 0:w]
        a, b = r.uniform(-4, 4, 2)
        return np.clip(128 + a * (ii - h / 2) + b * (jj - w / 2), 0, 255).astype(np.uint8)
    if kind == "blocks":
        small = r.integers(0, 256, (max(1, h // 8), max(1, w // 8)), dtype=np.uint8)
        big = np.kron(small, np.ones((8, 8), np.uint8))
        out = np.zeros((h, w), np.uint8)
        out[: big.shape[0], : big.shape[1]] = big[:h, :w]
        return out
    return np.full((h, w), r.integers(0, 256), np.uint8)


params = st.fixed_dictionaries(
    {"flip": st.booleans(), "angle_deg": angles, "zoom": zooms, "shift": shifts}
)


def _matrix(p: dict, src_hw, out_hw):
    return reference.affine_matrix(
        p["flip"], p["angle_deg"], p["zoom"], p["shift"], tuple(src_hw), tuple(out_hw)
    )


def _diff(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(out.astype(np.float64) - ref)


def _report(d: np.ndarray, where: np.ndarray) -> str:
    bad = np.argwhere(d > 1.0)
    return f"max diff {d.max():.3f} at {bad[:5].tolist()} (of {bad.shape[0]} over 1)"


# --------------------------------------------------------------------------------------------------
# the reference itself: the step-by-step composition equals the docstring's closed form


@SETTINGS
@given(params, st.tuples(sizes, sizes), st.tuples(sizes, sizes))
def test_reference_matrix_equals_docstring_closed_form(p, src_hw, out_hw):
    m, o = reference.affine_matrix(p["flip"], p["angle_deg"], p["zoom"], p["shift"], src_hw, out_hw)
    (hs, ws), (h, w) = src_hw, out_hw
    a = math.radians(p["angle_deg"])
    F = np.diag([1.0, -1.0]) if p["flip"] else np.eye(2)
    Rm = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    Z = np.diag(p["zoom"])
    S = np.diag([hs / h, ws / w])
    c_o = np.array([(h - 1) / 2, (w - 1) / 2])
    c_s = np.array([(hs - 1) / 2, (ws - 1) / 2])
    t = np.array([p["shift"][0] * h, p["shift"][1] * w])
    M = S @ Rm @ np.linalg.inv(Z) @ F
    off = c_s - M @ c_o - S @ Rm @ t
    np.testing.assert_allclose(m, M, atol=1e-12)
    np.testing.assert_allclose(o, off, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# against the reference


@SETTINGS
@given(images(), params, st.tuples(sizes, sizes))
def test_bilinear_matches_reference_interior(img, p, out_hw):
    src_hw = img.shape
    for fill in ("nearest", "constant", "reflect"):
        out = ctfp.transform(img, **p, size=out_hw, fill=fill, fill_value=37.0)
        assert out.shape == out_hw and out.dtype == np.uint8
        ref = reference.transform_ref(img, **p, size=out_hw, fill=fill, cval=37.0)
        m, o = reference.affine_matrix(
            p["flip"], p["angle_deg"], p["zoom"], p["shift"], src_hw, out_hw
        )
        inside = reference.interior_mask(m, o, src_hw, out_hw)
        d = _diff(out, ref)
        assert (d[inside] <= 1.0).all(), f"fill={fill}: " + _report(np.where(inside, d, 0), inside)


@SETTINGS
@given(
    images(), params, st.tuples(sizes, sizes), st.sampled_from(["nearest", "constant", "reflect"])
)
def test_bilinear_matches_reference_all_pixels(img, p, out_hw, fill):
    """Border pixels too: the fills are defined as scipy's nearest/grid-constant/reflect."""
    cval = 200.0 if fill == "constant" else 0.0
    out = ctfp.transform(img, **p, size=out_hw, fill=fill, fill_value=cval)
    ref = reference.transform_ref(img, **p, size=out_hw, fill=fill, cval=cval)
    d = _diff(out, ref)
    assert (d <= 1.0).all(), f"fill={fill}: " + _report(d, d > 1)


@pytest.mark.parametrize("fill", ["nearest", "constant", "reflect"])
def test_far_outside_samples_follow_fill(fill, rng):
    """Strong shrink and shift: many samples land several source-widths outside."""
    for _ in range(20):
        hs, ws = rng.integers(1, 12, 2)
        h, w = rng.integers(1, 40, 2)
        img = rng.integers(0, 256, (hs, ws), dtype=np.uint8)
        p = dict(
            flip=bool(rng.integers(2)),
            angle_deg=float(rng.uniform(-180, 180)),
            zoom=tuple(rng.uniform(0.2, 3, 2)),
            shift=tuple(rng.uniform(-0.8, 0.8, 2)),
        )
        out = ctfp.transform(img, **p, size=(h, w), fill=fill, fill_value=99.0)
        ref = reference.transform_ref(img, **p, size=(h, w), fill=fill, cval=99.0)
        d = _diff(out, ref)
        assert (d <= 1.0).all(), f"{(hs, ws, h, w, p)}: " + _report(d, d > 1)


def test_rounding_is_half_up():
    # a 1x2 source stretched to 1x3 samples the middle at 0.5: (0 + 1) / 2 = 0.5 -> 1
    img = np.array([[0, 1]], np.uint8)
    out = ctfp.transform(img, size=(1, 3))
    np.testing.assert_array_equal(out, [[0, 1, 1]])
    img = np.array([[10, 13]], np.uint8)  # 11.5 -> 12
    np.testing.assert_array_equal(ctfp.transform(img, size=(1, 3)), [[10, 12, 13]])


@SETTINGS
@given(
    images(), params, st.tuples(sizes, sizes), st.sampled_from(["nearest", "constant", "reflect"])
)
def test_nearest_interpolation_matches_scipy_order0(img, p, out_hw, fill):
    out = ctfp.transform(img, **p, size=out_hw, fill=fill, interpolation="nearest", fill_value=5.0)
    ref = reference.transform_ref(img, **p, size=out_hw, fill=fill, order=0, cval=5.0)
    m, o = reference.affine_matrix(
        p["flip"], p["angle_deg"], p["zoom"], p["shift"], img.shape, out_hw
    )
    pos = reference.source_positions(m, o, out_hw)
    frac = np.abs(pos - np.floor(pos) - 0.5)
    near_tie = (frac < 1e-6).any(axis=0)  # rounding of exact .5 ties may differ
    mismatch = (out != ref) & ~near_tie
    assert mismatch.sum() == 0, f"{mismatch.sum()} of {out.size} differ"


# --------------------------------------------------------------------------------------------------
# exact identities


@SETTINGS
@given(images(min_side=1, max_side=64))
def test_zero_params_are_identity(img):
    for fill in ("nearest", "constant", "reflect"):
        for interp in ("bilinear", "nearest"):
            out = ctfp.transform(img, fill=fill, interpolation=interp)
            np.testing.assert_array_equal(out, img)
            out = ctfp.transform(
                img, flip=False, angle_deg=0.0, zoom=(1.0, 1.0), shift=(0.0, 0.0), size=img.shape
            )
            np.testing.assert_array_equal(out, img)


@SETTINGS
@given(images(min_side=1, max_side=64))
def test_flip_is_np_flip_and_twice_is_identity(img):
    once = ctfp.transform(img, flip=True)
    np.testing.assert_array_equal(once, np.flip(img, axis=1))
    np.testing.assert_array_equal(ctfp.transform(once, flip=True), img)


@SETTINGS
@given(images(min_side=1, max_side=64), st.sampled_from(["bilinear", "nearest"]))
def test_quarter_turns_equal_rot90(img, interp):
    n = min(img.shape)
    sq = np.ascontiguousarray(img[:n, :n])
    for k, angle in [(1, 90.0), (2, 180.0), (3, 270.0), (-1, -90.0), (4, 360.0)]:
        out = ctfp.transform(sq, angle_deg=angle, interpolation=interp)
        np.testing.assert_array_equal(out, np.rot90(sq, k), err_msg=f"angle {angle}")


def test_positive_angle_is_counter_clockwise():
    img = np.zeros((9, 9), np.uint8)
    img[4, 8] = 255  # right of centre
    out = ctfp.transform(img, angle_deg=90.0)
    assert out[0, 4] == 255  # now above the centre
    assert out.sum() == 255


def test_positive_shift_moves_content_down_right():
    img = np.zeros((20, 10), np.uint8)
    img[5, 5] = 255
    out = ctfp.transform(img, shift=(0.1, 0.2), fill="constant")
    assert out[7, 7] == 255 and out.sum() == 255


def test_zoom_above_one_enlarges():
    img = np.zeros((21, 21), np.uint8)
    img[8:13, 8:13] = 255
    out = ctfp.transform(img, zoom=2.0, interpolation="nearest")
    assert (out == 255).sum() > 4 * 25 * 0.8


@SETTINGS
@given(images(min_side=16, max_side=64))
def test_resize_only_matches_reference(img):
    for out_hw in [(img.shape[0] * 2, img.shape[1] * 2), (17, 31), (1, 1), (5, 64)]:
        out = ctfp.transform(img, size=out_hw)
        ref = reference.transform_ref(img, size=out_hw)
        assert (_diff(out, ref) <= 1.0).all()


def test_default_size_is_input_size_and_int_size(rng):
    img = rng.integers(0, 256, (23, 37), dtype=np.uint8)
    assert ctfp.transform(img, angle_deg=3).shape == (23, 37)
    assert ctfp.transform(img, size=19).shape == (19, 19)
    out = ctfp.transform(img, size=(11, 13))
    assert out.shape == (11, 13) and out.flags.c_contiguous and out.dtype == np.uint8


# --------------------------------------------------------------------------------------------------
# transform replays what load_batch draws


@SETTINGS
@given(
    arrays(np.uint8, st.tuples(st.integers(8, 64), st.integers(8, 64))),
    st.integers(0, 2**63),
    st.integers(0, 1000),
    st.integers(0, 10**6),
    st.tuples(st.integers(8, 64), st.integers(8, 64)),
)
def test_transform_replays_load_batch(img, seed, epoch, k, size):
    aug = ctfp.Augment(max_angle_deg=25.0, zoom=(0.8, 1.2), shift_frac=0.1)
    prm = aug.sample_params(k, seed=seed, epoch=epoch)
    out = ctfp.transform(img, **prm._asdict(), size=size)
    batch = ctfp.load_batch([img], sample_ids=[k], seed=seed, epoch=epoch, augment=aug, size=size)
    np.testing.assert_array_equal(batch[0, 0], out)


@pytest.mark.parametrize(
    "aug",
    [
        ctfp.Augment(fill="constant", fill_value=77.0),
        ctfp.Augment(fill="reflect", interpolation="nearest", max_angle_deg=30),
        ctfp.Augment(hflip=1.0, zoom=(0.5, 0.6), zoom_per_axis=False),
    ],
)
def test_transform_replays_load_batch_other_modes(aug, rng):
    img = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    for k in range(10):
        prm = aug.sample_params(k, seed=3, epoch=1)
        if not aug.zoom_per_axis:
            assert prm.zoom[0] == prm.zoom[1]
        out = ctfp.transform(
            img,
            **prm._asdict(),
            size=(32, 36),
            fill=aug.fill,
            interpolation=aug.interpolation,
            fill_value=aug.fill_value,
        )
        batch = ctfp.load_batch([img], sample_ids=[k], seed=3, epoch=1, augment=aug, size=(32, 36))
        np.testing.assert_array_equal(batch[0, 0], out)


def test_sample_params_ranges_and_determinism():
    aug = ctfp.Augment(hflip=0.5, max_angle_deg=12.0, zoom=(0.9, 1.1), shift_frac=(0.05, 0.02))
    flips = []
    for k in range(300):
        p = aug.sample_params(k, seed=1, epoch=2)
        assert p == aug.sample_params(k, seed=1, epoch=2)
        assert -12.0 <= p.angle_deg <= 12.0
        assert all(0.9 <= z <= 1.1 for z in p.zoom)
        assert abs(p.shift[0]) <= 0.05 and abs(p.shift[1]) <= 0.02
        flips.append(p.flip)
    assert 90 < sum(flips) < 210
    assert aug.sample_params(0, seed=1, epoch=2) != aug.sample_params(0, seed=1, epoch=3)
    assert aug.sample_params(0, seed=1, epoch=2) != aug.sample_params(0, seed=2, epoch=2)
    none = ctfp.Augment(hflip=0.0, max_angle_deg=0.0, zoom=(1.0, 1.0), shift_frac=0.0)
    assert none.sample_params(5) == ctfp.AugmentParams(False, 0.0, (1.0, 1.0), (0.0, 0.0))


# --------------------------------------------------------------------------------------------------
# argument errors


def test_bad_fill_lists_accepted_values():
    img = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError) as ei:
        ctfp.transform(img, fill="wrap")
    for name in ("'nearest'", "'constant'", "'reflect'", "'wrap'"):
        assert name in str(ei.value)


def test_bad_interpolation_lists_accepted_values():
    img = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError) as ei:
        ctfp.transform(img, interpolation="bicubic")
    for name in ("'bilinear'", "'nearest'", "'bicubic'"):
        assert name in str(ei.value)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4), np.uint16),
        np.zeros((4, 4), np.int8),
        np.zeros((4, 4, 3), np.uint8),
        np.zeros((4, 4, 1), np.uint8),
        np.zeros(16, np.uint8),
    ],
)
def test_rejects_wrong_dtype_or_rank(bad):
    with pytest.raises(ValueError) as ei:
        ctfp.transform(bad)
    assert "uint8" in str(ei.value) and "(H, W)" in str(ei.value)


def test_rejects_non_array():
    with pytest.raises(TypeError):
        ctfp.transform([[0, 1], [2, 3]])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2],
        lambda a: a.T,
        lambda a: a[::2],
        lambda a: np.flip(a, 1),
    ],
)
def test_rejects_non_contiguous_with_hint(view):
    a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    v = view(a)
    assert not v.flags.c_contiguous
    with pytest.raises(ValueError) as ei:
        ctfp.transform(v)
    assert "np.ascontiguousarray" in str(ei.value)
    ctfp.transform(np.ascontiguousarray(v))  # the hint works


def test_sliced_contiguous_view_is_accepted():
    a = np.arange(100, dtype=np.uint8).reshape(10, 10)
    v = a[2:5]  # contiguous view with an offset
    np.testing.assert_array_equal(ctfp.transform(v), v)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"angle_deg": float("nan")}, ValueError),
        ({"angle_deg": "3"}, TypeError),
        ({"zoom": 0.0}, ValueError),
        ({"zoom": (1.0, -1.0)}, ValueError),
        ({"zoom": (1.0, 1.0, 1.0)}, TypeError),
        ({"shift": float("inf")}, ValueError),
        ({"size": 0}, ValueError),
        ({"size": (4,)}, TypeError),
        ({"size": (4, 4.5)}, TypeError),
        ({"fill_value": 300.0}, ValueError),
        ({"fill": None}, ValueError),
    ],
)
def test_rejects_bad_parameters(kwargs, exc):
    with pytest.raises(exc):
        ctfp.transform(np.zeros((4, 4), np.uint8), **kwargs)
