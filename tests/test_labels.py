"""The test-labels CSV a user is likely to have: headers, .png ids, and errors with line numbers."""

from __future__ import annotations

import json

import pytest

from ctfp.imageclef.experiments import LabelsError, read_test_labels

IDS = ["img_001", "img_002", "img_003"]


def _write(tmp_path, text: str):
    p = tmp_path / "labels.csv"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "text",
    [
        "img_001,1\nimg_002,0\nimg_003,1\n",
        "id,label\nimg_001,1\nimg_002,0\nimg_003,1\n",
        "Image_ID,Label\nimg_001.png,1\nimg_002.PNG,0\n\nimg_003,1",
        "\ufeffID , LABEL\r\nimg_001 , 1\r\nimg_002,0\r\nimg_003,1\r\n",
    ],
)
def test_headers_extensions_and_blank_lines(tmp_path, text):
    assert read_test_labels(_write(tmp_path, text), IDS) == {
        "img_001": 1,
        "img_002": 0,
        "img_003": 1,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("img_001,1\nimg_002,yes\n", r"labels\.csv:2: label of 'img_002': expected 0 or 1"),
        ("img_001,1\nimg_002,2\n", r"labels\.csv:2: label of 'img_002': expected 0 or 1"),
        ("img_001,1\nimg_001.png,0\n", r"csv:2: duplicate id 'img_001' \(first on line 1\)"),
        ("img_001,1\nimg_009,0\n", r"labels\.csv:2: unknown id 'img_009'"),
        ("img_001,1,3\n", r"labels\.csv:1: expected 2 fields"),
        ("img_001,1\nimg_002,0\n", r"1 test images have no label: img_003"),
        ("id,label\n", r"no labels found"),
        ("img_001,label\n", r"labels\.csv:1: label of 'img_001': expected 0 or 1"),
    ],
)
def test_errors_name_the_line(tmp_path, text, message):
    with pytest.raises(LabelsError, match=message):
        read_test_labels(_write(tmp_path, text), IDS)


def test_without_test_ids_any_ids_are_taken(tmp_path):
    assert read_test_labels(_write(tmp_path, "a,1\nb.png,0\n")) == {"a": 1, "b": 0}


def test_header_only_on_the_first_row(tmp_path):
    with pytest.raises(LabelsError, match=r":2: label of 'id': expected 0 or 1"):
        read_test_labels(_write(tmp_path, "a,1\nid,label\n"))


def test_cli_reports_a_bad_labels_file_without_traceback(tmp_path, capsys):
    from ctfp.data.synthetic import write_pngs
    from ctfp.imageclef.cli import main

    for d in ("generated", "real_used", "real_not_used"):
        write_pngs(tmp_path / "dev" / d, 2, size=32, prefix=d)
    write_pngs(tmp_path / "test" / "generated", 2, size=32)
    write_pngs(tmp_path / "test" / "real_unknown", 2, size=32, prefix="img")
    labels = _write(tmp_path, "id,label\nimg_0000,1\nimg_0001,maybe\n")
    rc = main(
        [
            "run",
            "--method",
            "sim-pixel",
            "--data",
            str(tmp_path / "dev"),
            "--test",
            str(tmp_path / "test"),
            "--test-labels",
            str(labels),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "labels.csv:3: label of 'img_0001': expected 0 or 1, found 'maybe'" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- user mistakes, one line each


@pytest.fixture
def tiny_dev(tmp_path):
    from ctfp.data.synthetic import write_pngs

    for d in ("generated", "real_used", "real_not_used"):
        write_pngs(tmp_path / "dev" / d, 4, size=32, prefix=d)
    return tmp_path / "dev"


def _run(dev, out, *extra):
    from ctfp.imageclef.cli import main

    return main(["run", "--method", "sim-pixel", "--data", str(dev), "--out", str(out), "--quiet",
                 *extra])  # fmt: skip


def test_out_naming_a_file_or_an_impossible_folder(tiny_dev, tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    assert _run(tiny_dev, f) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ctfp run: --out {f}: a file is there") and "Traceback" not in err
    assert _run(tiny_dev, f / "sub") == 2
    assert "cannot create the folder" in capsys.readouterr().err


def test_full_disk_while_writing_the_run_file(tiny_dev, tmp_path, capsys, monkeypatch):
    import errno

    from ctfp.data.synthetic import write_pngs
    from ctfp.imageclef import runfile

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    for d in ("generated", "real_unknown"):
        write_pngs(tmp_path / "test" / d, 3, size=32, prefix=d)
    monkeypatch.setattr(runfile, "write_text_atomic", full)
    assert _run(tiny_dev, tmp_path / "out", "--test", str(tmp_path / "test")) == 1
    err = capsys.readouterr().err
    assert "run_" in err and "No space left on device" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_ctrl_c_keeps_nothing_of_the_run_and_says_so(tmp_path, capsys, monkeypatch):
    """Two datasets; Ctrl-C while scoring the second: the run was built apart, so nothing of it
    is kept (no output folder, no temporary folder, no lock), the message says so, the CLI
    exits 130; a run that finishes writes both run files."""
    from ctfp.data.synthetic import write_pngs
    from ctfp.imageclef import scorers
    from ctfp.imageclef.cli import main

    for split, kinds in (("dev", ("generated", "real_used", "real_not_used")),
                         ("test", ("generated", "real_unknown"))):  # fmt: skip
        for k in (1, 2):
            for d in kinds:
                write_pngs(tmp_path / split / f"{d}_{k}", 4, size=32, prefix=d, seed=k)
    real_fit = scorers.SimilarityScorer.fit
    calls = []

    def interrupting(self, fold):
        calls.append(fold.dataset.name)
        if fold.dataset.name.endswith("2"):  # the second dataset
            raise KeyboardInterrupt
        return real_fit(self, fold)

    monkeypatch.setattr(scorers.SimilarityScorer, "fit", interrupting)
    out = tmp_path / "out"
    args = ["run", "--method", "sim-pixel", "--data", str(tmp_path / "dev"), "--quiet"]
    assert main([*args, "--test", str(tmp_path / "test"), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; nothing of this run was kept; {out} is as it was before" in err
    assert len(calls) == 2 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev", "test"]  # no lock, no .tmp
    monkeypatch.undo()
    done = tmp_path / "done"
    assert main([*args, "--test", str(tmp_path / "test"), "--out", str(done)]) == 0
    assert not (done / "INCOMPLETE").exists()
    rec = json.loads((done / "record.json").read_text())
    assert rec["status"] == "complete" and len(list(done.glob("run_*.txt"))) == 2
