"""Names in and out of a run: the image-id rule, the labels and groups CSV files a user gives,
and the fixed file names of an output folder.

One home for each: the runner writes the names below, the report and ``ctfp run`` read them
from here, so a script can name every file of an output folder without a glob::

    OUT/record.json            the record of the run (status, config, per-dataset results)
    OUT/results.md, .json      the metric tables
    OUT/run_<split>.txt        the run file of a test split (``run_test.txt``)
    OUT/scores_<split>.csv     ``id,score,predicted`` of each test image of that split
    OUT/roc.png, histograms.png, confusion.png
    OUT/gallery_<dataset>.png, .json, training_<dataset>.png   (report figures)
    OUT/leaktest_<dataset>.png     the leak test's null distribution (report figure)
    OUT/leaktest.json              ``ctfp leaktest``: the verdicts in short
    OUT/report.html            the report page

A folder holding several methods (``ctfp demo``) keeps each in a subfolder named by the
method's short key (:func:`method_dir`: ``OUT/1/record.json``, ``OUT/sim-pixel/record.json``).
The names a run writes are :func:`is_run_output`'s; a re-run replaces those and no others.

Messages of a run (unreadable files, the leak test) go to the :data:`log` logger
(``ctfp.imageclef``), which prints nothing unless the application configures logging.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ctfp.exceptions import CtfpError

__all__ = [
    "INCOMPLETE",
    "LEAKTEST_JSON",
    "RECORD",
    "REPORT",
    "RESULTS",
    "LabelsError",
    "confusion_plot",
    "esrgan_cache",
    "gallery_stem",
    "histogram_plot",
    "id_problem",
    "image_id",
    "is_run_output",
    "leaktest_plot",
    "log",
    "method_dir",
    "read_groups",
    "read_test_labels",
    "record_path",
    "roc_plot",
    "read_scores_csv",
    "run_file_path",
    "scores_csv_text",
    "scores_path",
    "split_tag",
    "training_plot",
]

#: File names of an output folder (see the module text).
RECORD = "record.json"
RESULTS = "results"  # .md and .json, written by :func:`ctfp.membership.metrics.write_tables`
#: ``ctfp leaktest``'s verdicts in short (:mod:`ctfp.imageclef.leakcheck`)
LEAKTEST_JSON = "leaktest.json"
REPORT = "report.html"
#: the marker of a partial folder, written by earlier versions (a run is now built apart and
#: moved into place when complete); a re-run removes it with the rest of the previous run
INCOMPLETE = "INCOMPLETE"

#: the logger of runs: nothing is printed unless the application configures logging
log = logging.getLogger("ctfp.imageclef")
log.addHandler(logging.NullHandler())


# --------------------------------------------------------------------------------------------------
# image ids


def image_id(path: str | os.PathLike[str], *, strip_extension: bool = True) -> str:
    """The id of an image (run files, labels and groups CSVs, score files): its file name,
    without ``.png`` (any case) when ``strip_extension``."""
    name = Path(path).name
    if strip_extension and name.lower().endswith(".png"):
        name = name[: -len(".png")]
    return name


def id_problem(ident: str) -> str | None:
    """Why ``ident`` cannot be an id of a run file (``id,label`` lines, UTF-8), or None: empty,
    space at either end, a comma, a control character (newline, tab, ...), or a name that is
    not UTF-8 (the undecodable bytes ``os.listdir`` hands over as surrogate escapes)."""
    if not ident:
        return "an empty id"
    try:
        ident.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not UTF-8"
    if ident != ident.strip():
        return "space at the start or end"
    if "," in ident:
        return "a comma (the run file's separator)"
    if any(unicodedata.category(c) == "Cc" for c in ident):
        return "a control character (newline, tab, ...)"
    return None


# --------------------------------------------------------------------------------------------------
# output names


_RUN_OUTPUT = re.compile(
    r"^(record\.json|report\.html|INCOMPLETE|results\.(md|json)|roc\.png|histograms\.png"
    r"|confusion\.png|run_.+\.txt|scores_.+\.csv|gallery_.+\.(png|json)|training_.+\.png"
    r"|leaktest\.json|leaktest_.+\.png)$"
)


def is_run_output(name: str) -> bool:
    """Whether the entry ``name`` of an output folder is one a run writes (the names above):
    a re-run replaces exactly these; anything else (an ESRGAN cache, files of one's own)
    stays."""
    return bool(_RUN_OUTPUT.match(name))


def split_tag(name: str) -> str:
    """A dataset or split name as a file-name part: ``"test/Dataset1"`` -> ``"test_Dataset1"``."""
    return name.replace("/", "_")


def method_dir(out: str | os.PathLike[str], key: str) -> Path:
    """The folder of one method inside a folder of several (``ctfp demo``): ``OUT/<key>``."""
    return Path(out) / key


def record_path(out: str | os.PathLike[str]) -> Path:
    return Path(out) / RECORD


def run_file_path(out: str | os.PathLike[str], split: str) -> Path:
    """``OUT/run_<split>.txt``: the run file of the test split named ``split``."""
    return Path(out) / f"run_{split_tag(split)}.txt"


def scores_path(out: str | os.PathLike[str], split: str) -> Path:
    """``OUT/scores_<split>.csv``: ``id,score,predicted`` of each test image of ``split``."""
    return Path(out) / f"scores_{split_tag(split)}.csv"


_SCORES_HEADER = ("id", "score", "predicted")


def scores_csv_text(rows: Iterable[Sequence[str]]) -> str:
    """The text of a scores file: ``id,score,predicted`` rows under that header, written by
    the csv module's rules (an id with a comma or a quote is quoted)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_SCORES_HEADER)
    writer.writerows(rows)
    return buf.getvalue()


def read_scores_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a scores file (:func:`scores_csv_text`) as ``{"id", "score", "predicted"}``
    dicts, read by the csv module's rules; a file without that header raises ValueError."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != _SCORES_HEADER:
            raise ValueError(
                f"{path}: expected the header {','.join(_SCORES_HEADER)}, found "
                f"{','.join(reader.fieldnames or ()) or 'nothing'}"
            )
        return list(reader)


def roc_plot(out: str | os.PathLike[str]) -> Path:
    return Path(out) / "roc.png"


def histogram_plot(out: str | os.PathLike[str]) -> Path:
    return Path(out) / "histograms.png"


def confusion_plot(out: str | os.PathLike[str]) -> Path:
    return Path(out) / "confusion.png"


def gallery_stem(out: str | os.PathLike[str], dataset: str) -> Path:
    """``OUT/gallery_<dataset>``: the report's gallery, ``.png`` and ``.json``."""
    return Path(out) / f"gallery_{split_tag(dataset)}"


def training_plot(out: str | os.PathLike[str], dataset: str) -> Path:
    return Path(out) / f"training_{split_tag(dataset)}.png"


def leaktest_plot(out: str | os.PathLike[str], dataset: str) -> Path:
    """``OUT/leaktest_<dataset>.png``: the null distributions of a dataset's leak tests."""
    return Path(out) / f"leaktest_{split_tag(dataset)}.png"


def esrgan_cache(out: str | os.PathLike[str]) -> Path:
    """Method 4's default upscale cache."""
    return Path(out) / "esrgan_cache"


# --------------------------------------------------------------------------------------------------
# labels and groups


class LabelsError(CtfpError, ValueError):
    """A test-labels CSV that cannot be used; the message names the file and the line."""


_ID_HEADERS = ("id", "image_id", "image", "name", "file", "filename")
_LABEL_HEADERS = ("label", "labels", "used", "member", "y")
_GROUP_HEADERS = ("group", "groups", "patient", "patient_id", "subject", "subject_id")


def _id_rows(
    path: Path, what: str, fields: str, value_headers: tuple[str, ...]
) -> Iterator[tuple[int, str, str]]:
    """``(line, id, value)`` of each ``id,value`` row of a CSV file: a header row (an id
    header and one of ``value_headers``, any case) is skipped, ids are :func:`image_id`s
    (``.png`` stripped), blank lines are skipped; a row without two fields, an empty value or a
    duplicate id raises :class:`LabelsError` naming the file and line."""
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
        ident = image_id(ident) if ident else ident
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
    known = None if test_ids is None else {image_id(i) for i in test_ids}
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


def read_groups(path: str | os.PathLike[str]) -> dict[str, str]:
    """Which real images belong together (e.g. the patient of each CT slice): ``id,group`` per
    line -> ``{id: group}``; ids are image file names without ``.png``, development and test
    images alike. A header row (``id,group``, ``image_id,patient``, ... in any case) is skipped.
    A row without two fields, an empty field or a duplicate id raises :class:`LabelsError`
    naming the file and line. Images not listed are groups of their own."""
    path = Path(path)
    return {ident: g for _, ident, g in _id_rows(path, "groups", "id,group", _GROUP_HEADERS)}
