"""Our drag step (plus the frame a live view shows) beside the official DragGAN code's, in one run.

    .venv/bin/python -m bench.official_compare --official PATH --model celeba128 --block 6
    .venv/bin/python -m bench.official_compare --official PATH --model celeba128-lite --handles 1,5 --rounds 6
    .venv/bin/python -m bench.official_compare --official PATH --arch ffhq512 --device cuda --block 6

``PATH`` is a checkout of XingangPan/DragGAN (it needs ``training/networks_stylegan2.py``,
``torch_utils/`` and ``dnnlib/``). Nothing of it is part of this project: it is imported from
``PATH`` at run time (keep it outside the tracked tree, e.g. ``.stage/official/``, which git
ignores). Where GitHub cannot be reached, the ``draggan`` 1.1.6 wheel on PyPI carries the same
network file (as ``stylegan2/training/networks.py``) with stylegan2-ada-pytorch's ``torch_utils``
and ``dnnlib``, whose plain-PyTorch paths are the official ones; BENCHMARKS.md's figures used it:

    pip download draggan==1.1.6 --no-deps -d .stage/pkg && cd .stage/pkg && python -m zipfile -e draggan-1.1.6-py3-none-any.whl .
    S=draggan/stylegan2; mkdir -p ../official/training && cp -r $S/dnnlib $S/torch_utils ../official/
    cp $S/training/__init__.py ../official/training/ && cp $S/training/networks.py ../official/training/networks_stylegan2.py
 Its custom CUDA plugins are switched off, so it runs its plain-PyTorch reference ops,
as the issue's comparison did.

Both sides run the same weights: the official ``Generator`` is built from the same architecture
and gets our generator's state dict (names follow NVIDIA's layout), which is what the official
renderer does with the networks it unpickles (``Generator(**init_kwargs)`` then
``load_state_dict``); no pickle is loaded, so no foreign code is unpickled. The images of the
two are compared once, as a check that the weights arrived.

The official side is one call of its renderer's drag iteration (``viz/renderer.py``,
``_render_drag_impl`` with ``is_drag=True``), re-implemented here step for step from that file:
a full forward with the features of every block (which also draws the frame), the feature map
of ``--block`` resized to the image, nearest-neighbour tracking in a ``r2`` window point by
point (a host read per point), motion supervision point by point, ``backward()`` and Adam on the
W+ latent, then the frame to uint8 on the host. Its generator is built as the renderer builds it:
a fresh module (training mode, parameters requiring gradients, so ``backward`` also computes the
weight gradients of every layer it passes), fused modulated convolutions, fp32.

Our side is what a live view does per streamed frame with the defaults (the ``local`` preset,
``draggan.runtime`` settings: bf16 where the runtime picks it, channels-last on CPUs): one
``DragSession`` step with partial frames, then :func:`draggan.engine.finish_frame` to uint8.
``--precision`` adds fp32 beside it. The variants are interleaved: every round runs each of them
for ``--steps`` steps in turn, on the same torch thread count; the table gives the median ms per
step (+ frame) over all rounds, its spread (min-max of the round medians) and the ratio
official / ours. The load average is printed: the CPU machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.bench_drag import ARCHS
from bench.cpu_speed import app_points, print_table
from draggan.engine import DragConfig, DragSession, default_feature_block, finish_frame
from draggan.models.networks import Generator, GeneratorConfig
from draggan.runtime import runtime_for

# --------------------------------------------------------------------------- the official code


def import_official(path) -> object:
    """The official ``training/networks_stylegan2.py`` module, imported from ``path`` with its plugins off.

    ``torch_utils`` and ``dnnlib`` are found through ``sys.path`` (the official module imports them by
    those names); ``training`` is not, since this project has a package of that name: the module is
    loaded from its file under a private name.
    """
    path = Path(path).resolve()
    source = path / "training" / "networks_stylegan2.py"
    if not source.is_file():
        raise SystemExit(f"{path}: no training/networks_stylegan2.py (expected a checkout of XingangPan/DragGAN)")
    sys.path.insert(0, str(path))
    try:
        import requests  # noqa: F401  (their dnnlib.util imports it for downloads, which this never does)
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")
    # The plain-PyTorch reference ops everywhere: their CUDA plugins would need a compiler and are
    # not what the comparison is about.
    for name in ("bias_act", "upfirdn2d", "filtered_lrelu"):
        with contextlib.suppress(ImportError):
            module = __import__(f"torch_utils.ops.{name}", fromlist=["_init"])
            module._init = lambda: False
    spec = importlib.util.spec_from_file_location("official_networks_stylegan2", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # their persistence decorator looks the module up there
    spec.loader.exec_module(module)
    return module


def official_generator(networks, G: Generator, device, num_fp16_res: int | None = None) -> torch.nn.Module:
    """The official Generator with ``G``'s architecture and weights, built the way its renderer builds one.

    ``num_fp16_res``: its fp16 blocks (on CUDA only; NVIDIA's FFHQ checkpoints have 4), else ``G``'s setting.
    """
    cfg = G.cfg
    fp16_res = cfg.num_fp16_res if num_fp16_res is None else num_fp16_res
    og = networks.Generator(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                            img_channels=cfg.img_channels, mapping_kwargs=dict(num_layers=cfg.mapping_layers),
                            channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                            num_fp16_res=fp16_res, conv_clamp=cfg.conv_clamp)
    state = {k: v.detach().float().contiguous() for k, v in G.state_dict().items()}
    missing, unexpected = og.load_state_dict(state, strict=False)
    # Ours keeps one FIR filter per block (and per up-sampling conv); theirs has one in every layer,
    # initialized to the same [1, 3, 3, 1] filter.
    if unexpected or any(not k.endswith("resample_filter") for k in missing):
        raise SystemExit(f"the weights do not map onto the official generator: missing {missing}, unexpected {unexpected}")
    return og.to(device)   # no eval(), no requires_grad_(False): as the renderer leaves it


class OfficialDrag:
    """The official renderer's drag iteration (``viz/renderer.py``), one call per step.

    Points are (x, y) image pixels here; the renderer keeps them as [row, column], and so does
    this class inside. Defaults are the renderer's: r1 = 3, r2 = 12 (scaled by R/512 and rounded),
    lr 0.001, W+ with the first 6 layers optimized, constant noise, no mask, ``reg`` = 0.
    """

    def __init__(self, G, ws: torch.Tensor, handles, targets, block: int, lr=0.001, r1=3.0, r2=12.0):
        self.G, self.device = G, ws.device
        self.feature_idx = block - 1
        self.w0 = ws.detach().clone()
        self.w = ws.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.w], lr=lr)
        self.points = [[float(y), float(x)] for x, y in handles]
        self.targets = [[float(y), float(x)] for x, y in targets]
        self.r1, self.r2 = r1, r2
        self.feat_refs = None
        self.label = torch.zeros([1, G.c_dim], device=self.device)

    def step(self) -> np.ndarray:
        G, dev = self.G, self.device
        h = w = G.img_resolution
        ws = torch.cat([self.w[:, :6, :], self.w0[:, 6:, :]], dim=1)
        img, feats = G(ws, self.label, truncation_psi=0.7, noise_mode="const", input_is_w=True, return_feature=True)
        # Pixel coordinate grids, built on the host every call as the renderer does.
        xx, yy = torch.meshgrid(torch.linspace(0, h, h), torch.linspace(0, w, w), indexing="ij")
        feat_resize = F.interpolate(feats[self.feature_idx], [h, w], mode="bilinear")
        if self.feat_refs is None:
            feat0 = F.interpolate(feats[self.feature_idx].detach(), [h, w], mode="bilinear")
            self.feat_refs = [feat0[:, :, round(p[0]), round(p[1])] for p in self.points]
        with torch.no_grad():   # tracking: nearest initial feature in a window, one host read per point
            r = round(self.r2 / 512 * h)
            for j, (py, px) in enumerate(self.points):
                top, bottom = max(py - r, 0), min(py + r + 1, h)
                left, right = max(px - r, 0), min(px + r + 1, w)
                patch = feat_resize[:, :, int(top):int(bottom), int(left):int(right)]
                dist = torch.linalg.norm(patch - self.feat_refs[j].reshape(1, -1, 1, 1), dim=1)
                idx = int(torch.argmin(dist.view(1, -1), -1).item())
                width = int(right) - int(left)
                self.points[j] = [idx // width + top, idx % width + left]
        loss = 0
        stop = True
        for (py, px), (ty, tx) in zip(self.points, self.targets):
            direction = torch.tensor([tx - px, ty - py])
            norm = torch.linalg.norm(direction)
            if norm > max(2 / 512 * h, 2):
                stop = False
            if norm > 1:
                distance = ((xx.to(dev) - py) ** 2 + (yy.to(dev) - px) ** 2) ** 0.5
                rows, cols = torch.where(distance < round(self.r1 / 512 * h))
                direction = direction / (torch.linalg.norm(direction) + 1e-7)
                grid_h = (rows - direction[1]) / (h - 1) * 2 - 1
                grid_w = (cols - direction[0]) / (w - 1) * 2 - 1
                grid = torch.stack([grid_w, grid_h], dim=-1).unsqueeze(0).unsqueeze(0)
                target = F.grid_sample(feat_resize.float(), grid, align_corners=True).squeeze(2)
                loss = loss + F.l1_loss(feat_resize[:, :, rows, cols], target.detach())
        loss = loss + 0 * F.l1_loss(ws, self.w0)   # the latent regularizer, weight 0 by default
        if not stop:
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        frame = (img[0] * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
        return frame.cpu().numpy()


# --------------------------------------------------------------------------- ours


class OurDrag:
    """What a live view does per streamed frame: one step with its partial frame, then the frame."""

    def __init__(self, G, ws, handles, targets, block: int, autocast: bool, device):
        self.config = DragConfig(feature_block=block, autocast=autocast, stop_distance=1e-3, max_steps=10 ** 9)
        self.G = G
        session = DragSession(G, ws, self.config, device=device)
        session.set_points(handles, targets)
        self.steps = session.drag(image_every=0, partial_frames=True)

    def step(self) -> np.ndarray:
        state = next(self.steps)
        return finish_frame(self.G, state.partial_frame, self.config)


# --------------------------------------------------------------------------- the run


def load_ours(args, device) -> tuple[Generator, str]:
    if args.model:
        from draggan.loaders.checkpoints import load_generator
        return load_generator(args.model, device="cpu", progress=False), args.model
    torch.manual_seed(0)
    return Generator(GeneratorConfig(**ARCHS[args.arch])).eval().requires_grad_(False), f"{args.arch} (random weights)"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, n: int, device) -> list[float]:
    out = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="checkout of XingangPan/DragGAN (never inside the tracked tree)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="registry name or path of our generator (default celeba128)")
    src.add_argument("--arch", choices=sorted(ARCHS), help="random-weight architecture instead of a model")
    p.add_argument("--block", type=int, default=6, help="feature block of both sides (the official default is 6)")
    p.add_argument("--our-block", default=None,
                   help="our feature block, if not --block: a number or 'default' (the engine's for the model)")
    p.add_argument("--handles", default="1", help="comma-separated handle counts")
    p.add_argument("--precision", default="auto,fp32",
                   help="ours: comma-separated 'auto' (the runtime's choice), 'bf16', 'fp32'")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if not args.model and not args.arch:
        args.model = "celeba128"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    networks = import_official(args.official)
    G, name = load_ours(args, device)
    OG = official_generator(networks, G, device)
    runtime = runtime_for(device)
    G = runtime.prepare(G)
    R = G.img_resolution
    ws = G.ws_from_seed(0, 0.7, device=device)
    our_block = args.block if args.our_block is None else (
        default_feature_block(G) if args.our_block == "default" else int(args.our_block))

    with torch.no_grad():   # the same weights: the same image (ours in fp32)
        ours_img = G.synthesis(ws, noise_mode="const").float()
        theirs = OG(ws, None, input_is_w=True, noise_mode="const").float()
    parity = (ours_img - theirs).abs().max().item()

    variants = {}
    for n in [int(h) for h in args.handles.split(",")]:
        handles, targets = app_points(n, R)
        variants[f"official, {n} handle(s), fp32"] = (
            lambda h=handles, t=targets: OfficialDrag(OG, ws, h, t, args.block))
        for prec in args.precision.split(","):
            autocast = runtime.autocast if prec == "auto" else prec == "bf16"
            label = (f"ours, {n} handle(s), {'bf16' if autocast else 'fp32'}{' (default)' if prec == 'auto' else ''}"
                     f"{f', block {our_block}' if our_block != args.block else ''}")
            variants[label] = (lambda h=handles, t=targets, a=autocast: OurDrag(G, ws, h, t, our_block, a, device))
    runners = {k: make() for k, make in variants.items()}
    for r in runners.values():
        timed(r.step, args.warmup, device)
    times = {k: [] for k in runners}
    rounds = {k: [] for k in runners}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for k, r in runners.items():
            t = timed(r.step, args.steps, device)
            times[k] += t
            rounds[k].append(statistics.median(t))
        loads.append(os.getloadavg()[0])

    official = {n: statistics.median(v) for k, v in times.items() for n in [k.split(",")[1]] if k.startswith("official")}
    rows = []
    for k, v in times.items():
        med = statistics.median(v)
        handles_key = k.split(",")[1]
        rows.append(dict(variant=k, median_ms=med, spread_ms=[min(rounds[k]), max(rounds[k])], samples=len(v),
                         speedup_vs_official=official[handles_key] / med))
    cpu = platform.processor() or platform.machine()
    result = dict(command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]), date=str(datetime.datetime.now()),
                  device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
                  cpu=cpu, threads=torch.get_num_threads(), torch=torch.__version__, model=name, resolution=R,
                  block=args.block, our_block=our_block, image_max_abs_diff=parity,
                  load_avg_1min=[min(loads), max(loads)], rows=rows)
    print(f"# {name}, {R} px, feature block {args.block}; device {result['device']}, {result['threads']} torch "
          f"thread(s), torch {torch.__version__}, {result['date'][:16]}")
    print(f"# command: python -m bench.official_compare {' '.join(sys.argv[1:])}")
    print(f"# load average (1 min) {min(loads):.2f}-{max(loads):.2f}; same weights: images differ by {parity:.2e} at most")
    print_table(["variant", "ms per step + frame (median)", "spread of round medians", "official / this"],
                [[r["variant"], f"{r['median_ms']:.1f}", f"{r['spread_ms'][0]:.1f}-{r['spread_ms'][1]:.1f}",
                  f"{r['speedup_vs_official']:.2f}x"] for r in rows])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
