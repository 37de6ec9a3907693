"""Result plots as PNG files (matplotlib, no display needed): ROC curves of several methods on one
figure, score histograms of used vs not-used images, a confusion matrix, training curves, and the
evidence galleries (real slices next to their nearest generated images, :func:`plot_gallery`;
which images and neighbours go in is :mod:`ctfp.imageclef.report`'s choice)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GalleryRow",
    "difference_map",
    "plot_confusion",
    "plot_gallery",
    "plot_roc",
    "plot_score_histograms",
    "plot_training_curves",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_roc(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "ROC: used (1) vs not used (0)",
) -> Path:
    """One ROC curve per method: ``{name: (y_true, scores)}``; the legend gives each AUC (first).

    The legend sits below the axes, in the figure (never over the curves or the axis labels,
    never cut off: long names wrap and the figure grows with the legend), and the axes reach a
    little beyond [0, 1], so a perfect curve (AUC 1.0) is drawn inside the frame, not on it."""
    import textwrap

    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    drawn = []
    for name, (y, s) in curves.items():
        labels = np.asarray(y)
        if len(set(labels.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, s)
        label = f"AUC {roc_auc_score(labels, s):.3f}  {name}"  # the AUC first: one column of them
        drawn.append((fpr, tpr, textwrap.fill(label, 76, subsequent_indent="    ")))
    lines = 1 + sum(label.count("\n") + 1 for _, _, label in drawn)
    fig, ax = plt.subplots(figsize=(6, 5 + 0.17 * lines), layout="constrained")
    for fpr, tpr, label in drawn:
        ax.plot(fpr, tpr, label=label, clip_on=False)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    margin = 0.02
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
        xlim=(-margin, 1 + margin),
        ylim=(-margin, 1 + margin),
        aspect="equal",
    )
    fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    return _save(fig, path)


def plot_score_histograms(
    y_true: Sequence[int],
    scores: Sequence[float],
    path: str | Path,
    *,
    title: str = "scores",
    threshold: float | None = None,
) -> Path:
    """Score distributions of used and not-used images, with the decision threshold if given."""
    plt = _pyplot()
    y, s = np.asarray(y_true), np.asarray(scores, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    lo, hi = (float(s.min()), float(s.max())) if s.size else (0.0, 1.0)
    one_value = hi - lo <= 1e-6 * max(1.0, abs(lo), abs(hi))
    if one_value:  # (nearly) all scores equal: bins of a width that shows, around that value
        half = 0.05 * max(1.0, abs(lo))
        bins = np.linspace(lo - half, hi + half, 31)
        ax.text(0.02, 0.95, f"all scores {lo:.6g}", transform=ax.transAxes, va="top", fontsize=8)
    else:
        bins = np.histogram_bin_edges(s, bins=30)
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label=f"used (n={int((y == 1).sum())})")
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label=f"not used (n={int((y == 0).sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    ax.set(xlabel="score (higher = more likely used)", ylabel="images", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_confusion(
    confusion: Sequence[Sequence[int]], path: str | Path, *, title: str = "confusion matrix"
) -> Path:
    """A 2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` with counts in the cells."""
    plt = _pyplot()
    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black"
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["not used", "used"],
        yticklabels=["not used", "used"],
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    return _save(fig, path)


def plot_training_curves(
    history: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "training"
) -> Path:
    """A classifier's ``history_`` (one row per epoch): training and validation loss on the left,
    validation accuracy and ROC-AUC on the right (a note when there was no validation split)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.6))
    epochs = [int(row.get("epoch", i + 1)) for i, row in enumerate(history)]

    def draw(ax: Any, key: str, label: str) -> bool:
        pts = [
            (e, float(row[key]))
            for e, row in zip(epochs, history, strict=True)
            if isinstance(row.get(key), (int, float)) and np.isfinite(row[key])
        ]
        if pts:
            ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", ms=3, label=label)
        return bool(pts)

    draw(ax_loss, "loss", "training loss")
    draw(ax_loss, "val_loss", "validation loss")
    ax_loss.set(xlabel="epoch", ylabel="binary cross-entropy", title="loss")
    shown = [
        draw(ax_val, "val_accuracy", "validation accuracy"),
        draw(ax_val, "val_roc_auc", "validation ROC-AUC"),
    ]
    ax_val.set(xlabel="epoch", ylim=(0, 1.02), title="validation")
    if not any(shown):
        ax_val.text(0.5, 0.5, "no validation split", ha="center", va="center", color="0.4")
    for ax in (ax_loss, ax_val):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def difference_map(real: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``|real - other|`` of two uint8 images of one shape, as uint8 (0 where they are equal, so
    an exact copy gives a flat, all-zero map)."""
    a, b = np.asarray(real), np.asarray(other)
    if a.shape != b.shape:
        raise ValueError(f"other: expected the real image's shape {a.shape}, found {b.shape}")
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.uint8)


@dataclass(frozen=True)
class GalleryRow:
    """One row of an evidence gallery: a real slice and its nearest generated images.

    ``real`` and every neighbour image are uint8 ``(H, W)`` of one shape; ``neighbours`` is
    ``(image, caption)`` pairs, nearest first (caption: file name and similarity value);
    ``title`` goes above the real slice, ``caption`` under it."""

    real: np.ndarray
    title: str
    caption: str
    neighbours: Sequence[tuple[np.ndarray, str]]


def plot_gallery(
    rows: Sequence[GalleryRow],
    path: str | Path,
    *,
    title: str = "nearest generated images",
    diff_max: int = 64,
) -> Path:
    """One row per real slice: the slice, its nearest generated images (captions under them) and
    the absolute-difference map against the nearest one (:func:`difference_map`; black = equal,
    bright = ``diff_max`` grey levels or more; the mean is printed under it)."""
    if not rows:
        raise ValueError("rows: expected at least one gallery row, found none")
    plt = _pyplot()
    k = max(len(r.neighbours) for r in rows)
    n_cols = k + 2
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(1.75 * n_cols, 2.25 * len(rows) + 0.4), squeeze=False
    )
    for r, row in enumerate(rows):
        cells: list[tuple[np.ndarray | None, str, int, str, str]] = [
            (row.real, "gray", 255, row.title, row.caption)
        ]
        for j, (img, cap) in enumerate(row.neighbours):
            cells.append((img, "gray", 255, f"nearest {j + 1}" if r == 0 else "", cap))
        while len(cells) < k + 1:
            cells.append((None, "gray", 255, "", ""))
        if row.neighbours:
            diff = difference_map(row.real, row.neighbours[0][0])
            cells.append(
                (
                    diff,
                    "magma",
                    diff_max,
                    "|real - nearest 1|" if r == 0 else "",
                    f"mean {diff.mean():.1f}, max {int(diff.max())}",
                )
            )
        else:
            cells.append((None, "gray", 255, "", "no neighbours"))
        for ax, (picture, cmap, vmax, head, cap) in zip(axes[r], cells, strict=True):
            if picture is not None:
                ax.imshow(picture, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(picture is not None)
                spine.set_linewidth(0.5)
            if head:
                ax.set_title(head, fontsize=7.5)
            ax.set_xlabel(cap, fontsize=6.5, labelpad=2)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    from ctfp._util import write_png_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fig.get_layout_engine() is None:  # a figure laid out by its own engine keeps it
            fig.tight_layout()
        # atomic: a reader (the report) never sees half a PNG
        write_png_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        _pyplot().close(fig)
    return path
