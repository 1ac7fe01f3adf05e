"""app.py on an inverted photo: the photo is the canvas, it moves during the drag, Undo/Reset/export act on it,
and sampling controls never throw it away.

Handlers are called directly, as in test_app_handlers.py (tiny generator, tiny inversion budget). The 80 x 96
random photo has no face: it is centre-cropped, so the model's 64 px square covers its rows 8-87.
"""

import types

import gradio as gr
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")  # one_thread and tiny_model_dir: conftest.py
PHOTO_SIZE = (80, 96)   # width, height


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((PHOTO_SIZE[1], PHOTO_SIZE[0], 3)) * 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    return str(path), img


def request(sid="user-a"):
    return types.SimpleNamespace(session_hash=sid)


def drag(studio, req, steps=4):
    return list(studio.drag(lr=0.01, max_steps=steps, r1=0, r2=0, lambda_mask=20, space="W+", block=None,
                            request=req))


def inverted(studio, path, req):
    studio.on_load(req)
    out = studio.invert_photo(path, "tiny", "fast", req, progress=lambda *a, **k: None)
    return out, studio.store.get(req.session_hash)


def click_photo(studio, s, x, y, req):
    """Click the canvas where it shows photo pixel (x, y)."""
    u, v = s.canvas_view().to_view([(x, y)])[0]
    return studio.click(gr.SelectData(None, {"index": [int(round(u)), int(round(v))], "value": None}), req)


def export_photo(studio, req) -> np.ndarray:
    files = studio.export("GIF", "motion", req)[studio.ui["files"]]
    assert files[0].split("/")[-1].startswith("photo-edited-")
    return np.asarray(Image.open(files[0]))


def dragged_once(studio, path, req, points="30,40->36,44", steps=6):
    """Invert the photo, drag once; (the user's session, the exported photo)."""
    _, s = inverted(studio, path, req)
    studio.set_points_text(points, req)
    drag(studio, req, steps=steps)
    return s, export_photo(studio, req)


def test_after_inversion_the_canvas_is_the_photo_and_clicks_land_in_photo_pixels(studio, photo, messages):
    path, pixels = photo
    req = request()
    out, s = inverted(studio, path, req)
    ui = studio.ui
    canvas = out[ui["canvas"]]
    view = s.canvas_view()
    # The photo itself, sharp, at screen size: beside the thin frame of what the model covers, its own pixels.
    assert canvas.shape == (view.size[1], view.size[0], 3) and max(view.size) == 640
    assert (canvas == view.crop(pixels)).all(-1).mean() > 0.95
    assert out[ui["model_view"]].shape[0] >= 128 and out[ui["whole_photo"]]["visible"] is True
    # A handle and a target on the photo: kept in photo pixels, handed to the engine in the square's.
    click_photo(studio, s, 30, 40, req)
    out = click_photo(studio, s, 36, 44, req)
    assert s.handles == [(30.0, 40.0)] and s.targets == [(36.0, 44.0)]
    # The centre crop: square = 0.8 * photo - (0.1, 6.5) (pixel centres; rows 8-87 fill the 64 px square).
    assert np.allclose(s.edit.points("square")[0], [(23.9, 25.5)])
    assert out[ui["points_text"]] == "30,40->36,44" and "Points in pixels of your photo" in out[ui["status"]]
    # A click where the model does not reach (above its square) is refused in a sentence; nothing is lost.
    assert click_photo(studio, s, 40, 3, req) == gr.skip()
    assert "outside the part of the photo that the model covers" in messages[-1][1]
    assert s.pending is None and s.handles == [(30.0, 40.0)]
    # So is a typed point there; square coordinates stay available.
    assert studio.set_points_text("40,3->40,10", req) == gr.skip() and "covers" in messages[-1][1]
    studio.set_points_text("23.9,25.5->28.7,28.7", req, "square")
    assert np.allclose(s.handles, [(30, 40)]) and np.allclose(s.targets, [(36, 44)])
    # The whole photo, on request.
    whole = studio.set_whole_photo(True, req)[ui["canvas"]]
    assert s.canvas_view().box == (0, 0, 80, 96) and whole.shape[:2] == (640, 533)


def test_the_photo_moves_during_the_drag_and_the_export_is_what_the_canvas_shows(studio, photo, messages):
    path, pixels = photo
    req = request()
    start, s = inverted(studio, path, req)
    ui = studio.ui
    assert start[ui["photo_confidence"]]["visible"] is False          # nothing edited yet
    before = studio.set_points_text("30,40->36,44", req)[ui["canvas"]]
    # Small steps, so that frames stream while it runs (a tiny drag can end before the first one is drawn).
    outs = list(studio.drag(lr=0.002, max_steps=60, r1=0, r2=0, lambda_mask=20, space="W+", block=None,
                            request=req))
    streamed = [o[ui["canvas"]] for o in outs if ui["canvas"] in o and "Dragging" in o[ui["status"]]]
    assert streamed and all(f.shape == before.shape for f in streamed)
    assert not np.array_equal(streamed[-1], before)                      # the photo, with its tracked handles
    assert outs[0][ui["files"]] is None and outs[-1][ui["files"]] is None  # the old downloads go at once
    final = outs[-1]
    assert final[ui["photo_confidence"]]["visible"] and final[ui["model_view"]] is not None
    # Export: the photo at its own size, equal to the upload wherever the edit did not reach.
    edited = export_photo(studio, req)
    box = s.edit.photo_frame().box
    outside = np.ones(pixels.shape[:2], bool)
    x0, y0, x1, y1 = box
    outside[y0:y1, x0:x1] = False
    assert edited.shape == pixels.shape and outside.any() and np.array_equal(edited[outside], pixels[outside])
    assert not np.array_equal(edited, pixels)
    files = studio.export("GIF", True, req)[ui["files"]]
    names = [f.split("/")[-1].split("-2")[0] for f in files]
    assert names == ["photo-edited", "model-square", "latent", "photo-drag", "model-drag"]
    with Image.open(files[3]) as video:          # the photo moving, as the canvas showed it
        assert video.n_frames >= 2 and video.size == s.canvas_view().size
    assert Image.open(files[1]).size == (64, 64)
    # The paste-back stays available; 'none' leaves the photo out.
    assert np.asarray(Image.open(studio.export("GIF", "paste", req)[ui["files"]][0])).shape == pixels.shape
    assert studio.export("GIF", "none", req)[ui["files"]][0].split("/")[-1].startswith("model-square")
    # Reset: the upload again, and the downloads of the edit go.
    out = studio.reset(req)
    assert out[ui["files"]] is None and out[ui["photo_confidence"]]["visible"] is False
    assert np.array_equal(export_photo(studio, req), pixels)


def test_undo_takes_the_photo_back_drag_by_drag(studio, photo):
    """After drag A, drag B and Undo, the photo is A's; after another Undo, the upload's (issue 25: it was not)."""
    path, pixels = photo
    req = request()
    s, after_a = dragged_once(studio, path, req)
    assert not np.array_equal(after_a, pixels)
    studio.set_points_text("50,70->44,66", req)
    drag(studio, req, steps=6)
    assert not np.array_equal(export_photo(studio, req), after_a)
    out = studio.undo(req)
    assert out[studio.ui["files"]] is None
    assert np.array_equal(export_photo(studio, req), after_a)
    studio.undo(req)
    assert np.array_equal(export_photo(studio, req), pixels)


def test_the_step_count_restarts_with_every_start(studio, photo):
    path, _ = photo
    req = request()
    inverted(studio, path, req)
    studio.set_points_text("10,20->50,60", req)
    for _ in range(2):                 # the second Start continues the same points (and the engine's count)
        final = drag(studio, req, steps=3)[-1][studio.ui["status"]]
        assert "Paused at step 3 " in final or "Arrived after" in final
    studio.undo(req)
    final = drag(studio, req, steps=2)[-1][studio.ui["status"]]
    assert "Paused at step 2 " in final or "Arrived after" in final


def test_a_mask_painted_on_the_photo_keeps_the_rest_of_the_photo(studio, photo):
    path, pixels = photo
    req = request()
    _, s = inverted(studio, path, req)
    studio.set_points_text("30,40->36,44", req)
    view = s.canvas_view()
    # A stroke over the handle and its target, on the sketch pad (the canvas at the same size).
    layer = np.zeros((view.size[1], view.size[0], 4), np.uint8)
    (u0, v0), (u1, v1) = view.to_view([(22, 32), (46, 54)]).round().astype(int)
    layer[v0:v1, u0:u1] = (255, 204, 0, 255)
    studio.paint_mask({"background": None, "layers": [layer], "composite": None}, req)
    mask = s.mask
    assert mask is not None and 0.05 < mask.mean() < 0.3
    drag(studio, req, steps=10)
    edited = export_photo(studio, req)
    # Photo pixels whose square position is more than a pixel from the painted region keep the upload's bytes.
    ys, xs = np.mgrid[0:PHOTO_SIZE[1], 0:PHOTO_SIZE[0]]
    q = s.edit.photo_to_square(np.stack([xs.ravel(), ys.ravel()], 1)).round().astype(int)
    grown = np.pad(mask, 2)
    grown = np.max([np.roll(np.roll(grown, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 0)[2:-2, 2:-2]
    inside = (q >= 0).all(1) & (q < 64).all(1)
    near = np.zeros(len(q), bool)
    near[inside] = grown[q[inside, 1], q[inside, 0]]
    far = ~near.reshape(PHOTO_SIZE[1], PHOTO_SIZE[0])
    assert np.array_equal(edited[far], pixels[far]) and not np.array_equal(edited, pixels)


def test_sampling_controls_keep_the_photo_edit_until_the_user_goes_back(studio, photo, messages):
    path, pixels = photo
    req = request()
    s, edited = dragged_once(studio, path, req)
    ui = studio.ui
    for action in (lambda: studio.new_face("tiny", 0.7, req), lambda: studio.sample("tiny", 5, 0.4, req)):
        out = action()
        assert s.source == "sample" and out[ui["back_to_photo"]]["visible"] is True
        assert out[ui["files"]] is None and out[ui["whole_photo"]]["visible"] is False
    assert any("Back to your photo" in m[1] for m in messages if m[0] == "info")
    out = studio.back_to_photo(req)
    assert s.source == "photo" and out[ui["back_to_photo"]]["visible"] is False
    assert out[ui["aligned"]]["visible"] and "PSNR" in out[ui["report"]]
    assert s.handles and np.array_equal(export_photo(studio, req), edited) and s.can_undo
    assert studio.back_to_photo(req) == gr.skip() and "no photo edit" in messages[-1][1]


def test_a_sampled_face_is_shown_smoothly_and_crisp_on_request(studio):
    req = request("user-b")
    smooth = studio.on_load(req)[studio.ui["canvas"]]
    s = studio.store.get("user-b")
    crisp = studio.set_crisp(True, req)[studio.ui["canvas"]]
    scale = smooth.shape[0] // 64
    blocks = crisp.reshape(64, scale, 64, scale, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()                        # nearest: each pixel a flat block
    assert not np.array_equal(smooth, crisp)
    assert np.array_equal(crisp[::scale, ::scale], s.image)
    studio.set_points_text("20,20->26,24", req)
    final = drag(studio, req, steps=2)[-1]
    assert final[studio.ui["photo_confidence"]]["visible"] is False and final[studio.ui["whole_photo"]]["visible"] is False
