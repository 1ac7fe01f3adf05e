"""The drag-accuracy benchmark's metrics and protocol (CPU, tiny generator, a stand-in landmark detector)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import ablate, eval_drag, staged
from bench.landmarks import FaceMeasure, LandmarkError, handle_points, measure_face
from bench.model_quality import DATA
from draggan.engine import DragConfig
from draggan.models.networks import Generator

R = 64
TEMPLATE_FILE = Path(__file__).resolve().parents[1] / "checkpoints" / "celeba128" / "alignment.json"


def template68(resolution=R) -> np.ndarray:
    """A face-like 68-point layout: the dataset's mean landmarks if present, else a ring."""
    if TEMPLATE_FILE.is_file():
        d = json.loads(TEMPLATE_FILE.read_text())
        pts = np.asarray(d["points_xy"], np.float64)
        return (pts + 0.5) * resolution / d["resolution"] - 0.5
    a = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return resolution / 2 + resolution / 4 * np.stack([np.cos(a), np.sin(a)], 1)


def fake_detector(rgb, embed=False):
    """Deterministic stand-in for dlib: the template shifted by the image's brightness centroid.

    Different images give different landmarks and embeddings, the same image the same ones.
    """
    g = np.asarray(rgb, np.float64).mean(-1)
    w = g / g.sum()
    ys, xs = np.mgrid[:g.shape[0], :g.shape[1]]
    c = np.array([(w * xs).sum(), (w * ys).sum()]) - (g.shape[0] - 1) / 2
    emb = g.reshape(16, g.shape[0] // 16, 8, g.shape[1] // 8).mean((1, 3)).ravel() / 255 if embed else None
    return FaceMeasure(landmarks=template68(g.shape[0]) + 3 * c, score=1.0, embedding=emb)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from a second thread, and on a busy shared CPU two threads wait on each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    G = Generator(img_resolution=R, channel_base=2048, channel_max=64, z_dim=64, w_dim=64, mapping_layers=2)
    return G.eval().requires_grad_(False)


# --------------------------------------------------------------------------- metrics


def test_mean_distance_of_identical_sets_is_zero_and_known_shift():
    pts = template68()
    assert eval_drag.mean_distance(pts, pts) == 0
    assert eval_drag.mean_distance(pts, pts + [3.0, 4.0]) == pytest.approx(5.0)
    # Mean of per-point distances, not the distance of means.
    a = np.array([[0.0, 0.0], [0.0, 0.0]])
    b = np.array([[1.0, 0.0], [-3.0, 0.0]])
    assert eval_drag.mean_distance(a, b) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        eval_drag.mean_distance(a, b[:1])


def test_frechet_distance_zero_for_same_set_and_mean_shift_for_shifted_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    assert eval_drag.frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    shift = np.zeros(8)
    shift[0] = 2.0
    # Same covariance, shifted mean: the distance is exactly |shift|^2.
    assert eval_drag.frechet_distance(x, x + shift) == pytest.approx(4.0, rel=1e-6)
    # Scaling one set by 2 (same mean): tr(S + 4S - 2*2S) = tr(S).
    xc = x - x.mean(0)
    s = np.cov(xc, rowvar=False)
    assert eval_drag.frechet_distance(xc, 2 * xc) == pytest.approx(np.trace(s), rel=1e-5)


def test_paper_reference_scales_with_resolution():
    ref = eval_drag.paper_reference(128)
    assert ref["1"]["md"] == pytest.approx(2.44 / 4, abs=1e-3)
    assert ref["68"]["md_no_edit"] == pytest.approx(16.02 / 4, abs=1e-3)
    assert eval_drag.paper_reference(512)["5"]["md"] == 3.18


def test_handle_subsets():
    lm = template68()
    assert handle_points(lm, 1).tolist() == [lm[30].tolist()]
    five = handle_points(lm, 5)
    np.testing.assert_allclose(five[0], lm[36:42].mean(0))
    np.testing.assert_allclose(five[1], lm[42:48].mean(0))
    np.testing.assert_allclose(five[2:], lm[[30, 48, 54]])
    np.testing.assert_array_equal(handle_points(lm, 68), lm)
    with pytest.raises(LandmarkError):
        handle_points(lm, 3)
    with pytest.raises(LandmarkError):
        handle_points(lm[:10], 5)


# --------------------------------------------------------------------------- dlib on a real face


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "eval").is_dir(), reason="celeba128 dataset not present (../shared or $DRAGGAN_CELEBA128)")
def test_dlib_landmarks_are_mapped_back_to_image_pixels():
    from PIL import Image

    eval_dir = DATA / "eval"
    rgb = np.asarray(Image.open(sorted(eval_dir.glob("*.png"))[0]).convert("RGB"))
    face = measure_face(rgb, embed=True)
    assert face is not None and face.landmarks.shape == (68, 2) and face.embedding.shape == (128,)
    # Aligned crops put landmarks near the dataset's mean positions (wrong scaling would be off by 100+ px).
    assert eval_drag.mean_distance(face.landmarks, template68(128)) < 5
    # Measuring at x2 and x4 agrees to about a pixel: the mapping back does not depend on the scale.
    assert eval_drag.mean_distance(measure_face(rgb, scale=2).landmarks, face.landmarks) < 1.5
    # The same image, shifted right by 6 px (edge replicated), moves the landmarks by about 6 px in x.
    shifted = np.concatenate([np.repeat(rgb[:, :1], 6, axis=1), rgb[:, :-6]], axis=1)
    moved = measure_face(shifted).landmarks
    assert np.median(moved[:, 0] - face.landmarks[:, 0]) == pytest.approx(6, abs=1)
    assert np.median(moved[:, 1] - face.landmarks[:, 1]) == pytest.approx(0, abs=1)
    # A flat grey image has no face.
    assert measure_face(np.full((128, 128, 3), 128, np.uint8)) is None
    with pytest.raises(LandmarkError):
        measure_face(np.zeros((128, 128), np.uint8))


# --------------------------------------------------------------------------- protocol end to end


def test_protocol_runs_end_to_end_on_a_tiny_generator(G):
    result = eval_drag.evaluate(G, num_pairs=2, handle_counts=(1, 5), config=DragConfig(feature_block=4),
                                max_steps=4, detector=fake_detector, command="test")
    assert result["meta"]["pairs"] == 2 and result["meta"]["resolution"] == R
    assert set(result["settings"]) == {"1", "5"}
    rows = result["rows"]
    assert len(rows) == 4 and all(r["face_found"] for r in rows)
    for r in rows:
        assert 1 <= r["steps"] <= 4 and r["seconds"] > 0 and r["md"] >= 0
    # No-edit MD is the distance between the pair's own landmark subsets, as the detector gave them.
    pairs, _ = eval_drag.sample_pairs(G, 2, detector=fake_detector)
    h, t = eval_drag.pair_points(pairs[0], 5, R)
    assert rows[0]["seed_source"] == pairs[0].source.seed
    first5 = [r for r in rows if r["handles"] == 5][0]
    assert first5["md_no_edit"] == pytest.approx(eval_drag.mean_distance(h, t))
    s = result["settings"]["5"]
    assert s["md_no_edit_mean"] == pytest.approx(
        np.mean([r["md_no_edit"] for r in rows if r["handles"] == 5]), abs=1e-4)  # summaries round to 4 digits
    assert result["realism"]["5"]["n"] == 2 and result["realism"]["5"]["fd"] >= 0
    assert s["md_detector_noise"] >= 0
    table = eval_drag.markdown_table(result)
    assert "| 5 |" in table and "paper" in table
    json.dumps(result, default=staged._json_default)  # the result is JSON-serializable


def test_an_edit_with_no_face_found_is_counted_not_averaged(G):
    pairs, _ = eval_drag.sample_pairs(G, 1, detector=fake_detector)
    h, t = eval_drag.pair_points(pairs[0], 1, R)
    run = eval_drag.run_drag(G, pairs[0].source.ws, h, t, DragConfig(feature_block=4), max_steps=2)
    row = eval_drag.evaluate_edit(pairs[0], run, 1, R, detector=lambda rgb, embed=False: None)
    assert row["md"] is None and not row["face_found"]
    s = eval_drag.summarize([row, dict(row, md=2.0, face_found=True)])
    assert s["md_mean"] == 2.0 and s["faces_found"] == 1 and s["edits"] == 2


def test_sampling_skips_seeds_without_a_face(G):
    calls = {"n": 0}

    def every_other(rgb, embed=False):
        calls["n"] += 1
        return fake_detector(rgb, embed) if calls["n"] % 2 == 0 else None

    faces, stats = eval_drag.sample_faces(G, 3, detector=every_other)
    assert len(faces) == 3 and stats == {"seeds_tried": 6, "seeds_without_face": 3}
    assert [f.seed for f in faces] == [1, 3, 5]


def test_ablation_reuses_identical_settings_and_recommends_lowest_md(G):
    grid = {"feature_block": [("b3", {"feature_block": 3}), ("b4", {"feature_block": 4})],
            "r1": [("r1=1", {"r1": 1.0, "feature_block": 4}), ("r1=2", {"r1": 2.0, "feature_block": 4})]}
    result = ablate.ablate(G, grid, DragConfig(feature_block=4, r1=1.0), 1, "pairs", max_steps=2,
                           detector=fake_detector, first_seed=0)
    by_label = {v["label"]: v for v in result["variants"]}
    assert by_label["r1=1"]["reused"] and not by_label["b4"]["reused"]  # same effective settings as b4
    assert by_label["r1=1"]["summary"] == by_label["b4"]["summary"]
    assert "**feature_block**" in ablate.markdown_tables(result)


def test_recommend_picks_lowest_md_and_breaks_ties_by_speed():
    def v(label, md, sec):
        return {"group": "g", "label": label, "overrides": {}, "summary": {"md_mean": md, "seconds_per_edit": sec}}

    assert ablate.recommend([v("a", 1.0, 10), v("b", 2.0, 1)])["g"]["label"] == "a"
    rec = ablate.recommend([v("a", 1.0, 10), v("b", 1.03, 1), v("c", None, 0)], tie=0.05)["g"]
    assert rec["label"] == "b" and rec["tied_with"] == ["a"]


def test_variant_config_all_layers_means_every_w_plus_layer(G):
    cfg = ablate.variant_config(DragConfig(), {"latent_space": "w+", "optimize_layers": None}, G.num_ws)
    assert cfg.optimize_layers == G.num_ws
    w = ablate.variant_config(DragConfig(), {"latent_space": "w"}, G.num_ws)
    # In W mode optimize_layers does not matter, so W variants with different values are one run.
    assert ablate.config_key(w, R, 5) == ablate.config_key(dataclasses_replace(w, optimize_layers=3), R, 5)


def dataclasses_replace(cfg, **kw):
    import dataclasses
    return dataclasses.replace(cfg, **kw)


def test_named_edit_tasks_move_the_named_landmarks_by_the_offsets_scaled_to_the_resolution(G):
    faces, _ = eval_drag.sample_faces(G, 3, detector=fake_detector)
    tasks, _ = ablate.make_tasks(G, "edits", 3, first_seed=0, detector=fake_detector)
    for face, task, (name, idx, offsets) in zip(faces, tasks, eval_drag.EDITS):
        assert task.name == name and task.face.seed == face.seed
        np.testing.assert_allclose(task.handles, face.face.landmarks[idx])
        np.testing.assert_allclose(task.targets - task.handles, np.array(offsets) * R / 128)
        # The measured points of a re-detected face are the same landmarks.
        np.testing.assert_array_equal(task.select(face.face.landmarks), face.face.landmarks[idx])
    run = eval_drag.run_task(G, tasks[0], DragConfig(feature_block=4), max_steps=2)
    row = eval_drag.measure(tasks[0], run, detector=fake_detector)
    assert row["task"] == eval_drag.EDITS[0][0] and row["handles"] == len(eval_drag.EDITS[0][1])
    assert row["md_no_edit"] == pytest.approx(np.linalg.norm(eval_drag.EDITS[0][2], axis=1).mean() * R / 128)
    with pytest.raises(ValueError):
        ablate.make_tasks(G, "nonsense", 1, detector=fake_detector)


def test_run_drag_reports_the_tracked_handles_and_the_step_trace(G):
    pairs, _ = eval_drag.sample_pairs(G, 1, detector=fake_detector)
    task = eval_drag.pair_task(pairs[0], 5, R)
    run = eval_drag.run_task(G, task, DragConfig(feature_block=4, stop_distance=0.01), max_steps=3, image_every=2)
    assert run.steps == 3 and not run.done
    assert [s for s, _ in run.tracked] == [0, 1, 2, 3]
    assert [f[0] for f in run.frames] == [0, 2, 3]  # every 2nd step and the last one
    np.testing.assert_array_equal(run.final_handles, run.frames[-1][2])
    # Tracked distances are the mean handle-target distances of those handles.
    assert run.tracked[-1][1] == pytest.approx(np.linalg.norm(run.final_handles - task.targets, axis=1).mean(),
                                               abs=1e-4)
