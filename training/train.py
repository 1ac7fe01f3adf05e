"""Train the project's StyleGAN2 (Karras et al. 2020) on a folder of zip shards.

The recipe: non-saturating logistic loss, lazy R1 on real images, optional lazy
path-length regularization, style mixing, an EMA generator, bf16 autocast, and
adaptive differentiable augmentation (see ``augment.py``).

One GPU:      python -m training.train --data ../shared/datasets/celeba128 --out runs/celeba128
Several GPUs: torchrun --standalone --nproc_per_node=8 -m training.train --data ... --out ...
CPU (tests):  torchrun --nproc_per_node=2 -m training.train --device cpu ... (gloo backend)

``--batch`` is the *global* batch. Every random draw (latents, noise maps, augmentation,
image indices) is made for the global batch from generators seeded the same on every rank
and then sliced, so N GPUs compute the same training as one, up to float rounding.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from draggan.models.networks import Generator, GeneratorConfig

from . import checkpoint
from .augment import AdaptiveP, augment
from .dataset import load_images
from .discriminator import Discriminator
from .jsonlog import log_jsonl


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", required=True, help="folder of train-*.zip shards (or of images)")
    a("--out", required=True, help="run directory (logs, snapshots, resume state)")
    a("--kimg", type=float, default=1000, help="train until this many thousand real images were shown")
    a("--batch", type=int, default=64, help="global batch size (all GPUs together)")
    a("--resolution", type=int, default=128)
    a("--channel-base", type=int, default=16384)
    a("--channel-max", type=int, default=256)
    a("--z-dim", type=int, default=512)
    a("--w-dim", type=int, default=512)
    a("--mapping-layers", type=int, default=8)
    a("--lr", type=float, default=0.0025, help="Adam learning rate of G and D")
    a("--gamma", type=float, default=0.1, help="R1 weight")
    a("--r1-interval", type=int, default=16, help="lazy R1: every N minibatches")
    a("--pl-weight", type=float, default=0.0, help="path-length regularization weight (0 = off)")
    a("--pl-interval", type=int, default=4)
    a("--style-mixing", type=float, default=0.9, help="probability of mixing two latents")
    a("--ema-kimg", type=float, default=None, help="EMA half-life in kimg (default: batch * 10/32)")
    a("--ema-rampup", type=float, default=0.05)
    a("--aug", choices=["ada", "fixed", "none"], default="ada")
    a("--aug-p", type=float, default=0.0, help="initial (ada) or fixed augmentation probability")
    a("--aug-target", type=float, default=0.6)
    a("--aug-speed-kimg", type=float, default=100)
    a("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    a("--channels-last", action="store_true")
    a("--compile", action="store_true", help="torch.compile G and the non-R1 D passes")
    a("--seed", type=int, default=0)
    a("--resume", default=None, help="state directory to resume from (full or compact)")
    a("--d-warmup-kimg", type=float, default=0,
      help="after --resume, train only D for this many kimg (for a D older than the G it resumes with)")
    a("--tick-kimg", type=float, default=4)
    a("--snap-kimg", type=float, default=50)
    a("--max-minutes", type=float, default=None, help="save and stop after this wall time")
    a("--max-images", type=int, default=None)
    a("--cache-dir", default=None, help="where to cache the decoded dataset")
    a("--device", default=None, help="cuda or cpu (default: cuda if available)")
    a("--benchmark-iters", type=int, default=0, help="time this many iterations, print s/kimg, exit")
    return p


# --------------------------------------------------------------------------- helpers


def setup_distributed(device_arg):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_arg is None else device_arg.startswith("cuda")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return rank, world, device


def all_reduce_grads(module, world):
    """Average gradients over ranks (one flat all-reduce: fewer, larger messages)."""
    params = [p for p in module.parameters() if p.grad is not None]
    if world == 1 or not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def sanitize_grads(module):
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0, posinf=1e5, neginf=-1e5)


class Sampler:
    """Global-batch random draws, identical on every rank, sliced to this rank."""

    def __init__(self, seed, device, rank, world, global_batch):
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        self.device, self.global_batch = device, global_batch
        self.local = global_batch // world
        self.start = rank * self.local

    def randn(self, *shape):
        x = torch.randn((self.global_batch, *shape), generator=self.gen, device=self.device)
        return x[self.start:self.start + self.local]

    def randint(self, high):
        x = torch.randint(high, (self.global_batch,), generator=self.gen, device=self.device)
        return x[self.start:self.start + self.local]

    def scalar(self):
        return torch.rand((), generator=self.gen, device=self.device).item()


def lazy_adam(params, lr, interval):
    # Lazy regularization (StyleGAN2 App. B): rescale lr and betas so the schedule
    # matches what the optimizer would do with the regularizer every step.
    c = interval / (interval + 1) if interval else 1
    return torch.optim.Adam(params, lr=lr * c, betas=(0.0, 0.99 ** c), eps=1e-8)


@torch.no_grad()
def update_ema(G_ema, G, beta):
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def sample_grid(G, z, path, rows=8):
    from PIL import Image

    imgs = []
    for chunk in z.split(16):
        imgs.append(G(chunk, noise_mode="const").float())
    img = torch.cat(imgs)
    img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    n, c, h, w = img.shape
    cols = int(math.ceil(n / rows))
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = img[i].transpose(1, 2, 0)
    Image.fromarray(grid).save(path)


# --------------------------------------------------------------------------- training


def train(args) -> dict:
    rank, world, device = setup_distributed(args.device)
    if args.batch % world or (args.batch // world) % 4:
        raise SystemExit(f"--batch {args.batch} must split into per-GPU batches that are multiples of 4 (world {world})")
    out = Path(args.out)
    log_path = out / "log.jsonl"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    def log(record):
        if rank == 0:
            log_jsonl(log_path, record)

    # Data: everything on the device as uint8.
    t0 = time.time()
    images = torch.from_numpy(load_images(args.data, args.resolution, args.cache_dir, max_images=args.max_images))
    images = images.to(device)
    num_images = images.shape[0]
    log({"event": "data", "images": num_images, "seconds": round(time.time() - t0, 1)})

    cfg = GeneratorConfig(z_dim=args.z_dim, w_dim=args.w_dim, img_resolution=args.resolution,
                          mapping_layers=args.mapping_layers, channel_base=args.channel_base,
                          channel_max=args.channel_max, conv_clamp=256)
    torch.manual_seed(args.seed)  # same initial weights on every rank
    G = Generator(cfg).to(device).train().requires_grad_(False)
    D = Discriminator(args.resolution, channel_base=args.channel_base, channel_max=args.channel_max).to(device)
    D.train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    opt_G = lazy_adam(G.parameters(), args.lr, args.pl_interval if args.pl_weight > 0 else 0)
    opt_D = lazy_adam(D.parameters(), args.lr, args.r1_interval)
    ada = AdaptiveP(args.aug_target, args.aug_speed_kimg, p=args.aug_p,
                    fixed=args.aug_p if args.aug == "fixed" else (0.0 if args.aug == "none" else None))
    cur_nimg, step = 0, 0
    if args.resume:
        meta = checkpoint.load_training_state(args.resume, G, D, G_ema, opt_G, opt_D, device)
        cur_nimg, step, ada.p = meta["cur_nimg"], meta["step"], meta.get("aug_p", ada.p)
        log({"event": "resume", "from": args.resume, "kimg": cur_nimg / 1000, "step": step, "optim": meta["has_optim"]})
    if args.channels_last:
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
    G_run = torch.compile(G.synthesis) if args.compile else G.synthesis
    D_run = torch.compile(D) if args.compile else D

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[args.amp]

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    sampler = Sampler(args.seed * 1000003 + step, device, rank, world, args.batch)
    aug_gen = torch.Generator(device=device)
    aug_gen.manual_seed(args.seed * 7919 + step)
    local = args.batch // world

    def reals():
        idx = sampler.randint(num_images)
        x = images[idx].float() / 127.5 - 1
        return x.contiguous(memory_format=torch.channels_last) if args.channels_last else x

    def aug(x):
        return augment(x, ada.p, aug_gen, args.batch, sampler.start)

    def fakes():
        z = sampler.randn(G.z_dim)
        ws = G.mapping(z, update_emas=True)
        if args.style_mixing > 0:
            mix = sampler.scalar() < args.style_mixing
            cutoff = int(sampler.scalar() * (G.num_ws - 1)) + 1
            z2 = sampler.randn(G.z_dim)
            if mix:
                ws = torch.cat([ws[:, :cutoff], G.mapping(z2)[:, cutoff:]], dim=1)
        noise = [sampler.randn(1, h, w) for h, w in G.synthesis.noise_shapes()]
        return G_run(ws, noise_mode="random", noise_inputs=noise), ws

    ema_kimg = args.ema_kimg if args.ema_kimg is not None else args.batch * 10 / 32
    pl_mean = torch.zeros([], device=device)
    grid_z = torch.from_numpy(np.random.RandomState(123).randn(64, G.z_dim)).float().to(device)
    start_time = tick_time = time.time()
    tick_start_nimg = cur_nimg
    next_snap = (math.floor(cur_nimg / (args.snap_kimg * 1000)) + 1) * args.snap_kimg * 1000
    stats = {"loss_G": [], "loss_D": [], "r1": [], "pl": []}
    bench_t0 = None
    done = False
    # D-only warm-up after a resume: its images are not counted in cur_nimg (the generator's training).
    d_warmup_left = args.d_warmup_kimg * 1000 if args.resume else 0
    d_step = step  # the lazy-R1 clock, which also ticks during the warm-up

    def train_G_step():
        """One generator update, with lazy path-length regularization; returns loss_G."""
        # ---- G main: make D call fakes real.
        G.requires_grad_(True)
        with autocast():
            img, _ = fakes()
            logits = D_run(aug(img))
        loss_G = F.softplus(-logits.float()).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        G.requires_grad_(False)
        # ---- G path-length regularization (lazy).
        if args.pl_weight > 0 and step % args.pl_interval == 0:
            G.requires_grad_(True)
            with autocast():
                img, ws = fakes()
            noise = torch.randn_like(img.float()) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img.float() * noise).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            pl_mean.copy_(pl_mean.lerp(lengths.mean().detach(), 0.01))
            loss_pl = (lengths - pl_mean).square().mean() * args.pl_weight * args.pl_interval
            loss_pl.backward()
            stats["pl"].append(loss_pl.detach())
            G.requires_grad_(False)
        all_reduce_grads(G, world)
        sanitize_grads(G)
        opt_G.step()
        return loss_G

    while not done:
        warming = d_warmup_left > 0
        if not warming:
            loss_G = train_G_step()

        # ---- D main: fakes are fake, reals are real.
        D.requires_grad_(True)
        with autocast():
            with torch.no_grad():
                img, _ = fakes()
            logits_fake = D_run(aug(img))
            real = reals()
            logits_real = D_run(aug(real))
        loss_D = F.softplus(logits_fake.float()).mean() + F.softplus(-logits_real.float()).mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        ada.accumulate(torch.sign(logits_real.detach().float()).sum().item() if args.aug == "ada" else 0.0, local)
        # ---- D R1 (lazy), on the un-compiled D because it needs a double backward.
        if d_step % args.r1_interval == 0:
            real = reals().detach().requires_grad_(True)
            with autocast():
                logits = D(aug(real))
            (grad,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
            r1 = grad.square().sum([1, 2, 3]).mean()
            (r1 * (args.gamma / 2) * args.r1_interval).backward()
            stats["r1"].append(r1.detach())
        D.requires_grad_(False)
        all_reduce_grads(D, world)
        sanitize_grads(D)
        opt_D.step()
        d_step += 1
        if warming:
            d_warmup_left -= args.batch
            if d_warmup_left <= 0:
                log({"event": "d_warmup_done", "kimg": cur_nimg / 1000, "d_kimg": args.d_warmup_kimg})
            continue

        # ---- bookkeeping
        cur_nimg += args.batch
        step += 1
        ema_nimg = min(ema_kimg * 1000, cur_nimg * args.ema_rampup) if args.ema_rampup else ema_kimg * 1000
        update_ema(G_ema, G, 0.5 ** (args.batch / max(ema_nimg, 1e-8)))
        stats["loss_G"].append(loss_G.detach())
        stats["loss_D"].append(loss_D.detach())
        if args.aug == "ada" and step % 4 == 0:
            if world > 1:
                t = torch.tensor([ada._sum, ada._count], device=device, dtype=torch.float64)
                dist.all_reduce(t)
                ada._sum, ada._count = float(t[0]), int(t[1])
            ada.update(args.batch * 4)

        if args.benchmark_iters:
            if step == 5:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                bench_t0, bench_n0 = time.time(), cur_nimg
            if step == 5 + args.benchmark_iters:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                spk = (time.time() - bench_t0) / ((cur_nimg - bench_n0) / 1000)
                log({"event": "benchmark", "sec_per_kimg": round(spk, 3), "batch": args.batch, "world": world,
                     "compile": args.compile, "channels_last": args.channels_last, "amp": args.amp,
                     "pl_weight": args.pl_weight,
                     "G_params_M": round(sum(p.numel() for p in G.parameters()) / 1e6, 2),
                     "D_params_M": round(sum(p.numel() for p in D.parameters()) / 1e6, 2)})
                break
            continue

        minutes = (time.time() - start_time) / 60
        done = cur_nimg >= args.kimg * 1000 or (args.max_minutes is not None and minutes >= args.max_minutes)
        if cur_nimg - tick_start_nimg >= args.tick_kimg * 1000 or done:
            now = time.time()
            means = {k: (torch.stack(v).float().mean() if v else torch.full((), float("nan"), device=device))
                     for k, v in stats.items()}
            if world > 1:  # report the global batch's losses, not rank 0's half
                packed = torch.stack(list(means.values()))
                dist.all_reduce(packed)
                means = dict(zip(means, (packed / world).tolist()))
            means = {k: (None if math.isnan(float(v)) else float(v)) for k, v in means.items()}
            log({"kimg": round(cur_nimg / 1000, 3), "step": step, "loss_G": means["loss_G"],
                 "loss_D": means["loss_D"], "r1": means["r1"], "pl": means["pl"],
                 "aug_p": round(ada.p, 4), "sec_per_kimg": round((now - tick_time) / ((cur_nimg - tick_start_nimg) / 1000), 2),
                 "minutes": round(minutes, 1)})
            stats = {k: [] for k in stats}
            tick_time, tick_start_nimg = now, cur_nimg
        if (cur_nimg >= next_snap or done) and rank == 0:
            kimg = int(cur_nimg // 1000)
            sample_grid(G_ema, grid_z, out / f"grid-{kimg:06d}.png")
            G_ema.save_pretrained(out / "latest", metadata={"kimg": kimg, "step": step})
            meta = {"cur_nimg": cur_nimg, "step": step, "aug_p": ada.p, "args": vars(args)}
            checkpoint.save_training_state(out / "state", G, D, G_ema, opt_G, opt_D, meta)
            # The compact copy (fp16 G, G_ema, D, files <= 15 MiB) is what a short-lived remote machine
            # hands back after every snapshot, so a lost machine loses one snapshot interval at most.
            checkpoint.save_training_state(out / "compact", G, D, G_ema, opt_G, opt_D, meta, compact=True)
            next_snap += args.snap_kimg * 1000
            log({"event": "snapshot", "kimg": kimg})
    if world > 1:
        dist.destroy_process_group()
    return {"cur_nimg": cur_nimg, "step": step, "aug_p": ada.p}


def main(argv=None):
    args = build_parser().parse_args(argv)
    train(args)


if __name__ == "__main__":
    main()
