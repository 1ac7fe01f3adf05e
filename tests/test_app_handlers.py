"""app.py event handlers, called directly (no server): clicks, points, mask, drag, undo, export, inversion.

Each handler returns a dict of component updates; messages go through gr.Warning /
gr.Info, which these tests record instead of showing.
"""

import io
import re
import threading
import types

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import app
from draggan.drawing.overlay import HANDLE_COLOR, mask_from_strokes, view_scale
from inversion import InversionConfig
from inversion.edit import VIEW_SIZE

R = 64
SCALE = view_scale(R, VIEW_SIZE)   # the view of a sampled face is R * SCALE pixels wide
pytestmark = pytest.mark.usefixtures("one_thread")  # one_thread and tiny_model_dir: conftest.py


def request(sid="user-a"):
    return types.SimpleNamespace(session_hash=sid)


def select(u, v):
    """A click as the browser reports it: view pixel coordinates."""
    return gr.SelectData(None, {"index": [u, v], "value": None})


def click_pixel(studio, x, y, req):
    """Click the centre of generator pixel (x, y)."""
    return studio.click(select(x * SCALE + SCALE // 2, y * SCALE + SCALE // 2), req)


def no_progress(*args, **kwargs):
    pass


def session(studio, req):
    return studio.store.get(req.session_hash)


def drag_params(max_steps=20, lr=0.01):
    return dict(lr=lr, max_steps=max_steps, r1=0, r2=0, lambda_mask=20, space="W+", block=None)


def run_drag(studio, req, **params):
    return list(studio.drag(request=req, **{**drag_params(), **params}))


# --------------------------------------------------------------------------- loading and sampling


def test_on_load_shows_the_default_models_face_and_its_parameters(studio):
    out = studio.on_load(request())
    ui = studio.ui
    view = out[ui["canvas"]]
    assert view.shape == (R * SCALE, R * SCALE, 3)
    assert out[ui["editor"]] is None                       # the sketch pad is filled when its tab opens
    pad = studio.show_mask_editor(request())[ui["editor"]]
    assert pad["background"].shape == view.shape and pad["layers"] == []
    assert out[ui["block"]]["value"] == 4                      # half of 64 px: block 4 (32 px)
    assert [c[1] for c in out[ui["block"]]["choices"]] == [1, 2, 3, 4, 5]
    assert "Click the image" in out[ui["status"]]


def test_sample_changes_the_face_and_rejects_a_bad_seed(studio, messages):
    req = request()
    first = studio.on_load(req)[studio.ui["canvas"]]
    out = studio.sample("tiny", 7, 0.7, req)
    assert out[studio.ui["seed"]] == 7 and not np.array_equal(out[studio.ui["canvas"]], first)
    assert out[studio.ui["aligned"]]["visible"] is False            # a sampled face has no photo figures
    assert studio.sample("tiny", -3, 0.7, req) == gr.skip()
    assert messages and "seed" in messages[-1][1]
    assert session(studio, req).seed == 7


def test_unknown_model_warns_and_keeps_the_image(studio, messages):
    req = request()
    studio.on_load(req)
    out = studio.select_model("nope", 0, 0.7, req, progress=no_progress)
    assert out[studio.ui["model"]]["value"] == "tiny"
    assert messages[-1][0] == "warning" and "unknown model" in messages[-1][1]
    assert session(studio, req).has_image


def test_uncached_registry_model_offline_is_refused_at_once(tiny_model_dir, monkeypatch, messages, tmp_path):
    monkeypatch.setenv("DRAGGAN_OFFLINE", "1")
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "empty-cache"))
    demo = app.build_app({"tiny": str(tiny_model_dir), "stylegan2-ffhq-512x512": "stylegan2-ffhq-512x512"}, "tiny",
                         autocast=False)
    studio, req = demo.studio, request()
    studio.on_load(req)
    out = studio.select_model("stylegan2-ffhq-512x512", 0, 0.7, req, progress=no_progress)
    assert out[studio.ui["model"]]["value"] == "tiny"
    assert "offline" in messages[-1][1]
    assert session(studio, req).model == "tiny"


# --------------------------------------------------------------------------- points


def test_clicks_map_view_pixels_to_generator_pixels(studio):
    req = request()
    studio.on_load(req)
    out = studio.click(select(10 * SCALE + 1, 20 * SCALE + SCALE - 1), req)
    assert session(studio, req).pending == (10.0, 20.0)
    assert "now click where it should go" in out[studio.ui["status"]]
    out = click_pixel(studio, 30, 25, req)
    s = session(studio, req)
    assert s.handles == [(10.0, 20.0)] and s.targets == [(30.0, 25.0)]
    assert out[studio.ui["points_text"]] == "10,20->30,25"
    view = out[studio.ui["canvas"]]
    assert tuple(view[int(20.5 * SCALE), int(10.5 * SCALE)]) == HANDLE_COLOR


def test_click_outside_or_without_image_warns_and_changes_nothing(studio, messages):
    req = request()
    assert studio.click(select(5, 5), req) == gr.skip()
    assert "no image" in messages[-1][1]
    studio.on_load(req)
    assert studio.click(select(R * SCALE + 3, 5), req) == gr.skip()
    assert studio.click(gr.SelectData(None, {"index": None, "value": None}), req) == gr.skip()
    assert "outside the image" in messages[-1][1]
    assert session(studio, req).pending is None


def test_clicks_while_dragging_are_refused(studio, messages):
    req = request()
    studio.on_load(req)
    session(studio, req).busy = "drag"
    assert click_pixel(studio, 3, 3, req) == gr.skip()
    assert messages[-1] == ("info", "Wait for a drag to finish (or stop it) before you add points.")
    assert session(studio, req).pending is None
    session(studio, req).busy = None


def test_remove_last_clear_and_points_text(studio, messages):
    req = request()
    studio.on_load(req)
    click_pixel(studio, 1, 2, req)
    click_pixel(studio, 3, 4, req)
    out = studio.remove_last_point(req)
    assert session(studio, req).pending == (1.0, 2.0) and out[studio.ui["points_text"]] == ""
    studio.clear_points(req)
    assert session(studio, req).pending is None
    assert studio.remove_last_point(req) == gr.skip() and messages[-1][0] == "info"
    out = studio.set_points_text("5,6->7,8; 9,9->20,20", req)
    assert session(studio, req).targets == [(7.0, 8.0), (20.0, 20.0)]
    assert "| 2 |" in out[studio.ui["status"]]
    assert studio.set_points_text("5,6->700,8", req) == gr.skip()
    assert "outside" in messages[-1][1] and len(session(studio, req).handles) == 2


# --------------------------------------------------------------------------- mask


def editor_with_stroke(x0, y0, x1, y1):
    layer = np.zeros((R * SCALE, R * SCALE, 4), np.uint8)
    layer[y0 * SCALE:y1 * SCALE, x0 * SCALE:x1 * SCALE] = (255, 204, 0, 255)
    return {"background": np.zeros((R * SCALE, R * SCALE, 4), np.uint8), "layers": [layer], "composite": None}


def test_painted_mask_becomes_the_movable_region_and_is_shown(studio):
    req = request()
    plain = studio.on_load(req)[studio.ui["canvas"]]
    out = studio.paint_mask(editor_with_stroke(10, 10, 30, 20), req)
    mask = session(studio, req).mask
    assert mask.sum() == 20 * 10 and mask[10:20, 10:30].all()
    view = out[studio.ui["canvas"]]
    assert (view[2:8, 2:8] < plain[2:8, 2:8]).all()                     # the fixed area is dimmed
    assert np.array_equal(view[15 * SCALE, 15 * SCALE], plain[15 * SCALE, 15 * SCALE])
    assert "may move" in out[studio.ui["status"]]
    pad = studio.show_mask_editor(req)[studio.ui["editor"]]
    assert np.array_equal(mask_from_strokes(pad["layers"][0], R), mask)    # the pad shows the mask
    out = studio.clear_mask(req)
    assert session(studio, req).mask is None and out[studio.ui["editor"]]["layers"] == []
    # Start reads the pad too: a stroke painted just before Start is used.
    studio.request_drag(editor_with_stroke(0, 0, 8, 8), req)
    assert session(studio, req).mask.sum() == 64


# --------------------------------------------------------------------------- drag


def test_drag_streams_frames_and_moves_the_handle(studio):
    req = request()
    start = studio.on_load(req)[studio.ui["canvas"]]
    studio.set_points_text("20,20->40,30", req)
    outs = run_drag(studio, req, max_steps=6)
    frames = [o[studio.ui["canvas"]] for o in outs if studio.ui["canvas"] in o]
    assert len(frames) >= 2
    assert not np.array_equal(frames[-1], start)
    s = session(studio, req)
    assert s.handles != [(20.0, 20.0)] and s.busy is None
    assert "Paused at step 6" in outs[-1][studio.ui["status"]] or "Arrived" in outs[-1][studio.ui["status"]]
    assert studio.ui["editor"] not in outs[-1]                            # the pad is refreshed when opened
    pad = studio.show_mask_editor(req)[studio.ui["editor"]]
    assert np.array_equal(pad["background"], studio.view(s))            # no mask: the pad shows the canvas
    assert len(s.edit.frames) >= 2


def test_drag_needs_points_and_a_stop_before_start_cancels_it(studio, messages):
    req = request()
    studio.on_load(req)
    assert run_drag(studio, req) == []
    assert "handle" in messages[-1][1]
    studio.set_points_text("20,20->40,30", req)
    studio.request_drag(None, req)
    studio.stop(req)                                                      # Stop while it waits in the queue
    outs = run_drag(studio, req)
    assert len(outs) == 1 and "before it started" in outs[0][studio.ui["status"]]
    assert not session(studio, req).can_undo


def test_stop_mid_drag_keeps_the_progress_and_start_continues(studio, messages):
    req = request()
    studio.on_load(req)
    studio.set_points_text("10,10->50,50", req)
    gen = studio.drag(request=req, **drag_params(max_steps=200))
    next(gen)                     # "Dragging… (step 0)"
    next(gen)                     # first frame
    studio.stop(req)
    outs = list(gen)
    assert "Stopped at step" in outs[-1][studio.ui["status"]]
    assert messages[-1][0] == "info" and "nothing is lost" in messages[-1][1]
    s = session(studio, req)
    step = s.drag._step_count
    assert 0 < step < 200 and s.busy is None
    more = run_drag(studio, req, max_steps=2)
    assert s.drag._step_count == step + 2                      # continued, not restarted
    assert "step" in more[-1][studio.ui["status"]]


def test_drag_error_is_a_warning_and_the_session_stays_usable(studio, messages, monkeypatch):
    import draggan.engine.live
    req = request()
    studio.on_load(req)
    studio.set_points_text("10,10->50,50", req)
    s = session(studio, req)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(draggan.engine.live, "render_state", broken)
    monkeypatch.setattr(draggan.engine.live, "finish_frame", broken)
    outs = list(studio.drag(request=req, **drag_params(max_steps=3)))
    assert [m for m in messages if "out of memory" in m[1]] == [("warning", "The drag stopped with an error: "
                                                                            "out of memory")]
    assert "error" in outs[-1][studio.ui["status"]] and s.busy is None
    monkeypatch.undo()
    assert len(run_drag(studio, req, max_steps=2)) >= 2


def test_undo_and_reset(studio, messages):
    req = request()
    original = studio.on_load(req)[studio.ui["canvas"]]
    studio.set_points_text("20,20->40,30", req)
    run_drag(studio, req, max_steps=4)
    out = studio.undo(req)
    s = session(studio, req)
    assert np.array_equal(s.image, s.drag.render())
    assert s.handles == [(20.0, 20.0)]
    assert np.array_equal(out[studio.ui["canvas"]], studio.view(s))
    assert studio.undo(req) == gr.skip() and messages[-1][1] == "Nothing to undo."
    run_drag(studio, req, max_steps=4)
    studio.reset(req)
    assert s.handles == [(20.0, 20.0)]
    assert np.array_equal(s.image, s.edit.original) and np.array_equal(s.drag.render(), s.edit.original)
    plain = studio.clear_points(req)[studio.ui["canvas"]]
    assert np.array_equal(plain, original)


def test_two_users_do_not_share_points_masks_or_latents(studio):
    a, b = request("a"), request("b")
    studio.on_load(a)
    studio.on_load(b)
    studio.set_points_text("20,20->40,30", a)
    studio.paint_mask(editor_with_stroke(0, 0, 32, 64), a)
    run_drag(studio, a, max_steps=3)
    sa, sb = session(studio, a), session(studio, b)
    assert sb.handles == [] and sb.mask is None and not sb.can_undo
    assert not torch.equal(sa.drag.ws, sb.drag.ws)
    assert sa.drag is not sb.drag and sa.generator is sb.generator        # the base model is shared


# --------------------------------------------------------------------------- export


def test_export_writes_png_latent_and_video(studio, messages):
    req = request()
    studio.on_load(req)
    out = studio.export("GIF", True, req)
    files = out[studio.ui["files"]]
    assert [f.rsplit(".", 1)[1] for f in files] == ["png", "pt"]       # no drag yet: no video
    assert messages[-1][0] == "info"
    studio.set_points_text("20,20->40,30", req)
    run_drag(studio, req, max_steps=3)
    files = studio.export("GIF", True, req)[studio.ui["files"]]
    png, latent, gif = files
    s = session(studio, req)
    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), s.image)
    saved = torch.load(latent, weights_only=True)
    assert torch.equal(saved["ws"], s.drag.ws) and saved["model"] == "tiny"
    with Image.open(gif) as video:
        # How many frames stream during 3 tiny steps depends on the machine's speed; the last one is always kept.
        assert 1 <= video.n_frames <= len(s.edit.frames) and video.size == (R * view_scale(R, 256),) * 2
    files = studio.export("MP4", True, req)[studio.ui["files"]]
    assert files[-1].endswith(".mp4")


# --------------------------------------------------------------------------- inversion


def photo_bytes():
    rng = np.random.default_rng(0)
    img = (rng.random((96, 80, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(photo_bytes())
    return str(path)


def test_invert_shows_aligned_reconstruction_report_and_notices(studio, photo, messages, tmp_path):
    req = request()
    studio.on_load(req)
    out = studio.invert_photo(photo, "tiny", "fast", req, progress=no_progress)
    ui, s = studio.ui, session(studio, req)
    for figure in (ui["aligned"], ui["reconstruction"]):
        assert out[figure]["visible"] and out[figure]["value"].shape == (R, R, 3)
    assert "PSNR" in out[ui["report"]] and "dB" in out[ui["report"]]
    assert s.source == "photo" and s.tuned and s.generator is not studio.pool.get(studio.model_source("tiny"))
    warnings = " ".join(m[1] for m in messages if m[0] == "warning")
    assert "face" in warnings.lower()                       # random pixels: no face, said plainly
    # Export pastes the edit back into the photo's frame.
    files = studio.export("GIF", True, req)[ui["files"]]
    assert Image.open(files[0]).size == (80, 96)
    # After an 'instant' inversion from an encoder, a pasted export says what the square is (moved ones need not).
    s.inversion.report.update(start="encoder", config={**s.inversion.report["config"], "quality": "instant"})
    messages.clear()
    studio.export("GIF", True, req, how="motion")
    assert not any("inverted with Instant" in text for _, text in messages)
    studio.export("GIF", True, req, how="paste")
    assert any(level == "info" and "inverted with Instant" in text for level, text in messages)


def test_the_quality_choice_reaches_the_pipeline(studio, photo, monkeypatch):
    seen = []
    real = app.invert
    monkeypatch.setattr(app, "invert", lambda photo, G, config, **kw: seen.append(config.quality) or
                        real(photo, G, config, **kw))
    req = request()
    studio.on_load(req)
    for quality in ("faithful", "fast", "instant"):
        studio.invert_photo(photo, "tiny", quality, req, progress=no_progress)
    assert seen == ["faithful", "fast", "instant"]
    # The choice the page starts with: the encoder's pass alone on a CPU (its edited photos match a 20 s tuning's),
    # 'fast' on a GPU, where tuning takes under a second; every choice says what it costs here.
    radio = studio.ui["quality"]
    assert radio.value == app.default_quality("cpu") == "instant" and app.default_quality("cuda") == "fast"
    assert [value for _, value in radio.choices] == ["instant", "fast", "faithful"]
    assert all(name in radio.info for name in ("Instant:", "Fast:", "Faithful"))


@pytest.mark.slow
def test_a_photo_inverts_with_the_bundled_encoder_at_the_apps_cpu_default(tmp_path, messages):
    """End to end on the shipped celeba128 and its encoder: the app's default choice on a CPU inverts Grace Hopper
    (matplotlib's photo) with the encoder alone, says so, warns of nothing, and the photo is ready to drag."""
    from matplotlib import cbook

    studio = app.build_app({"celeba128": "celeba128"}, "celeba128", "cpu",
                           store=app.SessionStore(export_root=tmp_path / "exports")).studio
    req = request()
    studio.on_load(req)
    photo = str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    out = studio.invert_photo(photo, "celeba128", studio.ui["quality"].value, req, progress=no_progress)
    report = session(studio, req).inversion.report
    assert report["start"] == "encoder" and report["steps"]["pti"] == 0 and report["face_found"]
    assert "Start: learned encoder" in out[studio.ui["report"]] and "ℹ️ Instant inversion" in out[studio.ui["report"]]
    assert not [text for level, text in messages if level == "warning"]
    assert session(studio, req).has_photo


def test_what_a_preset_means_is_a_note_in_the_report_not_a_warning(studio, photo, messages):
    req = request()
    studio.on_load(req)
    out = studio.invert_photo(photo, "tiny", "instant", req, progress=no_progress)   # the tiny model has no encoder
    assert not any("no learned encoder" in text for _, text in messages)
    assert "ℹ️ This model has no learned encoder" in out[studio.ui["report"]]
    base = {"psnr": 15.0, "ssim": 0.5, "poor_reconstruction": True, "start": "encoder",
            "steps": {"pti": 0, "encoder_iterations": 3}}
    instant = app.quality_report({**base, "config": {"quality": "instant"}, "notices": [],
                                  "notes": ["Instant inversion: rough."]})
    assert "Poor reconstruction" not in instant and "ℹ️ Instant inversion" in instant
    fast = app.quality_report({**base, "config": {"quality": "fast"}, "notices": ["Poor reconstruction: 15 dB."],
                               "notes": []})
    assert fast.startswith("**Poor reconstruction") and "⚠️ Poor reconstruction" in fast


def test_broken_upload_is_a_warning_and_keeps_the_image(studio, tmp_path, messages):
    req = request()
    studio.on_load(req)
    before = session(studio, req).image.copy()
    bad = tmp_path / "broken.png"
    bad.write_bytes(photo_bytes()[:60])
    out = studio.invert_photo(str(bad), "tiny", "fast", req, progress=no_progress)
    assert messages[-1][0] == "warning" and "cannot be used" in messages[-1][1] and "truncated" in messages[-1][1]
    assert "refused" in out[studio.ui["status"]] and "truncated" in out[studio.ui["photo_note"]]
    assert studio.invert_photo(None, "tiny", "fast", req, progress=no_progress) == gr.skip()
    assert "Choose a photo" in messages[-1][1]
    s = session(studio, req)
    assert np.array_equal(s.image, before) and s.busy is None and s.source == "sample"


def stale_state_is_gone(studio, out):
    """The previous photo's figures, report and downloads are cleared by ``out``."""
    ui = studio.ui
    return (out[ui["aligned"]]["visible"] is False and out[ui["reconstruction"]]["visible"] is False
            and out[ui["report"]] == "" and out[ui["files"]] is None)


def test_after_a_failed_upload_nothing_of_the_previous_photo_is_shown(studio, photo, tmp_path, messages):
    """Invert a photo and export it; then upload a text file named .png: the warning, the note by the upload
    box and the status line say why, and the old report, figures and downloads are gone."""
    req = request()
    studio.on_load(req)
    studio.invert_photo(photo, "tiny", "fast", req, progress=no_progress)
    studio.export("GIF", True, req)
    edited = session(studio, req).image.copy()
    text = tmp_path / "notes.png"
    text.write_text("not a photo at all\n" * 10)
    out = studio.upload_photo(str(text), req)
    ui = studio.ui
    assert messages[-1] == ("warning", "That file cannot be used: This file is text, not a photo. "
                                       "Upload a JPEG, PNG or WebP photo.")
    assert "text, not a photo" in out[ui["photo_note"]] and out[ui["photo_preview"]]["visible"] is False
    assert out[ui["status"]].startswith("The upload was refused: This file is text")
    assert stale_state_is_gone(studio, out)
    assert np.array_equal(session(studio, req).image, edited)      # the edit itself is kept
    # A good upload shows the photo as read and also clears what belonged to the previous one.
    out = studio.upload_photo(photo, req)
    assert out[ui["photo_preview"]]["visible"] and out[ui["photo_preview"]]["value"].shape == (96, 80, 3)
    assert "80×96" in out[ui["photo_note"]] and "Invert photo" in out[ui["status"]]
    assert stale_state_is_gone(studio, out)
    # Removing the file empties the preview and the note.
    out = studio.upload_photo(None, req)
    assert out[ui["photo_note"]] == "" and out[ui["photo_preview"]]["visible"] is False


def test_the_upload_box_applies_the_inversions_pixel_limit(tiny_model_dir, tmp_path, messages):
    demo = app.build_app({"tiny": str(tiny_model_dir)}, "tiny", "cpu", autocast=False,
                         inversion=InversionConfig(max_pixels=80 * 95))
    path = tmp_path / "photo.png"
    path.write_bytes(photo_bytes())                                 # 80 x 96: one row over the limit
    out = demo.studio.upload_photo(str(path), request())
    assert "the limit is" in out[demo.studio.ui["photo_note"]] and "80x96" in messages[-1][1]


def test_cancelled_inversion_keeps_the_previous_image(studio, photo, messages):
    req = request()
    studio.on_load(req)
    before = session(studio, req).image.copy()

    def cancel_on_first_step(fraction, desc="", **kwargs):
        if "Projecting" in desc:
            studio.cancel_inversion(req)

    assert studio.invert_photo(photo, "tiny", "fast", req, progress=cancel_on_first_step) == gr.skip()
    assert messages[-1] == ("info", "Inversion cancelled; your previous image is unchanged.")
    s = session(studio, req)
    assert np.array_equal(s.image, before) and s.busy is None and s.source == "sample"


def test_cancel_before_a_queued_inversion_starts(studio, photo, messages):
    req = request()
    studio.on_load(req)
    studio.request_inversion(req)            # Invert clicked; the device is busy, so it waits
    studio.cancel_inversion(req)
    assert messages[-1] == ("info", "Cancelled: the inversion will not start.")
    assert studio.invert_photo(photo, "tiny", "fast", req, progress=no_progress) == gr.skip()
    assert messages[-1] == ("info", "Inversion cancelled; your previous image is unchanged.")
    assert session(studio, req).source == "sample"
    # A later inversion is not affected by the earlier Cancel.
    studio.request_inversion(req)
    studio.invert_photo(photo, "tiny", "fast", req, progress=no_progress)
    assert session(studio, req).source == "photo"


def test_inversion_progress_reports_fraction_and_time_left():
    calls = []
    progress = app.InversionProgress(lambda value, desc, unit: calls.append((value, desc)),
                                     {"project_w": 4, "project_wplus": 0, "tune": 2})
    progress("read", 1, 1)
    progress("align", 1, 1)
    for i in range(1, 5):
        progress("project_w", i, 4)
    assert calls[0][0] == (1, 9)             # read, align, 4 projection steps, no W+, 2 tuning, report
    assert calls[-1][0] == (6, 9) and "left" in calls[-1][1] and "Projecting into W (4/4)" in calls[-1][1]


def test_inversion_eta_holds_steady_when_the_cpu_gets_busy():
    """The estimate comes from measured step times, and after the first tenth of the work it never moves by
    more than 2x from the previous estimate counted down, even when steps suddenly take 3x as long."""
    now = [0.0]
    shown = []

    def bar(value, desc, unit):
        m = re.search(r"about (\d+) s left", desc)
        shown.append((now[0], value, None if m is None else int(m[1])))

    progress = app.InversionProgress(bar, {"encode": 1, "tune": 40}, clock=lambda: now[0])
    progress("read", 1, 1)
    progress("align", 1, 1)
    now[0] += 0.9
    progress("encode", 1, 1)
    for i in range(1, 41):
        now[0] += 0.3 if i < 15 else 0.9      # another user's work starts at step 15
        progress("tune", i, 40)
    etas = [(t, e) for t, v, e in shown if e is not None]
    assert len(etas) >= 38 and shown[-1][1] == (43, 44)
    total = shown[-1][0]
    for (t0, e0), (t1, e1) in zip(etas, etas[1:]):
        if t0 >= 0.1 * total:
            expected = max(e0 - (t1 - t0), 1)
            assert expected / 2 <= max(e1, 1) <= 2 * expected + 1, (t0, e0, t1, e1)
    # ... and it follows the new speed: near the end it is close to the true time left.
    t_end = etas[-1][0] + 0.9
    t5, e5 = etas[-5]
    assert abs(e5 - (t_end - t5)) <= 2.5


def test_inversion_progress_with_an_encoder_counts_its_stages():
    calls = []
    progress = app.InversionProgress(lambda value, desc, unit: calls.append((value, desc)), {"encode": 1, "tune": 3})
    progress("read", 1, 1)
    progress("align", 1, 1)
    progress("encode", 1, 1)
    assert calls[-1][0] == (3, 7) and "Encoding the face (1/1)" in calls[-1][1]   # read, align, encode, 3 tune, report
    progress("tune", 3, 3)
    progress("report", 1, 1)
    assert calls[-1][0] == (7, 7)


def test_concurrent_drags_of_two_users_stay_separate(studio):
    a, b = request("a"), request("b")
    studio.on_load(a)
    studio.on_load(b)
    studio.set_points_text("20,20->40,30", a)
    studio.set_points_text("40,40->10,10", b)
    results = {}

    def work(req):
        results[req.session_hash] = run_drag(studio, req, max_steps=3)

    threads = [threading.Thread(target=work, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ha, hb = session(studio, a).handles[0], session(studio, b).handles[0]
    assert np.hypot(ha[0] - 20, ha[1] - 20) < 10 and np.hypot(hb[0] - 40, hb[1] - 40) < 10
    assert session(studio, a).targets == [(40.0, 30.0)] and session(studio, b).targets == [(10.0, 10.0)]


# --------------------------------------------------------------------------- serving


def test_warm_up_leaves_no_session_behind(studio):
    studio.warm_up("tiny")
    assert len(studio.store) == 0 and studio.pool.is_loaded(studio.model_source("tiny"), "cpu")


def test_closing_a_tab_frees_its_session(studio):
    req = request("closing")
    studio.on_load(req)
    folder = session(studio, req).export_dir
    studio.close_session(req)
    assert "closing" not in studio.store and not folder.exists()


def test_drags_and_inversions_share_one_device_slot_behind_a_bounded_queue(studio, tiny_model_dir):
    demo = app.build_app({"tiny": str(tiny_model_dir)}, "tiny", "cpu", concurrency=2, queue_size=5)
    fns = {fn.name: fn for fn in demo.fns.values()}
    drag, inversion = fns["drag"], fns["invert_photo"]
    assert drag.concurrency_id == inversion.concurrency_id == "device:cpu"
    assert drag.concurrency_limit == inversion.concurrency_limit == 2
    assert demo._queue.max_size == 5
    assert fns["stop"].concurrency_id != drag.concurrency_id      # Stop never waits behind a drag


def test_a_failed_download_is_one_short_sentence(tiny_model_dir, messages):
    from draggan.loaders.download import DownloadError

    def loader(source, device, progress):
        raise DownloadError(f"could not reach https://example.invalid/{source}.pkl ([Errno -2] Name or service"
                            " not known). Are you offline? Download it yourself and place it at /somewhere")

    demo = app.build_app({"tiny": str(tiny_model_dir), "stylegan2-ffhq-512x512": "stylegan2-ffhq-512x512"}, "tiny",
                         pool=app.ModelPool(loader), autocast=False)
    studio, req = demo.studio, request()
    out = studio.select_model("stylegan2-ffhq-512x512", 0, 0.7, req, progress=no_progress)
    assert out[studio.ui["model"]]["value"] is None                 # nothing was loaded before
    assert len(messages) == 1 and messages[0][1].startswith("Could not download 'stylegan2-ffhq-512x512'")
    assert "stylegan2-ffhq-512x512.pkl" in messages[0][1] and "Errno" not in messages[0][1]


def test_a_model_download_reports_progress(tiny_model_dir):
    seen = []

    def loader(source, device, progress):
        for done in (0, 512, 1024):
            progress(done, 1024)
        return app.ModelPool()._loader(str(tiny_model_dir), device=device, progress=False)

    demo = app.build_app({"remote": "stylegan2-ffhq-512x512"}, pool=app.ModelPool(loader), autocast=False)
    G = demo.studio.load_model("remote", progress=lambda value, desc: seen.append((value, desc)))
    assert G.img_resolution == R
    assert seen[-1][0] == 1.0 and "Downloading remote" in seen[-1][1]


def test_default_model_is_the_lite_one_on_cpus_without_fast_bf16(monkeypatch, tmp_path):
    monkeypatch.setattr(app.registry, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(app, "fast_autocast", lambda device: False)
    assert app.default_model_for("cpu") == "celeba128"  # the lite model's files are missing
    lite = tmp_path / "checkpoints" / "celeba128-lite"
    lite.mkdir(parents=True)
    (lite / "model.safetensors").write_bytes(b"")
    assert app.default_model_for("cpu") == "celeba128-lite"
    assert app.default_model_for("cuda") == "celeba128"
    monkeypatch.setattr(app, "fast_autocast", lambda device: True)  # bf16 matrix units: the full model is fast
    assert app.default_model_for("cpu") == "celeba128"


def test_the_tracking_choice_reaches_the_engine_and_keeps_the_undo_history(studio):
    req = request()
    studio.on_load(req)
    studio.set_points_text("20,20->30,20", req)
    s = session(studio, req)
    run_drag(studio, req, max_steps=2)
    assert s.drag.config.tracking == "nn" and s.can_undo
    run_drag(studio, req, max_steps=2, tracking="line")
    assert s.drag.config.tracking == "line" and s.drag.config.region == "auto"
    studio.undo(req)
    assert s.can_undo                 # the first drag is still there to undo after the change of settings
