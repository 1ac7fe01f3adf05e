"""How close a distilled student's images are to its teacher's, on the same latents.

    python -m bench.distill_fidelity --student checkpoints/celeba128-lite --teacher checkpoints/celeba128

z comes from ``np.random.RandomState(seed)`` (seed 7, 8 latents by default, truncation 1.0), so the
figures are comparable between runs and machines. Prints L1 (images in [-1, 1]) and the PSNR of each
latent's 8-bit image (``inversion.metrics.psnr``).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from draggan import load_generator
from inversion.metrics import psnr, to_image


def image_fidelity(student, teacher, num: int = 8, seed: int = 7) -> dict:
    z = torch.from_numpy(np.random.RandomState(seed).randn(num, teacher.z_dim).astype(np.float32))
    with torch.no_grad():
        w = teacher.mapping(z)  # the student's mapping is the teacher's, copied and frozen
        target = teacher.synthesis(w).clamp(-1, 1)
        pred = student.synthesis(w).clamp(-1, 1)
    l1 = (pred - target).abs().mean().item()
    # PSNR on the 8-bit images a user sees, with the inversion reports' metric.
    db = [psnr(to_image(p[None]), to_image(t[None])) for p, t in zip(pred, target)]
    return {"latents": num, "seed": seed, "l1_mean": round(l1, 4),
            "psnr_db": [round(v, 1) for v in db], "psnr_mean_db": round(float(np.mean(db)), 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True, help="registry name or model folder")
    p.add_argument("--teacher", required=True, help="registry name or model folder")
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    student = load_generator(a.student).eval()
    teacher = load_generator(a.teacher).eval()
    print(json.dumps({"student": a.student, "teacher": a.teacher, **image_fidelity(student, teacher, a.num, a.seed)}))


if __name__ == "__main__":
    main()
