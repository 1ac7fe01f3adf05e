"""What each CPU speed change is worth: a live view's step + frame, with one change undone at a time.

    .venv/bin/python -m bench.cpu_speed --model celeba128 --rounds 6 --steps 3
    .venv/bin/python -m bench.cpu_speed --model celeba128-lite --variants default,before,fp32
    .venv/bin/python -m bench.cpu_speed --model celeba128 --block 6 --json out.json

Per streamed frame a live view on a CPU takes one drag step with its partial frame and finishes
that frame (``live_drag(frames='partial')``); this times exactly that pair, with the app's
settings (the ``local`` defaults, the runtime's precision and memory format, one torch thread
per worker), and again with one change undone:

* ``fast-layers``: the synthesis layers as separate ops (``ops.FAST_LAYERS = False``);
* ``frozen-cache``: weight casts and norms recomputed every call (``ops.CACHE_FROZEN = False``);
* ``warp-box``: the warp term over the whole feature map instead of the region's box;
* ``const-layers``: the W+ layers a drag leaves alone keep their (unused) gradient;
* ``window``: a local drag's blocks after the blend run on the whole image (``DragConfig(windowed=False)``),
  not on the box around the region (``draggan/engine/window.py``);
* ``fp32`` / ``bf16``: the other precision;
* ``contiguous``: NCHW weights instead of channels-last;
* ``threads2``: two torch threads in one worker (the app gives each of its two workers one);
* ``before``: all of the above undone that this branch added (fast layers, cache, warp box, const layers);
* ``base``: the code of an earlier commit, run in this process on the same weights: a copy of its
  ``draggan`` package renamed ``draggan_base`` in the folder ``--base`` (made with
  ``git archive 9b48cab draggan | tar -x -C .stage/base && mv .stage/base/draggan .stage/base/draggan_base``).

``--live 1,2`` times the live view itself instead (``live_drag``: a stepping thread and a
drawing thread, each with that many torch threads; the app's default gives each one thread on
a 2-core CPU): frames per second and CPU per streamed frame over ``--live-steps`` steps a run.

``--profile`` adds where the time goes: ``torch.profiler`` over the same pairs, per variant, the
operators' own CPU time summed into convolutions (forward, backward), copies and casts, the
other element-wise work and the rest, and the top operators.

The variants are interleaved: each round runs every variant for ``--steps`` steps in turn, so a
change in the machine's load hits them alike. Reported per variant: the median wall time and
the median CPU time of this process (``time.process_time``: what a shared machine's other load
does not add to), the spread of the round medians, the 1-minute load average, and the FLOPs of one
pair (``torch.utils.flop_counter``, counted after the timings).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import draggan.engine
from draggan.engine import session as session_module
from draggan.loaders.checkpoints import load_generator
from draggan.models import ops
from draggan.runtime import runtime_for

VARIANTS = ("default", "window", "fast-layers", "frozen-cache", "warp-box", "const-layers", "fp32", "bf16",
            "contiguous", "threads2", "before", "base")


@contextlib.contextmanager
def undone(variant: str):
    """The module switches of ``variant`` for the duration of the block."""
    Session = session_module.DragSession
    saved = (ops.FAST_LAYERS, ops.CACHE_FROZEN, session_module.support_box, Session._const_layers)
    off = {"fast-layers": {"fast"}, "frozen-cache": {"cache"}, "warp-box": {"box"}, "const-layers": {"const"},
           "before": {"fast", "cache", "box", "const"}}.get(variant, set())
    ops.FAST_LAYERS = "fast" not in off
    ops.CACHE_FROZEN = "cache" not in off
    if "box" in off:
        session_module.support_box = lambda weight: None
    if "const" in off:
        Session._const_layers = lambda self: None
    try:
        yield
    finally:
        ops.FAST_LAYERS, ops.CACHE_FROZEN, session_module.support_box, Session._const_layers = saved


def app_points(pairs: int, resolution: int) -> tuple[list, list]:
    """The app benchmark's drags (``bench/bench_app.py``): handles on a ring around the centre, each
    pulled 12% of the image sideways; a local drag's region (and so its cost) depends on them."""
    c, r, d = (resolution - 1) / 2, resolution * 0.22, resolution * 0.12
    handles, targets = [], []
    for i in range(pairs):
        a = 2 * math.pi * i / pairs
        hx, hy = round(c + r * math.cos(a)), round(c + r * math.sin(a))
        handles.append((hx, hy))
        targets.append((min(resolution - 1, round(hx + d)), hy))
    return handles, targets


class LiveFrames:
    """One session stepping with partial frames, finishing each frame as the live view does.

    ``package``: the ``draggan`` package to run (this one, or an earlier commit's copy).
    """

    def __init__(self, G, block, autocast, handles, package=None, **config):
        engine = package.engine if package is not None else draggan.engine
        self.G, self.finish_frame = G, engine.finish_frame
        self.config = engine.DragConfig(feature_block=block, autocast=autocast, stop_distance=1e-3,
                                        max_steps=10 ** 9, **config)
        s = engine.DragSession(G, G.ws_from_seed(0, 0.7), self.config)
        s.set_points(*app_points(handles, G.img_resolution))
        self.steps = s.drag(image_every=0, partial_frames=True)

    def __call__(self):
        state = next(self.steps)
        self.finish_frame(self.G, state.partial_frame, self.config)


def base_generator(folder, G):
    """``G``'s weights in the earlier commit's Generator class (its own ops), prepared the same way."""
    sys.path.insert(0, str(Path(folder).resolve()))
    import draggan_base
    from draggan_base.runtime import runtime_for as base_runtime_for
    old = draggan_base.models.networks.Generator(draggan_base.models.networks.GeneratorConfig(**G.cfg.to_dict()))
    old.load_state_dict(G.state_dict())
    return base_runtime_for("cpu").prepare(old.eval().requires_grad_(False)), draggan_base


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="celeba128")
    p.add_argument("--block", type=int, default=None, help="feature block (default: the engine's for the model)")
    p.add_argument("--handles", type=int, default=1)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the worker (the app: half the cores)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed step + frame pairs per variant and round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="also profile each variant (see above)")
    p.add_argument("--live", default=None, help="comma-separated torch threads per live-view worker (see above)")
    p.add_argument("--live-steps", type=int, default=15)
    p.add_argument("--base", default=".stage/base", help="folder holding draggan_base (for the 'base' variant)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if "base" in variants and not (Path(args.base) / "draggan_base").is_dir():
        print(f"# no {args.base}/draggan_base (see 'base' above): that variant is left out")
        variants.remove("base")

    runtime = runtime_for("cpu")
    G0 = load_generator(args.model, "cpu", progress=False)
    if args.live:
        return live_main(args, runtime.prepare(copy.deepcopy(G0)), runtime)
    G = runtime.prepare(copy.deepcopy(G0))
    G_plain = G0     # NCHW, for 'contiguous'
    from draggan.engine import default_feature_block
    block = args.block or default_feature_block(G)
    runners = {}
    for v in variants:
        autocast = {"fp32": False, "bf16": True}.get(v, runtime.autocast)
        with undone(v):
            if v == "base":
                G_base, package = base_generator(args.base, G0)
                runners[v] = LiveFrames(G_base, block, autocast, args.handles, package=package)
            else:
                runners[v] = LiveFrames(G_plain if v == "contiguous" else G, block, autocast, args.handles,
                                        **({"windowed": False} if v == "window" else {}))

    def run(v, n):
        threads = 2 if v == "threads2" else args.threads
        torch.set_num_threads(threads)
        wall, cpu = [], []
        with undone(v):
            for _ in range(n):
                t0, c0 = time.perf_counter(), time.process_time()
                runners[v]()
                wall.append(1000 * (time.perf_counter() - t0))
                cpu.append(1000 * (time.process_time() - c0))
        return wall, cpu

    for v in variants:
        run(v, args.warmup)
    walls = {v: [] for v in variants}
    cpus = {v: [] for v in variants}
    round_medians = {v: [] for v in variants}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for v in variants:
            w, c = run(v, args.steps)
            walls[v] += w
            cpus[v] += c
            round_medians[v].append(statistics.median(w))
        loads.append(os.getloadavg()[0])

    rows = [dict(variant=v, wall_ms=statistics.median(walls[v]), cpu_ms=statistics.median(cpus[v]),
                 spread_ms=[min(round_medians[v]), max(round_medians[v])], samples=len(walls[v]),
                 gflop=flops_of(runners[v], v) / 1e9) for v in variants]
    base = next((r for r in rows if r["variant"] == "default"), rows[0])
    result = dict(command="python -m bench.cpu_speed " + " ".join(sys.argv[1:]), date=str(datetime.datetime.now()),
                  cpu=platform.processor() or platform.machine(), bf16_autocast_default=runtime.autocast,
                  torch=torch.__version__, model=args.model, block=block, handles=args.handles,
                  load_avg_1min=[min(loads), max(loads)], rows=rows)
    print(f"# {args.model}, feature block {block}, {args.handles} handle(s): one step + its frame, as a live view "
          f"streams them; CPU {result['cpu']}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{result['date'][:16]}")
    print(f"# command: {result['command']}")
    print(f"# load average (1 min) {min(loads):.2f}-{max(loads):.2f}; default precision "
          f"{'bf16' if runtime.autocast else 'fp32'}, channels-last, {args.threads} thread(s)")
    print_table(["variant", "wall ms (median)", "CPU ms (median)", "spread of round medians", "default is faster by",
                 "GFLOP"],
                [[r["variant"], f"{r['wall_ms']:.1f}", f"{r['cpu_ms']:.1f}",
                  f"{r['spread_ms'][0]:.1f}-{r['spread_ms'][1]:.1f}", f"{r['cpu_ms'] / base['cpu_ms']:.2f}x",
                  f"{r['gflop']:.2f}"] for r in rows])
    if args.profile:
        result["profile"] = {}
        for v in variants:
            torch.set_num_threads(2 if v == "threads2" else args.threads)
            with undone(v):
                result["profile"][v] = profile(runners[v], args.steps)
        print()
        categories = ["conv forward", "conv backward", "copies", "element-wise", "rest"]
        print_table(["variant", *categories, "top operators (ms per pair)"],
                    [[v, *(f"{prof['categories'][c]:.1f}" for c in categories),
                      ", ".join(f"{name} {ms:.1f}" for name, ms in prof["top"][:6])]
                     for v, prof in result["profile"].items()])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def flops_of(run, variant: str) -> int:
    """Multiply-adds x 2 of one more step + frame pair of ``run`` (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode
    with undone(variant), FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops())


def live_main(args, G, runtime):
    """Frames per second and CPU per streamed frame of ``live_drag`` for each worker thread count, interleaved."""
    from draggan.engine import DragConfig, DragSession, default_feature_block, live_drag
    block = args.block or default_feature_block(G)
    counts = [int(t) for t in args.live.split(",")]
    config = DragConfig(feature_block=block, autocast=runtime.autocast, stop_distance=1e-3, max_steps=10 ** 9)

    def one_run(threads):
        s = DragSession(G, G.ws_from_seed(0, 0.7), config)
        s.set_points(*app_points(args.handles, G.img_resolution))
        frames, first, last = 0, None, None
        for event in live_drag(s, max_steps=args.live_steps, worker_threads=threads):
            if event.kind == "frame":     # steady state: from the first frame to the last
                frames += 1
                last = (time.perf_counter(), time.process_time())
                first = first or last
        n = max(frames - 1, 1)
        return dict(frames=frames, fps=(frames - 1) / (last[0] - first[0]) if frames > 1 else 0.0,
                    cpu_ms_per_frame=1000 * (last[1] - first[1]) / n if frames > 1 else 0.0)

    one_run(counts[0])   # warm-up
    runs = {t: [] for t in counts}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for t in counts:
            runs[t].append(one_run(t))
        loads.append(os.getloadavg()[0])
    print(f"# {args.model}, feature block {block}, {args.handles} handle(s): live_drag, {args.live_steps} steps a run, "
          f"{args.rounds} runs each, interleaved; {datetime.datetime.now():%Y-%m-%d %H:%M}; load average (1 min) "
          f"{min(loads):.2f}-{max(loads):.2f}")
    print(f"# command: python -m bench.cpu_speed {' '.join(sys.argv[1:])}")
    print_table(["torch threads per worker", "frames/s (median)", "CPU ms per frame (median)", "frames per run"],
                [[t, f"{statistics.median(r['fps'] for r in rs):.2f}",
                  f"{statistics.median(r['cpu_ms_per_frame'] for r in rs):.1f}",
                  statistics.median(r["frames"] for r in rs)] for t, rs in runs.items()])
    if args.json:
        Path(args.json).write_text(json.dumps(dict(model=args.model, block=block, runs=runs,
                                                   load_avg_1min=[min(loads), max(loads)]), indent=2) + "\n")


def print_table(header: list, rows: list) -> None:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    print("| " + " | ".join(map(str, header)) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


CONV_FORWARD = {"aten::mkldnn_convolution", "aten::_convolution", "aten::_slow_conv2d_forward",
                "aten::slow_conv_transpose2d", "aten::mkldnn_convolution_transpose"}
CONV_BACKWARD = {"aten::convolution_backward", "aten::mkldnn_convolution_backward",
                 "aten::_slow_conv2d_backward", "aten::slow_conv_transpose2d_backward"}
COPIES = {"aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous", "aten::fill_", "aten::zero_"}
ELEMENTWISE = {"aten::mul", "aten::add", "aten::add_", "aten::sub", "aten::div", "aten::addcmul", "aten::leaky_relu",
               "aten::leaky_relu_", "aten::leaky_relu_backward", "aten::hardtanh", "aten::hardtanh_backward",
               "aten::clamp", "aten::where", "aten::lt", "aten::gt", "aten::abs", "aten::sgn", "aten::sum",
               "aten::mean", "aten::pow", "aten::square", "aten::rsqrt", "aten::grid_sampler_2d",
               "aten::grid_sampler_2d_backward", "aten::mul_", "aten::neg", "aten::sign"}


def profile(run, n: int) -> dict:
    """Operators' own CPU time per step + frame pair, summed into categories, and the top operators."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            run()
    totals = {"conv forward": 0.0, "conv backward": 0.0, "copies": 0.0, "element-wise": 0.0, "rest": 0.0}
    ops_ms = []
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1000 / n
        if ms <= 0:
            continue
        kind = ("conv forward" if e.key in CONV_FORWARD else "conv backward" if e.key in CONV_BACKWARD else
                "copies" if e.key in COPIES else "element-wise" if e.key in ELEMENTWISE else "rest")
        totals[kind] += ms
        ops_ms.append((e.key.replace("aten::", ""), ms))
    ops_ms.sort(key=lambda t: -t[1])
    return {"categories": totals, "top": ops_ms[:12]}


if __name__ == "__main__":
    main()
