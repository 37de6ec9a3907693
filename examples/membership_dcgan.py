"""Evidence on a real generative model: does similarity to the generated set reveal which images
trained it?

Two small generators are trained on the CPU on a few "used" synthetic CT-like slices
(ctfp.synthetic, 256x256 slices of distinct patients, area-downsampled to 64x64) for many epochs,
a memorising setting like a generator trained on few images: a DCGAN, and a VAE whose decoder is
the same DCGAN generator network. Each then generates images; slices of other patients are "not
used". The real images are split in two halves, each holding half of the used and half of the
not-used images; each half in turn is the labelled development data (as ImageCLEF ships) from
which a method sets its threshold, and the other half is predicted. So every real image is
predicted once, by a fit that never saw its label. The tables (one per generator) give accuracy,
F1 of the used class, Cohen's kappa and ROC-AUC over all real images.

    python examples/membership_dcgan.py            # about 6 minutes on 2 CPU cores
    python examples/membership_dcgan.py --steps 200 --n-generated 300 --no-baseline   # smoke run

Writes ``results.md`` / ``results.json`` and ``samples_{dcgan,vae}.png`` (training images above,
generated images below) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# (name, SimilarityMembership parameters); every method is fitted on the development half only
# (the settings these rows were measured with: closest image, no calibration, the images' own
# 64x64, unless a row says otherwise; the estimator's defaults have changed since)
RAW = {"statistic": "max", "calibration": None, "image_size": None}
SSIM = {**RAW, "measure": "ssim"}
PIXEL = {**RAW, "measure": "pixel"}
LITE0 = {**RAW, "measure": "embedding", "backbone": "efficientnet_lite0", "image_size": 64}
METHODS: list[tuple[str, dict]] = [
    ("SSIM, closest, calibrated threshold", SSIM),
    ("SSIM, mean of 5 closest, calibrated", {**SSIM, "statistic": "mean_k"}),
    ("SSIM, count within radius (Monte-Carlo), calibrated", {**SSIM, "statistic": "count"}),
    ("SSIM, closest - closest non-member (GAN-Leaks cal.)", {**SSIM, "calibration": "reference"}),
    ("SSIM, closest, real-real threshold (2023 winner)", {**SSIM, "rule": "real_real"}),
    ("SSIM, retrieval votes (2023 winner)", {**SSIM, "rule": "retrieval"}),
    ("SSIM, closest, top fraction", {**SSIM, "rule": "top"}),
    ("Pixel RMS 64x64, closest, calibrated", PIXEL),
    ("Pixel RMS 32x32, mean of 5 closest", {**PIXEL, "image_size": 32, "statistic": "mean_k"}),
    ("Pixel 64x64, density ratio (DOMIAS, 8-d PCA)", {**PIXEL, "calibration": "density"}),
    ("EfficientNet-Lite0 (ImageNet) embedding, closest", LITE0),
    ("EfficientNet-Lite0 (ImageNet) embedding, retrieval", {**LITE0, "rule": "retrieval"}),
]


def make_data(n_used: int, n_unused: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One 256x256 slice per patient, area-downsampled 4x to 64x64; split at random."""
    from ctfp.data import synthetic

    n = n_used + n_unused
    big = synthetic.make_slices(n, n_patients=n, size=256, seed=seed)
    small = big.reshape(n, 64, 4, 64, 4).mean(axis=(2, 4))
    imgs = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(n)
    return imgs[order[:n_used]], imgs[order[n_used:]]


def dcgan(nz: int, width: int, out: int = 1, spectral: bool = True):
    """DCGAN's generator (Radford et al. 2016) at 64x64, one channel, ``width`` filters, and a
    discriminator of the same shape with ``out`` outputs (spectrally normalised or plain)."""
    from torch import nn

    g = nn.Sequential(
        nn.ConvTranspose2d(nz, width * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(width * 8),
        nn.ReLU(True),
        nn.ConvTranspose2d(width * 8, width * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width * 4),
        nn.ReLU(True),
        nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(True),
        nn.ConvTranspose2d(width, 1, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    # The discriminator is DCGAN's with spectral normalisation in place of batch norm (SNGAN,
    # Miyato et al. 2018), trained with the hinge loss: DCGAN's own discriminator wins outright
    # on a few dozen images (its loss goes to 0 and the generator learns nothing).
    sn = nn.utils.spectral_norm if spectral else (lambda m: m)
    d = nn.Sequential(
        sn(nn.Conv2d(1, width, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        sn(nn.Conv2d(width, width * 2, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        sn(nn.Conv2d(width * 2, width * 4, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        sn(nn.Conv2d(width * 4, width * 8, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        sn(nn.Conv2d(width * 8, out, 4, 1, 0)),
        nn.Flatten(),
    )
    for m in g.modules():  # DCGAN initialisation
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return g, d


def _sample(g, args: argparse.Namespace, gen) -> np.ndarray:
    import torch

    g.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, args.n_generated, 256):
            z = torch.randn(min(256, args.n_generated - start), args.nz, 1, 1, generator=gen)
            out.append(g(z)[:, 0].add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out).numpy()


def train_generator(kind: str, used: np.ndarray, args: argparse.Namespace):
    """Train a ``"dcgan"`` or a ``"vae"`` on ``used`` (uint8 (N, 64, 64)); return
    ``n_generated`` samples (z ~ N(0, I) through the generator) and a training log.

    Both use DCGAN's generator. The DCGAN trains it against the discriminator (hinge loss); the
    VAE (Kingma & Welling 2014) trains it as the decoder of an encoder shaped like the
    discriminator, on reconstruction (squared error) plus the KL term.
    """
    import torch
    from torch.nn.functional import relu

    torch.manual_seed(args.seed)
    if kind == "dcgan":
        g, d = dcgan(args.nz, args.width)
    else:  # the encoder outputs the mean and log-variance of z
        g, d = dcgan(args.nz, args.width, out=2 * args.nz, spectral=False)
    opt_g = torch.optim.Adam(g.parameters(), args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), args.lr, betas=(0.5, 0.999))
    data = torch.from_numpy(used).float().div(127.5).sub(1.0)[:, None]
    n = len(data)
    bs = min(args.batch_size, n)
    gen = torch.Generator().manual_seed(args.seed)
    log = []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        real = data[torch.randperm(n, generator=gen)[:bs]]
        if kind == "dcgan":
            fake = g(torch.randn(bs, args.nz, 1, 1, generator=gen))
            loss_d = relu(1.0 - d(real)).mean() + relu(1.0 + d(fake.detach())).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = -d(fake).mean()
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            losses = {"loss_d": loss_d.item(), "loss_g": loss_g.item()}
        else:
            mu, logvar = d(real).chunk(2, dim=1)
            eps = torch.randn(mu.shape, generator=gen)
            recon = g((mu + eps * (0.5 * logvar).exp())[:, :, None, None])
            rec = ((recon - real) ** 2).sum((1, 2, 3)).mean()
            kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
            loss = rec + kl
            opt_g.zero_grad()
            opt_d.zero_grad()
            loss.backward()
            opt_g.step()
            opt_d.step()
            losses = {"reconstruction": rec.item(), "kl": kl.item()}
        if step % max(1, args.steps // 5) == 0 or step == args.steps:
            row = {"step": step, **{k: round(v, 4) for k, v in losses.items()}}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            log.append(row)
            print(f"  {kind} {row}", flush=True)
    samples = _sample(g, args, gen)
    return samples, {"steps": args.steps, "seconds": round(time.perf_counter() - t0, 1), "log": log}


def baseline_cnn(generated, x_dev, x_test, args: argparse.Namespace):
    """Method 1's recipe (real 0 vs generated 1, MobileNetV2, the paper's augmentation,
    threshold 0.5): test probabilities of "generated" and predictions, or None when ctfp's
    FingerprintClassifier is not available."""
    try:
        from ctfp.models import FingerprintClassifier
    except ImportError:
        return None
    rng = np.random.default_rng(args.seed)
    n_gen = min(len(generated), 10 * len(x_dev))
    gen_train = generated[rng.choice(len(generated), size=n_gen, replace=False)]
    x = np.concatenate([x_dev, gen_train])
    y = np.r_[np.zeros(len(x_dev)), np.ones(len(gen_train))].astype(int)
    clf = FingerprintClassifier(
        backbone="mobilenet_v2",
        weights=None,  # torchvision's ImageNet weights cannot be fetched offline
        image_size=64,
        max_epochs=args.baseline_epochs,
        lr=1e-3,
        class_weight="balanced",
        device="cpu",
        random_state=args.seed,
    )
    clf.fit(x, y)
    proba = clf.predict_proba(x_test)[:, list(clf.classes_).index(1)]
    return proba, (proba >= 0.5).astype(int)


def save_samples(path: Path, used: np.ndarray, generated: np.ndarray) -> None:
    from PIL import Image

    k = min(12, len(used), len(generated))
    grid = np.concatenate(
        [np.concatenate(list(used[:k]), axis=1), np.concatenate(list(generated[:k]), axis=1)]
    )
    Image.fromarray(grid).save(path)


def cross_fit(fit_predict, x: np.ndarray, y: np.ndarray, folds) -> tuple[np.ndarray, ...]:
    """Run ``fit_predict(dev, test)`` on each (dev, test) split of ``folds``; gather the test
    scores and predictions of every image, and what each fit decided."""
    scores, pred, notes = np.zeros(len(y)), np.zeros(len(y), int), []
    for dev, test in folds:
        s, p, note = fit_predict(dev, test)
        scores[test], pred[test] = s, p
        notes.append(note)
    return scores, pred, notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/membership_dcgan")
    p.add_argument("--n-used", type=int, default=16, help="training images of the generator")
    p.add_argument("--n-unused", type=int, default=16)
    p.add_argument(
        "--generators",
        default="dcgan,vae",
        help="comma-separated generators to train and attack: dcgan, vae",
    )
    p.add_argument("--steps", type=int, default=1500, help="training steps (batches)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (both networks)")
    p.add_argument("--width", type=int, default=16, help="DCGAN filters (ngf = ndf)")
    p.add_argument("--nz", type=int, default=64)
    p.add_argument("--n-generated", type=int, default=2000)
    p.add_argument("--baseline-epochs", type=int, default=6)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a small shared machine)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from ctfp.membership.index import GeneratedIndex
    from ctfp.membership.metrics import evaluate, markdown_table
    from ctfp.membership.similarity import SimilarityMembership, evaluate_split

    torch.set_num_threads(args.torch_threads)
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    used, unused = make_data(args.n_used, args.n_unused, args.seed)
    x = np.concatenate([used, unused])
    y = np.r_[np.ones(len(used)), np.zeros(len(unused))].astype(int)
    # two halves, each with half of the used and half of the not-used images; each half is the
    # development data (with labels) for predicting the other, so every image is predicted once
    hu, hn = len(used) // 2, len(unused) // 2
    half_a = np.r_[0:hu, len(used) : len(used) + hn]
    half_b = np.setdiff1d(np.arange(len(y)), half_a)
    folds = [(half_a, half_b), (half_b, half_a)]
    print(f"data: {len(used)} used, {len(unused)} not used (64x64)", flush=True)

    tables, report = [], {"args": vars(args), "generators": {}}
    for kind in args.generators.split(","):
        t_gen = time.perf_counter()
        generated, gen_log = train_generator(kind, used, args)
        save_samples(out / f"samples_{kind}.png", used, generated)
        print(f"{kind}: generated {len(generated)} images in {gen_log['seconds']} s", flush=True)
        rows = []

        def add_row(name: str, scores, pred, notes, t: float, rows=rows) -> None:
            row = {"method": name, **evaluate(y, pred, scores), "decisions": notes}
            row["seconds"] = round(time.perf_counter() - t, 1)
            rows.append(row)
            print(f"{name}: acc {row['accuracy']:.3f} F1 {row['f1']:.3f} "
                  f"AUC {row['roc_auc']:.3f} ({row['seconds']} s)", flush=True)  # fmt: skip

        for name, params in METHODS:
            t = time.perf_counter()
            # the generated set, indexed once for both halves (the estimator reuses an index
            # fitted with its own settings)
            index = GeneratedIndex(
                **{k: v for k, v in params.items() if k in GeneratedIndex().get_params()},
                random_state=args.seed,
            ).fit(generated)

            def fit_predict(dev, test, params=params, index=index):
                est = SimilarityMembership(random_state=args.seed, **params)
                # fitted on the development half; the test labels only score the predictions
                res = evaluate_split(est, index, x[dev], y[dev], x[test], y[test])
                return res["scores"], res["predictions"], res["describe"]

            add_row(name, *cross_fit(fit_predict, x, y, folds), t)

        if not args.no_baseline:
            t = time.perf_counter()

            def fit_predict_cnn(dev, test, generated=generated):
                res = baseline_cnn(generated, x[dev], x[test], args)
                if res is None:
                    raise ImportError("ctfp.estimator.FingerprintClassifier is not available")
                return (*res, {"rule": "p(generated) >= 0.5"})

            try:
                name = "Method 1 recipe: MobileNetV2 (random init), real vs generated, p >= 0.5"
                add_row(name, *cross_fit(fit_predict_cnn, x, y, folds), t)
            except ImportError as exc:
                print(f"baseline skipped: {exc}")
        rows.append({"method": "Reference: predict all used", **evaluate(y, np.ones_like(y))})
        seconds = time.perf_counter() - t_gen
        what = {"dcgan": "DCGAN (hinge loss, SN discriminator)", "vae": "VAE (DCGAN decoder)"}
        title = (
            f"{what.get(kind, kind)}, width {args.width}, {args.steps} steps of "
            f"{min(args.batch_size, args.n_used)} images, trained on {args.n_used} used slices; "
            f"{args.n_generated} generated; {len(y)} real images ({int(y.sum())} used), each "
            f"predicted by a fit on the other half; {seconds:.0f} s"
        )
        tables.append(markdown_table(rows, title=title))
        report["generators"][kind] = {"training": gen_log, "rows": rows, "seconds": seconds}

    total = time.perf_counter() - t_start
    report["seconds"] = total
    table = "\n\n".join(tables) + f"\n\nTotal {total:.0f} s."
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8"
    )
    print(table)
    print(f"total {total:.0f} s; wrote {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
