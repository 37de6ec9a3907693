"""``ctfp demo``: the whole task end to end on built-in data, on the CPU, in minutes.

1. Make a small ImageCLEF-style dataset from synthetic CT-like slices with a generator that leaks
   its training images to a known degree (:mod:`ctfp.leaky`).
2. Show the Rust pipeline: augmented batches (a grid PNG) and loader throughput.
3. Run the paper's Method 1 (MobileNetV2 on the 50x training set, 0.5 threshold), ctfp's
   similarity methods and the baselines, each into its own folder ``OUT/<key>/``
   (:func:`ctfp.imageclef.layout.method_dir`: ``OUT/1``, ``OUT/sim-pixel``, ...), evaluate them
   on the test images (whose truth the demo knows), write validated run files, tables
   (Markdown, JSON) and plots (ROC of all methods, score histograms, confusion matrices). The
   similarity methods' leak tests get one family verdict (Holm: summary ``leak_test``), which
   the printed summary and the report lead with.
4. Subtask 2 (which model, which training subset made each generated image) on tiny stand-in
   data the demo writes itself from the committed benchmark generators
   (:func:`ctfp.attribution.dataset.write_attribution_dataset` at small counts): ``ctfp
   attribute`` on the 2025 layout (five subsets) and the 2024 layout (four models), ``ctfp
   cluster`` on the 2024 test images, each into ``OUT/attribution/<run>/``
   (:func:`_attribution_part`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import write_image_png, write_text_atomic

__all__ = ["run_demo"]


def _grid(paths: list, out: Path, seed: int) -> Path:

    from ctfp.data.preprocess import Augment, load_batch

    k, size, pad = min(4, len(paths)), 160, 4
    cols = [load_batch(paths[:k], size=size, layout="grey")[:, 0]]
    for epoch in range(5):
        cols.append(
            load_batch(
                paths[:k], size=size, augment=Augment(), epoch=epoch, seed=seed, layout="grey"
            )[:, 0]
        )
    grid = np.full((k * (size + pad) - pad, len(cols) * (size + pad) - pad), 255, np.uint8)
    for c, col in enumerate(cols):
        for r in range(k):
            y, x = r * (size + pad), c * (size + pad)
            grid[y : y + size, x : x + size] = col[r]
    path = out / "augmented_grid.png"
    write_image_png(path, grid)
    return path


def _loader_throughput(paths: list, seed: int, threads: int | None) -> list[dict]:
    from ctfp.data.preprocess import Augment
    from ctfp.data.stream import BatchStream

    stream = BatchStream(
        paths,
        batch_size=64,
        augment=Augment(),
        size=(224, 224),
        dtype="float32",
        normalize="imagenet",
        cache=True,
        seed=seed,
        n_threads=threads,
    )
    rows = []
    for epoch in range(2):
        t0 = time.perf_counter()
        n = sum(batch.shape[0] for batch in stream)
        dt = time.perf_counter() - t0
        rows.append(
            {
                "epoch": epoch,
                "images": n,
                "images_per_s": round(n / dt, 1),
                "png_decoding": epoch == 0,
            }
        )
    return rows


def run_demo(
    out: str | Path = "out/demo",
    *,
    quick: bool = False,
    epochs: int = 3,
    image_size: int = 128,
    weights: str | None = None,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    torch_threads: int | None = None,
    verbose: int = 1,
    realistic: bool = False,
) -> dict[str, Any]:
    """Run the demo into ``out``; return its summary (also written to ``out/summary.json``).

    ``realistic``: use the realistic leak benchmark's few-hundred regime
    (:mod:`ctfp.imageclef.realistic`: a GAN really trained on 200 slices, 10,000 generated
    images per split, 100+100 development and 100+100 test slices; 200 generated per split
    with ``quick``) instead of the fast near-copy generator.
    """
    from ctfp.imageclef.experiments import run_method
    from ctfp.imageclef.layout import method_dir
    from ctfp.imageclef.leaky import LeakyDataSpec, make_leaky_dataset
    from ctfp.imageclef.plots import plot_roc
    from ctfp.membership.metrics import markdown_table, write_tables

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    spec = LeakyDataSpec.small(seed=seed) if quick else LeakyDataSpec(seed=seed)
    if quick:
        epochs, image_size = 1, 32
    data = out / "data"
    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    if realistic:
        from ctfp.imageclef.realistic import write_realistic_dataset

        leak = write_realistic_dataset(
            data, "few-hundred", n_generated=200 if quick else None, n_jobs=threads
        )
        data = Path(leak["root"])
        truth = json.loads((data / "truth.json").read_text(encoding="utf-8"))
        rs = truth["spec"]
        n_dev_real, n_generated = rs["n_dev_used"] + rs["n_dev_not_used"], rs["n_generated"]
        mem = (leak.get("memorisation") or {}).get("all_members", {}).get("auc")
        say(
            f"[1/4] data: {data} ({time.perf_counter() - t0:.1f} s): realistic leak, a GAN "
            f"trained on {rs['n_train']} slices (snapshot {leak['iteration']}, memorisation "
            f"AUC {mem if mem is not None else 'not recorded'}); {rs['n_dev_used']}+"
            f"{rs['n_dev_not_used']} development and {rs['n_test_used']}+"
            f"{rs['n_test_not_used']} test real images (used+not used), {n_generated} "
            f"generated per split"
        )
    else:
        leak = make_leaky_dataset(data, spec)
        n_dev_real, n_generated = spec.n_used + spec.n_not_used, spec.n_generated
        gen = leak["leaked_generated"]
        say(
            f"[1/4] data: {data} ({time.perf_counter() - t0:.1f} s): "
            f"{spec.n_used}+{spec.n_not_used} development and "
            f"{spec.n_test_used}+{spec.n_test_not_used} test real images (used+not used), "
            f"{spec.n_generated} generated per split, of which {gen['development']} "
            f"(development) and {gen['test']} (test) are near-copies of used images "
            f"(leak={spec.leak})"
        )

    dev_paths = sorted((data / "development" / "real_used").glob("*.png"))
    grid = _grid(dev_paths, out, seed)
    loader = _loader_throughput(
        sorted((data / "development" / "generated").glob("*.png"))[:2000], seed, threads
    )
    say(
        f"[2/4] pipeline: {grid}; float32 224x224 batches: "
        + ", ".join(f"epoch {r['epoch']} {r['images_per_s']:.0f} images/s" for r in loader)
        + " (epoch 0 decodes PNGs, epoch 1 reads the decode cache)"
    )

    common: dict[str, Any] = dict(
        test=data / "test", test_labels=data / "test_labels.csv", seed=seed, holdout=0.25
    )
    results: dict[str, dict] = {}
    n_train_real = round(n_dev_real * 0.75)
    copies = max(2, 2 * round(n_generated / n_train_real / 2))
    t0 = time.perf_counter()
    if weights is None:
        say(
            "      Method 1 trains MobileNetV2 from random initialisation: ImageNet weights need a "
            "network (pass --weights imagenet or a state-dict file where you have them)"
        )
    results["Method 1"] = run_method(
        "1",
        data / "development",
        method_dir(out, "1"),
        decision="threshold:0.5",
        epochs=epochs,
        image_size=image_size,
        copies=copies,
        batch_size=32,
        weights=weights,
        device=device,
        threads=threads,
        torch_threads=torch_threads,
        verbose=verbose,
        **common,
    )
    say(
        f"[3/4] Method 1 ({time.perf_counter() - t0:.0f} s): {copies} copies per real image, "
        f"{epochs} epochs at {image_size}x{image_size}"
    )

    t0 = time.perf_counter()
    machine = dict(device=device, threads=threads, torch_threads=torch_threads)
    for name, rec in _similarity_runs(data, out, common, machine, verbose).items():
        results[name] = rec
    say(f"[4/4] similarity methods ({time.perf_counter() - t0:.0f} s)")

    rows, curves = [], {}
    for name, rec in results.items():
        for ds in rec["datasets"]:
            if "test" in ds:
                rows.append({"method": f"{name} ({ds['decision']['rule']})", **ds["test"]})
        ys = [y for ds in rec["datasets"] for y in ds.get("test_truth", [])]
        ss = [v for ds in rec["datasets"] for v in ds.get("test_scores", [])]
        if ys:
            curves[name] = (ys, ss)
    # the similarity methods' leak tests on one dataset are one family: one verdict (Holm)
    from ctfp.imageclef.leakcheck import leak_families

    families = [
        {"dataset": f["dataset"], **f["family"]}
        for f in leak_families([(r["method"]["key"], r) for r in results.values()])
    ]
    tables: dict[str, Any] = {"Test images (truth known to the demo)": rows}
    md, js = write_tables(tables, out, stem="results")
    attribution = _attribution_part(out / "attribution", quick=quick, seed=seed, say=say)
    roc = None
    if curves:
        roc = plot_roc(curves, out / "roc_all.png", title="ROC of every method, test images")
    summary = {
        "out": str(out),
        "leak_test": families,
        "leak": leak,
        "loader": loader,
        "tables": tables,
        "seconds": round(time.perf_counter() - t_all, 1),
        "quick": quick,
        "realistic": realistic,
        "run_files": [ds.get("run_file") for r in results.values() for ds in r["datasets"]],
        "attribution": attribution,
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    from ctfp.imageclef.report import write_run_report

    report = write_run_report(out)  # every method's run, compared, with its evidence galleries
    say("")
    for f in families:  # the answer to "does it leak at all?" leads
        say(f"Does the generator leak? [{f['dataset']}] {f['message']}")
    say("")
    say(markdown_table(rows, title="Test images (truth known to the demo)"))
    say(f"\nwrote {md}, {js}" + (f", {roc}" if roc else "") + f" and per-method folders in {out}")
    if report is not None:
        say(f"report: {report} (open it in a browser)")
    say("")
    for r in attribution["runs"]:
        say(f"subtask 2, {r['name']}: {r['score']}; report: {r['report']}")
    say(f"total {summary['seconds']:.0f} s")
    return summary


def _similarity_runs(
    data: Path, out: Path, common: dict, machine: dict, verbose: int
) -> dict[str, dict]:
    """ctfp's similarity methods (:mod:`ctfp.membership.similarity`) and the baselines through
    the same runner, each in ``OUT/<key>``. ``machine`` (``device``, ``threads``,
    ``torch_threads``) reaches every method that takes the setting: ``threads`` all of them,
    ``device`` and ``torch_threads`` those that run torch (the baselines run on the CPU)."""
    from ctfp.imageclef.experiments import SIMILARITY_KEYS, SIMILARITY_PRESETS, run_similarity
    from ctfp.imageclef.layout import method_dir
    from ctfp.imageclef.methods import estimator_takes

    runs = {}
    for key, name in SIMILARITY_KEYS.items():
        options = SIMILARITY_PRESETS[name]
        taken = {k: v for k, v in machine.items() if k == "threads" or estimator_takes(options, k)}
        runs[name] = run_similarity(
            key, data / "development", method_dir(out, key), verbose=verbose, **taken, **common
        )
    return runs


def _attribution_part(out: Path, *, quick: bool, seed: int, say: Any) -> dict[str, Any]:
    """Subtask 2 on stand-in data written here from the committed generators (2025: five
    subsets, each with its real training slices; 2024: four models on the same images), small
    counts: ``ctfp attribute`` on each layout and ``ctfp cluster`` (count unknown) on the 2024
    test images, each in its own folder under ``out`` (two levels below the demo folder, so the
    demo's page of subtask-1 runs does not list them; each has its own report.html)."""
    import shutil

    from ctfp.attribution.dataset import write_attribution_dataset
    from ctfp.attribution.run import run_attribution, run_clustering
    from ctfp.imageclef.layout import REPORT

    t0 = time.perf_counter()
    n_dev, n_test, n_real = (8, 4, 8) if quick else (40, 20, 40)
    data = out / "data"
    if data.exists():  # the demo's own stand-in data, written again each time
        shutil.rmtree(data)
    for setting in ("2025", "2024"):
        write_attribution_dataset(data, setting, n_dev=n_dev, n_test=n_test, n_real=n_real)
    t_data = time.perf_counter() - t0
    runs = []
    for year in ("2025", "2024"):
        rec = run_attribution(
            data / year / "development", data / year / "test", out / f"attribute_{year}",
            seed=seed,
        )  # fmt: skip
        m = rec["metrics"]
        runs.append({
            "name": f"attribute {year} ({rec['method']['key']}, {len(rec['sources'])} sources)",
            "score": f"accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}",
            "report": str(out / f"attribute_{year}" / REPORT), "metrics": m,
        })  # fmt: skip
    rec = run_clustering(data / "2024" / "test", out / "cluster_2024", seed=seed)
    m = rec["metrics"]
    runs.append({
        "name": f"cluster 2024 (count unknown: {m['n_clusters']} found of {m['n_sources']})",
        "score": f"ARI {m['ari']:.3f}, NMI {m['nmi']:.3f}, purity {m['purity']:.3f}",
        "report": str(out / "cluster_2024" / REPORT), "metrics": m,
    })  # fmt: skip
    seconds = round(time.perf_counter() - t0, 1)
    say(
        f"[subtask 2] attribution ({seconds:.0f} s, of which {t_data:.0f} s writing stand-in "
        f"data: {n_dev} development and {n_test} test images per source)"
    )
    return {"out": str(out), "n_dev": n_dev, "n_test": n_test, "n_real": n_real,
            "seconds": seconds, "data_seconds": round(t_data, 1), "runs": runs}  # fmt: skip
