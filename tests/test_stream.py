"""ctfp.BatchStream: epochs, shuffling, labels, prefetching, early exit, errors, cache."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import ctfp

AUG = ctfp.Augment(max_angle_deg=15.0)
SIZE = (24, 20)


@pytest.fixture
def sources(tmp_path, mixed_sources) -> list[object]:
    """23 sources (a prime: the last batch is short), half paths, half arrays; each image's
    pixel (0, 0) holds its index so it can be identified after loading without augmentation."""
    r = np.random.default_rng(1)
    arrays = []
    for k in range(23):
        a = r.integers(0, 256, (SIZE[0], SIZE[1]), dtype=np.uint8)
        a[0, 0] = k
        arrays.append(a)
    return mixed_sources(arrays, tmp_path)


def _ids(batch: np.ndarray) -> list[int]:
    """Identify the images of a batch loaded at source size without augmentation."""
    return [int(v) for v in batch[:, 0, 0, 0]]


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ctfp-prefetch"]


def _wait_no_prefetch_threads(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _prefetch_threads(), "prefetch thread still alive"


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("batch_size, drop_last", [(5, False), (5, True), (23, False), (50, False)])
def test_each_source_once_per_epoch(sources, prefetch, batch_size, drop_last):
    stream = ctfp.BatchStream(
        sources, batch_size=batch_size, drop_last=drop_last, size=SIZE, prefetch=prefetch, seed=3
    )
    n = len(sources)
    expected_len = n // batch_size if drop_last else -(-n // batch_size)
    assert len(stream) == expected_len
    for epoch in range(2):
        batches = list(stream)
        assert len(batches) == len(stream)
        seen = [i for b in batches for i in _ids(b)]
        for b in batches[:-1]:
            assert b.shape == (batch_size, 3, *SIZE)
        if drop_last:
            assert len(seen) == len(stream) * batch_size
            assert len(set(seen)) == len(seen)
            np.testing.assert_array_equal(seen, stream.order(epoch)[: len(seen)])
        else:
            assert sorted(seen) == list(range(n))
            np.testing.assert_array_equal(seen, stream.order(epoch))
    assert stream.epoch == 2


def test_shuffle_differs_between_epochs_and_is_reproducible(sources):
    a = ctfp.BatchStream(sources, batch_size=4, size=SIZE, seed=11)
    b = ctfp.BatchStream(sources, batch_size=4, size=SIZE, seed=11)
    c = ctfp.BatchStream(sources, batch_size=4, size=SIZE, seed=12)
    ea = [[i for x in a for i in _ids(x)] for _ in range(3)]
    eb = [[i for x in b for i in _ids(x)] for _ in range(3)]
    ec = [i for x in c for i in _ids(x)]
    assert ea == eb
    assert ea[0] != ea[1] and ea[1] != ea[2]
    assert ea[0] != ec
    assert ea[0] != list(range(len(sources)))
    for e in range(3):
        np.testing.assert_array_equal(a.order(e), ea[e])
        assert sorted(a.order(e)) == list(range(len(sources)))


def test_no_shuffle_is_in_order(sources):
    s = ctfp.BatchStream(sources, batch_size=6, size=SIZE, shuffle=False)
    assert [i for x in s for i in _ids(x)] == list(range(len(sources)))
    assert [i for x in s for i in _ids(x)] == list(range(len(sources)))


def test_each_for_loop_advances_epoch(sources):
    stream = ctfp.BatchStream(sources, batch_size=8, size=SIZE, augment=AUG, seed=2)
    assert stream.epoch == 0
    first = list(stream)
    assert stream.epoch == 1
    second = list(stream)
    assert stream.epoch == 2
    replay0 = list(stream.iter_epoch(0))
    assert stream.epoch == 2  # iter_epoch does not move the counter
    for x, y in zip(first, replay0, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(
        not np.array_equal(x, y) for x, y in zip(first, second, strict=False) if x.shape == y.shape
    )


def test_output_equals_load_batch(sources):
    kw = dict(size=(32, 28), augment=AUG, dtype="float32", normalize="imagenet")
    stream = ctfp.BatchStream(sources, batch_size=7, seed=5, **kw)
    for epoch in range(2):
        order = stream.order(epoch)
        for k, batch in enumerate(stream):
            idx = order[k * 7 : (k + 1) * 7]
            expected = ctfp.load_batch(
                [sources[i] for i in idx], sample_ids=idx, seed=5, epoch=epoch, **kw
            )
            np.testing.assert_array_equal(batch, expected)


def test_labels_follow_order(sources):
    labels = np.array([f"class{k % 3}_{k}" for k in range(len(sources))])
    stream = ctfp.BatchStream(sources, labels=labels, batch_size=6, size=SIZE, seed=4)
    for _ in range(2):
        n = 0
        for images, lab in stream:
            assert len(images) == len(lab)
            np.testing.assert_array_equal(lab, labels[_ids(images)])
            n += len(lab)
        assert n == len(sources)
    with pytest.raises(ValueError, match="labels"):
        ctfp.BatchStream(sources, labels=labels[:-1], size=SIZE)


def test_list_labels(sources):
    labels = list(range(100, 100 + len(sources)))
    stream = ctfp.BatchStream(sources, labels=labels, batch_size=10, size=SIZE, shuffle=False)
    (x0, y0), *_ = list(stream)
    np.testing.assert_array_equal(y0, np.arange(100, 110))


def test_prefetch_does_not_change_batches(sources):
    kw = dict(batch_size=5, size=(30, 30), augment=AUG, seed=9)
    streams = [ctfp.BatchStream(sources, prefetch=p, **kw) for p in (0, 1, 2, 8)]
    for _ in range(2):
        epochs = [list(s) for s in streams]
        for other in epochs[1:]:
            assert len(other) == len(epochs[0])
            for x, y in zip(epochs[0], other, strict=True):
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("prefetch", [1, 2, 4])
def test_early_break_does_not_hang(sources, prefetch):
    _wait_no_prefetch_threads()
    stream = ctfp.BatchStream(sources, batch_size=2, size=SIZE, prefetch=prefetch)
    t0 = time.monotonic()
    for _ in range(3):
        for k, _batch in enumerate(stream):
            if k == 1:
                break
    assert time.monotonic() - t0 < 10
    _wait_no_prefetch_threads()
    # closing a half-consumed iterator explicitly ends its thread too
    it = iter(stream)
    next(it)
    assert _prefetch_threads()
    it.close()
    _wait_no_prefetch_threads()
    # and an abandoned generator is cleaned up when collected
    it = iter(stream)
    next(it)
    del it
    _wait_no_prefetch_threads()


@pytest.mark.parametrize("prefetch", [0, 2])
def test_error_surfaces_in_consumer(sources, tmp_path, prefetch):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a" + bytes(40))
    srcs = list(sources)
    srcs[9] = bad
    stream = ctfp.BatchStream(srcs, batch_size=4, size=SIZE, prefetch=prefetch, shuffle=False)
    got = []
    with pytest.raises(ctfp.ImageDecodeError) as ei:
        for b in stream:
            got.append(b)
    assert "GIF89a" in str(ei.value) and str(bad) in str(ei.value)
    assert len(got) == 2  # the batches before the bad one arrived
    _wait_no_prefetch_threads()

    srcs[9] = tmp_path / "missing.png"
    stream = ctfp.BatchStream(srcs, batch_size=4, size=SIZE, prefetch=prefetch)
    with pytest.raises(FileNotFoundError):
        list(stream)
    _wait_no_prefetch_threads()


def test_bad_options_fail_at_construction(sources):
    with pytest.raises(ValueError):
        ctfp.BatchStream(sources, size=SIZE, fill="wrap")
    with pytest.raises(ValueError):
        ctfp.BatchStream(sources, size=SIZE, normalize="imagenet")  # uint8
    with pytest.raises(ValueError):
        ctfp.BatchStream(sources, size=SIZE, batch_size=0)
    with pytest.raises(TypeError):
        ctfp.BatchStream(sources, size=SIZE, cache="yes")


def test_cache_true_hits_on_second_epoch(sources):
    stream = ctfp.BatchStream(sources, batch_size=6, size=SIZE, augment=AUG, cache=True)
    assert isinstance(stream.cache, ctfp.ImageCache)
    n_paths = sum(not isinstance(s, np.ndarray) for s in sources)
    first = list(stream)
    s1 = stream.cache.stats()
    assert s1["misses"] == n_paths and s1["hits"] == 0
    list(stream)
    s2 = stream.cache.stats()
    assert s2["hits"] == n_paths and s2["misses"] == n_paths
    replay = list(stream.iter_epoch(0))
    for x, y in zip(first, replay, strict=True):
        np.testing.assert_array_equal(x, y)


def test_shared_cache_object(sources):
    cache = ctfp.ImageCache()
    a = ctfp.BatchStream(sources, batch_size=6, size=SIZE, cache=cache)
    b = ctfp.BatchStream(sources, batch_size=6, size=SIZE, cache=cache)
    list(a)
    list(b)
    assert a.cache is cache and cache.stats()["hits"] > 0


def test_empty_stream():
    s = ctfp.BatchStream([], batch_size=4, size=SIZE)
    assert len(s) == 0
    assert list(s) == []
