"""The fast StyleGAN2 ops against their literal forms."""

import pytest
import torch
import torch.nn.functional as F

from draggan.models import ops


def test_folded_filter_equals_convolving_kernel_and_filter():
    torch.manual_seed(0)
    w, f = torch.randn(5, 7, 3, 3), ops.setup_filter()
    k = (f * 4).flip([0, 1])[None, None]
    literal = F.conv2d(w.reshape(-1, 1, 3, 3), k, padding=3).reshape(5, 7, 6, 6)
    torch.testing.assert_close(ops.fold_upsample_filter(w, f), literal)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fold", [True, False])
def test_fused_and_activation_scaling_paths_agree_in_value_and_style_gradient(up, demodulate, fold):
    # The drag step takes the activation-scaling path (styles need a gradient), rendering the
    # fused one: both must be the same function of the styles, with the FIR filter folded into
    # the up-sampling kernel (the CUDA default) or applied after it (the CPU default).
    torch.manual_seed(1)
    x, weight = torch.randn(1, 6, 8, 8), torch.randn(4, 6, 3, 3)
    f = ops.setup_filter()
    results = []
    for fused in (True, False):
        styles = torch.randn(1, 6, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        y = ops.modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f,
                                 demodulate=demodulate, fused=fused, fold=fold)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), styles.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)
    reference = ops.modulated_conv2d(x, weight, styles.detach(), up=up, padding=1, resample_filter=f,
                                     demodulate=demodulate, fused=True, reference=True)
    torch.testing.assert_close(results[1][0], reference, rtol=1e-4, atol=1e-5)


def test_styles_that_need_a_gradient_take_the_activation_scaling_path(monkeypatch):
    # That path convolves with the shared weight itself, so autograd needs no weight gradient.
    shared = []
    real = ops._conv
    monkeypatch.setattr(ops, "_conv", lambda x, w, *a, **k: shared.append(w is weight) or real(x, w, *a, **k))
    x, weight, styles = torch.randn(1, 6, 8, 8), torch.randn(4, 6, 3, 3), torch.randn(1, 6)
    ops.modulated_conv2d(x, weight, styles, padding=1)
    ops.modulated_conv2d(x, weight, styles.requires_grad_(True), padding=1)
    with torch.no_grad():
        ops.modulated_conv2d(x, weight, styles, padding=1)
    assert shared == [False, True, False]
