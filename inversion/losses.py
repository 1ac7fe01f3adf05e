"""Reconstruction losses: LPIPS (VGG) when its weights are on disk, an offline pyramid loss otherwise.

LPIPS (Zhang et al. 2018) compares VGG16 features through linear layers calibrated on
human judgements. The ``lpips`` wheel ships those linear layers, but the VGG16 trunk
needs torchvision's ImageNet weights (``vgg16-397923af.pth``), which torchvision would
try to download. Here they are only ever read from a file: the torch hub cache,
``$DRAGGAN_VGG16`` or a path in the config. When none exists, nothing is downloaded;
the pipeline uses the fallback below, says so in a warning, and reports the loss's name.

Fallback ``pyramid`` (offline, no weights): L1 distance between Laplacian pyramids
(Bojanowski et al. 2018, "Lap1"; every band weighted equally per pixel, so coarse
structure counts as much as fine detail) plus ``1 - SSIM`` averaged over three scales
(Wang et al. 2003/2004), which rewards matching local contrast and structure rather than
just mean colour. Both terms are differentiable and cheap at 128-256 px. See
bench/bench_inversion.py for how it compares with plain L2.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1
VGG16_ENV = "DRAGGAN_VGG16"
LOSS_KINDS = ("auto", "lpips", "pyramid", "l2", "lpips-random")
LPIPS_MAX_SIDE = 256  # Larger images are area-downsampled first, as PTI does.


# --------------------------------------------------------------------------- VGG16 weights


def vgg16_candidates(path=None) -> list[tuple[str, Path]]:
    """(where from, path) pairs checked in order: explicit path, $DRAGGAN_VGG16, torch hub cache."""
    out = []
    if path:
        out.append(("config", Path(path)))
    if os.environ.get(VGG16_ENV):
        out.append((VGG16_ENV, Path(os.environ[VGG16_ENV])))
    out.append(("torch hub cache", Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE))
    return out


def find_vgg16_weights(path=None) -> Path | None:
    for _, p in vgg16_candidates(path):
        if p.is_file():
            return p
    return None


def _lpips_vgg(weights: Path | None) -> nn.Module:
    """``lpips.LPIPS`` (VGG, v0.1 linear layers from the wheel) whose trunk never touches the network.

    The trunk is built randomly initialized (``pnet_rand=True``: torchvision downloads
    nothing) and then loaded from ``weights`` if given.
    """
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation note about `pretrained=`
        model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    if weights is not None:
        vgg = torch.load(str(weights), map_location="cpu", weights_only=True)
        # lpips splits torchvision's `features` Sequential into slices that keep the indices.
        state = {}
        for name in model.net.state_dict():
            _, index, kind = name.split(".")
            state[name] = vgg[f"features.{index}.{kind}"]
        model.net.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------- fallback


def _gaussian_kernel(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, k1d: torch.Tensor) -> torch.Tensor:
    """Separable depthwise blur with reflect padding."""
    c = x.shape[1]
    p = len(k1d) // 2
    x = F.pad(x, [p, p, p, p], mode="reflect")
    x = F.conv2d(x, k1d.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k1d.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@functools.lru_cache(maxsize=None)
def _binomial5(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Made once per device: a host-to-device copy may not happen inside a captured CUDA graph.
    return (torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=dtype) / 16).to(device)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass images (fine to coarse) and the final low-pass residual."""
    k = _binomial5(x.device, x.dtype)
    bands = []
    for _ in range(levels):
        if min(x.shape[-2:]) < 8:
            break
        low = _blur(x, k)
        down = low[..., ::2, ::2]
        up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(x - up)
        x = down
    bands.append(x)
    return bands


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-sample mean SSIM (Gaussian window 11, sigma 1.5), inputs in a range of width ``data_range``."""
    k = _gaussian_kernel(11 if min(x.shape[-2:]) >= 16 else 5, 1.5, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _blur(x, k), _blur(y, k)
    sxx = _blur(x * x, k) - mx * mx
    syy = _blur(y * y, k) - my * my
    sxy = _blur(x * y, k) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3))


class PyramidLoss(nn.Module):
    """Offline perceptual proxy: Laplacian-pyramid L1 + ``ssim_weight`` * (1 - SSIM over ``ssim_scales`` scales).

    Inputs in [-1, 1], shape [N, C, H, W]; returns [N].
    """

    def __init__(self, levels: int = 5, ssim_weight: float = 0.5, ssim_scales: int = 3):
        super().__init__()
        self.levels, self.ssim_weight, self.ssim_scales = levels, ssim_weight, ssim_scales

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        px, py = laplacian_pyramid(x, self.levels), laplacian_pyramid(y, self.levels)
        lap = sum((a - b).abs().mean(dim=(1, 2, 3)) for a, b in zip(px, py)) / len(px)
        s = 0
        for i in range(self.ssim_scales):
            s = s + ssim(x, y)
            if i + 1 < self.ssim_scales:
                x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        return lap + self.ssim_weight * (1 - s / self.ssim_scales)


# --------------------------------------------------------------------------- public


@dataclasses.dataclass
class ReconstructionLoss:
    """The perceptual part of the objective.

    name   : 'lpips-vgg' | 'pyramid' | 'l2' | 'lpips-vgg-random-trunk' (benchmarks only).
    module : callable (x, y) -> per-sample distance [N], images in [-1, 1]; None for 'l2'
             (the pipeline's L2 term then carries the whole loss).
    notice : a sentence for the user when the requested loss could not be used, else None.
    """

    name: str
    module: nn.Module | None
    notice: str | None = None

    @property
    def is_lpips(self) -> bool:
        return self.name == "lpips-vgg"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        if isinstance(self.module, PyramidLoss):
            # Pixel-level residuals are small late in tuning: keep them out of bf16/fp16 autocast.
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.module(x.float(), y.float()).reshape(x.shape[0])
        if self.name.startswith("lpips") and max(x.shape[-2:]) > LPIPS_MAX_SIDE:
            x = F.interpolate(x, size=(LPIPS_MAX_SIDE, LPIPS_MAX_SIDE), mode="area")
            y = F.interpolate(y, size=(LPIPS_MAX_SIDE, LPIPS_MAX_SIDE), mode="area")
        return self.module(x, y).reshape(x.shape[0])


_CACHE: dict = {}
_WARNED: set = set()
_LOCK = threading.Lock()


def lpips_metric(vgg16_path=None, device="cpu") -> ReconstructionLoss | None:
    """Real LPIPS for the report, or None when the VGG16 weights are not on disk."""
    weights = find_vgg16_weights(vgg16_path)
    if weights is None:
        return None
    return _cached("lpips-vgg", weights, device)


def make_loss(kind: str = "auto", vgg16_path=None, device="cpu") -> ReconstructionLoss:
    """Build the perceptual loss ``kind`` ('auto' = LPIPS if possible, else the pyramid fallback).

    Never downloads. When LPIPS was asked for (or 'auto') and its weights are missing, the
    result is the pyramid loss with a ``notice``, which is also logged as a warning.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss must be one of {LOSS_KINDS}, got {kind!r}")
    if kind == "l2":
        return ReconstructionLoss("l2", None)
    if kind == "pyramid":
        return _cached("pyramid", None, device)
    if kind == "lpips-random":
        return _cached("lpips-vgg-random-trunk", None, device)
    weights = find_vgg16_weights(vgg16_path)
    if weights is not None:
        return _cached("lpips-vgg", weights, device)
    looked = ", ".join(str(p) for _, p in vgg16_candidates(vgg16_path))
    notice = (f"LPIPS weights missing: VGG16 ImageNet weights ({VGG16_FILE}) not found (looked in {looked}); "
              f"used the offline pyramid loss (Laplacian L1 + SSIM) instead. Set {VGG16_ENV} to the file to use LPIPS.")
    if notice not in _WARNED:  # once per process; every report still carries the notice
        _WARNED.add(notice)
        log.info(notice)
    loss = _cached("pyramid", None, device)
    return dataclasses.replace(loss, notice=notice)


def _cached(name: str, weights: Path | None, device) -> ReconstructionLoss:
    key = (name, str(weights), str(device))
    with _LOCK:
        if key not in _CACHE:
            if name == "pyramid":
                module = PyramidLoss()
            elif name == "lpips-vgg":
                module = _lpips_vgg(weights)
            else:  # random trunk, fixed seed so benchmark runs compare
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    module = _lpips_vgg(None)
            _CACHE[key] = ReconstructionLoss(name, module.to(device))
        return _CACHE[key]
