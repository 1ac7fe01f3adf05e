"""Edits of real photos: today's paste-back against motion transfer, measured and pictured.

Each photo is inverted (``--quality``, default ``fast``; kept in ``--cache``), then named
drags of its dlib landmarks, found on the generator's own 128 px image, are made with the
drag engine's default ``DragConfig()``:

* smile      : mouth corners 48 / 54 by (-2, -4) / (+2, -4)
* chin_down  : chin 8 by (0, +5)
* nose_right : nose tip 30 by (+5, 0)
* brows_up   : brows 19 and 24 by (0, -5)
* mouth_open : lower lip 57 and 66 by (0, +6) (not run unless asked: it shows new content)

(128 px square units.) The edited square goes back into the photo twice: pasted
(``mode="paste"``) and by motion transfer (``inversion.motion_transfer``). Per edit and method:

* identity   : dlib descriptor distance, original photo -> edited photo (full resolution);
* sharpness  : variance of the Laplacian inside the face (hull of the photo's 68 landmarks),
               edited / original;
* far_psnr   : PSNR over the photo pixels inside the face square that lie farther than
               40/128 of the square from every handle and target (inf: bit-identical);
* landmarks  : dlib on the edited photo, mapped into the square; mean distance of the
               dragged landmarks to their targets (``no_edit``: the original photo's; ``render``:
               the generator's edited square's);
* seconds    : the photo result on top of the drag (flow, confinement, warp).

Flow methods (``--flows``) are compared on the same drags by how well each explains the
landmark motion: landmarks found on the edited square, moved by the flow, should land on
those found on the square before the drag (mean error over the dragged landmarks and over
all 68, square px).

Photos: scikit-image's astronaut and matplotlib's Grace Hopper (always), ``--photo PATH``
(more), and ``--faces N`` held-out CelebA faces (small: 128 px crops; counts for the flow
and locality figures, not for sharpness).

    .venv/bin/python -m bench.photo_edit --threads 1 --out bench/results/photo_edit_cpu_2026-12-05.json \\
        --figure docs/photo_edit.jpg --readme-figure docs/photo_edit_before_after.jpg
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from .eval_drag import environment

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO.parent / "shared" / "datasets" / "celeba128" / "eval"
EDITS = {
    "smile": {48: (-2, -4), 54: (2, -4)},
    "chin_down": {8: (0, 5)},
    "nose_right": {30: (5, 0)},
    "brows_up": {19: (0, -5), 24: (0, -5)},
    # Not in the default set: opens the mouth, so the generator draws what was hidden (new content).
    "mouth_open": {57: (0, 6), 66: (0, 6)},
}
DEFAULT_EDITS = ("smile", "chin_down", "nose_right", "brows_up")
FAR = 40 / 128          # "far from the edit", as a fraction of the face square
METHODS = ("paste", "motion", "motion_flow_only")   # flow_only: motion transfer without the drag's anchors


# --------------------------------------------------------------------------- photos


def library_photos() -> list[tuple[str, np.ndarray]]:
    import matplotlib.cbook
    import skimage.data

    photos = [("astronaut", skimage.data.astronaut())]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        photos.append(("grace_hopper", np.asarray(Image.open(fh).convert("RGB"))))
    return photos


# --------------------------------------------------------------------------- metrics


def face_hull_mask(shape, landmarks: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    return mask.astype(bool)


def laplacian_var(rgb: np.ndarray, mask: np.ndarray) -> float:
    lap = cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64), cv2.CV_64F)
    return float(lap[mask].var())


def square_coords(alignment, shape) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(alignment.matrix)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return m[0, 0] * xx + m[0, 1] * yy + m[0, 2], m[1, 0] * xx + m[1, 1] * yy + m[1, 2]


def far_mask(alignment, shape, points: np.ndarray) -> np.ndarray:
    """Photo pixels inside the face square, farther than FAR of the square from every point (square px)."""
    R = alignment.size
    sx, sy = square_coords(alignment, shape)
    inside = (sx >= -0.5) & (sx < R - 0.5) & (sy >= -0.5) & (sy < R - 0.5)
    d = np.min([np.hypot(sx - x, sy - y) for x, y in points], axis=0)
    return inside & (d > FAR * R)


def psnr_on(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = float(((a[mask].astype(np.float64) - b[mask].astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def photo_descriptor(rgb: np.ndarray):
    """dlib descriptor of the largest face of a full-resolution photo (None: no face)."""
    from bench.landmarks import face_embedding
    from inversion.align import detect_faces

    faces = detect_faces(rgb)
    if not faces:
        return None, None
    return face_embedding(rgb, faces[0].box, faces[0].landmarks), faces[0].landmarks


def photo_landmarks_in_square(rgb: np.ndarray, alignment) -> np.ndarray | None:
    from inversion.align import detect_faces, transform_points

    faces = detect_faces(rgb)
    return None if not faces else transform_points(alignment.matrix, faces[0].landmarks)


# --------------------------------------------------------------------------- flows


def feature_flow(G, ws_before, ws_after, block: int | None = None, radius: int = 6) -> np.ndarray:
    """Backward flow from the generator's features: each pixel of the edited square finds its nearest
    neighbour (L2, within ``radius``, ties to the smallest displacement) in the original's features;
    the whole-pixel field is smoothed (sigma 1 px)."""
    import torch.nn.functional as F

    from draggan.engine import default_feature_block

    block = block or default_feature_block(G)
    R = G.img_resolution
    with torch.no_grad():
        fb = G.synthesis(ws_before, noise_mode="const", return_features=True, last_block=block)[1][block - 1]
        fa = G.synthesis(ws_after, noise_mode="const", return_features=True, last_block=block)[1][block - 1]
        fb = F.interpolate(fb.float(), size=(R, R), mode="bilinear", align_corners=False)[0]
        fa = F.interpolate(fa.float(), size=(R, R), mode="bilinear", align_corners=False)[0]
        pad = F.pad(fb[None], (radius,) * 4, mode="replicate")[0]
        k = 2 * radius + 1
        cost = torch.empty(k, k, R, R)
        # Ties (the replicated border, flat regions) go to the smallest displacement.
        tie = 1e-6 * float(fa.square().sum(0).mean())
        for dy in range(k):
            for dx in range(k):
                cost[dy, dx] = (fa - pad[:, dy:dy + R, dx:dx + R]).square().sum(0) \
                    + tie * ((dy - radius) ** 2 + (dx - radius) ** 2)
    flat = cost.reshape(k * k, R, R).argmin(0).numpy()
    iy, ix = np.divmod(flat, k)
    # Whole-pixel matches, smoothed: a parabolic sub-pixel step on these costs is biased (0.3 px on an
    # unchanged image), the smoothing is not.
    flow = np.stack([ix - radius, iy - radius], -1).astype(np.float32)
    return cv2.GaussianBlur(flow, (0, 0), 1.0)


def sample_flow(flow: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float32)
    fx = cv2.remap(flow[..., 0], pts[:, 0:1], pts[:, 1:2], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fy = cv2.remap(flow[..., 1], pts[:, 0:1], pts[:, 1:2], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.concatenate([fx, fy], 1)


# --------------------------------------------------------------------------- one photo


def edit_photo(name: str, photo: np.ndarray, result, edits: list[str], flows: list[str], log=print,
               keep_images: bool = False) -> dict:
    from bench.landmarks import measure_face
    from draggan.engine import DragConfig, DragSession
    from inversion.motion_transfer import MotionSettings, anchor_flow, estimate_flow, transfer_edit

    G, ws, alignment = result.generator, result.ws.to(next(result.generator.parameters()).device), result.alignment
    R = alignment.size
    before = DragSession(G, ws, DragConfig()).render()
    mb = measure_face(before)
    if mb is None:
        log(f"[{name}] no face found in the generator's image: skipped")
        return {"photo": name, "skipped": "no face in the generator's image"}
    lm_before = mb.landmarks
    square_side = R / float(np.sqrt(abs(np.linalg.det(np.asarray(alignment.matrix)[:, :2]))))
    face_width = None
    if alignment.landmarks is not None:
        face_width = float(np.linalg.norm(alignment.landmarks[16] - alignment.landmarks[0]))
    desc_photo, lm_photo = photo_descriptor(photo)
    hull = face_hull_mask(photo.shape, lm_photo if lm_photo is not None else alignment.landmarks)
    sharp_photo = laplacian_var(photo, hull)
    lm_photo_sq = photo_landmarks_in_square(photo, alignment)
    out = {"photo": name, "size": [photo.shape[1], photo.shape[0]], "face_square_px": round(square_side, 1),
           "face_width_px": None if face_width is None else round(face_width, 1),
           "inversion": {k: result.report.get(k) for k in ("psnr", "ssim", "identity_distance", "poor_reconstruction")},
           "edits": []}
    for edit_name in edits:
        spec = EDITS[edit_name]
        idx = list(spec)
        handles = lm_before[idx]
        targets = handles + np.array([spec[i] for i in idx], np.float64)
        session = DragSession(G, ws, DragConfig())
        session.set_points(handles.tolist(), targets.tolist())
        t = time.perf_counter()
        state = None
        for state in session.drag(image_every=0):
            pass
        drag_seconds = time.perf_counter() - t
        after = session.render()
        ma = measure_face(after)
        from inversion.metrics import identity_distance

        render_identity = identity_distance(Image.fromarray(before), Image.fromarray(after))
        row = {"edit": edit_name, "landmarks": idx, "handles": handles.round(2).tolist(),
               # The edit's own effect on identity, in the generator: what a perfect transfer would show.
               "render_identity": None if render_identity is None else round(render_identity, 4),
               "targets": targets.round(2).tolist(), "drag_steps": state.step if state else 0,
               "drag_done": bool(state and state.done), "drag_seconds": round(drag_seconds, 2),
               "engine_handle_distance": None if state is None else round(float(state.distances.mean()), 3),
               "render_landmark_distance": None if ma is None else
               round(float(np.linalg.norm(ma.landmarks[idx] - targets, axis=1).mean()), 3),
               "no_edit_landmark_distance": None if lm_photo_sq is None else
               round(float(np.linalg.norm(lm_photo_sq[idx] - targets, axis=1).mean()), 3),
               "photo_vs_render_landmarks": None if lm_photo_sq is None else
               round(float(np.linalg.norm(lm_photo_sq[idx] - handles, axis=1).mean()), 3),
               "offset": round(float(np.linalg.norm(targets - handles, axis=1).mean()), 3)}
        # Flow methods: how well each explains the landmark motion of this drag.
        if ma is not None:
            row["flow_landmark_error"] = {}
            for method in flows:
                t = time.perf_counter()
                if method == "features":
                    flow = feature_flow(G, ws, session.ws)
                elif method == "dis+anchors":   # what transfer_edit uses: DIS, anchored to the tracked handles
                    flow = anchor_flow(cv2.GaussianBlur(estimate_flow(before, after, "dis"), (0, 0), 1.0),
                                       handles, session.handles, MotionSettings().anchor_sigma)
                elif method == "zero":
                    flow = np.zeros((R, R, 2), np.float32)
                else:
                    flow = cv2.GaussianBlur(estimate_flow(before, after, method), (0, 0), 1.0)
                seconds = time.perf_counter() - t
                pred = ma.landmarks + sample_flow(flow, ma.landmarks)
                err = np.linalg.norm(pred - lm_before, axis=1)
                row["flow_landmark_error"][method] = {"dragged": round(float(err[idx].mean()), 3),
                                                      "all68": round(float(err.mean()), 3),
                                                      "seconds": round(seconds, 3)}
        far = far_mask(alignment, photo.shape, np.concatenate([handles, targets]))
        row["far_pixels"] = int(far.sum())
        images = {}
        for method in METHODS:
            t = time.perf_counter()
            settings = MotionSettings(anchor_sigma=0.0) if method == "motion_flow_only" else MotionSettings()
            pe = transfer_edit(photo, alignment, before, after, handles, targets, tracked=session.handles,
                               mode="paste" if method == "paste" else "motion", settings=settings)
            seconds = time.perf_counter() - t
            edited = np.asarray(pe.image)
            images[method] = pe
            desc, _ = photo_descriptor(edited)
            lm_sq = photo_landmarks_in_square(edited, alignment)
            row[method] = {
                "seconds": round(seconds, 3),
                "identity": None if desc is None or desc_photo is None else
                round(float(np.linalg.norm(desc - desc_photo)), 4),
                "sharpness_ratio": round(laplacian_var(edited, hull) / max(sharp_photo, 1e-9), 4),
                "far_psnr": psnr_on(photo, edited, far),
                # The photo's own landmarks, moved by the edit's offsets: where the user wants them.
                "landmark_distance": None if lm_sq is None or lm_photo_sq is None else
                round(float(np.linalg.norm(lm_sq[idx] - (lm_photo_sq[idx] + targets - handles), axis=1).mean()), 3),
                # The drag's targets (placed on the generator's landmarks, which miss the photo's by
                # photo_vs_render_landmarks when the reconstruction is off).
                "landmark_distance_render_targets": None if lm_sq is None else
                round(float(np.linalg.norm(lm_sq[idx] - targets, axis=1).mean()), 3),
                "changed_pixels": pe.changed,
                "confidence_max": None if pe.confidence is None else round(float(pe.confidence.max()), 3),
            }
        def brief(m):
            return (f"id {m['identity']} sharp {m['sharpness_ratio']:.2f} far {m['far_psnr']:.1f} dB "
                    f"lm {m['landmark_distance']} ({m['landmark_distance_render_targets']}) {m['seconds']:.2f} s")

        log(f"[{name}] {edit_name}: drag {row['drag_steps']} steps {drag_seconds:.1f} s; "
            + " | ".join(f"{k} {brief(row[k])}" for k in METHODS)
            + f" | render lm {row['render_landmark_distance']} id {row['render_identity']} "
            f"no-edit {row['no_edit_landmark_distance']} | flows "
            + " ".join(f"{k} {v['dragged']:.2f}" for k, v in row.get("flow_landmark_error", {}).items()))
        if keep_images:
            row["_images"] = {"before": before, "after": after, **images}
        out["edits"].append(row)
    return out


# --------------------------------------------------------------------------- summary and figures


def summarize(photos: list[dict], large_only: bool) -> dict:
    rows = [(p, e) for p in photos if not p.get("skipped") for e in p["edits"]
            if not large_only or p.get("kind") == "photo"]
    out = {"edits": len(rows)}
    for method in METHODS:
        s = {}
        for key in ("identity", "sharpness_ratio", "far_psnr", "landmark_distance", "landmark_distance_render_targets",
                    "seconds"):
            v = [e[method][key] for _, e in rows if e[method][key] is not None]
            finite = [x for x in v if math.isfinite(x)]
            s[key] = {"mean": round(statistics.fmean(finite), 4) if finite else None,
                      "median": round(statistics.median(v), 4) if v else None,
                      "min": round(min(v), 4) if v else None, "max": round(max(v), 4) if v else None,
                      "n": len(v), "infinite": len(v) - len(finite)}
        out[method] = s
    flows = {}
    for _, e in rows:
        for k, v in e.get("flow_landmark_error", {}).items():
            flows.setdefault(k, {"dragged": [], "all68": [], "seconds": []})
            for kk in ("dragged", "all68", "seconds"):
                flows[k][kk].append(v[kk])
    out["flows"] = {k: {kk: round(statistics.fmean(vv), 3) for kk, vv in v.items()} | {"n": len(v["dragged"])}
                    for k, v in flows.items()}
    for key in ("render_identity", "render_landmark_distance", "no_edit_landmark_distance", "photo_vs_render_landmarks",
                "offset",
                "drag_seconds", "drag_steps"):
        v = [e[key] for _, e in rows if e.get(key) is not None]
        out[key] = round(statistics.fmean(v), 3) if v else None
    return out


def label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    scale = 0.8
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    if w + 10 > img.shape[1]:        # fit the panel
        scale *= (img.shape[1] - 10) / (w + 10)
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(img, (0, 0), (w + 10, h + 12), (0, 0, 0), -1)
    cv2.putText(img, text, (5, h + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def face_crop_box(alignment, shape, margin: float = 0.05):
    inv = cv2.invertAffineTransform(np.asarray(alignment.matrix))
    R = alignment.size
    c = np.array([[0, 0], [R, 0], [0, R], [R, R]], np.float64) - 0.5
    pts = c @ inv[:, :2].T + inv[:, 2]
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (int(max(0, x0 - mx)), int(max(0, y0 - my)), int(min(shape[1], x1 + mx)), int(min(shape[0], y1 + my)))


def comparison_figure(items: list[tuple[str, np.ndarray, dict]], path: Path) -> None:
    """Rows of full-resolution face crops: original | paste-back | motion transfer | confidence overlay."""
    rows = []
    for title, photo, row in items:
        images = row["_images"]
        alignment = images["motion"].alignment
        x0, y0, x1, y1 = face_crop_box(alignment, photo.shape)

        def crop(a):
            return np.ascontiguousarray(np.asarray(a)[y0:y1, x0:x1])

        panels = [label(crop(photo), f"{title}, original"),
                  label(crop(images["paste"].image), "paste-back (128 px square)"),
                  label(crop(images["motion"].image), "motion transfer"),
                  label(crop(images["motion"].confidence_overlay()), "cyan: moved, magenta: generator")]
        rows.append(np.concatenate([np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels], 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    save_jpeg(np.concatenate(rows, 0), path)


def before_after_figure(photo: np.ndarray, edited: np.ndarray, path: Path, title: str) -> None:
    pad = np.full((photo.shape[0], 8, 3), 255, np.uint8)
    save_jpeg(np.concatenate([label(photo, "uploaded photo"), pad, label(edited, title)], 1), path)


def save_jpeg(img: np.ndarray, path: Path, max_bytes: int = 1_000_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for quality in (90, 85, 80, 75, 70, 60):
        Image.fromarray(img).save(path, "JPEG", quality=quality, optimize=True)
        if path.stat().st_size < max_bytes:
            return


# --------------------------------------------------------------------------- main


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.photo_edit", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128")
    p.add_argument("--quality", default="fast")
    p.add_argument("--start", default="auto", help="'auto' (the model's encoder if it ships one), 'none' (projection) "
                                                   "or an encoder folder: InversionConfig.encoder")
    p.add_argument("--steps-pti", type=int, default=None, help="tuning steps (default: the preset's; 0: no tuning)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--photo", action="append", default=[], help="more photos (paths)")
    p.add_argument("--no-library", action="store_true", help="skip the astronaut and Grace Hopper")
    p.add_argument("--faces", type=int, default=0, help="held-out CelebA faces to add (128 px)")
    p.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    p.add_argument("--edits", default=",".join(DEFAULT_EDITS), help=f"comma list of {', '.join(EDITS)}")
    p.add_argument("--flows", default="dis,farneback,features,dis+anchors,zero")
    p.add_argument("--cache", type=Path, default=REPO / ".stage" / "photo_edit" / "cache")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--figure", type=Path, default=None, help="side-by-side JPEG (paste vs motion, full resolution)")
    p.add_argument("--figure-edit", default="smile")
    p.add_argument("--readme-figure", type=Path, default=None, help="full before/after JPEG of one photo")
    p.add_argument("--readme-photo", default="grace_hopper")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench.bench_inversion import bench_photos
    from draggan.loaders.checkpoints import load_generator
    from inversion import InversionCache, InversionConfig, invert
    from inversion.photo import read_photo
    from inversion.pipeline import alignment_for_model

    edits = [e.strip() for e in args.edits.split(",") if e.strip()]
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    G = load_generator(args.model, device=args.device)
    alignment, model_dir = alignment_for_model(args.model)
    cache = InversionCache(max_items=1, directory=args.cache)
    photos = [] if args.no_library else [(n, im, "photo") for n, im in library_photos()]
    photos += [(Path(x).stem, np.asarray(read_photo(x).image), "photo") for x in args.photo]
    photos += [(n, np.asarray(read_photo(path).image), "face")
               for n, path in bench_photos(args.eval_dir, args.faces, extra=False)] if args.faces else []
    t0 = time.perf_counter()
    results, figure_items, readme, inversions = [], [], None, []
    for name, photo, kind in photos:
        t = time.perf_counter()
        result = invert(photo, G, InversionConfig(device=args.device, quality=args.quality, alignment=alignment,
                                                  model_dir=model_dir, encoder=args.start, steps_pti=args.steps_pti),
                        cache=cache)
        r_inv = result.report
        inversions.append({"name": name, "start": r_inv["start"], "psnr": r_inv["psnr"],
                           "identity": r_inv.get("identity_distance"), "seconds": r_inv["timings"]["total"],
                           "pti_steps": r_inv["steps"]["pti"]})
        print(f"[{name}] inverted from {r_inv['start']}: {r_inv['psnr']:.2f} dB ({time.perf_counter() - t:.1f} s"
              + (", cached" if result.report.get("cached") else "") + ")", flush=True)
        keep = args.figure is not None or args.readme_figure is not None
        r = edit_photo(name, photo, result, edits, flows, log=lambda s: print(s, flush=True),
                       keep_images=keep and kind == "photo")
        r["kind"] = kind
        for e in r.get("edits", []):
            imgs = e.pop("_images", None)
            if imgs and e["edit"] == args.figure_edit or imgs and name == args.readme_photo:
                figure_items.append((f"{name} {e['edit']}", photo, {"_images": imgs}))
                if name == args.readme_photo and e["edit"] == args.figure_edit:
                    readme = (photo, np.asarray(imgs["motion"].image))
        results.append(r)
    summary = {"photos": summarize(results, large_only=True), "all": summarize(results, large_only=False)}
    data = {"meta": {"command": "python -m bench.photo_edit " + " ".join(argv or sys.argv[1:]), "model": args.model,
                     "quality": args.quality, "start": args.start, "steps_pti": args.steps_pti, "env": environment(args.device),
                     "wall_seconds": round(time.perf_counter() - t0, 1), "edits": {k: {str(i): v for i, v in s.items()}
                                                                                   for k, s in EDITS.items()},
                     "far": f"pixels inside the face square farther than {FAR * 128:.0f}/128 of it from every "
                            f"handle and target"},
            "summary": summary, "inversions": inversions, "results": results}
    print(json.dumps(summary, indent=1, default=_json_default))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
        print(f"wrote {args.out}")
    if args.figure and figure_items:
        comparison_figure(figure_items, args.figure)
        print(f"wrote {args.figure} ({args.figure.stat().st_size // 1024} KiB)")
    if args.readme_figure and readme is not None:
        before_after_figure(readme[0], readme[1], args.readme_figure, f"edited: {args.figure_edit} (motion transfer)")
        print(f"wrote {args.readme_figure} ({args.readme_figure.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
