"""A Space rehearsal: exactly deploy-space's files, in an empty folder, started as the Hub starts them.

``python -m draggan deploy-space --dry-run --out DIR`` writes the listed files; ``app.py`` is started from
DIR with this environment's Python, without PYTHONPATH or DRAGGAN_MODELS (so code and models can only come
from DIR), offline; then one gradio_client round trip: a sampled face, a handle and its target, a short drag,
export. If the list missed a module or a model file, or the README's front matter disagreed with the app,
this fails; it asserts only what the uploaded set decides (files exist, the PNG has the model's size).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import gradio
import pytest
from PIL import Image

from bench.cold_start import free_port, space_env, start_app, stop_app, wait_until_serving
from draggan import space

ROOT = Path(__file__).resolve().parents[1]
gradio_client = pytest.importorskip("gradio_client")
# Starting the app in a new process and a real drag: about 20 s on a 2-core CPU.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def space_dir(tmp_path_factory):
    """The command a user runs, from the checkout; its list must be exactly what it wrote."""
    folder = tmp_path_factory.mktemp("space") / "me-draggan-studio"
    out = subprocess.run([sys.executable, "-m", "draggan", "deploy-space", "me/draggan-studio", "--dry-run",
                          "--out", str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert written == out.stdout.splitlines()[:-1]
    return folder


def test_the_readme_front_matter_starts_this_app_with_the_installed_gradio(space_dir):
    meta = space.front_matter((space_dir / "README.md").read_text())
    assert (space_dir / meta["app_file"]).is_file() and meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gradio.__version__


def test_the_app_imports_nothing_from_outside_the_uploaded_files(space_dir):
    """Every module the app loads comes from the Space's folder or from the installed environment."""
    probe = ("import json, sys, sysconfig; import app; "
             "roots = [sysconfig.get_paths()[k] for k in ('stdlib', 'platstdlib', 'purelib', 'platlib')]; "
             "files = [getattr(m, '__file__', None) for m in list(sys.modules.values())]; "
             "print(json.dumps(sorted({f for f in files if f and not f.startswith(tuple(roots))})))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=space_dir, env=space_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # (torch names a few built-in modules by a bare file name: those are not files of anyone's)
    outside = [f for f in json.loads(out.stdout.splitlines()[-1])
               if Path(f).is_absolute() and not Path(f).resolve().is_relative_to(space_dir.resolve())]
    assert outside == []


def test_the_space_starts_and_answers_a_sample_drag_and_export(space_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = Path(tempfile.mkstemp(prefix="space-rehearsal-", suffix=".log")[1])
    proc = start_app(space_dir, port, log)
    try:
        wait_until_serving(url, proc, log, timeout=180)
        c = gradio_client.Client(url, verbose=False)
        c.predict(seed=3, psi=0.7, api_name="/sample")              # the model a visitor starts with
        c.predict("60,70->64,70", api_name="/set_points")
        c.predict(max_steps=3, api_name="/drag")
        files = [Path(f) for f in c.predict(api_name="/export")]
        assert files and all(f.is_file() for f in files)
        pngs = [Image.open(f) for f in files if f.suffix == ".png"]
        resolutions = {json.loads(p.read_text())["img_resolution"] for p in space_dir.glob("checkpoints/*/config.json")}
        assert any(im.format == "PNG" and im.size[0] == im.size[1] and im.size[0] in resolutions for im in pngs)
    finally:
        stop_app(proc)
        text = log.read_text()
        log.unlink()
    assert "Traceback" not in text, text
