"""Fixtures shared by the test files: one torch thread, the tiny generator and its saved folder, the app's
handlers on it and a recorder of the messages they show.

Only ``exact_fp32_on_cuda`` is autouse (and acts on ``gpu`` tests only). A file that wants one torch
thread for all its tests says ``pytestmark = pytest.mark.usefixtures("one_thread")``. A file's own fixture of
the same name (a smaller ``G``, say) takes precedence over these.
"""

import pytest
import torch
from helpers import one_torch_thread, save_tiny_model, tiny_generator


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Tests marked ``gpu`` are skipped, saying why, where there is no CUDA device (CI, most laptops)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def exact_fp32_on_cuda(request):
    """GPU tests compare CUDA-graph replays with eager runs in fp32: TF32 convolutions (PyTorch's default) differ
    by about 1e-3 between the algorithms cuDNN picks for each, which would hide nothing and fail tolerances."""
    if not request.node.get_closest_marker("gpu") or not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the whole module (see helpers.one_torch_thread)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def G():
    """The tiny 64 px generator (seed 0, eval mode, frozen), built once per module."""
    return tiny_generator()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """The tiny generator (seed 0) saved in fp32 by save_pretrained, once per module."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def messages(monkeypatch):
    """Record the app's gr.Warning / gr.Info calls as (level, text)."""
    import gradio as gr

    log = []
    monkeypatch.setattr(gr, "Warning", lambda text, *a, **k: log.append(("warning", text)))
    monkeypatch.setattr(gr, "Info", lambda text, *a, **k: log.append(("info", text)))
    return log


@pytest.fixture
def studio(tiny_model_dir, tmp_path):
    """The app's handlers (``Studio``) on the tiny model, with a two-step inversion."""
    import app
    from inversion import InversionConfig

    demo = app.build_app({"tiny": str(tiny_model_dir)}, "tiny", "cpu", autocast=False,
                         store=app.SessionStore(export_root=tmp_path / "exports"),
                         inversion=InversionConfig(steps_w=2, steps_pti=1, w_avg_samples=64, identity=False,
                                                   loss="l2", amp="none"))
    return demo.studio
