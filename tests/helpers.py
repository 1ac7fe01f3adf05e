"""Builders the test files share: the tiny generator, its saved model folder, one torch thread, a served app,
and how far apart two uint8 images are.

Plain functions, so that fixtures of any scope (and tests/e2e) can use them; the
fixtures themselves live in conftest.py.
"""

import contextlib
from pathlib import Path

import numpy as np
import torch

from draggan.models.networks import Generator

# A 64 px generator small enough that CPU tests render and drag it in milliseconds.
TINY = dict(img_resolution=64, channel_base=2048, channel_max=64, z_dim=64, w_dim=64, mapping_layers=2)


def tiny_generator(seed=0, **config) -> Generator:
    """A frozen generator in eval mode whose weights depend only on ``seed``; ``config`` overrides TINY.

    Seeds torch's global generator, as the tests did before building their own.
    """
    torch.manual_seed(seed)
    G = Generator(**{**TINY, **config})
    return G.eval().requires_grad_(False)


def save_tiny_model(directory, dtype=torch.float32) -> Path:
    """Save ``tiny_generator()`` with ``save_pretrained`` into ``directory`` (fp32 unless told) and return it."""
    tiny_generator().save_pretrained(directory, dtype=dtype)
    return Path(directory)


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one intra-op thread, restoring the previous count afterwards.

    Tiny generators gain nothing from a second thread, and OpenMP's spinning workers
    slow down by 10x or more when other processes share the CPU.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def serve(demo):
    """Launch a built app in this process on one torch thread, yield its URL, and close it afterwards."""
    import app  # here, not at the top: conftest imports this module for every file, most never need gradio

    with one_torch_thread():
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options())
        try:
            yield url
        finally:
            demo.close()


def max_level_difference(a: np.ndarray, b: np.ndarray) -> int:
    """The largest per-pixel difference of two uint8 images, in levels (0-255)."""
    return int(np.abs(a.astype(int) - b.astype(int)).max())
