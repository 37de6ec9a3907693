"""Choose the similarity presets by evidence: cross-validated development ROC-AUC on the realistic
benchmark (docs/benchmark.md, "Results").

Every setting is scored on the development split only (100 used + 100 not used, the development
split's generated images): each image's score comes from a fit on the other folds
(:func:`ctfp.membership.leaktest.cross_fit_scores`, 5 stratified folds, seed 0; the leak test's
out-of-fold scores), and the table ranks settings by the ROC-AUC of those scores. Test labels
are never read. ``calibration="real"`` settings get every development image as their
unlabelled real reference (``reference=``; each image is left out of its own score); with
``--test`` the test split's images join it (unlabelled, as the command-line runner has them: the
best ``k`` of a k-NN ratio depends on how many real images there are)::

    python benches/membership_presets.py --data out/bench_data_10k/few-hundred/development \\
        --test out/bench_data_10k/few-hundred/test --out docs/benchmark_presets.md

(the dataset comes from ``benches/membership_benchmark.py`` or
``ctfp.imageclef.realistic.write_realistic_dataset``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def grid(quick: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    sizes = (32, 64) if quick else (16, 32, 64, 128)
    stats: list[dict[str, Any]] = [
        {"statistic": "max"},
        {"statistic": "mean_k", "k": 3},
        {"statistic": "mean_k", "k": 5},
        {"statistic": "mean_k", "k": 10},
        {"statistic": "mean_k", "k": 20},
        {"statistic": "count"},
    ]
    for size in sizes:
        for st in stats:
            for cal in CALIBRATIONS:
                out.append({"measure": "pixel", "image_size": size, **st, "calibration": cal})
                if cal == "real" and st["statistic"] == "count" and size in (32, 64):
                    for q in (0.03, 0.1):  # a wider radius for the ratio of counts
                        out.append({**out[-1], "radius_quantile": q})
    for qt in ("shift", "shift-grid", "small"):
        for st in stats[:3]:
            out.append(
                {
                    "measure": "pixel",
                    "image_size": 64,
                    **st,
                    "calibration": None,
                    "query_transforms": qt,
                }
            )
    for size in (64,) if quick else (32, 64, 128):
        for st in stats[:5]:
            for cal in CALIBRATIONS:
                out.append({"measure": "ssim", "image_size": size, **st, "calibration": cal})
    for size in (32, 64, 128):  # the mean of the k closest images (statistic="centroid")
        for k in (3, 5, 10, 20):
            for cal in (None, "real"):
                out.append(_centroid(size, "pixel", k, cal))
    for k in (5, 10, 20):
        for cal in (None, "real"):
            out.append(_centroid(64, "ssim", k, cal))
    out.append({**_centroid(64, "pixel", 10, "real"), "query_transforms": "small"})
    for qt in ("shift-grid", "small"):
        for cal, st in (("reference", stats[0]), ("real", stats[3])):
            out.append(
                {
                    "measure": "pixel",
                    "image_size": 64,
                    **st,
                    "calibration": cal,
                    "query_transforms": qt,
                }
            )
    for name, members in FUSED.items():
        out.append({"estimator": "fused", "name": name, "members": members})
    return out


#: calibrations tried: none, against the development non-members, the k-NN density ratio to
#: all real images (labels unused: here the development images, each left out of its own score)
CALIBRATIONS = (None, "reference", "real")


def _centroid(size: int, measure: str, k: int, cal: str | None) -> dict[str, Any]:
    return {
        "measure": measure,
        "image_size": size,
        "statistic": "centroid",
        "k": k,
        "calibration": cal,
    }


def _real(size: int, measure: str = "pixel", k: int = 10) -> dict[str, Any]:
    return {**_centroid(size, measure, k, "real"), "statistic": "mean_k"}


#: fused candidates: the default members (transform-robust) and the best single settings
FUSED: dict[str, list[dict[str, Any]] | None] = {
    "default members": None,
    "pixel 64 mean_k 5 + reference, SSIM 64 max": [
        {
            "measure": "pixel",
            "image_size": 64,
            "statistic": "mean_k",
            "k": 5,
            "calibration": "reference",
        },
        {"measure": "ssim", "image_size": 64, "statistic": "max", "calibration": None},
    ],
    "pixel 64 mean_k 10 + real, SSIM 64 mean_k 10 + real": [_real(64), _real(64, "ssim")],
    "pixel 64 centroid 10 + real, SSIM 64 mean_k 10 + real": [
        _centroid(64, "pixel", 10, "real"),
        _real(64, "ssim"),
    ],
    "pixel 64 centroid 5 + real, SSIM 64 centroid 10 + real": [
        _centroid(64, "pixel", 5, "real"),
        _centroid(64, "ssim", 10, "real"),
    ],
    "pixel 64 centroid 10 + real, SSIM 64 centroid 10 + real": [
        _centroid(64, "pixel", 10, "real"),
        _centroid(64, "ssim", 10, "real"),
    ],
    "pixel 64 mean_k 5, 10, 20 + real, SSIM 64 mean_k 10, 20 + real": [
        _real(64, k=5),
        _real(64),
        _real(64, k=20),
        _real(64, "ssim"),
        _real(64, "ssim", k=20),
    ],
    "pixel 64 + 128 mean_k 10 + real, SSIM 64 + 128 mean_k 10 + real": [
        _real(64),
        _real(128),
        _real(64, "ssim"),
        _real(128, "ssim"),
    ],
    "pixel 64 mean_k 5 + reference, pixel 64 max, SSIM 64 max, SSIM 64 mean_k 3": [
        {
            "measure": "pixel",
            "image_size": 64,
            "statistic": "mean_k",
            "k": 5,
            "calibration": "reference",
        },
        {"measure": "pixel", "image_size": 64, "statistic": "max", "calibration": None},
        {"measure": "ssim", "image_size": 64, "statistic": "max", "calibration": None},
        {"measure": "ssim", "image_size": 64, "statistic": "mean_k", "k": 3, "calibration": None},
    ],
}


def label(o: dict[str, Any]) -> str:
    if o.get("estimator") == "fused":
        return f"fused: {o['name']}"
    parts = [f"{o['measure']} {o['image_size']}", o["statistic"]]
    if o["statistic"] in ("mean_k", "centroid"):
        parts[-1] += f" k={o['k']}"
    if o.get("radius_quantile") is not None:
        parts[-1] += f" radius quantile {o['radius_quantile']}"
    if o.get("calibration"):
        parts.append(f"calibration {o['calibration']}")
    if o.get("query_transforms"):
        parts.append(f"transforms {o['query_transforms']}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    from ctfp.data.datasets import find_datasets
    from ctfp.membership.index import GeneratedIndex
    from ctfp.membership.leaktest import cross_fit_scores
    from ctfp.membership.metrics import evaluate
    from ctfp.membership.similarity import SimilarityMembership

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="out/bench_data/few-hundred/development")
    ap.add_argument("--out", default="docs/benchmark_presets.md")
    ap.add_argument(
        "--test",
        default=None,
        help="the test split's folder: its real images (unlabelled) join the real reference of "
        "calibration='real', as in `ctfp run`; its labels are never read",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smaller grid")
    ap.add_argument("--only", default=None, help="substrings of settings to run, separated by ';'")
    ap.add_argument("--merge", default=None, help="a JSON of an earlier run: keep its other rows")
    a = ap.parse_args(argv)
    (ds,) = find_datasets(a.data, require="development")
    real, labels = ds.real()
    # the unlabelled real reference of calibration="real": every development image, and with
    # --test the test split's images too (labels never read), as `ctfp run` has it
    ref = list(real)
    if a.test:
        (ts,) = find_datasets(a.test, require="test")
        ref += list(ts.unknown)
    y = np.asarray(labels)
    gen = list(ds.generated)
    rows: list[dict[str, Any]] = []
    indexes: dict[tuple, Any] = {}
    t_all = time.perf_counter()
    only = None if a.only is None else a.only.split(";")
    for o in grid(a.quick):
        t0 = time.perf_counter()
        if only is not None and not any(w in label(o) for w in only):
            continue
        if o.get("estimator") == "fused":
            from ctfp.membership.fused import FusedMembership

            est = FusedMembership(
                members=o["members"], rule=None, device="cpu", n_jobs=a.threads, random_state=0
            )
            fitted = est.fit(real, y, generated=gen, reference=ref).generated_
            s = cross_fit_scores(
                est,
                real,
                y,
                generated=fitted,
                n_splits=5,
                random_state=0,
                fit_params={"reference": ref},
            )
            m = evaluate(y, (s >= np.median(s)).astype(int), s)
            rows.append({"setting": label(o), "options": o, "cv_auc": m["roc_auc"]})
            rows[-1]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{rows[-1]['setting']}: AUC {m['roc_auc']:.3f} ({rows[-1]['seconds']} s)")
            continue
        key = (o["measure"], o["image_size"], o.get("query_transforms"))
        if key not in indexes:
            indexes[key] = GeneratedIndex(
                measure=o["measure"],
                image_size=o["image_size"],
                query_transforms=o.get("query_transforms"),
                device="cpu",
                n_jobs=a.threads,
            ).fit(gen)
        est = SimilarityMembership(**o, rule=None, device="cpu", n_jobs=a.threads, random_state=0)
        s = cross_fit_scores(
            est,
            real,
            y,
            generated=indexes[key],
            n_splits=5,
            random_state=0,
            fit_params={"reference": ref} if o.get("calibration") == "real" else None,
        )
        m = evaluate(y, (s >= np.median(s)).astype(int), s)
        rows.append({"setting": label(o), "options": o, "cv_auc": m["roc_auc"]})
        rows[-1]["seconds"] = round(time.perf_counter() - t0, 1)
        print(
            f"{rows[-1]['setting']}: AUC {m['roc_auc']:.3f} ({rows[-1]['seconds']} s)", flush=True
        )
    if a.merge and Path(a.merge).is_file():  # rows of an earlier run for settings not run now
        done = {r["setting"] for r in rows}
        rows += [r for r in json.loads(Path(a.merge).read_text()) if r["setting"] not in done]
    rows.sort(key=lambda r: -r["cv_auc"])
    n = len(gen)
    cmd = "python benches/membership_presets.py " + " ".join(map(shlex.quote, argv or sys.argv[1:]))
    lines = [
        "# Similarity settings on the realistic benchmark's development split",
        "",
        f"Generated by `{cmd.strip()}` on {time.strftime('%Y-%m-%d %H:%M %Z')} "
        f"({platform.machine()}, {os.cpu_count()} CPU cores; "
        f"{round(time.perf_counter() - t_all)} s).",
        "",
        f"Data: `{a.data}` ({int(y.sum())} used + {int((1 - y).sum())} not used development "
        f"images, {n:,} generated images). Score: ROC-AUC of 5-fold cross-fitted scores "
        "(each image scored by a fit on the other folds; seed 0). Test data never read.",
        "",
        "| rank | setting | CV ROC-AUC | time (s) |",
        "|---:|---|---:|---:|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['setting']} | {r['cv_auc']:.3f} | {r['seconds']:.1f} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
