"""Web app responsiveness: time to the first frame after Start, and frames per second while dragging.

The app is served in this process and driven over HTTP with gradio_client, the way a
browser drives it (each streamed frame is a PNG the server writes and the client
fetches). Per run: sample a face, set handle/target pairs, call the app's ``drag``
endpoint and time every streamed update on arrival.

    .venv/bin/python -m bench.bench_app                               # bundled celeba128, CPU
    .venv/bin/python -m bench.bench_app --device cuda --runs 5 --steps 60
    .venv/bin/python -m bench.bench_app --model path/to/generator --no-autocast

Reported (median over runs):

* first response : Start -> the first update (the status says the drag began);
* first frame    : Start -> the first update that carries a new image (after one step);
* frames/s       : new images per second from the first frame to the last;
* steps/s        : optimization steps per second over the whole drag;
* step / render  : the engine's own step and render times, measured in the same
                   process right after (what bounds the frame rate);
* CPU per frame  : CPU seconds this process (server, both drag threads, client) spent
                   per frame. Load from other processes stretches wall times but hardly
                   this; on an idle machine with N free cores, frames/s is at most
                   N / (CPU per frame).

On a GPU the app caps frames at ``--max-fps`` (default 15, see ``app.GPU_MAX_FPS``).
The 1-minute load average is printed: the CPU machine is shared, and load inflates times.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import torch

import app
from draggan.engine import DragSession, default_feature_block


def points_for(resolution: int, pairs: int) -> str:
    """``pairs`` handles on a ring around the centre, each pulled 12% of the image sideways."""
    import math
    c, r, d = (resolution - 1) / 2, resolution * 0.22, resolution * 0.12
    specs = []
    for i in range(pairs):
        a = 2 * math.pi * i / pairs
        hx, hy = c + r * math.cos(a), c + r * math.sin(a)
        specs.append(f"{hx:.0f},{hy:.0f}->{min(resolution - 1, hx + d):.0f},{hy:.0f}")
    return ";".join(specs)


def image_url(value) -> str | None:
    """The served file of an image output (None for "unchanged")."""
    if isinstance(value, dict):
        return value.get("url") or value.get("path")
    return value if isinstance(value, str) else None


def time_drag(client, steps: int, block: int, lr: float) -> dict:
    """One drag over HTTP; timestamps of every streamed update."""
    start, cpu_start = time.perf_counter(), time.process_time()
    job = client.submit(lr, steps, 0, 0, 20, "W+", block, api_name="/drag")
    arrivals, last_image = [], None
    for out in job:
        now = time.perf_counter() - start
        image = image_url(out[0])
        arrivals.append((now, image is not None and image != last_image))
        last_image = image or last_image
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    frames = [t for t, new in arrivals if new]
    return {
        "cpu_s_per_frame": cpu / max(len(frames), 1),
        "first_response_s": arrivals[0][0] if arrivals else float("nan"),
        "first_frame_s": frames[0] if frames else float("nan"),
        "frames": len(frames),
        "fps": (len(frames) - 1) / (frames[-1] - frames[0]) if len(frames) > 1 else float("nan"),
        "total_s": total,
    }


def engine_times(G, ws, config, points, repeats=3) -> tuple[float, float]:
    """(ms per step, ms per render) of the engine alone, for the same settings."""
    from draggan.engine.points import parse_points
    session = DragSession(G, ws, config)
    session.set_points(*parse_points(points))
    it = session.drag(max_steps=repeats + 1, image_every=0)
    next(it)
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    step_ms = 1000 * (time.perf_counter() - t0) / max(n, 1)
    session.render()
    t0 = time.perf_counter()
    for _ in range(repeats):
        session.render()
    return step_ms, 1000 * (time.perf_counter() - t0) / repeats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="celeba128", help="registry name or generator path")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", type=int, default=3, help="drags timed (each on a new seed)")
    p.add_argument("--steps", type=int, default=20, help="steps per drag (targets are far: no early stop)")
    p.add_argument("--pairs", type=int, default=1, help="handle/target pairs")
    p.add_argument("--block", type=int, default=None, help="feature block (default: the app's choice)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-fps", type=float, default=app.GPU_MAX_FPS)
    p.add_argument("--no-autocast", action="store_true", help="fp32 even where bf16 is fast")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the app's choice)")
    args = p.parse_args(argv)
    if args.threads or torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads or app.cpu_threads())     # as `python app.py` does

    autocast = False if args.no_autocast else None
    demo = app.build_app({"model": args.model}, "model", args.device, autocast=autocast, max_fps=args.max_fps,
                         threads=args.threads,
                         store=app.SessionStore(export_root=tempfile.mkdtemp(prefix="bench-app-")))
    studio = demo.studio
    t0 = time.perf_counter()
    G = studio.load_model("model")
    load_s = time.perf_counter() - t0
    studio.warm_up("model")                 # as `python app.py` does before serving
    block = args.block or default_feature_block(G)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)

    from gradio_client import Client
    client = Client(url, verbose=False, download_files=False)   # like a browser: frames are fetched elsewhere
    points = points_for(G.img_resolution, args.pairs)
    runs, sample_s = [], []
    for run in range(args.runs):
        t0 = time.perf_counter()
        client.predict("model", 100 + run, 0.7, api_name="/sample")
        sample_s.append(time.perf_counter() - t0)
        client.predict(points, api_name="/set_points")
        runs.append(time_drag(client, args.steps, block, args.lr))
        print(f"run {run}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in runs[-1].items()), flush=True)
    session = studio.store.get(client.session_hash, create=False)
    step_ms, render_ms = engine_times(G, session.drag.ws, session.drag.config, points)
    demo.close()

    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(f"bench_app {datetime.date.today()} | {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__} | load average {load:.1f}")
    print(f"model {args.model} ({G.img_resolution} px) on {args.device}, feature block {block} "
          f"({G.block_resolution(block)} px), {'bf16 autocast' if studio.autocast else 'fp32'}, "
          f"{args.pairs} pair(s), {args.steps} steps/drag, max {args.max_fps:g} fps, {args.runs} runs")
    print(f"model load {load_s:.2f} s, new face (HTTP) {statistics.median(sample_s) * 1000:.0f} ms")
    print()
    print("| first response | first frame | frames/s | steps/s | CPU per frame | engine step | engine render |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {med('first_response_s') * 1000:.0f} ms | {med('first_frame_s') * 1000:.0f} ms | {med('fps'):.2f} | "
          f"{args.steps / med('total_s'):.2f} | {med('cpu_s_per_frame') * 1000:.0f} ms | {step_ms:.0f} ms | "
          f"{render_ms:.0f} ms |")


if __name__ == "__main__":
    main()
