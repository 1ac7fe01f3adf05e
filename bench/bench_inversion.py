"""Inversion benchmark: seconds per photo and reconstruction quality, per loss.

    .venv/bin/python -m bench.bench_inversion --model celeba128 -n 20 --device cpu
    .venv/bin/python -m bench.bench_inversion --model celeba128 -n 50 --device cuda --losses l2,pyramid,lpips-random
    .venv/bin/python -m bench.bench_inversion --model random:512 --device cuda -n 5 --no-identity   # timing only

Photos: the held-out CelebA faces (``--eval-dir``, first N, one per identity first) plus
the real photos shipped with scikit-image (astronaut) and matplotlib (grace_hopper).
For each loss (``--losses``: l2, pyramid, lpips, lpips-random = LPIPS with a random VGG
trunk but the wheel's calibrated linear layers) it reports mean seconds per photo, PSNR,
SSIM, LPIPS (only when the VGG16 weights exist) and dlib identity distance, and prints a
Markdown table (command, device, date) ready for BENCHMARKS.md. ``--json`` writes every
per-photo row.

``--drag-steps N`` also checks editability: from the inverted photo, the chin (dlib
point 8) is dragged down by ``--drag-frac`` of the image size with the drag engine; the
final handle distance (as a fraction of the size) and the identity distance between the
photo and the edited image are reported.

``--model random:R`` builds a randomly initialized generator of the FFHQ-style
architecture at resolution R (timing only; alignment = centre crop).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from draggan.runtime import default_device
from inversion import InversionConfig, invert
from inversion.__main__ import load_model
from inversion.pipeline import alignment_for_model

from .model_quality import DATA

EVAL_DIR = DATA / "eval"


def bench_photos(eval_dir: Path, n: int, extra: bool = True) -> list[tuple[str, object]]:
    """(name, photo) pairs: N eval faces, spreading over identities first, plus the library photos."""
    photos = []
    files = sorted(eval_dir.glob("*.png")) if eval_dir.is_dir() else []
    by_identity: dict[str, list[Path]] = {}
    for f in files:
        by_identity.setdefault(f.name.split("_")[0], []).append(f)
    order = [f for rank in range(5) for fs in by_identity.values() for f in fs[rank:rank + 1]]
    photos += [(f.name, f) for f in order[:n]]
    if extra:
        import skimage.data
        photos.append(("skimage-astronaut", skimage.data.astronaut()))
        try:
            import matplotlib.cbook
            with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
                photos.append(("matplotlib-grace_hopper", fh.read()))
        except Exception:
            pass
    return photos


def timed_invert(photo, G, config: InversionConfig, device) -> tuple:
    """(``invert``'s result, its wall seconds), CUDA-synchronized on both sides, without the cache."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    result = invert(photo, G, config, cache=None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - t


def random_generator(resolution: int, device: str):
    from draggan.models.networks import Generator
    torch.manual_seed(0)
    G = Generator(img_resolution=resolution, channel_base=32768, channel_max=512)
    return G.eval().requires_grad_(False).to(device)


def drag_check(result, steps: int, frac: float) -> dict:
    """Drag the chin (or the centre) down by ``frac`` of the size; final distance and identity kept."""
    from PIL import Image

    from draggan.engine import DragConfig, DragSession
    from inversion.align import transform_points
    from inversion.metrics import identity_distance

    R = result.generator.img_resolution
    a = result.alignment
    if a.landmarks is not None:
        handle = transform_points(a.matrix, a.landmarks[8:9])[0]
    else:
        handle = np.array([R / 2, R / 2])
    handle = np.clip(handle, 2, R - 3 - frac * R)
    target = handle + [0, frac * R]
    session = DragSession(result.generator, result.ws.to(next(result.generator.parameters()).device),
                          DragConfig(max_steps=steps, feature_block=min(6, result.generator.num_blocks)))
    session.set_points([handle.tolist()], [target.tolist()])
    state = None
    for state in session.drag(image_every=0):
        pass
    edited = Image.fromarray(session.render())
    return {"drag_final_frac": float(state.distances[0]) / R if state else None,
            "drag_steps": state.step if state else 0,
            "drag_identity": identity_distance(result.aligned, edited) if a.landmarks is not None else None}


def summarize(rows: list[dict]) -> dict:
    def stat(key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return (statistics.mean(vals), statistics.median(vals), len(vals)) if vals else (None, None, 0)

    return {k: stat(k) for k in ("seconds", "psnr", "ssim", "lpips", "identity_distance", "pti_steps",
                                 "drag_final_frac", "drag_identity")}


def fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128", help="model name/path, or random:RES for timing")
    p.add_argument("--device", default=str(default_device()))
    p.add_argument("-n", type=int, default=10, help="number of eval faces")
    p.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    p.add_argument("--no-extra", action="store_true", help="skip the skimage/matplotlib photos")
    p.add_argument("--losses", default="pyramid", help="comma list of l2, pyramid, lpips, lpips-random")
    p.add_argument("--steps-w", type=int, default=None)
    p.add_argument("--steps-wplus", type=int, default=0)
    p.add_argument("--steps-pti", type=int, default=None)
    p.add_argument("--lr-w", type=float, default=None)
    p.add_argument("--no-early-stop", action="store_true", help="run every PTI step (fair loss comparison)")
    p.add_argument("--no-identity", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--drag-steps", type=int, default=0, help="editability check: drag steps (0 = off)")
    p.add_argument("--drag-frac", type=float, default=0.06, help="drag distance as a fraction of the size")
    p.add_argument("--json", type=Path, default=None, help="write per-photo rows here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model.startswith("random:"):
        G, model_dir, alignment = random_generator(int(args.model.split(":")[1]), args.device), None, "center"
    else:
        G, _ = load_model(args.model, args.device)
        alignment, model_dir = alignment_for_model(args.model)
    photos = bench_photos(args.eval_dir, args.n, extra=not args.no_extra)
    print(f"# {len(photos)} photos, model {args.model} ({G.img_resolution}px), device {args.device}", file=sys.stderr)

    # Warm-up (first-call allocations, cuDNN autotune, dlib model loading) outside the timings.
    warm = InversionConfig(device=args.device, steps_w=2, steps_pti=1, alignment=alignment,
                           model_dir=str(model_dir) if model_dir else None, loss="l2")
    invert(photos[0][1], G, warm, cache=None)

    all_rows, summaries = [], {}
    for loss in [s.strip() for s in args.losses.split(",") if s.strip()]:
        rows = []
        for name, photo in photos:
            cfg = InversionConfig(
                device=args.device, steps_w=args.steps_w, steps_wplus=args.steps_wplus, steps_pti=args.steps_pti,
                lr_w=args.lr_w, loss=loss, alignment=alignment, model_dir=str(model_dir) if model_dir else None,
                identity=not args.no_identity,
                **({"pti_stop_lpips": None, "pti_stop_fallback": None} if args.no_early_stop else {}))
            result, seconds = timed_invert(photo, G, cfg, args.device)
            r = result.report
            row = {"loss": loss, "photo": name, "seconds": seconds,
                   "seconds_optimization": r["timings"]["project"] + r["timings"]["tune"],
                   "psnr": r["psnr"], "ssim": r["ssim"], "lpips": r["lpips"],
                   "identity_distance": r["identity_distance"], "pti_steps": r["steps"]["pti"],
                   "steps_w": r["steps"]["w"], "alignment": r["alignment"], "loss_used": r["loss_used"],
                   "mse": r["stage_mse"]}
            if args.drag_steps:
                row.update(drag_check(result, args.drag_steps, args.drag_frac))
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "mse"}),
                  file=sys.stderr)
        summaries[loss] = summarize(rows)
        all_rows += rows

    cmd = "python -m bench.bench_inversion " + " ".join(argv if argv is not None else sys.argv[1:])
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    steps = all_rows[0]["steps_w"] if all_rows else None
    print(f"\n`{cmd}` — {device_name}, {datetime.date.today().isoformat()}, model {args.model}, "
          f"{len(photos)} photos, W steps {steps}, PTI max {args.steps_pti or 'preset'}\n")
    drag = " drag: final dist / size (mean) | drag: identity (mean) |" if args.drag_steps else ""
    print("| loss | s/photo (mean) | PSNR dB (mean / median) | SSIM | LPIPS | identity dist. (mean / median, n) "
          "| PTI steps |" + drag)
    print("|---|---|---|---|---|---|---|" + ("---|---|" if drag else ""))
    for loss, s in summaries.items():
        extra = f" {fmt(s['drag_final_frac'][0], 4)} | {fmt(s['drag_identity'][0])} |" if drag else ""
        print(f"| {loss} | {fmt(s['seconds'][0], 2)} | {fmt(s['psnr'][0], 2)} / {fmt(s['psnr'][1], 2)} | "
              f"{fmt(s['ssim'][0])} | {fmt(s['lpips'][0])} | {fmt(s['identity_distance'][0])} / "
              f"{fmt(s['identity_distance'][1])}, {s['identity_distance'][2]} | {fmt(s['pti_steps'][0], 1)} |" + extra)
    if args.json:
        args.json.write_text(json.dumps(all_rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
