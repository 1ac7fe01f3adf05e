"""Local edits: where a drag may change the image, and how the change is kept there.

DragGAN optimizes a latent, and a StyleGAN2 latent is global: moving a mouth corner
by changing the coarse W+ layers also changes the hair, the background and the rest
of the face. We keep the result local the way spatially-local StyleGAN editing does
(e.g. "Editing in Style", Collins et al., CVPR 2020): run the synthesis network for
the edited latent up to a ``block``, blend its output (features and skip image) into
that of the unedited image with a soft ``region`` mask, and run the remaining blocks
from the blend with the unedited fine layers:

    x_B = canvas_B + m * (F_B(w) - F_B(w_0))

``F_B(w_0)`` is the block's output for the latent the points were set on and
``canvas_B`` the image before this drag (equal to ``F_B(w_0)`` unless earlier local
drags were blended in). Outside the region the image is then exactly the one before
the drag; inside it the generator draws the edit, and the blocks after ``B``
(which are the generator's own) smooth the seam. The drag's features and tracking are
computed on the blended path, so the optimizer only sees, and only moves, what is
inside the region.

The region is the painted mask if there is one, else a soft disc around every
handle -> target path (:func:`soft_region`).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .window import Window


@dataclasses.dataclass(frozen=True)
class Canvas:
    """An image as the synthesis network holds it after ``block``: its features and skip image."""

    block: int
    features: torch.Tensor   # [1, C, h, w], in the dtype the forward pass made (bf16 under autocast)
    skip: torch.Tensor       # [1, img_channels, h, w]

    def detach(self) -> "Canvas":
        return Canvas(self.block, self.features.detach().clone(), self.skip.detach().clone())


@dataclasses.dataclass(frozen=True)
class LocalBlend:
    """A running local edit: ``canvas + mask * (F_block(w) - reference)``, for features and skip image alike."""

    mask: torch.Tensor       # [1, 1, h, w] in [0, 1], at the block's resolution
    reference: Canvas        # the block's output for the latent the points were set on
    canvas: Canvas           # the image before this drag
    window: Window | None = None    # where the later blocks can change the image (window.py); None: everywhere

    @property
    def block(self) -> int:
        return self.reference.block

    def apply(self, features: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # In the canvas's dtype (bf16 under autocast), so that where the mask is 0 the blocks after
        # this one see exactly what the unedited image's forward pass gave them: the same pixels.
        m, c = self.mask, self.canvas
        x = (c.features + m * (features - self.reference.features)).to(c.features.dtype)
        img = (c.skip + m * (skip - self.reference.skip)).to(c.skip.dtype)
        return x, img


def path_distance(resolution: int, handles, targets) -> np.ndarray:
    """[R, R] distance (pixels) from every pixel centre to the nearest handle -> target segment."""
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32)
    dist = np.full((resolution, resolution), np.inf, np.float32)
    for p, t in zip(np.asarray(handles, np.float32), np.asarray(targets, np.float32)):
        v = t - p
        length2 = float(v @ v)
        s = 0.0 if length2 < 1e-12 else np.clip(((xx - p[0]) * v[0] + (yy - p[1]) * v[1]) / length2, 0.0, 1.0)
        dx, dy = xx - (p[0] + s * v[0]), yy - (p[1] + s * v[1])
        dist = np.minimum(dist, np.sqrt(dx * dx + dy * dy))
    return dist


def smooth_falloff(distance: np.ndarray, radius: float, feather: float) -> np.ndarray:
    """1 within ``radius``, easing to 0 over ``feather`` more pixels (smoothstep), float32."""
    t = np.clip(1.0 - (distance - radius) / max(feather, 1e-6), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def region_radius_px(resolution: int, handles, targets, radius: float) -> float:
    """The soft region's radius in pixels: ``radius`` of the image side, at least twice the longest drag.

    A long drag needs room around its path for the content it pushes aside.
    """
    drag = np.linalg.norm(np.asarray(targets, np.float32) - np.asarray(handles, np.float32), axis=1)
    return float(max(radius * resolution, 2.0 * float(drag.max(initial=0.0))))


def soft_region(resolution: int, handles, targets, radius: float, feather: float) -> np.ndarray:
    """[R, R] float mask: 1 around every handle -> target path, 0 far from all of them.

    ``radius`` and ``feather`` are fractions of the image side (see :func:`region_radius_px`).
    """
    r = region_radius_px(resolution, handles, targets, radius)
    return smooth_falloff(path_distance(resolution, handles, targets), r, feather * resolution)


def feathered_mask(movable: np.ndarray, feather: float) -> np.ndarray:
    """A painted bool mask (True = may move) as a float mask that eases to 0 over ``feather`` of the side outside it."""
    movable = np.asarray(movable, bool)
    if movable.all():
        return np.ones(movable.shape, np.float32)
    # Distance from every pixel outside the painted region to the region.
    outside = cv2.distanceTransform((~movable).astype(np.uint8), cv2.DIST_L2, 5)
    return smooth_falloff(outside, 0.0, feather * movable.shape[0])


def edit_region(resolution: int, handles, targets, movable: np.ndarray | None, radius: float,
                feather: float) -> np.ndarray:
    """The region a local drag may change: the painted mask (feathered) or, without one, :func:`soft_region`."""
    if movable is not None:
        return feathered_mask(movable, feather)
    return soft_region(resolution, handles, targets, radius, feather)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A [1, 1, h, w] mask at ``size x size``: averaged down, or bilinearly up."""
    if mask.shape[-1] == size:
        return mask
    if mask.shape[-1] > size:
        return F.adaptive_avg_pool2d(mask, size)
    return F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False)


def to_block(mask: np.ndarray, size: int, device=None) -> torch.Tensor:
    """An [R, R] mask averaged down to a block's ``size x size`` grid, as [1, 1, size, size]."""
    m = torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None, None]
    if m.shape[-1] != size:
        m = F.adaptive_avg_pool2d(m, size)
    return m.to(device)


__all__ = ["Canvas", "LocalBlend", "edit_region", "feathered_mask", "path_distance", "region_radius_px",
           "resize_mask", "smooth_falloff", "soft_region", "to_block"]
