"""Pictures of drag edits: before/after with handles, targets and arrows; MD against iterations; a GIF.

    .venv/bin/python -m bench.figures --model celeba128 --out docs/

writes ``drag_examples.png`` (rows of: a generated face with handles (red) on dlib
landmarks and arrows to their targets (blue), then the result with the tracked handles;
the edits are :data:`bench.eval_drag.EDITS`), ``md_vs_iterations.png`` (re-detected landmark MD and the
engine's tracked handle distance against the optimization step, for 1, 5 and 68
handles on Table 1 protocol pairs, and for each named edit) and ``drag_example.gif`` (the first
edit, step by step; README's ``docs/drag.gif`` is its CLI example's ``--video``),
plus ``figures.json`` with the numbers.

For the MD curve the stop distance is set as close as the pixel grid allows, so most drags
run all their steps and the curves show what more iterations buy (one that arrives earlier
keeps its last values); dotted lines mark the paper's
MD scaled to our resolution.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from draggan.drawing.overlay import render_view
from draggan.engine import DragConfig
from draggan.runtime import runtime_for

from .eval_drag import (
    EDITS,
    DragTask,
    FaceSample,
    edit_task,
    environment,
    load_model,
    mean_distance,
    measure,
    pair_task,
    run_task,
    sample_faces,
    sample_pairs,
    write_json,
)
from .landmarks import measure_face

MAX_FILE_BYTES = 1_000_000


# --------------------------------------------------------------------------- drawing


def draw_drag(image: np.ndarray, handles, targets, scale: int = 2, numbers: bool = False) -> Image.Image:
    """The image enlarged ``scale`` times (Lanczos) with handles (red), targets (blue) and arrows between them.

    Drawn by the app's :func:`draggan.drawing.overlay.render_view`, so figures look like the editor.
    """
    return Image.fromarray(render_view(image, scale, handles=np.asarray(handles, float),
                                       targets=np.asarray(targets, float), smooth=True, numbers=numbers))


def _label(img: Image.Image, text: str) -> Image.Image:
    """``img`` with a caption strip on top."""
    strip = 16
    out = Image.new("RGB", (img.width, img.height + strip), (255, 255, 255))
    out.paste(img, (0, strip))
    ImageDraw.Draw(out).text((4, 2), text, fill=(0, 0, 0))
    return out


def grid(rows: list[list[Image.Image]], pad: int = 4) -> Image.Image:
    """Tile equally sized images into rows."""
    h, w = rows[0][0].height, rows[0][0].width
    cols = max(len(r) for r in rows)
    out = Image.new("RGB", (cols * w + (cols + 1) * pad, len(rows) * h + (len(rows) + 1) * pad), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            out.paste(im, (pad + j * (w + pad), pad + i * (h + pad)))
    return out


# --------------------------------------------------------------------------- figures


@dataclasses.dataclass
class Example:
    """One drag for the figure: the task, the run and the re-detected MD."""

    task: DragTask
    run: object  # eval_drag.DragRun
    md: float | None
    md_no_edit: float


def drag_examples(G, faces: list[FaceSample], edits, config: DragConfig, max_steps: int | None,
                  image_every: int = 0, detector=measure_face) -> list[Example]:
    """Drag each face with the matching edit of ``edits`` (see eval_drag.EDITS); MD re-detected on the result."""
    out = []
    R = int(G.img_resolution)
    for face, edit in zip(faces, edits):
        task = edit_task(face, edit, R)
        run = run_task(G, task, config, max_steps=max_steps, image_every=image_every)
        row = measure(task, run, detector)
        out.append(Example(task, run, row["md"], row["md_no_edit"]))
    return out


def examples_figure(examples: list[Example], path, scale: int = 3) -> Path:
    """Rows of (before: handles, arrows, targets; after: tracked handles and targets)."""
    rows = []
    for ex in examples:
        md = "–" if ex.md is None else f"{ex.md:.1f}"
        t = ex.task
        rows.append([
            _label(draw_drag(t.face.image, t.handles, t.targets, scale), f"{t.name}: {ex.md_no_edit:.1f} px to go"),
            _label(draw_drag(ex.run.image, ex.run.final_handles, t.targets, scale),
                   f"after {ex.run.steps} steps: landmarks {md} px off"),
        ])
    return _save_png(grid(rows), path)


def md_curves(G, task_groups: dict, config: DragConfig, steps: int, every: int, detector=measure_face) -> dict:
    """Per label of ``task_groups`` ({label: [DragTask, ...]}): the steps, and the mean over its tasks of the
    re-detected MD and of the engine's tracked distance, every ``every`` steps.

    The stop distance is set as close as the pixel grid allows, so most drags run all ``steps``
    steps; one that arrives earlier keeps its image from then on, so its last values carry forward.
    """
    cfg = dataclasses.replace(config, stop_distance=1e-3)
    R = int(G.img_resolution)
    curves = {}
    for label, tasks in task_groups.items():
        md_rows, tracked_rows, longest = [], [], []
        for task in tasks:
            run = run_task(G, task, cfg, max_steps=steps, image_every=every)
            md = []
            for _, image, _ in run.frames:
                face = detector(image)
                md.append(np.nan if face is None else mean_distance(task.select(face.landmarks), task.targets))
            md_rows.append(md)
            tracked_rows.append([d for s, d in run.tracked if s % every == 0 or s == run.steps])
            frame_steps = [s for s, _, _ in run.frames]
            longest = max(longest, frame_steps, key=len)
        curves[label] = {"steps": longest,
                         "md": np.nanmean(_carry_forward(md_rows), 0).round(4).tolist(),
                         "tracked": np.mean(_carry_forward(tracked_rows), 0).round(4).tolist(),
                         "stop_distance_default": config.stop_distance_for(R, len(tasks[0].handles)),
                         "tasks": len(tasks)}
    return curves


def _carry_forward(rows: list[list[float]]) -> np.ndarray:
    """Rows of unequal length as one array: each row padded with its last value."""
    n = max(len(r) for r in rows)
    return np.array([list(r) + [r[-1]] * (n - len(r)) for r in rows], float)


def md_curve_figure(panels: dict, path, resolution: int) -> Path:
    """One panel per entry of ``panels`` ({title: curves from :func:`md_curves`}); solid: re-detected MD,
    dashed: the engine's tracked distance; dotted: the paper's MD scaled to ``resolution`` (protocol labels)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .eval_drag import paper_reference

    ref = paper_reference(resolution)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), dpi=100, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        for (label, c), color in zip(curves.items(), ("tab:red", "tab:blue", "tab:green", "tab:purple")):
            ax.plot(c["steps"], c["md"], "o-", color=color, label=f"{label}: re-detected")
            ax.plot(c["steps"], c["tracked"], "--", color=color, alpha=0.6, label=f"{label}: tracked")
            key = label.split()[0]
            if key in ref:
                ax.axhline(ref[key]["md"], color=color, lw=0.8, ls=":")
        ax.set_xlabel("optimization step")
        ax.set_ylabel(f"distance to targets (px of {resolution}²)")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6.5, ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def drag_gif(example: Example, path, scale: int = 2, max_frames: int = 40, fps: float = 8.0,
             hold_ms: int = 1000) -> Path:
    """The drag, frame by frame, with handles and targets drawn; the result is held for ``hold_ms``.

    Frames share one palette and are not dithered, which keeps the GIF small (dithering
    noise defeats GIF's compression); frames are dropped until it is under 1 MB.
    """
    frames = example.run.frames
    if not frames:
        raise ValueError("the example was run without frames (image_every=0)")
    stride = max(1, math.ceil(len(frames) / max_frames))
    picked = frames[::stride]
    if picked[-1] is not frames[-1]:
        picked.append(frames[-1])
    images = [draw_drag(img, handles, example.task.targets, scale) for _, img, handles in picked]
    frame_ms = max(20, int(round(1000 / fps / 10)) * 10)  # GIF counts in 10 ms units
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        _write_gif(images, path, frame_ms, hold_ms)
        if path.stat().st_size <= MAX_FILE_BYTES or len(images) <= 4:
            return path
        images = images[:-1:2] + images[-1:]


def _write_gif(images: list[Image.Image], path: Path, frame_ms: int, hold_ms: int) -> None:
    # One palette for all frames, fitted on the first, middle and last frame side by side.
    keys = [images[0], images[len(images) // 2], images[-1]]
    mosaic = Image.new("RGB", (sum(k.width for k in keys), keys[0].height))
    for i, k in enumerate(keys):
        mosaic.paste(k, (i * k.width, 0))
    palette = mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    frames = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms + hold_ms]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False)


def _save_png(img: Image.Image, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    if path.stat().st_size > MAX_FILE_BYTES:  # keep docs light: quantize to a palette
        img.quantize(256).save(path, optimize=True)
    return path


# --------------------------------------------------------------------------- CLI


def make_figures(G, out_dir, num_examples: int = 3, curve_pairs: int = 3, curve_steps: int = 60, curve_every: int = 5,
                 example_steps: int | None = 80, first_seed: int = 2000, config: DragConfig | None = None,
                 handle_counts=(1, 5, 68), curve_edits: bool = True, device: str = "cpu", command: str = "",
                 log=None) -> dict:
    config = config or DragConfig()
    out_dir = Path(out_dir)
    edits = EDITS[:num_examples]
    faces, stats = sample_faces(G, len(edits), first_seed)
    pairs, pair_stats = sample_pairs(G, curve_pairs, first_seed + 100)
    if not faces or not pairs:
        raise RuntimeError("dlib found no faces in the samples for the figures")
    if log:
        log(f"figures: {len(faces)} faces, {len(pairs)} pairs "
            f"({stats['seeds_without_face'] + pair_stats['seeds_without_face']} seeds without a face)")
    # Frames (a render per step) only for the first example, which becomes the GIF.
    examples = (drag_examples(G, faces[:1], edits, config, example_steps, image_every=1)
                + drag_examples(G, faces[1:], edits[1:], config, example_steps))
    paths = {"examples": str(examples_figure(examples, out_dir / "drag_examples.png")),
             "gif": str(drag_gif(examples[0], out_dir / "drag_example.gif"))}
    if log:
        log(f"figures: examples {[None if e.md is None else round(e.md, 2) for e in examples]}")
    R = int(G.img_resolution)
    groups = {f"{n} handle{'s' if n > 1 else ''}": [pair_task(p, n, R) for p in pairs[:curve_pairs]]
              for n in handle_counts}
    curves = {f"Table 1 pairs ({len(pairs[:curve_pairs])}; dotted: paper's MD x R/512)":
              md_curves(G, groups, config, curve_steps, curve_every)}
    if curve_edits:
        edit_groups = {t.name: [t] for t in (e.task for e in examples)}
        curves["named edits (one face each)"] = md_curves(G, edit_groups, config, curve_steps, curve_every)
    paths["md_curve"] = str(md_curve_figure(curves, out_dir / "md_vs_iterations.png", R))
    result = {"meta": {"command": command, "env": environment(device), "resolution": int(G.img_resolution),
                       "first_seed": first_seed, "config": dataclasses.asdict(config)},
              "examples": [{"edit": e.task.name, "seed": e.task.face.seed, "landmarks": e.task.landmarks, "md": e.md,
                            "md_no_edit": e.md_no_edit, "steps": e.run.steps, "done": e.run.done,
                            "seconds": round(e.run.seconds, 2)} for e in examples],
              "curves": curves, "paths": paths}
    write_json(result, out_dir / "figures.json")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.figures", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--examples", type=int, default=3, help="rows of the before/after figure")
    p.add_argument("--curve-pairs", type=int, default=3, help="pairs averaged in the MD curve")
    p.add_argument("--curve-steps", type=int, default=60)
    p.add_argument("--curve-every", type=int, default=5, help="re-detect landmarks every N steps")
    p.add_argument("--example-steps", type=int, default=None,
                   help="step cap of the example drags (default: the engine's, as a user gets it)")
    p.add_argument("--first-seed", type=int, default=2000)
    p.add_argument("--config", default=None, help="JSON dict of DragConfig overrides, e.g. '{\"lr\": 0.01}'")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        # What a user gets on this device: the runtime policy's autocast unless --config says otherwise.
        config = DragConfig(**{"autocast": runtime_for(args.device).autocast,
                               **(json.loads(args.config) if args.config else {})})
    except (ValueError, TypeError) as e:
        print(f"error: --config must be a JSON object of DragConfig fields: {e}", file=sys.stderr)
        return 2
    G = load_model(args.model, args.device)
    command = "python -m bench.figures " + " ".join(argv if argv is not None else sys.argv[1:])
    result = make_figures(G, args.out, args.examples, args.curve_pairs, args.curve_steps, args.curve_every,
                          args.example_steps, args.first_seed, config=config, device=args.device, command=command,
                          log=lambda m: print(m, file=sys.stderr))
    for k, v in result["paths"].items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
