"""Ablations that pick the drag engine's defaults at 128 px, measured on a fixed set of face pairs.

Every variant changes one DragConfig field from the base configuration (the engine's
defaults unless ``--base`` says otherwise) and runs the same drag tasks. For each it
reports the re-detected landmarks' mean distance to the targets (MD), the time per
edit and the steps. Tasks (``--task``): ``edits`` (default), the named landmark edits
of :data:`bench.eval_drag.EDITS` (5-7 px at 128 px, well above dlib's ~0.3-0.5 px
noise), one per face in turn; or ``pairs``, the Table 1 protocol pairs, whose
landmarks are only 1-3 px apart at 128 px on aligned faces, the same order as the
detector's noise, so they separate variants poorly.

Groups (``--groups``):

* ``feature_block``: which synthesis block's output is the feature map F (at 128 px:
  4 = 32x32, 5 = 64x64, 6 = 128x128);
* ``r1``: motion-supervision disk radius (px); ``r2``: tracking window radius (px);
* ``lr``: Adam learning rate on the latent;
* ``latent``: W (one w for every layer) vs W+ (first 6 layers) vs W+ (all layers);
* ``stop_distance``: the distance (px) at which a handle counts as arrived;
* ``region``: the paper's global drag vs local drags (region.py) with soft regions of
  several radii; ``blend_block``: the synthesis block at which a local drag is blended.

Every variant reports, beside MD and time, what a user keeps: dlib's identity distance
between the face before and after the edit, and the PSNR / mean change of the pixels far
from every handle and target (:func:`bench.eval_drag.locality`).

The recommendation per group: among the variants whose mean MD is within ``--tie``
(relative) of the best MD, the one with the lowest identity distance; ties on identity
(within 0.01) go to the fastest. MD alone rewards an edit that moves the points by
redrawing the whole face.

    .venv/bin/python -m bench.ablate --model celeba128 -n 12 --max-steps 60 --out bench/results/ablations.json

Staged (:mod:`bench.staged`, as in :mod:`bench.eval_drag`): ``prepare`` finds the
tasks' landmarks with dlib and resolves the grid (each distinct effective
configuration is one run); ``edit`` runs every (run, task) drag on a GPU machine
without dlib; ``score`` re-detects and writes the one-shot JSON and tables::

    .venv/bin/python -m bench.ablate --stage prepare --work .stage/ablate --model celeba128 -n 30
    python -m bench.ablate --stage edit --work .stage/ablate --results $OUT/ablate --device cuda   # on the GPU
    .venv/bin/python -m bench.ablate --stage score --work .stage/ablate --results RESULTS/ablate \\
        --out bench/results/ablations.json

The grid (``--groups``, ``--quick``, ``--base``), tasks, ``--max-steps`` and ``--tie``
are fixed by ``prepare``; ``edit`` takes ``--shard K/N``, ``--time-budget``, ``--skip-done``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from draggan.engine import DragConfig, default_feature_block

from . import staged
from .eval_drag import (
    EDITS,
    DragTask,
    _fmt,
    add_drag_stage_arguments,
    drag_items,
    drag_stage,
    drag_work,
    edit_task,
    environment,
    fmt_psnr,
    load_model,
    measure,
    pair_task,
    run_from_record,
    sample_faces,
    sample_pairs,
    summarize,
    work_tasks,
    write_json,
)
from .landmarks import measure_face

# group -> [(label, DragConfig overrides)]
FULL_GRID: dict[str, list[tuple[str, dict]]] = {
    "lr": [("lr = 1e-3", {"lr": 1e-3}), ("lr = 2e-3", {"lr": 2e-3}), ("lr = 4e-3", {"lr": 4e-3}),
           ("lr = 8e-3", {"lr": 8e-3})],
    "feature_block": [("block 4 (32 px)", {"feature_block": 4}), ("block 5 (64 px)", {"feature_block": 5}),
                      ("block 6 (128 px)", {"feature_block": 6})],
    "r1": [("r1 = 1", {"r1": 1.0}), ("r1 = 2", {"r1": 2.0}), ("r1 = 3", {"r1": 3.0})],
    "r2": [("r2 = 2", {"r2": 2.0}), ("r2 = 3", {"r2": 3.0}), ("r2 = 5", {"r2": 5.0})],
    "latent": [("W", {"latent_space": "w"}), ("W+ (6 layers)", {"latent_space": "w+", "optimize_layers": 6}),
               ("W+ (all layers)", {"latent_space": "w+", "optimize_layers": None})],
    "stop_distance": [("stop 0.5 px", {"stop_distance": 0.5}), ("stop 1 px", {"stop_distance": 1.0}),
                      ("stop 2 px", {"stop_distance": 2.0})],
    "region": [("global (paper)", {"region": "global"}), ("local, radius 0.06", {"region_radius": 0.06}),
               ("local, radius 0.1", {"region_radius": 0.1}), ("local, radius 0.15", {"region_radius": 0.15})],
    "blend_block": [("blend at block 3 (16 px)", {"blend_block": 3}), ("blend at block 4 (32 px)", {"blend_block": 4}),
                    ("blend at block 5 (64 px)", {"blend_block": 5})],
    "warp": [("no warp term (lambda_warp 0)", {"lambda_warp": 0.0}), ("lambda_warp 2", {"lambda_warp": 2.0}),
             ("lambda_warp 4", {"lambda_warp": 4.0})],
    "latent_pull": [("no latent pull", {"lambda_latent": 0.0}), ("lambda_latent 0.01", {"lambda_latent": 0.01}),
                    ("lambda_latent 0.1", {"lambda_latent": 0.1}), ("lambda_latent 1", {"lambda_latent": 1.0})],
    "tracking": [("nearest-neighbour search (DragGAN)", {"tracking": "nn"}),
                 ("line search, adaptive template (FreeDrag)", {"tracking": "line"}),
                 ("line search, 0.5 px goals", {"tracking": "line", "line_step": 0.5})],
}
# --quick: two settings per group, the default and its most informative alternative.
QUICK_GRID: dict[str, list[tuple[str, dict]]] = {
    "feature_block": [FULL_GRID["feature_block"][1], FULL_GRID["feature_block"][2]],
    "r1": [FULL_GRID["r1"][0], FULL_GRID["r1"][2]],
    "r2": [FULL_GRID["r2"][0], FULL_GRID["r2"][1]],
    "lr": [FULL_GRID["lr"][1], FULL_GRID["lr"][3]],
    "latent": [FULL_GRID["latent"][0], FULL_GRID["latent"][1]],
    "stop_distance": [FULL_GRID["stop_distance"][1], FULL_GRID["stop_distance"][2]],
    "region": [FULL_GRID["region"][0], FULL_GRID["region"][2]],
    "blend_block": [FULL_GRID["blend_block"][1], FULL_GRID["blend_block"][2]],
    "warp": [FULL_GRID["warp"][0], FULL_GRID["warp"][1]],
    "latent_pull": [FULL_GRID["latent_pull"][0], FULL_GRID["latent_pull"][2]],
    "tracking": [FULL_GRID["tracking"][0], FULL_GRID["tracking"][1]],
}


def variant_config(base: DragConfig, overrides: dict, num_ws: int) -> DragConfig:
    """``base`` with ``overrides``; ``optimize_layers: None`` means every W+ layer of the generator."""
    overrides = dict(overrides)
    if "optimize_layers" in overrides and overrides["optimize_layers"] is None:
        overrides["optimize_layers"] = num_ws
    return dataclasses.replace(base, **overrides)


def config_key(config: DragConfig, resolution: int, num_handles: int) -> tuple:
    """Variants that resolve to the same effective settings are run once."""
    r1, r2 = config.radii(resolution)
    d = dataclasses.asdict(config)
    d.update(r1=r1, r2=r2, stop_distance=config.stop_distance_for(resolution, num_handles))
    if d["latent_space"] == "w":
        d["optimize_layers"] = None
    return tuple(sorted(d.items()))


IDENTITY_TIE = 0.01  # identity distances closer than this are a tie (dlib's own spread is larger)


def recommend(variants: list[dict], tie: float = 0.05) -> dict:
    """Per group: among the variants within ``tie`` (relative) of the best mean MD, the lowest identity
    distance; identities within IDENTITY_TIE of it are tied and the fastest of those wins."""
    out = {}
    for group in dict.fromkeys(v["group"] for v in variants):
        scored = [v for v in variants if v["group"] == group and v["summary"]["md_mean"] is not None]
        if not scored:
            continue
        best = min(v["summary"]["md_mean"] for v in scored)
        accurate = [v for v in scored if v["summary"]["md_mean"] <= best * (1 + tie) + 1e-9]

        def identity(v):
            value = v["summary"].get("identity_to_source_mean")
            return float("inf") if value is None else value

        best_identity = min(identity(v) for v in accurate)
        tied = [v for v in accurate if identity(v) <= best_identity + IDENTITY_TIE]
        pick = min(tied, key=lambda v: v["summary"]["seconds_per_edit"])
        out[group] = {"label": pick["label"], "overrides": pick["overrides"], "md_mean": pick["summary"]["md_mean"],
                      "identity_to_source_mean": pick["summary"].get("identity_to_source_mean"),
                      "seconds_per_edit": pick["summary"]["seconds_per_edit"],
                      "tied_with": [v["label"] for v in tied if v is not pick]}
    return out


def make_tasks(G, kind: str, count: int, num_handles: int = 5, first_seed: int = 1000, truncation: float = 0.7,
               detector=measure_face) -> tuple[list[DragTask], dict]:
    """``count`` drag tasks: ``"edits"`` (one face each, the named edits of EDITS in turn) or ``"pairs"``
    (Table 1 pairs with ``num_handles`` handles)."""
    R = int(G.img_resolution)
    if kind == "edits":
        faces, stats = sample_faces(G, count, first_seed, truncation, detector)
        return [edit_task(f, EDITS[i % len(EDITS)], R) for i, f in enumerate(faces)], stats
    if kind == "pairs":
        pairs, stats = sample_pairs(G, count, first_seed, truncation, detector)
        return [pair_task(p, num_handles, R) for p in pairs], stats
    raise ValueError(f"task kind must be 'edits' or 'pairs', got {kind!r}")


def prepare_ablation(G, grid: dict, base: DragConfig, count: int, task: str = "edits", num_handles: int = 5,
                     max_steps: int | None = None, first_seed: int = 1000, truncation: float = 0.7, tie: float = 0.05,
                     model: str = "?", command: str = "", detector=measure_face, log=None) -> staged.Work:
    """The prepare stage: the drag tasks (dlib) and the grid, each effective configuration once.

    Variants that resolve to the same effective settings share one run (``reused``);
    the items are (task, run) pairs, run by run.
    """
    R, num_ws = int(G.img_resolution), int(G.num_ws)
    if base.feature_block is None:  # the engine's default for this generator, written out
        base = dataclasses.replace(base, feature_block=default_feature_block(G))
    tasks, stats = make_tasks(G, task, count, num_handles, first_seed, truncation, detector)
    if log:
        log(f"{len(tasks)} {task} tasks ({stats['seeds_without_face']} of {stats['seeds_tried']} seeds had no face)")
    num_handles_max = max(len(t.handles) for t in tasks) if tasks else 1  # for the default stop distance
    keys: list[tuple] = []
    configs: list[DragConfig] = []
    variants = []
    for group, entries in grid.items():
        for label, overrides in entries:
            config = variant_config(base, overrides, num_ws)
            key = config_key(config, R, num_handles_max)
            reused = key in keys
            if not reused:
                keys.append(key)
                configs.append(config)
            r1, r2 = config.radii(R)
            variants.append({"group": group, "label": label, "overrides": overrides, "run": keys.index(key),
                             "reused": reused,
                             "effective": {"r1": r1, "r2": r2,
                                           "stop_distance": config.stop_distance_for(R, num_handles_max),
                                           "feature_block": config.feature_block, "lr": config.lr,
                                           "latent_space": config.latent_space,
                                           "optimize_layers": config.optimize_layers}})
    items = [(t, r) for r in range(len(configs)) for t in range(len(tasks))]
    extra = {"task_kind": task, "count": count, "num_handles": num_handles, "first_seed": first_seed,
             "truncation": truncation, "tie": tie, "sampling": stats, "base": dataclasses.asdict(base),
             "variants": variants}
    return drag_work("ablate", G, tasks, configs, items, max_steps, model, command, extra)


def score_ablation(work: staged.Work, outcomes, detector=measure_face, log=None, on_variant=None) -> list[dict]:
    """The score stage: re-detect landmarks on every result; one dict per variant with its summary and rows.

    Outcomes come run by run (as :func:`prepare_ablation` orders the items); each variant
    is complete once the runs up to its own are, and ``on_variant(variants_so_far)`` is
    then called (to save partial results of a long one-shot run).
    """
    tasks = work_tasks(work)
    variants = work.data["variants"]
    rows: dict[int, list] = {}
    loads: dict[int, list] = {}
    emitted: list[dict] = []

    def emit(upto_run: int | None):
        """Variants whose run is done, in grid order, up to the first that waits for a later run."""
        while len(emitted) < len(variants):
            v = variants[len(emitted)]
            if upto_run is not None and v["run"] > upto_run:
                return
            summary = summarize(rows.get(v["run"], []))
            run_loads = loads.get(v["run"], [])
            summary["loadavg_1min"] = [run_loads[0], run_loads[-1]] if run_loads else None
            emitted.append({k: v[k] for k in ("group", "label", "overrides", "reused", "effective")}
                           | {"summary": summary, "rows": rows.get(v["run"], [])})
            if log:
                log(f"[{v['group']}] {v['label']}: MD {_fmt(summary['md_mean'])} "
                    f"(no edit {_fmt(summary['md_no_edit_mean'])}), {_fmt(summary['seconds_per_edit'], 1)} s/edit, "
                    f"{_fmt(summary['steps_mean'], 1)} steps" + (" (same settings as an earlier variant)"
                                                                 if v["reused"] else ""))
            if on_variant:
                on_variant(emitted)

    current = None
    for item, record, image in outcomes:
        run = item["config"]
        if current is not None and run != current:
            emit(current)
        current = run
        row = measure(tasks[item["task"]], run_from_record(record, image), detector)
        row.pop("_embedding")
        rows.setdefault(run, []).append(row)
        loads.setdefault(run, []).append(record.get("loadavg_1min"))
    emit(None)
    return emitted


def markdown_tables(result: dict) -> str:
    meta = result["meta"]
    what = (f"{meta['tasks']} named edits ({', '.join(e[0] for e in meta['edits'])}, in turn)"
            if meta["task"] == "edits" else f"{meta['tasks']} Table 1 pairs x {meta['handles']} handles")
    lines = [f"`{meta['command']}` — {meta['env']['device']}, {meta['env']['date']}, model {meta['model']}, "
             f"{what}, max {meta['max_steps']} steps, "
             f"load avg {meta['env']['loadavg'][0]}", ""]
    for group in dict.fromkeys(v["group"] for v in result["variants"]):
        lines += [f"**{group}**", "",
                  "| variant | MD (px) | MD no edit | identity dist. | far PSNR (dB, median) | far change (levels) "
                  "| face re-detected | steps | reached stop | s / edit | ms / step |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        rec = result["recommended"].get(group, {}).get("label")
        for v in result["variants"]:
            if v["group"] != group:
                continue
            s = v["summary"]
            mark = " **(pick)**" if v["label"] == rec else ""
            lines.append(f"| {v['label']}{mark} | {_fmt(s['md_mean'])} | {_fmt(s['md_no_edit_mean'])} | "
                         f"{_fmt(s.get('identity_to_source_mean'), 3)} | {fmt_psnr(s)} | "
                         f"{_fmt(s.get('far_mae_mean'))} | {s['faces_found']}/{s['edits']} | "
                         f"{_fmt(s['steps_mean'], 1)} | {_fmt(s['done_rate'])} | "
                         f"{_fmt(s['seconds_per_edit'], 1)} | {_fmt(s['ms_per_step'], 0)} |")
        lines.append("")
    missing = meta.get("missing_items")
    if missing:
        lines.append(f"**{len(missing)} drags had no result** (scored with --allow-missing).")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.ablate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--task", choices=["edits", "pairs"], default="edits",
                   help="edits: named landmark edits of 5-7 px (eval_drag.EDITS); pairs: Table 1 pairs")
    p.add_argument("-n", "--count", type=int, default=12, help="tasks (faces for edits, pairs for pairs)")
    p.add_argument("--handles", type=int, default=5, choices=[1, 5, 68], help="handles per pair (--task pairs)")
    p.add_argument("--first-seed", type=int, default=1000, help="pairs from seeds here on (not eval_drag's)")
    p.add_argument("--truncation", type=float, default=0.7)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--groups", default=",".join(FULL_GRID), help="comma list of groups to run")
    p.add_argument("--quick", action="store_true", help="two variants per group")
    p.add_argument("--base", default=None, help="JSON dict of DragConfig overrides for the base configuration")
    p.add_argument("--tie", type=float, default=0.05, help="relative MD margin within which the fastest wins")
    add_drag_stage_arguments(p)
    return p


def main(argv=None) -> int:
    parsed = staged.parse(build_parser(), argv)
    if parsed is None:
        return 2
    args, device = parsed
    grid_all = QUICK_GRID if args.quick else FULL_GRID
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = [g for g in groups if g not in grid_all]
    if unknown:
        print(f"error: unknown ablation group(s) {unknown}; choose from {list(grid_all)}", file=sys.stderr)
        return 2
    try:
        base = DragConfig(**(json.loads(args.base) if args.base else {}))
    except (ValueError, TypeError) as e:
        print(f"error: --base must be a JSON object of DragConfig fields: {e}", file=sys.stderr)
        return 2
    grid = {g: grid_all[g] for g in groups}
    command = staged.command_line("bench.ablate", argv)
    log = staged.log

    def run_all():
        partial = None
        if args.out:  # keep what is done so far, in case a long CPU run is stopped
            def partial(variants):
                write_json({"partial": True, "variants": variants, "recommended": recommend(variants, args.tie)},
                           args.out.with_suffix(".partial.json"))
        return ablate(load_model(args.model, device), grid, base, args.count, args.task, args.handles,
                      args.max_steps, args.first_seed, args.truncation, args.tie, model=args.model, device=device,
                      command=command, log=log, on_variant=partial, warmup_steps=args.warmup_steps)

    def gpu(work):
        drag_stage(load_model(work.data["model"], device), work, args, command, log)

    def score(work, results):
        variants = score_ablation(work, staged.stored_outcomes(work, results), log=log)
        return {"meta": staged.staged_meta(work, results, command, ablation_meta), "variants": variants,
                "recommended": recommend(variants, work.data["tie"])}

    return staged.run_stages(staged.Stages(
        name="ablate", run_all=run_all,
        prepare=lambda: prepare_ablation(load_model(args.model, device), grid, base, args.count, args.task,
                                         args.handles, args.max_steps, args.first_seed, args.truncation, args.tie,
                                         model=args.model, command=command, log=log),
        describe=lambda work: (f"{len(work.data['tasks'])} tasks x {len(work.data['configs'])} distinct settings "
                               f"({len(work.data['variants'])} variants) = {len(work.items)} drags"),
        gpu=gpu, score=score, table=markdown_tables), args)


def ablation_meta(work: staged.Work, env: dict, command: str, wall_seconds: float) -> dict:
    d = work.data
    base = DragConfig(**d["base"])
    return {"command": command, "model": d["model"], "resolution": d["resolution"], "tasks": len(d["tasks"]),
            "task": d["task_kind"], "handles": d["num_handles"] if d["task_kind"] == "pairs" else "per edit",
            "edits": [list(e) for e in EDITS] if d["task_kind"] == "edits" else None,
            "first_seed": d["first_seed"], "truncation": d["truncation"], "sampling": d["sampling"],
            "max_steps": d["max_steps"] if d["max_steps"] is not None else base.max_steps,
            "base": d["base"], "tie": d["tie"], "env": env, "wall_seconds": round(wall_seconds, 1)}


def ablate(G, grid: dict, base: DragConfig, count: int, task: str = "edits", num_handles: int = 5,
           max_steps: int | None = None, first_seed: int = 1000, truncation: float = 0.7, tie: float = 0.05,
           model: str = "?", device: str = "cpu", command: str = "", detector=measure_face, log=None,
           on_variant=None, warmup_steps: int | None = None) -> dict:
    """One process, the three stages chained: tasks and grid, every drag, re-detection; with metadata."""
    t0 = time.perf_counter()
    work = prepare_ablation(G, grid, base, count, task, num_handles, max_steps, first_seed, truncation, tie, model,
                            command, detector, log)
    outcomes = drag_items(G, work, work.items, **({} if warmup_steps is None else {"warmup_steps": warmup_steps}))
    variants = score_ablation(work, outcomes, detector, log, on_variant)
    return {"meta": ablation_meta(work, environment(device), command, time.perf_counter() - t0),
            "variants": variants, "recommended": recommend(variants, tie)}


if __name__ == "__main__":
    sys.exit(main())
