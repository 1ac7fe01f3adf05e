"""Which layers pivotal tuning needs, and how many steps: PSNR and seconds per step for each choice.

    python -m bench.pti_layers --faces 8 --steps 10,25,50 --min-res 0,16,32,64 --threads 2 \\
        --out bench/results/pti_layers_cpu.json

For each held-out face the pivot is computed once (the model's encoder when it ships one, else
projection: the fast preset's, or ``--pivot-steps-w/--pivot-steps-wplus`` for a closer reference
pivot), then tuning runs from that pivot with every combination of step budget and ``min_resolution``
(only the synthesis blocks of at least that resolution are tuned; the frozen blocks before them are also
spared the backward pass). The variants of one face run one after the other, so each shares the
machine's load with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from draggan.loaders import load_generator
from inversion import InversionConfig, invert
from inversion.losses import make_loss
from inversion.metrics import psnr, to_image, to_tensor
from inversion.pti import TuningSettings, pivotal_tuning

from .inversion_encoder import DEFAULT_FACES
from .staged import write_json


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="celeba128")
    p.add_argument("--faces", type=int, default=8)
    p.add_argument("--faces-dir", default=str(DEFAULT_FACES))
    p.add_argument("--start", default="auto", help="'auto' (the encoder if shipped) or 'none' (projection)")
    p.add_argument("--steps", default="10,25,50")
    p.add_argument("--min-res", default="0,16,32,64")
    p.add_argument("--pivot-steps-w", type=int, default=None, help="projection: W steps (default: the preset's)")
    p.add_argument("--pivot-steps-wplus", type=int, default=0, help="projection: W+ steps after W")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--amp", default="auto", help="'bf16', 'none' or 'auto' (the pipeline's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    G = load_generator(args.model, device=device)
    faces = sorted(Path(args.faces_dir).glob("*.png"))[:args.faces]
    config = InversionConfig(device=args.device, alignment="center", identity=False, encoder=args.start,
                             steps_pti=0, amp=args.amp, steps_w=args.pivot_steps_w, steps_wplus=args.pivot_steps_wplus)
    amp = config.resolved(device).amp
    loss = make_loss("auto", device=device)
    rows = []
    for f in faces:
        pivot = invert(f, G, config, cache=None)
        target = to_tensor(pivot.aligned, device)
        base = {"face": f.name, "start": pivot.report["start"], "pivot_psnr": pivot.report["psnr"]}
        for steps in map(int, args.steps.split(",")):
            for min_res in map(int, args.min_res.split(",")):
                settings = TuningSettings(steps=steps, lr=args.lr, lr_rampdown=0.3, stop_threshold=None,
                                          min_resolution=min_res, amp=None if amp == "none" else amp)
                t = time.perf_counter()
                G_tuned, _ = pivotal_tuning(pivot.generator, pivot.ws, target, loss, settings)
                seconds = time.perf_counter() - t
                with torch.no_grad():
                    image = to_image(G_tuned.synthesis(pivot.ws.to(device), noise_mode="const"))
                rows.append({**base, "steps": steps, "min_res": min_res, "psnr": round(psnr(pivot.aligned, image), 3),
                             "sec_per_step": round(seconds / steps, 4)})
                print(json.dumps(rows[-1]), flush=True)
    table = {}
    for r in rows:
        table.setdefault((r["steps"], r["min_res"]), []).append(r)
    summary = [{"steps": s, "min_res": m, "psnr": round(statistics.fmean(x["psnr"] for x in rs), 3),
                "sec_per_step": round(statistics.median(x["sec_per_step"] for x in rs), 4),
                "pivot_psnr": round(statistics.fmean(x["pivot_psnr"] for x in rs), 3)}
               for (s, m), rs in sorted(table.items())]
    for row in summary:
        print(json.dumps(row), flush=True)
    result = {"model": args.model, "device": args.device, "threads": torch.get_num_threads(), "amp": amp,
              "loss": loss.name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load": os.getloadavg(), "summary": summary, "rows": rows}
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
