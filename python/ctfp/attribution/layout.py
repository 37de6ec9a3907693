"""The attribution subtask's folder layouts, read into lists of images with their sources.

Development data (:func:`read_development`), ``root`` holding:

- the 2025 layout ("identify training data subsets"): ``real/<subset>/*.png`` (the subset's real
  images) and ``generated/<subset>/*.png`` (images of the model trained on it), the same subset
  names in both;
- the 2024-style layout ("detect generative models' fingerprints"): ``generated/<model>/*.png``
  only.

Test data (:func:`read_test`): the unlabelled images in ``generated_unknown/`` or
``generated/`` under ``root`` (or ``root`` itself when it holds the PNGs); an image's id is its
file name without ``.png``. The truth, when there is one, is ``test_labels.csv`` (``id,label``,
no header) in ``root`` or beside it.

Every folder entry is accounted for (:func:`ctfp.data.datasets.scan_images`): a file that is
not a readable PNG stops reading with one line naming it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Development", "TestSet", "read_development", "read_test", "read_truth"]

TEST_FOLDERS = ("generated_unknown", "generated")
TRUTH_FILE = "test_labels.csv"


@dataclass
class Development:
    """Labelled development data: ``year`` is ``"2025"`` (with real images per subset) or
    ``"2024"`` (generated images per model only); ``sources`` sorted."""

    root: Path
    year: str
    sources: list[str]
    generated: dict[str, list[Path]]
    real: dict[str, list[Path]] = field(default_factory=dict)

    def generated_items(self) -> tuple[list[Path], list[str]]:
        """All generated images and the source of each (sources in order)."""
        paths = [p for s in self.sources for p in self.generated[s]]
        return paths, [s for s in self.sources for _ in self.generated[s]]

    def real_items(self) -> tuple[list[Path], list[str]]:
        """All real images and the subset of each (empty for the 2024 layout)."""
        paths = [p for s in self.sources for p in self.real.get(s, [])]
        return paths, [s for s in self.sources for _ in self.real.get(s, [])]


@dataclass
class TestSet:
    """Unlabelled test images: ``ids`` (file stems, sorted), their ``paths``, and the truth
    (id -> label) when a ``test_labels.csv`` was found."""

    root: Path
    folder: Path
    ids: list[str]
    paths: list[Path]
    truth: dict[str, str] | None = None

    def labels(self) -> list[str] | None:
        """The true label of each image in ``ids`` order (None without truth)."""
        if self.truth is None:
            return None
        return [self.truth[i] for i in self.ids]


def _pngs(folder: Path) -> list[Path]:
    from ctfp.data.datasets import scan_images

    scan = scan_images(folder)
    if scan.unreadable:
        p, why = scan.unreadable[0]
        more = f" (and {len(scan.unreadable) - 1} more)" if len(scan.unreadable) > 1 else ""
        raise ValueError(f"{p}: {why}{more}")
    if not scan.images:
        raise ValueError(f"{folder}: expected PNG images, found none")
    if len(scan.sizes) > 1:
        sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sorted(scan.sizes.items()))
        raise ValueError(f"{folder}: expected images of one size, found {sizes}")
    return scan.images


def _subfolders(folder: Path) -> dict[str, Path]:
    subs = {
        p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")
    }
    if not subs:
        raise ValueError(
            f"{folder}: expected one folder per source (e.g. {folder.name}/subset_1/), found none"
        )
    return subs


def read_development(root: str | os.PathLike[str]) -> Development:
    """Read a development folder of either layout (see the module docstring)."""
    root = Path(root)
    gen_dir = root / "generated"
    if not gen_dir.is_dir():
        raise FileNotFoundError(
            f"{root}: expected a development folder holding generated/<source>/ (and "
            f"real/<subset>/ for the 2025 layout); found no generated/ folder"
        )
    gen = {name: _pngs(p) for name, p in _subfolders(gen_dir).items()}
    real_dir = root / "real"
    if not real_dir.is_dir():
        return Development(root, "2024", sorted(gen), gen)
    real = {name: _pngs(p) for name, p in _subfolders(real_dir).items()}
    if set(real) != set(gen):
        only_g, only_r = sorted(set(gen) - set(real)), sorted(set(real) - set(gen))
        raise ValueError(
            f"{root}: expected the same subsets in real/ and generated/; only in generated/: "
            f"{only_g or 'none'}, only in real/: {only_r or 'none'}"
        )
    return Development(root, "2025", sorted(gen), gen, real)


def read_truth(path: str | os.PathLike[str]) -> dict[str, str]:
    """``id,label`` rows (no header) as a dict; a repeated id or a short row is an error naming
    the line."""
    path = Path(path)
    out: dict[str, str] = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{path}, line {n}: expected id,label, found {','.join(row)!r}")
            key, label = row[0].strip(), row[1].strip()
            if key in out:
                raise ValueError(f"{path}, line {n}: id {key!r} appears twice")
            out[key] = label
    return out


def read_test(root: str | os.PathLike[str], truth: str | os.PathLike[str] | None = None) -> TestSet:
    """Read the unlabelled test images (see the module docstring); ``truth``: a labels file
    (default: ``test_labels.csv`` in ``root`` or its parent, when there)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: expected a test folder, found none")
    folder = next((root / n for n in TEST_FOLDERS if (root / n).is_dir()), root)
    paths = _pngs(folder)
    ids = [p.stem for p in paths]
    if truth is None:
        found = [d / TRUTH_FILE for d in (root, root.parent) if (d / TRUTH_FILE).is_file()]
        truth = found[0] if found else None
    labels = None
    if truth is not None:
        labels = read_truth(truth)
        missing = [i for i in ids if i not in labels]
        if missing:
            raise ValueError(
                f"{truth}: expected a label for every test image; missing for {len(missing)} "
                f"(e.g. {missing[0]!r})"
            )
    return TestSet(root, folder, ids, paths, labels)
