"""Helpers every checkpoint converter shares: a strict load with a readable report, NVIDIA's fixed
resampling filters, and the mean W when a checkpoint does not store one."""

from __future__ import annotations

import torch

from ..models import ops
from .errors import CheckpointError

W_AVG_SAMPLES = 10_000
W_AVG_SEED = 0


@torch.no_grad()
def estimate_w_avg(mapping, samples=W_AVG_SAMPLES, seed=W_AVG_SEED) -> torch.Tensor:
    """Mean of ``mapping(z)`` over ``samples`` z ~ N(0, I) from a fixed seed (for truncation)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, mapping.z_dim, generator=gen)
    c = torch.zeros(samples, mapping.c_dim) if mapping.c_dim else None
    total = torch.zeros(mapping.w_dim, dtype=torch.float64)
    for i in range(0, samples, 2048):
        ws = mapping(z[i:i + 2048], None if c is None else c[i:i + 2048])
        total += ws[:, 0].double().sum(0)
    return (total / samples).float()


def load_state_strict(G, state: dict, name="checkpoint"):
    """``G.load_state_dict(state, strict=True)``, with a readable report of what does not fit."""
    own = G.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("left over", unexpected), ("wrong shape", mismatched)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{label}: {', '.join(items[:8])}{more}")
        raise CheckpointError(f"{name}: the weights do not fit the generator architecture; " + "; ".join(parts))
    G.load_state_dict(state, strict=True)
    return G


def adopt_fixed_filters(state: dict, own: dict, name: str) -> dict:
    """NVIDIA stores the [1,3,3,1] FIR filter in every layer; check it and use our own buffers."""
    expected = ops.setup_filter()
    out = {}
    for key, value in state.items():
        if key.endswith("resample_filter"):
            if value.shape != expected.shape or not torch.allclose(value.float(), expected, atol=1e-6):
                raise CheckpointError(f"{name}: {key} is not the [1,3,3,1] filter; unsupported generator")
            continue
        out[key] = value
    out.update({k: v for k, v in own.items() if k.endswith("resample_filter")})
    return out


__all__ = ["W_AVG_SAMPLES", "W_AVG_SEED", "adopt_fixed_filters", "estimate_w_avg", "load_state_strict"]
