"""draggan.drawing.overlay: view geometry, points, mask shading and mask extraction."""

import numpy as np
import pytest

from draggan.drawing.overlay import (
    HANDLE_COLOR,
    MASK_COLOR,
    TARGET_COLOR,
    draw_points,
    mask_from_strokes,
    mask_layer,
    render_view,
    shade_fixed_region,
    upscale,
    view_scale,
    view_to_pixel,
)


def test_view_scale_brings_small_images_to_about_512():
    assert view_scale(128) == 4
    assert view_scale(64) == 8
    assert view_scale(256) == 2
    assert view_scale(512) == 1
    assert view_scale(1024) == 1      # never below 1
    assert view_scale(128, view_size=256) == 2


def test_view_to_pixel_inverts_upscaling():
    # Every view pixel of generator pixel (x, y) maps back to it; outside gives None.
    scale, R = 4, 16
    for x, y in [(0, 0), (3, 7), (15, 15)]:
        for du in range(scale):
            for dv in range(scale):
                assert view_to_pixel(x * scale + du, y * scale + dv, scale, R) == (x, y)
    assert view_to_pixel(-1, 5, scale, R) is None
    assert view_to_pixel(5, R * scale, scale, R) is None
    assert view_to_pixel(float("nan"), 5, scale, R) is None


def test_upscale_nearest_repeats_pixels_and_smooth_keeps_size():
    img = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3) * 10
    big = upscale(img, 3)
    assert big.shape == (6, 6, 3)
    assert (big[:3, :3] == img[0, 0]).all() and (big[3:, 3:] == img[1, 1]).all()
    smooth = upscale(img, 3, smooth=True)
    assert smooth.shape == (6, 6, 3) and smooth.dtype == np.uint8
    assert not np.array_equal(smooth, big)   # interpolated, not blocky


def test_draw_points_colours_handle_and_target_centres():
    R, scale = 32, 8
    view = np.full((R * scale, R * scale, 3), 128, np.uint8)
    out = draw_points(view, [(4, 5)], [(20, 25)], scale, numbers=False)
    hx, hy = int((4 + 0.5) * scale), int((5 + 0.5) * scale)
    tx, ty = int((20 + 0.5) * scale), int((25 + 0.5) * scale)
    assert tuple(out[hy, hx]) == HANDLE_COLOR
    assert tuple(out[ty, tx]) == TARGET_COLOR
    # The arrow between them is drawn (the midpoint is no longer the background grey).
    mx, my = (hx + tx) // 2, (hy + ty) // 2
    assert not (out[my - 2:my + 3, mx - 2:mx + 3] == 128).all()
    assert (view == 128).all()    # input untouched


def test_draw_points_pending_handle_and_length_mismatch():
    view = np.zeros((64, 64, 3), np.uint8)
    out = draw_points(view, [], [], 4, pending=(8, 8))
    assert tuple(out[34, 34]) == HANDLE_COLOR
    with pytest.raises(ValueError):
        draw_points(view, [(1, 1)], [], 4)


def test_shade_fixed_region_dims_only_outside_the_mask():
    view = np.full((8, 8, 3), 200, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    out = shade_fixed_region(view, mask, 2)
    assert (out[2:6, 2:6] == 200).all()                 # movable: unchanged
    assert out[0, 7, 0] < 200                            # fixed and away from the edge: darker
    assert tuple(out[1, 3]) == MASK_COLOR                # outline just outside the movable region
    assert np.array_equal(shade_fixed_region(view, None, 2), view)


def test_render_view_without_points_is_the_upscaled_image():
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(render_view(img, 4), upscale(img, 4))
    with_points = render_view(img, 4, [(2, 2)], [(10, 10)])
    assert with_points.shape == (64, 64, 3) and not np.array_equal(with_points, upscale(img, 4))


def test_mask_from_strokes_resamples_and_thresholds():
    alpha = np.zeros((64, 64), np.uint8)
    alpha[0:16, 0:16] = 255            # covers generator pixels (0..3, 0..3) of a 16 px image fully
    alpha[40, 40] = 255                # 1/16 of one generator pixel: below the default 25%
    mask = mask_from_strokes(alpha, 16)
    assert mask.shape == (16, 16) and mask.dtype == bool
    assert mask[:4, :4].all() and mask.sum() == 16
    rgba = np.zeros((64, 64, 4), np.uint8)
    assert mask_from_strokes(rgba, 16) is None        # nothing painted
    rgba[..., 3] = alpha
    assert np.array_equal(mask_from_strokes(rgba, 16), mask)


def test_mask_layer_round_trips_through_mask_from_strokes():
    mask = np.zeros((16, 16), bool)
    mask[3:9, 5:12] = True
    layer = mask_layer(mask, 4)
    assert layer.shape == (64, 64, 4)
    assert np.array_equal(mask_from_strokes(layer, 16), mask)
    with pytest.raises(ValueError):
        mask_layer(None, 4)
