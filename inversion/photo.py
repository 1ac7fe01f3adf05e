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
            raise PhotoError("The upload could not be read as binary data.")
        data = bytes(data)
    else:
        raise PhotoError(f"Cannot read a photo from a {type(source).__name__}: give a file path, bytes, "
                         "a PIL image or a NumPy array.")
    return _from_bytes(data, max_pixels)


# --------------------------------------------------------------------------- sources


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise PhotoError(f"The photo {path} does not exist.")
    if path.is_dir():
        raise PhotoError(f"{path} is a folder, not a photo.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PhotoError(f"The photo {path.name} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB.")
    try:
        return path.read_bytes()
    except OSError as e:
        raise PhotoError(f"The photo {path.name} could not be read ({e.strerror or e}).") from None


def _from_bytes(data: bytes, max_pixels: int) -> Photo:
    if not data:
        raise PhotoError("The photo is empty (0 bytes).")
    if len(data) > MAX_FILE_BYTES:
        raise PhotoError(f"The photo is {len(data) / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB.")
    try:
        with warnings.catch_warnings():
            # PIL warns (then errors) on huge images against its own global limit; we apply ours below,
            # so treat its warning as a refusal rather than loading a possible bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_size(img.size, max_pixels)  # Header only: nothing decoded yet.
            img.seek(0)  # First frame of animations / multi-page files.
            img.load()
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError("The image is too large to decode safely (it looks like a decompression bomb).") from None
    except UnidentifiedImageError:
        raise PhotoError("This file is not an image that can be read (unknown or unsupported format).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e)
        if "truncated" in msg or "broken data stream" in msg or isinstance(e, EOFError):
            raise PhotoError("The image file is truncated or damaged; please upload it again.") from None
        raise PhotoError(f"The image could not be decoded ({msg or type(e).__name__}).") from None
    return _normalize(img, source_mode=img.mode)


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
                         "Please upload a smaller photo.")
    if min(w, h) < MIN_SIDE:
        raise PhotoError(f"The image is only {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed.")


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
            raise PhotoError("This Lab-colour image could not be converted to RGB.") from None
    try:
        return img.convert("RGB")
    except (ValueError, OSError):
        raise PhotoError(f"Unsupported image mode {mode!r}.") from None


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
