"""Per-user editing state for a multi-user app, and the bounded stores that hold it.

* :class:`ModelPool` loads each base generator once per (source, device); every
  session shares it read-only (the drag engine never changes G).
* :class:`UserSession` is everything one browser tab owns: the drag session
  (latent, undo history), its points and mask, the inverted photo and its tuned
  generator, the frames recorded for a video, and the tickets that let a Stop
  cancel a drag that is still waiting in the queue.
* :class:`SessionStore` keeps sessions by id, bounded by count, by the number
  and bytes of tuned generators (the only large per-user objects), and by an
  idle time-to-live. Dropping a session (tab closed, expired, evicted) stops
  its work and frees what it owned.
The live (streaming) drag itself is :mod:`draggan.engine.live`.

Nothing here knows about Gradio; the app maps its session hash to a session id.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..engine import DragConfig, DragSession
from ..engine.points import PointError, validate_points
from ..loaders import load_generator

MAX_FRAMES = 400          # recorded video frames per session; beyond this, every other frame is dropped


class SessionError(Exception):
    """A request that the session store cannot serve (message says why, for the user)."""


def module_bytes(module: torch.nn.Module) -> int:
    """Memory held by a module's parameters and buffers."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


# --------------------------------------------------------------------------- base models


class ModelPool:
    """Base generators, loaded once per (source, device) and shared read-only.

    ``loader(source, device=..., progress=...)`` defaults to
    :func:`draggan.loaders.checkpoints.load_generator`; ``prepare(G)``, if given, runs once
    on each loaded model (e.g. a faster memory layout). Concurrent requests for the
    same model wait for one load instead of loading it twice.
    """

    def __init__(self, loader: Callable | None = None, prepare: Callable | None = None):
        self._loader = loader if loader is not None else load_generator
        self._prepare = prepare
        self._models: dict[tuple[str, str], torch.nn.Module] = {}
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(source, device) -> tuple[str, str]:
        return str(source), str(torch.device(device))

    def is_loaded(self, source, device) -> bool:
        return self._key(source, device) in self._models

    def get(self, source, device="cpu", progress=False) -> torch.nn.Module:
        """The shared generator for ``source`` on ``device`` (loaded on first use; raises CheckpointError)."""
        key = self._key(source, device)
        model = self._models.get(key)
        if model is not None:
            return model
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self._models:
                G = self._loader(source, device=device, progress=progress)
                G.eval().requires_grad_(False)
                if self._prepare is not None:
                    G = self._prepare(G) or G
                self._models[key] = G
            return self._models[key]

    def __len__(self) -> int:
        return len(self._models)


# --------------------------------------------------------------------------- one user's state


@dataclasses.dataclass
class Frame:
    """One recorded frame of a drag: the image and where the points were."""

    image: np.ndarray       # R x R x 3 uint8
    handles: np.ndarray     # [N, 2]
    targets: np.ndarray     # [N, 2]


class UserSession:
    """What one user (browser tab) owns. Not thread-safe on its own: the app serializes
    a user's heavy work with :attr:`busy`, and point edits take :attr:`lock`."""

    def __init__(self, session_id: str, export_root: Path | None = None):
        self.id = session_id
        self.lock = threading.RLock()
        self.created = self.last_used = time.monotonic()
        self._export_root = export_root
        self._export_dir: Path | None = None
        self.notice: str | None = None          # told to the user at their next request (e.g. after an eviction)
        self.view_smooth = False                 # display preference: smooth instead of crisp upscaling
        self.clear_image()
        # Work in progress.
        self.busy: str | None = None             # 'drag' or 'invert' while one runs
        self.cancel_inversion = threading.Event()  # set by Cancel; the running or next inversion checks it
        self._inversion_claimed = True
        self._tickets = 0                        # drag requests handed out
        self._stopped_upto = 0                   # drag requests cancelled by Stop
        self._pending_ticket: int | None = None

    # ----------------------------------------------------------------- image and latent

    def clear_image(self) -> None:
        """Forget the image, its latent, points, mask, photo and frames."""
        self.model: str | None = None
        self.generator: torch.nn.Module | None = None   # the base model or this user's tuned copy
        self.tuned = False                               # generator is this user's own (inverted photo)
        self.drag: DragSession | None = None
        self.image: np.ndarray | None = None             # current R x R x 3 uint8
        self.source: str | None = None                   # 'sample' or 'photo'
        self.seed: int | None = None
        self.truncation: float | None = None
        self.inversion = None                            # inversion.InversionResult of the photo
        self.original_image: np.ndarray | None = None    # the image the latent started from (a photo edit's 'before')
        self.photo_points: list[tuple] = []              # (handles, targets) of every drag since then (photo edits)
        self.photo_edit = None                           # the last inversion.PhotoEdit shown
        self.clear_points()
        self.mask: np.ndarray | None = None
        self.mask_changed = False
        self.frames: list[Frame] = []

    def load_latent(self, G, ws: torch.Tensor, config: DragConfig, model: str, source: str, *,
                    seed: int | None = None, truncation: float | None = None, inversion=None,
                    tuned: bool = False) -> np.ndarray:
        """Start editing a new latent (sampled face or inverted photo); returns its image."""
        drag = DragSession(G, ws, config)     # raises DragConfigError before anything is replaced
        image = drag.render()
        with self.lock:
            self.clear_image()
            self.model, self.generator, self.tuned, self.drag = model, G, tuned, drag
            self.source, self.seed, self.truncation, self.inversion = source, seed, truncation, inversion
            self.image = image
            self.original_image = image
            self.notice = None
        return image

    @property
    def resolution(self) -> int | None:
        return None if self.drag is None else self.drag.resolution

    @property
    def has_image(self) -> bool:
        return self.drag is not None and self.image is not None

    def refresh_image(self) -> np.ndarray:
        self.image = self.drag.render()
        return self.image

    def ensure_config(self, config: DragConfig) -> bool:
        """Use ``config`` for the next drag; the engine keeps the image, points, mask and undo history.
        Returns True if the settings changed (raises DragConfigError and keeps the old ones if they cannot work)."""
        if self.drag is None:
            return False
        # max_steps only bounds each drag() call: a change needs no reconfiguration.
        if dataclasses.replace(self.drag.config, max_steps=config.max_steps) == config:
            self.drag.config.max_steps = config.max_steps
            return False
        self.drag.reconfigure(config)
        return True

    def undo(self) -> bool:
        """Back to the image before the last drag; False if there is nothing to undo."""
        if self.drag is None or not self.drag.undo():
            return False
        handles = self.drag.handles
        if handles is not None and not self.points_changed and len(handles) == len(self.handles):
            self.handles = [tuple(map(float, h)) for h in handles]
        self.refresh_image()
        return True

    def reset(self) -> None:
        """Back to the original image; handles return to where they were placed; video frames cleared."""
        if self.drag is None:
            return
        self.drag.reset()
        self.handles = list(self.initial_handles)
        self.points_changed = bool(self.handles) or self.points_changed
        self.frames.clear()
        self.photo_points.clear()
        self.refresh_image()

    @property
    def can_undo(self) -> bool:
        return self.drag is not None and bool(self.drag.history)

    # ----------------------------------------------------------------- points

    def clear_points(self) -> None:
        self.handles: list[tuple[float, float]] = []
        self.targets: list[tuple[float, float]] = []
        self.initial_handles: list[tuple[float, float]] = []
        self.pending: tuple[float, float] | None = None   # a handle waiting for its target
        self.points_changed = True

    def add_click(self, x: float, y: float) -> str:
        """A click on the image: alternately a handle and its target. Returns 'handle' or 'target'."""
        if self.resolution is None:
            raise PointError("there is no image to place points on yet")
        validate_points([(x, y)], [(x, y)], self.resolution)
        with self.lock:
            if self.pending is None:
                self.pending = (float(x), float(y))
                return "handle"
            self.handles.append(self.pending)
            self.targets.append((float(x), float(y)))
            self.initial_handles = list(self.handles)
            self.pending = None
            self.points_changed = True
            return "target"

    def remove_last_point(self) -> str | None:
        """Undo the last click: a waiting handle, or the last target (its handle then waits again)."""
        with self.lock:
            if self.pending is not None:
                self.pending = None
                return "handle"
            if not self.handles:
                return None
            self.pending = self.handles.pop()
            self.targets.pop()
            self.initial_handles = list(self.handles)
            self.points_changed = True
            return "target"

    def set_points(self, handles, targets) -> None:
        """Replace all points at once (validated; raises PointError)."""
        if self.resolution is None:
            raise PointError("there is no image to place points on yet")
        if handles:
            handles, targets = validate_points(handles, targets, self.resolution)
        with self.lock:
            self.handles = [tuple(map(float, h)) for h in handles]
            self.targets = [tuple(map(float, t)) for t in targets]
            self.initial_handles = list(self.handles)
            self.pending = None
            self.points_changed = True

    def set_mask(self, mask: np.ndarray | None) -> None:
        """Set the movable-region mask (R x R bool) or None; applied to the engine at the next drag."""
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.all():
                mask = None   # everything may move: the same as no mask
        with self.lock:
            if (mask is None and self.mask is None) or (
                    mask is not None and self.mask is not None and np.array_equal(mask, self.mask)):
                return
            self.mask = mask
            self.mask_changed = True

    def sync_engine(self) -> None:
        """Hand changed points and mask to the drag session (before a drag)."""
        with self.lock:
            if self.points_changed:
                self.drag.set_points(self.handles, self.targets)
                self.points_changed = False
            if self.mask_changed:
                self.drag.set_mask(self.mask)
                self.mask_changed = False

    def take_engine_handles(self) -> None:
        """After a drag, the handles are where the engine tracked them."""
        handles = None if self.drag is None else self.drag.handles
        if handles is not None and not self.points_changed:
            with self.lock:
                self.handles = [tuple(map(float, h)) for h in handles]

    # ----------------------------------------------------------------- drag tickets

    def request_drag(self) -> int:
        """A Start click: hand out a ticket; the drag that runs for it checks :meth:`drag_cancelled`."""
        with self.lock:
            self._tickets += 1
            self._pending_ticket = self._tickets
            return self._tickets

    def claim_ticket(self) -> int:
        """The ticket of the drag about to run (a fresh one when no Start click asked for it)."""
        with self.lock:
            ticket = self._pending_ticket if self._pending_ticket is not None else self.request_drag()
            self._pending_ticket = None
            return ticket

    def stop_drags(self) -> None:
        """Stop: cancels every drag requested so far, running or still queued."""
        with self.lock:
            self._stopped_upto = self._tickets
            drag = self.drag
        if drag is not None:
            drag.stop()

    def drag_cancelled(self, ticket: int) -> bool:
        return ticket <= self._stopped_upto

    def request_inversion(self) -> threading.Event:
        """An Invert click: a fresh cancel flag, so that Cancel also works while it waits in the queue."""
        with self.lock:
            self.cancel_inversion = threading.Event()
            self._inversion_claimed = False
            return self.cancel_inversion

    @property
    def inversion_waiting(self) -> bool:
        """An Invert click whose inversion has not started yet."""
        return not self._inversion_claimed

    def claim_inversion(self) -> threading.Event:
        """The cancel flag of the inversion about to run (a fresh one when no Invert click asked for it)."""
        with self.lock:
            if self._inversion_claimed:
                self.cancel_inversion = threading.Event()
            self._inversion_claimed = True
            return self.cancel_inversion

    # ----------------------------------------------------------------- frames and files

    def record_frame(self, image: np.ndarray, handles, targets, max_frames: int = MAX_FRAMES) -> None:
        self.frames.append(Frame(np.asarray(image, dtype=np.uint8).copy(), np.array(handles, dtype=np.float32),
                                 np.array(targets, dtype=np.float32)))
        if len(self.frames) > max_frames:
            self.frames = self.frames[::2]

    @property
    def export_dir(self) -> Path:
        """A private folder for this session's downloads (removed when the session is dropped)."""
        if self._export_dir is None:
            root = self._export_root or Path(tempfile.gettempdir()) / "draggan-studio"
            root.mkdir(parents=True, exist_ok=True)
            self._export_dir = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        return self._export_dir

    def close(self) -> None:
        """Stop work in progress and free everything this session owns."""
        self.cancel_inversion.set()
        self.stop_drags()
        with self.lock:
            self.clear_image()
        if self._export_dir is not None:
            shutil.rmtree(self._export_dir, ignore_errors=True)
            self._export_dir = None

    def tuned_bytes(self) -> int:
        return module_bytes(self.generator) if (self.tuned and self.generator is not None) else 0


# --------------------------------------------------------------------------- the store


class SessionStore:
    """Sessions by id, with bounds.

    max_sessions    : sessions kept at once; a new one evicts the least recently used idle session.
    max_tuned       : tuned generators (inverted photos) kept at once.
    max_tuned_bytes : total bytes of tuned generators.
    ttl_s           : a session unused this long is dropped (a tab closed without telling us).

    Tuned generators over a bound are taken from the least recently used idle
    sessions; such a session keeps working with a notice that its photo must be
    inverted again. A session that is busy (dragging, inverting) is never evicted.
    """

    def __init__(self, max_sessions: int = 64, max_tuned: int = 4, max_tuned_bytes: int = 2 << 30,
                 ttl_s: float = 3600.0, export_root=None, clock: Callable[[], float] = time.monotonic):
        self.max_sessions = max_sessions
        self.max_tuned = max_tuned
        self.max_tuned_bytes = max_tuned_bytes
        self.ttl_s = ttl_s
        self.export_root = Path(export_root) if export_root else None
        self._clock = clock
        self._sessions: dict[str, UserSession] = {}
        self._lock = threading.RLock()

    def get(self, session_id: str | None, create: bool = True) -> UserSession | None:
        """The session for ``session_id`` (created if missing and ``create``); marks it used."""
        session_id = session_id or uuid.uuid4().hex
        with self._lock:
            self.sweep()
            session = self._sessions.get(session_id)
            if session is None and create:
                if len(self._sessions) >= self.max_sessions:
                    victim = self._least_recent_idle()
                    if victim is None:
                        raise SessionError("Too many people are editing right now; please try again in a few "
                                           "minutes.")
                    self._drop(victim.id)
                session = UserSession(session_id, export_root=self.export_root)
                session.created = self._clock()
                self._sessions[session_id] = session
            if session is not None:
                session.last_used = self._clock()
            return session

    def drop(self, session_id: str | None) -> bool:
        """Forget a session and free what it owns (tab closed). False if it was not there."""
        with self._lock:
            return self._drop(session_id)

    def _drop(self, session_id) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        session.close()
        return True

    def sweep(self) -> list[str]:
        """Drop idle sessions older than the TTL; returns their ids."""
        now = self._clock()
        with self._lock:
            expired = [sid for sid, s in self._sessions.items()
                       if s.busy is None and now - s.last_used > self.ttl_s]
            for sid in expired:
                self._drop(sid)
        return expired

    def attach_tuned(self, session: UserSession, G: torch.nn.Module) -> list[str]:
        """Make room for ``session``'s new tuned generator ``G`` (before it is loaded into the session).

        Frees tuned generators of other idle sessions, least recently used first,
        until the count and byte bounds hold with ``G`` added. Returns the ids of
        sessions that lost theirs. If the bounds still cannot hold (busy sessions
        own the rest), ``G`` is accepted anyway: a user's finished work is not thrown away.
        """
        new_bytes = module_bytes(G)
        evicted = []
        with self._lock:
            while True:
                others = [s for s in self._sessions.values() if s is not session and s.tuned]
                count = len(others) + 1
                total = sum(s.tuned_bytes() for s in others) + new_bytes
                if count <= self.max_tuned and total <= self.max_tuned_bytes:
                    break
                idle = [s for s in others if s.busy is None]
                if not idle:
                    break
                victim = min(idle, key=lambda s: s.last_used)
                with victim.lock:
                    victim.clear_image()
                    victim.notice = ("Your inverted photo was closed to free memory for other users. "
                                     "Upload it again to continue editing.")
                evicted.append(victim.id)
        return evicted

    def busy_count(self, exclude: UserSession | None = None) -> int:
        """Sessions running a drag or an inversion now, ``exclude`` not counted (nothing is marked used)."""
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.busy is not None and s is not exclude)

    def tuned_count(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.tuned)

    def tuned_bytes(self) -> int:
        with self._lock:
            return sum(s.tuned_bytes() for s in self._sessions.values())

    def _least_recent_idle(self) -> UserSession | None:
        idle = [s for s in self._sessions.values() if s.busy is None]
        return min(idle, key=lambda s: s.last_used) if idle else None

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id) -> bool:
        return session_id in self._sessions

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)


__all__ = ["Frame", "MAX_FRAMES", "ModelPool", "SessionError", "SessionStore", "UserSession", "module_bytes"]
