"""DragGAN Studio: the web app (Gradio 6 Blocks).

    python app.py                      # http://127.0.0.1:7860, the bundled celeba128 model
    python app.py --share              # also a public gradio.live link
    python app.py --model path/to/generator --device cuda --port 8000

This file only wires the interface to the library: one edit (the photo or a sampled face, its
points, mask, drags, history and the photo edited frame by frame) is ``inversion.edit.PhotoEdit``,
photo inversion is ``inversion``, per-user state is ``draggan.app.state`` and drawing is
``draggan.drawing.overlay``. It runs unchanged as a Hugging Face Space (``@spaces.GPU`` is used
where the ``spaces`` package exists).

Every user (browser tab) gets a private :class:`draggan.app.state.UserSession`
keyed by Gradio's session hash; the base generators are shared read-only.
Drags and inversions share one concurrency slot per device, behind a bounded queue.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import random
import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from gradio import processing_utils
from PIL import Image

from draggan.app.launch import on_zero_gpu, serve, warm_up
from draggan.app.state import ModelPool, SessionError, SessionStore, UserSession
from draggan.drawing.overlay import movable_layer
from draggan.drawing.video import VideoError, write_video
from draggan.engine import DragConfig, DragConfigError, MaskError, default_feature_block
from draggan.engine.live import torch_threads
from draggan.engine.points import PointError, format_points, parse_points
from draggan.loaders import registry
from draggan.loaders.checkpoints import CheckpointError
from draggan.loaders.download import DownloadError, is_offline
from draggan.runtime import default_device, fast_autocast, runtime_for
from inversion import Cancelled, InversionConfig, InversionError, PhotoError, invert, read_photo
from inversion.edit import COORDINATES
from inversion.photo import MAX_FILE_BYTES
from inversion.pipeline import PRESET_COSTS, QUALITIES, InversionCache, planned_steps, rough_by_design

try:  # Hugging Face ZeroGPU: the heavy handlers borrow a GPU while they run.
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn

GPU_MAX_FPS = 15.0          # frames per second sent to the browser at most: what a person can follow
DEFAULT_SEED = 0
DEFAULT_TRUNCATION = 0.7
NO_IMAGE = "There is no image yet: pick a model and press **New face**, or upload a photo."
HELP = ("**Click the image** to place a handle (red), then its target (blue); repeat for more pairs. "
        "Optionally paint the region that may move on the **Mask** tab. Then press **Start**.")
PHOTO_HELP = ("**Click your photo** to place a handle (red), then its target (blue), inside the thin white frame "
              "(what the model covers); repeat for more pairs. Optionally paint the region that may move on the "
              "**Mask** tab. Then press **Start**: your photo moves as the model drags.")
# What /set_points' text means, by the coordinates parameter.
COORDINATE_CHOICES = [("Photo pixels (as uploaded, upright)", "photo"),
                      ("The model's square (generator pixels)", "square")]
# DragConfig.region, as the drag settings offer it.
REGION_CHOICES = [("Local: around the points, or the painted mask", "auto"),
                  ("Whole image (the DragGAN paper)", "global")]
# DragConfig.tracking: how handles are followed.
TRACKING_CHOICES = [("Search near the handle (DragGAN)", "nn"),
                    ("Along the line to the target (FreeDrag: closer to the face, moves less)", "line")]

PHOTO_PREVIEW_SIZE = 512    # the uploaded photo is shown, as read, at most this large
MAX_FEATURE_BLOCK = 9       # a 1024 px generator's last block (block b's features are 2^(b+1) px)
CANVAS_HEIGHT = 640         # the canvas box; the photo views are at most this large (inversion.edit.VIEW_SIZE)
SCREEN_JPEG_QUALITY = 92

# Gradio maps a click to image pixels assuming the image is never shown larger than its
# natural size (its scale factor is capped at 1), so the view must never be upscaled by the
# browser: the server sends an already upscaled view and "scale-down" only ever shrinks it.
CSS = """
#canvas img { object-fit: scale-down !important; }
.compact-md p { margin: 0.2em 0; }
"""


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass
class StudioSettings:
    """Everything the app is built from; tests inject tiny models and short budgets here.

    models        : label -> source (registry name, path or URL) shown in the model dropdown.
    default_model : label selected at start.
    device        : where generators run ('cpu', 'cuda', ...).
    inversion     : settings for photo inversion (None: the pipeline's presets for the device).
    max_fps       : frames per second streamed while dragging, at most.
    concurrency   : drags + inversions running at once per device.
    queue_size    : requests waiting at most (beyond: "queue full").
    autocast      : run drags under bf16 autocast (None: on GPUs and on CPUs with fast bf16).
    threads       : torch CPU threads of each drag worker (None on a CPU: half the cores, see
                    cpu_threads); an inversion, which runs alone, takes every core.
    """

    models: dict[str, str]
    default_model: str | None = None
    device: str = "cpu"
    inversion: InversionConfig | None = None
    max_fps: float = GPU_MAX_FPS
    concurrency: int = 1
    queue_size: int = 16
    autocast: bool | None = None
    threads: int | None = None
    store: SessionStore | None = None
    pool: ModelPool | None = None
    inversion_cache_items: int = 2

    def __post_init__(self):
        if not self.models:
            raise ValueError("no models to offer")
        if self.default_model is None:
            self.default_model = next(iter(self.models))
        if self.default_model not in self.models:
            raise ValueError(f"default model {self.default_model!r} is not one of {list(self.models)}")


def registry_models() -> dict[str, str]:
    """The bundled model first, then every registry model (downloaded when picked)."""
    return {name: name for name in registry.model_names()}


def default_model_for(device: str) -> str:
    """The model a visitor starts with: on a CPU without fast bf16 (e.g. AVX2 only) the distilled
    celeba128-lite, whose drag streams about twice as many frames per second there (BENCHMARKS.md, "App
    responsiveness"); otherwise, or when it is missing, celeba128. Both stay in the dropdown."""
    lite = registry.get_model("celeba128-lite")
    if (lite is not None and torch.device(device).type == "cpu" and not fast_autocast(device)
            and (registry.REPO_ROOT / lite.path / "model.safetensors").is_file()):
        return lite.name
    return next(iter(registry.model_names()))


def cpu_threads() -> int:
    """Torch threads of each drag worker on a CPU: half the cores, since a drag steps on one
    thread while another draws frames (two threads of two-thread ops on two cores slow each
    other down badly)."""
    return max(1, (os.cpu_count() or 2) // 2)


# --------------------------------------------------------------------------- feature block menu


def block_label(block: int) -> str:
    """The feature block's label in the menu: its number and the resolution of its features."""
    return f"{block} · {2 ** (block + 1)} px"


def block_choices(num_blocks: int = MAX_FEATURE_BLOCK) -> list[tuple[str, int]]:
    return [(block_label(b), b) for b in range(1, num_blocks + 1)]


def parse_feature_block(value) -> int | None:
    """A feature block given as the menu's label ('5 · 64 px') or as a plain number (5 or '5').

    None or '' means the model's default. Raises ValueError with a sentence for anything else.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    block = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        block = int(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[·.-]\s*(\d+)\s*px)?\s*", value)
        if match and (match[2] is None or int(match[2]) == 2 ** (int(match[1]) + 1)):
            block = int(match[1])
    if block is None or not 1 <= block <= MAX_FEATURE_BLOCK:
        raise ValueError(f"{value!r} is not a feature block: give a number from 1 to {MAX_FEATURE_BLOCK}, "
                         f"or a label from the menu such as '{block_label(5)}'.")
    return block


class FeatureBlock(gr.Dropdown):
    """The feature-block menu. The browser shows labels ('5 · 64 px'); a script may send either a label or
    the plain block number, and the API description lists both. Drawn by Gradio's own dropdown."""

    is_template = True          # Gradio: use the parent's (Dropdown's) frontend

    def api_info(self) -> dict:
        numbers = list(range(1, MAX_FEATURE_BLOCK + 1))
        return {"anyOf": [{"type": "integer", "enum": numbers},
                          {"type": "string", "enum": [block_label(b) for b in numbers]},
                          {"type": "null"}],
                "additional_description": f"a feature block: its number (1-{MAX_FEATURE_BLOCK}) or its label "
                                          f"('{block_label(5)}'); None: the model's default. Blocks beyond the "
                                          "model's last are taken as its last."}

    def example_payload(self):
        return 5

    def example_value(self):
        return 5

    def preprocess(self, payload):
        try:
            return parse_feature_block(payload)
        except ValueError as e:
            raise gr.Error(str(e)) from None


class ScreenImage(gr.Image):
    """An image for the screen, not for download: sent as a JPEG (quality 92, no chroma subsampling), which
    encodes a 640 px photo in about 3 ms where Gradio's PNG takes 250-300 ms; a live drag's frames would
    otherwise wait for their encoding. Drawn by Gradio's own image component."""

    is_template = True          # Gradio: use the parent's (Image's) frontend

    def postprocess(self, value):
        if isinstance(value, np.ndarray):
            data = io.BytesIO()
            Image.fromarray(value).save(data, "JPEG", quality=SCREEN_JPEG_QUALITY, subsampling=0)
            value = processing_utils.save_bytes_to_cache(data.getvalue(), "view.jpg", self.GRADIO_CACHE)
        return super().postprocess(value)


# --------------------------------------------------------------------------- formatting


def points_table(handles, targets, distances=None, pending=None, unit: str = "px") -> str:
    """Markdown table of the points (and their distances, in ``unit``)."""
    if not len(handles) and pending is None:
        return ""
    rows = ["| # | handle (red) | target (blue) | distance |", "|---|---|---|---|"]
    for i, (h, t) in enumerate(zip(handles, targets), start=1):
        d = float(np.hypot(t[0] - h[0], t[1] - h[1])) if distances is None else float(distances[i - 1])
        rows.append(f"| {i} | ({h[0]:.0f}, {h[1]:.0f}) | ({t[0]:.0f}, {t[1]:.0f}) | {d:.1f} {unit} |")
    if pending is not None:
        rows.append(f"| {len(handles) + 1} | ({pending[0]:.0f}, {pending[1]:.0f}) | *click the target* | |")
    return "\n".join(rows)


def quality_report(report: dict) -> str:
    """The inversion's quality figures as Markdown."""
    lpips = report.get("lpips")
    identity = report.get("identity_distance")
    seconds = report.get("timings", {}).get("total")
    steps = report.get("steps", {})
    if report.get("start") == "encoder":
        start = f"learned encoder ({steps.get('encoder_iterations')} passes)"
    else:
        start = f"projection ({steps.get('w', '?')} steps)"
    loss = report.get("loss_used", "?")
    if report.get("loss_note"):   # the documented offline fallback: said here, once, not as a warning
        loss += " (LPIPS's VGG16 weights are not installed: the offline fallback, see README)"
    lines = [
        "| PSNR | SSIM | LPIPS | identity distance |",
        "|---|---|---|---|",
        f"| {report['psnr']:.1f} dB | {report['ssim']:.3f} | "
        f"{'n/a' if lpips is None else f'{lpips:.3f}'} | {'n/a' if identity is None else f'{identity:.3f}'} |",
        "",
        f"Start: {start} · tuning: {steps.get('pti', '?')} steps · alignment: {report.get('alignment', '?')}"
        + ("" if seconds is None else f" · {seconds:.1f} s") + (" · from cache" if report.get("cached") else ""),
        "",
        f"Loss: {loss}",
    ]
    if report.get("poor_reconstruction") and not rough_by_design(report):
        lines.insert(0, f"**Poor reconstruction ({report['psnr']:.1f} dB)**: read the note below before editing.\n")
    for notice in report.get("notices", []):
        lines.append(f"\n⚠️ {notice}")
    for note in report.get("notes", []):
        lines.append(f"\nℹ️ {note}")
    return "\n".join(lines)


def preset_costs(device) -> str:
    """What the inversion presets take and give on this kind of device (measured; inversion.PRESET_COSTS)."""
    costs = PRESET_COSTS["cpu" if torch.device(device).type == "cpu" else "gpu"]
    return (f"Instant: {costs['instant']}. Fast: {costs['fast']}. Faithful tunes longer, closer to the photo: "
            f"{costs['faithful']}.")


def default_quality(device) -> str:
    """The inversion preset the app starts with: on a CPU the encoder's pass alone, whose edited photos match a
    20 s tuning's (BENCHMARKS.md, "What the user keeps"); on a GPU tuning takes well under a second, so 'fast'."""
    return "instant" if torch.device(device).type == "cpu" else "fast"


def queue_headline(ahead: int) -> str:
    """The status line of a drag that waits for the device."""
    work = "drag or inversion" if ahead == 1 else "drags or inversions"
    return (f"Waiting for the device: {ahead} other {work} running. Yours starts when one ends; its place in the "
            "queue is shown on the image. **Stop** cancels it.")


def photo_mode(value) -> str | None:
    """How the export puts the edit into the photo: 'motion'/True -> 'motion', 'paste' -> 'paste',
    False/'none'/None -> not at all."""
    if value is True or value == "motion":
        return "motion"
    if value == "paste":
        return "paste"
    return None


STAGE_NAMES = {"read": "Reading the photo", "align": "Finding and aligning the face",
               "encode": "Encoding the face", "project_w": "Projecting into W", "project_wplus": "Refining in W+",
               "tune": "Tuning the generator", "report": "Measuring quality"}


class InversionProgress:
    """Maps the pipeline's progress(stage, step, total) to one bar with an estimate of the time left.

    The estimate comes from measured step times only: the timed stages' steps are weighed by what one
    costs against a projection step (``STEP_COST``, measured on a 2-core CPU: a tuning step runs the
    generator forward and backward with its weights' gradients, an encoding is several forward passes),
    the rate is a running average of the weighed time per unit, and a new estimate may differ from
    the previous one counted down by at most ``MAX_SWING``, so a busy moment on a shared CPU does not
    make it jump. ``clock`` is for tests.
    """

    STEP_COST = {"encode": 3.0, "project_w": 1.0, "project_wplus": 1.0, "tune": 1.4}
    MAX_SWING = 1.5

    def __init__(self, bar, steps: dict[str, int], clock=time.perf_counter):
        self.bar, self.clock = bar, clock
        self.order = ["read", "align", "encode", "project_w", "project_wplus", "tune", "report"]
        self.steps = {k: max(0, int(steps.get(k, 1 if k in ("read", "align", "report") else 0)))
                      for k in self.order}   # 0: a stage that is skipped
        self.last = None             # (time, work done in units) of the last timed step
        self.rate = None             # seconds per unit of work, averaged
        self.shown = None            # (time, seconds left) last shown

    def units(self, stage: str, steps: float) -> float:
        return self.STEP_COST.get(stage, 0.0) * steps

    def done(self, stage: str, step: int, weigh: bool) -> float:
        """The work behind us at ``step`` of ``stage``: in steps, or (``weigh``) in units of a projection step."""
        if stage not in self.order:
            return 0.0
        count = self.units if weigh else (lambda s, n: n)
        return sum(count(s, self.steps[s]) for s in self.order[:self.order.index(stage)]) + count(stage, step)

    def eta(self, stage: str, step: int) -> float | None:
        """Seconds left after ``step`` of ``stage`` (None until two timed steps have been seen)."""
        now = self.clock()
        if stage not in self.STEP_COST:
            return None if self.shown is None else max(0.0, self.shown[1] - (now - self.shown[0]))
        done = self.done(stage, step, weigh=True)
        if self.last is not None and done > self.last[1]:
            rate = (now - self.last[0]) / (done - self.last[1])
            self.rate = rate if self.rate is None else 0.8 * self.rate + 0.2 * rate
        self.last = (now, done)
        if self.rate is None:
            return None
        eta = self.rate * (sum(self.units(s, n) for s, n in self.steps.items()) - done)
        if self.shown is not None:
            expected = max(self.shown[1] - (now - self.shown[0]), 1e-3)
            eta = min(max(eta, expected / self.MAX_SWING), expected * self.MAX_SWING)
        self.shown = (now, eta)
        return eta

    def __call__(self, stage: str, step: int, total: int) -> None:
        if stage in self.steps and total:
            self.steps[stage] = int(total)
        total_steps = sum(self.steps.values())
        done = min(total_steps, int(self.done(stage, step, weigh=False)))
        eta = self.eta(stage, step)
        left = "" if eta is None else f" · about {max(1, round(eta))} s left"
        self.bar((done, total_steps), desc=f"{STAGE_NAMES.get(stage, stage)} ({step}/{total}){left}", unit="steps")


# --------------------------------------------------------------------------- the app


class Studio:
    """Event handlers. Each takes the user's inputs plus ``request`` (for the session id) and
    returns a dict of component updates; bad input gives a gr.Warning and changes nothing."""

    def __init__(self, settings: StudioSettings):
        self.settings = settings
        self.device = settings.device
        self.store = settings.store if settings.store is not None else SessionStore()
        self.pool = settings.pool if settings.pool is not None else ModelPool(prepare=self.prepare_model)
        self.inversion_cache = InversionCache(max_items=settings.inversion_cache_items)
        self.runtime = runtime_for(self.device, settings.autocast)
        self.autocast = self.runtime.autocast
        self.frame_interval = 1.0 / settings.max_fps if settings.max_fps > 0 else 0.0
        # torch's thread count is per OS thread, and Gradio runs handlers on pool threads
        # that start with one per core: each heavy handler sets its own (sessions.torch_threads).
        on_cpu = torch.device(self.device).type == "cpu"
        self.drag_threads = (settings.threads or cpu_threads()) if on_cpu else None
        self.inversion_threads = (os.cpu_count() or 1) if on_cpu else None
        self.ui: dict[str, gr.components.Component] = {}

    # ----------------------------------------------------------------- helpers

    def prepare_model(self, G):
        return self.runtime.prepare(G)

    def session(self, request) -> UserSession:
        session_id = getattr(request, "session_hash", None) or "local"
        try:
            session = self.store.get(session_id)
        except SessionError as e:
            raise gr.Error(str(e)) from None
        if session.notice:
            gr.Warning(session.notice)
            session.notice = None
        return session

    def close_session(self, request: gr.Request) -> None:
        """Tab closed: free what it owned."""
        self.store.drop(getattr(request, "session_hash", None))

    def model_source(self, label: str) -> str:
        if label not in self.settings.models:
            raise CheckpointError(f"unknown model {label!r}; choose one of: {', '.join(self.settings.models)}")
        return self.settings.models[label]

    def model_available(self, label: str) -> bool:
        source = self.model_source(label)
        if self.pool.is_loaded(source, self.device):
            return True
        info = registry.get_model(source)
        if info is not None and not Path(source).exists():
            return registry.is_available(info)
        return Path(source).expanduser().exists()

    def model_choices(self) -> list[tuple[str, str]]:
        choices = []
        for label, source in self.settings.models.items():
            info = registry.get_model(source)
            if info is None or Path(source).exists():
                note = "local"
            else:
                note = f"{info.resolution} px, " + ("bundled" if info.path else
                                                    "downloaded" if registry.is_available(info) else "download")
            choices.append((f"{label} ({note})", label))
        return choices

    def model_info(self, label: str) -> str:
        info = registry.get_model(self.model_source(label))
        if info is None:
            return f"Local model `{self.model_source(label)}`."
        return f"{info.description}. Licence: {info.licence}."

    def drag_config(self, G, lr=None, max_steps=None, r1=None, r2=None, lambda_mask=None, space=None,
                    block=None, region=None, tracking=None) -> DragConfig:
        """A DragConfig from the UI's values (empty or 0 radii: the paper's defaults scaled to the model)."""
        base = DragConfig()
        block = parse_feature_block(block) or default_feature_block(G)
        return DragConfig(
            lr=float(lr) if lr else base.lr,
            max_steps=int(max_steps) if max_steps else base.max_steps,
            r1=float(r1) if r1 else None, r2=float(r2) if r2 else None,
            lambda_mask=float(lambda_mask) if lambda_mask is not None else base.lambda_mask,
            feature_block=min(block, G.num_blocks), region=region or base.region,
            tracking=tracking or base.tracking,
            latent_space=(space or base.latent_space).lower(), autocast=self.autocast)

    def view(self, s: UserSession, event=None) -> np.ndarray | None:
        """The canvas: the photo as edited (a sampled face: the model's square), its mask and points; ``event``:
        a drag's frame (its photo, square and tracked handles) instead of the current image."""
        if not s.has_image:
            return None
        if event is None:
            return s.edit.canvas(s.canvas_view(), pending=s.pending, smooth=s.view_smooth)
        return s.edit.canvas(event.view or s.canvas_view(), photo=event.photo, square=event.square,
                             tracked=event.state.handles, smooth=s.view_smooth)

    def model_view(self, s: UserSession, event=None) -> np.ndarray | None:
        """The small view of what the model sees: its own square, with the points in its pixels."""
        if not s.has_image:
            return None
        if event is None:
            return s.edit.square_view(smooth=s.view_smooth)
        return s.edit.square_view(event.square, event.state.handles, smooth=s.view_smooth)

    def editor_value(self, s: UserSession):
        """The sketch pad: the canvas (without the mask's shading) as background, the mask as its one layer."""
        if not s.has_image:
            return None
        view = s.canvas_view()
        background = s.edit.canvas(view, pending=s.pending, smooth=s.view_smooth, shade_mask=False)
        movable = s.edit.mask_in_view(view)
        layers = [movable_layer(movable)] if movable is not None else []
        return {"background": background, "layers": layers, "composite": None}

    def status(self, s: UserSession, headline: str | None = None, state=None) -> str:
        """The headline, the points table (photo pixels; ``state``: a drag step's tracked handles) and the mask."""
        if not s.has_image:
            return NO_IMAGE
        handles, targets, distances = s.handles, s.targets, None
        if state is not None:
            handles = s.edit.square_to_photo(state.handles)
            distances = np.asarray(state.distances) / s.edit.square_per_photo_pixel
        parts = [headline or ((PHOTO_HELP if s.has_photo else HELP) if not s.handles else
                              "Press **Start** to drag the handles to their targets, or add more points.")]
        table = points_table(handles, targets, distances, s.pending)
        if table:
            parts.append(table + ("\n\nPoints in pixels of your photo." if s.has_photo else ""))
        if s.mask is not None:
            parts.append(f"Mask: {s.mask.mean():.0%} of the model's square may move (the dimmed area stays).")
        return "\n\n".join(parts)

    def view_updates(self, s: UserSession, headline: str | None = None, editor: bool | None = False) -> dict:
        """The canvas, status, points text and the model's view; ``editor``: True fills the sketch pad, None
        empties it (a new image: the pad is filled when the Mask tab is opened), False leaves it."""
        out = {self.ui["canvas"]: self.view(s), self.ui["status"]: self.status(s, headline),
               self.ui["points_text"]: format_points(*self.rounded_points(s)),
               self.ui["model_view"]: self.model_view(s)}
        if editor is None:
            out[self.ui["editor"]] = None
        elif editor:
            out[self.ui["editor"]] = self.editor_value(s)
        return out

    @staticmethod
    def rounded_points(s: UserSession) -> tuple[list, list]:
        """The points as the text box shows them: photo pixels to 0.01 (square pixels carry fractions)."""
        return ([tuple(round(v, 2) for v in p) for p in s.handles], [tuple(round(v, 2) for v in p) for p in s.targets])

    def require_image(self, s: UserSession) -> bool:
        if s.has_image:
            return True
        gr.Warning("There is no image yet: press New face or upload a photo first.")
        return False

    def require_idle(self, s: UserSession, action: str) -> bool:
        if s.busy is None:
            return True
        what = "a drag" if s.busy == "drag" else "an inversion"
        gr.Info(f"Wait for {what} to finish (or stop it) before you {action}.")
        return False

    def photo_figures(self, s: UserSession) -> dict:
        """The aligned input and the reconstruction of the photo being edited (hidden for a sampled face), with
        the figures of the edit itself (:meth:`photo_result_updates`)."""
        inv = s.inversion
        shown = s.has_photo and inv is not None and inv.aligned is not None and inv.reconstruction is not None
        return {self.ui["aligned"]: gr.update(value=np.asarray(inv.aligned) if shown else None, visible=shown),
                self.ui["reconstruction"]: gr.update(value=np.asarray(inv.reconstruction) if shown else None,
                                                     visible=shown),
                **self.photo_result_updates(s)}

    def param_updates(self, G) -> dict:
        """Parameter widgets that depend on the model: feature blocks and default radii."""
        config = DragConfig()
        r1, r2 = config.radii(G.img_resolution)
        return {self.ui["block"]: gr.update(choices=block_choices(G.num_blocks), value=default_feature_block(G)),
                self.ui["r1"]: round(r1, 2), self.ui["r2"]: round(r2, 2)}

    # ----------------------------------------------------------------- model and samples

    def load_model(self, label: str, progress=None):
        """The shared generator for a dropdown label (downloads with progress; raises CheckpointError)."""
        source = self.model_source(label)
        if not self.model_available(label) and is_offline():
            raise CheckpointError(f"'{label}' is not downloaded yet and this server is offline "
                                  "(DRAGGAN_OFFLINE / HF_HUB_OFFLINE is set). Pick another model.")

        def report(done, total):
            if progress is not None:
                mb = done / 2 ** 20
                if total:
                    progress(done / total, desc=f"Downloading {label}: {mb:.0f} of {total / 2 ** 20:.0f} MB")
                else:
                    progress(None, desc=f"Downloading {label}: {mb:.0f} MB")

        try:
            return self.pool.get(source, self.device, progress=report)
        except DownloadError as e:
            info = registry.get_model(source)
            where = f" An administrator can place the file at {registry.local_path(info)}." if info else ""
            raise CheckpointError(f"Could not download '{label}': the server cannot reach it, or the download "
                                  f"failed ({type(e).__name__}). Pick another model.{where}") from e

    def warm_up(self, label: str) -> None:
        """A two-step drag at start-up, so that one-time kernel setup does not slow down the
        first visitor's first Start (seconds on a CPU)."""
        G = self.load_model(label)
        s = UserSession("warm-up")
        try:
            s.load_latent(G, G.ws_from_seed(0, DEFAULT_TRUNCATION, device=self.device), self.drag_config(G),
                          model=label, source="sample")
            R = G.img_resolution
            s.set_points([(R // 2, R // 2)], [(R // 2 + R // 8, R // 2)])
            for _ in s.edit.drag(max_steps=2, worker_threads=self.drag_threads):
                pass
        finally:
            s.close()

    def _sample_into(self, s: UserSession, label: str, seed: int, psi: float, progress=None) -> None:
        """A sampled face replaces the image; a photo edit it replaces is kept aside, and the user is told how
        to get it back (nothing of it is lost)."""
        G = self.load_model(label, progress)
        ws = G.ws_from_seed(int(seed), float(psi), device=self.device)
        had_photo = s.has_photo
        s.load_latent(G, ws, self.drag_config(G), model=label, source="sample", seed=int(seed),
                      truncation=float(psi))
        if had_photo and s.parked is not None:
            gr.Info("Your photo edit is kept, with its points and drags: **Back to your photo** brings it back.")

    def on_load(self, request: gr.Request):
        """Page opened: a face of the default model, at the default seed."""
        s = self.session(request)
        label = self.settings.default_model
        out = {self.ui["model"]: gr.update(choices=self.model_choices(), value=label),
               self.ui["model_info"]: self.model_info(label)}
        try:
            self._sample_into(s, label, DEFAULT_SEED, DEFAULT_TRUNCATION)
        except CheckpointError as e:
            gr.Warning(str(e))
            out[self.ui["status"]] = f"The model could not be loaded: {e}"
            return out
        out.update(self.param_updates(s.generator))
        out.update(self.view_updates(s, editor=None))
        return out

    def select_model(self, model: str, seed, psi, request: gr.Request, progress=gr.Progress()):
        s = self.session(request)
        if not self.require_idle(s, "switch models"):
            return {self.ui["model"]: gr.update(value=s.model)}
        try:
            self._sample_into(s, model, seed if seed is not None else DEFAULT_SEED,
                              psi if psi is not None else DEFAULT_TRUNCATION, progress)
        except CheckpointError as e:
            gr.Warning(str(e))
            return {self.ui["model"]: gr.update(value=s.model, choices=self.model_choices())}
        out = {self.ui["model"]: gr.update(choices=self.model_choices(), value=model),
               self.ui["model_info"]: self.model_info(model), self.ui["report"]: "", self.ui["files"]: None,
               **self.photo_figures(s)}
        out.update(self.param_updates(s.generator))
        out.update(self.view_updates(s, editor=None))
        return out

    def sample(self, model: str, seed, psi, request: gr.Request):
        """Show the face of ``model`` for ``seed`` at truncation ``psi``."""
        s = self.session(request)
        if not self.require_idle(s, "change the image"):
            return gr.skip()
        try:
            seed = int(seed)
            if seed < 0:
                raise ValueError
        except (TypeError, ValueError):
            gr.Warning(f"The seed must be a whole number of 0 or more, got {seed!r}.")
            return gr.skip()
        try:
            self._sample_into(s, model or self.settings.default_model, seed, psi)
        except CheckpointError as e:
            gr.Warning(str(e))
            return gr.skip()
        out = {self.ui["seed"]: seed, self.ui["report"]: "", self.ui["files"]: None, **self.photo_figures(s)}
        out.update(self.param_updates(s.generator))
        out.update(self.view_updates(s, editor=None))
        return out

    def back_to_photo(self, request: gr.Request):
        """The photo edit that a sampled face replaced, as it was: points, mask, drags and undo history."""
        s = self.session(request)
        if not self.require_idle(s, "go back to your photo"):
            return gr.skip()
        if not s.back_to_photo():
            gr.Info("There is no photo edit to go back to.")
            return gr.skip()
        out = {self.ui["model"]: gr.update(value=s.model), self.ui["files"]: None, **self.photo_figures(s)}
        out[self.ui["report"]] = "" if s.inversion.report is None else quality_report(s.inversion.report)
        out.update(self.param_updates(s.generator))
        out.update(self.view_updates(s, "Back to your photo, as you left it.", editor=None))
        return out

    def new_face(self, model: str, psi, request: gr.Request):
        return self.sample(model, random.randint(0, 99_999), psi, request)

    # ----------------------------------------------------------------- photo inversion

    def invert_photo(self, photo, model: str, quality: str, request: gr.Request, progress=gr.Progress()):
        s = self.session(request)
        if not photo:
            gr.Warning("Choose a photo first (drop it on the Photo box).")
            return gr.skip()
        if not self.require_idle(s, "invert another photo"):
            return gr.skip()
        try:
            G = self.load_model(model or self.settings.default_model, progress)
        except CheckpointError as e:
            gr.Warning(str(e))
            return gr.skip()
        config = self.settings.inversion or InversionConfig()
        if quality in QUALITIES:
            config = dataclasses.replace(config, quality=quality)
        try:
            bar = InversionProgress(progress, planned_steps(config, G, self.device))
        except InversionError as e:
            gr.Warning(f"The inversion failed: {e}")
            return gr.skip()
        s.busy = "invert"
        cancel = s.claim_inversion()
        try:
            with torch_threads(self.inversion_threads):
                result = invert(photo, G, config, progress=bar, cancel=cancel, cache=self.inversion_cache)
            self.store.attach_tuned(s, result.generator)
            s.load_latent(result.generator, result.ws, self.drag_config(result.generator), model=model,
                          source="photo", inversion=result, tuned=True)
        except PhotoError as e:
            return self.photo_refused(s, str(e), clear=True)
        except Cancelled:
            gr.Info("Inversion cancelled; your previous image is unchanged.")
            return gr.skip()
        except (InversionError, DragConfigError, ValueError) as e:
            gr.Warning(f"The inversion failed: {e}")
            return gr.skip()
        finally:
            s.busy = None
        report = result.report
        if not report.get("face_found", True) and not any("face" in n.lower() for n in report.get("notices", [])):
            gr.Warning("No face was found in the photo; it was inverted as a whole.")
        for notice in report.get("notices", []):
            gr.Warning(notice)
        out = {self.ui["aligned"]: gr.update(value=np.asarray(result.aligned), visible=True),
               self.ui["reconstruction"]: gr.update(value=np.asarray(result.reconstruction), visible=True),
               self.ui["report"]: quality_report(report), self.ui["files"]: None,
               **self.photo_result_updates(s)}
        out.update(self.param_updates(result.generator))
        out.update(self.view_updates(s, "Photo inverted. " + PHOTO_HELP, editor=None))
        return out

    def photo_limits(self) -> int:
        """The pixel limit of photos: the inversion's own, so that the upload box refuses what it would."""
        return (self.settings.inversion or InversionConfig()).max_pixels

    def stale_photo_updates(self) -> dict:
        """What belongs to the previous photo: its figures, quality report and downloads."""
        return {self.ui["aligned"]: gr.update(value=None, visible=False),
                self.ui["reconstruction"]: gr.update(value=None, visible=False), self.ui["report"]: "",
                self.ui["files"]: None}

    def photo_refused(self, s: UserSession, message: str, clear: bool) -> dict:
        """A refused photo: said in a warning, next to the upload box and in the status line; the
        previous photo's report, figures and downloads go (``clear``), the image being edited stays."""
        gr.Warning(f"That file cannot be used: {message}")
        out = {self.ui["photo_note"]: f"⚠️ **That file cannot be used.** {message}",
               self.ui["photo_preview"]: gr.update(value=None, visible=False)}
        if clear:
            out.update(self.stale_photo_updates())
            out[self.ui["status"]] = (self.status(s, f"The upload was refused: {message} You are still editing "
                                                     "the image below.") if s.has_image else
                                      f"The upload was refused: {message}")
        return out

    def upload_photo(self, photo, request: gr.Request):
        """A file was dropped on the Photo box (or removed from it). It reaches read_photo as the bytes the
        user sent, nothing decoded before: shown as read (upright, flattened, RGB) or refused in a sentence."""
        s = self.session(request)
        clear = s.busy != "invert"          # an inversion running now keeps its own figures coming
        if not photo:
            return {self.ui["photo_note"]: "", self.ui["photo_preview"]: gr.update(value=None, visible=False)}
        try:
            loaded = read_photo(photo, max_pixels=self.photo_limits())
        except PhotoError as e:
            return self.photo_refused(s, str(e), clear)
        w, h = loaded.image.size
        preview = loaded.image.copy()
        preview.thumbnail((PHOTO_PREVIEW_SIZE, PHOTO_PREVIEW_SIZE))
        note = f"Photo read: {w}×{h} pixels. Press **Invert photo** to edit it."
        note += "".join(f"\n\nℹ️ {n}" for n in loaded.notices)
        out = {self.ui["photo_note"]: note,
               self.ui["photo_preview"]: gr.update(value=np.asarray(preview), visible=True)}
        if clear:
            out.update(self.stale_photo_updates())
            headline = "New photo ready: press **Invert photo** to edit it (until then you edit the image below)."
            out[self.ui["status"]] = self.status(s, headline) if s.has_image else headline
        return out

    def request_inversion(self, request: gr.Request):
        """Invert click, before the inversion is queued: Cancel can stop it while it waits."""
        self.session(request).request_inversion()

    def cancel_inversion(self, request: gr.Request):
        s = self.session(request)
        s.cancel_inversion.set()
        if s.busy != "invert":
            gr.Info("Cancelled: the inversion will not start." if s.inversion_waiting else
                    "No inversion is running.")

    # ----------------------------------------------------------------- points and mask

    def click(self, evt: gr.SelectData, request: gr.Request):
        """A click on the canvas: the next handle or target, at the photo pixel under it (a sampled face: the
        generator pixel). A click where the model does not reach is refused in a sentence; nothing changes."""
        s = self.session(request)
        if not self.require_image(s) or not self.require_idle(s, "add points"):
            return gr.skip()
        index = evt.index if isinstance(evt.index, (list, tuple)) and len(evt.index) == 2 else None
        view = s.canvas_view()
        u, v = (None, None) if index is None else (float(index[0]), float(index[1]))
        if u is None or not (np.isfinite(u) and np.isfinite(v) and 0 <= u < view.size[0] and 0 <= v < view.size[1]):
            gr.Warning("That click was outside the image; click on the face.")
            return gr.skip()
        pixel = view.pixel(u, v)
        try:
            kind = s.add_click(*pixel)
        except PointError as e:
            gr.Warning(str(e))
            return gr.skip()
        headline = (f"Handle placed at {pixel}: now click where it should go." if kind == "handle" else
                    f"Target placed at {pixel}. Press **Start**, or add another handle.")
        return self.view_updates(s, headline)

    def remove_last_point(self, request: gr.Request):
        s = self.session(request)
        if not self.require_image(s) or not self.require_idle(s, "change points"):
            return gr.skip()
        removed = s.remove_last_point()
        if removed is None:
            gr.Info("There are no points to remove.")
            return gr.skip()
        return self.view_updates(s, f"Removed the last {removed}.")

    def clear_points(self, request: gr.Request):
        s = self.session(request)
        if not self.require_image(s) or not self.require_idle(s, "change points"):
            return gr.skip()
        s.clear_points()
        return self.view_updates(s)

    def set_points_text(self, text: str, request: gr.Request, coordinates: str = "photo"):
        """Replace the points with 'x,y->x,y; ...' pairs (handle->target, separated by ';'). With coordinates 'photo'
        (the default) they are pixels of the uploaded photo once a photo is inverted (upright, as shown), of the
        face otherwise; with 'square', the generator's own pixels in either case.

        Parameters:
            text: handle->target pairs, e.g. '120,80->140,80; 60,60->60,50'; empty: no points.
            coordinates: 'photo': pixels of the uploaded photo (upright, as shown) once a photo is inverted, of
                the face otherwise; 'square': the generator's own pixels (its R x R square) in either case.
        """
        s = self.session(request)
        if not self.require_image(s) or not self.require_idle(s, "change points"):
            return gr.skip()
        if coordinates not in COORDINATES:
            gr.Warning(f"coordinates must be 'photo' or 'square', got {coordinates!r}.")
            return gr.skip()
        try:
            if text and text.strip():
                handles, targets = parse_points(text)
            else:
                handles, targets = [], []
            s.set_points(handles, targets, coordinates)
        except PointError as e:
            gr.Warning(str(e))
            return gr.skip()
        return self.view_updates(s)

    def paint_mask(self, editor, request: gr.Request):
        """Strokes on the sketch pad -> the movable-region mask, shown dimmed outside on the view."""
        s = self.session(request)
        if not s.has_image or not isinstance(editor, dict):
            return gr.skip()
        if s.busy == "drag":
            gr.Info("The mask is used from the next Start on.")
        layers = [np.asarray(l) for l in (editor.get("layers") or []) if l is not None]
        alpha = None
        for layer in layers:
            if layer.ndim == 3 and layer.shape[-1] == 4:
                alpha = layer[..., 3] if alpha is None else np.maximum(alpha, layer[..., 3])
        view = s.canvas_view()
        if alpha is not None and alpha.shape != (view.size[1], view.size[0]):
            gr.Warning("The mask was painted on another view of the image (the canvas changed since): open the "
                       "Mask tab again and paint it there. The previous mask is kept.")
            return gr.skip()
        mask = None if alpha is None else s.edit.mask_from_view(alpha, view)
        s.set_mask(mask)
        return {self.ui["canvas"]: self.view(s), self.ui["status"]: self.status(s)}

    def show_mask_editor(self, request: gr.Request):
        """Mask tab opened: the sketch pad shows the current canvas and mask (updated only now,
        because loading an image into the pad is slow in the browser)."""
        s = self.session(request)
        return {self.ui["editor"]: self.editor_value(s)} if s.has_image else gr.skip()

    def clear_mask(self, request: gr.Request):
        s = self.session(request)
        if not s.has_image:
            return gr.skip()
        s.set_mask(None)
        return self.view_updates(s, "Mask cleared: the whole image may change.", editor=True)

    def set_crisp(self, crisp: bool, request: gr.Request):
        """The model's square in crisp blocks (to check its pixels) or smoothly upscaled (the default)."""
        s = self.session(request)
        s.view_smooth = not crisp
        return self.view_updates(s) if s.has_image else gr.skip()

    def set_whole_photo(self, whole: bool, request: gr.Request):
        """The canvas shows the whole photo, or the face with a margin (the default)."""
        s = self.session(request)
        s.view_whole = bool(whole)
        return self.view_updates(s, editor=None) if s.has_image else gr.skip()

    # ----------------------------------------------------------------- dragging

    def request_drag(self, editor, request: gr.Request):
        """Start click, before the drag is queued: take a ticket so that Stop can cancel it while it
        waits, and take the mask as painted now (the sketch pad does not report every stroke). When
        other users' drags or inversions hold the device, say so: the drag waits in the queue, whose
        position Gradio then shows on the status panel."""
        s = self.session(request)
        s.request_drag()
        out = self.paint_mask(editor, request)
        ahead = self.store.busy_count(exclude=s)
        if ahead >= self.settings.concurrency and s.has_image:
            out = out if self.ui["canvas"] in out else {}     # gr.skip(): nothing else to show
            out[self.ui["status"]] = self.status(s, queue_headline(ahead))
        return out

    def drag(self, lr=None, max_steps=None, r1=None, r2=None, lambda_mask=None, space=None, block=None,
             region="auto", tracking="nn", request: gr.Request = None):
        """Drag the handles to their targets, streaming frames; ends on arrival, after max steps, or on Stop.

        With an inverted photo, every frame shows the photo itself moving (motion transfer of the model's frame),
        and the points table is in photo pixels. Start again continues; the step count restarts per Start.

        Parameters:
            lr: learning rate of the latent (empty: the engine's default).
            max_steps: steps of this Start at most.
            r1: motion supervision radius in generator pixels (None or 0: the model's default).
            r2: tracking radius in generator pixels (None or 0: the model's default).
            lambda_mask: weight that keeps the unmasked region fixed.
            space: the latent optimized, 'W+' or 'W'.
            block: the feature block: a number or the menu's label ('5 · 64 px'); None: the model's default.
            region: 'auto' (local: around the points, or the painted mask) or 'global' (the whole image may change).
            tracking: 'nn' (DragGAN's search near the handle) or 'line' (FreeDrag's, along the line to the target).
        """
        s = self.session(request)
        ticket = s.claim_ticket()
        if not self.require_image(s) or not self.require_idle(s, "start another drag"):
            return
        if s.drag_cancelled(ticket):
            yield {self.ui["status"]: self.status(s, "Stopped before it started.")}
            return
        if not s.handles:
            gr.Warning("Place at least one handle and its target first: click the image twice.")
            return
        if s.pending is not None:
            gr.Info(f"Handle {len(s.handles) + 1} has no target yet; it is left out of this drag.")
        try:
            s.ensure_config(self.drag_config(s.generator, lr, max_steps, r1, r2, lambda_mask, space, block, region,
                                             tracking))
            events = s.edit.drag(int(max_steps) if max_steps else None, view=s.canvas_view(),
                                 frame_interval=self.frame_interval, worker_threads=self.drag_threads,
                                 first_frame_threads=self.inversion_threads)
        except (DragConfigError, PointError, MaskError) as e:
            gr.Warning(str(e))
            return
        s.busy = "drag"
        state, steps, started, failed = None, 0, time.perf_counter(), False
        try:
            # An immediate answer, so the click feels taken while the first step computes; the downloads of
            # the image before this drag go.
            yield {self.ui["status"]: self.status(s, "Dragging… (step 0)"), self.ui["files"]: None}
            for event in events:
                if event.kind == "warning":
                    gr.Warning(event.text)
                    continue
                state, steps = event.state or state, event.steps
                if event.kind != "frame":
                    continue
                rate = steps / max(time.perf_counter() - started, 1e-6)
                yield {self.ui["canvas"]: self.view(s, event), self.ui["model_view"]: self.model_view(s, event),
                       self.ui["status"]: self.status(s, f"Dragging… step {steps} ({rate:.1f} steps/s). "
                                                        "Press **Stop** to interrupt.", event.state)}
        except Exception as e:  # the session stays usable; the user gets a sentence, not a traceback
            failed = True
            gr.Warning(f"The drag stopped with an error: {e}")
        finally:
            events.close()      # stops the drag, also when the browser went away mid-drag
            s.busy = None
        try:
            out = self.view_updates(s)
        except Exception as e:
            if not failed:
                gr.Warning(f"Could not draw the image: {e}")
            yield {self.ui["status"]: self.status(s, "The drag stopped with an error; Undo or Reset to go on.")}
            return
        if failed:
            headline = "The drag stopped with an error; you can Start again, Undo or Reset."
        elif state is None:
            headline = "Stopped." if s.drag_cancelled(ticket) else "Nothing to do."
        elif state.done:
            headline = f"Arrived after {steps} steps. Add points and Start again, or Undo."
        elif s.drag_cancelled(ticket):
            headline = f"Stopped at step {steps}. Press **Start** to continue."
            gr.Info(f"Stopped at step {steps}; nothing is lost: Start continues, Undo goes back.")
        else:
            headline = f"Paused at step {steps} (max steps per Start). Press **Start** to continue."
        out[self.ui["status"]] = self.status(s, headline, None if failed else state)
        out[self.ui["files"]] = None
        out.update(self.photo_result_updates(s))
        yield out

    def stop(self, request: gr.Request):
        s = self.session(request)
        s.stop_drags()

    def undo(self, request: gr.Request):
        s = self.session(request)
        if not self.require_image(s) or not self.require_idle(s, "undo"):
            return gr.skip()
        if not s.undo():
            gr.Info("Nothing to undo.")
            return gr.skip()
        return {**self.view_updates(s, "Undid the last drag."), **self.photo_result_updates(s), self.ui["files"]: None}

    def reset(self, request: gr.Request):
        s = self.session(request)
        if not self.require_image(s) or not self.require_idle(s, "reset"):
            return gr.skip()
        s.reset()
        return {**self.view_updates(s, "Back to the original image."), **self.photo_result_updates(s),
                self.ui["files"]: None}

    # ----------------------------------------------------------------- the edited photo

    def photo_result_updates(self, s: UserSession | None) -> dict:
        """What belongs to the edit beside the canvas: where the photo changed (shown after a drag), the
        Whole-photo choice (for a photo) and the way back to a photo edit that a sampled face replaced."""
        has_photo = s is not None and s.has_photo
        out = {self.ui["whole_photo"]: gr.update(visible=has_photo),
               self.ui["back_to_photo"]: gr.update(visible=s is not None and s.parked is not None),
               self.ui["photo_confidence"]: gr.update(value=None, visible=False)}
        if not has_photo or not s.edit.records:
            return out
        try:
            result = s.edit.view_frame(s.canvas_view())
        except (InversionError, ValueError) as e:
            gr.Warning(f"Could not apply the edit to the photo: {e}")
            return out
        out[self.ui["photo_confidence"]] = gr.update(value=np.asarray(result.confidence_overlay()), visible=True)
        return out

    # ----------------------------------------------------------------- export

    def export(self, video_format: str, paste_back, request: gr.Request, how: str = "motion"):
        """What the canvas shows, as files: for an inverted photo the photo edited at its own size
        (photo-edited-*.png) and the photo moving (photo-drag-*.gif|mp4); the model's square (model-square-*.png),
        the latent (latent-*.pt) and the square moving (model-drag-*.gif|mp4).

        Parameters:
            video_format: 'GIF' or 'MP4'.
            paste_back: put the edit into the uploaded photo: True (the way ``how`` says), 'motion' or 'paste'
                directly, or False / 'none' (no photo file).
            how: 'motion' (the photo's own pixels, moved: sharp) or 'paste' (the model's square pasted back).
        """
        s = self.session(request)
        if not self.require_image(s):
            return gr.skip()
        folder = s.export_dir
        stamp = time.strftime("%Y%m%d-%H%M%S")
        files = []
        mode = photo_mode(how if paste_back is True else paste_back)
        if mode == "paste" and s.has_photo and rough_by_design(s.inversion.report or {}):
            gr.Info("This photo was inverted with Instant: the pasted square is the model's rough version of the "
                    "face. Invert with Fast or Faithful for a paste-back; 'Moved' keeps the photo's own pixels.")
        if mode and s.has_photo:
            try:
                path = folder / f"photo-edited-{stamp}.png"
                s.edit.photo_frame(mode).image.save(path)   # PNG: untouched pixels stay the upload's, byte for byte
                files.append(str(path))
            except (InversionError, ValueError) as e:
                gr.Warning(f"Could not put the edit into the photo: {e}")
        square = folder / f"model-square-{stamp}.png"
        Image.fromarray(s.image).save(square)
        files.append(str(square))
        latent = folder / f"latent-{stamp}.pt"
        # ws plus the canvas of local edits (EditState): together they redraw exactly this image.
        torch.save({**s.drag.state().to_dict(), "model": s.model, "source": s.source,
                    "seed": s.seed, "truncation": s.truncation}, latent)
        files.append(str(latent))
        suffix = ".mp4" if str(video_format).lower() == "mp4" else ".gif"
        videos = [("model-drag", s.edit.square_video_frames())]
        if s.has_photo:
            videos.insert(0, ("photo-drag", s.edit.photo_video_frames(s.canvas_view())))
        if not videos[-1][1]:
            gr.Info("No drag recorded yet, so there is no video; the image and latent are ready.")
        for name, frames in videos:
            if not frames:
                continue
            try:
                files.append(str(write_video(folder / f"{name}-{stamp}{suffix}", frames, fps=10)))
            except VideoError as e:
                gr.Warning(f"Could not write the video: {e}")
        return {self.ui["files"]: files}


# --------------------------------------------------------------------------- layout


def build_app(models: dict[str, str] | None = None, default_model: str | None = None, device: str = "cpu",
              **settings) -> gr.Blocks:
    """The Blocks app. ``models``: label -> registry name / path (default: the registry)."""
    studio = Studio(StudioSettings(models=models or registry_models(), default_model=default_model, device=device,
                                   **settings))
    ui = studio.ui
    device_queue = f"device:{device}"   # drags and inversions on one device share this slot
    heavy = dict(concurrency_id=device_queue, concurrency_limit=studio.settings.concurrency)
    light = dict(concurrency_limit=None, show_progress="hidden")            # bookkeeping: never waits
    # Drawing a new image (sample, undo, reset) or writing a video: a few at once, beside the drags.
    render = dict(concurrency_id="render", concurrency_limit=max(2, 2 * studio.settings.concurrency),
                  show_progress="hidden")
    config = DragConfig()

    with gr.Blocks(title="DragGAN Studio") as demo:
        gr.Markdown("# DragGAN Studio\nDrag points on a face to edit it, on a sampled face or on your own photo.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                ui["model"] = gr.Dropdown(choices=studio.model_choices(), value=studio.settings.default_model,
                                          label="Model", interactive=True)
                ui["model_info"] = gr.Markdown(elem_classes="compact-md", label="Model info")
                with gr.Row():
                    ui["seed"] = gr.Number(value=DEFAULT_SEED, label="Seed", precision=0, minimum=0, min_width=80)
                    ui["psi"] = gr.Slider(0.0, 1.0, value=DEFAULT_TRUNCATION, step=0.05, label="Truncation",
                                          min_width=120)
                with gr.Row():
                    ui["new"] = gr.Button("New face", variant="secondary")
                    ui["show_seed"] = gr.Button("Show seed")
                with gr.Accordion("Your photo", open=True):
                    # A plain file box: the upload reaches read_photo as sent (gr.Image would decode and
                    # re-save it first, with Gradio's limits and messages); the preview shows it as read.
                    ui["photo"] = gr.File(label="Photo (a face, looking at the camera)", file_count="single",
                                          type="filepath", height=110, elem_id="photo")
                    ui["photo_preview"] = gr.Image(label="Your photo, as read", interactive=False, height=180,
                                                   buttons=[], visible=False, elem_id="photo-preview")
                    ui["photo_note"] = gr.Markdown(elem_classes="compact-md", elem_id="photo-note",
                                                   label="Photo check")
                    ui["quality"] = gr.Radio(
                        [("Instant", "instant"), ("Fast", "fast"), ("Faithful (slower)", "faithful")],
                        value=default_quality(device), label="Inversion quality", info=preset_costs(device))
                    with gr.Row():
                        ui["invert"] = gr.Button("Invert photo", variant="primary", elem_id="invert")
                        ui["cancel"] = gr.Button("Cancel", variant="stop")
                    with gr.Row():
                        ui["aligned"] = gr.Image(label="Aligned input", interactive=False, height=160,
                                                 buttons=[], min_width=100, visible=False)
                        ui["reconstruction"] = gr.Image(label="Reconstruction", interactive=False, height=160,
                                                        buttons=[], min_width=100, visible=False)
                    ui["report"] = gr.Markdown(elem_classes="compact-md", elem_id="report", label="Quality report")
                with gr.Accordion("Drag settings", open=False):
                    ui["region"] = gr.Radio(REGION_CHOICES, value=config.region, label="What may change")
                    ui["tracking"] = gr.Radio(TRACKING_CHOICES, value=config.tracking, label="Handle tracking")
                    ui["lr"] = gr.Number(value=config.lr, label="Learning rate", minimum=1e-5, step=5e-4)
                    ui["max_steps"] = gr.Slider(1, 1000, value=config.max_steps, step=1,
                                                label="Max steps per Start")
                    with gr.Row():
                        ui["r1"] = gr.Number(value=None, label="r1: supervision radius (px)", minimum=0)
                        ui["r2"] = gr.Number(value=None, label="r2: tracking radius (px)", minimum=0)
                    ui["lambda"] = gr.Number(value=config.lambda_mask, label="λ: mask weight", minimum=0)
                    ui["space"] = gr.Radio(["W+", "W"], value="W+", label="Latent space")
                    ui["block"] = FeatureBlock(choices=block_choices(), value=None, label="Feature block",
                                               interactive=True)
            with gr.Column(scale=3, min_width=360):
                with gr.Tabs():
                    with gr.Tab("Points") as points_tab:
                        # The photo itself once one is inverted: clicks and the live drag land on it.
                        ui["canvas"] = ScreenImage(label="Image (click: a handle, then its target)",
                                                   interactive=False, elem_id="canvas", buttons=["fullscreen"],
                                                   show_label=False, height=CANVAS_HEIGHT)
                    with gr.Tab("Mask") as mask_tab:
                        ui["editor"] = gr.ImageEditor(
                            label="Paint the region that may move", elem_id="mask-editor", sources=[],
                            type="numpy", image_mode="RGBA", layers=False, transforms=[], height=CANVAS_HEIGHT,
                            brush=gr.Brush(colors=[("#ffcc00", 0.55)], color_mode="fixed", default_size=20),
                            eraser=gr.Eraser(default_size=20), buttons=[], format="png")
                        gr.Markdown("Paint where the image may change; the rest stays fixed. The mask is used "
                                    "when you go back to **Points** or press **Start**.", elem_classes="compact-md")
                        ui["clear_mask"] = gr.Button("Clear mask", size="sm")
                with gr.Row():
                    ui["start"] = gr.Button("▶ Start", variant="primary", elem_id="start", min_width=80)
                    ui["stop"] = gr.Button("■ Stop", variant="stop", elem_id="stop", min_width=80)
                    ui["undo"] = gr.Button("↶ Undo drag", elem_id="undo", min_width=80)
                    ui["reset"] = gr.Button("Reset", elem_id="reset", min_width=80)
                with gr.Row(equal_height=True):
                    ui["remove_point"] = gr.Button("Remove last point", size="sm")
                    ui["clear_points"] = gr.Button("Clear points", size="sm")
                    ui["whole_photo"] = gr.Checkbox(value=False, label="Whole photo", visible=False,
                                                    elem_id="whole-photo", min_width=100)
                    ui["back_to_photo"] = gr.Button("↩ Back to your photo", size="sm", visible=False,
                                                    elem_id="back-to-photo")
                ui["status"] = gr.Markdown(NO_IMAGE, elem_id="status", label="Status")
                with gr.Accordion("What the model sees", open=True):
                    with gr.Tabs():
                        with gr.Tab("Its square"):
                            ui["model_view"] = ScreenImage(label="The model's square, with the points in its pixels",
                                                           interactive=False, elem_id="model-view", height=270,
                                                           buttons=["fullscreen"], show_label=False)
                        with gr.Tab("Where your photo changed"):
                            ui["photo_confidence"] = ScreenImage(
                                label="Moved (cyan outline), the model's own pixels (magenta)", interactive=False,
                                visible=False, elem_id="photo-confidence", buttons=["fullscreen"], height=400)
                    ui["crisp"] = gr.Checkbox(value=False, label="Crisp pixels (nearest neighbour): to check the "
                                                                 "model's own pixels")
                with gr.Accordion("Export", open=False):
                    with gr.Row():
                        ui["video_format"] = gr.Radio(["GIF", "MP4"], value="GIF", label="Video")
                        ui["paste_back"] = gr.Checkbox(value=True, label="Put the edit into the uploaded photo "
                                                                         "(full resolution)")
                        ui["photo_mode"] = gr.Radio(
                            [("Moved: the photo's own pixels, sharp", "motion"),
                             ("Pasted: the generator's square (appearance edits)", "paste")],
                            value="motion", label="How")
                    ui["export"] = gr.Button("Export the photo, the model's square, latent and videos",
                                             elem_id="export")
                    ui["files"] = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="files")
                with gr.Accordion("Points as text", open=False):
                    ui["points_text"] = gr.Textbox(label="Points (handle->target pairs)",
                                                   placeholder="60,70->70,70; 40,50->40,45", submit_btn="Set")
                    ui["coordinates"] = gr.Radio(COORDINATE_CHOICES, value="photo", label="Typed points are in")

        view = [ui["canvas"], ui["status"], ui["points_text"], ui["model_view"]]
        editor_view = view + [ui["editor"]]   # handlers that load a new image also empty the sketch pad
        params = [ui["block"], ui["r1"], ui["r2"]]
        # What belongs to the edit beside the canvas (Studio.photo_result_updates) ...
        edit_out = [ui["photo_confidence"], ui["whole_photo"], ui["back_to_photo"]]
        # ... then the photo's figures: the API's outputs keep ending in aligned, reconstruction, report.
        photo_out = edit_out + [ui["aligned"], ui["reconstruction"], ui["report"]]
        # Drags, undo, reset: the model's view and the photo follow, and the downloads of another image go.
        drag_view = view + edit_out + [ui["files"]]
        drag_params = [ui["lr"], ui["max_steps"], ui["r1"], ui["r2"], ui["lambda"], ui["space"], ui["block"],
                       ui["region"], ui["tracking"]]

        demo.load(gpu(studio.on_load), None, editor_view + params + [ui["model"], ui["model_info"]],
                  concurrency_limit=None, api_name=False)   # scripts call /sample
        demo.unload(studio.close_session)
        # .select, not .input: the dropdown reports one pick as two inputs.
        ui["model"].select(gpu(studio.select_model), [ui["model"], ui["seed"], ui["psi"]],
                           editor_view + params + photo_out + [ui["model"], ui["model_info"], ui["files"]],
                           concurrency_id="model-load", concurrency_limit=2, api_name="select_model",
                           show_progress_on=ui["canvas"])
        sample_out = editor_view + params + photo_out + [ui["seed"], ui["files"]]
        ui["new"].click(gpu(studio.new_face), [ui["model"], ui["psi"]], sample_out, api_name="new_face", **render)
        ui["show_seed"].click(gpu(studio.sample), [ui["model"], ui["seed"], ui["psi"]], sample_out,
                              api_name="sample", **render)
        # The same action from the keyboard and the slider: one API endpoint (/sample) for all three.
        ui["seed"].submit(gpu(studio.sample), [ui["model"], ui["seed"], ui["psi"]], sample_out, api_name=False,
                          **render)
        ui["psi"].release(gpu(studio.sample), [ui["model"], ui["seed"], ui["psi"]], sample_out, api_name=False,
                          **render)
        # A photo edit that one of those replaced is kept aside until then (UserSession.parked).
        ui["back_to_photo"].click(gpu(studio.back_to_photo), None,
                                  editor_view + params + photo_out + [ui["model"], ui["files"]],
                                  api_name="back_to_photo", **render)

        photo_check = [ui["photo_note"], ui["photo_preview"]]
        upload_out = photo_check + photo_out + [ui["files"], ui["status"]]
        # Reading a photo may take a second and a few hundred MB: a render slot, not the device's.
        ui["photo"].upload(studio.upload_photo, [ui["photo"]], upload_out, api_name="upload_photo",
                           **{**render, "show_progress": "minimal", "show_progress_on": ui["photo"]})
        ui["photo"].clear(studio.upload_photo, [ui["photo"]], upload_out, api_name=False, **light)
        ui["invert"].click(studio.request_inversion, None, None, api_name=False, **light).then(
            gpu(studio.invert_photo), [ui["photo"], ui["model"], ui["quality"]],
            editor_view + params + photo_out + [ui["files"]] + photo_check,
            api_name="invert", show_progress_on=ui["canvas"], **heavy)
        ui["cancel"].click(studio.cancel_inversion, None, None, api_name="cancel_inversion", **light)

        # Every click counts, in order: quick clicks queue up instead of being dropped.
        ui["canvas"].select(studio.click, None, view, api_name=False, trigger_mode="multiple", concurrency_limit=1,
                            concurrency_id="clicks", show_progress="hidden")
        ui["remove_point"].click(studio.remove_last_point, None, view, api_name="remove_last_point", **light)
        ui["clear_points"].click(studio.clear_points, None, view, api_name="clear_points", **light)
        ui["points_text"].submit(studio.set_points_text, [ui["points_text"], ui["coordinates"]], view,
                                 api_name="set_points", **light)
        ui["clear_mask"].click(studio.clear_mask, None, editor_view, api_name="clear_mask", **light)
        ui["crisp"].change(studio.set_crisp, [ui["crisp"]], view, api_name=False, **light)
        ui["whole_photo"].change(studio.set_whole_photo, [ui["whole_photo"]], editor_view, api_name=False,
                                 **render)

        # The mask is read from the sketch pad when the Points tab is shown and when Start is
        # pressed, not on every stroke: each change would upload three full-size PNGs (and
        # Gradio drops the first stroke's change event anyway).
        mask_tab.select(studio.show_mask_editor, None, [ui["editor"]], api_name=False, **light)
        points_tab.select(studio.paint_mask, [ui["editor"]], [ui["canvas"], ui["status"]], api_name=False, **light)
        # "minimal": while the drag waits for the device, its place in the queue ("queue: 2/3") shows
        # over the image, without a spinner; Gradio hides it once frames stream.
        ui["start"].click(studio.request_drag, [ui["editor"]], [ui["canvas"], ui["status"]], api_name=False,
                          **light).then(
            gpu(studio.drag), drag_params, drag_view, api_name="drag", show_progress="minimal",
            show_progress_on=ui["canvas"], **heavy)
        ui["stop"].click(studio.stop, None, None, api_name="stop", **light)
        ui["undo"].click(gpu(studio.undo), None, drag_view, api_name="undo", **render)
        ui["reset"].click(gpu(studio.reset), None, drag_view, api_name="reset", **render)
        ui["export"].click(studio.export, [ui["video_format"], ui["paste_back"], ui["photo_mode"]], [ui["files"]],
                           api_name="export", **render)

    demo.queue(max_size=studio.settings.queue_size, default_concurrency_limit=8)
    demo.studio = studio  # for tests and benchmarks
    return demo


# --------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="DragGAN Studio web app")
    p.add_argument("--share", action="store_true",
                   help="also create a public gradio.live link (needs internet access; the local address works without)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or $GRADIO_SERVER_PORT)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--model", default=None,
                   help="model to start with: a registry name or a generator path (added to the list)")
    p.add_argument("--concurrency", type=int, default=1, help="drags + inversions at once per device")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait at most")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per drag worker (default on a CPU: half the cores; an inversion "
                        "takes every core)")
    return p.parse_args(argv)


def launch_options() -> dict:
    """Options every launch of the app uses (main() and the tests): the page style, and Gradio refusing
    uploads over read_photo's byte limit before storing them."""
    return dict(css=CSS, max_file_size=MAX_FILE_BYTES)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = str(default_device(args.device))
    if args.threads or torch.device(device).type == "cpu":
        torch.set_num_threads(args.threads or cpu_threads())
    models = registry_models()
    default = default_model_for(device)
    if args.model:
        if registry.get_model(args.model) is not None and not Path(args.model).exists():
            default = registry.get_model(args.model).name
        else:
            path = Path(args.model).expanduser()
            if not path.exists():
                raise SystemExit(f"error: --model {args.model}: no such file or directory, and not a known model "
                                 f"name ({', '.join(models)})")
            default = path.name
            models = {default: str(path), **models}
    demo = build_app(models, default, device, concurrency=args.concurrency, queue_size=args.queue_size,
                     threads=args.threads)
    # The server answers at once and the default model warms up beside it (cold start, BENCHMARKS.md);
    # on ZeroGPU before the launch, which packs the models loaded by then for the GPU workers.
    warm_up(demo.studio, default, background=not on_zero_gpu())
    serve(demo, args.host, args.port, share=args.share, footer_links=["api"], **launch_options())


if __name__ == "__main__":
    main()
