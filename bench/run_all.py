"""The whole evaluation suite in one command.

    .venv/bin/python -m bench.run_all --quick --device cpu --out bench/results/quick/
    .venv/bin/python -m bench.run_all --device cuda --out bench/results/      # the full protocol (GPU)

Parts (``--only`` picks some): ``edit_quality`` (what a user keeps after the named edits:
identity, locality, realism beside MD; :mod:`bench.edit_quality`, CPU), ``drag`` (Table 1 protocol, :mod:`bench.eval_drag`),
``ablate`` (:mod:`bench.ablate`), ``inversion`` (:mod:`bench.eval_inversion`),
``speed`` (ms per step through the engine's :mod:`bench.bench_drag`) and ``figures``
(:mod:`bench.figures`, written to ``--figures``). Each part writes its JSON under
``--out``; ``summary.md`` collects every table with its command, device and date.

``--quick`` runs every part at smoke-test size (one pair, a few steps, one photo) so
that a change can be checked end to end in minutes on a CPU; its numbers are not
benchmarks. The full sizes follow the paper (100 pairs, the engine's step cap) and
are meant for a GPU; on a CPU pass smaller ``--pairs`` / ``--max-steps``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import sys
import time
from pathlib import Path

from draggan.engine import DragConfig

from . import ablate, edit_quality, eval_drag, eval_inversion, figures

PARTS = ("edit_quality", "drag", "ablate", "inversion", "speed", "figures")

# Sizes per mode. None = the script's own default.
QUICK = dict(eq_faces=1, eq_workers=0, eq_eval=50,
             drag_pairs=1, drag_steps=8, ablate_tasks=1, ablate_steps=5, inv_photos=1, inv_budgets="5:0,5:5",
             inv_loss_budget="5:5", fig_examples=1, fig_curve_pairs=1, fig_curve_steps=8, fig_every=4,
             fig_example_steps=8)
FULL = dict(eq_faces=30, eq_workers=2, eq_eval=500,
            drag_pairs=100, drag_steps=None, ablate_tasks=24, ablate_steps=None, inv_photos=20,
            inv_budgets=eval_inversion.DEFAULT_BUDGETS, inv_loss_budget="30:25", fig_examples=3, fig_curve_pairs=3,
            fig_curve_steps=60, fig_every=5, fig_example_steps=80)


def run_part(name: str, fn, log) -> tuple[str, float, str | None]:
    """Run one part; a failure is reported, not fatal, so the other parts still run."""
    t = time.perf_counter()
    log(f"=== {name}")
    try:
        text = fn()
        error = None
    except Exception as e:  # noqa: BLE001 - one broken part must not hide the others' numbers
        text, error = None, f"{type(e).__name__}: {e}"
        log(f"!!! {name} failed: {error}")
    return text, time.perf_counter() - t, error


def run_script(main, argv: list[str], name: str) -> str:
    """A benchmark's ``main(argv)`` in this process; its printed tables are the part's text."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc:
        raise RuntimeError(f"{name} exited with {rc}")
    return buf.getvalue().strip()


def speed_rows(device: str, quick: bool, drag_result: dict | None = None) -> dict:
    """ms per drag step via the engine's benchmark (bench/bench_drag.py's functions), for the bundled model and
    NVIDIA's 512 px FFHQ architecture (random weights; speed does not depend on them).

    Time to a finished edit: measured by the drag protocol for the bundled model (when
    it ran); for the 512 architecture estimated as ms/step x the protocol's mean step
    count + one render, since random weights cannot be dragged meaningfully.
    """
    import torch

    from . import bench_drag

    dev = torch.device(device)
    steps, warmup = (2, 1) if quick else (10, 2)
    sources = [("celeba128", {"model": "celeba128", "arch": None})]
    if not quick or dev.type == "cuda":  # a 512 px step takes tens of seconds on two CPU cores
        sources.append(("ffhq512 (random weights)", {"model": None, "arch": "ffhq512"}))
    rows = []
    for label, src in sources:
        ns = argparse.Namespace(feature_block=6, space="w+", autocast=False, warmup=warmup, steps=steps, **src)
        G, _ = bench_drag.build_generator(ns, dev)
        for n in (1, 5, 68):
            load = os.getloadavg()[0]
            r = bench_drag.bench_case(G, dev, n, False, ns)
            r.update(model=label, resolution=int(G.img_resolution), loadavg_1min=round(load, 2))
            protocol = (drag_result or {}).get("settings", {}).get(str(n))
            if protocol and protocol.get("steps_mean") is not None:
                r["protocol_steps_mean"] = protocol["steps_mean"]
                r["estimated_edit_seconds"] = (protocol["steps_mean"] * r["median_ms"] + r["render_ms"]) / 1000
                if label == "celeba128":
                    r["measured_edit_seconds"] = protocol["seconds_per_edit"]
            rows.append(r)
        del G
    return {"rows": rows, "steps": steps, "warmup": warmup}


def speed_table(result: dict, device_name: str, date: str) -> str:
    lines = [f"bench/bench_drag.py's bench_case (via `bench.run_all`), {device_name}, {date}, feature block 6, "
             f"W+, fp32, "
             f"median of {result['steps']} steps after {result['warmup']} warm-up",
             "",
             "| model | handles | ms / step (median) | render ms | s per finished edit | load avg |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r.get("measured_edit_seconds") is not None:
            edit = f"{r['measured_edit_seconds']:.1f} (measured, {r['protocol_steps_mean']:.0f} steps)"
        elif r.get("estimated_edit_seconds") is not None:
            edit = f"~{r['estimated_edit_seconds']:.1f} (est., {r['protocol_steps_mean']:.0f} steps)"
        else:
            edit = "–"
        lines.append(f"| {r['model']} | {r['handles']} | {r['median_ms']:.0f} | {r['render_ms']:.0f} | {edit} | "
                     f"{r['loadavg_1min']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test sizes: minutes on a CPU")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--model", default="celeba128")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--figures", type=Path, default=None, help="where figures go (default: OUT/figures)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of parts: {', '.join(PARTS)}")
    p.add_argument("--pairs", type=int, default=None, help="override the drag protocol's pair count")
    p.add_argument("--max-steps", type=int, default=None, help="override the step cap of drags")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is faster on a CPU that other processes keep busy)")
    args = p.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    parts = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in parts if s not in PARTS]
    if unknown:
        print(f"error: unknown part(s) {unknown}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not _cuda_available():
        print("error: --device cuda asked for, but PyTorch sees no CUDA GPU", file=sys.stderr)
        return 2
    size = dict(QUICK if args.quick else FULL)
    if args.pairs is not None:
        size["drag_pairs"] = args.pairs
    if args.max_steps is not None:
        size.update(drag_steps=args.max_steps, ablate_steps=args.max_steps)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = args.figures or out / "figures"
    command = "python -m bench.run_all " + " ".join(argv if argv is not None else sys.argv[1:])

    def log(m):
        print(m, file=sys.stderr, flush=True)

    G = None

    def model():
        nonlocal G
        if G is None:
            G = eval_drag.load_model(args.model, args.device)
        return G

    def edits():
        eq_argv = ["--model", args.model, "--faces", str(size["eq_faces"]), "--workers", str(size["eq_workers"]),
                   "--eval-limit", str(size["eq_eval"]), "--out", str(out / "edit_quality.json"),
                   "--grid", str(fig_dir / "edit_quality.jpg")]
        return run_script(edit_quality.main, eq_argv, "edit_quality")

    def drag():
        r = eval_drag.evaluate(model(), size["drag_pairs"], (1, 5, 68), DragConfig(), size["drag_steps"],
                               model=args.model, device=args.device, command=command + "  [drag]", log=log)
        eval_drag.write_json(r, out / "drag_accuracy.json")
        return eval_drag.markdown_table(r)

    def ablations():
        grid = ablate.QUICK_GRID if args.quick else ablate.FULL_GRID
        r = ablate.ablate(model(), grid, DragConfig(), size["ablate_tasks"], "edits", 5, size["ablate_steps"],
                          model=args.model, device=args.device, command=command + "  [ablate]", log=log)
        eval_drag.write_json(r, out / "ablations.json")
        return ablate.markdown_tables(r)

    def inversion():
        inv_argv = ["--model", args.model, "--device", args.device, "-n", str(size["inv_photos"]),
                    "--budgets", size["inv_budgets"], "--loss-budget", size["inv_loss_budget"],
                    "--out", str(out / "inversion.json")]
        return run_script(eval_inversion.main, inv_argv, "eval_inversion")

    def speed():
        drag_json = out / "drag_accuracy.json"
        drag_result = json.loads(drag_json.read_text()) if drag_json.is_file() else None
        r = speed_rows(args.device, args.quick, drag_result)
        env = eval_drag.environment(args.device)
        r["env"] = env
        eval_drag.write_json(r, out / "speed.json")
        return speed_table(r, env["device"], env["date"])

    def figs():
        r = figures.make_figures(model(), fig_dir, size["fig_examples"], size["fig_curve_pairs"],
                                 size["fig_curve_steps"], size["fig_every"], size["fig_example_steps"],
                                 device=args.device, command=command + "  [figures]", log=log)
        return "\n".join(f"- {k}: `{v}`" for k, v in r["paths"].items())

    table = {"edit_quality": edits, "drag": drag, "ablate": ablations, "inversion": inversion, "speed": speed, "figures": figs}
    report = [f"# Evaluation suite ({'quick' if args.quick else 'full'})", "",
              f"`{command}` — {eval_drag.environment(args.device)['device']}", ""]
    status = {}
    t0 = time.perf_counter()
    for name in parts:
        text, seconds, error = run_part(name, table[name], log)
        status[name] = {"seconds": round(seconds, 1), "error": error}
        report += [f"## {name} ({seconds:.0f} s)", "", text if text else f"**failed**: {error}", ""]
    report.append(f"Total {time.perf_counter() - t0:.0f} s.")
    (out / "summary.md").write_text("\n".join(report) + "\n")
    (out / "run_all.json").write_text(json.dumps({"command": command, "parts": status,
                                                  "env": eval_drag.environment(args.device)}, indent=1) + "\n")
    print("\n".join(report))
    return 1 if any(s["error"] for s in status.values()) else 0


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
