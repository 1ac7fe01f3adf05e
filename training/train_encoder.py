"""Train the inversion encoder (``inversion/encoder.py``) of a bundled generator.

    python -m training.train_encoder --model celeba128 --data ../shared/datasets/celeba128 \\
        --out runs/encoder --batch 32 --max-minutes 12

Each batch is half generated faces, whose latents are known, and half real training faces
(never the held-out ``eval/`` faces). For ``--iterations`` ReStyle steps the encoder sees the
faces and the current reconstructions and corrects the latent; every step's reconstruction is
scored, the generator stays frozen:

* pixels: L2 + the offline pyramid loss (Laplacian L1 + SSIM; ``inversion.losses``), on both halves;
* latent: the distance to the true latent, in units of the W spread (generated half only). It keeps
  the code in the region of W+ that the generator was trained on, where drags behave;
* e4e's delta penalty: each layer's distance from the mean of the layers (W+ stays close to W).

Snapshots (``OUT/state``: fp32 weights and Adam moments in files of at most 15 MiB, plus
``meta.json``) resume a run exactly with ``--resume OUT/state``; ``OUT/encoder`` is the shippable
fp16 model folder, written at every snapshot. A compact state (``OUT/compact``: fp16 weights
and moments, 3 files) travels through narrow pipes and resumes with slightly re-warmed moments.
``--resume`` also takes a shipped encoder folder (``checkpoints/celeba128/encoder``): its weights, with fresh
Adam moments and a new lr warm-up, the way to continue the bundled encoder in a later session.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from draggan.loaders.checkpoints import load_generator
from draggan.runtime import default_device
from inversion.encoder import Encoder, EncoderConfig, encode
from inversion.losses import make_loss
from inversion.project import w_stats

from .checkpoint import load_sharded, save_sharded
from .dataset import load_images
from .jsonlog import log_jsonl

MAX_FILE_BYTES = 15 * 2 ** 20


def sample_latents(G, n: int, gen: torch.Generator, device, mixing: float = 0.5,
                   truncation: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """W+ latents of generated faces like the photos users bring: truncated towards the mean by a random
    psi, half of them style-mixed at a random layer."""
    z = torch.randn(2 * n, G.z_dim, generator=gen, device=device)
    w = G.mapping(z)
    psi = torch.empty(2 * n, 1, 1, device=device).uniform_(*truncation, generator=gen)
    w = G.mapping.w_avg.lerp(w, psi)
    ws, ws2 = w[:n], w[n:]
    cut = torch.randint(1, G.num_ws, (n, 1, 1), generator=gen, device=device)
    later = torch.arange(G.num_ws, device=device)[None, :, None] >= cut
    mix = (torch.rand(n, 1, 1, generator=gen, device=device) < mixing) & later
    return torch.where(mix, ws2, ws)


def real_batch(images: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` training faces in [-1, 1], half of them mirrored."""
    idx = torch.randint(0, images.shape[0], (n,), generator=gen, device=images.device)
    x = images[idx].float() / 127.5 - 1
    flip = torch.rand(n, 1, 1, 1, generator=gen, device=images.device) < 0.5
    return torch.where(flip, x.flip(3), x)


def lr_at(step: int, done: float, lr: float, warmup: int = 500, rampdown: float = 0.3) -> float:
    """Linear warm-up over ``warmup`` steps, flat, then a cosine decay to a tenth over the last ``rampdown`` of
    the run (``done``: the fraction of the run behind, by steps or by time, whichever is further)."""
    f = min(1.0, (step + 1) / warmup)
    left = (1 - done) / rampdown
    if left < 1:
        f *= 0.1 + 0.9 * (0.5 - 0.5 * math.cos(math.pi * max(left, 0.0)))
    return lr * f


def restyle_losses(E, G, x, ws_true, iterations, perceptual, weights, current0):
    """Sum over ReStyle iterations of the losses, and the last iteration's reconstruction and latent.

    x: [N, 3, R, R] targets; ws_true: [M, num_ws, w_dim] true latents of the first M targets (M <= N).
    """
    n = x.shape[0]
    ws = E.start(n)
    current = current0.expand(n, -1, -1, -1)
    total, parts = 0.0, {"pixel": 0.0, "latent": 0.0, "delta": 0.0}
    scale2 = float(E.w_scale) ** 2
    for _ in range(iterations):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            ws = ws.detach() + E(x, current)
            y = G.synthesis(ws, noise_mode="const").float()
        pixel = (y - x).square().mean() + perceptual(y, x).mean()
        latent = (ws[:len(ws_true)] - ws_true).square().mean() / scale2 if len(ws_true) else y.new_zeros(())
        delta = (ws - ws.mean(1, keepdim=True)).square().mean() / scale2
        total = total + pixel + weights["latent"] * latent + weights["delta"] * delta
        for k, v in (("pixel", pixel), ("latent", latent), ("delta", delta)):
            parts[k] = parts[k] + v.detach() / iterations     # tensors: no host sync inside the step
        current = y.detach()
    return total, parts, y.detach(), ws.detach()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR of images in [-1, 1] (on the 0-255 scale, after rounding to 8 bits)."""
    qa = ((a.clamp(-1, 1) + 1) * 127.5).round()
    qb = ((b.clamp(-1, 1) + 1) * 127.5).round()
    mse = (qa - qb).square().mean(dim=(1, 2, 3)).clamp_min(1e-8)
    return 10 * torch.log10(255 ** 2 / mse)


def save_state(directory: Path, E: Encoder, opt: torch.optim.Adam, meta: dict, compact: bool = False) -> None:
    """Weights and Adam moments as safetensors shards (fp16 for a compact state) + meta.json, swapped in atomically."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Compact: fp16 weights; bf16 moments (Adam's second moments are far below fp16's smallest normal).
    dtype = torch.float16 if compact else torch.float32
    moment_dtype = torch.bfloat16 if compact else torch.float32
    cast = lambda t, d=dtype: t.detach().to("cpu", d if t.is_floating_point() else t.dtype)  # noqa: E731
    weights = {k: cast(v) for k, v in E.state_dict().items()}
    weights["w_avg"], weights["w_scale"] = E.w_avg.float().cpu(), E.w_scale.float().cpu()
    save_sharded(weights, tmp, "E", MAX_FILE_BYTES)
    names = {id(p): k for k, p in E.named_parameters()}
    moments = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                moments[f"exp_avg.{names[id(p)]}"] = cast(st["exp_avg"], moment_dtype)
                moments[f"exp_avg_sq.{names[id(p)]}"] = cast(st["exp_avg_sq"], moment_dtype)
    save_sharded(moments, tmp, "adam", MAX_FILE_BYTES)
    (tmp / "meta.json").write_text(json.dumps({**meta, "compact": compact}, indent=1))
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_state(directory: Path, E: Encoder, opt: torch.optim.Adam, device) -> dict:
    meta = json.loads((directory / "meta.json").read_text())
    weights = load_sharded(directory, "E")
    E.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    moments = load_sharded(directory, "adam") or {}
    step = torch.tensor(float(meta["step"]))
    for k, p in E.named_parameters():
        if f"exp_avg.{k}" in moments:
            opt.state[p] = {"step": step.clone(), "exp_avg": moments[f"exp_avg.{k}"].float().to(device),
                            "exp_avg_sq": moments[f"exp_avg_sq.{k}"].float().to(device)}
    return meta


@torch.no_grad()
def evaluate(E, G, faces: torch.Tensor, iterations: int, batch: int = 50) -> dict:
    """Mean PSNR of the encoder's reconstruction (no tuning) of held-out faces, after each iteration."""
    out = {}
    for i in range(1, iterations + 1):
        values = []
        for s in range(0, len(faces), batch):
            x = faces[s:s + batch].float() / 127.5 - 1
            ws = encode(E, G, x, iterations=i, amp=torch.bfloat16 if x.is_cuda else None)
            values.append(psnr(G.synthesis(ws, noise_mode="const").float(), x))
        out[f"psnr_it{i}"] = round(float(torch.cat(values).mean()), 3)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", default="celeba128", help="registry name or model folder of the generator")
    a("--data", required=True, help="training faces: a folder of train-*.zip shards, one zip, or a folder of images")
    a("--max-images", type=int, default=None, help="use only the first N training faces")
    a("--eval", default=None, help="folder of held-out faces (PNG) for the PSNR logged at each snapshot")
    a("--eval-images", type=int, default=100)
    a("--out", required=True, help="run folder: state/, compact/, encoder/, log.jsonl")
    a("--resume", default=None, help="a state/ or compact/ folder to continue from, or a shipped encoder folder")
    a("--steps", type=int, default=20000, help="total optimizer steps of the run (the lr schedule's length)")
    a("--batch", type=int, default=32)
    a("--real-fraction", type=float, default=0.5, help="share of each batch taken from real training faces")
    a("--iterations", type=int, default=3, help="ReStyle iterations per training step (and at inference)")
    a("--lr", type=float, default=3e-4)
    a("--latent-weight", type=float, default=1.0)
    a("--delta-weight", type=float, default=0.05)
    a("--channels", default="32,64,128,256,256,384")
    a("--max-minutes", type=float, default=None, help="stop (and end the lr schedule) after this many minutes")
    a("--snapshot-minutes", type=float, default=3.0)
    a("--log-steps", type=int, default=100)
    a("--device", default=None)
    a("--threads", type=int, default=None)
    a("--seed", type=int, default=0)
    return p


def train(args) -> dict:
    device = default_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    G = load_generator(args.model, device=device).eval().requires_grad_(False)
    cfg = EncoderConfig(img_resolution=G.img_resolution, num_ws=G.num_ws, w_dim=G.w_dim,
                        channels=tuple(int(c) for c in args.channels.split(",")), iterations=args.iterations)
    E = Encoder(cfg).to(device)
    w_avg, w_std = w_stats(G, 10000)
    E.w_avg.copy_(w_avg)
    E.w_scale.fill_(w_std / math.sqrt(G.w_dim))
    opt = torch.optim.Adam(E.parameters(), lr=args.lr, betas=(0.9, 0.99))
    step = warm_from = 0
    if args.resume and (Path(args.resume) / "meta.json").is_file():
        step = int(load_state(Path(args.resume), E, opt, device)["step"])
    elif args.resume:       # a shipped encoder: weights only, so Adam's moments start again, under a new warm-up
        shipped = Encoder.from_pretrained(args.resume, device)
        if shipped.cfg.to_dict() != cfg.to_dict():
            raise SystemExit(f"{args.resume}: an encoder of another shape ({shipped.cfg.to_dict()}) than this run's")
        E.load_state_dict(shipped.state_dict())
        metadata = json.loads((Path(args.resume) / "config.json").read_text()).get("metadata", {})
        step = warm_from = int(metadata.get("steps", 0))
    real = torch.from_numpy(load_images(args.data, G.img_resolution, max_images=args.max_images)).to(device)
    faces = None
    if args.eval:
        files = sorted(Path(args.eval).glob("*.png"))[:args.eval_images]
        faces = torch.from_numpy(np.stack([_read_png(f) for f in files])).to(device)
    perceptual = make_loss("pyramid", device=device)
    weights = {"latent": args.latent_weight, "delta": args.delta_weight}
    gen = torch.Generator(device=device).manual_seed(args.seed * 1000003 + step)
    with torch.no_grad():
        current0 = G.synthesis(E.start(1), noise_mode="const").float()
    n_real = int(round(args.batch * args.real_fraction))
    params_m = round(sum(p.numel() for p in E.parameters()) / 1e6, 2)

    def log(record):
        log_jsonl(out / "log.jsonl", record)

    log({"event": "start", "model": str(args.model), "step": step, "real_faces": int(real.shape[0]),
         "params_M": params_m, "config": cfg.to_dict(), "device": str(device), "args": vars(args)})
    start = tick = time.time()
    last_snapshot = start
    sums, n_sum = {}, 0
    while step < args.steps:
        done = step / args.steps
        if args.max_minutes:  # a run bounded by time decays its lr by time too
            done = max(done, (time.time() - start) / 60 / args.max_minutes)
        for group in opt.param_groups:
            group["lr"] = lr_at(step - warm_from, done, args.lr)
        with torch.no_grad():
            ws_true = sample_latents(G, args.batch - n_real, gen, device)
            x_syn = G.synthesis(ws_true, noise_mode="const").float().clamp(-1, 1)
            x = torch.cat([x_syn, real_batch(real, n_real, gen)]) if n_real else x_syn
        total, parts, y, _ = restyle_losses(E, G, x, ws_true, args.iterations, perceptual, weights, current0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        step += 1
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n_sum += 1
        minutes = (time.time() - start) / 60
        stop = step >= args.steps or (args.max_minutes is not None and minutes >= args.max_minutes)
        if step % args.log_steps == 0 or stop:
            with torch.no_grad():   # this batch's PSNR, generated and real halves
                p = psnr(y, x)
                sums["psnr_syn"] = p[:args.batch - n_real].mean() * n_sum
                sums["psnr_real"] = p[args.batch - n_real:].mean() * n_sum
            now = time.time()
            log({"step": step, **{k: round(float(v) / n_sum, 4) for k, v in sums.items()},
                 "lr": round(opt.param_groups[0]["lr"], 7), "sec_per_step": round((now - tick) / n_sum, 4),
                 "minutes": round(minutes, 2),
                 **({"max_mem_GiB": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)}
                    if device.type == "cuda" else {})})
            sums, n_sum, tick = {}, 0, now
        if stop or time.time() - last_snapshot >= args.snapshot_minutes * 60:
            snapshot(out, E, opt, G, step, args, faces, log)
            last_snapshot = time.time()
        if stop:
            break
    return {"step": step}


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def snapshot(out: Path, E, opt, G, step: int, args, faces, log) -> None:
    meta = {"step": step, "model": str(args.model), "batch": args.batch, "iterations": args.iterations}
    save_state(out / "state", E, opt, meta)
    save_state(out / "compact", E, opt, meta, compact=True)
    record = {"event": "snapshot", "step": step}
    if faces is not None:
        E.eval()
        record.update(evaluate(E, G, faces, args.iterations))
        E.train()
    E.save_pretrained(out / "encoder", metadata={"trained_for": str(args.model), "steps": step,
                                                 "batch": args.batch, **{k: v for k, v in record.items()
                                                                         if k.startswith("psnr")}})
    log(record)


def main(argv=None):
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
