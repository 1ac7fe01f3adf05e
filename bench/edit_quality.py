"""Edit quality: what a user keeps after a drag, beside where the handles went.

For ``--faces`` generated faces (seeds from ``--first-seed``, truncation 0.7, faces dlib
finds) and each named edit of :data:`bench.eval_drag.EDITS` (smile, chin down, nose
right, brows up: 4-6 px at 128 px), drag the edit's landmarks with the engine's settings
(a preset plus ``--config`` overrides) and measure on the result:

* **MD**: the re-detected landmarks of the edit against their targets (px);
* **identity**: dlib's face-descriptor distance, unedited -> edited (0.6: another person);
* **locality**: PSNR and mean absolute change of the pixels farther than 40/128 of the side
  from every handle and target (:func:`bench.eval_drag.locality`); "identical" when none changed;
* **realism**: the face detection rate of the edited images and the Fréchet distance of
  their dlib embeddings to the held-out real faces (``eval/``), beside the same FD for as
  many unedited samples (:mod:`bench.model_quality`'s protocol: the paper's FID column);
* **time**: seconds and steps per edit.

Two references put the identity figure in scale: the same landmarks moved by a pure
geometric warp of the unedited image (a Gaussian displacement field of sigma 8/128 of the
side, so only pixels near the handles move), and the unedited image re-encoded as JPEG
(quality 90). dlib measures identity on the face's geometry: at 128 px a 5 px move is
8% of a face's width, and the warp alone moves the descriptor by about 0.3.

A grid of before/after pairs (``--grid``) shows what the figures mean: look at it.

    .venv/bin/python -m bench.edit_quality --model celeba128 --faces 30 --workers 2 \\
        --out bench/results/edit_quality.json --grid docs/edit_quality.jpg
    .venv/bin/python -m bench.edit_quality --model celeba128 --faces 30 --preset paper ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from draggan.drawing.overlay import render_view
from draggan.engine import PRESETS, DragConfig, DragSession
from draggan.runtime import runtime_for

from .eval_drag import (
    EDITS,
    DragRun,
    DragTask,
    FaceSample,
    _fmt,
    edit_task,
    environment,
    fmt_psnr,
    frechet_distance,
    load_model,
    measure,
    run_task,
    sample_faces,
    summarize,
    write_json,
)
from .landmarks import measure_face
from .model_quality import detect_and_embed, eval_images, generated_images

WARP_SIGMA = 8 / 128      # the reference warp's Gaussian, as a fraction of the side
JPEG_QUALITY = 90

# --------------------------------------------------------------------------- references


def gaussian_warp(image: np.ndarray, handles, targets, sigma: float) -> np.ndarray:
    """``image`` with each handle's content moved to its target by a Gaussian displacement field
    (sigma in pixels): the smallest change that moves the points, with nothing redrawn."""
    R = image.shape[0]
    yy, xx = np.mgrid[0:R, 0:R].astype(np.float32)
    map_x, map_y = xx.copy(), yy.copy()
    for (hx, hy), (tx, ty) in zip(np.asarray(handles, np.float32), np.asarray(targets, np.float32)):
        # Backward map: the output pixel near a target reads the input near its handle.
        w = np.exp(-((xx - tx) ** 2 + (yy - ty) ** 2) / (2 * sigma ** 2))
        map_x -= w * (tx - hx)
        map_y -= w * (ty - hy)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def reference_run(image: np.ndarray) -> DragRun:
    return DragRun(image=image, steps=0, done=True, seconds_drag=0.0, seconds_render=0.0, tracked=[], frames=[],
                   final_handles=np.zeros((0, 2)))


# --------------------------------------------------------------------------- drags, on worker processes

_G = None


def _init_worker(model: str, threads: int) -> None:
    global _G
    torch.set_num_threads(threads)
    _G = runtime_for("cpu").prepare(load_model(model, "cpu"))


def _drag(job):
    """One edit in a worker: (index, unedited image, edited image, steps, done, seconds_drag, seconds_render).

    The unedited image is rendered here too: another thread count may round a few pixels
    one level apart, which the locality figure would count as a change.
    """
    index, ws, handles, targets, config = job
    config = DragConfig(**config)
    face = FaceSample(seed=-1, ws=torch.from_numpy(ws), image=None, face=None)
    run = run_task(_G, DragTask(face, handles, targets, []), config)
    before = DragSession(_G, face.ws, config).render()     # drawn as the drag draws (autocast or not)
    return index, before, run.image, run.steps, run.done, run.seconds_drag, run.seconds_render


def run_edits(model: str, G, tasks, config: DragConfig, workers: int, log=None) -> list[DragRun]:
    """Every task's drag, on ``workers`` processes of one torch thread each (0: here, with torch's threads).

    Each task's face image is replaced by the worker's render of the unedited latent (see :func:`_drag`).
    """
    jobs = [(i, t.face.ws.detach().float().cpu().numpy(), np.asarray(t.handles), np.asarray(t.targets),
             config.__dict__.copy()) for i, t in enumerate(tasks)]
    runs: list[DragRun | None] = [None] * len(tasks)

    def keep(result):
        i, before, image, steps, done, sd, sr = result
        tasks[i] = dataclasses.replace(tasks[i], face=dataclasses.replace(tasks[i].face, image=before))
        runs[i] = DragRun(image=image, steps=steps, done=done, seconds_drag=sd, seconds_render=sr, tracked=[],
                          frames=[], final_handles=np.zeros((0, 2)))
        if log:
            log(f"{sum(r is not None for r in runs)}/{len(tasks)} {tasks[i].name} (seed {tasks[i].face.seed}): "
                f"{steps} steps, {sd + sr:.1f} s")

    if workers <= 0:
        global _G
        _G = G
        for job in jobs:
            keep(_drag(job))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(model, 1)) as pool:
            for result in pool.imap_unordered(_drag, jobs):
                keep(result)
    return runs


# --------------------------------------------------------------------------- scoring


def realism(images, eval_embeddings: np.ndarray) -> dict:
    """Detection rate (the model-quality protocol) and FD of the found faces' embeddings to ``eval_embeddings``."""
    found, embeddings = 0, []
    for image in images:
        ok, emb = detect_and_embed(image)
        found += ok
        if emb is not None:
            embeddings.append(emb)
    fd = frechet_distance(np.stack(embeddings), eval_embeddings) if len(embeddings) >= 2 else None
    return {"detection_rate": round(found / max(len(images), 1), 4), "fd_to_eval": None if fd is None else round(fd, 4),
            "n": len(embeddings)}


def grid_image(tasks, runs, faces: int, scale: int = 2) -> np.ndarray:
    """Rows of faces: the unedited face with every edit's arrows, then each edit's result."""
    by_seed: dict[int, list] = {}
    for task, run in zip(tasks, runs):
        by_seed.setdefault(task.face.seed, []).append((task, run))
    rows = []
    for seed in list(by_seed)[:faces]:
        items = by_seed[seed]
        before = items[0][0].face.image
        handles = np.concatenate([t.handles for t, _ in items])
        targets = np.concatenate([t.targets for t, _ in items])
        cells = [render_view(before, scale, handles, targets, smooth=True, numbers=False)]
        cells += [np.asarray(Image.fromarray(r.image).resize((before.shape[1] * scale, before.shape[0] * scale),
                                                             Image.LANCZOS)) for _, r in items]
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def evaluate(model: str, faces: int, config: DragConfig, preset: str, first_seed: int = 0, truncation: float = 0.7,
             workers: int = 2, eval_limit: int = 500, command: str = "", log=None) -> tuple[dict, list, list]:
    """Sample, drag, score. Returns (result, tasks, runs)."""
    t0 = time.perf_counter()
    G = load_model(model, "cpu")
    R = int(G.img_resolution)
    samples, stats = sample_faces(G, faces, first_seed, truncation, measure_face)
    tasks = [edit_task(f, e, R) for f in samples for e in EDITS]
    if log:
        log(f"{len(samples)} faces ({stats['seeds_without_face']} of {stats['seeds_tried']} seeds had no face), "
            f"{len(tasks)} edits, preset {preset}: {json.dumps(config.__dict__)}")
    t_drag = time.perf_counter()
    runs = run_edits(model, G, tasks, config, workers, log)
    drag_wall = time.perf_counter() - t_drag

    rows = [measure(t, r) for t, r in zip(tasks, runs)]
    for row in rows:
        row.pop("_embedding")
    references = {
        "warp": summarize([measure(t, reference_run(gaussian_warp(t.face.image, t.handles, t.targets, WARP_SIGMA * R)))
                           for t in tasks]),
        "jpeg": summarize([measure(t, reference_run(jpeg(t.face.image))) for t in tasks]),
    }
    for ref in references.values():  # no drag: no time or steps to report
        for key in ("seconds_per_edit", "ms_per_step", "steps_mean", "done_rate"):
            ref.pop(key, None)
    _, eval_emb = _embed_eval(eval_limit)
    unedited = list(generated_images(G, len(tasks), truncation, seed0=first_seed))
    result = {
        "summary": summarize(rows),
        "per_edit": {name: summarize([r for r in rows if r["task"] == name]) for name, _, _ in EDITS},
        "references": references,
        "realism": {"edited": realism([r.image for r in runs], eval_emb),
                    "unedited_samples": realism(unedited, eval_emb)},
        "rows": rows,
        "meta": {"command": command, "model": model, "resolution": R, "faces": len(samples), "edits": len(tasks),
                 "preset": preset, "config": config.__dict__, "edit_list": [list(e) for e in EDITS],
                 "first_seed": first_seed, "truncation": truncation, "sampling": stats, "workers": workers,
                 "warp_sigma_px": WARP_SIGMA * R, "jpeg_quality": JPEG_QUALITY, "eval_faces": len(eval_emb),
                 "drag_wall_seconds": round(drag_wall, 1), "env": environment("cpu"),
                 "wall_seconds": round(time.perf_counter() - t0, 1)},
    }
    return result, tasks, runs


def _embed_eval(limit: int):
    from .model_quality import embed_all

    return embed_all(eval_images(limit))


def markdown_table(result: dict) -> str:
    m = result["meta"]
    lines = [f"`{m['command']}` — {m['env']['device']}, {m['env']['date']}, model {m['model']}, preset "
             f"**{m['preset']}**, {m['faces']} faces x {len(m['edit_list'])} edits, {m['workers']} worker processes, "
             f"load avg {m['env']['loadavg'][0]}", "",
             "| edits | MD (px) | MD no edit | identity dist. | far PSNR (dB, median) | far change (levels) "
             "| far identical | face re-detected | steps | s / edit |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def row(label, s):
        return (f"| {label} | {_fmt(s['md_mean'])} | {_fmt(s['md_no_edit_mean'])} | "
                f"{_fmt(s.get('identity_to_source_mean'), 3)} | {fmt_psnr(s)} | {_fmt(s.get('far_mae_mean'))} | "
                f"{_fmt(s.get('far_identical_rate'))} | {s['faces_found']}/{s['edits']} | "
                f"{_fmt(s.get('steps_mean'), 1)} | {_fmt(s.get('seconds_per_edit'), 1)} |")

    lines.append(row("**all**", result["summary"]))
    for name, s in result["per_edit"].items():
        lines.append(row(name, s))
    for name, s in result["references"].items():
        label = {"warp": f"reference: Gaussian warp (sigma {m['warp_sigma_px']:.0f} px)",
                 "jpeg": f"reference: JPEG q{m['jpeg_quality']} of the unedited face"}[name]
        lines.append(row(label, s))
    e, u = result["realism"]["edited"], result["realism"]["unedited_samples"]
    lines += ["", f"Realism: face detection {e['detection_rate']:.1%} of the edited images "
                  f"({u['detection_rate']:.1%} of as many unedited samples); FD of the dlib embeddings to "
                  f"{m['eval_faces']} held-out real faces {_fmt(e['fd_to_eval'], 3)} (unedited samples: "
                  f"{_fmt(u['fd_to_eval'], 3)}; n = {e['n']} / {u['n']})."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.edit_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128")
    p.add_argument("--faces", type=int, default=30)
    p.add_argument("--preset", default="local", choices=sorted(PRESETS))
    p.add_argument("--config", default=None, help="JSON dict of DragConfig overrides on top of the preset")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=0.7)
    p.add_argument("--workers", type=int, default=2, help="drag processes (one torch thread each; 0: in-process)")
    p.add_argument("--eval-limit", type=int, default=500, help="held-out real faces for the FD")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    p.add_argument("--grid", type=Path, default=None, help="write a before/after grid (JPEG or PNG) here")
    p.add_argument("--grid-faces", type=int, default=8)
    args = p.parse_args(argv)
    try:
        # The settings a user gets: the preset, with the app's and CLI's runtime policy (bf16 where fast).
        overrides = {"autocast": runtime_for("cpu").autocast, **(json.loads(args.config) if args.config else {})}
        config = DragConfig.preset(args.preset, **overrides)
    except (ValueError, TypeError) as e:
        print(f"error: --config must be a JSON object of DragConfig fields: {e}", file=sys.stderr)
        return 2
    command = "python -m bench.edit_quality " + " ".join(sys.argv[1:] if argv is None else argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    result, tasks, runs = evaluate(args.model, args.faces, config, args.preset, args.first_seed, args.truncation,
                                   args.workers, args.eval_limit, command, log)
    table = markdown_table(result)
    print(table)
    if args.out:
        write_json(result, args.out)
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid_image(tasks, runs, args.grid_faces)).save(args.grid, quality=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
