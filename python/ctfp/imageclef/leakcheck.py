"""``ctfp leaktest``: does the generator leak its training images at all? The question on its
own, on development data without a test split, for several methods at once, with one verdict.

:func:`run_leak_tests` fits each method on every labelled development image and runs its leak
test (:func:`ctfp.membership.leaktest.run_leak_test`: a permutation test of exact level with a
no-generator control), then gives the family of tests on each dataset one verdict
(:func:`ctfp.membership.leaktest.family_verdict`, Holm's step-down adjustment: it holds the
family-wise false-alarm rate at ``alpha`` under any dependence between the methods, which share
images and are strongly dependent; docs/leaktest.md says why not Fisher's combination). The
output folder (built apart and moved in, :class:`~ctfp.imageclef.runner.OutputFolder`)::

    OUT/record.json          the record: settings, versions, per dataset every method's full
                             result (scores, null distribution, control) and the family verdict
    OUT/leaktest.json        the answer in short: per dataset the family's verdict and message,
                             per method its verdict, p-value raw and Holm-adjusted, relabelings
                             and resolution, ROC-AUC with its 95 % interval, the control
    OUT/leaktest_<dataset>.png   each method's null distribution, the observed ROC-AUC marked
    OUT/report.html          the page (:func:`ctfp.imageclef.report.leaktest_report_html`)

:func:`leak_families` gives the same family verdict for the runs of several methods on one
dataset (``ctfp demo``, ``ctfp report A B C``): the verdict the demo's summary and the report
lead with.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ctfp._util import write_text_atomic
from ctfp.imageclef.layout import LEAKTEST_JSON, leaktest_plot

__all__ = [
    "DEFAULT_METHODS",
    "leak_families",
    "plot_null_distributions",
    "run_leak_tests",
    "short_record",
    "summary_of",
]

#: the presets whose size on true nulls and power docs/leaktest.md measures
DEFAULT_METHODS = ("sim-pixel", "sim-ssim", "sim-fused", "base-ganleaks")
KIND = "leaktest"


# --------------------------------------------------------------------------------------------
# the family of several runs' leak tests


def leak_families(runs: Iterable[tuple[str, Mapping[str, Any]]], *, alpha: float = 0.05) -> list:
    """One family verdict per dataset for the leak tests that several runs' records hold
    (``[(method name, record), ...]``, records of :func:`ctfp.imageclef.runner.run`).

    Runs on the same dataset (its folder, ``datasets[i]["dataset"]["root"]``) form one family;
    a method with no leak test there takes no part. Returns, per dataset with at least one
    test, ``{"dataset", "root", "family", "tests"}`` (``family``: :func:`family_verdict`'s
    result, the tests in the runs' order; ``tests``: ``{name: leak-test result}``), in the
    order the datasets first appear."""
    from ctfp.membership.leaktest import family_verdict

    groups: dict[str, dict[str, Any]] = {}
    for name, record in runs:
        for info in record.get("datasets") or []:
            if not isinstance(info, Mapping):
                continue
            lt = info.get("leak_test")
            found = info.get("dataset")
            ds: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
            if not isinstance(lt, Mapping) or not isinstance(lt.get("verdict"), str):
                continue
            root = str(ds.get("root", ds.get("dataset", "?")))
            g = groups.setdefault(
                root, {"dataset": str(ds.get("dataset", root)), "root": root, "tests": {}}
            )
            key, n = name, 2
            while key in g["tests"]:  # two runs of one method on one dataset: both counted
                key, n = f"{name} ({n})", n + 1
            g["tests"][key] = lt
    out = []
    for g in groups.values():
        if any(t.get("verdict") != "not tested" for t in g["tests"].values()):
            fam = family_verdict(g["tests"], alpha=alpha)
            out.append({"dataset": g["dataset"], "root": g["root"], "family": fam,
                        "tests": g["tests"]})  # fmt: skip
    return out


def summary_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The short form of one :func:`run_leak_test` result (no scores, no histogram)."""
    keep = ("verdict", "supported", "p_value", "n_permutations", "p_value_resolution",
            "exact_enumeration", "auc", "auc_interval", "n_used", "n_not_used", "pipeline",
            "groups", "test", "message", "seconds")  # fmt: skip
    out = {k: result[k] for k in keep if k in result}
    c = result.get("control")
    if isinstance(c, Mapping):
        out["control"] = {k: c[k] for k in ("reference", "auc", "p_value", "reject") if k in c}
    if "difference" in result:
        out["difference"] = result["difference"]
    return out


def plot_null_distributions(
    tests: Sequence[tuple[str, Mapping[str, Any]]], path: str | os.PathLike[str], title: str
) -> Path | None:
    """One panel per tested method (:func:`ctfp.membership.leaktest.plot_null_distribution`),
    written atomically to ``path``; None when no method has a null distribution."""
    shown = [(n, r) for n, r in tests if isinstance(r.get("null_histogram"), Mapping)]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ctfp._util import atomic_write
    from ctfp.membership.leaktest import plot_null_distribution

    cols = min(3, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, r) in zip(axes.flat, shown, strict=False):
        plot_null_distribution(dict(r), ax=ax, title=f"{name}: {r.get('verdict')}")
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------
# ctfp leaktest


def _check_methods(methods: Any) -> list[str]:
    from ctfp.imageclef.methods import SIMILARITY_KEYS

    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",")]
    methods = list(methods)
    if not methods or any(not isinstance(m, str) or not m for m in methods):
        raise ValueError(
            f"methods: expected one or more of {', '.join(SIMILARITY_KEYS)} (comma-separated), "
            f"found {methods!r}"
        )
    unknown = [m for m in methods if m not in SIMILARITY_KEYS]
    if unknown:
        raise ValueError(
            f"methods: {', '.join(map(repr, unknown))} not known; expected among "
            f"{', '.join(SIMILARITY_KEYS)} (the paper's CNN methods 1-4 train a classifier, "
            f"which has no leak test)"
        )
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise ValueError(f"methods: {', '.join(twice)} given twice")
    return methods


def _check_numbers(alpha: Any, n_permutations: Any) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha (--alpha): expected a number in (0, 1), found {alpha!r}")
    if n_permutations is not None and (
        isinstance(n_permutations, bool)
        or not isinstance(n_permutations, int)
        or n_permutations < 19
    ):
        raise ValueError(
            f"n_permutations (--permutations): expected an integer >= 19 (the p-value's "
            f"resolution is 1/(B+1): 19 relabelings cannot go below 0.05), found "
            f"{n_permutations!r}"
        )


def run_leak_tests(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    methods: Sequence[str] | str = DEFAULT_METHODS,
    groups: str | os.PathLike[str] | Mapping[str, str] | None = None,
    alpha: float = 0.05,
    n_permutations: int | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    torch_threads: int | None = None,
    on_unreadable: str = "error",
    verbose: int = 1,
) -> dict[str, Any]:
    """The leak test of each of ``methods`` (keys of
    :data:`~ctfp.imageclef.methods.SIMILARITY_KEYS`) on every development dataset under
    ``data`` (``real_used/``, ``real_not_used/``, ``generated/``), and the family's verdict;
    the output folder ``out`` as in the module text; return the record.

    ``groups``: an ``id,group`` CSV file (or a dict) of the patient of each slice: relabelings
    then move whole patients. ``alpha``: the level of every test and of the family.
    ``n_permutations``: relabelings per test (None: each pipeline's default, fine enough for a
    Holm family of up to nine at 0.05). ``device``, ``threads``, ``torch_threads`` reach the
    methods that take them (``device``/``torch_threads`` are ignored by those that run no
    torch, as ``ctfp demo`` does). ``on_unreadable``: ``"error"`` or ``"skip"`` (leave
    undecodable development images out; they are listed in the record).

    Everything is checked before any work (methods, numbers, the groups file, the folders,
    every image); a failure leaves ``out`` as it was."""
    from ctfp.data.datasets import find_datasets
    from ctfp.imageclef.layout import read_groups
    from ctfp.imageclef.methods import estimator_takes, similarity_method
    from ctfp.imageclef.runner import (
        OutputFolder,
        RunInterrupted,
        _check_apart,
        _git_commit,
        _versions,
        check_images,
    )

    keys = _check_methods(methods)
    _check_numbers(alpha, n_permutations)
    if on_unreadable not in ("error", "skip"):
        raise ValueError(
            f"on_unreadable (--on-unreadable): expected 'error' or 'skip' (no test split: "
            f"nothing is predicted), found {on_unreadable!r}"
        )
    if str(out) == "":
        raise ValueError("out: expected an output folder, found '' (an empty name)")
    out = Path(out)
    group_of = read_groups(groups) if isinstance(groups, (str, os.PathLike)) else groups
    group_map = None if group_of is None else {str(k): str(v) for k, v in group_of.items()}
    _check_apart(out, data=data)
    datasets = find_datasets(data, require="development")
    unreadable = check_images([(d, None) for d in datasets], on_unreadable, threads)
    machine: dict[str, Any] = dict(device=device, threads=threads, torch_threads=torch_threads)
    scorers = {}
    for key in keys:
        m = similarity_method(key)
        taken = {
            k: v for k, v in machine.items() if k == "threads" or estimator_takes(m.options, k)
        }
        scorers[key] = (m, taken)

    def work(folder: OutputFolder) -> dict[str, Any]:
        from ctfp.imageclef.scorers import Fold, SimilarityScorer
        from ctfp.membership.leaktest import family_verdict

        record: dict[str, Any] = {
            "kind": KIND,
            "data": str(data),
            "methods": keys,
            "config": {
                "alpha": alpha,
                "n_permutations": n_permutations,
                "seed": seed,
                "groups": None
                if groups is None
                else str(groups)
                if isinstance(groups, (str, os.PathLike))
                else "given",
                "on_unreadable": on_unreadable,
                **machine,
            },  # fmt: skip
            "unreadable": unreadable,
            "versions": _versions(),
            "git_commit": _git_commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "datasets": [],
        }
        t_all = time.perf_counter()
        for ds in datasets:
            real, labels = ds.real()
            fold = Fold(dataset=ds, real=list(real), labels=list(labels),
                        generated=list(ds.generated), reference=list(real))  # fmt: skip
            tests: dict[str, Any] = {}
            fits: dict[str, Any] = {}
            for key, (m, taken) in scorers.items():
                scorer = SimilarityScorer(
                    m, seed=seed, verbose=verbose, groups=group_map, leak_alpha=alpha,
                    leak_permutations=n_permutations, **taken,
                )  # fmt: skip
                info = scorer.fit(fold).info
                tests[key] = info["leak_test"]
                fits[key] = {k: info[k] for k in ("fit_seconds", "groups") if k in info}
            family = family_verdict(tests, alpha=alpha)
            figure = plot_null_distributions(
                list(tests.items()), leaktest_plot(folder.build, ds.name),
                f"Leak test, {ds.name}: {family['verdict']} (Holm family of {family['n_tests']})",
            )  # fmt: skip
            record["datasets"].append({
                "dataset": ds.summary(), "family": family, "tests": tests, "fits": fits,
                "figure": None if figure is None else figure.name,
            })  # fmt: skip
        record["seconds"] = round(time.perf_counter() - t_all, 2)
        record["status"] = "complete"
        return record

    folder = OutputFolder(out)
    try:
        with folder:
            record = work(folder)
            _write(folder.build, record)
            folder.install()
    except KeyboardInterrupt:
        raise RunInterrupted(
            f"nothing of this run was kept; {out} is as it was before the run"
        ) from None
    return record


def short_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """``leaktest.json``: the record without scores and null distributions."""
    return {
        "data": record.get("data"),
        "alpha": (record.get("config") or {}).get("alpha"),
        "datasets": [
            {
                "dataset": (d.get("dataset") or {}).get("dataset"),
                "verdict": d["family"]["verdict"],
                "message": d["family"]["message"],
                "family": {k: v for k, v in d["family"].items() if k != "message"},
                "tests": {k: summary_of(v) for k, v in d["tests"].items()},
                "figure": d.get("figure"),
            }
            for d in record.get("datasets", [])
        ],
    }


def _write(build: Path, record: dict[str, Any]) -> None:
    from ctfp.imageclef.layout import RECORD, REPORT
    from ctfp.imageclef.report import leaktest_report_html
    from ctfp.imageclef.runner import _jsonable

    text = json.dumps(record, indent=2, default=_jsonable) + "\n"
    write_text_atomic(build / RECORD, text)
    short = json.dumps(short_record(record), indent=2, default=_jsonable) + "\n"
    write_text_atomic(build / LEAKTEST_JSON, short)
    write_text_atomic(build / REPORT, leaktest_report_html(build, json.loads(text)))
