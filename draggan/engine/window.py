"""A local drag runs the synthesis blocks from its blend on only where they can change the image.

A local drag (region.py) blends its latent's output into the unedited image at the blend
block, and every later block reads the unedited image's W+ layers. So a later block's output
can differ from the unedited image's only within reach of the blended region: outside that
box it *is* the unedited image's, to the bit (and at the blend block itself, outside the
region's box the blend keeps the unedited output). These blocks therefore run on a
crop around the region (with a margin, so that the zero padding at the crop's edge reaches
none of the pixels kept) and their output is pasted into the unedited image's, which is
computed once per drag. The step's features, its gradient and the frames are those of the
whole-image computation (tested against it); the multiply-adds shrink with the region: a
one-handle drag on a 128 px face touches 30-60 % of the image.

Boxes are ``(y0, y1, x0, x1)``, half-open, in the pixels of a block's own resolution.
"""

from __future__ import annotations

import dataclasses

import torch

from draggan.models.networks import block_const_from

Box = tuple[int, int, int, int]

# How far a synthesis block spreads a change, and how far it reads, measured on its layers (conv0's transposed
# 3x3 and 4-tap blur, conv1's 3x3, the skip image's 4-tap upsampling): input pixel i changes output pixels
# 2i-3 .. 2i+4, so an output pixel reads the input pixels within 2 of its own half. One more each, to spare;
# tests check that the crop gives the whole image's pixels.
SPREAD = 4   # output pixels, each side of the doubled box
REACH = 3    # input pixels, each side of the halved box
# A crop bigger than this share of a block's pixels saves too little to be worth its copies.
MAX_SHARE = 0.8


@dataclasses.dataclass(frozen=True)
class Window:
    """Where a local drag can change each block's output, and the unedited image there is pasted into.

    boxes    : block (1-based, from the blend block on) -> the box outside which its output is the unedited one's
               (at the blend block: the region's box, outside which the blend keeps the unedited output).
    features : block -> the unedited image's features at that block (the blocks a drag stops at).
    skips    : block -> the unedited image's skip image at that block.
    image    : the unedited image's full output (the last block's skip image).
    """

    boxes: dict[int, Box]
    features: dict[int, torch.Tensor]
    skips: dict[int, torch.Tensor]
    image: torch.Tensor


def grow(box: Box, size: int, by: int, scale: int = 1) -> Box:
    """``box`` scaled by ``scale``, widened by ``by`` pixels each side and clipped to a ``size`` square."""
    y0, y1, x0, x1 = (v * scale for v in box)
    return max(0, y0 - by), min(size, y1 + by), max(0, x0 - by), min(size, x1 + by)


def halve(box: Box, size: int, by: int) -> Box:
    """The box of the half-resolution pixels that ``box``'s pixels read: halved outwards, widened by ``by``."""
    y0, y1, x0, x1 = box
    return max(0, y0 // 2 - by), min(size, -(-y1 // 2) + by), max(0, x0 // 2 - by), min(size, -(-x1 // 2) + by)


def area(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def changed_boxes(G, blend_block: int, region_box: Box) -> dict[int, Box]:
    """The box each block after ``blend_block`` can change, from the blend region's box at ``blend_block``."""
    boxes, box = {}, region_box
    for block in range(blend_block + 1, G.num_blocks + 1):
        box = grow(box, G.block_resolution(block), SPREAD, scale=2)
        boxes[block] = box
    return boxes


def worth_it(G, boxes: dict[int, Box]) -> bool:
    """Whether cropping saves enough: the last block's box holds at most MAX_SHARE of its pixels."""
    last = G.num_blocks
    return last in boxes and area(boxes[last]) <= MAX_SHARE * G.block_resolution(last) ** 2


def crop(t: torch.Tensor | None, box: Box) -> torch.Tensor | None:
    return None if t is None else t[..., box[0]:box[1], box[2]:box[3]]


def dense_crop(t: torch.Tensor | None, box: Box) -> torch.Tensor | None:
    """``crop`` copied into its own memory, in ``t``'s memory format: a convolution given a strided view
    copies it itself, into NCHW, and then converts the channels-last weights to match (slower)."""
    if t is None:
        return None
    fmt = torch.channels_last if t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format
    return crop(t, box).contiguous(memory_format=fmt)


def paste(into: torch.Tensor, part: torch.Tensor, box: Box) -> torch.Tensor:
    """A copy of ``into`` with ``part`` at ``box`` (differentiable in ``part``)."""
    out = into.clone()
    out[..., box[0]:box[1], box[2]:box[3]] = part.to(into.dtype)
    return out


def block_noise(block, box: Box, noise_mode: str) -> list | None:
    """The block's constant noise cropped to ``box``, as explicit noise inputs (None: noise_mode 'none')."""
    if noise_mode == "none":
        return None
    if noise_mode != "const":
        raise ValueError(f"a windowed block needs deterministic noise ('const' or 'none'), not {noise_mode!r}")
    layers = [block.conv1] if block.num_conv == 1 else [block.conv0, block.conv1]
    return [crop(layer.noise_const, box)[None, None] for layer in layers]


def finish_in_window(G, x: torch.Tensor, img: torch.Tensor | None, ws: torch.Tensor, after_block: int,
                     window: Window | None, noise_mode: str = "const", last_block: int | None = None,
                     with_rgb: bool = True, const_from: int | None = None):
    """``G.synthesis.finish`` for a local drag's image, computed on the window's crops only (``window`` None:
    ``finish`` itself, on the whole image).

    ``x``, ``img``: the output of ``after_block`` (at or after the blend block) for the drag's latent ``ws``.
    Returns what ``finish`` returns: the image, or ``(features, skip image or None)`` of ``last_block``,
    the unedited image's outside the box ``window.boxes[last]``, this latent's inside it.
    """
    if window is None:
        return G.synthesis.finish(x, img, ws, after_block, noise_mode, last_block=last_block, with_rgb=with_rgb,
                                  const_from=const_from)
    blocks = G.synthesis.blocks()
    last = len(blocks) if last_block is None else last_block
    if last == after_block:
        return img if last_block is None else (x, img if with_rgb else None)
    # What each block's output must cover, from the last block's box back to after_block's.
    need = {last: window.boxes[last]}
    for block in range(last, after_block, -1):
        need[block - 1] = halve(need[block], G.block_resolution(block - 1), REACH)
    x, img = dense_crop(x, need[after_block]), dense_crop(img, need[after_block]) if with_rgb else None
    w_idx = sum(b.num_conv for b in blocks[:after_block])
    for block_index in range(after_block + 1, last + 1):
        block = blocks[block_index - 1]
        have, want = need[block_index - 1], need[block_index]
        computed = (2 * have[0], 2 * have[1], 2 * have[2], 2 * have[3])   # what the crop's output covers
        x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, with_rgb=with_rgb,
                       noise_inputs=block_noise(block, computed, noise_mode),
                       const_from=block_const_from(const_from, w_idx))
        w_idx += block.num_conv
        inner = (want[0] - computed[0], want[1] - computed[0], want[2] - computed[2], want[3] - computed[2])
        x, img = dense_crop(x, inner), dense_crop(img, inner)
    box = need[last]
    if last_block is None:
        return paste(window.image, img, box)
    features = paste(window.features[last], x, box)
    return features, (paste(window.skips[last], img, box) if with_rgb else None)


__all__ = ["MAX_SHARE", "REACH", "SPREAD", "Window", "area", "changed_boxes", "finish_in_window", "grow", "halve",
           "worth_it"]
