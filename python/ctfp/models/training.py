"""Training and inference loops as free functions, in the shape of timm's ``train.py``.

- :func:`train_one_epoch` ``(model, loader, optimizer, loss_fn, *, device, autocast, scaler)``:
  one pass of optimiser steps; returns the epoch's mean loss and where the time went.
- :func:`run_epoch`: that, then :func:`validate`: one row of ``history_``.
- :func:`predict_logits` ``(model, loader, device)`` and :func:`validate`: inference in
  evaluation mode (the model's mode is restored afterwards).
- :class:`EarlyStopping`: the lowest validation loss, when to stop, the best epoch's weights.
- :func:`precise_batchnorm`: BatchNorm's running statistics recomputed as exact averages over
  one pass of images, with the final weights (pycls's "precise BN").
- :func:`call_callbacks`: ``on_train_begin`` / ``on_epoch_end`` / ``on_train_end`` dispatch.
- :func:`adam` (fused on CUDA), :func:`cudnn_autotune` (``cudnn.benchmark`` for a block, then
  restored), :func:`mixed_precision_autocast`, :func:`binary_cross_entropy` (one logit, two
  classes) and :func:`cross_entropy` (``K`` logits, ``K > 2`` classes): the step's parts.

A loader is any iterable of numpy (or torch) batches: ``(images, targets)`` for training,
``images`` for inference, images float32 ``(N, 3, H, W)`` already resized and normalised, which is
what :meth:`ctfp.BatchStream.iter_epoch` yields, or tensors already on the device, which is what
:class:`ctfp.models.feed.DeviceFeed` yields on CUDA. ``autocast`` is a no-argument context-manager
factory (:func:`mixed_precision_autocast`), ``scaler`` a ``torch.amp.GradScaler`` or None. The
loops do not wait for the device per batch: losses and logits stay there until the end.

This module imports torch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ctfp._util import cudnn_autotune, softmax
from ctfp.models.persistence import cpu_state_dict

__all__ = [
    "EarlyStopping",
    "adam",
    "binary_cross_entropy",
    "call_callbacks",
    "class_weights",
    "cross_entropy",
    "cudnn_autotune",
    "fork_rng",
    "mixed_precision_autocast",
    "precise_batchnorm",
    "predict_logits",
    "run_epoch",
    "train_one_epoch",
    "validate",
    "validation_split",
]

Autocast = Callable[[], contextlib.AbstractContextManager[Any]]

#: With an enabled progress bar, the running loss is read from the device at most this often.
PROGRESS_EVERY_S = 1.0


def adam(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The paper's optimiser: Adam at ``lr``; on CUDA the fused kernel, which also takes a
    ``GradScaler``'s inf check on the device (no host sync per step). Elsewhere torch's default
    implementation, so CPU results stay bit-identical."""
    if device.type == "cuda":
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    return torch.optim.Adam(model.parameters(), lr=lr)


def mixed_precision_autocast(device: torch.device, mixed_precision: bool) -> Autocast:
    """float16 autocast on ``device`` when ``mixed_precision``, else a no-op context."""
    if not mixed_precision:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=torch.float16)


def binary_cross_entropy(
    weights: Sequence[float] = (1.0, 1.0), device: Any = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean binary cross-entropy on logits, each image weighted by its class (``weights[0]``
    for target 0, ``weights[1]`` for target 1)."""
    w = torch.tensor(weights, dtype=torch.float32, device=device)
    weighted = tuple(weights) != (1.0, 1.0)

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, targets, reduction="none"
        )
        if weighted:
            losses = losses * torch.where(targets > 0.5, w[1], w[0])
        return losses.mean()

    return loss_fn


def cross_entropy(
    weights: Sequence[float], device: Any = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean cross-entropy of ``(N, K)`` logits against class indices (int64 ``(N,)``), each
    image weighted by its class (``weights[k]`` for class ``k``): the same convention as
    :func:`binary_cross_entropy` (a mean over images of weighted losses, not torch's
    ``weight=`` mean, which divides by the sum of the weights)."""
    w = torch.tensor(list(weights), dtype=torch.float32, device=device)
    weighted = any(float(v) != 1.0 for v in weights)

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.long()
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        if weighted:
            losses = losses * w[targets]
        return losses.mean()

    return loss_fn


def _to_device(batch: Any, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
    return t.to(device, non_blocking=True)


@contextlib.contextmanager
def _iterate(loader: Iterable[Any]) -> Iterator[Iterator[Any]]:
    """``iter(loader)``, closed on the way out (a generator's prefetch thread stops at once)."""
    batches = iter(loader)
    try:
        yield batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable[tuple[Any, Any]],
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    device: torch.device,
    autocast: Autocast = contextlib.nullcontext,
    scaler: Any = None,
    progress: Any = None,
) -> dict[str, float]:
    """One epoch of optimiser steps over ``loader`` in training mode.

    The forward pass runs under ``autocast()``; the loss is taken on float32 logits; with a
    ``scaler`` the backward pass and step go through it. ``progress`` (a tqdm bar) is advanced
    per batch. Returns ``loss`` (mean per image), ``n_images``, ``loader_wait_s`` (time spent
    waiting for batches; a loader with a ``loader_wait_s`` attribute, such as
    :class:`ctfp.models.feed.DeviceFeed`, reports its own) and ``compute_s`` (the rest of the
    epoch: forward, backward and step, to the device's last result).

    The host does not wait for the device per step: the loss is summed on the device and read
    once at the end (and, with an enabled ``progress`` bar, at most every
    ``PROGRESS_EVERY_S`` seconds), so a GPU gets its next step queued while it runs this one.
    """
    model.train()
    # float64 where the device has it: the same sum as adding Python floats, read once
    acc = torch.float32 if device.type == "mps" else torch.float64
    loss_sum = torch.zeros((), dtype=acc, device=device)
    seen, wait, shown = 0, 0.0, time.perf_counter()
    live = progress is not None and not getattr(progress, "disable", False)
    start = time.perf_counter()
    with _iterate(loader) as batches:
        while True:
            t0 = time.perf_counter()
            try:
                xb_np, yb_np = next(batches)
            except StopIteration:
                break
            wait += time.perf_counter() - t0
            xb, yb = _to_device(xb_np, device), _to_device(yb_np, device)
            with autocast():
                logits = model(xb)
            loss = loss_fn(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            loss_sum += loss.detach().to(acc) * len(xb)
            seen += len(xb)
            if progress is not None:
                progress.update(1)
                if live and time.perf_counter() - shown >= PROGRESS_EVERY_S:
                    shown = time.perf_counter()  # the one host sync besides the epoch's end
                    progress.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", refresh=False)
    total = float(loss_sum.item())  # waits for the device's last step
    seconds = time.perf_counter() - start
    wait = float(getattr(loader, "loader_wait_s", wait))
    return {
        "loss": total / max(seen, 1),
        "n_images": seen,
        "loader_wait_s": wait,
        "compute_s": max(seconds - wait, 0.0),
    }


def run_epoch(
    model: torch.nn.Module,
    loader: Iterable[tuple[Any, Any]],
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epoch: int,
    device: torch.device,
    autocast: Autocast = contextlib.nullcontext,
    scaler: Any = None,
    validation: tuple[Iterable[Any], np.ndarray] | None = None,
    threshold: float = 0.5,
    progress: Any = None,
) -> dict[str, Any]:
    """One row of a training history: :func:`train_one_epoch` on ``loader``, then
    :func:`validate` on ``validation`` (``(loader, targets)``) when given, and the timings:
    ``epoch``, ``loss``, the ``val_*`` metrics, ``seconds``, ``images_per_s`` (training),
    ``loader_wait_s``, ``compute_s``. An enabled ``progress`` bar ends showing the row."""
    t0 = time.perf_counter()
    stats = train_one_epoch(
        model, loader, optimizer, loss_fn, device=device, autocast=autocast, scaler=scaler,
        progress=progress,
    )  # fmt: skip
    train_seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"epoch": epoch, "loss": stats["loss"]}
    if validation is not None:
        val_loader, val_y = validation
        row |= validate(model, val_loader, val_y, device, autocast=autocast, threshold=threshold)
    row.update(
        seconds=time.perf_counter() - t0,
        images_per_s=stats["n_images"] / train_seconds if train_seconds > 0 else math.nan,
        loader_wait_s=stats["loader_wait_s"],
        compute_s=stats["compute_s"],
    )
    if progress is not None and not getattr(progress, "disable", False):
        keys = ("loss", "val_loss", "val_accuracy", "val_roc_auc")
        post = {k: f"{row[k]:.4f}" for k in keys if row.get(k) is not None}
        progress.set_postfix(post | {"img/s": f"{row['images_per_s']:.1f}"})
    return row


def predict_logits(
    model: torch.nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    *,
    autocast: Autocast = contextlib.nullcontext,
) -> np.ndarray:
    """The model's output for every image of ``loader``, float32 ``(N,)`` (one logit per image)
    or ``(N, K)`` (a model with ``K`` outputs), in evaluation mode and without autograd; the
    model's training mode is restored afterwards."""
    chunks = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _iterate(loader) as batches:
            for xb_np in batches:
                with autocast():
                    logits = model(_to_device(xb_np, device))
                logits = logits.float()
                # one logit per image: (N,); K logits: (N, K). Stays on the device: no sync
                chunks.append(logits.reshape(-1) if logits.dim() <= 1 else logits)
        if not chunks:
            return np.empty(0, dtype=np.float32)
        return torch.cat(chunks).cpu().numpy()  # one copy back, after the last batch
    finally:
        model.train(was_training)


def precise_batchnorm(
    model: torch.nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    *,
    autocast: Autocast = contextlib.nullcontext,
) -> int:
    """Recompute the running mean and variance of every BatchNorm layer of ``model`` as the
    average over the batches of ``loader`` (images only), with the model's final weights and no
    weight update (pycls's "precise BN"); returns the number of images seen.

    During training the running statistics are exponential averages over batches taken with
    weights that kept changing; after a short training from random initialisation they can be
    far from the statistics of the final network, and evaluation mode then predicts one class
    for everything. Each batch counts equally (``momentum=None``, torch's cumulative average).
    The model's training mode and each layer's momentum are restored afterwards. A batch of one
    image cannot give BatchNorm statistics: leave such a batch out of ``loader``."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = model.training
    seen = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad(), _iterate(loader) as batches:
            for xb_np in batches:
                with autocast():
                    model(_to_device(xb_np, device))
                seen += len(xb_np)
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return seen


def _roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def validate(
    model: torch.nn.Module,
    loader: Iterable[Any],
    y: np.ndarray,
    device: torch.device,
    *,
    autocast: Autocast = contextlib.nullcontext,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """``val_loss`` (binary cross-entropy), ``val_accuracy`` (at ``threshold`` on the
    probability), ``val_roc_auc`` (None with one class) and ``val_seconds`` on float32 targets
    ``y`` (0/1) of ``loader``'s images. A model with ``K`` outputs (``(N, K)`` logits, targets
    the class indices): cross-entropy, the accuracy of the argmax, and the macro one-vs-rest
    ROC-AUC (None unless every class is among ``y``)."""
    t0 = time.perf_counter()
    logits = predict_logits(model, loader, device, autocast=autocast)
    if logits.ndim == 2:
        return _validate_multiclass(logits, y) | {"val_seconds": time.perf_counter() - t0}
    val_loss = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(y)
    )
    pred = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))) >= threshold
    return {
        "val_loss": float(val_loss),
        "val_accuracy": float(np.mean(pred == (y > 0.5))),
        "val_roc_auc": _roc_auc(y, logits),
        "val_seconds": time.perf_counter() - t0,
    }


def _validate_multiclass(logits: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    targets = np.asarray(y).astype(np.int64)
    z = torch.from_numpy(logits.astype(np.float32))
    val_loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(targets))
    proba = softmax(logits.astype(np.float64))
    k = logits.shape[1]
    roc_auc = None
    if len(np.unique(targets)) == k:
        from sklearn.metrics import roc_auc_score

        roc_auc = float(
            roc_auc_score(targets, proba, multi_class="ovr", average="macro", labels=np.arange(k))
        )
    return {
        "val_loss": float(val_loss),
        "val_accuracy": float(np.mean(logits.argmax(axis=1) == targets)),
        "val_roc_auc": roc_auc,
    }


class EarlyStopping:
    """Follows the validation loss: :attr:`best_epoch` has the lowest. With ``patience`` (epochs
    without a lower loss before stopping), :meth:`step` says when to stop and the best epoch's
    weights are kept (on the CPU) for :meth:`restore_best`; with None it never stops."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self._best_state: dict[str, torch.Tensor] | None = None

    def step(self, epoch: int, val_loss: float | None, model: torch.nn.Module) -> bool:
        """Record ``epoch``'s (1-based) validation loss; True when training should stop."""
        if val_loss is None:
            return False
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            if self.patience is not None:
                self._best_state = cpu_state_dict(model)
            return False
        self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def restore_best(self, model: torch.nn.Module, last_epoch: int) -> None:
        """Load the best epoch's weights into ``model`` unless ``last_epoch`` was the best."""
        if self._best_state is not None and self.best_epoch != last_epoch:
            model.load_state_dict(self._best_state)


def call_callbacks(callbacks: Sequence[Any], hook: str, est: Any, logs: Mapping[str, Any]) -> bool:
    """Call ``hook(est, **logs)`` on each callback that has it (a plain function is an
    ``on_epoch_end`` callback); True when one of them returns True (asks to stop)."""
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if (
            fn is None
            and hook == "on_epoch_end"
            and callable(cb)
            and not hasattr(cb, "on_train_begin")
        ):
            fn = cb
        if fn is not None and fn(est, **logs) is True:
            stop = True
    return stop


def fork_rng(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.random.fork_rng`` over the CPU and ``device``: seeding inside leaves the
    caller's random streams as they were."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices)


def class_weights(
    class_weight: object, classes: np.ndarray, y_idx: np.ndarray
) -> tuple[float, ...]:
    """The loss weight of each class, in ``classes`` order, for ``class_weight``: None (all 1),
    ``"balanced"`` (``n / (K * count)``, scikit-learn's rule; ``K`` classes) or a
    ``{label: weight}`` dict (labels left out weigh 1)."""
    k = len(classes)
    if class_weight is None:
        return (1.0,) * k
    if isinstance(class_weight, str) and class_weight == "balanced":
        counts = np.bincount(y_idx, minlength=k)
        return tuple(float(len(y_idx) / (float(k) * counts[j])) for j in range(k))
    assert isinstance(class_weight, Mapping)  # the estimator's parameter table checked it
    labels = classes.tolist()
    unknown = [c for c in class_weight if c not in set(labels)]
    if unknown:
        raise ValueError(f"class_weight: labels {unknown!r} are not among the classes {labels!r}")
    return tuple(float(class_weight.get(label, 1.0)) for label in labels)


def validation_split(
    y_idx: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and validation indices: ``fraction`` of the images held out, stratified
    when each class has two images; ``fraction == 0`` holds out none."""
    n = len(y_idx)
    idx = np.arange(n)
    if fraction <= 0:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y_idx, minlength=2)
    strat = y_idx if counts.min() >= 2 else None
    try:
        train_idx, val_idx = train_test_split(
            idx, test_size=fraction, stratify=strat, random_state=seed
        )
    except ValueError as exc:
        raise ValueError(
            f"validation_fraction={fraction!r} cannot split {n} images into training and "
            f"validation sets: {exc}"
        ) from exc
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    if len(np.unique(y_idx[train_idx])) < 2:
        raise ValueError(
            f"validation_fraction={fraction!r} leaves one class only in the training images; "
            f"use more images or a smaller validation_fraction"
        )
    return train_idx, val_idx
