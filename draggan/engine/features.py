"""Generator features for DragGAN, sampled at image pixel coordinates.

DragGAN (Pan et al., SIGGRAPH 2023) supervises and tracks points on the output
of an intermediate synthesis block (block 6 of a 512 px StyleGAN2, 128 x 128),
conceptually bilinearly resized to the image resolution ``R x R``. We never
build that ``R x R`` map to read a few points: bilinear resizing with
``align_corners=False`` maps output pixel ``x`` to source coordinate
``(x + 0.5) * h / R - 0.5``, and ``grid_sample(..., align_corners=False)`` at the
normalized coordinate ``(2x + 1) / R - 1`` reads exactly that source coordinate
(``padding_mode='border'`` reproduces resize's edge clamping). So at integer
pixels, sampling the small map equals resizing then indexing (tested). Between
pixels we take the continuous bilinear interpolant of the block's feature map,
which is what the resized map approximates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_to_grid(points: torch.Tensor, image_size: int) -> torch.Tensor:
    """Image pixel coordinates (x, y) -> ``grid_sample`` coordinates in [-1, 1] (align_corners=False)."""
    return (2.0 * points + 1.0) / image_size - 1.0


def sample_features(feat: torch.Tensor, points: torch.Tensor, image_size: int) -> torch.Tensor:
    """Bilinearly sample a feature map at image pixel coordinates.

    feat       : [1, C, h, w] feature map covering the whole ``image_size`` image.
    points     : [..., 2] (x, y) positions in image pixels, any leading shape.
    image_size : the image resolution R the pixel coordinates refer to.
    Returns [..., C], in ``feat``'s dtype.
    """
    if feat.shape[0] != 1:
        raise ValueError(f"sample_features expects one feature map, got batch {feat.shape[0]}")
    lead = points.shape[:-1]
    grid = pixel_to_grid(points.reshape(1, 1, -1, 2).to(feat.dtype), image_size)
    out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [1, C, 1, P]
    return out[0, :, 0].t().reshape(*lead, feat.shape[1])


def resize_features(feat: torch.Tensor, image_size: int) -> torch.Tensor:
    """The full ``image_size x image_size`` bilinear resize (the map :func:`sample_features` reads)."""
    if feat.shape[-1] == image_size and feat.shape[-2] == image_size:
        return feat
    return F.interpolate(feat, size=(image_size, image_size), mode="bilinear", align_corners=False)


def synthesis_features(G, ws: torch.Tensor, block: int, noise_mode: str = "const", with_image: bool = False,
                       const_from: int | None = None):
    """Output of synthesis block ``block`` (1-based) for latents ``ws`` [1, num_ws, w_dim].

    ``with_image``: return (features, skip image up to that block), the two inputs
    :meth:`SynthesisNetwork.finish` continues from to draw the full image. ``const_from``:
    the W+ layers from there on need no gradient (:meth:`SynthesisNetwork.forward`).
    """
    extra = {} if const_from is None else {"const_from": const_from}
    if not with_image:
        _, features = G.synthesis(ws, noise_mode=noise_mode, return_features=True, last_block=block, **extra)
        return features[block - 1]
    img, features = G.synthesis(ws, noise_mode=noise_mode, return_features=True, last_block=block, partial_image=True,
                                **extra)
    return features[block - 1], img
