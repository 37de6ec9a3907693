"""Tests for ctfp.synthetic: the synthetic CT-like slice generator."""

from __future__ import annotations

import io

import numpy as np
import pytest

from ctfp import synthetic
from ctfp.data.synthetic import make_masks, make_slice, make_slices, write_pngs


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in grey levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --------------------------------------------------------------------------------------------------
# contract: dtype, shape, layout


@pytest.mark.parametrize("size", [32, 33, 64, 100, 256])
def test_make_slice_dtype_shape_contiguous(size):
    img = make_slice(2, 3, size=size, seed=1)
    assert img.dtype == np.uint8
    assert img.shape == (size, size)
    assert img.flags.c_contiguous
    assert img.flags.owndata or img.base is not None  # a real array, not a broadcast view
    assert img.strides == (size, 1)


def test_make_slices_dtype_shape_contiguous():
    out = make_slices(7, n_patients=2, size=48)
    assert out.dtype == np.uint8
    assert out.shape == (7, 48, 48)
    assert out.flags.c_contiguous


def test_make_slices_zero():
    out = make_slices(0, size=40)
    assert out.shape == (0, 40, 40)
    assert out.dtype == np.uint8


def test_image_uses_a_wide_grey_range():
    img = make_slice(0)
    assert img.min() < 15  # air
    assert img.max() > 200  # bone
    assert 25 < img.mean() < 120


# --------------------------------------------------------------------------------------------------
# determinism and variation


def test_same_arguments_give_identical_output():
    a = make_slice(5, 7, size=128, seed=3)
    synthetic._anatomy.cache_clear()  # the anatomy cache must not be what makes results repeat
    b = make_slice(5, 7, size=128, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        make_slices(6, n_patients=2, seed=9), make_slices(6, n_patients=2, seed=9)
    )


def test_numpy_integers_are_accepted():
    np.testing.assert_array_equal(
        make_slice(np.int64(4), np.int32(2), size=np.int16(64)), make_slice(4, 2, size=64)
    )


def test_seed_changes_output():
    assert _mad(make_slice(0, seed=0), make_slice(0, seed=1)) > 5.0


def test_different_patients_differ():
    imgs = [make_slice(p) for p in range(6)]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert _mad(imgs[i], imgs[j]) > 5.0, (i, j)


def test_neighbouring_slices_differ_but_little():
    a, b = make_slice(3, 10), make_slice(3, 11)
    assert not np.array_equal(a, b)
    assert _mad(a, b) < 15.0


@pytest.mark.parametrize("slice_index", [0, 7, 25])
def test_neighbouring_slices_closer_than_other_patients(slice_index):
    patients = range(6)
    for p in patients:
        here = make_slice(p, slice_index)
        neighbour = _mad(here, make_slice(p, slice_index + 1))
        others = [_mad(here, make_slice(q, slice_index)) for q in patients if q != p]
        assert neighbour < min(others), (p, neighbour, others)


def test_slices_change_smoothly():
    # anatomy drifts with the slice index: far slices of a patient differ more than neighbours
    # (independent noise alone puts a floor of about 4 grey levels under every difference)
    near, far = [], []
    for p in range(4):
        here = make_slice(p, 5)
        near.append(_mad(here, make_slice(p, 6)))
        far.append(_mad(here, make_slice(p, 20)))
    assert np.mean(near) + 1.0 < np.mean(far), (near, far)


def test_noise_differs_between_slices():
    # even where anatomy does not move (air above the body), each slice has its own noise
    outside = ~make_masks(1, 4)["body"]
    outside[20:, :] = False  # top rows only: no table, no body
    assert outside.sum() > 1000
    a, b = make_slice(1, 4), make_slice(1, 5)
    assert (a[outside] != b[outside]).mean() > 0.2


# --------------------------------------------------------------------------------------------------
# anatomy: what makes it look like a lung CT slice


@pytest.mark.parametrize("patient", [0, 1, 2, 3, 17])
def test_lungs_darker_than_soft_tissue(patient):
    img = make_slice(patient, 5).astype(np.float64)
    m = make_masks(patient, 5)
    soft = m["body"] & ~m["lung"] & ~m["bone"]
    assert m["lung"].sum() > 0.05 * img.size
    assert img[m["lung"]].mean() + 60.0 < img[soft].mean()
    assert img[m["bone"]].mean() > img[soft].mean() + 30.0
    assert img[~m["body"]].mean() < 20.0


def test_two_lungs_inside_the_body():
    m = make_masks(4, 0)
    half = m["lung"].shape[1] // 2
    assert m["lung"][:, :half].sum() > 0.02 * m["lung"].size
    assert m["lung"][:, half:].sum() > 0.02 * m["lung"].size
    assert not (m["lung"] & ~m["body"]).any()
    assert not (m["lung"] & m["bone"]).any()


def test_ribs_and_spine_are_separate_bones():
    from scipy import ndimage

    for patient in (0, 9):
        _, n_bones = ndimage.label(make_masks(patient, 3)["bone"])
        assert n_bones >= 10, (patient, n_bones)  # ribs, sternum, vertebra


def test_dark_region_inside_body_from_image_alone():
    # without masks: the body's middle row crosses two dark lung fields around a brighter centre
    img = make_slice(6).astype(np.float64)
    rows = img[100:140]
    profile = rows.mean(axis=0)
    body_cols = np.flatnonzero(profile > 60)
    left, right = body_cols[0], body_cols[-1]
    inner = profile[left + 20 : right - 20]
    third = len(inner) // 3
    assert inner[:third].min() < 70 and inner[-third:].min() < 70  # lungs
    assert inner[third:-third].max() > 110  # mediastinum / heart


def test_png_size_is_ct_like():
    image = pytest.importorskip("PIL.Image")
    sizes = []
    for img in make_slices(10, n_patients=5):
        buf = io.BytesIO()
        image.fromarray(img).save(buf, format="PNG")
        sizes.append(len(buf.getvalue()))
    assert 25 * 1024 < np.mean(sizes) < 50 * 1024


# --------------------------------------------------------------------------------------------------
# make_slices: assignment of slices to patients


def test_make_slices_matches_make_slice():
    out = make_slices(10, n_patients=3, size=64, seed=2)
    # contiguous runs per patient: 10 slices over 3 patients -> 4, 3, 3 (patients 0, 1, 2)
    expected = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    for i, (p, s) in enumerate(expected):
        np.testing.assert_array_equal(out[i], make_slice(p, s, size=64, seed=2), err_msg=str(i))


def test_make_slices_default_patients():
    out = make_slices(20, size=48)  # n_patients defaults to 20 // 10 = 2
    np.testing.assert_array_equal(out[9], make_slice(0, 9, size=48))
    np.testing.assert_array_equal(out[10], make_slice(1, 0, size=48))
    np.testing.assert_array_equal(make_slices(3, size=48)[2], make_slice(0, 2, size=48))


# --------------------------------------------------------------------------------------------------
# write_pngs


def test_write_pngs_round_trip(tmp_path):
    image = pytest.importorskip("PIL.Image")
    target = tmp_path / "a" / "b"
    paths = write_pngs(target, 5, prefix="ct", n_patients=2, size=64, seed=4)
    assert paths == [target / f"ct_{i:04d}.png" for i in range(5)]
    expected = make_slices(5, n_patients=2, size=64, seed=4)
    for p, want in zip(paths, expected, strict=True):
        with image.open(p) as im:
            assert im.format == "PNG"
            assert im.mode == "L"
            got = np.asarray(im)
        np.testing.assert_array_equal(got, want)
    assert sorted(q.name for q in target.iterdir()) == [p.name for p in paths]  # no temp files


def test_write_pngs_overwrites_and_accepts_str(tmp_path):
    pytest.importorskip("PIL.Image")
    first = write_pngs(str(tmp_path), 2, size=32, seed=0)
    second = write_pngs(str(tmp_path), 2, size=32, seed=1)
    assert first == second
    from PIL import Image

    np.testing.assert_array_equal(
        np.asarray(Image.open(second[1])), make_slices(2, size=32, seed=1)[1]
    )


def test_write_pngs_zero(tmp_path):
    assert write_pngs(tmp_path / "empty", 0) == []
    assert (tmp_path / "empty").is_dir()


# --------------------------------------------------------------------------------------------------
# argument errors


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: make_slice(-1), ValueError, r"patient.*>= 0.*-1"),
        (lambda: make_slice(1.5), TypeError, r"patient.*integer.*float"),
        (lambda: make_slice("3"), TypeError, r"patient.*integer.*str"),
        (lambda: make_slice(True), TypeError, r"patient.*integer.*bool"),
        (lambda: make_slice(0, -2), ValueError, r"slice_index.*>= 0"),
        (lambda: make_slice(0, 1.0), TypeError, r"slice_index.*integer"),
        (lambda: make_slice(0, size=31), ValueError, r"size.*>= 32.*31"),
        (lambda: make_slice(0, size=64.0), TypeError, r"size.*integer"),
        (lambda: make_slice(0, seed=-1), ValueError, r"seed.*>= 0"),
        (lambda: make_masks(-1), ValueError, r"patient"),
        (lambda: make_slices(-1), ValueError, r"\bn\b.*>= 0.*-1"),
        (lambda: make_slices(2.0), TypeError, r"\bn\b.*integer"),
        (lambda: make_slices(4, n_patients=0), ValueError, r"n_patients.*>= 1"),
        (lambda: make_slices(4, size=8), ValueError, r"size.*>= 32"),
        (lambda: make_slices(4, seed=-3), ValueError, r"seed"),
    ],
)
def test_argument_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_write_pngs_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\bn\b.*>= 0"):
        write_pngs(tmp_path, -1)
    with pytest.raises(ValueError, match="prefix.*separator"):
        write_pngs(tmp_path, 1, prefix="a/b")
    with pytest.raises(TypeError, match="prefix.*str"):
        write_pngs(tmp_path, 1, prefix=3)
    with pytest.raises(ValueError, match="size"):
        write_pngs(tmp_path, 1, size=16)
    assert list(tmp_path.iterdir()) == []  # arguments are checked before anything is written
