"""Writing drag progress as an animation (GIF via Pillow, MP4 via OpenCV), frames drawn as the editor draws them."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .overlay import render_view, view_scale

VIDEO_FORMATS = (".gif", ".mp4")
VIDEO_VIEW_SIZE = 256       # recorded drags are written at about this size


class VideoError(ValueError):
    """An animation that cannot be written (unknown format, no frames, codec missing)."""


def drag_frame(image: np.ndarray, handles, targets, mask=None) -> np.ndarray:
    """One frame of a drag's video: the image at about VIDEO_VIEW_SIZE px with the editor's points and arrows
    (the app's own drawing, :func:`draggan.drawing.overlay.render_view`)."""
    scale = view_scale(np.asarray(image).shape[0], VIDEO_VIEW_SIZE)
    return render_view(image, scale, handles, targets, mask=mask, numbers=False)


def write_video(path, frames: Sequence[np.ndarray], fps: float = 24.0) -> Path:
    """Write HxWx3 uint8 frames to ``path``; the extension picks the format (.gif or .mp4).

    MP4 uses OpenCV's MPEG-4 Part 2 encoder ('mp4v'), which every OpenCV wheel
    ships; it plays in desktop players (browsers want H.264: use a GIF there).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise VideoError(f"cannot write {path.name!r}: the animation must end in .gif or .mp4")
    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise VideoError("no frames to write")
    if fps <= 0:
        raise VideoError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        images = [Image.fromarray(f) for f in frames]
        # GIF stores durations in 10 ms units.
        duration = max(20, int(round(1000 / fps / 10)) * 10)
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False)
        return path

    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise VideoError(f"OpenCV could not open an MP4 writer for {path}; write a .gif instead")
    try:
        for f in frames:
            if f.shape[:2] != (height, width):
                raise VideoError("all frames must have the same size")
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
