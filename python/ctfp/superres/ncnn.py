"""ESRGAN models in ncnn format (the ``.param``/``.bin`` files of the sr-vulkan wheels), read as
:class:`~ctfp.superres.RRDBNet` state dicts by :func:`convert_ncnn`. Importing this module
imports torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ctfp.exceptions import WeightsError
from ctfp.superres.network import _conv_has_lrelu, _conv_names

__all__ = ["convert_ncnn"]

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
