"""The edit-quality benchmark's references, drags and grid (CPU, tiny generator, a stand-in landmark detector)."""

import numpy as np
import pytest
from test_bench_drag import G, R, fake_detector, one_thread  # noqa: F401  (fixtures: tiny generator, one thread)

from bench import edit_quality, eval_drag
from draggan.engine import DragConfig, DragSession


def dot_image(x: int, y: int, size: int = 64) -> np.ndarray:
    img = np.full((size, size, 3), 40, np.uint8)
    img[y - 1:y + 2, x - 1:x + 2] = 250
    return img


def test_the_reference_warp_moves_the_handle_content_to_the_target_and_nothing_far_away():
    img = dot_image(20, 30)
    img[60:, 60:] = (10, 200, 90)                                 # a far corner that must not change
    out = edit_quality.gaussian_warp(img, [(20, 30)], [(25, 30)], sigma=4.0)
    ys, xs = np.nonzero(out[..., 0] > 200)
    assert abs(xs.mean() - 25) < 0.6 and abs(ys.mean() - 30) < 0.6
    np.testing.assert_array_equal(out[60:, 60:], img[60:, 60:])
    # No move, no change.
    np.testing.assert_array_equal(edit_quality.gaussian_warp(img, [(20, 30)], [(20, 30)], 4.0), img)


def test_the_jpeg_reference_is_close_but_not_identical():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 60 + 100).astype(np.uint8)
    out = edit_quality.jpeg(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - img.astype(int))
    assert 0 < diff.mean() < 20


def test_edits_run_in_process_give_renders_of_the_unedited_latent_and_local_results(G):
    faces, _ = eval_drag.sample_faces(G, 1, detector=fake_detector)
    tasks = [eval_drag.edit_task(faces[0], e, R) for e in eval_drag.EDITS[:2]]
    config = DragConfig(feature_block=4, max_steps=3, stop_distance=0.01)
    runs = edit_quality.run_edits("unused: in-process", G, tasks, config, workers=0)
    before = DragSession(G, faces[0].ws, config).render()
    for task, run in zip(tasks, runs):
        np.testing.assert_array_equal(task.face.image, before)    # the unedited face as the drag draws it
        assert run.image.shape == (R, R, 3) and run.steps == 3
        assert not np.array_equal(run.image, before)              # the drag changed something ...
        far = eval_drag.locality(before, run.image, np.concatenate([task.handles, task.targets]))
        assert far["far_pixels"] > 0 and far["far_psnr"] is None  # ... and nothing far from it
    grid = edit_quality.grid_image(tasks, runs, faces=1, scale=2)
    assert grid.shape == (2 * R, 3 * 2 * R, 3)                    # the face, then one cell per edit


def test_realism_counts_detections_and_needs_two_faces_for_a_distance(monkeypatch):
    embeddings = iter([np.zeros(4), None, np.ones(4)])
    monkeypatch.setattr(edit_quality, "detect_and_embed", lambda image: (lambda e: (e is not None, e))(next(embeddings)))
    images = [np.zeros((8, 8, 3), np.uint8)] * 3
    out = edit_quality.realism(images, np.random.default_rng(0).normal(size=(50, 4)))
    assert out["detection_rate"] == pytest.approx(2 / 3, abs=1e-4) and out["n"] == 2
    assert out["fd_to_eval"] is not None and out["fd_to_eval"] > 0
