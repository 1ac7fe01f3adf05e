"""The same points give the same drag in the CLI and in the app: one runtime policy (draggan/runtime.py)."""

import types

import numpy as np
import pytest
import torch
from helpers import max_level_difference
from PIL import Image

import app
from draggan import cli
from draggan.engine import DragConfig
from draggan.runtime import DeviceError, default_device, fast_autocast, runtime_for

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_runtime_policy():
    cpu = runtime_for("cpu")
    assert cpu.device.type == "cpu" and cpu.channels_last and cpu.autocast == fast_autocast("cpu")
    assert runtime_for("cpu", autocast=False).autocast is False
    # A GPU: bf16 with channels-last weights (its fastest graphed step and frame); fp32 stays NCHW.
    gpu = runtime_for(torch.device("cuda"))
    assert gpu.autocast and gpu.channels_last
    assert not runtime_for(torch.device("cuda"), autocast=False).channels_last
    assert default_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        default_device("quantum")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            default_device("cuda")


def test_cli_and_app_give_the_same_drag(tiny_model_dir, tmp_path, capsys):
    points, steps = "20,20->26,22", 8
    code = cli.main(["edit", "--model", str(tiny_model_dir), "--seed", "3", "--points", points,
                     "--steps", str(steps), "--out", str(tmp_path / "cli.png"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    from_cli = np.asarray(Image.open(tmp_path / "cli.png").convert("RGB"))

    # The app with its own defaults: the runtime policy picks autocast as the CLI did.
    studio = app.build_app({"tiny": str(tiny_model_dir)}, "tiny", "cpu",
                           store=app.SessionStore(export_root=tmp_path / "exports")).studio
    req = types.SimpleNamespace(session_hash="same")
    studio.on_load(req)
    studio.sample("tiny", 3, 0.7, req)
    studio.set_points_text(points, req)
    base = DragConfig()
    list(studio.drag(lr=base.lr, max_steps=steps, r1=0, r2=0, lambda_mask=base.lambda_mask, space="W+",
                     block=None, region=base.region, request=req))
    from_app = studio.store.get("same").image
    assert from_app.shape == from_cli.shape
    # Same settings, same steps; the app steps on a worker thread, whose kernels may round a pixel one level apart.
    assert max_level_difference(from_app, from_cli) <= 1
    assert studio.autocast == runtime_for("cpu").autocast
