"""Load a generator from anything a user may hand us: one call, ``load_generator``.

``source`` may be

* a registry name (``"stylegan2-ffhq-512x512"``, ``"celeba128"``; see ``draggan.loaders.registry``),
* an ``http(s)://`` URL (downloaded once into the cache, see ``draggan.loaders.download``),
* a local path to one of three formats, recognised by content rather than by name:

  1. NVIDIA stylegan2-ada-pytorch / stylegan3 ``.pkl`` (and the older TensorFlow
     StyleGAN2 ``.pkl``), read by a restricted unpickler that never runs code from
     the file (``draggan.loaders.nvidia_pickle``);
  2. rosinality stylegan2-pytorch ``.pt`` with a ``g_ema`` state dict
     (``draggan.loaders.rosinality``), read with ``torch.load(weights_only=True)``;
  3. the project's own format: a directory with ``config.json`` + ``model.safetensors``
     (or the path of either file), read by ``Generator.from_pretrained``.

Every failure a user can cause (missing file, unknown name, refused or foreign
pickle, wrong architecture, failed download) raises ``CheckpointError`` with a
sentence that says what is wrong and what to do.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import torch

from ..models.networks import Generator
from . import registry
from .download import cached_download, url_cache_path
from .errors import CheckpointError, plain_load_failure
from .nvidia_pickle import generator_from_nvidia_pickle
from .rosinality import generator_from_rosinality

__all__ = ["CheckpointError", "load_generator", "load_generator_file", "plain_load_failure", "resolve_source"]

# First bytes of a legacy (pre-zip) ``torch.save`` file: pickle protocol 2 + torch's magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _is_url(source) -> bool:
    return isinstance(source, str) and source.split("://", 1)[0].lower() in ("http", "https")


def resolve_source(source, cache_dir=None, progress=True) -> Path:
    """Turn a registry name, URL or path into a local path (downloading if needed)."""

    if isinstance(source, (str, Path)) and not _is_url(source):
        info = registry.get_model(str(source)) if isinstance(source, str) else None
        local = Path(source).expanduser()
        if info is not None and not local.exists():
            return registry.resolve_model(info, cache_dir=cache_dir, progress=progress)
        if local.exists():
            return local
        known = ", ".join(registry.model_names())
        raise CheckpointError(
            f"{source!s}: no such file or directory, and not a known model name. "
            f"Known models: {known}. You can also pass an http(s) URL.")
    if _is_url(source):
        return cached_download(source, url_cache_path(source, cache_dir), progress=progress)
    raise CheckpointError(f"cannot load a generator from {source!r}: pass a model name, a path or a URL")


def load_generator(source, device="cpu", cache_dir=None, progress=True):
    """Load a StyleGAN2 generator, ready for inference (eval mode, no gradients).

    source    : registry name, local path, or http(s) URL (see module docstring).
    device    : where to put the generator.
    cache_dir : download cache (default: $DRAGGAN_CACHE or ~/.cache/draggan).
    progress  : True for a progress bar on stderr, False for silence, or a callable
                ``progress(done_bytes, total_bytes_or_None)`` (e.g. for a web UI).
    """
    path = resolve_source(source, cache_dir=cache_dir, progress=progress)
    G = load_generator_file(path)
    return G.eval().requires_grad_(False).to(device)


def load_generator_file(path) -> "torch.nn.Module":
    """Load a generator from a local file or directory, detecting its format from the content."""

    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir() or path.suffix == ".safetensors" or path.name == "config.json":
        directory = path if path.is_dir() else path.parent
        missing = [n for n in ("config.json", "model.safetensors") if not (directory / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{directory}: not a generator directory (missing {', '.join(missing)}); "
                "expected the config.json + model.safetensors written by Generator.save_pretrained")
        try:
            return Generator.from_pretrained(directory)
        except Exception as e:  # json, safetensors and shape errors alike
            raise CheckpointError(f"{directory}: could not load the generator: {_pretrained_failure(e)}") from e

    with open(path, "rb") as f:
        head = f.read(32)
    try:
        if head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_TORCH_MAGIC):
            return _load_torch_save(path)
        if head[:1] == b"\x80":  # a pickle (NVIDIA .pkl)
            return generator_from_nvidia_pickle(path)
    except CheckpointError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        # A structure none of the converters expected: say so instead of showing a traceback.
        raise CheckpointError(f"{path}: not a supported StyleGAN2 checkpoint: {plain_load_failure(e)}.") from e
    raise CheckpointError(
        f"{path}: unrecognised file format. Supported: NVIDIA StyleGAN2 .pkl, rosinality "
        "stylegan2-pytorch .pt, or a directory with config.json + model.safetensors")


def _load_torch_save(path: Path):
    """A ``torch.save`` file: rosinality's checkpoint (``{'g_ema': state_dict, ...}``)."""
    import argparse


    try:
        # rosinality's train.py also stores its argparse.Namespace; that class is inert data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, io.UnsupportedOperation,
            ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise CheckpointError(f"{path}: {plain_load_failure(e)}.") from e
    return generator_from_rosinality(ckpt, name=str(path))


def _pretrained_failure(e: Exception) -> str:
    """A clause for a config.json + model.safetensors folder that does not load."""
    if isinstance(e, json.JSONDecodeError):
        return f"config.json is not valid JSON (line {e.lineno}). Restore it from the model's original files"
    if isinstance(e, (FileNotFoundError, PermissionError)):
        return f"{Path(e.filename or '').name or 'a file'} cannot be read"
    name = type(e).__name__.lower()
    if "safetensor" in name or "header" in str(e).lower():
        return "model.safetensors is truncated or damaged. Download or copy it again"
    if isinstance(e, RuntimeError) and ("size mismatch" in str(e) or "state_dict" in str(e)):
        return "the weights in model.safetensors do not fit the architecture in config.json"
    if isinstance(e, ValueError) and str(e):
        return str(e).split(": ", 1)[-1]         # our own sentences (an unsupported architecture, ...)
    return "config.json and model.safetensors do not form a generator this version can read"
