"""The paper's Methods 1-4 (KDE Lab, ImageCLEFmedical GANs 2024) as named presets, run end to end:
datasets -> the 50x training set -> classifier -> scores -> decision rule -> metrics tables,
plots and validated run files, with a record of everything needed to repeat the run.

The classifier learns real (0) vs generated (1); a real test image scored as generated is
predicted "used" (its fingerprints appear in the generated set). The score of a real image is
its probability of "generated".
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import Dataset, DatasetError, find_datasets
from .decision import CalibratedThreshold, make_rule
from .exceptions import CtfpError
from .expansion import paper_training_set
from .metrics import evaluate, write_tables
from .runfile import write_run_file

__all__ = [
    "METHODS",
    "SIMILARITY_KEYS",
    "SIMILARITY_PRESETS",
    "Method",
    "MethodUnavailable",
    "run_method",
    "run_similarity",
]


class MethodUnavailable(CtfpError, RuntimeError):
    """The method needs something this installation lacks (e.g. ESRGAN for Method 4)."""


@dataclass(frozen=True)
class Method:
    """One row of the paper's Table 1, or one of ctfp's similarity methods."""

    key: str
    title: str
    backbone: str = "mobilenet_v2"
    weights: str | None = "imagenet"
    super_resolution: bool = False
    kind: str = "classifier"  # or "similarity"
    options: dict = field(default_factory=dict)


METHODS: dict[str, Method] = {
    "1": Method("1", "Method 1: MobileNetV2, ImageNet-pretrained", "mobilenet_v2", "imagenet"),
    "2": Method("2", "Method 2: DenseNet-121, ImageNet-pretrained", "densenet121", "imagenet"),
    "3": Method("3", "Method 3: ResNet-50, ImageNet-pretrained", "resnet50", "imagenet"),
    "4": Method(
        "4",
        "Method 4: MobileNetV2 on ESRGAN x4 images, not pretrained",
        "mobilenet_v2",
        None,
        super_resolution=True,
    ),
}


def get_method(key: str | int) -> Method:
    k = str(key)
    if k not in METHODS:
        raise ValueError(f"method: unknown method {key!r}; expected one of {', '.join(METHODS)}")
    return METHODS[k]


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("ctfp", "numpy", "torch", "torchvision", "scikit-learn", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def read_test_labels(path: str | os.PathLike[str]) -> dict[str, int]:
    """Ground truth of test images, ``id,label`` per line (as the demo data writes it)."""
    labels = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if row:
                labels[row[0]] = int(row[1])
    return labels


def _match(dev: list[Dataset], test: list[Dataset]) -> list[tuple[Dataset, Dataset | None]]:
    if not test:
        return [(d, None) for d in dev]
    if len(dev) != len(test):
        raise DatasetError(
            f"found {len(dev)} development datasets ({', '.join(d.name for d in dev)}) but "
            f"{len(test)} test datasets ({', '.join(t.name for t in test)}); they must pair up"
        )
    return list(zip(dev, test, strict=True))


def _split_holdout(
    real: list, labels: list[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(real))
    if fraction <= 0:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split

    train, hold = train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(hold)


#: ``fit(dataset, real_train, real_train_labels, generated, info) -> (score, info)``: trains on
#: one development dataset and returns a function scoring real images (higher = more likely used).
ScoreFn = Callable[[Dataset, list, list, list, dict], tuple[Callable[[list], np.ndarray], dict]]


def _classifier_scorer(method: Method, cfg: dict) -> ScoreFn:
    """Fit the paper's classifier on one dataset; return a function scoring real images."""

    def fit(
        ds: Dataset, real_train: list, real_labels: list, generated: list, info: dict
    ) -> tuple[Callable, dict]:
        from .estimator import FingerprintClassifier

        prepare = _esrgan_inputs(cfg) if method.super_resolution else list
        real_train, generated = prepare(real_train), prepare(generated)
        ts = paper_training_set(real_train, generated, copies=cfg["copies"])
        clf = FingerprintClassifier(
            backbone=method.backbone,
            weights=cfg["weights"] if cfg["weights"] != "default" else method.weights,
            image_size=cfg["image_size"],
            batch_size=cfg["batch_size"],
            max_epochs=cfg["epochs"],
            lr=cfg["lr"],
            device=cfg["device"],
            n_jobs=cfg["threads"],
            random_state=cfg["seed"],
            verbose=cfg["verbose"],
        )
        t0 = time.perf_counter()
        clf.fit(ts.sources, ts.labels, augment=ts.augment)
        info["fit_seconds"] = round(time.perf_counter() - t0, 2)
        info["training_images"] = len(ts)
        info["history"] = clf.history_
        info["device"] = clf.device_
        col = list(clf.classes_).index(1)
        return (lambda paths: clf.predict_proba(prepare(paths))[:, col]), info

    return fit


def _esrgan_inputs(cfg: dict) -> Callable[[list], list]:
    """Method 4's inputs: each image resized to 224 (the paper's input size), upscaled x4 by
    ESRGAN to 896, cached on disk by content and model (so each image is upscaled once across
    runs), and returned as paths of the cached PNGs for the Rust pipeline to read."""
    try:
        from .superres import UpscaleCache, Upscaler
    except ImportError as exc:  # torch missing
        raise MethodUnavailable(f"Method 4 needs ESRGAN (ctfp.superres, torch): {exc}") from exc
    from .preprocess import load_batch

    cache = UpscaleCache(
        cfg["sr_cache"], Upscaler(device=cfg["device"], progress=cfg["verbose"] > 0)
    )

    def prepare(paths: list, chunk: int = 128) -> list:
        out: list = []
        for k in range(0, len(paths), chunk):
            small = load_batch(paths[k : k + chunk], size=(224, 224), layout="grey")[:, 0]
            out += cache.upscale_paths(list(small))
        return out

    return prepare


def run_method(
    method: str | int | Method,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    test: str | os.PathLike[str] | None = None,
    test_labels: str | os.PathLike[str] | None = None,
    decision: str = "threshold:0.5",
    holdout: float = 0.0,
    epochs: int = 50,
    image_size: int = 224,
    batch_size: int = 32,
    lr: float = 1e-4,
    copies: int = 50,
    weights: str | None = "default",
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    verbose: int = 1,
    sr_cache: str | os.PathLike[str] | None = None,
    scorer: ScoreFn | None = None,
) -> dict:
    """Run one method on development data (and test data when given); write tables, plots, run
    files and ``record.json`` into ``out``; return the record.

    ``holdout`` keeps that fraction of the labelled real images out of training, to calibrate
    the decision rule and to evaluate on images the classifier never saw (the paper used all of
    them, with the 0.5 threshold). ``decision`` is ``"threshold:T"``, ``"calibrated:METRIC"`` or
    ``"top:FRACTION"``; calibration uses the held-out development images only, never test labels.
    Method 4 upscales every image with ESRGAN (224 -> 896) into the disk cache ``sr_cache``
    (default ``out/esrgan_cache``) and trains at ``image_size=896`` unless told otherwise.
    """
    m = method if isinstance(method, Method) else get_method(method)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rule_proto = make_rule(decision)
    if isinstance(rule_proto, CalibratedThreshold) and holdout <= 0:
        raise ValueError(
            f"decision={decision!r} calibrates a threshold on held-out development images: "
            "pass holdout > 0 (e.g. 0.25), or use 'threshold:0.5' or 'top:0.5'"
        )
    if m.super_resolution and image_size == 224:
        image_size = 896  # the paper: ESRGAN x4 of the 224 inputs
    cfg = dict(
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        copies=copies,
        weights=weights,
        device=device,
        seed=seed,
        threads=threads,
        verbose=verbose,
        sr_cache=str(sr_cache) if sr_cache is not None else str(out / "esrgan_cache"),
    )
    dev_sets = find_datasets(data, require="development")
    test_sets = find_datasets(test, require="test") if test is not None else []
    truth = read_test_labels(test_labels) if test_labels is not None else {}
    record: dict[str, Any] = {
        "method": asdict(m),
        "data": str(data),
        "test": None if test is None else str(test),
        "config": {**cfg, "decision": decision, "holdout": holdout},
        "versions": _versions(),
        "git_commit": _git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "datasets": [],
    }
    fit = scorer or _classifier_scorer(m, cfg)
    curves: dict[str, tuple] = {}
    pooled: dict[str, list] = {
        "dev_y": [],
        "dev_s": [],
        "dev_p": [],
        "test_y": [],
        "test_s": [],
        "test_p": [],
    }
    rows: dict[str, list[dict]] = {}
    t_start = time.perf_counter()
    for ds, ts in _match(dev_sets, test_sets):
        tag = ds.name.replace("/", "_")
        real, labels = ds.real()
        train_idx, hold_idx = _split_holdout(real, labels, holdout, seed)
        info: dict[str, Any] = {"dataset": ds.summary(), "holdout_images": len(hold_idx)}
        score, info = fit(
            ds, [real[i] for i in train_idx], [labels[i] for i in train_idx], ds.generated, info
        )
        rule = make_rule(decision)
        if len(hold_idx):
            hs = np.asarray(score([real[i] for i in hold_idx]), dtype=float)
            hy = np.asarray([labels[i] for i in hold_idx])
            rule.fit(hs, hy)
            hp = rule.predict(hs)
            info["holdout"] = evaluate(hy, hp, hs)
            rows.setdefault("Development (held-out real images)", []).append(
                {"method": f"{m.title} [{ds.name}]", **info["holdout"]}
            )
            pooled["dev_y"] += hy.tolist()
            pooled["dev_s"] += hs.tolist()
            pooled["dev_p"] += hp.tolist()
        info["decision"] = rule.describe()
        if ts is not None:
            t_paths = ts.unknown
            t_scores = np.asarray(score(t_paths), dtype=float)
            t_pred = rule.predict(t_scores)
            run_path = write_run_file(
                out / f"run_method{m.key}_{tag}.txt", t_paths, t_pred, test_dir=ts.root
            )
            info["run_file"] = str(run_path)
            info["test_predicted_used"] = int(t_pred.sum())
            np.savetxt(
                out / f"scores_method{m.key}_{tag}.csv",
                np.c_[np.arange(len(t_paths)), t_scores],
                delimiter=",",
                fmt=["%d", "%.6f"],
            )
            if truth:
                ty = np.asarray([truth[p.stem] for p in t_paths])
                info["test"] = evaluate(ty, t_pred, t_scores)
                info["test_truth"] = ty.tolist()
                info["test_scores"] = t_scores.tolist()
                rows.setdefault("Test", []).append(
                    {"method": f"{m.title} [{ds.name}]", **info["test"]}
                )
                pooled["test_y"] += ty.tolist()
                pooled["test_s"] += t_scores.tolist()
                pooled["test_p"] += t_pred.tolist()
                curves[f"{ds.name} test"] = (ty, t_scores)
        record["datasets"].append(info)
    for split, title in (("test", "Test"), ("dev", "Development (held-out real images)")):
        if len(dev_sets) > 1 and pooled[f"{split}_y"]:
            both = evaluate(pooled[f"{split}_y"], pooled[f"{split}_p"], pooled[f"{split}_s"])
            rows[title].insert(0, {"method": f"{m.title} [both datasets]", **both})
    record["tables"] = rows
    record["seconds"] = round(time.perf_counter() - t_start, 2)
    if rows:
        write_tables(rows, out, stem=f"results_method{m.key}")
        _plots(out, m, curves, pooled, record)
    (out / f"record_method{m.key}.json").write_text(
        json.dumps(record, indent=2, default=_jsonable) + "\n"
    )
    return record


def _plots(out: Path, m: Method, curves: dict, pooled: dict, record: dict) -> None:
    from .plots import plot_confusion, plot_roc, plot_score_histograms

    split = "test" if pooled["test_y"] else "dev"
    if not pooled[f"{split}_y"]:
        return
    y, s, p = (np.asarray(pooled[f"{split}_{k}"]) for k in ("y", "s", "p"))
    plot_roc(
        curves or {split: (y, s)}, out / f"roc_method{m.key}.png", title=f"{m.title}: ROC ({split})"
    )
    thr = record["datasets"][0]["decision"].get("threshold")
    plot_score_histograms(
        y, s, out / f"scores_method{m.key}.png", title=f"{m.title} ({split})", threshold=thr
    )
    plot_confusion(
        evaluate(y, p)["confusion"],
        out / f"confusion_method{m.key}.png",
        title=f"{m.title} ({split})",
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return str(v)


#: ctfp's similarity methods (DESIGN.md section 3) as presets next to the paper's Methods 1-4:
#: options for :class:`ctfp.similarity.SimilarityMembership`.
SIMILARITY_PRESETS: dict[str, dict] = {
    "SSIM closest": {"measure": "ssim", "statistic": "max"},
    "Pixel closest, calibrated": {
        "measure": "pixel",
        "image_size": 64,
        "statistic": "max",
        "calibration": "reference",
    },
    "Pixel k-NN count": {"measure": "pixel", "image_size": 64, "statistic": "count"},
}


#: Short names for the command line (``ctfp run --method sim-ssim``).
SIMILARITY_KEYS = {
    "sim-ssim": "SSIM closest",
    "sim-pixel": "Pixel closest, calibrated",
    "sim-count": "Pixel k-NN count",
}


def _similarity_scorer(options: dict, seed: int) -> ScoreFn:
    def fit(
        ds: Dataset, real_train: list, real_labels: list, generated: list, info: dict
    ) -> tuple[Callable, dict]:
        from .similarity import SimilarityMembership

        est = SimilarityMembership(**options, random_state=seed)
        t0 = time.perf_counter()
        est.fit(generated, real=real_train, y=real_labels)
        info["fit_seconds"] = round(time.perf_counter() - t0, 2)
        info["similarity"] = est.describe()
        return est.score_samples, info

    return fit


def run_similarity(
    name: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    decision: str = "calibrated:accuracy",
    holdout: float = 0.25,
    seed: int = 0,
    verbose: int = 1,
    **kwargs: Any,
) -> dict:
    """Run a similarity preset (:data:`SIMILARITY_PRESETS`) through :func:`run_method`: fitted on
    the generated images and the training part of the labelled real images, its threshold
    calibrated on the held-out ones."""
    name = SIMILARITY_KEYS.get(name, name)
    if name not in SIMILARITY_PRESETS:
        known = ", ".join(map(repr, SIMILARITY_PRESETS))
        raise ValueError(f"similarity preset {name!r}: expected one of {known}")
    options = SIMILARITY_PRESETS[name]
    key = "sim_" + "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    method = Method(key, name, kind="similarity", weights=None, options=options)
    return run_method(
        method,
        data,
        out,
        decision=decision,
        holdout=holdout,
        seed=seed,
        verbose=verbose,
        scorer=_similarity_scorer(options, seed),
        **kwargs,
    )
