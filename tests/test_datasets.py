"""Dataset layouts of ImageCLEFmedical GANs 2023, 2024 and 2025 (python/ctfp/datasets.py), built
from tiny synthetic PNGs in ``tmp_path``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ctfp.data.datasets import Dataset, DatasetError, find_datasets, find_unknown_dir, scan_images
from ctfp.data.synthetic import write_pngs
from ctfp.exceptions import CtfpError


def pngs(folder: Path, n: int, *, prefix: str = "img", size: int = 32) -> list[Path]:
    return write_pngs(folder, n, prefix=prefix, size=size)


def dev_layout(root: Path, *, gen: int = 5, used: int = 3, not_used: int = 2, suffix: str = ""):
    pngs(root / f"generated{suffix}", gen, prefix="gen")
    pngs(root / f"real_used{suffix}", used, prefix="used")
    pngs(root / f"real_not_used{suffix}", not_used, prefix="notused")
    return root


def test_layout_2023_development(tmp_path: Path) -> None:
    root = dev_layout(tmp_path / "dev2023", gen=6, used=3, not_used=2)
    (ds,) = find_datasets(root, require="development")
    assert isinstance(ds, Dataset)
    assert ds.name == "dev2023"
    assert ds.root == root
    assert set(ds.folders) == {"generated", "real_used", "real_not_used"}
    assert (len(ds.generated), len(ds.used), len(ds.not_used), len(ds.unknown)) == (6, 3, 2, 0)
    assert ds.is_development
    assert all(p.parent == root / "generated" for p in ds.generated)
    assert ds.folders["generated"].sizes == {(32, 32): 6}


def test_real_labels_used_then_not_used(tmp_path: Path) -> None:
    root = dev_layout(tmp_path / "d", used=3, not_used=2)
    (ds,) = find_datasets(root)
    paths, labels = ds.real()
    assert labels == [1, 1, 1, 0, 0]
    assert paths == ds.used + ds.not_used
    assert [p.parent.name for p in paths] == ["real_used"] * 3 + ["real_not_used"] * 2


def test_layout_2023_test(tmp_path: Path) -> None:
    root = tmp_path / "test2023"
    pngs(root / "generated", 4, prefix="gen")
    pngs(root / "real_unknown", 5, prefix="real_unknown")
    (ds,) = find_datasets(root, require="test")
    assert (len(ds.generated), len(ds.unknown)) == (4, 5)
    assert not ds.is_development
    assert ds.real() == ([], [])
    assert ds.unknown[0].name == "real_unknown_0000.png"
    with pytest.raises(DatasetError, match=r"real_used/ and real_not_used/"):
        find_datasets(root, require="development")


def test_layout_2024_dataset_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "dev2024"
    dev_layout(root / "Dataset1", gen=4, used=2, not_used=3)
    dev_layout(root / "Dataset2", gen=6, used=3, not_used=1)
    (root / "notes").mkdir()  # an unrelated folder beside the datasets is ignored
    ds1, ds2 = find_datasets(root, require="development")
    assert (ds1.name, ds2.name) == ("Dataset1", "Dataset2")
    assert (ds1.root, ds2.root) == (root / "Dataset1", root / "Dataset2")
    assert (len(ds1.generated), len(ds1.used), len(ds1.not_used)) == (4, 2, 3)
    assert (len(ds2.generated), len(ds2.used), len(ds2.not_used)) == (6, 3, 1)
    assert all(p.is_relative_to(root / "Dataset2") for p in ds2.real()[0])


def test_layout_2024_suffixed_folders(tmp_path: Path) -> None:
    root = tmp_path / "dev2024"
    dev_layout(root, gen=4, used=2, not_used=3, suffix="_1")
    dev_layout(root, gen=5, used=1, not_used=2, suffix="_2")
    ds1, ds2 = find_datasets(root, require="development")
    assert (ds1.name, ds2.name) == ("dev2024/1", "dev2024/2")
    assert (len(ds1.generated), len(ds1.used), len(ds1.not_used)) == (4, 2, 3)
    assert (len(ds2.generated), len(ds2.used), len(ds2.not_used)) == (5, 1, 2)
    assert ds1.folders["generated"].path == root / "generated_1"
    assert ds2.folders["real_used"].path == root / "real_used_2"


def test_layout_2024_test_suffixed_generated_share_real_unknown(tmp_path: Path) -> None:
    root = tmp_path / "test2024"
    pngs(root / "generated_1", 3, prefix="gen")
    pngs(root / "generated_2", 4, prefix="gen")
    pngs(root / "real_unknown", 5, prefix="real_unknown")
    ds1, ds2 = find_datasets(root, require="test")
    assert (len(ds1.generated), len(ds2.generated)) == (3, 4)
    assert ds1.unknown == ds2.unknown
    assert len(ds1.unknown) == 5


def test_layout_2025_single_dataset_mixed_sizes(tmp_path: Path) -> None:
    root = tmp_path / "dev2025"
    pngs(root / "generated", 3, prefix="gen", size=32)
    pngs(root / "generated", 2, prefix="big", size=48)
    pngs(root / "real_used", 4, prefix="used")
    pngs(root / "real_not_used", 4, prefix="notused")
    (ds,) = find_datasets(root, require="development")
    assert ds.name == "dev2025"
    assert ds.folders["generated"].sizes == {(32, 32): 3, (48, 48): 2}
    s = ds.summary()
    assert s["folders"]["generated"]["sizes"] == {"32x32": 3, "48x48": 2}
    assert s["folders"]["real_used"]["images"] == 4
    assert "2 at 48x48" in ds.describe()


def test_folder_names_are_case_insensitive(tmp_path: Path) -> None:
    root = tmp_path / "d"
    pngs(root / "Generated", 2)
    pngs(root / "REAL_USED", 1)
    pngs(root / "Real_Not_Used", 1)
    (ds,) = find_datasets(root, require="development")
    assert (len(ds.generated), len(ds.used), len(ds.not_used)) == (2, 1, 1)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A development set whose generated/ holds a text file, a corrupt PNG, a hidden file and a
    sub-folder beside three good PNGs."""
    root = dev_layout(tmp_path / "messy", gen=3)
    gen = root / "generated"
    (gen / "notes.txt").write_text("not an image")
    (gen / "broken.png").write_bytes(b"this is not a png at all")
    (gen / "truncated.png").write_bytes((gen / "gen_0000.png").read_bytes()[:20])
    (gen / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (gen / "sub").mkdir()
    return root


def test_scan_images_counts_sizes_and_unreadable(messy: Path) -> None:
    scan = scan_images(messy / "generated")
    assert [p.name for p in scan.images] == ["gen_0000.png", "gen_0001.png", "gen_0002.png"]
    assert scan.sizes == {(32, 32): 3}
    bad = {p.name: why for p, why in scan.unreadable}
    assert set(bad) == {"broken.png", "notes.txt", "sub", "truncated.png"}  # hidden file skipped
    assert "not a .png" in bad["notes.txt"]
    assert "a folder" in bad["sub"]
    assert "PNG" in bad["broken.png"]
    assert "truncated" in bad["truncated.png"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs symbolic links and FIFOs (POSIX)")
def test_entries_that_are_not_regular_files_are_listed_not_skipped(tmp_path: Path) -> None:
    root = dev_layout(tmp_path / "odd", gen=2)
    gen = root / "generated"
    (gen / "dangling.png").symlink_to(gen / "missing.png")
    (gen / "loop_a.png").symlink_to(gen / "loop_b.png")
    (gen / "loop_b.png").symlink_to(gen / "loop_a.png")
    os.mkfifo(gen / "pipe.png")  # opening it would block: scan_images must not
    (gen / "folder.png").mkdir()
    (gen / "nested").mkdir()
    (gen / "nested" / "gen_9999.png").write_bytes((gen / "gen_0000.png").read_bytes())
    (gen / "link.png").symlink_to(gen / "gen_0001.png")  # a link to an image is an image
    scan = scan_images(gen)
    assert [p.name for p in scan.images] == ["gen_0000.png", "gen_0001.png", "link.png"]
    bad = {p.name: why for p, why in scan.unreadable}
    assert bad == {
        "dangling.png": "a broken symbolic link",
        "folder.png": bad["folder.png"],
        "loop_a.png": "a symbolic link loop",
        "loop_b.png": "a symbolic link loop",
        "nested": bad["nested"],
        "pipe.png": "not a regular file (a FIFO)",
    }
    assert bad["folder.png"].startswith("a folder") and bad["nested"].startswith("a folder")
    text = find_datasets(root, require="development")[0].describe()
    for name in ("dangling.png", "folder.png", "nested"):  # the first five are listed
        assert f"unreadable: {name}: " in text


def test_unreadable_files_in_summary_and_describe(messy: Path) -> None:
    (ds,) = find_datasets(messy, require="development")
    assert len(ds.generated) == 3
    s = ds.summary()
    json.dumps(s)  # plain data
    gen = s["folders"]["generated"]
    assert gen["images"] == 3
    assert gen["path"] == str(messy / "generated")
    assert [u.split(":")[0] for u in gen["unreadable"]] == [
        "broken.png",
        "notes.txt",
        "sub",
        "truncated.png",
    ]
    assert s["folders"]["real_used"]["unreadable"] == []
    text = ds.describe()
    assert text.splitlines()[0] == f"dataset messy ({messy})"
    assert "unreadable: notes.txt" in text
    assert "unreadable: broken.png" in text
    assert "generated/" in text and "real_not_used/" in text


def test_describe_caps_the_unreadable_listing(tmp_path: Path) -> None:
    root = dev_layout(tmp_path / "d")
    for k in range(8):
        (root / "real_used" / f"junk{k}.txt").write_text("x")
    (ds,) = find_datasets(root)
    text = ds.describe()
    assert text.count("unreadable: junk") == 5
    assert "... 3 more unreadable files" in text
    assert len(ds.summary()["folders"]["real_used"]["unreadable"]) == 8


# --------------------------------------------------------------------------------------------------
# errors that say what is missing


def test_error_no_generated(tmp_path: Path) -> None:
    root = tmp_path / "d"
    pngs(root / "real_used", 2)
    pngs(root / "real_not_used", 2)
    with pytest.raises(DatasetError, match=r"missing generated images \(generated/\)") as exc:
        find_datasets(root)
    assert "real_used" in str(exc.value)  # the description of what was found comes along


def test_error_empty_generated_folder(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "generated").mkdir(parents=True)
    pngs(root / "real_unknown", 2)
    with pytest.raises(DatasetError, match="missing generated images"):
        find_datasets(root, require="test")


def test_error_development_without_labels(tmp_path: Path) -> None:
    root = tmp_path / "d"
    pngs(root / "generated", 2)
    pngs(root / "real_used", 2)  # real_not_used/ missing
    with pytest.raises(DatasetError, match=r"labelled real images \(real_used/ and real_not_used/"):
        find_datasets(root, require="development")
    (ds,) = find_datasets(root)  # fine without the requirement
    assert ds.is_development


def test_error_test_without_real_unknown(tmp_path: Path) -> None:
    root = dev_layout(tmp_path / "d")
    with pytest.raises(DatasetError, match=r"real test images \(real_unknown/\)"):
        find_datasets(root, require="test")


def test_error_names_both_missing_parts_and_unrecognised_folders(tmp_path: Path) -> None:
    root = tmp_path / "d"
    pngs(root / "real_used", 2)
    pngs(root / "real_notused", 2)  # misspelt
    with pytest.raises(DatasetError) as exc:
        find_datasets(root, require="development")
    msg = str(exc.value)
    assert "generated images" in msg and "labelled real images" in msg
    assert "folders not recognised: real_notused/" in msg


def test_error_not_a_folder(tmp_path: Path) -> None:
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    for p in (f, tmp_path / "does_not_exist"):
        with pytest.raises(DatasetError, match="not a folder"):
            find_datasets(p)


def test_error_empty_root(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DatasetError, match="no ImageCLEF folders.*found no folders"):
        find_datasets(root)


def test_error_root_lists_the_folders_found(tmp_path: Path) -> None:
    root = tmp_path / "wrong"
    pngs(root / "images", 2)
    pngs(root / "train", 2)
    with pytest.raises(DatasetError) as exc:
        find_datasets(root)
    msg = str(exc.value)
    assert "found images/, train/" in msg
    assert "generated/" in msg and "real_unknown/" in msg  # what was expected


def test_dataset_error_is_a_ctfp_value_error(tmp_path: Path) -> None:
    assert issubclass(DatasetError, CtfpError) and issubclass(DatasetError, ValueError)


def test_bad_require(tmp_path: Path) -> None:
    root = dev_layout(tmp_path / "d")
    with pytest.raises(ValueError, match="require"):
        find_datasets(root, require="train")


# --------------------------------------------------------------------------------------------------
# find_unknown_dir


def test_find_unknown_dir(tmp_path: Path) -> None:
    root = tmp_path / "test"
    pngs(root / "generated", 1)
    pngs(root / "real_unknown", 2)
    assert find_unknown_dir(root) == root / "real_unknown"
    assert find_unknown_dir(root / "real_unknown") == root / "real_unknown"
    plain = tmp_path / "plain"
    pngs(plain, 2)
    assert find_unknown_dir(plain) == plain


def test_find_unknown_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        find_unknown_dir(tmp_path / "nope")
    pngs(tmp_path / "real_unknown_1", 1)
    pngs(tmp_path / "real_unknown_2", 1)
    with pytest.raises(DatasetError, match="several real_unknown folders"):
        find_unknown_dir(tmp_path)
