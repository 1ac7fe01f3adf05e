"""Motion transfer: put a drag made on the generator's square back into the full-resolution photo.

Pasting the edited 128 px square back into a sharp photo leaves a blurred face. Most of a
drag is *motion* (a mouth corner goes up, the chin comes down), and motion can be applied
to the photo's own pixels at their own resolution. So:

1. ``estimate_flow``: the dense displacement between the generator's image before and after
   the drag (optical flow on the two renders, DIS by default; BENCHMARKS.md compares DIS,
   Farneback and the generator's features on how well each reproduces landmark motion), then
   ``anchor_flow``: corrected around the handles so that each lands where the drag's tracker
   (the generator's features) found it;
2. ``motion_region``: where things moved: the flow's magnitude, within reach of the edit's
   handles and targets when they are known (``locality_weight``); exactly zero elsewhere;
3. the confined flow goes to photo resolution through the alignment's similarity transform
   (smooth, because the square field is smoothed before it is upsampled) and warps the
   ORIGINAL photo with ``cv2.remap``;
4. ``new_content``: what the motion cannot explain (teeth when a mouth opens: the residual of
   the before image warped by the flow against the after image) is taken from the generator
   at its own scale (the residual is a 128 px signal, upsampled), with a confidence mask
   that the caller can show.

Pixels the edit does not reach are copied from the upload, byte for byte.

    result = transfer_edit(photo, alignment, before, after, handles, targets)
    result.image                # the edited photo (PIL, photo resolution)
    result.confidence_overlay() # where the generator's own pixels were used
    transfer_edit(..., mode="paste")   # the old paste-back of the whole square (appearance edits)
"""

from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
from PIL import Image

MODES = ("motion", "paste")
FLOW_METHODS = ("dis", "farneback")


@dataclasses.dataclass
class MotionSettings:
    """The knobs of :func:`transfer_edit`, in square (generator) pixels unless they say otherwise.

    flow_method    : 'dis' or 'farneback' (OpenCV optical flow on the two renders).
    flow_upscale   : the renders are enlarged this many times before the flow is measured:
                     DIS and Farneback are more precise on a few pixels of motion at 2x.
    flow_smooth    : Gaussian sigma applied to the square flow (the photo gets a smooth field).
    min_motion     : flow below this is noise (two renders of the same latent differ by
                     rounding); the region ramps from 0 here to 1 at ``full_motion``.
    full_motion    : see ``min_motion``.
    region_grow    : the moving area is dilated by this much, then blurred by half of it, so the
                     field fades out instead of stopping.
    reach          : with handles/targets: motion farther than ``reach`` from the edit (the convex hull
                     of its handles and targets) is dropped (faded out over ``fade``). A local edit
                     stays local even when the generator moved something elsewhere too.
    fade           : see ``reach``.
    anchor_sigma   : the drag's own correspondences (each handle went to where the tracker found it)
                     correct the optical flow around them with a Gaussian of this sigma: optical flow
                     under-estimates the motion of weakly textured points like mouth corners, which
                     the generator's features, and so the tracker, follow well.
    residual_low   : new-content confidence is 0 below this residual (levels, 0-255, blurred), or below the
                     residual that the generator shows where nothing moved, if higher (its drift)...
    residual_high  : ... and 1 this much above that.
    residual_blur  : sigma of the blur applied to the residual before it is used: the generator's
                     finest octave is its least reliable.
    detail_scale   : the photo's own detail finer than this (square px) is faded out where the
                     generator's content replaces it (confidence 1), so no lip texture stays on teeth.
    """

    flow_method: str = "dis"
    flow_upscale: int = 2
    flow_smooth: float = 1.0
    min_motion: float = 0.15
    full_motion: float = 0.5
    region_grow: float = 3.0
    reach: float = 16.0
    fade: float = 8.0
    anchor_sigma: float = 6.0
    residual_low: float = 10.0
    residual_high: float = 28.0
    residual_blur: float = 0.8
    detail_scale: float = 0.7

    def __post_init__(self):
        if self.flow_method not in FLOW_METHODS:
            raise ValueError(f"flow_method must be one of {FLOW_METHODS}, got {self.flow_method!r}")
        if not self.full_motion > self.min_motion >= 0:
            raise ValueError("need full_motion > min_motion >= 0")
        if not self.residual_high > self.residual_low >= 0:
            raise ValueError("need residual_high > residual_low >= 0")


@dataclasses.dataclass
class TransferResult:
    """The edited photo and how it was made (what :func:`transfer_edit` returns).

    image      : the edited photo (RGB, the photo's own size).
    mode       : 'motion' or 'paste'.
    flow       : [R, R, 2] float32 backward flow of the square, after -> before (x, y), as applied
                 (confined); ``after(p) ~ before(p + flow(p))``. None for 'paste'.
    region     : [R, R] float32 in [0, 1]: where motion was applied.
    confidence : [R, R] float32 in [0, 1]: where the generator's own content was blended in.
    box        : (x0, y0, x1, y1) photo pixels (end exclusive) outside which the photo is untouched;
                 None when nothing changed.
    changed    : number of photo pixels whose value changed.
    seconds    : wall time per stage.
    square     : the generator's edited image (set by :func:`inversion.edit.drag_photo`).
    """

    image: Image.Image
    mode: str
    alignment: object
    flow: np.ndarray | None = None
    region: np.ndarray | None = None
    confidence: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    changed: int = 0
    seconds: dict = dataclasses.field(default_factory=dict)
    square: np.ndarray | None = None

    def _to_photo(self, square_map: np.ndarray | None) -> np.ndarray:
        """A map over the aligned square, at photo resolution ([H, W] float32; zero outside it, or everywhere
        when there is none)."""
        w, h = self.alignment.photo_size
        if square_map is None:
            return np.zeros((h, w), np.float32)
        return cv2.warpAffine(square_map, self.alignment.matrix, (w, h),
                              flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def confidence_map(self) -> np.ndarray:
        """The confidence at photo resolution, [H, W] float32 in [0, 1] (zero outside the edit)."""
        return self._to_photo(self.confidence)

    def region_map(self) -> np.ndarray:
        """Where the photo's pixels may move, at photo resolution, [H, W] float32 in [0, 1]."""
        return self._to_photo(self.region)

    def confidence_overlay(self, alpha: float = 0.6) -> Image.Image:
        """The edited photo with the motion region outlined (cyan) and generator content tinted (magenta)."""
        out = np.asarray(self.image, np.float32).copy()
        conf = self.confidence_map()[..., None]
        out = out * (1 - alpha * conf) + np.array([255, 0, 200], np.float32) * (alpha * conf)
        region = (self.region_map() > 0.05).astype(np.uint8)
        if region.any():
            k = max(3, int(round(min(region.shape) / 300)) | 1)
            edge = cv2.morphologyEx(region, cv2.MORPH_GRADIENT, np.ones((k, k), np.uint8)) > 0
            out[edge] = (0, 230, 255)
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- square domain


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def estimate_flow(before: np.ndarray, after: np.ndarray, method: str = "dis", upscale: int = 2) -> np.ndarray:
    """Backward flow [R, R, 2] float32 with ``after(p) ~ before(p + flow(p))`` (x, y), in square pixels.

    The renders are enlarged ``upscale`` times (bicubic) first: a 4-6 px drag is a few pixels
    of motion on features a few pixels wide, which both methods resolve better at 2x.
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"flow method must be one of {FLOW_METHODS}, got {method!r}")
    a, b = _gray(after), _gray(before)
    h, w = a.shape
    if upscale > 1:
        a = cv2.resize(a, (w * upscale, h * upscale), interpolation=cv2.INTER_CUBIC)
        b = cv2.resize(b, (w * upscale, h * upscale), interpolation=cv2.INTER_CUBIC)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(0)
        dis.setPatchSize(8)
        dis.setPatchStride(3)
        dis.setGradientDescentIterations(25)
        dis.setVariationalRefinementIterations(5)
        flow = dis.calc(a, b, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=13, iterations=5,
                                            poly_n=5, poly_sigma=1.1, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
    if upscale > 1:
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / upscale
    return flow.astype(np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _segment_distance(size: int, handles, targets) -> np.ndarray:
    """[R, R] distance of every pixel centre to the nearest handle -> target segment."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    p = np.stack([xs, ys], -1)
    best = np.full((size, size), np.inf, np.float32)
    for a, b in zip(np.asarray(handles, np.float32).reshape(-1, 2), np.asarray(targets, np.float32).reshape(-1, 2)):
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-6), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (a + t[..., None] * ab), axis=-1))
    return best


def _hull_distance(size: int, points) -> np.ndarray:
    """[R, R] distance of every pixel centre to the convex hull of ``points`` (0 inside)."""
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    hull = cv2.convexHull(pts)[:, 0] if len(pts) > 2 else pts
    if len(hull) < 3:                       # a point or a segment
        return _segment_distance(size, hull[:1], hull[-1:])
    starts, ends = hull, np.roll(hull, -1, axis=0)
    d = _segment_distance(size, starts, ends)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    # Inside a convex polygon: on the same side of every edge.
    cross = [(b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0]) for a, b in zip(starts, ends)]
    inside = np.all(np.stack(cross) >= 0, 0) | np.all(np.stack(cross) <= 0, 0)
    d[inside] = 0
    return d


def locality_weight(size: int, handles, targets, reach: float, fade: float) -> np.ndarray:
    """1 within ``reach`` of the edit (the convex hull of its handles and targets), easing to exactly 0 at
    ``reach + fade``.

    The hull, not each point's own neighbourhood: two brows dragged together move the forehead between
    them too, and a weight that dipped between the points would dent what spans them (a hat brim).
    """
    pts = np.concatenate([np.asarray(handles, np.float32).reshape(-1, 2),
                          np.asarray(targets, np.float32).reshape(-1, 2)])
    d = _hull_distance(size, pts)
    return (1 - _smoothstep((d - reach) / max(fade, 1e-6))).astype(np.float32)


def anchor_flow(flow: np.ndarray, starts, ends, sigma: float) -> np.ndarray:
    """``flow`` corrected so that the backward flow at each ``end`` is ``start - end`` (exactly at isolated
    points), the correction fading with a Gaussian of ``sigma`` square pixels.

    starts/ends: [N, 2] the handles where the drag began and where they ended (tracked or targets).
    """
    starts = np.asarray(starts, np.float32).reshape(-1, 2)
    ends = np.asarray(ends, np.float32).reshape(-1, 2)
    if not len(ends) or sigma <= 0:
        return flow
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # The wanted displacement minus what the flow says at each end point.
    fx = cv2.remap(flow[..., 0], ends[:, :1], ends[:, 1:], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0]
    fy = cv2.remap(flow[..., 1], ends[:, :1], ends[:, 1:], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0]
    miss = (starts - ends) - np.stack([fx, fy], 1)
    weights = np.stack([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in ends])
    # Normalized where kernels overlap (neighbouring handles share the correction), plain where alone.
    norm = np.maximum(weights.sum(0), 1.0)
    correction = np.einsum("nhw,nc->hwc", weights, miss) / norm[..., None]
    return (flow + correction).astype(np.float32)


def motion_region(flow: np.ndarray, settings: MotionSettings, locality: np.ndarray | None = None) -> np.ndarray:
    """[R, R] weight in [0, 1]: 1 where the square moved, fading to exactly 0 where it did not."""
    mag = np.linalg.norm(flow, axis=-1)
    moving = _smoothstep((mag - settings.min_motion) / (settings.full_motion - settings.min_motion))
    grow = settings.region_grow
    if grow > 0:
        k = 2 * int(np.ceil(grow)) + 1
        moving = cv2.dilate(moving, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        moving = cv2.GaussianBlur(moving, (0, 0), grow / 2)
    if locality is not None:
        moving = moving * locality
    moving[moving < 1e-3] = 0.0       # exact zeros: those photo pixels stay the upload's
    return np.clip(moving, 0, 1).astype(np.float32)


def warp_backward(image: np.ndarray, flow: np.ndarray, interpolation=cv2.INTER_CUBIC) -> np.ndarray:
    """``out(p) = image(p + flow(p))`` (float32 result, replicated border)."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(np.asarray(image, np.float32), xs + flow[..., 0], ys + flow[..., 1], interpolation,
                     borderMode=cv2.BORDER_REPLICATE)


def new_content(before: np.ndarray, after: np.ndarray, flow: np.ndarray, region: np.ndarray,
                settings: MotionSettings, locality: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(residual [R, R, 3] float32 levels, confidence [R, R] in [0, 1]) of what motion cannot explain.

    residual = after - before warped by the flow: zero where the motion explains the edit,
    the new pixels (teeth, an opened eye) where it does not. The confidence ramps up with the
    blurred residual's size and is confined to where things moved (dilated) and to the edit's
    reach: elsewhere residuals are the generator's own drift and are left out.
    """
    predicted = warp_backward(before, flow)
    residual = np.asarray(after, np.float32) - predicted
    if settings.residual_blur > 0:
        residual = cv2.GaussianBlur(residual, (0, 0), settings.residual_blur)
    size = cv2.GaussianBlur(np.abs(residual).max(axis=-1), (0, 0), 1.0)
    # The generator may also change appearance where nothing moved (a global drift of colour and texture:
    # the whole square differs by ~13 levels after a drag with a non-local engine). Only residuals above
    # that floor, measured away from the motion, count as new content.
    still = region <= 0
    floor = float(np.percentile(size[still], 90)) if still.sum() > 64 else 0.0
    low = max(settings.residual_low, floor)
    high = max(settings.residual_high, low + (settings.residual_high - settings.residual_low))
    conf = _smoothstep((size - low) / (high - low))
    near_motion = cv2.dilate((region > 0).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    # New content appears where things moved, not where the region merely fades out.
    core = cv2.dilate((region >= 0.5).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    conf = conf * near_motion * core
    if locality is not None:
        conf = conf * locality
    conf = cv2.GaussianBlur(conf.astype(np.float32), (0, 0), 1.0)
    conf[conf < 1e-3] = 0.0
    return residual.astype(np.float32), np.clip(conf, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- photo domain


def _photo_box(alignment, weight: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
    """Photo-pixel box (end exclusive) covering the square's pixels with ``weight > 0``."""
    ys, xs = np.nonzero(weight > 0)
    if len(xs) == 0:
        return None
    corners = np.array([[xs.min() - 1.5, ys.min() - 1.5], [xs.max() + 1.5, ys.min() - 1.5],
                        [xs.min() - 1.5, ys.max() + 1.5], [xs.max() + 1.5, ys.max() + 1.5]], np.float64)
    inv = cv2.invertAffineTransform(np.asarray(alignment.matrix, np.float64))
    pts = corners @ inv[:, :2].T + inv[:, 2]
    w, h = alignment.photo_size
    x0 = int(np.clip(np.floor(pts[:, 0].min() - margin), 0, w))
    y0 = int(np.clip(np.floor(pts[:, 1].min() - margin), 0, h))
    x1 = int(np.clip(np.ceil(pts[:, 0].max() + margin) + 1, 0, w))
    y1 = int(np.clip(np.ceil(pts[:, 1].max() + margin) + 1, 0, h))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def square_scale(alignment) -> float:
    """Square pixels per photo pixel (the similarity's scale)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(alignment.matrix, np.float64)[:, :2]))))


def apply_to_photo(photo: np.ndarray, alignment, flow: np.ndarray, region: np.ndarray, residual: np.ndarray,
                   confidence: np.ndarray, settings: MotionSettings):
    """Warp the photo by the (confined) square flow and add the confident new content.

    Returns (edited HxWx3 uint8, box, changed pixel count). Only pixels in the box whose
    displacement or confidence is non-zero are written; every other byte is the photo's.
    """
    out = photo.copy()
    touched = np.maximum(region, confidence)
    s = square_scale(alignment)
    box = _photo_box(alignment, touched, margin=4 + 2 / max(s, 1e-6))
    if box is None:
        return out, None, 0
    x0, y0, x1, y1 = box
    m = np.asarray(alignment.matrix, np.float64)
    a_inv = np.linalg.inv(m[:, :2])
    # Square coordinates of every photo pixel in the box.
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    sx = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).astype(np.float32)
    sy = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).astype(np.float32)

    def sample(field, interpolation=cv2.INTER_CUBIC):
        return cv2.remap(np.ascontiguousarray(field, np.float32), sx, sy, interpolation,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    f = sample(flow)                           # square px, bicubic: smooth at photo resolution
    reg = sample(region, cv2.INTER_LINEAR)
    f[reg <= 0] = 0                            # exact zero outside the region (bicubic overshoot)
    # A square displacement d_s corresponds to A^-1 d_s in the photo (the similarity's linear part).
    dx = a_inv[0, 0] * f[..., 0] + a_inv[0, 1] * f[..., 1]
    dy = a_inv[1, 0] * f[..., 0] + a_inv[1, 1] * f[..., 1]
    src_x = (xs + dx).astype(np.float32)
    src_y = (ys + dy).astype(np.float32)
    # Remap the whole photo (no crop edge): the source can lie outside the box.
    warped = cv2.remap(photo, src_x, src_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
    conf = sample(confidence, cv2.INTER_LINEAR)
    conf = np.clip(conf, 0, 1)
    conf[conf < 1e-3] = 0
    if conf.any():
        res = sample(residual)
        # Where the generator's content replaces the photo's, the photo's finer detail goes too.
        sigma = max(settings.detail_scale / max(s, 1e-6), 0.3)
        detail = warped - cv2.GaussianBlur(warped, (0, 0), sigma)
        warped = warped + conf[..., None] * (res - detail)
    new = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
    moved = (np.abs(dx) > 0) | (np.abs(dy) > 0) | (conf > 0)
    patch = out[y0:y1, x0:x1]
    patch[moved] = new[moved]
    changed = int((np.asarray(photo[y0:y1, x0:x1]) != patch).any(-1).sum())
    return out, box, changed


def _as_rgb(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {a.shape} and dtype {a.dtype}")
    return a


def transfer_edit(photo, alignment, before, after, handles=None, targets=None, *, tracked=None,
                  mode: str = "motion", settings: MotionSettings | None = None,
                  flow: np.ndarray | None = None, movable: np.ndarray | None = None) -> TransferResult:
    """The drag from ``before`` to ``after`` (the generator's square images), applied to ``photo``.

    photo     : the original upload (PIL or HxWx3 uint8), the size ``alignment`` was made for.
    alignment : :class:`inversion.align.Alignment` (photo -> square similarity).
    before    : the square as the generator drew it before the drag (R x R x 3 uint8).
    after     : the square after the drag.
    handles, targets : the drag's points in square pixels (initial handle positions and their
                targets), [N, 2] each; they confine the motion to the edit's neighbourhood.
                None: the flow's magnitude alone decides.
    tracked   : where the drag left the handles (``DragSession.handles`` after the drag), [N, 2]; the
                flow is anchored to these correspondences (handle -> tracked). None: the targets (a
                drag that arrived).
    mode      : 'motion' (default) or 'paste': the whole edited square pasted back with a
                feathered edge (``Alignment.paste_back``), for edits that change appearance.
    flow      : a precomputed backward flow [R, R, 2] (skips :func:`estimate_flow`).
    movable   : R x R bool, where the edit may move anything (the drag's painted mask); None: everywhere.
                Outside it, the photo stays the upload's too, even where the optical flow bleeds over.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    settings = settings or MotionSettings()
    t0 = time.perf_counter()
    photo_rgb = _as_rgb(photo)
    w, h = alignment.photo_size
    if photo_rgb.shape[:2] != (h, w):
        raise ValueError(f"the photo is {photo_rgb.shape[1]}x{photo_rgb.shape[0]}, but the alignment was made "
                         f"for {w}x{h}")
    after_rgb = _as_rgb(after)
    R = alignment.size
    if after_rgb.shape[:2] != (R, R):
        after_rgb = np.asarray(Image.fromarray(after_rgb).resize((R, R), Image.LANCZOS))
    if mode == "paste":
        image = alignment.paste_back(Image.fromarray(after_rgb), Image.fromarray(photo_rgb))
        return TransferResult(image=image, mode="paste", alignment=alignment,
                              changed=int((np.asarray(image) != photo_rgb).any(-1).sum()),
                              seconds={"total": round(time.perf_counter() - t0, 4)})
    before_rgb = _as_rgb(before)
    if before_rgb.shape[:2] != (R, R):
        before_rgb = np.asarray(Image.fromarray(before_rgb).resize((R, R), Image.LANCZOS))
    seconds = {}
    tick = time.perf_counter()
    if flow is None:
        flow = estimate_flow(before_rgb, after_rgb, settings.flow_method, settings.flow_upscale)
    flow = np.asarray(flow, np.float32)
    if settings.flow_smooth > 0:
        flow = cv2.GaussianBlur(flow, (0, 0), settings.flow_smooth)
    locality = None
    has_points = handles is not None and targets is not None and len(np.asarray(handles).reshape(-1, 2))
    k = R / 128             # the settings are in units of a 128 px square
    if has_points:
        ends = np.asarray(targets if tracked is None else tracked, np.float32).reshape(-1, 2)
        flow = anchor_flow(flow, handles, ends, settings.anchor_sigma * k)
    seconds["flow"] = time.perf_counter() - tick
    tick = time.perf_counter()
    if has_points:
        points = np.concatenate([np.asarray(targets, np.float32).reshape(-1, 2), ends])
        starts = np.concatenate([np.asarray(handles, np.float32).reshape(-1, 2)] * 2)
        locality = locality_weight(R, starts, points, settings.reach * k, settings.fade * k)
    if movable is not None:
        allowed = np.asarray(movable, np.float32)
        locality = allowed if locality is None else locality * allowed
    region = motion_region(flow, settings, locality)
    flow = flow * region[..., None]
    residual, confidence = new_content(before_rgb, after_rgb, flow, region, settings, locality)
    if movable is not None:
        confidence = confidence * allowed      # new_content's last blur would reach past the mask's edge
    seconds["square"] = time.perf_counter() - tick
    tick = time.perf_counter()
    edited, box, changed = apply_to_photo(photo_rgb, alignment, flow, region, residual, confidence, settings)
    seconds["photo"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - t0
    return TransferResult(image=Image.fromarray(edited), mode="motion", alignment=alignment, flow=flow,
                          region=region, confidence=confidence, box=box, changed=changed,
                          seconds={k: round(v, 4) for k, v in seconds.items()})


__all__ = ["MODES", "FLOW_METHODS", "MotionSettings", "TransferResult", "anchor_flow", "estimate_flow",
           "motion_region", "new_content", "locality_weight", "transfer_edit", "warp_backward"]
