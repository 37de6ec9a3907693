"""ctfp.load_batch: output contract, layouts, normalisation, sources, determinism, errors, cache."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import reference
from conftest import encode_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import ctfp

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def arrays16() -> list[np.ndarray]:
    r = np.random.default_rng(11)
    out = []
    for _ in range(16):
        h, w = r.integers(20, 80, 2)
        out.append(r.integers(0, 256, (h, w), dtype=np.uint8))
    return out


AUG = ctfp.Augment(max_angle_deg=20.0, zoom=(0.85, 1.2), shift_frac=0.08)


# --------------------------------------------------------------------------------------------------
# output contract


@pytest.mark.parametrize("size", [(24, 24), (17, 31), 9, (1, 1)])
@pytest.mark.parametrize("augment", [None, AUG])
def test_uint8_contract(arrays16, size, augment):
    out = ctfp.load_batch(arrays16[:5], size=size, augment=augment)
    h, w = (size, size) if isinstance(size, int) else size
    assert out.shape == (5, 3, h, w)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable
    assert out.strides == (3 * h * w, h * w, w, 1)


@pytest.mark.parametrize("normalize", [None, "imagenet", "symmetric", "unit"])
def test_float32_contract(arrays16, normalize):
    out = ctfp.load_batch(arrays16[:4], size=(20, 22), dtype="float32", normalize=normalize)
    assert out.shape == (4, 3, 20, 22)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous and out.flags.writeable


def test_empty_batch(arrays16):
    assert ctfp.load_batch([], size=(5, 6)).shape == (0, 3, 5, 6)
    assert ctfp.load_batch([], size=(5, 6), layout="grey").shape == (0, 1, 5, 6)
    f = ctfp.load_batch([], size=4, dtype="float32")
    assert f.shape == (0, 3, 4, 4) and f.dtype == np.float32


def test_channels_are_identical_copies(arrays16):
    out = ctfp.load_batch(arrays16[:6], size=32, augment=AUG)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    before = out[0, 1].copy()
    out[0, 0] ^= 0xFF
    np.testing.assert_array_equal(out[0, 1], before)  # separate memory, not views


def test_grey_layout(arrays16):
    rgb = ctfp.load_batch(arrays16[:6], size=(30, 20), augment=AUG, seed=4)
    grey = ctfp.load_batch(arrays16[:6], size=(30, 20), augment=AUG, seed=4, layout="grey")
    assert grey.shape == (6, 1, 30, 20) and grey.dtype == np.uint8 and grey.flags.c_contiguous
    np.testing.assert_array_equal(grey[:, 0], rgb[:, 0])


def test_broadcast_layout(arrays16):
    rgb = ctfp.load_batch(arrays16[:6], size=(30, 20), augment=AUG, seed=4)
    b = ctfp.load_batch(arrays16[:6], size=(30, 20), augment=AUG, seed=4, layout="broadcast")
    assert b.shape == (6, 3, 30, 20) and b.dtype == np.uint8
    assert b.strides[1] == 0
    assert not b.flags.writeable
    with pytest.raises(ValueError):
        b[0, 0, 0, 0] = 1
    np.testing.assert_array_equal(b, rgb)
    f = ctfp.load_batch(
        arrays16[:3], size=8, dtype="float32", normalize="symmetric", layout="broadcast"
    )
    assert f.strides[1] == 0 and f.dtype == np.float32
    np.testing.assert_array_equal(
        f, ctfp.load_batch(arrays16[:3], size=8, dtype="float32", normalize="symmetric")
    )


def test_resize_only_equals_transform(arrays16):
    out = ctfp.load_batch(arrays16, size=(25, 33))
    for k, img in enumerate(arrays16):
        np.testing.assert_array_equal(out[k, 0], ctfp.transform(img, size=(25, 33)))


@pytest.mark.parametrize("fill", ["nearest", "constant", "reflect"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_unaugmented_interpolation_and_fill(arrays16, fill, interpolation):
    out = ctfp.load_batch(arrays16[:4], size=(40, 19), fill=fill, interpolation=interpolation)
    for k, img in enumerate(arrays16[:4]):
        ref = ctfp.transform(img, size=(40, 19), fill=fill, interpolation=interpolation)
        np.testing.assert_array_equal(out[k, 0], ref)


def test_unaugmented_matches_scipy_reference(arrays16):
    out = ctfp.load_batch(arrays16, size=(64, 48))
    for k, img in enumerate(arrays16):
        ref = reference.transform_ref(img, size=(64, 48))
        assert np.abs(out[k, 0] - ref).max() <= 1.0


# --------------------------------------------------------------------------------------------------
# normalisation


def _tol(std: np.ndarray) -> np.ndarray:
    return (1.0 / 255.0) / std + 1e-5


def test_float32_imagenet_equals_formula(arrays16):
    kw = dict(size=(36, 28), augment=AUG, seed=9, epoch=2)
    u8 = ctfp.load_batch(arrays16, **kw)
    f = ctfp.load_batch(arrays16, dtype="float32", normalize="imagenet", **kw)
    expected = (u8 / 255.0 - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]
    d = np.abs(f - expected)
    for c in range(3):
        assert d[:, c].max() <= _tol(IMAGENET_STD[c]), f"channel {c}: {d[:, c].max()}"
    # computed from the unrounded sample: not just the uint8 output rescaled
    assert (d > 1e-4).any()


def test_float32_uses_unrounded_sample(arrays16):
    """v / 255 from the float sample: compare with the float64 SciPy reference, tightly."""
    f = ctfp.load_batch(arrays16, size=(41, 27), dtype="float32")
    for k, img in enumerate(arrays16):
        ref = reference.transform_ref(img, size=(41, 27)) / 255.0
        for c in range(3):
            assert np.abs(f[k, c] - ref).max() <= 0.02 / 255.0


def test_float32_default_is_unit_scale(arrays16):
    u8 = ctfp.load_batch(arrays16[:5], size=24, augment=AUG)
    f = ctfp.load_batch(arrays16[:5], size=24, augment=AUG, dtype="float32")
    g = ctfp.load_batch(arrays16[:5], size=24, augment=AUG, dtype="float32", normalize="unit")
    np.testing.assert_array_equal(f, g)
    assert np.abs(f - u8 / 255.0).max() <= 0.5 / 255.0 + 1e-6
    assert f.min() >= 0.0 and f.max() <= 1.0


@pytest.mark.parametrize(
    "normalize",
    [
        ((0.1, 0.2, 0.3), (0.5, 0.25, 2.0)),
        ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        (0.4, 0.3),
        (np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.1, 3.0])),
    ],
)
def test_float32_custom_mean_std(arrays16, normalize):
    kw = dict(size=(20, 20), augment=AUG, seed=2)
    u8 = ctfp.load_batch(arrays16[:6], **kw)
    f = ctfp.load_batch(arrays16[:6], dtype="float32", normalize=normalize, **kw)
    mean = np.broadcast_to(np.asarray(normalize[0], float), 3)
    std = np.broadcast_to(np.asarray(normalize[1], float), 3)
    for c in range(3):
        expected = (u8[:, c] / 255.0 - mean[c]) / std[c]
        assert np.abs(f[:, c] - expected).max() <= _tol(std[c])


def test_symmetric_preset(arrays16):
    kw = dict(size=(20, 20))
    a = ctfp.load_batch(arrays16[:3], dtype="float32", normalize="symmetric", **kw)
    b = ctfp.load_batch(arrays16[:3], dtype="float32", normalize=((0.5,) * 3, (0.5,) * 3), **kw)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_normalize_errors(arrays16):
    imgs = arrays16[:2]
    with pytest.raises(ValueError, match="float32"):
        ctfp.load_batch(imgs, size=8, normalize="imagenet")
    with pytest.raises(ValueError, match="float32"):
        ctfp.load_batch(imgs, size=8, dtype="uint8", normalize=((0, 0, 0), (1, 1, 1)))
    with pytest.raises(ValueError) as ei:
        ctfp.load_batch(imgs, size=8, dtype="float32", normalize="imagenett")
    assert "'imagenet'" in str(ei.value)
    with pytest.raises(ValueError):
        ctfp.load_batch(imgs, size=8, dtype="float32", normalize=((0, 0, 0), (1, 0, 1)))
    with pytest.raises(TypeError):
        ctfp.load_batch(imgs, size=8, dtype="float32", normalize=((0, 0), (1, 1)))
    with pytest.raises(ValueError, match="layout"):
        ctfp.load_batch(imgs, size=8, dtype="float32", normalize="imagenet", layout="grey")
    with pytest.raises(ValueError) as ei:
        ctfp.load_batch(imgs, size=8, dtype="float64")
    assert "'float32'" in str(ei.value) and "'uint8'" in str(ei.value)
    with pytest.raises(ValueError) as ei:
        ctfp.load_batch(imgs, size=8, layout="nhwc")
    assert "'broadcast'" in str(ei.value)


def test_grey_layout_with_uniform_normalize(arrays16):
    kw = dict(size=16, dtype="float32", normalize="symmetric")
    g = ctfp.load_batch(arrays16[:3], layout="grey", **kw)
    r = ctfp.load_batch(arrays16[:3], **kw)
    np.testing.assert_array_equal(g[:, 0], r[:, 0])


# --------------------------------------------------------------------------------------------------
# sources


def test_mixed_sources(tmp_path, arrays16):
    imgs = arrays16[:7]
    p = [tmp_path / f"m{k}.png" for k in range(len(imgs))]
    for path, a in zip(p, imgs, strict=True):
        Image.fromarray(a).save(path)
    sources = [
        str(p[0]),
        p[1],
        p[2].read_bytes(),
        imgs[3],
        imgs[4][:, :, None].copy(),
        np.repeat(imgs[5][:, :, None], 3, axis=2),
        bytearray(p[6].read_bytes()),
    ]
    kw = dict(size=(32, 32), augment=AUG, seed=5, epoch=3)
    out = ctfp.load_batch(sources, **kw)
    expected = ctfp.load_batch(imgs, **kw)
    np.testing.assert_array_equal(out, expected)


def test_rgb_array_becomes_luma(rng):
    rgb = rng.integers(0, 256, (30, 26, 3), dtype=np.uint8)
    out = ctfp.load_batch([rgb], size=(30, 26))
    np.testing.assert_array_equal(out[0, 0], reference.rgb_to_grey(rgb))
    png = encode_png(rgb)
    np.testing.assert_array_equal(ctfp.load_batch([png], size=(30, 26))[0, 0], out[0, 0])


def test_identity_size_returns_source_exactly(grey8_files):
    for path, arr in grey8_files:
        out = ctfp.load_batch([path], size=arr.shape)
        np.testing.assert_array_equal(out[0, 0], arr)


@pytest.mark.parametrize(
    "bad, exc, fragment",
    [
        (np.zeros((8, 8), np.float32), TypeError, "uint8"),
        (np.zeros((8, 8, 2), np.uint8), ValueError, "(H, W, 3)"),
        (np.zeros((8, 8, 4), np.uint8), ValueError, "(H, W, 3)"),
        (np.zeros((2, 8, 8, 3), np.uint8), ValueError, "(H, W)"),
        (np.zeros((16, 16), np.uint8)[:, ::2], ValueError, "np.ascontiguousarray"),
        (3.5, TypeError, "float"),
        (None, TypeError, "NoneType"),
        ([[0, 1], [2, 3]], TypeError, "list"),
    ],
)
def test_bad_sources_name_the_index(arrays16, bad, exc, fragment):
    sources = [arrays16[0], arrays16[1], bad, arrays16[2]]
    with pytest.raises(exc) as ei:
        ctfp.load_batch(sources, size=8)
    assert "image 2" in str(ei.value), str(ei.value)
    assert fragment in str(ei.value), str(ei.value)


def test_single_image_not_a_sequence(arrays16, tmp_path):
    with pytest.raises(TypeError, match="list"):
        ctfp.load_batch(arrays16[0], size=8)
    with pytest.raises(TypeError, match="list"):
        ctfp.load_batch(str(tmp_path / "x.png"), size=8)


def test_missing_path_index_in_message(tmp_path, arrays16):
    missing = tmp_path / "gone.png"
    with pytest.raises(FileNotFoundError) as ei:
        ctfp.load_batch([arrays16[0], arrays16[1], missing], size=8)
    assert "image 2" in str(ei.value)
    assert str(missing) in str(ei.value)
    assert ei.value.filename == str(missing)


@pytest.mark.parametrize("kind", ["empty", "gif", "truncated", "bad_crc", "bad_zlib"])
def test_bad_file_in_batch_names_index_and_path(bad_files, arrays16, kind):
    p = bad_files[kind]
    with pytest.raises(ctfp.ImageDecodeError) as ei:
        ctfp.load_batch([arrays16[0], p], size=8)
    assert "image 1" in str(ei.value) and str(p) in str(ei.value)
    with pytest.raises(ctfp.ImageDecodeError) as ei:
        ctfp.load_batch([arrays16[0], arrays16[1], p.read_bytes()], size=8)
    assert "image 2" in str(ei.value)


def test_sample_ids_checks(arrays16):
    with pytest.raises(ValueError, match="3 ids"):
        ctfp.load_batch(arrays16[:3], size=8, sample_ids=[0, 1])
    with pytest.raises(ValueError, match="3 ids"):
        ctfp.load_batch(arrays16[:3], size=8, sample_ids=[0, 1, 2, 3])
    with pytest.raises(ValueError):
        ctfp.load_batch(arrays16[:1], size=8, sample_ids=[-1])
    with pytest.raises(TypeError):
        ctfp.load_batch(arrays16[:1], size=8, sample_ids=[1.5])
    out = ctfp.load_batch(arrays16[:2], size=8, sample_ids=np.array([5, 2**64 - 1], np.uint64))
    assert out.shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"n_threads": 0}, ValueError),
        ({"n_threads": 1.0}, TypeError),
        ({"seed": -1}, ValueError),
        ({"epoch": 2**64}, ValueError),
        ({"augment": {"hflip": 0.5}}, TypeError),
        ({"cache": {}}, TypeError),
        ({"limits": (1, 1, 1)}, TypeError),
        ({"size": (0, 4)}, ValueError),
        ({"interpolation": "area"}, ValueError),
        ({"fill": "wrap"}, ValueError),
    ],
)
def test_bad_options(arrays16, kwargs, exc):
    with pytest.raises(exc):
        ctfp.load_batch(arrays16[:2], **{"size": 8, **kwargs})


# --------------------------------------------------------------------------------------------------
# determinism


@pytest.fixture(scope="module")
def det_sources(tmp_path_factory, arrays16, mixed_sources) -> list[object]:
    return mixed_sources(arrays16, tmp_path_factory.mktemp("det"))


def test_same_output_for_any_thread_count(det_sources):
    ids = list(range(100, 100 + len(det_sources)))
    for dtype in ("uint8", "float32"):
        kw = dict(size=(40, 36), augment=AUG, seed=17, epoch=4, sample_ids=ids, dtype=dtype)
        ref = ctfp.load_batch(det_sources, n_threads=1, **kw)
        for n in (2, 8, None):
            np.testing.assert_array_equal(ctfp.load_batch(det_sources, n_threads=n, **kw), ref)


@SETTINGS
@given(
    st.lists(st.integers(1, 15), min_size=0, max_size=6, unique=True),
    st.sampled_from([1, 2, 8]),
)
def test_same_output_for_any_batch_split(det_sources, cuts, n_threads):
    n = len(det_sources)
    ids = np.arange(n) * 7 + 3
    kw = dict(size=(24, 30), augment=AUG, seed=99, epoch=1)
    whole = ctfp.load_batch(det_sources, sample_ids=ids, n_threads=2, **kw)
    bounds = [0, *sorted(cuts), n]
    parts = [
        ctfp.load_batch(det_sources[a:b], sample_ids=ids[a:b], n_threads=n_threads, **kw)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_order_within_batch_does_not_matter(det_sources):
    n = len(det_sources)
    perm = np.random.default_rng(0).permutation(n)
    kw = dict(size=(24, 24), augment=AUG, seed=3, epoch=0)
    whole = ctfp.load_batch(det_sources, **kw)
    shuffled = ctfp.load_batch([det_sources[i] for i in perm], sample_ids=perm, **kw)
    np.testing.assert_array_equal(shuffled, whole[perm])


def test_seed_epoch_id_determine_output(det_sources):
    src = det_sources[:6]
    kw = dict(size=(32, 32), augment=AUG)
    a = ctfp.load_batch(src, seed=1, epoch=2, **kw)
    np.testing.assert_array_equal(a, ctfp.load_batch(src, seed=1, epoch=2, **kw))
    b = ctfp.load_batch(src, seed=1, epoch=3, **kw)
    c = ctfp.load_batch(src, seed=2, epoch=2, **kw)
    d = ctfp.load_batch(src, seed=1, epoch=2, sample_ids=range(10, 16), **kw)
    for other in (b, c, d):
        differ = [not np.array_equal(a[k], other[k]) for k in range(len(src))]
        assert sum(differ) >= len(src) - 1


def test_no_augment_ignores_seed(det_sources):
    a = ctfp.load_batch(det_sources[:4], size=20, seed=1, epoch=0)
    b = ctfp.load_batch(det_sources[:4], size=20, seed=2, epoch=5)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# deterministic errors: the lowest bad index wins


def test_lowest_bad_index_is_reported(tmp_path, bad_files):
    big = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    good = tmp_path / "big.png"
    Image.fromarray(big).save(good)
    sources: list[object] = [good] * 48
    sources[30] = bad_files["gif"]  # lowest bad: quick to fail, behind slow good ones
    sources[31] = tmp_path / "missing.png"
    sources[40] = bad_files["bad_zlib"]
    sources[47] = bad_files["truncated"]
    for _ in range(20):
        with pytest.raises(ctfp.ImageDecodeError) as ei:
            ctfp.load_batch(sources, size=(128, 128), augment=AUG, n_threads=8)
        assert "image 30 " in str(ei.value), str(ei.value)
    sources[30] = good
    for _ in range(20):
        with pytest.raises(FileNotFoundError) as ei:
            ctfp.load_batch(sources, size=(128, 128), augment=AUG, n_threads=8)
        assert "image 31 " in str(ei.value), str(ei.value)


# --------------------------------------------------------------------------------------------------
# import weight


def test_import_pulls_in_no_torch_or_onnxruntime():
    code = (
        "import ctfp, sys\n"
        "bad = [m for m in ('torch', 'onnxruntime', 'torchvision', 'onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "import numpy as np\n"
        "ctfp.load_batch([np.zeros((4, 4), np.uint8)], size=4, augment=ctfp.Augment())\n"
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------------------------------
# ImageCache


def test_cache_hits_on_second_load(slice_paths):
    cache = ctfp.ImageCache()
    kw = dict(size=(48, 48), augment=AUG, seed=1, epoch=0, cache=cache)
    first = ctfp.load_batch(slice_paths, **kw)
    s1 = cache.stats()
    assert s1["misses"] == len(slice_paths) and s1["hits"] == 0
    assert s1["entries"] == len(slice_paths) == len(cache)
    assert s1["bytes"] == 64 * 64 * len(slice_paths)
    second = ctfp.load_batch(slice_paths, **kw)
    s2 = cache.stats()
    assert s2["hits"] == len(slice_paths)
    assert s2["misses"] == s1["misses"]
    np.testing.assert_array_equal(second, first)
    np.testing.assert_array_equal(ctfp.load_batch(slice_paths, **{**kw, "cache": None}), first)
    cache.clear()
    assert len(cache) == 0


def test_cache_ignores_bytes_and_arrays(slice_paths):
    cache = ctfp.ImageCache()
    srcs = [slice_paths[0].read_bytes(), np.zeros((5, 5), np.uint8)]
    ctfp.load_batch(srcs, size=8, cache=cache)
    ctfp.load_batch(srcs, size=8, cache=cache)
    assert cache.stats()["entries"] == 0


def _write_stored(path: pathlib.Path, a: np.ndarray) -> None:
    """Uncompressed PNG: the same shape gives the same file size whatever the content."""
    path.write_bytes(encode_png(a, level=0))


def test_cache_redecodes_modified_file_same_size(tmp_path):
    r = np.random.default_rng(5)
    a, b = (r.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(2))
    p = tmp_path / "m.png"
    _write_stored(p, a)
    cache = ctfp.ImageCache()
    out_a = ctfp.load_batch([p], size=(32, 32), cache=cache)
    np.testing.assert_array_equal(out_a[0, 0], a)
    st0 = os.stat(p)
    _write_stored(p, b)
    assert os.stat(p).st_size == st0.st_size
    os.utime(p, ns=(st0.st_atime_ns, st0.st_mtime_ns + 5_000_000_000))
    out_b = ctfp.load_batch([p], size=(32, 32), cache=cache)
    np.testing.assert_array_equal(out_b[0, 0], b)
    assert cache.stats()["misses"] == 2


def test_cache_redecodes_modified_file_same_mtime_new_size(tmp_path):
    r = np.random.default_rng(6)
    a = r.integers(0, 256, (32, 32), dtype=np.uint8)
    b = r.integers(0, 256, (20, 30), dtype=np.uint8)
    p = tmp_path / "n.png"
    _write_stored(p, a)
    st0 = os.stat(p)
    cache = ctfp.ImageCache()
    ctfp.load_batch([p], size=8, cache=cache)
    _write_stored(p, b)
    os.utime(p, ns=(st0.st_atime_ns, st0.st_mtime_ns))  # mtime unchanged, size changed
    out = ctfp.load_batch([p], size=(20, 30), cache=cache)
    np.testing.assert_array_equal(out[0, 0], b)


def test_cache_deleted_file_raises(tmp_path):
    p = tmp_path / "d.png"
    _write_stored(p, np.zeros((8, 8), np.uint8))
    cache = ctfp.ImageCache()
    ctfp.load_batch([p], size=8, cache=cache)
    p.unlink()
    with pytest.raises(FileNotFoundError):
        ctfp.load_batch([p], size=8, cache=cache)


def test_cache_max_bytes_bounds_memory(slice_paths):
    cache = ctfp.ImageCache(max_bytes=3 * 64 * 64)
    ctfp.load_batch(slice_paths, size=16, cache=cache)
    s = cache.stats()
    assert s["bytes"] <= 3 * 64 * 64 and s["entries"] <= 3
    assert s["max_bytes"] == 3 * 64 * 64
    out = ctfp.load_batch(slice_paths, size=16, cache=cache)
    np.testing.assert_array_equal(out, ctfp.load_batch(slice_paths, size=16))
