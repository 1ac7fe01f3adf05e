"""The inversion presets as a user gets them: every default on, early stop included.

``bench.eval_inversion`` runs every PTI step so that step budgets compare; a user's
inversion stops early where the preset says so. This benchmark inverts held-out faces
the way ``invert(photo, G, InversionConfig(quality=...))`` does (dlib alignment to the
model's template, the preset's budget and early stop), and reports per preset the PSNR,
SSIM, dlib identity distance, PTI steps actually run and seconds.

    .venv/bin/python -m bench.inversion_presets --model celeba128 -n 6 --device cpu --threads 1 \\
        --out bench/results/inversion_presets_cpu_2026-12-05.json

``--cache DIR`` keeps each inversion (``InversionCache`` folder) so that ``bench.photo_edit
--faces`` can edit the same faces without inverting them again. A cached result keeps the
seconds of the run that made it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from .eval_drag import environment

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO.parent / "shared" / "datasets" / "celeba128" / "eval"


def summarize(rows: list[dict]) -> dict:
    out = {}
    for key in ("psnr", "ssim", "identity_distance", "seconds", "pti_steps"):
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = {"mean": round(statistics.fmean(values), 4) if values else None,
                    "median": round(statistics.median(values), 4) if values else None, "n": len(values)}
    out["poor"] = sum(bool(r.get("poor_reconstruction")) for r in rows)
    return out


def run(model: str, n: int, qualities: list[str], device: str, cache_dir: Path | None, eval_dir: Path, log=print):
    from bench.bench_inversion import bench_photos
    from draggan.loaders.checkpoints import load_generator
    from inversion import InversionCache, InversionConfig, invert
    from inversion.pipeline import alignment_for_model

    G = load_generator(model, device=device)
    alignment, model_dir = alignment_for_model(model)
    cache = InversionCache(max_items=1, directory=cache_dir) if cache_dir else None
    # Untimed warm-up: first kernels and the W statistics.
    photos = bench_photos(eval_dir, n, extra=False)
    invert(photos[0][1], G, InversionConfig(device=device, steps_w=2, steps_pti=1, alignment=alignment,
                                            model_dir=model_dir, identity=False), cache=None)
    rows = {q: [] for q in qualities}
    for name, path in photos:
        for q in qualities:
            t = time.perf_counter()
            result = invert(path, G, InversionConfig(device=device, quality=q, alignment=alignment,
                                                     model_dir=model_dir), cache=cache)
            wall = time.perf_counter() - t
            r = result.report
            seconds = r["timings"]["total"]
            row = {"photo": name, "quality": q, "psnr": r["psnr"], "ssim": r["ssim"],
                   "identity_distance": r["identity_distance"], "pti_steps": r["steps"]["pti"],
                   "pti_max": r["steps"]["pti_max"], "steps_w": r["steps"]["w"], "seconds": seconds,
                   "cached": r.get("cached", False), "wall_seconds": round(wall, 2),
                   "poor_reconstruction": r.get("poor_reconstruction"), "loss_used": r["loss_used"],
                   "stop": r["config"]["pti_stop_lpips" if r["loss_used"].startswith("lpips") else "pti_stop_fallback"]}
            rows[q].append(row)
            log(f"[{name}] {q}: {r['psnr']:.2f} dB, id {r['identity_distance']}, PTI {r['steps']['pti']}/"
                f"{r['steps']['pti_max']}, {seconds:.1f} s" + (" (cached)" if row["cached"] else ""))
    return {q: {"summary": summarize(v), "rows": v} for q, v in rows.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.inversion_presets", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128")
    p.add_argument("-n", type=int, default=6, help="held-out faces (spread over identities)")
    p.add_argument("--qualities", default="fast,faithful")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    p.add_argument("--cache", type=Path, default=None, help="InversionCache folder to keep the results in")
    p.add_argument("--out", type=Path, default=None, help="JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = run(args.model, args.n, [q.strip() for q in args.qualities.split(",") if q.strip()], args.device,
                 args.cache, args.eval_dir)
    result = {"meta": {"command": "python -m bench.inversion_presets " + " ".join(argv or sys.argv[1:]),
                       "model": args.model, "faces": args.n, "env": environment(args.device),
                       "wall_seconds": round(time.perf_counter() - t0, 1),
                       "timing": "seconds: the pipeline's own total (read, align, project, tune, report)"},
              **result}
    for q, v in result.items():
        if q != "meta":
            s = v["summary"]
            print(f"{q}: PSNR {s['psnr']['mean']} dB (median {s['psnr']['median']}), identity "
                  f"{s['identity_distance']['mean']}, PTI steps {s['pti_steps']['mean']}, {s['seconds']['mean']} s, "
                  f"poor {s['poor']}/{s['psnr']['n']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
