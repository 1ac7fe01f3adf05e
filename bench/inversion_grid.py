"""Reconstructions side by side: the aligned photo, projection + fast, the encoder alone (instant), encoder + fast.

    python -m bench.inversion_grid docs/inversion_encoder_grid.jpg bench/results/<name>.jsonl

Rows: scikit-image's astronaut, matplotlib's Grace Hopper and the first 4 held-out faces; each cell says the
reconstruction's PSNR and the report's seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from draggan.loaders import load_generator
from inversion import InversionConfig, invert
from inversion.pipeline import alignment_for_model

from .inversion_encoder import DEFAULT_FACES
from .photo_edit import library_photos

CONFIGS = [("projection + fast", dict(encoder="none")), ("encoder alone (instant)", dict(quality="instant")),
           ("encoder + fast", dict())]
CELL = 256


def main(argv=None) -> None:
    figure, log_path = (argv or sys.argv[1:])[:2]
    torch.set_num_threads(2)
    G = load_generator("celeba128")
    alignment, model_dir = alignment_for_model("celeba128")
    faces = sorted(DEFAULT_FACES.glob("*.png"))[:4]
    items = list(library_photos()) + [(f.stem, str(f)) for f in faces]
    rows, log = [], []
    for name, photo in items:
        cells = None
        for label, overrides in CONFIGS:
            config = InversionConfig(alignment=alignment, model_dir=model_dir, identity=False, **overrides)
            r = invert(photo, G, config, cache=None)
            cells = cells or [np.asarray(r.aligned.convert("RGB"))]
            cells.append(np.asarray(r.reconstruction.convert("RGB")))
            log.append({"photo": name, "inversion": label, "psnr": r.report["psnr"], "s": r.report["timings"]["total"]})
            print(json.dumps(log[-1]), flush=True)
        rows.append(cells)
    labels = ["aligned photo"] + [label for label, _ in CONFIGS]
    out = Image.new("RGB", (len(labels) * (CELL + 6), 24 + len(rows) * (CELL + 20)), "white")
    draw = ImageDraw.Draw(out)
    for j, label in enumerate(labels):
        draw.text((j * (CELL + 6) + 4, 6), label, fill="black")
    entries = iter(log)
    for i, cells in enumerate(rows):
        top = 24 + i * (CELL + 20)
        for j, cell in enumerate(cells):
            out.paste(Image.fromarray(cell).resize((CELL, CELL), Image.LANCZOS), (j * (CELL + 6), top))
            if j:
                e = next(entries)
                draw.text((j * (CELL + 6) + 4, top + CELL + 3), f"{e['psnr']:.1f} dB, {e['s']:.1f} s", fill="black")
    out.save(figure, quality=88)
    Path(log_path).write_text("".join(json.dumps(x) + "\n" for x in log))


if __name__ == "__main__":
    main()
