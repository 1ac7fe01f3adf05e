"""Turn a training state's EMA generator into a shippable model folder.

    python -m training.export_model STATE_DIR checkpoints/celeba128 --template ../shared/datasets/celeba128/landmarks68_mean.json

Writes ``config.json`` + ``model.safetensors`` (fp16) and, for face models, the
``alignment.json`` landmark template that real photos must be warped onto.
``STATE_DIR`` may be a full or compact state (``G_ema-*.safetensors`` shards) with
its ``meta.json`` (training arguments) or a ``config.json`` next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from draggan.models.networks import Generator, GeneratorConfig

from .checkpoint import load_sharded


def config_from_state(state_dir: Path) -> GeneratorConfig:
    cfg_file = state_dir / "config.json"
    if cfg_file.exists():
        d = json.loads(cfg_file.read_text())
        d.pop("architecture", None)
        d.pop("metadata", None)
        return GeneratorConfig.from_dict(d)
    a = json.loads((state_dir / "meta.json").read_text())["args"]
    return GeneratorConfig(z_dim=a["z_dim"], w_dim=a["w_dim"], img_resolution=a["resolution"], mapping_layers=a["mapping_layers"],
                           channel_base=a["channel_base"], channel_max=a["channel_max"], conv_clamp=256)


def export(state_dir, out_dir, template=None) -> Generator:
    state_dir, out_dir = Path(state_dir), Path(out_dir)
    state = load_sharded(state_dir, "G_ema")
    if state is None:
        raise SystemExit(f"{state_dir}: no G_ema-*.safetensors shards")
    G = Generator(config_from_state(state_dir))
    G.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    meta = json.loads((state_dir / "meta.json").read_text())
    G.save_pretrained(out_dir, metadata={"kimg": round(meta["cur_nimg"] / 1000, 1), "step": meta["step"]})
    if template:
        shutil.copyfile(template, out_dir / "alignment.json")
    return G


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("state")
    p.add_argument("out")
    p.add_argument("--template", default=None, help="landmark template JSON to store as alignment.json")
    args = p.parse_args(argv)
    export(args.state, args.out, args.template)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
