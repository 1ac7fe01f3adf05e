"""Serving the app (draggan.app.launch): the server answers while the model warms up, and a share link that
cannot be made (simulated: Gradio's tunnel set-up raises, as it does offline) leaves the local app running,
with our message instead of Gradio's."""

import os
import threading
import urllib.request

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio import networking, tunneling  # noqa: E402

import app  # noqa: E402
from draggan.app.launch import serve, warm_up  # noqa: E402
from draggan.loaders.errors import CheckpointError  # noqa: E402


@pytest.fixture
def demo(tiny_model_dir):
    demo = app.build_app({"tiny": str(tiny_model_dir)}, "tiny", "cpu", autocast=False)
    yield demo
    demo.close()


def answers(url) -> bool:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status == 200


@pytest.mark.parametrize("share, env", [(True, ""), (False, "true")])   # --share, or Gradio's GRADIO_SHARE
def test_a_failed_share_link_says_the_app_is_still_served_locally_and_what_a_link_needs(demo, monkeypatch, capsys,
                                                                                       share, env):
    def offline(**kwargs):
        raise RuntimeError("Could not get share link from Gradio API Server.")

    monkeypatch.setattr(networking, "setup_tunnel", offline)
    monkeypatch.setenv("GRADIO_SHARE", env)
    assert serve(demo, "127.0.0.1", None, share=share, block=False, **app.launch_options()) is None
    out = capsys.readouterr().out
    assert answers(demo.local_url)
    assert f"still served at {demo.local_url}" in out
    assert "gradio.live" in out and tunneling.BINARY_PATH in out and "deploy-space" in out
    assert "share=True" not in out and "antivirus" not in out   # Gradio's own advice is not shown
    assert demo.share_url is None


def test_a_share_link_that_works_is_printed(demo, monkeypatch, capsys):
    calls = []

    def tunnel(**kwargs):
        calls.append(kwargs)
        return "https://abc123.gradio.live"

    monkeypatch.setattr(networking, "setup_tunnel", tunnel)
    link = serve(demo, "127.0.0.1", None, share=True, block=False, **app.launch_options())
    assert link == demo.share_url == "https://abc123.gradio.live" and link in capsys.readouterr().out
    assert calls[0]["local_port"] == demo.server_port     # the tunnel points at the server just launched


def test_without_share_no_tunnel_is_asked_for(demo, monkeypatch, capsys):
    monkeypatch.setattr(networking, "setup_tunnel", lambda **k: pytest.fail("a tunnel without --share"))
    assert serve(demo, "127.0.0.1", None, block=False, **app.launch_options()) is None
    assert answers(demo.local_url) and "share" not in capsys.readouterr().out.lower()


class SlowStudio:
    """A warm-up that runs until the test lets it finish (or fails as told)."""

    def __init__(self, error=None):
        self.release, self.error = threading.Event(), error

    def warm_up(self, label):
        assert self.release.wait(30)
        if self.error:
            raise self.error


def test_the_server_answers_before_the_warm_up_ends(demo, capsys):
    studio = SlowStudio()
    thread = warm_up(studio, "tiny")
    serve(demo, "127.0.0.1", None, block=False, **app.launch_options())
    assert answers(demo.local_url) and thread.is_alive()
    studio.release.set()
    thread.join(30)
    assert "tiny loaded and warmed up" in capsys.readouterr().out


@pytest.mark.parametrize("error, says", [(CheckpointError("no such model"), "warning: no such model"),
                                         (RuntimeError("boom"), "the warm-up failed")])
def test_a_failed_warm_up_is_a_warning_not_a_crash(capsys, error, says):
    studio = SlowStudio(error)
    studio.release.set()
    warm_up(studio, "tiny").join(30)
    assert says in capsys.readouterr().out
    assert warm_up(studio, "tiny", background=False) is None and says in capsys.readouterr().out


@pytest.mark.parametrize("zero_gpu, background", [("1", False), ("", True)])
def test_main_warms_up_beside_the_server_except_on_zero_gpu(monkeypatch, zero_gpu, background):
    """ZeroGPU hands its GPU workers the models loaded before launch(): there the warm-up comes first."""
    calls = []
    monkeypatch.setenv("SPACES_ZERO_GPU", zero_gpu)
    monkeypatch.setattr(app, "build_app", lambda *a, **k: type("Demo", (), {"studio": "studio"})())
    monkeypatch.setattr(app, "warm_up", lambda studio, label, background: calls.append(("warm_up", background)))
    monkeypatch.setattr(app, "serve", lambda demo, host, port, share, **k: calls.append(("serve", share)))
    app.main(["--device", "cpu", "--share"])
    assert calls == [("warm_up", background), ("serve", True)]
