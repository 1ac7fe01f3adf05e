"""How a generator runs on this machine: one policy for the CLI, the app and the benchmarks.

The same points must give the same drag wherever a user makes it, so the choices that
change the numbers (the device, bf16 autocast) and those that change only the speed
(channels-last memory, thread counts) are made here once:

* device: CUDA when PyTorch sees a GPU, else the CPU (``--device`` overrides);
* autocast: bf16 on GPUs and on CPUs with bf16 matrix units (AVX512-BF16 / AMX), where it
  is about 3x faster; fp32 elsewhere, where bf16 is emulated and slower;
* channels-last on CPUs, where convolutions draw and drag 15-25% faster (same images).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch


class DeviceError(ValueError):
    """A device that does not exist here."""


def default_device(name: str | None = None) -> torch.device:
    """``name`` checked (raises DeviceError), or CUDA when available, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"the device {name!r} was asked for, but no CUDA GPU is available to PyTorch; use cpu")
    return device


def bf16_is_fast_on_cpu() -> bool:
    """True on CPUs with native bf16 matrix units (AVX512-BF16 / AMX), where bf16 autocast runs ~3x faster."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except Exception:
        return False


def fast_autocast(device) -> bool:
    """bf16 autocast pays off on GPUs and on CPUs with bf16 matrix units."""
    dev = torch.device(device)
    return dev.type == "cuda" or (dev.type == "cpu" and bf16_is_fast_on_cpu())


@dataclasses.dataclass(frozen=True)
class Runtime:
    """device        : where generators run.
    autocast      : run the generator under bf16 autocast (DragConfig.autocast).
    channels_last : keep the generator's weights channels-last. On the CPU it speeds up every frame; on a GPU it
                    removes cuDNN's layout conversions, and with bf16 gives the fastest graphed step and frame
                    (BENCHMARKS.md, "GPU: one H100"). A GPU without bf16 autocast keeps NCHW."""

    device: torch.device
    autocast: bool
    channels_last: bool

    def prepare(self, G):
        """``G`` on this device, in this memory format (returns the module)."""
        G = G.to(self.device)
        return G.to(memory_format=torch.channels_last) if self.channels_last else G


def runtime_for(device=None, autocast: bool | None = None) -> Runtime:
    """The policy for ``device`` (None: :func:`default_device`); ``autocast`` None: :func:`fast_autocast`."""
    dev = device if isinstance(device, torch.device) else default_device(device)
    autocast = fast_autocast(dev) if autocast is None else bool(autocast)
    return Runtime(device=dev, autocast=autocast, channels_last=dev.type == "cpu" or (dev.type == "cuda" and autocast))


@contextlib.contextmanager
def cudnn_autotuned(device, on: bool = True):
    """On CUDA (``device``, and ``on``), cuDNN times its algorithms once for each new shape instead of picking
    one by heuristics (``torch.backends.cudnn.benchmark``); elsewhere nothing changes. For inversion's hundreds
    of steps of the same shapes: with channels-last bf16 weights its tuning steps are 17 % faster on an H100
    (neither change alone gains; BENCHMARKS.md, "PTI at 512 and 1024 px"). Drag steps and frames gain nothing,
    so it is scoped."""
    if not on or torch.device(device).type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


__all__ = ["DeviceError", "Runtime", "bf16_is_fast_on_cpu", "cudnn_autotuned", "default_device", "fast_autocast",
           "runtime_for"]
