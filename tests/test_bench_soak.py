"""bench/soak_app.py's logic against the real app (tiny model, served in this process): one session's rounds,
the export checks and the local replay that shows no session sees another's latent. No timings here."""

import argparse
import time

import pytest
from helpers import serve

import app
from bench import soak_app

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    demo = app.build_app({"tiny": str(tiny_model_dir)}, "tiny", "cpu", autocast=False,
                         store=app.SessionStore(export_root=tmp_path_factory.mktemp("exports")))
    with serve(demo) as url:
        yield demo, url


def soak_args(**kw):
    base = dict(model="tiny", resolution=64, steps=3, lr=0.01, invert_interval=0, first_invert_after=0, minutes=1)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.slow
def test_two_sessions_rounds_export_their_own_latents_and_replay_exactly(served, tiny_model_dir, tmp_path):
    demo, url = served
    shared = soak_app.Shared(soak_args(), url, time.monotonic())
    a, b = soak_app.Session(0, shared, tmp_path / "unused.png"), soak_app.Session(1, shared, tmp_path / "unused.png")
    for session in (a, b, a):
        session.sample_round()
    assert shared.errors == [] and len(shared.exports) == 3
    endpoints = {c["endpoint"] for c in shared.calls}
    assert endpoints == {"sample", "set_points", "drag", "drag_stopped", "stop", "undo", "export"}
    result = soak_app.replay(shared.exports, {"tiny": str(tiny_model_dir)}, "tiny", limit=10, autocast=False)
    assert result["replayed"] == 3 and result["closer_to_another_sessions_replay"] == 0
    assert result["matched_1e-4"] == 3, result


@pytest.mark.slow
def test_a_swapped_latent_is_caught_by_the_replay(served, tiny_model_dir, tmp_path):
    """The leak check can fail: give one session's export the other's latent and the replay says so."""
    demo, url = served
    shared = soak_app.Shared(soak_args(), url, time.monotonic())
    a, b = soak_app.Session(2, shared, tmp_path / "unused.png"), soak_app.Session(3, shared, tmp_path / "unused.png")
    a.sample_round()
    b.sample_round()
    ea, eb = shared.exports
    ea.ws, eb.ws = eb.ws, ea.ws
    result = soak_app.replay(shared.exports, {"tiny": str(tiny_model_dir)}, "tiny", limit=10, autocast=False)
    assert result["matched_1e-4"] == 0 and result["closer_to_another_sessions_replay"] == 2


def test_statuses_and_summaries():
    assert soak_app.Session._step("Paused at step 6 (max steps per Start). Press **Start** to continue.", 0) == 6
    assert soak_app.Session._step("Stopped at step 9. Press **Start** to continue.", 6) == 9
    assert soak_app.Session._step("Arrived after 4 steps. Add points and Start again, or Undo.", 0) == 4
    assert soak_app.Session._step("Stopped.", 6) == 6
    with pytest.raises(soak_app.Problem):
        soak_app.Session._step("The drag stopped with an error; you can Start again, Undo or Reset.", 6)
    flat = [(t, 1000.0) for t in range(0, 300, 5)]
    assert soak_app.memory_summary(flat, 60)["slope_after_warmup_mb_per_min"] == 0
    growing = [(t, 1000.0 + t) for t in range(0, 300, 5)]                   # 1 MB/s
    summary = soak_app.memory_summary(growing, 60)
    assert summary["slope_after_warmup_mb_per_min"] == pytest.approx(60) and summary["growth_after_warmup_mb"] == 235
    assert soak_app.percentile([1, 2, 3, 4], 0.5) == 2.5
