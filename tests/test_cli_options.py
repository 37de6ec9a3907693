"""Every option reaches every method it names, or is refused in one line; help texts say what the
code does; internal errors keep their traceback behind ``--debug`` / ``CTFP_DEBUG=1``."""

from __future__ import annotations

import importlib.abc
import sys

import pytest

from ctfp.imageclef.cli import build_parser, main


def test_run_refuses_device_for_the_baselines(tmp_path, capsys):
    args = ["run", "--method", "base-ganleaks", "--data", str(tmp_path), "--out", str(tmp_path)]
    assert main([*args, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "ctfp run: --device: not used by --method base-ganleaks (it runs on the CPU); leave it out"
    )
    # the training-only options are refused for every similarity method and baseline
    assert main([*args, "--torch-threads", "2"]) == 2
    assert "--torch-threads: not used by --method base-ganleaks" in capsys.readouterr().err


def test_demo_hands_device_threads_and_torch_threads_to_every_method_taking_them(
    tmp_path, monkeypatch
):
    from ctfp.imageclef import demo, experiments

    seen: dict[str, dict] = {}

    def fake(key, data, out, **kw):
        seen[key] = {k: kw[k] for k in ("device", "threads", "torch_threads") if k in kw}
        assert out == tmp_path / key  # each method in its own folder, named by its key
        return {"datasets": []}

    monkeypatch.setattr(experiments, "run_similarity", fake)
    machine = {"device": "cuda:1", "threads": 3, "torch_threads": 2}
    runs = demo._similarity_runs(tmp_path, tmp_path, {}, machine, verbose=0)
    assert set(runs) == set(experiments.SIMILARITY_PRESETS)
    assert seen["sim-pixel"] == machine and seen["sim-ssim"] == machine
    assert seen["sim-fused"] == {"device": "cuda:1", "threads": 3}  # no torch of its own
    assert seen["base-ganleaks"] == seen["base-vcmi"] == {"threads": 3}  # CPU only, no torch


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_upscale_without_torch_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import ctfp

    for name in [
        m for m in sys.modules if m == "torch" or m.startswith(("torch.", "ctfp.superres"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    # The import below binds a new, half-imported ctfp.superres as the package's attribute; put
    # the original back afterwards too, or later tests would patch one module object while the
    # code imports the other (monkeypatch restores sys.modules, not package attributes)
    monkeypatch.delattr(ctfp, "superres", raising=False)
    # import torch -> ModuleNotFoundError, as on a machine without it (a finder, not
    # sys.modules["torch"] = None, which libraries that look torch up there would trip on)
    monkeypatch.setattr(sys, "meta_path", [_NoTorch(), *sys.meta_path])
    assert main(["upscale", str(tmp_path), str(tmp_path / "x")]) == 3
    err = capsys.readouterr().err
    assert err.strip() == (
        "ctfp upscale: ESRGAN needs torch, which is not installed here (pip install torch)"
    )


def test_debug_keeps_the_traceback(tmp_path, capsys, monkeypatch):
    args = ["run", "--method", "1", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("ctfp run: ")
    monkeypatch.setenv("CTFP_DEBUG", "1")
    assert main(args) == 2
    assert "Traceback" in capsys.readouterr().err


def test_help_texts_match_the_code(capsys):
    pytest.importorskip("torch")
    from ctfp.superres.upscaler import _BATCH_SIZE_CUDA, _BATCH_SIZE_OTHER

    for sub in (["run"], ["upscale"], ["demo"], []):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*sub, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        f"(default {_BATCH_SIZE_CUDA} on CUDA" in text
        and f"; {_BATCH_SIZE_OTHER} elsewhere" in text
    )
    assert "a similarity method (sim-*) or a baseline (base-*)" in text
    assert "sim-count" not in text
    assert "-1 for all cores, -2 all but one (default: all cores)" in text
    assert "130 interrupted" in (sys.modules["ctfp.imageclef.cli"].__doc__ or "")
    assert "--debug" in text and "CTFP_DEBUG=1" in text
