"""How far each ablation variant moves a face's identity (scored on a staged ablation).

The ablation's MD says whether the handles arrived; it does not say what else
changed. This reads a staged ablation (``bench.ablate --stage prepare`` work and
the GPU stage's results) and reports, per variant, dlib's face-recognition
distance between each edited face and the same face before the edit (the
work folder stores the unedited embedding). Same-person threshold: 0.6.

    .venv/bin/python -m bench.ablation_identity --work .stage/ablate --results R/abl1 \
        --out bench/results/ablations_h100_identity.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import staged
from .landmarks import measure_face


def identity_by_variant(work: staged.Work, results, detector=measure_face) -> dict[str, dict]:
    """{variant label: {mean, median, n}} of the edited-vs-unedited identity distance."""
    data = work.data
    before = {f["seed"]: np.asarray(f["embedding"]) for f in data["faces"]}
    by_run: dict[int, dict] = {}
    for variant in data["variants"]:
        run = variant["run"]
        if run in by_run:
            continue
        distances = []
        for item in data["items"]:
            image = results.image(item["id"]) if item["config"] == run else None
            face = None if image is None else detector(image, embed=True)
            if face is not None:
                task = data["tasks"][item["task"]]
                distances.append(float(np.linalg.norm(face.embedding - before[task["face"]])))
        by_run[run] = {"mean": float(np.mean(distances)) if distances else None,
                       "median": float(np.median(distances)) if distances else None, "n": len(distances)}
    return {v["label"]: by_run[v["run"]] for v in data["variants"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="the ablation's work folder")
    p.add_argument("--results", type=Path, nargs="+", required=True, help="the GPU stage's results folder(s)")
    p.add_argument("--allow-missing", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        work = staged.Work.load(args.work, "ablate")
        results = staged.load_results(work, args.results, args.allow_missing)
    except staged.StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = identity_by_variant(work, results)
    for label, row in table.items():
        mean = "–" if row["mean"] is None else f"{row['mean']:.3f}"
        print(f"{label:20s} identity distance {mean} (n={row['n']})")
    if args.out:
        args.out.write_text(json.dumps({"command": staged.command_line("bench.ablation_identity", argv),
                                        "variants": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
