"""The persisted generated-set index: content hashes, index files and a cache folder of them.

A fitted :class:`~ctfp.membership.index.GeneratedIndex` is saved as one ``.npz`` (its features,
the settings they depend on, and the :func:`content_hash` of the generated images, so that a
stale index is refused with :class:`StaleIndexError`); :func:`fit_or_load` keeps such files in a
cache folder, keyed by the images' hash and the feature settings.

This module imports numpy only; :func:`fit_or_load` imports the index.
"""

from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctfp._util import atomic_write
from ctfp.data.images import is_image_stack

if TYPE_CHECKING:
    from ctfp.membership.index import GeneratedIndex

__all__ = [
    "FEATURE_PARAMS",
    "INDEX_FORMAT",
    "StaleIndexError",
    "content_hash",
    "feature_params",
    "fit_or_load",
    "norm_param",
    "read_index_file",
    "same_param",
    "write_index_file",
]

#: The version of the index file layout (``meta["format"]``).
INDEX_FORMAT = 1
#: Parameters that decide the features stored for the generated set: an index whose values of
#: these match is reused (searched differently if need be) rather than recomputed.
FEATURE_PARAMS = ("measure", "image_size", "backbone", "weights", "random_state", "device")


class StaleIndexError(ValueError):
    """A saved generated-set index does not belong to the generated images it was loaded for."""


def content_hash(sources: Any) -> str:
    """SHA-256 of the generated images as given: the bytes of each file (paths), of each PNG
    (bytes) or of each array (with its shape and dtype), in order. Two lists hash equal only when
    every image is byte-for-byte the same, in the same order."""
    h = hashlib.sha256()
    if is_image_stack(sources):
        a = np.ascontiguousarray(sources)
        h.update(f"stack{a.shape}{a.dtype}".encode())
        h.update(a.data)
        return h.hexdigest()
    items = list(sources)
    h.update(f"n={len(items)};".encode())
    for item in items:
        if isinstance(item, np.ndarray):
            a = np.ascontiguousarray(item)
            h.update(f"array{a.shape}{a.dtype};".encode())
            h.update(a.data)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            b = bytes(item)
            h.update(f"bytes{len(b)};".encode())
            h.update(b)
        else:
            with open(item, "rb") as f:
                b = f.read()
            h.update(f"file{len(b)};".encode())
            h.update(b)
    return h.hexdigest()


def feature_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters the stored features depend on (backbone settings only for embeddings)."""
    keep = FEATURE_PARAMS if params["measure"] == "embedding" else ("measure", "image_size")
    return {k: params[k] for k in keep}


def norm_param(v: object) -> object:
    """A parameter value as it compares after a round trip through JSON (paths and devices as
    strings, lists as tuples)."""
    if isinstance(v, os.PathLike):
        return str(v)
    if isinstance(v, list):
        return tuple(v)
    if type(v).__name__ == "device" and type(v).__module__.startswith("torch"):
        return str(v)
    return v


def same_param(a: object, b: object) -> bool:
    """Parameter equality that never raises (arrays, devices, RandomState: by identity)."""
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def write_index_file(path: str | os.PathLike[str], features: np.ndarray, meta: dict) -> Path:
    """Write an index file (one ``.npz``, atomically): ``features`` and the JSON ``meta``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, features=features, meta=np.array(json.dumps({"format": INDEX_FORMAT, **meta})))
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())
    return path


def read_index_file(
    path: str | os.PathLike[str],
    *,
    expected_hash: str | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """``(meta, features)`` of an index file written by :func:`write_index_file`, checked:
    :class:`StaleIndexError` when it is no ctfp index, was saved for images of another content
    hash than ``expected_hash``, or with other values of the saved ``params`` than asked."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        feats = z["features"]
    if meta.get("format") != INDEX_FORMAT:
        raise StaleIndexError(f"{path}: not a ctfp generated-set index (format {meta!r})")
    if expected_hash is not None and expected_hash != meta["content_hash"]:
        raise StaleIndexError(
            f"{path}: saved for other generated images (content hash "
            f"{meta['content_hash'][:12]}, these images {expected_hash[:12]}): fit the index again"
        )
    saved = meta["params"]
    if isinstance(saved.get("image_size"), list):
        saved["image_size"] = tuple(saved["image_size"])
    for k, v in (params or {}).items():
        if k in saved and not same_param(norm_param(v), norm_param(saved[k])):
            raise StaleIndexError(
                f"{path}: saved with {k}={saved[k]!r}, asked for {k}={v!r}: fit the index "
                f"again (or load without {k})"
            )
    if len(feats) != int(meta["n_samples_fit_"]):
        raise StaleIndexError(f"{path}: {len(feats)} stored rows for {meta['n_samples_fit_']}")
    return meta, feats


def fit_or_load(
    params: dict[str, Any], generated: Any, cache_dir: str | os.PathLike[str] | None
) -> GeneratedIndex:
    """A :class:`~ctfp.membership.index.GeneratedIndex` with ``params`` for ``generated``:
    loaded from ``cache_dir`` when an index of the same images (by :func:`content_hash`) with the
    same feature settings was saved there, else fitted and saved there (``cache_dir=None``:
    always fitted, nothing saved). A file that cannot be used (stale, other settings,
    unreadable) is refitted and replaced, with a warning."""
    from ctfp.membership.index import GeneratedIndex

    idx = GeneratedIndex(**params)
    if cache_dir is None:
        return idx.fit(generated)
    fp = idx.feature_params()  # checks the parameters first
    rs = fp.get("random_state")
    if rs is not None and not isinstance(rs, numbers.Integral):
        return idx.fit(generated)  # a RandomState: not a repeatable network, nothing to reuse
    h = content_hash(generated)
    key = hashlib.sha256(
        json.dumps(
            {**{k: norm_param(v) for k, v in fp.items()}, "content": h},
            default=str,
            sort_keys=True,
        ).encode()
    ).hexdigest()[:20]
    path = Path(cache_dir) / f"generated-{idx.measure}-{key}.npz"
    if path.is_file():
        try:
            return GeneratedIndex.load(path, generated, expected_hash=h, **params)
        except (StaleIndexError, OSError, KeyError, ValueError) as exc:
            warnings.warn(
                f"{path}: cannot reuse the saved index ({exc}); fitting again", stacklevel=2
            )
    idx.fit(generated, content_hash=h)
    idx.save(path)
    return idx
