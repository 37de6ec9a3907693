"""A realistic leak benchmark: a small GAN really trained on ctfp's synthetic CT-like slices.

The demo's stand-in generator (:mod:`ctfp.imageclef.leaky`) copies its training images on purpose,
so any sensible method finds them. Here the generator is a DCGAN-class network that learned the
slices by gradient descent and memorises them only as much as such a network does: a generator
at 64x64 (z of 128 -> 4x4 -> ... -> 64x64 grey, batch norm and ReLU, tanh), trained against a
spectrally normalised discriminator with the hinge loss, with an exponential moving average (EMA)
of its weights; its samples are upscaled bicubically to 256x256, the task's size.

Two regimes (:data:`REGIMES`) differ only in how many slices trained the generator:
``"few-hundred"`` (200; a leak that the best methods find, not an easy one) and ``"thousand"``
(1,000; a weak leak). Each regime's dataset has the ImageCLEF layout: 10,000 generated images
per split, 100 + 100 labelled development slices and 200 test slices (100 used, 100 not used).

Who is a member. Every real slice is a different synthetic *patient* (one slice each, at a slice
position drawn per patient), so members and non-members are independent draws from the same
population and only training links a slice to the generator: neighbouring slices of one patient
are near-copies of each other (:mod:`ctfp.data.synthetic`), and a non-member from a member's
patient would look memorised without being so. Non-members are patients ``0 ..
n_non_members - 1`` (the same in every regime with the same seeds), members the next
``n_train``. The development and test "used" slices are members (a random subset of them; with
200 members and 100 + 100 used, all of them), the "not used" slices are the non-members, which
the generator never saw.

The trained generators are committed (``ctfp/imageclef/assets/leak_gan_<regime>.pt``, fp16, with
the settings that made them) so that writing a dataset needs no training:
:func:`write_realistic_dataset`. Training is ``benches/train_leak_gan.py`` (a minute or two per
regime on a GPU; tens of minutes on a CPU core), through :func:`train_leak_gan`.
:func:`memorisation_auc` measures how strongly a generator memorises: members' against
non-members' L2 distance at 64x64 to the nearest of 2,000 generated samples, as a ROC-AUC
(smaller distance = member). See docs/benchmark.md.

torch is imported only by the functions that need it.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import atomic_write, write_image_png, write_text_atomic
from ctfp.imageclef.layout import image_id

__all__ = [
    "REGIMES",
    "RealisticSpec",
    "TrainResult",
    "build_discriminator",
    "build_generator",
    "checkpoint_path",
    "default_snapshot",
    "downsample",
    "generate",
    "load_checkpoint",
    "load_generator",
    "make_checkpoint",
    "memorisation_auc",
    "nearest_distances",
    "plan",
    "render",
    "save_checkpoint",
    "sha256",
    "shown_slices",
    "train_leak_gan",
    "write_realistic_dataset",
]

#: ``format`` field of a checkpoint file
CHECKPOINT_FORMAT = "ctfp-leak-gan/1"
#: where the committed checkpoints live
ASSETS = Path(__file__).with_name("assets")
#: the command that makes checkpoints (named in errors)
TRAIN_COMMAND = "python benches/train_leak_gan.py --out OUT_DIR, then --install OUT_DIR"

# Domain tags of the random streams, so that no two coincide.
_TAG_SLICE = 0x4C45_414B_01  # slice position of each patient
_TAG_SPLIT = 0x4C45_414B_02  # which members are shown, dev/test split, test order
_TAG_Z = 0x4C45_414B_03  # latent vectors of generated images


# --------------------------------------------------------------------------------------------------
# what a dataset holds


@dataclass(frozen=True)
class RealisticSpec:
    """Sizes and seeds of one regime's data.

    ``n_train`` slices train the generator (the members); ``n_dev_used`` and ``n_test_used`` of
    them are shown as development and test "used" images; ``n_dev_not_used`` +
    ``n_test_not_used`` other slices (the non-members) never trained it. Each split gets its own
    ``n_generated`` samples (latent seeds ``dev_sample_seed`` / ``test_sample_seed``). Real
    slices are ``size`` pixels (the task's 256); the generator works at ``train_size`` (64), and
    real slices are area-averaged to it for training and for :func:`memorisation_auc`.
    """

    regime: str = "few-hundred"
    n_train: int = 200
    n_dev_used: int = 100
    n_dev_not_used: int = 100
    n_test_used: int = 100
    n_test_not_used: int = 100
    n_generated: int = 10_000
    size: int = 256
    train_size: int = 64
    slice_positions: int = 40
    data_seed: int = 0
    split_seed: int = 0
    dev_sample_seed: int = 1
    test_sample_seed: int = 2

    def __post_init__(self) -> None:
        for name in ("n_train", "n_dev_used", "n_dev_not_used", "n_test_used", "n_test_not_used"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, found {v!r}")
        if not isinstance(self.n_generated, int) or self.n_generated < 1:
            raise ValueError(
                f"n_generated: expected a positive integer, found {self.n_generated!r}"
            )
        if self.n_dev_used + self.n_test_used > self.n_train:
            raise ValueError(
                f"n_dev_used + n_test_used: expected at most n_train = {self.n_train} (the used "
                f"images are training slices), found {self.n_dev_used + self.n_test_used}"
            )
        if self.size % self.train_size:
            raise ValueError(
                f"size: expected a multiple of train_size = {self.train_size}, found {self.size}"
            )
        if self.train_size != 64:
            raise ValueError(f"train_size: the generator is 64x64, found {self.train_size}")

    @property
    def n_non_members(self) -> int:
        return self.n_dev_not_used + self.n_test_not_used

    @classmethod
    def small(cls, regime: str = "few-hundred", **changes: Any) -> RealisticSpec:
        """A tiny spec (12 members, 4 + 4 development and 4 + 4 test, 16 generated, 64x64 real
        slices) for quick runs and tests; ``changes`` override any field."""
        sizes = dict(n_train=12, n_dev_used=4, n_dev_not_used=4, n_test_used=4, n_test_not_used=4)
        return cls(regime=regime, **{**sizes, "n_generated": 16, "size": 64, **changes})


#: the benchmark's two regimes
REGIMES: dict[str, RealisticSpec] = {
    "few-hundred": RealisticSpec(regime="few-hundred", n_train=200),
    "thousand": RealisticSpec(regime="thousand", n_train=1000),
}


def plan(spec: RealisticSpec) -> dict[str, Any]:
    """Who is who: ``members`` and ``non_members`` as ``(patient, slice_index)`` lists;
    ``dev_used``/``test_used`` (indices into members), ``dev_not_used``/``test_not_used``
    (indices into non-members); ``test_order``: the order of the test images in
    ``real_unknown/`` as indices into ``test_used + test_not_used`` (shuffled, so that ids give
    nothing away).

    A pure function of ``spec``: non-member patients are ``0 .. n_non_members - 1`` and members
    the ``n_train`` after them, one slice each at a position drawn per patient from
    ``data_seed``; the choice of shown members and the splits come from ``split_seed``.
    """

    def position(patient: int) -> int:
        ss = np.random.SeedSequence([_TAG_SLICE, spec.data_seed, patient])
        return int(np.random.Generator(np.random.PCG64(ss)).integers(spec.slice_positions))

    def rng(*key: int) -> np.random.Generator:
        ss = np.random.SeedSequence([_TAG_SPLIT, spec.split_seed, *key])
        return np.random.Generator(np.random.PCG64(ss))

    n_non = spec.n_non_members
    non_members = [(p, position(p)) for p in range(n_non)]
    members = [(p, position(p)) for p in range(n_non, n_non + spec.n_train)]
    non_order = rng(0, n_non).permutation(n_non)
    shown = rng(1, spec.n_train).choice(
        spec.n_train, spec.n_dev_used + spec.n_test_used, replace=False
    )
    n_test = spec.n_test_used + spec.n_test_not_used
    return {
        "members": members,
        "non_members": non_members,
        "dev_used": sorted(int(i) for i in shown[: spec.n_dev_used]),
        "test_used": sorted(int(i) for i in shown[spec.n_dev_used :]),
        "dev_not_used": sorted(int(i) for i in non_order[: spec.n_dev_not_used]),
        "test_not_used": sorted(int(i) for i in non_order[spec.n_dev_not_used :]),
        "test_order": [int(i) for i in rng(2, n_test).permutation(n_test)],
    }


def _render_one(args: tuple[int, int, int, int]) -> np.ndarray:
    from ctfp.data.synthetic import make_slice

    patient, index, size, seed = args
    return make_slice(patient, index, size=size, seed=seed)


def render(
    slices: Sequence[tuple[int, int]], *, size: int = 256, seed: int = 0, n_jobs: int | None = 1
) -> np.ndarray:
    """``uint8 (N, size, size)``: :func:`ctfp.data.synthetic.make_slice` of each ``(patient,
    slice_index)``; ``n_jobs`` worker processes (``None``: up to 8, one per core; 1: in this
    process). The output is the same for any ``n_jobs``."""
    jobs = [(int(p), int(s), size, seed) for p, s in slices]
    out = np.empty((len(jobs), size, size), np.uint8)
    workers = min(8, os.cpu_count() or 1) if n_jobs is None else max(1, n_jobs)
    workers = min(workers, max(1, len(jobs) // 16))
    if workers <= 1:
        for i, job in enumerate(jobs):
            out[i] = _render_one(job)
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: the parent may hold torch threads or a CUDA context
    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for i, img in enumerate(pool.map(_render_one, jobs, chunksize=16)):
                out[i] = img
    except (OSError, BrokenProcessPool):  # no worker processes here (no /dev/shm, limits)
        return render(slices, size=size, seed=seed, n_jobs=1)
    return out


def shown_slices(spec: RealisticSpec, who: dict[str, Any] | None = None) -> list[tuple[int, int]]:
    """The real slices a dataset shows, in the order their hash is taken: development used, test
    used (members), development not used, test not used (non-members)."""
    who = who or plan(spec)
    return [who["members"][i] for i in who["dev_used"] + who["test_used"]] + [
        who["non_members"][i] for i in who["dev_not_used"] + who["test_not_used"]
    ]


def downsample(images: np.ndarray, size: int = 64) -> np.ndarray:
    """Area average of ``uint8 (N, S, S)`` images to ``(N, size, size)`` (``S`` a multiple of
    ``size``), rounded to ``uint8``: how real slices are shown to the 64x64 generator."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[1] % size:
        raise ValueError(
            f"images: expected (N, S, S) with S a multiple of {size}, found {images.shape}"
        )
    f = images.shape[1] // size
    if f == 1:
        return np.ascontiguousarray(images, dtype=np.uint8)
    small = images.reshape(len(images), size, f, size, f).mean(axis=(2, 4))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def sha256(a: np.ndarray) -> str:
    """SHA-256 of an array's bytes (C order): how a checkpoint pins the slices it was trained on."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# networks


def build_generator(nz: int = 128, width: int = 32) -> Any:
    """DCGAN's generator (Radford et al. 2016) at 64x64, one grey channel: z ``(N, nz, 1, 1)``
    -> 4x4 -> 8x8 -> 16x16 -> 32x32 -> 64x64 in ``[-1, 1]``; ``width`` filters at 32x32 (x2,
    x4, x8 below), batch norm and ReLU, tanh; DCGAN's initialisation."""
    from torch import nn

    w = width
    chans = [nz, 8 * w, 4 * w, 2 * w, w]
    layers: list[Any] = []
    for k, (cin, cout) in enumerate(zip(chans, chans[1:], strict=False)):
        stride, pad = (1, 0) if k == 0 else (2, 1)
        layers += [
            nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(True),
        ]
    layers += [nn.ConvTranspose2d(w, 1, 4, 2, 1, bias=False), nn.Tanh()]
    g = nn.Sequential(*layers)
    for m in g.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return g


def build_discriminator(width: int = 32) -> Any:
    """DCGAN's discriminator with spectral normalisation in place of batch norm (SNGAN, Miyato et
    al. 2018): 64x64 grey -> one score per image, for the hinge loss."""
    from torch import nn
    from torch.nn.utils.parametrizations import spectral_norm

    w = width
    chans = [1, w, 2 * w, 4 * w, 8 * w]
    layers: list[Any] = []
    for cin, cout in zip(chans, chans[1:], strict=False):
        layers += [spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2)]
    layers += [spectral_norm(nn.Conv2d(8 * w, 1, 4, 1, 0)), nn.Flatten()]
    return nn.Sequential(*layers)


def _latents(n: int, nz: int, seed: int) -> np.ndarray:
    """``float32 (n, nz)`` standard normal, drawn by numpy (the same on every machine and torch
    version); row ``i`` does not depend on ``n``."""
    ss = np.random.SeedSequence([_TAG_Z, seed])
    return np.random.Generator(np.random.PCG64(ss)).standard_normal((n, nz), dtype=np.float32)


def _nz(generator: Any) -> int:
    return int(generator[0].in_channels)


def _device_of(module: Any) -> Any:
    return next(module.parameters()).device


def _standing_stats(
    generator: Any, *, seed: int, n_batches: int = 32, batch_size: int = 64
) -> None:
    """Set the batch-norm running statistics of ``generator`` to the mean over ``n_batches``
    batches of fresh samples (BigGAN's "standing statistics"): the EMA weights never ran in
    training mode, so the training generator's running statistics do not fit them."""
    import torch
    from torch import nn

    bns = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    generator.train()
    z = torch.from_numpy(_latents(n_batches * batch_size, _nz(generator), seed))
    dev = _device_of(generator)
    with torch.no_grad():
        for k in range(n_batches):
            generator(z[k * batch_size : (k + 1) * batch_size, :, None, None].to(dev))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    generator.eval()


def generate(
    generator: Any,
    n: int,
    seed: int,
    *,
    size: int = 256,
    batch_size: int = 256,
    device: Any = None,
) -> np.ndarray:
    """``n`` samples of ``generator`` as ``uint8 (n, size, size)``.

    Latent vectors come from numpy (:func:`_latents`: ``(seed, i)`` fixes image ``i`` whatever
    ``n``); the generator runs in eval mode at 64x64; ``size != 64`` is reached by
    ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`` on ``[-1, 1]``
    values, then ``(x + 1) * 127.5``, rounded and clipped to 0-255. On the CPU the output is the
    same for a given ``batch_size``; it can differ by a grey level on another device.
    """
    import torch
    import torch.nn.functional as F

    if device is not None:
        generator = generator.to(device)
    dev = _device_of(generator)
    generator.eval()
    z = torch.from_numpy(_latents(n, _nz(generator), seed))
    out = np.empty((n, size, size), np.uint8)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = generator(z[start : start + batch_size, :, None, None].to(dev))
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
            x = x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
            out[start : start + len(x)] = x[:, 0].cpu().numpy()
    return out


# --------------------------------------------------------------------------------------------------
# memorisation


def nearest_distances(
    images: np.ndarray, samples: np.ndarray, *, size: int = 64, block: int = 1024
) -> np.ndarray:
    """Each image's L2 distance (grey levels, float64, exact) to the nearest of ``samples``, both
    ``uint8 (N, S, S)`` area-averaged to ``size`` first (:func:`downsample`); ``block`` samples
    compared at a time (:func:`ctfp.membership.knn.nearest_neighbours`)."""
    from ctfp.membership.knn import nearest_neighbours

    a = downsample(images, size).reshape(len(images), -1).astype(np.float64)
    b = downsample(samples, size).reshape(len(samples), -1).astype(np.float64)
    if len(a) == 0:
        return np.zeros(0, np.float64)
    dist, _ = nearest_neighbours(a, b, 1, block_size=block)
    return dist[:, 0]


def memorisation_auc(
    generator: Any,
    members: np.ndarray,
    non_members: np.ndarray,
    *,
    n_samples: int = 2000,
    seed: int = 12345,
    device: Any = None,
    details: bool = False,
) -> Any:
    """How strongly ``generator`` memorises: ROC-AUC of "member" scored by minus the L2
    distance at 64x64 to the nearest of ``n_samples`` generated samples (GAN-Leaks' full
    black-box attack without calibration). 0.5: no trace of the training set; 1.0: every member
    is closer to some sample than every non-member.

    ``generator``: a generator network (sampled with :func:`generate` at 64x64, latent seed
    ``seed``), a callable ``(n, seed) -> uint8 (n, S, S)``, or the samples themselves (a
    ``uint8 (n, S, S)`` array). ``members``/``non_members``: ``uint8 (N, S, S)`` real images.
    With ``details=True``, returns a dict with the AUC, the mean distances and the counts.
    """
    from sklearn.metrics import roc_auc_score

    if isinstance(generator, np.ndarray):
        samples = generator
    elif hasattr(generator, "parameters"):
        samples = generate(generator, n_samples, seed, size=64, device=device)
    elif callable(generator):
        samples = np.asarray(generator(n_samples, seed))
    else:
        raise TypeError(
            f"generator: expected a generator network, a callable (n, seed) -> images or an "
            f"array of samples, found {type(generator).__name__}"
        )
    d_in = nearest_distances(members, samples)
    d_out = nearest_distances(non_members, samples)
    y = np.r_[np.ones(len(d_in)), np.zeros(len(d_out))]
    auc = float(roc_auc_score(y, -np.r_[d_in, d_out]))
    if not details:
        return auc
    return {
        "auc": round(auc, 4),
        "members": len(d_in),
        "non_members": len(d_out),
        "samples": len(samples),
        "mean_nearest_member": round(float(d_in.mean()), 2),
        "mean_nearest_non_member": round(float(d_out.mean()), 2),
    }


# --------------------------------------------------------------------------------------------------
# training


@dataclass
class TrainResult:
    """What :func:`train_leak_gan` returns: the EMA generator (eval mode, standing statistics),
    ``snapshots`` (iteration -> CPU float32 state dict of the EMA generator, standing statistics
    included, at each requested iteration reached and at the last one), ``history`` (one dict
    per logged iteration), ``iterations`` done, ``seconds`` (``snapshot_seconds`` of them
    taking snapshots) and whether the time budget stopped training early."""

    generator: Any
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    iterations: int = 0
    seconds: float = 0.0
    snapshot_seconds: float = 0.0
    stopped_early: bool = False


def train_leak_gan(
    train_images: np.ndarray,
    *,
    iterations: int,
    batch_size: int = 64,
    seed: int = 0,
    device: Any = "auto",
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.0, 0.9),
    ema_decay: float = 0.999,
    n_dis: int = 1,
    nz: int = 128,
    width: int = 32,
    snapshots: Sequence[int] = (),
    budget_s: float | None = None,
    log_every: int = 500,
    log: Callable[[str], Any] | None = print,
    generator: Callable[[], Any] | None = None,
    name: str = "",
) -> TrainResult:
    """Train the DCGAN-class generator on ``train_images`` (``uint8 (N, 64, 64)``).

    Hinge loss (discriminator: ``relu(1 - D(real)) + relu(1 + D(fake))``; generator:
    ``-D(fake)``), Adam (``lr``, ``betas``) for both, ``n_dis`` discriminator steps per
    generator step, batches of ``batch_size`` training images drawn with replacement, no
    augmentation (memorising is the point); the generator step reuses the fake batch of the
    last discriminator step (as DCGAN's reference code does). The EMA of the generator's
    weights uses decay ``min(ema_decay, (1 + t) / (10 + t))`` at step ``t``. ``budget_s``:
    stop when that many seconds have passed (the last iteration reached gets a snapshot).
    torch's seed comes from ``seed``; on a GPU training is not bit-reproducible.

    ``generator``: a factory of another 64x64 grey generator with ``nz`` latents (called right
    after the seed is set, so its initialisation is seeded too; the attribution benchmark's
    architectures, :func:`ctfp.attribution.gans.build_generator`); default DCGAN's
    :func:`build_generator`. ``name`` prefixes the log lines.
    """
    import torch
    from torch.nn.functional import relu

    from ctfp._util import resolve_device

    train_images = np.asarray(train_images)
    if train_images.ndim != 3 or train_images.shape[1:] != (64, 64):
        raise ValueError(f"train_images: expected uint8 (N, 64, 64), found {train_images.shape}")
    if iterations < 1:
        raise ValueError(f"iterations: expected a positive integer, found {iterations}")
    say = log or (lambda *_: None)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    g = (build_generator(nz, width) if generator is None else generator()).to(dev)
    d = build_discriminator(width).to(dev)
    ema = copy.deepcopy(g).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt_kw: dict[str, Any] = {"lr": lr, "betas": (float(betas[0]), float(betas[1]))}
    if dev.type == "cuda":
        opt_kw["fused"] = True
        torch.backends.cudnn.benchmark = True
    opt_g = torch.optim.Adam(g.parameters(), **opt_kw)
    opt_d = torch.optim.Adam(d.parameters(), **opt_kw)
    data = torch.from_numpy(np.ascontiguousarray(train_images)).to(dev)
    data = data.float().div(127.5).sub(1.0)[:, None]
    n = len(data)
    gen = torch.Generator(device=dev).manual_seed(seed)
    g_params, e_params = list(g.parameters()), list(ema.parameters())
    wanted = sorted({int(s) for s in snapshots if 0 < int(s) <= iterations})
    result = TrainResult(generator=ema)
    t0 = time.perf_counter()

    def snapshot(step: int) -> None:
        t = time.perf_counter()
        _standing_stats(ema, seed=seed + step)
        result.snapshots[step] = {
            k: v.detach().to("cpu", copy=True) for k, v in ema.state_dict().items()
        }
        result.snapshot_seconds += time.perf_counter() - t

    step = 0
    loss_d = loss_g = torch.zeros(())
    for step in range(1, iterations + 1):
        for k in range(n_dis):
            real = data[torch.randint(n, (batch_size,), device=dev, generator=gen)]
            z = torch.randn(batch_size, nz, 1, 1, device=dev, generator=gen)
            with torch.set_grad_enabled(k == n_dis - 1):  # the last batch serves the G step too
                fake = g(z)
            out = d(torch.cat([real, fake.detach()]))
            loss_d = relu(1.0 - out[:batch_size]).mean() + relu(1.0 + out[batch_size:]).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        loss_g = -d(fake).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        decay = min(ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            if hasattr(torch, "_foreach_lerp_"):  # one call for all tensors (fewer launches)
                torch._foreach_lerp_(e_params, g_params, 1.0 - decay)
            else:
                for pe, p in zip(e_params, g_params, strict=True):
                    pe.lerp_(p, 1.0 - decay)
        if step % log_every == 0 or step == iterations:
            row = {
                "iteration": step,
                "loss_d": round(float(loss_d.detach()), 4),
                "loss_g": round(float(loss_g.detach()), 4),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            result.history.append(row)
            rate = step / max(row["seconds"], 1e-9)
            say(
                f"  {name + ' ' if name else ''}it {step}/{iterations}: loss_d "
                f"{row['loss_d']:.3f} loss_g {row['loss_g']:.3f}, {row['seconds']:.1f} s "
                f"({rate:.0f} it/s)"
            )
        if step in wanted:
            snapshot(step)
        if budget_s is not None and step % 25 == 0 and time.perf_counter() - t0 > budget_s:
            result.stopped_early = step < iterations
            break
    if step not in result.snapshots:
        snapshot(step)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    result.iterations = step
    result.seconds = round(time.perf_counter() - t0, 2)
    result.snapshot_seconds = round(result.snapshot_seconds, 2)
    if result.stopped_early:
        say(f"  time budget of {budget_s:.0f} s reached: stopped after {step} iterations")
    return result


# --------------------------------------------------------------------------------------------------
# checkpoints


def make_checkpoint(
    spec: RealisticSpec,
    states: dict[int, dict[str, Any]],
    *,
    nz: int,
    width: int,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint dict: ``states`` (iteration -> generator state dict) stored as fp16 (about
    2.4 MB each at width 32) with ``spec``, the network's shape and ``meta`` (training
    settings, hashes, measures; JSON-compatible). Its ``snapshots[str(iteration)]["meta"]``
    holds per-snapshot results."""
    snaps = {}
    for it, state in sorted(states.items()):
        snaps[str(int(it))] = {
            "iteration": int(it),
            "state_dict": {
                k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
                for k, v in state.items()
            },
            "meta": {},
        }
    return {
        "format": CHECKPOINT_FORMAT,
        "spec": asdict(spec),
        "model": {"nz": int(nz), "width": int(width)},
        "meta": json.loads(json.dumps(meta or {})),
        "snapshots": snaps,
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``ckpt`` with ``torch.save`` (atomically); return the path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save(ckpt, f)
    return path


def checkpoint_path(regime: str) -> Path:
    """The committed checkpoint of ``regime``: ``ctfp/imageclef/assets/leak_gan_<regime>.pt``."""
    if regime not in REGIMES:
        raise ValueError(
            f"regime: expected one of {', '.join(map(repr, REGIMES))}, found {regime!r}"
        )
    return ASSETS / f"leak_gan_{regime}.pt"


def load_checkpoint(
    checkpoint: str | os.PathLike[str] | None = None, *, regime: str = "few-hundred"
) -> dict[str, Any]:
    """Read a checkpoint (default: the committed one of ``regime``); ``FileNotFoundError``
    names the training script when it is missing."""
    path = Path(checkpoint) if checkpoint is not None else checkpoint_path(regime)
    return read_checkpoint(
        path, CHECKPOINT_FORMAT, "a leak-GAN",
        missing=f"no trained generator for the realistic benchmark (regime {regime!r}); train "
        f"one with {TRAIN_COMMAND} (see docs/benchmark.md)",
    )  # fmt: skip


def read_checkpoint(path: Path, fmt: str, what: str, *, missing: str) -> dict[str, Any]:
    """A GAN checkpoint file of ctfp's benchmarks (a dict whose ``format`` is ``fmt``), read
    with torch's weights-only loader on the CPU. ``FileNotFoundError`` says ``missing`` (how to
    train it); a file of another kind is a ``ValueError`` naming the format found."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"{path}: {missing}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: not {what} checkpoint; expected format {fmt!r}, found {found!r}")
    return ckpt


def default_snapshot(ckpt: dict[str, Any]) -> str:
    """The snapshot a checkpoint gives when no ``iteration`` is asked for: the one installed as
    the benchmark's generator (``meta["installed_snapshot"]``; an asset can hold more, e.g. a
    more memorising one for comparison), else the last."""
    snaps = ckpt["snapshots"]
    chosen = str(ckpt.get("meta", {}).get("installed_snapshot"))
    return chosen if chosen in snaps else max(snaps, key=int)


def load_generator(
    checkpoint: str | os.PathLike[str] | dict[str, Any] | None = None,
    *,
    regime: str = "few-hundred",
    iteration: int | None = None,
    device: Any = "cpu",
) -> tuple[Any, dict[str, Any]]:
    """The generator of a checkpoint (a path, a loaded dict, or None for the committed one of
    ``regime``) at ``iteration`` (default: :func:`default_snapshot`), in float32 and eval mode, and
    the checkpoint dict."""
    from ctfp._util import resolve_device, state_dict_mismatch

    ckpt = (
        checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, regime=regime)
    )
    snaps = ckpt["snapshots"]
    key = str(iteration) if iteration is not None else default_snapshot(ckpt)
    if key not in snaps:
        have = ", ".join(sorted(snaps, key=int))
        raise ValueError(
            f"iteration: expected one of the checkpoint's snapshots ({have}), found {iteration}"
        )
    g = build_generator(**ckpt["model"])
    state = {
        k: (v.float() if v.is_floating_point() else v) for k, v in snaps[key]["state_dict"].items()
    }
    problem = state_dict_mismatch(g.state_dict(), state)
    if problem:
        raise ValueError(f"checkpoint snapshot {key}: does not fit the generator: {problem}")
    g.load_state_dict(state)
    return g.to(resolve_device(device)).eval(), ckpt


# --------------------------------------------------------------------------------------------------
# the dataset


def _write_pngs(folder: Path, prefix: str, images: np.ndarray, n_jobs: int | None) -> list[Path]:
    from concurrent.futures import ThreadPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}_{k + 1:05d}.png" for k in range(len(images))]
    # a previous, larger dataset written here leaves no images behind (only files named as
    # this function names them are removed)
    keep = {p.name for p in paths}
    for old in folder.glob(f"{prefix}_[0-9][0-9][0-9][0-9][0-9].png"):
        if old.name not in keep:
            old.unlink()

    def one(k: int) -> None:
        write_image_png(paths[k], images[k])

    workers = (os.cpu_count() or 1) if n_jobs is None else max(1, n_jobs)
    if workers == 1:
        for k in range(len(images)):
            one(k)
    else:  # Pillow releases the GIL while it compresses
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(images))))
    return paths


def write_realistic_dataset(
    root: str | os.PathLike[str],
    regime: str = "few-hundred",
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    iteration: int | None = None,
    n_generated: int | None = None,
    device: Any = "cpu",
    batch_size: int = 256,
    n_jobs: int | None = None,
    verbose: int = 0,
) -> dict[str, Any]:
    """Write one regime's benchmark dataset under ``root/<regime>/`` and return its summary.

    ``development/`` (``generated/``, ``real_used/``, ``real_not_used/``) and ``test/``
    (``generated/``, ``real_unknown/``) in the ImageCLEF layout; the truth kept apart beside
    them: ``test_labels.csv`` (``id,label``, no header, 1 = used) and ``truth.json`` (the spec,
    the checkpoint and its settings, every real image's patient and slice, the list of all
    training members, the memorisation measured when the generator was trained). Writing again
    into the same ``root`` replaces the dataset (images of an earlier, larger one are removed).

    The generator is the committed one of ``regime`` (or ``checkpoint``, at ``iteration``);
    the real slices and the split come from the spec stored with it, and are checked against
    the hash recorded at training time. Each split's ``n_generated`` images (default: the
    spec's 10,000) come from their own latent seed; ``n_generated`` smaller than the spec's
    gives the first images of the same sequence.
    """
    t0 = time.perf_counter()
    say = print if verbose else (lambda *_: None)
    g, ckpt = load_generator(checkpoint, regime=regime, iteration=iteration, device=device)
    spec = RealisticSpec(**ckpt["spec"])
    if spec.regime != regime:
        raise ValueError(
            f"regime: the checkpoint was trained for regime {spec.regime!r}, found {regime!r}"
        )
    if n_generated is not None:
        spec = replace(spec, n_generated=int(n_generated))
    who = plan(spec)
    real = render(shown_slices(spec, who), size=spec.size, seed=spec.data_seed, n_jobs=n_jobs)
    expected = ckpt["meta"].get("hashes", {}).get("shown_real_sha256")
    if expected and expected != sha256(real):
        raise ValueError(
            "the synthetic slices differ from those the generator was trained with "
            "(ctfp.data.synthetic changed?): the membership truth would be wrong; retrain with "
            f"{TRAIN_COMMAND}"
        )
    n_du, n_tu, n_dn = spec.n_dev_used, spec.n_test_used, spec.n_dev_not_used
    dev_used, test_used = real[:n_du], real[n_du : n_du + n_tu]
    dev_not, test_not = real[n_du + n_tu : n_du + n_tu + n_dn], real[n_du + n_tu + n_dn :]
    say(f"  real slices: {len(real)} ({time.perf_counter() - t0:.1f} s)")

    out = Path(root) / regime
    dev, test = out / "development", out / "test"
    _write_pngs(dev / "real_used", "used", dev_used, n_jobs)
    _write_pngs(dev / "real_not_used", "not_used", dev_not, n_jobs)
    unknown = np.concatenate([test_used, test_not])
    truth_of = [1] * n_tu + [0] * spec.n_test_not_used
    order = who["test_order"]
    unknown_paths = _write_pngs(test / "real_unknown", "real_unknown", unknown[order], n_jobs)
    for split, seed, folder in (
        ("development", spec.dev_sample_seed, dev / "generated"),
        ("test", spec.test_sample_seed, test / "generated"),
    ):
        t = time.perf_counter()
        images = generate(g, spec.n_generated, seed, size=spec.size, batch_size=batch_size)
        _write_pngs(folder, "generated", images, n_jobs)
        say(f"  {split}: {len(images)} generated images ({time.perf_counter() - t:.1f} s)")
        del images

    labels = [(image_id(p), truth_of[i]) for p, i in zip(unknown_paths, order, strict=True)]
    with atomic_write(out / "test_labels.csv", "w") as f:
        csv.writer(f, lineterminator="\n").writerows(labels)

    def where(kind: str, idx: list[int]) -> list[dict[str, int]]:
        pool = who["members"] if kind == "member" else who["non_members"]
        return [{"patient": pool[i][0], "slice_index": pool[i][1]} for i in idx]

    shown_test = where("member", who["test_used"]) + where("non_member", who["test_not_used"])
    snap = ckpt["snapshots"][str(iteration) if iteration is not None else default_snapshot(ckpt)]
    truth = {
        "regime": regime,
        "spec": asdict(spec),
        "checkpoint": {
            "path": str(checkpoint) if checkpoint is not None else checkpoint_path(regime).name,
            "iteration": snap["iteration"],
            "model": ckpt["model"],
            "meta": ckpt["meta"],
            "snapshot": snap["meta"],
        },
        "development": {
            "real_used": where("member", who["dev_used"]),
            "real_not_used": where("non_member", who["dev_not_used"]),
        },
        "test": [
            {"id": image_id(p), "label": truth_of[i], **shown_test[i]}
            for p, i in zip(unknown_paths, order, strict=True)
        ],
        "members": [{"patient": p, "slice_index": s} for p, s in who["members"]],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_text_atomic(out / "truth.json", json.dumps(truth, indent=1) + "\n")
    say(f"  wrote {out} ({truth['seconds']} s)")
    return {
        "root": str(out),
        "regime": regime,
        "iteration": snap["iteration"],
        "n_generated": spec.n_generated,
        "memorisation": snap["meta"].get("memorisation"),
        "seconds": truth["seconds"],
    }
