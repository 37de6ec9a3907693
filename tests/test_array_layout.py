"""Arrays are read as they are or refused with the hint, never read in the wrong order.

A Fortran-ordered array is contiguous, but column-major: its memory read as rows is the image
transposed or scrambled. Every entry that takes single images refuses it (one check in the
Rust layer, ``c_order``), as it refuses strided and reversed views; entries that take a whole
``(N, H, W)`` stack as one argument (the estimators, ``ssim_matrix``) read any layout."""

from __future__ import annotations

import numpy as np
import pytest

import ctfp
from ctfp import _core
from ctfp.membership.similarity import SimilarityMembership

HINT = r"not C-contiguous .*np\.ascontiguousarray"


def _image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _not_c_order(a: np.ndarray) -> list[np.ndarray]:
    """Views of ``a``'s pixels in every layout that is not C order, each with the values of a
    C-ordered array of its shape (so a wrong read cannot pass for a right one)."""
    views = [np.asfortranarray(a), a[:, ::2], a[::-1]]
    if a.ndim == 2:
        views.append(np.ascontiguousarray(a.T).T)  # .T of a C array: Fortran-ordered
    return [v for v in views if not v.flags.c_contiguous]


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 1), (48, 64, 3)], ids=["HW", "HW1", "HW3"])
def test_load_batch_refuses_every_layout_but_c_order(shape) -> None:
    base = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    ref = ctfp.load_batch([base], size=(48, 64), layout="grey")
    for view in _not_c_order(base):
        with pytest.raises(ValueError, match="image 1: array is " + HINT):
            ctfp.load_batch([base, view], size=(48, 64), layout="grey")
        fixed = ctfp.load_batch([np.ascontiguousarray(view)], size=(48, 64), layout="grey")
        if view.shape == base.shape and np.array_equal(view, base):
            np.testing.assert_array_equal(fixed, ref)


def test_fortran_order_of_the_transpose_is_refused_not_read_as_rows() -> None:
    a = _image()
    t = a.T  # (64, 48), Fortran-ordered view of a's memory
    assert t.flags.f_contiguous and not t.flags.c_contiguous
    with pytest.raises(ValueError, match=HINT):
        ctfp.load_batch([t], size=t.shape, layout="grey")
    good = ctfp.load_batch([np.ascontiguousarray(t)], size=t.shape, layout="grey")
    np.testing.assert_array_equal(good[0, 0], t)


def test_batch_stream_refuses_it_too() -> None:
    imgs = [_image(seed=k) for k in range(3)]
    imgs[2] = np.asfortranarray(imgs[2])
    stream = ctfp.BatchStream(imgs, batch_size=3, shuffle=False, size=(48, 64), prefetch=0)
    with pytest.raises(ValueError, match="image 2: array is " + HINT):
        next(iter(stream))


def test_transform_and_rgb_to_grey_refuse_it_with_the_same_rule() -> None:
    a = _image()
    with pytest.raises(ValueError, match="image: array is " + HINT):
        ctfp.transform(np.asfortranarray(a), flip=True)
    rgb = np.random.default_rng(2).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="rgb: array is " + HINT):
        _core.rgb_to_grey(np.asfortranarray(rgb))
    with pytest.raises(ValueError, match="queries: array is " + HINT):
        _core.ssim_matrix(np.asfortranarray(np.stack([a, a])), np.stack([a]))


def test_stacks_given_whole_are_read_in_any_layout() -> None:
    stack = np.stack([_image(seed=k) for k in range(4)])
    fortran = np.asfortranarray(stack)
    np.testing.assert_array_equal(
        ctfp.ssim_matrix(fortran, stack[::-1]), ctfp.ssim_matrix(stack, stack[::-1].copy())
    )


def test_similarity_scores_of_a_fortran_copy_equal_the_c_copy() -> None:
    rng = np.random.default_rng(3)
    gen = rng.integers(0, 256, (20, 32, 32), dtype=np.uint8)
    dev = np.concatenate([gen[:4], rng.integers(0, 256, (4, 32, 32), dtype=np.uint8)])
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    for measure, size in (("pixel", 32), ("ssim", 32), ("pixel", 16), ("ssim", 24)):
        est = SimilarityMembership(
            measure=measure, image_size=size, calibration=None, rule="top"
        ).fit(dev, y, generated=gen)
        c = est.score_samples(dev)
        f = est.score_samples(np.asfortranarray(dev))  # resized unless size == 32
        np.testing.assert_array_equal(c, f)
        est_f = SimilarityMembership(
            measure=measure, image_size=size, calibration=None, rule="top"
        ).fit(np.asfortranarray(dev), y, generated=np.asfortranarray(gen))
        np.testing.assert_array_equal(est_f.score_samples(dev), c)


# --------------------------------------------------------------------------------------------------
# empty inputs: one line naming the argument, not numpy's reshape wording


def test_empty_inputs_name_the_argument() -> None:
    from ctfp.membership.baselines import VCMISSIM, GANLeaks
    from ctfp.membership.fused import FusedMembership

    rng = np.random.default_rng(4)
    gen = rng.integers(0, 256, (12, 32, 32), dtype=np.uint8)
    dev = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    y = [1, 0, 1, 0, 1, 0]
    est = SimilarityMembership(image_size=32)
    with pytest.raises(ValueError, match=r"^X: expected at least one development image"):
        est.fit([], [], generated=gen)
    with pytest.raises(ValueError, match=r"^generated: expected at least one generated image"):
        est.fit(dev, y, generated=[])
    with pytest.raises(ValueError, match=r"^generated: expected at least one generated image"):
        est.fit(dev, y, generated=np.zeros((0, 32, 32), np.uint8))
    fitted = SimilarityMembership(image_size=32, rule="calibrated").fit(dev, y, generated=gen)
    for call in (fitted.score_samples, fitted.predict, fitted.decision_function):
        with pytest.raises(ValueError, match=r"^X: expected at least one image to score"):
            call([])
    for other in (GANLeaks(image_size=32), VCMISSIM(image_size=32), FusedMembership(image_size=32)):
        with pytest.raises(ValueError, match=r"^generated: expected at least one generated image"):
            other.fit(dev, y, generated=[])
        with pytest.raises(ValueError, match=r"^X: expected at least one"):
            other.fit(dev, y, generated=gen).score_samples([])
