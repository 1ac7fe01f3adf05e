"""The project's model folder format, shared by every network it ships: ``config.json`` + ``model.safetensors``.

``config.json`` holds ``{"architecture": NAME, <the config's fields>, "metadata": {...}}``; the weights are
safetensors (never a pickle), stored in a smaller dtype where that loses nothing a user sees, and read
back as fp32. The generator (``Generator.save_pretrained``) and the inversion encoder use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def write_pretrained(directory, module: torch.nn.Module, architecture: str, config: dict,
                     dtype=torch.float16, keep_fp32: tuple[str, ...] = (), metadata: dict | None = None) -> Path:
    """Write ``module``'s state (floating tensors in ``dtype``, the names in ``keep_fp32`` in fp32) and its config."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", (torch.float32 if k in keep_fp32 else dtype) if v.is_floating_point()
                              else v.dtype).contiguous()
             for k, v in module.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    stored = {"architecture": architecture, **config}
    if metadata:
        stored["metadata"] = metadata
    (directory / "config.json").write_text(json.dumps(stored, indent=2) + "\n")
    return directory


def read_config(directory, default_architecture: str | None = None) -> tuple[str | None, dict]:
    """(architecture, config fields) of a folder written by :func:`write_pretrained`: read before the weights,
    so that a folder of another kind is refused without reading them."""
    config = json.loads((Path(directory) / "config.json").read_text())
    architecture = config.pop("architecture", default_architecture)
    config.pop("metadata", None)
    return architecture, config


def read_state(directory) -> dict:
    """The folder's weights as fp32 tensors (safetensors: nothing in the file runs)."""
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(Path(directory) / "model.safetensors")).items()}
