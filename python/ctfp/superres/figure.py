"""A picture for the README: original | bicubic | network, with PSNRs
(:func:`comparison_figure`)."""

from __future__ import annotations

import numpy as np

from ctfp.superres.upscaler import Upscaler, _check_image

__all__ = ["comparison_figure"]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def comparison_figure(
    image: np.ndarray, upscaler: Upscaler, *, labels: bool = True
) -> tuple[np.ndarray, dict[str, float]]:
    """Shrink a grey image by the upscaler's scale (Pillow bicubic, antialiased), upscale it back
    with bicubic and with the network, and put original | bicubic | network side by side.

    Returns
    -------
    figure : np.ndarray
        uint8 ``(H, 3 W + 8)`` grey image (with small labels when ``labels``).
    psnr : dict
        ``{"bicubic": dB, "esrgan": dB}`` against the original.
    """
    from PIL import Image, ImageDraw

    image = _check_image(image)
    if image.ndim != 2:
        raise ValueError(f"image: expected grey (H, W), found shape {image.shape}")
    s = upscaler.scale
    h, w = image.shape
    if h % s or w % s:
        raise ValueError(f"image: height and width must be multiples of {s}, found {image.shape}")
    small = Image.fromarray(image).resize((w // s, h // s), Image.Resampling.BICUBIC)
    bicubic = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))
    esrgan = upscaler.upscale(np.asarray(small))
    psnr = {"bicubic": _psnr(bicubic, image), "esrgan": _psnr(esrgan, image)}
    gap = 4
    fig = np.full((h, 3 * w + 2 * gap), 255, np.uint8)
    for k, panel in enumerate((image, bicubic, esrgan)):
        fig[:, k * (w + gap) : k * (w + gap) + w] = panel
    if labels:
        pil = Image.fromarray(fig)
        draw = ImageDraw.Draw(pil)
        texts = (
            f"original {w}x{h}",
            f"bicubic x{s} of {w // s}x{h // s}: PSNR {psnr['bicubic']:.2f} dB",
            f"ESRGAN x{s} of {w // s}x{h // s}: PSNR {psnr['esrgan']:.2f} dB",
        )
        for k, t in enumerate(texts):
            x = k * (w + gap) + 4
            box = draw.textbbox((x, 3), t)
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=0)
            draw.text((x, 3), t, fill=255)
        fig = np.asarray(pil)
    return fig, psnr
