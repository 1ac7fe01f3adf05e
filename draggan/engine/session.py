"""The DragGAN drag engine: an interactive session that drags handle points to targets.

One step (Pan et al., SIGGRAPH 2023, Sec. 3):

    1. forward the latent to synthesis block ``feature_block`` -> features F,
    2. track the handles on F (nearest initial handle feature in a window, no grad),
    3. motion supervision at the tracked handles (+ mask term),
    4. backward to the optimized latent layers and take one Adam step.

Everything in a step stays on the device with static shapes (offset grids are
built once; handles that already arrived are masked out instead of dropped), so
:meth:`DragSession._step` can later be captured as a CUDA graph. The host reads
one small tensor per step: handle positions, distances, loss and two flags.

Coordinates are image pixels (x, y) of the generator's ``R x R`` output.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .config import DragConfig, DragConfigError, MaskError, default_feature_block, generator_autocast
from .cuda_graphs import GraphedCall, StepGraph, adam, set_lr
from .features import sample_features, synthesis_features
from .line_search import LineSearch, feature_distance, patch_features, start_line_search, update_line_search
from .motion import disk_offsets, fixed_region_loss, motion_supervision_loss, support_box, warp_supervision_loss
from .points import PointError, validate_points
from .region import Canvas, LocalBlend, edit_region, resize_mask, to_block
from .tracking import track_points, window_offsets
from .window import Window, changed_boxes, finish_in_window, worth_it

# Consecutive non-finite steps after which a drag gives up (each one halves the lr).
MAX_NONFINITE_RETRIES = 8
# Eager steps before a CUDA graph is captured (they also initialize Adam's state).
GRAPH_WARMUP_STEPS = 2


@dataclass
class DragState:
    """What a drag reports after every step.

    step      : steps taken since the points were set (counts across resumed drag() calls).
    handles   : [N, 2] float (x, y) handle positions tracked in this step.
    targets   : [N, 2] float (x, y) targets.
    distances : [N] Euclidean handle-target distances, in pixels.
    done      : every handle is within the stop distance (the latent was not changed by this step).
    loss      : the step's objective (motion + mask term).
    image     : HxWx3 uint8 image of the latent after the step, or None on steps that skip rendering.
    partial_frame : with ``drag(partial_frames=True)``: what the step's own forward pass computed of
                the image of the latent it started from (see :class:`PartialFrame`); else None.
    warning   : a human sentence when something was recovered from (non-finite loss), else None.
    """

    step: int
    handles: np.ndarray
    targets: np.ndarray
    distances: np.ndarray
    done: bool
    loss: float
    image: np.ndarray | None = None
    partial_frame: "PartialFrame | None" = None
    warning: str | None = None


@dataclass
class PartialFrame:
    """The first ``block`` synthesis blocks of a frame, as a drag step computed them.

    A step runs the generator up to its feature block for the latent it starts from,
    so :func:`finish_frame` draws that latent's image at the cost of the remaining
    blocks only. The frame is one step behind the latent, and it is exactly the
    image in which the step tracked the state's handles.
    """

    ws: torch.Tensor        # [1, num_ws, w_dim] the latent the step started from
    block: int              # synthesis blocks already run (the feature block)
    features: torch.Tensor  # [1, C, h, w] that block's output
    skip: torch.Tensor      # [1, img_channels, h, w] the skip image up to that block
    window: Window | None = None  # a local drag's window (window.py): the later blocks run on its boxes only


@dataclass
class _Optimization:
    """Per-points optimization state; rebuilt when points, mask or latent are replaced."""

    param: torch.Tensor          # trainable latent offset, [1, L, w_dim] (W+) or [1, 1, w_dim] (W)
    prev_param: torch.Tensor     # the offset before the running step (restored on non-finite / done)
    optimizer: torch.optim.Optimizer
    lr: float
    feat0: torch.Tensor          # [1, C, h, w] features of the image when the points were set
    ref_features: torch.Tensor   # [N, C] features of the initial handles (tracking templates)
    stop_distance: torch.Tensor  # [N] pixels: the configured distance, or the closest the pixel grid allows
    stop_distance_px: float
    blend: LocalBlend | None = None         # the local edit's blend (region.py); None: the whole image may change
    handles0: torch.Tensor | None = None    # [N, 2] the handles when the points were set (warp supervision)
    warp_weight: torch.Tensor | None = None  # [1, 1, h, w] the region at the feature block (None: everywhere)
    warp_box: tuple[int, int, int, int] | None = None  # the feature pixels where warp_weight is not 0
    line: LineSearch | None = None          # tracking "line": feature dragging along the lines (line_search.py)
    nonfinite_streak: int = 0
    runner: StepGraph | None = None         # takes DragSession._step, eagerly or as a replayed CUDA graph
    partial_frames: bool = False            # the step keeps its features and skip image (see PartialFrame)
    frame_features: torch.Tensor | None = None  # those, written in place by every step
    frame_skip: torch.Tensor | None = None


@dataclass(frozen=True)
class EditState:
    """What a session's image is made of: ``render_state`` draws it.

    ws     : [1, num_ws, w_dim] the latent.
    canvas : the blocks' output up to ``canvas.block`` of the image before the running drag, where earlier
             local drags were blended in (None: none were, the image is ``G.synthesis(ws)``).
    blend  : a running local drag's blend (region.py), applied to ``ws``'s own output at its block.
    """

    ws: torch.Tensor
    canvas: Canvas | None = None
    blend: LocalBlend | None = None

    def to_dict(self) -> dict:
        """Plain tensors on the CPU, for torch.save (the running blend folded into the canvas by the session)."""
        if self.blend is not None:
            raise ValueError("fold the running blend first (DragSession.state() does)")
        canvas = None if self.canvas is None else {"block": self.canvas.block,
                                                   "features": self.canvas.features.detach().cpu(),
                                                   "skip": self.canvas.skip.detach().cpu()}
        return {"ws": self.ws.detach().float().cpu(), "canvas": canvas}

    @classmethod
    def from_dict(cls, d: dict, device=None) -> "EditState":
        c = d.get("canvas")
        canvas = None if c is None else Canvas(int(c["block"]), torch.as_tensor(c["features"]).to(device),
                                               torch.as_tensor(c["skip"]).to(device))
        return cls(torch.as_tensor(d["ws"]).float().to(device), canvas)


@dataclass
class _Snapshot:
    state: EditState
    handles: np.ndarray | None
    points_id: int


class DragSession:
    """An editing session on one latent: set points (and a mask), then drag.

    ``G`` is shared and read-only: the session never changes its parameters,
    gradients or mode. ``ws`` is the starting W+ latent [1, num_ws, w_dim].

    Latent parametrization: the optimized variable is an offset added to the
    latent (zero at the start of a drag), which gives the same Adam steps as
    optimizing the latent itself. In W+ mode it covers the first
    ``optimize_layers`` layers; in W mode one [w_dim] offset is shared by all
    layers (for a W latent, that is exactly optimizing w).

    Undo/reset: ``history`` holds the latent before each drag() call that
    changed it; :meth:`undo` restores the last one (and the handle positions of
    that time, if the points were not replaced since); :meth:`reset` restores
    the original latent and moves the handles back to where they were set.
    """

    def __init__(self, G, ws: torch.Tensor, config: DragConfig | None = None, device=None):
        self.G = G
        self.config = config or DragConfig()
        if not isinstance(self.config, DragConfig):
            raise DragConfigError(f"config must be a DragConfig, got {type(self.config).__name__}")
        param = next(G.parameters())
        self.device = torch.device(device) if device is not None else param.device
        if param.device.type != self.device.type or (
                self.device.index is not None and param.device.index not in (None, self.device.index)):
            raise DragConfigError(f"the generator is on {param.device} but the session was asked to run on "
                                  f"{self.device}; move the generator there first (G.to(device))")
        self.resolution = int(G.img_resolution)
        self.num_ws, self.w_dim = int(G.num_ws), int(G.w_dim)
        self._apply_config(self.config)
        ws = torch.as_tensor(ws)
        if ws.ndim == 2:
            ws = ws.unsqueeze(0)
        if tuple(ws.shape) != (1, self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape [1, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        self._original = ws.detach().to(self.device, torch.float32).clone()
        self._base = self._original.clone()
        self._canvas: Canvas | None = None                 # earlier local drags, blended in (see EditState)
        self._edit_layers = self.num_ws                    # W+ layers a drag may change (fewer for local edits)

        self._handles: torch.Tensor | None = None          # [N, 2] on the device
        self._handles_np: np.ndarray | None = None
        self._targets: torch.Tensor | None = None
        self._targets_np: np.ndarray | None = None
        self._initial_handles_np: np.ndarray | None = None
        self._distances_np: np.ndarray | None = None
        self._points_id = 0
        self._step_count = 0                               # steps since the points were set
        self._fixed: torch.Tensor | None = None            # [R, R] float, 1 = must not change
        self._mask_np: np.ndarray | None = None

        self._opt: _Optimization | None = None
        self._graph_failed = False                         # capture failed once: eager steps from then on
        self._history: list[_Snapshot] = []
        self._version = 0                                  # bumped whenever a running drag must end
        self._lock = threading.RLock()
        self._stop = threading.Event()

    # ------------------------------------------------------------------ public state

    @property
    def ws(self) -> torch.Tensor:
        """The current latent [1, num_ws, w_dim] (a detached copy)."""
        with self._lock:
            return self._current_ws().detach().clone()

    @property
    def history(self) -> list[torch.Tensor]:
        """Latents before each drag() call that changed the latent, oldest first (copies)."""
        with self._lock:
            return [s.state.ws.clone() for s in self._history]

    def state(self) -> EditState:
        """The current image's :class:`EditState` (a copy; a running drag's blend folded in)."""
        with self._lock:
            ws = self._current_ws().detach().clone()
            blend = None if self._opt is None else self._opt.blend
            canvas = self._canvas if blend is None else self._composite(ws, blend)
            return EditState(ws, canvas)

    def frame_state(self) -> EditState:
        """The current image's :class:`EditState` without drawing anything (render it with :func:`render_state`).

        Cheap enough to call between steps: the blend is applied by whoever renders it.
        """
        with self._lock:
            blend = None if self._opt is None else self._opt.blend
            return EditState(self._current_ws().detach().clone(), self._canvas if blend is None else None, blend)

    @property
    def handles(self) -> np.ndarray | None:
        return None if self._handles_np is None else self._handles_np.copy()

    @property
    def targets(self) -> np.ndarray | None:
        return None if self._targets_np is None else self._targets_np.copy()

    @property
    def distances(self) -> np.ndarray | None:
        return None if self._distances_np is None else self._distances_np.copy()

    @property
    def initial_handles(self) -> np.ndarray | None:
        """The handles where the current points were set (before any drag moved them)."""
        return None if self._initial_handles_np is None else self._initial_handles_np.copy()

    @property
    def points_id(self) -> int:
        """Counts :meth:`set_points` calls: a drag continued after a Stop keeps the same id."""
        return self._points_id

    @property
    def step_count(self) -> int:
        """Steps taken since the points were set (across resumed drag() calls)."""
        return self._step_count

    @property
    def undo_depth(self) -> int:
        """How many drags :meth:`undo` can take back (the length of :attr:`history`, without copying it)."""
        return len(self._history)

    @property
    def mask(self) -> np.ndarray | None:
        """The current HxW bool mask (True = allowed to move), or None."""
        return None if self._mask_np is None else self._mask_np.copy()

    @property
    def lr(self) -> float:
        """The learning rate in use (halved by non-finite recoveries)."""
        return self._opt.lr if self._opt is not None else self.config.lr

    # ------------------------------------------------------------------ editing

    def set_points(self, handles, targets) -> None:
        """Set handle points and their targets, lists of (x, y) in image pixels (raises PointError)."""
        handles, targets = validate_points(handles, targets, self.resolution)
        with self._lock:
            self._invalidate()
            self._points_id += 1
            self._step_count = 0
            self._handles_np = np.asarray(handles, dtype=np.float32)
            self._targets_np = np.asarray(targets, dtype=np.float32)
            self._initial_handles_np = self._handles_np.copy()
            self._distances_np = np.linalg.norm(self._targets_np - self._handles_np, axis=1)
            self._handles = torch.from_numpy(self._handles_np.copy()).to(self.device)
            self._targets = torch.from_numpy(self._targets_np.copy()).to(self.device)

    def set_mask(self, mask) -> None:
        """HxW mask, 1/True where the image may change (bool, 0/1 or 0..255); None clears it."""
        movable = None if mask is None else self._parse_mask(mask)
        with self._lock:
            self._invalidate()
            self._mask_np = movable
            if movable is None or movable.all():
                self._fixed = None  # nothing is fixed: no mask term
            else:
                self._fixed = torch.from_numpy((~movable).astype(np.float32)).to(self.device)

    def _parse_mask(self, mask) -> np.ndarray:
        m = np.asarray(mask)
        if m.ndim == 3 and m.shape[-1] == 1:
            m = m[..., 0]
        R = self.resolution
        if m.shape != (R, R):
            raise MaskError(f"mask must be a {R}x{R} array (one value per image pixel), got shape {m.shape}")
        if m.dtype == bool:
            return m.copy()
        if not np.issubdtype(m.dtype, np.number):
            raise MaskError(f"mask must be boolean or numeric, got dtype {m.dtype}")
        m = m.astype(np.float32)
        if not np.isfinite(m).all():
            raise MaskError("mask contains NaN or infinite values")
        scale = 255.0 if m.max() > 1 else 1.0
        return m / scale >= 0.5

    def stop(self) -> None:
        """Ask a running drag to end after its current step (safe from any thread)."""
        self._stop.set()

    def undo(self) -> bool:
        """Go back to the latent before the last drag() call; False if there is nothing to undo."""
        with self._lock:
            if not self._history:
                return False
            snap = self._history.pop()
            self._invalidate()
            self._base, self._canvas = snap.state.ws.clone(), snap.state.canvas
            if snap.points_id == self._points_id and snap.handles is not None:
                self._restore_handles(snap.handles)
            return True

    def reset(self) -> None:
        """Back to the original latent (history cleared); handles return to where they were set."""
        with self._lock:
            self._invalidate()
            self._history.clear()
            self._base, self._canvas = self._original.clone(), None
            if self._initial_handles_np is not None:
                self._restore_handles(self._initial_handles_np)

    @torch.no_grad()
    def render(self) -> np.ndarray:
        """The current image, HxWx3 uint8."""
        with self._lock:
            return self.render_frame(self.frame_state())

    @property
    def graphs_frames(self) -> bool:
        """Whether :meth:`render_frame` replays CUDA graphs (else it is :func:`render_state`)."""
        return self._frames.enabled

    def render_frame(self, state: EditState) -> np.ndarray:
        """The image of ``state`` (:meth:`frame_state`), HxWx3 uint8: a replayed CUDA graph where steps are one.

        Takes no session lock (a live view draws while the next step runs).
        """
        return self._frames.render(state)

    def reconfigure(self, config: DragConfig) -> None:
        """Use ``config`` from the next drag on, keeping the image, points, mask and undo history.

        Raises DragConfigError (and keeps the old settings) if ``config`` cannot work with this generator.
        """
        if not isinstance(config, DragConfig):
            raise DragConfigError(f"config must be a DragConfig, got {type(config).__name__}")
        with self._lock:
            old = self.config
            try:
                self._apply_config(config)
            except DragConfigError:
                self._apply_config(old)
                raise
            self._invalidate()
            self.config = config

    # ------------------------------------------------------------------ dragging

    def drag(self, max_steps: int | None = None, image_every: int = 1,
             partial_frames: bool = False) -> Iterator[DragState]:
        """Run the optimization, yielding a DragState after every step.

        Ends when every handle is within the stop distance (``done``), after
        ``max_steps`` steps of this call (default ``config.max_steps``), or
        after :meth:`stop`. A new call continues from the current latent and
        handles (with the same optimizer state). ``image_every=k`` renders the
        image every k-th step and on the final state; 0 never renders (call
        :meth:`render`). ``partial_frames=True`` fills every state's
        ``partial_frame``, from which :func:`finish_frame` draws a frame for
        the cost of the blocks after the feature block (what makes frames
        affordable on a CPU).
        """
        max_steps = self.config.max_steps if max_steps is None else int(max_steps)
        if max_steps < 0:
            raise DragConfigError(f"max_steps must be >= 0, got {max_steps}")
        image_every = int(image_every or 0)
        # Set up eagerly (not at the first next()), so errors surface here and a
        # stop() issued right after this call is not lost.
        with self._lock:
            if self._handles is None:
                raise PointError("no points to drag: call set_points(handles, targets) first")
            self._stop.clear()
            self._prepare()
            self._set_partial_frames(bool(partial_frames))
            version = self._version
        return self._drag_steps(max_steps, image_every, version)

    def _drag_steps(self, max_steps: int, image_every: int, version: int) -> Iterator[DragState]:
        with self._lock:
            snapshot = self._snapshot()
            self._history.append(snapshot)
        changed = False
        try:
            for i in range(max_steps):
                if self._stop.is_set():
                    break
                with self._lock:
                    if self._version != version:  # points/mask/latent were replaced meanwhile
                        break
                    state, stepped = self._advance()
                    changed |= stepped
                    last = (state.done or i == max_steps - 1 or self._stop.is_set()
                            or self._opt.nonfinite_streak >= MAX_NONFINITE_RETRIES)
                    if image_every and (last or state.step % image_every == 0):
                        state.image = self.render()
                yield state
                if last:
                    break
        finally:
            with self._lock:
                # A drag that did not change the latent leaves no undo entry.
                if not changed and self._history and self._history[-1] is snapshot:
                    self._history.pop()

    def _advance(self) -> tuple[DragState, bool]:
        """One step plus its single host read; returns (state, whether the latent changed)."""
        opt = self._opt
        n = self._handles.shape[0]
        info = self._run_step().cpu()   # the one device->host read
        self._step_count += 1
        warning = None
        if info[-2] > 0:
            opt.nonfinite_streak = 0
            self._handles_np = info[:2 * n].reshape(n, 2).numpy().copy()
            self._distances_np = info[2 * n:3 * n].numpy().copy()
            done_flag = bool(info[-1] > 0)
        else:
            opt.nonfinite_streak += 1
            self._recover_from_nonfinite()
            warning = (f"step {self._step_count}: the loss or latent became non-finite; restored the last good latent "
                       f"and halved the learning rate to {opt.lr:.3g}")
            if opt.nonfinite_streak >= MAX_NONFINITE_RETRIES:
                warning += f" (giving up after {opt.nonfinite_streak} failures in a row)"
            done_flag = False
        state = DragState(step=self._step_count, handles=self._handles_np.copy(), targets=self._targets_np.copy(),
                          distances=self._distances_np.copy(), done=done_flag, loss=float(info[3 * n]),
                          warning=warning)
        if opt.partial_frames:  # copies where a graph's next replay overwrites the buffers in place
            copy = (lambda t: t.clone()) if opt.runner.enabled else (lambda t: t)
            state.partial_frame = PartialFrame(self._compose(opt.prev_param).detach().clone(), self.feature_block,
                                               copy(opt.frame_features), copy(opt.frame_skip),
                                               None if opt.blend is None else opt.blend.window)
        return state, (warning is None and not done_flag)

    def _run_step(self) -> torch.Tensor:
        """Take one step, eagerly or by replaying the captured graph; returns the step's info tensor."""
        runner = self._opt.runner
        info = runner()
        if runner.failed:             # capture failed (it warned once): no graphs for later points either
            self._graph_failed = True
        return info

    def _step(self) -> torch.Tensor:
        """One DragGAN step on the device: static shapes, no host sync (so it can be captured).

        Reads and updates ``self._handles`` in place. Returns the step's info as
        one flat tensor: [new handles (2N), distances (N), loss, ok, done].
        When every handle is already within the stop distance (``done``) or the
        step produced non-finite numbers (``not ok``), the latent and the handles
        are left as they were.
        """
        opt = self._opt
        param, handles = opt.param, self._handles
        with torch.no_grad():
            opt.prev_param.copy_(param)
        with self._autocast():
            out = self._features(self._compose(param), opt.blend, with_image=opt.partial_frames)
        if opt.partial_frames:
            feat, skip = out
            with torch.no_grad():
                if not opt.runner.enabled:              # eager: every step makes new tensors, nothing to copy
                    opt.frame_features, opt.frame_skip = feat.detach(), skip.detach()
                elif opt.frame_features is None:        # allocated in an eager step, before any capture
                    opt.frame_features, opt.frame_skip = feat.detach().clone(), skip.detach().clone()
                else:
                    opt.frame_features.copy_(feat.detach())
                    opt.frame_skip.copy_(skip.detach())
        else:
            feat = out
        feat = feat.float()
        # Line search: the handles are where their templates were last dragged to, so there is nothing to search.
        tracked = handles if opt.line is not None else track_points(feat.detach(), handles, opt.ref_features,
                                                                     self._window, self.resolution)
        active = (self._targets - tracked).norm(dim=1) > opt.stop_distance
        if opt.line is None:
            loss = motion_supervision_loss(feat, tracked, self._targets, self._disk, self.resolution, active=active,
                                           feat0=opt.feat0, fixed=self._fixed, lambda_mask=self.config.lambda_mask)
        else:
            goal_features = patch_features(feat, opt.line.goals, self._disk, self.resolution)
            goal_loss = feature_distance(goal_features, opt.line.templates)
            loss = (goal_loss * active.float()).sum()
            if self._fixed is not None:
                loss = loss + self.config.lambda_mask * fixed_region_loss(feat, opt.feat0, self._fixed,
                                                                          self.resolution)
        if self.config.lambda_warp:
            loss = loss + self.config.lambda_warp * warp_supervision_loss(
                feat, opt.feat0, opt.handles0, tracked, self._targets, self.resolution,
                self.config.warp_sigma * self.resolution, opt.warp_weight, active, opt.warp_box)
        if self.config.lambda_latent:
            loss = loss + self.config.lambda_latent * param.float().square().sum(-1).mean()
        opt.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=[param])  # only the latent gets a gradient; G stays untouched
        opt.optimizer.step()
        with torch.no_grad():
            ok = torch.isfinite(loss) & torch.isfinite(param).all()
            done = ok & ~active.any()
            param.copy_(torch.where(ok & ~done, param, opt.prev_param))
            if opt.line is not None:
                tracked = update_line_search(opt.line, feat.detach(), goal_features.detach(), goal_loss.detach(),
                                             handles, self._targets, active & ok, self._disk, self.resolution)
            handles.copy_(torch.where(ok, tracked, handles))
            distances = (self._targets - handles).norm(dim=1)
            return torch.cat([handles.flatten(), distances, loss.detach().reshape(1).float(),
                              ok.reshape(1).float(), done.reshape(1).float()])

    def _recover_from_nonfinite(self) -> None:
        """The step already restored the latent on the device; reset Adam's moments and halve the lr.

        Done in place, so a captured graph (which holds these very tensors) stays valid.
        """
        opt = self._opt
        opt.lr *= 0.5
        self._set_lr(opt.lr)
        with torch.no_grad():
            for state in opt.optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()

    def _set_partial_frames(self, on: bool) -> None:
        """Keep the step's partial frame or not; a captured graph is recaptured (Adam's state is kept)."""
        opt = self._opt
        if opt.partial_frames != on:
            opt.partial_frames = on
            opt.runner = StepGraph(self._step, self.device, enabled=opt.runner.enabled,
                                   warmup_steps=GRAPH_WARMUP_STEPS)

    def _set_lr(self, lr: float) -> None:
        set_lr(self._opt.optimizer, lr)

    # ------------------------------------------------------------------ internals

    def _use_cuda_graph(self) -> bool:
        wanted = self.config.cuda_graph
        if wanted is None:
            wanted = self.device.type == "cuda"
        if wanted and self.device.type != "cuda":
            raise DragConfigError(f"cuda_graph=True needs a CUDA device, not {self.device}")
        return bool(wanted) and not self._graph_failed

    def _autocast(self):
        return generator_autocast(self.config, self.device)

    def _compose(self, param: torch.Tensor | None) -> torch.Tensor:
        """Base latent plus the optimized offset -> W+ [1, num_ws, w_dim]."""
        if param is None:
            return self._base
        if self.config.latent_space == "w":
            ws = self._base + param
        else:
            n = param.shape[1]
            ws = torch.cat([self._base[:, :n] + param, self._base[:, n:]], dim=1)
        k = self._edit_layers
        if k < self.num_ws:  # a local edit: the layers after the blend block keep the unedited image's styles
            ws = torch.cat([ws[:, :k], self._base[:, k:]], dim=1)
        return ws

    def _current_ws(self) -> torch.Tensor:
        return self._compose(None if self._opt is None else self._opt.param.detach())

    def _invalidate(self) -> None:
        """Fold the optimized offset into the base latent and drop the optimization state."""
        if self._opt is not None:
            ws = self._current_ws().detach().clone()
            if self._opt.blend is not None:
                self._canvas = self._composite(ws, self._opt.blend)
            self._base = ws
            self._opt = None
        self._version += 1

    def _snapshot(self) -> _Snapshot:
        handles = None if self._handles_np is None else self._handles_np.copy()
        return _Snapshot(self.state(), handles, self._points_id)

    def _restore_handles(self, handles: np.ndarray) -> None:
        self._handles_np = np.asarray(handles, dtype=np.float32).copy()
        self._handles = torch.from_numpy(self._handles_np.copy()).to(self.device)
        self._distances_np = np.linalg.norm(self._targets_np - self._handles_np, axis=1)

    @torch.no_grad()
    def _prepare(self) -> None:
        """Build the optimization state for the current points/mask/latent (once per points set)."""
        if self._opt is not None:
            return
        cfg = self.config
        layers = 1 if cfg.latent_space == "w" else cfg.optimize_layers
        param = torch.zeros(1, layers, self.w_dim, device=self.device, requires_grad=True)
        blend = self._prepare_blend()
        with self._autocast():
            feat0 = self._features(self._base, blend, with_image=False)
        feat0 = feat0.float()
        ref = sample_features(feat0, self._handles, self.resolution)
        stop_px = cfg.stop_distance_for(self.resolution, len(self._handles_np))
        # A handle moves on the integer grid around where it started, so a target off that grid is never
        # reached exactly: a handle has arrived within stop_px or as close as the grid allows.
        offset = self._targets_np - self._handles_np
        grid_floor = np.linalg.norm(offset - np.round(offset), axis=1) + 1e-3
        stop = torch.from_numpy(np.maximum(stop_px, grid_floor).astype(np.float32)).to(self.device)
        warp_weight = None if blend is None else resize_mask(blend.mask, feat0.shape[-1])
        graphed = self._use_cuda_graph()
        # A graph replays the optimizer step as captured: lr and step count live on the device.
        optimizer = adam([param], cfg.lr, graphed)
        self._opt = _Optimization(
            param=param, prev_param=param.detach().clone(), optimizer=optimizer,
            lr=cfg.lr, feat0=feat0, ref_features=ref,
            stop_distance=stop, stop_distance_px=stop_px, blend=blend,
            handles0=self._handles.clone(),
            warp_weight=warp_weight, warp_box=None if warp_weight is None else support_box(warp_weight),
            line=None if cfg.tracking == "nn" else start_line_search(
                feat0, self._handles, self._targets, self._disk, self.resolution, cfg.line_step_for(self.resolution)),
            runner=StepGraph(self._step, self.device, enabled=graphed, warmup_steps=GRAPH_WARMUP_STEPS))

    def _apply_config(self, cfg: DragConfig) -> None:
        """Resolve ``cfg`` against the generator (feature and blend blocks, radii, offset grids)."""
        G = self.G
        num_blocks = len(G.synthesis.block_resolutions)
        feature_block = cfg.feature_block if cfg.feature_block is not None else default_feature_block(G)
        if feature_block > num_blocks:
            resolutions = ", ".join(f"{i + 1}: {r}px" for i, r in enumerate(G.synthesis.block_resolutions))
            raise DragConfigError(f"feature_block {feature_block} does not exist: this {self.resolution}px "
                                  f"generator has {num_blocks} synthesis blocks ({resolutions})")
        if cfg.latent_space == "w+" and cfg.optimize_layers > self.num_ws:
            raise DragConfigError(f"optimize_layers {cfg.optimize_layers} exceeds the generator's "
                                  f"{self.num_ws} W+ layers")
        blend_block = None
        if cfg.local:
            blend_block = cfg.blend_block if cfg.blend_block is not None else max(1, feature_block - 1)
            if blend_block > feature_block:
                raise DragConfigError(f"blend_block {blend_block} comes after the feature block {feature_block}: "
                                      "the drag's features must be computed from the blended image")
        self.feature_block, self.blend_block = feature_block, blend_block
        self.r1, self.r2 = cfg.radii(self.resolution)
        self._disk = disk_offsets(self.r1, self.device)        # motion supervision neighbourhood, [D, 2]
        self._window = window_offsets(self.r2, self.device)    # tracking search window, [W, 2]
        graphs = self.device.type == "cuda" and cfg.cuda_graph is not False
        self._frames = FrameRenderer(G, cfg, self.device, enabled=graphs)

    def _features(self, ws: torch.Tensor, blend: LocalBlend | None, with_image: bool):
        """The feature block's output for ``ws`` (and its skip image ``with_image``), blended when local."""
        noise, const = self.config.noise_mode, self._const_layers()
        if blend is None:
            return synthesis_features(self.G, ws, self.feature_block, noise, with_image=with_image, const_from=const)
        x, img = blended_output(self.G, ws, blend, noise, const_from=const)
        if blend.block < self.feature_block:
            x, img = finish_in_window(self.G, x, img, ws, blend.block, blend.window, noise,
                                      last_block=self.feature_block, with_rgb=with_image, const_from=const)
        return (x, img) if with_image else x

    def _const_layers(self) -> int | None:
        """The first W+ layer a drag leaves as it is (:meth:`_compose`), or None: all of them change."""
        changed = self.config.optimize_layers if self.config.latent_space == "w+" else self.num_ws
        first = min(changed, self._edit_layers)
        return first if first < self.num_ws else None

    @torch.no_grad()
    def _composite(self, ws: torch.Tensor, blend: LocalBlend) -> Canvas:
        """The blended output of ``blend.block`` for ``ws``: the image of a local drag, as a Canvas."""
        with self._autocast():
            x, img = blend.apply(*synthesis_features(self.G, ws, blend.block, self.config.noise_mode,
                                                     with_image=True))
        return Canvas(blend.block, x.detach(), img.detach())

    @torch.no_grad()
    def _prepare_blend(self) -> LocalBlend | None:
        """The blend for a drag from the current image; sets which W+ layers the drag may change.

        A global drag on an image that has a canvas (earlier local drags) still goes through
        a blend, with a region of ones, so that it starts from the image on screen.
        """
        canvas, block = self._canvas, self.blend_block
        if block is None and canvas is None:
            self._edit_layers = self.num_ws
            return None
        if canvas is not None:
            block = canvas.block if block is None else max(block, canvas.block)
            if block > self.feature_block:
                raise DragConfigError(
                    f"this image holds local edits blended at synthesis block {canvas.block}; the feature block "
                    f"({self.feature_block}) must not come before it. Choose a finer feature block, or Reset.")
        noise = self.config.noise_mode
        with self._autocast():
            x, img = synthesis_features(self.G, self._base, block, noise, with_image=True)
        reference = Canvas(block, x, img)
        if canvas is None:
            canvas = reference
        elif canvas.block < block:   # carry the canvas up to the blend block: exact, the blocks read the same ws
            with self._autocast():
                x, img = self.G.synthesis.finish(canvas.features, canvas.skip, self._base, canvas.block, noise,
                                                 last_block=block)
            canvas = Canvas(block, x, img)
        if self.blend_block is None:
            region = np.ones((self.resolution, self.resolution), np.float32)
        else:
            cfg = self.config
            region = edit_region(self.resolution, self._handles_np, self._targets_np, self._mask_np,
                                 cfg.region_radius, cfg.region_feather)
        mask = to_block(region, reference.features.shape[-1], self.device)
        last = len(self.G.synthesis.block_resolutions)
        self._edit_layers = self.num_ws if block == last else self.G.synthesis.first_layer_of_block(block + 1)
        return LocalBlend(mask, reference, canvas, self._edit_window(block, mask, reference, canvas))

    @torch.no_grad()
    def _edit_window(self, block: int, mask: torch.Tensor, reference: Canvas, canvas: Canvas) -> Window | None:
        """The blend's :class:`Window`: where the drag can change each block from ``block`` on, and the unedited
        image there. At ``block`` the box is the region's: outside it the blend keeps the canvas, whatever the
        drag's latent draws there, so the unedited output (``reference``) stands in for it.

        None when the config turns it off (by default on CUDA), the noise is random, or the region leaves too
        little out.
        """
        box = support_box(mask)
        windowed = self.config.windowed if self.config.windowed is not None else self.device.type != "cuda"
        if not windowed or self.config.noise_mode == "random" or box is None:
            return None
        boxes = {block: box, **changed_boxes(self.G, block, box)}
        if not worth_it(self.G, boxes):
            return None
        noise, features, skips = self.config.noise_mode, {block: reference.features}, {block: reference.skip}
        x, img = canvas.features, canvas.skip
        with self._autocast():
            if self.feature_block > block:
                x, img = self.G.synthesis.finish(x, img, self._base, block, noise, last_block=self.feature_block)
                features[self.feature_block], skips[self.feature_block] = x, img
            image = self.G.synthesis.finish(x, img, self._base, max(block, self.feature_block), noise)
        return Window(boxes, features, skips, image)

    @property
    def stop_distance(self) -> float:
        """The stop distance in pixels for the current points."""
        n = 1 if self._handles_np is None else len(self._handles_np)
        return self.config.stop_distance_for(self.resolution, n)


def blended_output(G, ws: torch.Tensor, blend: LocalBlend, noise_mode: str, const_from: int | None = None):
    """The blend block's output for ``ws`` blended into the canvas: (features, skip image).

    With a window, the blend block itself runs on the region's box only (its input, the block
    below, on the whole image): outside the box the blend keeps the canvas anyway.
    """
    block, window = blend.block, blend.window
    if window is None or block < 2:
        return blend.apply(*synthesis_features(G, ws, block, noise_mode, with_image=True, const_from=const_from))
    x, img = synthesis_features(G, ws, block - 1, noise_mode, with_image=True, const_from=const_from)
    return blend.apply(*finish_in_window(G, x, img, ws, block - 1, window, noise_mode, last_block=block,
                                         const_from=const_from))


@torch.no_grad()
def render_state(G, state: EditState, config: DragConfig) -> np.ndarray:
    """The image of an :class:`EditState`, HxWx3 uint8 (thread-safe: it only reads the state and G)."""
    return host_image(frame_tensor(G, state, config))


@torch.no_grad()
def frame_tensor(G, state: EditState, config: DragConfig) -> torch.Tensor:
    """The image of an :class:`EditState` as an HxWx3 uint8 tensor on the generator's device."""
    noise = config.noise_mode
    with generator_autocast(config, state.ws.device):
        if state.blend is not None:
            block = state.blend.block
            x, img = blended_output(G, state.ws, state.blend, noise)
            img = finish_in_window(G, x, img, state.ws, block, state.blend.window, noise_mode=noise)
        elif state.canvas is not None:
            c = state.canvas
            img = G.synthesis.finish(c.features, c.skip, state.ws, c.block, noise_mode=noise)
        else:
            img = G.synthesis(state.ws, noise_mode=noise)
    return uint8_tensor(img)


class FrameRenderer:
    """Draws a session's frames, replaying a captured CUDA graph per kind of frame on a GPU.

    A full frame at 512 px is a few hundred small kernels, as a step is, and bound by their
    launches in the same way. The graph of a frame takes the latent as its input; it is
    captured for the plain image, or for the canvas or running blend it draws on, after
    two eager frames, and again when those change. Off CUDA (or with ``cuda_graph=False``)
    it is :func:`render_state`. One frame at a time (a lock): the graph's buffers are shared.
    """

    def __init__(self, G, config: DragConfig, device: torch.device, enabled: bool):
        self.G, self.config, self.device, self.enabled = G, config, device, enabled
        self._graphs: dict = {}
        self._lock = threading.Lock()

    def render(self, state: EditState) -> np.ndarray:
        if not self.enabled:
            return render_state(self.G, state, self.config)
        key = (id(state.canvas), id(state.blend))
        with self._lock:
            entry = self._graphs.get(key)
            if entry is None:
                # Held with the graph, so that the ids stay theirs; only the latest kind is kept.
                canvas, blend = state.canvas, state.blend
                graph = GraphedCall(lambda ws: frame_tensor(self.G, EditState(ws, canvas, blend), self.config),
                                    self.device, enabled=True, warmup_steps=GRAPH_WARMUP_STEPS)
                self._graphs = {key: (graph, canvas, blend)}
                entry = self._graphs[key]
            image = host_image(entry[0](state.ws))    # read before the next replay overwrites it
            if entry[0].failed:
                self.enabled = False
            return image


def finish_frame(G, frame: PartialFrame, config: DragConfig) -> np.ndarray:
    """The full image of a :class:`PartialFrame`, HxWx3 uint8 (the blocks after ``frame.block`` only)."""
    with torch.no_grad(), generator_autocast(config, frame.ws.device):
        img = finish_in_window(G, frame.features, frame.skip, frame.ws, frame.block, frame.window,
                               noise_mode=config.noise_mode)
    return to_uint8(img)


def uint8_tensor(img: torch.Tensor) -> torch.Tensor:
    """[1, C, H, W] image in [-1, 1] -> HxWx3 uint8, on its device."""
    x = (img[0].detach().float().clamp(-1, 1) + 1) * 127.5
    x = x.round().to(torch.uint8).permute(1, 2, 0)
    return x.expand(-1, -1, 3) if x.shape[-1] == 1 else x


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[1, C, H, W] image in [-1, 1] -> HxWx3 uint8."""
    return host_image(uint8_tensor(img))


def host_image(image: torch.Tensor) -> np.ndarray:
    """An HxWx3 uint8 tensor from :func:`uint8_tensor` as a NumPy array of its own."""
    return np.ascontiguousarray(image.cpu().numpy())


__all__ = ["DragSession", "DragState", "EditState", "FrameRenderer", "PartialFrame", "finish_frame", "frame_tensor",
           "render_state", "to_uint8"]
