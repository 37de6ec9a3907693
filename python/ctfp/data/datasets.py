"""Readers for the ImageCLEFmedical GANs data layouts (2023, 2024, 2025).

Development data has ``generated*/``, ``real_used*/`` and ``real_not_used*/`` folders; test data
has ``generated*/`` and ``real_unknown*/``. A numeric suffix (``generated_1``, ``real_used_2``)
names the dataset a folder belongs to, and a root may instead hold one folder per dataset
(``Dataset1/``, ``Dataset2/``, as in 2024). Real folders without a suffix are shared by every
dataset that has none of its own. :func:`find_datasets` says what it found, and what it could not
use, in :meth:`Dataset.summary`.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ctfp import _core
from ctfp.data.preprocess import _DEFAULT_LIMITS
from ctfp.exceptions import CtfpError

__all__ = ["Dataset", "DatasetError", "find_datasets", "find_unknown_dir", "scan_images"]

_FOLDER = re.compile(
    r"^(?P<kind>generated|real_used|real_not_used|real_unknown)(?:[_-]?(?P<suffix>\d+))?$",
    re.IGNORECASE,
)
_KINDS = ("generated", "real_used", "real_not_used", "real_unknown")


class DatasetError(CtfpError, ValueError):
    """A data folder does not have the layout ctfp expects; the message says what is missing."""


@dataclass
class FolderScan:
    """What one folder holds: readable PNGs, their sizes, and the files that are not."""

    path: Path
    images: list[Path] = field(default_factory=list)
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def verify(self, n_threads: int | None = None) -> None:
        """Decode every image whose header read well (pixels too, in parallel, GIL released);
        move those that fail to ``unreadable`` with the decoder's reason."""
        from concurrent.futures import ThreadPoolExecutor

        from ctfp.data.preprocess import decode_png, default_threads

        def check(p: Path) -> str | None:
            try:
                decode_png(p)
            except (OSError, ValueError) as exc:
                return str(exc)
            return None

        workers = n_threads or default_threads()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(check, self.images))
        bad = {p: why for p, why in zip(self.images, reasons, strict=True) if why is not None}
        for p in bad:  # their headers read well before: take them out of the size counts
            self.images.remove(p)
            with open(p, "rb") as f:
                self.sizes[_core.read_png_size(f.read(64), limits=_DEFAULT_LIMITS)] -= 1
        self.sizes += Counter()  # drops sizes counted down to zero
        self.unreadable = sorted([*self.unreadable, *bad.items()])


def _not_a_file(p: Path) -> str | None:
    """Why the folder entry ``p`` is not a regular file (following symbolic links), or None.

    Checked with ``stat`` before anything opens it: opening a FIFO would block."""
    try:
        st = p.stat()
    except FileNotFoundError:
        return "a broken symbolic link" if p.is_symlink() else "gone while the folder was read"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot be examined: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not an image file (folders inside an image folder are not searched)"
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket or device"
        return f"not a regular file ({kind})"
    return None


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; a folder that cannot be read is a
    :class:`DatasetError` (bad data, not a failed job)."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DatasetError(
            f"{folder}: cannot read the folder: {exc.strerror or exc}; expected a readable "
            f"ImageCLEF data folder"
        ) from None


def scan_images(folder: Path) -> FolderScan:
    """Read the PNG header of every file in ``folder`` (not the pixels): sizes and bad files.

    Every entry but hidden ones (``.name``, e.g. macOS ``._name.png`` resource forks) is
    accounted for: readable PNGs in ``images``; in ``unreadable`` with the reason, PNGs whose
    header does not read, files that are not ``.png``, and entries that are not regular files
    (folders, broken symbolic links, link loops, FIFOs)."""
    scan = FolderScan(folder)
    for p in _entries(folder):
        if p.name.startswith("."):
            continue
        why = _not_a_file(p)
        if why is not None:
            scan.unreadable.append((p, why))
            continue
        if p.suffix.lower() != ".png":
            scan.unreadable.append((p, "not a .png file"))
            continue
        try:
            with open(p, "rb") as f:
                head = f.read(64)
            h, w = _core.read_png_size(head, limits=_DEFAULT_LIMITS)
        except (OSError, ValueError) as exc:
            scan.unreadable.append((p, str(exc)))
            continue
        scan.images.append(p)
        scan.sizes[(h, w)] += 1
    return scan


@dataclass
class Dataset:
    """One generator's data: its generated images and the real images to classify."""

    name: str
    root: Path
    folders: dict[str, FolderScan]

    def _images(self, kind: str) -> list[Path]:
        scan = self.folders.get(kind)
        return list(scan.images) if scan else []

    @property
    def generated(self) -> list[Path]:
        return self._images("generated")

    @property
    def used(self) -> list[Path]:
        return self._images("real_used")

    @property
    def not_used(self) -> list[Path]:
        return self._images("real_not_used")

    @property
    def unknown(self) -> list[Path]:
        return self._images("real_unknown")

    @property
    def number(self) -> int | None:
        """The dataset number its folders carry, or None: the suffix of numbered folders
        (``generated_2/`` gives the name ``root/2``) or the trailing digits of a dataset's own
        folder (``Dataset2/``). Development and test datasets pair by it."""
        m = re.search(r"(\d+)$", self.name.rsplit("/", 1)[-1])
        return int(m.group(1)) if m else None

    @property
    def is_development(self) -> bool:
        return bool(self.used or self.not_used)

    def real(self) -> tuple[list[Path], list[int]]:
        """Development real images with labels: 1 used, 0 not used."""
        return self.used + self.not_used, [1] * len(self.used) + [0] * len(self.not_used)

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "root": str(self.root),
            "folders": {
                kind: {
                    "path": str(scan.path),
                    "images": len(scan.images),
                    "sizes": {f"{h}x{w}": n for (h, w), n in sorted(scan.sizes.items())},
                    "unreadable": [f"{p.name}: {why}" for p, why in scan.unreadable],
                }
                for kind, scan in self.folders.items()
            },
        }

    def describe(self) -> str:
        lines = [f"dataset {self.name} ({self.root})"]
        for kind, scan in self.folders.items():
            sizes = (
                ", ".join(f"{n} at {h}x{w}" for (h, w), n in sorted(scan.sizes.items())) or "none"
            )
            lines.append(f"  {kind:<14} {len(scan.images):>6} images ({sizes})  {scan.path.name}/")
            for p, why in scan.unreadable[:5]:
                lines.append(f"    unreadable: {p.name}: {why}")
            if len(scan.unreadable) > 5:
                lines.append(f"    ... {len(scan.unreadable) - 5} more unreadable files")
        return "\n".join(lines)


def _classify(root: Path) -> dict[str | None, dict[str, Path]]:
    groups: dict[str | None, dict[str, Path]] = {}
    for d in (p for p in _entries(root) if p.is_dir()):
        m = _FOLDER.match(d.name)
        if m:
            kind = m.group("kind").lower()
            groups.setdefault(m.group("suffix"), {})[kind] = d
    return groups


def find_datasets(root: str | os.PathLike[str], *, require: str | None = None) -> list[Dataset]:
    """Find the datasets under ``root``.

    Parameters
    ----------
    root : path
        A dataset folder (``generated/``, ``real_used/``, ...), a folder of such folders
        (``Dataset1/``, ``Dataset2/``), or one with suffixed folders (``generated_1/``, ...).
    require : {"development", "test"}, optional
        Check that each dataset has labelled real images (development) or ``real_unknown``
        images (test), and generated images.
    """
    if require not in (None, "development", "test"):
        raise ValueError(f"require: expected None, 'development' or 'test', found {require!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected an ImageCLEF GANs data folder")
    groups = _classify(root)
    if not groups:
        subs = [d for d in _entries(root) if d.is_dir() and _classify(d)]
        if not subs:
            found = ", ".join(p.name + "/" for p in _entries(root) if p.is_dir()) or "no folders"
            raise DatasetError(
                f"{root}: no ImageCLEF folders; expected generated/ with real_used/ and "
                f"real_not_used/ (development) or real_unknown/ (test), possibly numbered "
                f"(generated_1/) or one folder per dataset; found {found}"
            )
        return [ds for d in subs for ds in find_datasets(d, require=require)]
    shared = groups.pop(None, {})
    numbered = {suffix: kinds for suffix, kinds in groups.items() if suffix is not None}
    if not numbered:
        named = {root.name: shared}
    else:
        named = {}
        for suffix, kinds in sorted(numbered.items(), key=lambda kv: int(kv[0])):
            merged = {**shared, **kinds}
            named[f"{root.name}/{suffix}"] = merged
    datasets = []
    for name, kinds in named.items():
        folders = {k: scan_images(kinds[k]) for k in _KINDS if k in kinds}
        ds = Dataset(name, root, folders)
        _check(ds, require)
        datasets.append(ds)
    return datasets


def _check(ds: Dataset, require: str | None) -> None:
    missing = []
    if "generated" not in ds.folders or not ds.generated:
        missing.append("generated images (generated/)")
    if require == "development" and not (ds.used and ds.not_used):
        missing.append("labelled real images (real_used/ and real_not_used/)")
    if require == "test" and not ds.unknown:
        missing.append("real test images (real_unknown/)")
    if missing:
        # Name the folders that were not recognised: a misspelt real_used/ shows up here.
        other = sorted(
            d.name + "/"
            for d in _entries(ds.root)
            if d.is_dir() and not _FOLDER.match(d.name) and not d.name.startswith(".")
        )
        hint = f"\n  folders not recognised: {', '.join(other)}" if other else ""
        raise DatasetError(
            f"dataset {ds.name} ({ds.root}): missing {' and '.join(missing)}\n{ds.describe()}{hint}"
        )


def find_unknown_dir(path: Path) -> Path:
    """The folder of real test images: ``path/real_unknown*`` when there is one, else ``path``."""
    if not path.is_dir():
        raise DatasetError(f"{path}: not a folder; expected the test data folder")
    cands = [d for d in _entries(path) if d.is_dir() and d.name.lower().startswith("real_unknown")]
    if len(cands) > 1:
        names = ", ".join(d.name for d in cands)
        raise DatasetError(f"{path}: several real_unknown folders ({names}); pass one of them")
    return cands[0] if cands else path
