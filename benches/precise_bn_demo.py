"""Does ``precise_bn`` change the paper's Method 1 on the demo's data? (docs/classifier.md)

    python -m ctfp demo --out out/demo           # once: the demo's data in out/demo/data
    python benches/precise_bn_demo.py [--data out/demo/data] [--json out/precise_bn_demo.json]

The demo's Method 1 settings (MobileNetV2 from random initialisation, 128 px, 3 epochs, 6
copies per real image, batch 32, lr 1e-4, seed 0), trained on the development split the runner
uses (its 0.25 hold-out left out), one torch thread, with ``precise_bn`` off and on; each scores
the test images: accuracy at the paper's 0.5 threshold, ROC-AUC, how many are predicted used,
and the range of the probabilities of "generated".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import roc_auc_score

    from ctfp.data.datasets import find_datasets
    from ctfp.data.expansion import paper_training_set
    from ctfp.imageclef.layout import image_id, read_test_labels
    from ctfp.imageclef.runner import split_holdout
    from ctfp.models.classifier import FingerprintClassifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("out/demo/data"))
    ap.add_argument("--json", type=Path, default=Path("out/precise_bn_demo.json"))
    a = ap.parse_args(argv)
    (dev,) = find_datasets(a.data / "development", require="development")
    (test,) = find_datasets(a.data / "test", require="test")
    real, labels = dev.real()
    train, _ = split_holdout(real, labels, 0.25, 0)
    truth = read_test_labels(a.data / "test_labels.csv")
    y = np.array([truth[image_id(p)] for p in test.unknown])
    ts = paper_training_set([real[i] for i in train], list(dev.generated), copies=6)
    out = {}
    for precise in (False, True):
        clf = FingerprintClassifier(
            backbone="mobilenet_v2", weights=None, image_size=128, batch_size=32, max_epochs=3,
            lr=1e-4, random_state=0, device="cpu", torch_threads=1, n_jobs=1, verbose=0,
            precise_bn=precise,
        )  # fmt: skip
        t0 = time.perf_counter()
        clf.fit(ts.sources, ts.labels, sample_augment=ts.augment)
        p = clf.predict_proba(list(test.unknown))[:, list(clf.classes_).index(1)]
        pred = (p >= 0.5).astype(int)
        out[f"precise_bn={precise}"] = {
            "accuracy": float((pred == y).mean()),
            "roc_auc": float(roc_auc_score(y, p)),
            "predicted_used": int(pred.sum()),
            "test_images": len(y),
            "p_min": float(p.min()),
            "p_max": float(p.max()),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"precise_bn={precise}: {out[f'precise_bn={precise}']}", flush=True)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
