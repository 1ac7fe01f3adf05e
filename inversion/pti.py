"""Pivotal tuning (Roich et al. 2022, "Pivotal Tuning for Latent-based Editing of Real Images").

The projected latent (the *pivot*) is kept fixed, and a copy of the generator's synthesis
weights is tuned so that the pivot reproduces the photo exactly; edits made around the
pivot then keep the photo's identity and details. Loss: perceptual + L2, Adam lr 3e-4, up
to 350 steps, stopping early once the perceptual distance reaches 0.06.

Optional locality regularization (PTI §3.3): latents sampled on a sphere of radius
``alpha`` around the pivot (towards random W) should render the same in the tuned and the
original generator, which keeps the tuning from changing the rest of the latent space.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch

from draggan.engine.cuda_graphs import StepGraph, adam, set_lr, wants_graph

from .losses import ReconstructionLoss
from .project import ProgressFn, autocast, check_cancel, flush_denormals, objective


@dataclasses.dataclass
class TuningSettings:
    steps: int = 350              # Maximum tuning steps (PTI: 350).
    lr: float = 3e-4              # Adam learning rate.
    lr_rampdown: float = 0.0      # Fraction of the steps over which the lr decays to 0 (cosine); 0 = constant.
    l2_weight: float = 1.0        # Pixel MSE weight next to the perceptual loss.
    perceptual_weight: float = 1.0
    stop_threshold: float | None = 0.06  # Stop once the perceptual distance is at or below this (None = never).
    locality: bool = False        # PTI locality regularization.
    locality_weight: float = 0.1  # Weight of each locality term (L2 and perceptual), as in PTI.
    locality_alpha: float = 30.0  # Radius of the sampled sphere around the pivot, in W units.
    locality_interval: int = 1    # Apply the regularizer every N steps.
    min_resolution: int = 0       # Tune only the synthesis blocks of at least this resolution (0 = every block).
    amp: str | None = None        # 'bf16' / 'fp16' autocast (weights and Adam stay fp32).
    cuda_graph: bool | None = None  # Replay each step as a CUDA graph (None: on for CUDA devices, without locality).
    seed: int = 0


def tunable_copy(G, device, min_resolution: int = 0) -> torch.nn.Module:
    """A copy of ``G`` on ``device`` whose synthesis weights (of the blocks at ``min_resolution`` and above)
    require grad; ``G`` stays untouched. Frozen early blocks also spare the backward pass through them."""
    G_tuned = copy.deepcopy(G).to(device).float().train(False)
    G_tuned.requires_grad_(False)
    for block in G_tuned.synthesis.blocks():
        if block.resolution >= min_resolution:
            block.requires_grad_(True)
    return G_tuned


def noise_layers(G) -> list:
    """The synthesis layers that take a noise input, in ``G.synthesis.noise_shapes()`` order."""
    layers = []
    for block in G.synthesis.blocks():
        if block.num_conv == 2:
            layers.append(block.conv0)
        layers.append(block.conv1)
    return layers


def set_const_noise(G, noises: list[torch.Tensor]) -> None:
    """Store projected noise maps as ``G``'s constant noise, so ``noise_mode='const'`` renders them."""
    with torch.no_grad():
        for layer, n in zip(noise_layers(G), noises, strict=True):
            layer.noise_const.copy_(n.reshape(layer.noise_const.shape))


def _locality_latents(G, ws_pivot: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(1, G.z_dim, generator=gen).to(ws_pivot.device)
    c = torch.zeros(1, G.c_dim, device=ws_pivot.device) if G.c_dim else None
    with torch.no_grad():
        w_rand = G.mapping(z, c)
    direction = w_rand - ws_pivot
    return ws_pivot + alpha * direction / direction.norm().clamp_min(1e-8)


def pivotal_tuning(G, ws_pivot: torch.Tensor, target: torch.Tensor, loss: ReconstructionLoss,
                   settings: TuningSettings, noises: list[torch.Tensor] | None = None,
                   progress: ProgressFn | None = None, cancel=None, history: list | None = None):
    """Tune a copy of ``G`` so that ``G.synthesis(ws_pivot, noise_mode='const')`` matches ``target``.

    noises: projected noise maps; they become the copy's constant noise (None: keep G's).
    Returns (tuned generator in eval mode with requires_grad False, steps run).
    """
    device = target.device
    ws_pivot = ws_pivot.to(device).detach()
    G_tuned = tunable_copy(G, device, settings.min_resolution)
    if noises is not None:
        set_const_noise(G_tuned, noises)
    # The locality reference renders with the same noise as the tuned copy, so only weights differ.
    G_orig = None
    if settings.locality:
        G_orig = copy.deepcopy(G_tuned).eval().requires_grad_(False)
    params = [p for p in G_tuned.synthesis.parameters() if p.requires_grad]
    # Locality draws latents on the host each step, which a captured graph cannot replay.
    graphed = wants_graph(device, settings.cuda_graph) and not settings.locality
    opt = adam(params, settings.lr, graphed)
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    with flush_denormals(device):
        steps_run = _tune(G_tuned, G_orig, ws_pivot, target, loss, settings, opt, gen, graphed, progress, cancel,
                          history)
    return G_tuned.eval().requires_grad_(False), steps_run


def _tune(G_tuned, G_orig, ws_pivot, target, loss, settings, opt, gen, graphed, progress, cancel, history) -> int:
    """The tuning loop; returns the number of optimizer steps taken.

    The early stop reads the perceptual distance that a step measured before its update,
    so it stops one update later than a check before each step would: the price of
    keeping the step free of host reads (and so capturable as a CUDA graph).
    """
    device = target.device

    def step() -> torch.Tensor:
        with autocast(device, settings.amp):
            img = G_tuned.synthesis(ws_pivot, noise_mode="const")
            total, perc = objective(img, target, loss, settings.l2_weight, settings.perceptual_weight)
        if settings.locality and step.count % settings.locality_interval == 0:
            ws_near = _locality_latents(G_orig, ws_pivot, settings.locality_alpha, gen)
            with autocast(device, settings.amp):
                with torch.no_grad():
                    ref = G_orig.synthesis(ws_near, noise_mode="const").float()
                near = G_tuned.synthesis(ws_near, noise_mode="const")
                reg, _ = objective(near, ref, loss, settings.locality_weight, settings.locality_weight)
            total = total + reg
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        step.count += 1
        with torch.no_grad():
            mse = (img.detach().float() - target).square().mean()
            return torch.stack([total.detach(), perc.detach().mean(), mse]).float()

    step.count = 0
    run_step = StepGraph(step, device, enabled=graphed)
    stop = settings.stop_threshold if loss.module is not None else None
    steps_run = 0
    for i in range(settings.steps):
        check_cancel(cancel)
        if settings.lr_rampdown > 0:  # settle at the end instead of oscillating at the full lr
            remaining = (settings.steps - i) / (settings.steps * settings.lr_rampdown)
            set_lr(opt, settings.lr * (0.5 - 0.5 * math.cos(math.pi * min(1.0, remaining))))
        info = run_step()
        steps_run += 1
        if stop is not None or history is not None:
            total, perc, mse = info.tolist()
            if history is not None:
                history.append({"stage": "tune", "step": i, "loss": total, "perceptual": perc, "mse": mse})
            if stop is not None and perc <= stop:
                break
        if progress:
            progress("tune", i + 1, settings.steps)
    return steps_run
