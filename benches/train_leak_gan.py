"""Train the realistic leak benchmark's generators (``ctfp.imageclef.realistic``), once.

For each regime (``few-hundred``: 200 training slices; ``thousand``: 1,000) this renders the
synthetic slices, trains the DCGAN-class generator (spectral-norm discriminator, hinge loss, EMA)
with ``SETTINGS``, keeps EMA snapshots at several iteration counts, measures how strongly each
snapshot memorises (members' against non-members' L2 distance at 64x64 to the nearest of 2,000
samples, ROC-AUC) and writes, into ``--out``:

- ``leak_gan_<regime>.pt``: every snapshot of the regime (fp16 state dicts, about 2.4 MB each)
  with the spec, settings, hashes of the slices and the measures;
- ``leak_gan_<regime>.json``: the same settings, the training log and the measures, readable;
- ``samples_<regime>.png``: 8 members (top), 8 samples of the last snapshot (middle) and each
  sample's nearest member (bottom), at 64x64 shown 2x;
- ``summary.json``: memorisation AUC per regime and snapshot, timings.

Usage::

    python benches/train_leak_gan.py --out out/leak_gan --device cuda     # both regimes, < 4 min
    python benches/train_leak_gan.py --out out/leak_gan --quick           # tiny, CPU, seconds
    python benches/train_leak_gan.py --install out/leak_gan --pick auto   # commit-ready assets

``--budget-s`` (default 240) bounds the whole run: each regime gets an equal share of what is
left when it starts and stops early if it runs out (recording the iterations done; the last
iteration reached always gets a snapshot). ``--install DIR`` copies one snapshot per regime
(``--pick REGIME=ITERATION``, or ``auto``: the few-hundred snapshot whose memorisation AUC is
nearest 0.65, preferring 0.60-0.70, and the same iteration for the thousand regime) into
``python/ctfp/imageclef/assets/`` as ``leak_gan_<regime>.pt`` + ``.json``;
``--pick REGIME=A+B`` keeps snapshot ``B`` in the same file beside the default ``A`` (the
committed few-hundred asset holds 3000, the default, and 5000, which memorises more).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

#: the benchmark's training settings (both regimes); recorded with every checkpoint
SETTINGS: dict[str, Any] = {
    "iterations": 10_000,
    "snapshots": [2000, 3000, 5000, 7000, 10_000],
    "batch_size": 64,
    "lr": 2e-4,
    "betas": [0.0, 0.9],
    "ema_decay": 0.999,
    "n_dis": 1,
    "nz": 128,
    "width": 32,
    "seed": 0,
    "log_every": 500,
    "memorisation": {"n_samples": 2000, "seed": 12345},
}
#: ``--quick``: a tiny network on tiny data, to check the script end to end on a CPU
QUICK: dict[str, Any] = {
    **SETTINGS,
    "iterations": 30,
    "snapshots": [10, 20, 30],
    "batch_size": 8,
    "nz": 16,
    "width": 4,
    "log_every": 10,
    "memorisation": {"n_samples": 64, "seed": 12345},
}
QUICK_TRAIN = {"few-hundred": 12, "thousand": 20}
#: memorisation AUC the few-hundred regime aims at (the project's target band, 0.60-0.70)
TARGET = (0.60, 0.70)
#: seconds kept back per regime for measuring snapshots and writing files
RESERVE_S = 20.0
REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "python" / "ctfp" / "imageclef" / "assets"


def say(text: str) -> None:
    print(text, flush=True)


def _specs(args: argparse.Namespace) -> dict[str, Any]:
    from ctfp.imageclef.realistic import REGIMES, RealisticSpec

    specs = {}
    for regime in args.regimes.split(","):
        if regime not in REGIMES:
            raise SystemExit(f"--regimes: expected {', '.join(REGIMES)}, found {regime!r}")
        spec = (
            RealisticSpec.small(regime, n_train=QUICK_TRAIN[regime])
            if args.quick
            else REGIMES[regime]
        )
        if regime in args.n_train:
            spec = replace(spec, n_train=args.n_train[regime])
        specs[regime] = spec
    return specs


def _environment(device: Any) -> dict[str, Any]:
    import torch

    import ctfp

    env = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "ctfp": getattr(ctfp, "__version__", "?"),
        "device": str(device),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _grid(members: np.ndarray, samples: np.ndarray, path: Path) -> None:
    """Members (top), samples (middle), each sample's nearest member (bottom), 2x."""
    from PIL import Image

    from ctfp.imageclef.realistic import downsample

    k = min(8, len(members), len(samples))
    m = downsample(members)
    s = downsample(samples[:k])
    a = m.reshape(len(m), -1).astype(np.float64)
    b = s.reshape(k, -1).astype(np.float64)
    nearest = ((a * a).sum(1)[None, :] - 2.0 * (b @ a.T)).argmin(1)
    rows = [np.concatenate(list(r), axis=1) for r in (m[:k], s, m[nearest])]
    grid = np.kron(np.concatenate(rows, axis=0), np.ones((2, 2), np.uint8))
    Image.fromarray(grid).save(path)


def train_regime(
    regime: str,
    spec: Any,
    images: dict[tuple[int, int], np.ndarray],
    settings: dict[str, Any],
    args: argparse.Namespace,
    device: Any,
    budget_s: float,
) -> dict[str, Any]:
    """Train one regime, measure its snapshots, write its files; return its record."""
    from ctfp.imageclef.realistic import (
        downsample,
        generate,
        load_generator,
        make_checkpoint,
        memorisation_auc,
        plan,
        save_checkpoint,
        sha256,
        shown_slices,
        train_leak_gan,
    )

    out = Path(args.out)
    who = plan(spec)
    members = np.stack([images[s] for s in who["members"]])
    non_members = np.stack([images[s] for s in who["non_members"]])
    shown_members = members[who["dev_used"] + who["test_used"]]
    shown = np.stack([images[s] for s in shown_slices(spec, who)])
    train64 = downsample(members)
    hashes = {"train_sha256": sha256(train64), "shown_real_sha256": sha256(shown)}
    say(
        f"[{regime}] {spec.n_train} training slices, {spec.n_non_members} non-members; "
        f"{settings['iterations']} iterations at batch {settings['batch_size']}, "
        f"training budget {budget_s:.0f} s"
    )
    res = train_leak_gan(
        train64,
        iterations=settings["iterations"],
        batch_size=settings["batch_size"],
        seed=settings["seed"],
        device=device,
        lr=settings["lr"],
        betas=tuple(settings["betas"]),
        ema_decay=settings["ema_decay"],
        n_dis=settings["n_dis"],
        nz=settings["nz"],
        width=settings["width"],
        snapshots=settings["snapshots"],
        budget_s=budget_s,
        log_every=settings["log_every"],
        log=say,
    )
    ms_per_it = 1000.0 * (res.seconds - res.snapshot_seconds) / max(res.iterations, 1)
    say(
        f"[{regime}] trained {res.iterations} iterations in {res.seconds:.1f} s "
        f"({ms_per_it:.2f} ms per iteration; {res.snapshot_seconds:.1f} s of snapshots)"
        f"{' (budget ran out)' if res.stopped_early else ''}"
    )
    meta = {
        "regime": regime,
        "spec": asdict(spec),
        "settings": settings,
        "hashes": hashes,
        "environment": _environment(device),
        "training": {
            "iterations_requested": settings["iterations"],
            "iterations_done": res.iterations,
            "stopped_early": res.stopped_early,
            "budget_s": round(budget_s, 1),
            "seconds": res.seconds,
            "snapshot_seconds": res.snapshot_seconds,
            "ms_per_iteration": round(ms_per_it, 3),
            "history": res.history,
        },
        "command": " ".join(sys.argv),
    }
    ckpt = make_checkpoint(
        spec, res.snapshots, nz=settings["nz"], width=settings["width"], meta=meta
    )
    mem = settings["memorisation"]
    rows = []
    last = None
    for key, snap in ckpt["snapshots"].items():
        t = time.perf_counter()
        # measured on the stored (fp16-rounded) weights: what a user of the file gets
        g, _ = load_generator(ckpt, iteration=int(key), device=device)
        samples = generate(g, mem["n_samples"], mem["seed"], size=64)
        m_all = memorisation_auc(samples, members, non_members, details=True)
        m_shown = memorisation_auc(samples, shown_members, non_members, details=True)
        snap["meta"]["memorisation"] = {
            "all_members": m_all,
            "shown_members": m_shown,
            "n_samples": mem["n_samples"],
            "sample_seed": mem["seed"],
            "size": 64,
            "distance": "L2 of grey levels, nearest sample",
        }
        rows.append({"iteration": int(key), "auc": m_all["auc"], "auc_shown": m_shown["auc"]})
        say(
            f"[{regime}] snapshot {key}: memorisation AUC {m_all['auc']:.3f} (all "
            f"{m_all['members']} members), {m_shown['auc']:.3f} (the "
            f"{m_shown['members']} shown); mean nearest distance members "
            f"{m_all['mean_nearest_member']:.1f}, non-members "
            f"{m_all['mean_nearest_non_member']:.1f} ({time.perf_counter() - t:.1f} s)"
        )
        last = samples
    path = save_checkpoint(ckpt, out / f"leak_gan_{regime}.pt")
    size = path.stat().st_size
    say(f"[{regime}] wrote {path} ({size / 1e6:.1f} MB, {len(ckpt['snapshots'])} snapshots)")
    if size > 16e6:
        say(f"[{regime}] WARNING: {path.name} is over 16 MB")
    assert last is not None
    _grid(members, last, out / f"samples_{regime}.png")
    record = {
        **meta,
        "snapshots": [
            {"iteration": int(k), "memorisation": s["meta"]["memorisation"]}
            for k, s in ckpt["snapshots"].items()
        ],
        "checkpoint": {"file": path.name, "bytes": size},
    }
    (out / f"leak_gan_{regime}.json").write_text(json.dumps(record, indent=1) + "\n")
    return {"rows": rows, "training": meta["training"], "file_bytes": size}


def train(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    import torch

    from ctfp._util import resolve_device
    from ctfp.imageclef.realistic import plan, render

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        say(f"train_leak_gan: {exc}")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = json.loads(json.dumps(QUICK if args.quick else SETTINGS))
    if args.iterations is not None:
        settings["iterations"] = args.iterations
    if args.snapshots is not None:
        settings["snapshots"] = args.snapshots
    settings["snapshots"] = sorted(
        {s for s in settings["snapshots"] if s < settings["iterations"]} | {settings["iterations"]}
    )
    specs = _specs(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say(
        f"train_leak_gan: regimes {', '.join(specs)} on {device}; settings {json.dumps(settings)}; "
        f"budget {args.budget_s:.0f} s"
    )

    # every slice any regime needs, rendered once (regimes share their non-members, and the
    # few-hundred members are among the thousand's)
    t = time.perf_counter()
    by_seed: dict[tuple[int, int], set[tuple[int, int]]] = {}
    for spec in specs.values():
        who = plan(spec)
        by_seed.setdefault((spec.size, spec.data_seed), set()).update(
            who["members"] + who["non_members"]
        )
    if len(by_seed) > 1:
        raise SystemExit("regimes with different slice sizes or data seeds: train them apart")
    images: dict[tuple[int, int], np.ndarray] = {}
    for (size, seed), wanted in by_seed.items():
        todo = sorted(wanted)
        for s, img in zip(
            todo, render(todo, size=size, seed=seed, n_jobs=args.n_jobs), strict=True
        ):
            images[s] = img
    say(f"rendered {len(images)} synthetic slices in {time.perf_counter() - t:.1f} s")

    summary: dict[str, Any] = {"settings": settings, "regimes": {}}
    names = list(specs)
    for i, regime in enumerate(names):
        left = len(names) - i
        share = (deadline - time.perf_counter() - RESERVE_S * left) / left
        if share < 5:
            say(f"[{regime}] skipped: {share:.0f} s of the budget left for it")
            summary["regimes"][regime] = {"skipped": "time budget"}
            continue
        summary["regimes"][regime] = train_regime(
            regime, specs[regime], images, settings, args, device, share
        )
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    say("\nmemorisation AUC, all members vs non-members (shown members only, in brackets):")
    for regime, rec in summary["regimes"].items():
        if "rows" in rec:
            cells = ", ".join(
                f"{r['iteration']}: {r['auc']:.3f} ({r['auc_shown']:.3f})" for r in rec["rows"]
            )
            say(f"  {regime}: {cells}")
    say(f"total {summary['seconds']:.0f} s; files in {out}:")
    for p in sorted(out.iterdir()):
        say(f"  {p.name} {p.stat().st_size / 1e6:.2f} MB")
    return 0


def _auto_pick(records: dict[str, dict[str, Any]], fixed: dict[str, int]) -> dict[str, int]:
    """``fixed`` picks, and for the other regimes: the few-hundred snapshot whose AUC is nearest
    the middle of TARGET (preferring those inside it); the same iteration as few-hundred's pick
    for the other regimes where they have it, else their last."""
    picks = dict(fixed)
    mid = sum(TARGET) / 2
    base = records.get("few-hundred")
    if base is not None and "few-hundred" not in picks:
        snaps = base["snapshots"]
        inside = [
            s for s in snaps if TARGET[0] <= s["memorisation"]["all_members"]["auc"] <= TARGET[1]
        ]
        pool = inside or snaps
        best = min(pool, key=lambda s: abs(s["memorisation"]["all_members"]["auc"] - mid))
        picks["few-hundred"] = best["iteration"]
    for regime, rec in records.items():
        if regime in picks:
            continue
        have = [s["iteration"] for s in rec["snapshots"]]
        want = picks.get("few-hundred")
        picks[regime] = want if want in have else max(have)
    return picks


def install(args: argparse.Namespace) -> int:
    """Copy the picked snapshot of each regime into the package's assets folder."""
    from ctfp.imageclef.realistic import load_checkpoint, save_checkpoint

    src = Path(args.install)
    records = {}
    for p in sorted(src.glob("leak_gan_*.json")):
        rec = json.loads(p.read_text())
        records[rec["regime"]] = rec
    if not records:
        say(f"--install {src}: no leak_gan_<regime>.json there; train first")
        return 2
    fixed: dict[str, int] = {}
    more: dict[str, list[int]] = {}  # snapshots kept beside the default one
    for item in args.pick or ["auto"]:
        if item != "auto":
            regime, _, its = item.partition("=")
            parts = its.split("+")
            if not all(p.isdigit() for p in parts):
                say(f"--pick {item}: expected REGIME=ITERATION[+ITERATION...] or auto")
                return 2
            fixed[regime] = int(parts[0])
            more[regime] = [int(p) for p in parts[1:]]
    picks = _auto_pick(records, fixed) if "auto" in (args.pick or ["auto"]) else fixed
    assets = Path(args.assets)
    assets.mkdir(parents=True, exist_ok=True)
    for regime, it in picks.items():
        if regime not in records:
            say(f"--pick {regime}={it}: no such regime in {src} ({', '.join(records)})")
            return 2
        ckpt = load_checkpoint(src / f"leak_gan_{regime}.pt")
        keep = [it, *more.get(regime, [])]
        missing = [i for i in keep if str(i) not in ckpt["snapshots"]]
        if missing:
            say(f"--pick {regime}={missing[0]}: no such snapshot ({', '.join(ckpt['snapshots'])})")
            return 2
        ckpt["snapshots"] = {str(i): ckpt["snapshots"][str(i)] for i in keep}
        ckpt["meta"]["installed_snapshot"] = it  # the default (realistic.default_snapshot)
        ckpt["meta"]["installed_snapshots"] = keep
        path = save_checkpoint(ckpt, assets / f"leak_gan_{regime}.pt")
        rec = {**records[regime], "installed_snapshot": it, "installed_snapshots": keep}
        rec["checkpoint"] = {"file": path.name, "bytes": path.stat().st_size}
        (assets / f"leak_gan_{regime}.json").write_text(json.dumps(rec, indent=1) + "\n")
        auc = next(
            s["memorisation"]["all_members"]["auc"]
            for s in rec["snapshots"]
            if s["iteration"] == it
        )
        also = f", also {', '.join(map(str, keep[1:]))}" if len(keep) > 1 else ""
        say(
            f"installed {regime} snapshot {it} (memorisation AUC {auc:.3f}{also}): {path} "
            f"({rec['checkpoint']['bytes'] / 1e6:.1f} MB)"
        )
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers N,N,..., found {text!r}")
    return values


def _regime_int(text: str) -> tuple[str, int]:
    regime, sep, n = text.partition("=")
    if not sep or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected REGIME=N with N >= 1, found {text!r}")
    return regime, int(n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (training)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--regimes", default="few-hundred,thousand", help="comma-separated regimes")
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help=f"per regime (default {SETTINGS['iterations']})",
    )
    p.add_argument(
        "--snapshots",
        type=_int_list,
        default=None,
        metavar="N,N,...",
        help="iterations to keep EMA snapshots at (default "
        f"{','.join(map(str, SETTINGS['snapshots']))}; the last iteration always)",
    )
    p.add_argument(
        "--n-train",
        type=_regime_int,
        action="append",
        default=[],
        metavar="REGIME=N",
        help="training slices of a regime (default: few-hundred=200, thousand=1000)",
    )
    p.add_argument(
        "--budget-s", type=float, default=240.0, help="seconds for the whole run (default 240)"
    )
    p.add_argument(
        "--n-jobs", type=int, default=None, help="processes rendering slices (default: up to 8)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny data and network (CPU, seconds)")
    p.add_argument(
        "--install", metavar="DIR", help="install snapshots from a training output folder"
    )
    p.add_argument(
        "--pick",
        action="append",
        metavar="REGIME=ITERATION[+ITERATION]|auto",
        help="with --install: the snapshot of each regime (default: auto); "
        "REGIME=A+B keeps snapshot B too (A stays the default)",
    )
    p.add_argument(
        "--assets", default=str(ASSETS), help=f"with --install: where to (default {ASSETS})"
    )
    args = p.parse_args(argv)
    args.n_train = dict(args.n_train)
    if args.install:
        return install(args)
    if not args.out:
        p.error("--out is required for training")
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
