"""inversion.edit.PhotoEdit: photo <-> square coordinates, the history of a photo edit, live photo frames, the mask
in photo pixels, the canvas's views, and the CLI's --photo-points.

The tiny 64 px generator (tests/helpers.py) and synthetic photos; no dlib, no inversion: an alignment is made by
hand, as the pipeline would.
"""

import io
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import inversion.edit
from draggan import cli
from draggan.engine import DragConfig, PointError
from inversion import PhotoEdit, read_photo
from inversion.align import Alignment, center_matrix

pytestmark = pytest.mark.usefixtures("one_thread")  # one_thread and G: conftest.py
R = 64


def similarity(scale, degrees, photo_centre):
    """A photo -> square similarity: rotation by ``degrees``, ``scale`` square px per photo px, the photo's
    ``photo_centre`` at the square's centre."""
    a = np.deg2rad(degrees)
    A = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = np.array([(R - 1) / 2, (R - 1) / 2]) - A @ np.asarray(photo_centre, float)
    return np.hstack([A, t[:, None]])


def texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.random((h // 6 + 1, w // 6 + 1, 3))
    return (np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC))).copy()


def photo_edit(G, photo: np.ndarray, matrix, config=None) -> PhotoEdit:
    h, w = photo.shape[:2]
    return PhotoEdit(G, G.ws_from_seed(1, 0.7), config or DragConfig(lr=0.01, max_steps=6, feature_block=4),
                     photo=Image.fromarray(photo), alignment=Alignment(np.asarray(matrix, float), (w, h), R, "template"))


@pytest.fixture(scope="module")
def edit_photo():
    """A 260 x 300 photo whose face region is rotated 8 degrees and 2.9 photo px per square px."""
    return texture(300, 260, seed=5), similarity(R / 185, -8, (130, 150))


# --------------------------------------------------------------------------- coordinates


def stored_with_orientation(upright: Image.Image, orientation: int) -> bytes:
    """A JPEG whose stored pixels, turned by EXIF ``orientation``, show ``upright``."""
    inverse = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
               8: Image.Transpose.ROTATE_270, 5: Image.Transpose.TRANSPOSE}
    stored = upright if inverse[orientation] is None else upright.transpose(inverse[orientation])
    exif = stored.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [1, 3, 5, 6, 8])
def test_photo_and_square_pixels_map_onto_each_other_on_rotated_photos_too(G, orientation):
    """Photo coordinates are the upright photo's (as read_photo shows it): a white dot there is where the
    aligned square shows it, and the mapping round-trips to within 0.01 px."""
    upright = np.full((150, 110, 3), 40, np.uint8)
    dot = (70, 52)                                          # x, y in the upright photo
    upright[dot[1] - 2:dot[1] + 3, dot[0] - 2:dot[0] + 3] = 255
    read = read_photo(stored_with_orientation(Image.fromarray(upright), orientation))
    assert read.image.size == (110, 150)
    matrix = similarity(R / 90, 17, (60, 70))
    edit = PhotoEdit(G, G.ws_from_seed(0, 0.7), photo=read.image,
                     alignment=Alignment(matrix, read.image.size, R, "template"))
    square = edit.photo_to_square([dot])[0]
    aligned = np.asarray(edit.alignment.warp(read.image).convert("L"), float)
    ys, xs = np.nonzero(aligned > aligned.max() * 0.6)
    assert np.hypot(xs.mean() - square[0], ys.mean() - square[1]) < 0.7
    points = np.random.default_rng(orientation).uniform([-20, -20], [130, 170], size=(500, 2))
    assert np.abs(edit.square_to_photo(edit.photo_to_square(points)) - points).max() < 0.01
    assert np.abs(edit.photo_to_square(edit.square_to_photo(points)) - points).max() < 0.01


def test_points_are_given_in_photo_pixels_and_refused_where_the_model_does_not_reach(G, edit_photo):
    photo, matrix = edit_photo
    edit = photo_edit(G, photo, matrix)
    edit.set_points([(130, 150)], [(136, 142)])
    (h,), (t,) = edit.points("square")
    assert np.allclose(h, ((R - 1) / 2,) * 2) and np.allclose(edit.points("photo")[1], [(136, 142)])
    with pytest.raises(PointError, match=r"target 1 at \(5, 290\) is outside the part of the photo that the model"):
        edit.set_points([(130, 150)], [(5, 290)])
    assert np.allclose(edit.points("photo")[1], [(136, 142)])           # nothing was lost
    assert not edit.covers((5, 290)) and edit.covers((130, 150))
    with pytest.raises(PointError, match="outside"):
        edit.check_point((259, 0))
    # Square coordinates stay available, and say which image they are checked against.
    edit.set_points([(10, 10)], [(20, 12)], coordinates="square")
    assert edit.points("square") == ([(10.0, 10.0)], [(20.0, 12.0)])
    with pytest.raises(PointError):
        edit.set_points([(10, 10)], [(70, 12)], coordinates="square")


def test_the_face_view_frames_the_square_with_a_margin_and_clicks_map_back(G, edit_photo):
    photo, matrix = edit_photo
    edit = photo_edit(G, photo, matrix)
    view = edit.view()
    corners = edit.footprint()
    x0, y0, x1, y1 = view.box
    assert (corners.min(0) >= (x0, y0)).all() and (corners.max(0) <= (x1, y1)).all()
    assert max(view.size) == inversion.edit.VIEW_SIZE and 0 <= x0 and x1 <= 260 and y1 <= 300
    assert x1 - x0 > 1.3 * np.ptp(corners[:, 0]) or x0 == 0 or x1 == 260       # a margin, where the photo has one
    # A click on the view lands on the photo pixel drawn there.
    for p in [(100, 120), (150, 170)]:
        u, v = view.to_view([p])[0]
        assert view.pixel(round(u), round(v)) == p
    background = view.crop(photo)
    assert background.shape == (view.size[1], view.size[0], 3)
    whole = edit.view(whole=True)
    assert whole.box == (0, 0, 260, 300) and whole.size == (555, 640)


# --------------------------------------------------------------------------- history


def test_undo_pops_the_photo_edit_together_with_the_drag(G, edit_photo):
    photo, matrix = edit_photo
    edit = photo_edit(G, photo, matrix)
    edit.set_points([(120, 140)], [(128, 134)])
    list(edit.run())
    after_a = np.asarray(edit.photo_frame().image).copy()
    assert not np.array_equal(after_a, photo)
    edit.set_points([(145, 170)], [(139, 178)])
    list(edit.run(max_steps=3))
    list(edit.run(max_steps=3))                      # continued: the same points, a second undo entry
    assert len(edit.records) == 3 and edit.session.undo_depth == 3
    after_b = np.asarray(edit.photo_frame().image).copy()
    assert not np.array_equal(after_b, after_a)
    assert edit.undo()                               # back to the first half of B: not A, not B
    half_b = np.asarray(edit.photo_frame().image)
    assert not np.array_equal(half_b, after_a) and not np.array_equal(half_b, after_b)
    assert edit.undo() and np.array_equal(np.asarray(edit.photo_frame().image), after_a)
    assert edit.undo() and np.array_equal(np.asarray(edit.photo_frame().image), photo)
    assert not edit.undo() and edit.records == []
    list(edit.run())
    edit.reset()
    assert edit.records == [] and np.array_equal(np.asarray(edit.photo_frame().image), photo)
    assert np.array_equal(edit.square(), edit.original)


def test_a_live_drag_streams_the_photo_moving_in_the_view(G, edit_photo):
    photo, matrix = edit_photo
    edit = photo_edit(G, photo, matrix, DragConfig(lr=0.01, max_steps=20, feature_block=4))
    edit.set_points([(120, 140)], [(132, 130)])
    view = edit.view(longest=320)
    events = list(edit.drag(view=view))
    frames = [e for e in events if e.kind == "frame"]
    assert len(frames) >= 2 and events[-1].kind == "end"
    shots = [np.asarray(e.photo.image) for e in frames]
    assert all(s.shape == (view.size[1], view.size[0], 3) for s in shots)
    assert not np.array_equal(shots[0], shots[-1])
    assert [e.steps for e in frames] == sorted(e.steps for e in frames) and frames[0].steps >= 1
    # The photo moved only near the handle: far from it, every view pixel is the upload's.
    background = edit.background(view)
    far = np.ones(shots[-1].shape[:2], bool)
    u, v = view.to_view([(126, 135)])[0]
    far[int(v) - 90:int(v) + 90, int(u) - 90:int(u) + 90] = False
    assert np.array_equal(shots[-1][far], background[far])
    # The canvas draws a frame's own photo and tracked handles; the video replays the history the same way.
    canvas = edit.canvas(view, photo=frames[-1].photo, tracked=frames[-1].state.handles)
    assert canvas.shape == shots[-1].shape
    video = edit.photo_video_frames(view)
    assert len(video) >= 2 and video[0].shape == canvas.shape


def test_recorded_frames_are_bounded(G, edit_photo, monkeypatch):
    monkeypatch.setattr(inversion.edit, "MAX_FRAMES", 10)
    photo, matrix = edit_photo
    edit = photo_edit(G, photo, matrix, DragConfig(lr=0.002, max_steps=21, feature_block=4))
    edit.set_points([(120, 140)], [(150, 120)])
    states = list(edit.run(image_every=1))
    assert len(states) == 21 and len(edit.frames) <= 10
    assert np.array_equal(edit.frames[0].handles, states[0].handles)      # decimated, the oldest kept


# --------------------------------------------------------------------------- mask


def test_a_mask_in_photo_pixels_reaches_the_square_and_keeps_the_photo_outside(G, edit_photo):
    photo, matrix = edit_photo
    edit = photo_edit(G, photo, matrix, DragConfig(lr=0.01, max_steps=10, feature_block=4))
    painted = np.zeros((300, 260), bool)
    painted[120:165, 100:150] = True
    edit.set_mask(painted, "photo")
    mask = edit.mask
    # Square pixels whose centre lies well inside the painted box are movable, those well outside are not.
    ys, xs = np.mgrid[0:R, 0:R]
    centres = edit.square_to_photo(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(R, R, 2)
    inside = (centres[..., 0] > 104) & (centres[..., 0] < 146) & (centres[..., 1] > 124) & (centres[..., 1] < 161)
    outside = (centres[..., 0] < 95) | (centres[..., 0] > 155) | (centres[..., 1] < 115) | (centres[..., 1] > 170)
    assert mask[inside].all() and not mask[outside].any()
    # The same mask as painted on a view comes back unchanged.
    view = edit.view()
    assert np.array_equal(edit.mask_from_view(edit.mask_in_view(view).astype(np.uint8) * 255, view), mask)
    edit.set_points([(120, 140)], [(130, 134)])
    list(edit.run())
    edited = np.asarray(edit.photo_frame().image)
    far = np.ones((300, 260), bool)
    far[110:175, 90:160] = False
    assert np.array_equal(edited[far], photo[far]) and not np.array_equal(edited, photo)


# --------------------------------------------------------------------------- the CLI in photo pixels


@pytest.fixture
def inversion_dir(tmp_path, tiny_model_dir, edit_photo):
    """An inversion folder (python -m inversion's layout) for the tiny model and the synthetic photo."""
    photo, matrix = edit_photo
    inv = tmp_path / "inv"
    (inv / "generator").mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (inv / "generator" / f.name).write_bytes(f.read_bytes())
    from helpers import tiny_generator
    torch.save({"ws": tiny_generator().ws_from_seed(1, 0.7)}, inv / "latent.pt")
    Image.fromarray(photo).save(inv / "photo.png")
    (inv / "alignment.json").write_text(json.dumps(Alignment(matrix, (260, 300), R, "template").to_dict()))
    return inv


def test_the_cli_takes_photo_pixels_and_gives_the_same_edit_as_square_pixels(inversion_dir, edit_photo, tmp_path,
                                                                             capsys):
    _, matrix = edit_photo
    photo_points = [(120, 140), (128, 133)]                      # handle, target: what a user reads off the photo
    square = Alignment(matrix, (260, 300), R, "template")
    to_square = [tuple(map(float, square.matrix[:, :2] @ np.asarray(p, float) + square.matrix[:, 2])) for p in photo_points]
    spec = lambda pts: f"{pts[0][0]!r},{pts[0][1]!r}->{pts[1][0]!r},{pts[1][1]!r}"   # noqa: E731
    common = ["edit", "--inversion", str(inversion_dir), "--feature-block", "4", "--steps", "5", "--quiet",
              "--device", "cpu"]
    outputs = {}
    for name, flag, points in (("photo", "--photo-points", photo_points), ("square", "--points", to_square)):
        assert cli.main(common + [flag, spec(points), "--out", str(tmp_path / f"{name}.png"),
                                  "--square-out", str(tmp_path / f"{name}-square.png")]) == 0
        outputs[name] = capsys.readouterr().out
    for suffix in (".png", "-square.png"):
        a, b = (np.asarray(Image.open(tmp_path / f"{n}{suffix}")) for n in ("photo", "square"))
        assert np.array_equal(a, b)
    edited = np.asarray(Image.open(tmp_path / "photo.png"))
    assert edited.shape == (300, 260, 3) and not np.array_equal(edited, np.asarray(Image.open(inversion_dir / "photo.png")))
    assert "(120, 140)" in outputs["photo"] and "in photo pixels" in outputs["photo"]


def test_the_cli_video_of_a_photo_edit_shows_the_photo_and_the_square_video_the_model(inversion_dir, tmp_path):
    args = ["edit", "--inversion", str(inversion_dir), "--feature-block", "4", "--steps", "4", "--quiet",
            "--device", "cpu", "--photo-points", "120,140->128,133", "--out", str(tmp_path / "o.png"),
            "--video", str(tmp_path / "photo.gif"), "--square-video", str(tmp_path / "square.gif")]
    assert cli.main(args) == 0
    edit = PhotoEdit.load(inversion_dir)
    view = edit.view()
    with Image.open(tmp_path / "photo.gif") as photo_video, Image.open(tmp_path / "square.gif") as square_video:
        assert photo_video.size == view.size and photo_video.n_frames >= 2     # the canvas: the photo, moving
        assert square_video.size[0] == square_video.size[1] != photo_video.size[0]
        assert square_video.n_frames == 5                                       # before + one frame per step
        photo_video.seek(0)
        first = np.asarray(photo_video.convert("RGB"), np.float32)
    # The photo video's first frame is the upload as the canvas shows it (points on top, GIF's 256 colours),
    # far closer to it than the model's square shown in the same place would be.
    background = edit.background(view).astype(np.float32)
    square_there = cv2.warpAffine(edit.square(), edit.view_alignment(view).matrix, view.size,
                                  flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR).astype(np.float32)
    assert np.abs(first - background).mean() < 0.5 * np.abs(square_there - background).mean()


def test_the_cli_says_when_photo_pixels_cannot_be_used(inversion_dir, tmp_path, capsys):
    common = ["edit", "--inversion", str(inversion_dir), "--steps", "1", "--quiet", "--out", str(tmp_path / "o.png")]
    assert cli.main(common + ["--photo-points", "5,290->20,280"]) == 2
    assert "outside the part of the photo that the model covers" in capsys.readouterr().err
    (inversion_dir / "photo.png").unlink()
    assert cli.main(common + ["--photo-points", "120,140->128,133"]) == 2
    assert "holds no photo.png" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(common + ["--points", "1,1->2,2", "--photo-points", "1,1->2,2"])   # one or the other


def test_a_sampled_face_has_no_photo_and_its_coordinates_are_the_squares(G):
    edit = PhotoEdit.from_latent(G, G.ws_from_seed(2, 0.7))
    assert not edit.has_photo and edit.photo_frame() is None and edit.photo_size == (R, R)
    assert edit.view().size == (640, 640) and np.array_equal(edit.photo_to_square([(3, 4)]), [(3, 4)])
    edit.set_points([(10, 10)], [(14, 12)])
    assert edit.points("photo") == edit.points("square") == ([(10.0, 10.0)], [(14.0, 12.0)])
    assert np.array_equal(edit.canvas(edit.view(), smooth=False)[::10, ::10][20, 30], edit.square()[20, 30])
    with pytest.raises(ValueError, match="alignment"):
        PhotoEdit(G, G.ws_from_seed(2, 0.7), photo=Image.new("RGB", (80, 96)))
    with pytest.raises(ValueError, match="made for"):
        PhotoEdit(G, G.ws_from_seed(2, 0.7), photo=Image.new("RGB", (80, 90)),
                  alignment=Alignment(center_matrix(80, 96, R), (80, 96), R, "center"))
