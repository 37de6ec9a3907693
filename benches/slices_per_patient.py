"""Several slices per patient: do the similarity methods hold when the real images include other
slices of the same patients?

The realistic benchmark (docs/benchmark.md) shows one slice per patient. A CT archive, and
likely the ImageCLEF data, holds several: the other slices of a patient are near-copies of a
slice among the *real* images, and ``calibration="real"`` measures how crowded the real images
are around each one. This bench adds, for every development and test patient of a realistic
dataset, its slices at the given offsets (``ctfp.data.synthetic.make_slice``, the same patient
and seed, neighbouring positions) to the unlabelled real reference (``reference=``), as if the
archive held them, and measures each setting twice:

- development: ROC-AUC of 5-fold cross-fitted scores on the development split (each image
  scored by a fit on the other folds, seed 0), the numbers a setting is chosen by;
- test: fitted on the development images and labels against the test split's generated images,
  scoring the test images (ROC-AUC against ``test_labels``), reported, never chosen on.

Rows "with patient ids" also give every real image's patient (``reference_groups=``, from
``truth.json``; the sibling slices are their patient's), the case of a user who knows them.

    python benches/slices_per_patient.py --root out/bench_data_10k/few-hundred \\
        --out docs/slices_per_patient.md

(the dataset from ``benches/membership_benchmark.py``). ``--offsets`` lists the conditions,
``;``-separated, each a comma list of slice offsets (default ``none;1,-1;1,-1,2,-2``).
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


def settings() -> list[tuple[str, dict[str, Any]]]:
    """(label, options): each family of the ``sim-*`` presets at several ``k_real`` (the real
    term's neighbours; the presets took 30 from this table), the count preset, and the
    GAN-Leaks calibration (against the labelled non-members: no real reference) for scale."""
    pixel = {
        "measure": "pixel",
        "image_size": 64,
        "statistic": "centroid",
        "k": 10,
        "calibration": "real",
    }
    ssim = {**pixel, "measure": "ssim"}
    shift = {**pixel, "statistic": "mean_k", "query_transforms": "small"}
    out: list[tuple[str, dict[str, Any]]] = []
    for k_real in (10, 20, 30, 50, 100):
        out.append(
            (f"sim-pixel: pixel 64 centroid k=10, k_real={k_real}", {**pixel, "k_real": k_real})
        )
    for k_real in (10, 30, 50):
        out.append(
            (f"sim-ssim: SSIM 64 centroid k=10, k_real={k_real}", {**ssim, "k_real": k_real})
        )
    for k_real in (10, 30, 50):
        out.append(
            (f"sim-shift: pixel 64 mean_k k=10, small transforms, k_real={k_real}",
             {**shift, "k_real": k_real})
        )  # fmt: skip
    for k_real in (10, 30):
        members = [{**pixel, "k_real": k_real}, {**ssim, "k_real": k_real}]
        out.append(
            (f"sim-fused: pixel + SSIM 64 centroid k=10, k_real={k_real}",
             {"estimator": "fused", "members": members})
        )  # fmt: skip
    # with each image's patient known (fit(reference_groups=)): the real term counts patients
    ids = " with patient ids"
    out.append((f"sim-pixel: pixel 64 centroid k=10, k_real=10{ids}", {**pixel, "k_real": 10}))
    out.append((f"sim-pixel: pixel 64 centroid k=10, k_real=30{ids}", {**pixel, "k_real": 30}))
    out.append((f"sim-ssim: SSIM 64 centroid k=10, k_real=30{ids}", {**ssim, "k_real": 30}))
    members = [{**pixel, "k_real": 30}, {**ssim, "k_real": 30}]
    out.append(
        (f"sim-fused: pixel + SSIM 64 centroid k=10, k_real=30{ids}",
         {"estimator": "fused", "members": members})
    )  # fmt: skip
    count = {"measure": "pixel", "image_size": 64, "statistic": "count", "radius_quantile": 0.03}
    out.append(
        ("sim-count: pixel 64 count, radius quantile 0.03", {**count, "calibration": "real"})
    )
    out.append(
        ("GAN-Leaks calibration: pixel 64 centroid k=10, calibration reference",
         {**pixel, "calibration": "reference"})
    )  # fmt: skip
    return out


def sibling_slices(
    truth: dict[str, Any], offsets: list[int], n_jobs: int | None
) -> tuple[np.ndarray, list[int]]:
    """The slices at ``offsets`` from each development and test image's own slice, of the same
    patient (an offset that leaves the patient's range is taken the other way), and their
    patients."""
    from concurrent.futures import ThreadPoolExecutor

    from ctfp.data.synthetic import make_slice

    spec = truth["spec"]
    shown = (
        truth["development"]["real_used"]
        + truth["development"]["real_not_used"]
        + [{"patient": t["patient"], "slice_index": t["slice_index"]} for t in truth["test"]]
    )
    jobs = []
    for w in shown:
        for o in offsets:
            s = w["slice_index"] + o
            if not 0 <= s < spec["slice_positions"]:
                s = w["slice_index"] - o
            jobs.append((w["patient"], s))
    with ThreadPoolExecutor(n_jobs or os.cpu_count()) as pool:
        out = list(
            pool.map(
                lambda j: make_slice(j[0], j[1], size=spec["size"], seed=spec["data_seed"]), jobs
            )
        )
    return np.stack(out), [j[0] for j in jobs]


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import roc_auc_score

    from ctfp.data.datasets import find_datasets
    from ctfp.membership.estimators import make_estimator
    from ctfp.membership.index import load_images
    from ctfp.membership.leaktest import cross_fit_scores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="out/bench_data_10k/few-hundred")
    ap.add_argument("--out", default="docs/slices_per_patient.md")
    ap.add_argument("--offsets", default="none;1,-1;1,-1,2,-2")
    ap.add_argument("--only", default=None, help="substrings of settings to run, ';'-separated")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    root = Path(a.root)
    truth = json.loads((root / "truth.json").read_text())
    (dev,) = find_datasets(root / "development", require="development")
    (test,) = find_datasets(root / "test", require="test")
    real, labels = dev.real()
    y = np.asarray(labels)
    unknown = list(test.unknown)
    by_id = {t["id"]: t["label"] for t in truth["test"]}
    yt = np.array([by_id[Path(p).stem] for p in unknown])
    real_px = load_images(list(real), size=None)
    test_px = load_images(unknown, size=None)
    # each image's patient: development images in the dataset's order (used, then not used,
    # by file name, as truth.json lists them), test images by id; checked on a few images
    dev_who = truth["development"]["real_used"] + truth["development"]["real_not_used"]
    test_who = {t["id"]: t for t in truth["test"]}
    real_patients = [w["patient"] for w in dev_who]
    test_patients = [test_who[Path(p).stem]["patient"] for p in unknown]
    from ctfp.data.synthetic import make_slice

    spec = truth["spec"]
    checks = [(real_px[0], dev_who[0]), (real_px[-1], dev_who[-1])]
    checks.append((test_px[0], test_who[Path(unknown[0]).stem]))
    for img, w in checks:
        want = make_slice(w["patient"], w["slice_index"], size=spec["size"], seed=spec["data_seed"])
        if not np.array_equal(img, want):
            raise SystemExit("truth.json does not describe these images (patients unknown)")
    conditions: dict[str, list[int]] = {}
    for c in a.offsets.split(";"):
        conditions[c] = [] if c == "none" else [int(v) for v in c.split(",")]
    refs, ref_groups = {}, {}
    for name, offs in conditions.items():
        sib, sib_patients = sibling_slices(truth, offs, a.threads) if offs else (None, [])
        refs[name] = np.concatenate([real_px, test_px, *([sib] if offs else [])])
        ref_groups[name] = real_patients + test_patients + sib_patients
    only = None if a.only is None else a.only.split(";")
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for label, opts in settings():
        if only is not None and not any(w in label for w in only):
            continue
        row: dict[str, Any] = {"setting": label, "options": opts}
        for cname, ref in refs.items():
            t0 = time.perf_counter()
            fp: dict[str, Any] = {"reference": ref}
            if label.endswith("with patient ids"):
                fp["reference_groups"] = ref_groups[cname]
            est = make_estimator({**opts, "rule": None, "device": "cpu", "random_state": 0})
            s = cross_fit_scores(
                est,
                real_px,
                y,
                generated=list(dev.generated),
                n_splits=5,
                random_state=0,
                fit_params=fp,
            )
            fitted = make_estimator({**opts, "rule": None, "device": "cpu", "random_state": 0})
            fitted.fit(real_px, y, generated=list(test.generated), **fp)
            st = fitted.score_samples(test_px)
            row[cname] = {
                "dev_cv_auc": float(roc_auc_score(y, s)),
                "test_auc": float(roc_auc_score(yt, st)),
                "seconds": round(time.perf_counter() - t0, 1),
                "reference_images": len(ref),
            }
            print(
                f"{label} | {cname}: dev CV {row[cname]['dev_cv_auc']:.3f}, "
                f"test {row[cname]['test_auc']:.3f} ({row[cname]['seconds']} s)",
                flush=True,
            )
        rows.append(row)
    out = Path(a.out)
    old = out.with_suffix(".json")
    if old.is_file():  # rows of an earlier run for settings not run now
        done = {r["setting"] for r in rows}
        rows += [r for r in json.loads(old.read_text()) if r["setting"] not in done]
    order = {label: i for i, (label, _) in enumerate(settings())}
    rows.sort(key=lambda r: order.get(r["setting"], len(order)))
    names = list(conditions)
    snap = truth["checkpoint"]["snapshot"]
    memorisation = snap.get("memorisation", {}).get("all_members", {}).get("auc", float("nan"))
    cmd = "python benches/slices_per_patient.py " + " ".join(map(shlex.quote, argv or sys.argv[1:]))
    lines = [
        "# Several slices per patient in the real reference",
        "",
        f"Generated by `{cmd.strip()}` on {time.strftime('%Y-%m-%d %H:%M %Z')} "
        f"({platform.machine()}, {os.cpu_count()} CPU cores; {round(time.perf_counter() - t_all)} s"
        " for the rows of this run). Data: "
        f"`{a.root}` (generator memorisation "
        f"AUC {memorisation:.3f}; "
        f"{len(dev.generated):,} generated images per split). Each condition adds, for every "
        "development and test patient, its slices at those offsets to the unlabelled real "
        "reference (`none`: one slice per patient, the benchmark as it is). Each cell: "
        "development 5-fold CV ROC-AUC / test ROC-AUC (development labels only; test labels "
        "only for the score).",
        "",
        "| setting | " + " | ".join(f"offsets {n}" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for r in rows:
        cells = [
            f"{r[n]['dev_cv_auc']:.3f} / {r[n]['test_auc']:.3f}" if n in r else "-" for n in names
        ]
        lines.append(f"| {r['setting']} | " + " | ".join(cells) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    old.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
