"""The leak test's size: how often it says "leak" on true nulls (docs/leaktest.md, "Size").

    python benches/leak_size.py [--replicates 201] [--generated 1000]
        -> docs/leaktest_size.json, docs/leaktest_size.md
    python benches/leak_size.py --nulls subsets --merge
        -> the same files, with the rows of the attribution benchmark's subset generators added
    python benches/leak_size.py --nulls subsets --merge --first 1000 --replicates 600 \
        --only "three slices" --methods sim-pixel
        -> a confirmation on fresh replicates (seeds 1000-1599) of one setting and method

True nulls from the realistic benchmark's committed generators (ctfp.imageclef.realistic): the
development images are synthetic patients that **no** generator of the measurement ever saw,
patients 0-199 (every regime's non-members) and 1200-1399 (beyond the thousand regime's members
200-1199; few-hundred's are 200-399), rendered at 256x256 by ctfp.data.synthetic and
area-averaged to 64x64 as the generators were trained. "Used" and "not used" are assigned at
random. Three generators: few-hundred at iterations 3000 and 5000 and thousand at 3000, each
``--generated`` images (latent seed 1, straight from the generator at 64x64: the presets
compare at 64x64, the benchmark's 256x256 images are these upscaled bicubically).

Settings (``--replicates`` replicates each, a quarter of them for the contrast, cycling over
the three generators; a replicate draws its patients and its labels with its own seed):

- ``one slice``: 20 + 20 patients, one slice each (at a position drawn per patient);
- ``three slices``: 10 + 10 patients, slices at position -1, 0, +1 (near-copies of each other),
  ``groups=`` the patients (relabelings move whole patients);
- ``three slices, no groups``: the same images without ``groups=`` (images relabelled one by one:
  not what the null allows, shown for contrast).

``--nulls subsets``: the generators are instead the attribution benchmark's five 2025 subset
generators (ctfp.attribution.gans, one architecture, each trained on its own 200 patients among
50,000-50,999: none of the null patients), replicates cycling over s1-s5, the settings ``one
slice`` and ``three slices`` (suffixed "(subset generators)"); ``--merge`` keeps the rows
already in the output files.

Methods: the presets sim-pixel, sim-ssim, sim-fused and base-ganleaks (ctfp.imageclef.methods),
``run_leak_test(..., control=False)`` (the control can only turn a rejection into "inconclusive",
so the main test's rejection rate bounds the false "leak" rate), 999 relabelings (99 for
sim-fused, whose combiner is refitted per relabelling; resolution 1/100), alpha 0.05; and the
family of the four by Holm. Rates with Clopper-Pearson 95 % intervals (scipy.stats.binomtest).
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

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "out" / "leak_bench"
METHODS = ("sim-pixel", "sim-ssim", "sim-fused", "base-ganleaks")
#: generators of the null replicates: (regime, iteration) of the realistic benchmark's
NULL_GENERATORS = (("few-hundred", 3000), ("few-hundred", 5000), ("thousand", 3000))
#: or ("subset", name) of the attribution benchmark's 2025 setting (``--nulls subsets``)
SUBSET_GENERATORS = tuple(("subset", f"s{k}") for k in range(1, 6))
#: patients no committed generator saw
NULL_PATIENTS = tuple(range(0, 200)) + tuple(range(1200, 1400))
ALPHA = 0.05
#: relabelings of sim-fused (its combiner refitted each time): resolution 1/100, enough for
#: alpha 0.05 (the level is exact at any count; a finer p-value only costs time)
FUSED_PERMUTATIONS = 99
SLICE_POSITIONS = 40


def estimator_of(key: str) -> Any:
    """The preset ``key`` as an estimator, single-threaded (the machine is shared)."""
    from ctfp.imageclef.methods import similarity_method
    from ctfp.membership.estimators import make_estimator

    options = similarity_method(key).options
    return make_estimator(options, n_jobs=1, device="cpu", random_state=0)


def generated_images(regime: str, iteration: Any, n: int, seed: int = 1) -> np.ndarray:
    """``n`` samples of a committed generator at 64x64 (cached under out/leak_bench):
    ``(regime, iteration)`` of the realistic benchmark, or ``("subset", name)`` of the
    attribution benchmark's 2025 setting."""
    path = CACHE / f"gen_{regime}_{iteration}_{seed}_{n}.npy"
    if path.is_file():
        return np.load(path)
    import torch

    from ctfp.imageclef.realistic import generate, load_generator

    torch.set_num_threads(1)
    if regime == "subset":
        from ctfp.attribution import gans

        g = gans.load_generator(gans.checkpoint_path(str(iteration), "2025"))[0]
    else:
        g, _ = load_generator(regime=regime, iteration=iteration)
    out = generate(g, n, seed, size=64)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def slices(patients: list[int], offsets: tuple[int, ...], *, seed: int = 0) -> np.ndarray:
    """``uint8 (len(patients) * len(offsets), 64, 64)``: each patient's slices at its position
    (drawn as ctfp.imageclef.realistic.plan draws it) plus ``offsets``, rendered at 256 and
    area-averaged to 64, patient by patient; cached per patient set."""
    from ctfp.imageclef.realistic import _TAG_SLICE, downsample, render

    def position(p: int) -> int:
        ss = np.random.SeedSequence([_TAG_SLICE, seed, p])
        return int(np.random.Generator(np.random.PCG64(ss)).integers(SLICE_POSITIONS))

    key = f"{min(patients)}-{max(patients)}-{len(patients)}-{'_'.join(map(str, offsets))}"
    path = CACHE / f"real_{key}.npy"
    if path.is_file():
        return np.load(path)
    todo = [
        (p, int(np.clip(position(p) + o, 0, SLICE_POSITIONS - 1)))
        for p in patients
        for o in offsets
    ]
    out = downsample(render(todo, size=256, seed=seed, n_jobs=1), 64)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def prepared(key: str, generated: np.ndarray) -> Any:
    """What a fitted preset reuses as ``generated=`` (its index, built once per generator)."""
    from ctfp.membership.leaktest import reusable_generated

    est = estimator_of(key)
    tiny = generated[:4]
    est.fit(tiny, np.array([1, 0, 1, 0]), generated=generated)
    return reusable_generated(est)


def interval(k: int, n: int) -> list[float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def leak_p(key: str, images: np.ndarray, y: np.ndarray, reuse: Any, groups: Any, seed: int):
    from ctfp.membership.leaktest import run_leak_test

    b = FUSED_PERMUTATIONS if key == "sim-fused" else 999
    r = run_leak_test(
        estimator_of(key),
        images,
        y,
        generated=reuse,
        control=False,
        groups=groups,
        n_permutations=b,
        random_state=seed,
    )
    return r


SETTINGS = {
    "one slice": {"patients": 20, "offsets": (0,), "groups": True, "share": 1.0},
    "three slices": {"patients": 10, "offsets": (-1, 0, 1), "groups": True, "share": 1.0},
    # the contrast needs fewer replicates: its rate is far above alpha
    "three slices, no groups": {
        "patients": 10,
        "offsets": (-1, 0, 1),
        "groups": False,
        "share": 0.25,
    },
}


def run(
    replicates: int,
    n_generated: int,
    out_json: Path,
    out_md: Path,
    nulls: str = "membership",
    merge: bool = False,
    first: int = 0,
    only: str | None = None,
    methods: tuple[str, ...] = METHODS,
) -> dict[str, Any]:
    from ctfp.membership.leaktest import family_verdict

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    null_gens = NULL_GENERATORS if nulls == "membership" else SUBSET_GENERATORS
    settings = (
        SETTINGS
        if nulls == "membership"
        else {f"{k} (subset generators)": v for k, v in SETTINGS.items() if v["groups"]}
    )
    if only is not None:
        settings = {k: v for k, v in settings.items() if k.split(" (")[0].split(",")[0] == only}
    if first:  # fresh replicates: seeds first, first + 1, ... (a confirmation run)
        settings = {
            f"{k}, replicates {first}-{first + max(1, round(replicates * v['share'])) - 1}": v
            for k, v in settings.items()
        }
    if not settings:
        raise SystemExit(f"--only {only!r}: no such setting")
    family_row = tuple(methods) == METHODS
    pool = list(NULL_PATIENTS)
    real = {offs: slices(pool, offs) for offs in {s["offsets"] for s in settings.values()}}
    gens = {
        g: generated_images(*g, n_generated) for g in null_gens
    }  # the latent seed 1: the benchmark's development split's
    reuse = {(g, k): prepared(k, gens[g]) for g in null_gens for k in methods}
    print(f"prepared {time.perf_counter() - t0:.0f} s", flush=True)
    rows: dict[str, dict[str, list[float]]] = {s: {k: [] for k in methods} for s in settings}
    fam: dict[str, list[int]] = {s: [] for s in settings}
    for name, st in settings.items():
        offs, n_pat = st["offsets"], st["patients"]
        n_rep = max(1, round(replicates * st["share"]))
        for r in range(first, first + n_rep):
            g = null_gens[r % len(null_gens)]
            rng = np.random.default_rng([0x5A1E, r])
            pick = rng.choice(len(pool), 2 * n_pat, replace=False)
            ylab = rng.permutation([1] * n_pat + [0] * n_pat)
            m = len(offs)
            idx = (pick[:, None] * m + np.arange(m)[None, :]).ravel()
            images = real[offs][idx]
            y = np.repeat(ylab, m)
            groups = np.repeat(pick, m) if st["groups"] else None
            res = {}
            for k in methods:
                res[k] = leak_p(k, images, y, reuse[(g, k)], groups, r)
                rows[name][k].append(res[k]["p_value"])
            fam[name].append(int(family_verdict(res, alpha=ALPHA)["verdict"] == "leak"))
            if (r + 1 - first) % 20 == 0:
                print(
                    f"{name}: {r + 1 - first}/{n_rep} ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    table: dict[str, Any] = {}
    for name in settings:
        table[name] = {}
        for k in methods:
            p = np.array(rows[name][k])
            hits = int((p <= ALPHA).sum())
            table[name][k] = {
                "false_alarms": hits,
                "replicates": len(p),
                "rate": round(hits / len(p), 4),
                "ci95": interval(hits, len(p)),
                "mean_p": round(float(p.mean()), 4),
            }
        hits = int(sum(fam[name]))
        if not family_row:  # the family of the four only
            continue
        table[name]["family (Holm)"] = {
            "false_alarms": hits,
            "replicates": len(fam[name]),
            "rate": round(hits / len(fam[name]), 4),
            "ci95": interval(hits, len(fam[name])),
        }
    this = {
        "command": "python benches/leak_size.py " + " ".join(sys.argv[1:]),
        "nulls": nulls,
        "generators": [f"{a}@{b}" for a, b in null_gens],
        "settings": list(settings),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    result = {
        **this,
        "alpha": ALPHA,
        "replicates": replicates,
        "n_generated": n_generated,
        "settings": {k: {**v, "offsets": list(v["offsets"])} for k, v in settings.items()},
        "permutations": {"sim-fused": FUSED_PERMUTATIONS, "others": 999},
        "table": table,
        "p_values": rows,
        "runs": [this],
    }
    if merge and out_json.is_file():
        old = json.loads(out_json.read_text())
        runs = old.get("runs") or [
            {k: old[k] for k in ("command", "generators", "seconds") if k in old}
            | {"nulls": "membership", "settings": list(old["table"])}
        ]
        runs = [r for r in runs if not set(r["settings"]) <= set(settings)] + [this]
        result = {
            **old,
            "settings": {**old["settings"], **result["settings"]},
            "table": {**old["table"], **table},
            "p_values": {**old["p_values"], **rows},
            "runs": runs,
        }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1) + "\n")
    out_md.write_text(markdown(result))
    return result


def markdown(res: dict[str, Any]) -> str:
    runs = res.get("runs") or [{"generators": res["generators"], "seconds": res["seconds"],
                                "settings": list(res["table"])}]  # fmt: skip
    lines = [
        "<!-- written by benches/leak_size.py; do not edit -->",
        f"False 'leak' (p <= {res['alpha']}) on true nulls, {res['n_generated']} generated "
        f"images per generator, 64x64; Clopper-Pearson 95 % intervals. Replicates cycling over "
        + "; ".join(
            f"generators {', '.join(r['generators'])} ({', '.join(r['settings'])}; "
            f"{r['seconds']:.0f} s)"
            for r in runs
        )
        + ".",
        "",
        "| setting | method | false alarms | rate | 95 % interval |",
        "|---|---|---:|---:|---|",
    ]
    for name, per in res["table"].items():
        for k, v in per.items():
            lo, hi = v["ci95"]
            lines.append(
                f"| {name} | {k} | {v['false_alarms']} / {v['replicates']} | "
                f"{v['rate']:.3f} | {lo:.3f}-{hi:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=201)
    ap.add_argument("--generated", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "leaktest_size.json")
    ap.add_argument("--nulls", choices=["membership", "subsets"], default="membership")
    ap.add_argument("--merge", action="store_true", help="keep the rows already in --out")
    ap.add_argument(
        "--first", type=int, default=0,
        help="seed of the first replicate (a confirmation run on fresh replicates: e.g. 1000)",
    )  # fmt: skip
    ap.add_argument("--only", choices=["one slice", "three slices"], default=None)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated presets")
    a = ap.parse_args(argv)
    methods = tuple(m for m in a.methods.split(",") if m)
    if not set(methods) <= set(METHODS):
        ap.error(f"--methods: expected among {', '.join(METHODS)}")
    res = run(a.replicates, a.generated, a.out, a.out.with_suffix(".md"), a.nulls, a.merge,
              a.first, a.only, methods)  # fmt: skip
    print(markdown(res))


if __name__ == "__main__":
    main()
