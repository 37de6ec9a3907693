"""Issue 19: what a hostile user met, each refused at the door or handled (tiny data, sim-pixel
and a scorer of our own only)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from test_experiments import nearest_scorer

from ctfp.data.synthetic import write_pngs
from ctfp.imageclef import layout, runner
from ctfp.imageclef.cli import main
from ctfp.imageclef.experiments import Method, run_method

M = Method("nn", "nearest generated image", kind="similarity")


def _data(root: Path, dev_numbers=(None,), test_numbers=(None,), n=4) -> tuple[Path, Path]:
    for split, numbers, kinds in (
        ("dev", dev_numbers, ("generated", "real_used", "real_not_used")),
        ("test", test_numbers, ("generated", "real_unknown")),
    ):
        for k in numbers:
            for d in kinds:
                name = d if k is None else f"{d}_{k}"
                write_pngs(root / split / name, n, size=32, prefix=f"{d}{k or ''}_", seed=k or 0)
    return root / "dev", root / "test"


def _run(dev, out, **kw):
    kw.setdefault("decision", "top:0.5")
    return run_method(M, dev, out, scorer=nearest_scorer, verbose=0, **kw)


def _cli(dev, out, *extra):
    return main(["run", "--method", "sim-pixel", "--data", str(dev), "--out", str(out),
                 "--quiet", *extra])  # fmt: skip


# item 2 -------------------------------------------------------------------------------------------
def test_datasets_pair_by_number_not_position(tmp_path, capsys):
    dev, test = _data(tmp_path, dev_numbers=(1, 2), test_numbers=(2, 3))
    assert _cli(dev, tmp_path / "o", "--test", str(test)) == 2
    err = capsys.readouterr().err.strip()
    assert "do not pair by number" in err and "development dev/1" in err and "test test/3" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
    dev2, test2 = _data(tmp_path / "b", dev_numbers=(2, 1), test_numbers=(1, 2))
    rec = _run(dev2, tmp_path / "ok", test=test2)
    for ds in rec["datasets"]:
        n = ds["dataset"]["dataset"].rsplit("/", 1)[1]
        assert Path(ds["run_file"]).name == f"run_test_{n}.txt"


# item 3 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["test/real_unknown", "dev/generated", "dev", "."])
def test_out_inside_the_data_or_holding_it_is_refused(tmp_path, capsys, where):
    dev, test = _data(tmp_path)
    out = tmp_path / where
    before = sorted(p.name for p in (test / "real_unknown").iterdir())
    assert _cli(dev, out, "--test", str(test)) == 2
    assert "outside the data" in capsys.readouterr().err
    assert sorted(p.name for p in (test / "real_unknown").iterdir()) == before


# items 5, 7, 8 ------------------------------------------------------------------------------------
def test_a_rerun_replaces_the_previous_run_whole_and_keeps_foreign_files(tmp_path):
    dev, test = _data(tmp_path)
    out = tmp_path / "out"
    _run(dev, out, test=test, holdout=0.5)
    (out / "notes.txt").write_text("mine")
    (out / "esrgan_cache").mkdir()
    assert (out / "run_test.txt").is_file() and (out / "scores_test.csv").is_file()
    rec = _run(dev, out, holdout=0.5)  # no --test now
    assert rec["test"] is None
    assert not (out / "run_test.txt").exists() and not (out / "scores_test.csv").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "esrgan_cache").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no leftovers


def test_ctrl_c_keeps_the_previous_run_and_never_follows_the_old_record(tmp_path, monkeypatch):
    dev, test = _data(tmp_path)
    out = tmp_path / "out"
    _run(dev, out, test=test, holdout=0.5)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    rec = json.loads(layout.record_path(out).read_text())
    rec["datasets"][0]["run_file"] = str(victim)  # a crafted record
    layout.record_path(out).write_text(json.dumps(rec))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_predict_test", interrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        _run(dev, out, test=test, holdout=0.5)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert victim.read_text() == "keep me"
    assert "is as it was before the run" in str(info.value)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_ctrl_c_during_the_report_says_the_run_is_complete(tmp_path, monkeypatch, capsys):
    from ctfp.imageclef import report

    dev, _ = _data(tmp_path)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_run_report", interrupt)
    assert _cli(dev, tmp_path / "out") == 130
    err = capsys.readouterr().err
    assert "the run is complete in" in err and "ctfp report" in err
    assert (tmp_path / "out" / "record.json").is_file()
    assert json.loads((tmp_path / "out" / "record.json").read_text())["status"] == "complete"


def test_a_data_error_leaves_no_empty_output_folder(tmp_path, capsys):
    (tmp_path / "dev").mkdir()
    assert _cli(tmp_path / "dev", tmp_path / "new" / "out") == 2
    assert not (tmp_path / "new").exists()


def test_an_unreadable_data_folder_is_bad_data(tmp_path, monkeypatch, capsys):
    dev, _ = _data(tmp_path)
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "real_used":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert _cli(dev, tmp_path / "out") == 2
    assert "cannot read the folder: Permission denied" in capsys.readouterr().err


# item 6 -------------------------------------------------------------------------------------------
def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(tmp_path, capsys):
    import subprocess
    import sys

    dev, _ = _data(tmp_path)
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / ".out.lock"
        lock.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                    "started": "then", "build": ""}))  # fmt: skip
        assert _cli(dev, out) == 2
        assert f"in use by the ctfp run of pid {holder.pid}" in capsys.readouterr().err
        assert not out.exists() and lock.is_file()
    finally:
        holder.kill()
        holder.wait()
    assert _cli(dev, out) == 0  # the holder is gone: its lock is taken over
    assert not (tmp_path / ".out.lock").exists()


# item 9 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        " leading.png",
        "trailing .png",
        "com,ma.png",
        "new\nline.png",
        "tab\t.png",
        os.fsdecode(b"bad\xff.png"),
        "case.PNG",
    ],  # fmt: skip
)
def test_test_names_that_cannot_be_ids_stop_before_any_work(tmp_path, capsys, monkeypatch, name):
    dev, test = _data(tmp_path)
    src = sorted((test / "real_unknown").iterdir())[0]
    if name == "case.PNG":
        (test / "real_unknown" / "case.png").write_bytes(src.read_bytes())
    (test / "real_unknown" / name).write_bytes(src.read_bytes())
    calls = []
    monkeypatch.setattr(runner, "check_images", lambda *a: calls.append(a))
    assert _cli(dev, tmp_path / "out", "--test", str(test)) == 2
    err = capsys.readouterr().err
    assert "cannot be run-file ids" in err and len(err.strip().splitlines()) == 1
    assert not calls and not (tmp_path / "out").exists()


def test_a_development_image_with_a_non_utf8_name_keeps_the_report(tmp_path):
    from ctfp.imageclef.report import write_report

    dev, _ = _data(tmp_path)
    src = sorted((dev / "generated").iterdir())[0]  # copies score highest: the gallery shows them
    for folder in ("real_used", "real_not_used"):
        for i in range(3):
            (dev / folder / os.fsdecode(b"odd%d\xe9.png" % i)).write_bytes(src.read_bytes())
    _run(dev, tmp_path / "out", holdout=0.5)
    assert (tmp_path / "out" / "report.html").is_file()
    assert write_report(tmp_path / "out").is_file()


# item 10 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--holdout", "-0.5"], "holdout (--holdout): expected 0"),
        (["--holdout", "1"], "holdout (--holdout): expected 0"),
        (["--holdout", "nan"], "holdout (--holdout): expected 0"),
        (["--holdout", "inf"], "holdout (--holdout): expected 0"),
        (["--test-generated", "test"], "no test data is given"),
        (["--test-labels", "x.csv"], "no test data is given"),
        (["--holdout", "0.9"], "needs at least"),
    ],
)
def test_options_refused_up_front(tmp_path, capsys, extra, says):
    dev, _ = _data(tmp_path)
    assert _cli(dev, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    dev, _ = _data(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert _cli(dev, "") == 2
    assert "found ''" in capsys.readouterr().err
    with pytest.raises(ValueError, match="found ''"):
        _run(dev, "")
    assert not (tmp_path / "record.json").exists()


# item 11 ------------------------------------------------------------------------------------------
def test_labels_of_images_predicted_under_predict_l_are_accepted(tmp_path):
    dev, test = _data(tmp_path)
    bad = sorted((test / "real_unknown").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:60])  # the header reads, the pixels do not
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{p.stem},{i % 2}\n" for i, p in
                              enumerate(sorted((test / "real_unknown").iterdir()))))  # fmt: skip
    rec = _run(dev, tmp_path / "out", test=test, test_labels=labels, on_unreadable="predict:1",
               holdout=0.5)  # fmt: skip
    assert rec["datasets"][0]["test"]["n"] == 3


# item 12 ------------------------------------------------------------------------------------------
def test_entries_that_are_not_regular_png_files_never_stop_a_run(tmp_path):
    dev, _ = _data(tmp_path)
    folder = dev / "generated"
    (folder / "dir.png").mkdir()
    os.mkfifo(folder / "fifo.png")
    (folder / "broken.png").symlink_to(tmp_path / "nowhere.png")
    rec = _run(dev, tmp_path / "out", holdout=0.5)
    actions = {Path(f["path"]).name: f["action"] for f in rec["unreadable"]}
    assert actions == dict.fromkeys(("broken.png", "dir.png", "fifo.png"), "ignored (not an image)")


# item 14 ------------------------------------------------------------------------------------------
def test_the_report_escapes_every_value_of_an_edited_record(tmp_path):
    from ctfp.imageclef.report import write_report

    dev, _ = _data(tmp_path)
    out = tmp_path / "out"
    _run(dev, out, holdout=0.5, decision="calibrated:accuracy")
    rec = json.loads(layout.record_path(out).read_text())
    x = "<script>x</script>"
    rec["seconds"] = x
    ds = rec["datasets"][0]
    ds["holdout_images"] = x
    ds["decision"]["threshold"] = x
    ds["decision"]["development_value"] = x
    ds["decision"]["fraction"] = x
    layout.record_path(out).write_text(json.dumps(rec))
    from ctfp.imageclef.report import ReportError

    with pytest.raises(ReportError, match="field 'seconds': expected a number, found text"):
        write_report(out)
    # values of the right type but hostile text: escaped wherever they land
    rec = json.loads(layout.record_path(out).read_text())
    rec["seconds"] = 1.0
    for k in ("holdout_images",):
        rec["datasets"][0][k] = 3
    rec["datasets"][0]["decision"] = {"rule": "calibrated", "threshold": 0.5, "metric": x}
    rec["config"]["decision"] = x
    rec["method"]["title"] = x
    layout.record_path(out).write_text(json.dumps(rec))
    page = write_report(out).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("method", 5, "field 'method': expected an object, found a number"),
        ("datasets", "x", "field 'datasets': expected a list, found text"),
    ],
)
def test_a_record_of_wrong_types_is_one_line(tmp_path, capsys, field, value, says):
    dev, _ = _data(tmp_path)
    out = tmp_path / "out"
    _run(dev, out, holdout=0.5)
    rec = json.loads(layout.record_path(out).read_text())
    rec[field] = value
    layout.record_path(out).write_text(json.dumps(rec))
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_metrics_as_strings_are_named(tmp_path):
    from ctfp.imageclef.report import ReportError, write_report

    dev, _ = _data(tmp_path)
    out = tmp_path / "out"
    _run(dev, out, holdout=0.5)
    rec = json.loads(layout.record_path(out).read_text())
    title = next(iter(rec["tables"]))
    rec["tables"][title][0]["accuracy"] = "0.5"
    layout.record_path(out).write_text(json.dumps(rec))
    with pytest.raises(ReportError, match=r"accuracy': expected a number, found text"):
        write_report(out)


# item 15 ------------------------------------------------------------------------------------------
def test_score_files_are_csv_with_quoting(tmp_path):
    import csv

    dev, test = _data(tmp_path)
    src = sorted((test / "real_unknown").iterdir())[0]
    src.rename(src.with_name('quo"te.png'))
    rec = _run(dev, tmp_path / "out", test=test, holdout=0.5)
    rows = list(csv.DictReader(open(layout.scores_path(tmp_path / "out", "test"), newline="")))
    assert 'quo"te' in [r["id"] for r in rows]
    assert layout.read_scores_csv(layout.scores_path(tmp_path / "out", "test")) == rows
    assert rec["datasets"][0]["run_file"]


# library code prints nothing unless asked ---------------------------------------------------------
def test_a_script_run_prints_nothing(tmp_path, capfd):
    import logging

    from ctfp.imageclef.experiments import run_similarity

    assert main(["report", str(tmp_path)]) == 2  # a command ran in this process before
    assert not [h for h in logging.getLogger("ctfp").handlers if type(h).__name__ != "NullHandler"]

    dev, _ = _data(tmp_path)
    (dev / "generated" / "notes.txt").write_text("x")
    run_similarity("sim-pixel", dev, tmp_path / "out", verbose=0, holdout=0.5)
    out, err = capfd.readouterr()
    assert out == "" and "unreadable" not in err and "leak test" not in err


def test_validate_prints_warnings_and_exits_0(tmp_path, capsys):
    _, test = _data(tmp_path)
    ids = sorted(p.stem for p in (test / "real_unknown").iterdir())
    run_file = tmp_path / "run.txt"
    run_file.write_text("\n".join(f"{i}   ,  {n % 2}" for n, i in enumerate(ids)))  # no final \n
    assert main(["validate", str(run_file), "--test-dir", str(test)]) == 0
    printed = capsys.readouterr().out
    assert "warning:" in printed and printed.strip().endswith("valid")


def test_help_says_base_vcmi_is_exhaustive(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "base-vcmi is exhaustive full-size SSIM" in text and "256x256" in text


def test_sigint_during_the_move_into_place_waits_for_it(tmp_path):
    folder = runner.OutputFolder(tmp_path / "out")
    with folder:
        (folder.build / "record.json").write_text("{}")
        real_replace = os.replace

        def replace(a, b):
            os.kill(os.getpid(), signal.SIGINT)
            return real_replace(a, b)

        os.replace, saved = replace, os.replace
        try:
            with pytest.raises(KeyboardInterrupt):
                folder.install()
        finally:
            os.replace = saved
    assert (tmp_path / "out" / "record.json").read_text() == "{}"
