"""ctfp.decode_png against Pillow and the documented conversion rules; caps; bad inputs."""

from __future__ import annotations

import io
import pathlib
import warnings

import numpy as np
import pytest
import reference
from conftest import encode_png, fake_png
from PIL import Image

import ctfp


def pil_grey(data_or_path: bytes | pathlib.Path) -> np.ndarray:
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette + tRNS bytes warning
        with Image.open(src) as im:
            return np.asarray(im.convert("L"))


# --------------------------------------------------------------------------------------------------
# the test encoder itself


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize(
    "kind", ["g1", "g2", "g4", "g8", "g16", "la8", "la16", "rgb8", "rgb16", "rgba8", "p2", "p8"]
)
def test_encoder_output_decodes_with_pillow(kind, interlace, rng):
    """The hand-written encoder is right: Pillow reads back exactly what was written."""
    h, w = 13, 11
    if kind.startswith("g"):
        bits = int(kind[1:])
        a = rng.integers(0, 1 << bits, (h, w)).astype(np.uint16 if bits == 16 else np.uint8)
        data = encode_png(a, bit_depth=bits, interlace=interlace)
        with Image.open(io.BytesIO(data)) as im:
            got = np.asarray(im)
        if bits == 1:
            expected = a.astype(bool)
        elif bits == 16:
            expected = a
        else:
            expected = reference.scale_low_bits(a, bits)
        np.testing.assert_array_equal(got, expected)
        return
    if kind.startswith("p"):
        bits = int(kind[1:])
        pal = rng.integers(0, 256, (1 << bits, 3), dtype=np.uint8)
        a = rng.integers(0, 1 << bits, (h, w)).astype(np.uint8)
        data = encode_png(a, bit_depth=bits, palette=pal, interlace=interlace)
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), pal[a])
        return
    c = {"la": 2, "rgb": 3, "rgba": 4}[kind.rstrip("0123456789")]
    bits = int(kind.lstrip("lagbr"))
    a = rng.integers(0, 1 << bits, (h, w, c)).astype(np.uint16 if bits == 16 else np.uint8)
    data = encode_png(a, bit_depth=bits, interlace=interlace)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if bits == 8:
            np.testing.assert_array_equal(np.asarray(im), a)
        else:
            assert im.size == (w, h)


# --------------------------------------------------------------------------------------------------
# 8-bit grey: exactly Pillow


def test_grey8_paths_equal_pillow(grey8_files):
    for path, arr in grey8_files:
        with Image.open(path) as im:
            expected = np.asarray(im)
        np.testing.assert_array_equal(expected, arr)
        for src in (path, str(path)):
            got = ctfp.decode_png(src)
            assert got.dtype == np.uint8
            assert got.shape == arr.shape
            assert got.flags.c_contiguous
            np.testing.assert_array_equal(got, expected, err_msg=str(path))


def test_grey8_bytes_equal_pillow(grey8_files):
    for path, arr in grey8_files:
        data = path.read_bytes()
        np.testing.assert_array_equal(ctfp.decode_png(data), arr, err_msg=str(path))
        np.testing.assert_array_equal(ctfp.decode_png(bytearray(data)), arr)
        np.testing.assert_array_equal(ctfp.decode_png(memoryview(data)), arr)


@pytest.mark.parametrize("optimize", [False, True])
def test_grey8_pillow_compression_settings(save_pil, rng, optimize):
    a = rng.integers(0, 256, (45, 67), dtype=np.uint8)
    a[10:30] = 128  # some runs for the filters to find
    for level in (0, 1, 9):
        p = save_pil(f"c{level}.png", a, compress_level=level, optimize=optimize)
        np.testing.assert_array_equal(ctfp.decode_png(p), a)


# --------------------------------------------------------------------------------------------------
# other formats: equal Pillow's convert("L") or the documented rule


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_low_bit_grey_equals_pillow(write_png, rng, bits, interlace):
    a = rng.integers(0, 1 << bits, (19, 23)).astype(np.uint8)
    p = write_png(f"g{bits}.png", a, bit_depth=bits, interlace=interlace)
    got = ctfp.decode_png(p)
    np.testing.assert_array_equal(got, pil_grey(p))
    np.testing.assert_array_equal(got, reference.scale_low_bits(a, bits))


def test_one_bit_grey_saved_by_pillow(save_pil, rng):
    a = rng.integers(0, 2, (21, 35)).astype(bool)
    p = save_pil("bw.png", Image.fromarray(a).convert("1"))
    np.testing.assert_array_equal(ctfp.decode_png(p), pil_grey(p))
    np.testing.assert_array_equal(ctfp.decode_png(p), np.where(a, 255, 0).astype(np.uint8))


@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_grey_rounds(write_png, rng, interlace):
    a = rng.integers(0, 65536, (17, 29)).astype(np.uint16)
    a[0, :8] = [0, 128, 129, 257, 385, 386, 65535, 32896]  # rounding edges
    p = write_png("g16.png", a, bit_depth=16, interlace=interlace)
    expected = ((a.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    np.testing.assert_array_equal(ctfp.decode_png(p), expected)
    np.testing.assert_array_equal(expected[0, :8], [0, 0, 1, 1, 1, 2, 255, 128])


def test_16bit_grey_alpha_and_rgb(write_png, rng):
    la = rng.integers(0, 65536, (9, 14, 2)).astype(np.uint16)
    p = write_png("la16.png", la, bit_depth=16)
    np.testing.assert_array_equal(ctfp.decode_png(p), reference.from16(la[..., 0]))
    rgb = rng.integers(0, 65536, (9, 14, 3)).astype(np.uint16)
    p = write_png("rgb16.png", rgb, bit_depth=16)
    np.testing.assert_array_equal(ctfp.decode_png(p), reference.rgb_to_grey(reference.from16(rgb)))


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("kind", ["rgb", "rgba", "la"])
def test_colour_and_alpha_equal_pillow_convert_L(write_png, rng, kind, interlace):
    c = {"rgb": 3, "rgba": 4, "la": 2}[kind]
    a = rng.integers(0, 256, (25, 18, c), dtype=np.uint8)
    p = write_png(f"{kind}.png", a, interlace=interlace)
    got = ctfp.decode_png(p)
    np.testing.assert_array_equal(got, pil_grey(p))
    if c >= 3:
        np.testing.assert_array_equal(got, reference.rgb_to_grey(a[..., :3]))
    else:
        np.testing.assert_array_equal(got, a[..., 0])  # alpha dropped, not composited


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_pillow_written_colour_equal_convert_L(save_pil, rng, mode):
    a = rng.integers(0, 256, (30, 41, len(mode)), dtype=np.uint8)
    p = save_pil(f"{mode}.png", Image.fromarray(a, mode))
    np.testing.assert_array_equal(ctfp.decode_png(p), pil_grey(p))


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("trns", [False, True])
def test_palette_equals_pillow_convert_L(write_png, rng, bits, trns):
    n = 1 << bits
    pal = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    a = rng.integers(0, n, (16, 27)).astype(np.uint8)
    t = bytes(rng.integers(0, 256, n, dtype=np.uint8)) if trns else None
    p = write_png(f"p{bits}.png", a, bit_depth=bits, palette=pal, trns=t)
    got = ctfp.decode_png(p)
    np.testing.assert_array_equal(got, pil_grey(p))
    np.testing.assert_array_equal(got, reference.rgb_to_grey(pal[a]))


def test_palette_written_by_pillow(save_pil, rng):
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).quantize(64)
    p = save_pil("q.png", im)
    np.testing.assert_array_equal(ctfp.decode_png(p), pil_grey(p))


def test_grey_with_trns_keeps_grey(write_png, rng):
    a = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    p = write_png("gt.png", a, trns=struct_u16(int(a[0, 0])))
    np.testing.assert_array_equal(ctfp.decode_png(p), a)


def struct_u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (3, 5), (8, 8), (9, 17), (33, 20)])
def test_interlaced_equals_non_interlaced(write_png, rng, bits, shape):
    dtype = np.uint16 if bits == 16 else np.uint8
    a = rng.integers(0, 1 << bits, shape).astype(dtype)
    plain = ctfp.decode_png(encode_png(a, bit_depth=bits))
    adam7 = ctfp.decode_png(encode_png(a, bit_depth=bits, interlace=True))
    np.testing.assert_array_equal(adam7, plain)


def test_interlaced_pillow_saved_rgb(rng):
    a = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    data = encode_png(a, interlace=True)
    np.testing.assert_array_equal(ctfp.decode_png(data), pil_grey(data))


# --------------------------------------------------------------------------------------------------
# caps: refused from the header, before decoding


def _assert_cap_error(exc: BaseException, w: int, h: int) -> None:
    msg = str(exc)
    assert f"{w}x{h}" in msg, msg
    assert "cap" in msg, msg
    assert "corrupt" not in msg and "truncated" not in msg, msg


@pytest.mark.parametrize(
    "limits",
    [
        ctfp.DecodeLimits(max_width=39),
        ctfp.DecodeLimits(max_height=29),
        ctfp.DecodeLimits(max_pixels=40 * 30 - 1),
    ],
)
def test_caps_refuse_before_decoding(limits):
    data = fake_png(40, 30)  # the IDAT is garbage: any decode attempt would fail differently
    with pytest.raises(ctfp.ImageDecodeError) as ei:
        ctfp.decode_png(data, limits=limits)
    _assert_cap_error(ei.value, 40, 30)
    # exactly at the cap: passes the cap check, then fails on the garbage IDAT
    at = ctfp.DecodeLimits(max_width=40, max_height=30, max_pixels=1200)
    with pytest.raises(ctfp.ImageDecodeError) as ei:
        ctfp.decode_png(data, limits=at)
    assert "cap" not in str(ei.value)


def test_default_caps_refuse_huge_header(tmp_path):
    for w, h in [(100_000, 10), (10, 100_000), (16_000, 16_000), (2**31 - 1, 2**31 - 1)]:
        p = tmp_path / f"huge_{w}_{h}.png"
        p.write_bytes(fake_png(w, h, color_type=2, bit_depth=16))
        with pytest.raises(ctfp.ImageDecodeError) as ei:
            ctfp.decode_png(p)
        _assert_cap_error(ei.value, w, h)
        assert str(p) in str(ei.value)


def test_caps_in_load_batch(tmp_path, good_png_bytes):
    p = tmp_path / "huge.png"
    p.write_bytes(fake_png(5000, 5000))
    with pytest.raises(ctfp.ImageDecodeError) as ei:
        ctfp.load_batch(
            [good_png_bytes, p], size=8, limits=ctfp.DecodeLimits(max_pixels=4000 * 4000)
        )
    assert "image 1" in str(ei.value)
    _assert_cap_error(ei.value, 5000, 5000)


def test_caps_allow_exact_size(good_png_bytes):
    # good_png_bytes is 50 wide, 40 high
    lim = ctfp.DecodeLimits(max_width=50, max_height=40, max_pixels=2000)
    assert ctfp.decode_png(good_png_bytes, limits=lim).shape == (40, 50)


# --------------------------------------------------------------------------------------------------
# bad inputs


def test_missing_file_is_file_not_found(tmp_path):
    p = tmp_path / "nope" / "missing.png"
    with pytest.raises(FileNotFoundError) as ei:
        ctfp.decode_png(p)
    assert str(p) in str(ei.value)
    assert not isinstance(ei.value, ctfp.ImageDecodeError)


@pytest.mark.parametrize("kind", ["empty", "gif", "truncated", "bad_crc", "bad_zlib"])
def test_bad_file_raises_image_decode_error(bad_files, kind):
    p = bad_files[kind]
    with pytest.raises(ctfp.ImageDecodeError) as ei:
        ctfp.decode_png(p)
    e = ei.value
    assert isinstance(e, ValueError)
    assert isinstance(e, ctfp.CtfpError)
    assert str(p) in str(e), str(e)
    if kind == "gif":
        assert "GIF89a" in str(e)
    if kind == "empty":
        assert "empty" in str(e)
    # the same bytes in memory fail the same way
    with pytest.raises(ctfp.ImageDecodeError):
        ctfp.decode_png(p.read_bytes())


def test_pillow_agrees_the_bad_files_are_bad(bad_files):
    for p in bad_files.values():
        with pytest.raises(Exception):  # noqa: B017 - Pillow raises various types
            with Image.open(p) as im:
                im.load()


@pytest.mark.parametrize("cut", [1, 7, 8, 20, 33, -13, -20])
def test_truncated_anywhere_is_decode_error(good_png_bytes, cut):
    with pytest.raises(ctfp.ImageDecodeError):
        ctfp.decode_png(good_png_bytes[:cut])


def test_corrupt_idat_crc(good_png_bytes):
    data = bytearray(good_png_bytes)
    idat = data.index(b"IDAT")
    n = int.from_bytes(data[idat - 4 : idat], "big")
    data[idat + 4 + n] ^= 0xFF  # the IDAT CRC
    with pytest.raises(ctfp.ImageDecodeError):
        ctfp.decode_png(bytes(data))


def test_no_panic_on_random_garbage_after_signature(rng):
    for _ in range(30):
        n = int(rng.integers(0, 200))
        data = b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        with pytest.raises(ctfp.ImageDecodeError):
            ctfp.decode_png(data)


def test_decode_rejects_wrong_types():
    with pytest.raises(TypeError):
        ctfp.decode_png(12)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ctfp.decode_png(b"", limits=(1, 2, 3))  # type: ignore[arg-type]


def test_rgb_to_grey_is_pillows_luma_and_the_decoders():
    """One grey rule: ``_core.rgb_to_grey`` equals Pillow's convert("L") and decoding an RGB PNG."""
    import io

    from PIL import Image

    rgb = np.random.default_rng(5).integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    grey = ctfp._core.rgb_to_grey(rgb)
    assert grey.shape == (2, 9, 11) and grey.dtype == np.uint8
    for k in range(2):
        np.testing.assert_array_equal(grey[k], np.asarray(Image.fromarray(rgb[k]).convert("L")))
        buf = io.BytesIO()
        Image.fromarray(rgb[k]).save(buf, format="PNG")
        np.testing.assert_array_equal(grey[k], ctfp.decode_png(buf.getvalue()))
    with pytest.raises(ValueError, match=r"last axis has 3 channels"):
        ctfp._core.rgb_to_grey(rgb[..., :2].copy())
    with pytest.raises(ValueError, match="C-contiguous"):
        ctfp._core.rgb_to_grey(rgb[:, ::2])
