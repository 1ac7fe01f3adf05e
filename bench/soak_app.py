"""Soak test of the web app: N gradio_client sessions at once for a while, then the figures.

Not a unit test: it runs for minutes and its numbers depend on the machine. It starts
``app.py`` in a subprocess on 127.0.0.1 (a free port, the bundled ``celeba128-lite`` by
default; nothing leaves the machine), then runs ``--workers`` client sessions, each in
its own thread, looping until ``--minutes`` have passed:

    sample -> set points -> drag (K steps) -> drag again, Stop it mid-way -> undo -> export

and now and then (at most one every ``--invert-interval`` s, by whichever session gets
there first) an inversion instead: upload a face photo -> invert -> points -> drag -> export.

Measured and written to ``bench/results/soak_app_<device>_<date>_<workers>x<minutes>m.json``:

* requests served and errors (target 0), p50/p95/max latency per endpoint, as the
  client sees it (queueing included);
* the server's resident memory (VmRSS from /proc) every few seconds; after the
  warm-up it should stay flat, within the tuned-generator LRU's bound;
* the queue positions the waiting drags were told (what a waiting browser tab shows);
* leakage: every export must carry its own session's seed, and after the soak a sample of
  the exports is replayed locally through the same handlers (sample -> points -> drag,
  undo as the statuses say): each exported latent must match its own replay and be
  further from every other session's.

Usage (the full soak; the 1-minute form validates the script):

    .venv/bin/python -m bench.soak_app --workers 8 --minutes 10
    .venv/bin/python -m bench.soak_app --workers 2 --minutes 1 --invert-interval 30
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
# A face photo for the inversions: the held-out faces beside a checkout (../shared), or $DRAGGAN_CELEBA128's.
PHOTOS = Path(os.environ.get("DRAGGAN_CELEBA128", ROOT.parent / "shared" / "datasets" / "celeba128")) / "eval"
STATUS_STEP = re.compile(r"(Paused at step|Stopped at step|Arrived after) (\d+)")


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, log_path: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--model", model,
           "--device", "cpu", *extra]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "DRAGGAN_OFFLINE": "1"}
    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode} before serving; see its log")
        try:
            with urllib.request.urlopen(url + "/config", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(1.0)
    raise SystemExit(f"the app did not answer within {timeout:.0f} s")


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (psutil when installed, else /proc)."""
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss / 2 ** 20
    except ImportError:
        pass
    except Exception:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, every: float, t0: float):
        super().__init__(daemon=True)
        self.pid, self.every, self.t0 = pid, every, t0
        self.samples: list[tuple[float, float]] = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            mb = rss_mb(self.pid)
            if mb is not None:
                self.samples.append((round(time.monotonic() - self.t0, 1), round(mb, 1)))
            self.halt.wait(self.every)


# --------------------------------------------------------------------------- the sessions


@dataclasses.dataclass
class Export:
    """One export of a sampled face, with what is needed to replay it."""

    worker: int
    seed: int
    psi: float
    points: str
    lr: float
    steps: int
    expect: str               # 'drag1': the latent after the first drag; 'seed': the sampled latent
    ws: list                  # the exported latent (nested lists)


class Shared:
    """What the sessions share: the clock, the result logs, and the inversion schedule."""

    def __init__(self, args, url: str, t0: float):
        self.args, self.url, self.t0 = args, url, t0
        self.deadline = t0 + args.minutes * 60
        self.lock = threading.Lock()
        self.calls: list[dict] = []           # {endpoint, seconds, ok, t}
        self.errors: list[dict] = []
        self.exports: list[Export] = []
        self.inversions = 0
        self.ranks: list[int] = []            # queue positions the waiting drags were told
        self.waited = 0                       # drags that had to wait in the queue
        self.last_inversion = t0 - args.invert_interval + args.first_invert_after

    def record(self, endpoint: str, seconds: float, ok: bool = True):
        with self.lock:
            self.calls.append({"endpoint": endpoint, "s": round(seconds, 4), "ok": ok,
                               "t": round(time.monotonic() - self.t0, 1)})

    def error(self, worker: int, endpoint: str, what: str):
        with self.lock:
            self.errors.append({"worker": worker, "endpoint": endpoint, "error": what[:400],
                                "t": round(time.monotonic() - self.t0, 1)})

    def take_inversion_turn(self) -> bool:
        if self.args.invert_interval <= 0:
            return False
        with self.lock:
            now = time.monotonic()
            if now - self.last_inversion >= self.args.invert_interval:
                self.last_inversion = now
                return True
            return False


class Problem(Exception):
    """A response that is wrong (not an exception of the client): counted as an error."""


class Session:
    def __init__(self, index: int, shared: Shared, photo: Path):
        from gradio_client import Client

        self.i, self.shared, self.photo = index, shared, photo
        self.rng = random.Random(1000 + index)
        self.client = Client(shared.url, verbose=False)
        self.resolution = shared.args.resolution

    # -- calls, timed

    def call(self, endpoint: str, *args, **kwargs):
        start = time.monotonic()
        try:
            out = self.client.predict(*args, api_name=f"/{endpoint}", **kwargs)
        except Exception:
            self.shared.record(endpoint, time.monotonic() - start, ok=False)
            raise
        self.shared.record(endpoint, time.monotonic() - start)
        return out

    def drag(self, name: str, stop_after_frames: int | None = None, **kwargs) -> str:
        """Submit /drag, note the queue position it is told while it waits, optionally Stop it after
        ``stop_after_frames`` streamed updates; returns the final status text."""
        start = time.monotonic()
        job = self.client.submit(api_name="/drag", **kwargs)
        waited, stopped = False, False
        while not job.done():
            status = job.status()
            if status.code.name == "IN_QUEUE" and status.rank is not None:
                if not waited:
                    waited = True
                    with self.shared.lock:
                        self.shared.waited += 1
                        self.shared.ranks.append(int(status.rank))
            if stop_after_frames is not None and not stopped and len(job.outputs()) >= stop_after_frames:
                stopped = True
                self.call("stop")
            time.sleep(0.05)
        try:
            final = job.result(timeout=600)
        except Exception:
            self.shared.record(name, time.monotonic() - start, ok=False)
            raise
        self.shared.record(name, time.monotonic() - start)
        return final[1]

    # -- one loop

    def points(self) -> str:
        r, rng = self.resolution, self.rng
        hx, hy = rng.randint(r // 4, 3 * r // 4), rng.randint(r // 4, 3 * r // 4)
        dx, dy = rng.choice([-1, 1]) * rng.randint(r // 12, r // 6), rng.randint(-r // 16, r // 16)
        return f"{hx},{hy}->{min(r - 1, max(0, hx + dx))},{min(r - 1, max(0, hy + dy))}"

    def sample_round(self):
        args = self.shared.args
        seed, psi = self.rng.randint(0, 99_999), 0.7
        out = self.call("sample", args.model, seed, psi)
        if "Click the image" not in out[1]:
            raise Problem(f"sample: unexpected status {out[1][:120]!r}")
        points = self.points()
        out = self.call("set_points", points)
        if out[2].replace(" ", "") != points.replace(" ", ""):
            raise Problem(f"set_points: the session shows {out[2]!r}, not {points!r}")   # another session's?
        first = self.drag("drag", lr=args.lr, max_steps=args.steps)
        s1 = self._step(first, 0)
        second = self.drag("drag_stopped", stop_after_frames=2, lr=args.lr, max_steps=1000)
        s2 = self._step(second, 0)            # steps are counted per Start
        undone = self.call("undo")
        if s2 > 0:
            expect = "drag1"                  # the stopped drag is undone
        else:
            expect = "seed"                   # it changed nothing, so Undo takes back the first drag
        if "Undid" not in undone[1] and s1 > 0:
            raise Problem(f"undo: unexpected status {undone[1][:120]!r}")
        self.export(seed, psi, points, args.lr, args.steps, expect)

    @staticmethod
    def _step(status: str, before: int) -> int:
        m = STATUS_STEP.search(status)
        if m:
            return int(m[2])
        if status.startswith(("Stopped", "Nothing to do")):
            return before
        raise Problem(f"drag: unexpected status {status[:160]!r}")

    def export(self, seed, psi, points, lr, steps, expect):
        import torch

        files = self.call("export", "GIF", True)
        names = [Path(f).name for f in files]
        latent = next((f for f in files if f.endswith(".pt")), None)
        if latent is None or not any(n.endswith(".gif") for n in names) or not any(n.endswith(".png") for n in names):
            raise Problem(f"export: unexpected files {names}")
        data = torch.load(latent, map_location="cpu", weights_only=True)
        if seed is None:
            if data["source"] != "photo":
                raise Problem(f"export after an inversion: source {data['source']!r}")
            return
        if data["seed"] != seed or data["source"] != "sample":
            raise Problem(f"export: latent of seed {data['seed']} ({data['source']}), this session sampled {seed}")
        with self.shared.lock:
            self.shared.exports.append(Export(self.i, seed, psi, points, lr, steps, expect,
                                              data["ws"].float().tolist()))

    def inversion_round(self):
        from gradio_client import handle_file

        args = self.shared.args
        out = self.call("upload_photo", handle_file(str(self.photo)))
        if "Photo read" not in out[0]:
            raise Problem(f"upload_photo: {out[0][:160]!r}")
        out = self.call("invert", handle_file(str(self.photo)), args.model, "fast")
        if "Photo inverted" not in out[1]:
            raise Problem(f"invert: unexpected status {out[1][:160]!r}")
        with self.shared.lock:
            self.shared.inversions += 1
        self.call("set_points", self.points(), "square")      # the model's square: always inside what it covers
        self.drag("drag", lr=args.lr, max_steps=args.steps)
        files = self.call("export", "GIF", True)
        if not any(Path(f).name.startswith("photo-edited-") for f in files):
            raise Problem(f"export after an inversion: no photo-edited file in {[Path(f).name for f in files]}")
        self.export(None, None, None, None, None, None)

    def run(self):
        while time.monotonic() < self.shared.deadline:
            inverting = self.shared.take_inversion_turn()
            try:
                self.inversion_round() if inverting else self.sample_round()
            except Exception as e:  # noqa: BLE001 - every failure is a soak error, reported with its text
                self.shared.error(self.i, "inversion round" if inverting else "sample round",
                                  f"{type(e).__name__}: {e}")
                time.sleep(1.0)


# --------------------------------------------------------------------------- replay


def replay(exports: list[Export], models: dict[str, str], model: str, limit: int, seed: int = 0,
           threads: int | None = None, **settings) -> dict:
    """Replay up to ``limit`` exports through the app's own handlers in this process; compare latents.

    ``models``, ``model`` and ``settings``: as the served app was built (app.build_app); ``threads``: torch
    threads as app.main() sets them (None: leave them)."""
    import numpy as np
    import torch

    import app

    if not exports:
        return {"replayed": 0}
    if threads:
        torch.set_num_threads(threads)
    demo = app.build_app(models, model, "cpu", **settings)
    studio = demo.studio
    chosen = random.Random(seed).sample(exports, min(limit, len(exports)))
    expected, exported = [], []
    for n, e in enumerate(chosen):
        req = types.SimpleNamespace(session_hash=f"replay-{n}")
        studio.sample(model, e.seed, e.psi, req)
        s = studio.store.get(req.session_hash)
        start = s.drag.ws.detach().float().cpu().clone()
        if e.expect == "drag1":
            studio.set_points_text(e.points, req)
            for _ in studio.drag(lr=e.lr, max_steps=e.steps, request=req):
                pass
            mine = s.drag.ws.detach().float().cpu().clone()
        else:
            mine = start
        studio.close_session(req)
        expected.append(mine.numpy())
        exported.append(np.asarray(e.ws, dtype=np.float32))
    diffs, leaks = [], 0
    for i, got in enumerate(exported):
        own = float(np.abs(got - expected[i]).max())
        diffs.append(own)
        others = [float(np.abs(got - expected[j]).max()) for j in range(len(expected))
                  if j != i and not (chosen[j].seed == chosen[i].seed and chosen[j].expect == chosen[i].expect)]
        if others and min(others) <= own:
            leaks += 1
    return {"replayed": len(chosen), "of_exports": len(exports),
            "max_abs_diff_to_own_replay": max(diffs), "matched_1e-4": sum(d <= 1e-4 for d in diffs),
            "closer_to_another_sessions_replay": leaks,
            "expect_counts": {k: sum(e.expect == k for e in chosen) for k in ("drag1", "seed")}}


# --------------------------------------------------------------------------- report


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def memory_summary(samples, warmup_s: float) -> dict:
    if not samples:
        return {}
    after = [(t, mb) for t, mb in samples if t >= warmup_s] or samples[-1:]
    ts, mbs = [t for t, _ in after], [mb for _, mb in after]
    slope = 0.0
    if len(after) >= 3 and ts[-1] > ts[0]:
        mt, mm = statistics.fmean(ts), statistics.fmean(mbs)
        slope = sum((t - mt) * (m - mm) for t, m in after) / sum((t - mt) ** 2 for t in ts) * 60
    return {"start_mb": samples[0][1], "after_warmup_mb": mbs[0], "max_after_warmup_mb": max(mbs),
            "end_mb": samples[-1][1], "growth_after_warmup_mb": round(max(mbs) - mbs[0], 1),
            "slope_after_warmup_mb_per_min": round(slope, 2), "warmup_s": warmup_s}


def cpu_name() -> str:
    """The processor's name and the flags that decide the app's speed here (bf16 matrix units or not)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    units = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{name} ({', '.join(units)})" if units else name


def tuned_bound_mb(model: str) -> float | None:
    """The tuned-generator LRU's bound: max_tuned copies of the model (at most max_tuned_bytes)."""
    try:
        from draggan.app.state import SessionStore, module_bytes
        from draggan.loaders.checkpoints import load_generator

        store = SessionStore()
        G = load_generator(model, progress=False)
        return round(min(store.max_tuned * module_bytes(G), store.max_tuned_bytes) / 2 ** 20, 1)
    except Exception:
        return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=8, help="client sessions at once")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--model", default="celeba128-lite")
    p.add_argument("--resolution", type=int, default=128, help="the model's image size (for the points)")
    p.add_argument("--steps", type=int, default=6, help="steps of each session's first drag (K)")
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--invert-interval", type=float, default=120.0,
                   help="seconds between inversions at least (0: none)")
    p.add_argument("--first-invert-after", type=float, default=30.0, help="seconds before the first inversion")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up (default: 20%% of the run)")
    p.add_argument("--rss-every", type=float, default=5.0)
    p.add_argument("--replay", type=int, default=40, help="exports replayed locally afterwards at most")
    p.add_argument("--queue-size", type=int, default=None, help="the app's --queue-size (default: its own)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    photos = sorted(PHOTOS.glob("*.png"))
    photo = photos[0] if photos else None
    work = Path(tempfile.mkdtemp(prefix="soak_app_"))
    if photo is None:   # without ../shared: a face of the model itself, saved as a photo
        from PIL import Image

        from draggan.engine import DragSession
        from draggan.loaders.checkpoints import load_generator

        G = load_generator(args.model, progress=False)
        photo = work / "face.png"
        Image.fromarray(DragSession(G, G.ws_from_seed(1, 0.7)).render()).save(photo)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / "server.log"
    extra = ["--queue-size", str(args.queue_size)] if args.queue_size else []
    proc = start_server(args.model, port, log_path, extra)
    date = datetime.date.today().isoformat()
    try:
        startup = wait_until_up(url, proc)
        t0 = time.monotonic()
        sampler = MemorySampler(proc.pid, args.rss_every, t0)
        sampler.start()
        shared = Shared(args, url, t0)
        sessions = [Session(i, shared, photo) for i in range(args.workers)]
        threads = [threading.Thread(target=s.run, name=f"session-{s.i}") for s in sessions]
        print(f"soak: {args.workers} sessions for {args.minutes} min on {url} (app up in {startup:.0f} s)", flush=True)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        time.sleep(args.rss_every)
        sampler.halt.set()
        sampler.join()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    server_log = log_path.read_text(errors="replace").splitlines()

    print("soak: replaying exports locally ...", flush=True)
    import app

    replayed = replay(shared.exports, app.registry_models(), args.model, args.replay, threads=app.cpu_threads())

    by_endpoint: dict[str, list[float]] = {}
    failed: dict[str, int] = {}
    for c in shared.calls:
        by_endpoint.setdefault(c["endpoint"], []).append(c["s"])
        failed[c["endpoint"]] = failed.get(c["endpoint"], 0) + (not c["ok"])
    latency = {k: {"n": len(v), "failed": failed[k], "p50_s": round(percentile(v, 0.5), 3),
                   "p95_s": round(percentile(v, 0.95), 3), "max_s": round(max(v), 3)}
               for k, v in sorted(by_endpoint.items())}
    warmup = args.warmup if args.warmup is not None else 0.2 * args.minutes * 60
    result = {
        "command": "python -m bench.soak_app " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": date, "device": f"CPU: {cpu_name()}, {os.cpu_count()} cores (shared machine)",
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": vars(args), "wall_s": round(wall, 1),
        "requests_served": sum(c["ok"] for c in shared.calls), "requests_failed": sum(not c["ok"] for c in shared.calls),
        "errors": len(shared.errors), "error_list": shared.errors[:30],
        "rounds_exported": len(shared.exports), "inversions": shared.inversions,
        "latency": latency,
        "queue": {"drags_that_waited": shared.waited, "positions_told": sorted(set(shared.ranks)),
                  "max_position": max(shared.ranks) if shared.ranks else None},
        "memory": {**memory_summary(sampler.samples, warmup), "tuned_lru_bound_mb": tuned_bound_mb(args.model),
                   "samples": sampler.samples},
        "replay": replayed,
        "server_log_errors": [line for line in server_log if "Traceback" in line or "Error" in line][:20],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / (
        f"soak_app_cpu_{date}_{args.workers}x{args.minutes:g}m.json")
    out.write_text(json.dumps(result, indent=1))
    print_summary(result)
    print(f"written: {out}")


def print_summary(r: dict) -> None:
    m, q, rp = r["memory"], r["queue"], r["replay"]
    print(f"\n{r['command']}\n{r['date']} | {r['device']} | {r['wall_s']} s")
    print(f"requests served {r['requests_served']}, failed {r['requests_failed']}, soak errors {r['errors']}, "
          f"rounds exported {r['rounds_exported']}, inversions {r['inversions']}")
    print("\n| endpoint | n | p50 s | p95 s | max s |\n|---|---|---|---|---|")
    for k, v in r["latency"].items():
        print(f"| {k} | {v['n']} | {v['p50_s']} | {v['p95_s']} | {v['max_s']} |")
    if m:
        print(f"\nRSS: start {m['start_mb']} MB, after warm-up ({m['warmup_s']:.0f} s) {m['after_warmup_mb']} MB, "
              f"max after {m['max_after_warmup_mb']} MB (+{m['growth_after_warmup_mb']}), end {m['end_mb']} MB, "
              f"slope {m['slope_after_warmup_mb_per_min']} MB/min; tuned-generator LRU bound {m['tuned_lru_bound_mb']} MB")
    print(f"queue: {q['drags_that_waited']} drags waited, positions told {q['positions_told']}")
    if rp.get("replayed"):
        print(f"replay: {rp['replayed']} of {rp['of_exports']} exports, {rp['matched_1e-4']} within 1e-4 of their own "
              f"replay (max diff {rp['max_abs_diff_to_own_replay']:.2e}), {rp['closer_to_another_sessions_replay']} "
              "closer to another session's")
    for e in r["error_list"][:10]:
        print(f"error: {e}")


if __name__ == "__main__":
    main()
