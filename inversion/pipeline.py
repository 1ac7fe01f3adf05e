"""One call from a photo to an editable latent: read -> align -> project -> pivotal tuning -> report.

    result = invert(photo, G)                     # photo: path | bytes | PIL.Image | np.ndarray
    result.ws, result.generator                   # pivot W+ and the tuned copy of G, ready for dragging
    result.transfer(after, handles, targets)      # a drag's edit applied to the photo's own pixels (motion transfer)
    result.paste_back(edited_image)               # the edited square pasted back into the original photo

``G`` is never modified; the tuned generator is a copy. Results are cached by (photo
pixels, model weights, settings), so inverting the same photo again is instant.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from draggan.loaders import CheckpointError, load_generator, registry
from draggan.runtime import cudnn_autotuned, fast_autocast

from . import align as align_mod
from .encoder import Encoder, check_compatible, encode, encoder_folder
from .errors import InversionError, PhotoError
from .losses import lpips_metric, make_loss
from .metrics import identity_distance, lpips_distance, psnr, ssim, to_image, to_tensor
from .motion_transfer import transfer_edit
from .photo import DEFAULT_MAX_PIXELS, Photo, read_photo
from .project import ProgressFn, ProjectionSettings, check_cancel, project, w_stats
from .pti import TuningSettings, pivotal_tuning

# Step budgets (bench/eval_inversion.py, the bundled celeba128 model, held-out faces). Quality
# per step does not depend on the device: PTI at lr 3e-3 (cosine ramp-down over the last 30%)
# reaches in 50-100 steps what PTI's lr 3e-4 reaches in 150+ (inversion/README.md; lr 1e-2 is
# worse), and projection beyond ~40 W steps at lr 0.1 barely changes the tuned result.
#
# ``pti_stop`` is the early-stop threshold of tuning (LPIPS, or the pyramid fallback; None = run
# every step). ``fast`` stops as soon as the reconstruction is good enough to edit; ``faithful``
# never stops early and so spends its whole, longer budget getting closer to the photo.
# Figures with these defaults: BENCHMARKS.md, "Inversion presets as a user gets them".
PRESETS = {
    "cpu": {"fast": dict(steps_w=30, lr_w=0.1, steps_pti=70, lr_pti=3e-3, w_avg_samples=2000, pti_stop=0.06),
            "faithful": dict(steps_w=40, lr_w=0.1, steps_pti=200, lr_pti=3e-3, w_avg_samples=2000, pti_stop=None)},
    "gpu": {"fast": dict(steps_w=100, lr_w=0.1, steps_pti=250, lr_pti=3e-3, w_avg_samples=10000, pti_stop=0.06),
            "faithful": dict(steps_w=100, lr_w=0.1, steps_pti=350, lr_pti=3e-3, w_avg_samples=10000,
                             pti_stop=None)},
}
# ``instant`` is the encoder's pass alone (ENCODER_PRESETS); a model without an encoder inverts as ``fast``.
PRESETS = {kind: {"instant": presets["fast"], **presets} for kind, presets in PRESETS.items()}
# With a learned encoder (``inversion/encoder.py``) the latent comes from one pass (0.4 s on a 2-core CPU) instead of
# the projection steps. The shipped celeba128 encoder's pivot (17-20 dB) is still far from the photo, so tuning runs
# at the projection presets' lr: at lr 1e-3, 25 steps reached only 21.3 dB; 70 steps at 3e-3 reach 24.5 dB and 100
# steps 25.5 dB (BENCHMARKS.md, "Inversion with a learned encoder"). On a GPU the steps are cheap: 60 / 250.
# ``instant`` tunes nothing: the reconstruction is rough (14-23 dB), but an edit moves the photo's own pixels (motion
# transfer), and the edited photos came out as close to their targets and to the person as after ``fast``'s 20 s
# (BENCHMARKS.md, "What the user keeps": 5 photos x 4 edits).
ENCODER_PRESETS = {
    "cpu": {"instant": dict(steps_pti=0, lr_pti=3e-3, pti_stop=None),
            "fast": dict(steps_pti=70, lr_pti=3e-3, pti_stop=0.06),
            "faithful": dict(steps_pti=200, lr_pti=3e-3, pti_stop=None)},
    "gpu": {"instant": dict(steps_pti=0, lr_pti=3e-3, pti_stop=None),
            "fast": dict(steps_pti=60, lr_pti=3e-3, pti_stop=None),
            "faithful": dict(steps_pti=250, lr_pti=3e-3, pti_stop=None)},
}
# What each preset takes and gives, as measured with celeba128 and its encoder on held-out faces (BENCHMARKS.md,
# "Inversion with a learned encoder"); the app shows the line for its device next to the choice.
PRESET_COSTS = {
    "cpu": {"instant": "1-2 s a photo on a 2-core CPU (the encoder's pass, no tuning); a rough model version of the "
                       "face (14-23 dB), yet the edited photo lands as well as after Fast",
            "fast": "about 15-19 s; 26.4 dB on held-out faces",
            "faithful": "about 50 s; 29.0 dB (+3.5 dB)"},
    "gpu": {"instant": "the encoder's pass alone (Fast takes 0.6 s on an H100)",
            "fast": "0.6 s a photo on an H100; 27.8 dB on held-out faces",
            "faithful": "1.8 s on an H100; 32.1 dB (+4 dB)"},
}
# Below this PSNR (aligned photo vs reconstruction) the report and the app say the reconstruction is
# poor: glasses, hats, unusual faces (the spread on held-out faces and real photos: BENCHMARKS.md).
POOR_PSNR = 24.0
QUALITIES = tuple(PRESETS["cpu"])


@dataclasses.dataclass
class InversionConfig:
    """Every knob of the pipeline. ``None`` means: the CPU or GPU preset (of ``quality``) for the device used."""

    device: str | None = None          # 'cpu', 'cuda', 'cuda:1', 'mps'; None = where G lives.
    quality: str = "fast"              # Step budget preset: 'instant' (the encoder alone), 'fast' or 'faithful'.
    amp: str = "auto"                  # 'bf16', 'fp16', 'none'; auto = bf16 on GPUs and on CPUs with bf16 units.
    cuda_graph: bool | None = None     # Replay projection/tuning steps as CUDA graphs (None: on for CUDA devices).
    cudnn_autotune: bool = True        # On CUDA, let cuDNN time its algorithms for the steps' shapes (runtime.py).
    # Projection (W, then optional W+).
    steps_w: int | None = None         # W steps (PTI: 450).
    steps_wplus: int = 0               # W+ refinement steps after W (0 = W pivot, most editable).
    lr_w: float | None = None          # Peak projection lr (PTI: 0.01 over 450 steps; higher for short runs).
    w_noise: float = 0.05              # Initial W exploration noise (fraction of the W spread).
    noise_reg: float = 1e5             # Noise-map autocorrelation penalty.
    project_l2_weight: float = 1.0     # Pixel MSE weight during projection.
    keep_projected_noise: bool = True  # Bake the optimized noise maps into the tuned G's const noise.
    # Start: the model's learned encoder, or optimization-based projection.
    encoder: str = "auto"              # 'auto' (the model's encoder if it ships one), 'none', or an encoder folder.
    encoder_iterations: int | None = None  # ReStyle iterations (None: the encoder's own default).
    # Pivotal tuning.
    steps_pti: int | None = None       # Maximum tuning steps (PTI: 350).
    lr_pti: float | None = None        # Tuning lr (PTI: 3e-4 over 350 steps; 3e-3 converges in far fewer).
    pti_lr_rampdown: float = 0.3       # Fraction of tuning steps with a cosine lr decay (0 = constant lr).
    pti_l2_weight: float = 1.0
    pti_min_resolution: int = 0        # Tune only synthesis blocks of at least this resolution (0 = all).
    # Early stop when LPIPS <= this (PTI's threshold: 0.06); None = every step; "auto" = the preset's.
    pti_stop_lpips: float | None | str = "auto"
    pti_stop_fallback: float | None | str = "auto"  # Same for the pyramid fallback.
    locality: bool = False             # PTI locality regularization.
    locality_weight: float = 0.1
    locality_alpha: float = 30.0
    # Loss.
    loss: str = "auto"                 # 'auto' (LPIPS if weights on disk, else pyramid), 'lpips', 'pyramid', 'l2'.
    perceptual_weight: float = 1.0
    vgg16_path: str | None = None      # torchvision vgg16-397923af.pth (else $DRAGGAN_VGG16, torch hub cache).
    # Alignment.
    alignment: str = "auto"            # 'auto', 'template', 'ffhq' or 'center'.
    template: dict | str | None = None # Landmark template (dict / JSON path); else the model's alignment.json.
    model_dir: str | None = None       # Where the model lives (its alignment.json); else G.name_or_path.
    landmarks: str = "five"            # Points fitted to the template: 'five', 'inner', 'all'.
    face_min_score: float = 0.3        # Secondary faces below this detector score are ignored.
    # Input and report.
    max_pixels: int = DEFAULT_MAX_PIXELS
    identity: bool = True              # dlib identity distance in the report (faces).
    w_avg_samples: int | None = None   # Z samples for the W mean/spread (the spread only, if G tracks w_avg).
    seed: int = 0

    def resolved(self, device: torch.device, with_encoder: bool = False) -> "InversionConfig":
        """A copy with every ``None`` budget filled from the device's preset (the encoder's presets
        ``with_encoder``: the latent then comes from the encoder, and projection takes no steps)."""
        if self.quality not in QUALITIES:
            raise ValueError(f"quality must be one of {QUALITIES}, got {self.quality!r}")
        kind = "cpu" if device.type == "cpu" else "gpu"
        preset = dict(PRESETS[kind][self.quality])
        if with_encoder:
            preset.update(ENCODER_PRESETS[kind][self.quality])
        stop = preset.pop("pti_stop")
        updates = {k: v for k, v in preset.items() if getattr(self, k) is None}
        if with_encoder:        # the encoder gives the latent: no projection steps
            updates.update(steps_w=0, steps_wplus=0)
        for k in ("pti_stop_lpips", "pti_stop_fallback"):
            if getattr(self, k) == "auto":
                updates[k] = stop
        if self.amp == "auto":
            fast_bf16 = fast_autocast(device)
            updates["amp"] = "bf16" if fast_bf16 else "none"
        elif self.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'none', got {self.amp!r}")
        return dataclasses.replace(self, device=str(device), **updates)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def cache_dict(self) -> dict:
        """Fields that change the result (not the report options)."""
        d = self.to_dict()
        d.pop("identity")
        return d


@dataclasses.dataclass
class InversionResult:
    """What :func:`invert` returns; the drag engine takes ``ws`` and ``generator`` as they are.

    ws             : pivot W+ latent [1, num_ws, w_dim], float32 on the CPU.
    generator      : tuned copy of the generator (eval, requires_grad False), on the device used.
    aligned        : the aligned photo at the generator's resolution (what was inverted).
    reconstruction : generator(ws) after tuning.
    report         : metrics, notices, timings (see :func:`invert`).
    alignment      : the photo -> aligned transform (for :meth:`paste_back`).
    photo          : the upright RGB photo (None if not kept).
    """

    ws: torch.Tensor
    generator: torch.nn.Module
    aligned: Image.Image
    reconstruction: Image.Image
    report: dict
    alignment: align_mod.Alignment
    photo: Image.Image | None = None

    def paste_back(self, edited: Image.Image, photo: Image.Image | None = None, feather: float = 0.08) -> Image.Image:
        """Put ``edited`` (an image of the aligned square) back into the original photo's frame."""
        photo = photo if photo is not None else self.photo
        if photo is None:
            raise InversionError("The original photo is not stored with this result; pass it to paste_back().")
        return self.alignment.paste_back(edited, photo, feather=feather)

    def transfer(self, after, handles=None, targets=None, *, before=None, tracked=None, mode: str = "motion",
                 photo: Image.Image | None = None, settings=None):
        """The edit from ``before`` to ``after`` (generator-resolution images) applied to the original photo.

        before  : the square before the drag, as the drag engine drew it (default: ``reconstruction``).
        handles, targets, tracked : the drag's points in square pixels (see
                  :func:`inversion.motion_transfer.transfer_edit`); they keep the edit local.
        mode    : 'motion' (the photo's own pixels, moved) or 'paste' (the square pasted back).
        Returns an :class:`inversion.motion_transfer.TransferResult` (``.image`` is the edited photo).
        """
        photo = photo if photo is not None else self.photo
        if photo is None:
            raise InversionError("The original photo is not stored with this result; pass photo=.")
        before = self.reconstruction if before is None else before
        return transfer_edit(photo, self.alignment, before, after, handles, targets, tracked=tracked, mode=mode,
                             settings=settings)

    def save(self, directory, save_photo: bool = True) -> Path:
        """DIR/aligned.png, reconstruction.png, report.json, latent.pt, alignment.json, photo.png, generator/."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.aligned.save(d / "aligned.png")
        self.reconstruction.save(d / "reconstruction.png")
        (d / "report.json").write_text(json.dumps(self.report, indent=2, default=_json_default) + "\n")
        (d / "alignment.json").write_text(json.dumps(self.alignment.to_dict()) + "\n")
        torch.save({"ws": self.ws.detach().float().cpu()}, d / INVERSION_LATENT)
        # fp32: the tuning deltas are small, fp16 would round part of them away.
        self.generator.save_pretrained(d / INVERSION_GENERATOR, dtype=torch.float32,
                                       metadata={"inverted_from": self.report.get("photo_sha256")})
        if save_photo and self.photo is not None:
            self.photo.save(d / "photo.png")
        return d

    @classmethod
    def load(cls, directory, device="cpu") -> "InversionResult":
        """A result folder written by :meth:`save` (raises InversionError when something is missing or unreadable)."""
        f = read_inversion_folder(directory, device)
        missing = [name for name in ("aligned", "reconstruction", "report", "alignment") if f[name] is None]
        if missing:
            raise InversionError(f"{directory}: not a complete inversion result (missing: {', '.join(missing)}).")
        return cls(**f)


INVERSION_LATENT = "latent.pt"      # {'ws': [1, num_ws, w_dim] tensor}
INVERSION_GENERATOR = "generator"   # the tuned generator, Generator.save_pretrained's format


def read_inversion_folder(directory, device="cpu") -> dict:
    """The one reader of an inversion folder (InversionResult.save's layout, as the CLI and the API use it).

    Needs DIR/latent.pt and DIR/generator/; returns {ws, generator, photo, alignment, aligned,
    reconstruction, report}, each of the optional parts None when its file is absent. Every problem
    is an InversionError that says what is wrong with which file.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InversionError(f"{d}: no such folder.")
    latent, generator_dir = d / INVERSION_LATENT, d / INVERSION_GENERATOR
    if not latent.is_file() or not generator_dir.is_dir():
        raise InversionError(f"{d}: expected {INVERSION_LATENT} and {INVERSION_GENERATOR}/ inside "
                             "(the output of python -m inversion).")
    try:
        data = torch.load(latent, map_location="cpu", weights_only=True)
    except Exception:  # any unreadable file is the user's input problem
        raise InversionError(f"{latent}: cannot read the latent (the file is damaged or not a saved latent).") \
            from None
    if not isinstance(data, dict) or not isinstance(data.get("ws"), torch.Tensor):
        raise InversionError(f"{latent}: expected a dict with a 'ws' tensor.")
    try:
        G = load_generator(generator_dir, device=device, progress=False)
    except CheckpointError as e:
        raise InversionError(f"{generator_dir}: {e}") from None
    ws = data["ws"].float()
    ws = ws[None] if ws.ndim == 2 else ws
    if tuple(ws.shape) != (1, G.num_ws, G.w_dim):
        raise InversionError(f"{latent}: 'ws' has shape {tuple(ws.shape)} but the generator needs "
                             f"[1, {G.num_ws}, {G.w_dim}].")

    def image(name):
        path = d / name
        if not path.is_file():
            return None
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except OSError:
            raise InversionError(f"{path}: not a readable image.") from None

    def json_file(name):
        path = d / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            raise InversionError(f"{path}: not readable JSON.") from None

    photo, alignment = image("photo.png"), json_file("alignment.json")
    try:
        alignment = None if alignment is None else align_mod.Alignment.from_dict(alignment)
    except (KeyError, TypeError, ValueError):
        raise InversionError(f"{d / 'alignment.json'}: not an alignment this version can read.") from None
    if photo is not None and alignment is not None and photo.size != tuple(alignment.photo_size):
        raise InversionError(f"{d}: photo.png is {photo.size[0]}x{photo.size[1]} but alignment.json was made for "
                             f"{alignment.photo_size[0]}x{alignment.photo_size[1]}.")
    return {"ws": ws, "generator": G, "photo": photo, "alignment": alignment, "aligned": image("aligned.png"),
            "reconstruction": image("reconstruction.png"), "report": json_file("report.json")}


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# --------------------------------------------------------------------------- cache


_FINGERPRINTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def model_fingerprint(G) -> str:
    """Hash of the generator's config and weights (memoized; recomputed if a tensor changed in place)."""
    tensors = list(G.state_dict().values())
    versions = tuple(t._version for t in tensors)
    memo = _FINGERPRINTS.get(G)
    if memo is not None and memo[0] == versions:
        return memo[1]
    h = hashlib.sha256(json.dumps(G.cfg.to_dict(), sort_keys=True).encode())
    for name, t in G.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()[:16]
    _FINGERPRINTS[G] = (versions, digest)
    return digest


class InversionCache:
    """Bounded in-memory LRU of results, optionally mirrored on disk (``directory/<key>/``)."""

    def __init__(self, max_items: int = 4, directory=None):
        self.max_items = max_items
        self.directory = Path(directory) if directory else None
        self._items: OrderedDict[str, InversionResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(photo_sha: str, model_id: str, config: InversionConfig) -> str:
        blob = json.dumps({"photo": photo_sha, "model": model_id, "config": config.cache_dict()}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def get(self, key: str, device="cpu") -> InversionResult | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        if self.directory and (self.directory / key / "latent.pt").is_file():
            try:
                result = InversionResult.load(self.directory / key, device=device)
            except Exception:
                result = None  # A damaged cache entry is recomputed.
            if result is not None:
                self._remember(key, result)
                with self._lock:
                    self.hits += 1
                return result
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, result: InversionResult) -> None:
        self._remember(key, result)
        if self.directory:
            result.save(self.directory / key)

    def _remember(self, key, result):
        with self._lock:
            self._items[key] = result
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self):
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self):
        return len(self._items)


DEFAULT_CACHE = InversionCache()


# --------------------------------------------------------------------------- alignment choice


def _model_folders() -> list[Path]:
    """Folders of project-format models this checkout knows: the registry's bundled ones and checkpoints/*."""
    folders = [registry.bundled_path(m) for m in registry.MODELS.values() if m.path]
    folders += sorted(p for p in (registry.REPO_ROOT / "checkpoints").glob("*") if p.is_dir())
    return list(dict.fromkeys(folders))


def find_model_dir(G) -> str | None:
    """The folder ``G`` was loaded from, recognised by its config and its stored mean latent.

    A generator loaded by name (``load_generator('celeba128')``) does not remember its
    folder; the template next to its weights is still the right one to use. Only the
    small ``mapping.w_avg`` tensor of each candidate is read.
    """
    try:
        from safetensors import safe_open
    except ImportError:
        return None
    want = G.cfg.to_dict()
    w_avg = G.mapping.w_avg.detach().float().cpu()
    for folder in _model_folders():
        try:
            config = json.loads((folder / "config.json").read_text())
            if any(config.get(k) != v for k, v in want.items()):
                continue
            with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
                stored = f.get_tensor("mapping.w_avg").float()
            if stored.shape == w_avg.shape and torch.allclose(stored, w_avg, atol=1e-3, rtol=1e-3):
                return str(folder)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            continue
    return None


def resolve_alignment(config: InversionConfig, G) -> tuple[str, align_mod.FaceTemplate | None, list[str]]:
    """(method, template, notices) from the config and the model's stored ``alignment.json``."""
    if config.alignment not in ("auto",) + align_mod.METHODS:
        raise ValueError(f"alignment must be 'auto' or one of {align_mod.METHODS}, got {config.alignment!r}")
    if config.alignment in ("ffhq", "center"):
        return config.alignment, None, []
    if config.template is not None:
        method, template = align_mod.read_alignment_spec(config.template)
        return method, template, []
    for d in (config.model_dir, getattr(G, "name_or_path", None), find_model_dir(G)):
        if d and (Path(d) / align_mod.TEMPLATE_FILE).is_file():
            method, template = align_mod.read_alignment_spec(Path(d))
            return method, template, []
    if config.alignment == "template":
        raise InversionError("Template alignment was asked for, but this model stores no alignment.json "
                             "and no template was given.")
    return "ffhq", None, ["The model stores no alignment template: used the standard FFHQ face alignment."]


def alignment_for_model(source) -> tuple[str, str | None]:
    """(alignment, model_dir) for a model given as a registry name or a path; nothing is downloaded.

    A folder holding ``alignment.json`` (the bundled celeba128 model) -> ('auto', folder);
    a name with 'ffhq' -> 'ffhq'; another known registry model (cats, cars, animals) ->
    'center'; anything else -> 'auto' (FFHQ alignment with a notice).

        alignment, model_dir = alignment_for_model("celeba128")
        invert(photo, G, InversionConfig(alignment=alignment, model_dir=model_dir))
    """
    folder = None
    info = registry.get_model(str(source))
    if info is not None and info.path:
        folder = registry.bundled_path(info)
    path = Path(str(source)).expanduser()
    if folder is None and path.exists():
        folder = path if path.is_dir() else path.parent
    if folder is not None and (folder / align_mod.TEMPLATE_FILE).is_file():
        return "auto", str(folder)
    if "ffhq" in str(source).lower():
        return "ffhq", None
    if info is not None:
        return "center", None  # A known model of cats, cars, animals...: no face alignment.
    return "auto", str(folder) if folder is not None else None


# --------------------------------------------------------------------------- invert


def planned_steps(config: InversionConfig, G, device=None) -> dict[str, int]:
    """The steps each stage of :func:`invert` will take for ``config`` and ``G`` (for a progress bar):
    {'encode': 0 or 1, 'project_w', 'project_wplus', 'tune' (at most)}. Raises InversionError for an
    encoder that cannot be used."""
    device = torch.device(device or config.device or _device_of(G))
    encoder, _ = resolve_encoder(config, G, device)
    budget = config.resolved(device, with_encoder=encoder is not None)
    return {"encode": int(encoder is not None), "project_w": budget.steps_w, "project_wplus": budget.steps_wplus,
            "tune": budget.steps_pti}


def rough_by_design(report: dict) -> bool:
    """An 'instant' inversion from an encoder: its reconstruction is rough by design (said in a note, not a
    warning), which matters for a pasted-back square and not for an edit of the photo's own pixels."""
    return report.get("start") == "encoder" and report.get("config", {}).get("quality") == "instant"


def poor_reconstruction_notice(psnr_value: float, quality: str = "fast") -> str:
    """What a poor reconstruction (PSNR below :data:`POOR_PSNR`) means for the edit, in one paragraph."""
    if quality == "instant":
        return (f"Instant inversion: the model's version of the face is rough ({psnr_value:.1f} dB; tuning gets "
                f"{POOR_PSNR:.0f} dB or more). Drags move your photo's own pixels, and land as well as after tuning; "
                "choose Fast or Faithful for a pasted-back square or a closer 'What the model sees'.")
    advice = " The faithful preset may get closer." if quality != "faithful" else ""
    return (f"Poor reconstruction: {psnr_value:.1f} dB (good ones reach {POOR_PSNR:.0f} dB or more). The generator "
            "does not reproduce this face well (glasses, a hat, an unusual face, pose or lighting). Drags are still "
            "applied to your photo's own pixels, but they are computed on the generator's version of the face: "
            "parts it got wrong may move less precisely, and a pasted-back square would look like someone else."
            + advice)


def _device_of(G) -> torch.device:
    return next(G.parameters()).device


_ENCODERS: dict = {}
_ENCODERS_LOCK = threading.Lock()


def resolve_encoder(config: InversionConfig, G, device=None) -> tuple[Encoder | None, str | None]:
    """(encoder on ``device``, its folder) for this inversion, or (None, None) to project by optimization.

    'auto': the encoder that ships with the model (found like its alignment template: ``model_dir``,
    ``G.name_or_path`` or the bundled folder whose weights ``G`` has); models without one, such as
    NVIDIA's checkpoints, fall back to projection. A folder: that encoder (InversionError if it cannot be
    used with ``G``). Loaded encoders are kept per folder and device, read-only, shared by every inversion.
    """
    if config.encoder == "none":
        return None, None
    if config.encoder == "auto":
        candidates = (config.model_dir, getattr(G, "name_or_path", None), find_model_dir(G))
        folder = next((f for f in (encoder_folder(d) for d in candidates if d) if f is not None), None)
        if folder is None:
            return None, None
    else:
        folder = Path(config.encoder)
    device = torch.device(device or config.device or _device_of(G))
    weights = folder / "model.safetensors"
    key = (str(folder.resolve()), weights.stat().st_mtime_ns if weights.is_file() else 0, str(device))
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = Encoder.from_pretrained(folder, device)
        encoder = _ENCODERS[key]
    check_compatible(encoder, G)
    return encoder, str(folder)


def invert(photo, G, config: InversionConfig | None = None, progress: ProgressFn | None = None, cancel=None,
           cache: InversionCache | None = DEFAULT_CACHE) -> InversionResult:
    """Invert ``photo`` into ``G``: pivot latent + tuned generator copy + report.

    photo    : path, bytes, file object, ``PIL.Image`` or ``np.ndarray`` (HxW[xC], uint8/uint16/float).
    G        : a ``draggan.models.networks.Generator``; never modified.
    config   : :class:`InversionConfig` (defaults: presets for the device).
    progress : ``progress(stage, step, total)``; stages 'read', 'align', 'encode' (with an encoder) or
               'project_w' and 'project_wplus' (without), 'tune', 'report'.
    cancel   : ``threading.Event`` or a callable; when set/true, :class:`Cancelled` is raised
               between steps.
    cache    : an :class:`InversionCache` (default: a process-wide one), or None.

    Report keys: psnr, poor_reconstruction (psnr below POOR_PSNR; a notice says what it means), ssim,
    lpips (None without LPIPS weights), loss_used, loss_note (why the pyramid fallback was used, or None),
    start ('encoder' or 'projection'), encoder (its folder or None), face_found,
    num_faces, alignment, notices (warnings), notes (what the preset means, e.g. 'instant''s rough
    reconstruction), identity_distance (None if no face), stage_mse
    (initial (None with the encoder) / projection (the pivot's, before tuning) / tuned), steps,
    timings (seconds per stage), photo_sha256,
    model_id, cached, config.
    Raises :class:`PhotoError` for unreadable photos, :class:`Cancelled` when cancelled.
    """
    config = config or InversionConfig()
    device = torch.device(config.device) if config.device else _device_of(G)
    encoder, encoder_dir = resolve_encoder(config, G, device)
    cfg = config.resolved(device, with_encoder=encoder is not None)
    timings: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(stage):
        nonlocal tick
        now = time.perf_counter()
        timings[stage] = round(now - tick, 3)
        tick = now

    def report_progress(stage, step, total):
        if progress:
            progress(stage, step, total)

    # 1. Read.
    report_progress("read", 0, 1)
    loaded: Photo = read_photo(photo, max_pixels=cfg.max_pixels)
    photo_sha = loaded.sha256()
    model_id = model_fingerprint(G)
    key = InversionCache.key(photo_sha, model_id if encoder is None else f"{model_id}+{encoder_dir}", cfg)
    if cache is not None:
        hit = cache.get(key, device=device)
        if hit is not None:
            report_progress("read", 1, 1)
            return dataclasses.replace(hit, report={**hit.report, "cached": True})
    lap("read")
    report_progress("read", 1, 1)
    check_cancel(cancel)

    # 2. Align.
    report_progress("align", 0, 1)
    method, template, notices = resolve_alignment(cfg, G)
    notices = loaded.notices + notices
    aligned, alignment, align_notices = align_mod.align_photo(
        loaded.image, G.img_resolution, method=method, template=template, subset=cfg.landmarks,
        min_score=cfg.face_min_score)
    notices += align_notices
    notes = []      # what the chosen preset means: information for the report, not warnings
    if cfg.quality == "instant" and encoder is None:
        notes.append("This model has no learned encoder, so 'instant' inverted by projection and tuning, as 'fast'.")
    lap("align")
    report_progress("align", 1, 1)
    check_cancel(cancel)

    # 3. The pivot: the encoder's latent, or projection. A private copy of G when it is elsewhere or
    # trainable, so G's .grad stays untouched.
    G_work = G
    if _device_of(G) != device or any(p.requires_grad for p in G.parameters()):
        G_work = copy.deepcopy(G).to(device).eval().requires_grad_(False)
    target = to_tensor(aligned, device)
    # Without VGG16 weights this is the documented pyramid fallback: said in the report's details, not as a notice.
    loss = make_loss(cfg.loss, cfg.vgg16_path, device)
    amp = None if cfg.amp == "none" else cfg.amp
    mse_initial = None
    if encoder is not None:
        report_progress("encode", 0, 1)
        ws = encode(encoder, G_work, target, cfg.encoder_iterations,
                    amp={"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp))
        noises = None
        report_progress("encode", 1, 1)
    else:
        settings = ProjectionSettings(
            steps_w=cfg.steps_w, steps_wplus=cfg.steps_wplus, lr=cfg.lr_w, w_noise=cfg.w_noise,
            noise_reg=cfg.noise_reg, l2_weight=cfg.project_l2_weight, perceptual_weight=cfg.perceptual_weight,
            w_avg_samples=cfg.w_avg_samples, amp=amp, cuda_graph=cfg.cuda_graph, seed=cfg.seed)
        with torch.no_grad():  # The starting point's error, for the report.
            w_start = w_stats(G_work, cfg.w_avg_samples)[0].to(device).reshape(1, 1, -1).expand(-1, G.num_ws, -1)
            mse_initial = float((G_work.synthesis(w_start, noise_mode="const") - target).square().mean())
        with cudnn_autotuned(device, cfg.cudnn_autotune):
            ws, noises = project(G_work, target, loss, settings, progress=progress, cancel=cancel)
    with torch.no_grad():
        mse_projection = float((G_work.synthesis(ws, noise_mode="const", noise_inputs=noises) - target).square().mean())
    lap("encode" if encoder is not None else "project")
    check_cancel(cancel)

    # 4. Pivotal tuning.
    stop = cfg.pti_stop_lpips if loss.is_lpips else cfg.pti_stop_fallback
    tuning = TuningSettings(
        steps=cfg.steps_pti, lr=cfg.lr_pti, lr_rampdown=cfg.pti_lr_rampdown, l2_weight=cfg.pti_l2_weight,
        perceptual_weight=cfg.perceptual_weight,
        stop_threshold=stop, locality=cfg.locality, locality_weight=cfg.locality_weight,
        locality_alpha=cfg.locality_alpha, min_resolution=cfg.pti_min_resolution, amp=amp,
        cuda_graph=cfg.cuda_graph, seed=cfg.seed)
    with cudnn_autotuned(device, cfg.cudnn_autotune):   # hundreds of steps of the same shapes
        G_tuned, steps_pti_run = pivotal_tuning(G_work, ws, target, loss, tuning,
                                                noises=noises if cfg.keep_projected_noise else None,
                                                progress=progress, cancel=cancel)
    with torch.no_grad():
        out = G_tuned.synthesis(ws, noise_mode="const")
        mse_tuned = float((out - target).square().mean())
    reconstruction = to_image(out)
    lap("tune")

    # 5. Report.
    report_progress("report", 0, 1)
    metric = lpips_metric(cfg.vgg16_path, device)
    lpips_value = None if metric is None else lpips_distance(aligned, reconstruction, metric)
    face_found = alignment.method != "center"
    identity = identity_distance(aligned, reconstruction) if (cfg.identity and face_found) else None
    lap("report")
    report_progress("report", 1, 1)
    psnr_value = psnr(aligned, reconstruction)
    poor = bool(psnr_value < POOR_PSNR)
    report = {
        "psnr": round(psnr_value, 3),
        "poor_reconstruction": poor,
        "ssim": round(ssim(aligned, reconstruction), 4),
        "lpips": None if lpips_value is None else round(lpips_value, 4),
        "loss_used": loss.name,
        "loss_note": loss.notice,
        "start": "encoder" if encoder is not None else "projection",
        "encoder": encoder_dir,
        "face_found": face_found,
        "num_faces": alignment.num_faces,
        "alignment": alignment.method,
        "notices": notices,
        "notes": notes,
        "identity_distance": None if identity is None else round(identity, 4),
        "stage_mse": {"initial": mse_initial, "projection": mse_projection, "tuned": mse_tuned},
        "steps": {"w": cfg.steps_w, "wplus": cfg.steps_wplus, "pti": steps_pti_run, "pti_max": cfg.steps_pti,
                  "encoder_iterations": None if encoder is None else (cfg.encoder_iterations or
                                                                       encoder.cfg.iterations)},
        "timings": {**timings, "total": round(sum(timings.values()), 3)},
        "photo_sha256": photo_sha,
        "model_id": model_id,
        "device": str(device),
        "cached": False,
        "config": cfg.to_dict(),
    }
    if poor:    # expected of 'instant' (the encoder alone): said as a note; otherwise a warning
        (notes if rough_by_design(report) else notices).append(poor_reconstruction_notice(psnr_value, cfg.quality))
    result = InversionResult(ws=ws.detach().float().cpu(), generator=G_tuned, aligned=aligned,
                             reconstruction=reconstruction, report=report, alignment=alignment, photo=loaded.image)
    if cache is not None:
        cache.put(key, result)
    return result


__all__ = ["invert", "planned_steps", "rough_by_design", "PRESET_COSTS", "InversionConfig", "InversionResult",
           "InversionCache",
           "DEFAULT_CACHE", "PhotoError", "model_fingerprint", "resolve_alignment", "alignment_for_model"]
