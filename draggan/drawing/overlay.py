"""Drawing an editing view: an image shown at display size, the mask, and handle -> target arrows.

Pure numpy + OpenCV + Pillow, shared by the web app, the CLI's videos and figures.

Coordinates: points are pixels (x, y) of the image being edited (the generator's
``R x R`` square, as in ``draggan.engine.points``, or a photo), pixel-centre based:
pixel ``(x, y)`` covers ``[x - 0.5, x + 0.5] x [y - 0.5, y + 0.5]``, as in OpenCV's
warps. A view maps them to its own pixels by a 2x3 affine ``transform`` (the same
convention at both ends). The plain case is an integer upscale (:func:`scale_transform`):
generator pixel ``(x, y)`` covers view pixels ``[x*scale, (x+1)*scale)`` and a click
on view pixel ``(u, v)`` belongs to generator pixel ``(u // scale, v // scale)``
(see :func:`view_to_pixel`).

Colours follow the DragGAN paper: handles red, targets blue.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HANDLE_COLOR = (230, 40, 40)     # red
TARGET_COLOR = (40, 90, 230)     # blue
ARROW_COLOR = (255, 255, 255)
OUTLINE_COLOR = (0, 0, 0)
MASK_COLOR = (255, 204, 0)       # the colour the mask is painted with
FIXED_DIM = 0.45                 # how much the fixed (unmasked) region is darkened in a view
DEFAULT_VIEW_SIZE = 512          # a view is at least about this many pixels wide


def view_scale(resolution: int, view_size: int = DEFAULT_VIEW_SIZE) -> int:
    """Integer upscale factor that brings an ``resolution`` px image to about ``view_size`` px (at least 1)."""
    return max(1, int(round(view_size / int(resolution))))


def scale_transform(scale: float) -> np.ndarray:
    """The 2x3 transform of an upscale by ``scale``: pixel centres to view pixel centres."""
    return np.array([[scale, 0.0, (scale - 1) / 2], [0.0, scale, (scale - 1) / 2]])


def apply_transform(matrix: np.ndarray, points) -> np.ndarray:
    """[N, 2] points through a 2x3 affine (float64)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    m = np.asarray(matrix, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def view_to_pixel(u: float, v: float, scale: int, resolution: int) -> tuple[int, int] | None:
    """View pixel (u, v) -> generator pixel (x, y), or None when the click is outside the image."""
    if not (math.isfinite(u) and math.isfinite(v)):
        return None
    x, y = int(u // scale), int(v // scale)
    if not (0 <= x < resolution and 0 <= y < resolution):
        return None
    return x, y


def upscale(image: np.ndarray, scale: int, smooth: bool = False) -> np.ndarray:
    """HxWx3 uint8 upscaled by an integer factor: nearest (crisp pixels) or Lanczos (smooth)."""
    image = np.asarray(image, dtype=np.uint8)
    if scale == 1:
        return image.copy()
    if not smooth:
        return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * scale, h * scale), Image.LANCZOS))


def _drawing_xy(transform: np.ndarray, points) -> np.ndarray:
    """Points -> PIL's drawing coordinates (pixel edges: a pixel's centre is at +0.5)."""
    return apply_transform(transform, points) + 0.5


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single bitmap size
        return ImageFont.load_default()


def _dot(draw: ImageDraw.ImageDraw, xy, radius: float, fill) -> None:
    x, y = xy
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=OUTLINE_COLOR,
                 width=max(1, round(radius / 4)))


def _arrow(draw: ImageDraw.ImageDraw, start, end, width: int, head: float) -> None:
    """A line with a filled head ending at ``end``, drawn white over a thin dark outline."""
    (x0, y0), (x1, y1) = start, end
    length = math.hypot(x1 - x0, y1 - y0)
    if length < 1e-6:
        return
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    head = min(head, length)
    bx, by = x1 - ux * head, y1 - uy * head            # base of the head
    px, py = -uy * head * 0.5, ux * head * 0.5          # half-width of the head
    triangle = [(x1, y1), (bx + px, by + py), (bx - px, by - py)]
    for colour, extra in ((OUTLINE_COLOR, 2), (ARROW_COLOR, 0)):
        draw.line([(x0, y0), (bx, by)], fill=colour, width=width + extra)
        draw.polygon(triangle, fill=colour, outline=colour if extra == 0 else OUTLINE_COLOR)


def draw_points(view: np.ndarray, handles, targets, scale: float = 1, pending=None, numbers: bool = True,
                transform: np.ndarray | None = None) -> np.ndarray:
    """Handles and targets as dots joined by arrows on a view (a copy is returned).

    view      : HxWx3 uint8, the image as shown.
    handles   : [N, 2] image pixels; targets: [N, 2] (same length).
    scale     : the view is the image upscaled by ``scale`` (ignored when ``transform`` is given).
    transform : 2x3 affine from image pixels to view pixels (pixel centres), for any other view.
    pending   : a handle (x, y) whose target has not been clicked yet, or None.
    numbers   : label each handle with its number (1-based), matching the app's table.
    """
    transform = scale_transform(scale) if transform is None else np.asarray(transform, np.float64)
    frame = Image.fromarray(np.asarray(view, dtype=np.uint8))
    draw = ImageDraw.Draw(frame)
    size = frame.width
    radius = max(3.0, size / 80)
    width = max(2, round(size / 200))
    font = _font(max(10, round(size / 40))) if numbers else None
    handles = np.asarray(handles if handles is not None else [], dtype=float).reshape(-1, 2)
    targets = np.asarray(targets if targets is not None else [], dtype=float).reshape(-1, 2)
    if len(handles) != len(targets):
        raise ValueError(f"got {len(handles)} handles but {len(targets)} targets")
    hs, ts = _drawing_xy(transform, handles), _drawing_xy(transform, targets)
    for hc, tc in zip(hs, ts):
        _arrow(draw, tuple(hc), tuple(tc), width, head=radius * 2.6)
    for i, (hc, tc) in enumerate(zip(hs, ts), start=1):
        _dot(draw, tuple(tc), radius, TARGET_COLOR)
        _dot(draw, tuple(hc), radius, HANDLE_COLOR)
        if font is not None:
            draw.text((hc[0] + radius + 1, hc[1] - radius - 1), str(i), fill=ARROW_COLOR, font=font,
                      anchor="lb", stroke_width=2, stroke_fill=OUTLINE_COLOR)
    if pending is not None:
        pc = tuple(_drawing_xy(transform, [pending])[0])
        _dot(draw, pc, radius, HANDLE_COLOR)
        # A ring says: this handle waits for its target.
        r = radius * 2.2
        draw.ellipse([pc[0] - r, pc[1] - r, pc[0] + r, pc[1] + r], outline=HANDLE_COLOR, width=width)
    return np.asarray(frame)


def shade_fixed_region(view: np.ndarray, mask: np.ndarray | None, scale: int) -> np.ndarray:
    """Darken the pixels that must stay fixed (mask False) and outline the movable region.

    ``mask`` is the generator-resolution bool mask (True = may move), or None for no mask.
    """
    view = np.asarray(view, dtype=np.uint8)
    if mask is None:
        return view.copy()
    movable = upscale(np.asarray(mask, dtype=bool)[..., None].astype(np.uint8) * 255, scale)[..., 0] > 127
    return shade_outside(view, movable)


def shade_outside(view: np.ndarray, movable: np.ndarray) -> np.ndarray:
    """Darken the view outside ``movable`` (a bool array of the view's size) and outline it."""
    out = np.asarray(view, dtype=np.uint8).astype(np.float32)
    out[~movable] *= 1.0 - FIXED_DIM
    edge_img = Image.fromarray(movable.astype(np.uint8) * 255)
    grown = np.asarray(edge_img.filter(ImageFilter.MaxFilter(3))) > 127
    edge = grown & ~movable
    out[edge] = MASK_COLOR
    return out.round().astype(np.uint8)


def _painted(alpha: np.ndarray) -> np.ndarray | None:
    """Where a stroke layer (an alpha channel, or an RGBA layer) is painted: float32 0/1, or None if nowhere."""
    alpha = np.asarray(alpha)
    if alpha.ndim == 3:
        alpha = alpha[..., -1]
    painted = (alpha > 0).astype(np.float32)
    return painted if painted.any() else None


def warp_mask(mask: np.ndarray, transform: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask carried by a 2x3 ``transform`` (mask pixels -> view pixels) onto a view of ``size``
    (width, height): True where the view pixel's centre falls on the movable side."""
    warped = cv2.warpAffine(np.asarray(mask, np.float32), np.asarray(transform, np.float64), tuple(size),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped > 0.5


def strokes_to_mask(alpha: np.ndarray, transform: np.ndarray, resolution: int, coverage: float = 0.25,
                    supersample: int = 4) -> np.ndarray | None:
    """Painted strokes on a view -> ``resolution x resolution`` bool mask, or None when nothing is painted.

    ``transform`` maps view pixels to mask pixels (2x3). A mask pixel counts as painted when at least
    ``coverage`` of its area is, measured on a ``supersample`` times finer grid (a warp alone would
    sample each mask pixel at one point and lose thin strokes).
    """
    painted = _painted(alpha)
    if painted is None:
        return None
    k = int(supersample)
    fine = np.vstack([np.asarray(transform, np.float64), [0, 0, 1]])
    fine = (np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2], [0, 0, 1]]) @ fine)[:2]
    dense = cv2.warpAffine(painted, fine, (resolution * k, resolution * k), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    covered = cv2.resize(dense, (resolution, resolution), interpolation=cv2.INTER_AREA)
    mask = covered >= coverage
    return mask if mask.any() else None


def render_view(image: np.ndarray, scale: int, handles=None, targets=None, pending=None, mask=None,
                smooth: bool = False, numbers: bool = True) -> np.ndarray:
    """The whole editing view: upscaled image, mask shading, then the points on top."""
    view = upscale(image, scale, smooth=smooth)
    view = shade_fixed_region(view, mask, scale)
    has_points = handles is not None and len(handles) > 0
    if has_points or pending is not None:
        view = draw_points(view, handles if has_points else [], targets if has_points else [], scale,
                           pending=pending, numbers=numbers)
    return view


def mask_from_strokes(alpha: np.ndarray, resolution: int, coverage: float = 0.25) -> np.ndarray | None:
    """Painted strokes (an alpha channel of any size) -> ``resolution x resolution`` bool mask, or None.

    A generator pixel counts as painted when at least ``coverage`` of its area is;
    a small threshold keeps thin brush strokes. Returns None when nothing is painted.
    """
    painted = _painted(alpha)
    if painted is None:
        return None
    small = Image.fromarray(painted).resize((resolution, resolution), Image.BOX)
    return np.asarray(small) >= coverage


def mask_layer(mask: np.ndarray | None, scale: int, alpha: int = 140) -> np.ndarray:
    """A bool mask as an RGBA layer at view size (painted colour where True), to show it on a sketch pad."""
    if mask is None:
        raise ValueError("no mask to draw")
    return movable_layer(upscale(np.asarray(mask, dtype=bool)[..., None].astype(np.uint8), scale)[..., 0] > 0, alpha)


def movable_layer(movable: np.ndarray, alpha: int = 140) -> np.ndarray:
    """A view-size bool array as an RGBA layer (painted colour where True)."""
    layer = np.zeros(movable.shape + (4,), dtype=np.uint8)
    layer[movable] = (*MASK_COLOR, alpha)
    return layer


__all__ = ["view_scale", "view_to_pixel", "upscale", "draw_points", "shade_fixed_region", "shade_outside",
           "render_view", "mask_from_strokes", "strokes_to_mask", "warp_mask", "mask_layer", "movable_layer",
           "scale_transform", "apply_transform", "HANDLE_COLOR", "TARGET_COLOR", "MASK_COLOR"]
