"""Result plots as PNG files (matplotlib, no display needed): ROC curves of several methods on one
figure, score histograms of used vs not-used images, and a confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_confusion", "plot_roc", "plot_score_histograms"]


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
    """One ROC curve per method: ``{name: (y_true, scores)}``; the legend gives each AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (y, s) in curves.items():
        y = np.asarray(y)
        if len(set(y.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=8)
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


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path
