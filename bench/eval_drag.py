"""Drag accuracy on faces: the DragGAN paper's Table 1 protocol (Pan et al., SIGGRAPH 2023, Sec. 4.2).

For each pair of generated faces (seeds, truncation 0.7): find dlib's 68 landmarks
on both, drag face 1's landmarks towards face 2's with 1, 5 or 68 handle points
(subsets in :mod:`bench.landmarks`), re-detect the landmarks on the result and
report the mean distance (MD, pixels of the generator's image) between the dragged
landmarks and their targets; "no edit" is the MD before dragging. Pairs where dlib
misses a face in either sample are skipped (and counted); edits whose result has no
detectable face count as failures (and are left out of the MD). "Detector noise" is
the MD between face 1's landmarks and those found on face 1 with faint pixel noise
added: the floor under any MD dlib can measure at this resolution.

Realism: the Fréchet distance between dlib's 128-D face embeddings of the edited
images and of the unedited first faces (the offline stand-in for FID), next to the
same distance between the two unedited sets (first vs second faces) as a scale.

    .venv/bin/python -m bench.eval_drag --model celeba128 --pairs 100 --out bench/results/drag_accuracy.json
    .venv/bin/python -m bench.eval_drag --model celeba128 --pairs 3 --max-steps 40     # a quick look

Staged (:mod:`bench.staged`): dlib here, the drags on a GPU machine without dlib. The
pairs, their landmarks, handles, targets and latents go into a work folder; the GPU
stage writes the edited images (uint8, in .npz chunks) and per-edit steps, seconds and
final handles; ``score`` re-detects the landmarks and writes the same JSON and table
as the one-shot run, whose timings are the GPU's::

    .venv/bin/python -m bench.eval_drag --stage prepare --work .stage/drag --model celeba128 --pairs 100
    python -m bench.eval_drag --stage edit --work .stage/drag --results $OUT/drag --device cuda   # on the GPU
    .venv/bin/python -m bench.eval_drag --stage score --work .stage/drag --results RESULTS/drag \\
        --out bench/results/drag_accuracy.json

``--shard K/N`` runs every N-th edit (score takes every shard's folder), ``--time-budget``
stops before the machine's time limit and ``--skip-done`` runs what an earlier call left.

The paper's numbers are for a 512 px FFHQ model; pixel distances scale with the
resolution, so they are compared after multiplying by R/512 (:func:`paper_reference`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from draggan.engine import DragConfig, DragSession, to_uint8
from draggan.loaders import load_generator
from draggan.runtime import runtime_for

from . import staged
from .landmarks import HANDLE_SETS, FaceMeasure, handle_points, measure_face

write_json = staged.write_json      # where the other benchmarks import it from

# DragGAN Table 1, 512 x 512 FFHQ, RTX 3090: handles -> (MD after drag, MD with no edit), seconds per edit.
PAPER_RESOLUTION = 512
PAPER_MD = {1: (2.44, 12.93), 5: (3.18, 11.66), 68: (4.73, 16.02)}
PAPER_SECONDS_PER_EDIT = 2.0
DEFAULT_TRUNCATION = 0.7

Detector = Callable[..., "FaceMeasure | None"]  # detector(rgb uint8, embed=bool) -> FaceMeasure | None


# --------------------------------------------------------------------------- metrics


def mean_distance(points: np.ndarray, targets: np.ndarray) -> float:
    """Mean Euclidean distance between corresponding (x, y) rows of two [N, 2] arrays."""
    a, b = np.asarray(points, np.float64), np.asarray(targets, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"need two [N, 2] point arrays of the same shape, got {a.shape} and {b.shape}")
    return float(np.linalg.norm(a - b, axis=1).mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows [n, d] (as FID does).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. With fewer rows than
    dimensions the covariances are rank-deficient: the number is still defined but
    biased upwards, so compare it only with figures of the same sample size.
    """
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two [n >= 2, d] feature sets with the same d, got {a.shape} and {b.shape}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb)
    covmean = np.real(covmean)
    return float(max(mu @ mu + np.trace(sa + sb - 2 * covmean), 0.0))


def paper_reference(resolution: int) -> dict:
    """The paper's Table 1 MDs scaled to ``resolution`` (pixel distances scale with the image side)."""
    s = resolution / PAPER_RESOLUTION
    return {str(k): {"md": round(md * s, 3), "md_no_edit": round(no * s, 3), "md_512": md, "md_no_edit_512": no}
            for k, (md, no) in PAPER_MD.items()}


# --------------------------------------------------------------------------- samples and pairs


@dataclasses.dataclass
class FaceSample:
    """A generated face: seed, its W+ latent [1, L, D] (CPU), the image and what dlib found."""

    seed: int
    ws: torch.Tensor
    image: np.ndarray
    face: FaceMeasure


@dataclasses.dataclass
class FacePair:
    """Face 1 (the one edited) and face 2 (whose landmarks are the targets)."""

    source: FaceSample
    target: FaceSample


@torch.no_grad()
def render_ws(G, ws: torch.Tensor, noise_mode: str = "const") -> np.ndarray:
    device = next(G.parameters()).device
    return to_uint8(G.synthesis(ws.to(device), noise_mode=noise_mode))


def sample_faces(G, count: int, first_seed: int = 0, truncation: float = DEFAULT_TRUNCATION,
                 detector: Detector = measure_face, max_seeds: int | None = None) -> tuple[list[FaceSample], dict]:
    """``count`` generated faces in which the detector finds a face, trying seeds first_seed, first_seed+1, ...

    Returns (faces, stats) with stats = {"seeds_tried", "seeds_without_face"}. Stops
    after ``max_seeds`` seeds (default 4 x count + 10) even if fewer faces were found.
    """
    device = next(G.parameters()).device
    max_seeds = max_seeds if max_seeds is not None else 4 * count + 10
    faces, tried = [], 0
    seed = first_seed
    while len(faces) < count and tried < max_seeds:
        ws = G.ws_from_seed(seed, truncation, device=device)
        image = render_ws(G, ws)
        face = detector(image, embed=True)
        tried += 1
        if face is not None:
            faces.append(FaceSample(seed=seed, ws=ws.detach().cpu(), image=image, face=face))
        seed += 1
    return faces, {"seeds_tried": tried, "seeds_without_face": tried - len(faces)}


def make_pairs(faces: list[FaceSample]) -> list[FacePair]:
    """Consecutive faces pair up: (0 -> 1), (2 -> 3), ..."""
    return [FacePair(faces[i], faces[i + 1]) for i in range(0, len(faces) - 1, 2)]


def sample_pairs(G, num_pairs: int, first_seed: int = 0, truncation: float = DEFAULT_TRUNCATION,
                 detector: Detector = measure_face) -> tuple[list[FacePair], dict]:
    faces, stats = sample_faces(G, 2 * num_pairs, first_seed, truncation, detector)
    return make_pairs(faces), stats


def clip_points(points: np.ndarray, resolution: int) -> np.ndarray:
    """Landmarks may fall just outside the image (jaw line); the engine needs points inside it."""
    return np.clip(np.asarray(points, np.float64), 0, resolution - 1)


def pair_points(pair: FacePair, num_handles: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(handles, targets) [n, 2] for a pair: face 1's landmark subset -> face 2's."""
    return (clip_points(handle_points(pair.source.face.landmarks, num_handles), resolution),
            clip_points(handle_points(pair.target.face.landmarks, num_handles), resolution))


# --------------------------------------------------------------------------- one edit


@dataclasses.dataclass
class DragRun:
    """The outcome of one drag.

    image          : HxWx3 uint8 result.
    steps          : optimization steps taken.
    done           : every handle reached the stop distance before max_steps.
    seconds_drag   : wall time of the optimization loop.
    seconds_render : wall time of rendering the final image (the rest of a finished edit).
    tracked        : [(step, mean tracked handle-target distance)] after every step.
    frames         : [(step, image, handles)] every ``image_every`` steps (empty when 0).
    final_handles  : [N, 2] the handles where the engine's tracking left them.
    """

    image: np.ndarray
    steps: int
    done: bool
    seconds_drag: float
    seconds_render: float
    tracked: list
    frames: list
    final_handles: np.ndarray

    @property
    def seconds(self) -> float:
        return self.seconds_drag + self.seconds_render


def run_drag(G, ws: torch.Tensor, handles, targets, config: DragConfig, max_steps: int | None = None,
             image_every: int = 0) -> DragRun:
    """Drag ``handles`` to ``targets`` from latent ``ws`` with the engine; time it."""
    device = next(G.parameters()).device
    session = DragSession(G, ws.to(device), config)
    session.set_points(np.asarray(handles).tolist(), np.asarray(targets).tolist())
    tracked, frames = [(0, float(np.mean(session.distances)))], []
    if image_every:
        frames.append((0, session.render(), session.handles))
    steps, done, final_handles = 0, False, session.handles
    _sync(device)
    t0 = time.perf_counter()
    for state in session.drag(max_steps=max_steps, image_every=image_every):
        steps, done, final_handles = state.step, state.done, state.handles
        tracked.append((state.step, float(state.distances.mean())))
        if state.image is not None:
            frames.append((state.step, state.image, state.handles))
    _sync(device)
    t1 = time.perf_counter()
    image = session.render()
    t2 = time.perf_counter()
    return DragRun(image=image, steps=steps, done=done, seconds_drag=t1 - t0, seconds_render=t2 - t1,
                   tracked=tracked, frames=frames, final_handles=final_handles)


def run_task(G, task: "DragTask", config: DragConfig, max_steps: int | None = None, image_every: int = 0) -> DragRun:
    return run_drag(G, task.face.ws, task.handles, task.targets, config, max_steps, image_every)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class DragTask:
    """One edit to measure: drag ``handles`` on ``face`` to ``targets``.

    ``landmarks`` names the points of the re-detected face that are compared with the
    targets: a handle count (1, 5 or 68, the protocol's subsets) or a list of landmark
    indices (a named edit, see :data:`EDITS`).
    """

    face: FaceSample
    handles: np.ndarray
    targets: np.ndarray
    landmarks: int | list
    name: str = ""
    seed_target: int | None = None

    def select(self, landmarks68: np.ndarray) -> np.ndarray:
        if isinstance(self.landmarks, int):
            return handle_points(landmarks68, self.landmarks)
        return np.asarray(landmarks68, np.float64)[self.landmarks]


# The named edits a user makes: (name, dlib landmark indices, offsets in pixels at 128 px), 4-6 px each.
# Protocol pairs of aligned faces are only 1-3 px apart at 128 px, the same order as the
# detector's noise; these are well above it.
EDITS = [
    ("smile", [48, 54], [(-2, -4), (2, -4)]),          # mouth corners up and out
    ("chin down", [8], [(0, 5)]),
    ("nose right", [30], [(5, 0)]),
    ("brows up", [19, 24], [(0, -5), (0, -5)]),         # the middle of each brow
]
# Locality is measured on the pixels farther than this (a fraction of the image side) from
# every handle and target: what a user expects a small drag to leave alone.
LOCALITY_RADIUS = 40 / 128


def pair_task(pair: FacePair, num_handles: int, resolution: int) -> DragTask:
    """The Table 1 task: face 1's landmark subset -> face 2's."""
    handles, targets = pair_points(pair, num_handles, resolution)
    return DragTask(pair.source, handles, targets, num_handles, f"{num_handles} handles", pair.target.seed)


def edit_task(face: FaceSample, edit: tuple, resolution: int) -> DragTask:
    """A named edit of :data:`EDITS` on ``face``: its landmarks moved by the offsets (given at 128 px, scaled to R)."""
    name, indices, offsets = edit
    handles = np.asarray(face.face.landmarks, np.float64)[indices]
    targets = handles + np.asarray(offsets, np.float64) * resolution / 128
    return DragTask(face, clip_points(handles, resolution), clip_points(targets, resolution), list(indices), name)


def far_pixels(resolution: int, points, radius: float = LOCALITY_RADIUS) -> np.ndarray:
    """[R, R] bool: pixels farther than ``radius`` (a fraction of the side) from every point."""
    yy, xx = np.mgrid[0:resolution, 0:resolution]
    far = np.ones((resolution, resolution), bool)
    r2 = (radius * resolution) ** 2
    for x, y in np.asarray(points, np.float64).reshape(-1, 2):
        far &= (xx - x) ** 2 + (yy - y) ** 2 > r2
    return far


def locality(before: np.ndarray, after: np.ndarray, points, radius: float = LOCALITY_RADIUS) -> dict:
    """What changed far from the edit: PSNR (dB; None when identical) and mean absolute change (grey levels)
    over the pixels farther than ``radius`` of the side from every point, and how many there are."""
    far = far_pixels(before.shape[0], points, radius)
    diff = before.astype(np.float64)[far] - after.astype(np.float64)[far]
    if diff.size == 0:
        return {"far_psnr": None, "far_mae": None, "far_pixels": 0}
    mse = float((diff ** 2).mean())
    return {"far_psnr": None if mse == 0 else round(10 * np.log10(255.0 ** 2 / mse), 3),
            "far_mae": round(float(np.abs(diff).mean()), 4), "far_pixels": int(far.sum())}


def measure(task: DragTask, run: DragRun, detector: Detector = measure_face) -> dict:
    """Re-detect landmarks on the result; one row of a results table (with identity and locality)."""
    face = detector(run.image, embed=True)
    md = None if face is None else mean_distance(task.select(face.landmarks), task.targets)
    source_embedding = task.face.face.embedding
    return {"task": task.name, "handles": len(task.handles), "seed_source": task.face.seed,
            "seed_target": task.seed_target, "md": md, "md_no_edit": mean_distance(task.handles, task.targets),
            "face_found": face is not None, "steps": run.steps, "done": run.done, "seconds": run.seconds,
            "seconds_drag": run.seconds_drag, "ms_per_step": 1000 * run.seconds_drag / max(run.steps, 1),
            "identity_to_source": None if face is None or face.embedding is None or source_embedding is None else
            float(np.linalg.norm(face.embedding - source_embedding)),
            **(locality(task.face.image, run.image, np.concatenate([task.handles, task.targets]))
               if task.face.image is not None else {"far_psnr": None, "far_mae": None, "far_pixels": 0}),
            "_embedding": None if face is None else face.embedding}


def evaluate_edit(pair: FacePair, run: DragRun, num_handles: int, resolution: int,
                  detector: Detector = measure_face) -> dict:
    """:func:`measure` for a protocol pair dragged with ``num_handles`` handles."""
    return measure(pair_task(pair, num_handles, resolution), run, detector)



# --------------------------------------------------------------------------- staged runs: work, edits, outcomes

WARMUP_STEPS = 5  # untimed steps per configuration before the timed edits (first kernels, graph capture)
Outcome = tuple  # (work item, record, HxWx3 uint8 image): what the edit stage produces per item


def face_record(face: FaceSample) -> dict:
    """What a work folder keeps of a face: seed and dlib's measurements (the latent goes to latents.npz)."""
    emb = face.face.embedding
    return {"seed": int(face.seed), "landmarks": np.asarray(face.face.landmarks, np.float64).tolist(),
            "score": float(face.face.score), "embedding": None if emb is None else np.asarray(emb).tolist()}


def task_record(task: DragTask) -> dict:
    landmarks = task.landmarks if isinstance(task.landmarks, int) else [int(i) for i in task.landmarks]
    return {"face": int(task.face.seed), "handles": np.asarray(task.handles, np.float64).tolist(),
            "targets": np.asarray(task.targets, np.float64).tolist(), "landmarks": landmarks, "name": task.name,
            "seed_target": None if task.seed_target is None else int(task.seed_target)}


def drag_work(benchmark: str, G, tasks: list[DragTask], configs: list[DragConfig], items: list[tuple[int, int]],
              max_steps: int | None, model: str, command: str, extra: dict, faces: Iterable[FaceSample] = ()) -> \
        staged.Work:
    """A work folder's content for drag benchmarks: faces, tasks, configurations and the (task, config) items."""
    by_seed = {f.seed: f for f in list(faces) + [t.face for t in tasks]}
    R = int(G.img_resolution)
    data = {"benchmark": benchmark, "command": command, "env": environment(str(next(G.parameters()).device)),
            "model": model, "model_fingerprint": staged.model_fingerprint(G), "resolution": R,
            "num_ws": int(G.num_ws), "image_bytes": R * R * 3, "max_steps": max_steps,
            "faces": [face_record(f) for f in by_seed.values()], "tasks": [task_record(t) for t in tasks],
            "configs": [dataclasses.asdict(c) for c in configs],
            "items": [{"id": f"t{t:04d}c{c:02d}", "task": t, "config": c} for t, c in items], **extra}
    edited = {t.face.seed for t in tasks}  # only the faces that are dragged need their latent and image
    arrays = {f"ws_{seed}": f.ws.detach().float().cpu().numpy() for seed, f in by_seed.items() if seed in edited}
    # The unedited image, for the locality measure when the score stage reads the results back.
    arrays |= {f"image_{seed}": np.asarray(f.image, np.uint8) for seed, f in by_seed.items()
               if seed in edited and f.image is not None}
    return staged.Work(data=data, arrays=arrays)


def work_faces(work: staged.Work) -> dict[int, FaceSample]:
    """Faces by seed, as prepare measured them, with their latent and unedited image where the work keeps them."""
    out = {}
    for f in work.data["faces"]:
        emb = None if f["embedding"] is None else np.asarray(f["embedding"], np.float64)
        ws = work.arrays.get(f"ws_{f['seed']}")
        measured = FaceMeasure(np.asarray(f["landmarks"], np.float64), f["score"], emb)
        image = work.arrays.get(f"image_{f['seed']}")
        out[f["seed"]] = FaceSample(seed=f["seed"], ws=None if ws is None else torch.from_numpy(np.asarray(ws)),
                                    image=None if image is None else np.asarray(image, np.uint8), face=measured)
    return out


def work_tasks(work: staged.Work, faces: dict[int, FaceSample] | None = None) -> list[DragTask]:
    faces = faces if faces is not None else work_faces(work)
    return [DragTask(face=faces[t["face"]], handles=np.asarray(t["handles"], np.float64),
                     targets=np.asarray(t["targets"], np.float64), landmarks=t["landmarks"], name=t["name"],
                     seed_target=t["seed_target"]) for t in work.data["tasks"]]


def run_record(run: DragRun, loadavg: float) -> dict:
    """A drag as the results folder keeps it (its image goes to an image chunk)."""
    return {"steps": int(run.steps), "done": bool(run.done), "seconds_drag": run.seconds_drag,
            "seconds_render": run.seconds_render, "final_handles": np.asarray(run.final_handles).tolist(),
            "tracked": [[int(s), round(float(d), 4)] for s, d in run.tracked], "loadavg_1min": round(loadavg, 2)}


def run_from_record(record: dict, image: np.ndarray) -> DragRun:
    return DragRun(image=np.asarray(image), steps=record["steps"], done=record["done"],
                   seconds_drag=record["seconds_drag"], seconds_render=record["seconds_render"],
                   tracked=[tuple(t) for t in record["tracked"]], frames=[],
                   final_handles=np.asarray(record["final_handles"], np.float64))


def drag_items(G, work: staged.Work, items: list[dict], warmup_steps: int = WARMUP_STEPS, log=None) -> \
        Iterator[Outcome]:
    """The edit stage: drag each item's task with its configuration; yields (item, record, image).

    Before the first timed edit of each configuration, a few untimed steps on the same
    task take the one-off costs (first kernels, cuBLAS/cuDNN set-up) out of the timings.
    Needs no dlib: everything measured comes from the work.
    """
    tasks = work_tasks(work)
    configs = [DragConfig(**c) for c in work.data["configs"]]
    max_steps = work.data["max_steps"]
    warmed = set()
    for i, item in enumerate(items):
        task, config = tasks[item["task"]], configs[item["config"]]
        cap = config.max_steps if max_steps is None else max_steps
        if warmup_steps and cap and item["config"] not in warmed:
            run_task(G, task, config, min(warmup_steps, cap))
            warmed.add(item["config"])
        load = os.getloadavg()[0]
        run = run_task(G, task, config, max_steps)
        if log:
            log(f"[{item['id']}] {task.name}: {run.steps} steps, {run.seconds:.2f} s ({i + 1}/{len(items)})")
        yield item, dict(run_record(run, load), id=item["id"]), run.image


def gpu_env(device) -> dict:
    """:func:`environment` plus what a GPU timing needs to be read (CUDA version, GPU count)."""
    env = environment(str(device))
    env.update(python=platform.python_version(), cuda=torch.version.cuda,
               gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0)
    return env


def drag_stage(G, work: staged.Work, args, command: str, log=None) -> dict:
    """``--stage edit`` for the drag benchmarks: the shard's items into ``--results``."""
    staged.check_model(work, G)
    skip = staged.done_ids(args.skip_done) if args.skip_done else set()
    device = next(G.parameters()).device
    return staged.gpu_stage(
        work, lambda items: drag_items(G, work, items, args.warmup_steps, log), args.results[0], gpu_env(device),
        command, staged.parse_shard(args.shard), skip, args.time_budget, **staged.transfer_limits(args),
        extra_meta={"configs": work.data["configs"], "max_steps": work.data["max_steps"],
                    "warmup_steps": args.warmup_steps}, log=log)


# --------------------------------------------------------------------------- the protocol


def summarize(rows: list[dict]) -> dict:
    """Mean/median/std of MD over edits with a detected face; no-edit MD over all; time and steps."""
    md = np.array([r["md"] for r in rows if r["md"] is not None], np.float64)
    no_edit = np.array([r["md_no_edit"] for r in rows], np.float64)
    found = [r for r in rows if r["md"] is not None]

    def stat(vals):
        vals = np.asarray(vals, np.float64)
        return None if vals.size == 0 else round(float(vals.mean()), 4)

    return {
        "edits": len(rows), "faces_found": len(found),
        "md_mean": stat(md), "md_median": None if md.size == 0 else round(float(np.median(md)), 4),
        "md_std": None if md.size == 0 else round(float(md.std()), 4),
        "md_no_edit_mean": stat(no_edit),
        # The same edits' no-edit MD, for a like-for-like ratio when some results lost their face.
        "md_no_edit_mean_found": stat([r["md_no_edit"] for r in found]),
        "seconds_per_edit": stat([r["seconds"] for r in rows]),
        "ms_per_step": stat([r["ms_per_step"] for r in rows]),
        "steps_mean": stat([r["steps"] for r in rows]),
        "done_rate": stat([float(r["done"]) for r in rows]),
        "identity_to_source_mean": stat([r["identity_to_source"] for r in rows if r["identity_to_source"] is not None]),
        **locality_summary(rows),
    }


def locality_summary(rows: list[dict]) -> dict:
    """Median far-pixel PSNR (an identical far region counts as +inf; None if there are no rows),
    mean absolute change, and the share of edits that left the far region identical."""
    rows = [r for r in rows if r.get("far_pixels")]
    if not rows:
        return {"far_psnr_median": None, "far_mae_mean": None, "far_identical_rate": None}
    psnr = [np.inf if r["far_psnr"] is None else r["far_psnr"] for r in rows]
    median = float(np.median(psnr))
    return {"far_psnr_median": None if not np.isfinite(median) else round(median, 2),
            "far_identical_rate": round(float(np.mean([r["far_psnr"] is None for r in rows])), 4),
            "far_mae_mean": round(float(np.mean([r["far_mae"] for r in rows])), 4)}


def fmt_psnr(summary: dict) -> str:
    """The median far-pixel PSNR for a table: 'identical' when most edits left the far region untouched."""
    if summary.get("far_identical_rate") is None:
        return "–"
    if summary["far_psnr_median"] is None:
        return "identical"
    return f"{summary['far_psnr_median']:.1f}"


def prepare_protocol(G, num_pairs: int, handle_counts: Iterable[int] = (1, 5, 68), config: DragConfig | None = None,
                     max_steps: int | None = None, first_seed: int = 0, truncation: float = DEFAULT_TRUNCATION,
                     model: str = "?", command: str = "", detector: Detector = measure_face, log=None) -> staged.Work:
    """The prepare stage: sample pairs, measure them (dlib), and every (pair, handle count) as an item."""
    config = config or DragConfig()
    R = int(G.img_resolution)
    handle_counts = [int(n) for n in handle_counts]
    pairs, stats = sample_pairs(G, num_pairs, first_seed, truncation, detector)
    if log:
        log(f"{len(pairs)} pairs ({stats['seeds_without_face']} of {stats['seeds_tried']} seeds had no face)")
    floors = detector_noise(pairs, handle_counts, detector)
    tasks = [pair_task(pair, n, R) for n in handle_counts for pair in pairs]
    extra = {"pairs_requested": num_pairs, "handle_counts": handle_counts, "first_seed": first_seed,
             "truncation": truncation, "sampling": stats,
             "pairs": [[int(p.source.seed), int(p.target.seed)] for p in pairs],
             "detector_noise": {str(n): [float(v) for v in floors[n]] for n in handle_counts}}
    faces = [f for p in pairs for f in (p.source, p.target)]
    return drag_work("eval_drag", G, tasks, [config], [(t, 0) for t in range(len(tasks))], max_steps, model,
                     command, extra, faces)


def score_protocol(work: staged.Work, outcomes: Iterable[Outcome], detector: Detector = measure_face,
                   log=None) -> dict:
    """The score stage: re-detect landmarks on every edited image; {"settings": {n: summary}, "realism", "rows"}.

    ``outcomes`` are (item, record, image) from the edit stage, in memory (one-shot run)
    or read back from results folders (:func:`bench.staged.stored_outcomes`).
    """
    faces = work_faces(work)
    tasks = work_tasks(work, faces)
    counts = work.data["handle_counts"]
    by_count: dict[int, list] = {n: [] for n in counts}
    loads: dict[int, list] = {n: [] for n in counts}
    for item, record, image in outcomes:
        task = tasks[item["task"]]
        row = measure(task, run_from_record(record, image), detector)
        by_count[task.landmarks].append(row)
        loads[task.landmarks].append(record.get("loadavg_1min"))
        if log:
            log(f"[{task.landmarks} pts] {item['id']}: MD {_fmt(row['md'])} (no edit {row['md_no_edit']:.2f}) "
                f"in {row['steps']} steps, {row['seconds']:.1f} s")
    source_emb = [faces[s].face.embedding for s, _ in work.data["pairs"] if faces[s].face.embedding is not None]
    target_emb = [faces[t].face.embedding for _, t in work.data["pairs"] if faces[t].face.embedding is not None]
    rows, settings, realism = [], {}, {}
    for n in counts:
        summary = summarize(by_count[n])
        summary["loadavg_1min"] = [loads[n][0], loads[n][-1]] if loads[n] else None
        floors = work.data["detector_noise"][str(n)]
        summary["md_detector_noise"] = None if not floors else round(float(np.mean(floors)), 4)
        edited_emb = [r["_embedding"] for r in by_count[n] if r["_embedding"] is not None]
        realism[str(n)] = _realism(edited_emb, source_emb)
        settings[str(n)] = summary
        rows += by_count[n]
    if len(source_emb) >= 2 and len(target_emb) >= 2:
        realism["unedited_source_vs_target"] = {"fd": round(frechet_distance(source_emb, target_emb), 5),
                                                "n": min(len(source_emb), len(target_emb))}
    for r in rows:
        r.pop("_embedding")
    return {"settings": settings, "realism": realism, "rows": rows}


def protocol_meta(work: staged.Work, env: dict, command: str, wall_seconds: float) -> dict:
    d = work.data
    config = DragConfig(**d["configs"][0])
    return {"command": command, "model": d["model"], "resolution": d["resolution"], "pairs": len(d["pairs"]),
            "truncation": d["truncation"], "first_seed": d["first_seed"], "sampling": d["sampling"],
            "max_steps": d["max_steps"] if d["max_steps"] is not None else config.max_steps,
            "config": d["configs"][0], "handle_sets": {str(k): HANDLE_SETS[k] for k in d["handle_counts"]},
            "paper_scaled": paper_reference(d["resolution"]), "env": env, "wall_seconds": round(wall_seconds, 1)}


def detector_noise(pairs: list[FacePair], handle_counts, detector: Detector = measure_face,
                   sigma: float = 3.0) -> dict:
    """Per handle count, the MD between face 1's landmarks and those found on face 1 with faint pixel noise
    added (Gaussian, ``sigma`` grey levels of 255): same face, same geometry.

    That is how far apart dlib puts the same face twice, the floor under any MD it can
    measure at this resolution. (Re-rendering with fresh StyleGAN noise would not do: an
    undertrained generator draws eyes and mouths partly from its noise inputs.)
    """
    floors = {n: [] for n in handle_counts}
    for pair in pairs:
        rng = np.random.default_rng(pair.source.seed)
        noisy = np.clip(pair.source.image + rng.normal(0, sigma, pair.source.image.shape), 0, 255)
        face = detector(noisy.round().astype(np.uint8))
        if face is None:
            continue
        for n in handle_counts:
            again, before = handle_points(face.landmarks, n), handle_points(pair.source.face.landmarks, n)
            floors[n].append(mean_distance(again, before))
    return floors


def _realism(edited: list, unedited: list) -> dict:
    if len(edited) < 2 or len(unedited) < 2:
        return {"fd": None, "n": len(edited)}
    return {"fd": round(frechet_distance(np.stack(edited), np.stack(unedited)), 5), "n": len(edited)}


def _fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


# --------------------------------------------------------------------------- reporting


def environment(device: str) -> dict:
    """Where and when a figure was taken (device name, threads, load, date)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
               f"{torch.get_num_threads()} torch threads)"
    return {"device": name, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__, "loadavg": [round(v, 2) for v in os.getloadavg()]}


def markdown_table(result: dict) -> str:
    """Table 1 style: ours next to the paper's (scaled to our resolution)."""
    meta, R = result["meta"], result["meta"]["resolution"]
    ref = paper_reference(R)
    lines = [f"`{meta['command']}` — {meta['env']['device']}, {meta['env']['date']}, model {meta['model']} "
             f"({R} px), {meta['pairs']} pairs, truncation {meta['truncation']}, max {meta['max_steps']} steps, "
             f"load avg {meta['env']['loadavg'][0]}",
             "",
             "| handles | MD after drag (px) | MD no edit (px) | paper MD x R/512 | paper no edit x R/512 "
             "| detector noise (px) | identity dist. | far PSNR (dB, median) | far change (levels) "
             "| face re-detected | steps (mean) | reached stop dist. | s / edit | ms / step "
             "| FD(edited, unedited) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, s in result["settings"].items():
        p = ref.get(n, {})
        fd = result["realism"].get(n, {}).get("fd")
        lines.append(f"| {n} | {_fmt(s['md_mean'])} (median {_fmt(s['md_median'])}) | {_fmt(s['md_no_edit_mean'])} | "
                     f"{_fmt(p.get('md'))} | {_fmt(p.get('md_no_edit'))} | {_fmt(s.get('md_detector_noise'))} | "
                     f"{_fmt(s.get('identity_to_source_mean'), 3)} | {fmt_psnr(s)} | {_fmt(s.get('far_mae_mean'))} | "
                     f"{s['faces_found']}/{s['edits']} | "
                     f"{_fmt(s['steps_mean'], 1)} | {_fmt(s['done_rate'])} | {_fmt(s['seconds_per_edit'], 1)} | "
                     f"{_fmt(s['ms_per_step'], 0)} | {_fmt(fd, 3)} |")
    base = result["realism"].get("unedited_source_vs_target")
    if base:
        lines.append("")
        lines.append(f"FD scale: two disjoint unedited sample sets of the same size (n={base['n']}) are "
                     f"{base['fd']:.3f} apart. Paper (512 px, RTX 3090): {PAPER_SECONDS_PER_EDIT} s per edit.")
    missing = result["meta"].get("missing_items")
    if missing:
        lines += ["", f"**{len(missing)} edits had no result** (scored with --allow-missing)."]
    return "\n".join(lines)


def load_model(name: str, device: str):
    """The generator as the app and the CLI run it on ``device`` (runtime policy: memory layout)."""
    return runtime_for(device).prepare(load_generator(name, device=device, progress=False))


def add_drag_stage_arguments(p: argparse.ArgumentParser) -> None:
    """Stage options of the drag benchmarks (eval_drag, ablate)."""
    staged.add_arguments(p, "edit")
    p.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS,
                   help="edit: untimed drag steps per configuration before the timed edits (0: none)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.eval_drag", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="celeba128", help="registry name or generator folder")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--pairs", type=int, default=100, help="face pairs per setting (the paper: >= 100)")
    p.add_argument("--handles", default="1,5,68", help="comma list of handle counts (1, 5, 68)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=DEFAULT_TRUNCATION)
    p.add_argument("--max-steps", type=int, default=None, help="step cap per edit (default: DragConfig's)")
    p.add_argument("--config", default=None, help="JSON dict of DragConfig overrides, e.g. '{\"feature_block\": 5}'")
    add_drag_stage_arguments(p)
    return p


def main(argv=None) -> int:
    parsed = staged.parse(build_parser(), argv)
    if parsed is None:
        return 2
    args, device = parsed
    try:
        counts = [int(v) for v in args.handles.split(",") if v.strip()]
        bad = [c for c in counts if c not in HANDLE_SETS]
        if bad or not counts:
            raise ValueError
    except ValueError:
        print(f"error: --handles must list handle counts among {sorted(HANDLE_SETS)}, got {args.handles!r}",
              file=sys.stderr)
        return 2
    try:
        overrides = json.loads(args.config) if args.config else {}
        # The settings a user gets on this device: the runtime policy's autocast unless --config says otherwise.
        config = DragConfig(**{"autocast": runtime_for(device).autocast, **overrides})
    except (ValueError, TypeError) as e:
        print(f"error: --config must be a JSON object of DragConfig fields: {e}", file=sys.stderr)
        return 2
    command = staged.command_line("bench.eval_drag", argv)
    log = staged.log

    def gpu(work):
        drag_stage(load_model(work.data["model"], device), work, args, command, log)

    return staged.run_stages(staged.Stages(
        name="eval_drag",
        run_all=lambda: evaluate(load_model(args.model, device), args.pairs, counts, config, args.max_steps,
                                 args.first_seed, args.truncation, model=args.model, device=device,
                                 command=command, log=log),
        prepare=lambda: prepare_protocol(load_model(args.model, device), args.pairs, counts, config, args.max_steps,
                                         args.first_seed, args.truncation, model=args.model, command=command,
                                         log=log),
        describe=lambda work: f"{len(work.items)} edits",
        gpu=gpu,
        score=lambda work, results: score_staged(work, results, command, log=log),
        table=markdown_table), args)


def evaluate(G, num_pairs: int, handle_counts, config: DragConfig, max_steps: int | None, first_seed: int = 0,
             truncation: float = DEFAULT_TRUNCATION, model: str = "?", device: str = "cpu", command: str = "",
             detector: Detector = measure_face, log=None, warmup_steps: int = WARMUP_STEPS) -> dict:
    """One process, the three stages chained: sample and measure pairs, drag them, re-detect; with metadata."""
    t0 = time.perf_counter()
    work = prepare_protocol(G, num_pairs, handle_counts, config, max_steps, first_seed, truncation, model, command,
                            detector, log)
    out = score_protocol(work, drag_items(G, work, work.items, warmup_steps), detector, log)
    out["meta"] = protocol_meta(work, environment(device), command, time.perf_counter() - t0)
    return out


def score_staged(work: staged.Work, results: staged.ResultSet, command: str, detector: Detector = measure_face,
                 log=None) -> dict:
    """The score stage's result: the one-shot result's layout, timings and device from the GPU stage."""
    out = score_protocol(work, staged.stored_outcomes(work, results), detector, log)
    out["meta"] = staged.staged_meta(work, results, command, protocol_meta)
    return out


write_json = staged.write_json


if __name__ == "__main__":
    sys.exit(main())
