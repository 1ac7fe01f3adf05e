"""Convert rosinality/stylegan2-pytorch generators (``g_ema``) to ``draggan.models.networks``.

rosinality's generator computes the same StyleGAN2 function with other names:

    style.{i}.weight/bias              (EqualLinear, lr_mul 0.01, fused lrelu)  -> mapping.fc{i-1}
    input.input            [1,C,4,4]                                           -> synthesis.b4.const
    conv1.conv.weight      [1,out,in,3,3] (scaled 1/sqrt(fan_in) at run time;
                           demodulation cancels the scale)                      -> synthesis.b4.conv1.weight
    conv1.conv.modulation.weight/bias  (EqualLinear, bias init 1)              -> ...conv1.affine
    conv1.noise.weight     [1]                                                  -> ...conv1.noise_strength
    conv1.activate.bias    [out]  (fused lrelu: lrelu(x + b) * sqrt(2))         -> ...conv1.bias
    to_rgb1.conv.* / to_rgb1.bias [1,3,1,1]                                     -> synthesis.b4.torgb
    convs.{2k}, convs.{2k+1}, to_rgbs.{k}   (block at 8 * 2**k)                 -> synthesis.b{res}.conv0/conv1/torgb
    noises.noise_{n}       [1,1,R,R]                                            -> the n-th layer's noise_const

There is no conv clamp, and W's mean is not stored (except as ``latent_avg`` in
checkpoints converted from NVIDIA's TF release): we estimate it as the mean of
``mapping(z)`` over 10k z from a fixed seed. Sizes are read from tensor shapes.
"""

from __future__ import annotations

import torch

from ..models import ops
from ..models.networks import Generator, GeneratorConfig
from .convert import estimate_w_avg, load_state_strict
from .errors import CheckpointError


def solve_channels(channels: dict[int, int], name="checkpoint") -> tuple[int, int]:
    """(channel_base, channel_max) with ``min(base // res, max) == channels[res]`` for every res."""
    cmax = max(channels.values())
    lo, hi = 0, None
    for res, ch in channels.items():
        if ch == cmax:
            lo = max(lo, cmax * res)
        else:
            lo = max(lo, ch * res)
            hi = ch * res + res - 1 if hi is None else min(hi, ch * res + res - 1)
    if hi is not None and lo > hi or any(min(lo // r, cmax) != c for r, c in channels.items()):
        layout = ", ".join(f"{r}: {c}" for r, c in sorted(channels.items()))
        raise CheckpointError(f"{name}: channel layout ({layout}) cannot be expressed as min(base / res, max)")
    return lo, cmax


def _drop_prefix(sd: dict) -> dict:
    # Checkpoints saved from a DataParallel wrapper prefix every name with 'module.'.
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def generator_from_rosinality(ckpt, name="checkpoint", lr_multiplier=0.01):
    """Build a ``Generator`` from a rosinality checkpoint dict (or its bare ``g_ema`` state dict)."""

    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{name}: expected a dict from torch.load, got {type(ckpt).__name__}")
    if "g_ema" in ckpt:
        sd = ckpt["g_ema"]
    elif "style.1.weight" in ckpt:
        sd = ckpt
    else:
        keys = ", ".join(sorted(map(str, ckpt))[:10])
        raise CheckpointError(
            f"{name}: not a rosinality stylegan2-pytorch checkpoint (no 'g_ema'; keys: {keys})")
    if not isinstance(sd, dict):
        raise CheckpointError(f"{name}: 'g_ema' is not a state dict")
    sd = {k: v for k, v in _drop_prefix(dict(sd)).items()}
    used: set[str] = set()

    def take(key):
        if key not in sd:
            raise CheckpointError(f"{name}: rosinality weight '{key}' is missing")
        used.add(key)
        value = sd[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{name}: '{key}' is not a tensor")
        return value.detach().float().cpu()

    n_mlp = sum(1 for k in sd if k.startswith("style.") and k.endswith(".weight"))
    if n_mlp == 0:
        raise CheckpointError(f"{name}: no mapping layers (style.N.weight) in g_ema")
    z_dim = sd["style.1.weight"].shape[1]
    const = take("input.input")
    if const.ndim != 4 or const.shape[-1] != 4:
        raise CheckpointError(f"{name}: constant input of shape {tuple(const.shape)}; only a 4x4 start is supported")
    n_convs = sum(1 for k in sd if k.startswith("convs.") and k.endswith(".conv.weight"))
    if n_convs % 2:
        raise CheckpointError(f"{name}: odd number of synthesis convolutions ({n_convs})")
    resolutions = [4] + [8 * 2 ** k for k in range(n_convs // 2)]
    channels = {4: sd["conv1.conv.weight"].shape[1]}
    for k, res in enumerate(resolutions[1:]):
        channels[res] = sd[f"convs.{2 * k}.conv.weight"].shape[1]
    base, cmax = solve_channels(channels, name)
    img_channels = sd["to_rgb1.conv.weight"].shape[1]
    cfg = GeneratorConfig(z_dim=z_dim, w_dim=z_dim, img_resolution=resolutions[-1], img_channels=img_channels,
                          mapping_layers=n_mlp, mapping_lr_multiplier=lr_multiplier, channel_base=base,
                          channel_max=cmax, conv_clamp=None)

    state = {}
    for i in range(n_mlp):
        state[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        state[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")
    state["synthesis.b4.const"] = const[0]

    noise_idx = iter(range(10_000))

    def styled_conv(dst, src):
        w = take(f"{src}.conv.weight")
        if w.ndim != 5 or w.shape[-1] != 3:
            raise CheckpointError(f"{name}: {src}.conv.weight has shape {tuple(w.shape)}; expected [1,out,in,3,3]")
        state[f"{dst}.weight"] = w[0]
        state[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        state[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        state[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape(())
        state[f"{dst}.bias"] = take(f"{src}.activate.bias").reshape(-1)
        n = next(noise_idx)
        if f"noises.noise_{n}" in sd:
            state[f"{dst}.noise_const"] = take(f"noises.noise_{n}")[0, 0]

    def to_rgb(dst, src):
        state[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]
        state[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        state[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        state[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)

    styled_conv("synthesis.b4.conv1", "conv1")
    to_rgb("synthesis.b4.torgb", "to_rgb1")
    for k, res in enumerate(resolutions[1:]):
        styled_conv(f"synthesis.b{res}.conv0", f"convs.{2 * k}")
        styled_conv(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}")
        to_rgb(f"synthesis.b{res}.torgb", f"to_rgbs.{k}")

    # The blur/upsample kernels are fixed buffers; accept only the [1,3,3,1] filter StyleGAN2 uses.
    expected = ops.setup_filter() * 4
    for key in sd:
        if key.endswith(("blur.kernel", "upsample.kernel")):
            used.add(key)
            if not torch.allclose(sd[key].float().cpu(), expected, atol=1e-6):
                raise CheckpointError(f"{name}: {key} is not the [1,3,3,1] filter; unsupported generator")
    left = sorted(set(sd) - used)
    if left:
        raise CheckpointError(f"{name}: rosinality weights left over (not understood): {', '.join(left[:8])}")

    G = Generator(cfg)
    own = G.state_dict()
    for key, value in own.items():
        if key.endswith("resample_filter"):
            state[key] = value
        elif key.endswith("noise_const") and key not in state:
            # Checkpoints without stored noise maps: fixed maps from a fixed seed, for determinism.
            gen = torch.Generator().manual_seed(len(key) * 7919 + value.numel())
            state[key] = torch.randn(value.shape, generator=gen)
    latent_avg = ckpt.get("latent_avg") if "g_ema" in ckpt else None
    if isinstance(latent_avg, torch.Tensor) and latent_avg.numel() == cfg.w_dim:
        state["mapping.w_avg"] = latent_avg.detach().float().reshape(-1).cpu()
    else:
        state["mapping.w_avg"] = own["mapping.w_avg"]
        load_state_strict(G, state, name)
        state["mapping.w_avg"] = estimate_w_avg(G.mapping)
    return load_state_strict(G, state, name)
