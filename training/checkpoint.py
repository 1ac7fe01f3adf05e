"""Training state on disk: safetensors shards small enough to travel.

A *full* state (fp32 G, D, G_ema + Adam moments) resumes a run exactly. A
*compact* state (fp16 G, G_ema and D, no optimizer) is what fits through narrow
pipes (e.g. 16 MiB per file); resuming from it re-warms Adam's moments, which
costs a few hundred iterations of slight drift. A compact state without G (the
older layout) starts G from G_ema: D then faces a generator it has never seen, so
resume those with ``--d-warmup-kimg``. A shipped model's resume/ folder holds G and
D only: its G_ema is the model itself, ``../model.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MODULES = ("G", "D", "G_ema")


def save_sharded(tensors: dict[str, torch.Tensor], directory: Path, name: str, max_bytes: int):
    """Write ``tensors`` as ``name-00000.safetensors`` ... each at most ``max_bytes`` (one tensor may exceed it)."""
    shard, size, index = {}, 0, 0
    for old in directory.glob(f"{name}-*.safetensors"):
        old.unlink()
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shard and size + nbytes > max_bytes:
            save_file(shard, str(directory / f"{name}-{index:05d}.safetensors"))
            shard, size, index = {}, 0, index + 1
        shard[key] = t.contiguous()
        size += nbytes
    if shard:
        save_file(shard, str(directory / f"{name}-{index:05d}.safetensors"))


def load_sharded(directory: Path, name: str) -> dict[str, torch.Tensor] | None:
    files = sorted(directory.glob(f"{name}-*.safetensors"))
    if not files:
        return None
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _cpu_state(module, dtype=None):
    return {k: v.detach().to("cpu", dtype if (dtype and v.is_floating_point()) else v.dtype)
            for k, v in module.state_dict().items()}


def save_training_state(directory, G, D, G_ema, opt_G, opt_D, meta: dict, compact=False, max_bytes=15 * 2 ** 20):
    """Save atomically: write into ``directory.tmp`` then swap it in."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if compact else None
    modules = {"G": G, "D": D, "G_ema": G_ema}
    for name, module in modules.items():
        save_sharded(_cpu_state(module, dtype), tmp, name, max_bytes)
    if not compact:
        torch.save({"G": opt_G.state_dict(), "D": opt_D.state_dict()}, tmp / "optim.pt")
    (tmp / "meta.json").write_text(json.dumps({**meta, "compact": compact}, indent=1, default=str))
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        if old.exists():
            _rmtree(old)
        os.replace(directory, old)
        os.replace(tmp, directory)
        _rmtree(old)
    else:
        os.replace(tmp, directory)


def load_training_state(directory, G, D, G_ema, opt_G, opt_D, device) -> dict:
    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    states = {name: load_sharded(directory, name) for name in MODULES}
    shipped = directory.parent / "model.safetensors"
    if states["G_ema"] is None and shipped.exists():
        # A shipped model folder keeps its resume state (D + meta) in resume/; G_ema is the model itself.
        states["G_ema"] = load_file(str(shipped))
    if states["G_ema"] is None or states["D"] is None:
        raise FileNotFoundError(f"{directory}: no G_ema/D shards found")
    if states["G"] is None:  # compact state: the trained generator continues from its average
        states["G"] = states["G_ema"]
    for name, module in (("G", G), ("D", D), ("G_ema", G_ema)):
        module.load_state_dict({k: v.float() for k, v in states[name].items()}, strict=True)
    optim = directory / "optim.pt"
    meta["has_optim"] = optim.exists()
    if optim.exists():
        o = torch.load(optim, map_location=device, weights_only=True)
        opt_G.load_state_dict(o["G"])
        opt_D.load_state_dict(o["D"])
    return meta


def _rmtree(path: Path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def export_compact(state_dir, out_dir, max_bytes=15 * 2 ** 20):
    """Convert a full state into a compact one (fp16, no optimizer) for transfer."""
    state_dir, out_dir = Path(state_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        state = load_sharded(state_dir, name)
        if state is None and name == "G":
            continue  # an older compact state: G_ema stands in for G on resume
        if state is None:
            raise SystemExit(f"{state_dir}: no {name}-*.safetensors shards (is this a training state folder?)")
        save_sharded({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, out_dir, name, max_bytes)
    meta = json.loads((state_dir / "meta.json").read_text())
    (out_dir / "meta.json").write_text(json.dumps({**meta, "compact": True}, indent=1))


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Export a compact (fp16, no optimizer) copy of a training state.")
    p.add_argument("state")
    p.add_argument("out")
    args = p.parse_args()
    export_compact(args.state, args.out)
