"""The same decode + augment + assemble pipeline written with the tools people use today.

Every peer takes PNG paths and per-image parameters (drawn by ``ctfp.Augment.sample_params``) and
returns the ``(N, 3, H, W)`` batch ctfp's ``load_batch`` makes, uint8 or ImageNet-normalised
float32, following ctfp's documented conventions (python/ctfp/preprocess.py), so outputs can be
compared before they are timed.
"""

from __future__ import annotations

import math

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def fused_matrix(p, src_hw, out_hw):
    """ctfp's inverse mapping for parameters ``p``: ``src(row, col) = M @ (i, j) + offset``."""
    (hs, ws), (h, w) = src_hw, out_hw
    a = math.radians(p.angle_deg)
    r = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    s = np.diag([hs / h, ws / w])
    zinv = np.diag([1 / p.zoom[0], 1 / p.zoom[1]])
    f = np.diag([1.0, -1.0 if p.flip else 1.0])
    m = s @ r @ zinv @ f
    c_o = np.array([(h - 1) / 2, (w - 1) / 2])
    c_s = np.array([(hs - 1) / 2, (ws - 1) / 2])
    t = np.array([p.shift[0] * h, p.shift[1] * w])
    return m, c_s - m @ c_o - s @ r @ t


def _cv_inverse(m, off):
    """(row, col) mapping -> OpenCV's (x=col, y=row) 2x3 inverse map."""
    return np.array([[m[1, 1], m[1, 0], off[1]], [m[0, 1], m[0, 0], off[0]]], dtype=np.float64)


def _finish(grey_batch: np.ndarray, dtype: str) -> np.ndarray:
    """(N, H, W) uint8 -> (N, 3, H, W) uint8, or ImageNet-normalised float32."""
    if dtype == "uint8":
        return np.repeat(grey_batch[:, None], 3, axis=1)
    g = grey_batch.astype(np.float32) * np.float32(1 / 255)
    return (g[:, None] - MEAN[None, :, None, None]) / STD[None, :, None, None]


def opencv_single_warp(paths, params, size=(224, 224), dtype="uint8"):
    """cv2.imdecode, then one cv2.warpAffine whose matrix folds resize, affine and flip."""
    import cv2

    out = np.empty((len(paths), *size), np.uint8)
    for k, (path, p) in enumerate(zip(paths, params, strict=True)):
        g = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_GRAYSCALE)
        m, off = fused_matrix(p, g.shape, size)
        out[k] = cv2.warpAffine(
            g,
            _cv_inverse(m, off),
            (size[1], size[0]),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return _finish(out, dtype)


def opencv_plain(paths, params, size=(224, 224), dtype="uint8"):
    """cv2.imread, cv2.resize, cv2.warpAffine about the centre, cv2.flip: one step at a time."""
    import cv2

    out = np.empty((len(paths), *size), np.uint8)
    for k, (path, p) in enumerate(zip(paths, params, strict=True)):
        g = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        g = cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        m, off = fused_matrix(p._replace(flip=False), size, size)
        g = cv2.warpAffine(
            g,
            _cv_inverse(m, off),
            (size[1], size[0]),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        out[k] = cv2.flip(g, 1) if p.flip else g
    return _finish(out, dtype)


def pillow(paths, params, size=(224, 224), dtype="uint8"):
    """PIL.Image.open, then one Image.transform(AFFINE, BILINEAR) with the fused matrix."""
    from PIL import Image

    out = np.empty((len(paths), *size), np.uint8)
    for k, (path, p) in enumerate(zip(paths, params, strict=True)):
        with Image.open(path) as im:
            im = im.convert("L")
            m, off = fused_matrix(p, (im.height, im.width), size)
            # Pillow samples at pixel centres (x + 0.5, y + 0.5) and reads the result at -0.5.
            a, b = m[1, 1], m[1, 0]
            d, e = m[0, 1], m[0, 0]
            c = off[1] + 0.5 - 0.5 * (a + b)
            f = off[0] + 0.5 - 0.5 * (d + e)
            t = im.transform((size[1], size[0]), Image.AFFINE, (a, b, c, d, e, f), Image.BILINEAR)
            out[k] = np.asarray(t)
    return _finish(out, dtype)


def torchvision_v2(paths, params, size=(224, 224), dtype="uint8"):
    """torchvision.io.decode_png, then transforms.v2.functional resize, affine, hflip."""
    import torch
    from torchvision.io import decode_png
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    imgs = []
    for path, p in zip(paths, params, strict=True):
        raw = torch.frombuffer(bytearray(open(path, "rb").read()), dtype=torch.uint8)
        g = decode_png(raw)  # (1, H, W) uint8
        g = F.resize(g, list(size), interpolation=InterpolationMode.BILINEAR, antialias=False)
        g = F.affine(
            g,
            angle=-p.angle_deg,  # torchvision turns clockwise for positive angles
            translate=[p.shift[1] * size[1], p.shift[0] * size[0]],
            scale=math.sqrt(p.zoom[0] * p.zoom[1]),  # isotropic only
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
        )
        if p.flip:
            g = F.hflip(g)
        imgs.append(g)
    batch = torch.stack(imgs).expand(-1, 3, -1, -1)
    if dtype == "uint8":
        return batch.contiguous().numpy()
    x = F.to_dtype(batch, torch.float32, scale=True)
    return F.normalize(x, MEAN.tolist(), STD.tolist()).numpy()


PEERS = {
    "opencv_single_warp": opencv_single_warp,
    "opencv_plain": opencv_plain,
    "pillow": pillow,
    "torchvision_v2": torchvision_v2,
}
