"""Take the README's screenshot of the app (docs/app.png) in headless Chromium.

    .venv/bin/python tests/e2e/screenshot_app.py                 # bundled celeba128, seed 4
    .venv/bin/python tests/e2e/screenshot_app.py --seed 7 --steps 40 --out /tmp/app.png
    .venv/bin/python tests/e2e/screenshot_app.py --photo PHOTO --points "49,91->47,87;78,92->80,88" --steps 200 \
        --width 1400 --height 1000 --out docs/app_photo_edit.png   # an inverted photo, dragged to arrival
    ... --mid-drag /tmp/mid.png                                    # also the screen while the drag runs

Serves the app in this process, shows a face (or inverts a photo), places two handle/target
pairs (on a photo: clicked on the photo canvas, where it shows those points of the model's
square, or at ``--photo-points`` in the photo's own pixels), drags for ``--steps`` steps and
saves the browser's viewport as a palette PNG (small file). Not a test (pytest does not
collect it); it reuses the browser helpers of the tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import test_app_browser as ui  # noqa: E402
from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

import app  # noqa: E402


def click_view(page, u, v):
    """Click view pixel (u, v) of the canvas image (its natural pixels; the browser may show it smaller)."""
    page.locator("#canvas img").scroll_into_view_if_needed()
    nw, nh, left, top, w, h = page.wait_for_function(ui.VIEW_BOX, timeout=60_000).json_value()
    fit = min(w / nw, h / nh, 1.0)
    ox, oy = left + (w - nw * fit) / 2, top + (h - nh * fit) / 2
    page.mouse.click(ox + (u + 0.5) * fit, oy + (v + 0.5) * fit)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="celeba128")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--steps", type=int, default=30, help="drag steps before the picture is taken")
    p.add_argument("--points", default="64,97->64,106;44,62->44,56",
                   help="handle->target pairs in generator pixels (default: for a 128 px face)")
    p.add_argument("--photo-points", default=None, help="with --photo: handle->target pairs in the photo's pixels")
    p.add_argument("--mid-drag", default=None, help="also save the screen while the drag runs (after 1 s of frames)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=980)
    p.add_argument("--photo", default=None, help="upload and invert this photo (fast) instead of showing a seed")
    p.add_argument("--full-page", action="store_true", help="the whole page, not the viewport")
    p.add_argument("--out", default=str(ROOT / "docs" / "app.png"))
    args = p.parse_args(argv)

    from PIL import Image
    from playwright.sync_api import sync_playwright

    from draggan.engine.points import parse_points

    demo = app.build_app({args.model: args.model}, args.model)
    G = demo.studio.load_model(args.model)
    ui.R = G.img_resolution
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            ui.open_app(page, url)
            if args.photo:
                page.set_input_files("#photo input[type=file]", args.photo)
                page.wait_for_selector("#photo-preview img", timeout=60_000)
                page.click("#invert")
                page.wait_for_function("() => document.querySelector('#report').innerText.includes('PSNR')",
                                       timeout=900_000)
            else:
                page.get_by_label("Seed").fill(str(args.seed))
                page.click("text=Show seed")
                page.wait_for_timeout(3000)
            if args.photo:
                (session,) = (demo.studio.store.get(i, create=False) for i in demo.studio.store.ids())
                if args.photo_points:
                    handles, targets = parse_points(args.photo_points)
                else:
                    handles, targets = (session.edit.square_to_photo(p) for p in parse_points(args.points))
                view = session.canvas_view()
                clicks = [(view.to_view([h])[0], view.to_view([t])[0]) for h, t in zip(handles, targets)]
            for handle, target in (clicks if args.photo else zip(*parse_points(args.points))):
                for point, wait in ((handle, "now click"), (target, "Target placed")):
                    if args.photo:
                        click_view(page, *point)
                    else:
                        ui.click_pixel(page, *point)
                    ui.wait_status(page, wait)
            page.click("#start")
            ui.wait_status(page, "Dragging… step", timeout=300_000)
            if args.mid_drag:
                page.wait_for_timeout(1000)
                page.screenshot(path=args.mid_drag)
                print(f"wrote {args.mid_drag} at: {page.inner_text('#status').splitlines()[0]}")
            page.wait_for_function(
                "(n) => { const t = document.querySelector('#status').innerText; const m = t.match(/step (\\d+)/);"
                " return t.includes('Arrived') || (m && Number(m[1]) >= n); }", arg=args.steps, timeout=600_000)
            if "Arrived" not in page.inner_text("#status"):
                page.click("#stop")
            ui.wait_status(page, "Stopped at step", "Arrived after", "Paused at step", timeout=300_000)
            time.sleep(1)   # the last frame settles in the browser
            page.evaluate("() => document.querySelectorAll('.toast-close').forEach(b => b.click())")
            page.wait_for_timeout(500)
            page.evaluate("window.scrollTo(0, 0)")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=args.full_page)
            browser.close()
    finally:
        demo.close()
    image = Image.open(args.out).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
