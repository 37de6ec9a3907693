"""The paper's training set: every real image appears 50 times so that 200 real images match
10,000 generated ones 1:1, as the reproduced paper balanced them (README, "The task end to end").

Each real image gives its original, its horizontal flip, 24 random augmentations of the original
and 24 of the flip (zoom 0.97-1.03, rotation within 10 degrees, shifts within 0.05, edge pixels
repeated). Generated images are used as they are. Nothing is written to disk: the set is a list
of sources with one augmentation config each, and ctfp's Rust pipeline draws every augmented copy
from ``(seed, epoch, sample id)`` when a batch is assembled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctfp.data.preprocess import Augment

__all__ = ["FLIP_ONLY", "TrainingSet", "paper_training_set"]

#: The deterministic flip of a real image (no random affine).
FLIP_ONLY = Augment(hflip=1.0, max_angle_deg=0.0, zoom=(1.0, 1.0), shift_frac=(0.0, 0.0))


@dataclass(frozen=True)
class TrainingSet:
    """Sources with labels and one augmentation config each (``None``: only resized).

    ``origin[k]`` is the index of sample ``k``'s image in the real list (``-1`` for generated
    images) and ``copy[k]`` which of its 50 versions it is (0 original, 1 flip, 2-25 augmented,
    26-49 augmented flip; ``-1`` for generated).
    """

    sources: list[Any]
    labels: np.ndarray
    augment: list[Augment | None]
    origin: np.ndarray
    copy: np.ndarray

    def __len__(self) -> int:
        return len(self.sources)


def paper_training_set(
    real: Sequence[Any],
    generated: Sequence[Any],
    *,
    copies: int = 50,
    augment: Augment | None = None,
    real_label: int = 0,
    generated_label: int = 1,
) -> TrainingSet:
    """Real images expanded ``copies`` times (even; the paper's 50), then the generated images.

    Labels follow the paper's classifier: real 0, generated 1 (a real test image scored as
    "generated" is predicted "used"). ``augment`` gives the random ranges (the paper's by
    default); its flip probability is ignored, as flips are fixed by the copy number.
    """
    if copies < 2 or copies % 2:
        raise ValueError(f"copies: expected an even number >= 2, found {copies}")
    base = augment if augment is not None else Augment()
    plain = Augment(**{**_fields(base), "hflip": 0.0})
    flipped = Augment(**{**_fields(base), "hflip": 1.0})
    per_image: list[Augment | None] = [None, FLIP_ONLY]
    per_image += [plain] * (copies // 2 - 1) + [flipped] * (copies // 2 - 1)
    n_real, n_gen = len(real), len(generated)
    sources = [src for src in real for _ in range(copies)] + list(generated)
    configs = per_image * n_real + [None] * n_gen
    labels = np.array([real_label] * (n_real * copies) + [generated_label] * n_gen)
    origin = np.concatenate([np.repeat(np.arange(n_real), copies), np.full(n_gen, -1)])
    copy = np.concatenate([np.tile(np.arange(copies), n_real), np.full(n_gen, -1)])
    return TrainingSet(sources, labels, configs, origin.astype(int), copy.astype(int))


def _fields(a: Augment) -> dict:
    from dataclasses import fields

    return {f.name: getattr(a, f.name) for f in fields(a)}
