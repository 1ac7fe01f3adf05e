"""Reading user photos safely: one 8-bit RGB ``PIL.Image`` out, or a :class:`PhotoError`.

Anything may arrive from an upload box: a path, raw bytes, a PIL image or a NumPy
array, in any mode PIL knows, rotated by an EXIF tag, with transparency, truncated,
or a tiny file that decompresses into gigapixels. This module turns all of that into
either an upright RGB image or one readable sentence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PhotoError

DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: every camera photo, but not a decompression bomb.
MAX_FILE_BYTES = 200 * 1024 * 1024
MIN_SIDE = 16  # Smaller images hold no face worth inverting.
BACKGROUND = (255, 255, 255)  # Transparent pixels are flattened onto white.

# Modes that carry transparency, converted to RGBA before flattening.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


@dataclasses.dataclass
class Photo:
    """A photo ready for alignment.

    image         : upright 8-bit RGB image.
    source_mode   : PIL mode (or array dtype/shape) it was decoded from.
    notices       : human sentences about conversions that changed what the user sees.
    """

    image: Image.Image
    source_mode: str
    notices: list[str] = dataclasses.field(default_factory=list)

    def sha256(self) -> str:
        """Hash of the decoded pixels: the same picture hashes the same whatever its container."""
        return pixel_hash(self.image)


def pixel_hash(image: Image.Image) -> str:
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def read_photo(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode ``source`` (path, bytes, ``PIL.Image`` or ``np.ndarray``) into an upright RGB :class:`Photo`.

    Raises :class:`PhotoError` for empty, missing, truncated, non-image, too large or
    unsupported inputs.
    """
    if isinstance(source, Photo):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels)
        return _normalize(source, source_mode=source.mode)
    if isinstance(source, (str, Path)):
        data = _read_file(Path(source))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):  # an open binary file or upload object
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise PhotoError("The upload could not be read as binary data. Choose the file again.")
        data = bytes(data)
    else:
        raise PhotoError(f"Cannot read a photo from a {type(source).__name__}: give a file path, bytes, "
                         "a PIL image or a NumPy array.")
    return _from_bytes(data, max_pixels)


# --------------------------------------------------------------------------- sources


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise PhotoError(f"The photo {path.name} does not exist. Choose the file again.")
    if path.is_dir():
        raise PhotoError(f"{path.name} is a folder, not a photo. Choose an image file inside it.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PhotoError(_too_many_bytes(size))
    try:
        return path.read_bytes()
    except OSError:
        raise PhotoError(f"The photo {path.name} could not be read from disk. Choose the file again.") from None


def _too_many_bytes(size: int) -> str:
    return (f"The file is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB. "
            "Upload a smaller photo, for example a JPEG.")


# Advice that ends most refusals: what the user can do about them.
RESAVE = "Save it as PNG or JPEG and upload that."

# Formats refused before any decoder sees them. PostScript (EPS) is a program that Pillow
# hands to Ghostscript, an external interpreter: never run it on an upload.
_REFUSED_MAGIC = {
    b"%!PS": "EPS/PostScript files are not accepted: they are programs, not pictures. "
             "Export the picture as PNG or JPEG and upload that.",
    b"\xc5\xd0\xd3\xc6": "EPS/PostScript files are not accepted: they are programs, not pictures. "
                         "Export the picture as PNG or JPEG and upload that.",
}


def _not_an_image(data: bytes) -> str:
    """A sentence for bytes no image decoder recognises, naming what they look like when that is clear."""
    head = data[:512].lstrip(b"\xef\xbb\xbf").lstrip()
    low = head.lower()
    if head.startswith(b"%PDF"):
        what = "a PDF document"
    elif low.startswith(b"<svg") or (low.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        what = "an SVG drawing"
    elif low.startswith((b"<!doctype html", b"<html")):
        what = "a web page (HTML)"
    elif head.startswith(b"PK\x03\x04"):
        what = "a ZIP archive"
    elif _looks_like_text(data[:4096]):
        what = "text"
    else:
        return ("This file is not an image that can be read (unknown or unsupported format). "
                "Upload a JPEG, PNG or WebP photo.")
    return f"This file is {what}, not a photo. Upload a JPEG, PNG or WebP photo."


def _looks_like_text(sample: bytes) -> bool:
    if not sample or b"\0" in sample:
        return False
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * len(text)


def _from_bytes(data: bytes, max_pixels: int) -> Photo:
    """Decode with Pillow, turning every way a hostile or odd file can fail into one plain sentence.

    No library text reaches the message: it names the problem and what to do.
    """
    if not data:
        raise PhotoError("The file is empty (0 bytes). Choose the photo again and upload it.")
    if len(data) > MAX_FILE_BYTES:
        raise PhotoError(_too_many_bytes(len(data)))
    for magic, message in _REFUSED_MAGIC.items():
        if data.startswith(magic):
            raise PhotoError(message)
    fmt = None
    try:
        with warnings.catch_warnings():
            # PIL warns (then errors) on huge images against its own global limit; we apply ours below,
            # so treat its warning as a refusal rather than loading a possible bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            _check_size(img.size, max_pixels)  # Header only: nothing decoded yet.
            # No seek: Image.open stands on the frame the format defines as the picture (the
            # first frame of a GIF or TIFF, the composite of a layered PSD, whose layers are
            # frames 1..n; seek(0) fails there, and on single images of some formats).
            img.load()
            _check_size(img.size, max_pixels)  # A few formats (ICO, ICNS) only know it after loading.
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError("The image is too large to decode safely (it looks like a decompression bomb). "
                         "Upload a smaller photo.") from None
    except UnidentifiedImageError:
        raise PhotoError(_not_an_image(data)) from None
    except MemoryError:
        raise PhotoError("The image is too large to decode with the memory this server has. "
                         "Upload a smaller photo.") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure (OSError, NotImplementedError, struct.error...)
        raise PhotoError(_decode_failure(e, fmt or _sniff_format(data))) from None
    try:
        return _normalize(img, source_mode=img.mode)
    except PhotoError:
        raise
    except MemoryError:
        raise PhotoError("The image is too large to convert with the memory this server has. "
                         "Upload a smaller photo.") from None
    except Exception:  # noqa: BLE001
        raise PhotoError(f"The colours of this {_format_name(fmt)}image could not be converted to RGB. "
                         f"{RESAVE}") from None


# Signatures of formats whose decoder may fail before Pillow names the format.
_MAGIC_NAMES = ((b"DDS ", "DDS"), (b"8BPS", "PSD"), (b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"),
                (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"BM", "BMP"), (b"RIFF", "WEBP"), (b"icns", "ICNS"),
                (b"\0\0\1\0", "ICO"))


def _sniff_format(data: bytes):
    return next((name for magic, name in _MAGIC_NAMES if data.startswith(magic)), None)


def _format_name(fmt) -> str:
    return f"{fmt} " if isinstance(fmt, str) and fmt.isascii() and fmt.replace("_", "").isalnum() else ""


def _decode_failure(e: Exception, fmt) -> str:
    """A plain sentence for a decoder error: truncated, or a variant of the format that cannot be read."""
    msg = str(e).lower()
    if isinstance(e, EOFError) or any(w in msg for w in ("truncated", "broken data stream", "premature end",
                                                          "image file is incomplete", "not enough data",
                                                          "incomplete")):
        return f"The {_format_name(fmt)}image file is truncated or damaged. Upload it again, or re-save it as PNG or JPEG."
    if isinstance(e, NotImplementedError) or any(w in msg for w in ("unsupported", "unimplemented", "unknown",
                                                                     "not supported", "cannot")):
        return (f"This {_format_name(fmt)}file uses a variant of its format (compression or pixel layout) "
                f"that cannot be read. {RESAVE}")
    return f"The {_format_name(fmt)}image could not be decoded: the file is damaged or uses an unsupported variant. {RESAVE}"


def _from_array(arr: np.ndarray, max_pixels: int) -> Photo:
    """Arrays: HxW, HxWxC or CxHxW with C in 1..4; uint8, uint16, bool or float ([0, 1] or [-1, 1])."""
    a = np.asarray(arr)
    desc = f"array {a.dtype}{list(a.shape)}"
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[2] not in (1, 2, 3, 4):
        a = a.transpose(1, 2, 0)  # CHW -> HWC
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise PhotoError(f"An image array must be HxW or HxWx(1-4); got shape {tuple(arr.shape)}.")
    if a.size == 0:
        raise PhotoError("The image array is empty.")
    _check_size((a.shape[1], a.shape[0]), max_pixels)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = _scale_to_uint8(a.astype(np.float32) / 257.0)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise PhotoError("The image array contains NaN or infinite values.")
        lo, hi = float(a.min()), float(a.max())
        if lo >= -1.0 and hi <= 1.0:
            a = (a + 1.0) * 127.5 if lo < 0 else a * 255.0  # [-1, 1] (generator range) or [0, 1]
        a = _scale_to_uint8(a)
    elif np.issubdtype(a.dtype, np.integer):
        a = _scale_to_uint8(a.astype(np.float32))
    else:
        raise PhotoError(f"Unsupported image array type {a.dtype}.")
    return _normalize(Image.fromarray(np.ascontiguousarray(a)), source_mode=desc)


def _check_size(size, max_pixels: int):
    w, h = size
    if w * h > max_pixels:
        raise PhotoError(f"The image is {w}x{h} pixels ({w * h / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP. "
                         "Upload a smaller photo, or scale it down first.")
    if min(w, h) < MIN_SIDE:
        raise PhotoError(f"The image is only {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed. "
                         "Upload a larger photo.")


# --------------------------------------------------------------------------- modes


def _scale_to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _normalize(img: Image.Image, source_mode: str) -> Photo:
    """EXIF orientation, then any mode -> 8-bit RGB."""
    notices = []
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:  # A broken EXIF block must not lose the picture.
        upright = img
    orientation = _exif_orientation(img)
    if orientation not in (None, 1):
        notices.append(f"Rotated the photo upright (EXIF orientation {orientation}).")
    rgb = _to_rgb(upright, notices)
    return Photo(image=rgb, source_mode=source_mode, notices=notices)


def _exif_orientation(img: Image.Image):
    try:
        return img.getexif().get(0x0112)
    except Exception:
        return None


def _to_rgb(img: Image.Image, notices: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return _apply_icc(img, notices)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        return _flatten(img, notices) if img.mode == "RGBA" else img
    if mode in _ALPHA_MODES:
        return _flatten(img.convert("RGBA"), notices)
    if mode in ("1", "L"):
        return img.convert("RGB")
    if mode == "CMYK":
        rgb = _apply_icc(img, notices, out_mode="RGB")
        return rgb if rgb.mode == "RGB" else img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_rgb(img)
    if mode in ("YCbCr", "HSV"):
        return img.convert("RGB")
    if mode == "LAB":
        try:
            from PIL import ImageCms
            return ImageCms.applyTransform(img, ImageCms.buildTransform(
                ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"))
        except Exception:
            raise PhotoError(f"This Lab-colour image could not be converted to RGB. {RESAVE}") from None
    try:
        return img.convert("RGB")
    except (ValueError, OSError):
        raise PhotoError(f"The colours of this image could not be converted to RGB. {RESAVE}") from None


def _flatten(rgba: Image.Image, notices: list[str]) -> Image.Image:
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() < 255:
        notices.append("Flattened transparent areas onto white.")
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float grayscale -> 8-bit RGB by range, not by truncation."""
    a = np.asarray(img).astype(np.float64)
    mode = img.mode
    if mode.startswith("I;16"):
        a = a / 257.0
    elif mode == "F":
        lo, hi = a.min(), a.max()
        if lo >= 0 and hi <= 1:
            a = a * 255.0
        elif not (lo >= 0 and hi <= 255):
            a = (a - lo) / max(hi - lo, 1e-12) * 255.0
    else:  # 'I' (32-bit int): PNG/TIFF 16-bit data often arrives here.
        lo, hi = a.min(), a.max()
        if lo >= 0 and hi > 255 and hi <= 65535:
            a = a / 257.0
        elif lo < 0 or hi > 65535:
            a = (a - lo) / max(hi - lo, 1e-12) * 255.0
    return Image.fromarray(_scale_to_uint8(a)).convert("RGB")


def _apply_icc(img: Image.Image, notices: list[str], out_mode: str = "RGB") -> Image.Image:
    """Convert an embedded colour profile (Adobe RGB, CMYK press profiles...) to sRGB when possible."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    try:
        from PIL import ImageCms
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").strip()
        if img.mode == "RGB" and "srgb" in desc.lower():
            return img
        out = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode=out_mode)
        notices.append(f"Converted colours from the embedded profile ({desc or 'unnamed'}) to sRGB.")
        return out
    except Exception:
        return img
