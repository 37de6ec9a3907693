"""``ctfp leaktest`` (imageclef/leakcheck.py): the leak question on its own, several methods,
one Holm verdict; and the family verdict the demo and the compare page lead with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctfp.imageclef.cli import main
from ctfp.imageclef.leakcheck import leak_families
from ctfp.imageclef.leaky import LeakyDataSpec, make_leaky_dataset

SPEC = dict(n_used=12, n_not_used=12, n_generated=60, slices_per_patient=1, seed=2)
FAST = ["--methods", "sim-pixel,base-ganleaks", "--permutations", "199", "--n-jobs", "1"]


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("leaky") / "data"
    make_leaky_dataset(root, LeakyDataSpec.small(leak=0.8, **SPEC))
    return root / "development"


def _holm(p: list[float]) -> list[float]:
    """Holm's adjusted p-values written out the long way: the i-th smallest times (m - i),
    then the running maximum, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_leaktest_end_to_end(leaky, tmp_path, capsys):
    out = tmp_path / "lt"
    assert main(["leaktest", str(leaky), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "family of 2 leak tests (Holm, alpha 0.05)" in printed
    for name in ("record.json", "leaktest.json", "report.html", "leaktest_development.png"):
        assert (out / name).stat().st_size > 0, name
    short = json.loads((out / "leaktest.json").read_text())
    (ds,) = short["datasets"]
    tests = ds["tests"]
    assert list(tests) == ["sim-pixel", "base-ganleaks"]
    for t in tests.values():
        assert t["n_permutations"] == 199 and t["p_value_resolution"] == pytest.approx(1 / 200)
        assert t["p_value"] >= 1 / 200  # the observed labelling counts as one relabelling
        lo, hi = t["auc_interval"]
        assert lo <= t["auc"] <= hi
        assert "control" in t
    fam = ds["family"]
    raw = [x["p_value"] for x in fam["tests"]]
    assert [x["p_adjusted"] for x in fam["tests"]] == pytest.approx(_holm(raw))
    rejects = [x["p_adjusted"] <= 0.05 and x["verdict"] == "leak" for x in fam["tests"]]
    assert (ds["verdict"] == "leak") == any(rejects)
    assert ds["verdict"] == "leak"  # 80 % of the used images have near-copies
    record = json.loads((out / "record.json").read_text())
    assert record["kind"] == "leaktest" and record["status"] == "complete"
    full = record["datasets"][0]["tests"]["sim-pixel"]
    assert sum(full["null_histogram"]["counts"]) == 199 and len(full["scores"]) == 24
    page = (out / "report.html").read_text()
    assert "One verdict for 2 tests" in page and "data:image/png;base64," in page


def test_a_generator_that_saw_none_of_the_images(tmp_path):
    """leak=0: every generated image is a new patient; the family finds no leak (a fixed-seed
    check of the plumbing; the level itself is measured in docs/leaktest_size.md)."""
    root = tmp_path / "data"
    make_leaky_dataset(root, LeakyDataSpec.small(leak=0.0, **SPEC))
    out = tmp_path / "lt"
    assert main(["leaktest", str(root / "development"), "--out", str(out), *FAST]) == 0
    (ds,) = json.loads((out / "leaktest.json").read_text())["datasets"]
    assert ds["verdict"] != "leak", ds["message"]


def test_rerun_replaces_its_files_and_keeps_others(leaky, tmp_path):
    out = tmp_path / "lt"
    assert main(["leaktest", str(leaky), "--out", str(out), *FAST]) == 0
    (out / "notes.txt").write_text("mine")
    first = json.loads((out / "record.json").read_text())["started"]
    assert main(["leaktest", str(leaky), "--out", str(out), *FAST, "--seed", "1"]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["seed"] == 1 and record["started"] >= first
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".lt.*"))  # no temporary folder or lock left
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0  # ctfp report rebuilds a leak-test page
    assert "ctfp report: leak test" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--methods", "sim-pixel,1"], "'1' not known"),
        (["--methods", "sim-pixel,sim-pixel"], "sim-pixel given twice"),
        (["--methods", ""], "expected one or more"),
        (["--alpha", "1.5"], "alpha (--alpha): expected a number in (0, 1)"),
        (["--permutations", "5"], "expected an integer >= 19"),
    ],
)
def test_bad_options_are_refused_before_any_work(leaky, tmp_path, capsys, args, words):
    out = tmp_path / "lt"
    assert main(["leaktest", str(leaky), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_predicting_unreadable_images_is_refused(leaky, tmp_path):
    from ctfp.imageclef.leakcheck import run_leak_tests

    with pytest.raises(ValueError, match="expected 'error' or 'skip'"):
        run_leak_tests(leaky, tmp_path / "lt", on_unreadable="predict:1")
    assert not (tmp_path / "lt").exists()


def test_bad_folders_and_groups_are_refused(leaky, tmp_path, capsys):
    assert main(["leaktest", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["leaktest", str(leaky), "--out", str(leaky / "lt"), *FAST]) == 2
    assert "inside the data folder" in capsys.readouterr().err
    groups = tmp_path / "groups.csv"
    groups.write_text("id,group\nnot_an_image,p1\n")
    out = tmp_path / "lt"
    assert main(["leaktest", str(leaky), "--out", str(out), *FAST, "--groups", str(groups)]) == 2
    assert "no id of the groups file names an image" in capsys.readouterr().err
    assert not out.exists()


def _record(root: str, **tests: dict) -> dict:
    return {
        "datasets": [
            {"dataset": {"dataset": Path(root).name, "root": root}, "leak_test": t}
            for t in tests.values()
        ]
    }


def _lt(p: float, verdict: str = "leak") -> dict:
    return {"p_value": p, "verdict": verdict}


def test_leak_families_group_runs_by_dataset():
    runs = [
        ("a", _record("/d1", x=_lt(0.01))),
        ("b", _record("/d1", x=_lt(0.04))),
        ("c", _record("/d2", x=_lt(0.03))),
        ("m1", {"datasets": [{"dataset": {"root": "/d1"}}]}),  # a classifier: no leak test
        ("d", _record("/d1", x={"verdict": "not tested"})),
    ]
    fams = {f["root"]: f for f in leak_families(runs)}
    assert set(fams) == {"/d1", "/d2"}
    d1 = fams["/d1"]["family"]
    assert d1["n_tests"] == 2 and [t["name"] for t in d1["tests"]] == ["a", "b", "d"]
    assert [t["p_adjusted"] for t in d1["tests"][:2]] == pytest.approx(_holm([0.01, 0.04]))
    assert d1["verdict"] == "leak"  # 0.02 <= 0.05
    assert fams["/d2"]["family"]["n_tests"] == 1
    # the same method twice on one dataset: both count
    twice = leak_families([("a", _record("/d", x=_lt(0.2))), ("a", _record("/d", x=_lt(0.3)))])
    assert [t["name"] for t in twice[0]["family"]["tests"]] == ["a", "a (2)"]
