"""Cold start: from starting ``python app.py`` to the first answered request, and to the first face.

    python -m bench.cold_start --runs 3            # the checkout's app.py
    python -m bench.cold_start --runs 3 --space    # a Space's files (deploy-space's list) in an empty folder
    python -m bench.cold_start --folder OTHER_CHECKOUT    # e.g. an older commit, for comparison

Each run starts a fresh process (the app's own defaults: the model a visitor gets, its device
policy), offline and without Gradio's analytics, and measures from just before the process
starts: ``http``, the page answering ``GET /``; ``client``, a gradio_client connected; ``sample``,
the first ``/sample`` answered (the default model loaded); ``warm``, the warm-up drag finished,
as the app logs it. One JSON line per run, then the medians. A run that sees no answer within
``--timeout`` seconds fails with the app's output.

The helpers that start a folder's ``app.py`` and wait for it are shared with the Space rehearsal
test (tests/test_space_rehearsal.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM_LINE = re.compile(r"warmed up in ([0-9.]+) s")


def space_env() -> dict[str, str]:
    """This environment without what would let an app find code or models outside its folder (PYTHONPATH,
    DRAGGAN_MODELS), offline, without Gradio's analytics."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DRAGGAN_MODELS")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", DRAGGAN_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(folder, port: int, log_path, *args: str) -> subprocess.Popen:
    """``python app.py --port PORT`` in ``folder`` (this interpreter, :func:`space_env`), output to ``log_path``."""
    log = open(log_path, "w")
    try:
        return subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), *args],
                                cwd=folder, env=space_env(), stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()  # the child holds its own handle


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until_serving(url: str, proc: subprocess.Popen, log_path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; an exited process or the timeout raises with the app's output."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited ({proc.returncode}) before answering:\n{Path(log_path).read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"app.py did not answer {url} within {timeout:.0f} s:\n{Path(log_path).read_text()}")


def warm_seconds(log_path, proc, timeout: float) -> float | None:
    """The warm-up time the app logged (waits for the line up to ``timeout`` s)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        match = WARM_LINE.search(Path(log_path).read_text())
        if match:
            return float(match.group(1))
        time.sleep(0.1)
    return None


def one_run(folder: Path, timeout: float) -> dict:
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = Path(tempfile.mkstemp(prefix="cold-start-", suffix=".log")[1])
    t0 = time.perf_counter()
    proc = start_app(folder, port, log_path)
    try:
        wait_until_serving(url, proc, log_path, timeout)
        t_http = time.perf_counter() - t0
        client = Client(url, verbose=False)
        t_client = time.perf_counter() - t0
        client.predict(seed=0, psi=0.7, api_name="/sample")   # the model a visitor starts with
        t_sample = time.perf_counter() - t0
        warm = warm_seconds(log_path, proc, 30.0)
    finally:
        stop_app(proc)
        log_path.unlink(missing_ok=True)
    return {"http_s": round(t_http, 2), "client_s": round(t_client, 2), "sample_s": round(t_sample, 2),
            "warm_up_s": warm, "load": round(os.getloadavg()[0], 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--space", action="store_true", help="run a Space's files (deploy-space's list) from a temp folder")
    p.add_argument("--folder", type=Path, default=ROOT, help="the folder whose app.py to start (default: this checkout)")
    p.add_argument("--timeout", type=float, default=180.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="draggan-space-") as tmp:
        folder = args.folder
        if args.space:
            from draggan import space

            folder = space.stage(space.plan("cpu-basic"), Path(tmp) / "space")
        rows = []
        for _ in range(args.runs):
            rows.append(one_run(folder, args.timeout))
            print(json.dumps(rows[-1]), flush=True)
    summary = {k: statistics.median(r[k] for r in rows) for k in ("http_s", "client_s", "sample_s")}
    print(json.dumps({"median": summary, "runs": args.runs, "space": args.space, "date": time.strftime("%Y-%m-%d %H:%M"),
                      "cpu": cpu_name(), "cores": os.cpu_count()}))
    return 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
