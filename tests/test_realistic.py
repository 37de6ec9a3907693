"""The realistic leak benchmark: the training script end to end (tiny), the dataset it writes
(layout, truth kept apart, determinism), who is a member, and the memorisation measure."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctfp.data.datasets import find_datasets
from ctfp.data.synthetic import make_slice

torch = pytest.importorskip("torch")

from ctfp.imageclef import realistic as rl  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benches" / "train_leak_gan.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``train_leak_gan.py --quick`` (few-hundred regime only), then ``--install --pick auto``."""
    if not SCRIPT.is_file():
        pytest.skip(f"{SCRIPT} is not here (installed package without the repository)")
    root = tmp_path_factory.mktemp("gan")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, str(SCRIPT)]
    done = subprocess.run(
        [*base, "--quick", "--out", str(root / "out"), "--device", "cpu", "--threads", "1"]
        + ["--n-jobs", "1", "--regimes", "few-hundred"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    done = subprocess.run(
        [*base, "--install", str(root / "out"), "--assets", str(root / "assets")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return root


def test_script_writes_checkpoints_and_measures(trained):
    out = trained / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "leak_gan_few-hundred.json",
        "leak_gan_few-hundred.pt",
        "samples_few-hundred.png",
        "summary.json",
    ]
    rec = json.loads((out / "leak_gan_few-hundred.json").read_text())
    assert rec["training"]["iterations_done"] == 30 and not rec["training"]["stopped_early"]
    assert [s["iteration"] for s in rec["snapshots"]] == [10, 20, 30]
    for s in rec["snapshots"]:
        m = s["memorisation"]["all_members"]
        assert 0.0 <= m["auc"] <= 1.0 and (m["members"], m["non_members"]) == (12, 8)
    ckpt = rl.load_checkpoint(out / "leak_gan_few-hundred.pt")
    assert sorted(ckpt["snapshots"], key=int) == ["10", "20", "30"]
    state = ckpt["snapshots"]["30"]["state_dict"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert ckpt["meta"]["hashes"]["shown_real_sha256"]
    # the installed asset: one snapshot, its settings beside it
    installed = rl.load_checkpoint(trained / "assets" / "leak_gan_few-hundred.pt")
    assert len(installed["snapshots"]) == 1
    meta = json.loads((trained / "assets" / "leak_gan_few-hundred.json").read_text())
    assert str(meta["installed_snapshot"]) in installed["snapshots"]
    assert meta["settings"]["batch_size"] == 8


def test_install_keeps_a_second_snapshot_beside_the_default(trained, tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--install", str(trained / "out")]
        + ["--assets", str(tmp_path), "--pick", "few-hundred=20+30"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ckpt = rl.load_checkpoint(tmp_path / "leak_gan_few-hundred.pt")
    assert sorted(ckpt["snapshots"], key=int) == ["20", "30"]
    assert rl.default_snapshot(ckpt) == "20"  # the first picked, not the last
    meta = json.loads((tmp_path / "leak_gan_few-hundred.json").read_text())
    assert meta["installed_snapshot"] == 20 and meta["installed_snapshots"] == [20, 30]
    g20, _ = rl.load_generator(ckpt)
    g30, _ = rl.load_generator(ckpt, iteration=30)
    same = rl.load_generator(ckpt, iteration=20)[0]
    z = torch.randn(2, ckpt["model"]["nz"], 1, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(g20(z), same(z)) and not torch.equal(g20(z), g30(z))
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--install", str(trained / "out")]
        + ["--assets", str(tmp_path), "--pick", "few-hundred=20+99"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "few-hundred=99: no such snapshot" in bad.stdout


def test_benchmark_regimes_and_targets(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import membership_benchmark as mb
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert mb.parse_regime("few-hundred@5000") == ("few-hundred", 5000)
    assert mb.parse_regime("thousand") == ("thousand", None)
    assert (
        mb.dataset_dir(tmp_path, "few-hundred@5000") == tmp_path / "snapshot-5000" / "few-hundred"
    )
    with pytest.raises(SystemExit, match="REGIME@ITERATION"):
        mb.parse_regime("few-hundred@x")

    def row(method, auc, acc=0.5, verdict="leak", p=0.01):
        return {
            "method": method,
            "roc_auc": auc,
            "accuracy": acc,
            "leak_verdict": verdict,
            "leak_p": p,
        }

    checks = mb.check_targets(
        {
            "few-hundred": [row("sim-pixel", 0.8, 0.7), row("base-ganleaks", 0.85)],
            "few-hundred@5000": [row("sim-pixel", 0.95, 0.85), row("base-ganleaks", 0.8)],
            "thousand": [
                row("sim-pixel", 0.5, verdict="no evidence", p=0.4),
                row("base-ganleaks", 0.55, p=0.04),
            ],
        }
    )
    met = {c["target"]: c["met"] for c in checks}
    assert met == {
        "few-hundred: best CLI method ROC-AUC >= 0.90": False,
        "few-hundred: best CLI method accuracy >= 0.80": False,
        "few-hundred: every sim-* ROC-AUC above both baselines": False,
        "few-hundred@5000: best CLI method ROC-AUC >= 0.90": True,
        "few-hundred@5000: best CLI method accuracy >= 0.80": True,
        "few-hundred@5000: every sim-* ROC-AUC above both baselines": True,
        "thousand: no false alarm of the leak test, every sim-* method": True,
        "thousand: no false alarm of the leak test, the baselines": False,
    }


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_dataset_layout_and_truth_kept_apart(trained, tmp_path):
    ckpt = trained / "assets" / "leak_gan_few-hundred.pt"
    summary = rl.write_realistic_dataset(tmp_path, "few-hundred", ckpt, n_jobs=1)
    root = tmp_path / "few-hundred"
    assert summary["root"] == str(root) and summary["n_generated"] == 16
    dev = find_datasets(root / "development", require="development")[0]
    test = find_datasets(root / "test", require="test")[0]
    assert (len(dev.used), len(dev.not_used), len(dev.generated)) == (4, 4, 16)
    assert (len(test.unknown), len(test.generated)) == (8, 16)
    # nothing but images inside the data folders; the truth sits beside them
    for folder in (root / "development", root / "test"):
        assert all(p.suffix == ".png" for p in folder.rglob("*") if p.is_file())
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == [
        "test_labels.csv",
        "truth.json",
    ]
    rows = _rows(root / "test_labels.csv")
    assert sorted(r[0] for r in rows) == sorted(p.stem for p in test.unknown)
    assert sum(int(r[1]) for r in rows) == 4
    truth = json.loads((root / "truth.json").read_text())
    assert {(t["id"], str(t["label"])) for t in truth["test"]} == {(a, b) for a, b in rows}
    # used images are training members, not-used images are not; each is the slice it claims
    members = {(m["patient"], m["slice_index"]) for m in truth["members"]}
    assert len(members) == 12
    for path, who in zip(sorted(dev.used), truth["development"]["real_used"], strict=True):
        assert (who["patient"], who["slice_index"]) in members
        img = np.asarray(Image.open(path))
        np.testing.assert_array_equal(img, make_slice(who["patient"], who["slice_index"], size=64))
    for who in truth["development"]["real_not_used"]:
        assert (who["patient"], who["slice_index"]) not in members
    for t in truth["test"]:
        assert ((t["patient"], t["slice_index"]) in members) == (t["label"] == 1)
    assert truth["checkpoint"]["meta"]["settings"]["iterations"] == 30


def test_dataset_is_deterministic(trained, tmp_path):
    ckpt = trained / "assets" / "leak_gan_few-hundred.pt"
    for name in ("a", "b"):
        rl.write_realistic_dataset(tmp_path / name, "few-hundred", ckpt, n_generated=6, n_jobs=1)
    files_a = sorted(p for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p for p in (tmp_path / "b").rglob("*.png"))
    assert len(files_a) == 4 + 4 + 8 + 6 + 6
    for pa, pb in zip(files_a, files_b, strict=True):
        assert pa.relative_to(tmp_path / "a") == pb.relative_to(tmp_path / "b")
        assert pa.read_bytes() == pb.read_bytes()
    assert (tmp_path / "a/few-hundred/test_labels.csv").read_bytes() == (
        tmp_path / "b/few-hundred/test_labels.csv"
    ).read_bytes()


def test_rewriting_a_smaller_dataset_leaves_no_stale_images(trained, tmp_path):
    ckpt = trained / "assets" / "leak_gan_few-hundred.pt"
    rl.write_realistic_dataset(tmp_path, "few-hundred", ckpt, n_generated=9, n_jobs=1)
    rl.write_realistic_dataset(tmp_path, "few-hundred", ckpt, n_generated=5, n_jobs=1)
    for split in ("development", "test"):
        names = sorted(p.name for p in (tmp_path / "few-hundred" / split / "generated").iterdir())
        assert names == [f"generated_{k:05d}.png" for k in range(1, 6)]


def test_generate_same_seed_same_images(trained):
    g, _ = rl.load_generator(trained / "assets" / "leak_gan_few-hundred.pt")
    a = rl.generate(g, 10, seed=3)
    assert a.shape == (10, 256, 256) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, rl.generate(g, 10, seed=3))
    assert not np.array_equal(a, rl.generate(g, 10, seed=4))
    # image i depends on (seed, i), not on how many are drawn (within a grey level: another
    # batch shape may round one pixel differently)
    head = rl.generate(g, 4, seed=3).astype(int)
    assert np.abs(head - a[:4]).max() <= 1
    small = rl.generate(g, 4, seed=3, size=64)
    assert small.shape == (4, 64, 64)


def test_changed_slices_are_refused(trained, tmp_path):
    ckpt = rl.load_checkpoint(trained / "assets" / "leak_gan_few-hundred.pt")
    ckpt["meta"]["hashes"]["shown_real_sha256"] = "0" * 64
    path = rl.save_checkpoint(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="synthetic slices differ"):
        rl.write_realistic_dataset(tmp_path / "data", "few-hundred", path, n_jobs=1)
    with pytest.raises(ValueError, match="trained for regime 'few-hundred'"):
        rl.write_realistic_dataset(tmp_path / "data", "thousand", path, n_jobs=1)


def test_missing_checkpoint_names_the_training_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_leak_gan.py"):
        rl.load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(ValueError, match="regime"):
        rl.checkpoint_path("hundreds")


def _real(n: int, first: int) -> np.ndarray:
    return np.stack([make_slice(first + k, k % 7, size=64) for k in range(n)])


def test_memorisation_auc_copies_and_noise():
    members, non_members = _real(60, 0), _real(60, 1000)

    def copies(n, seed):
        return np.resize(members, (n, 64, 64))

    assert rl.memorisation_auc(copies, members, non_members, n_samples=120) == 1.0

    def noise(n, seed):
        return np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8)

    auc = rl.memorisation_auc(noise, members, non_members, n_samples=200)
    assert abs(auc - 0.5) < 0.2
    # the samples themselves, and the details
    info = rl.memorisation_auc(members[:30], members, non_members, details=True)
    assert info["samples"] == 30 and info["mean_nearest_member"] < info["mean_nearest_non_member"]


def test_memorisation_auc_of_a_network():
    members, non_members = _real(8, 0), _real(8, 100)
    torch.manual_seed(0)
    g = rl.build_generator(nz=8, width=2)
    auc = rl.memorisation_auc(g, members, non_members, n_samples=16)
    assert 0.0 <= auc <= 1.0


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 128, 128), dtype=np.uint8)
    b = rng.integers(0, 256, (7, 64, 64), dtype=np.uint8)
    got = rl.nearest_distances(a, b, block=3)
    small = rl.downsample(a).astype(float).reshape(5, -1)
    want = np.sqrt(((small[:, None] - b.reshape(7, -1)[None].astype(float)) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_downsample_is_an_area_average():
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    np.testing.assert_array_equal(
        rl.downsample(x, 2), np.rint([[[2.5, 4.5], [10.5, 12.5]]]).astype(np.uint8)
    )
    with pytest.raises(ValueError, match="multiple"):
        rl.downsample(np.zeros((1, 65, 65), np.uint8))


def test_plan_members_and_splits():
    spec = rl.REGIMES["few-hundred"]
    who = rl.plan(spec)
    assert who == rl.plan(spec)
    members, non = who["members"], who["non_members"]
    assert (len(members), len(non)) == (200, 200)
    assert not {p for p, _ in members} & {p for p, _ in non}  # one slice per patient
    assert len({p for p, _ in members + non}) == 400
    assert sorted(who["dev_used"] + who["test_used"]) == list(range(200))  # all 200 shown
    assert not set(who["dev_not_used"]) & set(who["test_not_used"])
    assert sorted(who["test_order"]) == list(range(200))
    big = rl.plan(rl.REGIMES["thousand"])
    assert big["non_members"] == non and big["dev_not_used"] == who["dev_not_used"]
    assert len(big["members"]) == 1000 and set(members) <= set(big["members"])
    shown = big["dev_used"] + big["test_used"]
    assert len(set(shown)) == 200 and max(shown) < 1000
    assert len({s for _, s in members}) > 10  # slice positions vary


def test_spec_checks():
    with pytest.raises(ValueError, match="n_dev_used"):
        rl.RealisticSpec(n_train=150)
    with pytest.raises(ValueError, match="n_train"):
        rl.RealisticSpec(n_train=0)
    with pytest.raises(ValueError, match="multiple"):
        rl.RealisticSpec(size=100)


def test_render_is_the_same_in_worker_processes():
    slices = [(p, p % 5) for p in range(32)]
    np.testing.assert_array_equal(
        rl.render(slices, size=32, n_jobs=1), rl.render(slices, size=32, n_jobs=2)
    )


@pytest.mark.slow
def test_realistic_demo_quick(trained, tmp_path, monkeypatch):
    """``ctfp demo --realistic --quick`` on the installed (tiny) generator: data, methods,
    tables; the truth of every test image is the plan's."""
    from ctfp.imageclef.cli import main

    monkeypatch.setattr(rl, "ASSETS", trained / "assets")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "demo"
    assert main(["demo", "--realistic", "--quick", "--out", str(out), "--n-jobs", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["realistic"] and summary["leak"]["n_generated"] == 200
    rows = summary["tables"]["Test images (truth known to the demo)"]
    assert rows[0]["method"].startswith("Method 1") and len(rows) >= 2
    data = out / "data" / "few-hundred"
    assert len(list((data / "test" / "generated").glob("*.png"))) == 200


def test_realistic_demo_without_assets_names_the_script(tmp_path, monkeypatch, capsys):
    from ctfp.imageclef.cli import main

    monkeypatch.setattr(rl, "ASSETS", tmp_path / "no_assets")
    assert main(["demo", "--realistic", "--quick", "--out", str(tmp_path / "demo")]) == 1
    assert "benches/train_leak_gan.py" in capsys.readouterr().err
