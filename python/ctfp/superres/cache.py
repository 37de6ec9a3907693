"""Upscaled images on disk (:class:`UpscaleCache`), keyed by the source's bytes and the model,
so each image is upscaled once across runs; :func:`ctfp.load_batch` reads them.

Importing this module imports no torch, and neither does a cache hit when the cache is given
weights by name or path with a ``device`` (or ``half``) that settles the precision: the entry's
folder comes from the weights' name and file hash (:func:`~ctfp.superres.weights_id`) and the
settings, and the :class:`~ctfp.superres.Upscaler` (and with it torch and the network) is built
only when a source is missing.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ctfp._util import (
    check_device,
    validate_params,
    write_image_png,
    write_text_atomic,
)
from ctfp.superres.upscaler import (
    Upscaler,
    _check_image,
    _default_batch_size,
    _output_settings,
    _to_grey,
    _uses_fp16,
)
from ctfp.superres.weights import _weights_files, weights_id

__all__ = ["CacheStats", "UpscaleCache"]


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
    from ctfp.data.preprocess import decode_png

    if isinstance(source, np.ndarray):
        if source.ndim == 3:
            return (
                _to_grey(source) if source.shape[2] == 3 else np.ascontiguousarray(source[..., 0])
            )
        return source
    return decode_png(source if not isinstance(source, os.PathLike) else os.fspath(source))


def _write_png(path: Path, image: np.ndarray, text: Mapping[str, str] | None = None) -> None:
    """Write ``image`` as a PNG at ``path`` through :func:`ctfp._util.write_image_png`, so a reader
    never sees a partial file (even with several processes filling the same cache)."""
    from PIL import PngImagePlugin

    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    write_image_png(path, image, compress_level=1, pnginfo=info)


class UpscaleCache:
    """Upscaled images on disk: each source is upscaled once, across runs and epochs.

    Entries are 8-bit grey PNGs (the luma of the RGB network output; ctfp's pipeline is grey)
    at ``directory/<settings id>/<ab>/<source sha256>.png``, where the settings id hashes the
    model identity (:attr:`Upscaler.model_id`: weights name and file hash, or a hash of the
    parameters), ``tile``, ``tile_pad``, precision and the cache format version; the settings are
    written beside as ``settings.json``. Path and bytes sources are keyed by the sha256 of the PNG
    bytes, arrays by the sha256 of their shape, dtype and bytes. Files are written atomically
    (:func:`ctfp._util.atomic_write`: a temporary file, then ``os.replace``; permissions as for
    any new file), so concurrent writers and interrupted runs are safe.

    Parameters
    ----------
    directory : path
        Created when missing.
    upscaler : Upscaler, weights name or path
        The model. A weights name or path (with ``upscaler_params``) is kept as such: the cache
        folder is found from the weights' file hash and the settings, and ``Upscaler(upscaler,
        **upscaler_params)`` is built on the first miss. A cache hit then imports no torch,
        provided ``device`` is not ``"auto"`` or ``half`` is given (whether ``"auto"`` means
        CUDA, and so fp16, is a question only torch can answer). A device this machine lacks is
        reported on the first miss.
    **upscaler_params
        :class:`Upscaler`'s keyword arguments (``device``, ``tile``, ``tile_pad``,
        ``batch_size``, ``half``, ``progress``), with its defaults; only with a weights name or
        path (an :class:`Upscaler` carries its own).

    Examples
    --------
    Two small PNGs upscaled once, then read from the cache (``device="cuda"`` on a GPU):

    >>> import tempfile, ctfp
    >>> folder = tempfile.mkdtemp()
    >>> pngs = ctfp.synthetic.write_pngs(folder + "/real", 2, seed=1, size=32)
    >>> cache = UpscaleCache(folder + "/esrgan", "realesrgan-x4plus", device="cpu")
    >>> big = cache.upscale_paths(pngs)                     # upscales the misses only
    >>> big = cache.upscale_paths(pngs)                     # now all hits
    >>> ctfp.load_batch(big, size=(128, 128), augment=ctfp.Augment(), epoch=0).shape
    (2, 3, 128, 128)
    >>> cache.stats
    CacheStats(hits=2, misses=2)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        upscaler: Upscaler | str | os.PathLike[str] = "realesrgan-x4plus",
        **upscaler_params: Any,
    ) -> None:
        self.directory = Path(directory).expanduser()
        self._hits = 0
        self._misses = 0
        self._folder: Path | None = None
        self._model_id: str | None = None
        self._upscaler: Upscaler | None = None
        self._weights: str | os.PathLike[str] | None = None
        self._params: dict[str, Any] = {}
        if isinstance(upscaler, (str, os.PathLike)):
            # Upscaler's own signature and checks: unknown keywords raise TypeError, and the
            # defaults are Upscaler's
            bound = inspect.signature(Upscaler).bind(upscaler, **upscaler_params)
            bound.apply_defaults()
            self._params = {k: v for k, v in bound.arguments.items() if k != "model"}
            validate_params(self._params, Upscaler._parameter_constraints, "UpscaleCache")
            check_device(self._params["device"])
            _weights_files(upscaler)  # fail now on a bad name or a missing file
            self._weights = upscaler
        elif isinstance(upscaler, Upscaler):
            if upscaler_params:
                raise TypeError(
                    f"UpscaleCache: {', '.join(upscaler_params)} can be given with a weights "
                    "name or path; an Upscaler carries its own settings"
                )
            self._upscaler = upscaler
        else:  # a module or a state dict: the Upscaler checks it
            self._upscaler = Upscaler(upscaler, **upscaler_params)

    @property
    def upscaler(self) -> Upscaler:
        """The :class:`Upscaler`: the one given, or built from the weights on first use."""
        if self._upscaler is None:
            self._upscaler = Upscaler(self._weights, **self._params)  # type: ignore[arg-type]
        return self._upscaler

    def _setting(self, name: str) -> Any:
        """``batch_size`` or ``progress`` of the upscaler, without building it."""
        if self._upscaler is not None:
            return getattr(self._upscaler, name)
        if name == "batch_size":
            return _default_batch_size(self._params["device"], self._params["batch_size"])
        return bool(self._params[name])

    def _upscaler_settings(self) -> dict[str, Any]:
        """:meth:`Upscaler.settings` of the upscaler, without building it when not given."""
        if self._upscaler is not None:
            return self._upscaler.settings()
        p = self._params
        half = _uses_fp16(p["device"], p["half"])
        model_id = weights_id(self._weights)  # type: ignore[arg-type]
        return _output_settings(model_id, int(p["tile"]), int(p["tile_pad"]), half)

    @property
    def folder(self) -> Path:
        """The folder of this model and these settings, inside ``directory``."""
        if self._folder is None:
            upscaler = self._upscaler_settings()
            settings = {"format": _CACHE_VERSION, **upscaler, "output": "grey8"}
            blob = json.dumps(settings, sort_keys=True).encode()
            folder = self.directory / hashlib.sha256(blob).hexdigest()[:16]
            folder.mkdir(parents=True, exist_ok=True)
            meta = folder / "settings.json"
            if not meta.exists():
                write_text_atomic(meta, json.dumps(settings, indent=2, sort_keys=True) + "\n")
            self._model_id = upscaler["model"]
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
        with the number of sources (on CUDA the next chunk runs on the GPU while one is written,
        so two chunks are held).
        """
        show = self._setting("progress") if progress is None else bool(progress)
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=len(sources), unit="img", desc="upscale cache", leave=False)
        out: list[Path] = []
        pending: list[tuple[Path, np.ndarray, str]] = []
        queued: set[Path] = set()
        in_flight: collections.deque[tuple[Any, list[tuple[Path, np.ndarray, str]]]] = (
            collections.deque()
        )
        batch_size = None  # known on the first miss (with "auto", asking torch)
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
                if batch_size is None:
                    batch_size = self._setting("batch_size")
                if len(pending) >= batch_size:
                    self._flush(pending, in_flight, bar)
                    pending = []
            self._flush(pending, in_flight, bar, last=True)
        finally:
            if bar is not None:
                bar.close()
        return out

    def _flush(
        self,
        pending: list[tuple[Path, np.ndarray, str]],
        in_flight: collections.deque[tuple[Any, list[tuple[Path, np.ndarray, str]]]],
        bar: Any,
        *,
        last: bool = False,
    ) -> None:
        """Queue ``pending`` on the upscaler's device, then write the chunks that are done:
        on CUDA one chunk stays queued (the GPU works while this thread writes PNGs), until
        ``last``."""
        if pending:
            up = self.upscaler
            in_flight.append((up._launch([img for _, img, _ in pending]), pending))
        keep = 0 if last or not in_flight else self.upscaler._lookahead
        while len(in_flight) > keep:
            queued, entries = in_flight.popleft()
            results = self.upscaler._finish(queued)
            for (path, _, name), big in zip(entries, results, strict=True):
                _write_png(path, big, {"ctfp-source": name, "ctfp-model": str(self._model_id)})
                if bar is not None:
                    bar.update(1)
