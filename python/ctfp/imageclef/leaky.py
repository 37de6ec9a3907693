"""A small ImageCLEF-style dataset with a generator that leaks its training images to a known
degree, made from ctfp's synthetic CT-like slices (no real CT or trained GAN needed).

The stand-in generator was "trained" on the used images (development and test). Each image it
outputs is, with probability ``leak``, a near-copy of one training image (a small random
rotation, zoom and shift, slight blur and fresh noise: the fingerprint a memorising generator
leaves) and otherwise a new slice of a patient it never saw. Used, not-used and novel images come
from disjoint patients, so only the leak links generated images to used ones. ``leak=0`` makes
membership undetectable by construction; the ground truth of the test images is written next to
the data for evaluation.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ctfp._util import atomic_write, write_text_atomic
from ctfp.imageclef.layout import image_id

__all__ = ["LeakyDataSpec", "make_leaky_dataset"]


@dataclass(frozen=True)
class LeakyDataSpec:
    """Sizes and leak of the demo data (the 2023 task had 80 + 80 development, 100 + 100 test)."""

    n_used: int = 40
    n_not_used: int = 40
    n_test_used: int = 40
    n_test_not_used: int = 40
    n_generated: int = 400
    leak: float = 0.5
    max_angle_deg: float = 3.0
    max_shift_frac: float = 0.01
    blur_sigma: float = 0.6
    noise_sigma: float = 4.0
    slices_per_patient: int = 4
    size: int = 256
    seed: int = 0

    @classmethod
    def small(cls, **changes: object) -> LeakyDataSpec:
        """A tiny spec (8 + 8 development, 6 + 6 test, 40 generated, 64x64) for quick runs and
        tests; ``changes`` override any field."""
        sizes = dict(n_used=8, n_not_used=8, n_test_used=6, n_test_not_used=6, n_generated=40)
        return cls(**{**sizes, "size": 64, **changes})  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        for name in ("n_used", "n_not_used", "n_test_used", "n_test_not_used", "n_generated"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, found {v!r}")
        if not 0.0 <= self.leak <= 1.0:
            raise ValueError(f"leak: expected a fraction in [0, 1], found {self.leak!r}")


def _slices(first_patient: int, n: int, spec: LeakyDataSpec) -> list[np.ndarray]:
    from ctfp.data.synthetic import make_slice

    per = spec.slices_per_patient
    return [
        make_slice(first_patient + k // per, (k % per) * 3, size=spec.size, seed=spec.seed)
        for k in range(n)
    ]


def _near_copy(img: np.ndarray, rng: np.random.Generator, spec: LeakyDataSpec) -> np.ndarray:
    from scipy import ndimage

    from ctfp.data.preprocess import transform

    moved = transform(
        img,
        angle_deg=rng.uniform(-spec.max_angle_deg, spec.max_angle_deg),
        zoom=tuple(rng.uniform(0.98, 1.02, 2)),
        shift=tuple(rng.uniform(-spec.max_shift_frac, spec.max_shift_frac, 2)),
    ).astype(np.float64)
    moved = ndimage.gaussian_filter(moved, spec.blur_sigma)
    moved += rng.normal(0.0, spec.noise_sigma, moved.shape)
    return np.clip(np.rint(moved), 0, 255).astype(np.uint8)


def _write(folder: Path, prefix: str, images: list[np.ndarray]) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, img in enumerate(images):
        p = folder / f"{prefix}_{k + 1:04d}.png"
        with atomic_write(p) as f:
            Image.fromarray(img).save(f, format="PNG")
        paths.append(p)
    return paths


def make_leaky_dataset(root: str | os.PathLike[str], spec: LeakyDataSpec | None = None) -> dict:
    """Write ``root/development`` (generated, real_used, real_not_used), ``root/test``
    (generated, real_unknown), ``root/test_labels.csv`` (id,label) and
    ``root/leak_sources.csv`` (generated,source: each generated image's path and the used image
    it is a near-copy of, both relative to ``root``; source empty for a novel image),
    ``root/patients.csv`` (id,patient of every real image: ``ctfp run --groups``); return a
    summary (also ``root/leak.json``)."""
    spec = spec or LeakyDataSpec()
    root = Path(root)
    rng = np.random.Generator(np.random.PCG64([spec.seed, 0x1EA4]))
    per = spec.slices_per_patient

    def patients(n: int) -> int:
        return -(-n // per)

    groups = {}
    patient_of: dict[str, list[int]] = {}  # each real image's patient, per group
    first = 0
    for name, n in (
        ("used", spec.n_used),
        ("not_used", spec.n_not_used),
        ("test_used", spec.n_test_used),
        ("test_not_used", spec.n_test_not_used),
    ):
        groups[name] = _slices(first, n, spec)
        patient_of[name] = [first + k // per for k in range(n)]
        first += patients(n)
    training = groups["used"] + groups["test_used"]

    def generate(n: int, first_novel: int) -> tuple[list[np.ndarray], list[int]]:
        leaked = rng.random(n) < spec.leak
        novel = iter(_slices(first_novel, int((~leaked).sum()), spec))
        out, sources = [], []
        for is_leak in leaked:
            if is_leak:
                k = int(rng.integers(len(training)))
                out.append(_near_copy(training[k], rng, spec))
                sources.append(k)
            else:
                out.append(next(novel))
                sources.append(-1)
        return out, sources

    dev_gen, dev_src = generate(spec.n_generated, first + 1000)
    test_gen, test_src = generate(spec.n_generated, first + 5000)
    dev, test = root / "development", root / "test"
    used_paths = _write(dev / "real_used", "used", groups["used"])
    not_used_paths = _write(dev / "real_not_used", "not_used", groups["not_used"])
    dev_gen_paths = _write(dev / "generated", "generated", dev_gen)
    test_gen_paths = _write(test / "generated", "generated", test_gen)
    unknown = groups["test_used"] + groups["test_not_used"]
    truth = [1] * spec.n_test_used + [0] * spec.n_test_not_used
    order = rng.permutation(len(unknown))  # test ids do not give the answer away
    paths = _write(test / "real_unknown", "real_unknown", [unknown[i] for i in order])
    with atomic_write(root / "test_labels.csv", "w") as f:
        w = csv.writer(f)
        for p, i in zip(paths, order, strict=True):
            w.writerow([image_id(p), truth[i]])
    test_patients = patient_of["test_used"] + patient_of["test_not_used"]
    with atomic_write(root / "patients.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(["id", "patient"])
        for ps, pats in (
            (used_paths, patient_of["used"]),
            (not_used_paths, patient_of["not_used"]),
            (paths, [test_patients[i] for i in order]),
        ):
            for path, pat in zip(ps, pats, strict=True):
                w.writerow([image_id(path), pat])
    # which used image each generated image copies (training index k: the development used
    # images, then the test used ones, which sit at permuted real_unknown positions)
    position = {int(i): pos for pos, i in enumerate(order)}
    training_paths = used_paths + [paths[position[j]] for j in range(spec.n_test_used)]
    with atomic_write(root / "leak_sources.csv", "w") as f:
        w = csv.writer(f)
        w.writerow(["generated", "source"])
        for gen_paths, src in ((dev_gen_paths, dev_src), (test_gen_paths, test_src)):
            for g, s in zip(gen_paths, src, strict=True):
                source = training_paths[s].relative_to(root).as_posix() if s >= 0 else ""
                w.writerow([g.relative_to(root).as_posix(), source])
    summary = {
        "spec": asdict(spec),
        "leaked_generated": {
            "development": int(np.sum(np.array(dev_src) >= 0)),
            "test": int(np.sum(np.array(test_src) >= 0)),
        },
        "distinct_training_images_leaked": len({s for s in dev_src + test_src if s >= 0}),
        "sources": "leak_sources.csv",
    }
    write_text_atomic(root / "leak.json", json.dumps(summary, indent=2) + "\n")
    return summary
