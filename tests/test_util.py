"""The shared rules in ctfp._util: devices, parameter tables, n_jobs, seeds, atomic writes."""

from __future__ import annotations

import contextlib
import os
import stat

import numpy as np
import pytest

from ctfp._util import (
    DEFAULT_SEED,
    IMAGE_SIZE,
    N_JOBS,
    Interval,
    Options,
    atomic_write,
    check_binary_labels,
    check_device,
    check_random_state,
    n_jobs_to_threads,
    require_fitted,
    resolve_device,
    seed_from,
    state_dict_mismatch,
    stratified_folds,
    validate_params,
    write_png_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------------------------------- devices


@pytest.mark.parametrize(
    ("bad", "error"),
    [("gpu", ValueError), ("cuda:x", ValueError), ("CPU", ValueError), ("", ValueError),
     (0, TypeError), (None, TypeError)],
)  # fmt: skip
def test_check_device_refuses_with_the_accepted_forms(bad, error):
    """A device name that is not one: ValueError; not a name at all: TypeError."""
    with pytest.raises(error, match=r"device: expected one of 'auto', 'cpu', 'cuda'"):
        check_device(bad)


def test_resolve_device_cpu_and_auto():
    torch = pytest.importorskip("torch")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_resolve_device_cuda_that_is_not_there():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"has {n} CUDA device"):
            resolve_device(f"cuda:{n}")
    else:
        with pytest.raises(ValueError, match="CUDA is not available here"):
            resolve_device("cuda:0")


# ------------------------------------------------------------------------------------- parameters

TABLE = {
    "k": [Interval(int, 1, None)],
    "frac": [Interval(float, 0.0, 1.0, closed="right")],
    "mode": [Options("a", "b"), None],
    "n_jobs": N_JOBS,
}


def test_validate_params_accepts_valid_values():
    validate_params({"k": 3, "frac": 1, "mode": None, "n_jobs": -1, "other": object()}, TABLE, "E")
    validate_params({"k": np.int64(2), "frac": 0.5, "mode": "b", "n_jobs": None}, TABLE, "E")


@pytest.mark.parametrize(
    ("name", "value", "error", "expected"),
    [
        ("k", 0, ValueError, "E: k: expected an integer >= 1, found 0"),
        ("k", True, TypeError, "E: k: expected an integer >= 1, found True"),
        ("k", 2.0, TypeError, "E: k: expected an integer >= 1, found 2.0"),
        ("frac", 0.0, ValueError, "E: frac: expected a number in (0, 1], found 0.0"),
        ("frac", float("nan"), ValueError, "E: frac: expected a number in (0, 1], found nan"),
        ("frac", "0.5", TypeError, "E: frac: expected a number in (0, 1], found '0.5'"),
        ("mode", "c", ValueError, "E: mode: expected one of 'a', 'b' or None, found 'c'"),
        ("mode", 3, TypeError, "E: mode: expected one of 'a', 'b' or None, found 3"),
        (
            "n_jobs",
            0,
            ValueError,
            "E: n_jobs: expected None or an integer >= 1 or an integer <= -1, found 0",
        ),
    ],
)
def test_validate_params_names_owner_parameter_forms_and_value(name, value, error, expected):
    """One message; one exception per kind of mistake: a value of a type no constraint takes
    is a TypeError (and not a ValueError), a value of the right type out of range a ValueError
    (and not a TypeError)."""
    with pytest.raises(error) as info:
        validate_params({name: value}, TABLE, "E")
    assert str(info.value) == expected
    other = TypeError if error is ValueError else ValueError
    assert not isinstance(info.value, other)


def test_n_jobs_minus_one_is_every_core():
    from ctfp import default_threads

    assert n_jobs_to_threads(None) is None
    assert n_jobs_to_threads(3) == 3
    assert n_jobs_to_threads(-1) == default_threads()
    assert n_jobs_to_threads(-(default_threads() + 5)) == 1
    with pytest.raises(ValueError, match="n_jobs"):
        n_jobs_to_threads(0)


def test_seed_from_every_random_state_form():
    assert seed_from(7) == 7
    a = seed_from(np.random.RandomState(3))
    b = seed_from(np.random.RandomState(3))
    assert a == b and a >= 0
    assert seed_from(None) == DEFAULT_SEED == 0  # ctfp's one policy: None repeats
    with pytest.raises(TypeError, match="random_state"):
        seed_from("seven")
    with pytest.raises(ValueError, match="random_state"):
        seed_from(-1)


def test_check_random_state_policy():
    a = check_random_state(None).randint(0, 10**9, size=4)
    b = np.random.RandomState(DEFAULT_SEED).randint(0, 10**9, size=4)
    assert (a == b).all()
    assert (
        check_random_state(5).randint(0, 10**9, 3) == np.random.RandomState(5).randint(0, 10**9, 3)
    ).all()
    rs = np.random.RandomState(1)
    assert check_random_state(rs) is rs


# -------------------------------------------------------------------------- labels, images, folds


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        ([0, 1, 2, 1], "y: expected labels 0 (not used) and 1 (used), found 2 at position 2"),
        (
            [0.7, 1, 0, 3, 4, 5],
            "y: expected labels 0 (not used) and 1 (used), found 0.7 at position 0, 3.0 at "
            "position 3, 4.0 at position 4 (+1 more)",
        ),
        (["0", "1"], "y: expected labels 0 (not used) and 1 (used), found '0' at position 0, "
         "'1' at position 1"),
    ],
)  # fmt: skip
def test_check_binary_labels_names_the_argument_and_the_first_offending_values(y, expected):
    with pytest.raises(ValueError) as info:
        check_binary_labels(y, "y")
    assert str(info.value) == expected


def test_check_binary_labels_shape_and_dtype():
    out = check_binary_labels(np.array([True, False, True]), "labels", 3)
    assert out.dtype == np.int64 and out.tolist() == [1, 0, 1]
    assert check_binary_labels([0.0, 1.0], "y").tolist() == [0, 1]
    with pytest.raises(
        ValueError, match=r"y_true: expected 3 labels \(one per image\), found shape \(2,\)"
    ):
        check_binary_labels([0, 1], "y_true", 3)
    with pytest.raises(
        ValueError, match=r"y: expected a 1-D array of labels, found shape \(1, 2\)"
    ):
        check_binary_labels([[0, 1]], "y")


@pytest.mark.parametrize("ok", [8, 64, 8192, (8, 16), [256, 256], np.int64(32)])
def test_image_size_accepts_ints_and_pairs_in_range(ok):
    validate_params({"image_size": ok}, {"image_size": IMAGE_SIZE}, "E")


@pytest.mark.parametrize(
    ("bad", "error"),
    [(7, ValueError), (0, ValueError), (8193, ValueError), ((8, 4), ValueError),
     ((8, 8, 8), ValueError), ("64", TypeError), (64.0, TypeError), (True, TypeError)],
)  # fmt: skip
def test_image_size_refuses_with_one_range(bad, error):
    with pytest.raises(
        error,
        match=r"E: image_size: expected an int or a \(height, width\) pair of ints in \[8, 8192\]",
    ):
        validate_params({"image_size": bad}, {"image_size": IMAGE_SIZE}, "E")


def test_require_fitted_raises_ctfps_and_sklearns_not_fitted_error():
    from sklearn.exceptions import NotFittedError as SkNotFitted

    from ctfp.exceptions import NotFittedError

    class Est:
        pass

    est = Est()
    with pytest.raises(NotFittedError, match="This Est instance is not fitted yet") as info:
        require_fitted(est, "model_")
    assert isinstance(info.value, SkNotFitted)
    est.model_ = 1
    require_fitted(est, "model_")


@pytest.mark.parametrize("groups", [None, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]])
def test_stratified_folds_cover_each_item_once_and_keep_groups_whole(groups):
    y = np.array([0, 1] * 6)
    folds = stratified_folds(y, 3, random_state=0, groups=groups)
    assert len(folds) == 3
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests.tolist()) == list(range(12))
    for train, test in folds:
        assert set(train.tolist()).isdisjoint(test.tolist())
        assert set(y[test]) == {0, 1}
        if groups is not None:
            g = np.asarray(groups)
            assert set(g[train]).isdisjoint(g[test])
    assert [t.tolist() for _, t in folds] == [
        t.tolist() for _, t in stratified_folds(y, 3, random_state=0, groups=groups)
    ]
    # random_state=None is ctfp's default seed, not fresh entropy
    assert [t.tolist() for _, t in stratified_folds(y, 3, None, groups=groups)] == [
        t.tolist() for _, t in stratified_folds(y, 3, DEFAULT_SEED, groups=groups)
    ]


# ------------------------------------------------------------------------------------------ files


def test_write_png_atomic_from_bytes_or_a_writer(tmp_path, umask_022):
    from PIL import Image

    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    p = tmp_path / "a.png"
    write_png_atomic(p, lambda f: img.save(f, format="PNG"))
    assert (np.asarray(Image.open(p)) == np.asarray(img)).all()
    assert _mode(p) == 0o644
    q = tmp_path / "b.png"
    write_png_atomic(q, p.read_bytes())
    assert q.read_bytes() == p.read_bytes()
    # not PNG data: refused, the old file left as it was, no temporary left behind
    with pytest.raises(ValueError, match=r"b.png: expected PNG data"):
        write_png_atomic(q, b"GIF89a....")
    assert q.read_bytes() == p.read_bytes()
    with pytest.raises(ValueError, match="expected PNG data"):
        write_png_atomic(q, lambda f: img.save(f, format="BMP"))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_atomic_write_gives_umask_permissions(tmp_path, umask_022):
    p = tmp_path / "a.txt"
    write_text_atomic(p, "x\n")
    assert p.read_text() == "x\n"
    assert _mode(p) == 0o644  # readable by group and others, as any new file under umask 022


def test_atomic_write_leaves_the_old_file_on_error(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(p) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["a.bin"]  # no temporary left behind


def test_run_file_and_synthetic_pngs_are_group_readable(tmp_path, umask_022):
    from ctfp.data.synthetic import write_pngs
    from ctfp.imageclef.runfile import write_run_file

    pngs = write_pngs(tmp_path / "imgs", 2, size=32)
    run = write_run_file(tmp_path / "run.txt", ["a", "b"], [0, 1])
    for p in [*pngs, run]:
        assert _mode(p) == 0o644, p


# ---------------------------------------------------------------------------------------- weights


class _T:
    def __init__(self, *shape):
        self.shape = shape


def test_state_dict_mismatch_report():
    expected = {"a": _T(2), "b": _T(3, 3), "c": _T(1)}
    assert state_dict_mismatch(expected, {"a": _T(2), "b": _T(3, 3), "c": _T(1)}) is None
    msg = state_dict_mismatch(expected, {"a": _T(2), "b": _T(4, 3), "z": _T(1)})
    assert msg == (
        "1 missing keys: 'c'; 1 unexpected keys: 'z'; 1 shape mismatches: b: file (4, 3), "
        "model (3, 3)"
    )


# ---------------------------------------------------------------------------------- torch threads


def test_torch_threads_sets_and_restores():
    torch = pytest.importorskip("torch")
    from ctfp._util import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_torch_threads_warns_once_when_torch_oversubscribes(monkeypatch):
    torch = pytest.importorskip("torch")
    import ctfp._util as util

    monkeypatch.setattr(util, "_THREADS_WARNED", False)
    monkeypatch.setattr(util, "free_cores", lambda: 1)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with pytest.warns(RuntimeWarning, match="torch uses 4 threads but only 1 cores are free"):
            with util.torch_threads(None, "cpu"):
                pass
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with util.torch_threads(None, "cpu"):  # once per process
                pass
            monkeypatch.setattr(util, "_THREADS_WARNED", False)
            with util.torch_threads(None, "cuda"):  # training on a GPU: no warning
                pass
    finally:
        torch.set_num_threads(before)


def test_classifier_torch_threads_is_a_checked_parameter():
    pytest.importorskip("torch")
    import ctfp

    clf = ctfp.FingerprintClassifier(torch_threads=0)
    with pytest.raises(ValueError, match="torch_threads: expected None or an integer >= 1"):
        clf.fit(np.zeros((2, 16, 16), np.uint8), [0, 1])
    assert ctfp.FingerprintClassifier(torch_threads=2).get_params()["torch_threads"] == 2


def test_classifier_fit_uses_torch_threads_then_restores():
    torch = pytest.importorskip("torch")
    import ctfp

    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        clf = ctfp.FingerprintClassifier(
            weights=None, image_size=16, max_epochs=1, batch_size=4, torch_threads=1,
            random_state=0, callbacks=[lambda est, **logs: seen.append(torch.get_num_threads())],
        )  # fmt: skip
        X = np.stack([np.full((16, 16), v, np.uint8) for v in (10, 20, 200, 210)])
        clf.fit(X, [0, 0, 1, 1])
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", ["bogus", "cuda:x", "gpu"])
def test_the_same_device_error_from_every_entry_point(bad, tmp_path, capsys):
    """One rule, one message: resolve_device, both estimators, the index, the CLI."""
    pytest.importorskip("torch")
    import ctfp
    from ctfp.imageclef.cli import main
    from ctfp.membership.index import GeneratedIndex

    with pytest.raises(ValueError) as ref:
        resolve_device(bad)
    want = str(ref.value)
    X = np.zeros((2, 16, 16), np.uint8)
    calls = [
        lambda: ctfp.FingerprintClassifier(device=bad).fit(X, [0, 1]),
        lambda: ctfp.SimilarityMembership(device=bad).fit(X, [0, 1], generated=X),
        lambda: GeneratedIndex(device=bad).fit(X),
    ]
    for call in calls:
        with pytest.raises(ValueError) as got:
            call()
        assert str(got.value) == want
    args = ["run", "--method", "sim-pixel", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--device", bad]) == 2
    assert capsys.readouterr().err.strip() == f"ctfp run: {want}"


def test_similarity_embedding_uses_torch_threads_then_restores(monkeypatch):
    torch = pytest.importorskip("torch")
    import ctfp
    import ctfp.membership.index as index_module

    inside = []
    real = index_module.torch_threads

    @contextlib.contextmanager
    def spy(n, device="cpu"):
        with real(n, device):
            inside.append(torch.get_num_threads())  # while the backbone embeds
            yield

    monkeypatch.setattr(index_module, "torch_threads", spy)
    X = np.stack([np.full((32, 32), v, np.uint8) for v in (10, 20, 200, 210)])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        est = ctfp.SimilarityMembership(
            measure="embedding", backbone="mobilenet_v2", weights=None, image_size=32,
            device="cpu", torch_threads=1, rule="top", statistic="max", calibration=None,
        )  # fmt: skip
        assert est.get_params()["torch_threads"] == 1
        est.fit(generated=X)
        est.score_samples(X)
        assert inside and set(inside) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="torch_threads: expected None or an integer >= 1"):
        ctfp.SimilarityMembership(torch_threads=0).fit(generated=X)
