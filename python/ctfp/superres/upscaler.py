"""The tiled :class:`Upscaler`: uint8 grey ``(H, W)`` or RGB ``(H, W, 3)`` in, x4 uint8 out with
the same channels; overlapping tiles bound the memory; fp16, channels-last and 8 images a pass
on CUDA (one upload, one pinned copy back and one wait per chunk), float32 NCHW elsewhere.

Grey images go through the network as three equal RGB channels, and the RGB result is turned
back to grey by the ITU-R 601-2 luma rule that :func:`ctfp.decode_png` (and Pillow's
``convert("L")``) apply to RGB PNGs (``ctfp._core.rgb_to_grey``: the rule lives in Rust only),
so grey results are what ctfp's grey pipeline would make of the RGB upscaled image. The network's
RGB output comes back from the device as uint8 (a quarter of float32's bytes) and is turned grey
on the host: at 896x896 that is 2.4 MB an image, well under a millisecond over PCIe next to the
network's milliseconds, so a second (device) copy of the rule would buy nothing.

Importing this module imports no torch (so :class:`~ctfp.superres.UpscaleCache` can use its
rules on a cache hit); building an :class:`Upscaler` does.
"""

from __future__ import annotations

import collections
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ctfp import _core
from ctfp._util import (
    Constraint,
    Interval,
    Options,
    cudnn_autotune,
    resolve_device,
    validate_params,
)
from ctfp.superres.weights import _module_id, _weights_files, load_esrgan, weights_id

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Upscaler"]


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)``, exactly as
    :func:`ctfp.decode_png` (``luma`` in rust/decode.rs) and Pillow's ``convert("L")``.

    The rule lives in Rust only (``ctfp._core.rgb_to_grey``).
    """
    return _core.rgb_to_grey(np.ascontiguousarray(rgb))


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


def _int_attr(model: nn.Module, name: str, default: int) -> int:
    return int(getattr(model, name, default))


def _is_cuda(device: str | torch.device) -> bool:
    """Whether ``device`` means CUDA; a device named by a string other than ``"auto"`` is read
    without importing torch."""
    if isinstance(device, str) and device != "auto":
        return device.startswith("cuda")
    return resolve_device(device).type == "cuda"


def _uses_fp16(device: str | torch.device, half: bool | None) -> bool:
    """The precision rule: ``half`` when given, else fp16 on CUDA only."""
    if half is not None:
        return bool(half)
    return _is_cuda(device)


#: Default ``batch_size`` (images read at a time, and at most that many tiles per forward pass):
#: 16 on CUDA, 4 elsewhere, where a larger batch buys nothing. On CUDA without a ``batch_size``
#: of the caller's, a pass holds as many tiles as fit in :data:`_PASS_PIXELS_CUDA` input pixels
#: (at most 16, at least 1): 8 whole 224 x 224 images, 16 of 64 x 64 (about 2.8 GB of
#: activations in fp16 at 7 KB per input pixel; a GPU with less memory gets smaller passes, see
#: :meth:`Upscaler._retry_smaller`).
_BATCH_SIZE_CUDA = 16
_BATCH_SIZE_OTHER = 4
#: Measured on an H200 (benches/esrgan_gpu.py, fp16, channels-last): 224 -> 896 gave 68.7
#: images/s at 8 a pass and 63.2 at 16; 64 -> 256 was 1.34x the bare baseline at 16 a pass and
#: 0.82x at 8. A pixel budget of 8 images of 224 x 224 picks both of those.
_PASS_PIXELS_CUDA = 8 * 224 * 224


def tiles_per_pass(batch_size: int, pass_pixels: int | None, height: int, width: int) -> int:
    """Tiles of ``height x width`` (padding included) per forward pass: ``batch_size``, or with
    a pixel budget (the CUDA default), as many as fit in ``pass_pixels``, from 1 to
    ``batch_size``."""
    if pass_pixels is None:
        return batch_size
    return max(1, min(batch_size, pass_pixels // max(1, height * width)))


def _default_batch_size(device: str | torch.device, batch_size: int | None) -> int:
    """``batch_size`` when given, else the device's default (read without torch when
    ``device`` is a string other than ``"auto"``)."""
    if batch_size is not None:
        return int(batch_size)
    return _BATCH_SIZE_CUDA if _is_cuda(device) else _BATCH_SIZE_OTHER


def _output_settings(model_id: str, tile: int, tile_pad: int, half: bool) -> dict[str, Any]:
    """What an upscaler's output bits depend on (besides the input): model, tiling, precision.

    Speed settings (``batch_size``, ``channels_last``, ``compile``, ``device`` beyond the
    precision it implies) are left out on purpose: they move at most a rare pixel by 1 grey
    level (float summation order), so :class:`~ctfp.superres.UpscaleCache` keeps one folder
    for all of them.
    """
    return {
        "model": model_id,
        "tile": tile,
        "tile_pad": tile_pad,
        "precision": "fp16" if half else "fp32",
    }


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


class _Pending(NamedTuple):
    """A chunk whose forward passes are queued on the device (see :meth:`Upscaler._launch`)."""

    images: list[np.ndarray]  # the inputs, as given (their kinds decide the result's form)
    host: torch.Tensor  # 1-D uint8 on the CPU (pinned on CUDA): every output, back to back
    layout: list[tuple[int, tuple[int, int, int]]]  # each output's offset and (C, H, W)
    done: Any  # a torch.cuda.Event recorded after the copy to ``host``, or None
    keep: tuple[Any, ...]  # tensors that must live until ``done``


#: ``compile`` values: False, True (= "default") or a torch.compile mode without CUDA graphs
#: (a replay overwrites the previous replay's outputs, a hazard for 23 chained blocks; the
#: launch overhead graphs remove is small next to a 224 x 224 pass).
_COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


def _compile_model(model: nn.Module, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` where it helps. An :class:`RRDBNet` is compiled per block (regional
    compilation): its 23 RRDBs share one compiled graph, so compiling costs one block; the
    convolutions outside the trunk run as they are. Any other module is compiled whole. Shapes
    are static (``dynamic=False``): one graph per batch and tile shape."""
    import torch

    from ctfp.superres.network import RRDBNet

    if isinstance(model, RRDBNet):
        blocks = [torch.compile(b, mode=mode, dynamic=False) for b in model.body]

        def body(x: torch.Tensor) -> torch.Tensor:
            for block in blocks:
                x = block(x)
            return x

        return lambda x: model._forward(x, body)
    return torch.compile(model, mode=mode, dynamic=False)  # type: ignore[return-value]


class Upscaler:
    """Upscale uint8 images with an ESRGAN generator, in bounded memory.

    Parameters
    ----------
    model : RRDBNet (or any nn.Module with ``scale``), weights name, path, or state dict
        Default ``"realesrgan-x4plus"`` (bundled, offline). Weights are loaded on first use. A
        module passed in is put in eval mode and moved (cast to fp16 if ``half``, and to
        channels-last if ``channels_last``) in place.
    device : "auto", "cpu", "cuda", "cuda:N", "mps" or torch.device
        ``"auto"``: CUDA, then MPS, then the CPU (:func:`ctfp._util.resolve_device`; a device
        this machine lacks raises ``ValueError``).
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
    batch_size : int, optional
        Tiles (or whole images of equal size) per forward pass; also the number of images
        decoded and held at once by :meth:`upscale_iter` and :class:`UpscaleCache`. Default:
        4 off CUDA; on CUDA 16 images at a time, with as many tiles per pass as fit in a budget
        of 8 x 224 x 224 input pixels (8 whole 224 x 224 images, 16 of 64 x 64: the faster
        choice at each size measured on an H200; :func:`tiles_per_pass`).
        On CUDA, a pass that runs out of GPU memory is retried with half as many tiles (with a
        warning), down to one.
    half : bool, optional
        fp16 weights and activations; default: on CUDA only (float32 on the CPU and MPS).
    channels_last : bool, optional
        Run the network in channels-last (NHWC) memory format, which is what the GPU's fp16
        convolution kernels want; default: on CUDA only (on the CPU it measured no faster for
        Real-ESRGAN x4plus). A speed setting: outputs agree with NCHW within 1 grey level.
    compile : bool or str
        ``torch.compile`` the network (``True`` = mode ``"default"``, or
        ``"max-autotune-no-cudagraphs"``). An :class:`RRDBNet` is compiled per block, so
        compiling costs one RRDB; each new batch or tile shape compiles again, so it pays for
        itself on many images of one size (Method 4's 224 x 224). When compiling or running
        the compiled network fails, a ``RuntimeWarning`` says why and the network runs
        uncompiled. A speed setting, as ``channels_last``.
    progress : bool
        A tqdm progress bar (per image) in :meth:`upscale_batch` and :meth:`upscale_iter`.

    On CUDA each chunk of ``batch_size`` images is uploaded once, its tiles are cut, batched,
    quantised to uint8 (and turned grey) on the GPU, and one copy into pinned memory brings the
    chunk back: one host synchronisation per chunk. :meth:`upscale_iter` (and
    :class:`UpscaleCache`) queue the next chunk before handing back the current one, so host
    work (saving PNGs) overlaps GPU work; up to two chunks are then held.

    Memory: the activations of one forward pass take about 14 KB per input pixel at float32
    (measured on the CPU; half that in fp16), so at most ``batch_size * (tile + 2 * tile_pad)**2
    * 14 KB``: 1.4 GB per 320 x 320 padded tile, 0.7 GB per whole 224 x 224 image, whatever the
    image size.

    Examples
    --------
    Real-ESRGAN x4plus (its weights ship in ``ctfp[weights]``), on the GPU when there is one; a
    small image keeps the example quick on a CPU:

    >>> import numpy as np
    >>> up = Upscaler("realesrgan-x4plus", device="cpu")
    >>> grey = np.full((16, 16), 128, np.uint8)
    >>> up.upscale(grey).shape, up.upscale(grey).dtype
    ((64, 64), dtype('uint8'))
    >>> [out.shape for out in up.upscale_iter([grey, grey])]  # streams batch_size at a time
    [(64, 64), (64, 64)]
    """

    #: The checks of the settings (``device`` goes through :func:`ctfp._util.resolve_device`);
    #: :class:`UpscaleCache` applies them too.
    _parameter_constraints: dict[str, list[Constraint]] = {
        "tile": [Interval(int, 0, None)],
        "tile_pad": [Interval(int, 0, None)],
        "batch_size": [Interval(int, 1, None), None],
        "channels_last": [Options(True, False), None],
        "compile": [Options(False, True, *_COMPILE_MODES)],
    }

    def __init__(
        self,
        model: nn.Module | str | os.PathLike[str] | Mapping[str, Any] = "realesrgan-x4plus",
        *,
        device: str | torch.device = "auto",
        tile: int = 256,
        tile_pad: int = 32,
        batch_size: int | None = None,
        half: bool | None = None,
        channels_last: bool | None = None,
        compile: bool | str = False,
        progress: bool = False,
    ) -> None:
        from torch import nn

        params = {
            "tile": tile,
            "tile_pad": tile_pad,
            "batch_size": batch_size,
            "channels_last": channels_last,
            "compile": compile,
        }
        validate_params(params, self._parameter_constraints, "Upscaler")
        self.tile = int(tile)
        self.tile_pad = int(tile_pad)
        self.device = resolve_device(device)
        cuda = self.device.type == "cuda"
        self.batch_size = _default_batch_size(self.device, batch_size)
        # tiles per pass by a pixel budget only for the CUDA default (tiles_per_pass)
        self._pass_pixels = _PASS_PIXELS_CUDA if cuda and batch_size is None else None
        self.half = _uses_fp16(self.device, half)
        self.channels_last = cuda if channels_last is None else channels_last
        self.compile = compile
        self.progress = bool(progress)
        self._weights: Any = None
        self._model: nn.Module | None = None
        self._model_id: str | None = None
        self._compiled: Callable[[Any], Any] | None = None
        self._compile_error: str | None = None  # why compiling failed; then never tried again
        self._max_batch: int | None = None  # tiles per pass after running out of GPU memory
        self._cudnn_autotune = cuda  # a speed switch for benches/esrgan_gpu.py
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
        import torch

        model = model.eval().to(self.device)
        if self.half:
            model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
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
        """What the output bits depend on (besides the input): model, tiling, precision; not
        the speed settings (``batch_size``, ``channels_last``, ``compile``)."""
        return _output_settings(self.model_id, self.tile, self.tile_pad, self.half)

    def __repr__(self) -> str:
        if self._weights is None:
            model = f"<{type(self._model).__name__}>"
        elif isinstance(self._weights, Mapping):
            model = "<state dict>"
        else:
            model = repr(os.fspath(self._weights))
        return (
            f"Upscaler({model}, device={str(self.device)!r}, tile={self.tile}, "
            f"tile_pad={self.tile_pad}, batch_size={self.batch_size}, half={self.half}, "
            f"channels_last={self.channels_last}, compile={self.compile!r})"
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
        """Upscale a stream of images, yielding results in order; ``batch_size`` inputs are
        read at a time (on CUDA the next chunk is queued before the current one's results are
        yielded, so up to two chunks are held)."""
        bar = None
        if self.progress:
            from tqdm import tqdm

            if total is None and hasattr(images, "__len__"):
                total = len(images)  # type: ignore[arg-type]
            bar = tqdm(total=total, unit="img", desc="upscale", leave=False)
        try:
            for results in self._pipeline(self._chunks(images), bar):
                yield from results
        finally:
            if bar is not None:
                bar.close()

    # -- the work

    def _chunks(self, images: Iterable[np.ndarray]) -> Iterator[list[np.ndarray]]:
        chunk: list[np.ndarray] = []
        for k, img in enumerate(images):
            chunk.append(_check_image(img, k))
            if len(chunk) == self.batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    @property
    def _lookahead(self) -> int:
        """Chunks queued ahead of the one being handed back: 1 on CUDA (host work overlaps GPU
        work), 0 elsewhere (the work runs on the calling thread anyway)."""
        return 1 if self.device.type == "cuda" else 0

    def _pipeline(
        self, chunks: Iterable[list[np.ndarray]], bar: Any = None
    ) -> Iterator[list[np.ndarray]]:
        """The results of each chunk, in order, with :attr:`_lookahead` chunks queued ahead."""
        queued: collections.deque[_Pending] = collections.deque()
        for chunk in chunks:
            queued.append(self._launch(chunk))
            if len(queued) > self._lookahead:
                yield self._finish(queued.popleft(), bar)
        while queued:
            yield self._finish(queued.popleft(), bar)

    def _run_chunk(self, images: list[np.ndarray], bar: Any = None) -> list[np.ndarray]:
        return self._finish(self._launch(images), bar)

    def _network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network to call: compiled when ``compile`` asks for it and compiling works."""
        model = self.model
        if self.compile is False or self._compile_error is not None:
            return model
        if self._compiled is None:
            mode = "default" if self.compile is True else str(self.compile)
            try:
                self._compiled = _compile_model(model, mode)
            except Exception as exc:  # torch.compile refuses (Python version, platform)
                self._compile_failed(exc)
                return model
        return self._compiled

    def _compile_failed(self, exc: BaseException) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self._compile_error = f"{type(exc).__name__}: {first}"[:500]
        self._compiled = None
        warnings.warn(
            f"Upscaler: torch.compile failed ({self._compile_error}); running the network "
            "uncompiled",
            RuntimeWarning,
            stacklevel=4,
        )

    def _forward_uint8(self, xb: torch.Tensor) -> torch.Tensor:
        """The network on a float batch, quantised to uint8 on its device: clamp to [0, 1],
        x255, round half to even (as always)."""
        import torch

        net = self._network()
        try:
            y = net(xb)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            if net is self.model:
                raise
            self._compile_failed(exc)  # a backend that fails on first use: run uncompiled
            y = self.model(xb)
        return y.float().clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)

    def _launch(self, images: list[np.ndarray]) -> _Pending:
        """Queue a chunk's work on the device; :meth:`_finish` waits for it and builds the
        results.

        The chunk goes up in one copy (grey images as one channel, widened to the network's
        three on the device), tiles of equal shape are batched, each batch's output is
        quantised to uint8 on the device and put in place in one device buffer, and one copy
        (non-blocking, into pinned memory on CUDA) brings the chunk back. No step waits for the
        device until :meth:`_finish`.
        """
        import torch

        model = self.model
        dev = self.device
        cuda = dev.type == "cuda"
        s = _int_attr(model, "scale", 4)
        in_ch = _int_attr(model, "num_in_ch", 3)
        out_ch = _int_attr(model, "num_out_ch", 3)

        # inputs as (C, H, W) uint8, C = 1 for grey images (widened on the device) or 3
        hwc = []
        for img in images:
            x = img if img.ndim == 2 else (img[..., 0] if img.shape[2] == 1 else img)
            if x.ndim == 3 and in_ch == 1:
                x = _to_grey(x)
            hwc.append(x[..., None] if x.ndim == 2 else x)
        in_layout, n_in = [], 0
        for x in hwc:
            in_layout.append((n_in, (x.shape[2], x.shape[0], x.shape[1])))
            n_in += x.size
        host_in = torch.empty(n_in, dtype=torch.uint8, pin_memory=cuda)
        buf = host_in.numpy()
        for x, (o, chw) in zip(hwc, in_layout, strict=True):
            np.copyto(buf[o : o + x.size].reshape(chw), x.transpose(2, 0, 1))
        x_dev = host_in.to(dev, non_blocking=cuda)
        x_views = [x_dev[o : o + math.prod(chw)].view(chw) for o, chw in in_layout]

        # outputs as the network makes them (grey images are turned grey on the host, in Rust)
        out_layout, n_out = [], 0
        for x in hwc:
            out_layout.append((n_out, (out_ch, x.shape[0] * s, x.shape[1] * s)))
            n_out += math.prod(out_layout[-1][1])
        y_dev = torch.empty(n_out, dtype=torch.uint8, device=dev)
        y_views = [y_dev[o : o + math.prod(chw)].view(chw) for o, chw in out_layout]

        groups: dict[tuple[int, int], list[_Tile]] = {}
        for i, x in enumerate(hwc):
            for t in _tiles(i, x.shape[0], x.shape[1], self.tile, self.tile_pad, s):
                shape = (t.src[0].stop - t.src[0].start, t.src[1].stop - t.src[1].start)
                groups.setdefault(shape, []).append(t)
        with torch.inference_mode(), cudnn_autotune(cuda and self._cudnn_autotune):
            for shape, group in groups.items():
                per_pass = tiles_per_pass(self.batch_size, self._pass_pixels, *shape)
                k = 0
                while k < len(group):
                    part = group[k : k + min(per_pass, self._max_batch or len(group))]
                    try:
                        self._run_part(part, x_views, y_views, in_ch)
                    except torch.cuda.OutOfMemoryError:
                        if len(part) == 1:
                            raise
                        out_of_memory = True
                    else:
                        out_of_memory = False
                    if out_of_memory:  # outside the except: its frames (and tensors) are gone
                        self._retry_smaller(len(part))
                        continue
                    k += len(part)

            if cuda:
                host = torch.empty(n_out, dtype=torch.uint8, pin_memory=True)
                host.copy_(y_dev, non_blocking=True)
                done = torch.cuda.Event()
                done.record(torch.cuda.current_stream(dev))
            else:
                host, done = y_dev.cpu(), None
        return _Pending(images, host, out_layout, done, (host_in, x_dev, y_dev))

    def _run_part(
        self,
        part: list[_Tile],
        x_views: list[torch.Tensor],
        y_views: list[torch.Tensor],
        in_ch: int,
    ) -> None:
        """One forward pass over the tiles ``part`` (all of one shape), from the device inputs
        ``x_views`` into the device outputs ``y_views``."""
        import torch

        tiles = []
        for t in part:
            x = x_views[t.image][:, t.src[0], t.src[1]]
            tiles.append(x.expand(in_ch, -1, -1) if x.shape[0] == 1 else x)
        dtype = torch.float16 if self.half else torch.float32
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        xb = torch.stack(tiles).to(dtype).div_(255.0).contiguous(memory_format=fmt)
        y = self._forward_uint8(xb)
        del xb
        for j, t in enumerate(part):
            y_views[t.image][:, t.dst[0], t.dst[1]] = y[j, :, t.crop[0], t.crop[1]]

    def _retry_smaller(self, n: int) -> None:
        """After running out of GPU memory with ``n`` tiles in a pass: half as many from now on."""
        import torch

        self._max_batch = max(1, n // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        warnings.warn(
            f"Upscaler: out of GPU memory with {n} tiles per forward pass; continuing with "
            f"{self._max_batch} (a smaller batch_size or tile avoids the retry)",
            RuntimeWarning,
            stacklevel=5,
        )

    def _finish(self, pending: _Pending, bar: Any = None) -> list[np.ndarray]:
        """Wait for a chunk queued by :meth:`_launch` and build its results (each its own
        array: none keeps the chunk's buffer alive)."""
        if pending.done is not None:
            pending.done.synchronize()
        out = pending.host.numpy()
        results = []
        for img, (o, chw) in zip(pending.images, pending.layout, strict=True):
            y = out[o : o + math.prod(chw)].reshape(chw).transpose(1, 2, 0)  # (H, W, C)
            if img.ndim == 2 or img.shape[2] == 1:  # grey in: grey out, by the Rust luma rule
                g = _to_grey(y) if chw[0] == 3 else y[..., 0]
                res = g[..., None] if img.ndim == 3 else g
            else:
                res = y if chw[0] == 3 else np.repeat(y, 3, axis=2)
            res = np.ascontiguousarray(res)
            if np.may_share_memory(res, out):
                res = res.copy()
            results.append(res)
            if bar is not None:
                bar.update(1)
        return results
