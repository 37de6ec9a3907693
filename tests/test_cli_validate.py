"""``python -m ctfp validate RUNFILE --test-dir DIR``: exit 0 valid, 1 invalid (every problem with
its line number), 2 bad usage or a test folder that cannot be used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

IDS = [f"real_unknown_{k:04d}" for k in range(4)]


def validate(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctfp", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_valid_file_exits_0(test_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.txt"
    # CRLF line endings and one space after a comma are tolerated
    run.write_bytes(b"real_unknown_0000,1\r\nreal_unknown_0001, 0\r\n")
    run.write_bytes(run.read_bytes() + b"real_unknown_0002,1\r\nreal_unknown_0003,0\r\n")
    r = validate(run, "--test-dir", test_root, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f"{run}: valid"
    # the real_unknown/ folder itself works as the test folder too
    r = validate(run, "--test-dir", test_root / "real_unknown", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_invalid_file_exits_1_with_line_numbers(test_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.txt"
    run.write_text(
        "\n".join(
            [
                "real_unknown_0000,1",  # 1 ok
                "",  # 2 empty line
                "real_unknown_0001,2",  # 3 above 1
                "real_unknown_0002;1",  # 4 wrong format
                "real_unknown_0000,0",  # 5 duplicate
                "someone_else,1",  # 6 unknown id
                "real_unknown_0001,-1",  # 7 duplicate and below 0
                "real_unknown_0001,yes",  # 8 duplicate and non-integer
            ]
        )
        + "\n"
    )
    r = validate(run, "--test-dir", test_root, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    for line, kind in [
        (2, "empty line"),
        (3, "above 1"),
        (4, "format"),
        (5, "duplicate id"),
        (6, "unknown id"),
        (7, "duplicate id"),
        (7, "below 0"),
        (8, "duplicate id"),
        (8, "non-integer"),
    ]:
        assert f"{run}:{line}: {kind}:" in out, (line, kind, out)
    assert f"{run}:1:" not in out
    missing = [x for x in out.splitlines() if x.startswith(f"{run}: missing ids: ")]
    assert len(missing) == 1 and missing[0].endswith("real_unknown_0002, real_unknown_0003")
    assert out.rstrip().endswith(f"{run}: INVALID (10 problems)")


def test_keep_extension(test_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.txt"
    run.write_text("".join(f"{i}.png,{k % 2}\n" for k, i in enumerate(IDS)))
    assert validate(run, "--test-dir", test_root, "--keep-extension", cwd=tmp_path).returncode == 0
    r = validate(run, "--test-dir", test_root, cwd=tmp_path)
    assert r.returncode == 1
    assert f"{run}:1: unknown id:" in r.stdout


def test_bad_usage_and_bad_folders_exit_2(test_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.txt"
    run.write_text("".join(f"{i},1\n" for i in IDS))
    # no such run file
    r = validate(tmp_path / "nope.txt", "--test-dir", test_root, cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr
    # --test-dir missing: argparse's usage error
    r = validate(run, cwd=tmp_path)
    assert r.returncode == 2 and "--test-dir" in r.stderr
    # test folder missing
    r = validate(run, "--test-dir", tmp_path / "missing", cwd=tmp_path)
    assert r.returncode == 2 and "not a folder" in r.stderr
    # test folder without test images: nothing was checked, so not "invalid"
    (tmp_path / "empty").mkdir()
    r = validate(run, "--test-dir", tmp_path / "empty", cwd=tmp_path)
    assert r.returncode == 2 and "no PNG files" in r.stderr
    assert r.stdout == ""
