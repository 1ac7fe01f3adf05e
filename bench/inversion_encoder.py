"""Inversion with the learned encoder against optimization-based projection, as a user gets them.

    python -m bench.inversion_encoder --model celeba128 --faces 30 --threads 2 --out bench/results/x.json
    python -m bench.inversion_encoder --device cuda --faces 50 --no-identity --alignment center   # no dlib there

For each held-out face (``eval/``: identities the model and the encoder never saw) and each start
('encoder': the model's shipped encoder, 'projection': no encoder) and preset, ``invert()`` runs with
the defaults and the report's figures are recorded: PSNR, SSIM, the dlib identity distance of the
reconstruction to the aligned face (where dlib is installed), the PSNR of the pivot before tuning, and
the report's total seconds. The faces are aligned 128 px crops; by default they are aligned again as a
user's photo is (dlib onto the template, nearly a no-op), ``--alignment center`` takes them as they are
(no dlib: a GPU machine). Real photos go through ``bench.photo_edit`` / ``bench.inversion_presets``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from draggan.loaders import load_generator
from inversion import InversionConfig, invert

from .staged import write_json

DEFAULT_FACES = Path(os.environ.get("DRAGGAN_CELEBA128", "../shared/datasets/celeba128")) / "eval"


def summarize(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for key in ("psnr", "pivot_psnr", "ssim", "identity", "seconds", "pti_steps"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = {"mean": round(statistics.fmean(values), 4), "median": round(statistics.median(values), 4),
                        "min": round(min(values), 4), "max": round(max(values), 4)}
    return out


def pivot_psnr(mse: float) -> float:
    """PSNR of the pivot's image before tuning, from the report's MSE in [-1, 1] units."""
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="celeba128")
    p.add_argument("--faces", type=int, default=30, help="first N held-out faces (sorted by name)")
    p.add_argument("--faces-dir", default=str(DEFAULT_FACES))
    p.add_argument("--starts", default="encoder,projection")
    p.add_argument("--qualities", default="fast,faithful")
    p.add_argument("--alignment", default="auto", help="'auto' (dlib onto the model's template, as a user gets it; "
                   "the identity distance needs a face found) or 'center' (the crop as it is, no dlib)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-identity", action="store_true", help="skip dlib's identity distance (no dlib there)")
    p.add_argument("--out", default=None, help="JSON file for the rows and summaries")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    G = load_generator(args.model, device=args.device)
    faces = sorted(Path(args.faces_dir).glob("*.png"))[:args.faces]
    if not faces:
        raise SystemExit(f"no PNG faces in {args.faces_dir}")
    results = {"model": args.model, "device": args.device, "threads": torch.get_num_threads(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(), "runs": {}}
    for quality in args.qualities.split(","):
        for start in args.starts.split(","):
            config = InversionConfig(device=args.device, quality=quality, alignment=args.alignment,
                                     identity=not args.no_identity, encoder="auto" if start == "encoder" else "none")
            # One untimed warm-up inversion (first-call kernel setup), on another face.
            invert(faces[-1], G, config, cache=None)
            rows = []
            for f in faces:
                r = invert(f, G, config, cache=None).report
                if r["start"] != start:
                    raise SystemExit(f"asked for {start}, the report says {r['start']} (no encoder shipped?)")
                rows.append({"face": f.name, "psnr": r["psnr"], "ssim": r["ssim"], "identity": r["identity_distance"],
                             "pivot_psnr": round(pivot_psnr(r["stage_mse"]["projection"]), 3),
                             "seconds": r["timings"]["total"], "pti_steps": r["steps"]["pti"],
                             "timings": r["timings"]})
                print(json.dumps({"quality": quality, "start": start, **rows[-1]}), flush=True)
            results["runs"][f"{quality}/{start}"] = {"summary": summarize(rows), "rows": rows}
            print(json.dumps({"quality": quality, "start": start, "summary": summarize(rows)}), flush=True)
    results["load_after"] = os.getloadavg()
    if args.out:
        write_json(results, args.out)
    return results


if __name__ == "__main__":
    main()
