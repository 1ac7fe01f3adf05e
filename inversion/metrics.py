"""Reconstruction quality: PSNR, SSIM, LPIPS (when its weights exist) and dlib identity distance."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .align import DLIB, detect_faces

IDENTITY_THRESHOLD = 0.6  # dlib's same-person threshold on descriptor distance.
_MIN_FACE_SIDE = 256  # Small crops are enlarged first so the HOG detector and the 150 px face chip see enough.


PSNR_CAP = 100.0  # identical images: a finite number keeps report.json valid JSON


def psnr(a: Image.Image, b: Image.Image) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if np.array_equal(a, b):
        return PSNR_CAP
    return min(PSNR_CAP, float(peak_signal_noise_ratio(a, b, data_range=255)))


def ssim(a: Image.Image, b: Image.Image) -> float:
    return float(structural_similarity(np.asarray(a), np.asarray(b), channel_axis=2, data_range=255))


def to_tensor(img: Image.Image, device="cpu") -> torch.Tensor:
    """RGB uint8 image -> [1, 3, H, W] float in [-1, 1]."""
    a = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32).copy())
    return (a.permute(2, 0, 1).unsqueeze(0) / 127.5 - 1).to(device)


def to_image(x: torch.Tensor) -> Image.Image:
    """[1, 3, H, W] in [-1, 1] -> RGB uint8 image (rounded, clipped)."""
    a = (x[0].detach().float().cpu().permute(1, 2, 0) * 127.5 + 127.5).clamp(0, 255).round().to(torch.uint8)
    return Image.fromarray(a.numpy())


def lpips_distance(a: Image.Image, b: Image.Image, metric) -> float | None:
    """LPIPS between two images with a loss object from :func:`losses.lpips_metric` (None -> None)."""
    if metric is None:
        return None
    device = next(metric.module.parameters()).device
    with torch.no_grad():
        return float(metric(to_tensor(a, device), to_tensor(b, device))[0])


def _enlarged(img: Image.Image) -> np.ndarray:
    w, h = img.size
    if min(w, h) < _MIN_FACE_SIDE:
        s = _MIN_FACE_SIDE / min(w, h)
        img = img.resize((round(w * s), round(h * s)), Image.BICUBIC)
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def face_descriptor(rgb: np.ndarray, fallback_box=None) -> tuple[np.ndarray | None, tuple | None]:
    """(dlib's 128-D descriptor, face box) of the largest face, or of ``fallback_box`` when none is found."""
    import dlib

    faces = detect_faces(rgb)
    box = faces[0].box if faces else fallback_box
    if box is None:
        return None, None
    rect = dlib.rectangle(*(int(round(v)) for v in box))
    with DLIB.lock:
        shape = DLIB.predictor(rgb, rect)
        return np.array(DLIB.recognizer.compute_face_descriptor(rgb, shape)), box


def identity_distance(a: Image.Image, b: Image.Image) -> float | None:
    """Euclidean distance of dlib descriptors of ``a`` and ``b`` (same size, pixel-aligned crops).

    The reconstruction uses the input's face box when its own face is not detected. None
    when no face is found in ``a``. Below 0.6 dlib considers the two the same person.
    """
    da, box = face_descriptor(_enlarged(a))
    if da is None:
        return None
    db, _ = face_descriptor(_enlarged(b), fallback_box=box)
    return float(np.linalg.norm(da - db))
