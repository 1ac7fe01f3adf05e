"""Drag engine speed: milliseconds per DragGAN step (forward to the feature block, tracking,
motion loss, backward, Adam), for 1 and 5 handles, with and without a mask.

    .venv/bin/python -m bench.bench_drag --arch ffhq512 --device cuda
    .venv/bin/python -m bench.bench_drag --arch ffhq512 --device cuda --autocast --mask both
    .venv/bin/python -m bench.bench_drag --model celeba128 --device cuda --handles 1,5,10
    .venv/bin/python -m bench.bench_drag --arch tiny64 --device cpu --steps 5 --warmup 2   # smoke test

``--arch`` builds a generator with random weights (speed does not depend on the
weights): ``ffhq512`` is NVIDIA's FFHQ 512 px configuration (channel_base 32768,
channel_max 512, 8 mapping layers). ``--model`` loads a real one (registry name or
path). Each step is timed around one ``next()`` of the drag iterator, which ends
with the engine's own device-to-host read, after a ``torch.cuda.synchronize()``;
handles get far-away targets so that no run stops early. The table reports the
median and 90th percentile over ``--steps`` steps after ``--warmup`` steps, plus
the median time of one ``render()`` (the full image, drawn when the UI shows
progress).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time

import numpy as np
import torch

from draggan.engine import DragConfig, DragSession
from draggan.models import ops
from draggan.models.networks import Generator, GeneratorConfig
from draggan.runtime import default_device

ARCHS = {
    "ffhq512": dict(img_resolution=512, channel_base=32768, channel_max=512, mapping_layers=8),
    "ffhq1024": dict(img_resolution=1024, channel_base=32768, channel_max=512, mapping_layers=8),
    "ffhq256": dict(img_resolution=256, channel_base=16384, channel_max=512, mapping_layers=8),
    "tiny64": dict(img_resolution=64, channel_base=2048, channel_max=64, z_dim=64, w_dim=64, mapping_layers=2),
}


def build_generator(args, device) -> tuple[Generator, str]:
    if args.model:
        from draggan.loaders.checkpoints import load_generator
        return load_generator(args.model, device=device), args.model
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**ARCHS[args.arch]))
    return G.eval().requires_grad_(False).to(device), f"{args.arch} (random weights)"


def spread_points(n: int, R: int) -> tuple[list, list]:
    """n handles on a ring around the centre, each pulled a quarter of the image outwards."""
    centre = (R - 1) / 2
    handles, targets = [], []
    for i in range(n):
        a = 2 * np.pi * i / max(n, 1)
        hx, hy = centre + 0.15 * R * np.cos(a), centre + 0.15 * R * np.sin(a)
        handles.append((round(hx), round(hy)))
        targets.append((round(hx + 0.25 * R * np.cos(a)), round(hy + 0.25 * R * np.sin(a))))
    return handles, targets


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_case(G, device, n_handles: int, use_mask: bool, use_graph: bool, args) -> dict:
    R = G.img_resolution
    config = DragConfig(feature_block=min(args.feature_block, G.num_blocks), latent_space=args.space,
                        autocast=args.autocast, stop_distance=1e-3, max_steps=args.warmup + args.steps,
                        cuda_graph=use_graph)
    session = DragSession(G, G.ws_from_seed(0, 0.7, device=device), config, device=device)
    session.set_points(*spread_points(n_handles, R))
    if use_mask:
        mask = np.zeros((R, R), dtype=bool)
        mask[R // 8: 7 * R // 8, R // 8: 7 * R // 8] = True
        session.set_mask(mask)
    steps = session.drag(image_every=0)
    times = []
    for i in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        state = next(steps, None)   # ends with the engine's one device->host read
        sync(device)
        if state is None:
            break
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    steps.close()
    render_times = []
    for _ in range(max(3, args.steps // 4)):
        sync(device)
        t0 = time.perf_counter()
        session.render()
        sync(device)
        render_times.append(time.perf_counter() - t0)
    times_ms = sorted(1000 * t for t in times)
    return {
        "handles": n_handles, "mask": use_mask, "graph": use_graph, "steps": len(times_ms),
        "median_ms": statistics.median(times_ms),
        "p90_ms": times_ms[min(len(times_ms) - 1, int(0.9 * len(times_ms)))],
        "render_ms": 1000 * statistics.median(render_times),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--arch", choices=sorted(ARCHS), default="ffhq512", help="random-weight architecture")
    src.add_argument("--model", help="registry name or path of a real generator (instead of --arch)")
    p.add_argument("--device", default=str(default_device()))
    p.add_argument("--handles", default="1,5", help="comma-separated handle counts (default 1,5)")
    p.add_argument("--mask", choices=["off", "on", "both"], default="off", help="benchmark with a mask term")
    p.add_argument("--feature-block", type=int, default=6)
    p.add_argument("--space", choices=["w", "w+"], default="w+")
    p.add_argument("--autocast", action="store_true", help="bf16 autocast for the generator")
    p.add_argument("--graph", choices=["on", "off", "both"], default=None,
                   help="CUDA graph replay of the step (default: on for CUDA, off otherwise)")
    p.add_argument("--upsample", choices=["auto", "fold", "filter"], default="auto",
                   help="up-sampling convs: FIR filter folded into the kernel, or applied after it "
                        "(auto: fold on CUDA only, see draggan.models.ops.fold_filter_default)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=50, help="timed steps per case")
    args = p.parse_args(argv)
    ops.FOLD_FILTER = {"auto": None, "fold": True, "filter": False}[args.upsample]

    device = torch.device(args.device)
    G, name = build_generator(args, device)
    handle_counts = [int(h) for h in args.handles.split(",")]
    masks = {"off": [False], "on": [True], "both": [False, True]}[args.mask]
    default_graph = "on" if device.type == "cuda" else "off"
    graphs = {"off": [False], "on": [True], "both": [False, True]}[args.graph or default_graph]
    rows = [bench_case(G, device, n, m, g, args) for g in graphs for n in handle_counts for m in masks]

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    block = min(args.feature_block, G.num_blocks)
    print(f"# drag step timing: {name}, {G.img_resolution}px, feature block {block} "
          f"({G.block_resolution(block)}px), {args.space}, {'bf16 autocast' if args.autocast else 'fp32'}, "
          f"up-sampling {args.upsample} (folded: {ops.fold_filter_default(device)})")
    print(f"# device {device} ({gpu}), torch {torch.__version__}, {datetime.date.today()}, "
          f"warmup {args.warmup}, median of {args.steps} steps")
    print(f"# command: {' '.join(sys.argv)}")
    print("| handles | mask | CUDA graph | ms/step (median) | ms/step (p90) | steps/s | render ms |")
    print("|--------:|:----:|:----------:|-----------------:|--------------:|--------:|----------:|")
    for r in rows:
        print(f"| {r['handles']:7d} | {'yes' if r['mask'] else 'no':^4} | {'yes' if r['graph'] else 'no':^10} | "
              f"{r['median_ms']:16.2f} | "
              f"{r['p90_ms']:13.2f} | {1000 / r['median_ms']:7.1f} | {r['render_ms']:9.2f} |")


if __name__ == "__main__":
    main()
