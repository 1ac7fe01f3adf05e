"""DragGAN motion supervision (Pan et al., SIGGRAPH 2023, eq. 1).

For each handle ``p_i`` moving towards target ``t_i`` with unit direction
``d_i = (t_i - p_i) / ||t_i - p_i||``, the features of every pixel ``q`` in a disk of
radius ``r1`` around ``p_i`` should appear one pixel further along ``d_i``:

    L_motion = sum_i  mean_{q, c} | F(q + d_i) - sg(F(q)) |

(``sg`` = stop-gradient, so the content at ``q`` is pulled forwards rather than
the shifted point being pulled back). An optional mask keeps the fixed region
(``M = 0``) close to the initial features ``F0``:

    L_mask = lambda * mean | (F - F0) * (1 - M) |      (over channels and all R x R pixels)

All handles are handled at once with one ``grid_sample`` over a fixed offset
grid, so the computation has static shapes (CUDA-graph friendly).
"""

from __future__ import annotations

import math

import torch

from .features import resize_features, sample_features


def disk_offsets(radius: float, device=None) -> torch.Tensor:
    """Integer offsets (dx, dy) with ``dx^2 + dy^2 <= radius^2``, as a float [D, 2] tensor."""
    r = int(math.floor(radius))
    ax = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    dy, dx = torch.meshgrid(ax, ax, indexing="ij")
    offsets = torch.stack([dx.flatten(), dy.flatten()], dim=1)
    return offsets[offsets.square().sum(dim=1) <= radius * radius + 1e-6]


def unit_directions(handles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(t - p) / ||t - p||`` per handle, 0 for a handle sitting on its target."""
    delta = targets - handles
    return delta / delta.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def motion_loss(feat: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, offsets: torch.Tensor,
                image_size: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """The motion term, summed over handles.

    feat    : [1, C, h, w] features of the current latent (with grad).
    handles : [N, 2] current (tracked) handle positions, targets: [N, 2], in image pixels.
    offsets : [D, 2] disk offsets (:func:`disk_offsets`).
    active  : optional [N] 0/1 weights; a handle with weight 0 contributes nothing
              (used for handles already within the stop distance).
    """
    q = handles[:, None, :] + offsets[None, :, :]                        # [N, D, 2]
    shifted = q + unit_directions(handles, targets)[:, None, :]
    # One sampling pass for both the reference and the shifted points.
    samples = sample_features(feat, torch.cat([q, shifted], dim=1), image_size).float()  # [N, 2D, C]
    ref, moved = samples.split(q.shape[1], dim=1)
    per_handle = (moved - ref.detach()).abs().mean(dim=(1, 2))           # [N]
    if active is not None:
        per_handle = per_handle * active.to(per_handle.dtype)
    return per_handle.sum()


def fixed_region_loss(feat: torch.Tensor, feat0: torch.Tensor, fixed: torch.Tensor, image_size: int) -> torch.Tensor:
    """``mean |(F - F0) * fixed|`` over channels and the full-resolution image.

    ``fixed`` is [R, R] (1 where the image must stay as it was). Resizing is
    linear, so we resize the difference once instead of both maps. The L1 is
    not, so the full-resolution difference is needed; it costs one ``C x R x R``
    map, which is still small next to the generator's own activations.
    """
    diff = resize_features((feat - feat0).float(), image_size)
    return (diff.abs() * fixed).mean()


def motion_supervision_loss(feat: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, offsets: torch.Tensor,
                            image_size: int, active: torch.Tensor | None = None, feat0: torch.Tensor | None = None,
                            fixed: torch.Tensor | None = None, lambda_mask: float = 20.0) -> torch.Tensor:
    """DragGAN's full objective: motion term plus, when ``fixed`` is given, ``lambda_mask`` times the mask term."""
    loss = motion_loss(feat, handles, targets, offsets, image_size, active)
    if fixed is not None:
        if feat0 is None:
            raise ValueError("the mask term needs the initial features feat0")
        loss = loss + lambda_mask * fixed_region_loss(feat, feat0, fixed, image_size)
    return loss


def displacement_field(points: torch.Tensor, moves: torch.Tensor, size: int, image_size: int,
                       sigma: float, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """A smooth backward displacement field [size, size, 2] (image pixels) on a ``size x size`` grid.

    ``points`` [N, 2] are where content should end up and ``moves`` [N, 2] how far it came from: the
    field at a grid pixel q is the Gaussian-weighted (``sigma`` px) mean move of the nearby points, so
    content near point i comes from ``q - moves[i]`` and far from every point from ``q`` itself.
    Overlapping Gaussians are averaged (not summed), so many handles do not overshoot.
    ``box`` (y0, y1, x0, x1): only those rows and columns of the grid ([y1 - y0, x1 - x0, 2]).
    """
    q = grid_points(size, image_size, points.device, box)                       # [s, s, 2]
    d2 = (q[:, :, None, :] - points[None, None]).square().sum(-1)                # [s, s, N]
    w = torch.exp(-d2 / (2 * sigma * sigma))
    total = w.sum(-1, keepdim=True)
    return (w[..., None] * moves[None, None]).sum(-2) / total.clamp_min(1.0)     # [s, s, 2]


def grid_points(size: int, image_size: int, device=None, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Image-pixel (x, y) centres of a ``size x size`` feature grid, [size, size, 2] (or the ``box`` of it)."""
    ax = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) * (image_size / size) - 0.5
    y0, y1, x0, x1 = box if box is not None else (0, size, 0, size)
    yy, xx = torch.meshgrid(ax[y0:y1], ax[x0:x1], indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def support_box(weight: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1): the smallest box of an [1, 1, h, w] map holding all its non-zero pixels (None: all zero).

    A term weighted by the map can be computed on that box alone: the pixels outside add exactly zero.
    """
    nz = weight[0, 0].detach().ne(0)
    rows, cols = nz.any(dim=1).nonzero(), nz.any(dim=0).nonzero()
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def warp_supervision_loss(feat: torch.Tensor, feat0: torch.Tensor, handles0: torch.Tensor, handles: torch.Tensor,
                          targets: torch.Tensor, image_size: int, sigma: float,
                          weight: torch.Tensor | None = None, active: torch.Tensor | None = None,
                          box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Dense supervision towards the first features, smoothly displaced: ``mean w |F(q) - sg(F0(q - u(q)))|``.

    Motion supervision says where each handle goes; this says what the rest should look like
    meanwhile: the image at the start, moved by the smallest smooth deformation (``u``, a
    Gaussian field of ``sigma`` px) that takes every handle's first position one step past
    where it is now. It keeps content that need not change from being redrawn (an eye,
    when a brow moves) without holding back the content that must move.

    feat, feat0 : [1, C, h, w] features now (with grad) and when the points were set.
    handles0    : [N, 2] the handles' first positions; handles: [N, 2] tracked now; targets [N, 2].
    weight      : optional [1, 1, h, w] weights of the feature pixels (e.g. the edit region).
    active      : optional [N] 0/1: handles that still move (as in :func:`motion_loss`).
    box         : with ``weight``, compute on these feature pixels only (:func:`support_box` of the
                  weight): the same loss, since the rest weighs zero, at the cost of the box (a local
                  edit's region is a small part of the image).
    """
    h = feat.shape[-1]
    step = unit_directions(handles, targets)
    if active is not None:   # a handle that has arrived takes no further step
        step = step * active.to(step.dtype)[:, None]
    moves = handles + step - handles0                                             # [N, 2]
    if box is not None and weight is not None:
        y0, y1, x0, x1 = box
        feat, weight = feat[:, :, y0:y1, x0:x1], weight[:, :, y0:y1, x0:x1]
    else:
        box = None
    u = displacement_field(handles + step, moves, h, image_size, sigma, box)
    source = grid_points(h, image_size, feat.device, box) - u                    # [h, h, 2] image px
    grid = ((2.0 * source + 1.0) / image_size - 1.0)[None].to(feat0.dtype)
    target = torch.nn.functional.grid_sample(feat0, grid, mode="bilinear", padding_mode="border",
                                             align_corners=False)
    diff = (feat.float() - target.detach().float()).abs().mean(dim=1, keepdim=True)  # [1, 1, h, w]
    if weight is None:
        return diff.mean()
    return (diff * weight).sum() / weight.sum().clamp_min(1e-8)
