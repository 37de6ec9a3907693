"""How each kind of method scores real images, behind one small protocol the runner calls.

A :class:`Scorer` is fitted on one development dataset (a :class:`Fold`) and returns a
:class:`Fitted`: a function scoring real images (higher = more likely used), what the record
says of the fit, and the generated-set index the report's galleries may reuse. Each kind takes
only the settings that apply to it:

- :class:`ClassifierScorer`: the paper's Methods 1-4 (real vs generated classifier on the 50x
  training set; Method 4 on ESRGAN x4 images);
- :class:`SimilarityScorer`: ctfp's similarity presets and the published baselines (an
  estimator of :mod:`ctfp.membership.estimators`, scores only; the runner's rule decides).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ctfp.data.datasets import Dataset
from ctfp.imageclef.layout import LabelsError, image_id, log
from ctfp.imageclef.methods import Method, MethodUnavailable

__all__ = ["ClassifierScorer", "Fitted", "Fold", "Scorer", "SimilarityScorer"]

ScoreFn = Callable[[list], np.ndarray]


@dataclass(frozen=True)
class Fold:
    """The images one fit sees, for one development dataset."""

    dataset: Dataset
    #: labelled real images to train on, with their 0/1 labels
    real: list
    labels: list
    #: the generated images to fit against
    generated: list
    #: labelled real images kept out of training (the decision rule is fitted on their scores)
    holdout: list = field(default_factory=list)
    holdout_labels: list = field(default_factory=list)
    #: every real image of the dataset, development and test, labels unused
    reference: list = field(default_factory=list)


@dataclass
class Fitted:
    """A fitted scorer: ``score(paths)`` and what the record's dataset entry says of the fit."""

    score: ScoreFn
    info: dict[str, Any]
    #: the generated-set index the scores came from (for the report's galleries), if any
    index: Any = None


class Scorer(Protocol):
    """One kind of method, as the runner uses it."""

    #: whether :meth:`refit` can score test images against other generated images
    #: (``test_generated="test"``/``"union"``)
    refits: bool

    def config(self) -> dict[str, Any]:
        """The settings of this kind, for the record's ``config``."""
        ...

    def fit(self, fold: Fold) -> Fitted:
        """Fit on ``fold``; the scores of real images and the record's entries."""
        ...

    def refit(self, fold: Fold) -> Fitted:
        """Fit again on ``fold`` (its ``generated`` replaced) only to score test images."""
        ...


# --------------------------------------------------------------------------------------------------
# Methods 1-4


class ClassifierScorer:
    """The paper's classifier (:class:`~ctfp.models.classifier.FingerprintClassifier`, real 0
    vs generated 1, on :func:`~ctfp.data.expansion.paper_training_set`); a real image's score
    is its probability of "generated". With held-out images of both labels, their membership
    ROC-AUC is recorded after every epoch (``history_[i]["val_roc_auc"]``)."""

    refits = False

    def __init__(
        self,
        method: Method,
        *,
        epochs: int = 50,
        image_size: int | None = None,
        batch_size: int = 32,
        lr: float = 1e-4,
        copies: int = 50,
        device: Any = "auto",
        threads: int | None = None,
        torch_threads: int | None = None,
        seed: int = 0,
        verbose: int = 1,
        sr_cache: str | os.PathLike[str] | None = None,
    ) -> None:
        self.method = method
        self.epochs, self.batch_size, self.lr, self.copies = epochs, batch_size, lr, copies
        # the paper: ESRGAN x4 of 224 inputs for Method 4
        self.image_size = image_size or (896 if method.super_resolution else 224)
        self.device, self.threads, self.torch_threads = device, threads, torch_threads
        self.seed, self.verbose = seed, verbose
        self.sr_cache = sr_cache

    def config(self) -> dict[str, Any]:
        out = {
            "epochs": self.epochs,
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "copies": self.copies,
            "weights": self.method.weights,
            "device": self.device,
            "seed": self.seed,
            "threads": self.threads,
            "torch_threads": self.torch_threads,
            "verbose": self.verbose,
        }
        if self.method.super_resolution:
            out["sr_cache"] = str(self.sr_cache)
        return out

    def fit(self, fold: Fold) -> Fitted:
        from ctfp.data.expansion import paper_training_set
        from ctfp.models.classifier import FingerprintClassifier

        prepare = self._esrgan_inputs() if self.method.super_resolution else list
        real, generated = prepare(fold.real), prepare(fold.generated)
        ts = paper_training_set(real, generated, copies=self.copies)
        clf = FingerprintClassifier(
            backbone=self.method.backbone,
            weights=self.method.weights,
            image_size=self.image_size,
            batch_size=self.batch_size,
            max_epochs=self.epochs,
            lr=self.lr,
            device=self.device,
            n_jobs=self.threads,
            torch_threads=self.torch_threads,
            random_state=self.seed,
            verbose=self.verbose,
        )
        info: dict[str, Any] = {}
        if len(set(fold.holdout_labels)) == 2:
            # The task's own metric per epoch: ROC-AUC of P(generated) on the held-out real
            # images, used vs not used (the report plots it as the validation curve).
            from sklearn.metrics import roc_auc_score

            hold_inputs, hold_labels = prepare(list(fold.holdout)), list(fold.holdout_labels)

            def holdout_auc(est: Any, **logs: Any) -> None:
                p = est.predict_proba(hold_inputs)[:, list(est.classes_).index(1)]
                est.history_[-1]["val_roc_auc"] = float(roc_auc_score(hold_labels, p))

            clf.set_params(callbacks=[holdout_auc])
            info["validation"] = (
                f"val_roc_auc: membership ROC-AUC on the {len(hold_labels)} held-out development "
                f"real images after each epoch"
            )
        t0 = time.perf_counter()
        clf.fit(ts.sources, ts.labels, sample_augment=ts.augment)
        info["fit_seconds"] = round(time.perf_counter() - t0, 2)
        info["training_images"] = len(ts)
        info["history"] = clf.history_
        info["device"] = clf.device_
        col = list(clf.classes_).index(1)
        return Fitted(lambda paths: clf.predict_proba(prepare(paths))[:, col], info)

    def refit(self, fold: Fold) -> Fitted:
        raise ValueError(
            f"test_generated: method {self.method.key} scores each test image by itself; "
            f"only 'development' applies"
        )

    def _esrgan_inputs(self) -> Callable[[list], list]:
        """Method 4's inputs: each image resized to 224 (the paper's input size), upscaled x4 by
        ESRGAN to 896, cached on disk by content and model (so each image is upscaled once
        across runs), and returned as paths of the cached PNGs for the Rust pipeline to read."""
        try:
            from ctfp.superres import UpscaleCache, Upscaler
        except ImportError as exc:  # torch missing
            raise MethodUnavailable(f"Method 4 needs ESRGAN (ctfp.superres, torch): {exc}") from exc
        from ctfp.data.preprocess import load_batch

        cache = UpscaleCache(
            str(self.sr_cache), Upscaler(device=self.device, progress=self.verbose > 0)
        )

        def prepare(paths: list, chunk: int = 128) -> list:
            out: list = []
            for k in range(0, len(paths), chunk):
                small = load_batch(paths[k : k + chunk], size=(224, 224), layout="grey")[:, 0]
                out += cache.upscale_paths(list(small))
            return out

        return prepare


# --------------------------------------------------------------------------------------------------
# similarity presets and baselines


class SimilarityScorer:
    """A membership estimator (:func:`~ctfp.membership.estimators.make_estimator` of the
    preset's ``options``) fitted for its scores only (``rule=None``): the runner's decision
    rule, fitted on the held-out images, is the one that decides, and its threshold is the one
    the record shows. A preset with a ``"decision"`` of its own scores by the estimator's
    ``decision_function`` (score minus its own threshold).

    ``device`` and ``torch_threads`` reach the estimators that take them and are refused
    (other than ``"auto"``/``"cpu"``, None) by those that do not. With ``leak_test``, before
    any prediction: :func:`ctfp.membership.leaktest.run_leak_test` on all labelled development
    images (a permutation test of exact level with a no-generator control, at level
    ``leak_alpha`` with ``leak_permutations`` relabelings, None: the pipeline's default); its
    result is the record's ``datasets[i]["leak_test"]``, and when it finds no leak a console
    line says that the per-image predictions are unsupported
    (``datasets[i]["predictions_supported"]``). ``groups``: ``{image id: group}`` (the patient
    of each slice)."""

    refits = True

    def __init__(
        self,
        method: Method,
        *,
        device: Any = "auto",
        threads: int | None = None,
        torch_threads: int | None = None,
        seed: int = 0,
        verbose: int = 1,
        index_cache: str | os.PathLike[str] | None = None,
        leak_test: bool = True,
        groups: dict[str, str] | None = None,
        leak_alpha: float = 0.05,
        leak_permutations: int | None = None,
    ) -> None:
        from ctfp.imageclef.methods import estimator_takes

        options = method.options
        if "rule" in options:
            raise ValueError(
                f"similarity options: found rule={options['rule']!r}; the estimator only scores "
                f"here, the runner's decision= decides"
            )
        self.takes_device = estimator_takes(options, "device")
        self.takes_torch_threads = estimator_takes(options, "torch_threads")
        if not self.takes_device and device not in ("auto", "cpu"):
            raise ValueError(
                f"device={device!r}: {method.title} runs on the CPU only (it takes no device); "
                f"leave it out"
            )
        if not self.takes_torch_threads and torch_threads is not None:
            raise ValueError(
                f"torch_threads={torch_threads!r}: {method.title} runs no torch; leave it out"
            )
        self.method, self.options = method, options
        self.device, self.threads, self.torch_threads = device, threads, torch_threads
        self.seed, self.verbose = seed, verbose
        self.index_cache, self.leak_test = index_cache, leak_test
        self.groups = groups
        self.leak_alpha, self.leak_permutations = leak_alpha, leak_permutations

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.takes_device:
            out["device"] = self.device
        out.update(seed=self.seed, threads=self.threads)
        if self.takes_torch_threads:
            out["torch_threads"] = self.torch_threads
        out["verbose"] = self.verbose
        return out

    def _estimator(self) -> Any:
        from ctfp.membership.estimators import make_estimator

        shared: dict[str, Any] = {
            "rule": None,
            "n_jobs": self.threads,
            "random_state": self.seed,
            "index_cache": self.index_cache,
        }
        if self.takes_device:
            shared["device"] = self.device
        if self.takes_torch_threads:
            shared["torch_threads"] = self.torch_threads
        return make_estimator(self.options, **shared)

    def _fit(self, fold: Fold, info: dict[str, Any], *, check_groups: bool) -> tuple[Any, dict]:
        """Fit an estimator on ``fold``; return it and the fit parameters it took."""
        est = self._estimator()
        t0 = time.perf_counter()
        # unlabelled real images (all development and test images) for calibration="real",
        # with their groups (patients) when known
        real_all = fold.reference
        fit_params: dict[str, Any] = {}
        takes = inspect.signature(est.fit).parameters
        found = None if self.groups is None else _groups_of(real_all or fold.real, self.groups)
        if real_all and "reference" in takes:
            fit_params["reference"] = real_all
            if found is not None and "reference_groups" in takes:
                fit_params["reference_groups"] = found
        if found is not None and check_groups:
            named = [g for g in found if g is not None]
            if not named:
                raise LabelsError(
                    f"groups: no id of the groups file names an image of dataset "
                    f"{fold.dataset.name!r} (ids are image file names without .png, e.g. "
                    f"{image_id(str((real_all or fold.real)[0]))!r})"
                )
            info["groups"] = {"images_grouped": len(named), "groups": len(set(named))}
        est.fit(fold.real, fold.labels, generated=fold.generated, **fit_params)
        info["fit_seconds"] = round(time.perf_counter() - t0, 2)
        return est, fit_params

    def _score(self, est: Any) -> ScoreFn:
        return est.decision_function if "decision" in self.options else est.score_samples

    def fit(self, fold: Fold) -> Fitted:
        info: dict[str, Any] = {}
        est, fit_params = self._fit(fold, info, check_groups=True)
        info["similarity"] = est.describe()  # settings only: no threshold of its own
        if self.leak_test:
            info.update(self._leak_test(fold.dataset, est, fit_params))
        # the report's galleries reuse the estimator's own index (SimilarityMembership.index_)
        return Fitted(self._score(est), info, getattr(est, "index_", None))

    def refit(self, fold: Fold) -> Fitted:
        info: dict[str, Any] = {}
        est, _ = self._fit(fold, info, check_groups=False)
        return Fitted(self._score(est), info, getattr(est, "index_", None))

    def _leak_test(self, ds: Dataset, est: Any, fit_params: dict) -> dict[str, Any]:
        from ctfp.membership.leaktest import reusable_generated, run_leak_test

        t0 = time.perf_counter()
        real, labels = ds.real()
        grp = None
        if self.groups is not None:  # each patient whole in one fold; an unlisted image alone
            grp = [
                "image\0" + str(p) if g is None else "group\0" + g
                for p, g in zip(real, _groups_of(real, self.groups), strict=True)
            ]
        lt = run_leak_test(
            est,
            real,
            labels,
            generated=reusable_generated(est),
            random_state=self.seed,
            groups=grp,
            fit_params=fit_params,
            alpha=self.leak_alpha,
            n_permutations=self.leak_permutations,
        )
        lt["seconds"] = round(time.perf_counter() - t0, 2)
        note = "" if lt["supported"] else "; its per-image predictions are UNSUPPORTED"
        log.info("leak test [%s, %s]: %s%s", ds.name, self.method.key, lt["message"], note)
        return {"leak_test": lt, "predictions_supported": lt["supported"]}


def _groups_of(images: Sequence[Any], groups: dict[str, str]) -> list[str | None]:
    """The group of each image (a path) by its id (:func:`image_id`), or None."""
    return [
        groups.get(image_id(im)) if isinstance(im, (str, os.PathLike)) else None for im in images
    ]
