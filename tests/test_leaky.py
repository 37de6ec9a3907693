"""The demo's leaky generator: layout, ground truth, and a leak that is really there."""

from __future__ import annotations

import csv
import json

import numpy as np

from ctfp import decode_png
from ctfp.data.datasets import find_datasets
from ctfp.imageclef.leaky import LeakyDataSpec, make_leaky_dataset

SPEC = dict(n_used=6, n_not_used=6, n_test_used=4, n_test_not_used=4, n_generated=24, size=64)


def _nearest(a, bank):
    return min(np.abs(a.astype(int) - b.astype(int)).mean() for b in bank)


def test_layout_truth_and_leak(tmp_path):
    summary = make_leaky_dataset(tmp_path, LeakyDataSpec(leak=0.5, **SPEC))
    dev = find_datasets(tmp_path / "development", require="development")[0]
    test = find_datasets(tmp_path / "test", require="test")[0]
    assert (len(dev.used), len(dev.not_used), len(dev.generated)) == (6, 6, 24)
    assert len(test.unknown) == 8
    rows = list(csv.reader(open(tmp_path / "test_labels.csv")))
    assert sorted(r[0] for r in rows) == sorted(p.stem for p in test.unknown)
    assert sum(int(r[1]) for r in rows) == 4
    assert json.loads((tmp_path / "leak.json").read_text()) == summary
    # leaked copies sit far closer to used images than any generated image to not-used ones
    used = [decode_png(p) for p in dev.used]
    not_used = [decode_png(p) for p in dev.not_used]
    gen = [decode_png(p) for p in dev.generated]
    to_used = sorted(_nearest(g, used) for g in gen)
    to_not = min(_nearest(g, not_used) for g in gen)
    assert to_used[0] < 0.8 * to_not


def test_no_leak_means_no_near_copies(tmp_path):
    summary = make_leaky_dataset(tmp_path, LeakyDataSpec(leak=0.0, **SPEC))
    assert summary["leaked_generated"] == {"development": 0, "test": 0}


def test_deterministic(tmp_path):
    a = make_leaky_dataset(tmp_path / "a", LeakyDataSpec(**SPEC, seed=3))
    b = make_leaky_dataset(tmp_path / "b", LeakyDataSpec(**SPEC, seed=3))
    assert a == b
    pa = sorted((tmp_path / "a" / "development" / "generated").iterdir())
    pb = sorted((tmp_path / "b" / "development" / "generated").iterdir())
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(pa, pb, strict=True))
