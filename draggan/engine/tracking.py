"""DragGAN point tracking (Pan et al., SIGGRAPH 2023, eq. 2).

After each optimization step the content under a handle has moved a little.
The handle's new position is the pixel, within a square window of radius ``r2``
around the old position, whose features are closest (L1) to the handle's
features in the *initial* image:

    p_i <- argmin_{q in window(p_i, r2)} || F'(q) - f_i ||_1,    f_i = F0(p_i at the start)

All handles are searched at once: one ``grid_sample`` over a fixed offset grid,
``argmin`` on the device, no Python loop over points.
"""

from __future__ import annotations

import math

import torch

from .features import sample_features


def window_offsets(radius: float, device=None) -> torch.Tensor:
    """Integer offsets (dx, dy) of the square window ``|dx|, |dy| <= radius``, as a float [W, 2] tensor.

    The offsets are ordered by distance from the centre (stable), so ``argmin``
    prefers the closest candidate when several are equally good, and a handle
    whose features did not change stays put.
    """
    r = int(math.floor(radius))
    ax = torch.arange(-r, r + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(ax, ax, indexing="ij")
    offsets = torch.stack([dx.flatten(), dy.flatten()], dim=1)
    order = torch.sort(offsets.square().sum(dim=1), stable=True).indices
    return offsets[order].to(device)


@torch.no_grad()
def track_points(feat: torch.Tensor, handles: torch.Tensor, ref_features: torch.Tensor, offsets: torch.Tensor,
                 image_size: int) -> torch.Tensor:
    """New handle positions [N, 2].

    feat         : [1, C, h, w] features of the current latent.
    handles      : [N, 2] current positions (x, y) in image pixels.
    ref_features : [N, C] features of each handle in the initial image.
    offsets      : [W, 2] search window (:func:`window_offsets`).
    Candidates are clamped to the image, so a handle never leaves it.
    """
    candidates = (handles[:, None, :] + offsets[None, :, :]).clamp(0, image_size - 1)    # [N, W, 2]
    samples = sample_features(feat, candidates, image_size).float()                      # [N, W, C]
    dist = (samples - ref_features[:, None, :].float()).abs().sum(dim=-1)                # [N, W]
    best = dist.argmin(dim=1)                                                             # [N]
    return candidates.gather(1, best[:, None, None].expand(-1, 1, 2)).squeeze(1)
