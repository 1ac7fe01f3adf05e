"""One photo edit: the photo, its alignment, the inversion, the drag and the edited photo, frame by frame.

The composition layer. It sees the drag engine (``draggan.engine``, ``draggan.drawing``) and
the photo pipeline (the rest of ``inversion``); the front-ends (``app.py``, ``python -m draggan
edit``, the app's per-tab state in ``draggan.app``) use it, and nothing below imports it.

    edit = PhotoEdit.from_inversion(invert("me.jpg", G))   # or PhotoEdit.load("inv/"), PhotoEdit.from_latent(G, ws)
    edit.set_points([(412, 630)], [(404, 611)])            # photo pixels (coordinates="square": the generator's)
    view = edit.view()                                     # the face, at screen size
    for event in edit.drag(view=view):                     # frames stream while the handles move ...
        event.photo.image                                  # ... each one the photo as edited so far
    edit.photo_frame().image.save("me-edited.png")         # the whole photo at its own resolution
    edit.undo(); edit.reset()

Coordinates. ``"photo"``: pixels of the upright photo as ``read_photo`` shows it (EXIF
orientation applied), pixel-centre based like ``inversion.align``. ``"square"``: pixels of
the generator's R x R image, where the engine works. The alignment's similarity maps one
onto the other (:meth:`PhotoEdit.photo_to_square`, :meth:`PhotoEdit.square_to_photo`, exact
inverses). Without a photo (a sampled face) the square is the photo: both are the same.

History. A drag that changed the image leaves a :class:`DragRecord` (where its handles
started and where the tracker left them, its targets and mask, its frames) beside the engine's
undo entry. Undo pops both and Reset clears both, so the edited photo is always the motion of
the drags still in the history, and nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

from draggan.drawing.overlay import apply_transform, draw_points, shade_outside, strokes_to_mask, upscale, view_scale, warp_mask
from draggan.drawing.video import drag_frame
from draggan.engine import DragConfig, DragSession, DragState, MaskError, PointError, live_drag, validate_points

from .align import Alignment
from .motion_transfer import MODES, MotionSettings, TransferResult, transfer_edit
from .pipeline import InversionResult, read_inversion_folder

COORDINATES = ("photo", "square")
VIEW_SIZE = 640          # the canvas's longer side, in screen pixels
VIEW_MARGIN = 0.25       # the face view: the square's footprint in the photo, grown by this much on every side
SQUARE_VIEW_SIZE = 256   # the small view of the generator's own square
MAX_FRAMES = 400         # recorded frames per edit; beyond this, every other frame is dropped
FOOTPRINT_COLOR = (255, 255, 255)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine of ``a`` applied after ``b``."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


@dataclasses.dataclass(frozen=True)
class PhotoView:
    """A box of the photo shown at screen size: what an editing canvas shows.

    box  : (x0, y0, x1, y1) photo pixels, end exclusive.
    size : (width, height) of the view in screen pixels.
    """

    box: tuple[int, int, int, int]
    size: tuple[int, int]

    @property
    def matrix(self) -> np.ndarray:
        """2x3 affine, photo pixel centres -> view pixel centres (what cv2.resize of the box does)."""
        x0, y0, x1, y1 = self.box
        sx, sy = self.size[0] / (x1 - x0), self.size[1] / (y1 - y0)
        return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]])

    def to_view(self, points) -> np.ndarray:
        return apply_transform(self.matrix, points)

    def to_photo(self, points) -> np.ndarray:
        return apply_transform(cv2.invertAffineTransform(self.matrix), points)

    def pixel(self, u: float, v: float) -> tuple[int, int]:
        """The photo pixel under view pixel (u, v) (a click)."""
        x, y = self.to_photo([(u, v)])[0]
        return int(np.floor(x + 0.5)), int(np.floor(y + 0.5))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """A photo-size image as this view shows it: area-averaged when shrunk, bicubic when enlarged."""
        x0, y0, x1, y1 = self.box
        part = np.ascontiguousarray(image[y0:y1, x0:x1])
        if part.shape[1::-1] == tuple(self.size):
            return part.copy()
        shrink = self.size[0] < part.shape[1]
        return cv2.resize(part, tuple(self.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)

    @classmethod
    def fit(cls, box, longest: int) -> "PhotoView":
        """``box`` scaled so that its longer side is ``longest`` screen pixels (up or down)."""
        x0, y0, x1, y1 = (int(v) for v in box)
        w, h = x1 - x0, y1 - y0
        s = longest / max(w, h)
        return cls((x0, y0, x1, y1), (max(1, round(w * s)), max(1, round(h * s))))


@dataclasses.dataclass(eq=False)
class Frame:
    """One recorded frame of a drag: the generator's image and where the points were (square pixels)."""

    image: np.ndarray       # R x R x 3 uint8
    handles: np.ndarray     # [N, 2]
    targets: np.ndarray     # [N, 2]


@dataclasses.dataclass(eq=False)       # records are told apart by identity (they hold arrays)
class DragRecord:
    """One drag in the history (square pixels): what the photo's motion transfer needs, and its frames.

    points_id : the engine's points set; a Start after Stop continues the same one.
    start     : [N, 2] where the handles were placed (the set's initial handles).
    targets   : [N, 2].
    tracked   : [N, 2] where the tracker left them at the end of this drag.
    mask      : R x R bool movable region of this drag, or None (everything may move).
    first_step: the engine's step count when this drag began (steps are counted per drag from it).
    """

    points_id: int
    start: np.ndarray
    targets: np.ndarray
    tracked: np.ndarray
    mask: np.ndarray | None
    first_step: int
    frames: list[Frame] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EditEvent:
    """What :meth:`PhotoEdit.drag` yields.

    kind   : 'frame', 'warning' or 'end'.
    state  : the engine's step (for 'end', the last one; None if no step was taken).
    square : the generator's frame (R x R x 3 uint8); for 'end' the final image.
    photo  : 'frame' with a view and a photo: the view of the photo edited by this frame (TransferResult).
    view   : the view ``photo`` was made for (the drag's, even if the canvas changes meanwhile).
    steps  : steps of this drag so far (counted from this Start).
    text   : 'warning': what the engine recovered from.
    """

    kind: str
    state: DragState | None = None
    square: np.ndarray | None = None
    photo: TransferResult | None = None
    view: PhotoView | None = None
    steps: int = 0
    text: str | None = None


def identity_alignment(resolution: int) -> Alignment:
    """The square as its own photo (a sampled face): photo and square coordinates are the same."""
    return Alignment(np.eye(2, 3), (resolution, resolution), resolution, "square")


def unchanged(photo: np.ndarray, alignment) -> TransferResult:
    """The photo as uploaded: no drag yet."""
    return TransferResult(image=Image.fromarray(photo), mode="motion", alignment=alignment)


class PhotoEdit:
    """One edit of one image: a photo (with its alignment and inversion) or a sampled face, its drags and
    their history, and the edited photo. Not thread-safe, except :meth:`stop` (the app serializes a
    user's work).

    G, ws     : the generator (a tuned copy for a photo) and the latent to start from.
    config    : the drag's settings (``DragConfig``).
    photo     : the upright RGB photo (PIL) and ``alignment`` (photo -> square); both or neither.
    inversion : the :class:`InversionResult` they came from, if any.
    """

    def __init__(self, G, ws, config: DragConfig | None = None, *, photo: Image.Image | None = None,
                 alignment: Alignment | None = None, inversion: InversionResult | None = None, device=None):
        self.session = DragSession(G, ws, config, device=device)    # raises DragConfigError first
        R = self.session.resolution
        if (photo is None) != (alignment is None):
            raise ValueError("a photo needs its alignment, and an alignment its photo")
        if photo is not None:
            photo = photo.convert("RGB")
            if photo.size != tuple(alignment.photo_size):
                raise ValueError(f"the photo is {photo.size[0]}x{photo.size[1]} but the alignment was made for "
                                 f"{alignment.photo_size[0]}x{alignment.photo_size[1]}")
            if alignment.size != R:
                raise ValueError(f"the alignment is for a {alignment.size} px square, the generator draws {R} px")
        self.G = G
        self.photo = photo
        self.alignment = alignment if alignment is not None else identity_alignment(R)
        self.inversion = inversion
        self._photo_rgb = None if photo is None else np.asarray(photo)
        self._to_square = np.asarray(self.alignment.matrix, np.float64)
        self._to_photo = cv2.invertAffineTransform(self._to_square)
        self.original = self.session.render()          # the square before any drag: the motion's 'before'
        self._square: np.ndarray | None = self.original
        self.records: list[DragRecord] = []            # one per engine undo entry, oldest first
        self._running: DragRecord | None = None        # the drag running now
        self._handles: list[tuple[float, float]] = []  # square pixels, handed to the engine at the next drag
        self._targets: list[tuple[float, float]] = []
        self._initial: list[tuple[float, float]] = []  # where the handles were placed (Reset returns them there)
        self._points_changed = True
        self._mask: np.ndarray | None = None           # R x R bool, True = may move
        self._mask_changed = False
        self.version = 0                               # bumped whenever the image changes
        self._results: dict = {}                       # TransferResults of this version, by what they show
        self._backgrounds: dict = {}                   # the upload as each view shows it

    # ----------------------------------------------------------------- constructors

    @classmethod
    def from_inversion(cls, result: InversionResult, config: DragConfig | None = None, device=None) -> "PhotoEdit":
        """An inverted photo (without its photo, the result edits as a square)."""
        has_photo = result.photo is not None
        return cls(result.generator, result.ws, config, photo=result.photo if has_photo else None,
                   alignment=result.alignment if has_photo else None, inversion=result, device=device)

    @classmethod
    def from_latent(cls, G, ws, config: DragConfig | None = None, device=None) -> "PhotoEdit":
        """A sampled face (no photo: photo coordinates are the square's)."""
        return cls(G, ws, config, device=device)

    @classmethod
    def load(cls, directory, config: DragConfig | None = None, device="cpu", prepare=None) -> "PhotoEdit":
        """An inversion folder (``python -m inversion``'s output); ``prepare(G)`` may return a faster copy of G.

        Without photo.png and alignment.json the edit has no photo (:attr:`has_photo` is False).
        Raises InversionError for a folder that cannot be read.
        """
        folder = read_inversion_folder(directory, device)
        G = folder["generator"]
        G = (prepare(G) or G) if prepare is not None else G
        photo, alignment = folder["photo"], folder["alignment"]
        if photo is None or alignment is None:
            photo = alignment = None
        return cls(G, folder["ws"].to(device), config, photo=photo, alignment=alignment, device=device)

    # ----------------------------------------------------------------- geometry

    @property
    def has_photo(self) -> bool:
        return self.photo is not None

    @property
    def resolution(self) -> int:
        return self.session.resolution

    @property
    def photo_size(self) -> tuple[int, int]:
        """(width, height) in photo pixels (the square's size without a photo)."""
        return tuple(self.alignment.photo_size)

    @property
    def square_per_photo_pixel(self) -> float:
        """Square pixels per photo pixel (1 without a photo)."""
        return float(np.sqrt(abs(np.linalg.det(self._to_square[:, :2]))))

    def photo_to_square(self, points) -> np.ndarray:
        """[N, 2] photo pixels -> square pixels (float64)."""
        return apply_transform(self._to_square, points)

    def square_to_photo(self, points) -> np.ndarray:
        """[N, 2] square pixels -> photo pixels (float64); the exact inverse of :meth:`photo_to_square`."""
        return apply_transform(self._to_photo, points)

    def covers(self, point, coordinates: str = "photo") -> bool:
        """Whether the generator's square covers ``point`` (an edit can be placed there)."""
        x, y = self._square_points([point], coordinates)[0]
        R = self.resolution
        return bool(np.isfinite(x) and np.isfinite(y) and 0 <= x <= R - 1 and 0 <= y <= R - 1)

    def footprint(self) -> np.ndarray:
        """[4, 2] corners of the generator's square in photo pixels (its outer edges)."""
        e = self.resolution - 0.5
        return self.square_to_photo([(-0.5, -0.5), (e, -0.5), (e, e), (-0.5, e)])

    def view(self, whole: bool = False, longest: int = VIEW_SIZE) -> PhotoView:
        """What a canvas shows: the face (the square's footprint grown by VIEW_MARGIN on every side, within
        the photo) or the ``whole`` photo, ``longest`` screen pixels on its longer side. Without a photo: the
        square, upscaled by a whole number (so that each of its pixels is a block of screen pixels)."""
        R = self.resolution
        if not self.has_photo:
            scale = view_scale(R, longest)
            return PhotoView((0, 0, R, R), (R * scale, R * scale))
        w, h = self.photo_size
        box = (0, 0, w, h)
        if not whole:
            corners = self.footprint()
            lo, hi = corners.min(0), corners.max(0)
            grow = (hi - lo) * VIEW_MARGIN
            x0, y0 = np.floor(lo - grow + 0.5).astype(int)
            x1, y1 = np.ceil(hi + grow + 0.5).astype(int)
            x0, x1 = int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w))
            y0, y1 = int(np.clip(y0, 0, h)), int(np.clip(y1, 0, h))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                box = (x0, y0, x1, y1)
        return PhotoView.fit(box, longest)

    def view_alignment(self, view: PhotoView) -> Alignment:
        """The alignment of a view's pixels to the square (a view is a photo in its own right)."""
        to_photo = cv2.invertAffineTransform(view.matrix)
        return Alignment(_compose(self._to_square, to_photo), tuple(view.size), self.resolution,
                         self.alignment.method)

    # ----------------------------------------------------------------- points

    def _square_points(self, points, coordinates: str) -> np.ndarray:
        if coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        return self.photo_to_square(pts) if coordinates == "photo" else pts

    def _checked(self, points, coordinates: str, what: str) -> list[tuple[float, float]]:
        """Points as square pixels; one the square does not cover is a PointError that says so in the
        coordinates it was given in."""
        try:
            pts = np.asarray(points, np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise PointError(f"{what}s must be (x, y) pairs of numbers") from None
        square = self._square_points(pts, coordinates)
        if coordinates == "photo" and self.has_photo:
            for i, (p, q) in enumerate(zip(pts, square), start=1):
                if not self.covers(q, "square"):
                    raise PointError(
                        f"{what} {i} at ({p[0]:.0f}, {p[1]:.0f}) is outside the part of the photo that the model "
                        "covers (the face and a little around it): place it on the face.")
        return [tuple(map(float, q)) for q in square]

    def points(self, coordinates: str = "photo") -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(handles, targets) in ``coordinates``; the handles are where the last drag left them."""
        if coordinates == "square" or not self._handles:
            return list(self._handles), list(self._targets)
        return ([tuple(map(float, p)) for p in self.square_to_photo(self._handles)],
                [tuple(map(float, p)) for p in self.square_to_photo(self._targets)])

    def set_points(self, handles, targets, coordinates: str = "photo") -> None:
        """Replace every point (raises PointError and keeps the old ones when they cannot be used)."""
        if not len(handles) and not len(targets):
            self.clear_points()
            return
        square_h = self._checked(handles, coordinates, "handle")
        square_t = self._checked(targets, coordinates, "target")
        square_h, square_t = validate_points(square_h, square_t, self.resolution)
        self._handles, self._targets = list(square_h), list(square_t)
        self._initial = list(self._handles)
        self._points_changed = True

    def add_pair(self, handle, target, coordinates: str = "photo") -> None:
        """One more handle and its target."""
        (h,), (t,) = self._checked([handle], coordinates, "handle"), self._checked([target], coordinates, "target")
        self._handles.append(h)
        self._targets.append(t)
        self._initial = list(self._handles)
        self._points_changed = True

    def pop_pair(self, coordinates: str = "photo"):
        """Take back the last pair: (handle, target) in ``coordinates``, or None when there is none."""
        if not self._handles:
            return None
        h, t = self._handles.pop(), self._targets.pop()
        self._initial = list(self._handles)
        self._points_changed = True
        if coordinates == "photo":
            h, t = (tuple(map(float, p)) for p in self.square_to_photo([h, t]))
        return h, t

    def clear_points(self) -> None:
        self._handles, self._targets, self._initial = [], [], []
        self._points_changed = True

    def check_point(self, point, coordinates: str = "photo") -> tuple[float, float]:
        """A single click, checked as a handle would be (raises PointError); returned as floats."""
        x, y = (float(v) for v in np.asarray(point, np.float64).reshape(2))
        if coordinates == "photo" and self.has_photo and not self.covers((x, y)):
            raise PointError(f"The point ({x:.0f}, {y:.0f}) is outside the part of the photo that the model covers "
                             "(inside the thin white frame): click on the face or close to it.")
        (square,) = self._checked([(x, y)], coordinates, "point")
        validate_points([square], [square], self.resolution)
        return x, y

    # ----------------------------------------------------------------- mask

    @property
    def mask(self) -> np.ndarray | None:
        """The movable region in square pixels (R x R bool), or None (everything may move)."""
        return None if self._mask is None else self._mask.copy()

    def set_mask(self, mask, coordinates: str = "square") -> None:
        """The region that may move: R x R (``"square"``) or the photo's size (``"photo"``); True/nonzero = may
        move; None or all True = no mask. Used from the next drag on (raises MaskError)."""
        new = None
        if mask is not None:
            m = np.asarray(mask)
            if m.ndim == 3:
                m = m[..., -1]
            if coordinates == "photo":
                w, h = self.photo_size
                if m.shape != (h, w):
                    raise MaskError(f"a mask in photo pixels must be {w}x{h}, got {m.shape[1]}x{m.shape[0]}")
                new = strokes_to_mask(m > 0, self._to_square, self.resolution)
            elif coordinates == "square":
                R = self.resolution
                if m.shape != (R, R):
                    raise MaskError(f"mask must be a {R}x{R} array (one value per image pixel), got shape {m.shape}")
                new = m.astype(bool)
            else:
                raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
            if new is not None and new.all():
                new = None                     # everything may move: the same as no mask
        if (new is None and self._mask is None) or (
                new is not None and self._mask is not None and np.array_equal(new, self._mask)):
            return
        self._mask = new
        self._mask_changed = True

    def mask_from_view(self, alpha: np.ndarray, view: PhotoView) -> np.ndarray | None:
        """Strokes painted on ``view`` (an alpha channel of its size) -> the square's mask, or None."""
        to_square = _compose(self._to_square, cv2.invertAffineTransform(view.matrix))
        return strokes_to_mask(alpha, to_square, self.resolution)

    def mask_in_view(self, view: PhotoView) -> np.ndarray | None:
        """The movable region as ``view`` shows it (bool, the view's size), or None without a mask."""
        if self._mask is None:
            return None
        return warp_mask(self._mask, _compose(view.matrix, self._to_photo), view.size)

    # ----------------------------------------------------------------- dragging

    def configure(self, config: DragConfig) -> bool:
        """Use ``config`` for the next drag, keeping the image, points, mask and history. True if it changed
        anything (raises DragConfigError and keeps the old settings when it cannot work)."""
        if dataclasses.replace(self.session.config, max_steps=config.max_steps) == config:
            self.session.config.max_steps = config.max_steps   # only bounds each drag: nothing to rebuild
            return False
        self.session.reconfigure(config)
        return True

    def _sync(self) -> None:
        """Hand changed points and mask to the engine (raises PointError without points)."""
        if self._points_changed:
            self.session.set_points(self._handles, self._targets)
            self._points_changed = False
        if self._mask_changed:
            self.session.set_mask(self._mask)
            self._mask_changed = False

    def _begin(self) -> tuple[DragRecord, int]:
        self._sync()
        s = self.session
        record = DragRecord(points_id=s.points_id, start=s.initial_handles, targets=s.targets, tracked=s.handles,
                            mask=s.mask, first_step=s.step_count)
        self._running = record
        return record, s.undo_depth

    def _finish(self, record: DragRecord, depth: int) -> None:
        """After a drag: a drag that changed the image is recorded beside the engine's undo entry."""
        self._running = None
        s = self.session
        if s.undo_depth > depth:
            record.tracked = s.handles
            self.records.append(record)
        handles = s.handles
        if handles is not None and not self._points_changed:
            self._handles = [tuple(map(float, h)) for h in handles]
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._square = None
        self._results.clear()

    def drag(self, max_steps: int | None = None, *, view: PhotoView | None = None, frame_interval: float = 0.0,
             worker_threads: int | None = None, first_frame_threads: int | None = None) -> Iterator[EditEvent]:
        """A live drag (``draggan.engine.live_drag``): frames stream while the engine steps. With a ``view``
        and a photo, each frame also carries the view of the photo edited by that frame (motion transfer,
        on the renderer thread, at the view's resolution; the full-resolution photo is :meth:`photo_frame`).

        Set up at once: bad points or settings raise here (PointError, DragConfigError, MaskError).
        Closing the iterator stops the drag; Stop (:meth:`stop`) ends it after the current step.
        """
        record, depth = self._begin()
        on_frame = None
        if view is not None and self.has_photo:
            background, alignment = self.background(view), self.view_alignment(view)

            def on_frame(state, image):
                return self._transfer(background, alignment, image, self.records, (record, state.handles))

        try:
            live = live_drag(self.session, max_steps=max_steps, frame_interval=frame_interval,
                             worker_threads=worker_threads, first_frame_threads=first_frame_threads,
                             on_frame=on_frame)
        except Exception:
            self._running = None
            raise
        return self._live(live, record, depth, view)

    def _live(self, live, record: DragRecord, depth: int, view: PhotoView | None) -> Iterator[EditEvent]:
        last = None
        try:
            for event in live:
                if event.kind == "warning":
                    yield EditEvent("warning", text=event.text)
                    continue
                last = event.state or last
                if event.kind == "frame":
                    self._record_frame(record, event.image, event.state)
                    yield EditEvent("frame", event.state, event.image, event.derived, view,
                                    event.state.step - record.first_step)
        finally:
            live.close()
            self._finish(record, depth)
        square = self.square()
        if last is not None and record in self.records and (
                not record.frames or not np.array_equal(record.frames[-1].image, square)):
            self._record_frame(record, square, last, tracked=record.tracked)
        yield EditEvent("end", last, square, steps=0 if last is None else last.step - record.first_step)

    def run(self, max_steps: int | None = None, image_every: int = 0) -> Iterator[DragState]:
        """A plain drag on this thread (the CLI, scripts): the engine's states, recorded in the history like
        :meth:`drag`'s. ``image_every=k`` renders every k-th state's image (and records it as a frame)."""
        record, depth = self._begin()
        try:
            steps = self.session.drag(max_steps=max_steps, image_every=image_every)
        except Exception:
            self._running = None
            raise
        try:
            for state in steps:
                if state.image is not None:
                    self._record_frame(record, state.image, state)
                yield state
        finally:
            steps.close()
            self._finish(record, depth)

    def _record_frame(self, record: DragRecord, image, state: DragState, tracked=None) -> None:
        record.frames.append(Frame(np.asarray(image, np.uint8).copy(),
                                   np.array(state.handles if tracked is None else tracked, np.float32),
                                   np.array(state.targets, np.float32)))
        records = self.records + ([] if any(r is record for r in self.records) else [record])
        if sum(len(r.frames) for r in records) > MAX_FRAMES:
            for r in records:
                r.frames = r.frames[::2]

    def stop(self) -> None:
        """Ask a running drag to end after its current step (safe from any thread)."""
        self.session.stop()

    def undo(self) -> bool:
        """Back to the image before the last drag (its record goes too); False if there is nothing to undo."""
        if not self.session.undo():
            return False
        if self.records:
            self.records.pop()
        handles = self.session.handles
        if handles is not None and not self._points_changed and len(handles) == len(self._handles):
            self._handles = [tuple(map(float, h)) for h in handles]
        self._changed()
        return True

    def reset(self) -> None:
        """Back to the original image, every drag forgotten; the handles return to where they were placed."""
        self.session.reset()
        self.records.clear()
        self._handles = list(self._initial)
        self._points_changed = bool(self._handles) or self._points_changed
        self._changed()

    @property
    def can_undo(self) -> bool:
        return self.session.undo_depth > 0

    @property
    def frames(self) -> list[Frame]:
        """Every recorded frame of the drags in the history (and of the one running), oldest first."""
        records = self.records + ([self._running] if self._running is not None else [])
        return [f for r in records for f in r.frames]

    # ----------------------------------------------------------------- images

    def square(self) -> np.ndarray:
        """The generator's current image (R x R x 3 uint8)."""
        if self._square is None:
            self._square = self.session.render()
        return self._square

    def background(self, view: PhotoView) -> np.ndarray:
        """The upload as ``view`` shows it (cached)."""
        if view not in self._backgrounds:
            if len(self._backgrounds) > 4:
                self._backgrounds.clear()
            self._backgrounds[view] = view.crop(self._photo_rgb)
        return self._backgrounds[view]

    @staticmethod
    def _transfer_points(records: list[DragRecord], running=None):
        """(handles, targets, tracked, movable) of the drags in ``records`` plus the ``running`` one
        ((record, its tracked handles now)); a drag continued after Stop counts once, as it is now."""
        latest = {r.points_id: (r, r.tracked) for r in records}
        if running is not None:
            latest[running[0].points_id] = running
        if not latest:
            return None
        parts = list(latest.values())
        masks = [r.mask for r, _ in parts]
        movable = None if any(m is None for m in masks) else np.logical_or.reduce(masks)
        return (np.concatenate([r.start for r, _ in parts]), np.concatenate([r.targets for r, _ in parts]),
                np.concatenate([np.asarray(t, np.float32) for _, t in parts]), movable)

    def _transfer(self, photo: np.ndarray, alignment, square, records, running=None, mode: str = "motion",
                  settings: MotionSettings | None = None) -> TransferResult:
        points = self._transfer_points(records, running)
        if points is None and mode == "motion":
            return unchanged(photo, alignment)
        handles, targets, tracked, movable = points if points is not None else (None, None, None, None)
        return transfer_edit(photo, alignment, self.original, square, handles, targets, tracked=tracked, mode=mode,
                             settings=settings, movable=movable)

    def photo_frame(self, mode: str = "motion", settings: MotionSettings | None = None) -> TransferResult | None:
        """The whole photo at its own resolution, edited by the drags in the history (cached until the image
        changes); ``mode`` 'paste' pastes the square back instead. None without a photo."""
        if not self.has_photo:
            return None
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        key = ("photo", mode)
        if settings is not None or key not in self._results:
            result = self._transfer(self._photo_rgb, self.alignment, self.square(), self.records, mode=mode,
                                    settings=settings)
            if settings is not None:
                return result
            self._results[key] = result
        return self._results[key]

    def view_frame(self, view: PhotoView) -> TransferResult | None:
        """The photo as edited, at ``view``'s resolution (what the canvas shows; cached). None without a photo."""
        if not self.has_photo:
            return None
        key = ("view", view)
        if key not in self._results:
            self._results[key] = self._transfer(self.background(view), self.view_alignment(view), self.square(),
                                                self.records)
        return self._results[key]

    # ----------------------------------------------------------------- drawing

    def canvas(self, view: PhotoView, *, photo: TransferResult | None = None, square: np.ndarray | None = None,
               tracked=None, pending=None, smooth: bool = True, shade_mask: bool = True) -> np.ndarray:
        """The editing canvas: the photo as edited in ``view`` (``photo``: a frame's, else the current one; without
        a photo, the square, or ``square``, upscaled smoothly or in crisp blocks), the fixed part of a mask
        dimmed (``shade_mask``), where the model reaches outlined, and the points on top. ``tracked``: square
        handles to draw instead of the current ones (a frame's); ``pending``: a handle in photo pixels waiting
        for its target."""
        if self.has_photo:
            base = np.asarray((photo if photo is not None else self.view_frame(view)).image)
        else:
            base = upscale(self.square() if square is None else square, view.size[0] // self.resolution, smooth)
        movable = self.mask_in_view(view) if shade_mask else None
        if movable is not None:
            base = shade_outside(base, movable)
        if self.has_photo:
            base = self._outline_footprint(base, view)
        handles = self._handles if tracked is None else np.asarray(tracked, np.float64).reshape(-1, 2)
        matrix = _compose(view.matrix, self._to_photo)
        return draw_points(base, handles, self._targets, transform=matrix,
                           pending=None if pending is None else self.photo_to_square([pending])[0])

    def _outline_footprint(self, image: np.ndarray, view: PhotoView) -> np.ndarray:
        """A thin line where the generator's square ends: points go inside it."""
        corners = view.to_view(self.footprint())
        out = image.copy()
        cv2.polylines(out, [np.round(corners * 4).astype(np.int32)], True, FOOTPRINT_COLOR, 1, cv2.LINE_AA, shift=2)
        return cv2.addWeighted(out, 0.6, image, 0.4, 0)

    def square_view(self, square: np.ndarray | None = None, tracked=None, smooth: bool = True,
                    longest: int = SQUARE_VIEW_SIZE) -> np.ndarray:
        """The generator's own square ("what the model sees"), upscaled, with the points in its pixels."""
        scale = view_scale(self.resolution, longest)
        image = upscale(self.square() if square is None else square, scale, smooth)
        handles = self._handles if tracked is None else tracked
        return draw_points(image, handles, self._targets, scale, numbers=False)

    def photo_video_frames(self, view: PhotoView, max_frames: int = 60) -> list[np.ndarray]:
        """The drags in the history as the canvas showed them: the photo moving in ``view``, with its points
        (at most ``max_frames``, evenly spaced, the last always in). Empty without a photo or a drag."""
        if not self.has_photo:
            return []
        entries = [(i, f) for i, r in enumerate(self.records) for f in r.frames]
        if not entries:
            return []
        keep = np.unique(np.linspace(0, len(entries) - 1, min(max_frames, len(entries))).round().astype(int))
        background, alignment = self.background(view), self.view_alignment(view)
        matrix = _compose(view.matrix, self._to_photo)
        out = []
        for i, frame in (entries[k] for k in keep):
            photo = self._transfer(background, alignment, frame.image, self.records[:i],
                                   (self.records[i], frame.handles))
            out.append(draw_points(np.asarray(photo.image), frame.handles, frame.targets, transform=matrix))
        return out

    def square_video_frames(self) -> list[np.ndarray]:
        """The drags in the history on the generator's square, frame by frame, each with its drag's mask (as the
        CLI's --video)."""
        return [drag_frame(f.image, f.handles, f.targets, r.mask) for r in self.records for f in r.frames]


def drag_photo(result: InversionResult, handles, targets, config: DragConfig | None = None, mask=None,
               mode: str = "motion", settings: MotionSettings | None = None,
               max_steps: int | None = None) -> TransferResult:
    """Drag an inverted photo's points and return the edited photo (the whole edit in one call).

        from inversion import drag_photo, invert
        result = invert("me.jpg", G)
        edit = drag_photo(result, [(51, 92), (76, 92)], [(49, 88), (78, 88)])   # smile, square pixels
        edit.image.save("me-smiling.png")      # the photo at its own resolution
        edit.square                            # the generator's edited image (R x R x 3 uint8)

    handles, targets : (x, y) in the generator's pixels (the aligned square); for photo pixels use
              :class:`PhotoEdit` (``set_points(..., coordinates="photo")``).
    config  : a ``DragConfig`` (default: the engine's defaults); mask: R x R, True = may move.
    mode    : 'motion' (default) or 'paste'.
    """
    edit = PhotoEdit.from_inversion(result, config)
    edit.set_points(handles, targets, coordinates="square")
    if mask is not None:
        edit.set_mask(mask)
    for _ in edit.run(max_steps=max_steps):
        pass
    out = edit.photo_frame(mode, settings)
    out.square = edit.square()
    return out


__all__ = ["COORDINATES", "DragRecord", "EditEvent", "Frame", "PhotoEdit", "PhotoView", "VIEW_SIZE", "drag_photo",
           "identity_alignment"]
