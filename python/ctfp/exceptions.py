"""ctfp's exception hierarchy; the Rust core raises these too."""

from __future__ import annotations

__all__ = ["CtfpError", "ImageDecodeError"]


class CtfpError(Exception):
    """Base class of every error ctfp raises on its own account."""


class ImageDecodeError(CtfpError, ValueError):
    """An image could not be decoded: not a PNG, corrupt, truncated, empty, or over a size cap.

    The message names the item (``image 17 (scans/f017.png)``) and what was wrong.
    """
