"""Writing drag progress as an animation (GIF via Pillow, MP4 via OpenCV) and drawing points on frames."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

VIDEO_FORMATS = (".gif", ".mp4")
HANDLE_COLOR = (230, 40, 40)    # red, as in the DragGAN paper
TARGET_COLOR = (40, 90, 230)    # blue
ARROW_COLOR = (255, 255, 255)


class VideoError(ValueError):
    """An animation that cannot be written (unknown format, no frames, codec missing)."""


def draw_points(image: np.ndarray, handles, targets, scale: int = 1) -> np.ndarray:
    """A copy of an HxWx3 uint8 image, optionally upscaled by ``scale`` (nearest), with
    handles (red), targets (blue) and a line from each handle to its target."""
    frame = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if scale > 1:
        frame = frame.resize((frame.width * scale, frame.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(frame)
    radius = max(1, round(frame.width / 96))

    def centre(p):  # pixel centre of image pixel p in the (scaled) frame
        return (p[0] + 0.5) * scale - 0.5, (p[1] + 0.5) * scale - 0.5

    for h, t in zip(np.asarray(handles, dtype=float), np.asarray(targets, dtype=float)):
        (hx, hy), (tx, ty) = centre(h), centre(t)
        draw.line([(hx, hy), (tx, ty)], fill=ARROW_COLOR, width=max(1, radius // 2))
        draw.ellipse([tx - radius, ty - radius, tx + radius, ty + radius], fill=TARGET_COLOR)
        draw.ellipse([hx - radius, hy - radius, hx + radius, hy + radius], fill=HANDLE_COLOR)
    return np.asarray(frame)


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
