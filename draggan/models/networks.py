"""StyleGAN2 generator in plain PyTorch (Karras et al., CVPR 2020; ADA, NeurIPS 2020).

One readable file of small modules. Parameter and buffer names follow the
layout of NVIDIA's stylegan2-ada-pytorch / stylegan3 pickles
(``mapping.fc0.weight``, ``synthesis.b64.conv0.affine.bias``, ...), so a
checkpoint in that layout loads with a plain ``load_state_dict`` and renders
the same images. No custom CUDA extension: everything runs on CPU, CUDA and
MPS, in fp32 or under bf16/fp16 autocast.

Weights are stored with *equalized learning rate*: the runtime weight is the
stored one times ``1/sqrt(fan_in)`` (times the layer's lr multiplier).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from . import ops
from .pretrained import read_config, read_state, write_pretrained


def config_from_dict(cls, d: dict, what: str):
    """A config dataclass from a stored dict; an unknown key (a file from a newer version, a typo) is an error."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} config keys: {sorted(unknown)}")
    return cls(**d)


@dataclasses.dataclass
class GeneratorConfig:
    """Architecture of a StyleGAN2 generator.

    z_dim                = 512,    # Input latent (Z) dimensionality.
    c_dim                = 0,      # Conditioning label dimensionality (0 = unconditional).
    w_dim                = 512,    # Intermediate latent (W) dimensionality.
    img_resolution       = 256,    # Output resolution (power of two).
    img_channels         = 3,      # Number of output color channels.
    mapping_layers       = 8,      # Number of fully connected layers in the mapping network.
    mapping_lr_multiplier= 0.01,   # Learning-rate multiplier of the mapping layers.
    channel_base         = 32768,  # Overall multiplier for the number of channels.
    channel_max          = 512,    # Maximum number of channels in any layer.
    conv_clamp           = 256,    # Clamp the output of convolution layers to +-X (None = off).
    num_fp16_res         = 0,      # Informational: NVIDIA's fp16 layers (we use autocast instead).
    embed_features       = None,   # Label embedding size (defaults to w_dim when c_dim > 0).
    """

    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 256
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = 256
    num_fp16_res: int = 0
    embed_features: int | None = None

    def __post_init__(self):
        log2 = int(math.log2(self.img_resolution))
        if self.img_resolution < 4 or 2 ** log2 != self.img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {self.img_resolution}")

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        # Two convs per block (one in the 4x4 block) plus the last block's ToRGB.
        return 2 * len(self.block_resolutions)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        return config_from_dict(cls, d, "generator")


# --------------------------------------------------------------------------- layers


class FullyConnectedLayer(nn.Module):
    """Equalized-lr linear layer with optional leaky ReLU."""

    def __init__(self, in_features, out_features, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = ops.frozen(self.weight, ("fc", x.dtype), lambda p: p.to(x.dtype) * self.weight_gain)
        b = ops.frozen(self.bias, ("fc", x.dtype), lambda p: p.to(x.dtype) * self.bias_gain)
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x @ w.t(), b, act=self.activation)


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """Z (+ label) -> W, broadcast to ``num_ws`` copies; tracks the mean W for truncation."""

    def __init__(self, cfg: GeneratorConfig, num_ws: int, w_avg_beta: float = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.c_dim, cfg.w_dim, num_ws
        self.num_layers = cfg.mapping_layers
        self.w_avg_beta = w_avg_beta
        embed = (cfg.embed_features or cfg.w_dim) if cfg.c_dim else 0
        if cfg.c_dim:
            self.embed = FullyConnectedLayer(cfg.c_dim, embed)
        features = [cfg.z_dim + embed] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], "lrelu", cfg.mapping_lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([cfg.w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, update_emas=False):
        parts = []
        if self.z_dim:
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim:
            if c is None:
                raise ValueError("this generator is conditional: pass a label c")
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x.float()  # W statistics and truncation in fp32, also under autocast
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x


NOISE_MODES = ("const", "random", "none")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + noise + bias + leaky ReLU."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, up=1, conv_clamp=None, kernel_size=3):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        if up > 1:
            self.register_buffer("resample_filter", ops.setup_filter())

    def forward(self, x, w, noise_mode="const", reference=False, noise=None):
        styles = self.affine(w)
        if noise is not None:  # explicit per-sample noise [N, 1, R, R], scaled like 'random'
            noise = noise * self.noise_strength
        elif noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        resample_filter = getattr(self, "resample_filter", None)
        if ops.FAST_LAYERS and not reference:
            return ops.modulated_conv2d_lrelu(x, self.weight, styles, self.bias, noise=noise, up=self.up,
                                              padding=self.padding, resample_filter=resample_filter,
                                              clamp=self.conv_clamp)
        x = ops.modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                                 resample_filter=resample_filter, reference=reference)
        return ops.bias_act(x, self.bias, act="lrelu", clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, without demodulation."""

    def __init__(self, in_channels, out_channels, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w, reference=False):
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, reference=reference)
        return ops.bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network ('skip' architecture)."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, conv_clamp=None):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", ops.setup_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x, img, ws, noise_mode="const", with_rgb=True, reference=False, noise_inputs=None,
                const_from=None):
        """``ws``: [N, num_conv + 1, w_dim]. Returns (features, image or None).

        ``const_from``: the block's w's from this index on need no gradient (see SynthesisNetwork.forward).
        """
        noise = noise_inputs or [None] * self.num_conv
        w = list(ws.unbind(1))
        if const_from is not None:
            w = [wi if i < const_from else wi.detach() for i, wi in enumerate(w)]
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, w[0], noise_mode, reference, noise[0])
        else:
            x = self.conv0(x, w[0], noise_mode, reference, noise[0])
            x = self.conv1(x, w[1], noise_mode, reference, noise[1])
        if not with_rgb:
            return x, None
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter)
        y = self.torgb(x, w[self.num_conv], reference)
        img = y if img is None else img + y.to(img.dtype)
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, C, R, R] in [-1, 1] (roughly)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.img_resolution = cfg.img_resolution
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = cfg.num_ws
        for res in self.block_resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(in_ch, cfg.channels(res), cfg.w_dim, res, cfg.img_channels, cfg.conv_clamp)
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def noise_shapes(self) -> list[tuple[int, int]]:
        """(resolution, resolution) of every noise input, in the order ``noise_inputs`` expects."""
        return [(b.resolution, b.resolution) for b in self.blocks() for _ in range(b.num_conv)]

    def forward(self, ws, noise_mode="const", return_features=False, last_block=None, reference=False,
                noise_inputs=None, partial_image=False, const_from=None):
        """Run the synthesis network.

        ws              : W+ latents [N, num_ws, w_dim].
        noise_mode      : 'const' (deterministic), 'random' or 'none'.
        return_features : also return the list of each block's output feature map.
        last_block      : stop after this block (1-based, e.g. 6 for DragGAN's features);
                          the image is then not computed and returned as None.
        partial_image   : with ``last_block``, still compute the skip image up to that block
                          (at its resolution), which :meth:`finish` continues from.
        reference       : use the literal (slow) resampling path; for tests.
        noise_inputs    : optional explicit noise maps [N, 1, R, R], one per layer (see noise_shapes()).
        const_from      : the W+ layers from this index on need no gradient although ``ws`` has one
                          (a drag optimizes the first layers only): they are detached, so their
                          layers skip the style gradient and take the cheaper weight-modulating path.
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"expected ws of shape [N, {self.num_ws}, w_dim], got {tuple(ws.shape)}")
        blocks = self.blocks()
        n_run = len(blocks) if last_block is None else last_block
        if not 1 <= n_run <= len(blocks):
            raise ValueError(f"last_block must be in 1..{len(blocks)}, got {last_block}")
        with_rgb = n_run == len(blocks) or partial_image
        x = img = None
        features = []
        w_idx = 0
        n_idx = 0
        for block in blocks[:n_run]:
            block_noise = noise_inputs[n_idx:n_idx + block.num_conv] if noise_inputs is not None else None
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, with_rgb=with_rgb,
                           reference=reference, noise_inputs=block_noise,
                           const_from=block_const_from(const_from, w_idx))
            w_idx += block.num_conv
            n_idx += block.num_conv
            features.append(x)
        if return_features:
            return img, features
        return img

    def finish(self, x, img, ws, after_block, noise_mode="const", last_block=None, with_rgb=True, const_from=None):
        """Run the blocks after ``after_block`` (up to ``last_block``, default the last) and return the image.

        ``x`` and ``img`` are that block's features and skip image, as
        ``forward(ws, return_features=True, last_block=after_block, partial_image=True)``
        gives them: together the two calls equal one full ``forward(ws)``. After the
        last block there is nothing left to run and ``img`` is returned as it is.
        With ``last_block`` it returns ``(features, skip image)`` of that block instead
        (the skip image only ``with_rgb``, else None): a local edit blends at one block
        and continues to the feature block from there.
        """
        blocks = self.blocks()
        if not 1 <= after_block <= len(blocks):
            raise ValueError(f"after_block must be in 1..{len(blocks)}, got {after_block}")
        stop = len(blocks) if last_block is None else last_block
        if not after_block <= stop <= len(blocks):
            raise ValueError(f"last_block must be in {after_block}..{len(blocks)}, got {last_block}")
        # After the last block, ``img`` is already the image (DragGAN on the last block's features).
        w_idx = sum(b.num_conv for b in blocks[:after_block])
        for block in blocks[after_block:stop]:
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, with_rgb=with_rgb,
                           const_from=block_const_from(const_from, w_idx))
            w_idx += block.num_conv
        if last_block is None:
            return img
        return x, (img if with_rgb else None)

    def first_layer_of_block(self, block: int) -> int:
        """Index of the first W+ layer that block ``block`` (1-based) reads; num_ws past the last block.

        Blocks up to ``block - 1`` read only the layers before it, except that block
        ``block - 1``'s toRGB shares this layer with ``block``'s first conv.
        """
        blocks = self.blocks()
        if not 1 <= block <= len(blocks) + 1:
            raise ValueError(f"block must be in 1..{len(blocks) + 1}, got {block}")
        return min(sum(b.num_conv for b in blocks[:block - 1]), self.num_ws)


def block_const_from(const_from: int | None, w_idx: int) -> int | None:
    """A network-wide ``const_from`` as an index into the w's of the block that starts at layer ``w_idx``."""
    return None if const_from is None else max(0, const_from - w_idx)


class Generator(nn.Module):
    """Mapping + synthesis. ``G(z)`` gives images; ``G.mapping`` / ``G.synthesis`` for W/W+ work."""

    def __init__(self, cfg: GeneratorConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or GeneratorConfig(**kwargs)
        self.cfg = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg, self.num_ws)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const"):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

    @property
    def num_blocks(self) -> int:
        return len(self.synthesis.block_resolutions)

    def block_resolution(self, block: int) -> int:
        """Resolution of the feature map of ``block`` (1-based)."""
        return self.synthesis.block_resolutions[block - 1]

    def block_channels(self, block: int) -> int:
        return self.cfg.channels(self.block_resolution(block))

    @torch.no_grad()
    def z_from_seed(self, seed: int, device=None) -> torch.Tensor:
        """The Z latent for ``seed`` (NumPy RandomState, as NVIDIA's scripts use)."""
        z = np.random.RandomState(int(seed)).randn(1, self.z_dim)
        return torch.from_numpy(z).float().to(device or self.mapping.w_avg.device)

    @torch.no_grad()
    def ws_from_seed(self, seed: int, truncation_psi: float = 1.0, device=None) -> torch.Tensor:
        z = self.z_from_seed(seed, device)
        c = torch.zeros(1, self.c_dim, device=z.device) if self.c_dim else None
        return self.mapping(z, c, truncation_psi=truncation_psi)

    # ---------------------------------------------------------------- persistence (project format)

    def save_pretrained(self, directory, dtype=torch.float16, metadata: dict | None = None):
        """Write ``config.json`` + ``model.safetensors`` (fp16 by default) into ``directory``."""
        # w_avg is a statistic of the whole model; keep it in full precision.
        write_pretrained(directory, self, "stylegan2", self.cfg.to_dict(), dtype, keep_fp32=("mapping.w_avg",),
                         metadata=metadata)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "Generator":
        """Load a generator saved by :meth:`save_pretrained` (weights are cast to fp32)."""
        arch, config = read_config(directory, default_architecture="stylegan2")
        if arch != "stylegan2":
            raise ValueError(f"{directory}: unsupported architecture {arch!r}")
        G = cls(GeneratorConfig.from_dict(config))
        G.load_state_dict(read_state(directory), strict=True)
        return G.eval().requires_grad_(False).to(device)
