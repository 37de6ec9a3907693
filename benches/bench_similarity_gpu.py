"""Similarity on the GPU against the CPU path on the same machine (run by benches/gpu_check.sh).

    python benches/bench_similarity_gpu.py --json OUT.json --md OUT.md [--cpu-smoke]

The presets ``sim-pixel`` and ``sim-ssim`` (ctfp.imageclef.methods) score ``--real`` real
images against ``--generated`` generated ones: ``fit`` (the generated-set index: resize to the
preset's 64x64, features, the search structure) and ``score_samples`` of the real images, timed
together, with ``device="cpu"`` and with ``device="cuda"`` (``n_jobs=-1``: every core for
decoding and SSIM). Each is run twice and both times are kept (the first pays CUDA's and the
kernels' start-up). The scores of the two devices are compared (``max_abs_diff``): ctfp's
distances are recomputed exactly for the candidates that decide, so they should agree. SSIM
itself always runs on the CPU cores (the Rust kernel); on ``"cuda"`` only what precedes it
(the pixel pre-filter) moves, so its row says what the device changes.

The images: the realistic benchmark's committed few-hundred generator (ctfp.imageclef.realistic),
``--generated`` samples (latent seed 1) as the generated set and ``--real`` samples (latent seed
2) as stand-in real images at 256x256: timing only, the scores mean nothing here.

FAISS: whether the installed ``faiss`` has GPU support (``faiss.get_num_gpus()``), or that it is
not installed; ctfp's index uses FAISS only when asked (``algorithm="faiss"``).

``--cpu-smoke``: 300 generated, 40 real, the CPU only: a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

PRESETS = ("sim-pixel", "sim-ssim")


def _images(n: int, seed: int, device: str) -> np.ndarray:
    from ctfp.imageclef.realistic import generate, load_generator

    g, _ = load_generator(regime="few-hundred", device=device)
    return generate(g, n, seed, size=256, device=device)


def _estimator(key: str, device: str) -> Any:
    from ctfp.imageclef.methods import similarity_method
    from ctfp.membership.estimators import make_estimator

    options = similarity_method(key).options
    return make_estimator(options, rule=None, device=device, n_jobs=-1, random_state=0)


def _time(key: str, device: str, real: np.ndarray, gen: np.ndarray) -> tuple[list, np.ndarray]:
    import torch

    times, scores = [], np.empty(0)
    labels = np.arange(len(real)) % 2
    for _ in range(2):
        est = _estimator(key, device)
        t0 = time.perf_counter()
        est.fit(real, labels, generated=gen)
        scores = np.asarray(est.score_samples(real), dtype=float)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(round(time.perf_counter() - t0, 3))
    return times, scores


def _faiss() -> str:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        return "faiss not installed"
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return f"faiss {getattr(faiss, '__version__', '?')}: {gpus} GPU(s) usable"


def run(n_generated: int, n_real: int, devices: list[str]) -> dict[str, Any]:
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    t0 = time.perf_counter()
    data_device = "cuda" if "cuda" in devices else "cpu"
    gen = _images(n_generated, 1, data_device)
    real = _images(n_real, 2, data_device)
    rows = []
    for key in PRESETS:
        per: dict[str, Any] = {}
        for dev in devices:
            times, scores = _time(key, dev, real, gen)
            per[dev] = {"seconds": times, "scores": scores}
        row: dict[str, Any] = {"preset": key}
        for dev in devices:
            row[f"{dev}_s"] = per[dev]["seconds"]
        if len(devices) == 2:
            cpu, gpu = per["cpu"], per["cuda"]
            row["speedup"] = round(min(cpu["seconds"]) / min(gpu["seconds"]), 2)
            row["max_abs_diff"] = float(np.max(np.abs(cpu["scores"] - gpu["scores"])))
        rows.append(row)
    return {
        "command": "python benches/bench_similarity_gpu.py",
        "card": card,
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "n_generated": n_generated,
        "n_real": n_real,
        "devices": devices,
        "rows": rows,
        "faiss": _faiss(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def markdown(res: dict[str, Any]) -> str:
    devs = res["devices"]
    head = ["preset", *(f"{d} fit + score (s), 1st / 2nd" for d in devs)]
    if len(devs) == 2:
        head += ["GPU speed-up (best of 2)", "max |score difference|"]
    lines = [
        "<!-- written by benches/bench_similarity_gpu.py; do not edit -->",
        f"{res['n_real']} real images scored against {res['n_generated']} generated "
        f"(256x256, compared at the presets' 64x64), `n_jobs=-1` on {res['cpu_cores']} cores; "
        f"card: {res['card'] or 'none (CPU only)'}; torch {res['torch']}; {res['faiss']}; "
        f"{res['seconds']:.0f} s in all.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in res["rows"]:
        cells = [r["preset"], *(" / ".join(f"{t:.2f}" for t in r[f"{d}_s"]) for d in devs)]
        if len(devs) == 2:
            cells += [f"{r['speedup']:.2f}x", f"{r['max_abs_diff']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generated", type=int, default=10_000)
    ap.add_argument("--real", type=int, default=400)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--md", type=Path, required=True)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny, CPU only: checks the script")
    a = ap.parse_args(argv)
    if a.cpu_smoke:
        a.generated, a.real, devices = 300, 40, ["cpu"]
    elif torch.cuda.is_available():
        devices = ["cpu", "cuda"]
    else:
        raise SystemExit("no CUDA device: run with --cpu-smoke to check the script on the CPU")
    res = run(a.generated, a.real, devices)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=1) + "\n")
    a.md.write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
