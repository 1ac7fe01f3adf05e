"""Fixtures for the browser tests: the app on a tiny generator, and headless Debian Chromium via playwright.

Chromium is the system package (``apt-get install chromium``, /usr/bin/chromium),
driven by the ``playwright`` wheel; ``playwright install`` is never needed. The
tests are skipped, saying why, only when that browser is missing.
Set ``DRAGGAN_SCREENSHOTS=DIR`` to keep screenshots of each step.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects: `-m "not e2e"` must see the mark
def pytest_collection_modifyitems(items):
    """Every test under tests/e2e is marked ``e2e`` (pytest passes this hook all items, not only ours)."""
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)

CHROMIUM = os.environ.get("DRAGGAN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium_missing() -> str | None:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium; .ci/run does this)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    return None


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    from helpers import save_tiny_model, serve  # tests/helpers.py; here so screenshot_app.py can import this file

    import app
    from inversion import InversionConfig

    model = save_tiny_model(tmp_path_factory.mktemp("tiny"))
    # Face detection runs (and finds no face in the test photo); short budgets keep it quick.
    inversion = InversionConfig(steps_w=3, steps_pti=2, w_avg_samples=64, identity=False, loss="l2", amp="none")
    # Few frames per second: the headless browser renders in software on two busy cores.
    demo = app.build_app({"tiny": str(model)}, "tiny", "cpu", autocast=False, inversion=inversion, max_fps=4,
                         store=app.SessionStore(export_root=tmp_path_factory.mktemp("exports")))
    with serve(demo) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    reason = _chromium_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


PHOTO_SIZE = (120, 150)      # width, height of photo_file


@pytest.fixture
def photo_file(tmp_path) -> Path:
    """A small photo: colour gradients under a blotchy texture, so that moved pixels show (no face, so it is
    centre-cropped: the model's square covers its rows 15-134)."""
    w, h = PHOTO_SIZE
    y, x = np.mgrid[0:h, 0:w]
    blotches = np.asarray(Image.fromarray((np.random.default_rng(7).random((h // 8, w // 8, 3)) * 255)
                                          .astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
    img = np.stack([x * 1.5, y * 1.2, (x + y) * 0.6], axis=-1) * 0.6 + blotches * 0.5
    path = tmp_path / "photo.png"
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def shots():
    """shots(page, name): a full-page screenshot into $DRAGGAN_SCREENSHOTS, when set."""
    folder = os.environ.get("DRAGGAN_SCREENSHOTS")

    def take(page, name):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
    return take
