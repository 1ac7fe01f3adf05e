"""How much tuning the encoder's pivot needs: invert() from the model's encoder with several tuning budgets.

    python -m bench.pti_from_encoder --faces 6 --threads 2 > bench/results/<name>.jsonl

For each held-out face and each budget (``steps@lr``, ``+stop`` for the fast preset's early stop at 0.06),
one JSON line: PSNR, dlib identity distance (where dlib is installed), tuning steps run and seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from draggan.loaders import load_generator
from inversion import InversionConfig, invert

from .inversion_encoder import DEFAULT_FACES


def budget(text: str) -> dict:
    """'70@3e-3+stop' -> InversionConfig overrides."""
    stop = text.endswith("+stop")
    steps, lr = text.removesuffix("+stop").split("@")
    return dict(steps_pti=int(steps), lr_pti=float(lr), **({"pti_stop_fallback": 0.06} if stop else {}))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="celeba128")
    p.add_argument("--faces", type=int, default=6)
    p.add_argument("--faces-dir", default=str(DEFAULT_FACES))
    p.add_argument("--budgets", default="25@1e-3,50@3e-3,70@3e-3+stop,100@3e-3")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-identity", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    G = load_generator(args.model)
    faces = sorted(Path(args.faces_dir).glob("*.png"))[:args.faces]
    budgets = [budget(b) for b in args.budgets.split(",")]
    invert(faces[-1], G, InversionConfig(identity=False, **budgets[0]), cache=None)   # untimed warm-up
    for face in faces:
        for b in budgets:
            r = invert(face, G, InversionConfig(identity=not args.no_identity, **b), cache=None).report
            print(json.dumps({"face": face.name, **b, "start": r["start"], "psnr": r["psnr"],
                              "id": r["identity_distance"], "steps": r["steps"]["pti"], "s": r["timings"]["total"],
                              "tune": r["timings"]["tune"]}), flush=True)


if __name__ == "__main__":
    main()
