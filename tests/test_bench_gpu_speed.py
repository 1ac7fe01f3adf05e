"""bench/gpu_speed.py runs end to end (on the CPU, tiny architecture) and writes every figure it prints."""

import json

import pytest

from bench import gpu_speed

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_gpu_speed_writes_step_frame_flops_and_pti_figures(tmp_path):
    out = tmp_path / "gpu_speed.json"
    gpu_speed.main(["--device", "cpu", "--archs", "tiny64", "--steps", "1", "--warmup", "1",
                    "--pti-arch", "tiny64", "--pti-steps", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["archs"]["tiny64"]["rows"]
    kinds = {(r["what"], r["handles"], r["precision"]) for r in rows}
    for precision in ("fp32", "bf16"):
        assert {("step", 1, precision), ("step", 5, precision), ("frame", None, precision),
                ("step+frame", 1, precision)} <= kinds
    assert all(r["ms"] > 0 and r["flops"] > 0 for r in rows)
    step = next(r for r in rows if r["what"] == "step" and r["handles"] == 1)
    frame = next(r for r in rows if r["what"] == "frame")
    assert step["flops"] > frame["flops"]          # a step has a backward pass
    assert result["pti"]["steps_run"] == 1 and result["pti"]["seconds_fp32"] > 0
    assert "eager step" in (tmp_path / "gpu_speed.profile.txt").read_text()
