"""Command line and point parsing: errors for bad input, sample/edit end-to-end on a tiny generator."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_tiny_model
from PIL import Image

from draggan import cli
from draggan.drawing.video import VideoError, drag_frame, write_video
from draggan.engine import to_uint8
from draggan.engine.points import PointError, format_points, parse_points, validate_points
from draggan.models.networks import Generator

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny generator saved in fp16 (save_pretrained's default), so the CLI loads a half-precision folder."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", dtype=torch.float16)


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``python -m draggan argv`` run in-process."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- points


def test_parse_points_accepts_spaces_floats_and_a_trailing_separator():
    handles, targets = parse_points(" 10,20 -> 30, 40 ; 1.5,2->3,4.25; ")
    assert handles == [(10.0, 20.0), (1.5, 2.0)] and targets == [(30.0, 40.0), (3.0, 4.25)]
    assert parse_points(format_points(handles, targets)) == (handles, targets)


@pytest.mark.parametrize("spec,expected", [
    ("", "no points"),
    ("10,20", "pair 1 .*exactly one '->'"),
    ("10,20->30,40;5,5->6", "pair 2 .*target: expected two numbers"),
    ("10,20->30,40;a,5->6,6", "pair 2 .*handle: expected two numbers"),
    ("10,20->30,40;;1,1->2,2", "pair 2 is empty"),
    ("1,2->3,4->5,6", "pair 1 .*exactly one '->'"),
])
def test_parse_points_errors_name_the_pair_and_what_was_expected(spec, expected):
    with pytest.raises(PointError, match=expected):
        parse_points(spec)


def test_validate_points():
    assert validate_points([(0, 63)], [(63.0, 0)], 64) == ([(0.0, 63.0)], [(63.0, 0.0)])
    with pytest.raises(PointError, match="handle 2 .* outside the 64x64 image"):
        validate_points([(1, 1), (-1, 5)], [(2, 2), (3, 3)], 64)
    with pytest.raises(PointError, match="2 handle\\(s\\) but 1 target"):
        validate_points([(1, 1), (2, 2)], [(2, 2)], 64)
    with pytest.raises(PointError, match="pair of numbers"):
        validate_points([(1, 2, 3)], [(2, 2)], 64)


def test_seed_lists():
    assert cli.seed_list("0-3,7,5-6,7") == [0, 1, 2, 3, 7, 5, 6]
    for bad in ["3-1", "a", "1,,2", "-2"]:
        with pytest.raises(Exception, match="seed|range|empty|non-negative"):
            cli.seed_list(bad)


# --------------------------------------------------------------------------- CLI errors


def test_bad_points_string_exits_2_with_a_clear_message(capsys, model_dir):
    code, _, err = run_cli(capsys, "edit", "--model", model_dir, "--seed", 0, "--points", "10,10->20,20;5,5",
                           "--out", "x.png")
    assert code == 2
    assert "pair 2" in err and "exactly one '->'" in err and "Traceback" not in err


def test_points_outside_the_image_exit_2(capsys, model_dir, tmp_path):
    code, _, err = run_cli(capsys, "edit", "--model", model_dir, "--seed", 0, "--points", "10,10->70,20",
                           "--feature-block", 4, "--out", tmp_path / "x.png")
    assert code == 2 and "outside the 64x64 image" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("extra,message", [
    (["--model", "no-such-model", "--seed", "0"], "no-such-model"),
    (["--seed", "0"], "--model NAME --seed N"),
    (["--model", "{model}", "--seed", "0", "--video", "x.avi"], ".gif or .mp4"),
    (["--model", "{model}", "--seed", "0", "--feature-block", "9"], "5 synthesis blocks"),
    (["--model", "{model}", "--seed", "0", "--mask", "missing.png"], "no such file"),
    (["--inversion", "{tmp}"], "latent.pt"),
])
def test_user_errors_exit_2_without_traceback(capsys, model_dir, tmp_path, extra, message):
    extra = [e.format(model=model_dir, tmp=tmp_path) for e in extra]
    code, _, err = run_cli(capsys, "edit", *extra, "--points", "10,10->20,20", "--out", tmp_path / "x.png")
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.slow
def test_module_entry_point_reports_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "draggan", "sample", "--model", "m", "--seeds", "9-2", "--out", "o"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "backwards" in proc.stderr and "Traceback" not in proc.stderr


def test_models_prints_the_registry_table(capsys, monkeypatch):
    import draggan.loaders.registry

    monkeypatch.setattr(draggan.loaders.registry, "format_model_table", lambda *a, **k: "NAME  RES\nfake  64")
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and out.strip() == "NAME  RES\nfake  64"


# --------------------------------------------------------------------------- end to end


def test_sample_writes_one_png_per_seed(capsys, model_dir, tmp_path):
    code, out, _ = run_cli(capsys, "sample", "--model", model_dir, "--seeds", "0-1,5", "--truncation", 0.5,
                           "--out", tmp_path)
    assert code == 0 and "3 image" in out
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["seed0000.png", "seed0001.png", "seed0005.png"]
    G = Generator.from_pretrained(model_dir)
    expected = to_uint8(G.synthesis(G.ws_from_seed(5, 0.5)))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "seed0005.png")), expected)


def test_edit_end_to_end_with_mask_and_gif(capsys, model_dir, tmp_path):
    mask = np.zeros((32, 32), dtype=np.uint8)   # any size: resized to the image
    mask[8:24, 6:24] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code, out, err = run_cli(capsys, "edit", "--model", model_dir, "--seed", 0, "--points", "28,32->38,32;20,20->20,16",
                             "--feature-block", 4, "--steps", 12, "--mask", tmp_path / "mask.png",
                             "--out", tmp_path / "edited.png", "--video", tmp_path / "drag.gif", "--quiet")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["handle", "start", "final", "target", "distance"]
    assert lines[1].startswith("1") and "(28, 32)" in lines[1] and "(38, 32)" in lines[1]
    assert lines[2].startswith("2") and "(20, 16)" in lines[2]
    edited = np.asarray(Image.open(tmp_path / "edited.png"))
    G = Generator.from_pretrained(model_dir)
    original = to_uint8(G.synthesis(G.ws_from_seed(0, 0.7)))
    assert edited.shape == (64, 64, 3) and np.abs(edited.astype(int) - original).mean() > 0.5
    with Image.open(tmp_path / "drag.gif") as gif:
        steps = int(lines[-1].split(" after ")[1].split()[0])
        assert gif.n_frames == steps + 1    # the start plus one frame per step


def test_edit_from_an_inversion_directory(capsys, model_dir, tmp_path):
    G = Generator.from_pretrained(model_dir)
    G.save_pretrained(tmp_path / "inv" / "generator")
    ws = G.ws_from_seed(3, 0.7)
    torch.save({"ws": ws}, tmp_path / "inv" / "latent.pt")
    code, out, err = run_cli(capsys, "edit", "--inversion", tmp_path / "inv", "--points", "30,30->34,30",
                             "--feature-block", 4, "--steps", 3, "--out", tmp_path / "out.png", "--quiet")
    assert code == 0, err
    assert (tmp_path / "out.png").exists() and "(30, 30)" in out


def test_write_video_formats(tmp_path):
    frames = [np.full((32, 32, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    frames = [drag_frame(f, [(5, 5)], [(20, 20)]) for f in frames]
    scale = frames[0].shape[0] // 32
    assert frames[0].shape[0] >= 224 and frames[0][int(5.5 * scale), int(5.5 * scale)].tolist() != [0, 0, 0]   # the handle
    write_video(tmp_path / "a.gif", frames, fps=10)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4
    import cv2

    write_video(tmp_path / "a.mp4", frames, fps=10)
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()
    with pytest.raises(VideoError, match=".gif or .mp4"):
        write_video(tmp_path / "a.avi", frames)
