"""Projection: find the latent whose image best matches the aligned photo (StyleGAN2 §5 / PTI step 1).

Recipe (Karras et al. 2020, Appendix D; PTI uses it for its pivot):
- start from the mean latent ``w_avg``; optimize one W (broadcast to every layer) with Adam;
- learning rate ramps up over the first 5% of steps and down by a cosine over the last 25%;
- Gaussian noise added to W, its scale ``w_std * w_noise`` decaying quadratically to zero
  at 75% of the run, explores before it settles;
- the per-layer noise maps are optimized too, and kept from absorbing the image's content
  by a penalty on their spatial autocorrelation at every scale (weight 1e5), then
  renormalized to zero mean / unit variance after each step;
- optionally a second, shorter phase refines every layer's latent separately (W+).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from typing import Callable

import torch
import torch.nn.functional as F

from draggan.engine.cuda_graphs import StepGraph, adam, set_lr, wants_graph

from .errors import Cancelled
from .losses import ReconstructionLoss

ProgressFn = Callable[[str, int, int], None]

_W_STATS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class ProjectionSettings:
    steps_w: int = 450            # W steps (PTI: 450).
    steps_wplus: int = 0          # Extra W+ steps after W (0 = W pivot only, which edits best).
    lr: float = 0.01              # Peak learning rate.
    lr_rampup: float = 0.05       # Fraction of steps to ramp the lr up.
    lr_rampdown: float = 0.25     # Fraction of steps of cosine ramp-down.
    w_noise: float = 0.05         # Initial W noise, as a fraction of the W spread.
    w_noise_ramp: float = 0.75    # Fraction of steps over which the W noise decays to zero.
    noise_reg: float = 1e5        # Weight of the noise autocorrelation penalty.
    l2_weight: float = 1.0        # Weight of pixel MSE next to the perceptual loss.
    perceptual_weight: float = 1.0
    w_avg_samples: int = 10000    # Z samples for the W mean / spread.
    amp: str | None = None        # 'bf16' / 'fp16' autocast for the generator and LPIPS (None = fp32).
    cuda_graph: bool | None = None  # Replay each step as a CUDA graph (None: on for CUDA devices).
    seed: int = 0


def w_stats(G, samples: int = 10000, seed: int = 123) -> tuple[torch.Tensor, float]:
    """(w_avg [w_dim], w_std scalar) of the mapping network, sampled once per generator.

    The tracked ``mapping.w_avg`` is used when the model has one (trained models); the
    spread is the RMS distance of sampled W to the mean, as in the StyleGAN2 projector.
    """
    key = (samples, seed)
    cached = _W_STATS.get(G)
    if cached is not None and key in cached:
        return cached[key]
    device = G.mapping.w_avg.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(samples, G.z_dim, generator=gen).to(device)
    c = torch.zeros(samples, G.c_dim, device=device) if G.c_dim else None
    with torch.no_grad():
        w = G.mapping(z, c)[:, 0].float()
    tracked = G.mapping.w_avg.float()
    w_avg = tracked if tracked.abs().sum() > 0 else w.mean(0)
    w_std = float(((w - w_avg) ** 2).sum(1).mean().sqrt())
    _W_STATS.setdefault(G, {})[key] = (w_avg.clone(), w_std)
    return w_avg.clone(), w_std


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation at one-pixel shifts, at every scale down to 8x8 (StyleGAN2 Appendix D)."""
    reg = 0.0
    for n in noises:
        x = n
        while True:
            reg = reg + (x * torch.roll(x, 1, dims=3)).mean() ** 2 + (x * torch.roll(x, 1, dims=2)).mean() ** 2
            if x.shape[-1] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return reg


def lr_schedule(t: float, s: ProjectionSettings) -> float:
    ramp = min(1.0, (1.0 - t) / s.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / s.lr_rampup) if s.lr_rampup > 0 else 1.0
    return s.lr * ramp


def autocast(device: torch.device, amp: str | None):
    """Mixed precision for the generator and the loss network; weights and optimizer stay fp32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
    # No weight-cast cache: each weight is used once per step, and a captured graph must not hold the cache.
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False)


@contextlib.contextmanager
def flush_denormals(device: torch.device):
    """On CPU, treat denormal floats (< ~1e-38) as zero while optimizing.

    Late in an optimization, gradients and Adam's second moments get tiny; x86 arithmetic
    on denormals is orders of magnitude slower, and flushing them changes nothing that
    matters. The flag is restored afterwards.
    """
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def check_cancel(cancel) -> None:
    """``cancel``: None, a threading.Event-like object (``is_set``), or a callable returning True to stop."""
    if cancel is None:
        return
    flag = cancel.is_set() if hasattr(cancel, "is_set") else cancel()
    if flag:
        raise Cancelled("Inversion cancelled.")


def objective(img, target, loss: ReconstructionLoss, l2_weight: float, perceptual_weight: float):
    """(total per-batch loss, perceptual value) between generated and target images in [-1, 1]."""
    img = img.float()
    perc = loss(img, target).float()
    mse = (img - target).square().mean(dim=(1, 2, 3))
    return (perceptual_weight * perc + l2_weight * mse).sum(), perc


def project(G, target: torch.Tensor, loss: ReconstructionLoss, settings: ProjectionSettings,
            progress: ProgressFn | None = None, cancel=None, history: list | None = None):
    """Optimize a latent so ``G.synthesis`` reproduces ``target`` ([1, 3, R, R] in [-1, 1], on G's device).

    Returns (ws [1, num_ws, w_dim], noise maps list [1, 1, r, r]), both detached. ``history``
    (if given) receives one dict per step with the loss values.
    """
    device = target.device
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    w_avg, w_std = w_stats(G, settings.w_avg_samples)
    w_opt = w_avg.to(device).reshape(1, 1, -1).clone().requires_grad_(True)
    noises = [torch.randn(1, 1, *shape, generator=gen).to(device).requires_grad_(True)
              for shape in G.synthesis.noise_shapes()]

    def run_phase(stage: str, steps: int, latent: torch.Tensor, broadcast: bool, w_noise: float):
        graphed = wants_graph(device, settings.cuda_graph)
        opt = adam([latent] + noises, settings.lr, graphed, betas=(0.9, 0.999))
        w_jitter = torch.zeros_like(latent)  # this step's exploration noise, refilled before each step

        def step() -> torch.Tensor:  # static shapes, no host reads: capturable as a CUDA graph
            ws = latent + w_jitter
            if broadcast:
                ws = ws.expand(-1, G.num_ws, -1)
            with autocast(device, settings.amp):
                img = G.synthesis(ws, noise_mode="const", noise_inputs=noises)
                rec, perc = objective(img, target, loss, settings.l2_weight, settings.perceptual_weight)
            reg = noise_regularization(noises)
            total = rec + settings.noise_reg * reg
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            with torch.no_grad():  # keep the noise maps N(0, 1)
                for n in noises:
                    n -= n.mean()
                    n *= n.square().mean().rsqrt()
                mse = (img.detach().float() - target).square().mean()
                return torch.stack([rec.detach(), mse, perc.detach().mean(), reg.detach()]).float()

        run_step = StepGraph(step, device, enabled=graphed)
        for i in range(steps):
            check_cancel(cancel)
            t = i / max(steps, 1)
            set_lr(opt, lr_schedule(t, settings))
            w_noise_scale = w_std * w_noise * max(0.0, 1.0 - t / settings.w_noise_ramp) ** 2
            w_jitter.copy_(torch.randn(latent.shape, generator=gen) * w_noise_scale)
            info = run_step()
            if history is not None:
                rec, mse, perc, reg = info.tolist()
                history.append({"stage": stage, "step": i, "loss": rec, "mse": mse, "perceptual": perc,
                                "noise_reg": reg})
            if progress:
                progress(stage, i + 1, steps)

    with flush_denormals(device):
        run_phase("project_w", settings.steps_w, w_opt, broadcast=True, w_noise=settings.w_noise)
        ws = w_opt.detach().expand(-1, G.num_ws, -1).clone()
        if settings.steps_wplus > 0:
            ws_opt = ws.clone().requires_grad_(True)
            # Refinement: the W search is done, so no exploration noise.
            run_phase("project_wplus", settings.steps_wplus, ws_opt, broadcast=False, w_noise=0.0)
            ws = ws_opt.detach().clone()
    return ws, [n.detach().clone() for n in noises]
