"""Motion transfer (inversion/motion_transfer.py): a drag on the generator's square, applied to the photo.

A synthetic photo (multi-scale texture), a similarity alignment with rotation and scale, and
two synthetic 'renders': the photo's square, and that square moved by a known smooth field.
The photo must come back moved by the same field at its own resolution, untouched pixels
byte for byte the upload's; what motion cannot explain must come from the generator, only
where the confidence says so. No dlib, no generator: milliseconds.
"""

import cv2
import numpy as np
import pytest
from PIL import Image

from inversion.align import Alignment, warp_square
from inversion.motion_transfer import MotionSettings, estimate_flow, locality_weight, motion_region, transfer_edit, warp_backward

R = 128
H, W = 420, 380


def texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for s in (1.5, 5, 16):
        img += cv2.GaussianBlur(rng.normal(size=(h, w, 3)).astype(np.float32), (0, 0), s) * s ** 0.5
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def similarity(scale, degrees, photo_centre):
    a = np.deg2rad(degrees)
    A = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = np.array([(R - 1) / 2, (R - 1) / 2]) - A @ np.asarray(photo_centre, float)
    return np.hstack([A, t[:, None]])


def bump(centre, amplitude, sigma, size=R):
    """A smooth backward displacement field: amplitude * gaussian(centre, sigma), [size, size, 2]."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    g = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))
    return np.stack([amplitude[0] * g, amplitude[1] * g], -1).astype(np.float32), g


def photo_moved_by(photo, M, field_fn):
    """The photo warped by a square field evaluated at photo resolution (the exact answer)."""
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = M[0, 0] * xx + M[0, 1] * yy + M[0, 2]
    sy = M[1, 0] * xx + M[1, 1] * yy + M[1, 2]
    fx, fy, weight = field_fn(sx, sy)
    a_inv = np.linalg.inv(M[:, :2])
    dx = a_inv[0, 0] * fx + a_inv[0, 1] * fy
    dy = a_inv[1, 0] * fx + a_inv[1, 1] * fy
    out = cv2.remap(photo, (xx + dx).astype(np.float32), (yy + dy).astype(np.float32), cv2.INTER_CUBIC,
                    borderMode=cv2.BORDER_REFLECT_101)
    return out, weight


@pytest.fixture(scope="module")
def scene():
    photo = texture(H, W)
    M = similarity(R / 300, 12, (190, 220))
    alignment = Alignment(M, (W, H), R, "template")
    before = warp_square(photo, M, R)
    return photo, M, alignment, before


CENTRE, AMP, SIGMA = (70.0, 80.0), (2.5, -4.0), 6.0   # a local edit: within the default reach


def drag_target(centre=CENTRE, amp=AMP, sigma=SIGMA):
    """Where the point at ``centre`` ends up: t with t + field(t) = centre (the field is backward)."""
    t = np.array(centre, float)
    for _ in range(50):
        g = np.exp(-((t - centre) ** 2).sum() / (2 * sigma ** 2))
        t = np.array(centre) - np.array(amp) * g
    return tuple(t)


def gaussian_field(sx, sy):
    g = np.exp(-((sx - CENTRE[0]) ** 2 + (sy - CENTRE[1]) ** 2) / (2 * SIGMA ** 2))
    return AMP[0] * g, AMP[1] * g, g


def test_known_motion_is_reproduced_at_photo_resolution(scene):
    photo, M, alignment, before = scene
    field, g = bump(CENTRE, AMP, SIGMA)
    after = np.clip(np.rint(warp_backward(before, field)), 0, 255).astype(np.uint8)
    target = drag_target()
    edit = transfer_edit(photo, alignment, before, after, handles=[CENTRE], targets=[target])
    out = np.asarray(edit.image)
    assert out.shape == photo.shape and edit.mode == "motion"
    # The square flow is the known field.
    epe = np.linalg.norm(edit.flow - field, axis=-1)
    assert epe[g > 0.2].mean() < 0.25
    # The photo moved like the field says, at its own resolution (sharp: no 128 px resampling).
    expected, weight = photo_moved_by(photo, M, gaussian_field)
    moving = weight > 0.2
    err = np.abs(out.astype(int) - expected.astype(int))[moving].mean()
    unedited = np.abs(photo.astype(int) - expected.astype(int))[moving].mean()
    assert unedited > 10 and err < 0.12 * unedited, (err, unedited)
    # Detail is kept: the Laplacian energy of the moved area is the photo's, not an upscale's.
    def lap(im):
        return cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F)[moving].var()

    assert lap(out) > 0.9 * lap(expected)
    # Nothing new appeared: the generator contributes no pixels.
    assert edit.confidence.max() == 0


def test_untouched_pixels_are_the_uploads_bytes(scene):
    photo, M, alignment, before = scene
    field, g = bump(CENTRE, AMP, SIGMA)
    after = np.clip(np.rint(warp_backward(before, field)), 0, 255).astype(np.uint8)
    edit = transfer_edit(Image.fromarray(photo), alignment, before, after)
    out = np.asarray(edit.image)
    _, weight = photo_moved_by(photo, M, gaussian_field)
    far = weight < 1e-4                                  # where the field is nil
    assert far.mean() > 0.8
    assert np.array_equal(out[far], photo[far])
    x0, y0, x1, y1 = edit.box
    outside = np.ones(photo.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], photo[outside])
    assert 0 < edit.changed < (x1 - x0) * (y1 - y0)


def test_no_motion_changes_nothing(scene):
    photo, _, alignment, before = scene
    edit = transfer_edit(photo, alignment, before, before.copy())
    assert np.array_equal(np.asarray(edit.image), photo) and edit.changed == 0 and edit.box is None


def test_motion_far_from_the_handles_is_dropped(scene):
    """A second movement 50 px from the edit's points (the generator drifting elsewhere) is not transferred."""
    photo, M, alignment, before = scene
    near, g_near = bump(CENTRE, AMP, SIGMA)
    far_centre = (CENTRE[0] - 45, CENTRE[1] - 25)
    far, g_far = bump(far_centre, (3.0, 3.0), 7.0)
    after = np.clip(np.rint(warp_backward(before, near + far)), 0, 255).astype(np.uint8)
    target = drag_target()
    edit = transfer_edit(photo, alignment, before, after, handles=[CENTRE], targets=[target])
    assert np.abs(edit.flow[g_far > 0.5]).max() == 0            # dropped
    assert np.linalg.norm(edit.flow, axis=-1)[g_near > 0.5].mean() > 2.5   # kept
    without = transfer_edit(photo, alignment, before, after)    # no points: both movements are transferred
    assert np.linalg.norm(without.flow, axis=-1)[g_far > 0.5].mean() > 2.5
    # Photo pixels over the far movement stay the upload's.
    _, w_far = photo_moved_by(photo, M, lambda sx, sy: (0, 0, np.exp(-((sx - far_centre[0]) ** 2 +
                                                                      (sy - far_centre[1]) ** 2) / (2 * 49))))
    out = np.asarray(edit.image)
    assert np.array_equal(out[w_far > 0.5], photo[w_far > 0.5])


def test_new_content_comes_from_the_generator_only_where_confident(scene):
    """A mouth opens: the lips move apart (motion) and dark teeth-like content appears between them."""
    photo, M, alignment, before = scene
    field, g = bump(CENTRE, AMP, SIGMA)
    after = warp_backward(before, field)
    ys, xs = np.mgrid[0:R, 0:R]
    hole = ((xs - CENTRE[0]) / 6) ** 2 + ((ys - CENTRE[1]) / 3.5) ** 2 <= 1
    new_colour = np.array([250, 245, 235], np.float32)           # teeth: nothing like the texture
    after[hole] = new_colour
    after = np.clip(np.rint(after), 0, 255).astype(np.uint8)
    target = drag_target()
    edit = transfer_edit(photo, alignment, before, after, handles=[CENTRE], targets=[target])
    conf = edit.confidence
    assert conf[hole].mean() > 0.6
    assert conf[g < 0.01].max() == 0                       # nothing new away from the edit
    near_hole = cv2.dilate(hole.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert conf[~near_hole & (g > 0.2)].mean() < 0.2          # the moved texture around it stays the photo's
    # In the photo the hole takes the new colour (at the generator's scale), the rest stays motion.
    out = np.asarray(edit.image).astype(np.float32)
    inv = cv2.invertAffineTransform(M)
    centre_photo = inv[:, :2] @ np.array(CENTRE) + inv[:, 2]
    cx, cy = np.round(centre_photo).astype(int)
    patch = out[cy - 3:cy + 4, cx - 3:cx + 4].reshape(-1, 3).mean(0)
    assert np.abs(patch - new_colour).max() < 40
    conf_photo = edit.confidence_map()
    assert conf_photo.shape == photo.shape[:2] and conf_photo[cy, cx] > 0.6
    overlay = np.asarray(edit.confidence_overlay())
    assert overlay.shape == photo.shape and not np.array_equal(overlay, np.asarray(edit.image))


def test_paste_mode_is_the_old_paste_back(scene):
    photo, _, alignment, before = scene
    after = np.full((R, R, 3), 128, np.uint8)
    edit = transfer_edit(photo, alignment, before, after, mode="paste")
    assert edit.mode == "paste"
    expected = alignment.paste_back(Image.fromarray(after), Image.fromarray(photo))
    assert np.array_equal(np.asarray(edit.image), np.asarray(expected))


def test_bad_input_is_refused(scene):
    photo, _, alignment, before = scene
    with pytest.raises(ValueError, match="alignment was made for"):
        transfer_edit(photo[:-1], alignment, before, before)
    with pytest.raises(ValueError, match="mode"):
        transfer_edit(photo, alignment, before, before, mode="blend")
    with pytest.raises(ValueError, match="flow_method"):
        MotionSettings(flow_method="raft")


def test_flow_methods_and_region_helpers():
    img = texture(R, R, seed=3)
    field, g = bump((64, 64), (-3.0, 2.0), 10.0)
    after = np.clip(np.rint(warp_backward(img, field)), 0, 255).astype(np.uint8)
    for method, tol in (("dis", 0.3), ("farneback", 0.8)):
        flow = estimate_flow(img, after, method)
        assert np.linalg.norm(flow - field, axis=-1)[g > 0.3].mean() < tol, method
    region = motion_region(field, MotionSettings())
    assert region[g > 0.3].min() == 1 and region[g < 1e-4].max() == 0
    weight = locality_weight(R, [(30, 30)], [(34, 30)], reach=10, fade=5)
    assert weight[30, 32] == 1 and weight[30, 50] == 0 and 0 < weight[30, 46] < 1


# --------------------------------------------------------------------------- API and CLI on the tiny generator


@pytest.fixture(scope="module")
def inverted(G):
    """An InversionResult as the pipeline makes it, for the tiny 64 px generator and a synthetic photo."""
    import torch

    from draggan.engine import to_uint8
    from inversion import InversionResult

    size = G.img_resolution
    photo = texture(300, 260, seed=5)
    M = similarity(size / 200, -8, (130, 150))
    M[:, 2] += (size - R) / 2                       # the square is `size` px here, not R
    alignment = Alignment(M, (260, 300), size, "template")
    ws = G.ws_from_seed(1, 0.7)
    with torch.no_grad():
        reconstruction = Image.fromarray(to_uint8(G.synthesis(ws, noise_mode="const")))
    return InversionResult(ws=ws, generator=G, aligned=alignment.warp(Image.fromarray(photo)),
                           reconstruction=reconstruction, report={"psnr": 30.0}, alignment=alignment,
                           photo=Image.fromarray(photo))


def far_from(alignment, shape, points, radius):
    sx, sy = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]))
    m = alignment.matrix
    qx, qy = m[0, 0] * sx + m[0, 1] * sy + m[0, 2], m[1, 0] * sx + m[1, 1] * sy + m[1, 2]
    return np.min([np.hypot(qx - x, qy - y) for x, y in points], axis=0) > radius


@pytest.mark.usefixtures("one_thread")
def test_drag_photo_returns_the_edited_photo_at_its_own_size(inverted):
    from draggan.engine import DragConfig
    from inversion import drag_photo

    handles, targets = [(30, 34)], [(34, 34)]
    edit = drag_photo(inverted, handles, targets, DragConfig(max_steps=6, feature_block=3))
    photo = np.asarray(inverted.photo)
    out = np.asarray(edit.image)
    assert out.shape == photo.shape and edit.square.shape == (64, 64, 3)
    # The square changed, and nothing farther than reach + fade (scaled to 64 px) from the points did.
    assert not np.array_equal(edit.square, np.asarray(inverted.reconstruction))
    settings = MotionSettings()
    far = far_from(inverted.alignment, photo.shape, handles + targets, (settings.reach + settings.fade) * 64 / 128 + 1)
    assert far.mean() > 0.7 and np.array_equal(out[far], photo[far])
    pasted = inverted.transfer(edit.square, handles, targets, mode="paste")
    assert pasted.mode == "paste" and pasted.image.size == inverted.photo.size


def test_cli_writes_the_photo_at_its_resolution_and_the_square_on_request(inverted, tiny_model_dir, tmp_path,
                                                                             capsys):
    import json

    import torch

    from draggan import cli

    inv = tmp_path / "inv"
    (inv / "generator").mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (inv / "generator" / f.name).write_bytes(f.read_bytes())
    torch.save({"ws": inverted.ws}, inv / "latent.pt")
    inverted.photo.save(inv / "photo.png")
    (inv / "alignment.json").write_text(json.dumps(inverted.alignment.to_dict()))
    args = ["edit", "--inversion", str(inv), "--points", "30,34->34,34", "--feature-block", "3", "--steps", "4",
            "--quiet", "--device", "cpu"]
    assert cli.main(args + ["--out", str(tmp_path / "photo.png"), "--square-out", str(tmp_path / "square.png"),
                            "--confidence-out", str(tmp_path / "conf.png")]) == 0
    out = capsys.readouterr().out
    photo = np.asarray(inverted.photo)
    edited = np.asarray(Image.open(tmp_path / "photo.png"))
    assert edited.shape == photo.shape and "motion transfer" in out
    assert Image.open(tmp_path / "square.png").size == (64, 64)
    assert Image.open(tmp_path / "conf.png").size == inverted.photo.size
    far = far_from(inverted.alignment, photo.shape, [(30, 34), (34, 34)], 13)
    assert np.array_equal(edited[far], photo[far]) and not np.array_equal(edited, photo)
    # paste-back and 'none' (the square itself) stay available.
    assert cli.main(args + ["--out", str(tmp_path / "pasted.png"), "--photo-mode", "paste"]) == 0
    assert Image.open(tmp_path / "pasted.png").size == inverted.photo.size
    assert cli.main(args + ["--out", str(tmp_path / "sq.png"), "--photo-mode", "none"]) == 0
    assert Image.open(tmp_path / "sq.png").size == (64, 64)
    # A folder saved without its photo: the square, and a warning that says so.
    (inv / "photo.png").unlink()
    assert cli.main(args + ["--out", str(tmp_path / "nophoto.png")]) == 0
    assert Image.open(tmp_path / "nophoto.png").size == (64, 64) and "no photo.png" in capsys.readouterr().err
