"""DragGAN engine: feature sampling, tracking, motion supervision and the DragSession (CPU, tiny generator)."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import max_level_difference, tiny_generator

import draggan.engine.session as engine
from draggan.engine import DragConfig, DragConfigError, DragSession, MaskError, default_feature_block
from draggan.engine.features import resize_features, sample_features, synthesis_features
from draggan.engine.motion import disk_offsets, motion_loss
from draggan.engine.points import PointError
from draggan.engine.tracking import track_points, window_offsets
from draggan.models.networks import GeneratorConfig

R = 64
BLOCK = 4  # 32x32 features of the 64 px generator: cheap, and 2x below the image like DragGAN's block 6
pytestmark = pytest.mark.usefixtures("one_thread")  # G and one_thread: conftest.py


def session(G, seed=0, points=(((28, 32),), ((38, 32),)), **config) -> DragSession:
    config.setdefault("feature_block", BLOCK)
    s = DragSession(G, G.ws_from_seed(seed), DragConfig(**config))
    s.set_points(*points)
    return s


def run(s: DragSession, **kwargs) -> list:
    kwargs.setdefault("image_every", 0)
    return list(s.drag(**kwargs))


# --------------------------------------------------------------------------- feature sampling


@pytest.mark.parametrize("feat_size,image_size", [(16, 64), (32, 64), (16, 16), (12, 40)])
def test_grid_sample_equals_resize_then_index(feat_size, image_size):
    torch.manual_seed(1)
    feat = torch.randn(1, 5, feat_size, feat_size, dtype=torch.float64)
    full = F.interpolate(feat, size=(image_size, image_size), mode="bilinear", align_corners=False)
    ys, xs = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
    points = torch.stack([xs, ys], dim=-1).double()            # every pixel, borders included
    sampled = sample_features(feat, points, image_size)        # [R, R, C]
    torch.testing.assert_close(sampled, full[0].permute(1, 2, 0), rtol=0, atol=1e-12)
    torch.testing.assert_close(resize_features(feat, image_size), full)


def test_block_features_have_the_documented_resolution(G):
    feat = synthesis_features(G, G.ws_from_seed(0), BLOCK)
    assert feat.shape == (1, G.block_channels(BLOCK), 32, 32)


# --------------------------------------------------------------------------- tracking


def test_offset_grids():
    assert len(disk_offsets(1)) == 5 and len(disk_offsets(3)) == 29     # lattice points in the disk
    win = window_offsets(2)
    assert len(win) == 25 and win[0].tolist() == [0, 0]                # centre first: ties keep the handle


@pytest.mark.parametrize("feat_size,image_size,shift", [(32, 32, (3, -2)), (32, 64, (4, 2))])
def test_tracking_recovers_a_known_shift_for_several_handles(feat_size, image_size, shift):
    torch.manual_seed(2)
    feat = torch.randn(1, 16, feat_size, feat_size)
    scale = image_size // feat_size
    dx, dy = shift
    # Content moves by (dx, dy) image pixels: roll the feature map by the same amount in feature pixels.
    moved = torch.roll(feat, shifts=(dy // scale, dx // scale), dims=(2, 3))
    handles = torch.tensor([[10.0, 12.0], [20.0, 9.0], [14.0, 20.0], [9.0, 9.0]]) * scale
    ref = sample_features(feat, handles, image_size)
    offsets = window_offsets(max(abs(dx), abs(dy)) + 1)
    tracked = track_points(moved, handles, ref, offsets, image_size)
    expected = handles + torch.tensor([float(dx), float(dy)])
    torch.testing.assert_close(tracked, expected)
    # Unchanged features: every handle stays put.
    torch.testing.assert_close(track_points(feat, handles, ref, offsets, image_size), handles)


def test_motion_loss_ignores_inactive_handles_and_stops_gradient_at_the_reference():
    torch.manual_seed(3)
    feat = torch.randn(1, 8, 16, 16, requires_grad=True)
    handles = torch.tensor([[20.0, 20.0], [40.0, 30.0]])
    targets = torch.tensor([[30.0, 20.0], [40.0, 10.0]])
    offsets = disk_offsets(2)
    both = motion_loss(feat, handles, targets, offsets, 64)
    first = motion_loss(feat, handles, targets, offsets, 64, active=torch.tensor([True, False]))
    alone = motion_loss(feat, handles[:1], targets[:1], offsets, 64)
    torch.testing.assert_close(first, alone)
    assert both > first > 0
    # Only the shifted samples carry gradient. At image resolution, a disk of radius 1 around (8, 8) moving
    # in +x reads the reference at x = 7..9 and the shifted copy at x = 8..10.
    img = torch.randn(1, 8, 16, 16, requires_grad=True)
    loss = motion_loss(img, torch.tensor([[8.0, 8.0]]), torch.tensor([[12.0, 8.0]]), disk_offsets(1), 16)
    (grad,) = torch.autograd.grad(loss, img)
    assert grad[0, :, 8, 7].abs().sum() == 0      # reference only: stop-gradient
    assert grad[0, :, 8, 10].abs().sum() > 0      # shifted only


# --------------------------------------------------------------------------- dragging


class BlobGenerator(torch.nn.Module):
    """A toy generator with a known answer: w[0, 0, :2] places a textured blob, and the feature
    maps move rigidly with it. Dragging the blob's centre must move the blob there."""

    img_resolution, num_ws, w_dim = 64, 2, 4
    block_resolutions = [32, 64]

    def __init__(self, px_per_unit=20.0):
        super().__init__()
        self.px_per_unit = px_per_unit
        self.synthesis = self
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # for device lookup

    def blob_centre(self, ws):
        return torch.tensor([32.0, 32.0]) + self.px_per_unit * ws[0, 0, :2]

    def forward(self, ws, noise_mode="const", return_features=False, last_block=None):
        feats = []
        for res in self.block_resolutions[:last_block]:
            ax = (torch.arange(res, dtype=torch.float32) + 0.5) * (self.img_resolution / res) - 0.5
            yy, xx = torch.meshgrid(ax, ax, indexing="ij")
            c = self.blob_centre(ws)
            dx, dy = (xx - c[0]) / 8, (yy - c[1]) / 8
            g = torch.exp(-(dx ** 2 + dy ** 2) / 2)
            feats.append(torch.stack([g, dx * g, dy * g, torch.exp(-(dx ** 2 + dy ** 2) / 8)])[None])
        img = feats[-1][:, :3] * 2 - 1 if len(feats) == 2 else None
        return (img, feats) if return_features else img


@pytest.mark.parametrize("block", [1, 2])   # features at half and at full image resolution
def test_drag_moves_a_blob_to_the_target(block):
    G = BlobGenerator()
    # The paper's global drag: the toy's blob moves rigidly, it has no skip images to blend locally.
    s = DragSession(G, torch.zeros(1, 2, 4), DragConfig.preset("paper", feature_block=block, lr=0.02,
                                                               optimize_layers=2))
    s.set_points([(32, 32)], [(42, 36)])
    final = run(s, max_steps=100)[-1]
    assert final.done and final.step < 60
    centre = G.blob_centre(s.ws).numpy()
    assert np.linalg.norm(centre - [42, 36]) < 1.5                  # the content moved ...
    assert np.linalg.norm(final.handles[0] - centre) < 1.0          # ... and tracking followed it


def test_drag_moves_content_towards_the_target(G):
    handle, target = (28, 32), (38, 32)
    # The algorithm's core: motion supervision and tracking alone (the warp term is tested on its own below).
    s = session(G, points=([handle], [target]), max_steps=80, lambda_warp=0)
    ws0 = s.ws
    states = run(s)
    final = states[-1]
    assert final.done and final.distances[0] <= s.stop_distance
    assert np.linalg.norm(final.handles[0] - np.array(target)) < 0.25 * 10
    # The generator's own features moved: at the target they now look like the handle used to.
    f0 = synthesis_features(G, ws0, BLOCK)
    f1 = synthesis_features(G, s.ws, BLOCK)
    at = lambda f, p: sample_features(f, torch.tensor([p], dtype=torch.float32), R)
    ref = at(f0, handle)
    before = (at(f0, target) - ref).abs().sum()
    after = (at(f1, target) - ref).abs().sum()
    assert after < 0.6 * before


def test_stop_and_resume_equal_one_uninterrupted_drag(G):
    far = ([(20, 32)], [(50, 32)])   # too far to arrive within 8 steps
    a = session(G, points=far)
    run(a, max_steps=8)

    b = session(G, points=far)
    states = []
    for state in b.drag(max_steps=100, image_every=0):
        states.append(state)
        if len(states) == 3:
            b.stop()
    assert [s.step for s in states] == [1, 2, 3]
    resumed = run(b, max_steps=5)
    assert [s.step for s in resumed] == [4, 5, 6, 7, 8]
    assert torch.equal(a.ws, b.ws)
    np.testing.assert_array_equal(a.handles, b.handles)
    assert len(b.history) == 2 and len(a.history) == 1


def test_stop_from_another_thread(G):
    s = session(G, points=([(20, 32)], [(50, 32)]))
    first = threading.Event()
    seen = []

    def consume():
        for state in s.drag(max_steps=200, image_every=0):
            seen.append(state.step)
            first.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert first.wait(30)
    s.stop()
    worker.join(30)
    assert not worker.is_alive() and 1 <= len(seen) < 200


def test_undo_and_reset_restore_latents_exactly(G):
    s = session(G, points=([(20, 32)], [(50, 32)]))
    ws0, h0 = s.ws, s.handles
    run(s, max_steps=3)
    ws1, h1 = s.ws, s.handles
    run(s, max_steps=3)
    assert not torch.equal(s.ws, ws1)
    assert [torch.equal(h, w) for h, w in zip(s.history, [ws0, ws1])] == [True, True]
    assert s.undo() and torch.equal(s.ws, ws1)
    np.testing.assert_array_equal(s.handles, h1)
    assert s.undo() and torch.equal(s.ws, ws0)
    np.testing.assert_array_equal(s.handles, h0)
    assert not s.undo()
    run(s, max_steps=2)
    s.reset()
    assert torch.equal(s.ws, ws0) and s.history == []
    np.testing.assert_array_equal(s.handles, h0)
    # After undo the drag starts over from the restored latent, as a fresh session would.
    fresh = session(G, points=([(20, 32)], [(50, 32)]))
    run(fresh, max_steps=2)
    run(s, max_steps=2)
    assert torch.equal(s.ws, fresh.ws)


def test_non_finite_loss_restores_the_latent_and_halves_the_lr(G, monkeypatch):
    real = engine.motion_supervision_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(engine, "motion_supervision_loss", poisoned)
    s = session(G, points=([(20, 32)], [(50, 32)]))
    latents, states = [], []
    for state in s.drag(max_steps=6, image_every=0):
        states.append(state)
        latents.append(s.ws)
    assert [st.warning is not None for st in states] == [False, False, True, False, False, False]
    assert "halved" in states[2].warning
    assert torch.equal(latents[2], latents[1])                      # the bad step was undone
    np.testing.assert_array_equal(states[2].handles, states[1].handles)
    assert s.lr == pytest.approx(DragConfig().lr / 2)
    assert all(torch.isfinite(w).all() for w in latents)
    assert not torch.equal(latents[5], latents[2])                  # and the drag went on
    assert all(np.isfinite(st.loss) for st in states[3:])


def test_mask_keeps_the_fixed_region_closer_to_the_original(G):
    points = ([(24, 32)], [(36, 32)])
    movable = np.zeros((R, R), dtype=np.uint8)
    movable[20:44, 16:44] = 255
    fixed = movable == 0

    def fixed_change(mask):
        s = session(G, points=points, stop_distance=0.5)
        before = s.render().astype(np.float32)
        s.set_mask(mask)
        run(s, max_steps=25)
        return np.abs(s.render().astype(np.float32) - before)[fixed].mean()

    free, masked = fixed_change(None), fixed_change(movable)
    assert masked < 0.7 * free


def test_all_movable_mask_is_the_same_as_no_mask_in_the_paper_drag(G):
    a = session(G, region="global", lambda_warp=0)
    b = session(G, region="global", lambda_warp=0)
    b.set_mask(np.ones((R, R), dtype=bool))
    run(a, max_steps=3)
    run(b, max_steps=3)
    assert torch.equal(a.ws, b.ws)


def test_all_movable_mask_lets_a_local_drag_change_everything(G):
    handle, target = (20, 20), (25, 20)
    far = far_from([handle, target], 32)
    s = session(G, points=([handle], [target]))
    s.set_mask(np.ones((R, R), dtype=bool))
    before = s.render()
    run(s, max_steps=10)
    assert not np.array_equal(before[far], s.render()[far])


def test_mask_validation(G):
    s = session(G)
    with pytest.raises(MaskError, match="64x64"):
        s.set_mask(np.ones((32, 32)))
    s.set_mask(np.full((R, R), 255, dtype=np.uint8))
    assert s.mask.all()
    s.set_mask(None)
    assert s.mask is None


def test_w_plus_optimizes_only_the_first_layers(G):
    s = session(G, optimize_layers=4)
    ws0 = s.ws
    run(s, max_steps=3)
    assert torch.equal(s.ws[:, 4:], ws0[:, 4:])
    assert not torch.equal(s.ws[:, :4], ws0[:, :4])


def test_w_space_shares_one_offset_over_all_layers(G):
    s = session(G, latent_space="w", region="global")
    ws0 = s.ws
    run(s, max_steps=3)
    delta = s.ws - ws0
    assert delta.abs().max() > 0
    torch.testing.assert_close(delta, delta[:, :1].expand_as(delta), rtol=0, atol=1e-6)


def test_local_w_space_shares_one_offset_over_the_layers_up_to_the_blend_block(G):
    s = session(G, latent_space="w")          # feature block 4, so the blend block is 3 (16 px)
    ws0 = s.ws
    run(s, max_steps=3)
    delta = s.ws - ws0
    k = G.synthesis.first_layer_of_block(4)   # the layers blocks 1-3 read (but block 3's toRGB)
    assert delta[:, :k].abs().max() > 0
    torch.testing.assert_close(delta[:, :k], delta[:, :1].expand(-1, k, -1), rtol=0, atol=1e-6)
    assert torch.equal(delta[:, k:], torch.zeros_like(delta[:, k:]))    # later blocks keep the image's styles


def test_generator_is_never_modified():
    G = tiny_generator()
    G.requires_grad_(True).train()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    s = session(G)
    run(s, max_steps=2, image_every=1)
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in G.parameters())
    assert G.training


def test_handles_already_at_targets_finish_without_changing_the_latent(G):
    s = session(G, points=([(30, 30), (40, 20)], [(30, 30), (40.5, 20)]))
    ws0 = s.ws
    states = run(s)
    # loss ~0: the warp term resamples the unchanged features at their own pixels (float rounding only)
    assert len(states) == 1 and states[0].done and states[0].loss < 1e-6
    assert torch.equal(s.ws, ws0) and s.history == []


def test_images_are_rendered_every_k_steps_and_at_the_end(G):
    s = session(G, points=([(20, 32)], [(50, 32)]))
    states = run(s, max_steps=5, image_every=2)
    assert [st.image is not None for st in states] == [False, True, False, True, True]
    last = states[-1].image
    assert last.shape == (R, R, 3) and last.dtype == np.uint8
    np.testing.assert_array_equal(last, s.render())


def test_default_radii_and_stop_distance_scale_with_resolution():
    cfg = DragConfig()
    assert cfg.radii(512) == (3.0, 12.0) and cfg.radii(1024) == (6.0, 24.0)
    assert cfg.radii(64) == (1.0, 2.0)                       # floors
    assert cfg.stop_distance_for(512, 5) == 0.5                # the local default: half a pixel
    paper = DragConfig.preset("paper")                         # the paper's, scaled with the resolution
    assert paper.stop_distance_for(512, 5) == 1.0 and paper.stop_distance_for(1024, 6) == 4.0
    assert paper.stop_distance_for(128, 6) == 1.0


def test_a_target_off_the_pixel_grid_stops_as_close_as_the_grid_allows(G):
    # 4.5 px right of the handle: the handle moves in whole pixels, so the best it can do is 0.5 px away.
    s = session(G, points=([(20, 20)], [(24.5, 20)]), stop_distance=0.1, lambda_warp=0, lr=0.02)
    states = run(s, max_steps=150)
    assert states[-1].done and states[-1].distances[0] == pytest.approx(0.5, abs=1e-4)


def test_bad_configs_and_points_get_clear_errors(G):
    ws = G.ws_from_seed(0)
    with pytest.raises(DragConfigError, match="5 synthesis blocks"):
        DragSession(G, ws, DragConfig(feature_block=6))
    with pytest.raises(DragConfigError, match="W\\+ layers"):
        DragSession(G, ws, DragConfig(feature_block=BLOCK, optimize_layers=G.num_ws + 1))
    with pytest.raises(DragConfigError, match="latent_space"):
        DragConfig(latent_space="z")
    with pytest.raises(ValueError, match="shape"):
        DragSession(G, ws[:, :3], DragConfig(feature_block=BLOCK))
    s = DragSession(G, ws, DragConfig(feature_block=BLOCK))
    with pytest.raises(PointError, match="set_points"):
        s.drag()
    with pytest.raises(PointError, match="outside the 64x64 image"):
        s.set_points([(10, 10)], [(64, 10)])
    with pytest.raises(PointError, match="1 handle"):
        s.set_points([(10, 10)], [(20, 10), (30, 30)])


def test_new_points_end_a_running_drag(G):
    s = session(G, points=([(20, 32)], [(50, 32)]))
    steps = s.drag(max_steps=50, image_every=0)
    assert next(steps).step == 1
    s.set_points([(30, 30)], [(30, 40)])
    assert list(steps) == []
    assert [st.step for st in run(s, max_steps=2)] == [1, 2]   # the new points start their own count


def test_bf16_autocast_runs_on_cpu(G):
    s = session(G, points=([(20, 32)], [(50, 32)]), autocast=True)
    states = run(s, max_steps=3, image_every=3)
    assert s.ws.dtype == torch.float32 and torch.isfinite(s.ws).all()
    assert all(np.isfinite(st.loss) and st.warning is None for st in states)
    assert states[-1].image.shape == (R, R, 3)


def test_default_feature_block_is_block_6_from_512px_and_half_resolution_below():
    class Stub:  # only the architecture matters
        def __init__(self, resolution):
            self.img_resolution = resolution
            self.synthesis = GeneratorConfig(img_resolution=resolution)
    blocks = {r: default_feature_block(Stub(r)) for r in (32, 64, 128, 256, 512, 1024)}
    assert blocks == {32: 3, 64: 4, 128: 5, 256: 6, 512: 6, 1024: 6}


# --------------------------------------------------------------------------- partial frames


def test_finish_after_a_partial_forward_equals_the_full_forward(G):
    ws = G.ws_from_seed(4)
    with torch.no_grad():
        full = G.synthesis(ws)
        last = len(G.synthesis.blocks())
        for block in (1, BLOCK, last - 1, last):
            skip, feats = G.synthesis(ws, return_features=True, last_block=block, partial_image=True)
            torch.testing.assert_close(G.synthesis.finish(feats[-1], skip, ws, block), full)
    with pytest.raises(ValueError, match="after_block"):
        G.synthesis.finish(feats[-1], skip, ws, last + 1)


@pytest.mark.parametrize("block", [BLOCK, 5])  # 5: the 64 px generator's last block, where the skip image is the image
def test_partial_frames_draw_the_latent_each_step_started_from(G, block):
    assert len(G.synthesis.blocks()) == 5
    s = session(G, feature_block=block)
    before = [s.frame_state()]
    states = []
    for state in s.drag(max_steps=4, image_every=0, partial_frames=True):
        states.append(state)
        before.append(s.frame_state())
    assert len(states) == 4
    for state, edit in zip(states, before):
        frame = state.partial_frame
        assert frame.block == block and state.image is None
        torch.testing.assert_close(frame.ws, edit.ws)
        # equal up to one level of rounding (the step ran its part with autograd on)
        assert max_level_difference(engine.finish_frame(G, frame, s.config),
                                    engine.render_state(G, edit, s.config)) <= 1
    # the drag moved the latent, so the frames change over the steps
    assert not torch.equal(states[-1].partial_frame.features, states[0].partial_frame.features)


def test_partial_frames_can_be_switched_mid_drag_without_changing_the_drag(G):
    a, b = session(G), session(G)
    run(a, max_steps=3)
    run(a, max_steps=3, partial_frames=True)
    run(b, max_steps=6)
    torch.testing.assert_close(a.ws, b.ws)   # the same optimization with and without frames
    assert all(st.partial_frame is None for st in run(a, max_steps=1))


# --------------------------------------------------------------------------- local edits (region.py)


def far_from(points, distance, size=R):
    """[size, size] bool: pixels farther than ``distance`` from every point."""
    yy, xx = np.mgrid[0:size, 0:size]
    far = np.ones((size, size), bool)
    for x, y in points:
        far &= (xx - x) ** 2 + (yy - y) ** 2 > distance ** 2
    return far


def test_soft_region_covers_the_path_and_grows_with_the_drag():
    from draggan.engine.region import region_radius_px, soft_region
    m = soft_region(64, [(20, 20)], [(26, 20)], radius=0.1, feather=0.05)
    assert m.dtype == np.float32 and m.shape == (64, 64)
    assert m[20, 20] == 1 and m[20, 23] == 1 and m[20, 26] == 1          # handle, path, target
    assert m[20, 26 + 12] == 1 and m[20, 26 + 16] == 0                    # radius 12 (2 x drag), feather 3.2
    assert m[60, 60] == 0 and 0 < m[20, 26 + 14] < 1
    assert region_radius_px(64, [(0, 0)], [(1, 0)], 0.1) == pytest.approx(6.4)    # short drag: the radius
    assert region_radius_px(64, [(0, 0)], [(10, 0)], 0.1) == 20                   # long drag: 2 x its length


def test_feathered_mask_is_one_inside_and_eases_to_zero_outside():
    from draggan.engine.region import feathered_mask
    movable = np.zeros((64, 64), bool)
    movable[:, :32] = True
    m = feathered_mask(movable, 0.1)
    assert (m[:, :32] == 1).all() and (m[:, 40:] == 0).all() and 0 < m[10, 34] < 1
    assert (feathered_mask(np.ones((8, 8), bool), 0.1) == 1).all()


@pytest.mark.parametrize("autocast", [False, True])   # bf16: the blend keeps the forward pass's dtype
def test_local_drag_changes_nothing_far_from_the_points_and_the_paper_drag_does(G, autocast):
    handle, target = (20, 20), (25, 20)
    far = far_from([handle, target], 32)
    assert far.sum() > 100
    images = {}
    for region in ("auto", "global"):
        s = session(G, points=([handle], [target]), region=region, autocast=autocast)
        before = s.render()
        states = run(s, max_steps=20)
        after = s.render()
        assert states[-1].distances[0] < np.linalg.norm(np.subtract(target, handle))   # the handle moved
        images[region] = (before, after)
    before, after = images["auto"]
    assert np.array_equal(before[far], after[far])                     # bit-identical far away
    near = ~far_from([handle, target], 6)
    assert np.abs(before[near].astype(int) - after[near]).max() > 8    # the edit is there
    before, after = images["global"]
    assert not np.array_equal(before[far], after[far])                 # the paper's drag changes everything


def test_painted_mask_confines_a_local_drag(G):
    s = session(G, points=([(16, 32)], [(21, 32)]))
    movable = np.zeros((R, R), bool)
    movable[:, :28] = True
    s.set_mask(movable)
    before = s.render()
    run(s, max_steps=15)
    after = s.render()
    # Beyond the feather (0.05 x 64 px) and the later blocks' reach, the right side is untouched.
    assert np.array_equal(before[:, 52:], after[:, 52:])
    assert not np.array_equal(before[:, :28], after[:, :28])


def test_successive_local_drags_keep_earlier_edits_and_undo_restores_them_exactly(G):
    s = session(G, points=([(14, 14)], [(18, 14)]))
    original = s.render()
    run(s, max_steps=10)
    first = s.render()
    s.set_points([(50, 50)], [(50, 54)])
    run(s, max_steps=10)
    second = s.render()
    near_first = ~far_from([(14, 14), (18, 14)], 4)
    assert not np.array_equal(first[near_first], original[near_first])
    assert np.array_equal(second[near_first], first[near_first])        # the second drag kept the first edit
    assert not np.array_equal(second, first)
    assert s.undo() and np.array_equal(s.render(), first)
    assert s.undo() and np.array_equal(s.render(), original)
    run(s, max_steps=3)
    s.reset()
    assert np.array_equal(s.render(), original) and s.history == []


def test_reconfigure_keeps_image_points_and_history(G):
    s = session(G, points=([(14, 14)], [(18, 14)]))
    original = s.render()
    run(s, max_steps=8)
    first = s.render()
    s.reconfigure(DragConfig.preset("paper", feature_block=BLOCK, lr=4e-3))
    assert np.array_equal(s.render(), first) and s.handles is not None
    assert s.config.region == "global"
    states = run(s, max_steps=5)
    assert states and states[0].step == 9        # the same points, counted on
    assert not np.array_equal(s.render(), first)
    assert s.undo() and np.array_equal(s.render(), first)
    assert s.undo() and np.array_equal(s.render(), original)
    with pytest.raises(DragConfigError, match="feature_block"):
        s.reconfigure(DragConfig(feature_block=9))
    assert s.config.region == "global" and s.feature_block == BLOCK   # a refused config changes nothing


def test_a_finer_blend_than_the_features_is_refused_once_the_image_holds_local_edits(G):
    s = session(G, points=([(14, 14)], [(18, 14)]), blend_block=4)
    run(s, max_steps=3)
    s.reconfigure(DragConfig(feature_block=3))
    with pytest.raises(DragConfigError, match="Reset"):
        run(s, max_steps=1)
    s.reset()
    assert run(s, max_steps=1)


def test_edit_state_round_trips_and_redraws_the_image(G):
    s = session(G, points=([(14, 14)], [(18, 14)]))
    run(s, max_steps=5)
    d = s.state().to_dict()
    assert d["canvas"] is not None and d["ws"].shape == (1, G.num_ws, G.w_dim)
    state = engine.EditState.from_dict(d)
    assert np.array_equal(engine.render_state(G, state, s.config), s.render())
    fresh = DragSession(G, d["ws"], s.config)
    assert not np.array_equal(fresh.render(), s.render())   # the latent alone is not the image


def test_presets():
    assert DragConfig.preset("local") == DragConfig()
    paper = DragConfig.preset("paper", lr=1e-3)
    assert paper.region == "global" and paper.lr == 1e-3 and not paper.local
    with pytest.raises(DragConfigError, match="unknown preset"):
        DragConfig.preset("fastest")
    with pytest.raises(DragConfigError, match="region"):
        DragConfig(region="everywhere")


# --------------------------------------------------------------------------- warp supervision


def test_displacement_field_moves_content_near_the_points_only():
    from draggan.engine.motion import displacement_field
    u = displacement_field(torch.tensor([[16.0, 16.0]]), torch.tensor([[3.0, -2.0]]), 32, 32, sigma=2.0)
    assert u.shape == (32, 32, 2)
    torch.testing.assert_close(u[16, 16], torch.tensor([3.0, -2.0]))     # at the point: its whole move
    assert u[16, 30].abs().max() < 1e-6 and u[0, 0].abs().max() < 1e-6   # far away: none
    # Two points on top of each other average their moves instead of adding them.
    both = displacement_field(torch.tensor([[16.0, 16.0], [16.0, 16.0]]), torch.tensor([[2.0, 0.0], [4.0, 0.0]]),
                              32, 32, sigma=2.0)
    torch.testing.assert_close(both[16, 16], torch.tensor([3.0, 0.0]))


def test_warp_supervision_targets_the_first_features_moved_with_the_handles():
    from draggan.engine.motion import warp_supervision_loss
    torch.manual_seed(0)
    feat0 = F.avg_pool2d(torch.randn(1, 8, 40, 40), 5, stride=1, padding=2)[..., 4:36, 4:36]   # smooth, 32 x 32
    p0 = torch.tensor([[16.0, 16.0]])
    # Handles that have not moved and no step to take: the first features are the target, exactly.
    assert warp_supervision_loss(feat0, feat0, p0, p0, p0, 32, sigma=100.0) == 0
    # The handle came 2 px right and steps 1 more: with a wide field, the target is feat0 moved 3 px right.
    handles, targets = torch.tensor([[18.0, 16.0]]), torch.tensor([[30.0, 16.0]])
    moved = torch.roll(feat0, shifts=3, dims=-1)
    interior = torch.zeros(1, 1, 32, 32)
    interior[..., 4:28, 4:28] = 1                 # away from the border and the roll's wrap
    at_moved = warp_supervision_loss(moved, feat0, p0, handles, targets, 32, sigma=100.0, weight=interior)
    at_start = warp_supervision_loss(feat0, feat0, p0, handles, targets, 32, sigma=100.0, weight=interior)
    assert at_moved < 0.1 * at_start     # not 0: the wide Gaussian still fades a little across the map


def test_the_paper_preset_has_no_warp_term_and_the_default_has_one():
    assert DragConfig.preset("paper").lambda_warp == 0 and DragConfig().lambda_warp > 0


def test_the_default_drag_with_its_warp_term_still_moves_the_handle(G):
    handle, target = (28, 32), (38, 32)
    s = session(G, points=([handle], [target]), max_steps=80)
    assert s.config.lambda_warp > 0
    final = run(s)[-1]
    assert final.distances[0] < 0.4 * 10     # most of the way on the tiny random generator


def test_the_latent_pull_keeps_the_latent_closer_to_where_the_drag_started(G):
    start = G.ws_from_seed(0)
    moved = {}
    for pull in (0.0, 50.0):
        s = session(G, points=([(28, 32)], [(38, 32)]), max_steps=15, stop_distance=0.1, lambda_latent=pull)
        run(s)
        moved[pull] = (s.state().ws - start).norm().item()
    assert moved[0.0] > 0 and moved[50.0] < 0.5 * moved[0.0]
    with pytest.raises(DragConfigError, match="lambda_latent"):
        DragConfig(lambda_latent=-1)


# --------------------------------------------------------------------------- FreeDrag-style line search


def _update(state, feat, loss, handles, targets, active):
    """One line-search update from ``feat``, with this step's template distances ``loss``."""
    from draggan.engine.line_search import patch_features, update_line_search
    goal_features = patch_features(feat, state.goals, disk_offsets(1.0), 32)
    return update_line_search(state, feat, goal_features, loss, handles, targets, active, disk_offsets(1.0), 32)


def _line_state(handles, targets, step_px=1.0):
    from draggan.engine.line_search import start_line_search
    feat0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    return feat0, start_line_search(feat0, handles, targets, disk_offsets(1.0), 32, step_px)


def test_line_search_accepts_a_reached_goal_and_moves_the_next_one_along_the_line():
    handles, targets = torch.tensor([[10.0, 10.0]]), torch.tensor([[20.0, 10.0]])
    feat0, state = _line_state(handles, targets)
    np.testing.assert_allclose(state.goals.numpy(), [[11.0, 10.0]])
    low = state.goal_loss0 * 0.3                                   # the template distance fell by 70 %
    new = _update(state, feat0, low, handles, targets, torch.tensor([True]))
    np.testing.assert_allclose(new.numpy(), [[11.0, 10.0]])         # the handle is where the goal was
    np.testing.assert_allclose(state.goals.numpy(), [[12.0, 10.0]])  # the next goal, one step further
    assert state.steps.item() == 0


def test_line_search_backtracks_a_goal_that_made_no_progress_and_never_passes_the_target():
    from draggan.engine.line_search import STEPS_PER_GOAL
    handles, targets = torch.tensor([[10.0, 10.0], [30.0, 10.0]]), torch.tensor([[20.0, 10.0], [30.5, 10.0]])
    feat0, state = _line_state(handles, targets, step_px=2.0)
    np.testing.assert_allclose(state.goals.numpy(), [[12.0, 10.0], [30.5, 10.0]])  # the target when closer
    active = torch.tensor([True, True])
    for _ in range(STEPS_PER_GOAL):
        new = _update(state, feat0, state.goal_loss0.clone(), handles, targets, active)
    np.testing.assert_allclose(new.numpy(), handles.numpy())            # no progress: the handles stay
    np.testing.assert_allclose(state.step_px.numpy(), [1.0, 1.0])       # the step halves
    np.testing.assert_allclose(state.goals.numpy(), [[11.0, 10.0], [30.5, 10.0]])


def test_the_line_search_tracking_drags_the_handle_to_its_target(G):
    s = session(G, points=([(28, 32)], [(38, 32)]), max_steps=300, tracking="line")
    final = run(s)[-1]
    assert final.distances[0] < 0.3 * 10
    assert abs(final.handles[0][1] - 32) < 1e-4          # the handle stays on the line to its target
    with pytest.raises(DragConfigError, match="tracking"):
        DragConfig(tracking="optical flow")


def test_line_search_accepts_a_goal_already_as_close_as_half_the_first_goals_distance():
    """A goal set next to the handle starts near the floor and cannot halve its distance again: no stall."""
    handles, targets = torch.tensor([[10.0, 10.0]]), torch.tensor([[20.0, 10.0]])
    feat0, state = _line_state(handles, targets)
    state.first_loss.fill_(1.0)
    state.goal_loss0.fill_(0.1)
    new = _update(state, feat0, torch.tensor([0.09]), handles, targets, torch.tensor([True]))
    np.testing.assert_allclose(new.numpy(), [[11.0, 10.0]])
    # Without that, the same distance (0.9 of the goal's start) is no progress: the handle stays.
    _, state = _line_state(handles, targets)
    state.first_loss.fill_(0.1)
    state.goal_loss0.fill_(0.1)
    new = _update(state, feat0, torch.tensor([0.09]), handles, targets, torch.tensor([True]))
    np.testing.assert_allclose(new.numpy(), handles.numpy())
