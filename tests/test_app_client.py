"""The app served for real (in this process), driven through gradio_client: sample, invert, drag, cancel.

Each gradio_client.Client is its own user session (its own session hash), so the
same server also shows that two users do not see each other's work.
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from helpers import serve  # noqa: E402

import app  # noqa: E402
from inversion import InversionConfig  # noqa: E402

gradio_client = pytest.importorskip("gradio_client")
# A served app and real round trips: about 40 s for the file on a 2-core CPU, most tests over 1.5 s each.
pytestmark = pytest.mark.slow
R = 64


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    # Enough inversion steps that a cancel lands while it runs; alignment 'center' skips face detection.
    inversion = InversionConfig(steps_w=60, steps_pti=30, w_avg_samples=64, identity=False, loss="l2", amp="none",
                                alignment="center")
    demo = app.build_app({"tiny": str(tiny_model_dir)}, "tiny", "cpu", autocast=False, inversion=inversion,
                         store=app.SessionStore(export_root=tmp_path_factory.mktemp("exports")))
    with serve(demo) as url:
        yield demo, url


def client(url):
    return gradio_client.Client(url, verbose=False)


def session_of(demo, c):
    return demo.studio.store.get(c.session_hash, create=False)


def read_image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def photo(tmp_path, seed):
    img = (np.random.default_rng(seed).random((80, 72, 3)) * 255).astype(np.uint8)
    path = tmp_path / f"photo{seed}.png"
    Image.fromarray(img).save(path)
    return gradio_client.handle_file(str(path))


def drag_inputs(lr, max_steps):
    """The /drag endpoint's inputs: lr, max steps, r1 = r2 = 0, lambda_mask 20, W+ space, feature block 4."""
    return lr, max_steps, 0, 0, 20, "W+", 4


def start_drag(c, seed, points, lr, max_steps):
    """Show seed's face, place the points and submit a drag; returns the job."""
    c.predict("tiny", seed, 0.7, api_name="/sample")
    c.predict(points, api_name="/set_points")
    return c.submit(*drag_inputs(lr, max_steps), api_name="/drag")


def named(c, api_name, outputs) -> dict:
    """An endpoint's outputs by their labels (view_api names every one)."""
    labels = [r["label"] for r in c.view_api(print_info=False, return_format="dict")["named_endpoints"][api_name]
              ["returns"]]
    assert len(labels) == len(outputs)
    return dict(zip(labels, outputs))


def wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sample_returns_an_upscaled_view_of_a_new_face(server):
    demo, url = server
    c = client(url)
    first = c.predict("tiny", 1, 0.7, api_name="/sample")
    second = c.predict("tiny", 2, 0.7, api_name="/sample")
    a, b = read_image(first[0]), read_image(second[0])
    assert a.shape == (640, 640, 3) and not np.array_equal(a, b)            # 64 px upscaled 10 times
    assert session_of(demo, c).seed == 2


def test_drag_streams_frames_until_the_handle_arrives_or_max_steps(server):
    demo, url = server
    c = client(url)
    # Enough steps that frames stream while it runs: 8 tiny steps can end before a second frame is drawn.
    job = start_drag(c, 3, "20,20->44,36", lr=0.01, max_steps=40)
    outputs = list(job)
    frames = [read_image(o[0]) for o in outputs if isinstance(o[0], str)]
    assert len(frames) >= 3 and not np.array_equal(frames[0], frames[-1])
    final_status = outputs[-1][1]
    assert "Paused at step 40" in final_status or "Arrived" in final_status
    s = session_of(demo, c)
    assert s.handles != [(20.0, 20.0)] and s.can_undo
    # Undo over the API restores the image from before the drag.
    undone = c.predict(api_name="/undo")
    assert s.handles == [(20.0, 20.0)]
    assert not np.array_equal(read_image(undone[0]), frames[-1])


def test_stop_interrupts_a_running_drag_and_start_continues(server):
    demo, url = server
    c = client(url)
    job = start_drag(c, 4, "10,10->54,54", lr=0.002, max_steps=1000)
    assert wait_for(lambda: len(job.outputs()) >= 3)
    c.predict(api_name="/stop")
    final = job.result(timeout=60)
    assert "Stopped at step" in final[1]
    s = session_of(demo, c)
    steps = s.drag._step_count
    assert 0 < steps < 1000 and s.busy is None
    final = c.predict(*drag_inputs(0.002, 2), api_name="/drag")
    assert s.drag._step_count == steps + 2 and "step" in final[1]


def test_invert_then_export_pastes_back_into_the_photo(server, tmp_path):
    demo, url = server
    c = client(url)
    out = named(c, "/invert", c.predict(photo(tmp_path, 1), "tiny", "fast", api_name="/invert"))
    report = out["Quality report"]
    assert "PSNR" in report and "centre crop" in report
    aligned = out["Aligned input"]                           # an update: the figure is also made visible
    assert aligned["visible"] and read_image(aligned["value"]).shape == (R, R, 3)
    s = session_of(demo, c)
    assert s.source == "photo" and s.tuned
    files = c.predict("GIF", True, api_name="/export")
    assert Image.open(files[0]).size == (72, 80)             # the edit in the original photo's frame
    assert files[1].endswith(".png") and files[2].endswith(".pt")


def test_cancel_stops_an_inversion_and_keeps_the_image(server, tmp_path):
    demo, url = server
    c = client(url)
    before = read_image(c.predict("tiny", 5, 0.7, api_name="/sample")[0])
    job = c.submit(photo(tmp_path, 2), "tiny", "fast", api_name="/invert")
    s = session_of(demo, c)
    assert wait_for(lambda: s.busy == "invert")
    c.predict(api_name="/cancel_inversion")
    job.result(timeout=60)
    assert s.busy is None and s.source == "sample" and s.seed == 5
    assert np.array_equal(read_image(c.predict(api_name="/clear_points")[0]), before)


def test_two_clients_have_separate_sessions(server):
    demo, url = server
    a, b = client(url), client(url)
    a.predict("tiny", 6, 0.7, api_name="/sample")
    view_b = read_image(b.predict("tiny", 6, 0.7, api_name="/sample")[0])
    a.predict("20,20->40,30", api_name="/set_points")
    a.predict(*drag_inputs(0.01, 3), api_name="/drag")
    after_b = b.predict(api_name="/clear_points")
    assert after_b[2] == ""                                  # no points leaked from a
    assert np.array_equal(read_image(after_b[0]), view_b)    # a's drag did not change b's image
    sa, sb = session_of(demo, a), session_of(demo, b)
    assert sa is not sb and sa.can_undo and not sb.can_undo


# --------------------------------------------------------------------------- the API a script sees


def test_view_api_alone_is_enough_to_call_every_endpoint(server):
    """One endpoint per action, every output named, every optional parameter with its default, and the
    allowed values of every choice listed (the feature block as numbers and as the menu's labels)."""
    _, url = server
    api = client(url).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == {"/select_model", "/new_face", "/sample", "/back_to_photo", "/upload_photo", "/invert",
                        "/cancel_inversion", "/remove_last_point", "/clear_points", "/set_points", "/clear_mask",
                        "/drag", "/stop", "/undo", "/reset", "/export"}
    for name, endpoint in api.items():
        for r in endpoint["returns"]:
            assert not r["label"].startswith("value_"), (name, r)
    drag = {p["parameter_name"]: p for p in api["/drag"]["parameters"]}
    assert list(drag) == ["lr", "max_steps", "r1", "r2", "lambda_mask", "space", "block", "region", "tracking"]
    assert drag["tracking"]["parameter_default"] == "nn" and drag["tracking"]["type"]["enum"] == ["nn", "line"]
    assert all(p["parameter_has_default"] for p in drag.values())
    assert drag["r1"]["parameter_default"] is None and drag["block"]["parameter_default"] is None
    block = drag["block"]["type"]["anyOf"]
    assert block[0]["enum"] == list(range(1, 10)) and "5 · 64 px" in block[1]["enum"]
    assert "'5 · 64 px'" in drag["block"]["python_type"]["type"]
    assert drag["space"]["python_type"]["type"] == "Literal['W+', 'W']"
    assert [p["parameter_name"] for p in api["/sample"]["parameters"]] == ["model", "seed", "psi"]
    # Points: the photo's own pixels once a photo is inverted, and the endpoints say so.
    set_points = {p["parameter_name"]: p for p in api["/set_points"]["parameters"]}
    assert list(set_points) == ["text", "coordinates"] and set_points["coordinates"]["parameter_default"] == "photo"
    assert set_points["coordinates"]["type"]["enum"] == ["photo", "square"]
    assert "pixels of the uploaded photo" in api["/set_points"]["description"]
    assert "photo pixels" in api["/drag"]["description"]


def test_the_feature_block_as_a_number_or_as_the_menus_label(server):
    demo, url = server
    c = client(url)
    c.predict("tiny", 7, 0.7, api_name="/sample")
    c.predict("20,20->24,20", api_name="/set_points")
    s = session_of(demo, c)
    c.predict(lr=0.01, max_steps=1, block="4 · 32 px", api_name="/drag")       # keywords; the rest: defaults
    assert s.drag.config.feature_block == 4
    c.predict(lr=0.01, max_steps=1, block=3, api_name="/drag")
    assert s.drag.config.feature_block == 3
    c.predict(lr=0.01, max_steps=1, api_name="/drag")                        # None: the model's default
    assert s.drag.config.feature_block == app.default_feature_block(s.generator)
    with pytest.raises(Exception, match="not a feature block: give a number from 1 to 9"):
        c.predict(lr=0.01, max_steps=1, block="4 · 64 px", api_name="/drag")


def test_uploads_reach_read_photo_as_sent(server, tmp_path):
    """A layered PSD (which Gradio's image box could not decode) is read; a text file named .png is refused
    with read_photo's sentence, next to the upload box and in the status line."""
    from photo_corpus import corpus

    _, url = server
    c = client(url)
    c.predict("tiny", 8, 0.7, api_name="/sample")
    samples = {s.kind: s for s in corpus()}
    for kind in ("psd_layered", "text_as_png", "dds_unknown_fourcc"):
        path = tmp_path / samples[kind].filename
        path.write_bytes(samples[kind].data)
        out = named(c, "/upload_photo", c.predict(gradio_client.handle_file(str(path)), api_name="/upload_photo"))
        if samples[kind].accept:
            samples[kind].check(read_image(out["Your photo, as read"]["value"]))
            assert "Invert photo" in out["Photo check"]
        else:
            assert "cannot be used" in out["Photo check"] and out["Status"].startswith("The upload was refused")
            assert out["Quality report"] == "" and out["Downloads"] is None


def test_a_waiting_drag_learns_its_place_in_the_queue(server):
    """Two users, one device slot: the second drag waits, and its client is told its queue position."""
    demo, url = server
    a, b = client(url), client(url)
    job_a = start_drag(a, 9, "10,10->54,54", lr=0.002, max_steps=1000)
    assert wait_for(lambda: session_of(demo, a) is not None and session_of(demo, a).busy == "drag")
    job_b = start_drag(b, 10, "20,20->30,30", lr=0.01, max_steps=2)
    ranks = []
    assert wait_for(lambda: ranks.append(job_b.status()) or (ranks[-1].code.name == "IN_QUEUE"
                                                            and ranks[-1].rank is not None), timeout=30)
    assert ranks[-1].rank == 0 and ranks[-1].queue_size >= 1
    a.predict(api_name="/stop")
    job_a.result(timeout=60)
    assert "step" in job_b.result(timeout=60)[1]
    fns = {fn.name: fn for fn in demo.fns.values()}
    assert fns["drag"].show_progress == "minimal"            # the browser shows that position on the status panel


def test_the_readme_example_runs(server, tmp_path):
    """README's gradio_client example, as printed there, against this server (its tiny model, a small photo)."""
    demo, url = server
    readme = (Path(app.__file__).parent / "README.md").read_text()
    example = readme.split("### Scripting the app (gradio_client)")[1].split("```python\n")[1].split("```")[0]
    face = tmp_path / "face.jpg"
    Image.fromarray((np.random.default_rng(3).random((72, 64, 3)) * 255).astype(np.uint8)).save(face)
    code = (example.replace("http://127.0.0.1:7860", url).replace('"celeba128"', '"tiny"')
            .replace('"face.jpg"', repr(str(face))))
    assert code.count('"tiny"') == 2 and code.count(repr(str(face))) == 2
    printed = []
    namespace = {"print": printed.append}
    exec(compile(code, "README.md", "exec"), namespace)
    assert "Paused at step 40" in printed[0] or "Arrived" in printed[0]
    assert "Stopped at step" in namespace["status"] or "Arrived after" in namespace["status"]  # tiny: may arrive first
    # The downloads are what is on screen: after Undo, the first drag's video, unless the tiny model arrived in
    # the first drag, so that the second changed nothing and Undo took the first back.
    video = [".gif"] if "Paused at step 40" in printed[0] else []
    assert [Path(f).suffix for f in namespace["files"]] == [".png", ".pt"] + video
    assert printed[1].startswith("Photo read: 64×72 pixels")
    s = session_of(demo, namespace["c"])
    assert s.source == "photo" and s.tuned
