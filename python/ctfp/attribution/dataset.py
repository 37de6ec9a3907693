"""Write the attribution benchmark's datasets from the committed generators (CPU, minutes).

:func:`write_attribution_dataset` writes one setting under ``root/<setting>/``:

- ``"2025"``: ``development/real/<subset>/`` (the subset's training slices, 256x256),
  ``development/generated/<subset>/`` (``n_dev`` samples of its generator),
  ``test/generated_unknown/`` (``n_test`` samples per generator, shuffled, ids
  ``unknown_00001 ...``);
- ``"2024"``: ``development/generated/<model>/`` and ``test/generated_unknown/`` likewise;

and beside them the truth: ``test_labels.csv`` (``id,label``, no header) and ``truth.json``
(every generator's checkpoint, iterations done, latent seeds, patients seen). Latent seeds:
development ``1000 + k``, test ``2000 + k`` for the ``k``-th generator of the setting, so no
latent vector repeats between splits.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import atomic_write, write_image_png, write_text_atomic

from . import gans

__all__ = ["load_setting", "sample_setting", "write_attribution_dataset"]

DEV_SEED = 1000
TEST_SEED = 2000


def load_setting(
    setting: str, assets: str | os.PathLike[str] | None = None
) -> list[tuple[Any, gans.GeneratorSpec, dict[str, Any], Path]]:
    """Each generator of ``setting`` as ``(network, spec, meta, checkpoint path)``."""
    if setting not in gans.SETTINGS:
        raise ValueError(
            f"setting: expected one of {', '.join(map(repr, gans.SETTINGS))}, found {setting!r}"
        )
    out = []
    for spec in gans.SETTINGS[setting]:
        path = gans.checkpoint_path(spec.name, setting, assets)
        g, got, meta = gans.load_generator(path)
        out.append((g, got, meta, path))
    return out


def sample_setting(
    setting: str,
    n_per_source: int,
    split: str,
    *,
    size: int = 256,
    assets: str | os.PathLike[str] | None = None,
    first: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_source`` samples of each generator of ``setting`` for ``split`` (``"dev"`` /
    ``"test"`` latent seeds), images ``first ..`` of each sequence: ``uint8 (N, size, size)``
    and the source of each."""
    from ctfp.imageclef.realistic import generate

    base = {"dev": DEV_SEED, "test": TEST_SEED}[split]
    images, labels = [], []
    for k, (g, spec, _, _) in enumerate(load_setting(setting, assets)):
        x = generate(g, first + n_per_source, base + k, size=size)[first:]
        images.append(x)
        labels += [spec.name] * len(x)
    return np.concatenate(images), np.array(labels)


def _write_pngs(folder: Path, names: list[str], images: np.ndarray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)

    def one(k: int) -> None:
        write_image_png(folder / f"{names[k]}.png", images[k])

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, range(len(images))))


def write_attribution_dataset(
    root: str | os.PathLike[str],
    setting: str = "2025",
    *,
    n_dev: int = 200,
    n_test: int = 200,
    n_real: int | None = None,
    assets: str | os.PathLike[str] | None = None,
    verbose: int = 0,
) -> dict[str, Any]:
    """Write ``setting``'s dataset under ``root/<setting>/`` (see the module docstring) and
    return a summary. ``n_real``: real images per subset (default: all of its training
    slices). The output folder must not hold an earlier dataset (remove it first)."""
    from ctfp.imageclef.realistic import generate, sha256

    t0 = time.perf_counter()
    say = print if verbose else (lambda *_: None)
    out = Path(root) / setting
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: expected an empty or new folder, found files; remove it")
    loaded = load_setting(setting, assets)
    dev = out / "development"
    test_imgs, test_src = [], []
    gens = []
    for k, (g, spec, meta, path) in enumerate(loaded):
        if setting == "2025":
            real = gans.training_images(spec, size=256)
            if sha256(real) != meta.get("training_slices_sha256"):
                raise ValueError(
                    f"{path}: the synthetic slices differ from those its generator was trained "
                    f"on (ctfp.data.synthetic changed?); retrain with {gans.TRAIN_COMMAND}"
                )
            real = real[: n_real or len(real)]
            pats = gans.patients_of(spec)[: len(real)]
            _write_pngs(dev / "real" / spec.name, [f"real_{p}_{s}" for p, s in pats], real)
        x = generate(g, n_dev, DEV_SEED + k, size=256)
        _write_pngs(
            dev / "generated" / spec.name, [f"{spec.name}_{i + 1:05d}" for i in range(n_dev)], x
        )
        test_imgs.append(generate(g, n_test, TEST_SEED + k, size=256))
        test_src += [spec.name] * n_test
        gens.append(
            {
                "name": spec.name,
                "arch": spec.arch,
                "seed": spec.seed,
                "checkpoint": path.name,
                "iterations_done": meta.get("iterations_done"),
                "patients": [spec.first_patient, spec.first_patient + spec.n_train - 1],
                "dev_latent_seed": DEV_SEED + k,
                "test_latent_seed": TEST_SEED + k,
            }
        )
        say(f"  {spec.name}: written ({time.perf_counter() - t0:.1f} s)")
    images = np.concatenate(test_imgs)
    order = np.random.default_rng(12345).permutation(len(images))
    ids = [f"unknown_{i + 1:05d}" for i in range(len(images))]
    _write_pngs(out / "test" / "generated_unknown", ids, images[order])
    labels = [test_src[j] for j in order]
    with atomic_write(out / "test_labels.csv", "w") as f:
        csv.writer(f, lineterminator="\n").writerows(zip(ids, labels, strict=True))
    summary = {
        "setting": setting,
        "root": str(out),
        "n_dev_per_source": n_dev,
        "n_test_per_source": n_test,
        "generators": gens,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_text_atomic(out / "truth.json", json.dumps(summary, indent=1) + "\n")
    return summary
