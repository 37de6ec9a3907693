"""The ``ctfp`` command line.

Exit codes: 0 success; 1 the job failed (an invalid run file, a failed step); 2 bad usage or
data that cannot be used (missing folders, unreadable layout); 3 the method needs something this
installation lacks (e.g. torch for ESRGAN: Method 4, ``ctfp upscale``); 130 interrupted (Ctrl-C).
A failure prints one line; ``ctfp --debug ...`` (or ``CTFP_DEBUG=1``) prints its traceback too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctfp._util import check_device, n_jobs_to_threads
from ctfp.imageclef.methods import METHODS, SIMILARITY_KEYS

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    """The whole task on built-in data: a small ImageCLEF-style dataset from synthetic CT-like
    slices whose generator leaks its training images to a known degree, the paper's Method 1,
    ctfp's similarity methods and the baselines on it, tables, plots and validated run files in
    OUT (one subfolder per method). --device reaches Method 1 and the similarity methods (the
    baselines run on the CPU), --n-jobs every method, --torch-threads Method 1 and the
    similarity methods that run torch."""
    from ctfp.imageclef.demo import run_demo

    weights = None if args.weights.lower() == "none" else args.weights
    run_demo(
        args.out,
        quick=args.quick,
        epochs=args.max_epochs,
        image_size=args.image_size,
        weights=weights,
        device=args.device or "auto",
        seed=args.seed,
        threads=n_jobs_to_threads(args.n_jobs, "--n-jobs"),
        torch_threads=args.torch_threads,
        realistic=args.realistic,
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Check a run file against the organisers' rules and the test images; list every problem
    with its line number, then what ctfp finds dubious although the organisers accept it
    (padding spaces, no final newline, ...) as 'warning:' lines. Exit 0 when valid (warnings or
    not), 1 when not, 2 when the run file or the test folder cannot be used (missing,
    unreadable, no test images)."""
    from ctfp.data.datasets import DatasetError
    from ctfp.imageclef.runfile import RunFileError, run_file_warnings, validate_run_file

    path = Path(args.runfile)
    if not path.is_file():
        print(f"ctfp validate: {path}: no such file", file=sys.stderr)
        return 2
    labels = _label_set(args.labels) if args.labels is not None else None
    try:
        problems = validate_run_file(
            path, args.test_dir, strip_extension=not args.keep_extension, labels=labels
        )
    except (DatasetError, RunFileError, OSError) as exc:
        # A test folder that is missing or holds no test images, or a file that cannot be read:
        # nothing was checked, so this is exit 2 (bad usage or bad folder), not 1 (invalid file).
        print(f"ctfp validate: {exc}", file=sys.stderr)
        return 2
    for p in problems:
        where = f"{path}:{p.line}" if p.line else str(path)
        print(f"{where}: {p.kind}: {p.message}")
    for w in run_file_warnings(
        path, labels=labels
    ):  # accepted by the organisers: never a reason to fail
        where = f"{path}:{w.line}" if w.line else str(path)
        print(f"{where}: warning: {w.kind}: {w.message}")
    if problems:
        print(f"{path}: INVALID ({len(problems)} problems)")
        return 1
    print(f"{path}: valid")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run one of the paper's methods (1-4), a similarity method (sim-*) or a published
    baseline (base-*) on ImageCLEF data: fit on the development data (1-4: a classifier of real
    vs generated images on the 50x expanded training set; sim-*/base-*: similarity of each real
    image to the generated set), score the real images, decide, and write tables, plots,
    validated run files (run_<split>.txt), scores (scores_<split>.csv), record.json and
    report.html into OUT. OUT belongs to one method: write each method to its own folder."""
    from ctfp.imageclef.experiments import run_method, run_similarity
    from ctfp.imageclef.layout import REPORT, record_path

    common = dict(
        test=args.test,
        test_labels=args.test_labels,
        seed=args.seed,
        verbose=0 if args.quiet else 1,
        device=args.device or "auto",
        threads=n_jobs_to_threads(args.n_jobs, "--n-jobs"),
        on_unreadable=args.on_unreadable,
    )
    if args.method.startswith(("sim-", "base-")):
        # every option is honoured or refused: the training options mean nothing here
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("max_epochs", "batch_size", "copies", "weights", "torch_threads")
            if getattr(args, name) is not None
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)}: not used by --method {args.method} (no network is "
                f"trained); leave them out"
            )
        if args.method.startswith("base-") and args.device not in (None, "auto", "cpu"):
            raise ValueError(
                f"--device: not used by --method {args.method} (it runs on the CPU); leave it out"
            )
        record = run_similarity(
            args.method,
            args.data,
            args.out,
            decision=args.decision,  # None: the preset's own, else calibrated:accuracy
            holdout=0.25 if args.holdout is None else args.holdout,
            image_size=args.image_size,
            test_generated=args.test_generated,
            groups=args.groups,
            **common,
        )
    else:
        if args.groups is not None:
            raise ValueError(
                f"--groups: not used by --method {args.method} (it trains on images, not "
                f"on similarity to the real set); leave it out"
            )
        if args.test_generated != "development":
            raise ValueError(
                f"--test-generated {args.test_generated}: not used by --method {args.method} "
                f"(its classifier scores the test images by themselves); leave it out"
            )
        weights = args.weights or "default"
        weights = {"none": None, "default": "default"}.get(weights.lower(), weights)
        record = run_method(
            args.method,
            args.data,
            args.out,
            decision=args.decision or "threshold:0.5",
            holdout=args.holdout or 0.0,
            epochs=args.max_epochs or 50,
            image_size=args.image_size,
            batch_size=args.batch_size or 32,
            copies=args.copies or 50,
            weights=weights,
            torch_threads=args.torch_threads,
            **common,
        )
    for title, rows in record.get("tables", {}).items():
        from ctfp.membership.metrics import markdown_table

        print(markdown_table(rows, title=title), end="\n\n")
    for ds in record["datasets"]:
        if "run_file" in ds:
            print(f"run file: {ds['run_file']} ({ds['test_predicted_used']} predicted used)")
    print(f"record: {record_path(args.out)} ({record['seconds']} s)")
    report = Path(args.out) / REPORT
    if report.is_file():
        print(f"report: {report} (open it in a browser)")
    return 0


def _report(args: argparse.Namespace) -> int:
    """Write the report page of output folders of ctfp run / ctfp demo from their records and
    files (runs made before reports existed get one too). One folder: OUT_DIR/report.html. Several:
    report_compare.html in the first folder (or --out): every run in one table with their ROC
    curves overlaid, then each run in full. Galleries saved by the run are reused; missing ones
    are made again from the data folders the record names."""
    from ctfp.imageclef.report import write_report

    path = _attribution_report(args)  # ctfp attribute / ctfp cluster folders
    if path is None and len(args.folders) == 1 and args.out is None:
        from ctfp.imageclef.report import write_leaktest_report

        path = write_leaktest_report(args.folders[0])  # a ctfp leaktest folder
    if path is None:
        path = write_report(args.folders, args.out, redo_galleries=args.redo_galleries)
    print(f"report: {path} (open it in a browser)")
    return 0


def _leaktest(args: argparse.Namespace) -> int:
    """Does the generator leak its training images at all? The question on its own, on
    development data (real_used/, real_not_used/, generated/), no test split needed: each
    method's leak test (a permutation test of exact level: the used/not-used labels relabelled
    at random, everything that uses them rerun; a no-generator control), and one verdict for
    all of them (Holm's adjustment: the chance of any false alarm among the methods stays at
    most --alpha). Writes record.json, leaktest.json (verdicts, p-values raw and adjusted,
    their resolution, ROC-AUC with its 95 % interval, the control), leaktest_<dataset>.png
    (each null distribution with the observed statistic) and report.html into OUT. Exit 0
    whatever the verdict."""
    from ctfp.imageclef.layout import LEAKTEST_JSON, REPORT, record_path
    from ctfp.imageclef.leakcheck import run_leak_tests

    record = run_leak_tests(
        args.data, args.out, methods=args.methods, groups=args.groups, alpha=args.alpha,
        n_permutations=args.permutations, seed=args.seed, device=args.device or "auto",
        threads=n_jobs_to_threads(args.n_jobs, "--n-jobs"), torch_threads=args.torch_threads,
        on_unreadable=args.on_unreadable, verbose=0 if args.quiet else 1,
    )  # fmt: skip
    for d in record["datasets"]:
        fam = d["family"]
        print(f"dataset {d['dataset']['dataset']}: {fam['verdict'].upper()}")
        print(f"  {fam['message']}")
    print(f"record: {record_path(args.out)}, {Path(args.out) / LEAKTEST_JSON} "
          f"({record['seconds']} s)")  # fmt: skip
    print(f"report: {Path(args.out) / REPORT} (open it in a browser)")
    return 0


def _add_leaktest(sub: Any) -> None:
    from ctfp.imageclef.leakcheck import DEFAULT_METHODS

    lt = sub.add_parser(
        "leaktest", help="does the generator leak its training images at all?",
        description=_leaktest.__doc__,
    )  # fmt: skip
    lt.add_argument("data", metavar="DEV", help="development data (real_used/, real_not_used/, "
                    "generated/; or Dataset folders holding them)")  # fmt: skip
    lt.add_argument("--out", required=True, help="output folder (one leak-test run)")
    lt.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS),
        help=f"comma-separated similarity methods, among {', '.join(SIMILARITY_KEYS)} (default "
        f"{','.join(DEFAULT_METHODS)}: those whose size on true nulls and power "
        f"docs/leaktest.md measures)",
    )  # fmt: skip
    lt.add_argument(
        "--groups", default=None, metavar="CSV",
        help="id,group CSV of the patient of each real image (ids without .png): relabelings "
        "move whole patients (slices of one patient are not independent)",
    )  # fmt: skip
    lt.add_argument("--alpha", type=float, default=0.05, help="the level (default 0.05)")
    lt.add_argument(
        "--permutations", type=int, default=None, metavar="B",
        help="random relabelings per test (default: 9,999 for scores that use no labels, 999 "
        "for sim-fused's combiner; the p-value's resolution is 1/(B+1))",
    )  # fmt: skip
    lt.add_argument(
        "--on-unreadable", default="error", choices=["error", "skip"],
        help="images that cannot be decoded (each is listed first): error (default), skip",
    )  # fmt: skip
    _add_machine_options(lt)
    lt.add_argument("--quiet", action="store_true", help="no progress bars")
    lt.set_defaults(func=_leaktest)


def _label_set(text: str) -> list[str]:
    """``--labels a,b,c``: the labels an attribution run file may use."""
    labels = [v.strip() for v in text.split(",")]
    if not text.strip() or any(not v for v in labels):
        raise ValueError(
            f"--labels: expected labels separated by commas (s1,s2,s3), found {text!r}"
        )
    return labels


def _attribute(args: argparse.Namespace) -> int:
    """Subtask 2: attribute every generated test image to the development source (2025: the
    training subset; 2024: the model) that made it. DEV holds generated/<source>/ (2024 layout)
    or real/<subset>/ and generated/<subset>/ (2025 layout); TEST holds generated_unknown/ (its
    truth, when known: test_labels.csv in TEST or beside it, or --test-labels). Writes into OUT
    a validated run file (run_test.txt: image_id,label), per-source probabilities
    (scores_test.csv), tables when the truth is known, record.json and report.html."""
    from ctfp.attribution.run import run_attribution

    record = run_attribution(
        args.data, args.test, args.out, method=args.method, test_labels=args.test_labels,
        seed=args.seed,
    )  # fmt: skip
    _print_attribution(record, args.out)
    return 0


def _cluster(args: argparse.Namespace) -> int:
    """Subtask 2 without labels: group the generated images of DIR (its generated_unknown/ or
    generated/ folder, or the PNGs in it) by the model that made them, the number of models
    given (--n-sources K) or chosen from the data (auto: the Calinski-Harabasz index of k-means
    on the residual spectrum, or --criterion silhouette). Writes run_test.txt
    (image_id,cluster_k), scores_test.csv, tables when the truth is known (test_labels.csv or
    --truth: ARI, NMI, purity), record.json and report.html into OUT."""
    from ctfp.attribution.run import run_clustering

    record = run_clustering(
        args.dir, args.out, n_sources=args.n_sources, features=args.features,
        criterion=args.criterion, truth=args.truth, seed=args.seed,
    )  # fmt: skip
    _print_attribution(record, args.out)
    return 0


def _print_attribution(record: dict, out: str) -> None:
    from ctfp.imageclef.layout import REPORT, record_path

    for title, rows in record.get("tables", {}).items():
        if rows:
            keys = list(rows[0])
            print(f"**{title}**\n")
            print("| " + " | ".join(keys) + " |")
            print("|" + "---|" * len(keys))
            for r in rows:
                cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()]
                print("| " + " | ".join(cells) + " |")
            print()
    print(f"run file: {record['run_file']} ({record['n_test']} test images)")
    print(f"record: {record_path(out)} ({record['seconds']['total']} s)")
    print(f"report: {Path(out) / REPORT} (open it in a browser)")


def _add_attribution(sub: Any) -> None:
    """Register ``ctfp attribute`` and ``ctfp cluster`` (subtask 2)."""
    from ctfp.attribution.workflow import METHODS as ATTRIBUTION_METHODS

    att = sub.add_parser(
        "attribute",
        help="attribute generated images to the model / training subset that made them",
        description=_attribute.__doc__,
    )
    att.add_argument("--data", required=True, help="development folder (2025 or 2024 layout)")
    att.add_argument("--test", required=True, help="test folder (generated_unknown/)")
    att.add_argument("--out", required=True, help="output folder")
    att.add_argument(
        "--method",
        default="auto",
        choices=["auto", *ATTRIBUTION_METHODS],
        help="auto (default: subset on the 2025 layout, spectrum on the 2024 one); "
        + "; ".join(f"{k}: {v[2]}" for k, v in ATTRIBUTION_METHODS.items()),
    )
    att.add_argument("--test-labels", help="id,label CSV of the test images, to evaluate")
    att.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    att.set_defaults(func=_attribute)

    clu = sub.add_parser(
        "cluster",
        help="group unlabelled generated images by the model that made them",
        description=_cluster.__doc__,
    )
    clu.add_argument("dir", metavar="DIR", help="folder of generated images")
    clu.add_argument("--out", required=True, help="output folder")
    clu.add_argument(
        "--n-sources", default="auto", help="number of models, or auto (default: chosen)"
    )
    clu.add_argument(
        "--criterion",
        default="calinski_harabasz",
        choices=["silhouette", "calinski_harabasz"],
        help="how --n-sources auto chooses the count: the Calinski-Harabasz index (default; "
        "chosen on the benchmark's development images of both years, docs/attribution.md) or "
        "the silhouette",
    )
    clu.add_argument(
        "--features",
        default="spectrum",
        choices=["spectrum", "dct", "pixel"],
        help="residual spectrum (default), image DCT (Frank et al.), or pixels",
    )
    clu.add_argument("--truth", help="id,label CSV of the images, to evaluate")
    clu.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    clu.set_defaults(func=_cluster)


def _attribution_report(args: argparse.Namespace) -> Path | None:
    """``ctfp report OUT`` of one ``ctfp attribute`` / ``ctfp cluster`` folder: its page
    rebuilt; None for any other folder (and for --out or several folders)."""
    from ctfp.imageclef.report import write_attribution_report

    if len(args.folders) != 1 or args.out is not None:
        return None
    return write_attribution_report(args.folders[0])


def _nonneg(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text}")
    return v


def _add_upscale(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ctfp upscale IN_DIR OUT_DIR`` on an argparse ``add_subparsers()`` object.

    Defined here rather than in ``ctfp.superres`` so that building the parser imports no torch;
    the handler imports it.
    """
    p = subparsers.add_parser(
        "upscale",
        help="ESRGAN x4 super-resolution of a folder of PNGs (Method 4)",
        description=(
            "Upscale every PNG in IN_DIR x4 with ESRGAN (default: Real-ESRGAN x4plus, bundled, "
            "no network) and write 8-bit grey PNGs with the same names to OUT_DIR. Existing "
            "outputs are kept unless --overwrite, so an interrupted run resumes."
        ),
    )
    p.add_argument("in_dir", metavar="IN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument(
        "--weights",
        default="realesrgan-x4plus",
        help="realesrgan-x4plus, realesrgan-x4plus-anime (bundled), or a .pth/.pt/.param file "
        "(default: realesrgan-x4plus)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--tile", type=_nonneg, default=256, help="tile size in input pixels, 0 = off (default 256)"
    )
    p.add_argument(
        "--tile-pad", type=_nonneg, default=32, help="tile overlap in pixels (default 32)"
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        help="images read at a time, and at most that many tiles per forward pass (default 16 "
        "on CUDA, fewer for large images: about 8 of 224x224 a pass; 4 elsewhere)",
    )
    p.add_argument("--fp32", action="store_true", help="float32 on CUDA too (default there: fp16)")
    p.add_argument("--pattern", default="*.png", help="file pattern (default *.png)")
    p.add_argument("--recursive", action="store_true", help="also look in subfolders")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_upscale)
    return p


def _upscale(args: argparse.Namespace) -> int:
    try:
        from ctfp.superres.cli import run_upscale_command
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "torch":
            raise
        from ctfp.imageclef.methods import MethodUnavailable

        raise MethodUnavailable(
            "ESRGAN needs torch, which is not installed here (pip install torch)"
        ) from None
    return run_upscale_command(args)


def _n_jobs(text: str) -> int:
    v = int(text)
    if v == 0:
        raise argparse.ArgumentTypeError(f"expected N >= 1, or -1 for all cores, found {text}")
    return v


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text}")
    return v


def _add_machine_options(p: argparse.ArgumentParser) -> None:
    """--device, --n-jobs, --seed: the same words and checks for every command that trains."""
    p.add_argument(
        "--device",
        default=None,
        help="auto (default), cpu, cuda, cuda:N or mps: where networks train and pixel "
        "distances are computed (the baselines run on the CPU)",
    )
    p.add_argument(
        "--n-jobs",
        "--threads",
        dest="n_jobs",
        type=_n_jobs,
        default=None,
        help="threads that decode, augment and compare images (SSIM, pixels): N, or -1 for "
        "all cores, -2 all but one (default: all cores)",
    )
    p.add_argument(
        "--torch-threads",
        type=_positive,
        default=None,
        help="torch's threads while training on the CPU (default: torch's own setting, with a "
        "warning when it exceeds the free cores)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctfp", description="Training-data fingerprints in generated lung CT."
    )
    parser.add_argument("--version", action="version", version=f"ctfp {_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on a failure, print its traceback as well as the one-line message (also: "
        "environment variable CTFP_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the pipeline on built-in synthetic CT-like slices",
        description=_demo.__doc__,
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument(
        "--max-epochs",
        "--epochs",
        dest="max_epochs",
        type=_positive,
        default=3,
        help="Method 1 epochs (default 3)",
    )
    demo.add_argument(
        "--image-size",
        type=_positive,
        default=128,
        help="Method 1 input size (default 128; the paper: 224)",
    )
    demo.add_argument(
        "--weights",
        default="none",
        help="Method 1 backbone weights: none (default: offline), imagenet, or a file",
    )
    _add_machine_options(demo)
    demo.add_argument(
        "--quick", action="store_true", help="a tiny version (seconds), as the test suite runs it"
    )
    demo.add_argument(
        "--realistic",
        action="store_true",
        help="data from the realistic leak benchmark (a GAN trained on 200 slices, committed; "
        "10,000 generated images per split, 200 with --quick) instead of the fast near-copy "
        "generator; see docs/benchmark.md",
    )
    demo.set_defaults(func=_demo)

    val = sub.add_parser(
        "validate", help="check a run file against the test images", description=_validate.__doc__
    )
    val.add_argument("runfile", help="the run file to check")
    val.add_argument(
        "--test-dir", required=True, help="the test data folder (or its real_unknown/ folder)"
    )
    val.add_argument(
        "--keep-extension",
        action="store_true",
        help="image ids keep their .png extension (default: stripped)",
    )
    val.add_argument(
        "--labels",
        default=None,
        help="an attribution run file (ctfp attribute / cluster): the labels it may use, "
        "separated by commas (s1,s2,s3); its ids are those of TEST_DIR's generated_unknown/",
    )
    val.set_defaults(func=_validate)

    run = sub.add_parser(
        "run",
        help="run one of the paper's methods (1-4), a similarity method (sim-*) or a baseline "
        "(base-*) on ImageCLEF data",
        description=_run.__doc__,
    )
    run.add_argument(
        "--method",
        required=True,
        choices=[*METHODS, *SIMILARITY_KEYS],
        help="1 MobileNetV2, 2 DenseNet-121, 3 ResNet-50 (ImageNet-pretrained), "
        "4 MobileNetV2 on ESRGAN x4 images (not pretrained); sim-ssim (SSIM), sim-pixel "
        "(pixels), sim-shift (best of small moves of the query), sim-fused (cross-validated "
        "fusion of pixel and SSIM): similarity to the generated set at 64x64 (to the mean of "
        "the closest generated images, for sim-ssim, sim-pixel and sim-fused) as a density "
        "ratio to all the real images (labels unused), threshold calibrated on --holdout "
        "(default 0.25 for them); base-ganleaks, base-vcmi: the published GAN-Leaks and VCMI "
        "(2023 winner, SSIM real-real threshold_max) methods as baselines. base-vcmi is "
        "exhaustive full-size SSIM (every test image against every generated image at 256x256, "
        "plus the leak test): minutes where the sim-* presets take seconds",
    )
    run.add_argument("--data", required=True, help="development data folder")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--test", help="test data folder (generated/ and real_unknown/)")
    run.add_argument("--test-labels", help="id,label CSV of the test images, to evaluate")
    run.add_argument(
        "--decision",
        default=None,
        help="threshold:T, calibrated:f1|accuracy|kappa, or top:FRACTION (default: threshold:0.5 "
        "for methods 1-4, as the paper; threshold:0 (its own threshold_max) for base-vcmi; "
        "calibrated:accuracy for the other sim-*/base-*)",
    )
    run.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="fraction of labelled real images kept out of training to calibrate and evaluate "
        "(default: 0 for methods 1-4, the paper trains on all; 0.25 for sim-*)",
    )
    run.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        help="network input size (methods 1-3: 224, method 4: 896) or the size sim-* compare "
        "at (default: the preset's)",
    )
    run.add_argument(
        "--max-epochs",
        "--epochs",
        dest="max_epochs",
        type=_positive,
        default=None,
        help="methods 1-4: training epochs (default 50)",
    )
    run.add_argument(
        "--batch-size", type=_positive, default=None, help="methods 1-4: batch size (default 32)"
    )
    run.add_argument(
        "--copies",
        type=_positive,
        default=None,
        help="methods 1-4: versions of each real image in training (default 50, the paper's)",
    )
    run.add_argument(
        "--weights",
        default=None,
        help="methods 1-4: 'default' (the method's), 'none' (random init), 'imagenet', or a "
        "state-dict path",
    )
    run.add_argument(
        "--test-generated",
        default="development",
        choices=["development", "test", "union"],
        help="sim-*/base-*: which generated images score the test images: the development "
        "split's (default; the report's galleries show them), the test split's own (refitted, "
        "threshold kept from development; docs/benchmark.md's protocol) or both",
    )
    run.add_argument(
        "--groups",
        default=None,
        metavar="CSV",
        help="sim-*/base-*: id,group CSV saying which real images (development and test, ids "
        "without .png) come from one patient: the density ratio then counts patients, not "
        "slices, and the leak test keeps each patient in one fold (unlisted images stand alone)",
    )
    run.add_argument(
        "--on-unreadable",
        default="error",
        choices=["error", "skip", "predict:0", "predict:1"],
        help="images that cannot be decoded (each is listed before any work): error (default: "
        "stop), skip (development images only), predict:0|1 (test images get that label)",
    )
    _add_machine_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    rep = sub.add_parser(
        "report", help="write the report page of run output folders", description=_report.__doc__
    )
    rep.add_argument(
        "folders", nargs="+", metavar="OUT_DIR", help="output folders of ctfp run/demo"
    )
    rep.add_argument(
        "--out",
        default=None,
        help="where to write the page: a .html file, or a folder (default: the first OUT_DIR)",
    )
    rep.add_argument(
        "--redo-galleries",
        action="store_true",
        help="search the nearest generated images again even where a gallery is saved",
    )
    rep.set_defaults(func=_report)

    _add_upscale(sub)
    _add_attribution(sub)
    _add_leaktest(sub)
    return parser


def _version() -> str:
    from ctfp import __version__

    return __version__


def _check_out(out: str) -> None:
    """An output folder that can be made or written: a wrong ``--out`` fails before any work.
    Nothing is created here (a run that stops on bad data leaves no empty folder behind)."""
    if out == "":
        raise ValueError("--out: expected an output folder, found '' (an empty name)")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out}: a file is there; expected a folder (new or existing)")
    # the run builds beside the folder and moves into it: the parent must be writable too
    ancestor = Path(os.path.abspath(path)).parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"--out {out}: cannot create the folder: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot create the folder: {ancestor} is not writable")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder is not writable")


class _MessageHandler(logging.Handler):
    """The library's messages: information (the leak test) on the current ``sys.stdout``,
    warnings (unreadable files) on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        print(self.format(record), file=stream)


@contextlib.contextmanager
def _show_messages() -> Iterator[None]:
    """Show the ``ctfp`` loggers' messages (INFO and above) while a command runs; the library
    used from a script afterwards prints nothing again."""
    logger, handler = logging.getLogger("ctfp"), _MessageHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _debug(args: argparse.Namespace) -> bool:
    return bool(args.debug) or os.environ.get("CTFP_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # options that can be checked now, before any work
        if getattr(args, "device", None) is not None:
            check_device(args.device)  # the form; availability when the model is built
        if args.command in ("run", "demo", "attribute", "cluster", "leaktest"):
            _check_out(args.out)
    except ValueError as exc:
        print(f"ctfp {args.command}: {exc}", file=sys.stderr)
        return 2
    from ctfp.data.datasets import DatasetError
    from ctfp.exceptions import CtfpError
    from ctfp.imageclef.methods import MethodUnavailable

    try:
        with _show_messages():
            return int(args.func(args))
    except MethodUnavailable as exc:
        return _fail(args, str(exc), 3)
    except (DatasetError, ValueError) as exc:
        return _fail(args, str(exc), 2)
    except CtfpError as exc:
        return _fail(args, str(exc), 1)
    except OSError as exc:  # a full disk, a folder that went away: one line, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(args, f"{where}{exc.strerror or exc}", 1)
    except KeyboardInterrupt as exc:
        # the runner says what it did with the output folder (RunInterrupted)
        return _fail(args, f"interrupted; {exc}" if str(exc) else "interrupted", 130)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    """The one-line message of a failure (after its traceback with --debug/CTFP_DEBUG=1), and
    the exit code."""
    if _debug(args):
        traceback.print_exc()
    print(f"ctfp {args.command}: {message}", file=sys.stderr)
    return code
