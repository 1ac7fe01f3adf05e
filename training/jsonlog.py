"""Progress logs as JSON lines: printed, and appended to a file that survives the process."""

from __future__ import annotations

import json
from pathlib import Path


def log_jsonl(path: Path, record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    with open(path, "a") as f:  # reopened per record: a run killed mid-tick keeps every line written so far
        f.write(line + "\n")
