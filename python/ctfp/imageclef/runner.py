"""The runner: one method on ImageCLEF-style data, in named steps.

``run(method, scorer, data, out, ...)``::

    check          the options; out apart from the data folders
    find_data      development (and test) datasets, paired by their numbers
    check_ids      every test image's name can be a run-file id
    check_images   decode every image first; apply the unreadable-image policy
    read_truth     the test labels, when given, checked against the test images
    check_holdout  enough labelled images of each label for the hold-out
    in a temporary sibling of out (OutputFolder), for each dataset:
        split      hold out a stratified fraction of the labelled real images
        fit        scorer.fit(Fold)            (classifier or similarity: :mod:`.scorers`)
        decide     the decision rule, fitted on the held-out scores
        evaluate   metrics of the held-out images
        predict    score the test images (refitted on the test split's generated images when
                   asked), write the run file and the scores file
        evaluate   metrics of the test images, when their labels are known
        write      the record, after each dataset
    write          tables, plots, the record (complete); move the run into out
    report         report.html

The file names come from :mod:`ctfp.imageclef.layout`. The output folder belongs to its run
(:class:`OutputFolder`): the run is built in a temporary sibling folder and moved into place
when it is complete, replacing the previous run's files only then; a lock beside the folder
refuses a second run into it. A run that fails or is interrupted removes its temporary folder
and nothing else: the previous run, if any, is left as it was.

Messages (unreadable files, the leak test) go to the ``ctfp.imageclef`` logger, which prints
nothing unless the application configures logging (the ``ctfp`` command does).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import write_text_atomic
from ctfp.data.datasets import Dataset, DatasetError, find_datasets
from ctfp.exceptions import CtfpError
from ctfp.imageclef import layout
from ctfp.imageclef.layout import id_problem, image_id, log, read_test_labels
from ctfp.imageclef.methods import Method
from ctfp.imageclef.runfile import write_run_file
from ctfp.imageclef.scorers import Fold, Scorer
from ctfp.membership.decision import CalibratedThreshold, make_rule
from ctfp.membership.metrics import evaluate, write_tables

__all__ = [
    "ON_UNREADABLE",
    "TEST_GENERATED",
    "ImageIdError",
    "OutputFolder",
    "OutputFolderBusy",
    "RunInterrupted",
    "UnreadableImagesError",
    "check_images",
    "find_data",
    "run",
    "split_holdout",
]


class UnreadableImagesError(CtfpError, ValueError):
    """Images that cannot be decoded, under ``on_unreadable="error"``; all of them are named."""


class ImageIdError(DatasetError):
    """Test images whose names cannot be run-file ids; each one is named."""


class OutputFolderBusy(CtfpError, ValueError):
    """Another run holds the output folder; the message names it (pid, host, start time)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was done with the output folder."""


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
    ``test`` or None.

    Datasets pair by the number their folders carry (``generated_2``/``real_unknown_2``,
    ``Dataset2/``: :attr:`Dataset.number`), never by position. One development and one test
    dataset pair when either carries no number; anything else that does not pair one to one
    (a number on one side only, a dataset without a number among several) is refused."""
    dev = find_datasets(data, require="development")
    tests = find_datasets(test, require="test") if test is not None else []
    if not tests:
        return [(d, None) for d in dev]
    if len(dev) == 1 and len(tests) == 1 and None in (dev[0].number, tests[0].number):
        return [(dev[0], tests[0])]

    def numbered(sets: list[Dataset], what: str) -> dict[int, Dataset]:
        by_number: dict[int, Dataset] = {}
        for ds in sets:
            if ds.number is None:
                raise DatasetError(
                    f"{what} dataset {ds.name} carries no number among "
                    f"{', '.join(d.name for d in sets)}; cannot pair development and test "
                    f"datasets (number the folders: generated_1/, real_unknown_1/, ...)"
                )
            if ds.number in by_number:
                raise DatasetError(
                    f"{what} datasets {by_number[ds.number].name} and {ds.name} carry the same "
                    f"number {ds.number}; cannot pair development and test datasets"
                )
            by_number[ds.number] = ds
        return by_number

    d_num, t_num = numbered(dev, "development"), numbered(tests, "test")
    if d_num.keys() != t_num.keys():
        lone = [f"development {d_num[n].name}" for n in sorted(d_num.keys() - t_num.keys())]
        lone += [f"test {t_num[n].name}" for n in sorted(t_num.keys() - d_num.keys())]
        raise DatasetError(
            f"development datasets {', '.join(d.name for d in dev)} and test datasets "
            f"{', '.join(t.name for t in tests)} do not pair by number: no partner for "
            f"{', '.join(lone)}"
        )
    return [(d_num[n], t_num[n]) for n in sorted(d_num)]


def check_ids(pairs: list[tuple[Dataset, Dataset | None]]) -> None:
    """Every test image's id (:func:`~ctfp.imageclef.layout.image_id`) can be a run-file id
    (:func:`~ctfp.imageclef.layout.id_problem`) and is the id of no other image of its
    dataset (``a.png`` and ``a.PNG``); else :class:`ImageIdError` naming each bad file."""
    bad: list[str] = []
    for _, ts in pairs:
        if ts is None:
            continue
        paths = ts.unknown + [
            p for p, _ in ts.folders["real_unknown"].unreadable if _is_image_entry(p)
        ]
        bad += id_problems(paths)
    refuse_bad_ids(bad)


def id_problems(paths: Sequence[Path]) -> list[str]:
    """``"<file>: <why>"`` for each of one folder's test images whose id cannot be a run-file id
    or is also the id of another of them (``a.png`` and ``a.PNG``), in path order."""
    count = Counter(image_id(p) for p in paths)
    bad = []
    for p in sorted(paths):
        ident = image_id(p)
        why = id_problem(ident)
        if why is None and count[ident] > 1:
            why = f"{count[ident]} files in the folder give the id {ident!r}"
        if why is not None:
            bad.append(f"{_shown(p)}: {why}")
    return bad


def refuse_bad_ids(bad: Sequence[str]) -> None:
    """:class:`ImageIdError` naming every bad file of :func:`id_problems`, if there is one."""
    if bad:
        raise ImageIdError(
            f"{len(bad)} test image name(s) cannot be run-file ids (rename them): " + "; ".join(bad)
        )


def _shown(path: Path) -> str:
    """A path as one printable line: control characters and undecodable bytes escaped."""
    text = str(path)
    return text if text.isprintable() and id_problem(path.name) is None else ascii(text)


def _is_image_entry(path: Path) -> bool:
    """A folder entry is an image when it is a regular file named ``*.png`` (any case); a
    folder named ``x.png``, a FIFO or a broken link is not."""
    return path.suffix.lower() == ".png" and path.is_file()


def check_images(
    pairs: list[tuple[Dataset, Dataset | None]], policy: str, threads: int | None
) -> list[dict[str, str]]:
    """Decode every image before any work; log each one that fails (name and reason; the
    ``ctfp.imageclef`` logger); then apply ``policy``; return every file that failed, with
    what was done.

    - ``"error"``: stop, naming every unreadable image.
    - ``"skip"``: leave unreadable development images out (they are listed in the record);
      unreadable test images still stop the run, as a run file needs a line for every test id.
    - ``"predict:0"``/``"predict:1"``: as ``"skip"`` for development images; unreadable test
      images get that label in the run file and are listed in the record.

    Entries that are not regular ``.png`` files (other files, folders, FIFOs, broken links)
    are not images: they are listed, never an error.
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
                    found.append(
                        {
                            "split": split,
                            "dataset": ds.name,
                            "folder": kind,
                            "path": str(path),
                            "reason": why,
                            "action": "" if _is_image_entry(path) else "ignored (not an image)",
                        }
                    )
    images = [f for f in found if not f["action"]]
    for f in found:
        log.warning("unreadable: %s: %s", f["path"], f["reason"])
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


def _forced(unreadable: list[dict], ts: Dataset) -> list[Path]:
    """The unreadable test images of ``ts`` that get the ``predict:L`` label in its run file."""
    return [
        Path(f["path"])
        for f in unreadable
        if f["split"] == "test" and f["dataset"] == ts.name and f["action"].startswith("predicted")
    ]


def read_truth(
    test_labels: str | os.PathLike[str] | None,
    pairs: list[tuple[Dataset, Dataset | None]],
    unreadable: list[dict] = (),  # type: ignore[assignment]
) -> dict[str, int]:
    """``{test image id: label}`` from ``test_labels``, checked against every test image that
    gets a run-file line (the images scored, and the unreadable ones predicted under
    ``predict:L``), or ``{}``."""
    if test_labels is None:
        return {}
    ids = [
        image_id(p)
        for _, ts in pairs
        if ts is not None
        for p in [*ts.unknown, *_forced(list(unreadable), ts)]
    ]
    return read_test_labels(test_labels, ids)


def check_holdout(n_used: int, n_not_used: int, fraction: float, dataset: str) -> None:
    """A stratified hold-out of ``fraction`` needs, for each label, at least one image held
    out and one left for training; else a :class:`ValueError` saying how many are needed."""
    if fraction <= 0:
        return
    n = n_used + n_not_used

    def enough(k: int) -> bool:
        hold = math.ceil(fraction * k)
        return hold >= 2 and k - hold >= 2

    if enough(n) and min(n_used, n_not_used) >= 2:
        return
    need = next(k for k in range(4, 10**7) if enough(k))
    raise ValueError(
        f"holdout {fraction:g} of dataset {dataset}: {n} labelled real images ({n_used} used, "
        f"{n_not_used} not used) are too few; a stratified hold-out of {fraction:g} needs at "
        f"least {need}, with at least 2 of each label (or holdout 0)"
    )


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
    build: Path,
    final: Path,
    ts: Dataset,
    scores: np.ndarray,
    rule: Any,
    unreadable: list[dict],
    on_unreadable: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decide the test images; write the split's run file (validated) and scores file into
    ``build``; the record names them where the run is moved to, ``final``."""
    t_paths = ts.unknown
    t_pred = rule.predict(scores)
    # unreadable test images under predict:L get label L (none under the other policies)
    forced = _forced(unreadable, ts)
    forced_label = int(on_unreadable.split(":")[1]) if forced else 0
    write_run_file(
        layout.run_file_path(build, ts.name),  # named for the split it predicts
        [*t_paths, *forced],
        np.r_[t_pred, np.full(len(forced), forced_label)].astype(int),
        test_dir=ts.folders["real_unknown"].path,  # this dataset's own (numbered) folder
        shown_as=layout.run_file_path(final, ts.name),
    )
    write_text_atomic(
        layout.scores_path(build, ts.name),
        layout.scores_csv_text(
            (image_id(p), f"{s:.6f}", str(int(v)))
            for p, s, v in zip(t_paths, scores, t_pred, strict=True)
        ),
    )
    return t_pred, {
        "run_file": str(layout.run_file_path(final, ts.name)),
        "test_predicted_used": int(t_pred.sum()),
    }


# --------------------------------------------------------------------------------------------------
# the output folder


class OutputFolder:
    """The output folder of one run, owned by it (a context manager).

    On entry: a lock file beside the folder (``.<name>.lock``: pid, host, start time) refuses a
    second run into it (:class:`OutputFolderBusy`, naming the holder; a lock left by a process
    that is gone on this host is taken over), and the run is built in a fresh temporary
    sibling, :attr:`build` (``.<name>.tmp-<pid>``). :meth:`install` moves the finished run into
    the folder: the entries the previous run wrote (:func:`~ctfp.imageclef.layout.is_run_output`:
    fixed names, never paths read from its record) are replaced only then; other entries (an
    ESRGAN cache, files of one's own) stay. On exit without :meth:`install` (an error, Ctrl-C)
    the temporary folder is removed and nothing else: the previous run is untouched.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.final = Path(os.path.abspath(out))
        parent, name = self.final.parent, self.final.name
        self.lock = parent / f".{name}.lock"
        self.build = parent / f".{name}.tmp-{os.getpid()}"
        self.installed = False
        self.made: list[Path] = []

    def __enter__(self) -> OutputFolder:
        # the parents made here are removed again when the run ends without its files
        self.made = [p for p in (self.final.parent, *self.final.parent.parents) if not p.exists()]
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            if self.build.exists():  # a run of this pid before, killed: its own folder
                shutil.rmtree(self.build)
            self.build.mkdir()
        except BaseException:
            self.lock.unlink(missing_ok=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.build.exists():
                shutil.rmtree(self.build, ignore_errors=True)
        finally:
            self.lock.unlink(missing_ok=True)
        if not self.installed:
            for folder in self.made:  # deepest first; only folders this run made, if empty
                try:
                    folder.rmdir()
                except OSError:
                    break

    def _take_lock(self) -> None:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "out": str(self.final),
            "build": str(self.build),
        }
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                other = _read_record(self.lock) or {}
                if not self._gone(other):
                    raise OutputFolderBusy(
                        f"out {self.final}: in use by the ctfp run of pid {other.get('pid')} "
                        f"on {other.get('host')} since {other.get('started')} (lock "
                        f"{self.lock}); wait for it to end, or remove the lock if that run is "
                        f"gone"
                    ) from None
                # the holder died on this host: take its lock, remove its temporary folder
                build = Path(str(other.get("build", "")))
                if build.parent == self.build.parent and build.name.startswith(
                    f".{self.final.name}.tmp-"
                ):
                    shutil.rmtree(build, ignore_errors=True)
                self.lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(holder, f)
            return
        raise OutputFolderBusy(f"out {self.final}: cannot take the lock {self.lock}")

    @staticmethod
    def _gone(holder: dict) -> bool:
        """The lock's holder is a process of this host that no longer runs."""
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def install(self) -> None:
        """Move the finished run into the folder, replacing the previous run's entries; Ctrl-C
        waits until the move is done."""
        with _deferred_sigint():
            self.final.mkdir(exist_ok=True)
            trash = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
            trash.mkdir(exist_ok=True)
            for entry in sorted(self.final.iterdir()):
                if layout.is_run_output(entry.name):
                    os.replace(entry, trash / entry.name)
            for entry in sorted(self.build.iterdir()):
                os.replace(entry, self.final / entry.name)
            self.build.rmdir()
            shutil.rmtree(trash)  # only entries of the previous run, by their fixed names
            self.installed = True


class _deferred_sigint:
    """Hold SIGINT (Ctrl-C) back for the duration of a block, then deliver it (main thread
    only; elsewhere a no-op)."""

    def __enter__(self) -> None:
        self.caught = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():

            def hold(signum: int, frame: Any) -> None:
                self.caught = True

            self.previous = signal.signal(signal.SIGINT, hold)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            if self.caught:
                raise KeyboardInterrupt


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
    ``test``); write the run's files into ``out`` (:mod:`ctfp.imageclef.layout`) through an
    :class:`OutputFolder`; return the record. The arguments are those of
    :func:`ctfp.imageclef.experiments.run_method`.

    Everything that can be checked is checked before any work: the options, the folders
    (``out`` inside an input folder or an input inside ``out``), the pairing of development and
    test datasets, every test image's id, every image's pixels, the test labels and the
    hold-out sizes. Ctrl-C raises :class:`RunInterrupted` saying what was left where."""
    if str(out) == "":
        raise ValueError("out: expected an output folder, found '' (an empty name)")
    out = Path(out)
    _check_settings(method, scorer, out, decision, holdout, test_generated, test, test_labels)
    _check_apart(out, data=data, test=test)
    folder = OutputFolder(out)
    try:
        with folder:
            record, indexes = _run(
                method, scorer, data, folder, test, test_labels, decision, holdout, seed,
                threads, on_unreadable, test_generated,
            )  # fmt: skip
            folder.install()
        from ctfp.imageclef.report import write_run_report

        write_run_report(out, record=layout.RECORD, indexes=indexes)
    except KeyboardInterrupt:
        if folder.installed:
            raise RunInterrupted(
                f"the run is complete in {out}; its report was not written (ctfp report {out})"
            ) from None
        raise RunInterrupted(
            f"nothing of this run was kept; {out} is as it was before the run"
        ) from None
    return record


def _check_settings(
    method: Method,
    scorer: Scorer,
    out: Path,
    decision: str,
    holdout: float,
    test_generated: str,
    test: str | os.PathLike[str] | None,
    test_labels: str | os.PathLike[str] | None,
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
    if test is None and test_generated != "development":
        raise ValueError(
            f"test_generated={test_generated!r} (--test-generated) says how test images are "
            f"scored, but no test data is given (test, --test)"
        )
    if test is None and test_labels is not None:
        raise ValueError(
            f"test_labels={str(test_labels)!r} (--test-labels) are the labels of test images, "
            f"but no test data is given (test, --test)"
        )
    if (
        isinstance(holdout, bool)
        or not isinstance(holdout, (int, float, np.integer, np.floating))
        or not (holdout == 0 or 0 < holdout < 1)
    ):
        raise ValueError(
            f"holdout (--holdout): expected 0 (none) or a fraction between 0 and 1, "
            f"found {holdout!r}"
        )
    if isinstance(make_rule(decision), CalibratedThreshold) and holdout <= 0:
        raise ValueError(
            f"decision={decision!r} calibrates a threshold on held-out development images: "
            "pass holdout > 0 (e.g. 0.25), or use 'threshold:0.5' or 'top:0.5'"
        )
    previous = _read_record(layout.record_path(out))
    key = (previous or {}).get("method", {})
    key = key.get("key") if isinstance(key, dict) else None
    if key is not None and key != method.key:
        raise ValueError(
            f"out {out}: holds the run of method {key} ({layout.RECORD}); each method needs "
            f"its own folder, e.g. {layout.method_dir(out.parent, method.key)}"
        )


def _check_apart(out: Path, **inputs: str | os.PathLike[str] | None) -> None:
    """``out`` is neither inside an input folder nor holds one (the run would read its own
    files, or replace its inputs)."""
    o = Path(os.path.realpath(out))
    for name, path in inputs.items():
        if path is None:
            continue
        p = Path(os.path.realpath(path))
        if o == p or p in o.parents:
            raise ValueError(
                f"out {out}: inside the {name} folder {path}; the run would read its own "
                f"files as data: choose an output folder outside the data"
            )
        if o in p.parents:
            raise ValueError(
                f"out {out}: holds the {name} folder {path}; choose an output folder outside "
                f"the data"
            )


def _run(
    m: Method,
    scorer: Scorer,
    data: str | os.PathLike[str],
    folder: OutputFolder,
    test: str | os.PathLike[str] | None,
    test_labels: str | os.PathLike[str] | None,
    decision: str,
    holdout: float,
    seed: int,
    threads: int | None,
    on_unreadable: str,
    test_generated: str,
) -> tuple[dict, list]:
    build, final = folder.build, folder.final
    pairs = find_data(data, test)
    check_ids(pairs)
    unreadable = check_images(pairs, on_unreadable, threads)
    truth = read_truth(test_labels, pairs, unreadable)
    for ds, _ in pairs:
        check_holdout(len(ds.used), len(ds.not_used), holdout, ds.name)
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
    # the record in the temporary folder is rewritten after each dataset (what was finished)
    record_path = layout.record_path(build)
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
            t_pred, written = _predict_test(
                build, final, ts, t_scores, rule, unreadable, on_unreadable
            )
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
        write_tables(results.rows, build, stem=layout.RESULTS)
        _plots(build, m, results, record)
    record["status"] = "complete"
    _write_record(record_path, record)
    return record, indexes


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
