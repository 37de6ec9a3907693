"""Run files (python/ctfp/runfile.py): the organisers' rules, checked line by line, and the writer
that refuses to put a bad file on disk.

Decisions tested here: the validator accepts exactly what the organisers' validator accepts
(checked against ``tests/reference.py``'s reading of their published rules, on cases with the
properties of their example runs and on random files); CRLF line endings are accepted, one final
newline is optional, but a second one is an empty line; padding around tokens and labels such as
``+1`` are accepted with a warning, never rejected.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctfp.data.datasets import DatasetError
from ctfp.exceptions import CtfpError
from ctfp.imageclef import runfile as rf  # not `from ... import test_ids`: pytest would collect it
from ctfp.imageclef.runfile import (
    Problem,
    RunFileError,
    SingleClassWarning,
    image_id,
    run_file_warnings,
    run_text_warnings,
    validate_run_file,
    validate_run_text,
    write_run_file,
)

IDS = [f"real_unknown_{k:04d}" for k in range(4)]
GOOD = ["real_unknown_0000,1", "real_unknown_0001,0", "real_unknown_0002,1", "real_unknown_0003,0"]


def kinds(problems: list[Problem]) -> list[tuple[int, str]]:
    return [(p.line, p.kind) for p in problems]


# --------------------------------------------------------------------------------------------------
# ids


def test_image_id() -> None:
    assert image_id("a/b/real_unknown_0001.png") == "real_unknown_0001"
    assert image_id(Path("x/IMG.PNG")) == "IMG"
    assert image_id("a/real_unknown_0001.png", strip_extension=False) == "real_unknown_0001.png"


def test_one_image_id_rule_for_run_files_labels_groups_and_scores(tmp_path) -> None:
    """Run files, the labels and groups CSVs (read and written by the demo's datasets) and the
    scores files all take an image's id from :func:`ctfp.imageclef.layout.image_id`."""
    from ctfp.imageclef import layout
    from ctfp.imageclef.leaky import LeakyDataSpec, make_leaky_dataset

    assert rf.image_id is layout.image_id
    make_leaky_dataset(tmp_path, LeakyDataSpec.small(seed=3))
    unknown = sorted((tmp_path / "test" / "real_unknown").glob("*.png"))
    ids = [layout.image_id(p) for p in unknown]
    assert sorted(layout.read_test_labels(tmp_path / "test_labels.csv", ids)) == sorted(ids)
    assert set(ids) <= set(layout.read_groups(tmp_path / "patients.csv"))
    (tmp_path / "labels.csv").write_text("ID,Label\nA.PNG,1\nb,0\n")
    assert layout.read_test_labels(tmp_path / "labels.csv", ["a/A.png", "b"]) == {"A": 1, "b": 0}
    assert image_id("a/b.jpg") == "b.jpg"
    assert image_id("a/b.png.png") == "b.png"


def test_test_ids_from_test_root_or_folder(test_root: Path) -> None:
    assert rf.test_ids(test_root) == IDS  # real_unknown/, not generated/
    assert rf.test_ids(test_root / "real_unknown") == IDS
    assert rf.test_ids(test_root, strip_extension=False) == [i + ".png" for i in IDS]


def test_test_ids_skip_other_files(test_root: Path) -> None:
    unknown = test_root / "real_unknown"
    (unknown / "readme.txt").write_text("x")
    (unknown / "._real_unknown_0000.png").write_bytes(b"\0\5\26\7")  # macOS resource fork
    (unknown / "sub.png").mkdir()
    assert rf.test_ids(test_root) == IDS


def test_test_ids_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFileError, match="no PNG files"):
        rf.test_ids(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a folder"):
        rf.test_ids(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# validator: valid files


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(GOOD) + "\n",
        "\n".join(GOOD),  # no final newline
        "\r\n".join(GOOD) + "\r\n",  # CRLF
        "\r\n".join(GOOD),
        "\n".join(line.replace(",", ", ") for line in GOOD),  # one space after the comma
        "\n".join(reversed(GOOD)),  # any order
    ],
    ids=["lf", "no-final-newline", "crlf", "crlf-no-final", "space", "reordered"],
)
def test_valid_text(text: str) -> None:
    assert validate_run_text(text, IDS) == []


def test_valid_file_crlf_and_strip_option(test_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.txt"
    run.write_bytes(("\r\n".join(GOOD) + "\r\n").encode())
    assert validate_run_file(run, test_root) == []
    # ids with the extension are wrong by default, right with strip_extension=False
    run.write_text("\n".join(line.replace(",", ".png,") for line in GOOD) + "\n")
    assert {p.kind for p in validate_run_file(run, test_root)} == {"unknown id", "missing ids"}
    assert validate_run_file(run, test_root, strip_extension=False) == []


# --------------------------------------------------------------------------------------------------
# validator: each class of the organisers' failures, at the right line


def edited(at: int, line: str | None, *, insert: bool = False) -> str:
    """GOOD with line ``at`` (1-based) replaced by ``line`` (or removed, or ``line`` inserted)."""
    lines = list(GOOD)
    if insert:
        lines.insert(at - 1, line)
    elif line is None:
        del lines[at - 1]
    else:
        lines[at - 1] = line
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (edited(3, "", insert=True), [(3, "empty line")]),
        (edited(3, "   ", insert=True), [(3, "empty line")]),
        ("\n".join(GOOD) + "\n\n", [(5, "empty line")]),  # a second final newline
        (edited(2, "real_unknown_0001;0"), [(2, "format"), (0, "missing ids")]),
        (edited(2, "real_unknown_0001 0"), [(2, "format"), (0, "missing ids")]),
        (edited(2, "real_unknown_0001"), [(2, "format"), (0, "missing ids")]),
        (edited(2, ",0"), [(2, "unknown id"), (0, "missing ids")]),  # the id
        (edited(1, "image_id,label", insert=True), [(1, "unknown id"), (1, "non-integer")]),
        (edited(5, "real_unknown_9999,1", insert=True), [(5, "unknown id")]),
        (edited(5, "real_unknown_0000,0", insert=True), [(5, "duplicate id")]),
        (edited(2, "real_unknown_0001,0.5"), [(2, "non-integer")]),
        (edited(2, "real_unknown_0001,1.0"), [(2, "non-integer")]),
        (edited(2, "real_unknown_0001,yes"), [(2, "non-integer")]),
        (edited(2, "real_unknown_0001,"), [(2, "non-integer")]),
        (edited(2, "real_unknown_0001,2"), [(2, "above 1")]),
        (edited(2, "real_unknown_0001,10"), [(2, "above 1")]),
        (edited(2, "real_unknown_0001,-1"), [(2, "below 0")]),
        (edited(3, None), [(0, "missing ids")]),
    ],
)
def test_each_failure_class(text: str, expected: list[tuple[int, str]]) -> None:
    assert kinds(validate_run_text(text, IDS)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (edited(2, " real_unknown_0001,0"), [(2, "padding")]),
        (edited(2, "real_unknown_0001        ,0"), [(2, "padding")]),
        (edited(2, "real_unknown_0001,   0"), [(2, "padding")]),
        (edited(2, "real_unknown_0001,  1"), [(2, "padding")]),
        (edited(2, "real_unknown_0001,1 "), [(2, "padding")]),
        (edited(2, "real_unknown_0001,\t1"), [(2, "padding")]),
        (edited(2, "real_unknown_0001,\u0661"), [(2, "label form")]),  # Arabic-Indic one
        (edited(2, "real_unknown_0001,+1"), [(2, "label form")]),
        (edited(2, "real_unknown_0001,00"), [(2, "label form")]),
        (edited(2, "real_unknown_0001 , +1"), [(2, "padding"), (2, "label form")]),
        ("\r".join(GOOD), [(0, "line ends")]),
    ],
)
def test_accepted_with_a_warning(text: str, expected: list[tuple[int, str]]) -> None:
    # what the organisers accept is valid; ctfp only warns about it
    assert validate_run_text(text, IDS) == []
    assert kinds(run_text_warnings(text)) == expected


def test_canonical_files_have_no_warnings(test_root: Path, tmp_path: Path) -> None:
    for text in (
        "\n".join(GOOD) + "\n",
        "\r\n".join(GOOD),
        "\n".join(g.replace(",", ", ") for g in GOOD),
    ):
        assert run_text_warnings(text) == []
    run = tmp_path / "run.txt"
    run.write_bytes("\r".join(GOOD).encode())  # bare CR: read as stored, not translated
    assert validate_run_file(run, test_root) == []
    assert kinds(run_file_warnings(run)) == [(0, "line ends")]


def test_messages_name_the_problem() -> None:
    (dup,) = validate_run_text(edited(5, "real_unknown_0002,0", insert=True), IDS)
    assert "real_unknown_0002" in dup.message and "first on line 3" in dup.message
    assert str(dup).startswith("line 5: duplicate image id")
    (missing,) = validate_run_text(edited(3, None), IDS)
    assert "1 test ids have no line: real_unknown_0002" in missing.message
    assert str(missing).startswith("file: ")
    (above,) = validate_run_text(edited(2, "real_unknown_0001,7"), IDS)
    assert "7" in above.message


def test_many_missing_ids_are_summarised() -> None:
    ids = [f"x{k:02d}" for k in range(12)]
    (p,) = validate_run_text("x00,1\nx01,0\n", ids)
    assert p.kind == "missing ids"
    assert p.message.startswith("10 test ids have no line: x02, x03, x04, x05, x06, ...")
    assert "(10 in all)" in p.message


def test_empty_file() -> None:
    assert kinds(validate_run_text("", IDS)) == [(0, "missing ids")]
    assert kinds(validate_run_text("", [])) == []  # nothing expected, nothing missing
    assert kinds(run_text_warnings("")) == [(0, "empty")]


def test_every_problem_in_line_order() -> None:
    text = "\n".join(
        [
            "real_unknown_0000,1",
            "",  # 2 empty
            "real_unknown_0001,3",  # 3 above 1
            "real_unknown_0002,-2",  # 4 below 0
            "real_unknown_0000,0",  # 5 duplicate
            "nope,x",  # 6 unknown id and non-integer
            "garbage",  # 7 format
        ]
    )
    assert kinds(validate_run_text(text, IDS)) == [
        (2, "empty line"),
        (3, "above 1"),
        (4, "below 0"),
        (5, "duplicate id"),
        (6, "unknown id"),
        (6, "non-integer"),
        (7, "format"),
        (0, "missing ids"),
    ]


def test_not_utf8(test_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.txt"
    run.write_bytes(b"real_unknown_0000,1\n\xff\xfe,0\n")
    assert kinds(validate_run_file(run, test_root)) == [(0, "encoding")]


# --------------------------------------------------------------------------------------------------
# writer


def images_of(test_root: Path) -> list[Path]:
    return sorted((test_root / "real_unknown").glob("*.png"))


def test_write_valid_file(test_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "sub" / "run1.txt"  # parents created
    imgs = images_of(test_root)
    order = [2, 0, 3, 1]
    labels = np.array([1, 0, 0, 1])
    got = write_run_file(out, [imgs[k] for k in order], labels, test_dir=test_root)
    assert got == out
    assert out.read_bytes() == (
        b"real_unknown_0002,1\nreal_unknown_0000,0\nreal_unknown_0003,0\nreal_unknown_0001,1\n"
    )
    assert validate_run_file(out, test_root) == []
    assert os.listdir(out.parent) == ["run1.txt"]


def test_write_ids_without_test_dir_and_keep_extension(test_root: Path, tmp_path: Path) -> None:
    out = write_run_file(tmp_path / "a.txt", IDS, [0, 1, 1, 0])
    assert out.read_text().splitlines() == [
        "real_unknown_0000,0",
        "real_unknown_0001,1",
        "real_unknown_0002,1",
        "real_unknown_0003,0",
    ]
    out = write_run_file(
        tmp_path / "b.txt",
        images_of(test_root),
        [True, False, True, False],
        test_dir=test_root,
        strip_extension=False,
    )
    assert out.read_text().splitlines()[0] == "real_unknown_0000.png,1"
    assert validate_run_file(out, test_root, strip_extension=False) == []


def test_write_replaces_an_existing_file(test_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.txt"
    out.write_text("old\n")
    write_run_file(out, images_of(test_root), np.array([0, 1, 0, 1], np.uint8), test_dir=test_root)
    assert out.read_text().startswith("real_unknown_0000,0\n")


def test_written_file_is_readable_like_any_other(tmp_path: Path) -> None:
    # tempfile.mkstemp makes 0600 files; the run file gets the mode open() would give it
    ref = tmp_path / "ref.txt"
    ref.write_text("x")
    out = write_run_file(tmp_path / "run.txt", IDS, [0, 1, 1, 0])
    assert out.stat().st_mode & 0o777 == ref.stat().st_mode & 0o777


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([0, 1, 1], "expected 4 labels"),
        ([[0, 1], [1, 0]], "expected 4 labels"),
        ([0, 1, 2, 0], "found 2"),
        ([0, -1, 1, 0], "found -1"),
        ([0.0, 1.0, 1.0, 0.0], r"found float64 labels \(0\.0, 1\.0, 1\.0, \.\.\.\)"),
        ([0.2, 0.9, 0.6, 0.1], "found float64 labels"),
        (["0", "1", "1", "0"], r"found <U1 labels \('0', '1', '1', \.\.\.\)"),
        ([None, 1, 1, 0], "found object labels"),
    ],
)
def test_writer_refuses_bad_labels(tmp_path: Path, labels: object, match: str) -> None:
    out = tmp_path / "run.txt"
    with pytest.raises(RunFileError, match=match):
        write_run_file(out, IDS, labels)
    assert os.listdir(tmp_path) == []


def test_writer_names_a_bad_label_far_down(tmp_path: Path) -> None:
    ids = [f"x{k}" for k in range(11)]
    with pytest.raises(RunFileError, match="found 7"):
        write_run_file(tmp_path / "run.txt", ids, [0, 1] * 5 + [7])


@pytest.mark.parametrize(
    ("which", "kind"),
    [
        ([0, 1, 2], "missing ids"),
        ([0, 1, 2, 3, 3], "duplicate id"),
        ([0, 1, 2, 3, "elsewhere/other.png"], "unknown id"),
    ],
)
def test_writer_refuses_wrong_images_and_keeps_a_good_file(
    test_root: Path, tmp_path: Path, which: list, kind: str
) -> None:
    out_dir = tmp_path / "runs"
    out_dir.mkdir()
    out = out_dir / "run.txt"
    good = "\n".join(GOOD) + "\n"
    out.write_text(good)
    imgs = images_of(test_root)
    images = [imgs[k] if isinstance(k, int) else k for k in which]
    labels = [k % 2 for k in range(len(images))]
    with pytest.raises(RunFileError) as exc:
        write_run_file(out, images, labels, test_dir=test_root)
    assert kind in {p.kind for p in exc.value.problems}
    assert "not written" in str(exc.value)
    assert out.read_text() == good
    assert os.listdir(out_dir) == ["run.txt"]  # no temporary file left


def test_writer_refuses_without_creating_folders(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run.txt"
    with pytest.raises(RunFileError):
        write_run_file(out, ["a", "a"], [0, 1])  # duplicate id
    assert not (tmp_path / "new").exists()
    with pytest.raises(RunFileError, match="empty"):
        write_run_file(out, [], [])
    assert not (tmp_path / "new").exists()


def test_writer_refuses_ids_that_break_the_format(tmp_path: Path) -> None:
    with pytest.raises(RunFileError) as exc:
        write_run_file(tmp_path / "run.txt", ["a,b", "c"], [0, 1])
    assert exc.value.problems[0].line == 1
    assert os.listdir(tmp_path) == []


def test_failed_replace_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run.txt"
    out.write_text("previous run\n")

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(rf.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_run_file(out, IDS, [0, 1, 0, 1])
    assert out.read_text() == "previous run\n"
    assert os.listdir(tmp_path) == ["run.txt"]


@pytest.mark.parametrize("value", [0, 1])
def test_single_class_warning(tmp_path: Path, value: int) -> None:
    out = tmp_path / "run.txt"
    with pytest.warns(SingleClassWarning, match=f"all 4 predictions are {value}"):
        write_run_file(out, IDS, [value] * 4)
    assert out.read_text().splitlines()[0] == f"real_unknown_0000,{value}"  # still written


def test_no_warning_for_mixed_predictions(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_run_file(tmp_path / "run.txt", IDS, [0, 0, 0, 1])


def test_run_file_error_is_a_ctfp_value_error() -> None:
    assert issubclass(RunFileError, CtfpError) and issubclass(RunFileError, ValueError)
    assert RunFileError("x").problems == []


# --------------------------------------------------------------------------------------------------
# the organisers' validator: accept what it accepts, reject what it rejects

TEST_IDS = [f"real_unknown_{k:04d}" for k in range(1, 9)]


def _organisers_cases() -> dict[str, tuple[str, bool]]:
    """Files with the properties of the organisers' ten example runs (two valid, eight invalid),
    written here: name -> (text, whether their validator accepts it)."""
    rows = [f"{i},{k % 2}" for k, i in enumerate(TEST_IDS)]
    padded = [f"{TEST_IDS[0]}        ,0", f"{TEST_IDS[1]},   0", *rows[2:]]
    return {
        "ok": ("\n".join(rows) + "\n", True),
        "ok, padded tokens, no final newline": ("\n".join(padded), True),
        "empty line": ("\n".join([*rows[:3], "", *rows[3:]]) + "\n", False),
        "wrong format": ("\n".join([rows[0].replace(",", ";"), *rows[1:]]) + "\n", False),
        "wrong image id": ("\n".join(["real_unknown_9999,1", *rows[1:]]) + "\n", False),
        "same id twice": ("\n".join([*rows, rows[3]]) + "\n", False),
        "score not an integer": ("\n".join([f"{TEST_IDS[0]},0.7", *rows[1:]]) + "\n", False),
        "score above 1": ("\n".join([f"{TEST_IDS[0]},2", *rows[1:]]) + "\n", False),
        "score below 0": ("\n".join([f"{TEST_IDS[0]},-1", *rows[1:]]) + "\n", False),
        "not every id": ("\n".join(rows[:-2]) + "\n", False),
    }


@pytest.mark.parametrize("name", list(_organisers_cases()))
def test_the_organisers_example_classes(name: str) -> None:
    import reference

    text, accepted = _organisers_cases()[name]
    assert reference.organisers_accept(text, TEST_IDS) is accepted  # the reference reads it so
    assert (validate_run_text(text, TEST_IDS) == []) is accepted


def test_the_organisers_valid_examples_warn_about_padding_only() -> None:
    text, _ = _organisers_cases()["ok, padded tokens, no final newline"]
    assert kinds(run_text_warnings(text)) == [(1, "padding"), (2, "padding")]


# fmt: off
_PIECE_LIST = [
    *TEST_IDS, "real_unknown_0009", "x", "", " ", "  ", "\t", ",", "0", "1", "2", "-1", "+1",
    "00", "0.5", "\u0661", "1_0", "0_1", '"', "\n", "\r\n", "\r", "\u00a0",
]
# fmt: on
_PIECES = st.sampled_from(_PIECE_LIST)


def _spliced(order: list[str], labels: list[str], noise: list[tuple[int, int, str]]) -> list[str]:
    """Well-formed lines with pieces spliced in at (line, position) places."""
    lines = [f"{i},{lab}" for i, lab in zip(order, labels, strict=False)]
    for at, pos, piece in noise:
        if lines:
            k = at % len(lines)
            cut = pos % (len(lines[k]) + 1)
            lines[k] = lines[k][:cut] + piece + lines[k][cut:]
    return lines


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    order=st.permutations(TEST_IDS).flatmap(lambda p: st.integers(7, 9).map(lambda n: p[:n])),
    labels=st.lists(st.sampled_from(["0", "1"]), min_size=9, max_size=9),
    noise=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 30), _PIECES), max_size=2),
    ending=st.sampled_from(["", "\n", "\r\n", "\n\n"]),
)
def test_accepts_exactly_what_the_organisers_accept(order, labels, noise, ending) -> None:
    import reference

    # a permutation of the ids (sometimes short of one), with 0-2 random pieces spliced in, so
    # that both answers occur often (the test below measures how often)
    text = "\n".join(_spliced(order, labels, noise)) + ending
    assert (validate_run_text(text, TEST_IDS) == []) is reference.organisers_accept(text, TEST_IDS)


def test_the_random_files_above_are_accepted_and_rejected_alike() -> None:
    import reference

    # the generator of the test above produces both answers (else it would test nothing)
    rng = np.random.default_rng(0)
    answers = []
    for _ in range(300):
        n = int(rng.integers(7, 10))
        order = [TEST_IDS[k] for k in rng.permutation(8)][:n]
        labels = [str(v) for v in rng.integers(0, 2, 9)]
        noise = [(int(rng.integers(0, 10)), int(rng.integers(0, 31)), str(rng.choice(_PIECE_LIST)))
                 for _ in range(int(rng.integers(0, 3)))]  # fmt: skip
        text = "\n".join(_spliced(order, labels, noise))
        answers.append(reference.organisers_accept(text, TEST_IDS))
    assert 0.2 < np.mean(answers) < 0.8
