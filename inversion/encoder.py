"""A learned encoder: one forward pass from an aligned face to an editable W+ latent.

Optimization-based projection (``project.py``) needs tens of generator steps per photo; on a
2-core CPU that is most of an inversion. An encoder answers in one pass. Written from the papers:

* **e4e** (Tov et al., SIGGRAPH 2021, "Designing an Encoder for StyleGAN Image Manipulation"):
  the code is W+, but its layers are kept close to one shared W (a penalty on each layer's
  deviation from the mean of the layers), because latents near W edit well;
* **pSp** (Richardson et al., CVPR 2021): coarse layers are read from the deepest, smallest
  feature map and fine layers from larger ones;
* **ReStyle** (Alaluf et al., ICCV 2021): the encoder sees the photo *and* the current
  reconstruction (6 channels) and predicts a correction of the latent; a few iterations, each
  one generator pass, refine it. The first iteration starts from the mean latent.

Because the encoder sees the reconstruction of the generator it works with, the encoder of
``celeba128`` also serves ``celeba128-lite`` (the same mapping network, so the same W space):
its iterations correct for the lite model's own rendering.

    encoder = load_encoder("checkpoints/celeba128")      # None when the model has none
    ws = encode(encoder, G, target)                       # target [N, 3, R, R] in [-1, 1]

Files: ``<model folder>/encoder/config.json`` + ``model.safetensors`` (safetensors only: nothing
is ever unpickled), or ``<model folder>/encoder.json`` ``{"shared": "../celeba128/encoder"}`` for a
model that uses another model's encoder.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from draggan.models.networks import config_from_dict
from draggan.models.pretrained import read_config, read_state, write_pretrained

from .errors import InversionError

ENCODER_DIR = "encoder"          # <model folder>/encoder/{config.json, model.safetensors}
ENCODER_LINK = "encoder.json"    # <model folder>/encoder.json: {"shared": "<relative path of an encoder folder>"}
ARCHITECTURE = "restyle-e4e"     # config.json's "architecture" of this encoder


@dataclasses.dataclass
class EncoderConfig:
    """Architecture of an :class:`Encoder`.

    img_resolution = 128,                      # Side of the aligned input (the generator's resolution).
    num_ws         = 12,                       # W+ layers of the generator.
    w_dim          = 512,                      # Width of each W+ layer.
    channels       = (32, 64, 128, 256, 256, 384),  # Stem, then one residual stage per halving of the side.
    head_hidden    = 256,                      # Width of each style head's hidden layer.
    head_pool      = 4,                        # Each head pools its feature map to head_pool x head_pool.
    iterations     = 3,                        # ReStyle refinement iterations at inference.
    """

    img_resolution: int = 128
    num_ws: int = 12
    w_dim: int = 512
    channels: tuple[int, ...] = (32, 64, 128, 256, 256, 384)
    head_hidden: int = 256
    head_pool: int = 4
    iterations: int = 3

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        stages = len(self.channels) - 1
        if self.img_resolution // 2 ** stages < 1 or 2 ** int(math.log2(self.img_resolution)) != self.img_resolution:
            raise ValueError(f"img_resolution {self.img_resolution} does not fit {stages} halvings")
        if self.num_ws < 3:
            raise ValueError("num_ws must be at least 3 (coarse, medium and fine groups)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        return config_from_dict(cls, d, "encoder")

    def groups(self) -> list[tuple[int, int]]:
        """(first, end) W+ layers of the coarse, medium and fine groups (thirds, the coarse group largest)."""
        n = self.num_ws
        a = math.ceil(n / 3)
        b = a + math.ceil((n - a) / 2)
        return [(0, a), (a, b), (b, n)]


class ResidualStage(nn.Module):
    """Halve the side: a strided 3x3 conv, then a residual 3x3 conv (zero-initialized, so it starts as identity)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        x = F.leaky_relu(self.down(x), 0.2)
        return x + F.leaky_relu(self.conv(x), 0.2)


class StyleHead(nn.Module):
    """A group of W+ layers from one feature map: pool to a small grid, 1x1 conv, two linear layers."""

    def __init__(self, cin: int, layers: int, w_dim: int, hidden: int, pool: int):
        super().__init__()
        self.layers, self.w_dim, self.pool = layers, w_dim, pool
        self.reduce = nn.Conv2d(cin, 64, 1)
        self.fc = nn.Linear(64 * pool * pool, hidden)
        self.out = nn.Linear(hidden, layers * w_dim)
        nn.init.zeros_(self.out.weight)    # the first iteration starts exactly at the mean latent
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, self.pool)
        x = F.leaky_relu(self.reduce(x), 0.2).flatten(1)
        x = F.leaky_relu(self.fc(x), 0.2)
        return self.out(x).view(-1, self.layers, self.w_dim)


class Encoder(nn.Module):
    """(photo, current reconstruction) [N, 6, R, R] in [-1, 1] -> a correction of the W+ latent [N, num_ws, w_dim].

    The correction is in units of the W spread per dimension (``w_scale``); ``w_avg`` is where the
    first iteration starts. Both are buffers, taken from the generator the encoder was trained for.
    """

    def __init__(self, cfg: EncoderConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or EncoderConfig(**kwargs)
        self.cfg = cfg
        c = cfg.channels
        self.stem = nn.Conv2d(6, c[0], 3, padding=1)
        self.stages = nn.ModuleList(ResidualStage(c[i], c[i + 1]) for i in range(len(c) - 1))
        # Coarse layers from the last (smallest) map, medium from the one before, fine from the one before that.
        self.head_stage = [len(c) - 2, len(c) - 3, len(c) - 4]
        self.heads = nn.ModuleList(
            StyleHead(c[s + 1], end - first, cfg.w_dim, cfg.head_hidden, cfg.head_pool)
            for s, (first, end) in zip(self.head_stage, cfg.groups()))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.register_buffer("w_scale", torch.ones([]))

    def forward(self, photo: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.stem(torch.cat([photo, current], 1)), 0.2)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        delta = torch.cat([head(maps[s]) for head, s in zip(self.heads, self.head_stage)], 1)
        return delta.float() * self.w_scale

    def start(self, n: int) -> torch.Tensor:
        """The latent the first iteration starts from: the mean W in every layer, [n, num_ws, w_dim]."""
        return self.w_avg.float().reshape(1, 1, -1).expand(n, self.cfg.num_ws, -1)

    # ---------------------------------------------------------------- persistence

    def save_pretrained(self, directory, dtype=torch.float16, metadata: dict | None = None) -> Path:
        """``directory/config.json`` + ``model.safetensors`` (fp16 by default; the W statistics stay fp32)."""
        return write_pretrained(directory, self, ARCHITECTURE, self.cfg.to_dict(), dtype,
                                keep_fp32=("w_avg", "w_scale"), metadata=metadata)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "Encoder":
        """Load an encoder written by :meth:`save_pretrained` (raises InversionError with a sentence)."""
        from safetensors import SafetensorError

        try:
            arch, config = read_config(directory)
            if arch != ARCHITECTURE:
                raise InversionError(f"{directory}: not an encoder this version can use (architecture {arch!r}).")
            encoder = cls(EncoderConfig.from_dict(config))
            encoder.load_state_dict(read_state(directory), strict=True)
        except InversionError:
            raise
        except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as e:
            raise InversionError(f"{directory}: the encoder cannot be read ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200] if str(e) else 'damaged file'}).") from None
        return encoder.eval().requires_grad_(False).to(device)


def encoder_folder(model_dir) -> Path | None:
    """The encoder folder of a model folder (its own ``encoder/``, or the one ``encoder.json`` shares), or None."""
    if model_dir is None:
        return None
    model_dir = Path(model_dir)
    own = model_dir / ENCODER_DIR
    if (own / "config.json").is_file():
        return own
    link = model_dir / ENCODER_LINK
    if link.is_file():
        try:
            shared = (model_dir / json.loads(link.read_text())["shared"]).resolve()
        except (OSError, ValueError, KeyError, TypeError):
            raise InversionError(f"{link}: expected {{\"shared\": \"<path of an encoder folder>\"}}.") from None
        if not (shared / "config.json").is_file():
            raise InversionError(f"{link} points to {shared}, which holds no encoder.")
        return shared
    return None


def load_encoder(model_dir, device="cpu") -> Encoder | None:
    """The encoder that ships with the model in ``model_dir``, or None when it has none."""
    folder = encoder_folder(model_dir)
    return None if folder is None else Encoder.from_pretrained(folder, device)


def check_compatible(encoder: Encoder, G) -> None:
    """Raise InversionError when ``encoder`` was not made for generators shaped like ``G``."""
    cfg = encoder.cfg
    if (cfg.img_resolution, cfg.num_ws, cfg.w_dim) != (G.img_resolution, G.num_ws, G.w_dim):
        raise InversionError(f"The encoder expects a {cfg.img_resolution} px generator with {cfg.num_ws} W+ layers "
                             f"of {cfg.w_dim}; this one is {G.img_resolution} px with {G.num_ws} of {G.w_dim}.")


def encode(encoder: Encoder, G, target: torch.Tensor, iterations: int | None = None,
           amp: torch.dtype | None = None, trace: list | None = None) -> torch.Tensor:
    """W+ latent [N, num_ws, w_dim] (float32) for ``target`` [N, 3, R, R] in [-1, 1], by ReStyle iterations.

    Each iteration renders the current latent (const noise, as the editor does) and adds the
    encoder's correction. ``trace`` (a list) receives each iteration's latent.
    """
    check_compatible(encoder, G)
    iterations = encoder.cfg.iterations if iterations is None else int(iterations)
    device = target.device
    with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        ws = encoder.start(target.shape[0]).to(device)
        current = G.synthesis(ws, noise_mode="const").float()
        for i in range(iterations):
            ws = ws + encoder(target, current)
            if trace is not None:
                trace.append(ws.detach().clone())
            if i + 1 < iterations:
                current = G.synthesis(ws, noise_mode="const").float()
    return ws.float()


__all__ = ["ENCODER_DIR", "ENCODER_LINK", "Encoder", "EncoderConfig", "check_compatible", "encode",
           "encoder_folder", "load_encoder"]
