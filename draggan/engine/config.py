"""The settings of a drag (:class:`DragConfig`), its named presets and the feature block a generator uses."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

LATENT_SPACES = ("w", "w+")
NOISE_MODES = ("const", "random", "none")
REGIONS = ("auto", "global")
TRACKINGS = ("nn", "line")


class DragConfigError(ValueError):
    """A DragConfig that cannot work (bad value, or a feature block the generator does not have)."""


class MaskError(ValueError):
    """A mask of the wrong shape or type."""


@dataclass
class DragConfig:
    """Settings of a drag. Distances and radii are in image pixels of the generator's R x R output.

    lr              = 4e-3,    # Adam learning rate on the latent (the paper: 2e-3).
    max_steps       = 300,     # Steps per drag() call; a call ends earlier when every handle has arrived.
    r1              = None,    # Motion-supervision disk radius (None: 3 * R/512, at least 1 px).
    r2              = None,    # Point-tracking window radius (None: 12 * R/512, at least 2 px).
    lambda_mask     = 20.0,    # Weight of the mask term that keeps the fixed (unmasked) region unchanged.
    region          = "auto",  # Where the image may change. "auto": inside the painted mask, or without one
                               #   a soft disc around every handle->target path; nothing outside it changes
                               #   (see region.py). "global": anywhere, as in the paper.
    region_radius   = 0.1,     # "auto" without a mask: the disc's radius as a fraction of the image side
                               #   (at least twice the longest drag).
    region_feather  = 0.05,    # Width of the region's soft edge, as a fraction of the image side.
    blend_block     = None,    # "auto": the synthesis block whose output is blended into the unedited image
                               #   (None: the block below the feature block; at most the feature block).
    windowed        = None,    # A local drag runs the blocks from its blend on only a box around the region,
                               #   pasted into the unedited image (window.py: the same pixels, fewer multiply-adds).
                               #   None: on, except on CUDA devices, where it is not yet measured.
    lambda_warp     = 2.0,     # Weight of the dense term that keeps the features close to the first ones,
                               #   smoothly displaced with the handles (motion.warp_supervision_loss).
    warp_sigma      = 0.0625,  # Width (Gaussian sigma) of that displacement, as a fraction of the image side.
    lambda_latent   = 0.0,     # Weight of an L2 pull of the latent towards where the drag started
                               #   (squared offset, summed over w's channels, averaged over optimized layers).
    tracking        = "nn",    # How handles are followed. "nn": DragGAN's nearest-neighbour search of the first
                               #   features within r2; "line": FreeDrag's feature dragging along the handle->target
                               #   line with an adaptive template and backtracking (line_search.py).
    line_step       = None,    # "line" only: how far each goal lies along the line, pixels (None: R/128, >= 1 px).
    feature_block   = None,    # Synthesis block (1-based) whose output is F (None: default_feature_block(G),
                               #   block 6 = 128 px features from 512 px up, the half-resolution block below).
    latent_space    = "w+",    # "w+": optimize the first `optimize_layers` W+ layers; "w": one w for all layers.
    optimize_layers = 6,       # W+ only: how many layers, from the coarsest, are optimized; the rest stay fixed.
    stop_distance   = 0.5,     # A handle has arrived within this distance, or as close as the pixel grid it moves
                               #   on allows (None: the paper's 1 px, 2 px with more than 5 handles, scaled by
                               #   R/512, at least 1 px).
    noise_mode      = "const", # Synthesis noise: "const", "random" or "none".
    autocast        = False,   # Run the generator under bf16 autocast (for CUDA); sampling and losses stay fp32.
    cuda_graph      = None,    # Replay each step as a captured CUDA graph (None: on for CUDA devices).

    Why the floors: at small R the paper's radii shrink below one pixel. A disk of
    radius < 1 is the handle pixel alone (one feature vector: a noisy, very local
    push), while r1 = 1 already gives 5 pixels. The tracking window must be wider
    than how far content moves in one step (about a pixel, plus overshoot), or a
    handle that lags once can never catch up; r2 = 2 (5 x 5) leaves that margin.
    A handle moves on the integer grid around where it started, so a target off
    that grid is at best as close as the grid allows (up to 0.71 px): the session
    stops each handle there if that is farther than ``stop_distance``.

    Why these local defaults (lr 4e-3, stop 0.5 px, the region, the warp term): the
    ablations on named edits, which score identity and locality beside the landmark
    distance (BENCHMARKS.md, "Edit quality"). ``DragConfig.preset("paper")`` is
    DragGAN as published.

    Why CUDA graphs: a step at 512 px is a few hundred small kernels whose launch
    cost (Python, dispatcher, driver) exceeds their GPU time; replaying a graph
    launches them all at once. The graph is captured after a few eager warm-up
    steps and recaptured whenever points, mask or latent change.
    """

    lr: float = 4e-3
    max_steps: int = 300
    r1: float | None = None
    r2: float | None = None
    lambda_mask: float = 20.0
    region: str = "auto"
    region_radius: float = 0.1
    region_feather: float = 0.05
    blend_block: int | None = None
    windowed: bool | None = None
    lambda_warp: float = 2.0
    warp_sigma: float = 0.0625
    lambda_latent: float = 0.0
    tracking: str = "nn"
    line_step: float | None = None
    feature_block: int | None = None
    latent_space: str = "w+"
    optimize_layers: int = 6
    stop_distance: float | None = 0.5
    noise_mode: str = "const"
    autocast: bool = False
    cuda_graph: bool | None = None

    def __post_init__(self):
        self.latent_space = str(self.latent_space).lower()
        self.region = str(self.region).lower()
        self.tracking = str(self.tracking).lower()
        checks = [
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}"),
            (self.r1 is None or self.r1 > 0, f"r1 must be positive, got {self.r1}"),
            (self.r2 is None or self.r2 >= 1, f"r2 must be at least 1 pixel, got {self.r2}"),
            (self.lambda_mask >= 0, f"lambda_mask must be >= 0, got {self.lambda_mask}"),
            (self.feature_block is None or self.feature_block >= 1,
             f"feature_block must be >= 1, got {self.feature_block}"),
            (self.latent_space in LATENT_SPACES, f"latent_space must be 'w' or 'w+', got {self.latent_space!r}"),
            (self.optimize_layers >= 1, f"optimize_layers must be >= 1, got {self.optimize_layers}"),
            (self.stop_distance is None or self.stop_distance > 0,
             f"stop_distance must be positive, got {self.stop_distance}"),
            (self.noise_mode in NOISE_MODES, f"noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}"),
            (self.region in REGIONS, f"region must be 'auto' (local edits) or 'global', got {self.region!r}"),
            (0 < self.region_radius <= 1, f"region_radius must be in (0, 1] (a fraction of the image side), "
                                          f"got {self.region_radius}"),
            (0 <= self.region_feather <= 1, f"region_feather must be in [0, 1], got {self.region_feather}"),
            (self.blend_block is None or self.blend_block >= 1, f"blend_block must be >= 1, got {self.blend_block}"),
            (self.lambda_warp >= 0, f"lambda_warp must be >= 0, got {self.lambda_warp}"),
            (self.warp_sigma > 0, f"warp_sigma must be positive, got {self.warp_sigma}"),
            (self.lambda_latent >= 0, f"lambda_latent must be >= 0, got {self.lambda_latent}"),
            (self.tracking in TRACKINGS, f"tracking must be one of {TRACKINGS}, got {self.tracking!r}"),
            (self.line_step is None or self.line_step > 0, f"line_step must be positive, got {self.line_step}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DragConfigError(message)

    @classmethod
    def preset(cls, name: str, **overrides) -> "DragConfig":
        """A named preset (:data:`PRESETS`) with ``overrides`` on top."""
        key = str(name).lower()
        if key not in PRESETS:
            raise DragConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[key], **overrides})

    @property
    def local(self) -> bool:
        return self.region == "auto"

    def radii(self, resolution: int) -> tuple[float, float]:
        """(r1, r2) for an image of ``resolution`` pixels (see the floors above)."""
        r1 = self.r1 if self.r1 is not None else max(3.0 * resolution / 512, 1.0)
        r2 = self.r2 if self.r2 is not None else max(12.0 * resolution / 512, 2.0)
        return float(r1), float(r2)

    def line_step_for(self, resolution: int) -> float:
        return float(self.line_step) if self.line_step is not None else max(resolution / 128, 1.0)

    def stop_distance_for(self, resolution: int, num_handles: int) -> float:
        if self.stop_distance is not None:
            return float(self.stop_distance)
        base = 2.0 if num_handles > 5 else 1.0
        return max(base * resolution / 512, 1.0)


# Named settings. "local" is the default (DragConfig()): the drag changes the region around the points
# (or the painted mask) and nothing else. "paper" is DragGAN as published (Pan et al., SIGGRAPH 2023):
# the whole image may change and a painted mask only weighs the mask term; kept so that comparisons
# with the paper stay reproducible (BENCHMARKS.md, "Edit quality").
PRESETS: dict[str, dict] = {
    "local": {},
    "paper": {"region": "global", "lambda_warp": 0.0, "lr": 2e-3, "stop_distance": None},
}


def default_feature_block(G) -> int:
    """The feature block for ``G``: the paper's block 6 from 512 px up, half the image resolution below.

    DragGAN uses block 6 of 512 px and larger models (128 px features). A
    smaller generator has fewer blocks; below 512 px we take the block at half
    the image resolution (128 px model -> block 5, 64 px), at least block 3.
    Why half: on the bundled 128 px model, block 5 keeps most of block 6's
    accuracy at less than half its step cost, no more than drawing a frame, so
    the app's frame rate is set by the render, not by the step; block 6 stays
    one click away for the most accurate drags (the ablation: BENCHMARKS.md,
    "Ablations that set the engine's defaults").
    """
    resolutions = list(G.synthesis.block_resolutions)
    if G.img_resolution >= 512:
        return min(6, len(resolutions))
    half = max(G.img_resolution // 2, resolutions[0])
    return max(min(3, len(resolutions)), resolutions.index(half) + 1)


def generator_autocast(config: DragConfig, device: torch.device):
    """bf16 autocast for the generator when ``config.autocast``, else a no-op context."""
    if not config.autocast:
        return contextlib.nullcontext()
    # No weight-cast cache: it would hold tensors from outside a captured graph.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)


__all__ = ["DragConfig", "DragConfigError", "LATENT_SPACES", "MaskError", "NOISE_MODES", "PRESETS", "REGIONS",
           "TRACKINGS",
           "default_feature_block", "generator_autocast"]
