"""FingerprintClassifier on one GPU against a bare PyTorch step: is fit at the hardware's ceiling?

One process, one run, one card. For MobileNetV2, ResNet-50 and DenseNet-121 at 224x224 (batch
256) and MobileNetV2 at Method 4's 896x896 (batch 32), random initialisation:

- ``fit``: ``FingerprintClassifier.fit`` on synthetic CT-like PNGs through ctfp's feed (uint8 grey
  from the Rust core, pinned memory, side-stream copy, expanded and normalised on the GPU,
  channels-last, fp16 autocast, cuDNN autotuning), the paper's augmentation, several epochs.
  Distinct PNGs are repeated to make epochs long enough to time (paths repeat; the decode cache
  decodes each once). Throughput is the mean ``images_per_s`` of the epochs after the first;
  ``loader wait`` is ``loader_wait_s`` over those epochs' seconds; ``epoch 1 / 2`` compares the
  first epoch (cold: cuDNN autotuning, the decode cache filling, for the first row also loading
  cuDNN/cuBLAS) with the second. Each row's fit runs first, in a process whose cuDNN autotune
  cache has not seen that row's shapes, as a user's fit would.
- ``predict``: ``predict_proba`` on up to 4,096 of the same paths (after a one-batch warm-up).
- ``bare step``: the same network, optimiser (``ctfp.models.training.adam``: fused Adam), loss
  and fp16 ``GradScaler`` step, channels-last, on synthetic float16 tensors already on the GPU:
  the ceiling ``fit`` is measured against (``fit / bare``).
- ``loader``: ctfp's uint8 grey loader alone (augmenting, decode cache warm), images/s.
- ESRGAN x4 upscaling images/s from ``benches/esrgan_gpu.py``'s ``run`` when that file exists.
- ``first-epoch study`` (first, on the cold process; ``--no-first-epoch-study`` skips it): the
  seconds to load the GPU libraries, then MobileNetV2 at 224 fitted with cuDNN autotuning off and
  on, each epoch's seconds: where the first epoch's extra time goes, and whether autotuning
  pays for itself (:func:`first_epoch_study`). The rows after it no longer pay the libraries'
  loading in their first epoch.

Targets: fit >= 0.9x the bare step per row, loader wait < 5 % of the epoch, epoch 1 <= 1.5x
epoch 2. Prints a Markdown table naming the card; ``--json``/``--md`` write the results.

Usage::

    python benches/bench_gpu.py --json out/gpu/bench_gpu.json --md out/gpu/bench_gpu.md
    python benches/bench_gpu.py --cpu-smoke      # tiny sizes on the CPU: the code path only

Without CUDA (and without ``--cpu-smoke``) it says so and exits 0. About 2-3 minutes on an
H100/H200 with 16 CPU cores; ``--budget-s`` skips rows that would start after it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

#: (backbone, input size, batch size, training samples per epoch, distinct PNGs, PNG size)
GPU_ROWS = [
    ("mobilenet_v2", 224, 256, 12288, 512, 256),
    ("resnet50", 224, 256, 8192, 512, 256),
    ("densenet121", 224, 256, 4096, 512, 256),
    ("mobilenet_v2", 896, 32, 1024, 64, 1024),  # Method 4: ESRGAN x4 outputs, resized to 896
]
SMOKE_ROWS = [
    ("mobilenet_v2", 32, 4, 8, 4, 40),
    ("mobilenet_v2", 48, 2, 4, 2, 64),
]
TARGETS = {"fit_over_bare": 0.9, "loader_wait_pct": 5.0, "epoch1_over_epoch2": 1.5}


def write_pngs(directory: Path, n: int, size: int) -> list[str]:
    """``n`` distinct grey PNGs of ``size`` x ``size``: synthetic CT-like slices (a few drawn,
    the rest flipped, shifted and noised from them), written on all cores."""
    from PIL import Image

    from ctfp.data.synthetic import make_slices

    directory.mkdir(parents=True, exist_ok=True)
    base = make_slices(min(n, 16), size=min(size, 256), n_patients=4)
    if size > 256:  # upscaled as ESRGAN's x4 outputs are (Method 4)
        base = np.stack(
            [np.asarray(Image.fromarray(b).resize((size, size), Image.BICUBIC)) for b in base]
        )

    def one(k: int) -> str:
        rng = np.random.default_rng(k)
        img = base[k % len(base)]
        img = np.roll(img, (int(rng.integers(-8, 9)), int(rng.integers(-8, 9))), axis=(0, 1))
        if k // len(base) % 2:
            img = img[:, ::-1]
        noisy = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255)
        path = directory / f"img_{size}_{k:04d}.png"
        Image.fromarray(noisy.astype(np.uint8)).save(path, compress_level=1)
        return str(path)

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(one, range(n)))


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step(
    backbone: str, size: int, batch: int, device: Any, *, warmup: int, steps: int
) -> dict[str, Any]:
    """images/s of the training step alone: channels-last, fp16 autocast + GradScaler on CUDA,
    fused Adam and the estimator's loss, on tensors already on the device."""
    import torch

    from ctfp.models.builders import build_model
    from ctfp.models.training import (
        adam,
        binary_cross_entropy,
        cudnn_autotune,
        mixed_precision_autocast,
    )

    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(backbone, weights=None, image_size=size).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = adam(model, 1e-4, device)
    loss_fn = binary_cross_entropy()
    autocast = mixed_precision_autocast(device, cuda)
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    dtype = torch.float16 if cuda else torch.float32
    xs = [
        torch.randn(batch, 3, size, size, device=device, dtype=dtype).contiguous(
            memory_format=torch.channels_last
        )
        for _ in range(2)
    ]
    ys = [torch.randint(0, 2, (batch,), device=device).float() for _ in range(2)]

    def step(k: int) -> None:
        with autocast():
            logits = model(xs[k % 2])
        loss = loss_fn(logits.float(), ys[k % 2])
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    with cudnn_autotune():
        t0 = time.perf_counter()
        for k in range(warmup):
            step(k)
        _sync(device)
        t1 = time.perf_counter()
        for k in range(steps):
            step(k)
        _sync(device)
        t2 = time.perf_counter()
    step_s = (t2 - t1) / steps
    return {
        "bare_images_per_s": batch * steps / (t2 - t1),
        "bare_step_s": step_s,
        "bare_warmup_s": t1 - t0,
        "bare_warmup_extra_s": (t1 - t0) - warmup * step_s,
    }


def fit_and_predict(
    backbone: str, size: int, batch: int, paths: list[str], device: Any, epochs: int
) -> dict[str, Any]:
    """``fit`` for ``epochs`` epochs, then ``predict_proba``; the numbers from ``history_``."""
    import torch

    from ctfp import FingerprintClassifier

    y = np.arange(len(paths)) % 2
    clf = FingerprintClassifier(
        backbone=backbone, weights=None, image_size=size, batch_size=batch, max_epochs=epochs,
        random_state=0, device=str(device),
    )  # fmt: skip
    t0 = time.perf_counter()
    clf.fit(paths, y)
    fit_s = time.perf_counter() - t0
    h = clf.history_
    steady = h[1:] or h
    seconds = sum(r["seconds"] for r in steady)
    out: dict[str, Any] = {
        "fit_total_s": fit_s,
        "epochs": [
            {k: r[k] for k in ("seconds", "images_per_s", "loader_wait_s", "compute_s", "loss")}
            for r in h
        ],
        "fit_images_per_s": statistics.fmean(r["images_per_s"] for r in steady),
        "loader_wait_pct": 100.0 * sum(r["loader_wait_s"] for r in steady) / seconds,
        "epoch1_over_epoch2": h[0]["seconds"] / h[1]["seconds"] if len(h) > 1 else None,
        "epoch1_extra_s": h[0]["seconds"] - h[1]["seconds"] if len(h) > 1 else None,
    }
    n_pred = min(len(paths), 4096)
    clf.predict_proba(paths[:batch])  # warm-up: one batch
    _sync(device)
    t0 = time.perf_counter()
    proba = clf.predict_proba(paths[:n_pred])
    pred_s = time.perf_counter() - t0
    assert proba.shape == (n_pred, 2) and np.isfinite(proba).all()
    out["predict_images_per_s"] = n_pred / pred_s
    out["predict_images"] = n_pred
    del clf
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def loader_only(paths: list[str], size: int, batch: int, n_batches: int) -> float:
    """images/s of ctfp's uint8 grey loader with the paper's augmentation, decode cache warm."""
    import ctfp

    stream = ctfp.BatchStream(
        paths, batch_size=batch, size=size, augment=ctfp.Augment(), dtype="uint8",
        layout="grey", cache=True, shuffle=True,
    )  # fmt: skip
    for _ in stream.iter_epoch(0):  # fills the cache
        pass
    t0, n = time.perf_counter(), 0
    for epoch in range(1, 100):
        for xb in stream.iter_epoch(epoch):
            n += len(xb)
            if n >= n_batches * batch:
                return n / (time.perf_counter() - t0)
    return n / (time.perf_counter() - t0)


def feed_check(paths: list[str], size: int, device: Any) -> float:
    """Largest difference between the GPU feed's input and the Rust float32 batch (same images,
    resized: at most half a grey level over the std)."""
    import torch

    import ctfp
    from ctfp.models.feed import DeviceFeed

    norm = ctfp.data.preprocess.NORMALIZE_PRESETS["imagenet"]
    ref = ctfp.load_batch(paths, size=size, dtype="float32", normalize=norm)
    grey = ctfp.load_batch(paths, size=size, layout="grey")
    x = next(iter(DeviceFeed([grey], device, norm, channels_last=True)))
    return float((x.float().cpu() - torch.from_numpy(ref)).abs().max())


def esrgan(report: Callable[[str], Any], cpu_smoke: bool, budget_s: float) -> dict[str, Any]:
    """``benches/esrgan_gpu.py``'s ``run`` (another bench), when that file exists."""
    path = HERE / "esrgan_gpu.py"
    if not path.exists():
        return {"skipped": f"{path.name} not found"}
    try:
        spec = importlib.util.spec_from_file_location("esrgan_gpu", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        run = mod.run
        wanted = {"cpu_smoke": cpu_smoke, "compile": False, "budget_s": budget_s, "reps": 5}
        params = inspect.signature(run).parameters
        kwargs = {k: v for k, v in wanted.items() if k in params}
        return dict(run(report, **kwargs))
    except Exception as exc:  # another helper's bench: report, never fail this one
        return {"error": f"{type(exc).__name__}: {exc}"}


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


#: The first-epoch study: (backbone, input size, batch, samples per epoch), epochs per fit
STUDY = ("mobilenet_v2", 224, 256, 4096)
SMOKE_STUDY = ("mobilenet_v2", 32, 4, 8)
STUDY_EPOCHS = 3


def first_epoch_study(
    paths: list[str], device: Any, spec: tuple[str, int, int, int]
) -> dict[str, Any]:
    """Where the first epoch's extra seconds go, on a cold process (run before the rows):
    ``libraries_s``, one small fp16 channels-last convolution forward and backward (loads cuDNN
    and cuBLAS); then the same ``fit`` twice, cuDNN autotuning off (``ctfp.models.training.
    cudnn_autotune`` replaced for the fit by the switched-off block) and on (the default), each
    with its epochs' seconds, epoch 1 / 2 and the later epochs' images/s. Autotuning pays once
    per new layer shape; whether it pays for itself is the later epochs' images/s."""
    import torch

    from ctfp import FingerprintClassifier
    from ctfp._util import cudnn_autotune
    from ctfp.models import training

    backbone, size, batch, n = spec
    out: dict[str, Any] = {"backbone": backbone, "size": size, "batch": batch, "samples": n}
    t0 = time.perf_counter()
    conv = torch.nn.Conv2d(3, 8, 3).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        conv(x).float().sum().backward()
    _sync(device)
    out["libraries_s"] = time.perf_counter() - t0
    files = [paths[k % len(paths)] for k in range(n)]
    y = np.arange(n) % 2
    for name, autotune in (("autotune off", False), ("autotune on", True)):
        original = training.cudnn_autotune
        if not autotune:
            training.cudnn_autotune = lambda enabled=True: cudnn_autotune(False)  # type: ignore[assignment]
        try:
            clf = FingerprintClassifier(
                backbone=backbone, weights=None, image_size=size, batch_size=batch,
                max_epochs=STUDY_EPOCHS, random_state=0, device=str(device),
            )  # fmt: skip
            t0 = time.perf_counter()
            clf.fit(files, y)
            secs = [r["seconds"] for r in clf.history_]
            out[name] = {
                "fit_total_s": time.perf_counter() - t0,
                "epoch_s": secs,
                "epoch1_over_epoch2": secs[0] / secs[1],
                "later_images_per_s": statistics.fmean(r["images_per_s"] for r in clf.history_[1:]),
            }
        finally:
            training.cudnn_autotune = original  # type: ignore[assignment]
        del clf
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def study_lines(st: dict[str, Any]) -> list[str]:
    if not st or "error" in st:
        return ["", f"First-epoch study: {st.get('error', 'not run')}"] if st else []
    lines = [
        "",
        f"First-epoch study ({st['backbone']} {st['size']}, batch {st['batch']}, {st['samples']} "
        f"samples, {STUDY_EPOCHS} epochs, run first in the process): loading the GPU libraries "
        f"{st['libraries_s']:.2f} s",
        "",
        "| cuDNN autotuning | epoch seconds | epoch 1 / 2 | epochs 2+ img/s |",
        "| --- | --- | ---: | ---: |",
    ]
    for name in ("autotune off", "autotune on"):
        r = st[name]
        secs = ", ".join(f"{v:.2f}" for v in r["epoch_s"])
        lines.append(
            f"| {name.split()[1]} | {secs} | {r['epoch1_over_epoch2']:.2f} | "
            f"{r['later_images_per_s']:,.0f} |"
        )
    return lines


def table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| model | input | batch | bare step img/s | fit img/s | fit / bare | loader wait | "
        "epoch 1 / 2 | epoch 1 extra (s) | predict img/s | loader only img/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["rows"]:
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or r.get("error")
            lines.append(f"| {r['backbone']} | {r['size']} | {r['batch']} | {why} |" + " |" * 7)
            continue
        ok = {
            "ratio": r["fit_over_bare"] >= TARGETS["fit_over_bare"],
            "wait": r["loader_wait_pct"] < TARGETS["loader_wait_pct"],
            "first": (r["epoch1_over_epoch2"] or 0) <= TARGETS["epoch1_over_epoch2"],
        }
        mark = {k: "" if v else " (miss)" for k, v in ok.items()}
        lines.append(
            f"| {r['backbone']} | {r['size']} | {r['batch']} | {r['bare_images_per_s']:,.0f} | "
            f"{r['fit_images_per_s']:,.0f} | {r['fit_over_bare']:.2f}{mark['ratio']} | "
            f"{r['loader_wait_pct']:.1f} %{mark['wait']} | "
            f"{_fmt(r['epoch1_over_epoch2'], '.2f')}{mark['first']} | "
            f"{_fmt(r['epoch1_extra_s'], '.2f')} | {r['predict_images_per_s']:,.0f} | "
            f"{r['loader_images_per_s']:,.0f} |"
        )
    t = TARGETS
    lines += [
        "",
        f"Targets: fit / bare >= {t['fit_over_bare']}, loader wait < {t['loader_wait_pct']:.0f} % "
        f"of the epoch, epoch 1 / 2 <= {t['epoch1_over_epoch2']}; (miss) marks a row under one.",
        f"{results['device']}; torch {results['torch']}, cuDNN {results['cudnn']}, "
        f"{results['cpus']} CPU cores, ctfp {results['ctfp']}; {results['precision']}, "
        f"channels-last, random init, {results['epochs']} epochs per fit (fit img/s: epochs 2+). "
        f"Bare step: warm-up {results['warmup_steps']} + {results['steps']} timed steps; "
        f"feed vs Rust float32 max |diff| {_fmt(results.get('feed_max_diff'), '.4f')}; "
        f"total {results.get('total_s', 0):.0f} s.",
    ]
    es = results.get("esrgan") or {}
    if es.get("rows"):
        lines += ["", "| ESRGAN x4 | size | images | img/s |", "| --- | --- | ---: | ---: |"]
        for r in es["rows"]:
            if "images_per_s" in r:
                lines.append(
                    f"| {r.get('name')} | {r.get('size')} | {r.get('images')} | "
                    f"{r['images_per_s']:,.1f} |"
                )
    elif es:
        lines += ["", f"ESRGAN: {es.get('skipped') or es.get('error') or 'no rows'}"]
    lines += study_lines(results.get("first_epoch") or {})
    return lines


def run(
    report: Callable[[str], Any] = print,
    *,
    json_path: str | None = None,
    md_path: str | None = None,
    cpu_smoke: bool = False,
    epochs: int = 3,
    budget_s: float = 200.0,
    esrgan_budget_s: float = 60.0,
    workdir: str | None = None,
    first_epoch: bool = True,
) -> dict[str, Any]:
    import torch

    import ctfp

    start = time.perf_counter()
    if not cpu_smoke and not torch.cuda.is_available():
        msg = "bench_gpu: no CUDA device (torch sees none); skipped. --cpu-smoke runs it on the CPU"
        report(msg)
        return {"skipped": msg}
    device = torch.device("cpu" if cpu_smoke else "cuda")
    rows = SMOKE_ROWS if cpu_smoke else GPU_ROWS
    warmup, steps = (1, 1) if cpu_smoke else (3, 15)
    epochs = 2 if cpu_smoke else max(2, epochs)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "ctfp": ctfp.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "precision": "fp16 autocast" if device.type == "cuda" else "fp32",
        "epochs": epochs,
        "warmup_steps": warmup,
        "steps": steps,
        "targets": TARGETS,
        "smoke": cpu_smoke,
        "rows": [],
    }

    def save() -> None:
        results["total_s"] = time.perf_counter() - start
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(results, indent=2) + "\n")

    report(f"bench_gpu: {results['device']}, torch {results['torch']}, ctfp {results['ctfp']}")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        pngs: dict[tuple[int, int], list[str]] = {}
        if first_epoch:  # on the cold process, before any row
            backbone, size, batch, n, distinct, src = rows[0]
            try:
                t0 = time.perf_counter()
                pngs[distinct, src] = write_pngs(Path(tmp) / f"{src}", distinct, src)
                results["first_epoch"] = first_epoch_study(
                    pngs[distinct, src], device, SMOKE_STUDY if cpu_smoke else STUDY
                )
                report(
                    f"  first-epoch study: {time.perf_counter() - t0:.1f} s "
                    f"(libraries {results['first_epoch']['libraries_s']:.2f} s)"
                )
            except Exception as exc:  # the study must not lose the rows
                results["first_epoch"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                report(f"  first-epoch study: error {results['first_epoch']['error']}")
            save()
        for backbone, size, batch, n, distinct, src in rows:
            row: dict[str, Any] = {"backbone": backbone, "size": size, "batch": batch}
            results["rows"].append(row)
            if time.perf_counter() - start > budget_s:
                row["skipped"] = f"past the {budget_s:.0f} s budget"
                report(f"  {backbone} {size}: skipped ({row['skipped']})")
                save()
                continue
            try:
                if (distinct, src) not in pngs:
                    t0 = time.perf_counter()
                    pngs[distinct, src] = write_pngs(Path(tmp) / f"{src}", distinct, src)
                    report(
                        f"  wrote {distinct} PNGs {src}x{src} in {time.perf_counter() - t0:.1f} s"
                    )
                base = pngs[distinct, src]
                paths = [base[k % len(base)] for k in range(n)]
                row.update(samples=n, distinct_pngs=distinct, png_size=src)
                if "feed_max_diff" not in results:
                    results["feed_max_diff"] = feed_check(base[:8], size, device)
                row.update(fit_and_predict(backbone, size, batch, paths, device, epochs))
                row.update(bare_step(backbone, size, batch, device, warmup=warmup, steps=steps))
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # the bare step's model and batches are gone
                row["fit_over_bare"] = row["fit_images_per_s"] / row["bare_images_per_s"]
                row["loader_images_per_s"] = loader_only(base, size, batch, 2 if cpu_smoke else 8)
                report(
                    f"  {backbone} {size} b{batch}: fit {row['fit_images_per_s']:,.0f} img/s, "
                    f"bare {row['bare_images_per_s']:,.0f} ({row['fit_over_bare']:.2f}x), wait "
                    f"{row['loader_wait_pct']:.1f} %, epoch 1/2 "
                    f"{_fmt(row['epoch1_over_epoch2'], '.2f')}, predict "
                    f"{row['predict_images_per_s']:,.0f} img/s"
                )
            except Exception as exc:  # one row failing must not lose the others
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
                report(f"  {backbone} {size}: error {row['error']}")
            save()
    left = budget_s + esrgan_budget_s - (time.perf_counter() - start)
    if left < 20 and not cpu_smoke:
        results["esrgan"] = {"skipped": f"{left:.0f} s of the budget left"}
    else:
        results["esrgan"] = esrgan(report, cpu_smoke, min(esrgan_budget_s, max(left, 1.0)))
    save()
    lines = table(results)
    for line in ["", *lines]:
        report(line)
    if md_path:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text("\n".join(lines) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the results here (after each row)")
    p.add_argument("--md", help="write the Markdown table here")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (code path)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per fit (>= 2)")
    p.add_argument("--budget-s", type=float, default=200.0, help="no new row starts after this")
    p.add_argument("--esrgan-budget-s", type=float, default=60.0, help="for esrgan_gpu.run")
    p.add_argument("--workdir", help="where the synthetic PNGs go (default: the temp folder)")
    p.add_argument("--no-first-epoch-study", action="store_true", help="skip the first-epoch study")
    a = p.parse_args(argv)
    results = run(
        print, json_path=a.json, md_path=a.md, cpu_smoke=a.cpu_smoke, epochs=a.epochs,
        budget_s=a.budget_s, esrgan_budget_s=a.esrgan_budget_s, workdir=a.workdir,
        first_epoch=not a.no_first_epoch_study,
    )  # fmt: skip
    errors = [r for r in results.get("rows", []) if "error" in r]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
