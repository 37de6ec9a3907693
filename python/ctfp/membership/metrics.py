"""Evaluation of membership predictions (label 1 = used to train the generator) with
scikit-learn's metrics, and tables shaped like the KDE Lab paper's (Tables 3-5).

F1 of the "used" class was the official metric in 2023 (likely 2024); Cohen's kappa in 2025.
Predicting "used" for everything on a balanced set scores F1 0.667 with accuracy 0.5, so tables
always show accuracy and kappa next to F1, and ROC-AUC whenever a method produces scores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ctfp._util import check_binary_labels, write_text_atomic

__all__ = ["COLUMNS", "evaluate", "markdown_table", "write_tables"]

COLUMNS = ("accuracy", "precision", "recall", "f1", "kappa", "roc_auc")
_HEADERS = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "kappa": "Kappa",
    "roc_auc": "ROC-AUC",
}


def evaluate(y_true: ArrayLike, y_pred: ArrayLike, scores: ArrayLike | None = None) -> dict:
    """Accuracy, precision, recall and F1 of the used class (1), Cohen's kappa, ROC-AUC (when
    ``scores`` are given and both classes occur) and the confusion matrix
    ``[[tn, fp], [fn, tp]]``."""
    from sklearn import metrics as m

    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if yt.shape != yp.shape or yt.ndim != 1:
        raise ValueError(
            "y_true and y_pred: expected two 1-D arrays of one length, "
            f"found {yt.shape} and {yp.shape}"
        )
    if len(yt) == 0:
        raise ValueError("y_true and y_pred: expected at least one image, found none")
    # Checked before the cast to int: scores passed as labels (0.7) must not become 0 silently.
    yt = check_binary_labels(yt, "y_true")
    yp = check_binary_labels(yp, "y_pred")
    out = {
        "n": int(len(yt)),
        "accuracy": float(m.accuracy_score(yt, yp)),
        "precision": float(m.precision_score(yt, yp, pos_label=1, zero_division=0)),
        "recall": float(m.recall_score(yt, yp, pos_label=1, zero_division=0)),
        "f1": float(m.f1_score(yt, yp, pos_label=1, zero_division=0)),
        "kappa": float(m.cohen_kappa_score(yt, yp)) if len(set(yt) | set(yp)) > 1 else 0.0,
        "roc_auc": None,
        "confusion": m.confusion_matrix(yt, yp, labels=[0, 1]).tolist(),
        "predicted_used": int(yp.sum()),
    }
    if math.isnan(out["kappa"]):
        out["kappa"] = 0.0
    if scores is not None:
        s = np.asarray(scores, dtype=float)
        if s.shape != yt.shape:
            raise ValueError(f"scores: expected {yt.shape}, found {s.shape}")
        if len(set(yt.tolist())) == 2:
            out["roc_auc"] = float(m.roc_auc_score(yt, s))
    return out


def markdown_table(
    rows: Sequence[dict], *, title: str | None = None, name_key: str = "method"
) -> str:
    """Rows of :func:`evaluate` results (each with a ``name_key`` entry) as a Markdown table."""
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(["Method", *(_HEADERS[c] for c in COLUMNS)]) + " |")
    lines.append("|---|" + "---:|" * len(COLUMNS))
    for r in rows:
        cells = ["-" if r.get(c) is None else f"{r[c]:.3f}" for c in COLUMNS]
        lines.append(f"| {r[name_key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(
    tables: dict[str, Sequence[dict]], out_dir: str | Path, *, stem: str = "results"
) -> tuple[Path, Path]:
    """Write ``{table title: rows}`` as ``stem.md`` and ``stem.json`` in ``out_dir`` (each
    through :func:`ctfp._util.write_text_atomic`: a reader never sees half a table)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    js = out / f"{stem}.json"
    write_text_atomic(
        md, "\n\n".join(markdown_table(rows, title=title) for title, rows in tables.items()) + "\n"
    )
    write_text_atomic(js, json.dumps(tables, indent=2) + "\n")
    return md, js
