"""app.py: an inverted photo's edit shown at full resolution after a drag, and exported by motion transfer.

Handlers are called directly, as in test_app_handlers.py (tiny generator, tiny inversion budget).
"""

import types

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


def test_a_drag_on_a_photo_shows_and_exports_the_photo_at_full_resolution(studio, photo, messages):
    path, pixels = photo
    req = request()
    studio.on_load(req)
    out = studio.invert_photo(path, "tiny", "fast", req, progress=lambda *a, **k: None)
    ui = studio.ui
    assert out[ui["photo_result"]]["visible"] is False              # nothing edited yet
    # A random-pixel photo reconstructs badly: the report says so and what it means.
    assert "Poor reconstruction" in out[ui["report"]]
    studio.set_points_text("20,20->26,24", req)
    final = drag(studio, req)[-1]
    shown = final[ui["photo_result"]]
    assert shown["visible"] and shown["value"].shape == (PHOTO_SIZE[1], PHOTO_SIZE[0], 3)
    assert final[ui["photo_confidence"]]["value"].shape == shown["value"].shape
    s = studio.store.get("user-a")
    assert s.photo_edit is not None and s.photo_edit.mode == "motion"
    # Export (default: motion transfer) writes the photo at its own size; far pixels are the upload's bytes.
    files = studio.export("GIF", "motion", req)[ui["files"]]
    edited = np.asarray(Image.open(files[0]))
    assert files[0].split("/")[-1].startswith("edited-in-photo") and edited.shape == pixels.shape
    box = s.photo_edit.box
    outside = np.ones(pixels.shape[:2], bool)
    if box is not None:
        x0, y0, x1, y1 = box
        outside[y0:y1, x0:x1] = False
    assert outside.any() and np.array_equal(edited[outside], pixels[outside])
    # The old paste-back stays available, and True (the old checkbox) means motion transfer.
    pasted = np.asarray(Image.open(studio.export("GIF", "paste", req)[ui["files"]][0]))
    assert pasted.shape == pixels.shape
    assert studio.export("GIF", True, req)[ui["files"]][0].split("/")[-1].startswith("edited-in-photo")
    assert not studio.export("GIF", "none", req)[ui["files"]][0].split("/")[-1].startswith("edited-in-photo")
    # Reset: back to the upload, the result hidden again.
    after_reset = studio.reset(req)
    assert after_reset[ui["photo_result"]]["visible"] is False


def test_a_sampled_face_shows_no_photo_result(studio):
    req = request("user-b")
    studio.on_load(req)
    studio.set_points_text("20,20->26,24", req)
    final = drag(studio, req, steps=2)[-1]
    assert final[studio.ui["photo_result"]]["visible"] is False
