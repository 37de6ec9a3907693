"""The Python <-> Rust boundary: configs cross by attribute name, ``fill_value``, and concurrent
callers that run at the same time."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
import types

import numpy as np
import pytest
from PIL import Image

import ctfp
from ctfp import _core

# --------------------------------------------------------------------------------------------------
# configs by attribute name


def _duck(aug: ctfp.Augment, **changes: object) -> types.SimpleNamespace:
    """A plain object with ``aug``'s attributes (and ``changes``): not an Augment, no tuple."""
    fields = {f.name: getattr(aug, f.name) for f in dataclasses.fields(aug)}
    fields.update(changes)
    return types.SimpleNamespace(**{k: v for k, v in fields.items() if v is not _DROP})


_DROP = object()


def test_configs_are_passed_as_objects_not_tuples():
    assert not hasattr(ctfp.Augment(), "_as_tuple")
    aug = ctfp.Augment(max_angle_deg=25.0, zoom=(0.8, 1.2), fill="reflect")
    # the core reads the attributes by name: any object that has them will do
    got = _core.sample_params(_duck(aug), seed=3, epoch=1, sample_id=11)
    assert tuple(aug.sample_params(11, seed=3, epoch=1)) == got
    png = io.BytesIO()
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(png, format="PNG")
    limits = types.SimpleNamespace(max_width=100, max_height=100, max_pixels=10_000)
    assert _core.read_png_size(png.getvalue(), limits=limits) == (5, 7)
    assert _core.read_png_size(png.getvalue(), limits=ctfp.DecodeLimits()) == (5, 7)


@pytest.mark.parametrize(
    ("changes", "exc", "words"),
    [
        ({"fill_value": _DROP}, TypeError, ["augment", "'fill_value'", "ctfp.Augment"]),
        ({"hflip": _DROP}, TypeError, ["augment", "'hflip'"]),
        ({"hflip": "half"}, TypeError, ["augment.hflip", "a number", "'half'"]),
        ({"zoom": 1.0}, TypeError, ["augment.zoom", "pair"]),
        ({"zoom_per_axis": 1}, TypeError, ["augment.zoom_per_axis", "bool"]),
        ({"fill": 3}, TypeError, ["augment.fill", "string"]),
        ({"hflip": 2.0}, ValueError, ["hflip", "[0, 1]"]),
        ({"fill": "wrap"}, ValueError, ["fill", "'wrap'", "'reflect'"]),
        ({"fill_value": 300.0}, ValueError, ["fill_value", "300"]),
    ],
)
def test_bad_augment_attributes_name_the_field(changes, exc, words):
    bad = _duck(ctfp.Augment(), **changes)
    with pytest.raises(exc) as info:
        _core.sample_params(bad, seed=0, epoch=0, sample_id=0)
    assert all(w in str(info.value) for w in words), str(info.value)
    # the same object inside a batch's config table
    img = np.zeros((8, 8), np.uint8)
    with pytest.raises(exc) as info:
        _core.load_batch(
            [img], [0], size=(8, 8), channels=1, dtype="uint8", mean=(0.0,) * 3,
            std=(1.0,) * 3, augments=[bad], augment_of=None, interpolation="bilinear",
            fill="nearest", fill_value=0.0, seed=0, epoch=0, limits=ctfp.DecodeLimits(),
            cache=None, n_threads=1,
        )  # fmt: skip
    assert all(w in str(info.value) for w in words), str(info.value)


def test_bad_limits_name_the_field():
    png = b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TypeError, match=r"limits: expected a ctfp.DecodeLimits.*'max_width'"):
        _core.read_png_size(png, limits=(100, 100, 10_000))
    limits = types.SimpleNamespace(max_width=100, max_height="tall", max_pixels=10)
    with pytest.raises(TypeError, match=r"limits.max_height: expected an integer"):
        _core.decode_png(png, limits=limits)
    limits = types.SimpleNamespace(max_width=100, max_height=100, max_pixels=0)
    with pytest.raises(ValueError, match=r"limits.max_pixels: expected a positive integer"):
        _core.decode_png(png, limits=limits)


# --------------------------------------------------------------------------------------------------
# fill_value


def _ramp(h: int = 6, w: int = 5) -> np.ndarray:
    return (np.arange(h * w, dtype=np.uint8) * 7).reshape(h, w)


def test_fill_value_pads_constant_fill_in_transform_augment_and_load_batch():
    img = _ramp()
    params = {"angle_deg": 30.0, "zoom": 0.7, "shift": (0.1, -0.2)}
    pad = ctfp.transform(img, **params, size=(9, 8), fill="constant", fill_value=200.0)
    zero = ctfp.transform(img, **params, size=(9, 8), fill="constant")
    assert (pad == 200).any() and not (zero == 200).any()
    aug = ctfp.Augment(max_angle_deg=40.0, fill="constant", fill_value=200.0)
    assert aug.fill_value == 200.0
    p = aug.sample_params(4, seed=2)
    batch = ctfp.load_batch([img], sample_ids=[4], size=(9, 8), augment=aug, seed=2)
    replay = ctfp.transform(img, **p._asdict(), size=(9, 8), fill="constant", fill_value=200.0)
    np.testing.assert_array_equal(batch[0, 0], replay)
    # without an Augment, load_batch's own fill applies to the resize (upscaling reads past the
    # border at the edges)
    small = np.zeros((4, 4), np.uint8)
    up = ctfp.load_batch([small], size=8, fill="constant", fill_value=200.0, layout="grey")
    expected = ctfp.transform(small, size=(8, 8), fill="constant", fill_value=200.0)
    np.testing.assert_array_equal(up[0, 0], expected)
    assert up[0, 0, 0, 0] > 0 and up[0, 0, 4, 4] == 0


def test_cval_is_not_accepted_before_the_first_release():
    # 0.1.0 was never released: the pre-release alias ``cval`` is gone, not deprecated
    img = _ramp()
    with pytest.raises(TypeError, match="cval"):
        ctfp.transform(img, angle_deg=30.0, fill="constant", cval=90.0)
    with pytest.raises(TypeError, match="cval"):
        ctfp.Augment(fill="constant", cval=90.0)
    with pytest.raises(TypeError, match="cval"):
        ctfp.load_batch([np.zeros((4, 4), np.uint8)], size=8, cval=90.0)
    assert not hasattr(ctfp.Augment(), "cval")


# --------------------------------------------------------------------------------------------------
# concurrent callers


@pytest.fixture(scope="module")
def png256() -> bytes:
    yy, xx = np.mgrid[0:256, 0:256]
    img = ((yy * 3 + xx * 5 + (yy * xx) % 17) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _sized_batch(png: bytes, n_threads: int, seconds: float = 0.4) -> list[bytes]:
    """Enough copies of ``png`` for one ``load_batch`` call to take about ``seconds``."""
    kw = {"size": 128, "augment": ctfp.Augment(), "n_threads": n_threads}
    ctfp.load_batch([png] * 4, **kw)  # warm-up: builds the pool
    t = time.perf_counter()
    ctfp.load_batch([png] * 32, **kw)
    per_image = (time.perf_counter() - t) / 32
    return [png] * int(np.clip(seconds / max(per_image, 1e-6), 32, 4000))


def _two_calls(run_threads, sources: list[bytes], n_threads: int) -> list[tuple[float, float]]:
    barrier = threading.Barrier(2)
    spans = [(0.0, 0.0)] * 2

    def work(k: int) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        ctfp.load_batch(sources, size=128, augment=ctfp.Augment(), seed=k, n_threads=n_threads)
        spans[k] = (t0, time.perf_counter())

    run_threads(work, 2, timeout=120)
    return spans


@pytest.mark.parametrize("n_threads", [1, 2])
def test_concurrent_calls_run_at_the_same_time(png256, n_threads, run_threads):
    """Two threads start a call each at the same moment; the calls must run side by side.

    Both calls start together and do the same work, so if they run side by side they also end
    together: the time they overlap is most of the *longer* call. If they take turns (one shared
    pool, a lock, or the GIL held), the second call runs alone for its second half and the
    overlap is about half of it. The test compares the intervals, never absolute speed, so a
    loaded machine slows both calls alike; the best of three tries is kept.
    """
    sources = _sized_batch(png256, n_threads)
    ratios = []
    for _ in range(3):
        (s0, e0), (s1, e1) = _two_calls(run_threads, sources, n_threads)
        overlap = min(e0, e1) - max(s0, s1)
        shorter, longer = min(e0 - s0, e1 - s1), max(e0 - s0, e1 - s1)
        assert shorter > 0.05, "batch too small to measure"
        assert overlap > 0.5 * shorter, f"calls did not overlap: {(s0, e0)}, {(s1, e1)}"
        ratios.append(overlap / longer)
        if ratios[-1] > 0.75:
            break
    assert max(ratios) > 0.75, (
        f"n_threads={n_threads}: the calls overlapped for only {max(ratios):.0%} of the longer "
        f"one (tries: {[round(r, 2) for r in ratios]}); they took turns instead of running together"
    )
