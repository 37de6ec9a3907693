"""Batches to a CUDA device in the fewest bytes (timm's ``PrefetchLoader``, with a pinned pool).

On CUDA the Rust core makes uint8 grey batches ``(N, 1, H, W)`` (``dtype="uint8",
layout="grey"``): a twelfth of the bytes of the float32 RGB batch it makes for the CPU. Each
batch then

1. is copied by the CPU into a pinned (page-locked) staging slot from a small
   :class:`StagingPool` (its labels too);
2. goes to the GPU asynchronously on a side stream (a copy from pinned memory does not block the
   host, and overlaps the model's work on the main stream);
3. is expanded to three channels and normalised there, in one elementwise kernel
   (``addcmul(bias, grey, scale)`` with ``scale = 1 / (255 std)``, ``bias = -mean / std`` per
   channel, the Rust core's formula), written in the model's dtype (float16 under mixed
   precision, which autocast would cast to anyway) and memory format (channels-last).

The consumer's stream waits for the side stream's "ready" event, and the batch is
``record_stream``-ed onto it, so the caching allocator never hands its memory to the side stream
while the model still reads it.

**Buffer lifetime.** A staging slot is recycled only after the copies that read it have
finished: right after queueing them the feed records an event on the side stream
(:meth:`StagingPool.release`), and :meth:`StagingPool.acquire` hands out a slot whose event has
completed (``query()``), otherwise waits (``synchronize()``) for the oldest one. A pending slot is
never handed out. The event is made by an injectable ``event_factory`` (``torch.cuda.Event`` on
CUDA), so a CPU test can drive the pool with a fake event.

**Why expand grey on the GPU rather than fold it into the first convolution.** Summing the first
convolution's weights over its three input channels would save the expansion (a cheap
elementwise kernel over device memory) and a third of the first layer's FLOPs, but it changes the
model: its state dict, saved files, ``weights=`` files, ONNX graphs (whose input is RGB float32,
as ``OnnxFingerprintModel`` and other tools feed it) and pretrained weights would differ between
devices, and zero padding at the image border would no longer mean the same thing (zeros in the
normalised space are not zeros in the raw grey space when ``mean != 0``). Expanding on the GPU
keeps one model for every device and path; the copy is already a twelfth of the bytes.

**Numerics.** The CPU (and ONNX, and MPS) path keeps the Rust core's float32 normalisation. The
uint8 path rounds resampled (resized or augmented) values to the nearest grey level before
normalising (at most half a grey level, below the 8-bit source's own resolution); where no
resampling happens (source size equals the model's input size, no augmentation) both give the
same values within float32 rounding.

This module imports torch.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import torch

from ctfp.data.preprocess import ImageCache

__all__ = [
    "AUTO_CACHE_MAX_BYTES",
    "DeviceFeed",
    "StagingPool",
    "StagingSlot",
    "auto_cache_bytes",
    "decode_cache",
    "loader_format",
    "make_feed",
    "prepare_model",
    "uses_device_feed",
]

#: ``cache_bytes="auto"``: at most this much decoded pixel data, and at most a quarter of RAM.
AUTO_CACHE_MAX_BYTES = 4 << 30


class EventLike(Protocol):
    """What the pool needs of an event: ``torch.cuda.Event`` has it; tests pass a fake."""

    def record(self, stream: Any = None) -> Any: ...
    def query(self) -> bool: ...
    def synchronize(self) -> Any: ...


class _DoneEvent:
    """The event of a synchronous copy (CPU, MPS): complete as soon as it is recorded."""

    def record(self, stream: Any = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass


class StagingSlot:
    """Host buffers for one batch (images, labels), reused from batch to batch; pinned when
    ``pin``. A buffer only grows (a larger batch reallocates it)."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.buffers: list[torch.Tensor | None] = []
        self.event: EventLike | None = None  # recorded after the copies that read this slot
        self.in_use = False

    def stage(self, k: int, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Copy ``array`` into buffer ``k`` and return the view of it that holds the copy.

        The copy is one ``memcpy`` in this thread (numpy's), not torch's thread pool: OpenMP
        workers spinning after it would take cores from the loader and the launching thread."""
        src = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        while len(self.buffers) <= k:
            self.buffers.append(None)
        buf = self.buffers[k]
        dtype = torch.from_numpy(np.empty(0, src.dtype)).dtype
        n = src.size
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = torch.empty(max(n, 1), dtype=dtype, pin_memory=self.pin)
            self.buffers[k] = buf
        view = buf[:n].view(src.shape)
        np.copyto(view.numpy(), src, casting="no")
        return view


class StagingPool:
    """``size`` staging slots used in turn; a slot whose copies are pending is never handed out.

    ``event_factory()`` makes the event :meth:`release` records on the copying stream
    (``torch.cuda.Event`` on CUDA; a fake in tests). ``waits`` counts the times :meth:`acquire`
    had to wait for a copy to finish.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        pin: bool = False,
        event_factory: Callable[[], EventLike] = _DoneEvent,
    ) -> None:
        if size < 1:
            raise ValueError(f"size: expected an integer >= 1, found {size!r}")
        self.slots = [StagingSlot(pin) for _ in range(size)]
        self._order = collections.deque(self.slots)  # least recently released first
        self.event_factory = event_factory
        self.pin = pin
        self.waits = 0

    def acquire(self) -> StagingSlot:
        """A slot no pending copy reads: an idle one (oldest first), else the oldest after its
        copies have finished (``event.synchronize()``)."""
        free = [s for s in self._order if not s.in_use]
        if not free:
            raise RuntimeError("StagingPool: every slot is in use; release one first")
        slot = next((s for s in free if s.event is None or s.event.query()), None)
        if slot is None:
            slot = free[0]
            assert slot.event is not None
            slot.event.synchronize()
            self.waits += 1
            if not slot.event.query():  # synchronize() must mean done
                raise RuntimeError("StagingPool: the event is still pending after synchronize()")
        slot.in_use = True  # its event (if any) has completed: nothing reads it any more
        return slot

    def release(self, slot: StagingSlot, stream: Any = None) -> None:
        """Give ``slot`` back after queueing the copies that read it on ``stream``: its event is
        recorded there, and it is reused once that event has completed."""
        event = self.event_factory()
        event.record(stream)
        slot.event = event
        slot.in_use = False
        self._order.remove(slot)
        self._order.append(slot)


class DeviceFeed:
    """Iterate over ``batches`` of uint8 images (``(N, 1, H, W)`` grey or ``(N, 3, H, W)``),
    or ``(images, labels)`` pairs, as normalised ``(N, 3, H, W)`` tensors on ``device``.

    Parameters
    ----------
    batches : iterable
        What :meth:`ctfp.BatchStream.iter_epoch` yields with ``dtype="uint8"``, ``layout="grey"``.
    device : torch.device
    normalize : ((float,) * 3, (float,) * 3)
        Per-channel mean and std on the 0..1 scale (the estimator's ``normalize_``).
    dtype : torch.dtype, default=torch.float32
        Of the images handed out (``torch.float16`` under mixed precision).
    channels_last : bool, default=False
        Hand out channels-last images (what a channels-last model reads fastest).
    pool : StagingPool, optional
        Staging slots, shared between the epochs of one fit (pinned on CUDA); by default a pool of
        3 slots, pinned on CUDA.
    stream : torch.cuda.Stream, optional
        The side stream of the copies (CUDA); by default a new one.

    The next batch is staged and its copy queued before the current one is handed out, so the
    copy overlaps the consumer's work. ``loader_wait_s`` is the time spent waiting for
    ``batches`` (the loader) or for a staging slot (a copy to finish); ``n_batches`` the batches
    handed out.
    """

    def __init__(
        self,
        batches: Iterable[Any],
        device: torch.device,
        normalize: tuple[tuple[float, ...], tuple[float, ...]],
        *,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        pool: StagingPool | None = None,
        stream: Any = None,
    ) -> None:
        self.batches = batches
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = dtype
        self.channels_last = channels_last
        if pool is None:
            pool = (
                StagingPool(3, pin=True, event_factory=torch.cuda.Event)
                if self.cuda
                else StagingPool(3)
            )
        self.pool = pool
        self.stream = stream if stream is not None or not self.cuda else torch.cuda.Stream(device)
        mean = np.asarray(normalize[0], dtype=np.float64)
        std = np.asarray(normalize[1], dtype=np.float64)
        # the Rust core's constants: scale = 1 / (255 std), bias = -mean / std, in float32
        scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, 3, 1, 1)
        bias = (-mean / std).astype(np.float32).reshape(1, 3, 1, 1)
        # made on the side stream, the only one that reads them (freed memory goes back to it)
        with torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext():
            self._scale = torch.from_numpy(scale).to(self.device)
            self._bias = torch.from_numpy(bias).to(self.device)
        self.loader_wait_s = 0.0
        self.n_batches = 0

    def normalise(self, grey: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 1 or 3, H, W)`` on the device -> normalised ``(N, 3, H, W)`` in ``dtype``
        and the memory format asked for, in one kernel (the grey plane is broadcast)."""
        if grey.dtype != torch.uint8 or grey.dim() != 4 or grey.shape[1] not in (1, 3):
            raise TypeError(
                f"DeviceFeed: expected uint8 images (N, 1, H, W) or (N, 3, H, W), found "
                f"{grey.dtype} {tuple(grey.shape)}; make them with dtype='uint8', layout='grey'"
            )
        n, _, h, w = grey.shape
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty((n, 3, h, w), dtype=self.dtype, device=grey.device, memory_format=fmt)
        try:
            return torch.addcmul(self._bias, grey, self._scale, out=out)
        except RuntimeError:  # a torch build without the mixed-dtype kernel: float32, then cast
            return out.copy_(torch.addcmul(self._bias, grey, self._scale))

    def _stage(self, item: Any) -> tuple[list[torch.Tensor], Any]:
        """Stage one batch and queue its copy and normalisation; (tensors, ready event)."""
        images, labels = item if isinstance(item, tuple) else (item, None)
        t0 = time.perf_counter()
        slot = self.pool.acquire()
        self.loader_wait_s += time.perf_counter() - t0  # waiting for a copy to free a slot
        host = [slot.stage(0, images)]
        if labels is not None:
            host.append(slot.stage(1, np.asarray(labels)))
        if not self.cuda:  # synchronous: copy out of the slot before it is released
            dev = [h.to(self.device, copy=True) for h in host]
            self.pool.release(slot)
            return [self.normalise(dev[0]), *dev[1:]], None
        with torch.cuda.stream(self.stream):
            dev = [h.to(self.device, non_blocking=True) for h in host]
            self.pool.release(slot, self.stream)  # reusable once these copies have finished
            out = [self.normalise(dev[0]), *dev[1:]]
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return out, ready

    def _hand_over(self, staged: tuple[list[torch.Tensor], Any], labelled: bool) -> Any:
        tensors, ready = staged
        if ready is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(ready)
            for t in tensors:  # allocated on the side stream, read on the consumer's
                t.record_stream(consumer)
        self.n_batches += 1
        return tuple(tensors) if labelled else tensors[0]

    def __iter__(self) -> Iterator[Any]:
        self.loader_wait_s, self.n_batches = 0.0, 0
        source = iter(self.batches)
        try:
            pending = None
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    item = None
                self.loader_wait_s += time.perf_counter() - t0
                staged = None if item is None else (self._stage(item), isinstance(item, tuple))
                if pending is not None:
                    yield self._hand_over(*pending)
                if staged is None:
                    return
                pending = staged
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()


def uses_device_feed(device: torch.device) -> bool:
    """Whether batches go through :class:`DeviceFeed` on ``device`` (CUDA only)."""
    return torch.device(device).type == "cuda"


def loader_format(
    device: torch.device, normalize: tuple[tuple[float, ...], tuple[float, ...]]
) -> dict[str, Any]:
    """The :class:`ctfp.BatchStream` output options for ``device``: uint8 grey for the
    :class:`DeviceFeed` on CUDA, the Rust core's normalised float32 RGB elsewhere."""
    if uses_device_feed(device):
        return {"dtype": "uint8", "layout": "grey"}
    return {"dtype": "float32", "normalize": normalize}


def make_feed(
    device: torch.device,
    normalize: tuple[tuple[float, ...], tuple[float, ...]],
    *,
    dtype: torch.dtype = torch.float32,
    pool_size: int = 3,
) -> Callable[[Iterable[Any]], Iterable[Any]]:
    """A function that turns one epoch's batches (from a stream in :func:`loader_format`) into
    what the model takes: a channels-last :class:`DeviceFeed` on CUDA, sharing one pinned pool
    and side stream between the calls; the batches unchanged elsewhere."""
    if not uses_device_feed(device):
        return lambda batches: batches
    pool = StagingPool(pool_size, pin=True, event_factory=torch.cuda.Event)
    stream = torch.cuda.Stream(device)

    def feed(batches: Iterable[Any]) -> DeviceFeed:
        return DeviceFeed(
            batches, device, normalize, dtype=dtype, channels_last=True, pool=pool, stream=stream
        )

    return feed


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in the fastest memory format for ``device``: channels-last on CUDA (in place;
    the weights' values and state-dict keys do not change), as it is elsewhere."""
    if uses_device_feed(device):
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def auto_cache_bytes() -> int:
    """``cache_bytes="auto"``: ``min(4 GiB, a quarter of physical memory)``."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume 16 GiB
        ram = 16 << 30
    return int(min(AUTO_CACHE_MAX_BYTES, ram // 4))


def decode_cache(cache_bytes: int | str | None) -> ImageCache:
    """The decoded-image cache of one fit: ``"auto"`` (:func:`auto_cache_bytes`), a byte budget
    (0 caches nothing) or None (no limit). Images are kept until the budget is full; the rest
    are decoded again each epoch, so a dataset larger than the budget streams from disk."""
    if cache_bytes == "auto":
        return ImageCache(max_bytes=auto_cache_bytes())
    return ImageCache(max_bytes=None if cache_bytes is None else int(cache_bytes))
