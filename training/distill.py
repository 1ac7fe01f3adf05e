"""Distil a generator into a cheaper one with fewer channels in its top blocks.

    python -m training.distill --teacher celeba128 --out runs/lite --channel-base 6144 --batch 32 --kimg 100

(the recipe of the shipped celeba128-lite: 2.6 minutes on an H200, then saved in fp16). On a 2-core CPU use
``--batch 8 --lr 2e-3 --threads 2 --max-minutes 45`` (about 10 k latents at about 4.4 minutes per kimg).

Why: on a 2-core AVX2 CPU a drag step of the bundled 128 px model costs about
12 G multiply-adds, most of them in the 64 and 128 px blocks. Halving
``channel_base`` halves the channels of exactly those blocks (the ones where
``channel_base / res < channel_max``) and keeps the rest of the network, so

* the mapping network and every block whose shape does not change are copied
  from the teacher and stay frozen: W space, the coarse layout, and hence
  inversions and drag behaviour, stay the teacher's;
* each changed block starts from the teacher's channels that matter most
  (pruning by the L1 norm of the weights that read a channel, as in
  GAN-compression work), then learns to reproduce the teacher's images of the
  same latents (L1 + the perceptual loss of ``inversion.losses``).

The teacher runs the shared, frozen blocks once per batch; the student only
finishes from there. ``--max-minutes`` saves and stops; ``--resume`` continues.
The result is a model folder (``save_pretrained``) that ``load_generator`` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from draggan.engine.features import synthesis_features
from draggan.loaders.checkpoints import load_generator
from draggan.models.networks import Generator, GeneratorConfig
from draggan.runtime import default_device

from .jsonlog import log_jsonl


def slim_config(cfg: GeneratorConfig, channel_base: int) -> GeneratorConfig:
    return dataclasses.replace(cfg, channel_base=channel_base)


def shared_blocks(teacher: Generator, student: Generator) -> int:
    """How many leading synthesis blocks have identical shapes (copied and frozen)."""
    n = 0
    for tb, sb in zip(teacher.synthesis.blocks(), student.synthesis.blocks()):
        if any(tv.shape != sv.shape for tv, sv in zip(tb.state_dict().values(), sb.state_dict().values())):
            break
        n += 1
    return n


def _keep(importance: torch.Tensor, k: int) -> torch.Tensor:
    return importance.topk(k).indices.sort().values


@torch.no_grad()
def prune_into(teacher: Generator, student: Generator) -> int:
    """Initialise ``student`` from ``teacher``: copy what has the same shape, keep the most used channels elsewhere.

    Every block has two channel sets: conv0's outputs (read by conv1) and conv1's
    outputs (read by torgb and the next block's conv0). A channel's importance is
    the L1 norm of the teacher weights that read it. Returns the number of shared
    leading blocks.
    """
    if teacher.cfg.img_resolution != student.cfg.img_resolution or teacher.w_dim != student.w_dim:
        raise ValueError("teacher and student differ in more than channel counts")
    student.mapping.load_state_dict(teacher.mapping.state_dict())
    n_shared = shared_blocks(teacher, student)
    t_blocks, s_blocks = teacher.synthesis.blocks(), student.synthesis.blocks()
    prev_out = None  # kept indices of the previous block's output channels
    for i, (tb, sb) in enumerate(zip(t_blocks, s_blocks)):
        if i < n_shared:
            sb.load_state_dict(tb.state_dict())
            prev_out = torch.arange(tb.conv1.weight.shape[0])
            continue
        nxt = t_blocks[i + 1] if i + 1 < len(t_blocks) else None
        # conv1's outputs are read by torgb and by the next block's conv0.
        imp_out = tb.torgb.weight.abs().sum((0, 2, 3)) / tb.torgb.weight.abs().sum()
        if nxt is not None:
            imp_out = imp_out + nxt.conv0.weight.abs().sum((0, 2, 3)) / nxt.conv0.weight.abs().sum()
        keep_out = _keep(imp_out, sb.conv1.weight.shape[0])
        if hasattr(tb, "conv0"):
            keep_mid = _keep(tb.conv1.weight.abs().sum((0, 2, 3)), sb.conv0.weight.shape[0])
            _copy_layer(tb.conv0, sb.conv0, keep_mid, prev_out)
        else:
            keep_mid = keep_out
            sb.const.copy_(tb.const[keep_mid])
        _copy_layer(tb.conv1, sb.conv1, keep_out, keep_mid)
        # torgb: no demodulation, so compensate its 1/sqrt(in_channels) gain for the dropped inputs.
        sb.torgb.weight.copy_(tb.torgb.weight[:, keep_out] * (tb.torgb.weight_gain / sb.torgb.weight_gain))
        sb.torgb.bias.copy_(tb.torgb.bias)
        _copy_affine(tb.torgb.affine, sb.torgb.affine, keep_out)
        prev_out = keep_out
    return n_shared


def _copy_affine(t, s, rows):
    s.weight.copy_(t.weight[rows])
    s.bias.copy_(t.bias[rows])


def _copy_layer(t, s, keep_out, keep_in):
    s.weight.copy_(t.weight[keep_out][:, keep_in])
    s.bias.copy_(t.bias[keep_out])
    s.noise_strength.copy_(t.noise_strength)
    s.noise_const.copy_(t.noise_const)
    _copy_affine(t.affine, s.affine, keep_in)


def sample_ws(G: Generator, n: int, gen: torch.Generator, device, mixing: float = 0.5) -> torch.Tensor:
    """W+ latents like the ones a drag visits: W samples, half of them style-mixed at a random layer."""
    z = torch.randn(n, G.z_dim, generator=gen, device=device)
    ws = G.mapping(z)
    z2 = torch.randn(n, G.z_dim, generator=gen, device=device)
    ws2 = G.mapping(z2)
    cut = torch.randint(1, G.num_ws, (n, 1, 1), generator=gen, device=device)
    later_layers = torch.arange(G.num_ws, device=device)[None, :, None] >= cut
    mix = (torch.rand(n, 1, 1, generator=gen, device=device) < mixing) & later_layers
    return torch.where(mix, ws2, ws)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--teacher", default="celeba128", help="registry name or model folder")
    a("--out", required=True, help="run folder: student/ (model folder), log.jsonl")
    a("--channel-base", type=int, default=8192, help="the student's channel_base (teacher's is halved by default)")
    a("--kimg", type=float, default=20, help="stop after this many thousand latents")
    a("--batch", type=int, default=8)
    a("--lr", type=float, default=1e-3)
    a("--perceptual", default="auto", help="inversion.losses kind: auto (LPIPS if its weights exist), lpips, pyramid")
    a("--perceptual-weight", type=float, default=1.0)
    a("--max-minutes", type=float, default=None)
    a("--tick-kimg", type=float, default=0.5)
    a("--resume", action="store_true", help="continue from OUT/student")
    a("--device", default=None)
    a("--threads", type=int, default=None, help="torch CPU threads")
    a("--seed", type=int, default=0)
    return p


def distill(args) -> dict:
    from inversion.losses import make_loss

    device = default_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_generator(args.teacher, device=device).eval().requires_grad_(False)
    meta_file = out / "student" / "distill.json"
    if args.resume and meta_file.exists():
        student = Generator.from_pretrained(out / "student").to(device)
        done_nimg = json.loads(meta_file.read_text())["nimg"]
        n_shared = shared_blocks(teacher, student)
    else:
        student = Generator(slim_config(teacher.cfg, args.channel_base)).to(device)
        done_nimg = 0
        n_shared = prune_into(teacher, student)
    if n_shared == len(student.synthesis.blocks()):
        raise SystemExit("the student has the teacher's shape everywhere: lower --channel-base")
    student.requires_grad_(False)
    trained = [p for b in student.synthesis.blocks()[n_shared:] for p in b.parameters()]
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=args.lr, betas=(0.9, 0.99))
    perceptual = make_loss(args.perceptual, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed * 1000003 + done_nimg)
    def log(record):
        log_jsonl(out / "log.jsonl", record)

    log({"event": "start", "teacher": args.teacher, "channel_base": args.channel_base, "shared_blocks": n_shared,
         "trained_params_M": round(sum(p.numel() for p in trained) / 1e6, 2), "perceptual": perceptual.name,
         "perceptual_notice": perceptual.notice, "nimg": done_nimg, "device": str(device)})
    start = tick = time.time()
    sums = {"l1": 0.0, "perceptual": 0.0, "n": 0}
    nimg, tick_nimg = done_nimg, done_nimg
    while nimg < args.kimg * 1000:
        with torch.no_grad():
            ws = sample_ws(teacher, args.batch, gen, device)
            x, img = synthesis_features(teacher, ws, n_shared, with_image=True)
            target = teacher.synthesis.finish(x, img, ws, n_shared)
        pred = student.synthesis.finish(x, img, ws, n_shared)
        l1 = F.l1_loss(pred, target)
        lp = perceptual(pred, target).mean()
        loss = l1 + args.perceptual_weight * lp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        nimg += args.batch
        sums["l1"] += l1.item()
        sums["perceptual"] += lp.item()
        sums["n"] += 1
        minutes = (time.time() - start) / 60
        stop = nimg >= args.kimg * 1000 or (args.max_minutes is not None and minutes >= args.max_minutes)
        if nimg - tick_nimg >= args.tick_kimg * 1000 or stop:
            now = time.time()
            log({"kimg": round(nimg / 1000, 3), "l1": round(sums["l1"] / sums["n"], 5),
                 "perceptual": round(sums["perceptual"] / sums["n"], 5),
                 "sec_per_kimg": round((now - tick) / ((nimg - tick_nimg) / 1000), 1), "minutes": round(minutes, 1)})
            sums = {"l1": 0.0, "perceptual": 0.0, "n": 0}
            tick, tick_nimg = now, nimg
            save_student(student, out / "student", args, nimg, n_shared)
        if stop:
            break
    return {"nimg": nimg, "shared_blocks": n_shared}


def save_student(student: Generator, folder: Path, args, nimg: int, n_shared: int):
    # fp32, so that --resume continues exactly; save_pretrained(dtype=torch.float16) makes the shipped copy.
    student.save_pretrained(folder, dtype=torch.float32,
                            metadata={"distilled_from": str(args.teacher), "kimg": str(round(nimg / 1000, 3))})
    (folder / "distill.json").write_text(json.dumps({"nimg": nimg, "teacher": str(args.teacher),
                                                     "channel_base": args.channel_base, "shared_blocks": n_shared}))


def main(argv=None):
    distill(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
