"""FingerprintClassifier with more than two classes (the task's subtask 2: which model or training
subset made each generated image): shapes, labels, a learnable problem, class weights, precise
BatchNorm, persistence, and the binary head left as it was. Tiny settings (random init, 32x32)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from ctfp import FingerprintClassifier  # noqa: E402
from ctfp.data.synthetic import make_slices  # noqa: E402
from ctfp.models import training  # noqa: E402
from ctfp.models.builders import FingerprintNet, build_model  # noqa: E402

TINY = dict(weights=None, image_size=32, max_epochs=1, batch_size=8, random_state=0, n_jobs=1)
N, SIZE = 12, 40

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quadrant_images(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` noisy 32x32 images of class ``k``: a bright square in quadrant ``k``."""
    x = rng.normal(100, 15, (n, 32, 32))
    r, c = divmod(k, 2)
    x[:, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] += 90
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_slices(N, size=SIZE, n_patients=3)


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.array(["tconv", "nearest", "bilinear"] * (N // 3))


@pytest.fixture(scope="module")
def fitted(images, labels) -> FingerprintClassifier:
    return FingerprintClassifier(**TINY, precise_bn=True).fit(images, labels)


def test_shapes_and_string_labels_round_trip(fitted, images, labels) -> None:
    assert fitted.classes_.tolist() == ["bilinear", "nearest", "tconv"]  # sorted, as np.unique
    assert fitted.model_.head[1].out_features == 3  # a K-logit head
    z = fitted.decision_function(images)
    p = fitted.predict_proba(images)
    assert z.shape == p.shape == (N, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(fitted.predict_log_proba(images), np.log(p), atol=1e-12)
    pred = fitted.predict(images)
    assert pred.dtype == fitted.classes_.dtype and set(pred) <= set(labels)
    np.testing.assert_array_equal(pred, fitted.classes_[p.argmax(axis=1)])
    assert fitted.predict_proba(images[:0]).shape == (0, 3)
    assert fitted.decision_function(images[:0]).shape == (0, 3)
    assert fitted.predict(images[:0]).shape == (0,)
    assert fitted.score(images, labels) == np.mean(pred == labels)


def test_integer_labels_and_history(images) -> None:
    y = np.array([7, 3, 11, 5] * (N // 4))
    clf = FingerprintClassifier(**{**TINY, "max_epochs": 2}, validation_fraction=0.34).fit(
        images, y
    )
    assert clf.classes_.tolist() == [3, 5, 7, 11] and clf.classes_.dtype.kind == "i"
    assert set(clf.predict(images)) <= {3, 5, 7, 11}
    assert len(clf.history_) == 2
    for row in clf.history_:
        assert np.isfinite(row["loss"]) and np.isfinite(row["val_loss"])
        assert 0.0 <= row["val_accuracy"] <= 1.0


def test_learns_a_three_class_pattern() -> None:
    """Images that differ only by where a bright square lies: a short training from random
    initialisation tells the three classes apart on new images."""
    rng = np.random.default_rng(0)
    X = np.concatenate([quadrant_images(20, k, rng) for k in range(3)])
    y = np.repeat(["left-top", "right-top", "left-bottom"], 20)
    Xt = np.concatenate([quadrant_images(10, k, rng) for k in range(3)])
    yt = np.repeat(["left-top", "right-top", "left-bottom"], 10)
    clf = FingerprintClassifier(
        weights=None, image_size=32, max_epochs=8, batch_size=10, lr=1e-3, augment=None,
        precise_bn=True, random_state=0, n_jobs=1,
    ).fit(X, y)  # fmt: skip
    assert clf.history_[-1]["loss"] < clf.history_[0]["loss"]
    assert clf.score(Xt, yt) >= 0.9


def test_class_weights_for_k_classes() -> None:
    classes = np.array(["a", "b", "c"])
    y_idx = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    # "balanced": scikit-learn's n / (K * count)
    from sklearn.utils.class_weight import compute_class_weight

    expected = compute_class_weight("balanced", classes=np.arange(3), y=y_idx)
    np.testing.assert_allclose(training.class_weights("balanced", classes, y_idx), expected)
    assert training.class_weights(None, classes, y_idx) == (1.0, 1.0, 1.0)
    assert training.class_weights({"c": 4.0}, classes, y_idx) == (1.0, 1.0, 4.0)
    with pytest.raises(ValueError, match=r"class_weight: labels \['d'\] are not among"):
        training.class_weights({"d": 2.0}, classes, y_idx)


def test_cross_entropy_weights_each_image_by_its_class() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    targets = torch.tensor([0, 1, 2, 2, 1, 0])
    w = (0.5, 2.0, 3.0)
    per_image = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    expected = (per_image * torch.tensor(w)[targets]).mean()
    torch.testing.assert_close(training.cross_entropy(w)(logits, targets), expected)
    torch.testing.assert_close(
        training.cross_entropy((1.0,) * 3)(logits, targets), per_image.mean()
    )


def test_validate_multiclass_metrics() -> None:
    logits = np.array(
        [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32
    )
    y = np.array([0, 1, 2, 1])
    row = training.validate(torch.nn.Identity(), [torch.from_numpy(logits)], y, torch.device("cpu"))
    assert row["val_accuracy"] == 0.75
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y))
    assert row["val_loss"] == pytest.approx(float(expected))
    assert 0.0 <= row["val_roc_auc"] <= 1.0
    # a class absent from y: no one-vs-rest AUC
    row = training.validate(torch.nn.Identity(), [torch.from_numpy(logits[:2])], y[:2],
                            torch.device("cpu"))  # fmt: skip
    assert row["val_roc_auc"] is None


def test_precise_batchnorm_sets_the_average_of_batch_statistics() -> None:
    bn = torch.nn.BatchNorm2d(2, momentum=0.3)
    model = torch.nn.Sequential(bn)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 2, 3, 3, generator=g) * (k + 1) + k for k in range(3)]
    model.eval()
    seen = training.precise_batchnorm(model, batches, torch.device("cpu"))
    assert seen == 12
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    variances = torch.stack([b.transpose(0, 1).reshape(2, -1).var(dim=1) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, means)
    torch.testing.assert_close(bn.running_var, variances)
    assert bn.momentum == 0.3 and not model.training  # both restored


def test_save_load_and_pickle_round_trip(fitted, images, tmp_path) -> None:
    path = tmp_path / "multi.ctfp"
    fitted.save(path)
    back = FingerprintClassifier.load(path)
    assert back.classes_.tolist() == fitted.classes_.tolist()
    assert back.model_.head[1].out_features == 3
    np.testing.assert_array_equal(back.predict_proba(images), fitted.predict_proba(images))
    np.testing.assert_array_equal(back.predict(images), fitted.predict(images))
    assert back.get_params()["precise_bn"] is True
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.decision_function(images), fitted.decision_function(images))


def test_binary_keeps_its_one_logit_head(images) -> None:
    """Two classes: the head, its initialisation and the outputs' shapes are the paper's."""
    torch.manual_seed(0)
    default = build_model("mobilenet_v2", weights=None, image_size=32)
    torch.manual_seed(0)
    two = build_model("mobilenet_v2", weights=None, image_size=32, num_classes=2)
    assert default.head[1].out_features == 1 and two.num_classes == 2
    for (k, a), (_, b) in zip(default.state_dict().items(), two.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    clf = FingerprintClassifier(**TINY).fit(images, np.array(["real", "generated"] * (N // 2)))
    assert clf.decision_function(images).shape == (N,)
    assert clf.predict_proba(images).shape == (N, 2)
    with pytest.raises(ValueError, match="num_classes: expected an integer >= 2"):
        FingerprintNet(torch.nn.Identity(), 4, num_classes=1)


def test_a_whole_model_file_with_another_head_is_refused(fitted, tmp_path) -> None:
    from ctfp.exceptions import WeightsError

    path = tmp_path / "three.ctfp"
    fitted.save(path)
    with pytest.raises(WeightsError, match="head"):
        build_model("mobilenet_v2", weights=path, image_size=32, num_classes=2)
