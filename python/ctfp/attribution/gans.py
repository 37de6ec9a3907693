"""The attribution benchmark's generators: small GANs really trained on ctfp's synthetic slices.

Two settings, as in the ImageCLEFmedical GANs task's second subtask (:data:`SETTINGS`):

- ``"2025"`` (identify the training subset): five generators of one architecture (DCGAN-class,
  transposed convolutions), generator ``k`` trained on its own subset ``s<k>`` of synthetic
  patients; the subsets are disjoint (patients ``first_patient + k * n_train ...``, one slice
  each). A subset's real images are its training images (``real/<subset>/``).
- ``"2024"`` (detect the model's fingerprint): models trained on the *same* images that differ
  in their upsampling (``"tconv"``: transposed convolutions; ``"nearest"``/``"bilinear"``:
  nearest-neighbour / bilinear upsampling followed by a 3x3 convolution), plus a pair that
  differs only in its seed (``tconv_a``/``tconv_b``).

Every generator maps z ``(N, nz, 1, 1)`` to a 64x64 grey image in ``[-1, 1]`` (4x4 -> ... ->
64x64, batch norm and ReLU, tanh); :func:`ctfp.imageclef.realistic.generate` samples it and
upscales bicubically to the task's 256x256. Training is :func:`train_generator` (the hinge loss
against :func:`ctfp.imageclef.realistic.build_discriminator`, Adam, an EMA of the weights,
standing batch-norm statistics), driven by ``benches/train_attribution_gans.py``; checkpoints
(fp16, with the settings, the iterations actually done and the patients seen) live in
``ctfp/attribution/assets/``.

The subsets are also "true nulls" for membership inference: generator ``s<k>`` never saw the
patients of the other subsets (:func:`patients_of`).

torch is imported only by the functions that need it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._util import atomic_write
from ctfp.imageclef.realistic import TrainResult

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_FORMAT",
    "GeneratorSpec",
    "SETTINGS",
    "build_generator",
    "checkpoint_path",
    "load_generator",
    "patients_of",
    "save_checkpoint",
    "train_generator",
    "training_images",
]

#: ``format`` field of a checkpoint file
CHECKPOINT_FORMAT = "ctfp-attribution-gan/1"
#: where the committed checkpoints live
ASSETS = Path(__file__).with_name("assets")
#: upsampling layers a generator can use
ARCHITECTURES = ("tconv", "nearest", "bilinear")
TRAIN_COMMAND = "python benches/train_attribution_gans.py --out OUT_DIR --install"

_TAG_SLICE = 0x4154_5452_01  # slice position of each patient


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator of the benchmark: its ``name`` (the source label), its ``setting``
    (``"2025"``/``"2024"``), the upsampling ``arch``, the training ``seed`` and the patients it
    is trained on (``n_train`` patients from ``first_patient``, one slice each, at a position
    drawn per patient from ``data_seed``)."""

    name: str
    setting: str
    arch: str = "tconv"
    seed: int = 0
    first_patient: int = 0
    n_train: int = 200
    data_seed: int = 0
    slice_positions: int = 40
    nz: int = 128
    width: int = 16

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"arch: expected one of {', '.join(map(repr, ARCHITECTURES))}, found {self.arch!r}"
            )
        for name in ("n_train", "nz", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, found {v!r}")


def _settings() -> dict[str, list[GeneratorSpec]]:
    n = 200
    s2025 = [
        GeneratorSpec(f"s{k + 1}", "2025", "tconv", seed=k, first_patient=50_000 + k * n)
        for k in range(5)
    ]
    # the same 200 patients for every 2024 model: they differ in architecture or only in seed
    s2024 = [
        GeneratorSpec(name, "2024", arch, seed=seed, first_patient=60_000)
        for name, arch, seed in (
            ("tconv_a", "tconv", 0),
            ("tconv_b", "tconv", 1),
            ("nearest", "nearest", 0),
            ("bilinear", "bilinear", 0),
        )
    ]
    return {"2025": s2025, "2024": s2024}


#: the benchmark's generators per setting; 2025: subsets s1-s5 of 200 disjoint patients each
#: (patients 50,000-50,999); 2024: four models on the same 200 patients (60,000-60,199)
SETTINGS: dict[str, list[GeneratorSpec]] = _settings()


def patients_of(spec: GeneratorSpec) -> list[tuple[int, int]]:
    """The ``(patient, slice_index)`` pairs ``spec``'s generator was trained on (a pure function
    of the spec)."""

    def position(patient: int) -> int:
        ss = np.random.SeedSequence([_TAG_SLICE, spec.data_seed, patient])
        return int(np.random.Generator(np.random.PCG64(ss)).integers(spec.slice_positions))

    return [(p, position(p)) for p in range(spec.first_patient, spec.first_patient + spec.n_train)]


def training_images(spec: GeneratorSpec, *, size: int = 256, n_jobs: int | None = 1) -> np.ndarray:
    """``uint8 (n_train, size, size)``: the real slices of :func:`patients_of` (rendered with
    :func:`ctfp.imageclef.realistic.render`, seed ``data_seed``)."""
    from ctfp.imageclef.realistic import render

    return render(patients_of(spec), size=size, seed=spec.data_seed, n_jobs=n_jobs)


# --------------------------------------------------------------------------------------------------
# networks


def build_generator(nz: int = 128, width: int = 16, arch: str = "tconv") -> Any:
    """A 64x64 grey generator: z ``(N, nz, 1, 1)`` -> 4x4 (a 4x4 transposed convolution) ->
    8x8 -> 16x16 -> 32x32 -> 64x64, ``width`` filters at 32x32 (x2, x4, x8 below), batch norm
    and ReLU, tanh; DCGAN's initialisation. Each doubling is a 4x4 stride-2 transposed
    convolution (``arch="tconv"``, DCGAN) or an ``nn.Upsample(mode=arch)`` then a 3x3
    convolution (``"nearest"``, ``"bilinear"``)."""
    from torch import nn

    if arch not in ARCHITECTURES:
        raise ValueError(
            f"arch: expected one of {', '.join(map(repr, ARCHITECTURES))}, found {arch!r}"
        )
    w = width
    chans = [8 * w, 4 * w, 2 * w, w, 1]
    layers: list[Any] = [
        nn.ConvTranspose2d(nz, chans[0], 4, 1, 0, bias=False),
        nn.BatchNorm2d(chans[0]),
        nn.ReLU(True),
    ]
    for k, (cin, cout) in enumerate(zip(chans, chans[1:], strict=False)):
        if arch == "tconv":
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False))
        else:
            kw = {"align_corners": False} if arch == "bilinear" else {}
            layers += [
                nn.Upsample(scale_factor=2, mode=arch, **kw),
                nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            ]
        if k < len(chans) - 2:
            layers += [nn.BatchNorm2d(cout), nn.ReLU(True)]
    layers.append(nn.Tanh())
    g = nn.Sequential(*layers)
    for m in g.modules():
        if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return g


def _standing_stats(
    generator: Any, *, seed: int, n_batches: int = 16, batch_size: int = 64
) -> None:
    """Batch-norm running statistics = the mean over ``n_batches`` batches of fresh samples
    (BigGAN's standing statistics): the EMA weights never ran in training mode."""
    import torch
    from torch import nn

    bns = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    generator.train()
    g = torch.Generator().manual_seed(seed)
    nz = int(generator[0].in_channels)
    with torch.no_grad():
        for _ in range(n_batches):
            generator(torch.randn(batch_size, nz, 1, 1, generator=g))
    for m in bns:
        m.momentum = 0.1
    generator.eval()


def train_generator(
    train_images: np.ndarray,
    spec: GeneratorSpec,
    *,
    iterations: int,
    budget_s: float | None = None,
    batch_size: int = 64,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.0, 0.9),
    ema_decay: float = 0.999,
    log_every: int = 250,
    log: Callable[[str], Any] | None = print,
    device: Any = "cpu",
) -> TrainResult:
    """Train ``spec``'s generator on ``train_images`` (``uint8 (N, 64, 64)``) on ``device``
    (the CPU by default, where training is bit-reproducible; ``"cuda"`` for full-length runs).

    The training loop is :func:`ctfp.imageclef.realistic.train_leak_gan`'s (hinge loss against
    its spectrally normalised discriminator of the same ``width``, Adam ``lr``/``betas``, one
    discriminator step per generator step, EMA decay ``min(ema_decay, (1 + t) / (10 + t))``, no
    augmentation), with the generator of ``spec.arch`` and torch's seed ``spec.seed``.
    ``budget_s``: stop after that many seconds (checked every 25 iterations; the iterations done
    are recorded). The EMA generator's batch-norm statistics are then this benchmark's own
    standing statistics (:func:`_standing_stats`, as the committed checkpoints were made),
    computed on the CPU; the returned generator is on the CPU.
    """
    from ctfp.imageclef.realistic import train_leak_gan

    result = train_leak_gan(
        train_images, iterations=iterations, batch_size=batch_size, seed=spec.seed,
        device=device, lr=lr, betas=betas, ema_decay=ema_decay, n_dis=1, nz=spec.nz,
        width=spec.width, budget_s=budget_s, log_every=log_every, log=log,
        generator=lambda: build_generator(spec.nz, spec.width, spec.arch), name=spec.name,
    )  # fmt: skip
    result.generator = result.generator.to("cpu")
    _standing_stats(result.generator, seed=spec.seed + 7919)
    return result


# --------------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_path(name: str, setting: str, root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/gan_<setting>_<name>.pt`` (default root: the committed assets)."""
    return Path(root if root is not None else ASSETS) / f"gan_{setting}_{name}.pt"


def save_checkpoint(
    generator: Any, spec: GeneratorSpec, path: str | os.PathLike[str], meta: dict[str, Any]
) -> Path:
    """Write the generator's state (fp16) with ``spec`` and ``meta`` (JSON-compatible: the
    training settings, iterations done, seconds, hashes) atomically; return the path."""
    import torch

    state = {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
        for k, v in generator.state_dict().items()
    }
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "spec": asdict(spec),
        "meta": json.loads(json.dumps(meta)),
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save(ckpt, f)
    return path


def load_generator(path: str | os.PathLike[str]) -> tuple[Any, GeneratorSpec, dict[str, Any]]:
    """The generator of a checkpoint (float32, eval mode, CPU), its spec and its meta."""
    from ctfp._util import state_dict_mismatch
    from ctfp.imageclef.realistic import read_checkpoint

    path = Path(path)
    ckpt = read_checkpoint(
        path, CHECKPOINT_FORMAT, "an attribution-GAN",
        missing=f"no trained attribution generator; train them with {TRAIN_COMMAND}",
    )  # fmt: skip
    spec = GeneratorSpec(**ckpt["spec"])
    g = build_generator(spec.nz, spec.width, spec.arch)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    problem = state_dict_mismatch(g.state_dict(), state)
    if problem:
        raise ValueError(f"{path}: does not fit the generator of its spec: {problem}")
    g.load_state_dict(state)
    return g.eval(), spec, ckpt["meta"]
