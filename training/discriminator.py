"""StyleGAN2 residual discriminator (Karras et al. 2020, Fig. 7c), plain PyTorch.

Parameter names follow NVIDIA's layout (``b128.fromrgb``, ``b4.fc`` ...), so the
structure reads the same as the generator's. Equalized learning rate throughout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from draggan.models import ops
from draggan.models.networks import FullyConnectedLayer


class Conv2dLayer(nn.Module):
    """Equalized-lr conv with optional FIR-filtered 2x downsampling, bias and activation."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", down=1, conv_clamp=None):
        super().__init__()
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        if down > 1:
            self.register_buffer("resample_filter", ops.setup_filter())

    def forward(self, x):
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down > 1:
            # Low-pass first, then a strided conv: the filter keeps the downsampling alias-free.
            fw, k = self.resample_filter.shape[-1], w.shape[-1]
            p = (fw - 2 + k - 1) // 2
            x = ops.upfirdn2d(x, self.resample_filter, pad=(p, p, p, p))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        return ops.bias_act(x, self.bias, act=self.activation, clamp=self.conv_clamp)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels, tmp_channels, out_channels, img_channels, first=False):
        super().__init__()
        if first:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu")
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x, img=None):
        if img is not None:
            x = self.fromrgb(img)
        y = self.skip(x) * math.sqrt(0.5)
        x = self.conv1(self.conv0(x)) * math.sqrt(0.5)
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the std of features over groups of samples: lets D see variety (fights mode collapse)."""

    def __init__(self, group_size=4, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n) if n % min(self.group_size, n) == 0 else 1
        f = self.num_channels
        # Groups of *consecutive* samples, so splitting a batch across GPUs (at multiples
        # of the group size) forms exactly the same groups as one GPU would.
        y = x.reshape(-1, g, f, c // f, h, w)
        y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])                      # [n/g, f]
        y = y.repeat_interleave(g, dim=0).reshape(n, f, 1, 1).expand(n, f, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels, resolution=4, mbstd_group_size=4):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size)
        self.conv = Conv2dLayer(in_channels + 1, in_channels, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x):
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """Image [N, C, R, R] in [-1, 1] -> realness logit [N, 1].

    img_resolution = 128,    # Input resolution.
    img_channels   = 3,      # Number of input color channels.
    channel_base   = 16384,  # Overall multiplier for the number of channels.
    channel_max    = 256,    # Maximum number of channels in any layer.
    mbstd_group    = 4,      # Group size of the minibatch standard deviation layer.
    """

    def __init__(self, img_resolution=128, img_channels=3, channel_base=16384, channel_max=256, mbstd_group=4):
        super().__init__()
        self.img_resolution = img_resolution
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        ch = lambda res: min(channel_base // res, channel_max)  # noqa: E731
        for i, res in enumerate(self.block_resolutions):
            setattr(self, f"b{res}", DiscriminatorBlock(ch(res), ch(res), ch(res // 2), img_channels, first=(i == 0)))
        self.b4 = DiscriminatorEpilogue(ch(4), mbstd_group_size=mbstd_group)

    def forward(self, img):
        x = None
        for i, res in enumerate(self.block_resolutions):
            x = getattr(self, f"b{res}")(x, img if i == 0 else None)
        return self.b4(x)
