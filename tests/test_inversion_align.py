"""Alignment: landmarks land on the template, FFHQ straightens faces, no face -> centre crop, paste-back."""

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from inversion.align import (
    Alignment,
    FaceTemplate,
    align_photo,
    center_matrix,
    detect_faces,
    ffhq_quad,
    landmark_subset,
    read_alignment_spec,
    similarity_fit,
    transform_points,
)

TEMPLATE_JSON = Path(__file__).resolve().parents[1] / "checkpoints" / "celeba128" / "alignment.json"


def _template() -> FaceTemplate:
    if TEMPLATE_JSON.is_file():
        return FaceTemplate.from_dict(json.loads(TEMPLATE_JSON.read_text()))
    # Same landmarks on a 128 px grid from the astronaut itself, should the shared data be absent.
    astro = np.asarray(skimage.data.astronaut())
    lm = detect_faces(astro)[0].landmarks
    m = similarity_fit(landmark_subset(lm, "five"), [[50.1, 63.0], [77.5, 63.0], [63.9, 78.8], [51.3, 92.0], [76.3, 92.0]])
    return FaceTemplate(points=transform_points(m, lm), resolution=128)


@pytest.fixture(scope="module")
def astronaut():
    return Image.fromarray(skimage.data.astronaut())


def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.RandomState(0)
    src = rng.rand(20, 2) * 100
    a, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = src @ (s * rot).T + t
    m = similarity_fit(src, dst)
    assert np.allclose(m[:, :2], s * rot, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)


def test_astronaut_landmarks_land_on_template(astronaut):
    template = _template()
    aligned, alignment, notices = align_photo(astronaut, 128, method="template", template=template)
    assert aligned.size == (128, 128) and alignment.method == "template"
    assert alignment.num_faces == 1 and notices == []
    # Independent check: detect the face again in the aligned image.
    faces = detect_faces(np.asarray(aligned))
    assert len(faces) == 1
    err = np.linalg.norm(faces[0].landmarks - template.points, axis=1)
    assert err[17:].mean() < 3.0, err.mean()  # pixels at 128 px (eyes/nose/mouth); measured ~1.9
    key = landmark_subset(faces[0].landmarks, "five") - landmark_subset(template.points, "five")
    assert np.linalg.norm(key, axis=1).max() < 4.0


def test_template_scales_with_resolution(astronaut):
    template = _template()
    _, a64, _ = align_photo(astronaut, 64, method="template", template=template)
    _, a128, _ = align_photo(astronaut, 128, method="template", template=template)
    # Same geometry, half the scale (pixel-centre convention).
    lm64 = transform_points(a64.matrix, a64.landmarks)
    lm128 = transform_points(a128.matrix, a128.landmarks)
    assert np.abs((lm64 + 0.5) * 2 - 0.5 - lm128).max() < 1e-6


def test_ffhq_alignment_straightens_a_rotated_face(astronaut):
    rotated = astronaut.rotate(20, resample=Image.BICUBIC, center=(220, 125))
    aligned, alignment, _ = align_photo(rotated, 256, method="ffhq")
    assert alignment.method == "ffhq"
    lm = detect_faces(np.asarray(aligned))[0].landmarks
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_vec = eye_r - eye_l
    assert abs(np.degrees(np.arctan2(eye_vec[1], eye_vec[0]))) < 4  # eye line level again
    # FFHQ facts: the crop is centred on the face horizontally, eyes above the centre, mouth below.
    assert abs((eye_l[0] + eye_r[0]) / 2 - 128) < 10
    assert eye_l[1] < 128 < lm[48:68, 1].mean()
    # The quad's side is max(2x eye distance, 1.8x eye-to-mouth), so eyes span at most half the crop.
    assert 0.2 * 256 < np.hypot(*eye_vec) <= 0.5 * 256 + 4


def test_ffhq_quad_is_a_square():
    lm = np.zeros((68, 2))
    lm[36:42] = [30, 40]
    lm[42:48] = [70, 40]
    lm[48], lm[54] = [35, 80], [65, 80]
    quad = ffhq_quad(lm)
    sides = np.linalg.norm(np.roll(quad, -1, 0) - quad, axis=1)
    assert np.allclose(sides, sides[0])
    # Upright face: eye distance 40 -> side 2 * max(2*40, 1.8*40) = 160, centred 4 px below the eyes.
    assert np.allclose(sides[0], 160) and np.allclose(quad.mean(0), [50, 44])


def test_faceless_photo_takes_centre_crop():
    cat = Image.fromarray(skimage.data.chelsea())  # 451x300, a cat: no human face
    aligned, alignment, notices = align_photo(cat, 64, method="template", template=_template())
    assert alignment.method == "center" and alignment.num_faces == 0
    assert any("No face found" in n and "centre crop" in n for n in notices)
    w, h = cat.size
    ref = cat.crop(((w - h) // 2, 0, (w - h) // 2 + h, h)).resize((64, 64), Image.LANCZOS)
    assert np.abs(np.asarray(aligned, float) - np.asarray(ref, float)).mean() < 4


def test_center_method_skips_detection(astronaut):
    _, alignment, notices = align_photo(astronaut, 64, method="center")
    assert alignment.method == "center" and notices and "centre crop" in notices[0]
    assert np.allclose(alignment.matrix, center_matrix(512, 512, 64))


def test_several_faces_takes_largest(astronaut):
    a = np.asarray(astronaut)
    small = np.asarray(astronaut.resize((384, 384), Image.LANCZOS))
    canvas = np.full((512, 512 + 384, 3), 128, np.uint8)
    canvas[:, :512] = a
    canvas[:384, 512:] = small
    _, alignment, notices = align_photo(Image.fromarray(canvas), 128, method="template", template=_template())
    assert alignment.num_faces == 2
    assert any("2 faces" in n and "largest" in n for n in notices)
    assert alignment.face_box[0] < 512  # the full-size astronaut, not the smaller copy


def test_paste_back_restores_the_photo(astronaut):
    aligned, alignment, _ = align_photo(astronaut, 128, method="template", template=_template())
    pasted = np.asarray(alignment.paste_back(aligned, astronaut), float)
    orig = np.asarray(astronaut, float)
    inv = np.linalg.inv(np.vstack([alignment.matrix, [0, 0, 1]]))[:2]
    corners = transform_points(inv, [[0, 0], [127, 127]])
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    outside = np.ones(orig.shape[:2], bool)
    outside[max(y0 - 8, 0):y1 + 8, max(x0 - 8, 0):x1 + 8] = False
    assert np.array_equal(pasted[outside], orig[outside])  # untouched away from the face
    cx, cy = ((corners[0] + corners[1]) / 2).astype(int)
    core = (slice(cy - 20, cy + 20), slice(cx - 20, cx + 20))
    assert np.abs(pasted[core] - orig[core]).mean() < 12  # the 128 px round trip loses only detail
    # An edit shows up where the face is.
    dark = alignment.paste_back(Image.new("RGB", (128, 128)), astronaut)
    assert np.asarray(dark, float)[core].mean() < 5


def test_alignment_roundtrip_and_specs(astronaut, tmp_path):
    _, alignment, _ = align_photo(astronaut, 64, method="template", template=_template())
    again = Alignment.from_dict(json.loads(json.dumps(alignment.to_dict())))
    assert np.allclose(again.matrix, alignment.matrix) and again.photo_size == alignment.photo_size
    assert read_alignment_spec({"method": "ffhq"}) == ("ffhq", None)
    (tmp_path / "alignment.json").write_text(json.dumps(_template().to_dict()))
    method, template = read_alignment_spec(tmp_path)
    assert method == "template" and template.points.shape == (68, 2)
    with pytest.raises(ValueError, match="68"):
        read_alignment_spec({"resolution": 128, "points_xy": [[0, 0]] * 5})
