"""CUDA-graph drag steps (marked gpu: run where a GPU exists; CI has none, so tests/conftest.py skips them).

The captured step must compute the same drag as the eager one, survive
recapture when points change, and recover from a non-finite step in place.
"""

import copy

import numpy as np
import pytest
import torch
from helpers import max_level_difference

import draggan.engine.session as engine
from draggan.engine import DragConfig, DragConfigError, DragSession
from draggan.models.networks import Generator

R, BLOCK = 64, 4
POINTS = ([(20, 30), (40, 36)], [(30, 30), (44, 26)])


def generator(device):
    torch.manual_seed(0)
    G = Generator(img_resolution=R, channel_base=2048, channel_max=64, z_dim=64, w_dim=64, mapping_layers=2)
    return G.eval().requires_grad_(False).to(device)


def drag_trace(G, steps=12, **config):
    config.setdefault("feature_block", BLOCK)
    s = DragSession(G, G.ws_from_seed(1, device=G.mapping.fc0.weight.device), DragConfig(**config))
    s.set_points(*POINTS)
    states = list(s.drag(max_steps=steps, image_every=0))
    return s, states


def cuda_session(G, graphed: bool, **config) -> DragSession:
    return DragSession(G, G.ws_from_seed(1, device="cuda"), DragConfig(feature_block=BLOCK, cuda_graph=graphed, **config))


def test_cuda_graph_needs_a_cuda_device():
    G = generator("cpu")
    s = DragSession(G, G.ws_from_seed(0), DragConfig(feature_block=BLOCK, cuda_graph=True))
    s.set_points(*POINTS)
    with pytest.raises(DragConfigError, match="CUDA device"):
        s.drag()


@pytest.mark.gpu
@pytest.mark.parametrize("space,tracking", [("w+", "nn"), ("w", "nn"), ("w+", "line")])
def test_graph_replay_computes_the_eager_drag(space, tracking):
    torch.backends.cudnn.deterministic = True
    G = generator("cuda")
    eager, eager_states = drag_trace(G, latent_space=space, tracking=tracking, cuda_graph=False)
    graph, graph_states = drag_trace(G, latent_space=space, tracking=tracking, cuda_graph=True)
    assert graph._opt.runner.graph is not None and eager._opt.runner.graph is None
    assert len(graph_states) == len(eager_states)
    for a, b in zip(eager_states, graph_states):
        np.testing.assert_allclose(a.handles, b.handles, atol=1e-4)
        assert a.loss == pytest.approx(b.loss, rel=1e-3, abs=1e-6)
    # Not bit-exact: capturable Adam computes its bias corrections on the device, and Adam
    # turns rounding differences in near-zero gradients into differences of up to ~lr per
    # step in those elements (H100: max 1.2e-3 after 12 steps at lr 2e-3).
    torch.testing.assert_close(graph.ws, eager.ws, atol=5e-3, rtol=0)
    assert not torch.equal(graph.ws, G.ws_from_seed(1, device="cuda"))     # it did drag


@pytest.mark.gpu
def test_new_points_and_mask_recapture_the_graph():
    G = generator("cuda")
    s, _ = drag_trace(G, steps=5, cuda_graph=True)
    first = s._opt.runner.graph
    assert first is not None
    s.set_points([(30, 40)], [(30, 52)])
    mask = np.zeros((R, R), bool)
    mask[20:60, 15:45] = True
    s.set_mask(mask)
    states = list(s.drag(max_steps=30, image_every=0))
    assert s._opt.runner.graph is not None and s._opt.runner.graph is not first
    assert states[-1].distances[0] < states[0].distances[0] + 1e-6
    assert np.isfinite([st.loss for st in states]).all()


@pytest.mark.gpu
def test_non_finite_step_inside_the_graph_is_undone_in_place(monkeypatch):
    G = generator("cuda")
    poison = torch.ones((), device="cuda")           # a device value the captured graph reads on every replay
    real = engine.motion_supervision_loss
    monkeypatch.setattr(engine, "motion_supervision_loss", lambda *a, **k: real(*a, **k) * poison)
    s, _ = drag_trace(G, steps=6, cuda_graph=True)
    assert s._opt.runner.graph is not None
    before, handles_before = s.ws, s.handles
    poison.fill_(float("nan"))
    state = next(s.drag(max_steps=1, image_every=0))
    assert state.warning and "halved" in state.warning
    torch.testing.assert_close(s.ws, before, atol=0, rtol=0)
    np.testing.assert_array_equal(s.handles, handles_before)
    assert float(s._opt.optimizer.param_groups[0]["lr"]) == pytest.approx(DragConfig().lr / 2)
    poison.fill_(1.0)
    states = list(s.drag(max_steps=4, image_every=0))
    assert all(st.warning is None for st in states)
    assert not torch.equal(s.ws, before)             # the same graph goes on dragging


@pytest.mark.gpu
def test_partial_frames_inside_the_graph_match_eager():
    G = generator("cuda")
    runs = {}
    for graphed in (False, True):
        s = cuda_session(G, graphed)
        s.set_points(*POINTS)
        first = list(s.drag(max_steps=4, image_every=0))                        # captured without frames
        before, second = [s.frame_state()], []
        for state in s.drag(max_steps=6, image_every=0, partial_frames=True):   # recaptured with them
            second.append(state)
            before.append(s.frame_state())
        runs[graphed] = (first, second, s, before)
    s, before = runs[True][2], runs[True][3]
    assert s._opt.runner.graph is not None and s._opt.partial_frames
    assert all(st.partial_frame is None for st in runs[True][0])
    for a, b, edit in zip(runs[False][1], runs[True][1], before):
        torch.testing.assert_close(b.partial_frame.features, a.partial_frame.features, atol=5e-3, rtol=1e-3)
        torch.testing.assert_close(b.partial_frame.ws, edit.ws)
        # The frame of the latent the step started from, as the session draws it (the local blend included).
        frame = engine.finish_frame(G, b.partial_frame, s.config)
        assert max_level_difference(frame, engine.render_state(G, edit, s.config)) <= 1
    assert not torch.equal(runs[True][1][-1].partial_frame.ws, runs[True][1][0].partial_frame.ws)


@pytest.mark.gpu
def test_graphed_frames_are_the_eager_frames_for_the_plain_image_a_running_blend_and_a_canvas():
    G = generator("cuda")
    renders = {}
    for graphed in (False, True):
        s = cuda_session(G, graphed)
        images = [s.render() for _ in range(4)]                  # plain: 2 eager frames, the capture, a replay
        s.set_points(*POINTS)
        steps = s.drag(max_steps=8, image_every=0)
        for _ in range(4):                                       # a running local drag: its blend
            next(steps)
            images.append(s.render_frame(s.frame_state()))
        steps.close()
        s.set_points([(30, 40)], [(30, 44)])                     # the first drag folded into a canvas
        images += [s.render() for _ in range(4)]
        renders[graphed] = (images, s)
    assert renders[True][1]._frames.enabled and not renders[False][1]._frames.enabled
    assert any(entry[0].captured for entry in renders[True][1]._frames._graphs.values())
    for a, b in zip(*(renders[g][0] for g in (False, True))):
        assert max_level_difference(a, b) <= 1


@pytest.mark.gpu
def test_bf16_frames_stay_close_to_fp32_frames():
    G = generator("cuda")
    images = []
    for autocast in (False, True):
        s = cuda_session(G, None, autocast=autocast)
        images.append([s.render() for _ in range(4)][-1])
    diff = np.abs(images[0].astype(int) - images[1].astype(int))
    assert diff.mean() < 2.0 and diff.max() <= 32


@pytest.mark.gpu
def test_channels_last_bf16_graphs_draw_and_drag_as_nchw_eager():
    # The GPU runtime's policy (draggan/runtime.py): bf16 autocast with channels-last weights, graphed.
    G = generator("cuda")
    G_cl = copy.deepcopy(G).to(memory_format=torch.channels_last)
    runs = {}
    for name, g, graphed in (("nchw", G, False), ("channels_last", G_cl, True)):
        s = DragSession(g, g.ws_from_seed(1, device="cuda"),
                        DragConfig(feature_block=BLOCK, cuda_graph=graphed, autocast=True))
        frame = [s.render() for _ in range(3)][-1]       # two eager frames, then the capture's
        s.set_points(*POINTS)
        runs[name] = (frame, list(s.drag(max_steps=6, image_every=0)))
    (frame_a, steps_a), (frame_b, steps_b) = runs["nchw"], runs["channels_last"]
    assert max_level_difference(frame_a, frame_b) <= 2          # bf16 rounding of two convolution layouts
    assert steps_b[0].loss == pytest.approx(steps_a[0].loss, rel=2e-2)
    assert np.abs(steps_b[-1].handles - steps_a[-1].handles).max() <= 1.0


@pytest.mark.gpu
@pytest.mark.parametrize("autocast", [False, True])
def test_a_windowed_drag_in_the_graph_is_the_eager_whole_image_drag(autocast):
    # window.py on CUDA (off there by default until measured): a short drag on a 128 px generator, whose region
    # leaves room for a window; graphed steps with partial frames and graphed frames against eager, whole-image ones.
    from helpers import tiny_generator
    G = tiny_generator(seed=1, img_resolution=128, channel_base=1024, channel_max=32).to("cuda")
    runs = {}
    for windowed, graphed in ((False, False), (True, True)):
        s = DragSession(G, G.ws_from_seed(2, device="cuda"),
                        DragConfig(feature_block=5, windowed=windowed, cuda_graph=graphed, autocast=autocast))
        s.set_points([(40, 50)], [(48, 54)])
        states = list(s.drag(max_steps=8, image_every=0, partial_frames=True))
        frames = [engine.finish_frame(G, st.partial_frame, s.config) for st in states]
        runs[windowed] = (states, frames, [s.render_frame(s.frame_state()) for _ in range(4)][-1], s)
    (states_a, frames_a, last_a, _), (states_b, frames_b, last_b, s) = runs[False], runs[True]
    assert s._opt.blend.window is not None and s._opt.runner.graph is not None
    for a, b in zip(states_a, states_b, strict=True):
        assert np.abs(a.handles - b.handles).max() <= 1.0 and b.loss == pytest.approx(a.loss, rel=2e-2, abs=1e-4)
    for a, b in zip(frames_a, frames_b, strict=True):
        assert max_level_difference(a, b) <= 2
    assert max_level_difference(last_a, last_b) <= 2
