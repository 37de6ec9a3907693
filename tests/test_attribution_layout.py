"""ctfp.attribution: the 2025/2024 layouts, attribute_layout / cluster_folder end to end on tiny
folders, the benchmark generators (architectures, training, checkpoints, disjoint subsets)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from ctfp.attribution import attribute_layout, cluster_folder, gans, read_development, read_test


def _toy(k: int, n: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    x = rng.normal(128, 20, (n, size, size))
    if k == 1:
        x += 25 * np.cos(2 * np.pi * np.arange(size) / 8)[None, None, :]
    if k == 2:  # smoother (another spectrum) and brighter
        x = scipy.ndimage.uniform_filter1d(x, 3, axis=2) + 30
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _save(folder, prefix, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(images):
        Image.fromarray(x).save(folder / f"{prefix}_{i:03d}.png")


def _layout(tmp_path, year: str, n_dev: int = 12, n_test: int = 6):
    rng = np.random.default_rng(0)
    names = ["s1", "s2", "s3"] if year == "2025" else ["bilinear", "nearest", "tconv"]
    dev, test = tmp_path / "development", tmp_path / "test"
    ids, truth = [], []
    for k, s in enumerate(names):
        _save(dev / "generated" / s, s, _toy(k, n_dev, rng))
        if year == "2025":
            _save(dev / "real" / s, f"real_{s}", _toy(k, 5, rng))
        imgs = _toy(k, n_test, rng)
        for i, x in enumerate(imgs):
            (test / "generated_unknown").mkdir(parents=True, exist_ok=True)
            name = f"unknown_{k}{i:03d}"
            Image.fromarray(x).save(test / "generated_unknown" / f"{name}.png")
            ids.append(name)
            truth.append(s)
    (tmp_path / "test_labels.csv").write_text(
        "".join(f"{i},{t}\n" for i, t in zip(ids, truth, strict=True))
    )
    return dev, test, dict(zip(ids, truth, strict=True))


def test_reads_the_2025_layout(tmp_path):
    dev_dir, test_dir, truth = _layout(tmp_path, "2025")
    dev = read_development(dev_dir)
    assert dev.year == "2025" and dev.sources == ["s1", "s2", "s3"]
    paths, src = dev.generated_items()
    assert len(paths) == 36 and src[:12] == ["s1"] * 12
    rp, rs = dev.real_items()
    assert len(rp) == 15 and rs[-1] == "s3"
    tst = read_test(test_dir)
    assert tst.folder.name == "generated_unknown" and tst.ids == sorted(truth)
    assert tst.labels() == [truth[i] for i in tst.ids]


def test_reads_the_2024_layout_and_refuses_real_image_methods(tmp_path):
    dev_dir, test_dir, _ = _layout(tmp_path, "2024", n_dev=30)
    dev = read_development(dev_dir)
    assert dev.year == "2024" and dev.real == {}
    with pytest.raises(ValueError, match="method='subset' needs each subset's real images"):
        attribute_layout(dev_dir, test_dir, method="subset")
    res = attribute_layout(dev_dir, test_dir)
    assert res.method == "spectrum" and res.year == "2024"
    assert res.proba.shape == (18, 3) and res.sources == ["bilinear", "nearest", "tconv"]
    np.testing.assert_allclose(res.proba.sum(1), 1.0, rtol=1e-5)
    assert res.metrics is not None and res.metrics["accuracy"] >= 0.9


@pytest.mark.parametrize("method", ["auto", "pixel-nearest", "residual-correlation"])
def test_attribute_layout_2025(tmp_path, method):
    dev_dir, test_dir, truth = _layout(tmp_path, "2025")
    res = attribute_layout(dev_dir, test_dir, method=method)
    assert res.ids == sorted(truth) and len(res.labels) == 18
    assert set(res.labels) <= {"s1", "s2", "s3"}
    assert res.metrics["confusion"] and res.metrics["labels"] == ["s1", "s2", "s3"]
    if method == "auto":
        assert res.method == "subset" and res.metrics["accuracy"] >= 0.9


def test_cluster_folder(tmp_path):
    _, test_dir, _ = _layout(tmp_path, "2024", n_test=10)
    res = cluster_folder(test_dir, n_sources=3, features="pixel")
    assert res.n_sources == 3 and len(res.labels) == 30
    assert res.metrics["ari"] >= 0.9 and res.metrics["n_clusters"] == 3


def test_layout_errors_name_the_file(tmp_path):
    dev_dir, test_dir, _ = _layout(tmp_path, "2025", n_dev=2, n_test=2)
    (dev_dir / "generated" / "s1" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt: not a \.png file"):
        read_development(dev_dir)
    (dev_dir / "generated" / "s1" / "notes.txt").unlink()
    (dev_dir / "real" / "s3").rename(dev_dir / "real" / "s4")
    with pytest.raises(ValueError, match=r"only in generated/: \['s3'\], only in real/: \['s4'\]"):
        read_development(dev_dir)
    with pytest.raises(FileNotFoundError, match="found no generated/ folder"):
        read_development(tmp_path / "nowhere")
    (tmp_path / "test_labels.csv").write_text("unknown_0000,s1\n")
    with pytest.raises(ValueError, match="expected a label for every test image; missing for 5"):
        read_test(test_dir)
    (tmp_path / "test_labels.csv").write_text("unknown_0000,s1\nunknown_0000,s2\n")
    with pytest.raises(ValueError, match="line 2: id 'unknown_0000' appears twice"):
        read_test(test_dir)


# ---------------------------------------------------------------------------------- generators


@pytest.mark.parametrize("arch", gans.ARCHITECTURES)
def test_generators_make_64x64_images(arch):
    torch = pytest.importorskip("torch")
    g = gans.build_generator(nz=8, width=2, arch=arch).eval()
    with torch.no_grad():
        out = g(torch.randn(3, 8, 1, 1))
    assert out.shape == (3, 1, 64, 64) and float(out.abs().max()) <= 1.0
    kinds = {type(m).__name__ for m in g.modules()}
    assert ("ConvTranspose2d" in kinds) and (("Upsample" in kinds) == (arch != "tconv"))


def test_train_save_load_round_trip(tmp_path):
    pytest.importorskip("torch")
    from ctfp.imageclef.realistic import generate

    spec = gans.GeneratorSpec("x", "2024", "nearest", n_train=4, nz=8, width=2)
    imgs = np.random.default_rng(0).integers(0, 256, (4, 64, 64)).astype(np.uint8)
    res = gans.train_generator(imgs, spec, iterations=3, batch_size=2, log=None)
    assert res.iterations == 3 and not res.stopped_early
    path = gans.save_checkpoint(res.generator, spec, tmp_path / "g.pt", {"iterations_done": 3})
    g, back, meta = gans.load_generator(path)
    assert back == spec and meta["iterations_done"] == 3
    a = generate(res.generator, 2, 0, size=64)
    b = generate(g, 2, 0, size=64)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # fp16 storage
    with pytest.raises(FileNotFoundError, match="no trained attribution generator"):
        gans.load_generator(tmp_path / "missing.pt")


def test_the_2025_subsets_are_disjoint_and_the_2024_models_share_images():
    s25 = gans.SETTINGS["2025"]
    seen = [set(gans.patients_of(s)) for s in s25]
    assert len(s25) >= 5 and all(len(a & b) == 0 for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert len({s.arch for s in s25}) == 1
    s24 = gans.SETTINGS["2024"]
    assert len({(s.first_patient, s.n_train) for s in s24}) == 1
    assert {s.arch for s in s24} == set(gans.ARCHITECTURES)
    pair = [s for s in s24 if s.arch == "tconv"]
    assert len(pair) == 2 and pair[0].seed != pair[1].seed


def test_committed_generators_load():
    pytest.importorskip("torch")
    missing = [
        s.name
        for st in gans.SETTINGS.values()
        for s in st
        if not gans.checkpoint_path(s.name, s.setting).is_file()
    ]
    if missing:
        pytest.skip(f"generators not trained yet: {missing}")
    for st in gans.SETTINGS.values():
        for s in st:
            _, spec, meta = gans.load_generator(gans.checkpoint_path(s.name, s.setting))
            assert spec == s and meta["iterations_done"] > 0
            assert len(meta["patients"]) == s.n_train


@pytest.mark.parametrize("setting", ["2025", "2024"])
def test_dataset_writer_round_trip(tmp_path, setting):
    """Tiny untrained stand-ins of the setting's generators -> the written layout reads back,
    with the truth, and the 2025 real images are each subset's training slices."""
    pytest.importorskip("torch")
    from dataclasses import replace

    from ctfp.attribution.dataset import write_attribution_dataset
    from ctfp.imageclef.realistic import sha256

    assets = tmp_path / "assets"
    for spec in gans.SETTINGS[setting]:
        small = replace(spec, n_train=2, nz=8, width=2)
        meta = {"iterations_done": 0, "training_slices_sha256": sha256(gans.training_images(small))}
        g = gans.build_generator(small.nz, small.width, small.arch).eval()
        gans.save_checkpoint(g, small, gans.checkpoint_path(spec.name, setting, assets), meta)
    summary = write_attribution_dataset(
        tmp_path / "data", setting, n_dev=3, n_test=2, assets=assets
    )
    root = tmp_path / "data" / setting
    dev = read_development(root / "development")
    tst = read_test(root / "test")
    names = [s.name for s in gans.SETTINGS[setting]]
    assert dev.year == setting and dev.sources == sorted(names)
    assert all(len(v) == 3 for v in dev.generated.values())
    assert sorted(tst.labels()) == sorted(names * 2) and len(summary["generators"]) == len(names)
    if setting == "2025":
        assert all(len(v) == 2 for v in dev.real.values())
        first = gans.patients_of(replace(gans.SETTINGS["2025"][0], n_train=2))[0]
        assert dev.real["s1"][0].name == f"real_{first[0]}_{first[1]}.png"
    with pytest.raises(FileExistsError, match="expected an empty or new folder"):
        write_attribution_dataset(tmp_path / "data", setting, n_dev=1, n_test=1, assets=assets)
