"""The ``ctfp`` command line.

Exit codes: 0 success; 1 the job failed (an invalid run file, a failed step); 2 bad usage or
data that cannot be used (missing folders, unreadable layout); 3 the method needs something this
installation lacks (e.g. ESRGAN for Method 4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    """The whole task on built-in data: a small ImageCLEF-style dataset from synthetic CT-like
    slices whose generator leaks its training images to a known degree, the paper's Method 1 and
    ctfp's similarity methods on it, tables, plots and validated run files in OUT."""
    from .demo import run_demo

    weights = None if args.weights.lower() == "none" else args.weights
    run_demo(
        args.out,
        quick=args.quick,
        epochs=args.epochs,
        image_size=args.image_size,
        weights=weights,
        device=args.device,
        seed=args.seed,
        threads=args.threads,
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Check a run file against the organisers' rules and the test images; list every problem
    with its line number. Exit 0 when valid, 1 when not, 2 when the run file or the test folder
    cannot be used (missing, unreadable, no test images)."""
    from .datasets import DatasetError
    from .runfile import RunFileError, validate_run_file

    path = Path(args.runfile)
    if not path.is_file():
        print(f"ctfp validate: {path}: no such file", file=sys.stderr)
        return 2
    try:
        problems = validate_run_file(path, args.test_dir, strip_extension=not args.keep_extension)
    except (DatasetError, RunFileError, OSError) as exc:
        # A test folder that is missing or holds no test images, or a file that cannot be read:
        # nothing was checked, so this is exit 2 (bad usage or bad folder), not 1 (invalid file).
        print(f"ctfp validate: {exc}", file=sys.stderr)
        return 2
    for p in problems:
        where = f"{path}:{p.line}" if p.line else str(path)
        print(f"{where}: {p.kind}: {p.message}")
    if problems:
        print(f"{path}: INVALID ({len(problems)} problems)")
        return 1
    print(f"{path}: valid")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run one of the paper's methods (1-4) or a similarity method (sim-*) on ImageCLEF data:
    train on the development data (for 1-4: real vs generated, the 50x expanded training set),
    score the real images, decide, and write tables, plots, validated run files and a record of
    the run into OUT."""
    from .experiments import run_method, run_similarity

    common = dict(
        test=args.test, test_labels=args.test_labels, seed=args.seed, verbose=0 if args.quiet else 1
    )
    if args.method.startswith("sim-"):
        holdout = args.holdout if args.holdout > 0 else 0.25
        decision = "calibrated:accuracy" if args.decision == "threshold:0.5" else args.decision
        record = run_similarity(
            args.method, args.data, args.out, decision=decision, holdout=holdout, **common
        )
    else:
        weights = {"none": None, "default": "default"}.get(args.weights.lower(), args.weights)
        record = run_method(
            args.method,
            args.data,
            args.out,
            decision=args.decision,
            holdout=args.holdout,
            epochs=args.epochs,
            image_size=args.image_size,
            batch_size=args.batch_size,
            copies=args.copies,
            weights=weights,
            device=args.device,
            threads=args.threads,
            **common,
        )
    for title, rows in record.get("tables", {}).items():
        from .metrics import markdown_table

        print(markdown_table(rows, title=title), end="\n\n")
    for ds in record["datasets"]:
        if "run_file" in ds:
            print(f"run file: {ds['run_file']} ({ds['test_predicted_used']} predicted used)")
    key = record["method"]["key"]
    print(f"record: {Path(args.out) / f'record_method{key}.json'} ({record['seconds']} s)")
    return 0


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
        "--batch-size", type=_positive, default=4, help="tiles per forward pass (default 4)"
    )
    p.add_argument("--fp32", action="store_true", help="float32 on CUDA too (default there: fp16)")
    p.add_argument("--pattern", default="*.png", help="file pattern (default *.png)")
    p.add_argument("--recursive", action="store_true", help="also look in subfolders")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_upscale)
    return p


def _upscale(args: argparse.Namespace) -> int:
    from .superres import run_upscale_command

    return run_upscale_command(args)


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctfp", description="Training-data fingerprints in generated lung CT."
    )
    parser.add_argument("--version", action="version", version=f"ctfp {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the pipeline on built-in synthetic CT-like slices",
        description=_demo.__doc__,
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--epochs", type=_positive, default=3, help="Method 1 epochs (default 3)")
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
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    demo.add_argument(
        "--threads", type=_positive, default=None, help="loader threads (default: all cores)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--quick", action="store_true", help="a tiny version (seconds), as the test suite runs it"
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
    val.set_defaults(func=_validate)

    run = sub.add_parser(
        "run",
        help="run one of the paper's methods (1-4) on ImageCLEF data",
        description=_run.__doc__,
    )
    run.add_argument(
        "--method",
        required=True,
        choices=["1", "2", "3", "4", "sim-ssim", "sim-pixel", "sim-count"],
        help="1 MobileNetV2, 2 DenseNet-121, 3 ResNet-50 (ImageNet-pretrained), "
        "4 MobileNetV2 on ESRGAN x4 images; sim-ssim, sim-pixel (GAN-Leaks calibration), "
        "sim-count (k-NN count): similarity to the generated set, threshold calibrated on "
        "--holdout (default 0.25 for them)",
    )
    run.add_argument("--data", required=True, help="development data folder")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--test", help="test data folder (generated/ and real_unknown/)")
    run.add_argument("--test-labels", help="id,label CSV of the test images, to evaluate")
    run.add_argument(
        "--decision",
        default="threshold:0.5",
        help="threshold:T (paper: 0.5), calibrated:f1|accuracy|kappa, or top:FRACTION",
    )
    run.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction of labelled real images kept out of training to calibrate "
        "and evaluate (default 0: the paper trains on all)",
    )
    run.add_argument("--epochs", type=_positive, default=50)
    run.add_argument("--image-size", type=_positive, default=224)
    run.add_argument("--batch-size", type=_positive, default=32)
    run.add_argument(
        "--copies",
        type=_positive,
        default=50,
        help="versions of each real image in training (paper: 50)",
    )
    run.add_argument(
        "--weights",
        default="default",
        help="'default' (the method's), 'none' (random init), 'imagenet', or a state-dict path",
    )
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=_positive, default=None, help="loader threads")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    _add_upscale(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .datasets import DatasetError
    from .exceptions import CtfpError
    from .experiments import MethodUnavailable

    try:
        return int(args.func(args))
    except MethodUnavailable as exc:
        print(f"ctfp {args.command}: {exc}", file=sys.stderr)
        return 3
    except (DatasetError, ValueError) as exc:
        print(f"ctfp {args.command}: {exc}", file=sys.stderr)
        return 2
    except CtfpError as exc:
        print(f"ctfp {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
