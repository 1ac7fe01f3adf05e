"""Does a saved discriminator still tell real faces from a generator's samples?

Before resuming a training run, check that its discriminator matches its generator. A
discriminator from an older snapshot can rate the newer generator's samples as *more* real
than real faces; resuming with it pushes the generator in a wrong direction.

    python -m bench.discriminator_check --state checkpoints/celeba128/resume --model celeba128 --model <dir>

For each (state, model) pair: the mean and spread of D's logits on real training faces and on the
model's samples (same z for every model, ``noise_mode="random"`` as in training, no augmentation),
and the balanced accuracy of the sign rule (logit > 0: real).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.model_quality import train_images
from draggan import load_generator
from training.checkpoint import load_sharded
from training.discriminator import Discriminator


def load_discriminator(state_dir: Path) -> Discriminator:
    """The D of a (full or compact) training state, with its size read from meta.json's args."""
    state_dir = Path(state_dir)
    args = json.loads((state_dir / "meta.json").read_text())["args"]
    D = Discriminator(args["resolution"], channel_base=args["channel_base"], channel_max=args["channel_max"])
    state = load_sharded(state_dir, "D")
    if state is None:
        raise SystemExit(f"{state_dir}: no D-*.safetensors shards")
    D.load_state_dict({k: v.float() for k, v in state.items()})
    return D.eval()


def separation(D, reals: torch.Tensor, fakes: torch.Tensor) -> dict:
    with torch.no_grad():
        r, f = D(reals).flatten(), D(fakes).flatten()
    accuracy = ((r > 0).float().mean() + (f < 0).float().mean()) / 2
    return {"real_logit": [round(r.mean().item(), 3), round(r.std().item(), 3)],
            "fake_logit": [round(f.mean().item(), 3), round(f.std().item(), 3)],
            "balanced_accuracy": round(accuracy.item(), 3)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state", action="append", required=True, help="training state folder (repeatable)")
    p.add_argument("--model", action="append", required=True, help="registry name or model folder (repeatable)")
    p.add_argument("--num", type=int, default=64, help="real faces and samples per model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    reals = torch.from_numpy(np.stack(list(train_images(limit=args.num)))).permute(0, 3, 1, 2).float() / 127.5 - 1
    fakes = {}
    for name in args.model:
        G = load_generator(name)
        z = torch.from_numpy(np.random.RandomState(args.seed).randn(args.num, G.z_dim).astype(np.float32))
        torch.manual_seed(args.seed)
        with torch.no_grad():
            fakes[name] = G(z, noise_mode="random")
    results = []
    for state in args.state:
        D = load_discriminator(state)
        for name, x in fakes.items():
            results.append({"state": state, "model": name, **separation(D, reals, x)})
            print(json.dumps(results[-1]))
    return results


if __name__ == "__main__":
    main()
