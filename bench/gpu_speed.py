"""Issue 28's GPU figures in one run: step, frame and step + frame at 512 and 1024 px, PTI, a profile.

    python3 -m bench.gpu_speed --out $OUT/gpu_speed.json
    python3 -m bench.gpu_speed --out $OUT/gpu_speed.json --official /path/to/DragGAN   # + the official step
    python3 -m bench.gpu_speed --device cpu --archs tiny64 --steps 2 --warmup 1 --pti-steps 2 --out /tmp/g.json

Only torch is needed (no dlib, no gradio; the PTI loss is LPIPS with a random VGG trunk when the
``lpips`` package is there, the same compute as the real one, else plain L2, and the JSON says which).
For each architecture (random weights: speed does not depend on them; ``ffhq512`` and ``ffhq1024``
are NVIDIA's FFHQ configurations) and each precision (fp32, bf16 autocast) and mode (eager, CUDA
graph), with the ``local`` defaults and feature block 6:

* ``step``: one drag step (``next()`` of the drag iterator, which ends with its host read), 1 and 5 handles;
* ``frame``: one full image of the session's latent (``DragSession.render``: a replayed graph in graph mode);
* ``step+frame``: a step, then the frame of the new latent, as a GPU live view draws them;
* settings: fp32 and bf16 in NCHW, bf16 channels-last, each with cuDNN's heuristics; fp32 (NCHW and
  channels-last) and bf16 channels-last with ``torch.backends.cudnn.benchmark``; at the first arch also the synthesis layers as
  separate ops (``ops.FAST_LAYERS = False``, the code before issue 28) in bf16 and fp32;
* FLOPs of each (``torch.utils.flop_counter.FlopCounterMode`` over an eager call) and the achieved
  fraction of the device's peak (H100/H200: 989 TFLOP/s bf16 dense, 495 TF32 dense, 67 fp32 without
  tensor cores; fp32 convolutions run on TF32 tensor cores where cuDNN allows it, PyTorch's default);
* with ``--official PATH`` (a checkout of XingangPan/DragGAN): its drag iteration (step + frame,
  plain-PyTorch ops, its 4 highest resolutions in fp16 as in NVIDIA's FFHQ checkpoints,
  ``--official-fp16-res``) on the same weights, as ``bench/official_compare.py`` runs it;
* PTI at ``--pti-arch`` (512 px): seconds per photo for ``--pti-steps`` tuning steps (the GPU ``fast``
  preset's 250), fp32 and bf16, graphed as the pipeline runs them;
* a profile (``torch.profiler``) of eager steps and frames at 512 px, top kernels by GPU time, in
  ``<out>.profile.txt``.

Every figure is the median of ``--steps`` calls after ``--warmup`` (CUDA-synchronized). Everything
goes to the JSON file ``--out`` and is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.bench_drag import ARCHS, spread_points
from bench.cpu_speed import print_table
from bench.official_compare import sync, timed
from draggan.engine import DragConfig, DragSession
from draggan.models import ops
from draggan.models.networks import Generator, GeneratorConfig

# Dense peak TFLOP/s (NVIDIA's data sheets, SXM): bf16 / tf32 tensor cores, fp32 without them.
PEAKS = {"H100": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0}}


def median_ms(fn, device, steps: int, warmup: int) -> float:
    timed(fn, warmup, device)
    return statistics.median(timed(fn, steps, device))


def flops_of(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_for(device) -> dict | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def fractions(flops: int, ms: float, precision: str, peak: dict | None) -> dict:
    if not peak or not ms:
        return {}
    achieved = flops / (ms / 1000) / 1e12
    if precision == "bf16":
        return {"tflops": achieved, "of_bf16_peak": achieved / peak["bf16"]}
    return {"tflops": achieved, "of_tf32_peak": achieved / peak["tf32"], "of_fp32_peak": achieved / peak["fp32"]}


def build(arch: str, device) -> Generator:
    torch.manual_seed(0)
    return Generator(GeneratorConfig(**ARCHS[arch])).eval().requires_grad_(False).to(device)


def session(G, device, handles: int, precision: str, graph: bool) -> DragSession:
    config = DragConfig(feature_block=min(6, G.num_blocks), autocast=precision == "bf16", stop_distance=1e-3,
                        max_steps=10 ** 9, cuda_graph=graph if device.type == "cuda" else False)
    s = DragSession(G, G.ws_from_seed(0, 0.7, device=device), config, device=device)
    s.set_points(*spread_points(handles, G.img_resolution))
    return s


# (precision, memory format, synthesis layers, cuDNN benchmark) of the main table, and the ablation run at the first
# arch. With ``torch.backends.cudnn.benchmark`` cuDNN times its algorithms for each new shape once (in the warm-up
# before a graph's capture) instead of picking one by heuristics.
SETTINGS = [("fp32", "nchw", "fast", False), ("bf16", "nchw", "fast", False), ("bf16", "channels_last", "fast", False),
            ("fp32", "nchw", "fast", True), ("fp32", "channels_last", "fast", True),
            ("bf16", "channels_last", "fast", True)]
ABLATION = [("bf16", "nchw", "separate ops", False), ("fp32", "nchw", "separate ops", False)]


@contextlib.contextmanager
def switches(kind: str, cudnn_benchmark: bool = False):
    saved = ops.FAST_LAYERS, torch.backends.cudnn.benchmark
    ops.FAST_LAYERS = kind == "fast"
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        ops.FAST_LAYERS, torch.backends.cudnn.benchmark = saved


def drag_figures(G, device, args, peak, settings) -> list[dict]:
    rows = []
    graphs = [False, True] if device.type == "cuda" else [False]
    variants = {"nchw": G}
    for precision, layout, kind, benchmark in settings:
        if layout not in variants:
            variants[layout] = copy.deepcopy(G).to(memory_format=torch.channels_last)
        for graph in graphs:
            with switches(kind, benchmark):
                rows += measure(variants[layout], device, args, precision, graph,
                                dict(precision=precision, layout=layout, layers=kind, cudnn_benchmark=benchmark,
                                     graph=graph))
    # A graph replays its eager twin's kernels: the same FLOPs.
    counted = {(r["what"], r["handles"], r["precision"]): r["flops"] for r in rows if r.get("flops")}
    for r in rows:
        r["flops"] = r.get("flops") or counted.get((r["what"], r["handles"], r["precision"]))
        if r["flops"]:
            r.update(fractions(r["flops"], r["ms"], r["precision"], peak))
    return rows


def measure(G, device, args, precision, graph, labels) -> list[dict]:
    """step (1 and 5 handles), frame and step + frame of one setting; FLOPs counted on eager calls."""
    rows = []
    for handles in (1, 5):
        s = session(G, device, handles, precision, graph)
        steps = s.drag(image_every=0)
        row = dict(what="step", handles=handles, **labels, ms=median_ms(lambda: next(steps), device, args.steps,
                                                                       args.warmup))
        if not graph:
            row["flops"] = flops_of(lambda: next(steps))
        rows.append(row)
        if handles == 1:
            frame = dict(what="frame", handles=None, **labels, ms=median_ms(s.render, device, args.steps, args.warmup))

            def step_and_frame():
                next(steps)
                s.render_frame(s.frame_state())
            both = dict(what="step+frame", handles=1, **labels,
                        ms=median_ms(step_and_frame, device, args.steps, args.warmup))
            if not graph:
                frame["flops"] = flops_of(s.render)
                both["flops"] = row["flops"] + frame["flops"]
            rows += [frame, both]
        steps.close()
        s = steps = None
        free_memory()   # a session and its graphs hold each other: collect them before the next one
    return rows


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def official_figures(G, device, args, networks) -> list[dict]:
    from bench.official_compare import OfficialDrag, official_generator
    OG = official_generator(networks, G, device, num_fp16_res=args.official_fp16_res)
    rows = []
    for handles in (1, 5):
        run = OfficialDrag(OG, G.ws_from_seed(0, 0.7, device=device), *spread_points(handles, G.img_resolution),
                           block=min(6, G.num_blocks))
        mixed = device.type == "cuda" and args.official_fp16_res > 0
        rows.append(dict(what="official step+frame", handles=handles, graph=False,
                         precision=f"fp32, fp16 in {args.official_fp16_res} blocks" if mixed else "fp32",
                         ms=median_ms(run.step, device, max(3, args.steps // 2), args.warmup)))
    return rows


def pti_figures(device, args) -> dict:
    from inversion.losses import ReconstructionLoss, make_loss
    from inversion.pti import TuningSettings, pivotal_tuning
    G = build(args.pti_arch, device)
    try:
        loss = make_loss("lpips-random", device=device)
    except ImportError:
        loss = ReconstructionLoss("l2", None)
    ws = G.ws_from_seed(1, 0.7, device=device)
    with torch.no_grad():
        target = G.synthesis(G.ws_from_seed(2, 0.7, device=device)).float().clamp(-1, 1)
    out = {"arch": args.pti_arch, "steps": args.pti_steps, "loss": loss.name}
    for amp in ("none", "bf16"):
        settings = TuningSettings(steps=args.pti_steps, lr=3e-3, stop_threshold=None, amp=None if amp == "none" else amp)
        pivotal_tuning(G, ws, target, loss, dataclasses.replace(settings, steps=min(3, args.pti_steps)))  # warm-up
        sync(device)
        t0 = time.perf_counter()
        _, steps_run = pivotal_tuning(G, ws, target, loss, settings)
        sync(device)
        out[f"seconds_{'fp32' if amp == 'none' else amp}"] = time.perf_counter() - t0
        out["steps_run"] = steps_run
    return out


def profile_summary(G, device, args) -> str:
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    text = []
    for precision in ("fp32", "bf16"):
        s = session(G, device, 1, precision, graph=False)
        steps = s.drag(image_every=0)
        for _ in range(args.warmup):
            next(steps)
            s.render()
        for what, fn in (("step", lambda: next(steps)), ("frame", s.render)):
            with profile(activities=activities) as prof:
                for _ in range(5):
                    fn()
                sync(device)
            try:
                table = prof.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=70)
            except Exception:   # older torch names the column cuda_*, newer device_*
                table = prof.key_averages().table(sort_by=sort.replace("cuda", "device"), row_limit=20,
                                                  max_name_column_width=70)
            text.append(f"## {G.img_resolution} px, eager {what}, {precision}, 5 calls\n{table}\n")
        steps.close()
    return "\n".join(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file of all results (a .profile.txt lands beside it)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--archs", default="ffhq512,ffhq1024", help=f"comma-separated, of {', '.join(sorted(ARCHS))}")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--official", default=None, help="checkout of XingangPan/DragGAN: time its drag step too")
    p.add_argument("--official-fp16-res", type=int, default=4,
                   help="fp16 blocks of the official generator (NVIDIA's FFHQ checkpoints: 4; 0: fp32 throughout)")
    p.add_argument("--pti-arch", default="ffhq512")
    p.add_argument("--pti-steps", type=int, default=250, help="0: no PTI figures")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-ablation", action="store_true", help="skip the separate-ops rows at the first arch")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: pass --device cpu for a smoke run")
    peak = peak_for(device)
    started = time.perf_counter()
    result = dict(command="python3 -m bench.gpu_speed " + " ".join(sys.argv[1:] if argv is None else argv),
                  date=str(datetime.datetime.now()), torch=torch.__version__,
                  device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  peak_tflops=peak, archs={})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = result["errors"] = []
    networks = None
    if args.official:   # a wrong path fails now, not after minutes of GPU time
        from bench.official_compare import import_official
        networks = import_official(args.official)

    def attempt(what, fn):
        """One part of the run; its failure is recorded and the rest goes on (a lent GPU's time is dear)."""
        try:
            return fn()
        except Exception as exc:
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
            print(f"# {what} failed: {exc}", file=sys.stderr)
            return None

    for arch in args.archs.split(","):
        G = build(arch, device)
        first = arch == args.archs.split(",")[0]
        settings = SETTINGS + (ABLATION if first and not args.no_ablation else [])
        rows = attempt(f"{arch} drag", lambda: drag_figures(G, device, args, peak, settings)) or []
        if args.official:
            rows += attempt(f"{arch} official", lambda: official_figures(G, device, args, networks)) or []
        result["archs"][arch] = {"resolution": G.img_resolution, "rows": rows}
        if not args.no_profile and first:
            text = attempt(f"{arch} profile", lambda: profile_summary(G, device, args))
            if text:
                out.with_suffix(".profile.txt").write_text(text)
        G = None
        free_memory()
        out.write_text(json.dumps(result, indent=2) + "\n")   # partial results survive a time limit
    if args.pti_steps:
        result["pti"] = attempt("PTI", lambda: pti_figures(device, args))
    result["seconds"] = time.perf_counter() - started
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"# {result['device']}, torch {result['torch']}, {result['date'][:16]}; {result['command']}")
    for arch, data in result["archs"].items():
        print(f"## {arch} ({data['resolution']} px)")
        rows = []
        for r in data["rows"]:
            share = r.get("of_bf16_peak", r.get("of_tf32_peak"))
            rows.append([r["what"], r["handles"] or "", r["precision"], r.get("layout", ""), r.get("layers", ""),
                         "yes" if r.get("cudnn_benchmark") else "no", "yes" if r["graph"] else "no", f"{r['ms']:.2f}",
                         f"{(r.get('flops') or 0) / 1e9:.1f}",
                         f"{r.get('tflops', 0):.2f}", "" if share is None else f"{100 * share:.2f}%"])
        print_table(["what", "handles", "precision", "layout", "layers", "cuDNN benchmark", "CUDA graph", "ms", "GFLOP",
                     "achieved TFLOP/s", "of peak"], rows)
    if result.get("pti"):
        print(f"## PTI: {json.dumps(result['pti'])}")
    for e in errors:
        print(f"# failed: {e}")
    print(f"# {result['seconds']:.0f} s; JSON: {out}")


if __name__ == "__main__":
    main()
