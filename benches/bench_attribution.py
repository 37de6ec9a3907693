"""Timing of attribution: 10,000 generated 256x256 images among five sources, features included.

Two ways to run it::

    python benches/bench_attribution.py                 # end to end, out/bench_attribution.json
    python benches/bench_attribution.py --n 2000 --cnn-n 200
    python benches/bench_attribution.py --n 1000 --methods cnn-finetune --out out/bench_ft.json
    pytest benches/bench_attribution.py --benchmark-only  # per-block groups, ctfp beside a peer

End to end (the script): the five 2025 generators (committed checkpoints) make ``--n`` test images
(``--n / 5`` each) and 200 development images each, written as PNGs once (not timed). Each method
is fitted on the development images (fit time reported apart), then timed on the test images
from their PNG files: decoding (ctfp's Rust decoder), features, prediction. The CNN method
(EfficientNet-Lite0 at 128 px, one torch thread per core) is timed on ``--cnn-n`` images and
scaled to ``--n`` (said so in the output). ``cnn-finetune`` (the multi-class
FingerprintClassifier, trained on the development images) runs only when named in ``--methods``;
it is timed on all ``--n`` images and never scaled. The load average at the start is recorded:
the machine is shared, so times are upper bounds.

pytest-benchmark groups (256 images of 256x256): the residual + spectrum features
(:class:`ctfp.attribution.ResidualSpectrum`) against a peer written from scipy.ndimage's
``gaussian_filter`` and numpy's ``fft.rfft2``; outputs are checked to agree first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

TARGET_S = 60.0
FAST = ("spectrum", "pixel-nearest", "residual-correlation", "dct-logistic", "subset")
DEFAULT_METHODS = (*FAST, "cnn-svm")


def _write(folder: Path, images: np.ndarray) -> list[Path]:
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:05d}.png" for i in range(len(images))]
    if all(p.is_file() for p in paths):
        return paths

    def one(i: int) -> None:
        Image.fromarray(images[i]).save(paths[i])

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, range(len(images))))
    return paths


def prepare(n: int, n_dev: int, cache: Path) -> dict[str, Any]:
    from ctfp.attribution import gans
    from ctfp.attribution.dataset import sample_setting

    t = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    tag = cache / f"test_{n}"
    Xd, yd = sample_setting("2025", n_dev, "dev")
    if not (tag / f"img_{n - 1:05d}.png").is_file():
        Xt, yt = sample_setting("2025", n // 5, "test")
        np.save(cache / f"test_{n}_labels.npy", yt)
        paths = _write(tag, Xt)
        del Xt
    else:
        paths = sorted(tag.glob("img_*.png"))
    yt = np.load(cache / f"test_{n}_labels.npy")
    real, rs = [], []
    for spec in gans.SETTINGS["2025"]:
        imgs = gans.training_images(spec, size=256)
        real.append(imgs)
        rs += [spec.name] * len(imgs)
    return {
        "dev": (Xd, yd),
        "real": (np.concatenate(real), np.array(rs)),
        "paths": paths,
        "labels": yt,
        "prepare_seconds": round(time.perf_counter() - t, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ctfp.attribution import METHODS, NearestRealSubset, make_method
    from ctfp.attribution.workflow import load_stack

    torch.set_num_threads(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    data = prepare(args.n, args.n_dev, args.cache)
    Xd, yd = data["dev"]
    real = data["real"]
    paths, yt = data["paths"], data["labels"]
    rows = []
    for name in args.methods:
        est = make_method(name, 0)
        t = time.perf_counter()
        if isinstance(est, NearestRealSubset):
            est.fit(*real)
        elif METHODS[name][1]:
            est.fit(Xd, yd, real_images=real[0], real_sources=real[1])
        else:
            est.fit(Xd, yd)
        fit_s = time.perf_counter() - t
        sub = paths if name != "cnn-svm" else paths[: args.cnn_n]
        t = time.perf_counter()
        preds = []
        for start in range(0, len(sub), args.chunk):
            preds.append(est.predict(load_stack(sub[start : start + args.chunk])))
        s = time.perf_counter() - t
        pred = np.concatenate(preds)
        scaled = s * len(paths) / len(sub)
        row = {
            "method": name,
            "n_dev": len(yd),
            "fit_seconds": round(fit_s, 1),
            "images_timed": len(sub),
            "seconds": round(s, 1),
            "seconds_for_n": round(scaled, 1),
            "scaled": len(sub) != len(paths),
            "accuracy": round(float((pred == yt[: len(sub)]).mean()), 4),
            "target_met": scaled <= TARGET_S if name in FAST else None,
        }
        if name == "cnn-finetune":  # backbone, weights, epochs, input size
            from ctfp.attribution.workflow import method_settings

            row["settings"] = method_settings(est)
        rows.append(row)
        print(
            f"{name}: {row['seconds_for_n']} s for {len(paths)} images"
            f"{' (scaled from ' + str(len(sub)) + ')' if row['scaled'] else ''}, fit "
            f"{row['fit_seconds']} s, accuracy {row['accuracy']}",
            flush=True,
        )
    return {
        "command": "python benches/bench_attribution.py " + " ".join(sys.argv[1:]),
        "n": len(paths),
        "n_dev_per_source": args.n_dev,
        "chunk": args.chunk,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": load,
        "prepare_seconds": data["prepare_seconds"],
        "target_seconds": TARGET_S,
        "rows": rows,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="test images (a multiple of 5)")
    ap.add_argument("--n-dev", type=int, default=200, help="development images per source")
    ap.add_argument("--cnn-n", type=int, default=500)
    ap.add_argument("--chunk", type=int, default=1000, help="images decoded per block")
    ap.add_argument(
        "--methods",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default=DEFAULT_METHODS,
        help=f"methods timed (default: {','.join(DEFAULT_METHODS)}; also cnn-finetune)",
    )
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ctfp_bench_attr")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench_attribution.json")
    args = ap.parse_args(argv)
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------ pytest-benchmark

try:
    import pytest
except ImportError:  # pragma: no cover - the script needs no pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def images():
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (256, 256, 256)).astype(np.uint8)

    def _peer(images: np.ndarray) -> np.ndarray:
        """scipy.ndimage Gaussian (sigma 1, truncate 2, mirrored) + numpy rfft2, low band,
        2x2 pooled magnitudes, log1p: the same features written plainly."""
        import scipy.ndimage

        out = []
        for x in images.astype(np.float32):
            r = x - scipy.ndimage.gaussian_filter(x, 1.0, truncate=2.0, mode="reflect")
            f = np.abs(np.fft.rfft2(r))
            band = np.concatenate([f[:64, :64], f[-64:, :64]])
            out.append(np.log1p(band.reshape(64, 2, 32, 2).mean(axis=(1, 3))).ravel())
        return np.asarray(out, np.float32)

    @pytest.fixture(scope="module")
    def fitted(images):
        from ctfp.attribution import ResidualSpectrum

        t = ResidualSpectrum().fit(images[:1])
        # agree within float32 rounding; the bins holding f = 0 (the residual's mean, near 0 and
        # the sum of cancelling float32 terms) within 0.05 of their log1p
        ours, peer = t.transform(images[:8]), _peer(images[:8])
        np.testing.assert_allclose(ours[:, 1:], peer[:, 1:], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(ours, peer, atol=0.05)
        return t

    @pytest.mark.benchmark(group="residual+spectrum 256x256x256")
    def test_ctfp(benchmark, fitted, images):
        benchmark(fitted.transform, images)

    @pytest.mark.benchmark(group="residual+spectrum 256x256x256")
    def test_scipy_numpy_loop(benchmark, images):
        benchmark(_peer, images)


if __name__ == "__main__":
    raise SystemExit(main())
