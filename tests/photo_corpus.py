"""A corpus of odd, broken and hostile image files, generated on the fly (nothing is stored in the repository).

``corpus()`` returns one :class:`Sample` per kind: the bytes, the file name a user
might upload them under (sometimes with the wrong extension), and what must happen:
accepted (and the picture that must come out) or refused (and words the refusal
must contain). tests/test_photo_corpus.py runs every sample through
``inversion.read_photo`` and through the app's upload handler.

Most accepted samples show the same 64x48 picture, four flat quadrants
(``QUADRANTS``), so a test can tell a correct decode from a rotated, mirrored,
wrong-frame or wrong-layer one. Formats Pillow cannot write (layered PSD, 16-bit
RGB PNG and TIFF, DDS with unimplemented pixel formats, huge headers) are written
here by hand with ``struct``; each writer is a few lines and says which spec it follows.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from typing import Callable

import numpy as np
from PIL import Image

W, H = 64, 48
# top-left, top-right, bottom-left, bottom-right
QUADRANTS = ((230, 30, 30), (30, 200, 40), (30, 40, 220), (240, 220, 40))
WHITE = (255, 255, 255)


@dataclasses.dataclass
class Sample:
    """One corpus file.

    kind     : a short unique name.
    filename : the name it is uploaded under (the extension may lie).
    data     : the file's bytes.
    accept   : True if read_photo must return a picture, False if it must refuse.
    check    : for accepted samples, ``check(rgb_array)`` asserts the picture is right.
    words    : for refused samples, a regular expression the message must match (case-insensitive).
    """

    kind: str
    filename: str
    data: bytes
    accept: bool
    check: Callable[[np.ndarray], None] | None = None
    words: str | None = None


# --------------------------------------------------------------------------- pictures and checks


def quadrant_array(w=W, h=H, colors=QUADRANTS) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2], a[: h // 2, w // 2:] = colors[0], colors[1]
    a[h // 2:, : w // 2], a[h // 2:, w // 2:] = colors[2], colors[3]
    return a


def quadrants(**kw) -> Image.Image:
    return Image.fromarray(quadrant_array(**kw))


def inverted_quadrants() -> Image.Image:
    """A different picture, for the frames and layers that must NOT be taken."""
    return Image.fromarray(255 - quadrant_array())


def expect_quadrants(tol=12, colors=QUADRANTS, size=(W, H)):
    """A check: the picture is ``size`` and each quadrant's inner part has its colour (within ``tol`` levels)."""

    def check(rgb: np.ndarray):
        assert (rgb.shape[1], rgb.shape[0]) == size, f"size {rgb.shape[1]}x{rgb.shape[0]}, expected {size}"
        h, w = rgb.shape[:2]
        boxes = [(slice(2, h // 2 - 2), slice(2, w // 2 - 2)), (slice(2, h // 2 - 2), slice(w // 2 + 2, w - 2)),
                 (slice(h // 2 + 2, h - 2), slice(2, w // 2 - 2)), (slice(h // 2 + 2, h - 2), slice(w // 2 + 2, w - 2))]
        for name, box, color in zip(("top-left", "top-right", "bottom-left", "bottom-right"), boxes, colors):
            mean = rgb[box].reshape(-1, 3).mean(0)
            assert np.abs(mean - color).max() <= tol, f"{name} quadrant is {mean.round()}, expected {color}"

    return check


def expect_gray_ramp(size=(W, H), tol=2):
    """A check: grey, left-to-right from black to white (a ramp stored at high bit depth)."""

    def check(rgb: np.ndarray):
        assert (rgb.shape[1], rgb.shape[0]) == size
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        row = rgb[0, :, 0].astype(int)
        expected = np.rint(np.linspace(0, 255, size[0])).astype(int)
        assert np.abs(row - expected).max() <= tol, f"ramp {row[:4]}..{row[-4:]}"

    return check


def ramp16(w=W, h=H) -> np.ndarray:
    return np.tile(np.rint(np.linspace(0, 65535, w)).astype(np.uint16), (h, 1))


# --------------------------------------------------------------------------- encoders


def save(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_raw(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None = None,
            idat: bytes | None = None) -> bytes:
    """A PNG written by hand (PNG spec 11.2): IHDR, one IDAT (filter byte 0 per row), IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(rows)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_rgb16(a16: np.ndarray) -> bytes:
    """16-bit RGB PNG (colour type 2, bit depth 16; samples big-endian)."""
    h, w, _ = a16.shape
    rows = b"".join(b"\0" + a16[y].astype(">u2").tobytes() for y in range(h))
    return png_raw(w, h, 16, 2, rows)


def tiff_rgb16(a16: np.ndarray) -> bytes:
    """A baseline little-endian TIFF (TIFF 6.0, section 2 and 8), uncompressed 16-bit RGB, one strip."""
    h, w, _ = a16.shape
    pixels = a16.astype("<u2").tobytes()
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2),
        (273, 4, 1, None), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1),
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bits_offset = ifd_offset + ifd_size
    data_offset = bits_offset + 6
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            ifd += struct.pack("<HHII", tag, typ, count, bits_offset)
        elif tag == 273:
            ifd += struct.pack("<HHII", tag, typ, count, data_offset)
        elif typ == 3:
            ifd += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, typ, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_offset) + ifd + struct.pack("<3H", 16, 16, 16) + pixels


def tiff_header_only(width: int, height: int) -> bytes:
    """A TIFF whose header claims ``width`` x ``height`` 8-bit grey pixels but holds 16 bytes of them."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHIHH", tag, typ, count, value, 0) if typ == 3 else struct.pack("<HHII", tag, typ, count, value)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\0" * 16


def psd(composite: Image.Image, layers: list[Image.Image] = (), size: tuple[int, int] | None = None) -> bytes:
    """A Photoshop file (Adobe's "Photoshop File Formats Specification"), RGB, 8 bits, uncompressed.

    header (26 bytes) | colour mode data (empty) | image resources (empty) |
    layer and mask information: layer info = count + one record per layer + each layer's
    channel data (compression 0 + raw plane per channel), then an empty global mask |
    the composite image: compression 0 + planar R, G, B.
    ``size`` overrides the size in the header (for huge-header samples; 16 bytes of pixels follow then).
    """
    w, h = size or composite.size
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
    records, channel_data = b"", b""
    for layer in layers:
        lw, lh = layer.size
        planes = [np.asarray(layer.convert("RGB"))[..., c].tobytes() for c in range(3)]
        records += struct.pack(">iiiiH", 0, 0, lh, lw, 3)
        for c in range(3):
            records += struct.pack(">hI", c, 2 + len(planes[c]))
        name = b"layer"
        pascal = bytes([len(name)]) + name
        pascal += b"\0" * (-len(pascal) % 4)
        extra = struct.pack(">II", 0, 0) + pascal            # no layer mask, no blending ranges, the name
        records += b"8BIMnorm" + struct.pack(">BBBxI", 255, 0, 0, len(extra)) + extra
        for c in range(3):
            channel_data += struct.pack(">H", 0) + planes[c]
    layer_info = struct.pack(">h", len(layers)) + records + channel_data if layers else b""
    layer_info += b"\0" * (len(layer_info) % 2)
    layer_section = (struct.pack(">I", len(layer_info)) + layer_info if layers else struct.pack(">I", 0)) \
        + struct.pack(">I", 0)
    composite_data = struct.pack(">H", 0) + (b"\0" * 16 if size else b"".join(
        np.asarray(composite.convert("RGB"))[..., c].tobytes() for c in range(3)))
    return header + struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", len(layer_section)) \
        + layer_section + composite_data


def dds_header(width: int, height: int, pf_flags: int, fourcc: bytes = b"\0\0\0\0", bitcount: int = 0,
               dxgi: int | None = None) -> bytes:
    """A DirectDraw Surface header (Microsoft's DDS_HEADER, 124 bytes, + DDS_HEADER_DXT10 when ``dxgi``)."""
    flags = 0x1 | 0x2 | 0x4 | 0x1000                          # CAPS | HEIGHT | WIDTH | PIXELFORMAT
    head = b"DDS " + struct.pack("<7I", 124, flags, height, width, 0, 0, 0) + b"\0" * 44
    head += struct.pack("<2I4s5I", 32, pf_flags, fourcc, bitcount, 0, 0, 0, 0)
    head += struct.pack("<5I", 0x1000, 0, 0, 0, 0)            # caps: TEXTURE
    if dxgi is not None:
        head += struct.pack("<5I", dxgi, 3, 0, 1, 0)          # format, TEXTURE2D, flags, array size, flags2
    return head


DDPF_FOURCC, DDPF_RGB = 0x4, 0x40


def gif_header_only(width: int, height: int) -> bytes:
    """A GIF89a whose logical screen and image claim ``width`` x ``height``, with a one-byte image."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;")


def jpeg_header_only(width: int, height: int) -> bytes:
    """A JPEG: SOI, a baseline SOF0 claiming ``width`` x ``height`` (3 components), SOS, 16 bytes, EOI."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    sos = struct.pack(">B", 3) + b"\x01\x00\x02\x11\x03\x11" + b"\x00\x3f\x00"
    return (b"\xff\xd8\xff\xc0" + struct.pack(">H", 2 + len(sof)) + sof
            + b"\xff\xda" + struct.pack(">H", 2 + len(sos)) + sos + b"\0" * 16 + b"\xff\xd9")


def bmp_header_only(width: int, height: int) -> bytes:
    """A BMP (BITMAPINFOHEADER, 24 bits) claiming ``width`` x ``height``, with 64 bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\0" * 64


def png_bomb(width: int, height: int) -> bytes:
    """A real decompression bomb: a valid grey PNG of ``width`` x ``height`` zeros (a few dozen kB)."""
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return png_raw(width, height, 8, 0, idat=idat)


def with_exif_orientation(orientation: int) -> bytes:
    """A JPEG stored so that applying EXIF ``orientation`` shows the quadrant picture upright."""
    # How the stored pixels must be transformed to look right (EXIF 2.3, tag 0x0112); store the inverse.
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
    img = quadrants()
    stored = img if inverse[orientation] is None else img.transpose(inverse[orientation])
    exif = stored.getexif()
    exif[0x0112] = orientation
    return save(stored, "JPEG", quality=95, exif=exif.tobytes())


def multi_frame(fmt: str, **params) -> bytes:
    """Two frames: the quadrant picture first, then a different one that must not be shown."""
    first, second = quadrants(), inverted_quadrants()
    if fmt == "GIF":
        first, second = first.quantize(8), second.quantize(8)
    return save(first, fmt, save_all=True, append_images=[second], **params)


# --------------------------------------------------------------------------- the corpus


def corpus() -> list[Sample]:
    """Every kind, in a fixed order (a few hundred kB in all; builds in well under a second)."""
    q = quadrants()
    ok = expect_quadrants()
    lossy = expect_quadrants(tol=40)
    s: list[Sample] = []

    def accept(kind, filename, data, check=ok):
        s.append(Sample(kind, filename, data, True, check=check))

    def refuse(kind, filename, data, words):
        s.append(Sample(kind, filename, data, False, words=words))

    # Everyday formats.
    accept("png_rgb", "photo.png", save(q, "PNG"))
    accept("jpeg_baseline", "photo.jpg", save(q, "JPEG", quality=95), lossy)
    accept("jpeg_progressive", "photo.jpeg", save(q, "JPEG", quality=95, progressive=True), lossy)
    accept("jpeg_grayscale", "grey.jpg", save(q.convert("L"), "JPEG", quality=95),
           expect_quadrants(tol=40, colors=[(c,) * 3 for c in np.asarray(q.convert("L"))[[10, 10, 40, 40], [10, 50, 10, 50]]]))
    accept("webp_lossless", "photo.webp", save(q, "WEBP", lossless=True))
    accept("bmp", "photo.bmp", save(q, "BMP"))
    accept("tga", "photo.tga", save(q, "TGA"))
    accept("ppm", "photo.ppm", save(q, "PPM"))
    accept("spider", "photo.spi", save(q.convert("L").convert("F"), "SPIDER"),
           expect_quadrants(tol=2, colors=[(c,) * 3 for c in np.asarray(q.convert("L"))[[10, 10, 40, 40], [10, 50, 10, 50]]]))
    bilevel = Image.fromarray((quadrant_array()[..., 1] > 100).astype(np.uint8) * 255).convert("1")
    accept("png_1bit", "bilevel.png", save(bilevel, "PNG"),
           expect_quadrants(tol=0, colors=[(0, 0, 0), WHITE, (0, 0, 0), WHITE]))

    # Transparency: flattened onto white.
    rgba = q.convert("RGBA")
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, W // 2:] = 0
    rgba.putalpha(Image.fromarray(alpha))
    flat = expect_quadrants(tol=0, colors=(QUADRANTS[0], WHITE, QUADRANTS[2], WHITE))
    accept("png_rgba_transparent", "cutout.png", save(rgba, "PNG"), flat)
    accept("png_la_transparent", "cutout-grey.png", save(rgba.convert("LA"), "PNG"),
           expect_quadrants(tol=1, colors=[(c,) * 3 for c in (np.asarray(q.convert("L"))[10, 10], 255,
                                                                    np.asarray(q.convert("L"))[40, 10], 255)]))
    pal = q.quantize(colors=4)
    pal.info["transparency"] = int(np.asarray(pal)[5, 50])     # the top-right colour's index is transparent
    accept("png_palette_transparency", "palette.png", save(pal, "PNG", transparency=pal.info["transparency"]),
           expect_quadrants(tol=0, colors=(QUADRANTS[0], WHITE, QUADRANTS[2], QUADRANTS[3])))
    accept("gif_transparency", "palette.gif", save(pal, "GIF", transparency=pal.info["transparency"]),
           expect_quadrants(tol=0, colors=(QUADRANTS[0], WHITE, QUADRANTS[2], QUADRANTS[3])))

    # High bit depth, float, CMYK.
    ramp = ramp16()
    accept("png_16bit_gray", "deep-grey.png", save(Image.fromarray(ramp), "PNG"), expect_gray_ramp())
    accept("png_16bit_rgb", "deep.png", png_rgb16(quadrant_array().astype(np.uint16) * 257), ok)
    accept("tiff_16bit_rgb", "deep.tif", tiff_rgb16(quadrant_array().astype(np.uint16) * 257), ok)
    accept("tiff_float32", "float.tif", save(Image.fromarray(ramp.astype(np.float32) / 65535), "TIFF"),
           expect_gray_ramp())
    accept("tiff_int32", "int32.tif", save(Image.fromarray(ramp.astype(np.int32)), "TIFF"), expect_gray_ramp())
    accept("tiff_cmyk", "print.tif", save(q.convert("CMYK"), "TIFF"), expect_quadrants(tol=30))
    accept("jpeg_cmyk", "print.jpg", save(q.convert("CMYK"), "JPEG", quality=95), expect_quadrants(tol=45))

    # Several frames, pages or layers: the first frame, or the composite the format defines.
    accept("gif_animated", "animated.gif", multi_frame("GIF", duration=100, loop=0), expect_quadrants(tol=20))
    accept("png_animated", "animated.png", multi_frame("PNG", duration=100), ok)
    accept("webp_animated", "animated.webp", multi_frame("WEBP", lossless=True, duration=100), ok)
    accept("tiff_multipage", "pages.tif", multi_frame("TIFF"), ok)
    accept("psd_layered", "layers.psd", psd(q, layers=[inverted_quadrants(), inverted_quadrants()]), ok)
    accept("psd_flat", "flat.psd", psd(q), ok)

    # DDS textures that Pillow reads.
    accept("dds_rgb", "texture.dds", save(q, "DDS"), ok)
    accept("dds_rgba", "texture-alpha.dds", save(q.convert("RGBA"), "DDS"), ok)
    accept("dds_dxt1", "texture-dxt1.dds", save(q.convert("RGBA"), "DDS", pixel_format="DXT1"), lossy)
    accept("dds_dxt5", "texture-dxt5.dds", save(q.convert("RGBA"), "DDS", pixel_format="DXT5"), lossy)

    # The extension lies, or is missing: the content decides.
    accept("png_named_jpg", "really-a-png.jpg", save(q, "PNG"))
    accept("jpeg_named_png", "really-a-jpeg.png", save(q, "JPEG", quality=95), lossy)
    accept("webp_no_extension", "photo", save(q, "WEBP", lossless=True))

    # Every EXIF orientation.
    for o in range(1, 9):
        accept(f"jpeg_exif_orientation_{o}", f"rotated-{o}.jpg", with_exif_orientation(o), lossy)

    # Not images at all.
    refuse("zero_bytes", "empty.jpg", b"", r"empty \(0 bytes\)")
    refuse("text_as_png", "notes.png", b"These are my holiday notes, not a picture.\n" * 20, r"file is text")
    refuse("html_as_jpg", "page.jpg", b"<!DOCTYPE html><html><body>Hello</body></html>", r"web page")
    refuse("svg", "drawing.svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" '
                                 b'height="48"><rect width="64" height="48" fill="red"/></svg>', r"SVG")
    refuse("pdf", "scan.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", r"PDF")
    refuse("zip_as_png", "archive.png", _zip_bytes(), r"ZIP")
    refuse("random_bytes", "noise.jpg", np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(),
           r"not an image")
    refuse("eps", "figure.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\nshowpage\n", r"PostScript")
    refuse("too_small", "icon.png", save(Image.new("RGB", (8, 8)), "PNG"), r"at least 16x16")

    # Truncated or damaged.
    png = save(Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3), np.uint8)), "PNG")
    jpg = save(Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3), np.uint8)), "JPEG")
    refuse("truncated_png", "cut.png", png[: len(png) // 2], r"truncated or damaged")
    refuse("truncated_jpeg", "cut.jpg", jpg[: len(jpg) // 2], r"truncated or damaged")
    refuse("truncated_gif", "cut.gif", multi_frame("GIF")[:40], r"truncated or damaged|cannot be read|could not be decoded")
    refuse("truncated_dds", "cut.dds", save(q, "DDS")[:100], r"truncated or damaged|cannot be read|could not be decoded")
    refuse("truncated_psd", "cut.psd", psd(q, layers=[inverted_quadrants()])[:-3000],
           r"truncated or damaged|could not be decoded")
    corrupt = bytearray(png_raw(W, H, 8, 2, idat=zlib.compress(quadrant_array().tobytes())[:-40] + b"\x00" * 40))
    refuse("png_corrupt_idat", "corrupt.png", bytes(corrupt), r"truncated or damaged|could not be decoded")

    # DDS pixel formats Pillow has no decoder for (it raises NotImplementedError).
    refuse("dds_unknown_fourcc", "texture-abcd.dds", dds_header(W, H, DDPF_FOURCC, b"ABCD") + b"\0" * 4096,
           r"DDS file uses a variant")
    refuse("dds_dx10_float16", "texture-hdr.dds",
           dds_header(W, H, DDPF_FOURCC, b"DX10", dxgi=10) + b"\0" * (W * H * 8), r"DDS file uses a variant")
    refuse("dds_unknown_flags", "texture-yuv.dds", dds_header(W, H, 0x200) + b"\0" * 4096,
           r"DDS file uses a variant")

    # Huge dimensions in a tiny file: refused from the header, before any pixel is decoded.
    big = r"limit is 40 MP|too large"
    refuse("png_bomb_42mp", "bomb.png", png_bomb(7000, 6000), big)
    refuse("png_huge_header", "huge.png", png_raw(50000, 50000, 8, 2, idat=zlib.compress(b"\0" * 100)), big)
    refuse("gif_huge_header", "huge.gif", gif_header_only(65535, 65535), big)
    refuse("jpeg_huge_header", "huge.jpg", jpeg_header_only(65500, 65500), big)
    refuse("bmp_huge_header", "huge.bmp", bmp_header_only(60000, 60000), big)
    refuse("tiff_huge_header", "huge.tif", tiff_header_only(100000, 100000), big)
    refuse("psd_huge_header", "huge.psd", psd(q, size=(30000, 30000)), big)
    refuse("dds_huge_header", "huge.dds", dds_header(60000, 60000, DDPF_FOURCC, b"DXT1") + b"\0" * 64, big)
    return s


def _zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.png", save(quadrants(), "PNG"))
    return buf.getvalue()


# Library internals that must never reach a user (and one piece of advice that must never be given).
FORBIDDEN = ("decoder error", "seek", "ghostscript", "traceback", "errno", "pil.", "pillow", "cannot identify",
             "notimplemented", "dxgi", "fourcc", "struct.", "unpack", "exception", "error:", "bytesio",
             "weights_only", "enforce fail", "could this error message be improved", "/tmp/", "\\")

# Every refusal says what to do about it.
ADVICE = ("upload", "save it", "export", "choose", "re-save", "use a", "pick", "try")


def plain_sentence_problems(message: str) -> list[str]:
    """What is wrong with a refusal message as a user would read it (empty: nothing)."""
    problems = []
    low = message.lower()
    for word in FORBIDDEN:
        if word in low:
            problems.append(f"contains library text {word!r}")
    if not message[:1].isupper():
        problems.append("does not start with a capital letter")
    if not message.rstrip().endswith((".", "!")):
        problems.append("does not end a sentence")
    if not any(a in low for a in ADVICE):
        problems.append("gives no advice on what to do")
    if "\n" in message or len(message) > 400:
        problems.append("is not one short paragraph")
    return problems
