"""The evaluation suite's figures, inversion driver and one-command runner (CPU, tiny generator)."""

import numpy as np
import pytest
from PIL import Image
from test_bench_drag import G, R, fake_detector, one_thread  # noqa: F401  (fixtures: tiny generator, one thread)

from bench import eval_drag, eval_inversion, figures, run_all
from draggan.drawing.overlay import HANDLE_COLOR, TARGET_COLOR
from draggan.engine import DragConfig


def _near(img: np.ndarray, xy, colour, radius=2) -> bool:
    x, y = int(round(xy[0])), int(round(xy[1]))
    patch = img[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].reshape(-1, 3).astype(int)
    return bool((np.abs(patch - np.array(colour)).sum(1) < 30).any())


def test_draw_drag_puts_handles_and_targets_where_the_points_are():
    img = np.full((32, 32, 3), 128, np.uint8)
    out = np.asarray(figures.draw_drag(img, [(5, 5)], [(25, 20)], scale=4))
    assert out.shape == (128, 128, 3)
    assert _near(out, (5.5 * 4, 5.5 * 4), HANDLE_COLOR)
    assert _near(out, (25.5 * 4, 20.5 * 4), TARGET_COLOR)
    assert not _near(out, (25.5 * 4, 5.5 * 4), TARGET_COLOR, radius=4)


@pytest.mark.slow
def test_example_figure_gif_and_md_curves_on_a_tiny_generator(G, tmp_path):
    faces, _ = eval_drag.sample_faces(G, 2, detector=fake_detector)
    config = DragConfig(feature_block=4, stop_distance=0.01)  # out of reach: every drag runs all its steps
    examples = figures.drag_examples(G, faces, figures.EDITS, config, max_steps=3, image_every=1,
                                     detector=fake_detector)
    assert [e.task.name for e in examples] == [e[0] for e in figures.EDITS[:2]]
    assert examples[0].md_no_edit > 0 and examples[0].md is not None
    png = figures.examples_figure(examples, tmp_path / "ex.png", scale=2)
    with Image.open(png) as im:
        # two rows of two panels (each 2R wide plus a caption strip), 4 px padding
        assert im.size == (2 * 2 * R + 3 * 4, 2 * (2 * R + 16) + 3 * 4)
    gif = figures.drag_gif(examples[0], tmp_path / "drag.gif", scale=2)
    frames = examples[0].run.frames
    assert [f[0] for f in frames] == [0, 1, 2, 3]
    with Image.open(gif) as im:
        # Pillow merges identical consecutive frames, adding up their durations: the total
        # is one frame time (8 fps: 120 ms in GIF's 10 ms units) per step plus a 1 s hold.
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        assert 2 <= im.n_frames <= len(frames)
        assert sum(durations) == len(frames) * 120 + 1000
    assert gif.stat().st_size < figures.MAX_FILE_BYTES

    pairs, _ = eval_drag.sample_pairs(G, 1, detector=fake_detector)
    groups = {f"{n} handles": [eval_drag.pair_task(pairs[0], n, R)] for n in (1, 5)}
    curves = figures.md_curves(G, groups, config, steps=4, every=2, detector=fake_detector)
    for n in (1, 5):
        c = curves[f"{n} handles"]
        assert c["steps"] == [0, 2, 4]  # the stop distance is out of reach: every drag runs all steps
        assert len(c["md"]) == len(c["tracked"]) == 3
        h, t = eval_drag.pair_points(pairs[0], n, R)
        assert c["tracked"][0] == pytest.approx(eval_drag.mean_distance(h, t), abs=1e-3)
    plot = figures.md_curve_figure({"pairs": curves, "again": curves}, tmp_path / "md.png", R)
    assert plot.stat().st_size > 1000


def test_parse_budgets():
    assert eval_inversion.parse_budgets("30:0, 100:50") == [(30, 0), (100, 50)]
    for bad in ("", "30", "a:b", "0:5", "5:-1"):
        with pytest.raises(eval_inversion.BudgetError):
            eval_inversion.parse_budgets(bad)


def test_run_all_rejects_unknown_parts(capsys, tmp_path):
    assert run_all.main(["--only", "drag,nonsense", "--out", str(tmp_path)]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_run_all_reports_a_failing_part_and_keeps_going(tmp_path):
    missing = tmp_path / "no-model"
    rc = run_all.main(["--quick", "--only", "drag,figures", "--model", str(missing), "--out", str(tmp_path / "r")])
    assert rc == 1
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert summary.count("**failed**") == 2 and "no-model" in summary
