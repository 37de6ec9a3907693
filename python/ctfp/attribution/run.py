"""Attribution and clustering runs that write an output folder: what ``ctfp attribute`` and
``ctfp cluster`` call.

The output folder has the shape of a ``ctfp run`` folder (:mod:`ctfp.imageclef.layout`'s fixed
names, built apart and moved in by :class:`ctfp.imageclef.runner.OutputFolder`)::

    OUT/run_test.txt          image_id,label (every test id once, labels among the sources)
    OUT/scores_test.csv       id, one probability column per source, predicted (attribute)
                              id, cluster (cluster)
    OUT/results.md, .json     accuracy, macro-F1, per-source recall, confusion matrix; or ARI,
                              NMI, purity (when the test truth is known)
    OUT/confusion.png         the confusion matrix (with the truth)
    OUT/gallery_residual.png, gallery_spectrum.png   each source's (cluster's) mean noise
                              residual and mean log-magnitude spectrum
    OUT/gallery_closest.png   a sample of test images with their closest real images in the
                              chosen subset and in the runner-up (2025 layout)
    OUT/record.json, report.html

Everything that can be checked is checked before any work (the output folder apart from the
data, the layout, every test id, the truth); a failure leaves the previous folder as it was.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import write_text_atomic
from ctfp.data.datasets import DatasetError

from .layout import Development, TestSet, read_development, read_test
from .workflow import METHODS, attribute_layout, cluster_folder, load_stack

__all__ = [
    "CLOSEST_PLOT",
    "RESIDUAL_PLOT",
    "SPECTRUM_PLOT",
    "run_attribution",
    "run_clustering",
]

RESIDUAL_PLOT = "gallery_residual.png"
SPECTRUM_PLOT = "gallery_spectrum.png"
CLOSEST_PLOT = "gallery_closest.png"
SPLIT = "test"
#: ``ctfp cluster``'s count criteria and features (SourceClustering's)
CRITERIA = ("silhouette", "calinski_harabasz")
CLUSTER_FEATURES = ("spectrum", "dct", "pixel")
#: test images shown with their closest real images (2025 layout)
N_CLOSEST = 6
#: at most this many images per source enter the mean residual / spectrum pictures
N_MEAN = 200


# --------------------------------------------------------------------------------------------------
# checks at the door


def _read(what: str, reader: Any, *args: Any) -> Any:
    """A layout read, its refusals as :class:`DatasetError` (one line, exit 2)."""
    try:
        return reader(*args)
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(f"{what}: {exc}") from None


def _check_ids(tst: TestSet) -> None:
    """Every test image's id can be a run-file id and is unique (``a.png``/``a.PNG``): the
    runner's rule and message (:func:`ctfp.imageclef.runner.id_problems`)."""
    from ctfp.imageclef.layout import image_id
    from ctfp.imageclef.runner import id_problems, refuse_bad_ids

    refuse_bad_ids(id_problems(tst.paths))
    ids = [image_id(p) for p in tst.paths]
    tst.ids = ids


def _check_out(out: str | os.PathLike[str], **inputs: Any) -> Path:
    from ctfp.imageclef.runner import _check_apart

    if str(out) == "":
        raise ValueError("out: expected an output folder, found '' (an empty name)")
    _check_apart(Path(out), **inputs)
    return Path(out)


# --------------------------------------------------------------------------------------------------
# files


def _scores_text(header: list[str], rows: list[list[str]]) -> str:
    """CSV text through the csv module (ids with commas or quotes stay one field)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def source_means(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean noise residual (:func:`~ctfp.attribution.features.noise_residual`, Gaussian
    denoiser) and mean log-magnitude 2-D FFT of the residual (frequency 0 at the centre) of a
    ``(N, H, W)`` stack."""
    from .features import noise_residual

    res = noise_residual(images)
    spec = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(res), axes=(1, 2))))
    return res.mean(axis=0), spec.mean(axis=0)


def plot_source_means(groups: dict[str, np.ndarray], folder: Path) -> list[str]:
    """:data:`RESIDUAL_PLOT` and :data:`SPECTRUM_PLOT`: one panel per source."""
    plt = _pyplot()
    means = {s: source_means(x[:N_MEAN]) for s, x in groups.items()}
    names = []
    for k, (stem, title) in enumerate(
        ((RESIDUAL_PLOT, "mean noise residual"), (SPECTRUM_PLOT, "mean log-magnitude spectrum"))
    ):
        n = len(means)
        fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False)
        for ax, (s, m) in zip(axes[0], means.items(), strict=True):
            img = m[k]
            lim = np.percentile(np.abs(img), 99) or 1.0
            if k == 0:
                ax.imshow(img, cmap="gray", vmin=-lim, vmax=lim)
            else:
                ax.imshow(img, cmap="magma")
            ax.set_title(s, fontsize=9)
            ax.axis("off")
        fig.suptitle(title, fontsize=10)
        _save(fig, folder / stem)
        names.append(stem)
    return names


def _small(x: np.ndarray, size: int = 64) -> np.ndarray:
    """Block-mean (or nearest) reduction to ``size x size`` as float32 vectors."""
    n, h, w = x.shape
    if h % size == 0 and w % size == 0:
        y = x.reshape(n, size, h // size, size, w // size).mean(axis=(2, 4))
    else:
        iy = (np.arange(size) * h // size)[:, None]
        ix = (np.arange(size) * w // size)[None, :]
        y = x[:, iy, ix]
    return y.reshape(n, -1).astype(np.float32)


def closest_real(
    dev: Development, test_images: np.ndarray, proba: np.ndarray, sources: list[str], seed: int
) -> list[dict[str, Any]]:
    """For a sample of test images: the closest real image (pixel distance at 64x64) in the
    chosen subset and in the runner-up (2025 layout)."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(test_images), min(N_CLOSEST, len(test_images)), replace=False))
    real = {s: load_stack(dev.real[s]) for s in sources}
    small = {s: _small(x) for s, x in real.items()}
    rows = []
    for i in pick.tolist():
        order = np.argsort(-proba[i], kind="stable")
        q = _small(test_images[i : i + 1])
        row: dict[str, Any] = {"index": i, "matches": []}
        for rank in order[:2].tolist():
            s = sources[rank]
            d = ((small[s] - q) ** 2).mean(axis=1)
            j = int(d.argmin())
            row["matches"].append(
                {
                    "source": s,
                    "proba": float(proba[i, rank]),
                    "image": dev.real[s][j].name,
                    "rmse": float(np.sqrt(d[j])),
                    "pixels": real[s][j],
                }
            )
        rows.append(row)
    return rows


def plot_closest(rows: list[dict[str, Any]], ids: list[str], test_images: np.ndarray,
                 path: Path) -> Path:  # fmt: skip
    """Rows: a test image, its closest real image in the chosen subset, in the runner-up."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.6, 2.3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        i = row["index"]
        panels = [(test_images[i], f"{ids[i]}")]
        for what, m in zip(("chosen", "runner-up"), row["matches"], strict=False):
            panels.append(
                (m["pixels"], f"{what}: {m['source']} (p={m['proba']:.2f})\nRMSE {m['rmse']:.1f}")
            )
        for c in range(3):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(panels):
                ax.imshow(panels[c][0], cmap="gray", vmin=0, vmax=255)
                ax.set_title(panels[c][1], fontsize=7)
    return _save(fig, path)


def plot_confusion_matrix(confusion: list[list[int]], labels: list[str], path: Path) -> Path:
    """A confusion matrix of any number of sources, counts in the cells."""
    plt = _pyplot()
    cm = np.asarray(confusion)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.6 * n))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > cm.max() / 2 else "black", fontsize=8)  # fmt: skip
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true",
           title="confusion matrix")  # fmt: skip
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    return _save(fig, path)


def _tables_md(tables: dict[str, list[dict[str, Any]]]) -> str:
    out = []
    for title, rows in tables.items():
        keys = list(rows[0])
        out.append(f"**{title}**\n")
        out.append("| " + " | ".join(keys) + " |")
        out.append("|" + "---|" * len(keys))
        for r in rows:
            cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _write_results(folder: Path, tables: dict[str, list[dict[str, Any]]]) -> None:
    from ctfp.imageclef.layout import RESULTS

    write_text_atomic(folder / f"{RESULTS}.md", _tables_md(tables))
    write_text_atomic(folder / f"{RESULTS}.json", json.dumps(tables, indent=2) + "\n")


def _finish(folder: Any, record: dict[str, Any]) -> None:
    """record.json and report.html into the build folder, then move it into place."""
    from ctfp.imageclef.layout import RECORD, REPORT
    from ctfp.imageclef.report import attribution_report_html

    write_text_atomic(folder.build / RECORD, json.dumps(record, indent=2) + "\n")
    write_text_atomic(folder.build / REPORT, attribution_report_html(folder.build, record))
    folder.install()


def _with_folder(out: Path, work: Any) -> dict[str, Any]:
    from ctfp.imageclef.runner import OutputFolder, RunInterrupted

    folder = OutputFolder(out)
    try:
        with folder:
            record = work(folder)
            _finish(folder, record)
    except KeyboardInterrupt:
        raise RunInterrupted(
            f"nothing of this run was kept; {out} is as it was before the run"
        ) from None
    return record


# --------------------------------------------------------------------------------------------------
# the runs


def run_attribution(
    data: str | os.PathLike[str],
    test: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str = "auto",
    test_labels: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Attribute every image of ``test`` to a source of the development folder ``data``
    (:func:`~ctfp.attribution.workflow.attribute_layout`) and write the output folder ``out``
    (see the module text); return the record."""
    from ctfp.imageclef.layout import run_file_path, scores_path
    from ctfp.imageclef.runfile import write_run_file

    if method != "auto" and method not in METHODS:
        raise ValueError(
            f"method: expected 'auto' or one of {', '.join(map(repr, METHODS))}, found {method!r}"
        )
    out = _check_out(out, data=data, test=test)
    if test_labels is not None and not Path(test_labels).is_file():
        raise DatasetError(f"--test-labels {test_labels}: no such file")
    t0 = time.perf_counter()
    dev = _read(f"--data {data}", read_development, data)
    tst = _read(f"--test {test}", read_test, test, test_labels)
    _check_ids(tst)
    if tst.truth is not None:
        unknown = sorted({v for v in tst.truth.values() if v not in dev.sources})
        if unknown:
            raise DatasetError(
                f"test labels: {unknown[0]!r} is not a development source "
                f"({', '.join(dev.sources)})"
            )

    def work(folder: Any) -> dict[str, Any]:  # the output folder is locked from here on
        res = attribute_layout(dev, tst, method=method, random_state=seed)
        b = Path(folder.build)
        named = run_file_path(out, SPLIT)
        write_run_file(run_file_path(b, SPLIT), tst.ids, res.labels, label_set=res.sources,
                       shown_as=named)  # fmt: skip
        rows = [
            [i, *(f"{p:.6f}" for p in row), lab]
            for i, row, lab in zip(res.ids, res.proba.tolist(), res.labels, strict=True)
        ]
        write_text_atomic(
            scores_path(b, SPLIT), _scores_text(["id", *res.sources, "predicted"], rows)
        )
        gen_paths, gen_src = dev.generated_items()
        groups = {
            s: load_stack([p for p, g in zip(gen_paths, gen_src, strict=True) if g == s][:N_MEAN])
            for s in res.sources
        }
        figures = plot_source_means(groups, b)
        closest: list[dict[str, Any]] = []
        if dev.year == "2025":
            x_test = load_stack(tst.paths)
            sample = closest_real(dev, x_test, res.proba, res.sources, seed)
            plot_closest(sample, tst.ids, x_test, b / CLOSEST_PLOT)
            figures.append(CLOSEST_PLOT)
            closest = [
                {"id": tst.ids[r["index"]],
                 "matches": [{k: v for k, v in m.items() if k != "pixels"} for m in r["matches"]]}
                for r in sample
            ]  # fmt: skip
        tables: dict[str, list[dict[str, Any]]] = {}
        if res.metrics is not None:
            from ctfp.imageclef.layout import confusion_plot

            m = res.metrics
            tables["Attribution (test)"] = [
                {"method": res.method, "n": m["n"], "accuracy": m["accuracy"],
                 "macro_f1": m["macro_f1"]}
            ]  # fmt: skip
            tables["Per-source recall (test)"] = [
                {"source": s, "recall": r} for s, r in m["recall"].items()
            ]
            tables["Confusion matrix (rows: true, columns: predicted)"] = [
                {"true": s, **dict(zip(m["labels"], row, strict=True))}
                for s, row in zip(m["labels"], m["confusion"], strict=True)
            ]
            plot_confusion_matrix(m["confusion"], m["labels"], confusion_plot(b))
            figures.append(confusion_plot(b).name)
            _write_results(b, tables)
        return {
            "task": "attribution",
            "command": "attribute",
            "method": {
                "key": res.method,
                "description": METHODS[res.method][2],
                **res.settings,
            },
            "year": dev.year,
            "data": str(Path(data).resolve()),
            "test": str(Path(test).resolve()),
            "sources": res.sources,
            "n_development": {s: len(dev.generated[s]) for s in dev.sources},
            "n_real": {s: len(dev.real.get(s, [])) for s in dev.sources},
            "n_test": len(tst.ids),
            "predicted_counts": {s: res.labels.count(s) for s in res.sources},
            "run_file": str(named),
            "scores_file": str(scores_path(out, SPLIT)),
            "metrics": res.metrics,
            "tables": tables,
            "figures": figures,
            "closest": closest,
            "seed": seed,
            "seconds": {**res.seconds, "total": round(time.perf_counter() - t0, 2)},
        }

    return _with_folder(out, work)


def _n_sources(value: int | str) -> int | str:
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 2:
        raise ValueError(f"n_sources (--n-sources): expected 'auto' or an integer >= 2, found "
                         f"{value!r}")  # fmt: skip
    return n


def run_clustering(
    folder_in: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    n_sources: int | str = "auto",
    features: str = "spectrum",
    criterion: str = "calinski_harabasz",
    truth: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Group the generated images of ``folder_in`` by source
    (:func:`~ctfp.attribution.workflow.cluster_folder`) and write the output folder ``out``;
    return the record. ``n_sources``: a count, or ``"auto"`` (chosen by ``criterion``:
    ``"silhouette"`` or ``"calinski_harabasz"``); ``features``: :data:`~ctfp.attribution.
    estimators.FEATURES` names but ``"closeness"``."""
    from ctfp.imageclef.layout import run_file_path, scores_path
    from ctfp.imageclef.runfile import write_run_file

    n = _n_sources(n_sources)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion (--criterion): expected one of {', '.join(CRITERIA)}, "
                         f"found {criterion!r}")  # fmt: skip
    if features not in CLUSTER_FEATURES:
        raise ValueError(f"features (--features): expected one of {', '.join(CLUSTER_FEATURES)}, "
                         f"found {features!r}")  # fmt: skip
    out = _check_out(out, data=folder_in)
    if truth is not None and not Path(truth).is_file():
        raise DatasetError(f"--truth {truth}: no such file")
    t0 = time.perf_counter()
    tst = _read(f"DIR {folder_in}", read_test, folder_in, truth)
    _check_ids(tst)
    if isinstance(n, int) and n > len(tst.ids):
        raise ValueError(f"--n-sources {n}: more than the {len(tst.ids)} images of {folder_in}")

    def work(folder: Any) -> dict[str, Any]:  # the output folder is locked from here on
        res = cluster_folder(tst, n_sources=n, features=features, criterion=criterion,
                             random_state=seed)  # fmt: skip
        clusters = sorted(set(res.labels), key=lambda c: int(c.rsplit("_", 1)[1]))
        b = Path(folder.build)
        named = run_file_path(out, SPLIT)
        write_run_file(run_file_path(b, SPLIT), tst.ids, res.labels, label_set=clusters,
                       shown_as=named)  # fmt: skip
        write_text_atomic(
            scores_path(b, SPLIT),
            _scores_text(["id", "cluster"], [[i, c] for i, c in zip(res.ids, res.labels,
                                                                    strict=True)]),
        )  # fmt: skip
        x = load_stack(tst.paths)
        lab = np.asarray(res.labels)
        figures = plot_source_means({c: x[lab == c] for c in clusters}, b)
        tables: dict[str, list[dict[str, Any]]] = {}
        metrics = res.metrics
        if metrics is not None:
            tables["Clustering (test)"] = [
                {"n": metrics["n"], "ari": metrics["ari"], "nmi": metrics["nmi"],
                 "purity": metrics["purity"], "clusters found": metrics["n_clusters"],
                 "sources": metrics["n_sources"]}
            ]  # fmt: skip
            _write_results(b, tables)
        return {
            "task": "clustering",
            "command": "cluster",
            "method": {
                "key": f"cluster-{features}",
                "description": f"k-means of the {features} features (SourceClustering), count "
                f"criterion {criterion}",
            },
            "criterion": criterion,
            "data": str(Path(folder_in).resolve()),
            "n_sources_asked": n,
            "n_sources": res.n_sources,
            "silhouette": {str(k): v for k, v in (res.silhouette or {}).items()},
            "sources": clusters,
            "n_test": len(tst.ids),
            "predicted_counts": {c: res.labels.count(c) for c in clusters},
            "run_file": str(named),
            "scores_file": str(scores_path(out, SPLIT)),
            "metrics": metrics,
            "tables": tables,
            "figures": figures,
            "seed": seed,
            "seconds": {"total": round(time.perf_counter() - t0, 2)},
        }

    return _with_folder(out, work)
