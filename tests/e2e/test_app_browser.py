"""End to end in headless Chromium: what a person does, click by click.

Upload a photo and invert it, click handles and targets on the photo itself, paint a mask
stroke, Start, watch the photo move frame by frame, Stop, Undo, Export. Then two browser
sessions at once, to show that they do not leak state into each other.
"""

import io
import re

import numpy as np
from PIL import Image

R = 64                   # the tiny generator's resolution (TINY in tests/helpers.py)
TIMEOUT = 90_000         # ms; the CI machine has two busy cores

# Gradio maps clicks assuming the image is drawn at most at its natural size, centred
# (object-fit: scale-down, see app.CSS); compute the same content box here. The image is
# replaced after every click, so wait until the current one has loaded.
VIEW_BOX = """() => {
  const img = document.querySelector('#canvas img');
  if (!img || !img.complete || !img.naturalWidth) return null;
  const r = img.getBoundingClientRect();
  return [img.naturalWidth, img.naturalHeight, r.left, r.top, r.width, r.height];
}"""


# Gradio's "queue: 1/2" text drawn over the image, inside its (clipping) box: really on screen.
QUEUE_ON_IMAGE = """() => {
  const el = [...document.querySelectorAll('#canvas .progress-text')].find(e => /queue: \\d+\\/\\d+/.test(e.textContent));
  if (!el) return false;
  const r = el.getBoundingClientRect(), box = el.parentElement.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.top >= box.top && r.bottom <= box.bottom + 1;
}"""


def open_app(page, url):
    page.goto(url)
    page.wait_for_selector("#canvas img", timeout=TIMEOUT)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Click the image')",
                           timeout=TIMEOUT)


def click_pixel(page, x, y, size=None):
    """Click the centre of pixel (x, y) of the image the canvas shows whole: the generator's R x R square
    (a sampled face), or a photo of ``size`` (width, height) shown whole."""
    page.locator("#canvas img").scroll_into_view_if_needed()
    nw, nh, left, top, w, h = page.wait_for_function(VIEW_BOX, timeout=TIMEOUT).json_value()
    fit = min(w / nw, h / nh, 1.0)
    sx, sy = (nw / R, nh / R) if size is None else (nw / size[0], nh / size[1])
    ox, oy = left + (w - nw * fit) / 2, top + (h - nh * fit) / 2
    page.mouse.click(ox + (x + 0.5) * sx * fit, oy + (y + 0.5) * sy * fit)


def status(page) -> str:
    return page.inner_text("#status")


def wait_status(page, *phrases, timeout=TIMEOUT):
    """Wait until the status panel contains one of ``phrases``; return its text."""
    js = "(phrases) => phrases.some(p => document.querySelector('#status').innerText.includes(p))"
    page.wait_for_function(js, arg=list(phrases), timeout=timeout)
    return status(page)


def handle_of(page, number=1):
    """(x, y) of a handle from the status table, or None."""
    match = re.search(rf"^{number}\s+\((\d+), (\d+)\)", status(page), re.MULTILINE)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def distance_to_segment(p, a, b):
    """Distance from point p to the segment a-b (pixels)."""
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / float(dx * dx + dy * dy)))
    return ((px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2) ** 0.5


def wait_handle_moved(page, start, timeout=TIMEOUT):
    js = """([start]) => {
      const m = document.querySelector('#status').innerText.match(/^1\\s+\\((\\d+), (\\d+)\\)/m);
      return m && (Number(m[1]) !== start[0] || Number(m[2]) !== start[1]);
    }"""
    page.wait_for_function(js, arg=[list(start)], timeout=timeout)


def canvas_src(page) -> str:
    return page.get_attribute("#canvas img", "src")


def paint_stroke(page, start, end, size=(R, R)):
    """Drag the brush on the sketch pad from pixel ``start`` to ``end`` of the image the canvas shows whole
    (``size``: the generator's square, or the photo's (width, height)).

    The pad shows the view centred in its canvas at the zoom it displays (e.g. "97%").
    """
    box = page.locator("#mask-editor .pixi-target canvas").bounding_box()
    zoom = float(page.inner_text("#mask-editor .zoom-number span").strip().rstrip("%")) / 100
    vw, vh = page.evaluate("() => [document.querySelector('#canvas img').naturalWidth,"
                           " document.querySelector('#canvas img').naturalHeight]")
    sx, sy = vw / size[0], vh / size[1]

    def screen(p):
        return (box["x"] + box["width"] / 2 + ((p[0] + 0.5) * sx - vw / 2) * zoom,
                box["y"] + box["height"] / 2 + ((p[1] + 0.5) * sy - vh / 2) * zoom)

    page.mouse.move(*screen(start))
    page.mouse.down()
    page.mouse.move(*screen(end), steps=4)
    page.mouse.up()


def drag_settings(page, lr=0.02, block="5 · 64 px", max_steps=None):
    """Bigger steps on the 64 px features: the tiny random generator barely moves otherwise."""
    page.get_by_text("Drag settings", exact=True).click()
    field = page.get_by_label("Learning rate")
    field.fill(str(lr))
    field.press("Tab")
    if max_steps is not None:
        steps = page.get_by_label("number input for Max steps per Start")
        steps.fill(str(max_steps))
        steps.press("Enter")
    page.get_by_label("Feature block").click()
    page.get_by_role("option", name=block).click()


def fetch_download(page, prefix) -> np.ndarray:
    """The exported file whose name starts with ``prefix``, fetched as the browser would, as an RGB array."""
    link = page.locator(f"#files a[href*='{prefix}']").first
    data = page.request.get(link.get_attribute("href")).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def distance_to_segments(shape, pairs):
    """[H, W] distance of every pixel to the nearest handle -> target segment (photo pixels)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    return np.min([[[distance_to_segment((x, y), a, b) for x in range(shape[1])] for y in range(shape[0])]
                   for a, b in pairs], axis=0)


def test_the_photo_is_the_canvas_and_moves_during_the_drag(browser, app_url, photo_file, shots):
    """Issue 25: upload, invert, click two handles and targets on the photo, Start: the photo itself streams;
    the export is the photo at its own size, changed only near the handles; a click outside what the model
    covers gets a sentence. Then a mask stroke on the photo, Stop, Undo."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_app(page, app_url)
    shots(page, "01-opened")
    upload = np.asarray(Image.open(photo_file).convert("RGB"))
    PHOTO_SIZE = upload.shape[1::-1]                       # (120, 150): the model's square covers rows 15-134

    # Upload and invert a photo; the report appears and the missing face is said plainly.
    page.set_input_files("#photo input[type=file]", str(photo_file))
    page.wait_for_selector("#photo-preview img", timeout=TIMEOUT)      # the photo as read_photo read it
    assert f"Photo read: {PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} pixels" in page.inner_text("#photo-note")
    page.click("#invert")
    page.wait_for_function("() => document.querySelector('#report').innerText.includes('PSNR')", timeout=TIMEOUT)
    assert "centre crop" in page.inner_text("#report")
    assert page.get_by_text("No face found").first.is_visible()
    wait_status(page, "Click your photo")
    # The canvas is the photo (shown whole here: the face view's margin covers this small photo), at screen size.
    nw, nh = page.wait_for_function(VIEW_BOX, timeout=TIMEOUT).json_value()[:2]
    assert (nw, nh) == (512, 640)
    shots(page, "02-inverted")

    # Two handles and their targets, clicked on the photo: placed in the photo's pixels.
    pairs = [((45, 60), (55, 52)), ((80, 95), (72, 104))]
    for handle, target in pairs:
        click_pixel(page, *handle, size=PHOTO_SIZE)
        wait_status(page, "now click where it should go")
        click_pixel(page, *target, size=PHOTO_SIZE)
        wait_status(page, "Target placed")
    assert handle_of(page, 1) == (45, 60) and handle_of(page, 2) == (80, 95)
    assert "Points in pixels of your photo" in status(page)
    # A click above the model's square (rows 15-134): a sentence, and the points stay.
    click_pixel(page, 60, 4, size=PHOTO_SIZE)
    page.get_by_text("outside the part of the photo that the model covers").first.wait_for(timeout=TIMEOUT)
    assert handle_of(page, 2) == (80, 95) and "now click" not in status(page)

    # Start: the photo itself streams, frame after frame; then Stop.
    drag_settings(page, lr=0.004, max_steps=400)
    before = canvas_src(page)
    page.click("#start")
    wait_status(page, "Dragging… step")
    seen = {before}
    for _ in range(200):
        seen.add(canvas_src(page))
        if len(seen) >= 4 or "Dragging" not in status(page):
            break
        page.wait_for_timeout(100)
    shots(page, "03-dragging")
    assert len(seen - {before}) >= 2, "fewer than 2 photo frames streamed during the drag"
    page.click("#stop")
    wait_status(page, "Stopped at step", "Arrived after", "Paused at step")
    shots(page, "04-stopped")

    # Export: the photo at its own size, changed only near the handles and targets; the photo's video.
    page.get_by_text("Export", exact=True).click()
    page.click("#export")
    page.wait_for_function("() => document.querySelector('#files').innerText.includes('photo-drag')",
                           timeout=TIMEOUT)
    files = page.inner_text("#files")
    for name in ("photo-edited-", "model-square-", "latent-", "photo-drag-", "model-drag-"):
        assert name in files
    edited = fetch_download(page, "photo-edited-")
    assert edited.shape == upload.shape
    changed = (edited != upload).any(-1)
    assert changed.any()
    near = distance_to_segments(upload.shape[:2], pairs) < 40
    assert not changed[~near].any(), "the photo changed far from the handles"
    shots(page, "05-exported")

    # Undo: the upload again, and the downloads of the edit go.
    page.click("#undo")
    wait_status(page, "Undid the last drag")
    assert handle_of(page, 1) == (45, 60)
    page.wait_for_function("() => !document.querySelector('#files').innerText.includes('photo-edited')",
                           timeout=TIMEOUT)

    # A mask stroke on the photo, on the sketch pad; it comes back as the movable region.
    page.get_by_role("tab", name="Mask").click()
    page.wait_for_selector("#mask-editor .pixi-target canvas", timeout=TIMEOUT)
    page.wait_for_timeout(500)
    for dy in (-6, 0, 6):                           # a band over the first handle and its target
        paint_stroke(page, (38, 64 + dy), (62, 48 + dy), size=PHOTO_SIZE)
    shots(page, "06-mask")
    page.get_by_role("tab", name="Points").click()
    wait_status(page, "may move")
    page.close()


def test_a_refused_upload_is_said_plainly_and_leaves_nothing_stale(browser, app_url, photo_file, tmp_path, shots):
    """Invert a photo, then drop a text file named .png: a sentence (no bare "Error"), and the old report is gone."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_app(page, app_url)
    page.set_input_files("#photo input[type=file]", str(photo_file))
    page.wait_for_selector("#photo-preview img", timeout=TIMEOUT)
    page.click("#invert")
    page.wait_for_function("() => document.querySelector('#report').innerText.includes('PSNR')", timeout=TIMEOUT)
    text = tmp_path / "notes.png"
    text.write_text("my holiday notes, not a picture\n" * 20)
    page.locator("#photo button[aria-label='Clear']").first.click()
    page.set_input_files("#photo input[type=file]", str(text))
    page.wait_for_function("() => document.querySelector('#photo-note').innerText.includes('cannot be used')",
                           timeout=TIMEOUT)
    shots(page, "09-refused-upload")
    assert "This file is text, not a photo. Upload a JPEG, PNG or WebP photo." in page.inner_text("#photo-note")
    assert "The upload was refused" in status(page)
    assert page.inner_text("#report").strip() == ""
    assert not page.locator("#photo-preview img").is_visible()
    assert page.get_by_text("That file cannot be used").first.is_visible()       # the warning toast
    page.close()


def two_users(browser, url):
    """Two browser contexts (two users, two Gradio sessions), each with the app open: [(context, page)] x 2."""
    users = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        open_app(page, url)
        users.append((context, page))
    return users


def test_a_waiting_drag_shows_its_place_in_the_queue(browser, app_url, shots):
    """One device slot: while a's long drag runs, b's Start waits and b's status panel says so."""
    (one, a), (two, b) = two_users(browser, app_url)
    for page, (h, t) in ((a, ((10, 10), (54, 54))), (b, ((50, 50), (40, 30)))):
        click_pixel(page, *h)
        wait_status(page, "now click where it should go")   # the canvas is redrawn: click the new one
        click_pixel(page, *t)
        wait_status(page, "Target placed")
    a.get_by_text("Drag settings", exact=True).click()
    field = a.get_by_label("Learning rate")
    field.fill("0.0005")                           # small steps: a's drag does not arrive while b waits
    field.press("Tab")
    a.click("#start")
    wait_status(a, "Dragging… step")
    b.click("#start")
    wait_status(b, "Waiting for the device")
    b.wait_for_function(QUEUE_ON_IMAGE, timeout=TIMEOUT)
    shots(b, "10-queued")
    a.click("#stop")
    wait_status(b, "Dragging… step", "Arrived after", "Paused at step")
    b.click("#stop")
    wait_status(b, "Stopped at step", "Arrived after", "Paused at step")
    one.close()
    two.close()


def test_two_browser_sessions_do_not_share_state(browser, app_url, shots):
    (one, a), (two, b) = two_users(browser, app_url)
    drag_settings(a)
    drag_settings(b)
    b_image = canvas_src(b)

    click_pixel(a, 10, 10)
    wait_status(a, "now click where it should go")
    click_pixel(a, 30, 12)
    wait_status(a, "Target placed")
    # b sees none of a's points ...
    b.wait_for_timeout(300)
    assert handle_of(b) is None and "Click the image" in status(b)
    click_pixel(b, 50, 50)
    wait_status(b, "now click where it should go")
    click_pixel(b, 40, 30)
    wait_status(b, "Target placed")
    assert handle_of(a) == (10, 10) and handle_of(b) == (50, 50)

    # ... and both drag at once, each moving only its own handle toward its own target.
    a.click("#start")
    b.click("#start")
    wait_handle_moved(a, (10, 10))
    wait_handle_moved(b, (50, 50))
    a.click("#stop")
    b.click("#stop")
    wait_status(a, "Stopped at step", "Arrived after", "Paused at step")
    wait_status(b, "Stopped at step", "Arrived after", "Paused at step")
    shots(a, "07-session-a")
    shots(b, "08-session-b")
    ha, hb = handle_of(a), handle_of(b)
    # Each handle stays on its own way from start to target (a leak would put it on the other's).
    assert distance_to_segment(ha, (10, 10), (30, 12)) < 8 and distance_to_segment(hb, (50, 50), (40, 30)) < 8
    assert "(30, 12)" in status(a) and "(40, 30)" in status(b)
    assert "(40, 30)" not in status(a) and "(30, 12)" not in status(b)
    assert canvas_src(b) != b_image           # b's own drag changed b's image

    # Undo in a does not touch b.
    b_after = canvas_src(b)
    a.click("#undo")
    wait_status(a, "Undid the last drag")
    b.wait_for_timeout(300)
    assert canvas_src(b) == b_after and handle_of(b) == hb
    one.close()
    two.close()
