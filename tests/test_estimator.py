"""FingerprintClassifier: the scikit-learn contract on image input, training, persistence and the
errors a user can act on. Tiny settings throughout (random init, 32x32 input, 1-2 epochs)."""

from __future__ import annotations

import copy
import os
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import sklearn  # noqa: E402
from sklearn.exceptions import NotFittedError as SkNotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.utils import estimator_checks as ec  # noqa: E402

import ctfp  # noqa: E402
from ctfp import FingerprintClassifier  # noqa: E402
from ctfp.data.synthetic import make_slices, write_pngs  # noqa: E402
from ctfp.exceptions import ImageContractError, NotFittedError, WeightsError  # noqa: E402

TINY = dict(weights=None, image_size=32, max_epochs=1, batch_size=8, random_state=0, n_jobs=2)
N, SIZE = 12, 40

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_slices(N, size=SIZE, n_patients=3)


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.array(["real", "generated"] * (N // 2))


@pytest.fixture(scope="module")
def paths(images, tmp_path_factory) -> list:
    return write_pngs(tmp_path_factory.mktemp("pngs"), N, size=SIZE, n_patients=3)


def calibrate_bn(clf: FingerprintClassifier, X: np.ndarray) -> None:
    """Give a barely trained model realistic BatchNorm statistics (one pass over X), so that its
    outputs vary between images; one epoch of training leaves them near their initial values,
    where a random MobileNetV2 maps every image to nearly the same logit."""
    xb = ctfp.load_batch(list(X), size=clf.image_size_, dtype="float32", normalize=clf.normalize_)
    clf.model_.train()
    for m in clf.model_.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass sets the batch statistics
    with torch.no_grad():
        clf.model_(torch.from_numpy(xb))
    clf.model_.eval()


@pytest.fixture(scope="module")
def fitted(images, labels) -> FingerprintClassifier:
    clf = FingerprintClassifier(**TINY).fit(images, labels)
    calibrate_bn(clf, images)
    return clf


# --------------------------------------------------------------------------------------------------
# scikit-learn's own checks that apply to an estimator of images


API_CHECKS = [
    ec.check_no_attributes_set_in_init,
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_parameters_default_constructible,
    ec.check_estimator_cloneable,
    ec.check_estimator_repr,
    ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_mixin_order,
    ec.check_valid_tag_types,
    ec.check_estimator_tags_renamed,
    ec.check_estimators_unfitted,
]


@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(check) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.SkipTestWarning)
        check("FingerprintClassifier", FingerprintClassifier(**TINY))


def test_defaults_follow_the_paper() -> None:
    p = FingerprintClassifier().get_params()
    assert p["backbone"] == "mobilenet_v2" and p["weights"] == "imagenet"
    assert p["lr"] == 1e-4 and p["max_epochs"] == 50 and p["image_size"] == 224
    assert p["augment"] == "paper" and 0 < p["dropout"] < 1
    tags = FingerprintClassifier().__sklearn_tags__()
    assert tags.estimator_type == "classifier" and not tags.input_tags.two_d_array


def test_fit_returns_self_and_leaves_params_alone(images, labels) -> None:
    from joblib import hash as jhash

    clf = FingerprintClassifier(**TINY, augment=ctfp.Augment(hflip=1.0))
    before = {k: jhash(v) for k, v in clf.get_params().items()}
    assert clf.fit(images, labels) is clf
    assert {k: jhash(v) for k, v in clf.get_params().items()} == before
    ec.check_is_fitted(clf)


def test_string_labels_probabilities_and_decision(fitted, images) -> None:
    assert fitted.classes_.tolist() == ["generated", "real"]
    proba = fitted.predict_proba(images)
    assert proba.shape == (N, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert proba.std(axis=0).min() > 1e-3  # a model whose outputs depend on the image
    d = fitted.decision_function(images)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-d)), rtol=1e-6)
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(images)), proba, rtol=1e-6)
    pred = fitted.predict(images)
    assert set(pred) <= {"generated", "real"}
    assert (pred == np.where(proba[:, 1] >= 0.5, "real", "generated")).all()
    assert fitted.score(images, np.where(d >= 0, "real", "generated")) == 1.0
    # the threshold is explicit
    fitted.set_params(threshold=1.0)
    try:
        assert (fitted.predict(images) == "generated").all()
    finally:
        fitted.set_params(threshold=0.5)


def test_prediction_does_not_depend_on_batching_or_order(fitted, images) -> None:
    d = fitted.decision_function(images)
    perm = np.random.default_rng(0).permutation(N)
    np.testing.assert_allclose(fitted.decision_function(images[perm]), d[perm], atol=1e-5)
    np.testing.assert_allclose(fitted.decision_function(images[3:5]), d[3:5], atol=1e-5)
    assert fitted.predict_proba(images[:0]).shape == (0, 2)


@pytest.mark.parametrize("y", [[0, 1], [False, True], [-1, 1], [0.0, 1.0]], ids=str)
def test_any_two_labels(images, y) -> None:
    labels = np.array(y * (N // 2))
    clf = FingerprintClassifier(**TINY).fit(images, labels.tolist())
    assert clf.classes_.tolist() == sorted(set(y))
    assert clf.classes_.dtype == labels.dtype
    assert set(clf.predict(images).tolist()) <= set(y)


def test_paths_and_arrays_give_the_same_model(images, labels, paths) -> None:
    a = FingerprintClassifier(**TINY).fit(images, labels)
    b = FingerprintClassifier(**TINY).fit(paths, labels)
    b2 = FingerprintClassifier(**TINY).fit([str(p) for p in paths], labels)
    for key, value in a.model_.state_dict().items():
        assert torch.equal(value, b.model_.state_dict()[key]), key
        assert torch.equal(value, b2.model_.state_dict()[key]), key
    calibrate_bn(a, images)
    np.testing.assert_allclose(a.predict_proba(paths), a.predict_proba(images), atol=1e-6)
    np.testing.assert_allclose(a.predict_proba(np.array(paths, dtype=str)), a.predict_proba(images))
    assert (a.image_shape_, a.image_channels_) == ((SIZE, SIZE), 1)
    assert (b.image_shape_, b.image_channels_) == ((SIZE, SIZE), 1)


def test_rgb_arrays(images, labels) -> None:
    rgb = np.repeat(images[..., None], 3, axis=3)
    clf = FingerprintClassifier(**TINY).fit(rgb, labels)
    assert clf.image_channels_ == 3
    grey = FingerprintClassifier(**TINY).fit(images, labels)
    # grey copied into R, G and B is the same grey after the PNG luma rule
    for key, value in grey.model_.state_dict().items():
        assert torch.equal(value, clf.model_.state_dict()[key]), key


def test_sample_augment(images, labels) -> None:
    flip = ctfp.Augment(hflip=1.0, max_angle_deg=0.0, zoom=(1.0, 1.0), shift_frac=0.0)
    configs = [flip if k % 2 else None for k in range(N)]
    a = FingerprintClassifier(**TINY).fit(images, labels, sample_augment=configs)
    b = FingerprintClassifier(**TINY).fit(images, labels, sample_augment=configs)
    assert _same_weights(a, b)
    c = FingerprintClassifier(**dict(TINY, augment=None)).fit(images, labels)
    assert not _same_weights(a, c)
    # a per-sample fit parameter: model selection splits it with X
    scores = cross_val_score(
        FingerprintClassifier(**TINY), images, labels, cv=2, params={"sample_augment": configs}
    )
    assert scores.shape == (2,)
    with pytest.raises(ValueError, match="sample_augment: expected 12 configs"):
        FingerprintClassifier(**TINY).fit(images, labels, sample_augment=configs[:3])
    with pytest.raises(TypeError, match=r"sample_augment\[1\]: expected a ctfp.Augment"):
        FingerprintClassifier(**TINY).fit(images, labels, sample_augment=[None, "flip"] * 6)
    # the pre-release name of sample_augment is gone (0.1.0 was never released)
    with pytest.raises(TypeError, match="augment"):
        FingerprintClassifier(**TINY).fit(images, labels, augment=configs)


def test_fit_leaves_torch_thread_count_alone(images, labels) -> None:
    before = torch.get_num_threads()
    FingerprintClassifier(**dict(TINY, n_jobs=-1)).fit(images, labels)
    assert torch.get_num_threads() == before


def test_registry_and_models_package_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ctfp.models, ctfp.models.registry as r\n"
        "assert r.get_spec('mobilenet_v2').input_size == (224, 224)\n"
        "assert r.get_spec('efficientnet_lite0').offline\n"
        "assert ctfp.models.available_backbones() == r.available_backbones()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------------------------------
# model selection, pickling, determinism


def test_grid_search_over_two_values(images, labels) -> None:
    search = GridSearchCV(
        FingerprintClassifier(**TINY), {"dropout": [0.0, 0.5]}, cv=2, error_score="raise"
    )
    search.fit(images, labels)
    assert search.best_params_["dropout"] in (0.0, 0.5)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.predict(images).shape == (N,)


def test_cross_val_score_on_paths(paths, labels) -> None:
    scores = cross_val_score(FingerprintClassifier(**TINY), paths, labels, cv=2)
    assert scores.shape == (2,) and np.all((0 <= scores) & (scores <= 1))


def test_pickle_and_deepcopy_round_trip(fitted, images) -> None:
    proba = fitted.predict_proba(images)
    for other in (pickle.loads(pickle.dumps(fitted)), copy.deepcopy(fitted)):
        assert other.device_ == "cpu"
        np.testing.assert_array_equal(other.predict_proba(images), proba)
        assert other.classes_.tolist() == fitted.classes_.tolist()
        assert other.history_ == fitted.history_
    # unpickling leaves the caller's torch random stream alone
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    pickle.loads(pickle.dumps(fitted))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks loading where CUDA is missing")
def test_gpu_trained_model_loads_on_cpu_with_a_warning(fitted, images, tmp_path) -> None:
    gpu = copy.deepcopy(fitted)
    gpu.device_ = "cuda:0"  # as if trained on a GPU: its state is stored on the CPU anyway
    blob = pickle.dumps(gpu)
    with pytest.warns(RuntimeWarning, match="trained on 'cuda:0'.*runs on the CPU"):
        back = pickle.loads(blob)
    assert back.device_ == "cpu"
    np.testing.assert_array_equal(back.predict_proba(images), fitted.predict_proba(images))
    gpu.save(tmp_path / "gpu.ctfp")
    with pytest.warns(RuntimeWarning, match="runs on the CPU"):
        assert FingerprintClassifier.load(tmp_path / "gpu.ctfp").device_ == "cpu"


def _same_weights(a: FingerprintClassifier, b: FingerprintClassifier) -> bool:
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_random_state_same_model_on_cpu(images, labels) -> None:
    params = dict(TINY, max_epochs=2, validation_fraction=0.25, lr=1e-3)
    a = FingerprintClassifier(**params).fit(images, labels)
    b = FingerprintClassifier(**dict(params, n_jobs=1)).fit(images, labels)  # any thread count
    c = FingerprintClassifier(**dict(params, random_state=1)).fit(images, labels)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    assert [r["loss"] for r in a.history_] == [r["loss"] for r in b.history_]
    assert [r["val_loss"] for r in a.history_] == [r["val_loss"] for r in b.history_]
    # refitting the same estimator gives the same model again (fit starts afresh)
    state = {k: v.clone() for k, v in a.model_.state_dict().items()}
    a.fit(images, labels)
    assert all(torch.equal(v, state[k]) for k, v in a.model_.state_dict().items())
    # fitting leaves the caller's torch random stream alone
    torch.manual_seed(11)
    expected = torch.rand(2)
    torch.manual_seed(11)
    FingerprintClassifier(**TINY).fit(images, labels)
    assert torch.equal(torch.rand(2), expected)


# --------------------------------------------------------------------------------------------------
# training: history, validation, early stopping, callbacks, progress


def test_history_records_loader_and_compute_time(images, labels) -> None:
    clf = FingerprintClassifier(**dict(TINY, max_epochs=2)).fit(images, labels)
    assert clf.n_iter_ == 2 and [r["epoch"] for r in clf.history_] == [1, 2]
    for row in clf.history_:
        assert np.isfinite(row["loss"]) and row["loss"] > 0
        assert row["images_per_s"] > 0
        assert 0 <= row["loader_wait_s"] and 0 < row["compute_s"]
        assert row["loader_wait_s"] + row["compute_s"] <= row["seconds"]
        assert "val_loss" not in row


def test_validation_split_and_early_stopping(images, labels) -> None:
    clf = FingerprintClassifier(
        **dict(TINY, max_epochs=4, validation_fraction=0.34, patience=1, lr=1e-3)
    ).fit(images, labels)
    val = [r["val_loss"] for r in clf.history_]
    assert all(0 <= r["val_accuracy"] <= 1 and 0 <= r["val_roc_auc"] <= 1 for r in clf.history_)
    assert clf.best_epoch_ == 1 + int(np.argmin(val))
    if clf.n_iter_ < 4:  # stopped: exactly `patience` epochs after the best one
        assert clf.n_iter_ - clf.best_epoch_ == 1


def test_early_stopping_keeps_the_best_epochs_weights(images, labels) -> None:
    seen = {}

    def snapshot(est, **logs):
        seen[logs["epoch"]] = {k: v.clone() for k, v in est.model_.state_dict().items()}

    clf = FingerprintClassifier(
        **dict(TINY, max_epochs=3, validation_fraction=0.34, patience=3, lr=1e-2),
        callbacks=[snapshot],
    ).fit(images, labels)
    best = seen[clf.best_epoch_]
    assert all(torch.equal(v, best[k]) for k, v in clf.model_.state_dict().items())


def test_callbacks(images, labels) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict]] = []

        def on_train_begin(self, est, **logs):
            self.calls.append(("begin", logs))

        def on_epoch_end(self, est, **logs):
            assert hasattr(est, "model_")
            self.calls.append(("epoch", logs))
            return logs["epoch"] == 2  # True stops training

        def on_train_end(self, est, **logs):
            self.calls.append(("end", logs))

    rec = Recorder()
    clf = FingerprintClassifier(**dict(TINY, max_epochs=5), callbacks=[rec]).fit(images, labels)
    assert [c[0] for c in rec.calls] == ["begin", "epoch", "epoch", "end"]
    assert rec.calls[0][1] == {"n_train": N, "n_val": 0, "device": "cpu"}
    assert rec.calls[1][1]["loss"] == clf.history_[0]["loss"]
    assert clf.n_iter_ == 2 and rec.calls[-1][1]["n_epochs"] == 2


def test_verbose_shows_progress_bars(images, labels, capsys) -> None:
    FingerprintClassifier(**dict(TINY, verbose=1, validation_fraction=0.34)).fit(images, labels)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "val_loss=" in err and "val_roc_auc" in err
    FingerprintClassifier(**TINY).fit(images, labels)
    assert capsys.readouterr().err == ""


def test_class_weight(images, labels) -> None:
    y = np.array(["real"] * 9 + ["generated"] * 3)
    plain = FingerprintClassifier(**TINY).fit(images, y)
    balanced = FingerprintClassifier(**TINY, class_weight="balanced").fit(images, y)
    by_dict = FingerprintClassifier(**TINY, class_weight={"generated": 3.0}).fit(images, y)
    # "balanced" weighs generated 12 / (2 * 3) = 2 and real 12 / (2 * 9) = 2/3: a loss of its own
    losses = {c.history_[0]["loss"] for c in (plain, balanced, by_dict)}
    assert len(losses) == 3 and all(np.isfinite(v) for v in losses)
    with pytest.raises(ValueError, match="class_weight: labels \\['fake'\\]"):
        FingerprintClassifier(**TINY, class_weight={"fake": 2.0}).fit(images, y)


def test_training_functions_work_without_the_estimator(images, labels) -> None:
    """timm's shape: the loop is free functions over a model, a loader, an optimizer, a loss."""
    from ctfp.models import build_model, get_spec
    from ctfp.models.training import (
        EarlyStopping,
        binary_cross_entropy,
        predict_logits,
        train_one_epoch,
    )

    torch.manual_seed(0)
    model = build_model("mobilenet_v2", weights=None, image_size=32)
    xb = ctfp.load_batch(
        list(images), size=32, dtype="float32", normalize=get_spec("mobilenet_v2").normalize
    )
    y = (labels == "real").astype(np.float32)
    loader = [(xb[:6], y[:6]), (xb[6:], y[6:])]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stats = train_one_epoch(model, loader, opt, binary_cross_entropy(), device=torch.device("cpu"))
    assert stats["n_images"] == N and np.isfinite(stats["loss"]) and model.training
    logits = predict_logits(model, [xb[:5], xb[5:]], torch.device("cpu"))
    assert logits.shape == (N,) and logits.dtype == np.float32 and model.training
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(torch.from_numpy(xb)).numpy(), atol=1e-5)

    stopper = EarlyStopping(patience=2)
    assert [stopper.step(e, v, model) for e, v in enumerate([1.0, 0.5, 0.7, 0.6], 1)] == [
        False,
        False,
        False,
        True,
    ]
    assert stopper.best_epoch == 2 and not EarlyStopping(None).step(1, None, model)


# --------------------------------------------------------------------------------------------------
# save / load


def test_save_load_one_file(fitted, images, tmp_path) -> None:
    fitted.set_params(augment=ctfp.Augment(max_angle_deg=5.0))
    try:
        path = tmp_path / "model.ctfp"
        fitted.save(path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ctfp"]
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
        back = FingerprintClassifier.load(path)
    finally:
        fitted.set_params(augment="paper")
    assert back.get_params()["augment"] == ctfp.Augment(max_angle_deg=5.0)
    assert {k: v for k, v in back.get_params().items() if k != "augment"} == {
        k: v for k, v in fitted.get_params().items() if k != "augment"
    }
    np.testing.assert_array_equal(back.predict_proba(images), fitted.predict_proba(images))
    assert back.classes_.dtype == fitted.classes_.dtype
    assert back.history_ == fitted.history_ and back.image_shape_ == fitted.image_shape_
    assert back.image_size_ == fitted.image_size_ and back.normalize_ == fitted.normalize_
    # the file also serves as weights for a new model of the same backbone
    from ctfp.models.builders import build_model

    model = build_model("mobilenet_v2", weights=path, image_size=32)
    assert all(torch.equal(v, fitted.model_.state_dict()[k]) for k, v in model.state_dict().items())


def test_load_rejects_other_files(tmp_path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a FingerprintClassifier file"):
        FingerprintClassifier.load(other)
    with pytest.raises(FileNotFoundError):
        FingerprintClassifier.load(tmp_path / "missing.ctfp")


# --------------------------------------------------------------------------------------------------
# errors a user can act on


@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "predict_log_proba", "decision_function", "score"]
)
def test_not_fitted(method, images, labels) -> None:
    clf = FingerprintClassifier(**TINY)
    args = (images, labels) if method == "score" else (images,)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(clf, method)(*args)
    with pytest.raises(SkNotFittedError):
        getattr(clf, method)(*args)
    assert NotFittedError is ctfp.NotFittedError and issubclass(NotFittedError, ctfp.CtfpError)


def test_save_before_fit(tmp_path) -> None:
    with pytest.raises(NotFittedError):
        FingerprintClassifier().save(tmp_path / "x.ctfp")


def test_one_class_in_y(images) -> None:
    with pytest.raises(ValueError, match="two classes.*only one class \\('real' for all 12"):
        FingerprintClassifier(**TINY).fit(images, ["real"] * N)


def test_labels_not_matching_images(images) -> None:
    with pytest.raises(ValueError, match="12 images but 11 labels"):
        FingerprintClassifier(**TINY).fit(images, [0, 1] * 5 + [0])
    with pytest.raises(ValueError, match="Unknown label type"):
        FingerprintClassifier(**TINY).fit(images, np.linspace(0, 1, N))


def test_wrong_image_size_or_channels(fitted, images, paths, tmp_path) -> None:
    big = make_slices(2, size=64)
    with pytest.raises(ImageContractError, match="found 64x64 grey images; .*fitted on 40x40 grey"):
        fitted.predict(big)
    rgb = np.repeat(images[..., None], 3, axis=3)
    with pytest.raises(ImageContractError, match="found 40x40 3-channel images"):
        fitted.predict_proba(rgb)
    odd = write_pngs(tmp_path, 1, size=48, prefix="odd")
    with pytest.raises(ImageContractError, match=r"X\[2\] \(.*odd_0000\.png\): found 48x48"):
        fitted.predict([paths[0], paths[1], odd[0]])
    assert isinstance(ImageContractError("x"), ValueError)


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.zeros((4, 40)), "2-D array"),
        (np.zeros((4, 40, 40), np.float32), "expected uint8 pixels"),
        (np.zeros((4, 3, 40, 40), np.uint8), "channels-last"),
        (np.zeros((4, 40, 40, 2), np.uint8), "found shape"),
        ("scans/a.png", "wrap a single path in a list"),
        ([1, 2, 3], "found items of type int"),
        ([], "no images"),
        (42, "found int"),
    ],
    ids=["2d", "float", "chw", "2ch", "str", "ints", "empty", "int"],
)
def test_bad_inputs(X, match, labels) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        FingerprintClassifier(**TINY).fit(X, labels[:4])


def test_missing_file(tmp_path, labels) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        FingerprintClassifier(**TINY).fit([tmp_path / "nope.png"] * 4, labels[:4])


def test_unknown_backbone_lists_the_known_ones(images, labels) -> None:
    with pytest.raises(
        ValueError, match="backbone: expected one of 'mobilenet_v2'.*'resnet50'.*'vgg16'"
    ):
        FingerprintClassifier(**dict(TINY, backbone="vgg16")).fit(images, labels)


def test_weights_file_for_another_architecture(images, labels, tmp_path) -> None:
    import torchvision

    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit backbone 'mobilenet_v2'.*'resnet50'"):
        FingerprintClassifier(**dict(TINY, weights=path)).fit(images, labels)
    with pytest.raises(ValueError, match="weights: expected None.*'imagenet'.*found 'ImageNet'"):
        FingerprintClassifier(**dict(TINY, weights="ImageNet")).fit(images, labels)


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("image_size", 0, "image_size"),
        ("batch_size", 0, "batch_size"),
        ("lr", -1.0, "lr"),
        ("dropout", 1.0, "dropout"),
        ("augment", "keras", "augment: expected .*'paper'"),
        ("image_size", (32, 0), "image_size"),
        ("threshold", 1.5, "threshold"),
        ("class_weight", "even", "class_weight"),
        ("random_state", -1, "random_state"),
        ("validation_fraction", 1.5, "validation_fraction"),
        ("patience", 2, "needs validation images"),
        ("device", "tpu", "device: expected one of 'auto'"),
        ("mixed_precision", "yes", "mixed_precision"),
        ("n_jobs", 0, "n_jobs"),
    ],
)
def test_bad_parameters_are_reported_by_fit(param, value, match, images, labels) -> None:
    """A value of the right type that the parameter does not take: ValueError at fit."""
    clf = FingerprintClassifier(**dict(TINY, **{param: value}))  # __init__ never raises
    with pytest.raises(ValueError, match=match) as info:
        clf.fit(images, labels)
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("max_epochs", 1.0, "max_epochs: expected an integer >= 1, found 1.0"),
        ("verbose", "loud", "verbose"),
        ("callbacks", "print", "callbacks"),
        ("image_size", "224", "image_size: expected an int or a"),
        ("random_state", "seed", "random_state"),
        ("device", 0, "device: expected one of 'auto'"),
    ],
)
def test_bad_parameter_types_are_type_errors(param, value, match, images, labels) -> None:
    """A value of a type the parameter never takes: TypeError at fit (one exception per kind of
    mistake, as in every ctfp estimator)."""
    clf = FingerprintClassifier(**dict(TINY, **{param: value}))
    with pytest.raises(TypeError, match=match) as info:
        clf.fit(images, labels)
    assert not isinstance(info.value, ValueError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(images, labels) -> None:
    with pytest.raises(ValueError, match="CUDA is not available here"):
        FingerprintClassifier(**dict(TINY, device="cuda")).fit(images, labels)


@pytest.mark.parametrize("device", ["cuda:7", "bogus", "cuda:x", "tpu"])
def test_device_errors_are_the_shared_ones(device, images, labels, fitted, tmp_path) -> None:
    """fit, load and the shared rule (ctfp._util.resolve_device) say the same thing."""
    from ctfp._util import resolve_device

    with pytest.raises(ValueError) as expected:
        resolve_device(device)
    with pytest.raises(ValueError) as from_fit:
        FingerprintClassifier(**dict(TINY, device=device)).fit(images, labels)
    assert str(from_fit.value) == str(expected.value)
    fitted.save(tmp_path / "m.ctfp")
    with pytest.raises(ValueError) as from_load:
        FingerprintClassifier.load(tmp_path / "m.ctfp", device=device)
    assert str(from_load.value) == str(expected.value)


# --------------------------------------------------------------------------------------------------
# longer runs


@pytest.mark.slow
def test_learns_a_visible_difference() -> None:
    """Generated images carry a bright corner mark: a few epochs must pick it up."""
    real = make_slices(24, size=64, n_patients=6, seed=1)
    fake = make_slices(24, size=64, n_patients=6, seed=2)
    fake[:, :16, :16] = 255
    X = np.concatenate([real, fake])
    y = np.array([0] * 24 + [1] * 24)
    clf = FingerprintClassifier(
        weights=None, image_size=64, max_epochs=6, batch_size=16, lr=3e-3, random_state=0
    ).fit(X, y)
    assert clf.history_[-1]["loss"] < clf.history_[0]["loss"]
    calibrate_bn(clf, X)
    assert clf.score(X, y) >= 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_smoke(images, labels, tmp_path) -> None:
    clf = FingerprintClassifier(**dict(TINY, device="cuda", max_epochs=2)).fit(images, labels)
    assert clf.device_.startswith("cuda") and next(clf.model_.parameters()).is_cuda
    proba = clf.predict_proba(images)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    back = pickle.loads(pickle.dumps(clf))
    assert back.device_.startswith("cuda")
    np.testing.assert_allclose(back.predict_proba(images), proba, atol=1e-3)
    clf.save(tmp_path / "gpu.ctfp")
    cpu = FingerprintClassifier.load(tmp_path / "gpu.ctfp", device="cpu")
    np.testing.assert_allclose(cpu.predict_proba(images), proba, atol=1e-2)
