"""The runner: one method on ImageCLEF-style data, in named steps.

``run(method, scorer, data, out, ...)``::

    find_data      development (and test) datasets, paired
    check_images   decode every image first; apply the unreadable-image policy
    read_truth     the test labels, when given, checked against the test images
    for each dataset:
        split      hold out a stratified fraction of the labelled real images
        fit        scorer.fit(Fold)            (classifier or similarity: :mod:`.scorers`)
        decide     the decision rule, fitted on the held-out scores
        evaluate   metrics of the held-out images
        predict    score the test images (refitted on the test split's generated images when
                   asked), write the run file and the scores file
        evaluate   metrics of the test images, when their labels are known
        write      the record, after each dataset
    write          tables, plots, the record (complete) and report.html

The file names come from :mod:`ctfp.imageclef.layout`. The output folder is marked
``INCOMPLETE`` until the run ends; Ctrl-C leaves the record ``"interrupted"`` and removes the
run files of the run (a partial run must not be submitted).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import write_text_atomic
from ctfp.data.datasets import Dataset, DatasetError, find_datasets
from ctfp.exceptions import CtfpError
from ctfp.imageclef import layout
from ctfp.imageclef.layout import image_id, read_test_labels
from ctfp.imageclef.methods import Method
from ctfp.imageclef.runfile import write_run_file
from ctfp.imageclef.scorers import Fold, Scorer
from ctfp.membership.decision import CalibratedThreshold, make_rule
from ctfp.membership.metrics import evaluate, write_tables

__all__ = [
    "ON_UNREADABLE",
    "TEST_GENERATED",
    "UnreadableImagesError",
    "check_images",
    "find_data",
    "run",
    "split_holdout",
]


class UnreadableImagesError(CtfpError, ValueError):
    """Images that cannot be decoded, under ``on_unreadable="error"``; all of them are named."""


ON_UNREADABLE = ("error", "skip", "predict:0", "predict:1")
#: ``test_generated=``: which generated images score the test images
TEST_GENERATED = ("development", "test", "union")

_DEV_TITLE = "Development (held-out real images)"


# --------------------------------------------------------------------------------------------------
# steps


def find_data(
    data: str | os.PathLike[str], test: str | os.PathLike[str] | None
) -> list[tuple[Dataset, Dataset | None]]:
    """The development datasets under ``data``, each paired with its test dataset under
    ``test`` (in order) or None."""
    dev = find_datasets(data, require="development")
    tests = find_datasets(test, require="test") if test is not None else []
    if not tests:
        return [(d, None) for d in dev]
    if len(dev) != len(tests):
        raise DatasetError(
            f"found {len(dev)} development datasets ({', '.join(d.name for d in dev)}) but "
            f"{len(tests)} test datasets ({', '.join(t.name for t in tests)}); they must pair up"
        )
    return list(zip(dev, tests, strict=True))


def check_images(
    pairs: list[tuple[Dataset, Dataset | None]], policy: str, threads: int | None
) -> list[dict[str, str]]:
    """Decode every image before any work; print each one that fails (name and reason) to
    stderr; then apply ``policy``; return every file that failed, with what was done.

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
    dev_sets = [d for d, _ in pairs]
    test_sets = [t for _, t in pairs if t is not None]
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


def read_truth(
    test_labels: str | os.PathLike[str] | None, pairs: list[tuple[Dataset, Dataset | None]]
) -> dict[str, int]:
    """``{test image id: label}`` from ``test_labels`` (checked against the test images), or
    ``{}``."""
    if test_labels is None:
        return {}
    ids = [image_id(p) for _, ts in pairs if ts is not None for p in ts.unknown]
    return read_test_labels(test_labels, ids)


def split_holdout(
    real: list, labels: list[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out real images: a stratified ``fraction`` held out
    (none for ``fraction <= 0``), sorted."""
    idx = np.arange(len(real))
    if fraction <= 0:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split

    train, hold = train_test_split(idx, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(hold)


@dataclass
class _Results:
    """The metric tables and the pooled scores of every dataset (for the plots)."""

    rows: dict[str, Any] = field(default_factory=dict)  # title -> list of row dicts
    pooled: dict[str, list] = field(
        default_factory=lambda: {f"{s}_{k}": [] for s in ("dev", "test") for k in "ysp"}
    )
    curves: dict[str, tuple] = field(default_factory=dict)

    def add(self, split: str, title: str, row_name: str, y: Any, s: Any, p: Any) -> dict:
        metrics = evaluate(y, p, s)
        self.rows.setdefault(title, []).append({"method": row_name, **metrics})
        self.pooled[f"{split}_y"] += np.asarray(y).tolist()
        self.pooled[f"{split}_s"] += np.asarray(s).tolist()
        self.pooled[f"{split}_p"] += np.asarray(p).tolist()
        return metrics

    def add_pooled_rows(self, method: Method, n_datasets: int) -> None:
        """A "both datasets" row first in each table, over several datasets."""
        for split, title in (("test", "Test"), ("dev", _DEV_TITLE)):
            if n_datasets > 1 and self.pooled[f"{split}_y"]:
                p = self.pooled
                both = evaluate(p[f"{split}_y"], p[f"{split}_p"], p[f"{split}_s"])
                self.rows[title].insert(0, {"method": f"{method.title} [both datasets]", **both})


def _evaluate_holdout(
    results: _Results, method: Method, ds: Dataset, score: Any, rule: Any, hold: list, hy: list
) -> dict[str, Any]:
    """Fit ``rule`` on the held-out scores and evaluate it there; the record's entries."""
    hs = np.asarray(score(hold), dtype=float)
    y = np.asarray(hy)
    rule.fit(hs, y)
    hp = rule.predict(hs)
    metrics = results.add("dev", _DEV_TITLE, f"{method.title} [{ds.name}]", y, hs, hp)
    return {
        "holdout": metrics,
        "holdout_scores": [  # [path, label, score, predicted] per held-out image
            [str(p), int(a), float(b), int(c)] for p, a, b, c in zip(hold, y, hs, hp, strict=True)
        ],
    }


def _predict_test(
    out: Path,
    ts: Dataset,
    scores: np.ndarray,
    rule: Any,
    unreadable: list[dict],
    on_unreadable: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decide the test images; write the split's run file (validated) and scores file."""
    t_paths = ts.unknown
    t_pred = rule.predict(scores)
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
        layout.run_file_path(out, ts.name),  # named for the split it predicts
        [*t_paths, *forced],
        np.r_[t_pred, np.full(len(forced), forced_label)].astype(int),
        test_dir=ts.folders["real_unknown"].path,  # this dataset's own (numbered) folder
    )
    write_text_atomic(
        layout.scores_path(out, ts.name),
        "id,score,predicted\n"
        + "".join(
            f"{image_id(p)},{s:.6f},{int(v)}\n"
            for p, s, v in zip(t_paths, scores, t_pred, strict=True)
        ),
    )
    return t_pred, {"run_file": str(run_path), "test_predicted_used": int(t_pred.sum())}


# --------------------------------------------------------------------------------------------------
# the run


def run(
    method: Method,
    scorer: Scorer,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    test: str | os.PathLike[str] | None = None,
    test_labels: str | os.PathLike[str] | None = None,
    decision: str = "threshold:0.5",
    holdout: float = 0.0,
    seed: int = 0,
    threads: int | None = None,
    on_unreadable: str = "error",
    test_generated: str = "development",
) -> dict:
    """Run ``method`` scored by ``scorer`` on the development data ``data`` (and the test data
    ``test``); write the run's files into ``out`` (:mod:`ctfp.imageclef.layout`); return the
    record. The arguments are those of :func:`ctfp.imageclef.experiments.run_method`."""
    out = Path(out)
    _check_settings(method, scorer, out, decision, holdout, test_generated)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(
            method, scorer, data, out, test, test_labels, decision, holdout, seed, threads,
            on_unreadable, test_generated,
        )  # fmt: skip
    except KeyboardInterrupt:
        mark_interrupted(method, out)
        raise


def _check_settings(
    method: Method, scorer: Scorer, out: Path, decision: str, holdout: float, test_generated: str
) -> None:
    if test_generated not in TEST_GENERATED:
        raise ValueError(
            f"test_generated: expected one of {', '.join(map(repr, TEST_GENERATED))}, "
            f"found {test_generated!r}"
        )
    if test_generated != "development" and not scorer.refits:
        raise ValueError(
            f"test_generated={test_generated!r}: method {method.key} scores each test image by "
            f"itself; only 'development' applies"
        )
    if isinstance(make_rule(decision), CalibratedThreshold) and holdout <= 0:
        raise ValueError(
            f"decision={decision!r} calibrates a threshold on held-out development images: "
            "pass holdout > 0 (e.g. 0.25), or use 'threshold:0.5' or 'top:0.5'"
        )
    previous = _read_record(layout.record_path(out))
    key = (previous or {}).get("method", {}).get("key")
    if key is not None and key != method.key:
        raise ValueError(
            f"out {out}: holds the run of method {key} ({layout.RECORD}); each method needs "
            f"its own folder, e.g. {layout.method_dir(out.parent, method.key)}"
        )


def _run(
    m: Method,
    scorer: Scorer,
    data: str | os.PathLike[str],
    out: Path,
    test: str | os.PathLike[str] | None,
    test_labels: str | os.PathLike[str] | None,
    decision: str,
    holdout: float,
    seed: int,
    threads: int | None,
    on_unreadable: str,
    test_generated: str,
) -> dict:
    pairs = find_data(data, test)
    unreadable = check_images(pairs, on_unreadable, threads)
    truth = read_truth(test_labels, pairs)
    config = {**scorer.config(), "decision": decision, "holdout": holdout}
    config["on_unreadable"] = on_unreadable
    if scorer.refits:
        config["test_generated"] = test_generated
    record: dict[str, Any] = {
        "method": m.record(),
        "data": str(data),
        "test": None if test is None else str(test),
        "config": config,
        "unreadable": unreadable,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "datasets": [],
    }
    results = _Results()
    t_start = time.perf_counter()
    record_path = layout.record_path(out)
    # Until the run ends, the folder says it is partial (an interrupted or failed run leaves it);
    # the record is rewritten after each dataset, so it holds what was finished.
    incomplete = out / layout.INCOMPLETE
    write_text_atomic(
        incomplete,
        f"ctfp run {m.key} started {record['started']}; this folder is partial until the run "
        f"finishes (see {layout.RECORD}: status)\n",
    )
    record["status"] = "running"
    indexes: list = []  # the method's own generated-set index per dataset, for the report
    for ds, ts in pairs:
        # split
        real, labels = ds.real()
        train_idx, hold_idx = split_holdout(real, labels, holdout, seed)
        info: dict[str, Any] = {"dataset": ds.summary(), "holdout_images": len(hold_idx)}
        # which generated images score the test images (scorers that refit only)
        mode = test_generated if scorer.refits and ts is not None and ts.generated else None
        generated = list(ds.generated)
        if mode == "union":
            generated += ts.generated  # type: ignore[union-attr]
        fold = Fold(
            dataset=ds,
            real=[real[i] for i in train_idx],
            labels=[labels[i] for i in train_idx],
            generated=generated,
            holdout=[real[i] for i in hold_idx],
            holdout_labels=[labels[i] for i in hold_idx],
            # every real image of the dataset, labels unused (a similarity scorer's reference)
            reference=list(real) + (list(ts.unknown) if ts is not None else []),
        )
        # fit
        fitted = scorer.fit(fold)
        info.update(fitted.info)
        indexes.append(fitted.index)
        # decide and evaluate on the held-out images
        rule = make_rule(decision)
        if len(hold_idx):
            info.update(
                _evaluate_holdout(
                    results, m, ds, fitted.score, rule, fold.holdout, fold.holdout_labels
                )
            )
        info["decision"] = rule.describe()
        if ts is not None:
            # predict the test images
            t_score = fitted.score
            if mode == "test":  # the same fit, against the test split's generated images
                refitted = scorer.refit(dataclasses.replace(fold, generated=list(ts.generated)))
                info["test_fit_seconds"] = refitted.info.get("fit_seconds")
                t_score = refitted.score
            if scorer.refits:
                info["test_generated"] = {
                    "split": mode or "development",
                    "images": len(ts.generated if mode == "test" else generated),
                }
            t_scores = np.asarray(t_score(ts.unknown), dtype=float)
            t_pred, written = _predict_test(out, ts, t_scores, rule, unreadable, on_unreadable)
            info.update(written)
            # evaluate on the test images
            if truth:
                ty = np.asarray([truth[image_id(p)] for p in ts.unknown])
                row = f"{m.title} [{ds.name}]"
                info["test"] = results.add("test", "Test", row, ty, t_scores, t_pred)
                info["test_truth"] = ty.tolist()
                info["test_scores"] = t_scores.tolist()
                results.curves[f"{ds.name} test"] = (ty, t_scores)
        # write
        record["datasets"].append(info)
        _write_record(record_path, record)
    results.add_pooled_rows(m, len(pairs))
    record["tables"] = results.rows
    record["seconds"] = round(time.perf_counter() - t_start, 2)
    if results.rows:
        write_tables(results.rows, out, stem=layout.RESULTS)
        _plots(out, m, results, record)
    record["status"] = "complete"
    _write_record(record_path, record)
    incomplete.unlink()
    from ctfp.imageclef.report import write_run_report

    write_run_report(out, record=layout.RECORD, indexes=indexes)
    return record


def mark_interrupted(method: Method, out: Path) -> None:
    """After Ctrl-C: the record says ``"status": "interrupted"`` (with the datasets that were
    finished), the run files of this run are removed (a partial run must not be submitted), and
    the folder keeps its ``INCOMPLETE`` marker."""
    path = layout.record_path(out)
    record = _read_record(path) or {"method": method.record()}
    for ds in record.get("datasets", []):
        run_file = ds.pop("run_file", None)
        if run_file:
            Path(run_file).unlink(missing_ok=True)
            ds["run_file_removed"] = run_file
    record["status"] = "interrupted"
    _write_record(path, record)


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(path: Path, record: dict) -> None:
    write_text_atomic(path, json.dumps(record, indent=2, default=_jsonable) + "\n")


def _plots(out: Path, m: Method, results: _Results, record: dict) -> None:
    from ctfp.imageclef.plots import plot_confusion, plot_roc, plot_score_histograms

    pooled = results.pooled
    split = "test" if pooled["test_y"] else "dev"
    if not pooled[f"{split}_y"]:
        return
    # (the plots and metrics take arrays as well as the sequences they are typed for)
    y, s, p = (np.asarray(pooled[f"{split}_{k}"]) for k in ("y", "s", "p"))  # type: Any, Any, Any
    plot_roc(
        results.curves or {split: (y, s)},
        layout.roc_plot(out),
        title=f"{m.title}: ROC ({split})",
    )
    thr = record["datasets"][0]["decision"].get("threshold")
    plot_score_histograms(
        y, s, layout.histogram_plot(out), title=f"{m.title} ({split})", threshold=thr
    )
    plot_confusion(
        evaluate(y, p)["confusion"],
        layout.confusion_plot(out),
        title=f"{m.title} ({split})",
    )


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


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
