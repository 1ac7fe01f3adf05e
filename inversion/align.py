"""Face alignment: find the face, map its landmarks onto the generator's template, and back.

A generator only reconstructs faces placed the way its training faces were. Three ways
to get there, all similarity transforms (rotation + uniform scale + shift) kept as a
2x3 matrix, so an edited face can be warped back into the original photo:

- ``template``: least-squares fit of the photo's dlib landmarks onto a model's own mean
  landmarks (the bundled celeba128 model stores them in ``alignment.json``);
- ``ffhq``: Karras et al.'s FFHQ procedure (an oriented square built from the eye and
  mouth positions), for official FFHQ models;
- ``center``: no face, or a model that is not a face model: the central square, resized.

Coordinates are pixel-centre based (pixel (0, 0) covers [-0.5, 0.5]^2), like dlib's
landmarks and OpenCV's warps.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

TEMPLATE_FILE = "alignment.json"  # Stored next to a model's config.json.
METHODS = ("template", "ffhq", "center")

# dlib's 68-point scheme: 0-16 jaw, 17-26 brows, 27-35 nose, 36-41/42-47 eyes, 48-67 mouth.
LANDMARK_SUBSETS = ("five", "inner", "all")


# --------------------------------------------------------------------------- dlib models


def dlib_models_dir() -> Path:
    """Folder of the .dat files shipped in the face-recognition-models wheel.

    Its ``__init__`` imports ``pkg_resources`` (absent from modern setuptools), so the
    package is located without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The face-recognition-models package is not installed (pip install face-recognition-models).")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class _DlibModels:
    """Lazily loaded, shared dlib models; dlib calls are serialized by a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self._detector = self._predictor = self._recognizer = None

    @staticmethod
    def _path(name):
        path = dlib_models_dir() / name
        if not path.exists():
            raise RuntimeError(f"dlib model file missing: {path}")
        return path

    @property
    def detector(self):
        if self._detector is None:
            import dlib
            self._detector = dlib.get_frontal_face_detector()
        return self._detector

    @property
    def predictor(self):
        if self._predictor is None:
            import dlib
            self._predictor = dlib.shape_predictor(str(self._path("shape_predictor_68_face_landmarks.dat")))
        return self._predictor

    @property
    def recognizer(self):
        if self._recognizer is None:
            import dlib
            self._recognizer = dlib.face_recognition_model_v1(str(self._path("dlib_face_recognition_resnet_model_v1.dat")))
        return self._recognizer


DLIB = _DlibModels()


@dataclasses.dataclass
class Face:
    """One detected face: box (x0, y0, x1, y1), detector score, 68 landmarks [68, 2] (photo pixels)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


def detect_faces(rgb: np.ndarray, min_score: float = 0.3, detect_side: tuple[int, int] = (400, 800)) -> list[Face]:
    """Frontal faces in an RGB uint8 image, largest first.

    The HOG detector (one pyramid upsample) runs on a copy resized so its longer side
    lies within ``detect_side``: small photos are enlarged so faces reach the detector's
    ~80 px minimum, big ones shrunk for speed. Landmarks are placed on the full image.
    Detections scoring below ``min_score`` are dropped (the best one is always kept), which
    removes most face-like textures without losing real faces.
    """
    import dlib

    h, w = rgb.shape[:2]
    long_side = max(h, w)
    s = 1.0
    if long_side > detect_side[1]:
        s = detect_side[1] / long_side
    elif long_side < detect_side[0]:
        s = min(4.0, detect_side[0] / long_side)
    small = rgb if s == 1.0 else cv2.resize(
        rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    sx, sy = small.shape[1] / w, small.shape[0] / h
    with DLIB.lock:
        rects, scores, _ = DLIB.detector.run(np.ascontiguousarray(small), 1, 0.0)
        order = np.argsort(scores)[::-1]
        faces = []
        for rank, i in enumerate(order):
            if rank > 0 and scores[i] < min_score:
                continue
            r = rects[i]
            box = ((r.left() + 0.5) / sx - 0.5, (r.top() + 0.5) / sy - 0.5,
                   (r.right() + 0.5) / sx - 0.5, (r.bottom() + 0.5) / sy - 0.5)
            rect = dlib.rectangle(*(int(round(v)) for v in box))
            shape = DLIB.predictor(rgb, rect)
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            faces.append(Face(box=box, score=float(scores[i]), landmarks=pts))
    faces.sort(key=lambda f: f.area, reverse=True)
    return faces


# --------------------------------------------------------------------------- templates


@dataclasses.dataclass
class FaceTemplate:
    """Mean landmark positions of a model's training faces: ``points`` [68, 2] at ``resolution`` px."""

    points: np.ndarray
    resolution: int

    def at(self, size: int) -> np.ndarray:
        """The points at another resolution (pixel-centre scaling)."""
        return (self.points + 0.5) * (size / self.resolution) - 0.5

    @classmethod
    def from_dict(cls, d: dict) -> "FaceTemplate":
        pts = np.asarray(d["points_xy"], dtype=np.float64)
        if pts.shape != (68, 2):
            raise ValueError(f"an alignment template needs 68 (x, y) points, got shape {pts.shape}")
        return cls(points=pts, resolution=int(d["resolution"]))

    def to_dict(self) -> dict:
        return {"method": "template", "resolution": self.resolution, "points_xy": self.points.round(3).tolist()}


def read_alignment_spec(source) -> tuple[str, FaceTemplate | None]:
    """(method, template) from a dict, a JSON file, a model folder holding ``alignment.json``, or a method name.

    JSON: ``{"resolution": 128, "points_xy": [[x, y] * 68]}`` (method 'template'), or
    ``{"method": "ffhq"}`` / ``{"method": "center"}``.
    """
    if isinstance(source, FaceTemplate):
        return "template", source
    if isinstance(source, str) and source in METHODS:
        return source, None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            path = path / TEMPLATE_FILE
        source = json.loads(path.read_text())
    if not isinstance(source, dict):
        raise ValueError(f"cannot read an alignment spec from {type(source).__name__}")
    method = source.get("method", "template" if "points_xy" in source else None)
    if method not in METHODS:
        raise ValueError(f"alignment method must be one of {METHODS}, got {method!r}")
    return method, FaceTemplate.from_dict(source) if method == "template" else None


# --------------------------------------------------------------------------- transforms


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) with ``dst ~ M @ [src, 1]``; returns M [2, 3]."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])  # no reflections
    rot = u @ fix @ vt
    scale = np.trace(np.diag(sig) @ fix) / (s0 ** 2).sum(1).mean()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def landmark_subset(points: np.ndarray, subset: str) -> np.ndarray:
    """Points used for the template fit.

    five : eye centres, nose tip, mouth corners (the five points CelebA was aligned on).
    inner: everything but the jaw line (17-67), which moves with head pose.
    all  : the 68 points.
    """
    points = np.asarray(points, np.float64)
    if subset == "five":
        return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])
    if subset == "inner":
        return points[17:]
    if subset == "all":
        return points
    raise ValueError(f"landmark subset must be one of {LANDMARK_SUBSETS}, got {subset!r}")


def template_matrix(landmarks: np.ndarray, template: FaceTemplate, size: int, subset: str = "five") -> np.ndarray:
    return similarity_fit(landmark_subset(landmarks, subset), landmark_subset(template.at(size), subset))


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """FFHQ's crop square (Karras et al. 2019, ffhq-dataset): corners TL, BL, BR, TR in photo coords.

    The square is oriented along the eye line corrected by the eye-to-mouth direction,
    sized by max(2x eye distance, 1.8x eye-to-mouth distance), centred slightly below the
    eyes (10% of the way to the mouth).
    """
    lm = np.asarray(landmarks, np.float64)
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]  # eye line averaged with the mouth's perpendicular
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    # The quad is in continuous (pixel-edge) coordinates, as PIL's QUAD transform reads it.
    quad = ffhq_quad(landmarks) - 0.5
    corners = np.array([[0, 0], [0, size], [size, size], [size, 0]], np.float64) - 0.5
    return similarity_fit(quad, corners)


def center_matrix(width: int, height: int, size: int) -> np.ndarray:
    """The central square of the photo, scaled to ``size``."""
    side = min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    s = size / side
    return np.array([[s, 0, (0.5 - x0) * s - 0.5], [0, s, (0.5 - y0) * s - 0.5]])


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``a`` applied after ``b``."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def warp_square(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Warp ``rgb`` by ``m`` into a ``size`` x ``size`` image; reflect beyond the photo's edges.

    Only the region the square needs is cut out, and strong reductions are first done
    with area averaging (``warpAffine`` itself would alias), so the final warp is about 1:1
    with a Lanczos kernel.
    """
    h, w = rgb.shape[:2]
    inv = cv2.invertAffineTransform(m)
    corners = transform_points(inv, np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]]))
    margin = 8 / max(np.sqrt(abs(np.linalg.det(m[:, :2]))), 1e-6)
    x0 = int(np.clip(np.floor(corners[:, 0].min() - margin), 0, w - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max() + margin) + 1, x0 + 1, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min() - margin), 0, h - 1))
    y1 = int(np.clip(np.ceil(corners[:, 1].max() + margin) + 1, y0 + 1, h))
    # Cropping at the photo's edges (clipped above) keeps the reflection identical.
    crop = rgb[y0:y1, x0:x1]
    m = _compose(m, np.array([[1.0, 0, x0], [0, 1.0, y0]]))
    scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale < 0.8:
        ch, cw = crop.shape[:2]
        nw, nh = max(1, round(cw * scale)), max(1, round(ch * scale))
        crop = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / cw, nh / ch
        to_small = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5]])
        m = _compose(m, cv2.invertAffineTransform(to_small))
    return cv2.warpAffine(np.ascontiguousarray(crop), m, (size, size), flags=cv2.INTER_LANCZOS4,
                          borderMode=cv2.BORDER_REFLECT_101)


# --------------------------------------------------------------------------- alignment result


@dataclasses.dataclass
class Alignment:
    """How a photo became the generator's input, and how to go back.

    matrix     : [2, 3] similarity, photo pixel coords -> aligned pixel coords.
    photo_size : (width, height) of the (upright, RGB) photo.
    size       : side of the aligned square (the generator's resolution).
    method     : 'template', 'ffhq' or 'center'.
    face_box   : detector box (x0, y0, x1, y1) of the inverted face, or None.
    landmarks  : its 68 landmarks in photo coords [68, 2], or None.
    num_faces  : faces found in the photo.
    """

    matrix: np.ndarray
    photo_size: tuple[int, int]
    size: int
    method: str
    face_box: tuple | None = None
    landmarks: np.ndarray | None = None
    num_faces: int = 0

    def warp(self, photo: Image.Image) -> Image.Image:
        return Image.fromarray(warp_square(np.asarray(photo.convert("RGB")), self.matrix, self.size))

    def paste_back(self, edited: Image.Image, photo: Image.Image, feather: float = 0.08) -> Image.Image:
        """Warp ``edited`` (the aligned square, any size) back into ``photo`` with a feathered edge.

        feather: width of the soft border as a fraction of the square's side.
        """
        w, h = self.photo_size
        if photo.size != (w, h):
            raise ValueError(f"paste_back needs the original photo ({w}x{h}), got {photo.size[0]}x{photo.size[1]}")
        edited = edited.convert("RGB")
        if edited.size != (self.size, self.size):
            edited = edited.resize((self.size, self.size), Image.LANCZOS)
        flags = cv2.WARP_INVERSE_MAP  # self.matrix maps photo -> square, i.e. destination -> source here
        face = cv2.warpAffine(np.asarray(edited), self.matrix, (w, h), flags=flags | cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        mask = cv2.warpAffine(feather_mask(self.size, feather), self.matrix, (w, h), flags=flags | cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
        out = np.asarray(photo.convert("RGB"), np.float32) * (1 - mask) + face * mask
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

    def to_dict(self) -> dict:
        return {"matrix": np.asarray(self.matrix).tolist(), "photo_size": list(self.photo_size), "size": self.size,
                "method": self.method, "face_box": None if self.face_box is None else [float(v) for v in self.face_box],
                "landmarks": None if self.landmarks is None else np.asarray(self.landmarks).tolist(),
                "num_faces": self.num_faces}

    @classmethod
    def from_dict(cls, d: dict) -> "Alignment":
        return cls(matrix=np.asarray(d["matrix"], np.float64), photo_size=tuple(d["photo_size"]), size=int(d["size"]),
                   method=d["method"], face_box=None if d.get("face_box") is None else tuple(d["face_box"]),
                   landmarks=None if d.get("landmarks") is None else np.asarray(d["landmarks"], np.float64),
                   num_faces=int(d.get("num_faces", 0)))


def feather_mask(size: int, feather: float) -> np.ndarray:
    """1 inside the square, easing to 0 at its border over ``feather * size`` pixels (smoothstep)."""
    width = max(feather * size, 1.0)
    r = np.arange(size, dtype=np.float32) + 0.5
    edge = np.minimum(r, size - r) / width
    t = np.clip(edge, 0, 1)
    ramp = t * t * (3 - 2 * t)
    return np.minimum.outer(ramp, ramp).astype(np.float32)


def align_photo(photo: Image.Image, size: int, method: str = "template", template: FaceTemplate | None = None,
                subset: str = "five", min_score: float = 0.3) -> tuple[Image.Image, Alignment, list[str]]:
    """Align ``photo`` (RGB) to a ``size`` square. Returns (aligned image, Alignment, notices).

    method 'template' needs ``template``; 'ffhq' uses FFHQ's procedure; 'center' skips
    face detection. With no face found, a centre crop is used and a notice says so.
    """
    if method not in METHODS:
        raise ValueError(f"alignment method must be one of {METHODS}, got {method!r}")
    if method == "template" and template is None:
        raise ValueError("template alignment needs a FaceTemplate")
    w, h = photo.size
    notices: list[str] = []
    if method == "center":
        m = center_matrix(w, h, size)
        notices.append("This model is not aligned on faces: used a centre crop of the photo.")
        alignment = Alignment(m, (w, h), size, "center")
        return alignment.warp(photo), alignment, notices
    rgb = np.asarray(photo.convert("RGB"))
    faces = detect_faces(rgb, min_score=min_score)
    if not faces:
        notices.append("No face found: used a centre crop of the photo.")
        alignment = Alignment(center_matrix(w, h, size), (w, h), size, "center")
        return alignment.warp(photo), alignment, notices
    face = faces[0]
    if len(faces) > 1:
        notices.append(f"Found {len(faces)} faces: inverted the largest one.")
    if method == "template":
        m = template_matrix(face.landmarks, template, size, subset)
    else:
        m = ffhq_matrix(face.landmarks, size)
    alignment = Alignment(m, (w, h), size, method, face_box=face.box, landmarks=face.landmarks, num_faces=len(faces))
    return alignment.warp(photo), alignment, notices
