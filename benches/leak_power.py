"""The leak test's power: how often it finds the realistic benchmark's leak as evidence shrinks
(docs/leaktest.md, "Power").

    python benches/leak_power.py [--replicates 20] [--generated 10000,3000,1000,300]
        [--dev 100,50,20] -> docs/leaktest_power.json, .md, .png

The leaking generator: the realistic benchmark's few-hundred regime at iteration 5000
(memorisation AUC 0.709; ctfp.imageclef.realistic), trained on patients 200-399 (one slice each).
A replicate of a cell (``n`` generated, ``d`` development images per class) draws ``d`` of the
200 members as "used" and ``d`` of the 200 non-members (patients 0-199, never seen) as "not
used", and ``n`` generated images at random from a pool of 20,000 samples of the generator
(latent seed 1, at 64x64 straight from the generator: the presets compare at 64x64). Real
slices rendered at 256x256 and area-averaged to 64x64, as the generator was trained.

Methods: the presets sim-pixel, sim-ssim, sim-fused and base-ganleaks, ``run_leak_test(...,
control=False)`` with 999 relabelings (199 for sim-fused), alpha 0.05; and the family of the four
by Holm. Detection rate = share of replicates with p <= 0.05, with a Clopper-Pearson 95 %
interval. Cells run from the cheapest up; the JSON is rewritten after each cell, so a run cut
short keeps the cells it finished (the table says which were not run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from leak_size import (  # noqa: E402
    ALPHA,
    METHODS,
    ROOT,
    generated_images,
    interval,
    leak_p,
    prepared,
    slices,
)

GENERATOR = ("few-hundred", 5000)
POOL = 20_000
MEMBERS = tuple(range(200, 400))
NON_MEMBERS = tuple(range(0, 200))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ctfp.membership.leaktest import family_verdict

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    gens = [int(v) for v in args.generated.split(",")]
    devs = [int(v) for v in args.dev.split(",")]
    pool = generated_images(*GENERATOR, POOL)
    members = slices(list(MEMBERS), (0,))
    non = slices(list(NON_MEMBERS), (0,))
    cells = sorted(((n, d) for n in gens for d in devs), key=lambda c: (c[0] * c[1], c))
    out: dict[str, Any] = {
        "command": "python benches/leak_power.py " + " ".join(sys.argv[1:]),
        "generator": f"{GENERATOR[0]}@{GENERATOR[1]}",
        "alpha": ALPHA,
        "replicates": args.replicates,
        "generated": gens,
        "dev_per_class": devs,
        "permutations": {"sim-fused": 199, "others": 999},
        "cells": {},
        "not_run": [f"{n}/{d}" for n, d in cells],
    }
    for n, d in cells:
        if args.budget_s and time.perf_counter() - t0 > args.budget_s:
            break
        tc = time.perf_counter()
        p: dict[str, list[float]] = {k: [] for k in METHODS}
        aucs: dict[str, list[float]] = {k: [] for k in METHODS}
        fam = []
        for r in range(args.replicates):
            rng = np.random.default_rng([0x90E7, n, d, r])
            gen = pool[np.sort(rng.choice(POOL, n, replace=False))]
            mi = rng.choice(len(members), d, replace=False)
            ni = rng.choice(len(non), d, replace=False)
            images = np.concatenate([members[mi], non[ni]])
            y = np.array([1] * d + [0] * d)
            res = {}
            for k in METHODS:
                res[k] = leak_p(k, images, y, prepared(k, gen), None, r)
                p[k].append(res[k]["p_value"])
                aucs[k].append(res[k]["auc"])
            fam.append(int(family_verdict(res, alpha=ALPHA)["verdict"] == "leak"))
        cell: dict[str, Any] = {}
        for k in METHODS:
            hits = int((np.array(p[k]) <= ALPHA).sum())
            cell[k] = {
                "detected": hits,
                "replicates": args.replicates,
                "rate": round(hits / args.replicates, 4),
                "ci95": interval(hits, args.replicates),
                "mean_auc": round(float(np.mean(aucs[k])), 4),
                "median_p": round(float(np.median(p[k])), 4),
            }
        hits = int(sum(fam))
        cell["family (Holm)"] = {
            "detected": hits,
            "replicates": args.replicates,
            "rate": round(hits / args.replicates, 4),
            "ci95": interval(hits, args.replicates),
        }
        cell["seconds"] = round(time.perf_counter() - tc, 1)
        out["cells"][f"{n}/{d}"] = cell
        out["not_run"].remove(f"{n}/{d}")
        out["seconds"] = round(time.perf_counter() - t0, 1)
        write(out, args.out)
        print(f"cell {n}/{d}: {cell['seconds']} s", flush=True)
    return out


def write(res: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(res))
    figure(res, path.with_suffix(".png"))


def markdown(res: dict[str, Any]) -> str:
    names = [*METHODS, "family (Holm)"]
    lines = [
        "<!-- written by benches/leak_power.py; do not edit -->",
        f"Detection rate (p <= {res['alpha']}) on {res['generator']}, {res['replicates']} "
        f"replicates per cell (Clopper-Pearson 95 % interval; mean ROC-AUC in brackets).",
        "",
        "| generated | dev per class | " + " | ".join(names) + " |",
        "|---:|---:|" + "---|" * len(names),
    ]
    for n in res["generated"]:
        for d in res["dev_per_class"]:
            c = res["cells"].get(f"{n}/{d}")
            if c is None:
                lines.append(f"| {n} | {d} | " + " | ".join("not run" for _ in names) + " |")
                continue
            vals = []
            for k in names:
                v = c[k]
                lo, hi = v["ci95"]
                auc = f" [{v['mean_auc']:.2f}]" if "mean_auc" in v else ""
                vals.append(f"{v['rate']:.2f} ({lo:.2f}-{hi:.2f}){auc}")
            lines.append(f"| {n} | {d} | " + " | ".join(vals) + " |")
    if res["not_run"]:
        lines += ["", f"Not run (time): {', '.join(res['not_run'])}."]
    return "\n".join(lines) + "\n"


def figure(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*METHODS, "family (Holm)"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), sharey=True)
    for ax, k in zip(axes, names, strict=True):
        for d in res["dev_per_class"]:
            xs, ys, lo, hi = [], [], [], []
            for n in sorted(res["generated"]):
                c = res["cells"].get(f"{n}/{d}")
                if c is None:
                    continue
                xs.append(n)
                ys.append(c[k]["rate"])
                lo.append(c[k]["rate"] - c[k]["ci95"][0])
                hi.append(c[k]["ci95"][1] - c[k]["rate"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=2, label=f"{d} + {d}")
        ax.axhline(res["alpha"], color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("generated images")
        ax.set_ylim(-0.03, 1.03)
    axes[0].set_ylabel("detection rate (p <= 0.05)")
    axes[-1].legend(title="development", fontsize=7, title_fontsize=7, loc="lower right")
    fig.suptitle(f"Leak test power on {res['generator']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=20)
    ap.add_argument("--generated", default="10000,3000,1000,300")
    ap.add_argument("--dev", default="100,50,20")
    ap.add_argument("--budget-s", type=float, default=0.0, help="stop starting cells after this")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "leaktest_power.json")
    res = run(ap.parse_args(argv))
    print(markdown(res))


if __name__ == "__main__":
    main()
