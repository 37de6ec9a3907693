"""The paper's Methods 1-4 (KDE Lab, ImageCLEFmedical GANs 2024) and ctfp's similarity presets,
run end to end: datasets -> scorer -> scores -> decision rule -> metrics tables, plots and
validated run files, with a record of everything needed to repeat the run.

The entry points :func:`run_method` and :func:`run_similarity` build a method's scorer and hand
it to the runner; the parts live in their own modules:

- :mod:`ctfp.imageclef.methods`: the method and preset tables (:data:`METHODS`,
  :data:`SIMILARITY_PRESETS`, :data:`SIMILARITY_KEYS`);
- :mod:`ctfp.imageclef.layout`: image ids, the labels and groups CSV files, output file names;
- :mod:`ctfp.imageclef.scorers`: how each kind of method scores (classifier, similarity);
- :mod:`ctfp.imageclef.runner`: the steps of a run.

The classifier learns real (0) vs generated (1); a real test image scored as generated is
predicted "used" (its fingerprints appear in the generated set). The score of a real image is
its probability of "generated".
"""

from __future__ import annotations

import os
from typing import Any

from ctfp.imageclef.layout import LabelsError, esrgan_cache, read_groups, read_test_labels
from ctfp.imageclef.methods import (
    METHODS,
    SIMILARITY_KEYS,
    SIMILARITY_PRESETS,
    Method,
    MethodUnavailable,
    get_method,
    similarity_method,
)
from ctfp.imageclef.runner import ON_UNREADABLE, TEST_GENERATED, UnreadableImagesError, run
from ctfp.imageclef.scorers import ClassifierScorer, Scorer, SimilarityScorer

__all__ = [
    "METHODS",
    "ON_UNREADABLE",
    "SIMILARITY_KEYS",
    "SIMILARITY_PRESETS",
    "TEST_GENERATED",
    "LabelsError",
    "Method",
    "MethodUnavailable",
    "UnreadableImagesError",
    "get_method",
    "read_groups",
    "read_test_labels",
    "run_method",
    "run_similarity",
]

#: run_method's classifier settings and their defaults (they do not apply with a ``scorer``)
_CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "epochs": 50,
    "image_size": None,
    "batch_size": 32,
    "lr": 1e-4,
    "copies": 50,
    "weights": "default",
    "device": "auto",
    "torch_threads": None,
    "sr_cache": None,
}


def run_method(
    method: str | int | Method,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    test: str | os.PathLike[str] | None = None,
    test_labels: str | os.PathLike[str] | None = None,
    decision: str = "threshold:0.5",
    holdout: float = 0.0,
    epochs: int = 50,
    image_size: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-4,
    copies: int = 50,
    weights: str | None = "default",
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    torch_threads: int | None = None,
    verbose: int = 1,
    sr_cache: str | os.PathLike[str] | None = None,
    scorer: Scorer | None = None,
    on_unreadable: str = "error",
    test_generated: str = "development",
) -> dict:
    """Run one method on development data (and test data when given); write tables, plots, run
    files, ``record.json`` and ``report.html`` into ``out`` (the names:
    :mod:`ctfp.imageclef.layout`); return the record.

    ``holdout`` keeps that fraction of the labelled real images out of training, to calibrate
    the decision rule and to evaluate on images the classifier never saw (the paper used all of
    them, with the 0.5 threshold). ``decision`` is ``"threshold:T"``, ``"calibrated:METRIC"`` or
    ``"top:FRACTION"``; calibration uses the held-out development images only, never test labels.
    ``weights``: ``"default"`` (the method's), None (random initialisation), ``"imagenet"`` or
    a state-dict file; the record's method and title say which. Method 4 upscales every image
    with ESRGAN (224 -> 896) into the disk cache ``sr_cache`` (default ``out/esrgan_cache``);
    ``image_size`` defaults to 896 for it, 224 otherwise. Every image is decoded once before
    any work; ``on_unreadable`` says what happens to those that fail
    (:func:`ctfp.imageclef.runner.check_images`: ``"error"``, ``"skip"``, ``"predict:0"``,
    ``"predict:1"``).

    ``scorer``: a :class:`~ctfp.imageclef.scorers.Scorer` of the caller's own instead of the
    method's classifier (the classifier settings ``epochs`` ... ``sr_cache`` then do not apply
    and are refused).

    ``test_generated`` (scorers that refit, the similarity methods): which generated images
    the test images are scored against. ``"development"``: the development split's, those the
    scorer was fitted with. ``"test"``: the test split's own (the task gives each split its
    generated images): the scorer is fitted a second time, on the same development images with
    the test split's generated images, and scores the test images; the decision rule fitted on
    the held-out development scores decides (each split's generated images come from the same
    generator, in the same number, so a score means the same against either). ``"union"``:
    the scorer is fitted once on both splits' generated images, and every score (held-out,
    leak test, test) is against all of them. The record's ``datasets[i]["test_generated"]``
    says which, with how many images.
    """
    m = method if isinstance(method, Method) else get_method(method)
    settings = dict(
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        copies=copies,
        weights=weights,
        device=device,
        torch_threads=torch_threads,
        sr_cache=sr_cache,
    )
    if scorer is None:
        m = m.with_weights(weights)
        scorer = ClassifierScorer(
            m,
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            lr=lr,
            copies=copies,
            device=device,
            threads=threads,
            torch_threads=torch_threads,
            seed=seed,
            verbose=verbose,
            sr_cache=esrgan_cache(out) if sr_cache is None else sr_cache,
        )
    else:
        given = [k for k, v in settings.items() if v != _CLASSIFIER_DEFAULTS[k]]
        if given:
            raise ValueError(
                f"{', '.join(given)}: classifier settings, not used with a scorer of your own; "
                f"leave them out"
            )
    return run(
        m,
        scorer,
        data,
        out,
        test=test,
        test_labels=test_labels,
        decision=decision,
        holdout=holdout,
        seed=seed,
        threads=threads,
        on_unreadable=on_unreadable,
        test_generated=test_generated,
    )


def run_similarity(
    name: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    test: str | os.PathLike[str] | None = None,
    test_labels: str | os.PathLike[str] | None = None,
    decision: str | None = None,
    test_generated: str = "development",
    holdout: float = 0.25,
    image_size: int | None = None,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    torch_threads: int | None = None,
    verbose: int = 1,
    index_cache: str | os.PathLike[str] | None = None,
    leak_test: bool = True,
    groups: str | os.PathLike[str] | dict[str, str] | None = None,
    on_unreadable: str = "error",
) -> dict:
    """Run a similarity preset (a key of :data:`SIMILARITY_KEYS`, ``"sim-pixel"``, or a name
    of :data:`SIMILARITY_PRESETS`) through the runner, as :func:`run_method` does a classifier.

    The estimator is fitted on the generated images and the training part of the labelled real
    images, and only scores; ``decision`` (default ``"calibrated:accuracy"``) is fitted on the
    held-out ones and decides. One threshold: the record's ``datasets[i]["decision"]``.
    ``device``, ``threads`` and ``torch_threads`` reach the estimator when it takes them (the
    baselines run on the CPU and refuse a ``device`` other than ``"auto"``/``"cpu"``);
    ``image_size`` replaces the preset's comparison size. ``decision=None``: the preset's own
    (``"decision"``) or ``"calibrated:accuracy"``. ``index_cache``: a folder where the fitted
    generated-set index is saved and reused across runs. ``leak_test``: run the leak test
    first (:class:`~ctfp.imageclef.scorers.SimilarityScorer`). ``test_generated``: which
    generated images score the test images (:func:`run_method`); by default the development
    split's (the report's galleries show those neighbours); ``"test"`` is the realistic
    benchmark's protocol. ``groups``: which real images belong together (the patient of each
    slice), an ``id,group`` CSV file (:func:`read_groups`) or a dict: ``calibration="real"``
    then counts patients, not images (``SimilarityMembership.fit(reference_groups=)``), and the
    leak test keeps each patient in one fold and compares patients' mean scores."""
    group_of = read_groups(groups) if isinstance(groups, (str, os.PathLike)) else groups
    method = similarity_method(name, image_size=image_size)
    if decision is None:
        decision = method.options.get("decision", "calibrated:accuracy")
    scorer = SimilarityScorer(
        method,
        device=device,
        threads=threads,
        torch_threads=torch_threads,
        seed=seed,
        verbose=verbose,
        index_cache=index_cache,
        leak_test=leak_test,
        groups=None if group_of is None else {str(k): str(v) for k, v in group_of.items()},
    )
    return run(
        method,
        scorer,
        data,
        out,
        test=test,
        test_labels=test_labels,
        decision=decision,
        holdout=holdout,
        seed=seed,
        threads=threads,
        on_unreadable=on_unreadable,
        test_generated=test_generated,
    )
