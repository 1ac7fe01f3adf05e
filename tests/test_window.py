"""A local drag's windowed blocks (draggan/engine/window.py) against the whole-image computation (CPU, tiny generator)."""

import numpy as np
import pytest
import torch
from helpers import tiny_generator

from draggan.engine import DragConfig, DragSession
from draggan.engine.features import synthesis_features
from draggan.engine.session import finish_frame
from draggan.engine.window import Window, changed_boxes, finish_in_window, halve, worth_it

pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


def outputs_after(G, ws, block, x, img):
    """Every later block's (features, skip image) and the image, from ``block``'s output, on the whole image."""
    out = {}
    for last in range(block + 1, G.num_blocks + 1):
        x, img = G.synthesis.finish(x, img, ws, last - 1, last_block=last)
        out[last] = (x, img)
    return out


@pytest.fixture(scope="module")
def G128():
    """A 128 px generator with the bundled model's depth (6 blocks), random weights."""
    return tiny_generator(seed=1, img_resolution=128, channel_base=1024, channel_max=32)


def test_a_change_stays_inside_the_boxes_that_changed_boxes_gives(G128):
    G, block = G128, 3                              # blend at 16 px; blocks 4-6 follow
    ws = G.ws_from_seed(0)
    with torch.no_grad():
        x, img = synthesis_features(G, ws, block, with_image=True)
        for box in [(5, 9, 6, 7), (0, 3, 12, 16), (7, 8, 7, 8)]:   # at the image's edge too
            x2, img2 = x.clone(), img.clone()
            x2[..., box[0]:box[1], box[2]:box[3]] += torch.randn_like(x2[..., box[0]:box[1], box[2]:box[3]])
            img2[..., box[0]:box[1], box[2]:box[3]] += 1
            boxes = changed_boxes(G, block, box)
            before, after = outputs_after(G, ws, block, x, img), outputs_after(G, ws, block, x2, img2)
            for b, (y0, y1, x0, x1) in boxes.items():
                for a, c in zip(before[b], after[b]):
                    changed = (a - c).abs().amax(dim=(0, 1)) > 0
                    inside = torch.zeros_like(changed)
                    inside[y0:y1, x0:x1] = True
                    assert changed.any() and not (changed & ~inside).any(), (box, b)
                    if b == block + 1:   # ... and tight: the change reaches the box's pixel to spare
                        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
                        assert rows[0] - y0 <= 1 and cols[0] - x0 <= 1 and y1 - 1 - rows[-1] <= 1, (box, b)


@pytest.mark.parametrize("box", [(4, 10, 5, 9), (0, 6, 9, 16), (6, 7, 0, 16)])
def test_the_windowed_blocks_give_the_whole_images_pixels(G128, box):
    G, block = G128, 3
    ws0, ws = G.ws_from_seed(0), G.ws_from_seed(1)
    ws = torch.cat([ws[:, :G.synthesis.first_layer_of_block(block + 1)],
                    ws0[:, G.synthesis.first_layer_of_block(block + 1):]], dim=1)   # a local drag's latent
    with torch.no_grad():
        x0, img0 = synthesis_features(G, ws0, block, with_image=True)
        x1, img1 = synthesis_features(G, ws, block, with_image=True)
        mask = torch.zeros(1, 1, 16, 16)
        mask[..., box[0]:box[1], box[2]:box[3]] = torch.rand(box[1] - box[0], box[3] - box[2]) + 0.1
        x, img = x0 + mask * (x1 - x0), img0 + mask * (img1 - img0)    # the blend, as region.LocalBlend does it
        unedited = outputs_after(G, ws0, block, x0, img0)
        window = Window(changed_boxes(G, block, box), {5: unedited[5][0]}, {5: unedited[5][1]}, unedited[6][1])
        whole = outputs_after(G, ws, block, x, img)
        # The same numbers up to the summation order that a convolution's kernel picks for the crop's size.
        same = lambda a, b: torch.allclose(a, b, rtol=0, atol=2e-6)   # noqa: E731
        features, skip = finish_in_window(G, x, img, ws, block, window, last_block=5)
        assert same(features, whole[5][0]) and same(skip, whole[5][1])
        features, none = finish_in_window(G, x, None, ws, block, window, last_block=5, with_rgb=False)
        assert same(features, whole[5][0]) and none is None
        image = finish_in_window(G, x, img, ws, block, window)
        assert same(image, whole[6][1])
        # Outside the box it is the unedited image to the bit, as the whole computation's is.
        y0, y1, x0, x1 = window.boxes[6]
        outside = torch.ones(128, 128, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(image[..., outside], unedited[6][1][..., outside])
        assert torch.equal(whole[6][1][..., outside], unedited[6][1][..., outside])
        # From the feature block on, as a partial frame continues.
        assert same(finish_in_window(G, whole[5][0], whole[5][1], ws, 5, window), whole[6][1])


def test_halve_covers_what_the_doubled_box_reads():
    assert halve((10, 20, 0, 5), 16, 3) == (2, 13, 0, 6)
    assert halve((0, 32, 0, 32), 16, 3) == (0, 16, 0, 16)


def drag(G, points, steps=8, **config):
    s = DragSession(G, G.ws_from_seed(2), DragConfig(feature_block=5, **config))
    s.set_points(*points)
    states = list(s.drag(max_steps=steps, image_every=0, partial_frames=True))
    frames = [finish_frame(G, st.partial_frame, s.config) for st in states]
    return s, states, frames


@pytest.mark.parametrize("autocast", [False, True])
def test_a_windowed_local_drag_is_the_whole_image_drag(G128, autocast):
    points = ([(40, 50)], [(48, 54)])
    s, states, frames = drag(G128, points, autocast=autocast)
    window = s._opt.blend.window
    assert window is not None and worth_it(G128, window.boxes)
    _, plain_states, plain_frames = drag(G128, points, autocast=autocast, windowed=False)
    for a, b in zip(states, plain_states, strict=True):
        assert np.array_equal(a.handles, b.handles) and a.loss == pytest.approx(b.loss, rel=1e-4)
    for a, b in zip(frames, plain_frames, strict=True):     # uint8 frames: a rounding apart at most
        assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 0.01
    image = s.render()
    s.reconfigure(DragConfig(feature_block=5, autocast=autocast, windowed=False))
    assert np.abs(s.render().astype(int) - image).max() <= 1


def test_no_window_where_it_would_not_pay_or_cannot_be_exact(G128):
    far = ([(10, 10), (110, 110)], [(16, 10), (116, 110)])          # two corners: the box is nearly everything
    assert drag(G128, far, steps=1)[0]._opt.blend.window is None
    near = ([(40, 50)], [(48, 54)])
    assert drag(G128, near, steps=1, noise_mode="random")[0]._opt.blend.window is None
    assert drag(G128, near, steps=1, windowed=False)[0]._opt.blend.window is None
    assert drag(G128, near, steps=1, region="global")[0]._opt.blend is None
