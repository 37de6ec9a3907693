"""ImageCLEF run files: validate against the test folder, then write atomically.

The organisers' rules (2023 validator, kept as the default):

- one line per test image, ``<image_id>,<label>``; no header; comma separator (one space after the
  comma is tolerated);
- ``image_id`` is the file name without ``.png`` (``strip_extension=False`` keeps it);
- ``label`` is the integer 0 or 1; every test id exactly once; no empty lines.

A file is rejected for an empty line, a wrong format, an unknown id, a duplicate id, a non-integer
label, a value below 0 or above 1, or missing ids. The 2024 paper lost three of four runs to a
malformed file, so ctfp writes run files only through :func:`write_run_file`, which applies the same
checks before anything touches the disk and warns loudly when every prediction is one class.

:func:`validate_run_text` accepts exactly the files the organisers' validator accepts: lines as
Python's text mode reads them (``\n``, ``\r\n`` or ``\r``; the last line may lack one), each
split at every comma into exactly two tokens, each token stripped of white space, the id one of the
test ids, the label what ``int()`` reads as 0 or 1. ctfp is stricter on purpose only in what it
*warns* about (:func:`run_text_warnings`, never a rejection): padding around a token beyond the one
space after the comma, labels written other than ``0``/``1`` (``+1``, ``00``, other scripts'
digits), bare ``\r`` line ends, and an empty file.

Attribution run files (subtask 2, ``ctfp attribute`` / ``ctfp cluster``) follow the same rules
with a set of labels in place of 0/1 (``labels=`` / ``label_set=``): ``<image_id>,<source>``,
the source one of the development sources (or the clusters found). The organisers' format for
that subtask is not published in a form ctfp knows; ctfp keeps the subtask-1 id rule (file name
without ``.png``) and the one-line-per-test-image rule, and takes the test ids from the test
folder's ``generated_unknown/`` (or ``generated/``, or the folder itself).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import check_binary_labels, write_text_atomic
from ctfp.exceptions import CtfpError
from ctfp.imageclef.layout import id_problem, image_id  # the one image-id rule (re-exported)

__all__ = [
    "RunFileError",
    "Problem",
    "SingleClassWarning",
    "image_id",
    "run_file_warnings",
    "generated_test_ids",
    "run_text_warnings",
    "test_ids",
    "validate_run_file",
    "validate_run_text",
    "write_run_file",
]


class RunFileError(CtfpError, ValueError):
    """A run file (or the predictions for one) breaks the organisers' rules; ``problems`` lists
    every problem with its line number."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class SingleClassWarning(UserWarning):
    """Every prediction in a run is the same class: the run says nothing about membership."""


@dataclass(frozen=True)
class Problem:
    """One rule broken: ``line`` is 1-based (0 for problems of the whole file, like missing ids)."""

    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}: {self.message}"


def test_ids(test_dir: str | os.PathLike[str], *, strip_extension: bool = True) -> list[str]:
    """The ids of the real test images: the PNG files of ``test_dir``, or of its ``real_unknown*``
    folder when it is a whole test set (generated images are not scored)."""
    from ctfp.data.datasets import find_unknown_dir

    folder = find_unknown_dir(Path(test_dir))
    # Hidden files (macOS ``._name.png`` resource forks) are not test images; datasets.scan_images
    # skips them too.
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")
    )
    if not files:
        raise RunFileError(f"{folder}: no PNG files; expected the real test images")
    return [image_id(p, strip_extension=strip_extension) for p in files]


def generated_test_ids(test_dir: str | os.PathLike[str]) -> list[str]:
    """The ids of the generated test images of an attribution test folder: the PNG files of its
    ``generated_unknown/`` (or ``generated/``) folder, or of ``test_dir`` itself."""
    from ctfp.attribution.layout import TEST_FOLDERS

    root = Path(test_dir)
    if not root.is_dir():
        raise RunFileError(f"{root}: no such folder; expected the attribution test folder")
    folder = next((root / n for n in TEST_FOLDERS if (root / n).is_dir()), root)
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")
    )
    if not files:
        raise RunFileError(f"{folder}: no PNG files; expected the generated test images")
    return [image_id(p) for p in files]


def _run_lines(text: str) -> list[str]:
    """The lines of a run file as Python's text mode reads them (universal newlines: ``\n``,
    ``\r\n`` and a bare ``\r`` each end a line); a line end after the last line adds no line."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _label_value(token: str) -> int | None:
    """The integer ``int()`` reads from ``token`` (as the organisers' validator does: signs, digits
    of any script, underscores between digits), or None."""
    try:
        return int(token)
    except ValueError:
        return None


def validate_run_text(
    text: str, ids: Iterable[str], *, labels: Iterable[str] | None = None
) -> list[Problem]:
    """Every problem of run-file ``text`` against the expected ``ids``, in line order: the
    organisers' rejections, nothing more (see the module docstring; :func:`run_text_warnings`
    lists what ctfp finds dubious but the organisers accept). ``labels``: the accepted labels
    of an attribution run file (the sources), in place of the integers 0 and 1."""
    expected = set(ids)
    allowed = None if labels is None else {str(v) for v in labels}
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for no, line in enumerate(_run_lines(text), 1):
        if line.strip() == "":
            problems.append(Problem(no, "empty line", "empty line"))
            continue
        tokens = line.split(",")
        if len(tokens) != 2:
            problems.append(
                Problem(no, "format", f"wrong format {line!r}; expected '<image_id>,<label>'")
            )
            continue
        ident, label = tokens[0].strip(), tokens[1].strip()
        if ident not in expected:
            problems.append(Problem(no, "unknown id", f"unknown image id {ident!r}"))
        elif ident in seen:
            problems.append(
                Problem(
                    no,
                    "duplicate id",
                    f"duplicate image id {ident!r} (first on line {seen[ident]})",
                )
            )
        else:
            seen[ident] = no
        if allowed is not None:
            if label not in allowed:
                shown = ", ".join(sorted(allowed))
                problems.append(
                    Problem(no, "unknown label", f"label {label!r} is not one of: {shown}")
                )
            continue
        value = _label_value(label)
        if value is None:
            problems.append(Problem(no, "non-integer", f"label {label!r} is not an integer"))
        elif value < 0:
            problems.append(Problem(no, "below 0", f"label {label} is below 0"))
        elif value > 1:
            problems.append(Problem(no, "above 1", f"label {label} is above 1"))
    missing = sorted(expected - set(seen))
    if missing:
        shown = ", ".join(missing[:5]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        problems.append(Problem(0, "missing ids", f"{len(missing)} test ids have no line: {shown}"))
    return problems


def run_text_warnings(text: str, *, labels: Iterable[str] | None = None) -> list[Problem]:
    """What ctfp finds dubious in run-file ``text`` although the organisers accept it, in line
    order: never a reason to reject (:func:`validate_run_text` decides that). ``labels``: an
    attribution run file (no 0/1 label-form warning)."""
    warns: list[Problem] = []
    if not _run_lines(text):
        warns.append(Problem(0, "empty", "the file is empty"))
    if re.search(r"\r(?!\n)", text):
        warns.append(Problem(0, "line ends", "bare '\\r' line ends (old Mac style)"))
    for no, line in enumerate(_run_lines(text), 1):
        tokens = line.split(",")
        if len(tokens) != 2:
            continue  # an error, reported by validate_run_text
        ident, label = tokens[0].strip(), tokens[1].strip()
        if tokens[0] != ident or tokens[1] not in (label, " " + label):
            warns.append(
                Problem(
                    no,
                    "padding",
                    f"white space around a token in {line!r}; expected '<image_id>,<label>' "
                    "(one space after the comma at most)",
                )
            )
        if labels is None and _label_value(label) in (0, 1) and label not in ("0", "1"):
            warns.append(
                Problem(no, "label form", f"label {label!r} read as {_label_value(label)}")
            )
    return warns


def _read_run_text(path: str | os.PathLike[str]) -> str:
    """A run file's text as stored (``newline=""``: line ends untranslated, for the warnings)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def validate_run_file(
    path: str | os.PathLike[str],
    test_dir: str | os.PathLike[str],
    *,
    strip_extension: bool = True,
    labels: Iterable[str] | None = None,
) -> list[Problem]:
    """Every problem of the run file at ``path`` against the test images in ``test_dir``.
    ``labels``: an attribution run file whose labels must be among ``labels``, checked against
    the generated test images (:func:`generated_test_ids`)."""
    try:
        text = _read_run_text(path)
    except UnicodeDecodeError as exc:
        return [Problem(0, "encoding", f"not UTF-8 text: {exc}")]
    if labels is not None:
        return validate_run_text(text, generated_test_ids(test_dir), labels=labels)
    return validate_run_text(text, test_ids(test_dir, strip_extension=strip_extension))


def run_file_warnings(
    path: str | os.PathLike[str], *, labels: Iterable[str] | None = None
) -> list[Problem]:
    """:func:`run_text_warnings` of the run file at ``path`` (none for a file that is not UTF-8:
    :func:`validate_run_file` reports that)."""
    try:
        text = _read_run_text(path)
    except UnicodeDecodeError:
        return []
    return run_text_warnings(text, labels=labels)


def write_run_file(
    path: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    labels: Sequence[int] | Sequence[str] | np.ndarray,
    *,
    test_dir: str | os.PathLike[str] | None = None,
    strip_extension: bool = True,
    shown_as: str | os.PathLike[str] | None = None,
    label_set: Sequence[str] | None = None,
) -> Path:
    """Write a run file for ``images`` (paths or ids) with their 0/1 ``labels`` (or, with
    ``label_set``, their text labels among ``label_set``: an attribution run file).

    ``shown_as``: the name messages give the file (default ``path``; the runner writes into a
    temporary folder that becomes the output folder, and names the file where it will be).

    The text is checked first with the same rules as :func:`validate_run_file` (against the PNGs
    of ``test_dir`` when given, else against ``images`` themselves), and written atomically: a
    temporary file in the same folder replaced into place, so a failed run never leaves a
    half-written file. Raises :class:`RunFileError` listing every problem; warns with
    :class:`SingleClassWarning` when all labels are equal.
    """
    named = path if shown_as is None else shown_as
    ids = [image_id(p, strip_extension=strip_extension) for p in images]
    if not ids:
        raise RunFileError(f"run file {named} not written: no images; the run file is empty")
    if label_set is not None:
        return _write_label_run_file(path, ids, labels, label_set, named)
    labels = np.asarray(labels)
    if labels.shape != (len(ids),):
        raise RunFileError(
            f"labels: expected {len(ids)} labels (one per image), found shape {labels.shape}"
        )
    # np.asarray([]) is float64: no labels is "the file is empty" below, not a dtype problem
    if labels.size and labels.dtype.kind not in "iub":
        shown = ", ".join(repr(v) for v in labels[:3].tolist())
        raise RunFileError(
            f"labels: expected integers 0 or 1, found {labels.dtype} labels ({shown}, ...)"
        )
    try:
        check_binary_labels(labels, "labels")
    except ValueError as exc:
        raise RunFileError(str(exc)) from None
    text = "".join(f"{i},{int(v)}\n" for i, v in zip(ids, labels, strict=True))
    expected = test_ids(test_dir, strip_extension=strip_extension) if test_dir is not None else ids
    problems = validate_run_text(text, expected)
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... {len(problems) - 20} more" if len(problems) > 20 else ""
        raise RunFileError(
            f"run file {named} not written: {len(problems)} problems\n  {listing}{more}", problems
        )
    if len(ids) > 1 and len(set(labels.tolist())) == 1:
        warnings.warn(
            f"run file {named}: all {len(ids)} predictions are {int(labels[0])}; a single-class "
            "run carries no membership information (the 2024 paper's runs were rejected for this)",
            SingleClassWarning,
            stacklevel=2,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


def _write_label_run_file(
    path: str | os.PathLike[str],
    ids: list[str],
    labels: Sequence[Any] | np.ndarray,
    label_set: Sequence[str],
    named: str | os.PathLike[str],
) -> Path:
    """:func:`write_run_file` of an attribution run: text labels among ``label_set``."""
    shown = [str(v) for v in labels]
    if len(shown) != len(ids):
        raise RunFileError(
            f"labels: expected {len(ids)} labels (one per image), found {len(shown)}"
        )
    allowed = [str(v) for v in label_set]
    bad = sorted({str(v) for v in allowed if id_problem(v) is not None})
    if bad:
        raise RunFileError(
            f"label_set: {bad[0]!r} cannot be a run-file label ({id_problem(bad[0])})"
        )
    text = "".join(f"{i},{v}\n" for i, v in zip(ids, shown, strict=True))
    problems = validate_run_text(text, ids, labels=allowed)
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... {len(problems) - 20} more" if len(problems) > 20 else ""
        raise RunFileError(
            f"run file {named} not written: {len(problems)} problems\n  {listing}{more}", problems
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
