"""The experiment runner end to end on small demo data, with a cheap scorer standing in for the
CNN (the classifier's own tests cover it); the CLI's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctfp import decode_png
from ctfp.imageclef import layout
from ctfp.imageclef.experiments import METHODS, Method, run_method
from ctfp.imageclef.leaky import LeakyDataSpec, make_leaky_dataset
from ctfp.imageclef.runfile import validate_run_file
from ctfp.imageclef.scorers import Fitted, Fold

SPEC = LeakyDataSpec.small(leak=0.6, seed=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaky")
    make_leaky_dataset(root, SPEC)
    return root


class NearestScorer:
    """A :class:`~ctfp.imageclef.scorers.Scorer`: score = minus the mean absolute difference to
    the closest generated image."""

    refits = False

    def config(self) -> dict:
        return {}

    def fit(self, fold: Fold) -> Fitted:
        bank = np.stack([decode_png(p).astype(np.float32) for p in fold.generated])

        def score(paths):
            return np.array([-np.abs(bank - decode_png(p)).mean(axis=(1, 2)).min() for p in paths])

        return Fitted(score, {"fit_seconds": 0.0})

    def refit(self, fold: Fold) -> Fitted:
        raise AssertionError("refits is False: the runner never asks")


nearest_scorer = NearestScorer()


METHOD = Method("nn", "nearest generated image", kind="similarity")


def run_nn(data, out, *, decision="calibrated:f1", **kwargs):
    """:func:`run_method` for :data:`METHOD`, scored by :func:`nearest_scorer`, half the
    development images held out for calibration."""
    return run_method(
        METHOD, data, out, holdout=0.5, decision=decision, scorer=nearest_scorer, **kwargs
    )


def test_run_writes_valid_run_files_tables_plots_and_record(demo, tmp_path):
    rec = run_nn(
        demo / "development",
        tmp_path,
        test=demo / "test",
        test_labels=demo / "test_labels.csv",
        decision="calibrated:accuracy",
    )
    ds = rec["datasets"][0]
    assert validate_run_file(ds["run_file"], demo / "test") == []
    assert ds["decision"]["rule"] == "calibrated" and ds["decision"]["threshold"] is not None
    assert ds["holdout_images"] == 8
    for name in (
        "results.md",
        "results.json",
        "roc.png",
        "histograms.png",
        "confusion.png",
        "record.json",
        "run_test.txt",
        "scores_test.csv",
        "report.html",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "record.json").read_text())
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
    a, b = (
        run_nn(demo / "development", tmp_path / name, test=demo / "test", test_labels=labels)
        for name, labels in (("a", demo / "test_labels.csv"), ("b", flipped))
    )
    assert a["datasets"][0]["decision"] == b["datasets"][0]["decision"]
    ra = (tmp_path / "a" / "run_test.txt").read_text()
    rb = (tmp_path / "b" / "run_test.txt").read_text()
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


def run_tiny_cnn(method: str, demo: Path, out: Path, **kwargs):
    """:func:`run_method` for a CNN preset on the demo data, with a tiny network: one epoch on
    32x32 inputs in batches of 16 (run the test with ``one_torch_thread_per_test``)."""
    return run_method(
        method,
        demo / "development",
        out,
        test=demo / "test",
        **{"epochs": 1, "image_size": 32, "batch_size": 16, "verbose": 0, **kwargs},
    )


@pytest.mark.usefixtures("one_torch_thread_per_test")
def test_method1_end_to_end_tiny(demo, tmp_path):
    """The real classifier path: paper training set -> FingerprintClassifier -> run file."""
    rec = run_tiny_cnn(
        "1", demo, tmp_path, test_labels=demo / "test_labels.csv", weights=None, copies=4, seed=1
    )
    ds = rec["datasets"][0]
    assert ds["training_images"] == 16 * 4 + 40
    assert len(ds["history"]) == 1 and np.isfinite(ds["history"][0]["loss"])
    assert validate_run_file(ds["run_file"], demo / "test") == []
    assert 0.0 <= ds["test"]["accuracy"] <= 1.0
    assert rec["config"]["weights"] is None
    # the record tells the truth: trained from random weights, titled so, and only the
    # fields that apply to Method 1 (no ESRGAN cache, no similarity settings)
    assert rec["method"]["weights"] is None
    assert rec["method"]["title"] == "Method 1: MobileNetV2, not pretrained"
    assert "ImageNet" not in json.dumps(rec["tables"])
    assert "sr_cache" not in rec["config"] and "test_generated" not in rec["config"]
    assert "options" not in rec["method"] and "test_generated" not in ds
    assert ds["run_file"] == str(layout.run_file_path(tmp_path, "test"))


def test_fit_takes_one_augmentation_per_image():
    pytest.importorskip("torch")
    import ctfp
    from ctfp.data.expansion import FLIP_ONLY

    X = np.stack([np.full((24, 24), v, np.uint8) for v in (10, 20, 200, 210)])
    clf = ctfp.FingerprintClassifier(
        weights=None, image_size=24, max_epochs=1, batch_size=4, random_state=0
    )
    clf.fit(X, [0, 0, 1, 1], sample_augment=[None, FLIP_ONLY, ctfp.Augment(), None])
    assert clf.predict(X).shape == (4,)
    with pytest.raises(ValueError, match="one per image"):
        clf.fit(X, [0, 0, 1, 1], sample_augment=[None])
    with pytest.raises(TypeError, match=r"sample_augment\[1\]"):
        clf.fit(X, [0, 0, 1, 1], sample_augment=[None, "flip", None, None])


def test_cli_runs_a_similarity_preset(demo, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ctfp", "run", "--method", "sim-ssim", "--data",
         str(demo / "development"), "--test", str(demo / "test"), "--test-labels",
         str(demo / "test_labels.csv"), "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SSIM to the mean of 10 closest" in done.stdout and "run file:" in done.stdout
    rec = json.loads((tmp_path / "record.json").read_text())
    assert rec["config"]["decision"] == "calibrated:accuracy" and rec["config"]["holdout"] == 0.25
    assert validate_run_file(rec["datasets"][0]["run_file"], demo / "test") == []


def _thresholds(node, path=()):
    """Every non-None value under a key naming a threshold, with its path in the record."""
    if isinstance(node, dict):
        for k, v in node.items():
            if "threshold" in k and v is not None and not isinstance(v, (dict, list)):
                yield (*path, k), v
            yield from _thresholds(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _thresholds(v, (*path, i))


@pytest.mark.parametrize("preset", ["sim-ssim", "sim-pixel"])
def test_a_similarity_run_has_one_threshold_and_applies_it(demo, tmp_path, preset):
    """The estimator only scores; the runner's calibrated rule decides. The record shows that
    one threshold, and the run file's labels are exactly the test scores at or above it."""
    from ctfp.imageclef.experiments import run_similarity

    rec = run_similarity(
        preset,
        demo / "development",
        tmp_path,
        test=demo / "test",
        test_labels=demo / "test_labels.csv",
        verbose=0,
    )
    ds = rec["datasets"][0]
    assert [p for p, _ in _thresholds(rec)] == [("datasets", 0, "decision", "threshold")]
    assert ds["similarity"]["rule"] is None
    # recorded with its own settings, none of the classifier's
    assert set(rec["method"]) == {"key", "title", "kind", "options"}
    assert not {"epochs", "batch_size", "lr", "copies", "weights", "sr_cache"} & set(rec["config"])
    # calibration="real": every real image of the dataset, development and test, is the
    # reference (labels unused); each image once
    assert ds["similarity"]["calibration"] == "real"
    n_real = len(list((demo / "development").rglob("real_*/*.png")))
    n_real += len(list((demo / "test" / "real_unknown").glob("*.png")))
    assert ds["similarity"]["reference_images"] == n_real
    t = ds["decision"]["threshold"]
    assert ds["decision"]["rule"] == "calibrated"
    lines = Path(ds["run_file"]).read_text().splitlines()
    labels = [int(line.split(",")[1]) for line in lines]
    assert labels == [int(s >= t) for s in ds["test_scores"]]
    saved = json.loads((tmp_path / "record.json").read_text())
    assert [p for p, _ in _thresholds(saved)] == [("datasets", 0, "decision", "threshold")]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread_per_test")
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
    rec = run_tiny_cnn("4", demo, tmp_path, copies=2)
    cached = list((tmp_path / "esrgan_cache").rglob("*.png"))
    n_dev = 16 + 40
    assert len(cached) >= n_dev  # every development image upscaled once
    assert {decode_png(p).shape for p in cached[:5]} == {(896, 896)}
    assert rec["config"]["weights"] is None and rec["method"]["weights"] is None
    assert rec["config"]["sr_cache"] == str(tmp_path / "esrgan_cache")
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
    rec = run_nn(dev, tmp_path / "out", test=test, decision="calibrated:accuracy")
    assert [d["dataset"]["dataset"] for d in rec["datasets"]] == ["Dataset1", "Dataset2"]
    held = rec["tables"]["Development (held-out real images)"]
    assert [r["method"].rsplit("[", 1)[1] for r in held] == [
        "both datasets]", "Dataset1]", "Dataset2]",
    ]  # fmt: skip
    assert held[0]["n"] == held[1]["n"] + held[2]["n"]
    for d, name in zip(rec["datasets"], ("Dataset1", "Dataset2"), strict=True):
        assert validate_run_file(d["run_file"], test / name) == []


def test_test_split_files_are_named_for_it_and_scores_carry_ids(demo, tmp_path):
    rec = run_nn(demo / "development", tmp_path / "out", test=demo / "test")
    ds = rec["datasets"][0]
    assert Path(ds["run_file"]).name == "run_test.txt"
    rows = (tmp_path / "out" / "scores_test.csv").read_text().splitlines()
    assert rows[0] == "id,score,predicted"
    ids = [r.split(",")[0] for r in rows[1:]]
    assert ids == [p.stem for p in sorted((demo / "test" / "real_unknown").glob("*.png"))]
    run_lines = Path(ds["run_file"]).read_text().splitlines()
    assert [r.split(",")[2] for r in rows[1:]] == [ln.split(",")[1] for ln in run_lines]


def test_cli_honours_or_refuses_every_option_for_similarity(demo, tmp_path, capsys):
    from ctfp.imageclef.cli import main

    base = ["run", "--method", "sim-pixel", "--data", str(demo / "development"), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a"), "--max-epochs", "3"]) == 2
    assert "--max-epochs: not used by --method sim-pixel" in capsys.readouterr().err
    # --holdout 0 is honoured: a calibrated rule then has nothing to calibrate on, and says so
    assert main([*base, "--out", str(tmp_path / "b"), "--holdout", "0"]) == 2
    assert "pass holdout > 0" in capsys.readouterr().err
    out = tmp_path / "c"
    rc = main(
        [*base, "--out", str(out), "--image-size", "32", "--decision", "top:0.5", "--n-jobs", "1"]
    )
    assert rc == 0
    rec = json.loads((out / "record.json").read_text())
    assert rec["config"]["decision"] == "top:0.5"
    assert rec["datasets"][0]["similarity"]["image_size"] == [32, 32]
    assert rec["config"]["threads"] == 1


def test_groups_reach_the_density_ratio_and_the_leak_test(demo, tmp_path, capsys):
    """--groups (id,patient CSV, the leaky dataset's patients.csv): the real reference counts
    patients (each image's group known to the estimator) and the leak test keeps patients whole;
    a file that names no image of the dataset, and methods 1-4, are refused."""
    from ctfp.imageclef.cli import main
    from ctfp.imageclef.experiments import read_groups

    groups = read_groups(demo / "patients.csv")
    n_real = len(list((demo / "development").rglob("real_*/*.png")))
    n_real += len(list((demo / "test" / "real_unknown").glob("*.png")))
    assert len(groups) == n_real
    base = ["run", "--method", "sim-pixel", "--data", str(demo / "development"), "--quiet"]
    base += ["--test", str(demo / "test")]
    out = tmp_path / "a"
    assert main([*base, "--out", str(out), "--groups", str(demo / "patients.csv")]) == 0
    ds = json.loads((out / "record.json").read_text())["datasets"][0]
    assert ds["groups"] == {"images_grouped": n_real, "groups": len(set(groups.values()))}
    assert ds["leak_test"]["groups"] is True

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,patient\nnot_an_image,1\n")
    assert main([*base, "--out", str(tmp_path / "b"), "--groups", str(wrong)]) == 2
    assert "no id of the groups file names an image" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("used_0001,1\nused_0001,2\n")
    assert main([*base, "--out", str(tmp_path / "c"), "--groups", str(bad)]) == 2
    assert "bad.csv:2: duplicate id 'used_0001'" in capsys.readouterr().err
    m1 = ["run", "--method", "1", "--data", str(demo / "development"), "--out", str(tmp_path)]
    assert main([*m1, "--groups", str(demo / "patients.csv")]) == 2
    assert "--groups: not used by --method 1" in capsys.readouterr().err


def _corrupt(path: Path) -> None:
    """A PNG whose header reads but whose pixels do not (truncated image data)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def broken_demo(tmp_path):
    root = tmp_path / "data"
    make_leaky_dataset(root, LeakyDataSpec.small(seed=4))
    _corrupt(sorted((root / "development" / "real_used").glob("*.png"))[0])
    bad_test = sorted((root / "test" / "real_unknown").glob("*.png"))[1]
    _corrupt(bad_test)
    (root / "test" / "real_unknown" / "notes.txt").write_text("not an image")
    # garbage with a .png name among the generated images: not even a PNG header
    (root / "development" / "generated" / "generated_9999.png").write_bytes(b"\x00garbage" * 40)
    return root, bad_test


def test_unreadable_images_stop_the_run_before_any_work(broken_demo, tmp_path, capsys):
    from ctfp.imageclef.cli import main

    root, bad_test = broken_demo
    args = ["run", "--method", "sim-pixel", "--data", str(root / "development")]
    args += ["--test", str(root / "test"), "--quiet", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"unreadable: {bad_test}" in err and "used_0001.png" in err
    assert "generated_9999.png" in err and "not a PNG file" in err
    assert "3 unreadable image(s)" in err and "Traceback" not in err
    assert not list((tmp_path / "o").glob("run_*.txt"))  # nothing computed, nothing written


def test_skip_drops_development_images_but_not_test_images(broken_demo, tmp_path, capsys):
    from ctfp.imageclef.cli import main

    root, _ = broken_demo
    args = ["run", "--method", "sim-pixel", "--data", str(root / "development"), "--quiet"]
    assert main([*args, "--on-unreadable", "skip", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "unreadable: " in err and "used_0001.png" in err and "generated_9999.png" in err
    rec = json.loads((tmp_path / "a" / "record.json").read_text())
    assert {f["action"] for f in rec["unreadable"]} == {"left out"}
    assert main([*args, "--test", str(root / "test"), "--on-unreadable", "skip",
                 "--out", str(tmp_path / "b")]) == 2  # fmt: skip
    assert "predict:0|1" in capsys.readouterr().err
    assert not list((tmp_path / "b").glob("run_*.txt"))  # refused before any work


def test_predict_label_writes_a_valid_run_file(broken_demo, tmp_path):
    root, bad_test = broken_demo
    rec = run_nn(
        root / "development", tmp_path / "out", test=root / "test", on_unreadable="predict:1"
    )
    ds = rec["datasets"][0]
    assert validate_run_file(ds["run_file"], root / "test") == []
    lines = dict(ln.split(",") for ln in Path(ds["run_file"]).read_text().splitlines())
    assert lines[bad_test.stem] == "1"
    actions = {Path(f["path"]).name: f["action"] for f in rec["unreadable"]}
    assert actions == {
        "used_0001.png": "left out",
        "generated_9999.png": "left out",
        bad_test.name: "predicted 1",
        "notes.txt": "ignored (not an image)",
    }


@pytest.mark.usefixtures("one_torch_thread_per_test")
def test_method1_records_a_holdout_curve_per_epoch(demo, tmp_path):
    """With held-out images, Methods 1-4 record the task's metric after every epoch (the
    report's validation curve): the membership ROC-AUC of the held-out real images."""
    rec = run_tiny_cnn(
        "1", demo, tmp_path, weights=None, copies=2, seed=1, holdout=0.5, epochs=2,
        decision="calibrated:accuracy",
    )  # fmt: skip
    ds = rec["datasets"][0]
    assert [0.0 <= row["val_roc_auc"] <= 1.0 for row in ds["history"]] == [True, True]
    assert "held-out development" in ds["validation"] and "_holdout" not in ds


def test_titles_follow_the_weights_a_method_is_trained_from():
    m1 = METHODS["1"]
    assert m1.with_weights("default") is m1 and m1.with_weights("imagenet") is m1
    none = m1.with_weights(None)
    assert (none.weights, none.title) == (None, "Method 1: MobileNetV2, not pretrained")
    own = METHODS["4"].with_weights("/w/chest.pt")
    assert own.title == "Method 4: MobileNetV2 on ESRGAN x4 images, weights from chest.pt"
    assert METHODS["4"].with_weights("imagenet").title.endswith(", ImageNet-pretrained")
    assert set(METHODS["2"].record()) == {"key", "title", "backbone", "weights",
                                          "super_resolution", "kind"}  # fmt: skip


def test_each_scorer_records_only_the_settings_that_apply():
    from ctfp.imageclef.methods import similarity_method
    from ctfp.imageclef.scorers import ClassifierScorer, SimilarityScorer

    m1 = ClassifierScorer(METHODS["1"].with_weights(None), sr_cache="c").config()
    assert "sr_cache" not in m1 and m1["weights"] is None and m1["image_size"] == 224
    m4 = ClassifierScorer(METHODS["4"], sr_cache="c").config()
    assert m4["sr_cache"] == "c" and m4["image_size"] == 896
    pixel = SimilarityScorer(similarity_method("sim-pixel"), device="cpu").config()
    assert pixel["device"] == "cpu" and "epochs" not in pixel and "weights" not in pixel
    vcmi = SimilarityScorer(similarity_method("base-vcmi")).config()
    assert "device" not in vcmi and "torch_threads" not in vcmi  # it runs on the CPU, no torch
    with pytest.raises(ValueError, match="runs on the CPU only"):
        SimilarityScorer(similarity_method("base-ganleaks"), device="cuda")
    with pytest.raises(ValueError, match="runs no torch"):
        SimilarityScorer(similarity_method("base-vcmi"), torch_threads=2)


def test_a_scorer_of_ones_own_refuses_classifier_settings(demo, tmp_path):
    with pytest.raises(ValueError, match="epochs: classifier settings"):
        run_nn(demo / "development", tmp_path, epochs=3)


def test_an_output_folder_belongs_to_one_method(demo, tmp_path):
    """Fixed file names: a second method in the same folder is refused (each method its own
    folder), the same method again replaces its files."""
    run_nn(demo / "development", tmp_path, decision="top:0.5")
    run_nn(demo / "development", tmp_path, decision="top:0.5")
    other = Method("other", "another method", kind="similarity")
    with pytest.raises(ValueError, match="holds the run of method nn"):
        run_method(other, demo / "development", tmp_path, scorer=nearest_scorer)
    assert json.loads(layout.record_path(tmp_path).read_text())["method"]["key"] == "nn"


def test_sim_count_is_no_preset_but_stays_in_the_library():
    """The neighbour count sat below GAN-Leaks on every generator of the benchmark: no preset,
    no command-line method; the statistic itself stays (docs/similarity.md)."""
    from ctfp.imageclef.cli import build_parser
    from ctfp.imageclef.experiments import SIMILARITY_KEYS, SIMILARITY_PRESETS, run_similarity
    from ctfp.membership.similarity import SimilarityMembership

    assert "sim-count" not in SIMILARITY_KEYS
    assert all(p.get("statistic") != "count" for p in SIMILARITY_PRESETS.values())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--method", "sim-count", "--data", "d", "--out", "o"])
    with pytest.raises(ValueError, match="similarity preset 'sim-count'"):
        run_similarity("sim-count", "d", "o")
    assert SimilarityMembership(statistic="count").get_params()["statistic"] == "count"


def test_a_folder_of_several_methods_keeps_one_subfolder_each(demo, tmp_path):
    """``OUT/<key>/record.json`` per method (as the demo writes); the report of ``OUT`` finds
    every run one folder down and compares them."""
    from ctfp.imageclef.report import load_runs, write_report

    other = Method("far", "farthest generated image", kind="similarity")
    for m in (METHOD, other):
        run_method(m, demo / "development", layout.method_dir(tmp_path, m.key),
                   holdout=0.5, decision="top:0.5", scorer=nearest_scorer, verbose=0)  # fmt: skip
    assert (tmp_path / "nn" / "record.json").is_file() and (
        tmp_path / "far" / "record.json"
    ).is_file()
    assert sorted(r.key for r in load_runs(tmp_path)) == ["far", "nn"]
    page = write_report(tmp_path).read_text()
    assert 'id="compare"' in page and "farthest generated image" in page
