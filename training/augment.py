"""Adaptive differentiable augmentation for the discriminator.

DiffAugment's operations (Zhao et al. 2020: color, translation, cutout) are
applied to every image D sees, real or fake, each operation to each image with
probability ``p``. ``p`` is adapted as in StyleGAN2-ADA (Karras et al. 2020):
the overfitting heuristic r_t = E[sign(D(real))] is pushed towards a target
(0.6) by raising p when D grows too confident on real images.

All random draws are made for the *global* batch and then sliced, so a run on
several GPUs draws exactly the same augmentations as a run on one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _uniform(gen, n, start, count, *shape, device):
    # Drawn for the whole global batch on the generator's device, then this rank's slice.
    return torch.rand((n, *shape), generator=gen, device=gen.device)[start:start + count].to(device)


def augment(x: torch.Tensor, p: float, gen: torch.Generator, global_batch: int | None = None, start: int = 0) -> torch.Tensor:
    """Augment images ``x`` [N, C, H, W] in [-1, 1]; each op is applied per image with probability ``p``.

    gen          : generator seeded identically on every rank.
    global_batch : size of the batch across all ranks (default N); ``start`` is this rank's offset in it.
    """
    if p <= 0:
        return x
    n, _, h, w = x.shape
    g = global_batch or n
    dev = x.device

    def apply(mask_shape=(1, 1, 1)):
        return (_uniform(gen, g, start, n, device=dev) < p).to(x.dtype).view(n, *mask_shape)

    # Color: brightness, saturation, contrast.
    on = apply()
    x = x + on * (_uniform(gen, g, start, n, 1, 1, 1, device=dev) - 0.5)
    on = apply()
    mean = x.mean(dim=1, keepdim=True)
    x = mean + (x - mean) * (1 + on * (_uniform(gen, g, start, n, 1, 1, 1, device=dev) * 2 - 1))
    on = apply()
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = mean + (x - mean) * (1 + on * (_uniform(gen, g, start, n, 1, 1, 1, device=dev) - 0.5))

    # Translation by up to 1/8 of the image with zero padding. Integer shifts by
    # gather, not grid_sample: R1 needs a double backward, which gather supports.
    on = apply((1,)).view(n)
    pad = max(h, w) // 8
    shift = torch.round((_uniform(gen, g, start, n, 2, device=dev) * 2 - 1) * pad * on[:, None]).long()
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h, device=dev)[None] + pad - shift[:, 1:2]).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    xp = xp.gather(2, rows)
    cols = (torch.arange(w, device=dev)[None] + pad - shift[:, 0:1]).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    x = xp.gather(3, cols)

    # Cutout: a square of half the image size set to zero.
    on = apply()
    centre = _uniform(gen, g, start, n, 2, device=dev)
    ys = torch.arange(h, device=dev).view(1, h, 1) / h
    xs = torch.arange(w, device=dev).view(1, 1, w) / w
    inside = ((ys - centre[:, 1].view(n, 1, 1)).abs() < 0.25) & ((xs - centre[:, 0].view(n, 1, 1)).abs() < 0.25)
    x = x * (1 - on * inside[:, None].to(x.dtype))
    return x


class AdaptiveP:
    """Adjusts the augmentation probability from the sign of D's outputs on real images."""

    def __init__(self, target: float = 0.6, speed_kimg: float = 100.0, p: float = 0.0, fixed: float | None = None):
        self.target, self.speed_kimg, self.p, self.fixed = target, speed_kimg, p, fixed
        self._sum = 0.0
        self._count = 0
        if fixed is not None:
            self.p = fixed

    def accumulate(self, real_logits_sign_sum: float, count: int):
        self._sum += real_logits_sign_sum
        self._count += count

    def update(self, nimg: int) -> float | None:
        """Move p after ``nimg`` images; returns r_t (None if nothing was accumulated)."""
        if self._count == 0:
            return None
        rt = self._sum / self._count
        self._sum, self._count = 0.0, 0
        if self.fixed is None:
            step = nimg / (self.speed_kimg * 1000)
            self.p = float(min(max(self.p + (step if rt > self.target else -step), 0.0), 1.0))
        return rt
