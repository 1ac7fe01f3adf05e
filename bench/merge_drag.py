"""Merge drag-accuracy results of disjoint pairs (e.g. one run cut short, finished in another) into one table.

    .venv/bin/python -m bench.merge_drag bench/results/drag_accuracy_h100.json \\
        bench/results/drag_accuracy_68_rest_cpu.json --out bench/results/drag_accuracy.json

Rows (one per edit) are pooled per handle count and summarized again with
:func:`bench.eval_drag.summarize`. The runs must use the same model, resolution,
truncation and drag configuration, and no pair may appear twice. Realism (the
Fréchet distance of face embeddings) needs the embeddings, which the results do not
keep: it is carried over from the first file with its sample size, and said so.
Timings pool only within one device: where a handle count's rows come from different
machines, its seconds per edit and per step are given per device (``timing_by_device``)
and left out of the pooled summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .eval_drag import markdown_table, summarize, write_json

SAME = ("model", "resolution", "truncation", "config", "max_steps")


class MergeError(ValueError):
    """Results that cannot be pooled (different settings, or the same pair twice)."""


def merge(results: list[dict]) -> dict:
    first = results[0]
    for other in results[1:]:
        for key in SAME:
            if first["meta"].get(key) != other["meta"].get(key):
                raise MergeError(f"the runs differ in {key}: {first['meta'].get(key)!r} vs {other['meta'].get(key)!r}")
    seen, rows, device_of = set(), [], {}
    for r in results:
        device = r["meta"].get("env", {}).get("device")
        for row in r["rows"]:
            device_of[id(row)] = device
            key = (row["handles"], row["seed_source"], row["seed_target"])
            if key in seen:
                raise MergeError(f"pair {key[1:]} with {key[0]} handles is in more than one file")
            seen.add(key)
            rows.append(row)
    counts = sorted({row["handles"] for row in rows})
    settings = {}
    for n in counts:
        pooled = [row for row in rows if row["handles"] == n]
        summary = summarize(pooled)
        devices = sorted({device_of[id(row)] for row in pooled}, key=str)
        if len(devices) > 1:  # seconds from different machines do not average into anything
            summary["timing_by_device"] = {
                str(d): {k: summarize([row for row in pooled if device_of[id(row)] == d])[k]
                         for k in ("edits", "seconds_per_edit", "ms_per_step")} for d in devices}
            summary["seconds_per_edit"] = summary["ms_per_step"] = None
        # Each file's detector noise is a mean over its own pairs: weigh it by them.
        noise = [(r["settings"][str(n)].get("md_detector_noise"), r["settings"][str(n)]["edits"])
                 for r in results if str(n) in r["settings"]]
        noise = [(v, k) for v, k in noise if v is not None and k]
        summary["md_detector_noise"] = (round(sum(v * k for v, k in noise) / sum(k for _, k in noise), 4)
                                        if noise else None)
        summary["loadavg_1min"] = None
        settings[str(n)] = summary
    realism = {k: {**v, "note": "from the first file only (embeddings are not kept in results)"}
               for k, v in first.get("realism", {}).items()}
    # The first file's list of edits it lacked is what the others supply: not carried over.
    pairs = max(len({(row["seed_source"], row["seed_target"]) for row in rows if row["handles"] == n}) for n in counts)
    meta = {**{k: v for k, v in first["meta"].items() if k != "missing_items"}, "pairs": pairs,
            "sources": [{"command": r["meta"].get("command"), "device": r["meta"].get("env", {}).get("device"),
                         "date": r["meta"].get("env", {}).get("date"),
                         "edits": {str(n): sum(row["handles"] == n for row in r["rows"]) for n in counts}}
                        for r in results]}
    return {"settings": settings, "realism": realism, "rows": rows, "meta": meta}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.merge_drag", description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, nargs="+", help="drag-accuracy JSON files (bench.eval_drag --out)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        merged = merge([json.loads(path.read_text()) for path in args.results])
    except (MergeError, OSError, json.JSONDecodeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(merged))
    write_json(merged, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
