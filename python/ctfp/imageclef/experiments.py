"""The paper's Methods 1-4 (KDE Lab, ImageCLEFmedical GANs 2024) as named presets, run end to end:
datasets -> the 50x training set -> classifier -> scores -> decision rule -> metrics tables,
plots and validated run files, with a record of everything needed to repeat the run.

The classifier learns real (0) vs generated (1); a real test image scored as generated is
predicted "used" (its fingerprints appear in the generated set). The score of a real image is
its probability of "generated".
"""

from __future__ import annotations

import csv
import functools
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import write_text_atomic
from ctfp.data.datasets import Dataset, DatasetError, find_datasets
from ctfp.data.expansion import paper_training_set
from ctfp.exceptions import CtfpError
from ctfp.imageclef.runfile import write_run_file
from ctfp.membership.decision import CalibratedThreshold, make_rule
from ctfp.membership.metrics import evaluate, write_tables

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

    def record(self) -> dict[str, Any]:
        """What a run's record says of the method: a similarity method's own settings
        (``options``), without the classifier fields (backbone, weights, super-resolution)
        that do not apply to it."""
        out = asdict(self)
        if self.kind == "similarity":
            for name in ("backbone", "weights", "super_resolution"):
                out.pop(name)
        return out


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


class LabelsError(CtfpError, ValueError):
    """A test-labels CSV that cannot be used; the message names the file and the line."""


_ID_HEADERS = ("id", "image_id", "image", "name", "file", "filename")
_LABEL_HEADERS = ("label", "labels", "used", "member", "y")


def _id_rows(path: Path, what: str, fields: str, value_headers: tuple[str, ...]) -> Any:
    """``(line, id, value)`` of each ``id,value`` row of a CSV file: a header row (an id
    header and one of ``value_headers``, any case) is skipped, ``.png`` is stripped from ids,
    blank lines are skipped; a row without two fields, an empty value or a duplicate id raises
    :class:`LabelsError` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path}: cannot read the {what}: {exc}") from exc
    first_line: dict[str, int] = {}
    seen_row = False
    for no, row in enumerate(csv.reader(text.splitlines()), 1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if len(cells) != 2:
            raise LabelsError(f"{path}:{no}: expected 2 fields ({fields}), found {len(cells)}")
        ident, value = cells
        first_row, seen_row = not seen_row, True
        if first_row and ident.lower() in _ID_HEADERS and value.lower() in value_headers:
            continue  # the header row
        if ident.lower().endswith(".png"):
            ident = ident[:-4]
        if not ident or not value:
            raise LabelsError(f"{path}:{no}: expected {fields}, found an empty field")
        if ident in first_line:
            raise LabelsError(
                f"{path}:{no}: duplicate id {ident!r} (first on line {first_line[ident]})"
            )
        first_line[ident] = no
        yield no, ident, value
    if not first_line:
        raise LabelsError(f"{path}: no {fields.split(',')[1]}s found; expected lines of {fields}")


def read_test_labels(
    path: str | os.PathLike[str], test_ids: Sequence[str] | None = None
) -> dict[str, int]:
    """Ground truth of test images: ``id,label`` per line -> ``{id: 0 or 1}``.

    A header row (``id,label``, ``image_id,label``, ... in any case) is recognised and skipped;
    ids may carry ``.png`` or not (it is stripped); blank lines are skipped. With ``test_ids``
    (the test folder's image ids), every id must be one of them and every one of them must have
    a label. Anything else raises :class:`LabelsError` naming the file and line: a row without
    two fields, a label other than 0/1, a duplicate id, an unknown id, missing ids.
    """
    path = Path(path)
    known = (
        None
        if test_ids is None
        else {Path(i).stem if i.lower().endswith(".png") else i for i in test_ids}
    )
    labels: dict[str, int] = {}
    for no, ident, label in _id_rows(path, "test labels", "id,label", _LABEL_HEADERS):
        if label not in ("0", "1"):
            raise LabelsError(f"{path}:{no}: label of {ident!r}: expected 0 or 1, found {label!r}")
        if known is not None and ident not in known:
            raise LabelsError(
                f"{path}:{no}: unknown id {ident!r}: no such image in the test folder"
            )
        labels[ident] = int(label)
    if known is not None and len(labels) < len(known):
        missing = sorted(known - labels.keys())
        shown = ", ".join(missing[:5]) + (
            f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        )
        raise LabelsError(f"{path}: {len(missing)} test images have no label: {shown}")
    return labels


_GROUP_HEADERS = ("group", "groups", "patient", "patient_id", "subject", "subject_id")


def read_groups(path: str | os.PathLike[str]) -> dict[str, str]:
    """Which real images belong together (e.g. the patient of each CT slice): ``id,group`` per
    line -> ``{id: group}``; ids are image file names without ``.png``, development and test
    images alike. A header row (``id,group``, ``image_id,patient``, ... in any case) is skipped.
    A row without two fields, an empty field or a duplicate id raises :class:`LabelsError`
    naming the file and line. Images not listed are groups of their own."""
    path = Path(path)
    return {ident: g for _, ident, g in _id_rows(path, "groups", "id,group", _GROUP_HEADERS)}


class UnreadableImagesError(CtfpError, ValueError):
    """Images that cannot be decoded, under ``on_unreadable="error"``; all of them are named."""


ON_UNREADABLE = ("error", "skip", "predict:0", "predict:1")
#: ``test_generated=`` of :func:`run_method`: which generated images score the test images
TEST_GENERATED = ("development", "test", "union")


def _unreadable(
    dev_sets: list[Dataset], test_sets: list[Dataset], policy: str, threads: int | None
) -> list[dict[str, str]]:
    """Decode every image before any work; print each one that fails (name and reason) to
    stderr; then apply ``policy``.

    - ``"error"``: stop, naming every unreadable image.
    - ``"skip"``: leave unreadable development images out (they are listed in the record);
      unreadable test images still stop the run, as a run file needs a line for every test id.
    - ``"predict:0"``/``"predict:1"``: as ``"skip"`` for development images; unreadable test
      images get that label in the run file and are listed in the record.

    Files that are not ``.png`` are not images: they are listed, never an error.
    """
    if policy not in ON_UNREADABLE:
        raise ValueError(
            f"on_unreadable: expected one of {', '.join(map(repr, ON_UNREADABLE))}, "
            f"found {policy!r}"
        )
    found = []
    for split, sets in (("development", dev_sets), ("test", test_sets)):
        for ds in sets:
            for kind, scan in ds.folders.items():
                scan.verify(threads)
                for path, why in scan.unreadable:
                    image = path.suffix.lower() == ".png"
                    found.append(
                        {
                            "split": split,
                            "dataset": ds.name,
                            "folder": kind,
                            "path": str(path),
                            "reason": why,
                            "action": "ignored (not an image)" if not image else "",
                        }
                    )
    images = [f for f in found if not f["action"]]
    for f in found:
        print(f"unreadable: {f['path']}: {f['reason']}", file=sys.stderr)
    test_bad = [f for f in images if f["split"] == "test"]
    if images and (policy == "error" or (policy == "skip" and test_bad)):
        stop = images if policy == "error" else test_bad
        hint = (
            "use --on-unreadable skip (development images) or predict:0|1 (test images)"
            if policy == "error"
            else "a run file needs every test id: use --on-unreadable predict:0|1"
        )
        raise UnreadableImagesError(
            f"{len(stop)} unreadable image(s), first {stop[0]['path']}: {stop[0]['reason']}; {hint}"
        )
    for f in images:
        f["action"] = f"predicted {policy.split(':')[1]}" if f["split"] == "test" else "left out"
    return found


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
        from ctfp.models.classifier import FingerprintClassifier

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
            torch_threads=cfg["torch_threads"],
            random_state=cfg["seed"],
            verbose=cfg["verbose"],
        )
        hold_paths, hold_labels = info.get("_holdout", ([], []))
        if len(set(hold_labels)) == 2:
            # The task's own metric per epoch: ROC-AUC of P(generated) on the held-out real
            # images, used vs not used (the report plots it as the validation curve).
            from sklearn.metrics import roc_auc_score

            hold_inputs = prepare(list(hold_paths))

            def holdout_auc(est: Any, **logs: Any) -> None:
                p = est.predict_proba(hold_inputs)[:, list(est.classes_).index(1)]
                est.history_[-1]["val_roc_auc"] = float(roc_auc_score(hold_labels, p))

            clf.set_params(callbacks=[holdout_auc])
            info["validation"] = (
                f"val_roc_auc: membership ROC-AUC on the {len(hold_labels)} held-out development "
                f"real images after each epoch"
            )
        t0 = time.perf_counter()
        clf.fit(ts.sources, ts.labels, sample_augment=ts.augment)
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
        from ctfp.superres import UpscaleCache, Upscaler
    except ImportError as exc:  # torch missing
        raise MethodUnavailable(f"Method 4 needs ESRGAN (ctfp.superres, torch): {exc}") from exc
    from ctfp.data.preprocess import load_batch

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


def _run_method(
    method: str | int | Method,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    test: str | os.PathLike[str] | None = None,
    test_labels: str | os.PathLike[str] | None = None,
    decision: str = "threshold:0.5",
    holdout: float = 0.0,
    epochs: int = 50,
    image_size: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-4,
    copies: int = 50,
    weights: str | None = "default",
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    torch_threads: int | None = None,
    verbose: int = 1,
    sr_cache: str | os.PathLike[str] | None = None,
    scorer: ScoreFn | None = None,
    on_unreadable: str = "error",
    test_generated: str = "development",
) -> dict:
    """Run one method on development data (and test data when given); write tables, plots, run
    files, ``record.json`` and ``report.html`` (:mod:`ctfp.imageclef.report`) into ``out``;
    return the record.

    ``holdout`` keeps that fraction of the labelled real images out of training, to calibrate
    the decision rule and to evaluate on images the classifier never saw (the paper used all of
    them, with the 0.5 threshold). ``decision`` is ``"threshold:T"``, ``"calibrated:METRIC"`` or
    ``"top:FRACTION"``; calibration uses the held-out development images only, never test labels.
    Method 4 upscales every image with ESRGAN (224 -> 896) into the disk cache ``sr_cache``
    (default ``out/esrgan_cache``); ``image_size`` defaults to 896 for it, 224 otherwise.
    Every image is decoded once before any work; ``on_unreadable`` says what happens to those
    that fail (see :func:`_unreadable`: ``"error"``, ``"skip"``, ``"predict:0"``,
    ``"predict:1"``).

    ``test_generated`` (runs with a ``scorer``, the similarity methods): which generated images
    the test images are scored against. ``"development"``: the development split's, those the
    scorer was fitted with. ``"test"``: the test split's own (the task gives each split its
    generated images): the scorer is fitted a second time, on the same development images with
    the test split's generated images, and scores the test images; the decision rule fitted on
    the held-out development scores decides (each split's generated images come from the same
    generator, in the same number, so a score means the same against either). ``"union"``:
    the scorer is fitted once on both splits' generated images, and every score (held-out,
    leak test, test) is against all of them. The record's ``datasets[i]["test_generated"]``
    says which, with how many images.
    """
    if test_generated not in TEST_GENERATED:
        raise ValueError(
            f"test_generated: expected one of {', '.join(map(repr, TEST_GENERATED))}, "
            f"found {test_generated!r}"
        )
    m = method if isinstance(method, Method) else get_method(method)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rule_proto = make_rule(decision)
    if isinstance(rule_proto, CalibratedThreshold) and holdout <= 0:
        raise ValueError(
            f"decision={decision!r} calibrates a threshold on held-out development images: "
            "pass holdout > 0 (e.g. 0.25), or use 'threshold:0.5' or 'top:0.5'"
        )
    if image_size is None:
        image_size = 896 if m.super_resolution else 224  # the paper: ESRGAN x4 of 224 inputs
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
        torch_threads=torch_threads,
        verbose=verbose,
        sr_cache=str(sr_cache) if sr_cache is not None else str(out / "esrgan_cache"),
    )
    if scorer is not None:  # a similarity method: its settings are the method's options
        for name in ("epochs", "image_size", "batch_size", "lr", "copies", "weights", "sr_cache"):
            cfg.pop(name)
    dev_sets = find_datasets(data, require="development")
    test_sets = find_datasets(test, require="test") if test is not None else []
    unreadable = _unreadable(dev_sets, test_sets, on_unreadable, threads)
    truth = (
        read_test_labels(test_labels, [p.stem for ts in test_sets for p in ts.unknown])
        if test_labels is not None
        else {}
    )
    record: dict[str, Any] = {
        "method": m.record(),
        "data": str(data),
        "test": None if test is None else str(test),
        "config": {
            **cfg,
            "decision": decision,
            "holdout": holdout,
            "on_unreadable": on_unreadable,
            "test_generated": test_generated if scorer is not None else "development",
        },
        "unreadable": unreadable,
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
    record_path = out / f"record_method{m.key}.json"
    incomplete = out / "INCOMPLETE"
    # Until the run ends, the folder says it is partial (an interrupted or failed run leaves it);
    # the record is rewritten after each dataset, so it holds what was finished.
    write_text_atomic(
        incomplete,
        f"ctfp run {m.key} started {record['started']}; this folder is partial until the run "
        f"finishes (see {record_path.name}: status)\n",
    )
    record["status"] = "running"
    indexes: list = []  # the method's own generated-set index per dataset, for the report
    for ds, ts in _match(dev_sets, test_sets):
        real, labels = ds.real()
        train_idx, hold_idx = _split_holdout(real, labels, holdout, seed)
        info: dict[str, Any] = {"dataset": ds.summary(), "holdout_images": len(hold_idx)}
        # held-out images for a classifier's per-epoch curve; popped before the record is written
        info["_holdout"] = ([real[i] for i in hold_idx], [labels[i] for i in hold_idx])
        # every real image of the dataset, labels unused (a similarity scorer's reference set)
        real_all = list(real) + (list(ts.unknown) if ts is not None else [])
        info["_real_all"] = real_all
        # which generated images score the test images (similarity scorers only)
        mode = test_generated if scorer is not None and ts is not None and ts.generated else None
        generated = list(ds.generated)
        if mode == "union":
            generated += ts.generated  # type: ignore[union-attr]
        score, info = fit(
            ds, [real[i] for i in train_idx], [labels[i] for i in train_idx], generated, info
        )
        info.pop("_holdout", None)
        info.pop("_real_all", None)
        # a similarity scorer is SimilarityMembership.score_samples: keep its estimator's index
        indexes.append(getattr(getattr(score, "__self__", None), "index_", None))
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
            info["holdout_scores"] = [  # [path, label, score, predicted] per held-out image
                [str(real[i]), int(a), float(b), int(c)]
                for i, a, b, c in zip(hold_idx, hy, hs, hp, strict=True)
            ]
        info["decision"] = rule.describe()
        if ts is not None:
            t_paths = ts.unknown
            t_score = score
            if mode == "test":  # the same fit, against the test split's generated images
                t_info: dict[str, Any] = {"refit_for_test": True, "_real_all": real_all}
                t_score, t_info = fit(
                    ds,
                    [real[i] for i in train_idx],
                    [labels[i] for i in train_idx],
                    ts.generated,
                    t_info,
                )
                info["test_fit_seconds"] = t_info.get("fit_seconds")
            info["test_generated"] = {
                "split": mode or "development",
                "images": len(ts.generated if mode == "test" else generated),
            }
            t_scores = np.asarray(t_score(t_paths), dtype=float)
            t_pred = rule.predict(t_scores)
            test_tag = ts.name.replace("/", "_")  # named for the split it predicts
            # unreadable test images under predict:L get label L (none under the other policies)
            forced = [
                Path(f["path"])
                for f in unreadable
                if f["split"] == "test"
                and f["dataset"] == ts.name
                and f["action"]
                and f["action"].startswith("predicted")
            ]
            forced_label = int(on_unreadable.split(":")[1]) if forced else 0
            run_path = write_run_file(
                out / f"run_method{m.key}_{test_tag}.txt",
                [*t_paths, *forced],
                np.r_[t_pred, np.full(len(forced), forced_label)].astype(int),
                test_dir=ts.folders["real_unknown"].path,  # this dataset's own (numbered) folder
            )
            info["run_file"] = str(run_path)
            info["test_predicted_used"] = int(t_pred.sum())
            write_text_atomic(
                out / f"scores_method{m.key}_{test_tag}.csv",
                "id,score,predicted\n"
                + "".join(
                    f"{p.stem},{s:.6f},{int(v)}\n"
                    for p, s, v in zip(t_paths, t_scores, t_pred, strict=True)
                ),
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
        write_text_atomic(record_path, json.dumps(record, indent=2, default=_jsonable) + "\n")
    for split, title in (("test", "Test"), ("dev", "Development (held-out real images)")):
        if len(dev_sets) > 1 and pooled[f"{split}_y"]:
            both = evaluate(pooled[f"{split}_y"], pooled[f"{split}_p"], pooled[f"{split}_s"])
            rows[title].insert(0, {"method": f"{m.title} [both datasets]", **both})
    record["tables"] = rows
    record["seconds"] = round(time.perf_counter() - t_start, 2)
    if rows:
        write_tables(rows, out, stem=f"results_method{m.key}")
        _plots(out, m, curves, pooled, record)
    record["status"] = "complete"
    write_text_atomic(record_path, json.dumps(record, indent=2, default=_jsonable) + "\n")
    incomplete.unlink()
    from ctfp.imageclef.report import write_run_report

    write_run_report(out, record=record_path.name, indexes=indexes)
    return record


@functools.wraps(_run_method)
def run_method(method: str | int | Method, data: Any, out: Any, **kwargs: Any) -> dict:
    try:
        return _run_method(method, data, out, **kwargs)
    except KeyboardInterrupt:
        _mark_interrupted(method, Path(out))
        raise


def _mark_interrupted(method: str | int | Method, out: Path) -> None:
    """After Ctrl-C: the record says ``"status": "interrupted"`` (with the datasets that were
    finished), the run files of this run are removed (a partial run must not be submitted), and
    the folder keeps its ``INCOMPLETE`` marker."""
    m = method if isinstance(method, Method) else get_method(method)
    path = out / f"record_method{m.key}.json"
    try:
        record = json.loads(path.read_text()) if path.is_file() else {"method": m.record()}
    except (OSError, ValueError):
        record = {"method": m.record()}
    for ds in record.get("datasets", []):
        run_file = ds.pop("run_file", None)
        if run_file:
            Path(run_file).unlink(missing_ok=True)
            ds["run_file_removed"] = run_file
    record["status"] = "interrupted"
    write_text_atomic(path, json.dumps(record, indent=2, default=_jsonable) + "\n")


def _plots(out: Path, m: Method, curves: dict, pooled: dict, record: dict) -> None:
    from ctfp.imageclef.plots import plot_confusion, plot_roc, plot_score_histograms

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
#: options for :class:`ctfp.membership.similarity.SimilarityMembership` (scores only: no
#: ``rule``; the runner's ``decision`` decides). ``"estimator"`` names another membership
#: estimator (:func:`ctfp.membership.estimators.make_estimator`: the fused scores, the published
#: baselines); ``"decision"`` is a preset's own default decision (VCMI's real-real threshold:
#: its ``decision_function`` is the score minus ``threshold_max``, so ``threshold:0``).
#: The sim-* settings are those that won on the realistic benchmark's development split
#: (few-hundred regime, 10,000 generated images, the test split's images unlabelled in the real
#: reference as here; cross-validated development ROC-AUC,
#: benches/membership_presets.py, docs/benchmark_presets.md): comparison at 64x64 (16, 32, 128
#: and SSIM at the task's 256 did worse) and calibration="real", the k-NN density ratio of the
#: generated set to every real image of the dataset (the runner passes the development and test
#: images, labels unused, as ``reference``), which beat no calibration and calibration against
#: the development non-members in every family; statistic="centroid" (closeness to the mean of
#: the k closest images) beat the closest and the mean closeness for pixels and SSIM, but not
#: with query transforms. The real term's 30 neighbours (``k_real``) were chosen by the mean of
#: the same development ROC-AUC with one, three and five slices per patient among the real
#: images (benches/slices_per_patient.py, docs/slices_per_patient.md): 10 won with one slice and
#: fell 0.06-0.09 with more, 30 held for every family.
_CENTROID = {
    "measure": "pixel",
    "image_size": 64,
    "statistic": "centroid",
    "k": 10,
    "k_real": 30,
    "calibration": "real",
}
SIMILARITY_PRESETS: dict[str, dict] = {
    "SSIM to the mean of 10 closest, density ratio": {**_CENTROID, "measure": "ssim"},
    "Pixel to the mean of 10 closest, density ratio": dict(_CENTROID),
    "Pixel k-NN count, density ratio": {
        "measure": "pixel",
        "image_size": 64,
        "statistic": "count",
        "radius_quantile": 0.03,
        "calibration": "real",
    },
    "Pixel 10 closest, transform-robust, density ratio": {
        "measure": "pixel",
        "image_size": 64,
        "statistic": "mean_k",
        "k": 10,
        "k_real": 30,
        "calibration": "real",
        "query_transforms": "small",
    },
    "Fused similarity": {  # the pixel and SSIM presets above, combined
        "estimator": "fused",
        "members": [dict(_CENTROID), {**_CENTROID, "measure": "ssim"}],
    },
    "GAN-Leaks (baseline)": {"estimator": "ganleaks", "image_size": 64},
    "VCMI SSIM (baseline)": {"estimator": "vcmi", "decision": "threshold:0"},
}


#: Short names for the command line (``ctfp run --method sim-ssim``).
SIMILARITY_KEYS = {
    "sim-ssim": "SSIM to the mean of 10 closest, density ratio",
    "sim-pixel": "Pixel to the mean of 10 closest, density ratio",
    "sim-count": "Pixel k-NN count, density ratio",
    "sim-shift": "Pixel 10 closest, transform-robust, density ratio",
    "sim-fused": "Fused similarity",
    "base-ganleaks": "GAN-Leaks (baseline)",
    "base-vcmi": "VCMI SSIM (baseline)",
}


def _similarity_scorer(
    options: dict,
    seed: int,
    *,
    device: Any = "auto",
    n_jobs: int | None = None,
    index_cache: str | os.PathLike[str] | None = None,
    leak_test: bool = True,
    groups: dict[str, str] | None = None,
) -> ScoreFn:
    """Fit :class:`~ctfp.membership.similarity.SimilarityMembership` (or the preset's
    ``"estimator"``) on one dataset for its scores only (``rule=None``): the runner's decision
    rule, fitted on the held-out images, is the one that decides, and its threshold is the one
    the record shows. A preset with a ``"decision"`` of its own scores by the estimator's
    ``decision_function`` (score minus its own threshold).

    With ``leak_test``, before any prediction: :func:`ctfp.membership.leaktest.run_leak_test`
    on all labelled development images (cross-fitted scores, Mann-Whitney U, a no-generator
    control); its result is the record's ``datasets[i]["leak_test"]``, and when it finds no
    leak a console line says that the per-image predictions are unsupported
    (``datasets[i]["predictions_supported"]``)."""
    if "rule" in options:
        raise ValueError(
            f"similarity options: found rule={options['rule']!r}; the estimator only scores "
            f"here, the runner's decision= decides"
        )

    def fit(
        ds: Dataset, real_train: list, real_labels: list, generated: list, info: dict
    ) -> tuple[Callable, dict]:
        from ctfp.membership.estimators import make_estimator

        est = make_estimator(
            options,
            rule=None,
            device=device,
            n_jobs=n_jobs,
            random_state=seed,
            index_cache=index_cache,
        )
        t0 = time.perf_counter()
        # unlabelled real images (all development and test images) for calibration="real",
        # with their groups (patients) when known
        real_all = info.get("_real_all")
        fit_params: dict[str, Any] = {}
        takes = inspect.signature(est.fit).parameters
        found = None if groups is None else _groups_of(real_all or real_train, groups)
        if real_all and "reference" in takes:
            fit_params["reference"] = real_all
            if found is not None and "reference_groups" in takes:
                fit_params["reference_groups"] = found
        if found is not None and not info.get("refit_for_test"):
            named = [g for g in found if g is not None]
            if not named:
                raise LabelsError(
                    f"groups: no id of the groups file names an image of dataset {ds.name!r} "
                    f"(ids are image file names without .png, e.g. "
                    f"{Path(str((real_all or real_train)[0])).stem!r})"
                )
            info["groups"] = {"images_grouped": len(named), "groups": len(set(named))}
        est.fit(real_train, real_labels, generated=generated, **fit_params)
        info["fit_seconds"] = round(time.perf_counter() - t0, 2)
        if info.get("refit_for_test"):  # the runner's second fit, for the test split only
            score = est.decision_function if "decision" in options else est.score_samples
            return score, info
        info["similarity"] = est.describe()  # settings only: no threshold of its own
        if leak_test:
            from ctfp.membership.leaktest import reusable_generated, run_leak_test

            t0 = time.perf_counter()
            real, labels = ds.real()
            grp = None
            if groups is not None:  # each patient whole in one fold; an unlisted image alone
                grp = [
                    "image\0" + str(p) if g is None else "group\0" + g
                    for p, g in zip(real, _groups_of(real, groups), strict=True)
                ]
            lt = run_leak_test(
                est,
                real,
                labels,
                generated=reusable_generated(est),
                random_state=seed,
                groups=grp,
                fit_params=fit_params,
            )
            lt["seconds"] = round(time.perf_counter() - t0, 2)
            info["leak_test"] = lt
            info["predictions_supported"] = lt["supported"]
            note = "" if lt["supported"] else "; its per-image predictions are UNSUPPORTED"
            print(f"leak test [{ds.name}]: {lt['message']}{note}")
        score = est.decision_function if "decision" in options else est.score_samples
        return score, info

    return fit


def _groups_of(images: Sequence[Any], groups: dict[str, str]) -> list[str | None]:
    """The group of each image (a path) by its id (file name without .png), or None."""
    return [
        groups.get(Path(im).stem) if isinstance(im, (str, os.PathLike)) else None for im in images
    ]


def run_similarity(
    name: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    decision: str | None = None,
    test_generated: str = "development",
    holdout: float = 0.25,
    image_size: int | None = None,
    seed: int = 0,
    verbose: int = 1,
    index_cache: str | os.PathLike[str] | None = None,
    leak_test: bool = True,
    groups: str | os.PathLike[str] | dict[str, str] | None = None,
    **kwargs: Any,
) -> dict:
    """Run a similarity preset (:data:`SIMILARITY_PRESETS`) through :func:`run_method`.

    The estimator is fitted on the generated images and the training part of the labelled real
    images, and only scores; ``decision`` (default ``"calibrated:accuracy"``) is fitted on the
    held-out ones and decides. One threshold: the record's ``datasets[i]["decision"]``.
    ``device`` and ``threads`` (as :func:`run_method` takes them) reach the estimator;
    ``image_size`` replaces the preset's comparison size. ``decision=None``: the preset's own
    (``"decision"``) or ``"calibrated:accuracy"``. ``index_cache``: a folder where the fitted
    generated-set index is saved and reused across runs. ``leak_test``: run the leak test
    first (see :func:`_similarity_scorer`). ``test_generated``: which generated images score the
    test images (:func:`run_method`); by default the development split's (the report's
    galleries show those neighbours); ``"test"`` is the realistic benchmark's protocol.
    ``groups``: which real images belong together (the patient of each slice), an ``id,group``
    CSV file (:func:`read_groups`) or a dict: ``calibration="real"`` then counts patients, not
    images (``SimilarityMembership.fit(reference_groups=)``), and the leak test keeps each
    patient in one fold and compares patients' mean scores."""
    group_of = read_groups(groups) if isinstance(groups, (str, os.PathLike)) else groups
    name = SIMILARITY_KEYS.get(name, name)
    if name not in SIMILARITY_PRESETS:
        known = ", ".join(map(repr, SIMILARITY_PRESETS))
        raise ValueError(f"similarity preset {name!r}: expected one of {known}")
    options = dict(SIMILARITY_PRESETS[name])
    if image_size is not None:
        options["image_size"] = image_size
    key = "sim_" + "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    method = Method(key, name, kind="similarity", weights=None, options=options)
    if decision is None:
        decision = options.get("decision", "calibrated:accuracy")
    return run_method(
        method,
        data,
        out,
        decision=decision,
        holdout=holdout,
        seed=seed,
        verbose=verbose,
        test_generated=test_generated,
        scorer=_similarity_scorer(
            options,
            seed,
            device=kwargs.get("device", "auto"),
            n_jobs=kwargs.get("threads"),
            index_cache=index_cache,
            leak_test=leak_test,
            groups=None if group_of is None else {str(k): str(v) for k, v in group_of.items()},
        ),
        **kwargs,
    )
