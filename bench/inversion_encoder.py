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

``--edits``: editability. On each inverted face (its pivot and tuned generator, as the app hands them to
the engine), the named edits of ``bench.eval_drag.EDITS`` are dragged with the engine's defaults and
scored as ``bench.edit_quality`` scores them (MD of the re-detected landmarks, identity to the
unedited reconstruction, locality). Needs dlib.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from draggan.engine import DragConfig
from draggan.loaders import load_generator
from inversion import InversionConfig, invert

from .eval_drag import EDITS, FaceSample, edit_task, measure, run_task
from .eval_drag import summarize as summarize_edits
from .landmarks import measure_face
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


def edit_rows(result, face_index: int, config: DragConfig) -> list[dict]:
    """The named edits dragged on one inversion (pivot + tuned generator), scored; [] when dlib finds no face."""
    image = np.asarray(result.reconstruction.convert("RGB"))
    found = measure_face(image, embed=True)
    if found is None:
        return []
    face = FaceSample(seed=face_index, ws=result.ws, image=image, face=found)
    R = int(result.generator.img_resolution)
    rows = []
    for edit in EDITS:
        task = edit_task(face, edit, R)
        row = measure(task, run_task(result.generator, task, config))
        row.pop("_embedding")
        rows.append(row)
    return rows


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
    p.add_argument("--edits", action="store_true", help="drag the named edits on each inversion and score them")
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
            rows, edits = [], []
            for i, f in enumerate(faces):
                inverted = invert(f, G, config, cache=None)
                r = inverted.report
                if r["start"] != start:
                    raise SystemExit(f"asked for {start}, the report says {r['start']} (no encoder shipped?)")
                rows.append({"face": f.name, "psnr": r["psnr"], "ssim": r["ssim"], "identity": r["identity_distance"],
                             "pivot_psnr": round(pivot_psnr(r["stage_mse"]["projection"]), 3),
                             "seconds": r["timings"]["total"], "pti_steps": r["steps"]["pti"],
                             "timings": r["timings"]})
                print(json.dumps({"quality": quality, "start": start, **rows[-1]}), flush=True)
                if args.edits:
                    edits += edit_rows(inverted, i, DragConfig())
            results["runs"][f"{quality}/{start}"] = {"summary": summarize(rows), "rows": rows}
            if args.edits:
                results["runs"][f"{quality}/{start}"].update(
                    edit_summary=summarize_edits(edits),
                    edit_per_name={name: summarize_edits([e for e in edits if e["task"] == name]) for name, _, _ in EDITS},
                    edit_rows=edits)
                print(json.dumps({"quality": quality, "start": start, "edits": summarize_edits(edits)}), flush=True)
            print(json.dumps({"quality": quality, "start": start, "summary": summarize(rows)}), flush=True)
    results["load_after"] = os.getloadavg()
    if args.out:
        write_json(results, args.out)
    return results


if __name__ == "__main__":
    main()
