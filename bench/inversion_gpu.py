"""Issue 28, item 3: a photo's inversion at 512 / 1024 px on a GPU, per setting and step budget, at the same PSNR.

    python3 -m bench.inversion_gpu --faces-dir .stage/enc/eval --faces 4 --arch ffhq512 --out $OUT/inv512.json
    python3 -m bench.inversion_gpu --faces-dir .stage/enc/eval --faces 3 --arch ffhq1024 \\
        --variants default,fast-kernels --out $OUT/inv1024.json
    python3 -m bench.inversion_gpu --device cpu --arch tiny64 --faces 1 --budgets 2:2 --out /tmp/i.json  # smoke

The official checkpoints have no encoder, so a photo is projected (W steps) and then tuned (PTI steps),
with the pipeline's GPU ``fast`` preset (100 + 250 steps) unless a budget says otherwise. NVIDIA's weights
cannot be downloaded here, so the generator has random weights of NVIDIA's FFHQ-512 / FFHQ-1024
architecture, and the photos are held-out CelebA faces, which the pipeline's centre alignment scales up to
the generator's size. What such a run says: the seconds a photo takes (they do not depend on the
weights), and, between settings, whether a faster one keeps the PSNR the default reaches on the same
faces. It does not say how many steps a *trained* 512 px model needs (a random generator is fitted
mostly by the tuning).

Variants (``--variants``, run interleaved: every face goes through each variant in turn):

* ``default``: what ``invert()`` did on a GPU until 2026-12-06: bf16 autocast, NCHW weights, cuDNN's heuristics;
* ``fp32``: no autocast;
* ``channels-last``: bf16 with the generator's weights channels-last;
* ``cudnn-benchmark``: bf16, NCHW, ``torch.backends.cudnn.benchmark`` on (cuDNN times its algorithms for
  each new shape once, instead of choosing by heuristics);
* ``fast-kernels``: bf16, channels-last and cuDNN benchmark together: what ``invert()`` does now with the
  app's and the CLI's generator (``draggan.runtime`` keeps it channels-last on a GPU, and the pipeline
  autotunes, ``InversionConfig.cudnn_autotune``);
* ``fp32-benchmark``: fp32 with cuDNN benchmark;
* and ``--budgets W:PTI,...`` with the ``--budget-variant`` setting: fewer steps.

Each variant inverts ``--warmup-face`` first (not timed: graph capture, cuDNN autotuning, the W
statistics). Seconds are the whole ``invert()`` call, CUDA-synchronized; PSNR is the pipeline's report.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.bench_drag import ARCHS
from bench.bench_inversion import bench_photos, timed_invert
from bench.inversion_encoder import DEFAULT_FACES
from draggan.models.networks import Generator, GeneratorConfig
from inversion import InversionConfig

# name -> (amp, channels-last, cuDNN benchmark)
SETTINGS = {
    "default": ("auto", False, False),
    "fp32": ("none", False, False),
    "channels-last": ("bf16", True, False),
    "cudnn-benchmark": ("bf16", False, True),
    "fast-kernels": ("bf16", True, True),
    "fp32-benchmark": ("none", False, True),
}


def variants_from(args) -> list[dict]:
    out = []
    for name in [v for v in args.variants.split(",") if v]:
        amp, channels_last, bench = SETTINGS[name]
        out.append(dict(name=name, amp=amp, channels_last=channels_last, cudnn_benchmark=bench, steps_w=None,
                        steps_pti=None))
    amp, channels_last, bench = SETTINGS[args.budget_variant]
    for budget in [b for b in args.budgets.split(",") if b]:
        w, pti = (int(x) for x in budget.split(":"))
        out.append(dict(name=f"{args.budget_variant} {w}+{pti}", amp=amp, channels_last=channels_last,
                        cudnn_benchmark=bench, steps_w=w, steps_pti=pti))
    return out


def run_one(photo, G, variant, device, args) -> dict:
    cfg = InversionConfig(device=str(device), amp=variant["amp"], steps_w=variant["steps_w"],
                          steps_pti=variant["steps_pti"], alignment="center", identity=False, loss=args.loss,
                          cudnn_autotune=variant["cudnn_benchmark"])
    result, seconds = timed_invert(photo, G, cfg, device)
    r = result.report
    return dict(seconds=seconds, psnr=r["psnr"], ssim=r["ssim"], steps_w=r["steps"]["w"], steps_pti=r["steps"]["pti"],
                timings=r["timings"], amp=r["config"]["amp"], loss=r["loss_used"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--arch", default="ffhq512", choices=sorted(ARCHS))
    p.add_argument("--faces-dir", type=Path, default=DEFAULT_FACES)
    p.add_argument("--faces", type=int, default=4)
    p.add_argument("--variants", default="default,fp32,channels-last,cudnn-benchmark,fast-kernels,fp32-benchmark",
                   help=f"comma-separated, of {', '.join(SETTINGS)}")
    p.add_argument("--budgets", default="50:150,50:100,25:100,25:60", help="W:PTI step budgets for --budget-variant")
    p.add_argument("--budget-variant", default="fast-kernels", choices=sorted(SETTINGS))
    p.add_argument("--loss", default="auto", help="the pipeline's loss (auto: LPIPS with weights, else pyramid)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**ARCHS[args.arch])).eval().requires_grad_(False).to(device)
    G_cl = copy.deepcopy(G).to(memory_format=torch.channels_last)
    photos = bench_photos(args.faces_dir, args.faces + 1, extra=False)
    if len(photos) < 2:
        raise SystemExit(f"no faces in {args.faces_dir}")
    warm, photos = photos[0], photos[1:]
    variants = variants_from(args)
    result = dict(command="python3 -m bench.inversion_gpu " + " ".join(sys.argv[1:] if argv is None else argv),
                  date=str(datetime.datetime.now()), torch=torch.__version__, arch=args.arch,
                  resolution=G.img_resolution, faces=[n for n, _ in photos], warmup_face=warm[0],
                  device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", rows=[])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for v in variants:
        run_one(warm[1], G_cl if v["channels_last"] else G, v, device, args)
    for name, photo in photos:
        for v in variants:
            row = dict(variant=v["name"], face=name, **run_one(photo, G_cl if v["channels_last"] else G, v, device,
                                                                args))
            result["rows"].append(row)
            print(json.dumps({k: (round(x, 3) if isinstance(x, float) else x) for k, x in row.items()
                              if k != "timings"}), flush=True)
        out.write_text(json.dumps(result, indent=1) + "\n")     # partial results survive a time limit
    result["seconds"] = time.perf_counter() - started
    summary = []
    for v in variants:
        rows = [r for r in result["rows"] if r["variant"] == v["name"]]
        if rows:
            summary.append(dict(variant=v["name"], n=len(rows), seconds=statistics.median(r["seconds"] for r in rows),
                                psnr=statistics.mean(r["psnr"] for r in rows),
                                steps=f"{rows[0]['steps_w']}+{statistics.mean(r['steps_pti'] for r in rows):g}"))
    result["summary"] = summary
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"# {result['device']}, torch {result['torch']}, {result['date'][:16]}, {args.arch}; {result['command']}")
    print("| variant | W + PTI steps | s per photo (median) | PSNR dB (mean) | faces |\n|---|---|---:|---:|---:|")
    for s in summary:
        print(f"| {s['variant']} | {s['steps']} | {s['seconds']:.2f} | {s['psnr']:.2f} | {s['n']} |")
    print(f"# {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
