"""Known generators: where they come from, their resolution and licence.

The list follows the models the official DragGAN demo offers (NVIDIA's StyleGAN2
releases and the Self-Distilled StyleGAN models), plus the project's own
``celeba128`` face model and its CPU-friendly distillation ``celeba128-lite``,
which ship as directories in ``checkpoints/``.
Downloaded files are cached under their usual file names, so a copy obtained by
other means can be dropped into the cache directory by hand.

``sha256`` is filled in only where it is known; unknown hashes are ``None``
(the download is then accepted as is).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .download import cache_dir_or_default, cached_download
from .errors import CheckpointError

NVIDIA_NC = "NVIDIA Source Code License-NC (non-commercial use only)"
SELF_DISTILLED = "Self-Distilled StyleGAN release (Mokady et al. 2022), research use; see self-distilled-stylegan.github.io"
CELEBA = "CelebA: non-commercial research purposes only"

_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
_SG2_TF = "http://d36zk2xti64re0.cloudfront.net/stylegan2/networks/"
_SELF_DISTILLED = "https://storage.googleapis.com/self-distilled-stylegan/"

# The bundled models live in ``checkpoints/`` of the checkout, which a wheel does not carry: $DRAGGAN_MODELS
# (a folder holding checkpoints/), else the checkout this package is in (or was installed editable from).
REPO_ROOT = Path(os.environ.get("DRAGGAN_MODELS") or Path(__file__).resolve().parents[2])


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """One known generator."""

    name: str                  # What users type: ``load_generator(name)``.
    resolution: int            # Output images are resolution x resolution.
    licence: str               # Terms the weights come with.
    description: str
    url: str | None = None     # Where to download it (None for bundled models).
    filename: str | None = None  # File name in the cache (defaults to the URL's).
    sha256: str | None = None  # Checksum where known.
    path: str | None = None    # Bundled model: path relative to the repository root.
    format: str = "nvidia-pkl"  # 'nvidia-pkl', 'nvidia-tf-pkl' (converted on load) or 'project'.

    @property
    def cache_name(self) -> str:
        return self.filename or self.url.rsplit("/", 1)[-1]


MODELS: dict[str, ModelInfo] = {m.name: m for m in [
    ModelInfo("celeba128", 128, CELEBA,
              "DragGAN Studio's own 128x128 face model, trained on aligned CelebA (bundled)",
              path="checkpoints/celeba128", format="project"),
    ModelInfo("celeba128-lite", 128, CELEBA,
              "celeba128 distilled for CPUs: fewer channels at 32-128 px, about "
              "twice as fast to drag, softer detail (bundled)",
              path="checkpoints/celeba128-lite", format="project"),
    ModelInfo("stylegan2-ffhq-512x512", 512, NVIDIA_NC, "Human faces (FFHQ), NVIDIA StyleGAN2",
              url=_NGC + "stylegan2-ffhq-512x512.pkl"),
    ModelInfo("stylegan2-afhqcat-512x512", 512, NVIDIA_NC, "Cat faces (AFHQ Cat), NVIDIA StyleGAN2",
              url=_NGC + "stylegan2-afhqcat-512x512.pkl"),
    ModelInfo("stylegan2-car-config-f", 512, NVIDIA_NC,
              "Cars (LSUN Car, 512x384 content), NVIDIA StyleGAN2 TensorFlow release",
              url=_SG2_TF + "stylegan2-car-config-f.pkl", format="nvidia-tf-pkl"),
    ModelInfo("stylegan2-cat-config-f", 256, NVIDIA_NC, "Cats (LSUN Cat), NVIDIA StyleGAN2 TensorFlow release",
              url=_SG2_TF + "stylegan2-cat-config-f.pkl", format="nvidia-tf-pkl"),
    ModelInfo("stylegan2-lions-512", 512, SELF_DISTILLED, "Lions from internet photos (Self-Distilled StyleGAN)",
              url=_SELF_DISTILLED + "lions_512_pytorch.pkl", filename="stylegan2_lions_512_pytorch.pkl"),
    ModelInfo("stylegan2-dogs-1024", 1024, SELF_DISTILLED, "Dogs from internet photos (Self-Distilled StyleGAN)",
              url=_SELF_DISTILLED + "dogs_1024_pytorch.pkl", filename="stylegan2_dogs_1024_pytorch.pkl"),
    ModelInfo("stylegan2-horses-256", 256, SELF_DISTILLED, "Horses from internet photos (Self-Distilled StyleGAN)",
              url=_SELF_DISTILLED + "horses_256_pytorch.pkl", filename="stylegan2_horses_256_pytorch.pkl"),
    ModelInfo("stylegan2-elephants-512", 512, SELF_DISTILLED,
              "Elephants from internet photos (Self-Distilled StyleGAN)",
              url=_SELF_DISTILLED + "elephants_512_pytorch.pkl", filename="stylegan2_elephants_512_pytorch.pkl"),
]}


def model_names() -> list[str]:
    return list(MODELS)


def get_model(name: str) -> ModelInfo | None:
    """Look a model up by name, or by its file name (``stylegan2-ffhq-512x512.pkl``)."""
    if name in MODELS:
        return MODELS[name]
    for info in MODELS.values():
        if info.url and name in (info.cache_name, info.url.rsplit("/", 1)[-1]):
            return info
    return None


def bundled_path(info: ModelInfo) -> Path:
    return REPO_ROOT / info.path


def local_path(info: ModelInfo, cache_dir=None) -> Path:
    """Where the model is (or would be) on this machine."""

    if info.path:
        return bundled_path(info)
    return cache_dir_or_default(cache_dir) / info.cache_name


def is_available(info: ModelInfo, cache_dir=None) -> bool:
    path = local_path(info, cache_dir)
    return (path / "config.json").is_file() if info.format == "project" else path.is_file()


def resolve_model(info: ModelInfo, cache_dir=None, progress=True) -> Path:
    """Local path of a registry model, downloading it into the cache if needed."""

    path = local_path(info, cache_dir)
    if info.path:
        if not is_available(info, cache_dir):
            raise CheckpointError(
                f"model '{info.name}' is not available yet: expected a directory with config.json + "
                f"model.safetensors at {path}. It is the project's own model, bundled in the checkout's "
                f"checkpoints/ (a wheel does not carry it): set DRAGGAN_MODELS to a checkout (a folder holding "
                f"checkpoints/), install the checkout editable (pip install -e), or train it or copy it there.")
        return path
    return cached_download(info.url, path, sha256=info.sha256, progress=progress)


def list_models(cache_dir=None) -> list[dict]:
    """One row per known model: name, resolution, licence, availability and local path."""
    rows = []
    for info in MODELS.values():
        rows.append({
            "name": info.name,
            "resolution": info.resolution,
            "licence": info.licence,
            "description": info.description,
            "url": info.url,
            "sha256": info.sha256,
            "format": info.format,
            "available": is_available(info, cache_dir),
            "path": str(local_path(info, cache_dir)),
        })
    return rows


def format_model_table(cache_dir=None) -> str:
    """Plain-text table of ``list_models`` for ``python -m draggan models``."""
    rows = list_models(cache_dir)
    header = ("NAME", "RES", "LICENCE", "STATUS")
    lines = []
    for r in rows:
        if r["available"]:
            status = f"{'bundled' if r['format'] == 'project' else 'cached'}: {r['path']}"
        elif r["url"]:
            status = f"not downloaded (-> {r['path']})"
        else:
            status = f"missing ({r['path']})"
        licence = r["licence"].split(" (")[0].split(";")[0].split(",")[0]
        lines.append((r["name"], str(r["resolution"]), licence, status))
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(3)]
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3]
    return "\n".join([fmt(header), *map(fmt, lines)])
