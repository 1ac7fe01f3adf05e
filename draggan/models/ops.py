"""Low-level StyleGAN2 operations in plain PyTorch.

Every operation here is written twice where it matters for speed: a plain
*reference* path that follows the paper literally (zero-insertion upsampling
followed by an FIR filter, separate bias/activation/clamp), and a *fast* path
that computes the same numbers with fewer, larger kernels (the FIR filter folded
into the transposed convolution). Tests check one against the other, so the fast
path can never silently drift.
"""

from __future__ import annotations

import math
import threading
import weakref

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def setup_filter(taps=(1, 3, 3, 1), device=None) -> torch.Tensor:
    """Separable FIR low-pass filter as a normalized 2-D kernel (sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32, device=device)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, pad=(0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, then convolve with the FIR filter ``f``.

    Reference implementation of the StyleGAN2 resampling primitive.
    ``pad`` is (x0, x1, y0, y1); ``gain`` scales the filter (``up**2`` keeps
    the signal's magnitude after zero insertion).
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, list(pad))
    # conv2d is correlation: flip the filter to convolve (a no-op for symmetric taps).
    k = (f * gain).flip([0, 1]).to(x.dtype)
    k = k[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample ``x`` by ``up`` with the FIR filter ``f`` (used for the skip image)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Add a per-channel bias, apply the activation, scale by ``gain``, clamp.

    Order and gains follow StyleGAN2 (lrelu uses slope 0.2 and gain sqrt(2)).
    """
    if b is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + b.to(x.dtype).reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        gain = gain * LRELU_GAIN
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fold_upsample_filter(weight: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Fold the FIR filter that follows a stride-2 transposed conv into its kernel.

    ``weight`` is a transposed-conv kernel ``[..., kh, kw]``; the result is the
    full 2-D convolution of it with ``f * up**2`` (``[..., kh+fh-1, kw+fw-1]``),
    so ``conv_transpose2d(x, folded, stride=up, padding=...)`` equals
    ``upfirdn2d(conv_transpose2d(x, weight, stride=up), f, ...)`` in one kernel.
    """
    lead, (kh, kw) = weight.shape[:-2], weight.shape[-2:]
    fh, fw = f.shape
    k = (f * (up * up)).flip([0, 1]).to(weight.dtype)[None, None]
    # The fold is linear in the kernel: build its [kh*kw, (kh+fh-1)*(kw+fw-1)] matrix by
    # folding the kh*kw unit kernels, then apply it to all Cout*Cin kernels as one matmul
    # (a depthwise conv over that many tiny kernels is one of the slowest ops on a CPU).
    basis = torch.eye(kh * kw, dtype=weight.dtype, device=weight.device).reshape(kh * kw, 1, kh, kw)
    fold = F.conv2d(basis, k, padding=(fh - 1, fw - 1)).reshape(kh * kw, -1)
    folded = weight.reshape(-1, kh * kw) @ fold
    return folded.reshape(*lead, kh + fh - 1, kw + fw - 1)


def modulated_conv2d(
    x: torch.Tensor,              # Input activations            [N, Cin, H, W]
    weight: torch.Tensor,         # Shared conv weight           [Cout, Cin, k, k]
    styles: torch.Tensor,         # Per-sample input scales      [N, Cin]
    noise: torch.Tensor | None = None,  # Added after the conv  [N or 1, 1, H', W'] or [H', W']
    up: int = 1,                  # 1 or 2 (transposed conv + FIR filter)
    padding: int = 0,             # Padding of the plain conv (k // 2)
    resample_filter: torch.Tensor | None = None,  # FIR filter for up=2
    demodulate: bool = True,      # Normalize each output channel (StyleGAN2 weight demodulation)
    fused: bool | None = None,    # Fold styles into per-sample weights (best for batch 1); None: auto
    reference: bool = False,      # Use the literal transposed-conv-then-filter path
    fold: bool | None = None,     # up=2: fold the FIR filter into the kernel; None: fold_filter_default()
) -> torch.Tensor:
    n, cin = styles.shape
    cout, _, kh, kw = weight.shape
    if fused is None:
        # Folding styles into the weights is cheapest for one image, but when the
        # styles need a gradient (dragging, projection) it would make autograd
        # compute a weight gradient per conv; scaling activations needs none.
        fused = n == 1 and not (torch.is_grad_enabled() and styles.requires_grad)
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    dcoefs = None
    if demodulate:
        # sum_{i,k} (w_oik * s_i)^2 = sum_i s_i^2 * sum_k w_oik^2: one small matmul
        # instead of materializing the modulated [N, Cout, Cin, k, k] weights.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()   # [N, Cout]

    if fused:
        # Per-sample weights; batch folded into groups (groups == 1 for one image).
        w = weight[None] * styles[:, None, :, None, None]
        if dcoefs is not None:
            w = w * dcoefs[:, :, None, None, None]
        w = w.reshape(n * cout, cin, kh, kw)
        xg = x.reshape(1, n * cin, *x.shape[2:])
        y = _conv(xg, w, up, padding, resample_filter, groups=n, reference=reference, fold=fold)
        y = y.reshape(n, cout, *y.shape[2:])
        if noise is not None:
            y = y + noise.to(y.dtype)
        return y

    # Shared-weight path: scale activations, one conv for the whole batch, rescale.
    x = x * styles[:, :, None, None]
    y = _conv(x, weight, up, padding, resample_filter, groups=1, reference=reference, fold=fold)
    if dcoefs is not None:
        y = y * dcoefs[:, :, None, None]
    if noise is not None:
        y = y + noise.to(y.dtype)
    return y


# --------------------------------------------------------------------------- the synthesis layer, fewer passes

# The synthesis layers take :func:`modulated_conv2d_lrelu` (False: the separate ops, for comparisons).
FAST_LAYERS = True
# Casts and constants of frozen weights are kept between calls (False: recomputed every call).
CACHE_FROZEN = True

_frozen_cache: dict[int, dict] = {}   # id(parameter) -> {key: (stamp, value)}; dropped with the parameter
_frozen_lock = threading.Lock()


def frozen(param: torch.Tensor, key, make):
    """``make(param)``, kept while ``param`` is frozen and unchanged (a drag's generator: its weights in bf16).

    A generator in a drag or a render never changes, yet every call cast its weights to bf16 and
    recomputed their squared norms: a tenth of a CPU step. The entry is rebuilt when the parameter
    changes in place (its version), moves (its storage) or starts to need a gradient (tuning,
    training). Never kept while a CUDA graph is captured: the graph would hold memory it does not own.
    """
    if not CACHE_FROZEN or param.requires_grad or (param.is_cuda and torch.cuda.is_current_stream_capturing()):
        return make(param)
    stamp = (param._version, param.data_ptr(), param.device, param.stride())
    with _frozen_lock:
        entries = _frozen_cache.get(id(param))
        if entries is None:
            entries = _frozen_cache[id(param)] = {}
            weakref.finalize(param, _frozen_cache.pop, id(param), None)
        hit = entries.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = make(param)
    with _frozen_lock:
        entries[key] = (stamp, value)
    return value


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a convolution of ``x`` runs in: autocast's where it is on, else ``x``'s."""
    dev = x.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def modulated_conv2d_lrelu(
    x: torch.Tensor,              # Input activations            [N, Cin, H, W]
    weight: torch.Tensor,         # Shared conv weight           [Cout, Cin, k, k]
    styles: torch.Tensor,         # Per-sample input scales      [N, Cin]
    bias: torch.Tensor,           # Per-channel bias             [Cout]
    noise: torch.Tensor | None = None,  # Scaled noise, added after the conv  [N or 1, 1, H', W'] or [H', W']
    up: int = 1,                  # 1 or 2
    padding: int = 1,             # Padding of the plain conv (k // 2)
    resample_filter: torch.Tensor | None = None,  # FIR filter for up=2
    clamp: float | None = None,   # Clamp the output to +-clamp
    fold: bool | None = None,     # up=2: as modulated_conv2d
    fused: bool | None = None,    # Modulate the weight (one image only); None: when the styles need no gradient
) -> torch.Tensor:
    """A StyleGAN2 synthesis layer: ``bias_act(modulated_conv2d(...) + noise, bias, 'lrelu', clamp=clamp)``.

    The same function in fewer passes over the activations, which is where a CPU spends the
    time the convolutions leave. lrelu is positively homogeneous, so its gain joins the
    demodulation coefficients and the bias; ``addcmul`` applies both in one pass (or, for one
    image whose styles need no gradient, they are folded into the weight and the convolution's
    own bias); noise and activation then go in place; hardtanh is the clamp with a one-pass
    backward (it differs from clamp's gradient only at exactly +-clamp). The weight's casts,
    squared norms and transposed layout come from :func:`frozen`, in the weight's memory format,
    so that no convolution converts its operands (a copy of the activations each time).
    """
    n = styles.shape[0]
    if fused is None:
        fused = not (torch.is_grad_enabled() and styles.requires_grad)
    fused = fused and n == 1
    dtype = compute_dtype(x)
    layout = torch.channels_last if _is_channels_last(weight) else torch.contiguous_format
    if fold is None:
        fold = fold_filter_default(x.device)
    if up == 1:
        w = frozen(weight, ("cast", dtype), lambda p: p.to(dtype, memory_format=layout))          # [Cout, Cin, k, k]
    else:   # the transposed conv's layout, [Cin, Cout, k, k]; folded with the FIR filter where that is the path
        w = frozen(weight, ("transposed", dtype, fold), lambda p: _transposed(p, dtype, layout, resample_filter, fold))
    wsq = frozen(weight, "square", lambda p: p.float().square().sum(dim=[2, 3]).t())                # [Cin, Cout]
    dcoefs = (styles.float().square() @ wsq + 1e-8).rsqrt() * LRELU_GAIN                              # [N, Cout]
    b = frozen(bias, ("gain", dtype), lambda p: (p.float() * LRELU_GAIN).to(dtype))
    x = x.to(dtype)
    if fused:
        # Modulate, demodulate and scale the weight itself: [Cout, Cin] (or [Cin, Cout]) scales; folding
        # the FIR filter into a kernel is linear per (Cin, Cout) pair, so a folded kernel scales the same.
        scale = dcoefs[0][:, None] * styles[0].float()[None, :]
        w = w * (scale if up == 1 else scale.t()).to(dtype)[:, :, None, None]
        if up == 1:   # the bias rides along in the convolution
            y = F.conv2d(x, w, b, padding=padding)
        else:         # (after the FIR filter: with the zero padding at the borders the two do not commute)
            y = _upconv(x, w, padding, resample_filter, fold).add_(b[None, :, None, None])
    else:
        x = x * styles.to(dtype)[:, :, None, None]
        y = F.conv2d(x, w, padding=padding) if up == 1 else _upconv(x, w, padding, resample_filter, fold)
        y = torch.addcmul(b[None, :, None, None], y, dcoefs.to(dtype)[:, :, None, None])
    if noise is not None:
        y = y.add_((noise * LRELU_GAIN).to(dtype))
    y = F.leaky_relu_(y, LRELU_SLOPE)
    return y if clamp is None else F.hardtanh(y, -clamp, clamp)


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _transposed(weight, dtype, layout, f, fold):
    """``weight`` [Cout, Cin, k, k] as a transposed conv's kernel [Cin, Cout, k, k] (``fold``: with ``f`` folded in)."""
    wt = weight.to(dtype).transpose(0, 1)
    return (fold_upsample_filter(wt, f) if fold else wt).contiguous(memory_format=layout)


def _upconv(x: torch.Tensor, wt: torch.Tensor, padding: int, f: torch.Tensor, fold: bool) -> torch.Tensor:
    """2x up-sampling conv of one group with a transposed-layout kernel from :func:`_transposed` (as :func:`_conv`).

    Unfolded, the FIR filter runs as a depthwise convolution that pads by itself (the padding is
    symmetric for the 3x3 kernels and 4-tap filters here), in the activations' memory format.
    """
    fw = f.shape[-1]
    kh = wt.shape[-1] - (fw - 1 if fold else 0)
    if fold:
        crop = fw - 1 - (padding + (fw + 1) // 2 - (kh - 1))
        return F.conv_transpose2d(x, wt, stride=2, padding=crop)
    y = F.conv_transpose2d(x, wt, stride=2)
    p0 = padding + (fw + 1) // 2 - (kh - 1)
    p1 = padding + (fw - 2) // 2 - (kh - 2)
    if p0 != p1 or p0 < 0:
        return upfirdn2d(y, f, pad=(p0, p1, p0, p1), gain=4)
    c = y.shape[1]
    layout = torch.channels_last if _is_channels_last(y) else torch.contiguous_format
    k = frozen(f, ("depthwise", c, y.dtype, layout),
               lambda t: (t * 4).flip([0, 1]).to(y.dtype)[None, None].repeat(c, 1, 1, 1).contiguous(memory_format=layout))
    return F.conv2d(y, k, padding=p0, groups=c)


# Force the up-sampling path everywhere (benchmarks compare the two): None = by device.
FOLD_FILTER: bool | None = None


def fold_filter_default(device: torch.device) -> bool:
    """Whether an up-sampling conv folds its FIR filter into the kernel on ``device``.

    Folding turns "3x3 transposed conv, then 4x4 blur" into one 6x6 transposed
    conv: one kernel instead of two, which pays on a GPU, where a step is bound
    by kernel launches. But the folded conv does 4x the multiply-adds, and a CPU
    is bound by exactly those: there the unfolded pair renders about twice as
    fast (BENCHMARKS.md, "Drag step speed"). So: fold on CUDA only, unless
    :data:`FOLD_FILTER` says otherwise.
    """
    return device.type == "cuda" if FOLD_FILTER is None else FOLD_FILTER


def _conv(x, w, up, padding, f, groups, reference, fold=None):
    """Plain conv (up=1) or 2x upsampling conv for grouped weights ``[G*Cout, Cin, k, k]``.

    ``reference`` or ``fold=False``: transposed conv, then the FIR filter (the paper's
    order); otherwise the filter folded into the kernel (same numbers, one kernel).
    """
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    if up != 2:
        raise ValueError("only up=1 or up=2 is supported")
    kh = w.shape[-1]
    gcout, cin = w.shape[0], w.shape[1]
    # Transposed conv wants [G*Cin, Cout, k, k].
    wt = w.reshape(groups, gcout // groups, cin, kh, kh).transpose(1, 2).reshape(groups * cin, gcout // groups, kh, kh)
    fw = f.shape[-1]
    if fold is None:
        fold = fold_filter_default(x.device)
    if reference or not fold:
        y = F.conv_transpose2d(x, wt, stride=2, groups=groups)
        # Padding that turns (2H + k - 2) samples into exactly 2H after the filter.
        p0 = padding + (fw + 1) // 2 - (kh - 1)
        p1 = padding + (fw - 2) // 2 - (kh - 2)
        return upfirdn2d(y, f, pad=(p0, p1, p0, p1), gain=4)
    folded = fold_upsample_filter(wt, f)
    # The folded kernel yields the full convolution (2H + k + fw - 3 samples);
    # crop what the reference path's padding would have cut (2 per side for k=3, fw=4).
    crop = fw - 1 - (padding + (fw + 1) // 2 - (kh - 1))
    return F.conv_transpose2d(x, folded, stride=2, padding=crop, groups=groups)
