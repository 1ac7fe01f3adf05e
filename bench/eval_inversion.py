"""Inversion quality by step budget and by loss, on the held-out CelebA faces.

A thin driver over :mod:`bench.bench_inversion` (the inversion engineer's benchmark):
each configuration is one call of its ``main`` with ``--json``, whose per-photo rows
(seconds, PSNR, SSIM, LPIPS where VGG16 weights exist, dlib identity distance) are
summarized with its ``summarize``. Every configuration runs all its PTI steps
(``--no-early-stop``), so a budget is the budget actually spent.

* by budget: (W steps, PTI steps) pairs with one loss (``--budget-loss``);
* by loss: ``l2``, ``pyramid`` (the offline LPIPS fallback), ``lpips-random`` (LPIPS's
  calibrated linear layers on a randomly initialized VGG trunk), and ``lpips`` when
  torchvision's VGG16 weights are on disk, at one budget (``--loss-budget``).

    .venv/bin/python -m bench.eval_inversion --model celeba128 -n 10 --out bench/results/inversion.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from . import bench_inversion
from .eval_drag import _fmt, environment, write_json

DEFAULT_BUDGETS = "30:0,30:25,100:50"
DEFAULT_LOSSES = "l2,pyramid,lpips-random"


class BudgetError(ValueError):
    """A --budgets entry that is not 'W:PTI' with non-negative integers."""


def parse_budgets(text: str) -> list[tuple[int, int]]:
    """``"30:0,100:50"`` -> ``[(30, 0), (100, 50)]`` (W projection steps, PTI steps)."""
    out = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        try:
            w, pti = (int(v) for v in item.split(":"))
        except ValueError:
            raise BudgetError(f"budget {item!r} must be 'W_STEPS:PTI_STEPS', e.g. '30:25'") from None
        if w < 1 or pti < 0:
            raise BudgetError(f"budget {item!r}: need at least 1 W step and 0 or more PTI steps")
        out.append((w, pti))
    if not out:
        raise BudgetError("no budgets given (expected e.g. '30:0,30:25')")
    return out


def run_config(model: str, device: str, n: int, loss: str, steps_w: int, steps_pti: int,
               eval_dir: Path = bench_inversion.EVAL_DIR, identity: bool = True) -> list[dict]:
    """One bench_inversion run; returns its per-photo rows (its table goes to stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = Path(tmp) / "rows.json"
        argv = ["--model", model, "--device", device, "-n", str(n), "--eval-dir", str(eval_dir), "--no-extra",
                "--losses", loss, "--steps-w", str(steps_w), "--steps-pti", str(steps_pti), "--no-early-stop",
                "--json", str(rows_path)]
        if not identity:
            argv.append("--no-identity")
        with contextlib.redirect_stdout(sys.stderr):
            bench_inversion.main(argv)
        return json.loads(rows_path.read_text())


def summary_of(rows: list[dict]) -> dict:
    """bench_inversion.summarize's (mean, median, n) per metric, as a JSON-friendly dict."""
    s = bench_inversion.summarize(rows)
    return {k: {"mean": v[0], "median": v[1], "n": v[2]} for k, v in s.items()}


def evaluate(model: str, device: str, n: int, budgets, budget_loss: str, losses, loss_budget: tuple[int, int],
             eval_dir: Path = bench_inversion.EVAL_DIR, log=None) -> dict:
    results = {"by_budget": [], "by_loss": []}
    done: dict[tuple, dict] = {}

    def measure(loss, w, pti):
        key = (loss, w, pti)
        if key not in done:
            t = time.perf_counter()
            rows = run_config(model, device, n, loss, w, pti, eval_dir)
            done[key] = {"loss": loss, "steps_w": w, "steps_pti": pti, "summary": summary_of(rows), "rows": rows,
                         "loss_used": sorted({r["loss_used"] for r in rows}), "wall_seconds": time.perf_counter() - t}
            if log:
                s = done[key]["summary"]
                log(f"[{loss}, W {w}, PTI {pti}] PSNR {_fmt(s['psnr']['mean'])} SSIM {_fmt(s['ssim']['mean'], 3)} "
                    f"id {_fmt(s['identity_distance']['mean'], 3)} {_fmt(s['seconds']['mean'], 1)} s/photo")
        return done[key]

    for w, pti in budgets:
        results["by_budget"].append(measure(budget_loss, w, pti))
    for loss in losses:
        results["by_loss"].append(measure(loss, *loss_budget))
    return results


def markdown_tables(result: dict) -> str:
    meta = result["meta"]
    head = (f"`{meta['command']}` — {meta['env']['device']}, {meta['env']['date']}, model {meta['model']}, "
            f"{meta['photos']} held-out CelebA faces, every PTI step run, load avg {meta['env']['loadavg'][0]}")
    cols = ("| loss | W steps | PTI steps | s / photo | PSNR (dB) | SSIM | LPIPS | identity dist. (n) |\n"
            "|---|---|---|---|---|---|---|---|")

    def line(e):
        s = e["summary"]
        used = ",".join(e["loss_used"])
        loss = e["loss"] if used in ("", e["loss"]) else f"{e['loss']} (ran as {used})"
        return (f"| {loss} | {e['steps_w']} | {e['steps_pti']} | {_fmt(s['seconds']['mean'], 1)} | "
                f"{_fmt(s['psnr']['mean'])} | {_fmt(s['ssim']['mean'], 3)} | {_fmt(s['lpips']['mean'], 3)} | "
                f"{_fmt(s['identity_distance']['mean'], 3)} ({s['identity_distance']['n']}) |")

    return "\n".join([head, "", "**By step budget**", "", cols, *map(line, result["by_budget"]), "",
                      "**By loss**", "", cols, *map(line, result["by_loss"])])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.eval_inversion", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128")
    p.add_argument("--device", default="cpu")
    p.add_argument("-n", type=int, default=10, help="held-out faces (spread over identities)")
    p.add_argument("--eval-dir", type=Path, default=bench_inversion.EVAL_DIR)
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="comma list of W:PTI step budgets")
    p.add_argument("--budget-loss", default="pyramid", help="loss used for the budget table")
    p.add_argument("--losses", default=DEFAULT_LOSSES, help="comma list of losses for the loss table")
    p.add_argument("--loss-budget", default="30:25", help="W:PTI budget for the loss table")
    p.add_argument("--out", type=Path, default=None)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        budgets = parse_budgets(args.budgets)
        (loss_budget,) = parse_budgets(args.loss_budget)
    except (BudgetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    from inversion.losses import LOSS_KINDS
    bad = [x for x in losses + [args.budget_loss] if x not in LOSS_KINDS]
    if bad:
        print(f"error: unknown loss(es) {bad}; choose from {list(LOSS_KINDS)}", file=sys.stderr)
        return 2
    if not args.eval_dir.is_dir():
        print(f"error: {args.eval_dir} is not a folder of eval faces", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result = evaluate(args.model, args.device, args.n, budgets, args.budget_loss, losses, loss_budget, args.eval_dir,
                      log=lambda m: print(m, file=sys.stderr))
    command = "python -m bench.eval_inversion " + " ".join(argv if argv is not None else sys.argv[1:])
    result["meta"] = {"command": command,
                      "model": args.model, "photos": args.n, "eval_dir": str(args.eval_dir),
                      "env": environment(args.device), "wall_seconds": round(time.perf_counter() - t0, 1)}
    print(markdown_tables(result))
    if args.out:
        write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
