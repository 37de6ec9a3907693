"""Shared fixtures: PNG files written into ``tmp_path`` with Pillow and with a small hand-written
encoder (``encode_png``) that covers what Pillow cannot write directly: 2/4-bit and 16-bit grey,
grey+alpha, 16-bit RGB, palettes with tRNS, and Adam7 interlacing."""

from __future__ import annotations

import pathlib
import struct
import threading
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# colour type -> samples per pixel
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}

# Adam7 passes: (row0, col0, row step, col step)
ADAM7 = [
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
]


def png_chunk(kind: bytes, data: bytes, *, crc: int | None = None) -> bytes:
    if crc is None:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def ihdr(
    width: int, height: int, bit_depth: int = 8, color_type: int = 0, interlace: int = 0
) -> bytes:
    return png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    )


def _scanlines(pixels: np.ndarray, bit_depth: int, channels: int) -> bytes:
    """Raw (filter type 0) scanlines of an ``(h, w)`` or ``(h, w, c)`` sample array."""
    h, w = pixels.shape[:2]
    if h == 0 or w == 0:
        return b""
    samples = pixels.reshape(h, w * channels)
    if bit_depth == 16:
        rows = samples.astype(">u2").view(np.uint8).reshape(h, -1)
    elif bit_depth == 8:
        rows = samples.astype(np.uint8)
    else:
        bits = np.unpackbits(samples.astype(np.uint8)[..., None], axis=-1)[..., 8 - bit_depth :]
        rows = np.packbits(bits.reshape(h, -1), axis=-1)  # MSB first, row padded with zeros
    out = np.zeros((h, rows.shape[1] + 1), np.uint8)  # leading filter byte 0
    out[:, 1:] = rows
    return out.tobytes()


def encode_png(
    pixels: np.ndarray,
    *,
    bit_depth: int = 8,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
    interlace: bool = False,
    level: int = 6,
) -> bytes:
    """A minimal PNG encoder.

    ``pixels`` is ``(H, W)`` grey (or palette indices when ``palette`` is given), ``(H, W, 2)``
    grey+alpha, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, holding sample values for ``bit_depth``.
    """
    pixels = np.asarray(pixels)
    if palette is not None:
        color_type = 3
    elif pixels.ndim == 2:
        color_type = 0
    else:
        color_type = {2: 4, 3: 2, 4: 6}[pixels.shape[2]]
    channels = _CHANNELS[color_type]
    h, w = pixels.shape[:2]
    if interlace:
        raw = b"".join(
            _scanlines(pixels[r0::dr, c0::dc], bit_depth, channels) for r0, c0, dr, dc in ADAM7
        )
    else:
        raw = _scanlines(pixels, bit_depth, channels)
    out = PNG_SIGNATURE + ihdr(w, h, bit_depth, color_type, int(interlace))
    if palette is not None:
        out += png_chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes())
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(raw, level))
    out += png_chunk(b"IEND", b"")
    return out


def fake_png(width: int, height: int, *, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """A PNG whose header claims ``width x height`` but whose IDAT is garbage (not zlib)."""
    return (
        PNG_SIGNATURE
        + ihdr(width, height, bit_depth, color_type)
        + png_chunk(b"IDAT", b"\xde\xad\xbe\xef" * 16)
        + png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------------
# fixtures


def _one_torch_thread():
    """Tiny models gain nothing from torch's thread pool, and on a small machine whose cores are
    busy (the loader's threads, other jobs) OpenMP's spinning workers make each step many times
    slower (on a shared 2-core VM tests/test_superres.py took 80 s with 2 threads and 14 s with
    one). These tests check behaviour, not speed: run them on one torch thread, then restore the
    count. Skips where torch is not installed."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# a module's tests: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``
one_torch_thread = pytest.fixture(scope="module", name="one_torch_thread")(_one_torch_thread)
# one test only, where the rest of its module keeps torch's own thread count
one_torch_thread_per_test = pytest.fixture(name="one_torch_thread_per_test")(_one_torch_thread)


@pytest.fixture(scope="session")
def png_encoder() -> Callable[..., bytes]:
    return encode_png


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def write_png(tmp_path: pathlib.Path) -> Callable[..., pathlib.Path]:
    """``write_png(name, pixels, **encode_png_kwargs) -> path`` using the hand-written encoder."""

    def write(name: str, pixels: np.ndarray, **kwargs: object) -> pathlib.Path:
        p = tmp_path / name
        p.write_bytes(encode_png(pixels, **kwargs))  # type: ignore[arg-type]
        return p

    return write


@pytest.fixture
def save_pil(tmp_path: pathlib.Path) -> Callable[..., pathlib.Path]:
    """``save_pil(name, array_or_image, **save_kwargs) -> path`` using Pillow's PNG writer."""

    def save(name: str, img: np.ndarray | Image.Image, **kwargs: object) -> pathlib.Path:
        p = tmp_path / name
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        img.save(p, format="PNG", **kwargs)
        return p

    return save


@pytest.fixture(scope="session")
def mixed_sources() -> Callable[[list[np.ndarray], pathlib.Path], list[object]]:
    """``mixed_sources(arrays, directory) -> sources``: the images as both kinds of ctfp source,
    odd indices as 8-bit grey PNGs written by Pillow into ``directory`` (``{k}.png``), even ones
    as the arrays themselves."""

    def make(arrays: list[np.ndarray], directory: pathlib.Path) -> list[object]:
        out: list[object] = []
        for k, a in enumerate(arrays):
            if k % 2:
                p = directory / f"{k}.png"
                Image.fromarray(a).save(p)
                out.append(p)
            else:
                out.append(a)
        return out

    return make


@pytest.fixture(scope="session")
def run_threads() -> Callable[..., None]:
    """``run_threads(work, n, *, timeout=None, main=None)``: run ``work(k)`` for each ``k`` in
    ``range(n)`` in a thread of its own, all started together; ``main(threads)``, when given, runs
    in the calling thread meanwhile. Then wait up to ``timeout`` s for each thread and fail with
    the exceptions the threads raised, if any."""

    def run(
        work: Callable[[int], None],
        n: int,
        *,
        timeout: float | None = None,
        main: Callable[[list[threading.Thread]], None] | None = None,
    ) -> None:
        errors: list[BaseException] = []

        def target(k: int) -> None:
            try:
                work(k)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        if main is not None:
            main(threads)
        for t in threads:
            t.join(timeout)
        assert not errors, errors

    return run


@pytest.fixture
def test_root(tmp_path: pathlib.Path) -> pathlib.Path:
    """A test set as shipped: ``generated/`` with two images and ``real_unknown/`` with four
    (``real_unknown_0000.png`` ... ``real_unknown_0003.png``), 32x32 synthetic slices."""
    from ctfp.data.synthetic import write_pngs

    root = tmp_path / "test"
    write_pngs(root / "generated", 2, prefix="generated", size=32)
    write_pngs(root / "real_unknown", 4, prefix="real_unknown", size=32)
    return root


GREY8_SIZES = [(1, 1), (1, 17), (17, 1), (2, 3), (7, 5), (31, 33), (64, 64), (97, 45)]


@pytest.fixture
def grey8_files(tmp_path: pathlib.Path) -> list[tuple[pathlib.Path, np.ndarray]]:
    """8-bit grey PNGs written by Pillow, with the arrays they hold: random noise of several sizes
    (1xN, Nx1, odd sizes) and synthetic CT slices."""
    from ctfp.data.synthetic import make_slice

    r = np.random.default_rng(7)
    out = []
    for k, (h, w) in enumerate(GREY8_SIZES):
        a = r.integers(0, 256, (h, w), dtype=np.uint8)
        p = tmp_path / f"noise_{k}_{h}x{w}.png"
        Image.fromarray(a).save(p)
        out.append((p, a))
    for k, (patient, sl, size) in enumerate([(0, 0, 64), (3, 5, 96), (1, 2, 33)]):
        a = make_slice(patient, sl, size=size)
        p = tmp_path / f"slice_{k}.png"
        Image.fromarray(a).save(p)
        out.append((p, a))
    return out


@pytest.fixture
def slice_paths(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    """Twelve 64x64 synthetic slices, 8-bit grey PNG."""
    from ctfp.data.synthetic import make_slices

    imgs = make_slices(12, n_patients=3, size=64)
    paths = []
    for k, a in enumerate(imgs):
        p = tmp_path / f"s{k:02d}.png"
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def good_png_bytes() -> bytes:
    a = np.random.default_rng(3).integers(0, 256, (40, 50), dtype=np.uint8)
    return encode_png(a)


@pytest.fixture
def bad_files(tmp_path: pathlib.Path, good_png_bytes: bytes) -> dict[str, pathlib.Path]:
    """One file per bad-input class: empty, GIF, truncated, bad CRC, bad zlib stream."""
    good = good_png_bytes
    files: dict[str, bytes] = {}
    files["empty"] = b""
    files["gif"] = b"GIF89a" + bytes(range(32))
    files["truncated"] = good[: len(good) // 2]
    # the data intact, but IHDR's CRC field wrong: only a CRC check can tell
    bad_crc = bytearray(good)
    bad_crc[8 + 8 + 13] ^= 0xFF  # first byte of IHDR's CRC (8 signature, 8 length+type, 13 data)
    files["bad_crc"] = bytes(bad_crc)
    # a valid chunk structure (CRCs right) around an IDAT holding no zlib stream
    files["bad_zlib"] = (
        PNG_SIGNATURE
        + ihdr(50, 40)
        + png_chunk(b"IDAT", b"\x00\x11\x22\x33" * 8)
        + png_chunk(b"IEND", b"")
    )
    paths = {}
    for name, data in files.items():
        p = tmp_path / f"bad_{name}.png"
        p.write_bytes(data)
        paths[name] = p
    return paths
