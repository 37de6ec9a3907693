"""The GPU feed (ctfp.models.feed) and the fast settings of FingerprintClassifier.

CPU tests: the uint8 grey feed, expanded and normalised in torch, gives the Rust float32 batch and
the same logits; a staging buffer is never reused while a copy that reads it is pending (a fake
event); ``compile``/``cache_bytes`` are checked; ``cudnn.benchmark`` is restored; the loss is
summed on the device; the CPU fit is the plain float32 loop. ``gpu`` tests (skipped without
CUDA; benches/gpu_check.sh runs them) fit and predict through the pinned uint8 feed.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import ctfp  # noqa: E402
from ctfp import FingerprintClassifier  # noqa: E402
from ctfp.data.synthetic import make_slices, write_pngs  # noqa: E402
from ctfp.models import feed, training  # noqa: E402
from ctfp.models.builders import build_model  # noqa: E402

IMAGENET = ctfp.data.preprocess.NORMALIZE_PRESETS["imagenet"]
TINY = dict(weights=None, image_size=32, max_epochs=1, batch_size=8, random_state=0, n_jobs=2)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_slices(12, size=32, n_patients=3)  # already the model's input size


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.array([0, 1] * 6)


def tiny_net(calibrate_on: np.ndarray | None = None) -> torch.nn.Module:
    """A random MobileNetV2 at 32x32; with ``calibrate_on`` (a float32 batch), BatchNorm
    statistics from one pass over it, so that its outputs vary between images (a random network
    in evaluation mode maps every image to nearly the same logit)."""
    torch.manual_seed(0)
    net = build_model("mobilenet_v2", weights=None, image_size=32)
    if calibrate_on is not None:
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        with torch.no_grad():
            net.train()(torch.from_numpy(calibrate_on))
    return net.eval()


def float32_batches(images, size=32, batch_size=5, normalize=IMAGENET):
    stream = ctfp.BatchStream(
        list(images), size=size, batch_size=batch_size, shuffle=False, dtype="float32",
        normalize=normalize, n_threads=1,
    )  # fmt: skip
    return list(stream.iter_epoch(0))


def grey_batches(images, size=32, batch_size=5, labels=None):
    stream = ctfp.BatchStream(
        list(images), labels=labels, size=size, batch_size=batch_size, shuffle=False,
        dtype="uint8", layout="grey", n_threads=1,
    )  # fmt: skip
    return list(stream.iter_epoch(0))


# --------------------------------------------------------------------------------------------------
# the feed's values


@pytest.mark.parametrize("channels_last", [False, True])
def test_grey_feed_equals_the_rust_float32_batch_and_gives_the_same_logits(images, channels_last):
    ref = float32_batches(images)
    fed = list(feed.DeviceFeed(grey_batches(images), "cpu", IMAGENET, channels_last=channels_last))
    assert len(fed) == len(ref) == 3
    for x, r in zip(fed, ref, strict=True):
        assert x.shape == r.shape and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        # per channel (imagenet's three means and stds), to float32 rounding
        np.testing.assert_allclose(x.numpy(), r, rtol=0, atol=1e-5)
    net = tiny_net(calibrate_on=np.concatenate(ref))
    with torch.inference_mode():
        got = torch.cat([net(x) for x in fed]).numpy()
        want = torch.cat([net(torch.from_numpy(r)) for r in ref]).numpy()
    assert want.std() > 1e-3  # outputs that depend on the image, or the check means nothing
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_grey_feed_rounds_resampled_values_by_at_most_half_a_grey_level():
    imgs = make_slices(4, size=40, n_patients=1)  # resized 40 -> 32: interpolated values
    ref = float32_batches(imgs, size=32, batch_size=4)[0]
    x = next(iter(feed.DeviceFeed(grey_batches(imgs, size=32, batch_size=4), "cpu", IMAGENET)))
    diff = np.abs(x.numpy() - ref)
    bound = 0.5 / 255 / np.array(IMAGENET[1]).reshape(1, 3, 1, 1) + 1e-5
    assert (diff <= bound).all() and diff.max() > 1e-4  # rounded, but by no more than that


def test_feed_passes_labels_and_fp16_and_refuses_float_input(images, labels):
    fed = list(
        feed.DeviceFeed(grey_batches(images, labels=labels), "cpu", IMAGENET, dtype=torch.float16)
    )
    xs, ys = zip(*fed, strict=True)
    assert all(x.dtype == torch.float16 for x in xs)
    np.testing.assert_array_equal(torch.cat(ys).numpy(), labels)
    # a label tensor is its own copy, not a view of a staging buffer that will be reused
    assert len({y.data_ptr() for y in ys}) == len(ys)
    with pytest.raises(TypeError, match="expected uint8 images"):
        list(feed.DeviceFeed(float32_batches(images), "cpu", IMAGENET))


def test_loader_format_per_device():
    assert feed.loader_format(torch.device("cpu"), IMAGENET) == {
        "dtype": "float32",
        "normalize": IMAGENET,
    }
    assert feed.loader_format(torch.device("cuda"), IMAGENET) == {
        "dtype": "uint8",
        "layout": "grey",
    }
    batches = [1, 2]
    assert feed.make_feed(torch.device("cpu"), IMAGENET)(batches) is batches  # CPU: unchanged


# --------------------------------------------------------------------------------------------------
# buffer lifetime


class FakeEvent:
    """A copy that is pending until ``done`` is set (by ``synchronize``, or by the test)."""

    def __init__(self, *, auto_complete_on_sync: bool = True) -> None:
        self.done = threading.Event()
        self.recorded = False
        self.sync_calls = 0
        self.auto = auto_complete_on_sync

    def record(self, stream=None) -> None:
        self.recorded = True

    def query(self) -> bool:
        return self.done.is_set()

    def synchronize(self) -> None:
        self.sync_calls += 1
        if self.auto:
            self.done.set()
        self.done.wait()


def test_a_slot_with_a_pending_copy_is_not_handed_out():
    events: list[FakeEvent] = []

    def factory():
        events.append(FakeEvent(auto_complete_on_sync=False))
        return events[-1]

    pool = feed.StagingPool(2, event_factory=factory)
    a = pool.acquire()
    pool.release(a)  # a copy reads a: pending
    b = pool.acquire()
    assert b is not a  # the idle slot, not the pending one
    pool.release(b)
    events[1].done.set()  # b's copy finished, a's is still pending
    assert pool.acquire() is b and pool.waits == 0  # a completed slot before an older pending one
    pool.release(b)

    # both pending: acquire must wait for the oldest (a) and not return before its copy is done
    got: list = []
    t = threading.Thread(target=lambda: got.append(pool.acquire()))
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and not got and events[0].sync_calls == 1
    events[0].done.set()
    t.join(5)
    assert got == [a] and a.event is events[0] and a.event.query() and pool.waits == 1


def test_every_slot_in_use_is_an_error():
    pool = feed.StagingPool(1)
    pool.acquire()
    with pytest.raises(RuntimeError, match="every slot is in use"):
        pool.acquire()
    with pytest.raises(ValueError, match="size"):
        feed.StagingPool(0)


def test_feed_writes_a_slot_only_after_its_last_copy_finished(images, monkeypatch):
    """Through DeviceFeed: copies stay pending until the pool waits for them; every write into
    a slot must come after its previous copy's event completed, and the output is right."""
    writes: list[bool] = []
    stage = feed.StagingSlot.stage

    def checked_stage(self, k, array):
        writes.append(self.event is None or self.event.query())
        return stage(self, k, array)

    monkeypatch.setattr(feed.StagingSlot, "stage", checked_stage)
    pool = feed.StagingPool(2, event_factory=FakeEvent)
    batches = grey_batches(images, batch_size=2)  # 6 batches through 2 slots
    fed = list(feed.DeviceFeed(batches, "cpu", IMAGENET, pool=pool))
    assert len(writes) == 6 and all(writes)
    assert pool.waits == 4  # batches 3-6 each waited for the copy of batch k-2
    ref = float32_batches(images, batch_size=2)
    for x, r in zip(fed, ref, strict=True):
        np.testing.assert_allclose(x.numpy(), r, atol=1e-5)


def test_feed_closes_its_source_when_the_consumer_stops(images):
    closed = []

    def source():
        try:
            yield from grey_batches(images, batch_size=2)
        finally:
            closed.append(True)

    it = iter(feed.DeviceFeed(source(), "cpu", IMAGENET))
    next(it)
    it.close()
    assert closed == [True]


# --------------------------------------------------------------------------------------------------
# estimator settings


def test_compile_and_cache_bytes_parameters(images, labels):
    p = FingerprintClassifier().get_params()
    assert p["compile"] is False and p["cache_bytes"] == "auto"
    for bad in ("yes", 1, None):  # not a bool: a type mistake
        with pytest.raises(TypeError, match="compile: expected one of False, True"):
            FingerprintClassifier(**TINY, compile=bad).fit(images, labels)
    for bad, error in ((-1, ValueError), ("all", ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="cache_bytes: expected None or one of 'auto'"):
            FingerprintClassifier(**TINY, cache_bytes=bad).fit(images, labels)
    assert 0 < feed.auto_cache_bytes() <= feed.AUTO_CACHE_MAX_BYTES
    assert feed.decode_cache("auto").stats()["max_bytes"] == feed.auto_cache_bytes()
    assert feed.decode_cache(0).stats()["max_bytes"] == 0


@pytest.mark.parametrize("before", [False, True])
def test_cudnn_benchmark_is_on_inside_fit_and_predict_and_restored(
    images, labels, before, monkeypatch
):
    seen: dict[str, bool] = {}

    def on_epoch_end(est, **logs):
        seen["fit"] = torch.backends.cudnn.benchmark

    predict_logits = training.predict_logits

    def spy(*args, **kwargs):
        seen["predict"] = torch.backends.cudnn.benchmark
        return predict_logits(*args, **kwargs)

    monkeypatch.setattr(training, "predict_logits", spy)
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before
    try:
        clf = FingerprintClassifier(**TINY, callbacks=[on_epoch_end]).fit(images, labels)
        assert torch.backends.cudnn.benchmark is before
        clf.predict_proba(images)
        assert torch.backends.cudnn.benchmark is before
    finally:
        torch.backends.cudnn.benchmark = old
    assert seen == {"fit": True, "predict": True}


def test_epoch_loss_is_the_image_weighted_mean_of_the_batch_losses(images, labels):
    net = tiny_net()
    base = training.binary_cross_entropy()
    batch_losses: list[tuple[float, int]] = []

    def loss_fn(logits, targets):
        loss = base(logits, targets)
        batch_losses.append((float(loss.detach()), len(targets)))  # the test's own reading
        return loss

    loader = [
        (x, y.astype(np.float32)) for x, y in grey_batches(images, batch_size=5, labels=labels)
    ]
    loader = [(torch.from_numpy(x).float().expand(-1, 3, -1, -1) / 255, y) for x, y in loader]
    stats = training.train_one_epoch(
        net, loader, training.adam(net, 1e-3, torch.device("cpu")), loss_fn,
        device=torch.device("cpu"),
    )  # fmt: skip
    assert [n for _, n in batch_losses] == [5, 5, 2] and stats["n_images"] == 12
    want = sum(v * n for v, n in batch_losses) / 12
    assert stats["loss"] == pytest.approx(want, rel=1e-12)
    assert stats["compute_s"] > 0 and stats["loader_wait_s"] >= 0


class Bar:
    disable = False

    def __init__(self) -> None:
        self.updates = self.postfix_calls = 0

    def update(self, n):
        self.updates += n

    def set_postfix(self, *args, **kwargs):
        self.postfix_calls += 1


@pytest.mark.parametrize("every_s, reads", [(1e9, 0), (0.0, 3)])
def test_the_running_loss_is_read_only_when_the_bar_refreshes(
    images, labels, monkeypatch, every_s, reads
):
    monkeypatch.setattr(training, "PROGRESS_EVERY_S", every_s)
    net, bar = tiny_net(), Bar()
    loader = [
        (torch.from_numpy(x).float().expand(-1, 3, -1, -1) / 255, y.astype(np.float32))
        for x, y in grey_batches(images, batch_size=5, labels=labels)
    ]
    training.train_one_epoch(
        net, loader, training.adam(net, 1e-3, torch.device("cpu")),
        training.binary_cross_entropy(), device=torch.device("cpu"), progress=bar,
    )  # fmt: skip
    assert bar.updates == 3 and bar.postfix_calls == reads


def test_cpu_fit_is_the_plain_float32_loop(images, labels):
    """Same seeds, same weights: the CPU path is the Rust float32 batches through Adam, as
    before the GPU feed (a reference loop written out here)."""
    from sklearn.utils import check_random_state

    clf = FingerprintClassifier(**dict(TINY, max_epochs=2, batch_size=5)).fit(images, labels)

    rs = check_random_state(0)
    torch_seed, stream_seed, _ = (int(s) for s in rs.randint(0, 2**31 - 1, size=3))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        net = build_model("mobilenet_v2", weights=None, dropout=0.2, image_size=(32, 32))
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        loss_fn = training.binary_cross_entropy()  # mean of per-image losses
        stream = ctfp.BatchStream(
            list(images), labels=labels.astype(np.float32), size=(32, 32), batch_size=5,
            shuffle=True, seed=stream_seed, augment=ctfp.Augment(), dtype="float32",
            normalize=IMAGENET, n_threads=2,
        )  # fmt: skip
        net.train()
        for epoch in range(2):
            for xb, yb in stream.iter_epoch(epoch):
                loss = loss_fn(net(torch.from_numpy(xb)).float(), torch.from_numpy(yb))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    want = net.state_dict()
    got = clf.model_.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_decode_cache_is_bounded_and_does_not_change_the_model(tmp_path, labels, monkeypatch):
    paths = [str(p) for p in write_pngs(tmp_path, 12, size=32, n_patients=3)]
    caches = []
    decode_cache = feed.decode_cache
    monkeypatch.setattr(
        feed, "decode_cache", lambda b: caches.append(decode_cache(b)) or caches[-1]
    )
    kw = dict(TINY, max_epochs=2)
    small = FingerprintClassifier(**kw, cache_bytes=3 * 32 * 32).fit(paths, labels)
    full = FingerprintClassifier(**kw, cache_bytes=None).fit(paths, labels)
    bounded, unbounded = (c.stats() for c in caches)
    assert bounded["entries"] == 3 and bounded["bytes"] <= 3 * 32 * 32
    assert unbounded["entries"] == 12
    assert bounded["misses"] > unbounded["misses"]  # the rest decoded again in epoch 2
    a, b = small.model_.state_dict(), full.model_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# CUDA (benches/gpu_check.sh runs these: pytest -m gpu)


@pytest.mark.gpu
@cuda
def test_cuda_fit_and_predict_go_through_the_pinned_uint8_feed(images, labels, monkeypatch):
    used: list[tuple[feed.StagingPool, feed.StagingSlot]] = []
    acquire = feed.StagingPool.acquire

    def spy(self):
        slot = acquire(self)
        used.append((self, slot))
        return slot

    monkeypatch.setattr(feed.StagingPool, "acquire", spy)
    torch.backends.cudnn.benchmark = False
    clf = FingerprintClassifier(**dict(TINY, device="cuda", max_epochs=2, lr=1e-3))
    clf.fit(images, labels)
    assert torch.backends.cudnn.benchmark is False
    n_fit = len(used)
    assert n_fit == 2 * 2  # 12 images in batches of 8, two epochs: every batch was staged
    first_conv = next(m for m in clf.model_.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(row["loader_wait_s"] >= 0 and row["compute_s"] > 0 for row in clf.history_)
    proba = clf.predict_proba(images)
    assert torch.backends.cudnn.benchmark is False
    assert len(used) == n_fit + 2
    # every staging buffer was pinned: images and labels while fitting, images when predicting
    for k, (pool, slot) in enumerate(used):
        buffers = [b for b in slot.buffers if b is not None]
        assert pool.pin and len(buffers) == (2 if k < n_fit else 1)
        assert all(b.is_pinned() and not b.is_cuda for b in buffers)

    # the same model on the Rust float32 batches (the CPU path's input): same autocast, same
    # memory format and cuDNN algorithms, so only the input path differs
    device = torch.device(clf.device_)
    autocast = training.mixed_precision_autocast(device, True)
    ref = [
        torch.from_numpy(r).contiguous(memory_format=torch.channels_last)
        for r in float32_batches(images, batch_size=8, normalize=clf.normalize_)
    ]
    with training.cudnn_autotune():
        logits = training.predict_logits(clf.model_, ref, device, autocast=autocast)
    want = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(proba[:, 1], want, rtol=0, atol=1e-3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_feed_values_equal_the_rust_float32_batch(images, dtype):
    ref = float32_batches(images)
    fed = list(
        feed.DeviceFeed(grey_batches(images), "cuda", IMAGENET, dtype=dtype, channels_last=True)
    )
    torch.cuda.synchronize()
    tol = 1e-5 if dtype == torch.float32 else 2e-3  # float16: 11 bits near |v| <= 2.7
    for x, r in zip(fed, ref, strict=True):
        assert x.is_cuda and x.dtype == dtype
        assert x.is_contiguous(memory_format=torch.channels_last)
        np.testing.assert_allclose(x.float().cpu().numpy(), r, rtol=0, atol=tol)


@pytest.mark.gpu
@cuda
def test_cuda_slots_wait_for_their_copies_while_the_copy_stream_is_busy():
    """The side stream is held up (a GPU sleep queued first), so copies stay pending while the
    host stages further batches. Reusing a slot early would copy another batch's pixels: every
    output is checked. (Whether the host actually had to wait depends on timing: on an H200 the
    first run saw none, so that is not asserted; the waiting logic is tested with fake events.)"""
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, size=(16, 1, 64, 64), dtype=np.uint8) for _ in range(8)]
    stream = torch.cuda.Stream()
    pool = feed.StagingPool(2, pin=True, event_factory=torch.cuda.Event)
    if hasattr(torch.cuda, "_sleep"):
        with torch.cuda.stream(stream):
            torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time before the first copy
    unit = ((0.0,) * 3, (1.0,) * 3)
    fed = list(feed.DeviceFeed(batches, "cuda", unit, pool=pool, stream=stream))
    torch.cuda.synchronize()
    for x, b in zip(fed, batches, strict=True):
        want = np.repeat(b.astype(np.float32) / 255, 3, axis=1)
        np.testing.assert_allclose(x.cpu().numpy(), want, rtol=0, atol=1e-6)


def test_bench_gpu_cpu_smoke_runs_the_first_epoch_study(tmp_path, monkeypatch):
    """benches/bench_gpu.py end to end on the CPU (its numbers mean nothing there): every row,
    and the first-epoch study with autotuning off and on, each restoring ctfp's switch."""
    import json
    import sys
    from pathlib import Path

    benches = Path(__file__).resolve().parents[1] / "benches"
    if not (benches / "bench_gpu.py").is_file():
        pytest.skip("benches/ is not here (installed package without the repository)")
    monkeypatch.syspath_prepend(str(benches))
    import bench_gpu

    monkeypatch.setattr(bench_gpu, "esrgan", lambda report, smoke, budget: {"skipped": "test"})
    before = training.cudnn_autotune
    lines: list[str] = []
    res = bench_gpu.run(lines.append, json_path=str(tmp_path / "b.json"), cpu_smoke=True)
    assert training.cudnn_autotune is before
    st = res["first_epoch"]
    for name in ("autotune off", "autotune on"):
        assert len(st[name]["epoch_s"]) == bench_gpu.STUDY_EPOCHS
        assert st[name]["later_images_per_s"] > 0
    assert st["libraries_s"] >= 0
    assert all("error" not in r for r in res["rows"])
    assert any(line.startswith("First-epoch study") for line in "\n".join(lines).split("\n"))
    assert json.loads((tmp_path / "b.json").read_text())["first_epoch"]["samples"] == 8
    del sys.modules["bench_gpu"]
