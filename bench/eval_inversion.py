"""Inversion quality by step budget and by loss, on the held-out CelebA faces.

Each configuration (loss, W steps, PTI steps) inverts the same N eval faces (spread
over identities, :func:`bench.bench_inversion.bench_photos`) with every PTI step run
(no early stop), so a budget is the budget actually spent. Per face: seconds, PSNR,
SSIM, LPIPS (where VGG16 weights exist) and dlib identity distance, summarized with
:func:`bench.bench_inversion.summarize`.

* by budget: (W steps, PTI steps) pairs with one loss (``--budget-loss``);
* by loss: ``l2``, ``pyramid`` (the offline LPIPS fallback), ``lpips-random`` (LPIPS's
  calibrated linear layers on a randomly initialized VGG trunk), and ``lpips`` when
  torchvision's VGG16 weights are on disk, at one budget (``--loss-budget``).

    .venv/bin/python -m bench.eval_inversion --model celeba128 -n 10 --out bench/results/inversion.json

Three stages (:mod:`bench.staged`), also chained by the one-shot run above:

* ``prepare`` (dlib): aligns each chosen eval face to the model's template and puts the
  aligned PNG (what gets inverted) into the work folder, with the configurations;
* ``run`` (no dlib): inverts every (configuration, face) with the aligned face as input
  (``alignment='center'``, an identity warp at the generator's size); writes the
  reconstructions (uint8 .npz chunks) and per-photo seconds, steps, PSNR, SSIM, LPIPS;
* ``score`` (dlib): identity distance between each aligned face and its reconstruction,
  then the tables.

``seconds`` is the inversion itself (projection, tuning, PSNR/SSIM report) on the run
stage's device; the dlib alignment (``seconds_align``, measured by prepare) and the
identity distance are not in it. A loss that cannot be built there (``lpips-random``
needs the lpips package and torchvision) is reported as not run::

    .venv/bin/python -m bench.eval_inversion --stage prepare --work .stage/inversion -n 100
    python -m bench.eval_inversion --stage run --work .stage/inversion --results $OUT/inv --device cuda   # GPU
    .venv/bin/python -m bench.eval_inversion --stage score --work .stage/inversion --results RESULTS/inv \\
        --out bench/results/inversion.json
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from . import bench_inversion, staged
from .eval_drag import _fmt, environment, gpu_env, load_model

DEFAULT_BUDGETS = "30:0,30:25,100:50"
DEFAULT_LOSSES = "l2,pyramid,lpips-random"
FACES_DIR = "faces"


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


def summary_of(rows: list[dict]) -> dict:
    """bench_inversion.summarize's (mean, median, n) per metric, as a JSON-friendly dict."""
    s = bench_inversion.summarize(rows)
    return {k: {"mean": v[0], "median": v[1], "n": v[2]} for k, v in s.items()}


# --------------------------------------------------------------------------- prepare (dlib)


def prepare_inversion(G, model: str, n: int, budgets, budget_loss: str, losses, loss_budget: tuple[int, int],
                      eval_dir: Path = bench_inversion.EVAL_DIR, command: str = "", log=None) -> staged.Work:
    """Align the eval faces to the model's template (dlib) and list every (configuration, face) item.

    Configurations: each budget with ``budget_loss``, then each loss at ``loss_budget``;
    one that appears in both tables is run once.
    """
    from inversion.align import align_photo
    from inversion.photo import read_photo
    from inversion.pipeline import InversionConfig, alignment_for_model, resolve_alignment

    R = int(G.img_resolution)
    alignment, model_dir = alignment_for_model(model)
    settings = InversionConfig(alignment=alignment, model_dir=model_dir)
    method, template, notices = resolve_alignment(settings, G)
    faces, files = [], {}
    for name, path in bench_inversion.bench_photos(Path(eval_dir), n, extra=False):
        photo = read_photo(path)
        t = time.perf_counter()
        aligned, how, align_notices = align_photo(photo.image, R, method=method, template=template,
                                                  subset=settings.landmarks, min_score=settings.face_min_score)
        seconds = time.perf_counter() - t
        buf = io.BytesIO()
        aligned.save(buf, format="PNG")
        rel = f"{FACES_DIR}/{Path(name).stem}.png"
        files[rel] = buf.getvalue()
        faces.append({"name": name, "file": rel, "alignment": how.method, "num_faces": how.num_faces,
                      "notices": notices + photo.notices + align_notices, "seconds_align": round(seconds, 4)})
    if log:
        log(f"{len(faces)} faces aligned ({method}), "
            f"{sum(f['alignment'] == 'center' for f in faces)} without a face found")
    configs: list[dict] = []

    def config_index(loss, w, pti) -> int:
        c = {"loss": loss, "steps_w": w, "steps_pti": pti}
        if c not in configs:
            configs.append(c)
        return configs.index(c)

    by_budget = [config_index(budget_loss, w, pti) for w, pti in budgets]
    by_loss = [config_index(loss, *loss_budget) for loss in losses]
    data = {"benchmark": "eval_inversion", "command": command, "env": environment("cpu"), "model": model,
            "model_fingerprint": staged.model_fingerprint(G), "resolution": R, "image_bytes": R * R * 3,
            "eval_dir": str(eval_dir), "photos_requested": n, "alignment": method, "faces": faces,
            "configs": configs, "by_budget": by_budget, "by_loss": by_loss,
            "items": [{"id": f"c{c:02d}f{f:03d}", "config": c, "face": f}
                      for c in range(len(configs)) for f in range(len(faces))]}
    return staged.Work(data=data, files=files)


def face_image(work: staged.Work, index: int) -> Image.Image:
    return Image.open(io.BytesIO(work.file(work.data["faces"][index]["file"]))).convert("RGB")


# --------------------------------------------------------------------------- run (GPU, no dlib)


def unavailable_losses(work: staged.Work, device) -> dict[int, str]:
    """Configurations whose loss cannot be built here (lpips-random without lpips/torchvision): index -> why."""
    from inversion.losses import make_loss

    out = {}
    for c, config in enumerate(work.data["configs"]):
        try:
            make_loss(config["loss"], None, device)
        except ImportError as e:
            out[c] = f"{type(e).__name__}: {e}"
    return out


def invert_items(G, work: staged.Work, items: list[dict], log=None) -> Iterator[tuple[dict, dict, np.ndarray | None]]:
    """The run stage: invert each item's aligned face with its configuration; yields (item, record, image).

    One short untimed inversion first takes the one-off costs (first kernels, W statistics)
    out of the timings. Items whose loss cannot be built yield a record with ``skipped``
    and no image.
    """
    from inversion.pipeline import InversionConfig, invert

    device = next(G.parameters()).device
    skipped = unavailable_losses(work, device)
    if items:
        invert(face_image(work, items[0]["face"]), G,
               InversionConfig(device=str(device), steps_w=2, steps_pti=1, alignment="center", loss="l2",
                               identity=False), cache=None)
    for i, item in enumerate(items):
        c = work.data["configs"][item["config"]]
        if item["config"] in skipped:
            yield item, {"id": item["id"], "skipped": skipped[item["config"]]}, None
            continue
        config = InversionConfig(device=str(device), steps_w=c["steps_w"], steps_wplus=0, steps_pti=c["steps_pti"],
                                 loss=c["loss"], alignment="center", identity=False,
                                 pti_stop_lpips=None, pti_stop_fallback=None)  # every PTI step: budgets compare
        photo = face_image(work, item["face"])
        result, seconds = bench_inversion.timed_invert(photo, G, config, device)
        r = result.report
        record = {"id": item["id"], "seconds": seconds,
                  "seconds_optimization": r["timings"]["project"] + r["timings"]["tune"],
                  "psnr": r["psnr"], "ssim": r["ssim"], "lpips": r["lpips"], "pti_steps": r["steps"]["pti"],
                  "steps_w": r["steps"]["w"], "loss_used": r["loss_used"], "mse": r["stage_mse"]}
        if log:
            log(f"[{item['id']}] {c['loss']} W {c['steps_w']} PTI {c['steps_pti']}: PSNR {r['psnr']:.2f} "
                f"in {seconds:.2f} s ({i + 1}/{len(items)})")
        yield item, record, np.asarray(result.reconstruction, dtype=np.uint8)


def run_stage(G, work: staged.Work, args, command: str, log=None) -> dict:
    """``--stage run``: the shard's inversions into ``--results``."""
    staged.check_model(work, G)
    skip = staged.done_ids(args.skip_done) if args.skip_done else set()
    device = next(G.parameters()).device
    return staged.gpu_stage(work, lambda items: invert_items(G, work, items, log), args.results[0],
                            gpu_env(device), command, staged.parse_shard(args.shard), skip, args.time_budget,
                            **staged.transfer_limits(args), extra_meta={"configs": work.data["configs"]}, log=log)


# --------------------------------------------------------------------------- score (dlib)


def score_inversion(work: staged.Work, outcomes: Iterable, log=None) -> dict:
    """Identity distance per reconstruction (dlib); {"by_budget": [entry], "by_loss": [entry]}.

    An entry: loss, steps_w, steps_pti, summary, rows (bench_inversion's row fields),
    loss_used, wall_seconds (the sum of its photos' seconds) and, for a configuration
    that could not run, ``skipped`` (why).
    """
    from inversion.metrics import identity_distance

    faces = work.data["faces"]
    rows: dict[int, list] = {c: [] for c in range(len(work.data["configs"]))}
    skipped: dict[int, str] = {}
    for item, record, image in outcomes:
        c, face = item["config"], faces[item["face"]]
        if record.get("skipped"):
            skipped[c] = record["skipped"]
            continue
        identity = None
        if face["alignment"] != "center":  # as the pipeline: no identity when no face was found
            identity = identity_distance(face_image(work, item["face"]), Image.fromarray(np.asarray(image)))
        rows[c].append({"loss": work.data["configs"][c]["loss"], "photo": face["name"], "seconds": record["seconds"],
                        "seconds_optimization": record["seconds_optimization"], "psnr": record["psnr"],
                        "ssim": record["ssim"], "lpips": record["lpips"],
                        "identity_distance": None if identity is None else round(identity, 4),
                        "pti_steps": record["pti_steps"], "steps_w": record["steps_w"],
                        "alignment": face["alignment"], "loss_used": record["loss_used"], "mse": record["mse"],
                        "seconds_align": face["seconds_align"]})
    entries = []
    for c, config in enumerate(work.data["configs"]):
        entry = {**config, "summary": summary_of(rows[c]), "rows": rows[c],
                 "loss_used": sorted({r["loss_used"] for r in rows[c]}),
                 "wall_seconds": round(sum(r["seconds"] for r in rows[c]), 2)}
        if c in skipped:
            entry["skipped"] = skipped[c]
        entries.append(entry)
        if log:
            s = entry["summary"]
            log(f"[{config['loss']}, W {config['steps_w']}, PTI {config['steps_pti']}] "
                + (f"not run: {skipped[c]}" if c in skipped else
                   f"PSNR {_fmt(s['psnr']['mean'])} SSIM {_fmt(s['ssim']['mean'], 3)} "
                   f"id {_fmt(s['identity_distance']['mean'], 3)} {_fmt(s['seconds']['mean'], 1)} s/photo"))
    return {"by_budget": [entries[c] for c in work.data["by_budget"]],
            "by_loss": [entries[c] for c in work.data["by_loss"]]}


def inversion_meta(work: staged.Work, env: dict, command: str, wall_seconds: float) -> dict:
    d = work.data
    return {"command": command, "model": d["model"], "photos": len(d["faces"]), "eval_dir": d["eval_dir"],
            "alignment": d["alignment"], "env": env, "wall_seconds": round(wall_seconds, 1),
            "timing": "seconds: inversion on the device (projection, tuning, PSNR/SSIM report); "
                      "dlib alignment (seconds_align) and identity distance not included"}


# --------------------------------------------------------------------------- one-shot and tables


def evaluate(model: str, device: str, n: int, budgets, budget_loss: str, losses, loss_budget: tuple[int, int],
             eval_dir: Path = bench_inversion.EVAL_DIR, log=None, G=None, command: str = "") -> dict:
    """One process, the three stages chained: align, invert every configuration, identity; with metadata."""
    t0 = time.perf_counter()
    G = G if G is not None else load_model(model, device)
    work = prepare_inversion(G, model, n, budgets, budget_loss, losses, loss_budget, eval_dir, command, log)
    result = score_inversion(work, invert_items(G, work, work.items), log)
    result["meta"] = inversion_meta(work, environment(device), command, time.perf_counter() - t0)
    return result


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
        if e.get("skipped"):
            loss += " (not run: loss unavailable on the device)"
        return (f"| {loss} | {e['steps_w']} | {e['steps_pti']} | {_fmt(s['seconds']['mean'], 1)} | "
                f"{_fmt(s['psnr']['mean'])} | {_fmt(s['ssim']['mean'], 3)} | {_fmt(s['lpips']['mean'], 3)} | "
                f"{_fmt(s['identity_distance']['mean'], 3)} ({s['identity_distance']['n']}) |")

    lines = [head, "", "**By step budget**", "", cols, *map(line, result["by_budget"]), "",
             "**By loss**", "", cols, *map(line, result["by_loss"])]
    missing = meta.get("missing_items")
    if missing:
        lines += ["", f"**{len(missing)} inversions had no result** (scored with --allow-missing)."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.eval_inversion", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("-n", type=int, default=10, help="held-out faces (spread over identities)")
    p.add_argument("--eval-dir", type=Path, default=bench_inversion.EVAL_DIR)
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="comma list of W:PTI step budgets")
    p.add_argument("--budget-loss", default="pyramid", help="loss used for the budget table")
    p.add_argument("--losses", default=DEFAULT_LOSSES, help="comma list of losses for the loss table")
    p.add_argument("--loss-budget", default="30:25", help="W:PTI budget for the loss table")
    staged.add_arguments(p, "run")
    return p


def main(argv=None) -> int:
    parsed = staged.parse(build_parser(), argv)
    if parsed is None:
        return 2
    args, device = parsed
    command = staged.command_line("bench.eval_inversion", argv)
    log = staged.log
    if args.stage in ("all", "prepare"):
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

    def gpu(work):
        run_stage(load_model(work.data["model"], device), work, args, command, log)

    def score(work, results):
        result = score_inversion(work, staged.stored_outcomes(work, results), log)
        result["meta"] = staged.staged_meta(work, results, command, inversion_meta)
        return result

    return staged.run_stages(staged.Stages(
        name="eval_inversion",
        run_all=lambda: evaluate(args.model, device, args.n, budgets, args.budget_loss, losses, loss_budget,
                                 args.eval_dir, log=log, command=command),
        prepare=lambda: prepare_inversion(load_model(args.model, device), args.model, args.n, budgets,
                                          args.budget_loss, losses, loss_budget, args.eval_dir, command, log),
        describe=lambda work: (f"{len(work.data['faces'])} faces x {len(work.data['configs'])} configurations = "
                               f"{len(work.items)} inversions"),
        gpu=gpu, score=score, table=markdown_tables), args)


if __name__ == "__main__":
    sys.exit(main())
