"""``ctfp attribute`` / ``ctfp cluster`` end to end on a tiny layout of each year, their
refusals (one line, exit 2, nothing written), and attribution run files (``labels=``,
``ctfp validate --labels``)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_attribution_layout import _layout

from ctfp.imageclef.cli import main
from ctfp.imageclef.runfile import (
    RunFileError,
    validate_run_file,
    validate_run_text,
    write_run_file,
)


@pytest.fixture(scope="module")
def year2025(tmp_path_factory):
    return _layout(tmp_path_factory.mktemp("y2025"), "2025")


@pytest.fixture(scope="module")
def year2024(tmp_path_factory):
    return _layout(tmp_path_factory.mktemp("y2024"), "2024")


@pytest.fixture(scope="module")
def out2025(year2025, tmp_path_factory):
    dev, test, _ = year2025
    out = tmp_path_factory.mktemp("o") / "attr2025"
    assert main(["attribute", "--data", str(dev), "--test", str(test), "--out", str(out)]) == 0
    return out


def _scores(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_attribute_2025_writes_a_run_folder(out2025, year2025):
    _, test, truth = year2025
    names = {p.name for p in out2025.iterdir()}
    assert {
        "run_test.txt", "scores_test.csv", "results.md", "results.json", "record.json",
        "report.html", "confusion.png", "gallery_residual.png", "gallery_spectrum.png",
        "gallery_closest.png",
    } <= names  # fmt: skip
    assert not [n for n in out2025.parent.iterdir() if n.name.startswith(".")]  # no leftovers
    # the run file: every test id once, labels among the development subsets, valid
    assert validate_run_file(out2025 / "run_test.txt", test, labels=["s1", "s2", "s3"]) == []
    lines = (out2025 / "run_test.txt").read_text().splitlines()
    assert sorted(line.split(",")[0] for line in lines) == sorted(truth)
    rows = _scores(out2025 / "scores_test.csv")
    assert rows[0] == ["id", "s1", "s2", "s3", "predicted"]
    for r in rows[1:]:
        p = np.array([float(v) for v in r[1:4]])
        assert abs(p.sum() - 1) < 1e-4 and r[4] == ["s1", "s2", "s3"][int(p.argmax())]
    rec = json.loads((out2025 / "record.json").read_text())
    assert rec["task"] == "attribution" and rec["year"] == "2025"
    assert rec["method"]["key"] == "subset"
    m = rec["metrics"]
    pred = dict(line.split(",") for line in lines)
    acc = np.mean([pred[i] == t for i, t in truth.items()])
    assert m["accuracy"] == pytest.approx(acc) and acc >= 0.9
    assert np.asarray(m["confusion"]).sum() == len(truth)
    assert set(m["recall"]) == {"s1", "s2", "s3"} and "macro_f1" in m
    # closest real images: chosen subset = the prediction, runner-up another subset
    assert len(rec["closest"]) == 6
    for c in rec["closest"]:
        chosen, runner = c["matches"]
        assert chosen["source"] == pred[c["id"]] != runner["source"]
        assert chosen["image"].startswith(f"real_{chosen['source']}_")
        assert chosen["proba"] >= runner["proba"]
    page = (out2025 / "report.html").read_text()
    for sid in ("summary", "scores", "confusion", "fingerprints", "closest"):
        assert f'id="{sid}"' in page


def test_attribute_2024_layout_and_method_choice(year2024, tmp_path):
    dev, test, truth = year2024
    out = tmp_path / "attr2024"
    args = ["attribute", "--data", str(dev), "--test", str(test), "--out", str(out)]
    assert main([*args, "--method", "residual-correlation"]) == 0
    rec = json.loads((out / "record.json").read_text())
    assert rec["year"] == "2024" and rec["method"]["key"] == "residual-correlation"
    assert rec["sources"] == ["bilinear", "nearest", "tconv"]
    assert rec["closest"] == [] and not (out / "gallery_closest.png").exists()
    assert validate_run_file(out / "run_test.txt", test, labels=rec["sources"]) == []
    assert len((out / "run_test.txt").read_text().splitlines()) == len(truth)
    assert "no real images per source" in (out / "report.html").read_text()
    # a re-run with the default method replaces the run's files by their fixed names
    (out / "mine.txt").write_text("kept")
    assert main(args) == 0
    assert json.loads((out / "record.json").read_text())["method"]["key"] == "spectrum"
    assert (out / "mine.txt").read_text() == "kept"
    # ctfp report rebuilds the page of an attribution folder
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert 'id="fingerprints"' in (out / "report.html").read_text()


def test_attribute_with_the_cnn_end_to_end(year2025, tmp_path, monkeypatch):
    """``--method cnn-finetune``: the multi-class FingerprintClassifier trained on the labelled
    generated images; its record says the backbone, the weights it started from, the epochs and
    the input size. The method's own factory, at 32 px and one epoch so that the test is fast."""
    pytest.importorskip("torch")
    from ctfp.attribution import estimators, workflow

    key = "cnn-finetune"
    factory, needs_real, what = workflow.METHODS[key]
    assert factory is estimators.cnn_finetune and not needs_real
    tiny = (lambda rs: factory(rs, image_size=32, max_epochs=1, torch_threads=1), False, what)
    monkeypatch.setitem(workflow.METHODS, key, tiny)
    dev, test, truth = year2025
    out = tmp_path / "cnn"
    argv = ["attribute", "--data", str(dev), "--test", str(test), "--out", str(out)]
    assert main([*argv, "--method", key]) == 0
    assert validate_run_file(out / "run_test.txt", test, labels=["s1", "s2", "s3"]) == []
    rows = _scores(out / "scores_test.csv")
    assert rows[0] == ["id", "s1", "s2", "s3", "predicted"] and len(rows) == len(truth) + 1
    for r in rows[1:]:
        p = np.array([float(v) for v in r[1:4]])
        assert abs(p.sum() - 1) < 1e-4 and r[4] == ["s1", "s2", "s3"][int(p.argmax())]
    rec = json.loads((out / "record.json").read_text())
    m = rec["method"]
    assert m["key"] == key and m["description"] == what
    assert m["backbone"] == "efficientnet_lite0"
    assert m["weights"] in ("ImageNet", "random initialisation (no ImageNet weights)")
    assert m["max_epochs"] == m["epochs_trained"] == 1 and m["image_size"] == [32, 32]
    assert m["augment"] is None and m["params"]["precise_bn"] is True
    assert rec["metrics"]["n"] == len(truth)


def test_cluster_writes_a_run_folder(year2024, tmp_path, capsys):
    _, test, truth = year2024
    out = tmp_path / "clu"
    rc = main(["cluster", str(test), "--out", str(out), "--n-sources", "3"])
    assert rc == 0
    rec = json.loads((out / "record.json").read_text())
    assert rec["task"] == "clustering" and rec["n_sources"] == 3
    assert rec["sources"] == ["cluster_1", "cluster_2", "cluster_3"]
    m = rec["metrics"]  # the truth: test_labels.csv beside the test folder
    assert set(m) >= {"ari", "nmi", "purity"} and m["n_clusters"] == 3 and m["n_sources"] == 3
    assert validate_run_file(out / "run_test.txt", test, labels=rec["sources"]) == []
    assert _scores(out / "scores_test.csv")[0] == ["id", "cluster"]
    page = (out / "report.html").read_text()
    assert 'id="fingerprints"' in page and "ARI" in capsys.readouterr().out.upper()
    # the count chosen by the Calinski-Harabasz index, on the image DCT
    out2 = tmp_path / "clu2"
    rc = main(["cluster", str(test), "--out", str(out2), "--criterion", "calinski_harabasz",
               "--features", "dct"])  # fmt: skip
    assert rc == 0
    rec = json.loads((out2 / "record.json").read_text())
    assert rec["criterion"] == "calinski_harabasz" and rec["method"]["key"] == "cluster-dct"
    assert rec["n_sources_asked"] == "auto" and rec["n_sources"] == len(rec["sources"])
    assert validate_run_file(out2 / "run_test.txt", test, labels=rec["sources"]) == []


# ------------------------------------------------------------------------------- refusals


def _refused(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    for w in words:
        assert w in err, err
    return err


def test_refusals_are_one_line_and_write_nothing(year2025, year2024, tmp_path, capsys):
    dev, test, _ = year2025
    dev24, test24, _ = year2024
    out = tmp_path / "o"
    _refused(capsys, ["attribute", "--data", str(tmp_path / "none"), "--test", str(test),
                      "--out", str(out)], "--data", "generated/")  # fmt: skip
    _refused(capsys, ["attribute", "--data", str(dev24), "--test", str(test24), "--out",
                      str(out), "--method", "subset"], "real")  # fmt: skip
    _refused(capsys, ["cluster", str(test), "--out", str(out), "--n-sources", "1"], "--n-sources")
    _refused(capsys, ["attribute", "--data", str(dev), "--test", str(test), "--out",
                      str(dev / "inside")], "outside the data")  # fmt: skip
    # a test image whose name cannot be a run-file id
    bad = tmp_path / "badtest"
    shutil.copytree(test, bad)
    first = sorted((bad / "generated_unknown").iterdir())[0]
    first.rename(first.with_name("a,b.png"))
    _refused(capsys, ["attribute", "--data", str(dev), "--test", str(bad), "--out", str(out)],
             "a,b.png", "comma")  # fmt: skip
    none = str(tmp_path / "none.csv")
    _refused(capsys, ["attribute", "--data", str(dev), "--test", str(test), "--out", str(out),
                      "--test-labels", none], "--test-labels", "none.csv")  # fmt: skip
    # a test label that is no development source
    labels = tmp_path / "labels.csv"
    ids = sorted(p.stem for p in (test / "generated_unknown").iterdir())
    labels.write_text("".join(f"{i},s9\n" for i in ids))
    _refused(capsys, ["attribute", "--data", str(dev), "--test", str(test), "--out", str(out),
                      "--test-labels", str(labels)], "'s9'")  # fmt: skip
    # an unreadable test image names the file
    broken = tmp_path / "broken"
    shutil.copytree(test, broken)
    (broken / "generated_unknown" / "zz.png").write_bytes(b"GIF89a not a png")
    _refused(capsys, ["attribute", "--data", str(dev), "--test", str(broken), "--out",
                      str(out)], "zz.png")  # fmt: skip
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]


# ------------------------------------------------------------------- attribution run files


def test_label_run_text_cases():
    ids, labels = ["a", "b", "c"], ["s1", "s2"]
    assert validate_run_text("a,s1\nb,s2\nc,s1\n", ids, labels=labels) == []
    assert validate_run_text("a, s1\nb,s2\nc,s1", ids, labels=labels) == []  # as 0/1 files
    kinds = [p.kind for p in validate_run_text("a,s3\nb,s2\nb,s1\n", ids, labels=labels)]
    assert kinds == ["unknown label", "duplicate id", "missing ids"]
    kinds = [p.kind for p in validate_run_text("a,1\nb,s2\nc,s1\nd,s1\n", ids, labels=labels)]
    assert kinds == ["unknown label", "unknown id"]
    assert [p.kind for p in validate_run_text("a,s1,x\n\n", ["a"], labels=labels)] == [
        "format", "empty line", "missing ids",
    ]  # fmt: skip
    # the 0/1 rules are unchanged without labels
    assert [p.kind for p in validate_run_text("a,s1\n", ["a"])] == ["non-integer"]


def test_write_label_run_file(tmp_path):
    path = tmp_path / "run.txt"
    write_run_file(path, ["x.png", "y.png"], ["s1", "s2"], label_set=["s1", "s2"])
    assert path.read_text() == "x,s1\ny,s2\n"
    with pytest.raises(RunFileError, match="'s3' is not one of"):
        write_run_file(tmp_path / "r2.txt", ["x", "y"], ["s1", "s3"], label_set=["s1", "s2"])
    with pytest.raises(RunFileError, match="expected 2 labels"):
        write_run_file(tmp_path / "r2.txt", ["x", "y"], ["s1"], label_set=["s1", "s2"])
    with pytest.raises(RunFileError, match="cannot be a run-file label"):
        write_run_file(tmp_path / "r2.txt", ["x"], ["a,b"], label_set=["a,b"])
    assert not (tmp_path / "r2.txt").exists()


def test_ctfp_validate_labels(out2025, year2025, tmp_path, capsys):
    _, test, _ = year2025
    run = str(out2025 / "run_test.txt")
    assert main(["validate", run, "--test-dir", str(test), "--labels", "s1,s2,s3"]) == 0
    assert main(["validate", run, "--test-dir", str(test), "--labels", "s1,s2"]) == 1
    assert "unknown label" in capsys.readouterr().out
    assert main(["validate", run, "--test-dir", str(test), "--labels", "s1,,s2"]) == 2
    assert main(["validate", run, "--test-dir", str(tmp_path / "no"), "--labels", "s1"]) == 2
    # the 0/1 validator still refuses the same file
    empty = tmp_path / "t"
    (empty / "real_unknown").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(empty / "real_unknown" / "q.png")
    assert main(["validate", run, "--test-dir", str(empty)]) == 1


@pytest.mark.slow
def test_demo_attribution_part(tmp_path):
    """``ctfp demo``'s subtask-2 part (quick counts): stand-in data from the committed
    generators, attribute on both layouts and cluster, each a complete output folder."""
    pytest.importorskip("torch")
    from ctfp.imageclef.demo import _attribution_part

    said = []
    part = _attribution_part(tmp_path / "attribution", quick=True, seed=0, say=said.append)
    assert said and said[0].startswith("[subtask 2]")
    names = [r["name"].split(" (")[0] for r in part["runs"]]
    assert names == ["attribute 2025", "attribute 2024", "cluster 2024"]
    data = tmp_path / "attribution" / "data"
    for year, n_sources in (("2025", 5), ("2024", 4)):
        out = tmp_path / "attribution" / f"attribute_{year}"
        rec = json.loads((out / "record.json").read_text())
        assert len(rec["sources"]) == n_sources and rec["n_test"] == 4 * n_sources
        assert validate_run_file(out / "run_test.txt", data / year / "test",
                                 labels=rec["sources"]) == []  # fmt: skip
        assert (out / "report.html").is_file()
    # the stand-in generators are told apart on these few images
    assert part["runs"][0]["metrics"]["accuracy"] >= 0.9
    assert part["runs"][1]["metrics"]["accuracy"] >= 0.9
    assert (tmp_path / "attribution" / "cluster_2024" / "run_test.txt").is_file()
