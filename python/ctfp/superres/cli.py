"""Folders and the command line: :func:`upscale_dir` and :func:`run_upscale_command` (the
``ctfp upscale IN_DIR OUT_DIR`` command; its parser lives in :mod:`ctfp.imageclef.cli`, which
imports no torch). Importing this module imports torch."""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import torch

from ctfp.superres.cache import _write_png
from ctfp.superres.upscaler import Upscaler

__all__ = ["run_upscale_command", "upscale_dir"]


def upscale_dir(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    upscaler: Upscaler | None = None,
    weights: str | os.PathLike[str] = "realesrgan-x4plus",
    device: str | torch.device = "auto",
    tile: int = 256,
    tile_pad: int = 32,
    batch_size: int | None = None,
    half: bool | None = None,
    pattern: str = "*.png",
    recursive: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Upscale every PNG in ``in_dir`` into ``out_dir`` (same relative names), as 8-bit grey.

    Sources are decoded like :func:`ctfp.decode_png` (any PNG -> grey). Existing outputs are
    kept unless ``overwrite`` (so an interrupted run resumes); files are written atomically.
    ``upscaler``, when given, replaces ``weights``/``device``/``tile``/``tile_pad``/
    ``batch_size``/``half``.

    Returns
    -------
    list of pathlib.Path
        The output path of every source, in sorted source order (written now or already there).

    Raises
    ------
    FileNotFoundError
        ``in_dir`` is not a folder.
    ValueError
        No file matches ``pattern``, or ``out_dir`` is ``in_dir``.
    ctfp.ImageDecodeError
        A source is not a readable PNG (files before it are already written).
    """
    src_root, dst_root = Path(in_dir), Path(out_dir)
    if not src_root.is_dir():
        raise FileNotFoundError(f"input folder not found: {src_root}")
    if dst_root.resolve() == src_root.resolve():
        raise ValueError(f"out_dir: must differ from in_dir ({src_root}); sources would be lost")
    files = sorted(
        p for p in (src_root.rglob(pattern) if recursive else src_root.glob(pattern)) if p.is_file()
    )
    if not files:
        raise ValueError(f"{src_root}: no files match {pattern!r}")
    targets = [dst_root / p.relative_to(src_root).with_suffix(".png") for p in files]
    todo = [(s, t) for s, t in zip(files, targets, strict=True) if overwrite or not t.is_file()]
    if upscaler is None:
        upscaler = Upscaler(
            weights, device=device, tile=tile, tile_pad=tile_pad, batch_size=batch_size, half=half
        )
    up = copy.copy(upscaler)  # shares the network; only the progress setting differs
    up.progress = bool(progress)
    from ctfp.data.preprocess import decode_png

    images = (decode_png(os.fspath(s)) for s, _ in todo)
    for (_, target), big in zip(todo, up.upscale_iter(images, total=len(todo)), strict=True):
        _write_png(target, big, {"ctfp-model": up.model_id})
    return targets


def run_upscale_command(args: argparse.Namespace) -> int:
    """The ``ctfp upscale`` command (its parser lives in ``ctfp.imageclef.cli``, which imports
    no torch): 0 done, 1 failed."""
    import time

    from ctfp.exceptions import ImageDecodeError

    try:
        up = Upscaler(
            args.weights,
            device=args.device,
            tile=args.tile,
            tile_pad=args.tile_pad,
            batch_size=args.batch_size,
            half=False if args.fp32 else None,
        )
        t0 = time.perf_counter()
        paths = upscale_dir(
            args.in_dir,
            args.out_dir,
            upscaler=up,
            pattern=args.pattern,
            recursive=args.recursive,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        dt = time.perf_counter() - t0
    except torch.cuda.OutOfMemoryError:
        print("ctfp upscale: out of GPU memory; lower --tile or --batch-size", file=sys.stderr)
        return 1
    except (OSError, ImportError, ValueError, ImageDecodeError) as e:
        print(f"ctfp upscale: {e}", file=sys.stderr)
        return 1
    print(
        f"{len(paths)} images in {args.out_dir} (x{up.scale}, {up.model_id}, "
        f"{up.device}, {'fp16' if up.half else 'fp32'}; {dt:.1f} s)"
    )
    return 0
