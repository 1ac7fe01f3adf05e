"""Command line: invert one photo into a model and write the result folder.

    python -m inversion PHOTO --model celeba128 --out DIR [--steps-w N] [--steps-pti N] [--device cpu|cuda]

DIR receives aligned.png, reconstruction.png, report.json, latent.pt ({'ws': W+}),
alignment.json, photo.png and generator/ (the tuned generator, loadable with
``Generator.from_pretrained``), which ``python -m draggan edit --inversion DIR`` edits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from draggan.loaders import load_generator, resolve_source
from draggan.runtime import default_device

from .errors import InversionError, PhotoError
from .losses import LOSS_KINDS
from .pipeline import QUALITIES, InversionConfig, alignment_for_model, invert


def load_model(name: str, device: str):
    """(generator, model folder or None) from a registry name, URL or path (draggan.loaders)."""
    path = resolve_source(name, progress=True)
    return load_generator(path, device=device), (path if path.is_dir() else path.parent)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m inversion", description=__doc__.split("\n\n")[0])
    p.add_argument("photo", help="photo to invert (any format PIL reads)")
    p.add_argument("--model", required=True, help="model name (e.g. celeba128), URL, or generator folder/file")
    p.add_argument("--out", required=True, help="folder for the result")
    p.add_argument("--quality", default="fast", choices=QUALITIES,
                   help="step budget preset for the device (with the model's encoder, on a 2-core CPU: instant 1-2 s, "
                        "fast about 20 s, faithful about 50 s)")
    p.add_argument("--steps-w", type=int, default=None, help="W projection steps (default: CPU/GPU preset)")
    p.add_argument("--steps-wplus", type=int, default=0, help="extra W+ projection steps (default 0)")
    p.add_argument("--steps-pti", type=int, default=None, help="maximum pivotal tuning steps (default: preset)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--loss", default="auto", choices=[k for k in LOSS_KINDS if k != "lpips-random"],
                   help="reconstruction loss (auto = LPIPS when its VGG16 weights are on disk, else pyramid)")
    p.add_argument("--vgg16", default=None, help="path of torchvision's vgg16-397923af.pth for LPIPS")
    p.add_argument("--alignment", default=None, choices=["auto", "template", "ffhq", "center"],
                   help="face alignment (default: from the model)")
    p.add_argument("--template", default=None, help="landmark template JSON (points_xy + resolution)")
    p.add_argument("--locality", action="store_true", help="PTI locality regularization")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    device = str(default_device(args.device))
    try:
        G, model_dir = load_model(args.model, device)
    except Exception as e:  # CheckpointError and friends carry a readable sentence
        print(f"error: could not load the model {args.model!r}: {e}", file=sys.stderr)
        return 2
    alignment, known_dir = alignment_for_model(args.model)
    model_dir = known_dir or (str(model_dir) if model_dir else None)
    config = InversionConfig(
        device=device, quality=args.quality, steps_w=args.steps_w, steps_wplus=args.steps_wplus,
        steps_pti=args.steps_pti, loss=args.loss,
        vgg16_path=args.vgg16, alignment=args.alignment or alignment, template=args.template, model_dir=model_dir,
        locality=args.locality, seed=args.seed)

    last = {"stage": None, "t": 0.0}

    def progress(stage, step, total):
        now = time.perf_counter()
        if stage != last["stage"] or step == total or now - last["t"] > 2:
            print(f"\r{stage:>14}: {step}/{total}", end="\n" if step == total else "", file=sys.stderr, flush=True)
            last.update(stage=stage, t=now)

    try:
        result = invert(args.photo, G, config, progress=progress, cache=None)
    except PhotoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except InversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = result.save(args.out)
    r = result.report
    for notice in r["notices"]:
        print(f"notice: {notice}", file=sys.stderr)
    for note in r.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    keys = ("start", "psnr", "ssim", "lpips", "identity_distance", "loss_used", "alignment", "steps")
    summary = {k: r[k] for k in keys}
    summary["seconds"] = r["timings"]["total"]
    print(json.dumps(summary))
    print(f"wrote {out}/ (aligned.png, reconstruction.png, report.json, latent.pt, generator/)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
