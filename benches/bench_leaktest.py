"""What the exact leak test costs against scoring the development images once (docs/leaktest.md,
"Cost"; the target: at most 2x for one preset on 100 + 100 development images and 10,000
generated images).

    python benches/bench_leaktest.py [--methods sim-pixel,base-ganleaks,sim-ssim,sim-fused]
        [--repeats 3] -> docs/leaktest_cost.json, docs/leaktest_cost.md (rows of other methods
        already there are kept)

Data: the realistic benchmark's few-hundred generator at iteration 5000, its first 10,000
samples of latent seed 1 at 64x64 (benches/leak_size.py's cache), 100 of its members and 100
non-members (one slice per patient, 64x64). Per preset, single-threaded (``n_jobs=1``; the
machine's cores are shared), the median of ``--repeats`` runs of:

- ``score once``: what the runner does before its leak test: fit the preset on the development
  images with the generated images (the generated-set index built) and score the development
  images;
- ``leak test``: ``run_leak_test(preset, dev, y, generated=<the fitted index>)`` as the runner
  calls it (default relabelings and the shuffled no-generator control of up to 2,000 images);
- ``leak test, no control``: the same with ``control=False``;
- ``earlier test``: ``test="mannwhitney"`` (cross-fitted, 5 folds; its level is not exact).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from leak_size import ROOT, estimator_of, generated_images, slices  # noqa: E402

N_GENERATED = 10_000
N_DEV = 100


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def measure(key: str, dev: np.ndarray, y: np.ndarray, gen: np.ndarray, repeats: int) -> dict:
    from ctfp.membership.leaktest import reusable_generated, run_leak_test

    def score_once() -> Any:
        est = estimator_of(key)
        est.fit(dev, y, generated=gen)
        est.score_samples(dev)
        return est

    t_score, fitted = timed(score_once, repeats)
    reuse = reusable_generated(fitted)

    def leak(**kw: Any) -> Any:
        return lambda: run_leak_test(estimator_of(key), dev, y, generated=reuse, **kw)

    t_leak, r = timed(leak(), repeats)
    t_noctrl, _ = timed(leak(control=False), repeats)
    t_old, old = timed(leak(test="mannwhitney"), 1)
    return {
        "score_once_s": round(t_score, 3),
        "leak_test_s": round(t_leak, 3),
        "leak_test_no_control_s": round(t_noctrl, 3),
        "earlier_test_s": round(t_old, 3),
        "ratio": round(t_leak / t_score, 3),
        "ratio_no_control": round(t_noctrl / t_score, 3),
        "pipeline": r["pipeline"],
        "n_permutations": r["n_permutations"],
        "p_value": r["p_value"],
        "p_value_earlier_test": old["p_value"],
        "verdict": r["verdict"],
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "<!-- written by benches/bench_leaktest.py; do not edit -->",
        f"{res['n_dev']} + {res['n_dev']} development images, {res['n_generated']} generated, "
        "64x64, one thread; median of the row's repeats (earlier test: 1 run).",
        "",
        "| preset | pipeline | relabelings | repeats | score once (s) | leak test (s) | ratio | "
        "no control (s) | ratio | earlier test (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, v in res["methods"].items():
        lines.append(
            f"| {k} | {v['pipeline']} | {v['n_permutations']} | {v['repeats']} | "
            f"{v['score_once_s']:.2f} | "
            f"{v['leak_test_s']:.2f} | {v['ratio']:.2f} | {v['leak_test_no_control_s']:.2f} | "
            f"{v['ratio_no_control']:.2f} | {v['earlier_test_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="sim-pixel,base-ganleaks,sim-ssim,sim-fused")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "leaktest_cost.json")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    gen = generated_images("few-hundred", 5000, 20_000)[:N_GENERATED]
    dev = np.concatenate(
        [slices(list(range(200, 400)), (0,))[:N_DEV], slices(list(range(200)), (0,))[:N_DEV]]
    )
    y = np.array([1] * N_DEV + [0] * N_DEV)
    res: dict[str, Any] = {
        "command": "python benches/bench_leaktest.py " + " ".join(sys.argv[1:]),
        "n_dev": N_DEV,
        "n_generated": N_GENERATED,
        "repeats": a.repeats,
        "methods": {},
    }
    if a.out.is_file():  # a run of other methods keeps the rows of the earlier ones
        res["methods"] = json.loads(a.out.read_text()).get("methods", {})
    for key in a.methods.split(","):
        res["methods"][key] = {"repeats": a.repeats, **measure(key, dev, y, gen, a.repeats)}
        print(key, res["methods"][key], flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
