"""Train the attribution benchmark's generators (``ctfp.attribution.gans.SETTINGS``), once.

For each generator of the chosen setting(s) this renders its training slices (256x256, area-averaged
to 64x64), trains it with :func:`ctfp.attribution.gans.train_generator` for ``--iterations`` or
until its share of ``--budget-s`` runs out, and writes ``gan_<setting>_<name>.pt`` (fp16 state,
the spec, the settings, the iterations actually done, the SHA-256 of the training slices, the
patients seen) and ``gan_<setting>_<name>.json`` (the same, readable, with the training log) into
``--out`` (default: the committed assets, ``python/ctfp/attribution/assets/``), plus
``samples_<setting>.png`` (8 samples per generator, one row each, 64x64).

On the CPU this is slow (about 0.3-1 s per iteration at batch 32, width 16, on a shared core), so
the committed generators are trained far shorter than a GPU would allow; the docs say so.

Usage::

    nice -n 19 python benches/train_attribution_gans.py --setting 2025 --budget-s 1500
    nice -n 19 python benches/train_attribution_gans.py --setting 2024 --budget-s 1200
    python benches/train_attribution_gans.py --quick --out /tmp/gans      # seconds, a check
    python benches/train_attribution_gans.py --device cuda --out OUT      # full length on a GPU
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("ctfp") is None:  # a checkout without ctfp installed
    sys.path.insert(0, str(REPO / "python"))

#: training settings recorded with every checkpoint
TRAINING: dict[str, Any] = {
    "iterations": 3000,
    "batch_size": 32,
    "lr": 2e-4,
    "betas": [0.0, 0.9],
    "ema_decay": 0.999,
    "log_every": 100,
}


def main(argv: list[str] | None = None) -> int:
    import torch

    from ctfp.attribution import gans
    from ctfp.imageclef.realistic import downsample, generate, sha256

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--setting", choices=["2025", "2024", "all"], default="all")
    ap.add_argument("--out", type=Path, default=gans.ASSETS)
    ap.add_argument("--budget-s", type=float, default=1800.0, help="for the whole run")
    ap.add_argument("--iterations", type=int, default=TRAINING["iterations"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--device", default="cpu",
        help="cpu (default: bit-reproducible) or cuda (full length in minutes; gpu_check.sh)",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="tiny networks and data, a check")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    training = {**TRAINING, "iterations": args.iterations}
    settings = ["2025", "2024"] if args.setting == "all" else [args.setting]
    specs = [s for name in settings for s in gans.SETTINGS[name]]
    if args.quick:
        specs = [replace(s, n_train=8, width=4, nz=16) for s in specs]
        training.update(iterations=10, batch_size=4, log_every=5)
    t_start = time.perf_counter()
    samples: dict[str, list[np.ndarray]] = {}
    for k, spec in enumerate(specs):
        left = args.budget_s - (time.perf_counter() - t_start)
        share = max(30.0, left / (len(specs) - k) - 10.0)
        t0 = time.perf_counter()
        real = spec_images = gans.training_images(spec, size=256)
        small = downsample(spec_images, 64)
        print(
            f"{spec.setting}/{spec.name} ({spec.arch}, seed {spec.seed}): {len(real)} slices, "
            f"budget {share:.0f} s",
            flush=True,
        )
        res = gans.train_generator(
            small,
            spec,
            iterations=training["iterations"],
            budget_s=share,
            batch_size=training["batch_size"],
            lr=training["lr"],
            betas=tuple(training["betas"]),
            ema_decay=training["ema_decay"],
            log_every=training["log_every"],
            log=lambda m: print(m, flush=True),
            device=args.device,
        )
        meta = {
            "training": training,
            "iterations_done": res.iterations,
            "stopped_early": res.stopped_early,
            "train_seconds": res.seconds,
            "threads": args.threads,
            "device": args.device
            if args.device == "cpu"
            else f"{args.device} ({torch.cuda.get_device_name(torch.device(args.device))})",
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "training_slices_sha256": sha256(real),
            "patients": [[p, s] for p, s in gans.patients_of(spec)],
            "history": res.history,
        }
        path = gans.save_checkpoint(
            res.generator, spec, gans.checkpoint_path(spec.name, spec.setting, args.out), meta
        )
        readable = {k: v for k, v in meta.items() if k != "patients"}
        readable["spec"] = asdict(spec)
        readable["patients_first_last"] = [meta["patients"][0], meta["patients"][-1]]
        path.with_suffix(".json").write_text(json.dumps(readable, indent=1) + "\n")
        samples.setdefault(spec.setting, []).append(generate(res.generator, 8, 99, size=64))
        print(
            f"  -> {path} ({res.iterations} iterations, {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    from PIL import Image

    for setting, rows in samples.items():
        grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
        Image.fromarray(grid).save(args.out / f"samples_{setting}.png")
    print(f"done in {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
