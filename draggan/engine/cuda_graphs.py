"""Replay an optimization step as a captured CUDA graph.

Why: at batch 1 a generator step is hundreds of small kernels whose launch cost
(Python, dispatcher, driver) exceeds their GPU time; a graph launches them all at
once. The step function must have static shapes and read nothing back to the host;
what changes between steps (learning rate, random draws) lives in device tensors
that the caller refills before each call.

Off CUDA, or when capture fails (which warns once), every call runs the step
eagerly: the graph is only an optimization.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

WARMUP_STEPS = 3  # eager steps before capture: they let autograd and Adam allocate their state outside the graph


def wants_graph(device: torch.device, enabled: bool | None) -> bool:
    """Resolve a ``cuda_graph`` setting: None means on for CUDA devices."""
    if enabled is None:
        return device.type == "cuda"
    if enabled and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, not {device}")
    return bool(enabled)


class GraphedCall:
    """Call ``fn(*inputs)`` eagerly a few times, then capture it once and replay it.

    ``inputs`` are tensors; each call copies them into the graph's static copies before the
    replay, so a render can be replayed for every new latent. A change of their shapes or
    dtypes captures again. Every call runs ``fn`` exactly once (capturing records the call
    without running it, so the capture call replays it at once). The returned value is the
    graph's static output: read it before the next call.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], device: torch.device, enabled: bool | None = None,
                 warmup_steps: int = WARMUP_STEPS):
        self.fn, self.device = fn, torch.device(device)
        self.enabled = wants_graph(self.device, enabled)
        self.warmup_steps = warmup_steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output = None
        self.inputs: list[torch.Tensor] = []
        self.signature = None
        self.eager_steps = 0
        self.failed = False  # capture was tried and failed: eager from then on

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *inputs: torch.Tensor):
        if not self.enabled:
            return self.fn(*inputs)
        signature = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if signature != self.signature:
            self.graph, self.output, self.inputs, self.eager_steps = None, None, [], 0
            self.signature = signature
        if self.graph is not None:
            for static, new in zip(self.inputs, inputs):
                static.copy_(new)
            self.graph.replay()
            return self.output
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        if self.eager_steps < self.warmup_steps:
            with torch.cuda.stream(stream):  # capture requires that warm-up runs on a side stream
                out = self.fn(*inputs)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self.eager_steps += 1
            return out
        static = [t.detach().clone() for t in inputs]
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                out = self.fn(*static)
        except Exception as exc:
            warnings.warn(f"CUDA graph capture failed ({exc}); continuing without CUDA graphs", RuntimeWarning)
            torch.cuda.synchronize(self.device)
            self.enabled, self.failed = False, True
            return self.fn(*inputs)
        self.graph, self.output, self.inputs = graph, out, static
        graph.replay()
        return out


class StepGraph(GraphedCall):
    """An optimization step (a function of no inputs: it reads and updates device tensors in place)."""

    @property
    def step(self):
        return self.fn


def adam(params, lr: float, graphed: bool, **kwargs) -> torch.optim.Adam:
    """Adam whose learning rate can change between graph replays (a device tensor when ``graphed``)."""
    params = list(params)
    if graphed:
        return torch.optim.Adam(params, lr=torch.tensor(float(lr), device=params[0].device), capturable=True, **kwargs)
    return torch.optim.Adam(params, lr=lr, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr in place, so that a captured graph (which holds the lr tensor) sees it."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
