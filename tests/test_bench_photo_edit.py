"""bench/photo_edit.py: the metrics behind BENCHMARKS.md's photo-edit table (no dlib)."""

import math

import numpy as np
import pytest

from bench.photo_edit import EDITS, FAR, far_mask, feature_flow, psnr_on, sample_flow
from inversion.align import Alignment

pytestmark = pytest.mark.usefixtures("one_thread")


def test_far_mask_is_the_face_square_beyond_40_of_128_from_every_point():
    # Photo 300 x 300, square of 128 covering photo pixels 50..250 (scale 0.64).
    s = 128 / 200
    alignment = Alignment(np.array([[s, 0, (0.5 - 50) * s - 0.5], [0, s, (0.5 - 50) * s - 0.5]]), (300, 300), 128,
                          "template")
    mask = far_mask(alignment, (300, 300, 3), np.array([[64.0, 64.0]]))
    assert not mask[:40].any() and not mask[:, 260:].any()            # outside the square: not counted
    assert not mask[150, 150] and mask[60, 60]                        # the square's centre is the point
    radius_photo = FAR * 128 / s
    assert mask[150, int(150 + radius_photo + 2)] and not mask[150, int(150 + radius_photo - 2)]


def test_psnr_is_infinite_for_identical_pixels_and_finite_otherwise():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 10
    everywhere = np.ones((4, 4), bool)
    assert math.isinf(psnr_on(a, a, everywhere))
    assert psnr_on(a, b, everywhere) == pytest.approx(10 * math.log10(255 ** 2 / (100 * 3 / 48)))


def test_feature_flow_is_zero_for_an_unchanged_latent_and_sample_flow_reads_it(G):
    ws = G.ws_from_seed(0, 0.7)
    flow = feature_flow(G, ws, ws, block=3, radius=2)
    assert flow.shape == (64, 64, 2) and np.abs(flow).max() == 0
    field = np.zeros((64, 64, 2), np.float32)
    field[..., 0] = np.arange(64)[None, :]
    assert sample_flow(field, np.array([[10.5, 3.0]]))[0, 0] == pytest.approx(10.5)


def test_the_named_edits_are_the_issues():
    assert EDITS["smile"] == {48: (-2, -4), 54: (2, -4)} and EDITS["chin_down"] == {8: (0, 5)}
    assert EDITS["nose_right"] == {30: (5, 0)} and EDITS["brows_up"] == {19: (0, -5), 24: (0, -5)}
