"""ctfp's exception hierarchy; the Rust core raises these too."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CtfpError",
    "ImageContractError",
    "ImageDecodeError",
    "NotFittedError",  # noqa: F822 (made on first use by __getattr__, below)
    "WeightsError",
]


class CtfpError(Exception):
    """Base class of every error ctfp raises on its own account."""


class ImageDecodeError(CtfpError, ValueError):
    """An image could not be decoded: not a PNG, corrupt, truncated, empty, or over a size cap.

    The message names the item (``image 17 (scans/f017.png)``) and what was wrong.
    """


class WeightsError(CtfpError, ValueError):
    """Backbone weights could not be had or do not fit the architecture.

    Raised when ImageNet weights cannot be downloaded (no network, no cached copy), when a
    weights file is not a PyTorch state dict, or when its keys and shapes do not match the
    backbone (the message names the missing and unexpected keys and the shape mismatches).
    """


class ImageContractError(CtfpError, ValueError):
    """Images given to a fitted model differ from those it was fitted on (size or channels)."""


def _make_not_fitted_error() -> type:
    # scikit-learn is imported only when this class is first asked for, so that ``import ctfp``
    # stays light; the class is then cached in the module namespace (one identity, picklable).
    from sklearn.exceptions import NotFittedError as _SkNotFittedError

    class NotFittedError(CtfpError, _SkNotFittedError):
        """A model was used before ``fit`` (or ``load``).

        A subclass of ``sklearn.exceptions.NotFittedError`` (so of ``ValueError`` and
        ``AttributeError`` too), so scikit-learn's own handling applies.
        """

    NotFittedError.__module__ = __name__
    NotFittedError.__qualname__ = "NotFittedError"
    return NotFittedError


def __getattr__(name: str) -> Any:
    if name == "NotFittedError":
        cls = _make_not_fitted_error()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
