"""`ctfp demo` in its reduced size: every step runs and leaves its outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ctfp.imageclef.runfile import validate_run_file


@pytest.mark.slow
def test_quick_demo_completes(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "ctfp", "demo", "--quick", "--out", str(out), "--n-jobs", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Test images" in done.stdout and "Method 1" in done.stdout
    # the leak question's one verdict (Holm over the similarity methods) leads the summary
    assert done.stdout.index("Does the generator leak?") < done.stdout.index("Test images")
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["tables"]["Test images (truth known to the demo)"]
    assert rows[0]["method"].startswith("Method 1") and len(rows) >= 2
    for name in ("results.md", "results.json", "roc_all.png", "augmented_grid.png"):
        assert (out / name).stat().st_size > 0
    for run_file in summary["run_files"]:
        assert validate_run_file(run_file, out / "data" / "test") == []
    # the leak is strong enough that at least one similarity method finds it
    assert max(r["roc_auc"] for r in rows[1:]) > 0.75
    (family,) = summary["leak_test"]
    assert family["n_tests"] == len(rows) - 1  # every similarity method, not Method 1
    assert family["verdict"] in ("leak", "no evidence", "inconclusive")
    page = (out / "report.html").read_text()
    assert page.index('id="leak-family"') < page.index('id="demo"')
