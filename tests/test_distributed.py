"""Data-parallel fitting (ctfp.models.distributed): the shard rule, the sharded stream, the
synchronised BatchNorm, and a real two-process gloo fit on the CPU, launched the way torchrun
launches it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in each process's
environment), compared across ranks and with a one-process fit of the same global batch.

This file is also the worker: ``python tests/test_distributed.py WORKDIR`` is one rank.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
dist = pytest.importorskip("torch.distributed")

import ctfp  # noqa: E402
from ctfp.data.stream import BatchStream, shard_batch  # noqa: E402

if not (dist.is_available() and dist.is_gloo_available()):  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

# 15 images, a quarter held out for validation -> 11 training images: with a global batch of 8
# an epoch is a full batch (4 + 4 images per rank) and a last batch of 3 (1 + 2): uneven shards.
N, SIZE = 15, 40
PARAMS = dict(
    weights=None, image_size=32, batch_size=8, max_epochs=3, lr=1e-3, dropout=0.0,
    validation_fraction=0.25, patience=5, random_state=0, n_jobs=1, device="cpu",
)  # fmt: skip
STOP_AFTER = 2  # a rank-0 callback stops training after epoch 2 of 3: every rank must stop
# Tolerances against a one-process fit (measured values in the test's printout and
# docs/distributed.md). float64 + SGD: rounding only. float32 + Adam (the real thing): see
# exact_arithmetic for why two float32 runs of a random-init network drift apart.
WEIGHT_ATOL_F64 = 1e-8  # measured 1.9e-10, with weights moved by up to 0.07
LOSS_RTOL_F64 = 1e-5  # the loss is float32 arithmetic on float32 logits: measured 1.2e-6
VAL_LOSS_RTOL_F32 = 1e-2  # a sanity bound only: measured 1.3e-3 (see exact_arithmetic)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------
# the shard rule and the sharded stream (no processes)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shard_batch_partitions_every_batch(world):
    for m in range(0, 13):
        idx = np.arange(100, 100 + m)
        parts = [shard_batch(idx, r, world) for r in range(world)]
        np.testing.assert_array_equal(np.concatenate(parts), idx)  # in rank order, each once
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_sharded_stream_covers_each_epoch_once():
    """Three ranks' streams over 11 samples, global batch 4: the same number of steps, disjoint
    parts that put each step's global batch back together, every sample once per epoch, and
    the per-sample augmentation of a one-process stream."""
    n, world, bs = 11, 3, 4
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 12), dtype=np.uint8) for _ in range(n)]
    kw = dict(labels=np.arange(n), batch_size=bs, seed=7, size=8, augment=ctfp.Augment())
    whole = BatchStream(images, prefetch=0, **kw)
    ranks = [BatchStream(images, shard=(r, world), **kw) for r in range(world)]
    assert {len(s) for s in ranks} == {len(whole)} == {3}
    for epoch in range(2):
        steps = [list(s.iter_epoch(epoch)) for s in ranks]
        for k, (xb, yb) in enumerate(whole.iter_epoch(epoch)):
            parts = [steps[r][k] for r in range(world)]
            np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), yb)
            np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), xb)
        seen = np.concatenate([yb for r in range(world) for _, yb in steps[r]])
        assert sorted(seen.tolist()) == list(range(n))
    with pytest.raises(ValueError, match="shard rank"):
        BatchStream(images, shard=(3, 3), **kw)


# --------------------------------------------------------------------------------------------------
# one process: the context is inactive; helpers


def test_inactive_outside_torchrun(monkeypatch):
    from ctfp.models import distributed

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = distributed.setup("cpu")
    assert not ctx.active and ctx.is_main and ctx.shard is None
    assert ctx.agree_on_fit(np.array([1, 2, 3]), ["a"], np.zeros(1)) == (1, 2, 3)
    assert distributed.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert distributed.launched_world() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.launched_world() == (2, 4, 0)
    assert not distributed.is_main_process()


def test_rank_device(monkeypatch):
    from ctfp.models.distributed import rank_device

    assert rank_device("cpu", 3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("auto", 1) == torch.device("cuda", 1)
    assert rank_device("cuda", 0) == torch.device("cuda", 0)
    assert rank_device("cuda:0", 1) == torch.device("cuda", 0)  # explicit: as given
    with pytest.raises(ValueError, match=r"local rank 2 needs a GPU.*--nproc_per_node=2"):
        rank_device("auto", 2)


def test_sync_batchnorm_round_trip():
    from ctfp.models.builders import build_model
    from ctfp.models.distributed import GlooSyncBatchNorm, revert_sync_batchnorm, sync_batchnorm

    model = build_model("mobilenet_v2", weights=None, image_size=32)
    params = {name: id(p) for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    sync_batchnorm(model, torch.device("cpu"))
    assert sum(isinstance(m, GlooSyncBatchNorm) for m in model.modules()) == n_bn > 0
    assert {name: id(p) for name, p in model.named_parameters()} == params  # same Parameters
    revert_sync_batchnorm(model)
    assert sum(type(m) is torch.nn.BatchNorm2d for m in model.modules()) == n_bn
    assert {name: id(p) for name, p in model.named_parameters()} == params
    assert list(model.state_dict()) == keys


# --------------------------------------------------------------------------------------------------
# two processes, gloo, on the CPU


class StopAfter:
    """A callback that asks to stop after epoch ``n`` and leaves a file naming its rank."""

    def __init__(self, n: int, workdir: Path) -> None:
        self.n, self.workdir = n, workdir

    def on_epoch_end(self, est, **logs):
        rank = os.environ.get("RANK", "alone")
        (self.workdir / f"callback-{rank}-epoch{logs['epoch']}").touch()
        return logs["epoch"] >= self.n


@contextlib.contextmanager
def recorded_training_batches() -> Iterator[list]:
    """The sample ids of the batches each shuffled (training) stream yields, per epoch."""
    seen: list = []
    original = BatchStream.iter_epoch

    def iter_epoch(self, epoch):
        if self.shuffle:
            seen.append((epoch, [b.tolist() for b in self._batches(epoch)]))
        return original(self, epoch)

    BatchStream.iter_epoch = iter_epoch
    try:
        yield seen
    finally:
        BatchStream.iter_epoch = original


@contextlib.contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Test only: ``fit`` builds its network in float64 (inputs cast on entry) and steps with
    plain SGD instead of Adam, so that a data-parallel fit can be held to rounding.

    Why not float32 and Adam: a random-init BatchNorm network's float32 gradient is about 1 %
    off its exact value (measured against float64: 1e-2 relative for MobileNetV2 and ResNet-50
    at 32-96 px), and Adam divides each gradient by its own magnitude, turning rounding noise on
    near-zero gradients into whole +-lr steps. Two float32 Adam runs that only sum in another
    order (two ranks, or one batch) therefore drift apart by the size of the updates themselves.
    In float64 with SGD a step is linear in the gradient and the gradients agree to rounding
    (the loss itself is still taken on float32 logits: about 1e-7 relative)."""
    from ctfp.models import builders, training

    build_model, adam = builders.build_model, training.adam

    def build_float64(*args, **kwargs):
        model = build_model(*args, **kwargs).double()
        model.register_forward_pre_hook(lambda m, args: (args[0].double(),))
        return model

    builders.build_model = build_float64
    training.adam = lambda model, lr, device: torch.optim.SGD(model.parameters(), lr=lr / 100)
    try:
        yield
    finally:
        builders.build_model, training.adam = build_model, adam


def _data(workdir: Path):
    with np.load(workdir / "data.npz") as f:
        return f["X"], f["y"]


def _fit(X, y, cbdir: Path) -> tuple:
    cbdir.mkdir(exist_ok=True)
    with recorded_training_batches() as seen:
        clf = ctfp.FingerprintClassifier(**PARAMS, callbacks=[StopAfter(STOP_AFTER, cbdir)])
        clf.fit(X, y)
    return clf, seen


def _summary(clf, seen, X) -> dict:
    bn = torch.nn.modules.batchnorm._BatchNorm
    return {
        "state": {k: v.clone() for k, v in clf.model_.state_dict().items()},
        "seen": seen,
        "history": clf.history_,
        "n_iter": clf.n_iter_,
        "best_epoch": clf.best_epoch_,
        "model_type": type(clf.model_).__name__,
        "bn_types": sorted({type(m).__name__ for m in clf.model_.modules() if isinstance(m, bn)}),
        "device": clf.device_,
        "proba": clf.predict_proba(X[:4]),
    }


def _worker(workdir: Path) -> None:
    """One rank: the float32 fit, the float64 fit, a fit with other data on rank 1; then write
    what the test compares."""
    torch.set_num_threads(1)
    X, y = _data(workdir)
    result = {"float32": _summary(*_fit(X, y, workdir / "float32"), X)}
    with exact_arithmetic():
        result["float64"] = _summary(*_fit(X, y, workdir / "float64"), X)
    other = y.copy()
    other[0] = "generated" if y[0] == "real" else "real"
    try:  # every rank must fit the same data: one label changed on rank 1 is refused
        ctfp.FingerprintClassifier(**PARAMS).fit(X, y if os.environ["RANK"] == "0" else other)
        result["mismatch"] = "no error"
    except ValueError as exc:
        result["mismatch"] = str(exc)
    with open(workdir / f"rank{os.environ['RANK']}.pkl", "wb") as fh:
        pickle.dump(result, fh)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir: Path, world: int, timeout: float = 240) -> list[dict]:
    """Start ``world`` ranks as torchrun would (its environment variables), wait, load results."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ)
        env.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
            OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path),
        )  # fmt: skip
        with open(workdir / f"rank{rank}.log", "wb") as log:
            cmd = [sys.executable, __file__, str(workdir)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log))
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(workdir / f"rank{r}.log").read_text(errors="replace")[-3000:] for r in range(world)]
    assert codes == [0] * world, f"ranks exited with {codes}:\n" + "\n".join(logs)
    out = []
    for rank in range(world):
        with open(workdir / f"rank{rank}.pkl", "rb") as fh:
            out.append(pickle.load(fh))
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    from ctfp.data.synthetic import make_slices

    workdir = tmp_path_factory.mktemp("ddp")
    X = make_slices(N, size=SIZE, n_patients=3)
    y = np.array(["real", "generated"] * (N // 2) + ["real"])
    np.savez(workdir / "data.npz", X=X, y=y)
    return workdir, _launch(workdir, 2)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_ranks_see_disjoint_shards_covering_every_sample(two_ranks, precision):
    _, ranks = two_ranks
    n_train = N - 4  # validation_fraction=0.25 of 15 holds out 4
    epochs0, epochs1 = (dict(r[precision]["seen"]) for r in ranks)
    assert sorted(epochs0) == sorted(epochs1) == list(range(STOP_AFTER))
    for epoch in range(STOP_AFTER):
        a, b = epochs0[epoch], epochs1[epoch]
        assert len(a) == len(b) == 2  # the same number of steps on both ranks
        assert [len(x) for x in a] == [4, 1] and [len(x) for x in b] == [4, 2]  # uneven last
        ids0 = [i for batch in a for i in batch]
        ids1 = [i for batch in b for i in batch]
        assert not set(ids0) & set(ids1)
        assert sorted(ids0 + ids1) == list(range(n_train))
    assert epochs0[0] != epochs0[1]  # a new order each epoch


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_ranks_end_with_identical_estimators(two_ranks, precision):
    workdir, ranks = two_ranks
    r0, r1 = (r[precision] for r in ranks)
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["history"] == r1["history"]
    assert r0["n_iter"] == r1["n_iter"] == STOP_AFTER  # rank 0's callback stopped both
    assert r0["best_epoch"] == r1["best_epoch"] is not None
    np.testing.assert_array_equal(r0["proba"], r1["proba"])
    # the plain network comes back: no DDP wrapper, BatchNorm reverted
    assert r0["model_type"] == r1["model_type"] == "FingerprintNet"
    assert r0["bn_types"] == r1["bn_types"] == ["BatchNorm2d"]
    assert r0["device"] == r1["device"] == "cpu"
    # callbacks ran on rank 0 only
    made = sorted(p.name for p in (workdir / precision).glob("callback-*"))
    assert made == [f"callback-0-epoch{e}" for e in range(1, STOP_AFTER + 1)]


def test_ranks_must_fit_the_same_data(two_ranks):
    _, ranks = two_ranks
    for r in ranks:  # an error on every rank, not a hang
        assert "every rank must call fit with the same X and y" in r["mismatch"]


def _compare(one, ddp: dict) -> tuple[float, float, float, float]:
    """Largest weight difference, largest change of a weight by training, largest relative
    differences of the history's training and validation losses."""
    from ctfp.models.builders import build_model

    with torch.random.fork_rng():  # the initial weights: fit seeds torch with its first draw
        torch.manual_seed(int(np.random.RandomState(0).randint(0, 2**31 - 1, size=3)[0]))
        init = build_model("mobilenet_v2", weights=None, image_size=32).state_dict()
    diff = moved = 0.0
    for k, v in one.model_.state_dict().items():
        if v.is_floating_point() and "running" not in k:
            diff = max(diff, float((v - ddp["state"][k]).abs().max()))
            moved = max(moved, float((v.double() - init[k].double()).abs().max()))
    pairs = list(zip(one.history_, ddp["history"], strict=True))
    loss, val_loss = (
        max(abs(b[k] - a[k]) / abs(a[k]) for a, b in pairs) for k in ("loss", "val_loss")
    )
    return diff, moved, loss, val_loss


def test_matches_one_process_fit_with_the_same_global_batch(two_ranks, tmp_path):
    """The two-rank fit equals a one-process fit with the same global batch (8: 4 + 4, then an
    uneven 1 + 2): with float64 and SGD (``exact_arithmetic``) to rounding; with float32 and
    Adam, the real configuration, as closely as float32 runs of this network reproduce at all
    (a one-process float32 fit differs from its float64 twin by 19 % in training loss and 6e-3
    in weights after the same 4 steps)."""
    workdir, (r0, _) = two_ranks
    X, y = _data(workdir)
    with exact_arithmetic():
        one64, _ = _fit(X, y, tmp_path / "float64")
    one32, _ = _fit(X, y, tmp_path / "float32")
    assert one64.n_iter_ == r0["float64"]["n_iter"] and one32.n_iter_ == r0["float32"]["n_iter"]
    d64, moved64, loss64, val64 = _compare(one64, r0["float64"])
    d32, moved32, loss32, val32 = _compare(one32, r0["float32"])
    print(
        f"\nDDP (2 ranks) vs one process, {STOP_AFTER} epochs:\n"
        f"  float64 + SGD:  max |dw| {d64:.2g} (training moved weights by up to {moved64:.2g}), "
        f"loss rel {loss64:.2g}, val_loss rel {val64:.2g}\n"
        f"  float32 + Adam: max |dw| {d32:.2g} (training moved weights by up to {moved32:.2g}), "
        f"loss rel {loss32:.2g}, val_loss rel {val32:.2g}"
    )
    assert d64 < WEIGHT_ATOL_F64, f"float64: largest weight difference {d64:.3g}"
    assert max(loss64, val64) < LOSS_RTOL_F64, (
        f"float64: losses differ by {loss64:.3g}, {val64:.3g}"
    )
    assert val32 < VAL_LOSS_RTOL_F32, f"float32: validation losses differ by {val32:.3g}"


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
