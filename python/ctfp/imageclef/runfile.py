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
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctfp._util import write_text_atomic
from ctfp.exceptions import CtfpError
from ctfp.imageclef.layout import image_id  # the one image-id rule (re-exported here)

__all__ = [
    "RunFileError",
    "Problem",
    "SingleClassWarning",
    "image_id",
    "test_ids",
    "validate_run_file",
    "validate_run_text",
    "write_run_file",
]

_LINE = re.compile(r"^(?P<id>[^,\s][^,]*?),(?P<space> ?)(?P<label>.*)$")


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


def validate_run_text(text: str, ids: Iterable[str]) -> list[Problem]:
    """Every problem of run-file ``text`` against the expected ``ids``, in line order."""
    expected = set(ids)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        problems.append(Problem(0, "empty", "the file is empty"))
    for no, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.strip() == "":
            problems.append(Problem(no, "empty line", "empty line"))
            continue
        m = _LINE.match(line)
        if m is None:
            problems.append(
                Problem(no, "format", f"wrong format {line!r}; expected '<image_id>,<label>'")
            )
            continue
        ident, label = m.group("id"), m.group("label")
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
        if not re.fullmatch(r"[+-]?[0-9]+", label):  # ASCII digits only, not any Unicode digit
            problems.append(Problem(no, "non-integer", f"label {label!r} is not an integer"))
        elif int(label) < 0:
            problems.append(Problem(no, "below 0", f"label {label} is below 0"))
        elif int(label) > 1:
            problems.append(Problem(no, "above 1", f"label {label} is above 1"))
    missing = sorted(expected - set(seen))
    if missing:
        shown = ", ".join(missing[:5]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        problems.append(Problem(0, "missing ids", f"{len(missing)} test ids have no line: {shown}"))
    return problems


def validate_run_file(
    path: str | os.PathLike[str], test_dir: str | os.PathLike[str], *, strip_extension: bool = True
) -> list[Problem]:
    """Every problem of the run file at ``path`` against the test images in ``test_dir``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return [Problem(0, "encoding", f"not UTF-8 text: {exc}")]
    return validate_run_text(text, test_ids(test_dir, strip_extension=strip_extension))


def write_run_file(
    path: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    labels: Sequence[int] | np.ndarray,
    *,
    test_dir: str | os.PathLike[str] | None = None,
    strip_extension: bool = True,
) -> Path:
    """Write a run file for ``images`` (paths or ids) with their 0/1 ``labels``.

    The text is checked first with the same rules as :func:`validate_run_file` (against the PNGs
    of ``test_dir`` when given, else against ``images`` themselves), and written atomically: a
    temporary file in the same folder replaced into place, so a failed run never leaves a
    half-written file. Raises :class:`RunFileError` listing every problem; warns with
    :class:`SingleClassWarning` when all labels are equal.
    """
    ids = [image_id(p, strip_extension=strip_extension) for p in images]
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
    if not np.isin(labels, (0, 1)).all():
        bad = [str(v) for v in labels.tolist() if v not in (0, 1)][:5]
        raise RunFileError(f"labels: expected integers 0 or 1, found {', '.join(bad)}")
    text = "".join(f"{i},{int(v)}\n" for i, v in zip(ids, labels, strict=True))
    expected = test_ids(test_dir, strip_extension=strip_extension) if test_dir is not None else ids
    problems = validate_run_text(text, expected)
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... {len(problems) - 20} more" if len(problems) > 20 else ""
        raise RunFileError(
            f"run file {path} not written: {len(problems)} problems\n  {listing}{more}", problems
        )
    if len(ids) > 1 and len(set(labels.tolist())) == 1:
        warnings.warn(
            f"run file {path}: all {len(ids)} predictions are {int(labels[0])}; a single-class run "
            "carries no membership information (the 2024 paper's runs were rejected for this)",
            SingleClassWarning,
            stacklevel=2,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
