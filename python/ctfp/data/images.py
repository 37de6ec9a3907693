"""Images as grey stacks, and the SSIM matrix between two stacks.

:func:`load_images` reads whatever ctfp takes as images (PNG paths, PNG bytes, uint8 arrays, or a
uint8 ``(N, H, W)`` stack) into one C-contiguous uint8 ``(N, H, W)`` grey stack, resized by
:func:`ctfp.load_batch` when asked. :func:`ssim_matrix` is scikit-image's
``structural_similarity`` between every pair of two stacks, through ctfp's Rust kernel.

This module imports numpy and ctfp's core only (no scikit-learn, no torch):
``ctfp.ssim_matrix`` is this module's.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from ctfp import _core
from ctfp.data.preprocess import decode_png, load_batch

__all__ = ["as_hw", "is_image_stack", "load_images", "ssim_matrix"]


def is_image_stack(x: object) -> bool:
    """Whether ``x`` is already a uint8 ``(N, H, W)`` grey stack."""
    return isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3


def as_hw(size: object) -> tuple[int, int]:
    """``size`` (an int or a ``(height, width)`` pair) as a ``(height, width)`` tuple."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return (int(size), int(size))
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    raise TypeError(f"size: expected an int or a (height, width) pair, found {size!r}")


def load_images(
    sources: Any, *, size: int | tuple[int, int] | None = None, n_threads: int | None = None
) -> np.ndarray:
    """Images as one C-contiguous uint8 ``(N, H, W)`` grey stack.

    Parameters
    ----------
    sources : sequence or numpy.ndarray
        PNG paths, PNG bytes or uint8 arrays (``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)``), or a
        uint8 ``(N, H, W)`` stack, read in any memory layout (a stack given whole is copied to C
        order once when it is not; single arrays in a sequence must be C-ordered, as
        :func:`ctfp.load_batch` requires).
    size : int or (height, width), optional
        Output size; images are resized by :func:`ctfp.load_batch` (bilinear, pixel-centre
        aligned). ``None`` keeps the first image's size (and resizes the others to it).
    """
    if is_image_stack(sources):
        sources = np.ascontiguousarray(sources)  # its rows are then C-ordered images
        if size is None or as_hw(size) == sources.shape[1:]:
            return sources
    if isinstance(sources, (str, bytes, os.PathLike)):
        raise TypeError("sources: expected a sequence of images; wrap a single image in a list")
    items = list(sources)
    if not items:
        hw = (1, 1) if size is None else as_hw(size)
        return np.zeros((0, *hw), np.uint8)
    if size is None:
        first = items[0]
        hw = first.shape[:2] if isinstance(first, np.ndarray) else decode_png(first).shape
    else:
        hw = as_hw(size)
    out = load_batch(items, size=hw, layout="grey", n_threads=n_threads)
    return out.reshape(len(items), hw[0], hw[1])


def ssim_matrix(queries: Any, references: Any, *, n_threads: int | None = None) -> np.ndarray:
    """SSIM of every query image against every reference image, ``float32 (Q, R)``.

    Equal (within 1e-6) to ``skimage.metrics.structural_similarity(q, r)`` for uint8 images with
    its defaults: 7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03``, ``data_range = 255``, sample
    covariance, mean over the windows fully inside the image. Computed by ctfp's Rust kernel with
    per-image window statistics reused across pairs, in parallel (``n_threads``, default all
    cores) with the GIL released. The window sums are integers, so an image against itself
    scores exactly 1.0 on any CPU (``tests/test_exact_distances.py``).

    Parameters
    ----------
    queries, references : uint8 ``(N, H, W)`` stacks, or sequences of images
        (anything :func:`load_images` takes; all images of one size, at least 7x7).
    """
    q = queries if is_image_stack(queries) else load_images(queries, n_threads=n_threads)
    r = references if is_image_stack(references) else load_images(references, n_threads=n_threads)
    return _core.ssim_matrix(np.ascontiguousarray(q), np.ascontiguousarray(r), n_threads=n_threads)
