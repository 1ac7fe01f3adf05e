"""Reading photos: odd modes are converted correctly, bad files give a PhotoError with a clear sentence."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from inversion import PhotoError, read_photo


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _gradient_rgb(w=64, h=48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    a = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 80.0)], 2)
    return Image.fromarray(a.astype(np.uint8))


def test_rgb_png_roundtrip_and_path(tmp_path):
    img = _gradient_rgb()
    p = tmp_path / "a.png"
    img.save(p)
    for source in (p, str(p), p.read_bytes(), img, np.asarray(img)):
        photo = read_photo(source)
        assert photo.image.mode == "RGB"
        assert np.array_equal(np.asarray(photo.image), np.asarray(img))
    assert read_photo(p).sha256() == read_photo(np.asarray(img)).sha256()


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"this is certainly not an image file" * 10, "text, not a photo"),
    (bytes(range(256)) * 8, "not an image"),
])
def test_bad_bytes(data, words):
    with pytest.raises(PhotoError, match=words):
        read_photo(data)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(PhotoError, match="does not exist"):
        read_photo(tmp_path / "nope.jpg")
    with pytest.raises(PhotoError, match="folder"):
        read_photo(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(fmt):
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, fmt)
    data = buf.getvalue()
    with pytest.raises(PhotoError, match="truncated|damaged|decoded"):
        read_photo(data[: len(data) // 2])


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def test_decompression_bomb_header_refused_before_decoding():
    # A 50000x50000 PNG header with a tiny payload: refused from the header, never decoded.
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) \
        + _png_chunk(b"IEND", b"")
    with pytest.raises(PhotoError, match="too large|limit"):
        read_photo(bomb)


def test_pixel_limit_is_a_parameter():
    data = _png_bytes(_gradient_rgb(64, 64))
    with pytest.raises(PhotoError, match="limit"):
        read_photo(data, max_pixels=1000)
    assert read_photo(data, max_pixels=64 * 64).image.size == (64, 64)


def test_too_small():
    with pytest.raises(PhotoError, match="at least"):
        read_photo(Image.new("RGB", (8, 8)))


def test_cmyk_jpeg_converted():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red ink-wise
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=95)
    rgb = np.asarray(read_photo(buf.getvalue()).image).astype(int)
    assert np.abs(rgb.mean((0, 1)) - [255, 0, 0]).max() < 12


def test_16bit_grayscale_scaled_not_truncated():
    a = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    img = Image.fromarray(a)
    assert img.mode.startswith("I;16")
    out = np.asarray(read_photo(_png_bytes(img)).image).astype(int)
    expected = np.rint(a / 257.0).astype(int)
    assert np.abs(out[..., 0] - expected).max() <= 1
    assert np.array_equal(out[..., 0], out[..., 2])  # grey stays grey
    assert out.max() == 255 and out.min() == 0  # full range, not saturated or crushed


def test_la_flattened_on_white():
    a = np.zeros((32, 32, 2), np.uint8)
    a[..., 0] = 100
    a[:, :16, 1] = 255  # left half opaque grey, right half transparent
    photo = read_photo(_png_bytes(Image.fromarray(a)))
    out = np.asarray(photo.image)
    assert np.all(out[:, :16] == 100)
    assert np.all(out[:, 16:] == 255)
    assert any("transparent" in n for n in photo.notices)


def test_palette_with_transparency():
    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    p.paste(1, (0, 0, 16, 32))
    p.info["transparency"] = 0  # index 0 (blue) is transparent
    out = np.asarray(read_photo(_png_bytes(p)).image)
    assert np.all(out[:, :16] == [255, 0, 0])
    assert np.all(out[:, 16:] == 255)


def test_exif_orientation_applied():
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = [255, 0, 0]
    a[:, 20:] = [0, 0, 255]
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    photo = read_photo(buf.getvalue())
    out = np.asarray(photo.image).astype(int)
    assert photo.image.size == (20, 40)
    assert out[:15, :, 0].mean() > 200 and out[:15, :, 2].mean() < 50   # red (stored left) now on top
    assert out[-15:, :, 2].mean() > 200 and out[-15:, :, 0].mean() < 50  # blue at the bottom
    assert any("EXIF" in n for n in photo.notices)


def test_arrays_of_other_types():
    g = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = np.asarray(read_photo(g).image)
    assert out.shape == (32, 32, 3) and out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    chw = np.stack([g * 2 - 1] * 3)  # generator-style [-1, 1], channels first
    assert np.abs(np.asarray(read_photo(chw).image).astype(int) - out.astype(int)).max() <= 1
    u16 = (g * 65535).astype(np.uint16)
    assert np.abs(np.asarray(read_photo(u16).image).astype(int) - out.astype(int)).max() <= 1
    with pytest.raises(PhotoError, match="NaN"):
        read_photo(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(PhotoError, match="HxW"):
        read_photo(np.zeros((4, 32, 32, 3), np.uint8))


def test_unsupported_type():
    with pytest.raises(PhotoError, match="Cannot read a photo"):
        read_photo(12345)
