"""draggan.app.state and draggan.engine.live: per-user state, the bounded store, the shared model pool, the live drag."""

import threading
import time

import numpy as np
import pytest
import torch
from helpers import max_level_difference, tiny_generator

from draggan.app.state import ModelPool, SessionError, SessionStore, UserSession, module_bytes
from draggan.engine import DragConfig
from draggan.engine.points import PointError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def G():
    """A 32 px generator, smaller than conftest's 64 px one."""
    return tiny_generator(img_resolution=32, channel_base=512, channel_max=32, z_dim=32, w_dim=32)


def config():
    return DragConfig(feature_block=3, max_steps=5)


def loaded_session(G, sid="a", seed=0, **kwargs) -> UserSession:
    s = UserSession(sid, **kwargs)
    s.load_latent(G, G.ws_from_seed(seed, 0.7), config(), model="tiny", source="sample", seed=seed)
    return s


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


# --------------------------------------------------------------------------- points


def test_clicks_alternate_handle_and_target(G):
    s = loaded_session(G)
    assert s.add_click(3, 4) == "handle"
    assert s.pending == (3.0, 4.0) and s.handles == []
    assert s.add_click(10, 12) == "target"
    assert s.handles == [(3.0, 4.0)] and s.targets == [(10.0, 12.0)] and s.pending is None
    assert s.add_click(1, 1) == "handle"
    with pytest.raises(PointError):
        s.add_click(32, 0)           # outside a 32 px image
    assert s.pending == (1.0, 1.0)   # the bad click changed nothing


def test_remove_last_point_walks_back_click_by_click(G):
    s = loaded_session(G)
    for xy in [(1, 1), (5, 5), (2, 2)]:
        s.add_click(*xy)
    assert s.remove_last_point() == "handle" and s.pending is None and len(s.handles) == 1
    assert s.remove_last_point() == "target" and s.pending == (1.0, 1.0) and s.handles == []
    assert s.remove_last_point() == "handle"
    assert s.remove_last_point() is None


def test_set_points_validates_and_clicks_need_an_image(G):
    s = loaded_session(G)
    s.set_points([(1, 2)], [(3, 4)])
    assert s.handles == [(1.0, 2.0)] and s.targets == [(3.0, 4.0)]
    with pytest.raises(PointError):
        s.set_points([(1, 2)], [(99, 4)])
    assert s.handles == [(1.0, 2.0)]
    with pytest.raises(PointError):
        UserSession("empty").add_click(1, 1)


def test_mask_all_true_means_no_mask(G):
    s = loaded_session(G)
    s.set_mask(np.ones((32, 32), bool))
    assert s.mask is None
    m = np.zeros((32, 32), bool)
    m[4:10, 4:10] = True
    s.set_mask(m)
    assert s.mask.sum() == 36 and s.drag.mask is None      # handed to the engine at the next drag


# --------------------------------------------------------------------------- drag, undo, reset


def drag_all(s):
    return list(s.edit.run())


def test_drag_undo_and_reset_restore_images_and_handles(G):
    s = loaded_session(G)
    original = s.image.copy()
    s.set_points([(8, 8)], [(20, 14)])
    states = drag_all(s)
    assert states and s.can_undo
    dragged = s.image.copy()
    assert not np.array_equal(dragged, original)
    assert s.handles == [tuple(map(float, states[-1].handles[0]))]
    assert s.undo()
    assert np.array_equal(s.image, original) and s.handles == [(8.0, 8.0)]
    drag_all(s)
    s.reset()
    assert np.array_equal(s.image, original) and s.handles == [(8.0, 8.0)] and not s.edit.frames
    assert not s.undo()


def test_new_settings_keep_the_image_points_and_undo(G):
    s = loaded_session(G)
    original = s.image.copy()
    s.set_points([(8, 8)], [(20, 14)])
    drag_all(s)
    first = s.image.copy()
    assert s.ensure_config(DragConfig(feature_block=2, max_steps=5, lr=4e-3))
    assert not s.ensure_config(DragConfig(feature_block=2, max_steps=5, lr=4e-3))   # same: kept
    drag_all(s)                       # the engine kept the points
    assert not np.array_equal(s.image, first)
    assert s.undo() and np.array_equal(s.image, first)
    assert s.undo() and np.array_equal(s.image, original)
    assert not s.undo()


def test_tickets_let_stop_cancel_a_queued_drag():
    s = UserSession("t")
    ticket = s.request_drag()
    s.stop_drags()
    assert s.claim_ticket() == ticket and s.drag_cancelled(ticket)
    # A later Start is not affected by the earlier Stop; a drag without a Start click gets its own ticket.
    s.request_drag()
    assert not s.drag_cancelled(s.claim_ticket())
    assert not s.drag_cancelled(s.claim_ticket())


def test_a_sampled_face_puts_a_photo_edit_aside_until_the_user_goes_back(G, tmp_path):
    """New face / seed / truncation never discard a photo edit: it waits, tuned generator and history included,
    until Back to your photo; a new photo replaces it, and the store counts (and may free) its generator."""
    import copy
    store = SessionStore(max_tuned=1, export_root=tmp_path)
    s = store.get("a")
    tuned = copy.deepcopy(G)
    s.load_latent(tuned, G.ws_from_seed(1, 0.7), config(), model="tiny", source="photo", tuned=True)
    s.set_points([(8, 8)], [(20, 14)])
    drag_all(s)
    edited = s.image.copy()
    s.load_latent(G, G.ws_from_seed(2, 0.7), config(), model="tiny", source="sample", seed=2)
    assert s.source == "sample" and s.parked is not None and s.holds_tuned
    assert store.tuned_count() == 1 and store.tuned_bytes() == module_bytes(G)
    assert s.back_to_photo() and not s.back_to_photo()
    assert s.source == "photo" and s.generator is tuned and np.array_equal(s.image, edited) and s.can_undo
    assert s.handles == [tuple(map(float, s.drag.handles[0]))]
    # Another sampled face, then a new photo: the edit put aside goes (an explicit choice of the user).
    s.load_latent(G, G.ws_from_seed(3, 0.7), config(), model="tiny", source="sample", seed=3)
    s.load_latent(copy.deepcopy(G), G.ws_from_seed(4, 0.7), config(), model="tiny", source="photo", tuned=True)
    assert s.parked is None
    # Memory for another user's photo is taken from an edit put aside, too.
    s.load_latent(G, G.ws_from_seed(5, 0.7), config(), model="tiny", source="sample", seed=5)
    assert s.parked is not None
    assert store.attach_tuned(store.get("b"), copy.deepcopy(G)) == ["a"]
    assert s.parked is None and s.source == "sample" and not s.holds_tuned


# --------------------------------------------------------------------------- store


def test_store_isolates_sessions_and_drops_them(G, tmp_path):
    store = SessionStore(export_root=tmp_path)
    a, b = store.get("a"), store.get("b")
    assert a is not b and store.get("a") is a
    a.load_latent(G, G.ws_from_seed(1, 0.7), config(), model="tiny", source="sample")
    a.add_click(1, 1)
    assert b.pending is None and b.drag is None
    folder = a.export_dir
    assert folder.is_dir()
    assert store.drop("a") and "a" not in store and not folder.exists()
    assert a.drag is None                            # what it owned is released
    assert not store.drop("a")


def test_store_ttl_and_count_bound(tmp_path):
    clock = FakeClock()
    store = SessionStore(max_sessions=2, ttl_s=60, export_root=tmp_path, clock=clock)
    store.get("a")
    clock.t = 10
    store.get("b")
    clock.t = 20
    store.get("c")                                   # over the count: least recently used "a" goes
    assert store.ids() == ["b", "c"]
    store.get("b").busy = "drag"
    store.get("c").busy = "invert"
    with pytest.raises(SessionError, match="Too many people"):
        store.get("d")                               # every session is busy: refuse with a sentence
    store.get("c").busy = None
    clock.t = 200                                    # both idle past the TTL, but "b" is busy
    assert store.sweep() == ["c"]
    assert store.ids() == ["b"]


def test_store_bounds_tuned_generators(G, tmp_path):
    import copy
    clock = FakeClock()
    size = module_bytes(G)
    store = SessionStore(max_tuned=2, max_tuned_bytes=10 * size, export_root=tmp_path, clock=clock)
    sessions = []
    for i, sid in enumerate("abc"):
        clock.t = i
        s = store.get(sid)
        tuned = copy.deepcopy(G)
        evicted = store.attach_tuned(s, tuned)
        s.load_latent(tuned, G.ws_from_seed(i, 0.7), config(), model="tiny", source="photo", tuned=True)
        sessions.append((s, evicted))
    assert sessions[0][1] == [] and sessions[1][1] == [] and sessions[2][1] == ["a"]
    a = store.get("a")
    assert a.drag is None and "Upload it again" in a.notice
    assert store.tuned_count() == 2 and store.tuned_bytes() == 2 * size
    # By bytes: room for one more than the bytes allow is never made from a busy session.
    store.max_tuned, store.max_tuned_bytes = 10, size
    store.get("b").busy = "drag"
    evicted = store.attach_tuned(store.get("d"), copy.deepcopy(G))
    assert evicted == ["c"] and store.get("b").tuned


def test_model_pool_loads_each_model_once_even_concurrently():
    calls = []

    def loader(source, device, progress):
        calls.append((source, device))
        time.sleep(0.05)
        return torch.nn.Linear(2, 2)

    pool = ModelPool(loader)
    results = []
    threads = [threading.Thread(target=lambda: results.append(pool.get("m", "cpu"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [("m", "cpu")]
    assert all(r is results[0] for r in results)
    assert not any(p.requires_grad for p in results[0].parameters())   # shared read-only
    pool.get("n", "cpu")
    assert len(pool) == 2 and pool.is_loaded("m", "cpu") and not pool.is_loaded("m", "cuda")


# --------------------------------------------------------------------------- live drag


def live_session(G):
    from draggan.engine import DragSession
    drag = DragSession(G, G.ws_from_seed(3, 0.7), config())
    drag.set_points([(8, 8)], [(24, 20)])
    return drag


@pytest.mark.parametrize("frames", ["full", "partial"])
def test_live_drag_streams_rendered_frames_then_ends(G, frames):
    from draggan.engine import render_state
    from draggan.engine.live import live_drag
    drag = live_session(G)
    starts = {}
    original_advance = drag._advance

    def advance():  # remember the image every step started from
        start = drag.frame_state()
        state, changed = original_advance()
        starts[state.step] = start
        return state, changed

    drag._advance = advance
    events = list(live_drag(drag, max_steps=6, frames=frames))
    assert events[-1].kind == "end" and events[-1].state.step == 6
    frames_ = [e for e in events if e.kind == "frame"]
    assert frames_ and all(e.image.shape == (32, 32, 3) for e in frames_)
    steps = [e.state.step for e in frames_]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    if frames == "partial":
        # Each frame is the image its handles were tracked in: the latent its step started from.
        assert steps[0] >= 2                         # step 1 started from the image already on screen
        # The step's forward pass ran with autograd on, so a pixel may round one level apart from a
        # fresh render; the latent after the step is further off than that.
        for e in frames_:
            after = starts.get(e.state.step + 1, drag.frame_state())
            assert max_level_difference(e.image, render_state(drag.G, starts[e.state.step], drag.config)) <= 1
            assert max_level_difference(e.image, render_state(drag.G, after, drag.config)) > 1
    # The frame after the last step, drawn without the session's lock, is the session's own image.
    assert np.array_equal(render_state(drag.G, drag.frame_state(), drag.config), drag.render())


def test_closing_a_live_drag_stops_it_and_its_threads(G):
    from draggan.engine.live import live_drag
    drag = live_session(G)
    live = live_drag(drag, max_steps=10_000)
    first = next(e for e in live if e.kind == "frame")
    live.close()
    assert first.state.step >= 1 and drag._step_count < 10_000
    assert not [t for t in threading.enumerate() if t.name in ("drag-steps", "drag-frames")]
    assert len(drag.history) == 1                    # one undo entry for the interrupted drag


def test_live_drag_raises_errors_from_its_threads(G, monkeypatch):
    import draggan.engine.live
    from draggan.engine.live import live_drag

    def broken(*args):
        raise RuntimeError("render failed")

    monkeypatch.setattr(draggan.engine.live, "render_state", broken)
    monkeypatch.setattr(draggan.engine.live, "finish_frame", broken)
    for frames in ("full", "partial"):
        with pytest.raises(RuntimeError, match="render failed"):
            list(live_drag(live_session(G), max_steps=50, frames=frames))
    assert not [t for t in threading.enumerate() if t.name in ("drag-steps", "drag-frames")]


def test_model_pool_prepares_each_model_once():
    prepared = []
    pool = ModelPool(lambda source, device, progress: torch.nn.Conv2d(2, 4, 3),
                     prepare=lambda m: prepared.append(m) or m.to(memory_format=torch.channels_last))
    model = pool.get("m", "cpu")
    assert pool.get("m", "cpu") is model and len(prepared) == 1
    assert model.weight.is_contiguous(memory_format=torch.channels_last) and not model.weight.is_contiguous()


def test_live_drag_throttles_frames(G):
    from draggan.engine.live import live_drag
    drag = live_session(G)
    events = list(live_drag(drag, max_steps=30, frame_interval=60.0))
    # The first frame right away, then none until a minute has passed: the drag ended before that.
    assert [e.kind for e in events] == ["frame", "end"] and events[-1].state.step == 30


def test_torch_threads_is_per_os_thread_and_restored():
    # torch's intra-op thread count belongs to the calling OS thread: a worker must set its own.
    from draggan.engine.live import torch_threads
    seen = {}

    def worker():
        before = torch.get_num_threads()
        with torch_threads(1):
            seen["inside"] = torch.get_num_threads()
        seen["after"] = torch.get_num_threads() == before

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"inside": 1, "after": True}


def test_live_drag_workers_run_with_the_thread_count_asked(G, monkeypatch):
    import draggan.engine.live
    from draggan.engine.live import live_drag
    counts = set()
    real = draggan.engine.live.render_state

    def counting(*args):
        counts.add(torch.get_num_threads())
        return real(*args)

    monkeypatch.setattr(draggan.engine.live, "render_state", counting)
    events = list(live_drag(live_session(G), max_steps=3, worker_threads=1, frames="full"))
    assert events[-1].kind == "end" and counts == {1}


@pytest.mark.parametrize("frames,fast_steps", [("full", 1), ("partial", 2)])
def test_live_drag_steps_with_every_thread_until_the_first_frame(G, frames, fast_steps):
    from draggan.engine.live import live_drag
    drag = live_session(G)
    per_step = []
    original_advance = drag._advance

    def advance():
        per_step.append(torch.get_num_threads())
        return original_advance()

    drag._advance = advance
    events = list(live_drag(drag, max_steps=5, worker_threads=1, first_frame_threads=2, frames=frames))
    assert events[-1].kind == "end"
    # the first frame is handed over after step 1 (full) or 2 (partial: step 1 starts from the shown image)
    assert per_step == [2] * fast_steps + [1] * (5 - fast_steps)
