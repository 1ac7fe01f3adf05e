"""Quality of a face generator, measured offline with dlib.

* Face-detection rate: dlib's frontal HOG detector on samples upsampled x2, with
  one detector upsample (the dataset README's protocol: it finds a face in about
  96.5% of the real training crops).
* Fréchet distance (FD) in dlib's 128-D face-recognition embedding space between
  generated samples and the held-out ``eval/`` faces, next to the same distance
  between two disjoint sets of real faces of the same size (the floor a perfect
  generator would reach at this sample size). With enough samples a second,
  disjoint set of generated faces gives a second FD: the gap between the two is
  the sampling noise to weigh a difference between models against.

    python -m bench.model_quality --model celeba128 --num 1000 --out bench/results/model_quality.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from scipy import linalg

from inversion.align import DLIB

# The face data beside a checkout (CI's layout: ../shared), or wherever $DRAGGAN_CELEBA128 says.
DATA = Path(os.environ.get("DRAGGAN_CELEBA128",
                           Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "celeba128"))


def detect_and_embed(rgb: np.ndarray) -> tuple[bool, np.ndarray | None]:
    """(face found, 128-D descriptor of the largest face or None) for a 128 px RGB image."""
    big = cv2.resize(rgb, (rgb.shape[1] * 2, rgb.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    rects = DLIB.detector(big, 1)
    if len(rects) == 0:
        return False, None
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = DLIB.predictor(big, rect)
    desc = np.array(DLIB.recognizer.compute_face_descriptor(big, shape), dtype=np.float64)
    return True, desc


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def embed_all(images) -> tuple[float, np.ndarray]:
    found, descs = 0, []
    n = 0
    for rgb in images:
        ok, d = detect_and_embed(rgb)
        n += 1
        found += ok
        if d is not None:
            descs.append(d)
    return found / max(n, 1), np.stack(descs) if descs else np.zeros((0, 128))


def generated_images(G, num: int, truncation: float, seed0: int = 0, batch: int = 16, device="cpu"):
    for start in range(seed0, seed0 + num, batch):
        seeds = range(start, min(start + batch, seed0 + num))
        z = torch.cat([G.z_from_seed(s, device) for s in seeds])
        with torch.no_grad():
            img = G(z, truncation_psi=truncation, noise_mode="const")
        img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        yield from img


def eval_images(limit=None):
    files = sorted((DATA / "eval").glob("*.png"))[:limit]
    for f in files:
        yield np.asarray(Image.open(f).convert("RGB"))


def train_images(shard="train-06.zip", limit=1000):
    with zipfile.ZipFile(DATA / shard) as z:
        for name in sorted(z.namelist())[:limit]:
            yield np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="celeba128")
    p.add_argument("--num", type=int, default=1000, help="generated samples for the detection rate")
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--real-baseline", action="store_true", help="also measure real-vs-real FD and detection rate")
    args = p.parse_args(argv)

    from draggan.loaders.checkpoints import load_generator

    t0 = time.time()
    G = load_generator(args.model, device=args.device)
    rate, gen_desc = embed_all(generated_images(G, args.num, args.truncation, device=args.device))
    _, eval_desc = embed_all(eval_images())
    n = min(len(eval_desc), len(gen_desc))
    result = {
        "model": args.model, "samples": args.num, "truncation": args.truncation,
        "detection_rate": round(rate, 4),
        "fd_samples_vs_eval": round(frechet_distance(gen_desc[:n], eval_desc[:n]), 4), "fd_set_size": n,
    }
    if len(gen_desc) >= 2 * n:
        # The next n samples give a second, independent estimate: their spread is the FD's sampling noise.
        result["fd_next_samples_vs_eval"] = round(frechet_distance(gen_desc[n:2 * n], eval_desc[:n]), 4)
    if args.real_baseline:
        train_rate, train_desc = embed_all(train_images(limit=2 * n))
        result["real_detection_rate_train06"] = round(train_rate, 4)
        result["fd_real_train_vs_eval"] = round(frechet_distance(train_desc[:n], eval_desc[:n]), 4)
        result["fd_real_train_half_vs_half"] = round(frechet_distance(train_desc[:n], train_desc[n:2 * n]), 4)
    result.update({"seconds": round(time.time() - t0, 1), "device": platform.processor() or platform.machine(),
                   "date": time.strftime("%Y-%m-%d"), "loadavg": os.getloadavg()[0]})
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
