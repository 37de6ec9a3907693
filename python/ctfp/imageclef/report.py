"""The evidence of a run on one page: ``report.html``, a self-contained HTML file a person opens in
a browser (every image embedded as a base64 PNG data URI; no network, no JavaScript; light and
dark colour schemes; prints on A4).

What a report shows, per run (the section ids are :data:`SECTIONS`):

- ``leak-test``: for the similarity methods, the leak test the run made before any prediction
  (does the generator leak at all?): verdict, p-value with its resolution, ROC-AUC with its
  interval, the no-generator control, and the null distribution with the observed statistic;
- ``record``: the method and its options, the configuration and seed, the data folders with their
  image counts and unreadable files, versions, the git commit and the timings (all from
  ``record.json``);
- ``metrics``: the result tables;
- ``decision``: the threshold (or rank rule) that decided, and where it came from;
- ``plots``: ROC curves, score histograms with the threshold, the confusion matrix;
- ``run-files``: each run file, checked again with
  :func:`ctfp.imageclef.runfile.validate_run_file` against the test folder;
- ``galleries``: the evidence: for the real images the method scored highest and a sample of the
  lowest, their nearest generated images (:func:`write_galleries`);
- ``training``: for the paper's Methods 1-4, the classifier's training curves (``history_``).

How the galleries pick neighbours: the real images are those the run scored per image (the test
images when there were any, from ``scores_<split>.csv``; otherwise the held-out development
images); the :data:`N_TOP` highest scores and a seeded sample of :data:`N_LOW` from the lowest
quarter. Their :data:`N_NEIGHBOURS` nearest images are searched among the generated images the
method was fitted on (the development data's), with

- the method's own :class:`~ctfp.membership.index.GeneratedIndex` when the run hands it over
  (``run_method`` does, for the similarity methods: ``SimilarityMembership.index_``), so the
  neighbours are exactly those the scores came from, in the method's measure (SSIM, pixel or
  embedding) and size;
- an index rebuilt with the method's measure, size, backbone and seed when the report is made
  later (``ctfp report``) and no gallery was saved;
- pixel nearest neighbours at 64x64 (RMS grey-level difference) for the paper's Methods 1-4 and
  other scorers without neighbours of their own: a classifier scores each image alone, so the
  gallery shows whether the images it ranks highest have near-copies at all, and says so.

Each gallery is saved as ``gallery_<dataset>.png`` with a ``.json`` beside it (the
images, neighbours and values shown), and reused while the record is the same run.

A page of several runs on one dataset (``ctfp demo``, ``ctfp report A B ...``) leads with the
family's verdict on the leak question (:func:`ctfp.imageclef.leakcheck.leak_families`: Holm's
adjustment of the runs' leak tests; raw and adjusted p-values side by side). ``ctfp leaktest``
folders have a page of their own (:func:`leaktest_report_html`).

``ctfp report OUT_DIR`` rebuilds the page of an output folder (so runs made before reports
existed get one); ``ctfp report A B ...`` writes ``report_compare.html`` (into the first folder,
or ``--out``): one table of all runs with their ROC curves overlaid, then each run in full.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import write_text_atomic
from ctfp.exceptions import CtfpError
from ctfp.imageclef import layout

__all__ = [
    "COMPARE_NAME",
    "N_LOW",
    "N_NEIGHBOURS",
    "N_TOP",
    "REPORT_NAME",
    "SECTIONS",
    "ReportError",
    "ReportWarning",
    "Run",
    "load_runs",
    "leaktest_report_html",
    "write_galleries",
    "write_leaktest_report",
    "write_report",
    "write_run_report",
]

REPORT_NAME = layout.REPORT
COMPARE_NAME = "report_compare.html"
#: The section ids of one run's part of the page (prefixed ``run<N>-`` on a page of several runs,
#: which also has a ``compare`` section).
SECTIONS = (
    "summary",
    "leak-test",
    "metrics",
    "plots",
    "galleries",
    "decision",
    "run-files",
    "training",
    "record",
)
N_TOP, N_LOW, N_NEIGHBOURS = 4, 2, 3
PIXEL_FALLBACK_SIZE = 64
_DISPLAY_MAX = 256


class ReportError(CtfpError, ValueError):
    """A folder that holds no run record, or a record that cannot be read."""


class ReportWarning(UserWarning):
    """The report of a finished run could not be written (the run's own files are complete)."""


class _Unavailable(Exception):
    """A part of the report that cannot be made for this run; the message says why."""


@dataclass
class Run:
    """One run's record (``record.json``) and the folder holding its files (their names:
    :mod:`ctfp.imageclef.layout`)."""

    folder: Path
    record_path: Path
    record: dict

    @property
    def key(self) -> str:
        return str(self.record.get("method", {}).get("key", self.folder.name))

    @property
    def title(self) -> str:
        return str(self.record.get("method", {}).get("title", f"method {self.key}"))

    @property
    def datasets(self) -> list[dict]:
        return list(self.record.get("datasets", []))


def _read_run(path: Path) -> Run:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read the run record: {exc}") from exc
    if not isinstance(record, dict) or "method" not in record:
        raise ReportError(f"{path}: not a ctfp run record (no 'method' entry)")
    problem = _record_problem(record)
    if problem is not None:
        raise ReportError(f"{path}: not a ctfp run record: {problem}")
    return Run(path.parent, path, record)


_NUMBER = (int, float)
_TEXT = (str,)
_METRICS = ("accuracy", "precision", "recall", "f1", "kappa", "roc_auc")


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false"}.get(
        type(v), "null" if v is None else "a number" if isinstance(v, _NUMBER) else type(v).__name__
    )


def _record_problem(record: dict) -> str | None:
    """The first field of ``record`` whose type is not the one a run writes (``"field
    'method': expected an object, found a number"``), or None. Fields that are absent are
    fine (older runs lack some); the report shows what is there."""

    def want(where: str, v: Any, types: tuple, what: str, none: bool = True) -> str | None:
        if (v is None and none) or (isinstance(v, types) and not isinstance(v, bool)):
            return None
        if bool in types and isinstance(v, bool):
            return None
        return f"field {where!r}: expected {what}, found {_type_name(v)}"

    def metrics(where: str, row: Any) -> str | None:
        if not isinstance(row, dict):
            return f"field {where!r}: expected an object, found {_type_name(row)}"
        for k in ("n", *_METRICS):
            bad = want(f"{where}.{k}", row.get(k), _NUMBER, "a number")
            if bad:
                return bad
        return None

    checks: list[tuple[str, Any, tuple, str]] = [
        ("method", record.get("method"), (dict,), "an object"),
        ("datasets", record.get("datasets"), (list,), "a list"),
        ("tables", record.get("tables"), (dict,), "an object"),
        ("config", record.get("config"), (dict,), "an object"),
        ("versions", record.get("versions"), (dict,), "an object"),
        ("unreadable", record.get("unreadable"), (list,), "a list"),
        ("data", record.get("data"), _TEXT, "text"),
        ("test", record.get("test"), _TEXT, "text"),
        ("status", record.get("status"), _TEXT, "text"),
        ("started", record.get("started"), _TEXT, "text"),
        ("seconds", record.get("seconds"), _NUMBER, "a number"),
    ]
    for where, v, types, what in checks:
        bad = want(where, v, types, what, none=where != "method")
        if bad:
            return bad
    for k in ("key", "title", "kind"):
        bad = want(f"method.{k}", record["method"].get(k), _TEXT, "text")
        if bad:
            return bad
    for title, rows in (record.get("tables") or {}).items():
        if not isinstance(rows, list):
            return f"field 'tables.{title}': expected a list, found {_type_name(rows)}"
        for j, row in enumerate(rows):
            bad = metrics(f"tables.{title}[{j}]", row)
            if bad:
                return bad
    for i, info in enumerate(record.get("datasets") or []):
        where = f"datasets[{i}]"
        if not isinstance(info, dict):
            return f"field {where!r}: expected an object, found {_type_name(info)}"
        for k, types, what in (
            ("dataset", (dict,), "an object"),
            ("decision", (dict,), "an object"),
            ("similarity", (dict,), "an object"),
            ("history", (list,), "a list"),
            ("holdout_scores", (list,), "a list"),
            ("test_truth", (list,), "a list"),
            ("run_file", _TEXT, "text"),
            ("holdout_images", _NUMBER, "a number"),
            ("fit_seconds", _NUMBER, "a number"),
            ("test_predicted_used", _NUMBER, "a number"),
        ):
            bad = want(f"{where}.{k}", info.get(k), types, what)
            if bad:
                return bad
        for k in ("holdout", "test"):
            if info.get(k) is not None:
                bad = metrics(f"{where}.{k}", info[k])
                if bad:
                    return bad
        lt = info.get("leak_test")
        if lt is not None:
            if not isinstance(lt, dict):
                return f"field '{where}.leak_test': expected an object, found {_type_name(lt)}"
            for k, types, what in (
                ("verdict", _TEXT, "text"),
                ("p_value", _NUMBER, "a number"),
                ("auc", _NUMBER, "a number"),
                ("auc_interval", (list,), "a list"),
                ("control", (dict,), "an object"),
                ("null_histogram", (dict,), "an object"),
            ):
                bad = want(f"{where}.leak_test.{k}", lt.get(k), types, what)
                if bad:
                    return bad
        dec = info.get("decision") or {}
        for k in ("threshold", "development_value", "fraction"):
            bad = want(f"{where}.decision.{k}", dec.get(k), _NUMBER, "a number")
            if bad:
                return bad
    return None


def load_runs(folder: str | os.PathLike[str]) -> list[Run]:
    """The runs of an output folder: its ``record.json``, or when it has none, those one folder
    down (a folder of several methods keeps one subfolder per method, ``ctfp demo`` does)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(
            f"{folder}: not a folder; expected an output folder of ctfp run or ctfp demo"
        )
    here = layout.record_path(folder)
    files = (
        [here]
        if here.is_file()
        else sorted(p for p in (layout.record_path(d) for d in folder.iterdir()) if p.is_file())
    )
    if not files:
        raise ReportError(
            f"{folder}: no {layout.RECORD} here or one folder down; expected an output "
            f"folder of ctfp run or ctfp demo"
        )
    runs = [_read_run(f) for f in files]
    # in the order they ran (the demo: Method 1 first); ISO times with one zone sort as text
    return sorted(runs, key=lambda r: (str(r.record.get("started", "")), str(r.record_path)))


# --------------------------------------------------------------------------------------------------
# galleries


def _gallery_stem(run: Run, i: int) -> Path:
    name = run.datasets[i].get("dataset", {}).get("dataset", str(i))
    return layout.gallery_stem(run.folder, name)


def _dataset(root: Any, i: int, require: str, expect: str | None = None) -> Any:
    from ctfp.data.datasets import DatasetError, find_datasets

    if root is None:
        raise _Unavailable(f"the record names no {require} folder")
    try:
        sets = find_datasets(root, require=require)
    except DatasetError as exc:
        raise _Unavailable(f"the {require} data cannot be read any more: {exc}") from None
    if i >= len(sets) or (expect is not None and sets[i].name != expect):
        raise _Unavailable(f"{root}: its datasets no longer match the record's")
    return sets[i]


def _scored_images(run: Run, i: int) -> tuple[str, list[Path], np.ndarray, list, list]:
    """(split, real image paths, scores, labels or Nones, predictions) the run scored per image."""
    info = run.datasets[i]
    if "run_file" in info:
        ts = _dataset(run.record.get("test"), i, "test")
        scores_csv = layout.scores_path(run.folder, ts.name)
        try:
            with open(scores_csv, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as exc:
            raise _Unavailable(f"{scores_csv.name}: cannot read the test scores: {exc}") from None
        by_id = {layout.image_id(p): p for p in ts.unknown}
        missing = [r["id"] for r in rows if r["id"] not in by_id]
        if missing:
            raise _Unavailable(f"test image {missing[0]} is no longer in {ts.root}")
        truth = info.get("test_truth")
        labels = list(truth) if truth and len(truth) == len(rows) else [None] * len(rows)
        return (
            "test",
            [by_id[r["id"]] for r in rows],
            np.array([float(r["score"]) for r in rows]),
            labels,
            [int(r["predicted"]) for r in rows],
        )
    held = info.get("holdout_scores")
    if held:
        return (
            "development (held out)",
            [Path(h[0]) for h in held],
            np.array([float(h[2]) for h in held]),
            [int(h[1]) for h in held],
            [int(h[3]) for h in held],
        )
    raise _Unavailable(
        "no image was scored one by one: the run had neither test images (--test) nor held-out "
        "development images (--holdout)"
    )


def _neighbour_index(run: Run, i: int, generated: list, index: Any) -> tuple[Any, str]:
    """The index whose neighbours the gallery shows, and a sentence saying which it is."""
    from ctfp.membership.index import MEASURES, GeneratedIndex

    if isinstance(index, GeneratedIndex) and index.n_samples_fit_ == len(generated):
        h, w = index.image_size_
        return index, f"the method's own index ({index.measure}, {h}x{w})"
    info, rec = run.datasets[i], run.record
    sim = info.get("similarity") or {}
    if rec["method"].get("kind") == "similarity" and sim.get("measure") in MEASURES:
        measure, size = sim["measure"], tuple(sim.get("image_size") or ()) or None
        weights = sim.get("weights")
        config = rec.get("config", {})
        idx = GeneratedIndex(
            measure=measure,
            image_size=size,
            backbone=rec["method"].get("options", {}).get("backbone", "efficientnet_lite0"),
            weights=None if weights in (None, "random") else weights,
            device=config.get("device", "auto") if measure == "embedding" else "cpu",
            random_state=config.get("seed", 0),
        ).fit(generated)
        h, w = idx.image_size_
        return idx, f"the method's measure and size ({measure}, {h}x{w}), re-indexed for the report"
    s = PIXEL_FALLBACK_SIZE
    idx = GeneratedIndex(measure="pixel", image_size=s, device="cpu").fit(generated)
    return idx, (
        f"pixel nearest neighbours at {s}x{s} (RMS grey-level difference): this method has no "
        f"neighbours of its own (a classifier scores each image alone), so the gallery shows "
        f"whether the images it ranks highest have near-copies"
    )


def _pick(scores: np.ndarray, n_top: int, n_low: int, seed: int) -> list[tuple[str, int]]:
    """The ``n_top`` highest scores, then a seeded sample of ``n_low`` from the lowest quarter
    (at least ``n_low`` images), highest first within each group."""
    order = np.argsort(-scores, kind="stable")
    top, rest = order[:n_top], order[n_top:]
    bottom = rest[len(rest) - max(n_low, len(order) // 4) :] if len(rest) else rest
    rng = np.random.default_rng(seed)
    drawn: Any = []
    if len(bottom):
        drawn = rng.choice(bottom, size=min(n_low, len(bottom)), replace=False)
    low = sorted((int(j) for j in drawn), key=lambda j: (-scores[j], j))
    return [("high", int(j)) for j in top] + [("low", j) for j in low]


def _shown(measure: str, value: float) -> str:
    if measure == "ssim":
        return f"SSIM {value:.3f}"
    if measure == "pixel":
        return f"RMS diff {-value:.1f}"
    return f"distance {-value:.3f}"


def _display_size(path: Path) -> tuple[int, int]:
    from ctfp.data.preprocess import decode_png

    h, w = decode_png(path).shape[:2]
    if max(h, w) <= _DISPLAY_MAX:
        return (h, w)
    f = _DISPLAY_MAX / max(h, w)
    return (max(1, round(h * f)), max(1, round(w * f)))


def _make_gallery(run: Run, i: int, index: Any, n_top: int, n_low: int, k: int) -> dict[str, Any]:
    from ctfp.data.images import load_images
    from ctfp.imageclef.plots import GalleryRow, plot_gallery

    info = run.datasets[i]
    split, paths, scores, labels, predicted = _scored_images(run, i)
    expect = info.get("dataset", {}).get("dataset")
    ds = _dataset(run.record.get("data"), i, "development", expect)
    skipped = {f.get("path") for f in run.record.get("unreadable", []) if isinstance(f, dict)}
    generated = [p for p in ds.generated if str(p) not in skipped]  # as the run indexed them
    idx, source = _neighbour_index(run, i, generated, index)
    picks = _pick(scores, n_top, n_low, int(run.record.get("config", {}).get("seed", 0) or 0))
    chosen = [paths[j] for _, j in picks]
    values, nbrs = idx.kneighbors(chosen, n_neighbors=min(k, idx.n_samples_fit_))
    size = _display_size(chosen[0])
    real = load_images(chosen, size=size)
    wanted = sorted({int(n) for n in nbrs.ravel()})
    gen = dict(zip(wanted, load_images([generated[n] for n in wanted], size=size), strict=True))
    rows, figure_rows = [], []
    counts = {"high": 0, "low": 0}
    for r, (group, j) in enumerate(picks):
        counts[group] += 1
        label, pred = labels[j], predicted[j]
        neighbours = [
            {
                "name": Path(generated[n]).name,
                "path": str(generated[n]),
                "closeness": float(v),
                "shown": _shown(idx.measure, float(v)),
            }
            for v, n in zip(values[r], nbrs[r], strict=True)
        ]
        diff = np.abs(real[r].astype(np.int16) - gen[int(nbrs[r][0])].astype(np.int16))
        rows.append(
            {
                "group": group,
                "rank": counts[group],
                "id": layout.image_id(paths[j]),
                "path": str(paths[j]),
                "score": float(scores[j]),
                "label": label,
                "predicted": pred,
                "neighbours": neighbours,
                "mean_abs_diff": float(diff.mean()),
            }
        )
        verdict = "" if pred is None else f"pred. {'used' if pred else 'not used'}"
        if label is not None:
            verdict = f"truth {'used' if label else 'not used'}, {verdict}".rstrip(", ")
        truth = f"\n{verdict}" if verdict else ""
        head = f"highest #{counts[group]}" if group == "high" else f"low (sample) #{counts[group]}"
        figure_rows.append(
            GalleryRow(
                real=real[r],
                title=head,
                caption=_printable(f"{layout.image_id(paths[j])}\nscore {scores[j]:.4g}{truth}"),
                neighbours=[
                    (gen[int(n)], _printable(f"{nb['name']}\n{nb['shown']}"))
                    for n, nb in zip(nbrs[r], neighbours, strict=True)
                ],
            )
        )
    stem = _gallery_stem(run, i)
    png = plot_gallery(
        figure_rows,
        stem.with_suffix(".png"),
        title=f"{run.title} [{info.get('dataset', {}).get('dataset', i)}], {split} images; "
        f"neighbours: {idx.measure} at {idx.image_size_[0]}x{idx.image_size_[1]}"
        + ("" if source.startswith("the method's") else " (the method has none of its own)"),
    )
    return {
        "record_started": run.record.get("started"),
        "image": png.name,
        "split": split,
        "n_scored": len(paths),
        "measure": idx.measure,
        "image_size": list(idx.image_size_),
        "neighbours_from": source,
        "n_generated": len(generated),
        "generated_folder": str(Path(generated[0]).parent) if generated else None,
        "rows": rows,
    }


def write_galleries(
    run: Run,
    *,
    indexes: Sequence[Any] | None = None,
    redo: bool = False,
    n_top: int = N_TOP,
    n_low: int = N_LOW,
    n_neighbors: int = N_NEIGHBOURS,
) -> list[dict[str, Any]]:
    """The evidence gallery of each dataset of ``run`` (see the module docstring), written as
    ``gallery_<dataset>.png`` and ``.json`` into the run's folder; returns what each
    shows (``rows``: the real images, scores, labels, neighbours with their values), or
    ``{"note": why}`` where none can be made.

    ``indexes[i]``: the method's fitted :class:`~ctfp.membership.index.GeneratedIndex` for
    dataset ``i`` (or None). A saved gallery of the same run is reused unless ``redo``."""
    out: list[dict[str, Any]] = []
    for i in range(len(run.datasets)):
        meta_path = _gallery_stem(run, i).with_suffix(".json")
        if not redo and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                if (
                    meta.get("record_started") == run.record.get("started")
                    and (run.folder / meta["image"]).is_file()
                ):
                    out.append(meta)
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                pass  # made again below
        index = indexes[i] if indexes is not None and i < len(indexes) else None
        try:
            meta = _make_gallery(run, i, index, n_top, n_low, n_neighbors)
        except _Unavailable as exc:
            out.append({"note": str(exc)})
            continue
        write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
        out.append(meta)
    return out


# --------------------------------------------------------------------------------------------------
# HTML pieces

_CSS = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1f2328; --muted: #59636e;
  --card: #f6f8fa; --line: #d1d9e0; --accent: #0550ae; --ok: #1a7f37; --bad: #cf222e;
  --warn: #9a6700; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --card: #151b23; --line: #3d444d;
    --accent: #4493f8; --ok: #3fb950; --bad: #f85149; --warn: #d29922; }
}
* { box-sizing: border-box; }
html { background: var(--bg); color: var(--fg); }
body { margin: 0 auto; max-width: 1120px; padding: 1.5rem 1.25rem 4rem; background: var(--bg);
  color: var(--fg); font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans",
  "DejaVu Sans", sans-serif; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .3rem;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 1.08rem; margin: 1.6rem 0 .5rem; }
h4 { font-size: .98rem; margin: 1rem 0 .4rem; }
a { color: var(--accent); }
p, li { max-width: 80ch; }
.muted, figcaption, .note { color: var(--muted); }
.note { font-style: italic; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, monospace;
  font-size: .88em; overflow-wrap: anywhere; }
nav { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: .6rem 1rem; margin: 1rem 0; }
nav ul { margin: .2rem 0; padding-left: 1.2rem; }
nav li { max-width: none; }
section, article { margin: 0; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem;
  font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .6rem; text-align: left;
  vertical-align: top; }
th { background: var(--card); font-weight: 600; }
td.num, th.num { text-align: right; }
.wide { display: block; overflow-x: auto; max-width: 100%; }
.fit table { width: 100%; }
.fit th, .fit td { padding: .3rem .4rem; }
.fit td:nth-child(-n+2) { overflow-wrap: anywhere; min-width: 9rem; }
.fit td.num, .fit th { white-space: nowrap; }
figure { margin: .8rem 0 1.4rem; }
figure img { display: block; max-width: 100%; height: auto; background: #fff;
  border: 1px solid var(--line); border-radius: 4px; }
.figs { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.figs figure { flex: 1 1 320px; margin: 0; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 1rem; font-weight: 600;
  font-size: .85rem; border: 1px solid currentColor; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; overflow-wrap: anywhere; }
dl.kv.cols { grid-template-columns: repeat(3, max-content minmax(5rem, 1fr)); }
@media (max-width: 900px) { dl.kv.cols { grid-template-columns: max-content 1fr; } }
.cards { display: flex; flex-wrap: wrap; gap: .6rem; margin: .6rem 0 1rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: .45rem .8rem; min-width: 7.5rem; flex: 0 1 auto; }
.card .label { color: var(--muted); font-size: .8rem; text-transform: uppercase;
  letter-spacing: .04em; }
.card .value { font-size: 1.35rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: .78rem; max-width: 13rem; }
nav ul.flat { display: flex; flex-wrap: wrap; gap: .2rem 1.2rem; list-style: none;
  padding-left: 0; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  :root { --bg: #fff; --fg: #000; --muted: #444; --card: #f2f2f2; --line: #bbb;
    --accent: #000; --ok: #116329; --bad: #a40e26; --warn: #7d4e00; }
  html, body { background: #fff; color: #000; }
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav { display: none; }
  h2, h3, h4 { break-after: avoid; }
  figure, table, tr, dl.kv { break-inside: avoid; }
  figure img { max-height: 240mm; width: auto; max-width: 100%; }
  .wide { overflow: visible; }
  article + article { break-before: page; }
  a { color: inherit; text-decoration: none; }
}
"""


class Markup(str):
    """Text that is HTML already: built by :func:`_h` (or the helpers below) from escaped
    values, so :func:`_e` passes it through unchanged."""


def _e(v: Any) -> Markup:
    """The one escaping of the page: a value as HTML text. Markup passes through; numbers and
    other values are formatted from themselves (:func:`_fmt`); text is escaped, and names that
    are not UTF-8 (surrogate escapes from ``os.listdir``) are shown with backslash escapes."""
    if isinstance(v, Markup):
        return v
    return Markup(html.escape(_printable(v if isinstance(v, str) else _fmt(v))))


def _printable(text: str) -> str:
    """``text`` as UTF-8 can carry it: the bytes of a file name that is not UTF-8 (surrogate
    escapes from ``os.listdir``) shown as backslash escapes (``odd\\udce9``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _h(template: str, *values: Any) -> Markup:
    """HTML from ``template`` (trusted, written here) with each ``{}`` filled by a value
    through :func:`_e`: the only way a value reaches the page."""
    return Markup(template.format(*(_e(v) for v in values)))


def _num(v: Any, spec: str) -> Markup:
    """A number formatted by ``spec`` (``".3f"``); anything else (an edited record's text)
    escaped as it is."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return Markup(format(v, spec))
    return _e(v)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.{digits}g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return str(v)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], num: Sequence[int] = ()
) -> Markup:
    """A table; every header and cell goes through :func:`_e` (HTML cells are :class:`Markup`,
    built by :func:`_h`)."""
    head = "".join(
        _h('<th class="num">{}</th>', h) if c in num else _h("<th>{}</th>", h)
        for c, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            _h('<td class="num">{}</td>', cell) if c in num else _h("<td>{}</td>", cell)
            for c, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return Markup(f'<div class="wide">{table}</div>')


def _kv(pairs: Sequence[tuple[str, Any]], cls: str = "") -> Markup:
    """A definition list; every key and value goes through :func:`_e`."""
    items = "".join(_h("<dt>{}</dt><dd>{}</dd>", k, v) for k, v in pairs)
    return _h('<dl class="kv {}">{}</dl>', cls, Markup(items))


def _png_size(path: Path) -> tuple[int, int] | None:
    data = path.read_bytes()[:24]
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _figure(path: Path, alt: str, caption: Any = "") -> Markup:
    """An ``<img>`` with the PNG inlined as a data URI; ``alt`` and ``caption`` go through
    :func:`_e` (a caption with markup is :class:`Markup`, built by :func:`_h`)."""
    if not path.is_file():
        return _h('<p class="note">{}: not in the folder.</p>', path.name)
    size = _png_size(path)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = _h("<figcaption>{}</figcaption>", caption) if caption else ""
    return _h('<figure><img src="data:image/png;base64,{}" alt="{}"{}>{}</figure>', data, alt,
              Markup(dims), cap)  # fmt: skip


def _note(text: Any) -> Markup:
    return _h('<p class="note">{}</p>', text)


# --------------------------------------------------------------------------------------------------
# one run's sections


def _record_section(run: Run) -> str:
    rec = run.record
    m = rec.get("method", {})
    parts: list[str] = [
        _kv(
            [
                ("method", _e(f"{m.get('title', '?')} (key {m.get('key', '?')})")),
                ("kind", _e(_fmt(m.get("kind")))),
                *(
                    [("method options", _h("<code>{}</code>", _fmt(m.get("options") or {})))]
                    if m.get("kind") == "similarity"
                    else [
                        ("backbone, weights", _e(f"{m.get('backbone')}, {_fmt(m.get('weights'))}")),
                        ("super-resolution", _e(_fmt(m.get("super_resolution")))),
                    ]
                ),
                ("development data", _h("<code>{}</code>", _fmt(rec.get("data")))),
                ("test data", _h("<code>{}</code>", _fmt(rec.get("test")))),
                ("seed", _e(_fmt(rec.get("config", {}).get("seed")))),
                ("started", _e(_fmt(rec.get("started")))),
                ("status", _e(_fmt(rec.get("status")))),
                ("run time", _e(f"{_fmt(rec.get('seconds'))} s")),
                ("git commit", _h("<code>{}</code>", _fmt(rec.get("git_commit")))),
                ("record", _h("<code>{}</code>", str(run.record_path))),
            ]
        )
    ]
    config = rec.get("config", {})
    if config:
        parts.append("<h4>Configuration</h4>")
        parts.append(_kv([(k, _h("<code>{}</code>", _fmt(v))) for k, v in config.items()], "cols"))
    for info in run.datasets:
        ds = info.get("dataset", {})
        parts.append(_h("<h4>Dataset {}</h4>", _fmt(ds.get("dataset"))))
        rows, bad_lines = [], []
        for kind, f in ds.get("folders", {}).items():
            bad = f.get("unreadable", [])
            sizes = ", ".join(f"{n} at {s}" for s, n in f.get("sizes", {}).items()) or "–"
            cls = "bad" if bad else "ok"
            rows.append(
                [
                    _e(kind),
                    _h("<code>{}</code>", f.get("path", "")),
                    _e(str(f.get("images", "?"))),
                    _e(sizes),
                    _h('<span class="{}">{}</span>', cls, len(bad)),
                ]
            )
            bad_lines += [f"{kind}: {b}" for b in bad]
        parts.append(_table(["folder", "path", "images", "sizes", "unreadable"], rows, num=(2, 4)))
        if bad_lines:
            shown = "".join(_h("<li><code>{}</code></li>", b) for b in bad_lines[:20])
            more = _h("<li>... {} more</li>", len(bad_lines) - 20) if len(bad_lines) > 20 else ""
            parts.append(f'<p class="bad">Unreadable files (skipped):</p><ul>{shown}{more}</ul>')
        timing = [
            ("held-out development images", _e(_fmt(info.get("holdout_images")))),
            ("fit time", _e(f"{_fmt(info.get('fit_seconds'))} s")),
        ]
        if "training_images" in info:
            timing.append(("training images (expanded)", _e(_fmt(info["training_images"]))))
        if "device" in info:
            timing.append(("device", _e(_fmt(info["device"]))))
        parts.append(_kv(timing))
    unreadable = [f for f in rec.get("unreadable", []) if isinstance(f, dict)]
    if unreadable:
        parts.append(f'<h4 class="bad">Unreadable files: {len(unreadable)}</h4>')
        keys = ("split", "dataset", "folder", "path", "reason", "action")
        parts.append(
            _table(list(keys), [[_e(_fmt(f.get(c))) for c in keys] for f in unreadable[:50]])
        )
        if len(unreadable) > 50:
            parts.append(_note(f"... {len(unreadable) - 50} more in the record."))
    versions = rec.get("versions", {})
    if versions:
        parts.append("<h4>Versions</h4>")
        parts.append(_kv([(k, _e(_fmt(v))) for k, v in versions.items()], "cols"))
    return "".join(parts)


_METRIC_HEADERS = ("n", "Accuracy", "Precision", "Recall", "F1", "Kappa", "ROC-AUC")
_METRIC_KEYS = ("n", "accuracy", "precision", "recall", "f1", "kappa", "roc_auc")


def _metric_cells(row: Mapping[str, Any]) -> list[str]:
    cells: list[str] = [_e(_fmt(row.get("n")))]
    cells += ["–" if row.get(c) is None else _num(row[c], ".3f") for c in _METRIC_KEYS[1:]]
    cm = row.get("confusion")
    cells.append(_e(f"TN {cm[0][0]}, FP {cm[0][1]}, FN {cm[1][0]}, TP {cm[1][1]}") if cm else "–")
    return cells


def _metrics_section(run: Run) -> str:
    tables = run.record.get("tables") or {}
    if not tables:
        return _note(
            "No labelled images were scored: the run had no held-out development images "
            "(--holdout) and no test labels (--test-labels), so there is nothing to measure."
        )
    parts: list[str] = []
    for title, rows in tables.items():
        parts.append(_h("<h4>{}</h4>", title))
        parts.append(
            _table(
                ["method", *_METRIC_HEADERS, "confusion"],
                [[_e(str(r.get("method", "")))] + _metric_cells(r) for r in rows],
                num=range(1, 8),
            )
        )
    parts.append(
        '<p class="muted">Accuracy, precision, recall and F1 of the "used" class, Cohen\'s kappa '
        "and ROC-AUC of the scores. Predicting every image used on a balanced set gives F1 0.667 "
        "at accuracy 0.5 and kappa 0: read F1 next to accuracy and kappa.</p>"
    )
    return "".join(parts)


def _decision_text(dec: Mapping[str, Any], info: Mapping[str, Any], config: Mapping) -> Markup:
    rule = dec.get("rule")
    spec = config.get("decision", "?")
    if rule == "threshold":
        return _h(
            "Fixed threshold {} on the score, given by <code>--decision {}</code> (the paper's "
            'rule: 0.5 on the probability of "generated"); nothing was fitted. Images scoring at '
            "or above it are predicted used.",
            dec.get("threshold"),
            spec,
        )
    if rule == "calibrated":
        return _h(
            "Threshold {}, calibrated on the {} held-out development images (<code>--holdout "
            "{}</code>) to maximise {} there ({} {}), by ctfp's one calibration "
            "(<code>ctfp.membership.decision.best_threshold</code>: midpoints between "
            "development scores, ties to the median candidate), from <code>--decision "
            "{}</code>. No test label reaches it.",
            dec.get("threshold"),
            info.get("holdout_images", "?"),
            config.get("holdout"),
            dec.get("metric"),
            dec.get("metric"),
            _fmt(dec.get("development_value"), 3),
            spec,
        )
    if rule == "top_fraction":
        return _h(
            "No threshold: the top {} of the scores are predicted used (<code>--decision "
            "{}</code>), a rank rule.",
            dec.get("fraction"),
            spec,
        )
    return _h("Rule <code>{}</code> (<code>--decision {}</code>).", _fmt(dict(dec)), spec)


def _decision_section(run: Run) -> str:
    config = run.record.get("config", {})
    parts: list[str] = []
    for info in run.datasets:
        dec = info.get("decision", {})
        name = info.get("dataset", {}).get("dataset", "?")
        parts.append(_h("<h4>Dataset {}</h4>", str(name)))
        parts.append(_h("<p>{}</p>", _decision_text(dec, info, config)))
        pairs = [(k, _h("<code>{}</code>", _fmt(v))) for k, v in dec.items()]
        if "test_predicted_used" in info:
            pairs.append(("test images predicted used", info["test_predicted_used"]))
        parts.append(_kv(pairs))
        if info.get("similarity"):
            parts.append(
                "<p>Similarity settings (the estimator only scores; the rule above decides):</p>"
            )
            parts.append(
                _kv([(k, _h("<code>{}</code>", _fmt(v))) for k, v in info["similarity"].items()])
            )
    return "".join(parts) or _note("The record holds no decision.")


def _plots_section(run: Run) -> str:
    split = "test" if any("test" in d for d in run.datasets) else "development (held out)"
    figs = [
        (
            layout.roc_plot(run.folder),
            "ROC curve",
            f"ROC curve, {split} images: true vs false positive rate.",
        ),
        (
            layout.histogram_plot(run.folder),
            "score histograms",
            f"Scores of used and not-used images ({split}); dashed: the threshold (of the "
            f"first dataset).",
        ),
        (layout.confusion_plot(run.folder), "confusion matrix", f"Confusion matrix ({split})."),
    ]
    shown = [_figure(f, alt, _e(cap)) for f, alt, cap in figs if f.is_file()]
    if not shown:
        return _note(
            "No plots: the run scored no labelled images (no --holdout, no --test-labels)."
        )
    return '<div class="figs">' + "".join(shown) + "</div>"


def _check_run_files(run: Run) -> list[dict[str, Any]]:
    """Each run file of ``run``, validated again against its test folder now."""
    from ctfp.data.datasets import DatasetError
    from ctfp.imageclef.runfile import RunFileError, validate_run_file

    checks = []
    for i, info in enumerate(run.datasets):
        if "run_file" not in info:
            continue
        path = run.folder / Path(info["run_file"]).name
        check: dict[str, Any] = {"path": path, "used": info.get("test_predicted_used")}
        try:
            ts = _dataset(run.record.get("test"), i, "test")
            unknown_dir = ts.folders["real_unknown"].path
            check["problems"] = validate_run_file(path, unknown_dir)
            check["status"] = "invalid" if check["problems"] else "valid"
            check["against"] = f"the {len(ts.unknown)} test images in {unknown_dir}"
        except (_Unavailable, DatasetError, RunFileError, OSError) as exc:
            check["status"], check["why"] = "not checked", str(exc)
        try:
            text = path.read_text(encoding="utf-8")
            check["lines"] = sum(1 for line in text.splitlines() if line)
        except (OSError, UnicodeDecodeError):
            check["lines"] = None
        checks.append(check)
    return checks


def _single_class(check: Mapping[str, Any]) -> bool:
    n, used = check.get("lines"), check.get("used")
    return n is not None and used is not None and n > 1 and used in (0, n)


def _run_files_section(checks: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for c in checks:
        if c["status"] == "valid":
            status = _h('<span class="badge ok">valid</span> against {}', c["against"])
        elif c["status"] == "invalid":
            problems = c["problems"]
            listing = "".join(_h("<li>{}</li>", str(p)) for p in problems[:20])
            more = _h("<li>... {} more</li>", len(problems) - 20) if len(problems) > 20 else ""
            status = _h(
                '<span class="badge bad">invalid: {} problems</span><ul>{}{}</ul>',
                len(problems),
                Markup(listing),
                more,
            )
        else:
            status = _h('<span class="badge warn">not checked</span> {}', c["why"])
        warn = (
            '<p class="warn">Every prediction is the same class: this run carries no membership '
            "information (the 2024 paper's runs were rejected for this).</p>"
            if _single_class(c)
            else ""
        )
        pairs = [
            ("run file", _h("<code>{}</code>", str(c["path"]))),
            ("predicted used", _e(f"{_fmt(c['used'])} of {_fmt(c['lines'])}")),
            ("validation", status),
        ]
        parts.append(_kv(pairs) + warn)
    if not parts:
        return _note("No run file: the run had no test images (--test).")
    return (
        "".join(parts)
        + '<p class="muted">Checked when this page was made, with <code>ctfp.imageclef.runfile.'
        "validate_run_file</code> (the organisers' rules: one <code>id,label</code> line per test "
        "image, labels 0 or 1, no duplicates, no missing ids).</p>"
    )


def _headline(run: Run) -> tuple[str, Mapping[str, Any]] | None:
    """The table row that sums the run up: the test images (both datasets pooled where there
    are two), else the held-out development images."""
    tables = run.record.get("tables") or {}
    for title in ("Test", *tables):
        if tables.get(title):
            return title, tables[title][0]
    return None


def _summary_section(run: Run, checks: Sequence[Mapping[str, Any]]) -> str:
    cards = []
    head = _headline(run)
    if head is not None:
        title, row = head
        split = "test" if title == "Test" else "held-out development"
        for key, label in (("f1", "F1"), ("accuracy", "accuracy"), ("kappa", "kappa"),
                           ("roc_auc", "ROC-AUC")):  # fmt: skip
            v = row.get(key)
            cards.append(
                (label, "–" if v is None else _num(v, ".3f"), f"{split}, n={row.get('n')}")
            )
    decs = [d.get("decision", {}) for d in run.datasets]
    if decs:
        d = decs[0]
        if d.get("rule") == "top_fraction":
            cards.append(("decision", f"top {_fmt(d.get('fraction'), 3)}", "rank rule"))
        else:
            where = {
                "threshold": "fixed",
                "calibrated": f"calibrated ({d.get('metric')})",
            }
            cards.append(
                ("threshold", _fmt(d.get("threshold"), 4), where.get(str(d.get("rule")), ""))
            )
    lts = [d["leak_test"] for d in run.datasets if isinstance(d.get("leak_test"), Mapping)]
    if lts:
        lt = lts[0]
        verdict = str(lt.get("verdict", "?"))
        note = (
            f"p {_fmt(lt.get('p_value'), 3)}, AUC {_fmt(lt.get('auc'), 3)}"
            if isinstance(lt.get("p_value"), (int, float))
            else "not run"
        )
        if verdict != "leak":
            note += "; predictions unsupported"
        cards.append(("leak test", _h('<span class="{}">{}</span>', _VERDICT_CLASS.get(verdict,
                      "warn"), verdict), note))  # fmt: skip
    for c in checks[:2]:
        cls = {"valid": "ok", "invalid": "bad"}.get(c["status"], "warn")
        note = f"{_fmt(c['used'])} of {_fmt(c['lines'])} predicted used"
        if _single_class(c):
            note += " (one class!)"
            cls = "warn" if cls == "ok" else cls
        cards.append(("run file", _h('<span class="{}">{}</span>', cls, c["status"]), note))
    cards.append(
        ("run time", f"{_fmt(run.record.get('seconds'))} s", _fmt(run.record.get("started")))
    )
    html_cards = "".join(
        _h(
            '<div class="card"><div class="label">{}</div><div class="value">{}</div>'
            '<div class="sub">{}</div></div>',
            label,
            value,
            sub,
        )
        for label, value, sub in cards
    )
    m = run.record.get("method", {})
    kind = (
        "similarity of each real image to the generated set"
        if m.get("kind") == "similarity"
        else "a CNN trained on real (0) vs generated (1) images; a real image scored as "
        "generated is predicted used"
    )
    what: str = _h("<p>{}: {}. Output folder <code>{}</code>.</p>", m.get("title", run.title), kind,
              str(run.folder))  # fmt: skip
    status = run.record.get("status")
    if status not in (None, "complete"):
        what += _h(
            '<p class="bad">This run did not finish (status {}): the page shows the datasets '
            "it completed.</p>",
            status,
        )
    return what + _h('<div class="cards">{}</div>', Markup(html_cards))


def _gallery_section(run: Run, galleries: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for info, g in zip(run.datasets, galleries, strict=False):
        name = info.get("dataset", {}).get("dataset", "?")
        parts.append(_h("<h4>Dataset {}</h4>", str(name)))
        if "note" in g:
            parts.append(_note(f"No gallery: {g['note']}."))
            continue
        n_high = sum(r["group"] == "high" for r in g["rows"])
        n_low = len(g["rows"]) - n_high
        k = max((len(r["neighbours"]) for r in g["rows"]), default=0)
        caption = _h(
            "The {} {} images with the highest membership scores and a sample of {} from the "
            "lowest quarter (of {} scored), each with its {} nearest generated images among the "
            "{} the method was fitted on, found with {}. File names and {} are printed under "
            "each image; the last column is the absolute difference from the nearest one (black "
            "where equal: an exact copy gives a flat black map; bright: 64 grey levels or more).",
            n_high,
            g.get("split"),
            n_low,
            g.get("n_scored"),
            k,
            g.get("n_generated"),
            g.get("neighbours_from"),
            "SSIM" if g.get("measure") == "ssim" else "distances",
        )
        parts.append(_figure(run.folder / g["image"], f"evidence gallery, dataset {name}", caption))
        rows = [
            [
                _e(r["group"]),
                _h("<code>{}</code>", r["id"]),
                _num(r.get("score"), ".4g"),
                _e("–" if r["label"] is None else ("used" if r["label"] else "not used")),
                _e(_fmt(r["predicted"])),
                Markup(
                    "<br>".join(
                        _h("<code>{}</code> {}", nb.get("name"), nb.get("shown"))
                        for nb in r["neighbours"]
                    )
                ),
                _num(r.get("mean_abs_diff"), ".1f"),
            ]
            for r in g["rows"]
        ]
        parts.append(
            _table(
                [
                    "group",
                    "real image",
                    "score",
                    "truth",
                    "predicted",
                    "nearest generated",
                    "mean |diff|",
                ],
                rows,
                num=(2, 6),
            )
        )
    return "".join(parts) or _note("The record holds no dataset.")


def _training_section(run: Run) -> str:
    from ctfp.imageclef.plots import plot_training_curves

    parts = []
    for info in run.datasets:
        history = info.get("history")
        if not history:
            continue
        name = info.get("dataset", {}).get("dataset", "?")
        parts.append(_h("<h4>Dataset {}</h4>", str(name)))
        png = plot_training_curves(
            history,
            layout.training_plot(run.folder, str(name)),
            title=f"{run.title} [{name}]",
        )
        parts.append(
            _figure(
                png,
                f"training curves, dataset {name}",
                "Training and validation loss per epoch (left); validation accuracy and ROC-AUC "
                "(right) when the classifier kept a validation split.",
            )
        )
        keys = (
            "epoch",
            "loss",
            "val_loss",
            "val_accuracy",
            "val_roc_auc",
            "seconds",
            "images_per_s",
        )
        parts.append(
            _table(
                list(keys),
                [[_e(_fmt(row.get(c))) for c in keys] for row in history],
                num=range(len(keys)),
            )
        )
    if parts:
        return "".join(parts)
    if run.record.get("method", {}).get("kind") == "similarity":
        return _note("No network was trained: a similarity method compares images directly.")
    return _note("The record holds no training history.")


# --------------------------------------------------------------------------------------------------
# the leak test: one run's, a family's, and a ctfp leaktest folder's

#: a verdict's colour: "leak" is the privacy alarm
_VERDICT_CLASS = {"leak": "bad", "inconclusive": "warn", "no evidence": "ok", "not tested": "warn"}
_LEAK_HEADERS = ["method", "verdict", "ROC-AUC [95 %]", "p-value", "p (Holm)", "relabelings",
                 "control AUC, p"]  # fmt: skip


def _verdict_html(verdict: Any) -> Markup:
    return _h('<span class="badge {}">{}</span>', _VERDICT_CLASS.get(str(verdict), "warn"),
              str(verdict))  # fmt: skip


def _leak_row(name: str, lt: Mapping[str, Any], adjusted: Any = None) -> list[Any]:
    """One table row of a leak test (a :func:`run_leak_test` result as the record holds it)."""
    if not isinstance(lt.get("p_value"), (int, float)):
        return [name, _verdict_html(lt.get("verdict", "not tested")), "–", "–", "–", "–", "–"]
    ci = lt.get("auc_interval")
    auc = _num(lt.get("auc"), ".3f") + (
        _h(" [{}-{}]", _num(ci[0], ".3f"), _num(ci[1], ".3f"))
        if isinstance(ci, list) and len(ci) == 2
        else ""
    )
    b = lt.get("n_permutations")
    if b is None:
        perms = "– (Mann-Whitney)"
    else:
        kind = "all" if lt.get("exact_enumeration") else "random"
        perms = f"{b} {kind} (resolution {_fmt(lt.get('p_value_resolution'), 2)})"
    c = lt.get("control")
    ctrl = (
        f"{_fmt(c.get('auc'), 3)}, p {_fmt(c.get('p_value'), 3)}"
        if isinstance(c, Mapping)
        else "none"
    )
    adj = "–" if adjusted is None else _fmt(adjusted, 3)
    return [name, _verdict_html(lt.get("verdict")), auc, _fmt(lt["p_value"], 3), adj, perms, ctrl]


def _family_html(family: Mapping[str, Any], tests: Mapping[str, Mapping[str, Any]]) -> Markup:
    """A family's verdict, its message and one row per method (raw and adjusted p-values)."""
    rows = []
    for t in family.get("tests", []):
        lt = tests.get(t.get("name"), {"verdict": t.get("verdict")})
        rows.append(_leak_row(str(t.get("name")), lt, t.get("p_adjusted")))
    how = {"holm": "Holm's step-down adjustment", "bonferroni": "Bonferroni's adjustment"}.get(
        str(family.get("method")), "no adjustment"
    )
    head = _h(
        "<p><strong>One verdict for {} tests: {}</strong> ({} at alpha {}: the chance of any "
        "false alarm among them is at most alpha whatever their dependence). {}</p>",
        family.get("n_tests"), _verdict_html(family.get("verdict")), how, family.get("alpha"),
        "Per-image predictions are supported." if family.get("verdict") == "leak" else
        "Per-image predictions are unsupported: nothing shows that this generator leaks.",
    )  # fmt: skip
    return Markup(head + _table(_LEAK_HEADERS, rows, num=(3, 4)) + _h(
        '<p class="muted">{}</p>', family.get("message", "")))  # fmt: skip


def _leak_detail(lt: Mapping[str, Any]) -> Markup:
    pairs: list[tuple[str, Any]] = [("verdict", _verdict_html(lt.get("verdict")))]
    if isinstance(lt.get("message"), str):
        pairs.append(("in one line", lt["message"]))
    for key, label in (("test", "test"), ("pipeline", "pipeline (what relabelling reruns)"),
                       ("n_used", "used units"), ("n_not_used", "not-used units"),
                       ("n_splits", "cross-fitting folds"), ("seconds", "seconds")):  # fmt: skip
        if key in lt:
            pairs.append((label, _fmt(lt[key])))
    if "difference" in lt and isinstance(lt["difference"], Mapping):
        pairs.append(("generated set over control", _fmt(lt["difference"].get("p_value"), 3)))
    return _kv(pairs)


def _leak_section(run: Run) -> str:
    parts: list[str] = []
    for i, info in enumerate(run.datasets):
        lt = info.get("leak_test")
        if not isinstance(lt, Mapping):
            continue
        name = str((info.get("dataset") or {}).get("dataset", i))
        parts.append(_h("<h4>Dataset {}</h4>", name))
        parts.append(_table(_LEAK_HEADERS, [_leak_row(run.key, lt)], num=(3,)))
        parts.append(_leak_detail(lt))
        if isinstance(lt.get("null_histogram"), Mapping):
            from ctfp.imageclef.leakcheck import plot_null_distributions

            path = layout.leaktest_plot(run.folder, name)
            try:
                plot_null_distributions([(run.key, lt)], path, f"Leak test, {name}")
            except OSError as exc:  # a read-only folder: the page says so, the rest stands
                parts.append(_note(f"{path.name}: not written ({exc})"))
            parts.append(_figure(path, "null distribution of the leak test",
                                 "ROC-AUC of the development images under random relabelings "
                                 "(the null: the generator does not tell used from not used); "
                                 "the red line is the observed one."))  # fmt: skip
    if not parts:
        return _note(
            "No leak test in this run: the paper's Methods 1-4 train a classifier (no leak "
            "test); a similarity run made with leak_test=False has none either."
        )
    return (
        "<p>Before any per-image verdict: do the development images the generator was trained "
        "on score higher than those it was not? A permutation test of exact level (the labels "
        "relabelled, everything that uses them rerun) with a no-generator control "
        "(docs/leaktest.md).</p>" + "".join(parts)
    )


def _family_section(runs: Sequence[Run]) -> str | None:
    """The family verdict of the runs' leak tests, per dataset, or None when at most one run
    has a leak test on every dataset."""
    from ctfp.imageclef.leakcheck import leak_families

    same_key = len({r.key for r in runs}) < len(runs)  # one method twice: name runs by folder
    named = [(_run_name(r, runs) if same_key else r.key, r.record) for r in runs]
    families = [f for f in leak_families(named) if f["family"]["n_tests"] > 1]
    if not families:
        return None
    parts = []
    for f in families:
        parts.append(_h("<h3>Dataset {} <code>{}</code></h3>", f["dataset"], f["root"]))
        parts.append(_family_html(f["family"], f["tests"]))
    return "".join(parts)


def leaktest_report_html(folder: str | os.PathLike[str], record: Mapping[str, Any]) -> str:
    """The report page of a ``ctfp leaktest`` output folder: per dataset the family's verdict,
    every method's test (raw and adjusted p-values, ROC-AUC with its interval, the control)
    and the null distributions (``leaktest_<dataset>.png``), then the record."""
    folder = Path(folder)
    sections: list[tuple[str, str, Markup]] = []
    for n, d in enumerate(record.get("datasets") or [], 1):
        if not isinstance(d, Mapping) or not isinstance(d.get("family"), Mapping):
            continue
        name = str((d.get("dataset") or {}).get("dataset", n))
        found = d.get("tests")
        tests: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        details = "".join(
            _h("<h4>{}</h4>", k) + _leak_detail(v) for k, v in tests.items()
            if isinstance(v, Mapping)
        )  # fmt: skip
        body = Markup(
            _family_html(d["family"], tests)
            + _figure(layout.leaktest_plot(folder, name), "null distributions of the leak tests",
                      "Each method's ROC-AUC under random relabelings of the development "
                      "images (the null), the observed one marked in red.")
            + details
        )  # fmt: skip
        sections.append((f"dataset{n}", f"Dataset {name}", body))
    given = record.get("config")
    cfg: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    rec = _kv(
        [("data", _h("<code>{}</code>", _fmt(record.get("data")))),
         ("methods", ", ".join(map(str, record.get("methods") or []))),
         *((k, _h("<code>{}</code>", _fmt(v))) for k, v in cfg.items()),
         ("started", _fmt(record.get("started"))), ("run time", f"{_fmt(record.get('seconds'))} s"),
         ("git commit", _h("<code>{}</code>", _fmt(record.get("git_commit")))),
         *((k, _fmt(v)) for k, v in (record.get("versions") or {}).items())]
    )  # fmt: skip
    sections.append(("record", "Run record", rec))
    body_html = "".join(
        _h('<section id="{}"><h2>{}</h2>{}</section>', a, t, b) for a, t, b in sections
    )
    subtitle = _h(
        "Made {} by ctfp {} from <code>{}</code>. The leak test alone: does the generator leak "
        "its training images at all? (docs/leaktest.md)",
        time.strftime("%Y-%m-%d %H:%M:%S %z"), _ctfp_version(), str(record.get("data", "")),
    )  # fmt: skip
    return _page("ctfp report: leak test", subtitle, [(a, t, 1) for a, t, _ in sections],
                 body_html)  # fmt: skip


def write_leaktest_report(folder: str | os.PathLike[str]) -> Path | None:
    """``report.html`` of a ``ctfp leaktest`` folder rebuilt from its record and figures; None
    when ``folder`` holds no such record."""
    path = layout.record_path(folder)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("kind") != "leaktest":
        return None
    if not isinstance(record.get("datasets"), list):
        raise ReportError(f"{path}: not a ctfp leak-test record: field 'datasets' is not a list")
    target = Path(folder) / REPORT_NAME
    write_text_atomic(target, leaktest_report_html(folder, record))
    return target


_SECTION_TITLES = {
    "summary": "At a glance",
    "leak-test": "Leak test: does the generator leak at all?",
    "record": "Run record",
    "metrics": "Metrics",
    "decision": "Decision",
    "plots": "ROC and score histograms",
    "run-files": "Run files",
    "galleries": "Evidence: nearest generated images",
    "training": "Training curves",
}


def _run_article(
    run: Run, galleries: Sequence[Mapping], prefix: str, heading: str
) -> tuple[str, list]:
    checks = _check_run_files(run)
    bodies = {
        "summary": _summary_section(run, checks),
        "leak-test": _leak_section(run),
        "record": _record_section(run),
        "metrics": _metrics_section(run),
        "decision": _decision_section(run),
        "plots": _plots_section(run),
        "run-files": _run_files_section(checks),
        "galleries": _gallery_section(run, galleries),
        "training": _training_section(run),
    }
    h = "h3" if prefix else "h2"
    sections = "".join(
        f'<section id="{prefix}{sid}"><{h}>{_e(_SECTION_TITLES[sid])}</{h}>{bodies[sid]}</section>'
        for sid in SECTIONS
    )
    toc = [(f"{prefix}{sid}", _SECTION_TITLES[sid]) for sid in SECTIONS]
    head = f'<h2 id="{prefix.rstrip("-")}">{_e(heading)}</h2>' if prefix else ""
    return f"<article>{head}{sections}</article>", toc


# --------------------------------------------------------------------------------------------------
# comparison and demo sections


def _curve(run: Run) -> tuple[list, list, str] | None:
    ys = [y for d in run.datasets for y in d.get("test_truth", [])]
    ss = [s for d in run.datasets for s in d.get("test_scores", [])]
    if ys and len(ys) == len(ss):
        return ys, ss, "test"
    held = [h for d in run.datasets for h in d.get("holdout_scores", [])]
    if held:
        return [h[1] for h in held], [h[2] for h in held], "development (held out)"
    return None


def _run_name(run: Run, runs: Sequence[Run]) -> str:
    folders = {r.folder for r in runs}
    return f"{run.title} ({run.folder.name})" if len(folders) > 1 else run.title


def _compare_section(runs: Sequence[Run], roc_path: Path) -> str:
    from ctfp.imageclef.plots import plot_roc

    rows = []
    for n, run in enumerate(runs, 1):
        tables = run.record.get("tables") or {}
        title = "Test" if "Test" in tables else next(iter(tables), None)
        link = _h('<a href="#run{}">{}</a>', n, _run_name(run, runs))
        if title is None:
            rows.append([link, "–", "–"] + ["–"] * 8)
            continue
        for r in tables[title]:
            rows.append([link, _e(str(r.get("method", ""))), _e(title)] + _metric_cells(r))
    # .fit: the table takes the page's width and the run and row names wrap (anywhere: a folder
    # name has no spaces), so no horizontal scroll bar hides the last column, the confusion
    table = _table(["run", "rows", "split", *_METRIC_HEADERS, "confusion"], rows, num=range(3, 10))
    parts = [f'<div class="fit">{table}</div>']
    curves = {}
    for run in runs:
        c = _curve(run)
        if c is not None:
            curves[f"{_run_name(run, runs)}, {c[2]}"] = (c[0], c[1])
    if curves:
        plot_roc(curves, roc_path, title="ROC of every run")
        parts.append(
            _figure(
                roc_path,
                "ROC curves of every run, overlaid",
                "ROC curves of every run on one figure (test images where the run had test "
                "labels, else its held-out development images); the legend gives each AUC.",
            )
        )
    else:
        parts.append(_note("No run scored labelled images: no ROC curves to overlay."))
    return "".join(parts)


def _demo_section(folder: Path) -> str | None:
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    leak = summary.get("leak") if isinstance(summary, dict) else None
    if not isinstance(leak, dict):
        return None
    spec, gen = leak.get("spec", {}), leak.get("leaked_generated", {})
    text = (
        f"Synthetic CT-like slices with a stand-in generator that leaks its training images: "
        f"{spec.get('n_used')}+{spec.get('n_not_used')} development and "
        f"{spec.get('n_test_used')}+{spec.get('n_test_not_used')} test real images (used + not "
        f"used), {spec.get('n_generated')} generated per split, of which {gen.get('development')} "
        f"(development) and {gen.get('test')} (test) are near-copies of used images "
        f"(leak {spec.get('leak')}). Whole demo: {summary.get('seconds')} s."
    )
    loader = summary.get("loader") or []
    parts: list[str] = [_h("<p>{}</p>", text)]
    if loader:
        parts.append(
            _table(
                ["loader epoch", "images", "images/s", "decodes PNGs"],
                [
                    [
                        _e(_fmt(r.get(c)))
                        for c in ("epoch", "images", "images_per_s", "png_decoding")
                    ]
                    for r in loader
                ],
                num=(1, 2),
            )
        )
    grid = folder / "augmented_grid.png"  # (its ROC of every method is the comparison's)
    if grid.is_file():
        cap = "Synthetic slices (first column) and augmented versions drawn by the Rust pipeline."
        parts.append(_figure(grid, "augmented slices", _e(cap)))
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# the page


def _page(title: str, subtitle: str, toc: Sequence[tuple[str, str, int]], body: str) -> str:
    groups: list[tuple[str, list[str]]] = []  # a level-1 link and its level-2 links
    for anchor, text, level in toc:
        link: str = _h('<a href="#{}">{}</a>', anchor, text)
        if level == 1 or not groups:
            groups.append((link, []))
        else:
            groups[-1][1].append(link)
    if all(not children for _, children in groups):
        items = ['<ul class="flat">', *(f"<li>{link}</li>" for link, _ in groups), "</ul>"]
    else:
        items = ["<ul>"]
        for link, children in groups:
            sub = "".join(f"<li>{c}</li>" for c in children)
            items.append(
                f'<li>{link}<ul class="flat">{sub}</ul></li>' if sub else f"<li>{link}</li>"
            )
        items.append("</ul>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{_e(title)}</h1><p class="muted">{subtitle}</p></header>'
        f'<nav aria-label="contents"><strong>Contents</strong>{"".join(items)}</nav>'
        f"<main>{body}</main></body></html>\n"
    )


def _ctfp_version() -> str:
    try:
        from ctfp import __version__

        return str(__version__)
    except ImportError:
        return "?"


def write_report(
    folders: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    *,
    redo_galleries: bool = False,
) -> Path:
    """Write the report of the runs in ``folders`` (output folders of ``ctfp run`` or ``ctfp
    demo``) and return its path.

    One folder: ``report.html`` in it (its runs, the demo's summary where there is one). Several:
    ``report_compare.html`` in the first folder: a table of every run and their ROC curves
    overlaid, then each run in full. ``out``: a ``.html`` file, or a folder to write that name
    into. Galleries already saved for a run are reused unless ``redo_galleries``
    (:func:`write_galleries`).
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    paths = [Path(f) for f in folders]
    if not paths:
        raise ReportError("folders: expected at least one output folder, found none")
    runs = [run for f in paths for run in load_runs(f)]
    name = REPORT_NAME if len(paths) == 1 else COMPARE_NAME
    if out is None:
        target = paths[0] / name
    else:
        target = Path(out)
        if target.suffix.lower() not in (".html", ".htm"):
            target = target / name
    target.parent.mkdir(parents=True, exist_ok=True)
    body, toc = [], []
    family = _family_section(runs) if len(runs) > 1 else None
    if family is not None:
        body.append(
            f'<section id="leak-family"><h2>Does the generator leak?</h2>{family}</section>'
        )
        toc.append(("leak-family", "Does the generator leak?", 1))
    if len(paths) == 1:
        demo = _demo_section(paths[0])
        if demo is not None:
            body.append(f'<section id="demo"><h2>The demo data</h2>{demo}</section>')
            toc.append(("demo", "The demo data", 1))
    if len(runs) > 1:
        roc = target.with_name(f"{target.stem}_roc.png")
        compare = _compare_section(runs, roc)
        body.append(f'<section id="compare"><h2>All runs compared</h2>{compare}</section>')
        toc.append(("compare", "All runs compared", 1))
    for n, run in enumerate(runs, 1):
        galleries = write_galleries(run, redo=redo_galleries)
        prefix = f"run{n}-" if len(runs) > 1 else ""
        heading = _run_name(run, runs)
        html_run, run_toc = _run_article(run, galleries, prefix, heading)
        body.append(html_run)
        if prefix:
            toc.append((f"run{n}", heading, 1))
        toc += [(a, t, 2 if prefix else 1) for a, t in run_toc]
    if len(runs) == 1:
        title = f"ctfp report: {runs[0].title}"
    elif len(paths) == 1 and _demo_section(paths[0]) is not None:
        title = "ctfp report: the demo"
    else:
        title = f"ctfp report: {len(runs)} runs compared"
    where = ", ".join(_h("<code>{}</code>", str(p)) for p in paths)
    subtitle = (
        f"Made {_e(time.strftime('%Y-%m-%d %H:%M:%S %z'))} by ctfp {_e(_ctfp_version())} from "
        f"{where}. Rebuild with <code>ctfp report {_e(' '.join(str(p) for p in paths))}</code>."
    )
    write_text_atomic(target, _page(title, subtitle, toc, "".join(body)))
    return target


def write_run_report(
    out: str | os.PathLike[str],
    *,
    record: str | os.PathLike[str] | None = None,
    indexes: Sequence[Any] | None = None,
) -> Path | None:
    """``report.html`` for an output folder at the end of a run (``run_method``, ``run_demo``):
    the galleries of ``record`` (a record file in ``out``) are made afresh, with the method's
    fitted indexes when given. Never raises: the run's own files are complete by then, so a
    failure warns (:class:`ReportWarning`) and returns None; ``ctfp report OUT`` retries."""
    out = Path(out)
    try:
        if record is not None:
            write_galleries(_read_run(out / record), indexes=indexes, redo=True)
        return write_report(out)
    except Exception as exc:  # the report is a by-product: it must not fail a finished run
        warnings.warn(
            f"{out / REPORT_NAME} not written ({type(exc).__name__}: {exc}); the run's tables, "
            f"plots, run files and record are complete; rebuild the page with: ctfp report {out}",
            ReportWarning,
            stacklevel=2,
        )
        return None


# --------------------------------------------------------------------------------------------------
# attribution and clustering runs (ctfp attribute, ctfp cluster: subtask 2)


def _attribution_summary(record: Mapping[str, Any]) -> Markup:
    m = record.get("method", {})
    pairs: list[tuple[str, Any]] = [
        ("Task", "clustering" if record.get("task") == "clustering" else "attribution"),
        ("Method", _h("<code>{}</code>: {}", m.get("key", "?"), m.get("description", ""))),
    ]
    if "year" in record:
        shape = (
            "real/ and generated/ per subset"
            if record["year"] == "2025"
            else "generated/ per model"
        )
        pairs.append(("Layout", f"{record['year']} ({shape})"))
    pairs += [
        ("Sources", ", ".join(map(str, record.get("sources", [])))),
        ("Test images", record.get("n_test", "?")),
        ("Predicted per source", ", ".join(
            f"{k}: {v}" for k, v in record.get("predicted_counts", {}).items())),
        ("Run file", _h("<code>{}</code>", Path(str(record.get("run_file", ""))).name)),
        ("Probabilities", _h("<code>{}</code>", Path(str(record.get("scores_file", ""))).name)),
        ("Seconds", ", ".join(f"{k} {v}" for k, v in record.get("seconds", {}).items())),
    ]  # fmt: skip
    if record.get("task") == "clustering":
        pairs.insert(2, ("Sources asked / found", f"{record.get('n_sources_asked')} / "
                                                  f"{record.get('n_sources')}"))  # fmt: skip
    return _kv(pairs)


def _attribution_tables(record: Mapping[str, Any]) -> Markup:
    tables = record.get("tables") or {}
    if not tables:
        return _note("No test truth was given (test_labels.csv or --test-labels): no scores.")
    parts = []
    for title, rows in tables.items():
        if not rows:
            continue
        keys = list(rows[0])
        num = [c for c, k in enumerate(keys) if isinstance(rows[0][k], (int, float))]
        cells = [[_fmt(r.get(k)) if isinstance(r.get(k), float) else r.get(k) for k in keys]
                 for r in rows]  # fmt: skip
        parts.append(_h("<h3>{}</h3>", title) + _table(keys, cells, num))
    return Markup("".join(parts))


def attribution_report_html(folder: str | os.PathLike[str], record: Mapping[str, Any]) -> str:
    """The report page of an attribution (``ctfp attribute``) or clustering (``ctfp cluster``)
    output folder: the summary, the scores, the confusion matrix, each source's mean residual
    and mean spectrum, and (2025 layout) test images beside their closest real images in the
    chosen subset and in the runner-up. Figures are read from ``folder`` by their fixed names."""
    from ctfp.attribution.run import CLOSEST_PLOT, RESIDUAL_PLOT, SPECTRUM_PLOT

    folder = Path(folder)
    clustering = record.get("task") == "clustering"
    what = "cluster" if clustering else "source"
    sections: list[tuple[str, str, Markup]] = [
        ("summary", "Summary", _attribution_summary(record)),
        ("scores", "Scores on the test images", _attribution_tables(record)),
    ]
    if not clustering:
        conf = folder / layout.confusion_plot(folder).name
        body = (_figure(conf, "confusion matrix", "rows: true source, columns: predicted")
                if conf.is_file() else _note("No test truth: no confusion matrix."))  # fmt: skip
        sections.append(("confusion", "Confusion matrix", body))
    sections.append((
        "fingerprints", f"Each {what}'s fingerprint",
        Markup(_figure(folder / RESIDUAL_PLOT, f"mean noise residual of each {what}",
                       f"mean noise residual (image minus its Gaussian-denoised self) per {what}")
               + _figure(folder / SPECTRUM_PLOT, f"mean spectrum of each {what}",
                         f"mean log-magnitude FFT of the residual per {what} (centre: 0)")),
    ))  # fmt: skip
    if not clustering:
        if (folder / CLOSEST_PLOT).is_file():
            rows = [
                [c.get("id"), *(f"{m.get('source')} (p={_fmt(m.get('proba'), 3)}): "
                               f"{m.get('image')}, RMSE {_fmt(m.get('rmse'), 1)}"
                               for m in c.get("matches", []))]
                for c in record.get("closest", [])
            ]  # fmt: skip
            rows = [r + [""] * (3 - len(r)) for r in rows]
            body = Markup(
                _figure(folder / CLOSEST_PLOT, "test images beside their closest real images",
                        "left: a test image; middle: the closest real image (pixel distance at "
                        "64x64) of the chosen subset; right: of the runner-up")
                + _table(["test image", "chosen subset", "runner-up"], rows)
            )  # fmt: skip
        else:
            body = _note("The 2024 layout has no real images per source: no closest real images.")
        sections.append(("closest", "Closest real images: chosen subset and runner-up", body))
    body_html = "".join(
        _h('<section id="{}"><h2>{}</h2>{}</section>', a, t, b) for a, t, b in sections
    )
    title = "ctfp report: " + ("clustering" if clustering else "attribution")
    subtitle = (
        f"Made {_e(time.strftime('%Y-%m-%d %H:%M:%S %z'))} by ctfp {_e(_ctfp_version())} from "
        f"<code>{_e(str(record.get('data', '')))}</code>."
    )
    return _page(title, subtitle, [(a, t, 1) for a, t, _ in sections], body_html)


def write_attribution_report(folder: str | os.PathLike[str]) -> Path | None:
    """``report.html`` of an attribution or clustering output folder (its ``record.json`` has
    ``task`` ``"attribution"`` or ``"clustering"``), rebuilt from its files; None when
    ``folder`` holds no such record (a ``ctfp run`` folder: :func:`write_report`)."""
    path = layout.record_path(folder)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("task") not in ("attribution", "clustering"):
        return None
    target = Path(folder) / REPORT_NAME
    write_text_atomic(target, attribution_report_html(folder, record))
    return target
