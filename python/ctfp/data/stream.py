"""A batch stream over a list of images: per-epoch shuffling, augmentation and background
prefetching, yielding numpy arrays (``torch.from_numpy`` shares their memory)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ctfp.data.preprocess import Augment, DecodeLimits, ImageCache, _check_int, load_batch

__all__ = ["BatchStream", "shard_batch"]

_DONE = object()


def shard_batch(idx: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s part of one batch split over ``world_size`` ranks (data-parallel training):
    a contiguous slice, in rank order, sizes differing by at most one (later ranks get the larger
    parts). Every index of ``idx`` is in exactly one rank's part; a part may be empty when the
    batch has fewer indices than there are ranks."""
    m = len(idx)
    return idx[rank * m // world_size : (rank + 1) * m // world_size]


class BatchStream:
    """Iterate over ``sources`` in batches, one epoch per ``for`` loop.

    Each pass draws a fresh order (when ``shuffle``) and fresh augmentation from
    ``(seed, epoch)``; sample ids are the sources' positions in ``sources``, so a given epoch is
    reproducible whatever ``batch_size`` or ``n_threads``. While the caller works on one batch,
    a background thread assembles the next ``prefetch`` batches (the Rust core releases the GIL,
    so loading and a torch training step run at the same time).

    Parameters
    ----------
    sources : sequence
        Paths, PNG bytes or uint8 arrays, as :func:`ctfp.load_batch` takes.
    labels : array-like, optional
        One label per source; when given, each item is ``(images, labels)``.
    batch_size : int
    shuffle : bool
        New order each epoch from ``(seed, epoch)``.
    drop_last : bool
        Skip a final batch smaller than ``batch_size``.
    prefetch : int
        Batches assembled ahead in the background; ``0`` loads in the caller's thread.
    cache : bool or ctfp.ImageCache
        ``True`` keeps decoded path sources in memory after their first use, so epochs after the
        first skip PNG decoding.
    shard : (rank, world_size) or None
        Data-parallel training: ``batch_size`` is the global batch, and this stream yields only
        rank ``rank``'s part of each (:func:`shard_batch`); the order is the same on every rank,
        so the ranks' parts cover each epoch's samples once. ``len()`` stays the global count.
    **load_kwargs
        ``size``, ``augment``, ``dtype``, ``normalize``, ``layout``, ``interpolation``, ``fill``,
        ``fill_value``, ``limits``, ``n_threads``: passed to :func:`ctfp.load_batch`.
        ``augment`` may be one config or a sequence with one per source.

    Examples
    --------
    Five synthetic slices in batches of two, augmented and normalised for an ImageNet backbone;
    each ``for`` loop is the next epoch (a training step would take ``torch.from_numpy(xb)``):

    >>> import numpy as np, ctfp
    >>> images = list(ctfp.synthetic.make_slices(5, size=64))
    >>> stream = BatchStream(images, labels=np.arange(5), batch_size=2, size=32,
    ...                      augment=ctfp.Augment(), dtype="float32", normalize="imagenet")
    >>> for epoch in range(2):
    ...     print([(xb.shape, yb.tolist()) for xb, yb in stream][0][0])
    (2, 3, 32, 32)
    (2, 3, 32, 32)
    >>> len(stream)
    3
    """

    def __init__(
        self,
        sources: Sequence[Any],
        *,
        labels: Sequence[Any] | np.ndarray | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        prefetch: int = 2,
        cache: bool | ImageCache = False,
        size: int | tuple[int, int] = (224, 224),
        augment: Augment | Sequence[Augment | None] | None = None,
        dtype: str = "uint8",
        normalize: Any = None,
        layout: str = "rgb",
        interpolation: str = "bilinear",
        fill: str = "nearest",
        fill_value: float = 0.0,
        limits: DecodeLimits | None = None,
        n_threads: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.sources = list(sources)
        if labels is not None:
            labels = np.asarray(labels)
            if len(labels) != len(self.sources):
                n = len(self.sources)
                raise ValueError(f"labels: expected {n} (one per source), found {len(labels)}")
        self.labels = labels
        self.batch_size = _check_int("batch_size", batch_size, 1, 2**31)
        self.shuffle = bool(shuffle)
        if shard is not None:
            world = _check_int("shard world_size", shard[1], 1, 2**31)
            shard = (_check_int("shard rank", shard[0], 0, world - 1), world)
        self.shard = shard
        self.drop_last = bool(drop_last)
        self.seed = _check_int("seed", seed)
        self.prefetch = _check_int("prefetch", prefetch, 0, 1024)
        if isinstance(cache, ImageCache):
            self.cache: ImageCache | None = cache
        elif isinstance(cache, bool):
            self.cache = ImageCache() if cache else None
        else:
            raise TypeError(
                f"cache: expected a bool or a ctfp.ImageCache, found {type(cache).__name__}"
            )
        self.load_kwargs = dict(
            size=size,
            augment=augment,
            dtype=dtype,
            normalize=normalize,
            layout=layout,
            interpolation=interpolation,
            fill=fill,
            fill_value=fill_value,
            limits=limits,
            n_threads=n_threads,
        )
        self.epoch = 0
        if augment is not None and not isinstance(augment, Augment):
            augment = list(augment)
            if len(augment) != len(self.sources):
                raise ValueError(
                    f"augment: expected {len(self.sources)} configs (one per source), "
                    f"found {len(augment)}"
                )
            self.load_kwargs["augment"] = augment
        # Fail now, not in the background thread, on bad loader options.
        probe = {**self.load_kwargs, "augment": augment if isinstance(augment, Augment) else None}
        load_batch(self.sources[:0], **probe)

    def __len__(self) -> int:
        n, b = len(self.sources), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (a permutation of ``0 .. N-1`` when shuffling)."""
        n = len(self.sources)
        if not self.shuffle:
            return np.arange(n)
        return np.random.Generator(
            np.random.PCG64([self.seed, _check_int("epoch", epoch)])
        ).permutation(n)

    def _batches(self, epoch: int) -> Iterator[np.ndarray]:
        order = self.order(epoch)
        for k in range(len(self)):
            batch = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield batch if self.shard is None else shard_batch(batch, *self.shard)

    def _load(self, idx: np.ndarray, epoch: int) -> Any:
        kwargs = self.load_kwargs
        augment = kwargs["augment"]
        if augment is not None and not isinstance(augment, Augment):
            kwargs = {**kwargs, "augment": [augment[i] for i in idx]}  # one config per source
        images = load_batch(
            [self.sources[i] for i in idx],
            sample_ids=idx,
            seed=self.seed,
            epoch=epoch,
            cache=self.cache,
            **kwargs,
        )
        return images if self.labels is None else (images, self.labels[idx])

    def iter_epoch(self, epoch: int) -> Iterator[Any]:
        """Iterate over the batches of one given epoch (does not move the epoch counter)."""
        if self.prefetch == 0:
            for idx in self._batches(epoch):
                yield self._load(idx, epoch)
            return
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for idx in self._batches(epoch):
                    item = self._load(idx, epoch)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(_DONE)
            except BaseException as exc:  # handed to the consumer, raised there
                q.put(exc)

        worker = threading.Thread(target=produce, name="ctfp-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # The consumer stopped early or failed: let the producer finish and free the queue.
            stop.set()
            while worker.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)
