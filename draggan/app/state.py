"""Per-user editing state for a multi-user app, and the bounded stores that hold it.

* :class:`ModelPool` loads each base generator once per (source, device); every
  session shares it read-only (the drag engine never changes G).
* :class:`UserSession` is what one browser tab owns: one :class:`inversion.edit.PhotoEdit`
  (the image, its points, mask, drags, undo history and, for an inverted photo, the photo and
  its tuned generator), a photo edit put aside by a sampled face (until the user goes back to
  it), the click waiting for its target, how the canvas is shown, and the tickets that let a
  Stop cancel a drag that is still waiting in the queue.
* :class:`SessionStore` keeps sessions by id, bounded by count, by the number
  and bytes of tuned generators (the only large per-user objects), and by an
  idle time-to-live. Dropping a session (tab closed, expired, evicted) stops
  its work and frees what it owned.
The live (streaming) drag itself is :mod:`draggan.engine.live`, run by ``PhotoEdit.drag``.

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

from inversion.edit import PhotoEdit, PhotoView

from ..engine import DragConfig
from ..engine.points import PointError
from ..loaders import load_generator


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
class ParkedEdit:
    """A photo edit that a sampled face replaced, kept until the user goes back to it or inverts another photo."""

    edit: PhotoEdit
    model: str | None
    tuned: bool


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
        self.view_smooth = True                  # the model's square upscaled smoothly; False: in crisp blocks
        self.view_whole = False                  # the canvas shows the whole photo, not the face
        self.parked: ParkedEdit | None = None    # a photo edit a sampled face replaced ("Back to your photo")
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
        """Forget the image: its edit (latent, points, mask, history, photo) and the click in progress."""
        self.model: str | None = None
        self.tuned = False                               # the edit's generator is this user's own (a photo)
        self.edit: PhotoEdit | None = None
        self.source: str | None = None                   # 'sample' or 'photo'
        self.seed: int | None = None
        self.truncation: float | None = None
        self.pending: tuple[float, float] | None = None  # a handle (photo pixels) waiting for its target

    def load_latent(self, G, ws: torch.Tensor, config: DragConfig, model: str, source: str, *,
                    seed: int | None = None, truncation: float | None = None, inversion=None,
                    tuned: bool = False) -> np.ndarray:
        """Start editing a new latent (sampled face or inverted photo); returns its image.

        A photo edit replaced by a sampled face is kept aside (:meth:`back_to_photo`); a new photo
        replaces it."""
        has_photo = inversion is not None and inversion.photo is not None
        edit = PhotoEdit(G, ws, config, photo=inversion.photo if has_photo else None,
                         alignment=inversion.alignment if has_photo else None,
                         inversion=inversion)     # raises DragConfigError before anything is replaced
        with self.lock:
            if source == "photo":
                self.parked = None
            elif self.edit is not None and self.source == "photo":
                self.parked = ParkedEdit(self.edit, self.model, self.tuned)
            self.clear_image()
            self.model, self.tuned, self.edit = model, tuned, edit
            self.source, self.seed, self.truncation = source, seed, truncation
            self.notice = None
        return edit.square()

    def back_to_photo(self) -> bool:
        """The photo edit a sampled face replaced, as it was (points, history and all); False if there is none."""
        with self.lock:
            parked = self.parked
            if parked is None:
                return False
            self.clear_image()
            self.model, self.tuned, self.edit, self.source = parked.model, parked.tuned, parked.edit, "photo"
            self.parked = None
            return True

    @property
    def generator(self) -> torch.nn.Module | None:
        """The base model or this user's tuned copy."""
        return None if self.edit is None else self.edit.G

    @property
    def drag(self):
        """The engine's DragSession of the current edit."""
        return None if self.edit is None else self.edit.session

    @property
    def inversion(self):
        return None if self.edit is None else self.edit.inversion

    @property
    def has_photo(self) -> bool:
        return self.edit is not None and self.edit.has_photo

    @property
    def image(self) -> np.ndarray | None:
        """The generator's current image (R x R x 3 uint8)."""
        return None if self.edit is None else self.edit.square()

    @property
    def resolution(self) -> int | None:
        return None if self.edit is None else self.edit.resolution

    @property
    def has_image(self) -> bool:
        return self.edit is not None

    @property
    def holds_tuned(self) -> bool:
        """This session keeps a tuned generator (its photo edit, or the one put aside)."""
        return self.tuned or (self.parked is not None and self.parked.tuned)

    def canvas_view(self) -> PhotoView | None:
        """What the canvas shows now: the face of the photo (or all of it), or the sampled face."""
        return None if self.edit is None else self.edit.view(whole=self.view_whole)

    def ensure_config(self, config: DragConfig) -> bool:
        """Use ``config`` for the next drag; the edit keeps the image, points, mask and undo history.
        Returns True if the settings changed (raises DragConfigError and keeps the old ones if they cannot work)."""
        return False if self.edit is None else self.edit.configure(config)

    def undo(self) -> bool:
        """Back to the image before the last drag; False if there is nothing to undo."""
        return self.edit is not None and self.edit.undo()

    def reset(self) -> None:
        """Back to the original image; handles return to where they were placed; every drag forgotten."""
        if self.edit is not None:
            self.edit.reset()

    @property
    def can_undo(self) -> bool:
        return self.edit is not None and self.edit.can_undo

    # ----------------------------------------------------------------- points (photo pixels)

    @property
    def handles(self) -> list[tuple[float, float]]:
        """The handles in photo pixels (the square's for a sampled face), where the last drag left them."""
        return [] if self.edit is None else self.edit.points("photo")[0]

    @property
    def targets(self) -> list[tuple[float, float]]:
        return [] if self.edit is None else self.edit.points("photo")[1]

    @property
    def mask(self) -> np.ndarray | None:
        """The movable region in the generator's pixels (R x R bool), or None."""
        return None if self.edit is None else self.edit.mask

    def clear_points(self) -> None:
        with self.lock:
            self.pending = None
            if self.edit is not None:
                self.edit.clear_points()

    def add_click(self, x: float, y: float) -> str:
        """A click on the image (photo pixels): alternately a handle and its target. Returns 'handle' or 'target'.
        A point the model does not cover raises PointError and changes nothing."""
        if self.edit is None:
            raise PointError("there is no image to place points on yet")
        point = self.edit.check_point((x, y))
        with self.lock:
            if self.pending is None:
                self.pending = point
                return "handle"
            self.edit.add_pair(self.pending, point)
            self.pending = None
            return "target"

    def remove_last_point(self) -> str | None:
        """Undo the last click: a waiting handle, or the last target (its handle then waits again)."""
        with self.lock:
            if self.pending is not None:
                self.pending = None
                return "handle"
            pair = None if self.edit is None else self.edit.pop_pair()
            if pair is None:
                return None
            self.pending = pair[0]
            return "target"

    def set_points(self, handles, targets, coordinates: str = "photo") -> None:
        """Replace all points at once (validated; raises PointError)."""
        if self.edit is None:
            raise PointError("there is no image to place points on yet")
        with self.lock:
            self.edit.set_points(handles, targets, coordinates)
            self.pending = None

    def set_mask(self, mask: np.ndarray | None) -> None:
        """Set the movable-region mask (R x R bool) or None; applied to the engine at the next drag."""
        if self.edit is not None:
            with self.lock:
                self.edit.set_mask(mask)

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

    # ----------------------------------------------------------------- files

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
        self.close_image()
        if self._export_dir is not None:
            shutil.rmtree(self._export_dir, ignore_errors=True)
            self._export_dir = None

    def close_image(self) -> None:
        """Forget the image and the photo edit put aside (their tuned generators go with them)."""
        with self.lock:
            self.clear_image()
            self.parked = None

    def tuned_bytes(self) -> int:
        total = module_bytes(self.generator) if (self.tuned and self.generator is not None) else 0
        if self.parked is not None and self.parked.tuned:
            total += module_bytes(self.parked.edit.G)
        return total


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
                others = [s for s in self._sessions.values() if s is not session and s.holds_tuned]
                count = len(others) + 1
                total = sum(s.tuned_bytes() for s in others) + new_bytes
                if count <= self.max_tuned and total <= self.max_tuned_bytes:
                    break
                idle = [s for s in others if s.busy is None]
                if not idle:
                    break
                victim = min(idle, key=lambda s: s.last_used)
                with victim.lock:
                    if victim.tuned:
                        victim.clear_image()
                    victim.parked = None                # a photo edit put aside goes too
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
            return sum(1 for s in self._sessions.values() if s.holds_tuned)

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


__all__ = ["ModelPool", "ParkedEdit", "SessionError", "SessionStore", "UserSession", "module_bytes"]
