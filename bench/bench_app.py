"""Web app responsiveness: time to the first frame after Start, and frames per second while dragging,
on a sampled face and on inverted photos (the live photo view: every frame the photo itself, edited).

The app is served in this process and driven over HTTP with gradio_client, the way a
browser drives it (each streamed frame is an image the server writes and the client
fetches). Per run: sample a face (or reset the inverted photo), set handle/target pairs,
call the app's ``drag`` endpoint and time every streamed update on arrival.

    .venv/bin/python -m bench.bench_app                               # bundled celeba128, CPU
    .venv/bin/python -m bench.bench_app --model celeba128-lite --photo ../shared/photos/portrait4.jpg \
        --megapixels 1,4                                              # + the live photo view at 1 and 4 MP
    .venv/bin/python -m bench.bench_app --device cuda --runs 5 --steps 60
    .venv/bin/python -m bench.bench_app --model path/to/generator --no-autocast

A photo is resized (Lanczos) to each ``--megapixels`` size and inverted with a short budget
(``--inversion-steps``: the live view costs the same whatever the reconstruction's quality);
the drag's points are the same in the model's square as on the sampled faces, so the rows
differ only by the photo view. The photo rows' "vs face" column is their steps/s over the
sampled faces' (what the photo view costs the drag).

Reported (median over runs):

* first response : Start -> the first update (the status says the drag began);
* first frame    : Start -> the first update that carries a new image (after one step);
* frames/s       : new images per second from the first frame to the last;
* steps/s        : optimization steps per second over the whole drag;
* step / render  : the engine's own step and render times, measured in the same
                   process right after (what bounds the frame rate);
* CPU per frame  : CPU seconds per frame of the app's process (the server: both drag threads,
                   the view's drawing and encoding, Gradio), and beside it the client's
                   (``gradio_client`` in a process of its own, standing in for the browser,
                   which decodes the frames on the user's machine). Until 2026-12-06 the client
                   ran in the app's process and the one figure held both: their sum is that
                   figure. Load from other processes stretches wall times but hardly this; on an
                   idle machine with N free cores, frames/s is at most N / (CPU per frame).
* photo rows     : frames/s of the live photo view and steps/s, against the sampled faces.

On a GPU the app caps frames at ``--max-fps`` (default 15, see ``app.GPU_MAX_FPS``).
The 1-minute load average is printed: the CPU machine is shared, and load inflates times.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import torch
from PIL import Image

import app
from draggan.engine import DragSession, default_feature_block
from draggan.engine.points import parse_points
from inversion import InversionConfig, read_photo

DEFAULT_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "photos" / "portrait4.jpg"


def points_for(resolution: int, pairs: int) -> str:
    """``pairs`` handles on a ring around the centre, each pulled 12% of the image sideways."""
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
    """One drag over HTTP; timestamps of every streamed update (``cpu_s_per_frame``: this process's CPU)."""
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


def drag_client(url: str, session_hash: str, conn) -> None:
    """The drags' client, in a process of its own: ``time_drag`` for each (steps, block, lr) received, in the
    session of ``session_hash`` (where the app's process sampled the face and set the points)."""
    from gradio_client import Client
    client = Client(url, verbose=False, download_files=False)
    client.session_hash = session_hash
    while (job := conn.recv()) is not None:
        conn.send(time_drag(client, *job))


class ClientProcess:
    """``time_drag`` in a child process; the app's process measures its own CPU meanwhile (the server's)."""

    def __init__(self, url: str, session_hash: str):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=drag_client, args=(url, session_hash, child), daemon=True)
        self.process.start()

    def time_drag(self, steps: int, block: int, lr: float) -> dict:
        cpu_start = time.process_time()
        self.conn.send((steps, block, lr))
        result = self.conn.recv()
        result["client_cpu_s_per_frame"] = result.pop("cpu_s_per_frame")
        result["cpu_s_per_frame"] = (time.process_time() - cpu_start) / max(result["frames"], 1)
        return result

    def close(self):
        self.conn.send(None)
        self.process.join(timeout=30)


def engine_times(G, ws, config, points, repeats=3) -> tuple[float, float]:
    """(ms per step, ms per render) of the engine alone, for the same settings."""
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


def resized_photo(path: Path, megapixels: float, folder: Path) -> Path:
    """The photo (as read_photo reads it: upright RGB) resized to about ``megapixels``, saved as PNG in ``folder``."""
    image = read_photo(str(path)).image
    s = math.sqrt(megapixels * 1e6 / (image.width * image.height))
    size = (round(image.width * s), round(image.height * s))
    out = folder / f"photo-{megapixels:g}mp.png"
    image.resize(size, Image.LANCZOS).save(out)
    return out


def summary(label: str, runs: list[dict], steps: int) -> dict:
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {"label": label, "first_response_s": med("first_response_s"), "first_frame_s": med("first_frame_s"),
            "fps": med("fps"), "steps_s": steps / med("total_s"), "cpu_s_per_frame": med("cpu_s_per_frame"),
            "client_cpu_s_per_frame": med("client_cpu_s_per_frame")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="celeba128", help="registry name or generator path")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", type=int, default=3, help="drags timed per row (each on a new seed, or from the photo)")
    p.add_argument("--steps", type=int, default=20, help="steps per drag (targets are far: no early stop)")
    p.add_argument("--pairs", type=int, default=1, help="handle/target pairs")
    p.add_argument("--block", type=int, default=None, help="feature block (default: the app's choice)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-fps", type=float, default=app.GPU_MAX_FPS)
    p.add_argument("--no-autocast", action="store_true", help="fp32 even where bf16 is fast")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the app's choice)")
    p.add_argument("--photo", type=Path, default=None,
                   help=f"also time the live photo view on this photo (e.g. {DEFAULT_PHOTO}; never commit it)")
    p.add_argument("--megapixels", default="1,4", help="with --photo: the sizes it is resized to, in megapixels")
    p.add_argument("--inversion-steps", type=int, default=10,
                   help="with --photo: projection and tuning steps (few: the live view's cost does not depend on them)")
    args = p.parse_args(argv)
    if args.threads or torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads or app.cpu_threads())     # as `python app.py` does

    autocast = False if args.no_autocast else None
    budget = InversionConfig(steps_w=args.inversion_steps, steps_pti=args.inversion_steps, identity=False)
    demo = app.build_app({"model": args.model}, "model", args.device, autocast=autocast, max_fps=args.max_fps,
                         threads=args.threads, inversion=budget,
                         store=app.SessionStore(export_root=tempfile.mkdtemp(prefix="bench-app-")))
    studio = demo.studio
    t0 = time.perf_counter()
    G = studio.load_model("model")
    load_s = time.perf_counter() - t0
    studio.warm_up("model")                 # as `python app.py` does before serving
    block = args.block or default_feature_block(G)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)

    from gradio_client import Client, handle_file
    client = Client(url, verbose=False, download_files=False)   # like a browser: frames are fetched elsewhere
    points = points_for(G.img_resolution, args.pairs)
    drags = ClientProcess(url, client.session_hash)
    runs, sample_s = [], []
    for run in range(args.runs):
        t0 = time.perf_counter()
        client.predict("model", 100 + run, 0.7, api_name="/sample")
        sample_s.append(time.perf_counter() - t0)
        client.predict(points, api_name="/set_points")
        runs.append(drags.time_drag(args.steps, block, args.lr))
        print(f"face run {run}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in runs[-1].items()), flush=True)
    rows = [summary("sampled face (no photo view)", runs, args.steps)]
    session = studio.store.get(client.session_hash, create=False)
    step_ms, render_ms = engine_times(G, session.drag.ws, session.drag.config, points)
    if args.photo:
        folder = Path(tempfile.mkdtemp(prefix="bench-app-photos-"))
        for megapixels in (float(m) for m in args.megapixels.split(",")):
            path = resized_photo(args.photo, megapixels, folder)
            size = Image.open(path).size
            t0 = time.perf_counter()
            client.predict(handle_file(str(path)), "model", "fast", api_name="/invert")
            invert_s = time.perf_counter() - t0
            session = studio.store.get(client.session_hash, create=False)
            view = session.canvas_view()
            runs = []
            for run in range(args.runs):
                client.predict(api_name="/reset")
                client.predict(points, "square", api_name="/set_points")
                runs.append(drags.time_drag(args.steps, block, args.lr))
                print(f"photo {size[0]}x{size[1]} run {run}: " + ", ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in runs[-1].items()), flush=True)
            rows.append(summary(f"photo {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.1f} MP), view "
                                f"{view.size[0]}x{view.size[1]}", runs, args.steps))
            print(f"(inverted in {invert_s:.1f} s with {args.inversion_steps}+{args.inversion_steps} steps; "
                  f"alignment {session.inversion.alignment.method})", flush=True)
    drags.close()
    demo.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(f"bench_app {datetime.date.today()} | {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__} | load average {load:.1f}")
    print(f"model {args.model} ({G.img_resolution} px) on {args.device}, feature block {block} "
          f"({G.block_resolution(block)} px), {'bf16 autocast' if studio.autocast else 'fp32'}, "
          f"{args.pairs} pair(s), {args.steps} steps/drag, max {args.max_fps:g} fps, {args.runs} runs per row")
    print(f"model load {load_s:.2f} s, new face (HTTP) {statistics.median(sample_s) * 1000:.0f} ms, "
          f"engine step {step_ms:.0f} ms, engine render {render_ms:.0f} ms")
    print()
    print("| canvas | first response | first frame | frames/s | steps/s | vs face | CPU per frame: app | client |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        ratio = row["steps_s"] / rows[0]["steps_s"]
        print(f"| {row['label']} | {row['first_response_s'] * 1000:.0f} ms | {row['first_frame_s'] * 1000:.0f} ms | "
              f"{row['fps']:.2f} | {row['steps_s']:.2f} | {ratio:.0%} | {row['cpu_s_per_frame'] * 1000:.0f} ms | "
              f"{row['client_cpu_s_per_frame'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
