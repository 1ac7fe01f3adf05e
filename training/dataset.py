"""The CelebA-128 training set: WebP images inside uncompressed zip shards.

The whole set (45,715 faces, 2.2 GB as uint8) fits in GPU memory, so training
decodes every shard once into one ``[N, 3, R, R]`` uint8 tensor and samples
mini-batches from it with no data loader at all. A decoded copy is cached as
``.npy`` next to nothing but the cache dir, so a restarted run skips decoding.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg")


def list_shards(data: str | os.PathLike) -> list[Path]:
    """Zip shards (``train-*.zip``) in ``data``, or ``data`` itself if it is one zip/dir of images."""
    data = Path(data)
    if data.is_file():
        return [data]
    shards = sorted(data.glob("*.zip"))
    if not shards:
        shards = [data]  # a plain folder of images
    return shards


def _decode_shard(shard: str, resolution: int | None) -> np.ndarray:
    shard = Path(shard)
    images = []
    if shard.is_dir():
        members = [(p.name, p.read_bytes) for p in sorted(shard.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        zf = zipfile.ZipFile(shard)
        members = [(n, (lambda n=n: zf.read(n))) for n in sorted(zf.namelist()) if n.lower().endswith(IMAGE_SUFFIXES)]
    for _, read in members:
        img = Image.open(io.BytesIO(read())).convert("RGB")
        if resolution and img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.LANCZOS)
        images.append(np.asarray(img).transpose(2, 0, 1))
    if not images:
        return np.zeros((0, 3, resolution or 1, resolution or 1), np.uint8)
    return np.stack(images)


def load_images(data, resolution: int | None = None, cache_dir: str | None = None, workers: int | None = None,
                max_images: int | None = None) -> np.ndarray:
    """Decode every image under ``data`` into a uint8 array ``[N, 3, R, R]`` (shards in sorted order)."""
    shards = list_shards(data)
    key = hashlib.sha1(repr([(str(s), s.stat().st_size) for s in shards] + [resolution]).encode()).hexdigest()[:12]
    cache = Path(cache_dir) / f"images-{key}.npy" if cache_dir else None
    if cache is not None and cache.exists():
        arr = np.load(cache, mmap_mode="r")
    else:
        workers = workers or min(len(shards), os.cpu_count() or 1)
        if workers > 1 and len(shards) > 1:
            with ProcessPoolExecutor(workers) as pool:
                parts = list(pool.map(_decode_shard, map(str, shards), [resolution] * len(shards)))
        else:
            parts = [_decode_shard(str(s), resolution) for s in shards]
        arr = np.concatenate(parts)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, cache)
    if max_images:
        arr = arr[:max_images]
    return np.ascontiguousarray(arr)
