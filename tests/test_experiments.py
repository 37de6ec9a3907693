"""The experiment runner end to end on small demo data, with a cheap scorer standing in for the
CNN (the classifier's own tests cover it); the CLI's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ctfp import decode_png
from ctfp.experiments import METHODS, Method, run_method
from ctfp.leaky import LeakyDataSpec, make_leaky_dataset
from ctfp.runfile import validate_run_file

SPEC = LeakyDataSpec(
    n_used=8,
    n_not_used=8,
    n_test_used=6,
    n_test_not_used=6,
    n_generated=40,
    leak=0.6,
    size=64,
    seed=2,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaky")
    make_leaky_dataset(root, SPEC)
    return root


def nearest_scorer(ds, real_train, real_labels, generated, info):
    """Score = minus the mean absolute difference to the closest generated image."""
    bank = np.stack([decode_png(p).astype(np.float32) for p in generated])
    info["fit_seconds"] = 0.0

    def score(paths):
        return np.array([-np.abs(bank - decode_png(p)).mean(axis=(1, 2)).min() for p in paths])

    return score, info


METHOD = Method("nn", "nearest generated image", kind="similarity")


def test_run_writes_valid_run_files_tables_plots_and_record(demo, tmp_path):
    rec = run_method(
        METHOD,
        demo / "development",
        tmp_path,
        test=demo / "test",
        test_labels=demo / "test_labels.csv",
        decision="calibrated:accuracy",
        holdout=0.5,
        scorer=nearest_scorer,
    )
    ds = rec["datasets"][0]
    assert validate_run_file(ds["run_file"], demo / "test") == []
    assert ds["decision"]["rule"] == "calibrated" and ds["decision"]["threshold"] is not None
    assert ds["holdout_images"] == 8
    for name in (
        "results_methodnn.md",
        "results_methodnn.json",
        "roc_methodnn.png",
        "scores_methodnn.png",
        "confusion_methodnn.png",
        "record_methodnn.json",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "record_methodnn.json").read_text())
    assert saved["config"]["decision"] == "calibrated:accuracy"
    assert "numpy" in saved["versions"] and "git_commit" in saved
    # the leak is strong: the nearest-copy scorer separates used from not used on the test set
    assert ds["test"]["roc_auc"] > 0.8


def test_test_labels_never_reach_the_threshold(demo, tmp_path):
    """Calibration sees held-out development images only: flipping every test label changes
    the test metrics but not the threshold or the predictions."""
    flipped = tmp_path / "flipped.csv"
    rows = (demo / "test_labels.csv").read_text().splitlines()
    flipped.write_text("".join(f"{r.split(',')[0]},{1 - int(r.split(',')[1])}\n" for r in rows))
    a = run_method(
        METHOD,
        demo / "development",
        tmp_path / "a",
        test=demo / "test",
        test_labels=demo / "test_labels.csv",
        decision="calibrated:f1",
        holdout=0.5,
        scorer=nearest_scorer,
    )
    b = run_method(
        METHOD,
        demo / "development",
        tmp_path / "b",
        test=demo / "test",
        test_labels=flipped,
        decision="calibrated:f1",
        holdout=0.5,
        scorer=nearest_scorer,
    )
    assert a["datasets"][0]["decision"] == b["datasets"][0]["decision"]
    ra = (tmp_path / "a" / "run_methodnn_development.txt").read_text()
    rb = (tmp_path / "b" / "run_methodnn_development.txt").read_text()
    assert ra == rb
    assert a["datasets"][0]["test"]["accuracy"] == pytest.approx(
        1 - b["datasets"][0]["test"]["accuracy"]
    )


def test_calibration_needs_a_holdout(demo, tmp_path):
    with pytest.raises(ValueError, match="holdout"):
        run_method(
            METHOD, demo / "development", tmp_path, decision="calibrated:f1", scorer=nearest_scorer
        )


def test_presets_follow_the_paper():
    assert [METHODS[k].backbone for k in "1234"] == [
        "mobilenet_v2",
        "densenet121",
        "resnet50",
        "mobilenet_v2",
    ]
    assert [METHODS[k].weights for k in "1234"] == ["imagenet", "imagenet", "imagenet", None]
    assert METHODS["4"].super_resolution and not METHODS["1"].super_resolution


def test_cli_run_exit_codes(tmp_path):
    run = [sys.executable, "-m", "ctfp", "run"]
    bad = subprocess.run(
        [*run, "--method", "9", "--data", str(tmp_path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "method" in bad.stderr
    missing = subprocess.run(
        [*run, "--method", "1", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "nope" in missing.stderr
    for sub in ("run", "demo", "validate"):
        h = subprocess.run(
            [sys.executable, "-m", "ctfp", sub, "--help"], capture_output=True, text=True
        )
        assert h.returncode == 0 and "usage" in h.stdout


def test_method1_end_to_end_tiny(demo, tmp_path):
    """The real classifier path: paper training set -> FingerprintClassifier -> run file."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rec = run_method(
            "1",
            demo / "development",
            tmp_path,
            test=demo / "test",
            test_labels=demo / "test_labels.csv",
            weights=None,
            epochs=1,
            image_size=32,
            batch_size=16,
            copies=4,
            verbose=0,
            seed=1,
        )
    finally:
        torch.set_num_threads(threads)
    ds = rec["datasets"][0]
    assert ds["training_images"] == 16 * 4 + 40
    assert len(ds["history"]) == 1 and np.isfinite(ds["history"][0]["loss"])
    assert validate_run_file(ds["run_file"], demo / "test") == []
    assert 0.0 <= ds["test"]["accuracy"] <= 1.0
    assert rec["config"]["weights"] is None


def test_fit_takes_one_augmentation_per_image():
    pytest.importorskip("torch")
    import ctfp
    from ctfp.expansion import FLIP_ONLY

    X = np.stack([np.full((24, 24), v, np.uint8) for v in (10, 20, 200, 210)])
    clf = ctfp.FingerprintClassifier(
        weights=None, image_size=24, max_epochs=1, batch_size=4, random_state=0
    )
    clf.fit(X, [0, 0, 1, 1], augment=[None, FLIP_ONLY, ctfp.Augment(), None])
    assert clf.predict(X).shape == (4,)
    with pytest.raises(ValueError, match="one per image"):
        clf.fit(X, [0, 0, 1, 1], augment=[None])
    with pytest.raises(TypeError, match=r"augment\[1\]"):
        clf.fit(X, [0, 0, 1, 1], augment=[None, "flip", None, None])


def test_cli_runs_a_similarity_preset(demo, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ctfp", "run", "--method", "sim-ssim", "--data",
         str(demo / "development"), "--test", str(demo / "test"), "--test-labels",
         str(demo / "test_labels.csv"), "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SSIM closest" in done.stdout and "run file:" in done.stdout
    rec = json.loads(next(tmp_path.glob("record_*.json")).read_text())
    assert rec["config"]["decision"] == "calibrated:accuracy" and rec["config"]["holdout"] == 0.25
    assert validate_run_file(rec["datasets"][0]["run_file"], demo / "test") == []


@pytest.mark.slow
def test_method4_trains_on_esrgan_upscaled_images(demo, tmp_path, monkeypatch):
    """Method 4 end to end with a tiny ESRGAN standing in for Real-ESRGAN x4plus (31 s of CPU
    per image here): inputs resized to 224, upscaled x4 once into the disk cache, trained on."""
    torch = pytest.importorskip("torch")
    from ctfp import superres

    class Tiny(superres.Upscaler):
        def __init__(self, *args, **kwargs):
            torch.manual_seed(0)
            net = superres.RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
            super().__init__(net, device="cpu", progress=False)

    monkeypatch.setattr(superres, "Upscaler", Tiny)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rec = run_method(
            "4",
            demo / "development",
            tmp_path,
            test=demo / "test",
            epochs=1,
            image_size=32,
            batch_size=16,
            copies=2,
            verbose=0,
        )
    finally:
        torch.set_num_threads(threads)
    cached = list((tmp_path / "esrgan_cache").rglob("*.png"))
    n_dev = 16 + 40
    assert len(cached) >= n_dev  # every development image upscaled once
    assert {decode_png(p).shape for p in cached[:5]} == {(896, 896)}
    assert rec["config"]["weights"] == "default" and rec["method"]["weights"] is None
    assert validate_run_file(rec["datasets"][0]["run_file"], demo / "test") == []


def test_two_datasets_give_both_and_each_tables(tmp_path):
    """2024 had two datasets: the tables have a 'both datasets' row and one row per dataset."""
    import shutil

    small = LeakyDataSpec(n_used=6, n_not_used=6, n_test_used=4, n_test_not_used=4,
                          n_generated=16, size=48, seed=5)  # fmt: skip
    dev, test = tmp_path / "dev", tmp_path / "test"
    for k in (1, 2):
        root = tmp_path / f"src{k}"
        make_leaky_dataset(root, small)
        shutil.copytree(root / "development", dev / f"Dataset{k}")
        shutil.copytree(root / "test", test / f"Dataset{k}")
    rec = run_method(METHOD, dev, tmp_path / "out", test=test, holdout=0.5,
                     decision="calibrated:accuracy", scorer=nearest_scorer)  # fmt: skip
    assert [d["dataset"]["dataset"] for d in rec["datasets"]] == ["Dataset1", "Dataset2"]
    held = rec["tables"]["Development (held-out real images)"]
    assert [r["method"].rsplit("[", 1)[1] for r in held] == [
        "both datasets]", "Dataset1]", "Dataset2]",
    ]  # fmt: skip
    assert held[0]["n"] == held[1]["n"] + held[2]["n"]
    for d, name in zip(rec["datasets"], ("Dataset1", "Dataset2"), strict=True):
        assert validate_run_file(d["run_file"], test / name) == []
