"""Scores of attribution (accuracy, macro-F1, per-source recall, confusion matrix) and of
clustering (ARI, NMI, purity, the number of clusters found)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["attribution_metrics", "clustering_metrics", "purity"]


def attribution_metrics(y_true: Any, y_pred: Any, labels: Any = None) -> dict[str, Any]:
    """``accuracy``, ``macro_f1``, ``recall`` (per source), ``confusion`` (rows: true, columns:
    predicted, in ``labels`` order; default: the sorted union of both) and ``labels``."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_pred: expected {len(y_true)} predictions (one per true label), found {len(y_pred)}"
        )
    labels = np.unique(np.r_[y_true, y_pred]) if labels is None else np.asarray(labels).astype(str)
    rec = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "recall": {str(c): float(r) for c, r in zip(labels, rec, strict=True)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": [str(c) for c in labels],
    }


def purity(y_true: Any, clusters: Any) -> float:
    """Share of images whose cluster's most common true label is their own."""
    y_true = np.asarray(y_true).astype(str)
    clusters = np.asarray(clusters).astype(str)
    total = 0
    for c in np.unique(clusters):
        _, counts = np.unique(y_true[clusters == c], return_counts=True)
        total += int(counts.max())
    return total / max(1, len(y_true))


def clustering_metrics(y_true: Any, clusters: Any) -> dict[str, Any]:
    """``ari`` (adjusted Rand index), ``nmi`` (normalised mutual information), ``purity``,
    ``n_clusters`` found and ``n_sources`` true."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y_true = np.asarray(y_true).astype(str)
    clusters = np.asarray(clusters).astype(str)
    if y_true.shape != clusters.shape:
        raise ValueError(
            f"clusters: expected {len(y_true)} cluster labels (one per image), found "
            f"{len(clusters)}"
        )
    return {
        "n": int(len(y_true)),
        "ari": float(adjusted_rand_score(y_true, clusters)),
        "nmi": float(normalized_mutual_info_score(y_true, clusters)),
        "purity": float(purity(y_true, clusters)),
        "n_clusters": int(len(np.unique(clusters))),
        "n_sources": int(len(np.unique(y_true))),
    }
