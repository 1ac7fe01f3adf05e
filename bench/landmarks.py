"""dlib face measurements on small generated images: 68 landmarks and the 128-D face embedding.

Detection and the dlib models come from :mod:`inversion.align` (``detect_faces``,
``DLIB``); this module only adapts them to 128 px generator output. dlib's landmark
predictor returns integer pixel positions and its HOG detector wants faces of ~80 px,
so the image is first enlarged ``scale`` times (bicubic), measured there and the
points mapped back with pixel-centre scaling, ``x = (X + 0.5) / scale - 0.5``: at
``scale=4`` the landmarks have quarter-pixel resolution in the 128 px image.

Points used as handles (DragGAN Table 1 uses 1, 5 and 68 points; the paper does not
list which 1 and 5, so we fix them here):

* 1 point  : the nose tip (landmark 30);
* 5 points : the eye centres (mean of 36-41 and of 42-47), the nose tip and the mouth
  corners (48, 54) -- the five points CelebA was aligned on
  (``inversion.align.landmark_subset(..., 'five')``);
* 68 points: all of them.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from inversion.align import DLIB, detect_faces, landmark_subset

DETECT_SCALE = 4
HANDLE_SETS = {1: "nose tip (landmark 30)",
               5: "eye centres (mean of 36-41, 42-47), nose tip (30), mouth corners (48, 54)",
               68: "all 68 dlib landmarks"}


class LandmarkError(ValueError):
    """A landmark array or handle-set request that cannot be used."""


@dataclasses.dataclass
class FaceMeasure:
    """What dlib sees in one image: landmarks [68, 2] (x, y image pixels), detector score, embedding [128] or None."""

    landmarks: np.ndarray
    score: float
    embedding: np.ndarray | None = None


def enlarge(rgb: np.ndarray, scale: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(cv2.resize(np.ascontiguousarray(rgb), (w * scale, h * scale),
                                           interpolation=cv2.INTER_CUBIC))


def measure_face(rgb: np.ndarray, scale: int = DETECT_SCALE, embed: bool = False) -> FaceMeasure | None:
    """Landmarks (and optionally the face embedding) of the largest face in an HxWx3 uint8 image, or None.

    The embedding is computed from the same landmarks (dlib aligns a 150 px face chip on
    them), so one detection serves both.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise LandmarkError(f"expected an HxWx3 uint8 RGB image, got shape {rgb.shape} and dtype {rgb.dtype}")
    big = enlarge(rgb, scale) if scale > 1 else np.ascontiguousarray(rgb)
    faces = detect_faces(big)
    if not faces:
        return None
    face = faces[0]
    embedding = None
    if embed:
        embedding = face_embedding(big, face.box, face.landmarks)
    return FaceMeasure(landmarks=(face.landmarks + 0.5) / scale - 0.5, score=face.score, embedding=embedding)


def face_embedding(rgb: np.ndarray, box, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-D face-recognition descriptor for a face with known box and 68 landmarks (same image)."""
    import dlib

    rect = dlib.rectangle(*(int(round(v)) for v in box))
    parts = [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks]
    shape = dlib.full_object_detection(rect, parts)
    with DLIB.lock:
        return np.array(DLIB.recognizer.compute_face_descriptor(rgb, shape), dtype=np.float64)


def handle_points(landmarks: np.ndarray, count: int) -> np.ndarray:
    """The ``count``-point subset (1, 5 or 68; see the module docstring) of 68 landmarks, as [count, 2]."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise LandmarkError(f"expected 68 (x, y) landmarks, got shape {lm.shape}")
    if count == 1:
        return lm[30:31].copy()
    if count == 5:
        return landmark_subset(lm, "five")
    if count == 68:
        return lm.copy()
    raise LandmarkError(f"handle sets have 1, 5 or 68 points, not {count}")


__all__ = ["DETECT_SCALE", "FaceMeasure", "HANDLE_SETS", "LandmarkError", "face_embedding", "handle_points",
           "measure_face"]
