"""Metrics against hand-computed confusion matrices, the result tables (membership/metrics.py) and
the result plots (python/ctfp/imageclef/plots.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctfp.imageclef.plots import (
    GalleryRow,
    difference_map,
    plot_confusion,
    plot_gallery,
    plot_roc,
    plot_score_histograms,
    plot_training_curves,
)
from ctfp.membership.metrics import COLUMNS, evaluate, markdown_table, write_tables


def by_hand(tp: int, fp: int, fn: int, tn: int) -> dict:
    """The metrics of a confusion matrix, from their definitions."""
    n = tp + fp + fn + tn
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    p_o = (tp + tn) / n
    # chance agreement: P(true used) P(pred used) + P(true not) P(pred not)
    p_e = ((tp + fn) / n) * ((tp + fp) / n) + ((tn + fp) / n) * ((tn + fn) / n)
    return {
        "n": n,
        "accuracy": p_o,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
        "kappa": (p_o - p_e) / (1 - p_e),
        "confusion": [[tn, fp], [fn, tp]],
        "predicted_used": tp + fp,
    }


def assert_matches(got: dict, want: dict) -> None:
    for k, v in want.items():
        assert got[k] == (pytest.approx(v) if isinstance(v, float) else v), k


def test_evaluate_symmetric_example() -> None:
    y = [1, 1, 0, 0, 1, 0]
    p = [1, 0, 0, 1, 1, 0]
    # pairs: (1,1) tp, (1,0) fn, (0,0) tn, (0,1) fp, (1,1) tp, (0,0) tn
    got = evaluate(y, p)
    assert_matches(got, by_hand(tp=2, fp=1, fn=1, tn=2))
    # and the numbers themselves: p_o = 4/6, p_e = 1/2, kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["kappa"] == pytest.approx(1 / 3)
    assert got["confusion"] == [[2, 1], [1, 2]]
    assert got["roc_auc"] is None


def test_evaluate_asymmetric_example() -> None:
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    got = evaluate(y, p)
    assert_matches(got, by_hand(tp=3, fp=2, fn=1, tn=4))
    # precision 3/5, recall 3/4, F1 = 2tp / (2tp + fp + fn) = 6/9;
    # p_o = 0.7, p_e = 0.4 * 0.5 + 0.6 * 0.5 = 0.5, kappa = 0.2 / 0.5 = 0.4
    assert (got["precision"], got["recall"]) == pytest.approx((0.6, 0.75))
    assert got["f1"] == pytest.approx(6 / 9)
    assert got["kappa"] == pytest.approx(0.4)
    assert got["predicted_used"] == 5
    assert got["n"] == 10


def test_all_used_on_a_balanced_set_flatters_f1() -> None:
    y = [1] * 50 + [0] * 50
    got = evaluate(y, [1] * 100)
    assert round(got["f1"], 3) == 0.667
    assert got["accuracy"] == 0.5
    assert got["kappa"] == 0.0
    assert got["precision"] == 0.5 and got["recall"] == 1.0


def test_all_not_used_and_extremes() -> None:
    y = [1, 1, 0, 0]
    none = evaluate(y, [0, 0, 0, 0])
    assert (none["precision"], none["recall"], none["f1"], none["kappa"]) == (0, 0, 0, 0)
    assert none["predicted_used"] == 0
    perfect = evaluate(y, y)
    assert (perfect["accuracy"], perfect["f1"], perfect["kappa"]) == (1.0, 1.0, 1.0)
    inverse = evaluate(y, [0, 0, 1, 1])
    assert inverse["kappa"] == pytest.approx(-1.0)
    # one class everywhere: kappa is undefined in sklearn (nan), reported as 0
    same = evaluate([1, 1], [1, 1])
    assert same["kappa"] == 0.0 and same["f1"] == 1.0


def test_roc_auc_only_with_scores_and_both_classes() -> None:
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    # positive-negative pairs ranked right: (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4); not (0.35, 0.4)
    assert evaluate(y, [0, 1, 0, 1], s)["roc_auc"] == pytest.approx(3 / 4)
    assert evaluate(y, [0, 1, 0, 1])["roc_auc"] is None
    assert evaluate([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.5])["roc_auc"] is None
    with pytest.raises(ValueError, match="scores"):
        evaluate(y, [0, 1, 0, 1], [0.1, 0.2])


def test_evaluate_accepts_bool_and_float_labels() -> None:
    a = evaluate(np.array([True, False, True]), np.array([1.0, 0.0, 0.0]))
    assert_matches(a, {"accuracy": 2 / 3, "confusion": [[1, 0], [1, 1]]})


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([1, 0], [1, 0, 1], "one length"),
        ([[1, 0]], [[1, 0]], "1-D"),
        ([1, 2], [1, 0], "y_true"),
        ([1, 0], [1, -1], "y_pred"),
        ([1, 0], [0.7, 0.2], "y_pred"),  # scores passed as labels must not become [0, 0]
        ([], [], "at least one"),
    ],
)
def test_evaluate_errors(y: list, p: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(y, p)


# --------------------------------------------------------------------------------------------------
# tables


def rows() -> list[dict]:
    a = {"method": "Method 1", **evaluate([1, 1, 0, 0], [1, 0, 0, 0], [0.9, 0.4, 0.3, 0.1])}
    b = {"method": "Method 2", **evaluate([1, 1, 0, 0], [1, 1, 1, 1])}
    return [a, b]


def test_markdown_table_shape() -> None:
    lines = markdown_table(rows(), title="Both datasets").splitlines()
    assert lines[0] == "**Both datasets**"
    assert lines[1] == ""
    assert lines[2] == "| Method | Accuracy | Precision | Recall | F1 | Kappa | ROC-AUC |"
    assert lines[3] == "|---|" + "---:|" * len(COLUMNS)
    assert len(lines) == 6
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert cells == ["Method 1", "0.750", "1.000", "0.500", "0.667", "0.500", "1.000"]
    cells = [c.strip() for c in lines[5].strip("|").split("|")]
    assert cells[0] == "Method 2"
    assert cells[4] == "0.667"  # all used: F1 flattered
    assert cells[-1] == "-"  # no scores, no ROC-AUC


def test_markdown_table_without_title_and_other_name_key() -> None:
    r = [{"run": "kde-1", **evaluate([1, 0], [1, 0])}]
    lines = markdown_table(r, name_key="run").splitlines()
    assert lines[0].startswith("| Method |")
    assert lines[2].startswith("| kde-1 | 1.000 |")


def test_write_tables(tmp_path: Path) -> None:
    r = rows()
    tables = {"Both datasets": r, "Dataset1": r[:1]}
    md, js = write_tables(tables, tmp_path / "out", stem="table3")
    assert (md, js) == (tmp_path / "out" / "table3.md", tmp_path / "out" / "table3.json")
    assert json.loads(js.read_text()) == tables
    text = md.read_text()
    assert text.count("| Method |") == 2
    assert "**Both datasets**" in text and "**Dataset1**" in text
    assert text.endswith("\n")
    md2, js2 = write_tables({"x": r}, tmp_path)
    assert (md2.name, js2.name) == ("results.md", "results.json")


# --------------------------------------------------------------------------------------------------
# plots


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 0 and im.size[1] > 0


def test_plots_write_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.array([1] * 20 + [0] * 20)
    s = np.concatenate([rng.normal(0.6, 0.1, 20), rng.normal(0.4, 0.1, 20)])
    curves = {"method 1": (y, s), "method 2": (y, rng.random(40)), "one class": ([1, 1], [0, 1])}
    roc = plot_roc(curves, tmp_path / "plots" / "roc.png")  # folder created
    assert roc == tmp_path / "plots" / "roc.png"
    assert_png(roc)
    assert_png(plot_score_histograms(y, s, tmp_path / "hist.png", threshold=0.5))
    assert_png(plot_score_histograms(y, s, tmp_path / "hist_plain.png", title="dev"))
    # (nearly) one score for every image (an untrained classifier): bars still show
    flat = np.full(40, 0.4717432) + np.linspace(0, 4e-9, 40)
    assert_png(plot_score_histograms(y, flat, tmp_path / "hist_flat.png", threshold=0.5))
    assert_png(plot_confusion(evaluate(y, s >= 0.5)["confusion"], tmp_path / "cm.png"))


def test_difference_map_is_flat_for_an_exact_copy() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (16, 12), dtype=np.uint8)
    assert difference_map(a, a.copy()).max() == 0
    b = a.astype(int)
    b[3, 4] = 255 - b[3, 4]
    d = difference_map(a, b.astype(np.uint8))
    assert d.dtype == np.uint8 and d[3, 4] == abs(255 - 2 * int(a[3, 4]))
    assert np.count_nonzero(d) <= 1
    assert difference_map(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)).min() == 255
    with pytest.raises(ValueError, match="shape"):
        difference_map(a, a[:-1])


def test_gallery_and_training_curves_write_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(4)]
    rows = [
        GalleryRow(img[0], "highest #1", "real_1\nscore 3", [(img[0], "g1.png\nRMS 0.0"),
                                                         (img[1], "g2.png\nRMS 9.0")]),
        GalleryRow(img[2], "low #1", "real_2", [(img[3], "g3.png")]),  # fewer neighbours
    ]  # fmt: skip
    path = plot_gallery(rows, tmp_path / "g" / "gallery.png", title="t")
    assert_png(path)
    with Image.open(path) as im:  # 2 rows of (real, 2 neighbours, difference map)
        assert im.size[0] > im.size[1] * 1.2
    with pytest.raises(ValueError, match="at least one"):
        plot_gallery([], tmp_path / "none.png")
    history = [
        {"epoch": 1, "loss": 0.7, "val_loss": 0.69, "val_accuracy": 0.5, "val_roc_auc": None},
        {
            "epoch": 2,
            "loss": 0.6,
            "val_loss": float("nan"),
            "val_accuracy": 0.6,
            "val_roc_auc": 0.7,
        },
    ]
    assert_png(plot_training_curves(history, tmp_path / "train.png", title="m1"))
    assert_png(plot_training_curves([{"epoch": 1, "loss": 0.7}], tmp_path / "no_val.png"))
