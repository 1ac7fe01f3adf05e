"""How much an install of the app takes on disk: a fresh venv, one pip command, ``du`` of the venv.

    python -m bench.install_size --venv /tmp/venv-gpu -- -r requirements.txt
    python -m bench.install_size --venv /tmp/venv-cpu -- -r requirements-cpu.txt

Everything after ``--`` goes to ``pip install``. Prints one JSON line: the pip arguments, the
venv's size in MB (files as ``du`` counts them), the torch build that landed and the seconds
pip took. The venv is kept (``--remove`` deletes it afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def venv_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", str(path)], check=True, capture_output=True, text=True).stdout
    return float(out.split()[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", required=True, help="where to make the fresh venv (must not exist)")
    p.add_argument("--remove", action="store_true", help="delete the venv afterwards")
    p.add_argument("pip_args", nargs=argparse.REMAINDER, help="-- then pip install's arguments")
    args = p.parse_args(argv)
    pip_args = args.pip_args[1:] if args.pip_args[:1] == ["--"] else args.pip_args
    venv = Path(args.venv)
    if venv.exists():
        p.error(f"--venv {venv} exists: give a new folder, so the size is that of one install")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    t0 = time.perf_counter()
    subprocess.run([str(python), "-m", "pip", "install", "-q", *pip_args], check=True)
    seconds = time.perf_counter() - t0
    torch = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True).stdout.strip() or None
    print(json.dumps({"pip_install": pip_args, "venv_mb": venv_mb(venv), "torch": torch,
                      "pip_seconds": round(seconds, 1), "load": os.getloadavg()[0],
                      "date": time.strftime("%Y-%m-%d")}))
    if args.remove:
        shutil.rmtree(venv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
