"""Training throughput of FingerprintClassifier: images per second, loader time against model time.

Setting: 32 synthetic CT-like 256x256 PNGs, MobileNetV2 (random init) at the paper's 224x224
input, batch 16, the paper's augmentation, Adam, 2 epochs; numbers are from epoch 2 (decoded images
cached, as in every epoch after the first of a real run).

Rows:

- ``ctfp fit``: ``FingerprintClassifier.fit``; batches from ctfp's Rust pipeline (float32,
  normalised in the same pass) assembled in a background thread while the model trains.
  ``loader wait`` is the time the training loop spent waiting for a batch; ``compute`` is forward,
  backward and optimiser step.
- ``torchvision v2 loop`` (the peer): the same model and step, with each batch made in the loop by
  ``torchvision.io.decode_png`` + ``transforms.v2`` resize/affine/flip/normalise (benches/peers.py),
  the way a plain training loop without DataLoader workers does it.
- ``loader only`` / ``model step only``: each half alone, to show which one bounds the other.

The CUDA rows (mixed precision) run only where CUDA is present.

Run::

    python benches/bench_training.py [--torch-threads 1]   # prints the table (docs/classifier.md)
    pytest benches/bench_training.py --benchmark-json=out/bench_training.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ctfp
from ctfp.data import synthetic
from ctfp.models import build_model, get_spec
from ctfp.models.training import binary_cross_entropy, mixed_precision_autocast, train_one_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import torchvision_v2  # noqa: E402

N_IMAGES = 32
SIZE = 224
BATCH = 16
EPOCHS = 2
BACKBONE = "mobilenet_v2"
SEED = 7
# torchvision's affine scales isotropically: draw one zoom for both axes, for both pipelines
AUGMENT = ctfp.Augment(zoom_per_axis=False)


def make_data(directory: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    paths = [str(p) for p in synthetic.write_pngs(directory, N_IMAGES, seed=SEED)]
    return paths, np.arange(N_IMAGES) % 2


def ctfp_fit(paths: list[str], labels: np.ndarray, device: str) -> dict[str, float]:
    clf = ctfp.FingerprintClassifier(
        backbone=BACKBONE,
        weights=None,
        image_size=SIZE,
        batch_size=BATCH,
        max_epochs=EPOCHS,
        augment=AUGMENT,
        device=device,
        random_state=0,
    ).fit(paths, labels)
    row = clf.history_[-1]
    return {
        "images_per_s": row["images_per_s"],
        "loader_wait_s": row["loader_wait_s"],
        "compute_s": row["compute_s"],
        "seconds": row["seconds"],
    }


def _model_step(device: str) -> tuple[torch.nn.Module, dict]:
    """The model and the arguments of ctfp's training step (``train_one_epoch``), as in fit."""
    dev = torch.device(device)
    mixed_precision = dev.type == "cuda"
    torch.manual_seed(0)
    model = build_model(BACKBONE, weights=None, image_size=SIZE).to(dev)
    step = {
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-4),
        "loss_fn": binary_cross_entropy(),
        "device": dev,
        "autocast": mixed_precision_autocast(dev, mixed_precision),
        "scaler": torch.amp.GradScaler("cuda") if mixed_precision else None,
    }
    return model, step


def torchvision_loop(paths: list[str], labels: np.ndarray, device: str) -> dict[str, float]:
    """The same training step, batches made in the loop by torchvision (no prefetching)."""
    model, step = _model_step(device)
    y_all = labels.astype(np.float32)

    def batches(epoch: int):
        order = np.random.default_rng([SEED, epoch]).permutation(N_IMAGES)
        for k in range(0, N_IMAGES, BATCH):
            idx = order[k : k + BATCH]
            params = [AUGMENT.sample_params(int(i), seed=SEED, epoch=epoch) for i in idx]
            xb = torchvision_v2([paths[i] for i in idx], params, (SIZE, SIZE), "float32")
            yield np.ascontiguousarray(xb), y_all[idx]

    row: dict[str, float] = {}
    for epoch in range(EPOCHS):
        t_epoch = time.perf_counter()
        stats = train_one_epoch(model, batches(epoch), **step)
        seconds = time.perf_counter() - t_epoch
        row = {
            "images_per_s": N_IMAGES / seconds,
            "loader_wait_s": stats["loader_wait_s"],
            "compute_s": stats["compute_s"],
            "seconds": seconds,
        }
    return row


def loader_only(paths: list[str]) -> float:
    """Images/s of ctfp's loader alone (an epoch with the decode cache warm), all threads."""
    spec = get_spec(BACKBONE)
    stream = ctfp.BatchStream(
        paths,
        batch_size=BATCH,
        seed=SEED,
        prefetch=0,
        cache=True,
        size=SIZE,
        augment=AUGMENT,
        dtype="float32",
        normalize=spec.normalize,
    )
    for _ in stream.iter_epoch(0):  # fills the decode cache
        pass
    t = time.perf_counter()
    for _ in stream.iter_epoch(1):
        pass
    return N_IMAGES / (time.perf_counter() - t)


def torchvision_loader_only(paths: list[str]) -> float:
    params = [AUGMENT.sample_params(i, seed=SEED, epoch=1) for i in range(N_IMAGES)]
    t = time.perf_counter()
    for k in range(0, N_IMAGES, BATCH):
        torchvision_v2(paths[k : k + BATCH], params[k : k + BATCH], (SIZE, SIZE), "float32")
    return N_IMAGES / (time.perf_counter() - t)


def model_only(device: str, steps: int = 2) -> float:
    """Images/s of the training step alone, on one fixed batch (after a warm-up step)."""
    model, step = _model_step(device)
    dev = step["device"]
    batch = (
        torch.randn(BATCH, 3, SIZE, SIZE, device=dev),
        (torch.arange(BATCH, device=dev) % 2).float(),
    )
    train_one_epoch(model, [batch], **step)
    t = time.perf_counter()
    train_one_epoch(model, [batch] * steps, **step)
    return steps * BATCH / (time.perf_counter() - t)


def describe() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), ctfp {ctfp.__version__}"
    )


def table(paths: list[str], labels: np.ndarray, devices: list[str]) -> str:
    lines = [
        f"{BACKBONE}, {SIZE}x{SIZE}, batch {BATCH}, {N_IMAGES} PNGs 256x256, epoch {EPOCHS} "
        f"of {EPOCHS}; {describe()}",
        "",
        "| device | pipeline | images/s | loader wait (s) | compute (s) | epoch (s) | wait share |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for device in devices:
        for name, fn in (("ctfp fit", ctfp_fit), ("torchvision v2 loop", torchvision_loop)):
            r = fn(paths, labels, device)
            share = r["loader_wait_s"] / r["seconds"]
            lines.append(
                f"| {device} | {name} | {r['images_per_s']:.1f} | {r['loader_wait_s']:.2f} | "
                f"{r['compute_s']:.2f} | {r['seconds']:.2f} | {share:.0%} |"
            )
    lines += [
        "",
        "| part alone | images/s |",
        "| --- | ---: |",
        f"| ctfp loader (float32, augment, decode cache warm) | {loader_only(paths):.0f} |",
        f"| torchvision v2 loader | {torchvision_loader_only(paths):.0f} |",
    ]
    for device in devices:
        lines.append(f"| model step only ({device}) | {model_only(device):.1f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# pytest-benchmark entry points

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("train_pngs"))


def _record(benchmark, fn, *args) -> dict[str, float]:
    out: dict[str, float] = {}

    def run() -> None:
        out.update(fn(*args))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    benchmark.extra_info["loader_wait_share"] = out["loader_wait_s"] / out["seconds"]
    return out


@pytest.mark.benchmark(group="train mobilenet_v2 224 cpu")
def test_ctfp_fit_cpu(benchmark, data) -> None:
    r = _record(benchmark, ctfp_fit, *data, "cpu")
    # with prefetching, the loop hardly waits for batches: the model is the bottleneck
    assert r["loader_wait_s"] < 0.25 * r["compute_s"]


@pytest.mark.benchmark(group="train mobilenet_v2 224 cpu")
def test_torchvision_loop_cpu(benchmark, data) -> None:
    _record(benchmark, torchvision_loop, *data, "cpu")


def test_loader_outpaces_the_model_cpu(data) -> None:
    assert loader_only(data[0]) > 2 * model_only("cpu")


@needs_cuda
@pytest.mark.benchmark(group="train mobilenet_v2 224 cuda")
def test_ctfp_fit_cuda(benchmark, data) -> None:
    _record(benchmark, ctfp_fit, *data, "cuda")


@needs_cuda
@pytest.mark.benchmark(group="train mobilenet_v2 224 cuda")
def test_torchvision_loop_cuda(benchmark, data) -> None:
    _record(benchmark, torchvision_loop, *data, "cuda")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even where present")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the model, set by this script for its own process "
        "(default: torch's, one per core; fit never changes it); on a small machine shared "
        "with other jobs, 1 gives steadier numbers",
    )
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    with tempfile.TemporaryDirectory() as tmp:
        print(table(*make_data(tmp), devices))
