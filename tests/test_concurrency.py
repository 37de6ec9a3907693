"""The GIL is released during load_batch, concurrent callers get correct results, and forked
children (DataLoader workers) do not hang on the parent's thread pool."""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

import ctfp
from ctfp.data.synthetic import make_slice

AUG = ctfp.Augment()


@pytest.fixture(scope="module")
def png512() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_slice(0, size=512)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def slow_batch(png512) -> list[bytes]:
    """Enough PNG bytes for one single-threaded load_batch call to take about 0.2 s."""
    t = time.perf_counter()
    ctfp.load_batch([png512] * 16, size=128, augment=AUG, n_threads=1)
    per_image = (time.perf_counter() - t) / 16
    n = int(np.clip(0.2 / max(per_image, 1e-6), 16, 2000))
    return [png512] * n


def _run_threads(run_threads, slow_batch: list[bytes], n: int) -> tuple[list, list, list]:
    barrier = threading.Barrier(n + 1)
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * n
    outs: list[np.ndarray | None] = [None] * n
    beats: list[float] = []

    def work(k: int) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        outs[k] = ctfp.load_batch(slow_batch, size=128, augment=AUG, seed=k, n_threads=1)
        spans[k] = (t0, time.perf_counter())

    def heartbeats(threads: list[threading.Thread]) -> None:
        barrier.wait()
        # The main thread keeps running Python while the workers are inside load_batch: with the
        # GIL held by a worker for a whole call, these heartbeats would stop for that long.
        beats.append(time.perf_counter())
        while any(t.is_alive() for t in threads):
            beats.append(time.perf_counter())

    run_threads(work, n, main=heartbeats)
    return spans, outs, beats


def test_threads_overlap_in_time(slow_batch, run_threads):
    spans, outs, beats = _run_threads(run_threads, slow_batch, 2)
    (s0, e0), (s1, e1) = spans
    assert max(s0, s1) < min(e0, e1), f"calls did not overlap: {spans}"
    # both calls were running together for most of their length
    overlap = min(e0, e1) - max(s0, s1)
    shortest = min(e0 - s0, e1 - s1)
    assert shortest > 0.05, "batch too small to measure"
    # the main thread was never blocked for a large part of a call
    beats_arr = np.array(beats)
    inside = beats_arr[(beats_arr >= max(s0, s1)) & (beats_arr <= min(e0, e1))]
    assert inside.size > 10, "main thread made no progress while load_batch ran"
    gaps = np.diff(np.concatenate([[max(s0, s1)], inside, [min(e0, e1)]]))
    assert gaps.max() < 0.5 * overlap, f"longest main-thread stall {gaps.max():.3f}s"
    # the results are those of sequential calls
    for k, out in enumerate(outs):
        ref = ctfp.load_batch(slow_batch[:8], size=128, augment=AUG, seed=k, n_threads=2)
        np.testing.assert_array_equal(out[:8], ref)


def test_many_threads_share_pool_and_cache(tmp_path, run_threads):
    paths = []
    for k in range(10):
        p = tmp_path / f"{k}.png"
        Image.fromarray(make_slice(k % 3, k, size=48)).save(p)
        paths.append(p)
    cache = ctfp.ImageCache()
    kw = dict(size=40, augment=AUG, seed=3)
    expected = {e: ctfp.load_batch(paths, epoch=e, **kw) for e in range(6)}
    results: dict[tuple[int, int], np.ndarray] = {}

    def work(k: int) -> None:
        for rep in range(5):
            e = (k + rep) % 6
            results[(k, rep)] = ctfp.load_batch(
                paths, epoch=e, cache=cache, n_threads=1 + k % 3, **kw
            )

    run_threads(work, 6, timeout=60)
    for (k, rep), out in results.items():
        np.testing.assert_array_equal(out, expected[(k + rep) % 6])
    s = cache.stats()
    assert s["entries"] == 10 and s["hits"] + s["misses"] == 6 * 5 * 10


# --------------------------------------------------------------------------------------------------
# fork


def _child_load(conn, sources, n_threads):
    try:
        out = ctfp.load_batch(sources, size=(48, 40), augment=AUG, seed=7, n_threads=n_threads)
        conn.send(("ok", out))
    except BaseException as e:  # pragma: no cover
        conn.send(("error", repr(e)))
    finally:
        conn.close()


@pytest.mark.parametrize("child_threads", [2, None, 1])
def test_fork_child_after_parent_used_pool(child_threads):
    sources = [make_slice(k, size=64) for k in range(12)]
    # the parent builds its pools first
    parent = ctfp.load_batch(sources, size=(48, 40), augment=AUG, seed=7, n_threads=2)
    ctfp.load_batch(sources, size=(48, 40), augment=AUG, seed=7)  # default pool too
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_load, args=(send, sources, child_threads))
    proc.start()
    send.close()
    try:
        assert recv.poll(60), "forked child did not answer within 60 s (pool deadlock?)"
        status, payload = recv.recv()
    finally:
        proc.join(10)
        if proc.is_alive():  # pragma: no cover
            proc.kill()
            proc.join()
    assert status == "ok", payload
    np.testing.assert_array_equal(payload, parent)
    assert proc.exitcode == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_os_fork_child_after_parent_used_pool(tmp_path):
    sources = [make_slice(k, size=64) for k in range(8)]
    parent = ctfp.load_batch(sources, size=32, augment=AUG, seed=1, n_threads=2)
    out_path = tmp_path / "child.pkl"
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            out = ctfp.load_batch(sources, size=32, augment=AUG, seed=1, n_threads=2)
            out_path.write_bytes(pickle.dumps(out))
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("os.fork child hung in load_batch")
        time.sleep(0.01)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(pickle.loads(out_path.read_bytes()), parent)
