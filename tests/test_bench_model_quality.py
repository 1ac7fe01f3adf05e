"""bench.model_quality: the Fréchet distance and its second, independent estimate."""

import numpy as np

from bench import model_quality


def test_frechet_distance_is_the_squared_mean_shift_for_equal_covariances():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    shift = np.array([0.5, -1.0, 2.0])
    assert abs(model_quality.frechet_distance(a, a + shift) - (shift ** 2).sum()) < 1e-6
    assert model_quality.frechet_distance(a, rng.normal(size=(4000, 3))) < 0.02


def test_a_second_disjoint_sample_set_gives_a_second_fd(tiny_model_dir, monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    eval_set, generated = rng.normal(size=(50, 4)), rng.normal(size=(120, 4)) + 1.0

    def fake_embed_all(images):
        images = list(images)
        # The generated images come first (1 per sample), then the eval faces.
        return 1.0, (generated if len(images) == 120 else eval_set)

    monkeypatch.setattr(model_quality, "embed_all", fake_embed_all)
    monkeypatch.setattr(model_quality, "eval_images", lambda: iter([None] * 50))
    result = model_quality.main(["--model", str(tiny_model_dir), "--num", "120", "--out", str(tmp_path / "q.json")])
    assert result["fd_set_size"] == 50
    assert result["fd_samples_vs_eval"] == round(model_quality.frechet_distance(generated[:50], eval_set), 4)
    assert result["fd_next_samples_vs_eval"] == round(model_quality.frechet_distance(generated[50:100], eval_set), 4)
    assert result["fd_next_samples_vs_eval"] != result["fd_samples_vs_eval"]
