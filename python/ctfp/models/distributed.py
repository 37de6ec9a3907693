"""Data-parallel training of :class:`~ctfp.FingerprintClassifier` under ``torchrun``.

``fit`` asks :func:`setup` for a :class:`DistributedContext`. Outside ``torchrun`` (no
``WORLD_SIZE > 1`` in the environment and no initialised process group) it is inactive and every
method is a no-op, so a one-process fit is exactly what it was. Under ``torchrun``:

- **process group**: joined if the script already initialised one, else initialised from
  ``torchrun``'s environment (``env://``): NCCL when the rank trains on a GPU, gloo on the CPU.
- **device**: ``"auto"``/``"cuda"`` is the GPU of the local rank (``cuda:LOCAL_RANK``); a node
  with fewer GPUs than processes is an error, never a silent fallback. ``"cpu"`` trains on CPUs.
- **seeds and data**: rank 0's seeds are used on every rank (also for ``random_state=None``), and
  ``fit`` checks that every rank was given the same images and labels.
- **data**: ``batch_size`` is the *global* batch. Every rank computes the same shuffled order of
  an epoch from ``(seed, epoch)``, and takes its contiguous part of each global batch
  (:func:`ctfp.data.stream.shard_batch`): each sample is used once per epoch, by one rank, with
  the augmentation drawn from ``(seed, epoch, sample id)`` as in a one-process fit. All ranks take
  the same number of steps; the last global batch may split unevenly (or leave a rank none).
- **gradients**: the model is wrapped in ``DistributedDataParallel``. Each rank's loss is scaled
  by ``n_rank * world_size / n_global`` so DDP's gradient average is the gradient of the mean
  loss over the global batch, even for an uneven last batch.
- **BatchNorm**: converted to synchronised BatchNorm for the fit (``torch.nn.SyncBatchNorm`` on
  GPUs; :class:`GlooSyncBatchNorm` on CPUs, where torch's needs a GPU), so batch statistics are
  those of the global batch, as in a one-process fit, and converted back afterwards.
- **validation**: each rank predicts its part of the validation images, the logits are gathered
  and every rank gets rank 0's history row, so early stopping decides the same everywhere.
- **outputs**: progress bars and callbacks (logs, checkpoints) run on rank 0 only; a callback's
  request to stop is sent to every rank. ``fit`` returns the same estimator on every rank:
  ``model_`` is the plain (unwrapped) network with equal weights, ``history_`` is equal, and only
  ``device_`` names each rank's own GPU.

This module imports torch.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from ctfp._util import resolve_device
from ctfp.data.stream import shard_batch

__all__ = [
    "DistributedContext",
    "GlooSyncBatchNorm",
    "is_main_process",
    "launched_world",
    "rank_device",
    "revert_sync_batchnorm",
    "setup",
    "shard_batch",
    "sync_batchnorm",
]


def launched_world() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when this process is one of several data-parallel
    ranks (an initialised process group, or ``torchrun``'s ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
    with ``WORLD_SIZE > 1``); None for a one-process run."""
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if world < 2:
            return None
        rank = dist.get_rank()
        return rank, world, int(os.environ.get("LOCAL_RANK", rank))
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world < 2 or "RANK" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def is_main_process() -> bool:
    """True on rank 0 of a data-parallel run and in a one-process run: where to save files."""
    world = launched_world()
    return world is None or world[0] == 0


def rank_device(device: object, local_rank: int) -> torch.device:
    """The device rank ``local_rank`` of a node trains on, for the estimator's ``device``.

    ``"auto"`` and ``"cuda"`` mean the local rank's own GPU, ``cuda:LOCAL_RANK`` (CPU when torch
    sees no GPU, for ``"auto"``); ``"cuda:N"`` and ``"cpu"`` are taken as given. Apple's MPS has
    no collective backend: an error, as is a node with fewer GPUs than processes.
    """
    dev = resolve_device(device)
    if dev.type == "mps":
        raise ValueError(
            f"device={str(device)!r}: data-parallel training (torchrun) runs on CUDA GPUs (NCCL) "
            f"or on CPUs (gloo), not on MPS; pass device='cpu'"
        )
    if dev.type == "cuda" and dev.index is None:
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"device={str(device)!r} under torchrun: local rank {local_rank} needs a GPU of "
                f"its own, but torch sees {count} CUDA device(s) on this node; start at most "
                f"{count} processes per node (--nproc_per_node={count}) or pass device='cpu'"
            )
        dev = torch.device("cuda", local_rank)
    return dev


_CREATED_GROUP = False
_STATS_GROUPS: dict[int, Any] = {}


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _init_group(device: torch.device) -> None:
    """Join ``torchrun``'s process group (``env://``), unless this process is already in one."""
    global _CREATED_GROUP
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        backend = str(dist.get_backend()).lower()
        if device.type == "cpu" and "gloo" not in backend:
            raise ValueError(
                f"device='cpu': the initialised process group uses {backend!r}, which cannot "
                f"reduce CPU tensors; initialise it with backend='gloo' (or 'cpu:gloo,cuda:nccl') "
                f"or train on GPUs"
            )
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    if not _CREATED_GROUP:
        _CREATED_GROUP = True
        atexit.register(_destroy_group)


def _stats_group(device: torch.device) -> Any:
    """The group that :class:`GlooSyncBatchNorm` reduces batch statistics over on CPUs: a gloo
    group of its own, so that its reductions never interleave with DDP's gradient buckets."""
    if device.type != "cpu":
        return None
    key = id(dist.group.WORLD)
    if key not in _STATS_GROUPS:
        _STATS_GROUPS[key] = dist.new_group(backend="gloo")
    return _STATS_GROUPS[key]


def setup(device: object) -> DistributedContext:
    """The context of this ``fit``: inactive (one process, :func:`ctfp._util.resolve_device`'s
    device) outside ``torchrun``; else this rank's device, with the process group joined."""
    world = launched_world()
    if world is None:
        return DistributedContext(device=resolve_device(device))
    rank, world_size, local_rank = world
    dev = rank_device(device, local_rank)
    _init_group(dev)
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise RuntimeError(
            f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees "
            f"with the environment (RANK={rank}, WORLD_SIZE={world_size})"
        )
    return DistributedContext(
        device=dev, rank=rank, world_size=world_size, local_rank=local_rank,
        stats_group=_stats_group(dev),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# synchronised BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of ``group``; its gradient is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, over a gloo group, for
    CPU tensors (``torch.nn.SyncBatchNorm`` needs a GPU). The per-channel sums and sums of
    squares (float64) are summed over the ranks by a differentiable all-reduce, so the gradient
    is that of BatchNorm over the concatenated batch; a rank may hold no images. Evaluation
    mode is plain BatchNorm on the running statistics (no communication)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Any = None) -> None:  # fmt: skip
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), found {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.double()
        local = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([input.numel() // c])])
        stats = _AllReduceSum.apply(local, self.process_group)
        n = int(stats[-1].item())
        if n < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got {n} over all ranks"
            )
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        shape = (1, c) + (1,) * (input.dim() - 2)
        y = ((x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)).to(input.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            tracked, r_mean, r_var = self.num_batches_tracked, self.running_mean, self.running_var
            assert tracked is not None and r_mean is not None and r_var is not None  # tracked
            with torch.no_grad():
                tracked.add_(1)
                if self.momentum is None:  # cumulative moving average, as torch's BatchNorm
                    f = 1.0 / float(tracked)
                else:
                    f = float(self.momentum)
                unbiased = var.detach() * (n / (n - 1))
                r_mean.mul_(1 - f).add_(mean.detach().to(r_mean.dtype), alpha=f)
                r_var.mul_(1 - f).add_(unbiased.to(r_var.dtype), alpha=f)
        return y


def _replace_batchnorm(
    module: torch.nn.Module, make: Callable[[_BatchNorm], Any]
) -> torch.nn.Module:
    new = make(module) if isinstance(module, _BatchNorm) else None
    if new is not None and new is not module:
        new.weight, new.bias = module.weight, module.bias  # the same Parameters: optimisers
        if module.track_running_stats:  # and callers keep working
            new.running_mean = module.running_mean
            new.running_var = module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        module = new
    for name, child in list(module.named_children()):
        module.add_module(name, _replace_batchnorm(child, make))
    return module


def sync_batchnorm(
    module: torch.nn.Module, device: torch.device, group: Any = None
) -> torch.nn.Module:
    """``module`` with every BatchNorm synchronised over the ranks (sharing its parameters and
    buffers): ``torch.nn.SyncBatchNorm`` for CUDA, :class:`GlooSyncBatchNorm` otherwise.
    :func:`revert_sync_batchnorm` turns them back."""

    def make(bn: _BatchNorm) -> Any:
        if isinstance(bn, (torch.nn.SyncBatchNorm, GlooSyncBatchNorm)):
            return bn
        cls = torch.nn.SyncBatchNorm if device.type == "cuda" else GlooSyncBatchNorm
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                  process_group=group)  # fmt: skip
        new.__dict__["_ctfp_batchnorm_class"] = type(bn)  # a plain attribute, as Module sets it
        return new

    return _replace_batchnorm(module, make)


def revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`sync_batchnorm`: each synchronised BatchNorm it made becomes its original
    class again, with the same parameters and running statistics."""

    def make(bn: _BatchNorm) -> Any:
        cls = getattr(bn, "_ctfp_batchnorm_class", None)
        if cls is None:
            return bn
        return cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)

    return _replace_batchnorm(module, make)


# ------------------------------------------------------------------------------------------------
# the loss and the context


class _GlobalMeanLoss:
    """``loss_fn`` (a mean over the rank's images), scaled so that DDP's average over the ranks is
    the mean over the global batch: ``mean_rank * n_rank * world_size / n_global``. Keeps the
    unscaled sum and count of the epoch for the history's ``loss``."""

    def __init__(self, loss_fn: Callable[..., torch.Tensor], world_size: int, device: Any) -> None:
        self.loss_fn, self.world_size = loss_fn, world_size
        self.total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, images

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n = int(targets.shape[0])
        count = torch.tensor([float(n)], device=logits.device)
        dist.all_reduce(count)
        if n == 0:  # this rank has no image in the step's global batch: take part with zero
            return logits.sum() * 0.0
        mean = self.loss_fn(logits, targets)
        self.total += torch.stack([mean.detach().double() * n, mean.new_tensor(n).double()])
        return mean * (n * self.world_size / count[0])


def _fingerprint(sources: Sequence[Any], y: np.ndarray) -> str:
    """A cheap digest of a fit's images and labels, to check that every rank got the same."""
    h = hashlib.sha256(f"{len(sources)}:".encode())
    h.update(np.ascontiguousarray(y).tobytes())
    for s in sources:
        if isinstance(s, (str, os.PathLike)):
            h.update(os.fsencode(s) + b"\0")
        elif isinstance(s, (bytes, bytearray)):
            h.update(hashlib.sha256(s).digest())
        else:
            a = np.asarray(s)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(np.ascontiguousarray(a.ravel()[:: max(1, a.size // 64)]).tobytes())
    return h.hexdigest()


@dataclass
class DistributedContext:
    """What one ``fit`` needs to know about data parallelism; with ``world_size == 1`` (the
    default) it is inactive and each method does what a one-process fit does."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    stats_group: Any = None
    _ddp: Any = field(default=None, repr=False)
    _compiled: Any = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that shows progress and runs callbacks (logs, checkpoints)."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        """``BatchStream(shard=...)``: this rank's part of each global batch; None alone."""
        return (self.rank, self.world_size) if self.active else None

    def same_on_all_ranks(self, obj: Any) -> Any:
        """``obj`` as rank 0 has it (picklable), on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (a callback's request to stop)."""
        return bool(self.same_on_all_ranks(bool(flag)))

    def agree_on_fit(
        self, seeds: Sequence[int] | np.ndarray, sources: Sequence[Any], y: np.ndarray
    ) -> Any:
        """Rank 0's ``seeds``, after checking that every rank is fitting the same data."""
        if not self.active:
            return tuple(int(s) for s in seeds)
        digests: list[Any] = [None] * self.world_size
        dist.all_gather_object(digests, _fingerprint(sources, y))
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise ValueError(
                f"data-parallel fit: ranks {differ} were given other images or labels than rank "
                f"0 ({len(sources)} images here); every rank must call fit with the same X and y"
            )
        return tuple(self.same_on_all_ranks(tuple(int(s) for s in seeds)))

    @contextlib.contextmanager
    def attached(self, model: torch.nn.Module, seed: int) -> Iterator[torch.nn.Module]:
        """For the fit: ``model`` with synchronised BatchNorm inside ``DistributedDataParallel``
        (used by :meth:`run_epoch`), and torch's random stream (dropout) seeded per rank; on the
        way out ``model`` is plain again (its BatchNorm reverted, no wrapper). Inactive: yields
        ``model`` untouched."""
        if not self.active:
            yield model
            return
        from torch.nn.parallel import DistributedDataParallel

        sync_batchnorm(model, self.device, self.stats_group)
        try:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(model, device_ids=ids)
            rank_seed = np.random.SeedSequence([int(seed), self.rank]).generate_state(1)[0]
            torch.manual_seed(int(rank_seed))  # each rank its own dropout masks
            yield model
        finally:
            self._ddp = self._compiled = None
            revert_sync_batchnorm(model)

    def run_epoch(
        self,
        model: torch.nn.Module,
        loader: Any,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[..., torch.Tensor],
        *,
        validation: tuple[Any, np.ndarray] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """:func:`ctfp.models.training.run_epoch`; data-parallel: the steps through DDP on this
        rank's part of each batch, the global mean loss, validation on this rank's part of the
        validation images (``validation``'s loader sharded the same way) gathered from all
        ranks, and rank 0's row on every rank. ``model`` is the attached model or its
        ``torch.compile`` wrapper; with the latter, the DDP wrapper is compiled for training."""
        from ctfp.models import training

        if not self.active:
            return training.run_epoch(
                model, loader, optimizer, loss_fn, validation=validation, **kwargs
            )
        assert self._ddp is not None, "run_epoch needs attached()"
        loss = _GlobalMeanLoss(loss_fn, self.world_size, self.device)
        plain = getattr(model, "_orig_mod", model)  # torch.compile's wrapper keeps the module
        net = self._ddp
        if plain is not model:
            if self._compiled is None:
                self._compiled = torch.compile(self._ddp)
            net = self._compiled
        row = training.run_epoch(net, loader, optimizer, loss, validation=None, **kwargs)
        total = loss.total.clone()
        dist.all_reduce(total)
        loss_sum, n_images = (float(v) for v in total.cpu())
        row["loss"] = loss_sum / max(n_images, 1.0)
        row["images_per_s"] = n_images / row["seconds"] if row["seconds"] > 0 else float("nan")
        if validation is not None:
            t0 = time.perf_counter()
            metrics = self._validate(plain, *validation, kwargs)
            metrics["val_seconds"] = time.perf_counter() - t0
            head = {"epoch": row.pop("epoch"), "loss": row.pop("loss")}
            row = head | metrics | row
            row["seconds"] += metrics["val_seconds"]
        return self.same_on_all_ranks(row)

    def _validate(
        self, model: torch.nn.Module, loader: Any, y: np.ndarray, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        from ctfp.models import training

        autocast = kwargs.get("autocast", contextlib.nullcontext)
        parts: list[np.ndarray | None] = []
        with contextlib.closing(iter(loader)) as batches:  # type: ignore[type-var]
            for xb in batches:
                if len(xb) == 0:  # None, not an empty array: logits are (n,) or (n, K)
                    parts.append(None)
                else:  # the plain module: DDP's forward would broadcast buffers
                    parts.append(
                        training.predict_logits(model, [xb], self.device, autocast=autocast)
                    )
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, parts)
        # batch k of the validation loader is split in rank order (shard_batch): interleave back
        pieces = [g[k] for k in range(len(parts)) for g in gathered if g[k] is not None]
        logits = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.float32)
        if len(logits) != len(y):
            raise RuntimeError(f"gathered {len(logits)} validation logits for {len(y)} images")
        # the metrics' one home: training.validate, over the gathered logits (identity model)
        return training.validate(
            torch.nn.Identity(), [torch.from_numpy(logits)], y, torch.device("cpu"),
            threshold=kwargs.get("threshold", 0.5),
        )  # fmt: skip
