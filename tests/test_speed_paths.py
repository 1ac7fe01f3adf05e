"""The speed paths of issue 28 against their plain forms: same numbers, same gradients."""

import pytest
import torch
from helpers import tiny_generator

from draggan.engine import DragConfig, DragSession, finish_frame
from draggan.engine.motion import support_box, warp_supervision_loss
from draggan.models import ops

pytestmark = pytest.mark.usefixtures("one_thread")


def layer_inputs(seed=0, cin=6, cout=5, size=8, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cin, size, size, generator=g)
    weight = torch.randn(cout, cin, 3, 3, generator=g)
    if channels_last:
        x, weight = x.to(memory_format=torch.channels_last), weight.to(memory_format=torch.channels_last)
    styles = torch.randn(1, cin, generator=g) + 1
    bias = torch.randn(cout, generator=g)
    noise = torch.randn(size * 2, size * 2, generator=g)
    return x, weight, styles, bias, noise


def plain_layer(x, weight, styles, bias, noise, up, clamp, fold):
    y = ops.modulated_conv2d(x, weight, styles, noise=None if noise is None else noise[:y_size(x, up), :y_size(x, up)],
                             up=up, padding=1, resample_filter=ops.setup_filter(), fold=fold)
    return ops.bias_act(y, bias, act="lrelu", clamp=clamp)


def y_size(x, up):
    return x.shape[-1] * up


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("with_noise", [False, True])
def test_the_fast_layer_is_the_plain_layer_in_value_and_gradients(up, fold, channels_last, with_noise):
    x, weight, styles, bias, noise = layer_inputs(channels_last=channels_last)
    noise = noise if with_noise else None
    clamp = 1.5   # low enough that some outputs are clamped
    results = []
    for fast in (False, True):
        xs, st = x.clone().requires_grad_(True), styles.clone().requires_grad_(True)
        if fast:
            n = None if noise is None else noise[:y_size(x, up), :y_size(x, up)]
            y = ops.modulated_conv2d_lrelu(xs, weight, st, bias, noise=n, up=up, padding=1,
                                           resample_filter=ops.setup_filter(), clamp=clamp, fold=fold)
        else:
            y = plain_layer(xs, weight, st, bias, noise, up, clamp, fold)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), xs.grad, st.grad))
    assert (results[0][0].abs() >= clamp).any()      # the clamp was exercised
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # Styles without a gradient take the weight-modulating path: the same image.
    with torch.no_grad():
        n = None if noise is None else noise[:y_size(x, up), :y_size(x, up)]
        fused = ops.modulated_conv2d_lrelu(x, weight, styles, bias, noise=n, up=up, padding=1,
                                           resample_filter=ops.setup_filter(), clamp=clamp, fold=fold)
    torch.testing.assert_close(fused, results[0][0], rtol=1e-4, atol=1e-5)


def test_the_fast_layer_under_bf16_autocast_is_as_close_to_fp32_as_the_plain_one():
    x, weight, styles, bias, noise = layer_inputs(cin=32, cout=32, size=16, channels_last=True)
    exact = plain_layer(x, weight, styles, bias, noise[:16, :16], 1, 256, False)
    with torch.autocast("cpu", torch.bfloat16, cache_enabled=False):
        plain = plain_layer(x, weight, styles, bias, noise[:16, :16], 1, 256, False).float()
        fast = ops.modulated_conv2d_lrelu(x, weight, styles, bias, noise=noise[:16, :16], padding=1, clamp=256).float()
    assert fast.dtype == plain.dtype
    err_plain, err_fast = (plain - exact).abs().mean(), (fast - exact).abs().mean()
    assert err_fast < 2 * err_plain + 1e-3
    assert (fast - exact).abs().max() < 0.05 * exact.abs().max()


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_generator_draws_the_same_image_with_the_fast_layers_as_with_the_separate_ops(channels_last, monkeypatch):
    G = tiny_generator()
    if channels_last:
        G = G.to(memory_format=torch.channels_last)
    ws = G.ws_from_seed(1, 0.7)
    fast = G.synthesis(ws)
    monkeypatch.setattr(ops, "FAST_LAYERS", False)
    plain = G.synthesis(ws)
    reference = G.synthesis(ws, reference=True)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)


def test_frozen_values_are_kept_until_the_weight_changes_moves_or_needs_a_gradient():
    p = torch.nn.Parameter(torch.randn(4, 3, 3, 3), requires_grad=False)
    calls = []

    def make(t):
        calls.append(1)
        return t * 2

    first = ops.frozen(p, "double", make)
    assert ops.frozen(p, "double", make) is first and len(calls) == 1
    with torch.no_grad():
        p.add_(1)                                 # in place: a new version
    torch.testing.assert_close(ops.frozen(p, "double", make), p * 2)
    p.data = p.data.to(memory_format=torch.channels_last)   # new storage, same version counter
    again = ops.frozen(p, "double", make)
    assert again.is_contiguous(memory_format=torch.channels_last) and len(calls) == 3
    p.requires_grad_(True)                        # tuning: never cached
    ops.frozen(p, "double", make)
    ops.frozen(p, "double", make)
    assert len(calls) == 5


def test_the_warp_term_on_the_regions_box_is_the_warp_term_on_the_whole_map():
    torch.manual_seed(0)
    feat0 = torch.randn(1, 8, 32, 32)
    weight = torch.zeros(1, 1, 32, 32)
    weight[..., 5:20, 9:25] = torch.rand(15, 16) + 0.1
    box = support_box(weight)
    assert box == (5, 20, 9, 25)
    handles0, handles, targets = torch.tensor([[40.0, 30.0]]), torch.tensor([[42.0, 31.0]]), torch.tensor([[50.0, 36.0]])
    grads = []
    for b in (None, box):
        feat = (feat0 + 0.3 * torch.randn(1, 8, 32, 32, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
        loss = warp_supervision_loss(feat, feat0, handles0, handles, targets, 64, sigma=6.0, weight=weight, box=b)
        loss.backward()
        grads.append((loss.detach(), feat.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert support_box(torch.zeros(1, 1, 4, 4)) is None


def test_partial_frames_of_eager_steps_are_not_overwritten_by_later_steps():
    # On a CPU the step hands its own tensors to the frame instead of copying them: a frame
    # drawn after later steps must still be the frame drawn right after its step.
    G = tiny_generator()
    config = DragConfig(max_steps=4)
    s = DragSession(G, G.ws_from_seed(0, 0.7), config)
    s.set_points([(28, 32)], [(40, 32)])
    states, at_once = [], []
    for state in s.drag(image_every=0, partial_frames=True):
        states.append(state)
        at_once.append(finish_frame(G, state.partial_frame, config))
    later = [finish_frame(G, state.partial_frame, config) for state in states]
    assert all((a == b).all() for a, b in zip(at_once, later))
    assert not (at_once[1] == at_once[-1]).all()      # the drag changed the image meanwhile


def test_the_conv_formulations_agree_at_a_batch_of_two():
    # modulated_conv2d_lrelu handles a batch by scaling activations (no per-sample weights).
    g = torch.Generator().manual_seed(3)
    x, weight = torch.randn(2, 4, 6, 6, generator=g), torch.randn(3, 4, 3, 3, generator=g)
    styles, bias = torch.randn(2, 4, generator=g), torch.randn(3, generator=g)
    fast = ops.modulated_conv2d_lrelu(x, weight, styles, bias, padding=1)
    plain = ops.bias_act(ops.modulated_conv2d(x, weight, styles, padding=1), bias, act="lrelu")
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_frames_off_cuda_are_drawn_eagerly_and_equal_render_state():
    from draggan.engine import render_state
    from draggan.engine.cuda_graphs import GraphedCall
    G = tiny_generator()
    s = DragSession(G, G.ws_from_seed(0, 0.7), DragConfig())
    assert not s._frames.enabled
    assert (s.render() == render_state(G, s.frame_state(), s.config)).all()
    calls = []
    run = GraphedCall(lambda t: calls.append(1) or t * 2, torch.device("cpu"))
    for i in range(4):
        torch.testing.assert_close(run(torch.full((2,), float(i))), torch.full((2,), 2.0 * i))
    assert len(calls) == 4 and not run.captured


def test_layers_a_drag_leaves_alone_give_the_same_gradient_when_detached():
    # const_from detaches the W+ layers no drag changes (they then take the weight-modulating path):
    # the image and the gradient of the layers before them must not change.
    G = tiny_generator()
    base = G.ws_from_seed(2, 0.7)
    k = 4
    results = []
    for const_from in (None, k):
        ws = base.clone().requires_grad_(True)
        img, features = G.synthesis(ws, return_features=True, const_from=const_from)
        (img.square().sum() + features[2].sum()).backward()
        results.append((img.detach(), ws.grad[:, :k]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    # Float rounding only: the two paths sum in another order (a 16-core CPU put one of 256 values 1.7e-4 apart).
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-3, atol=1e-5)


def test_a_drag_is_the_same_with_its_unchanged_layers_detached(monkeypatch):
    G = tiny_generator()
    runs = []
    for detach in (True, False):
        if not detach:
            monkeypatch.setattr(DragSession, "_const_layers", lambda self: None)
        s = DragSession(G, G.ws_from_seed(0, 0.7), DragConfig(max_steps=4))
        s.set_points([(28, 32)], [(40, 32)])
        assert (s._const_layers() is not None) == detach
        states = list(s.drag(image_every=0))
        runs.append((s.ws, [st.loss for st in states]))
    assert runs[0][1][0] == pytest.approx(runs[1][1][0], rel=1e-5)      # the same first step
    assert runs[0][1] == pytest.approx(runs[1][1], rel=1e-2)
    # Not bit-exact: Adam turns rounding differences of near-zero gradients into steps of up to ~lr.
    assert (runs[0][0] - runs[1][0]).abs().max() <= 4 * DragConfig().lr
    assert not torch.equal(runs[0][0], G.ws_from_seed(0, 0.7))


@pytest.mark.parametrize("up", [1, 2])
def test_the_fast_layer_gives_the_weights_bias_and_noise_the_plain_layers_gradients(up):
    # PTI and training tune the synthesis weights through the same layers.
    x, weight, styles, bias, noise = layer_inputs(seed=4)
    noise = noise[:y_size(x, up), :y_size(x, up)]
    grads = []
    for fast in (False, True):
        w, b, st = (t.clone().requires_grad_(True) for t in (weight, bias, styles))
        strength = torch.tensor(0.7, requires_grad=True)
        if fast:
            y = ops.modulated_conv2d_lrelu(x, w, st, b, noise=noise * strength, up=up, padding=1,
                                           resample_filter=ops.setup_filter(), clamp=1.5)
        else:
            y = plain_layer(x, w, st, b, noise * strength, up, 1.5, None)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        grads.append((w.grad, b.grad, st.grad, strength.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_generator_under_tuning_gets_the_same_weight_gradients_with_the_fast_layers(monkeypatch):
    G = tiny_generator().requires_grad_(True)
    ws = G.ws_from_seed(3, 0.7)
    grads = []
    for fast in (True, False):
        monkeypatch.setattr(ops, "FAST_LAYERS", fast)
        G.zero_grad(set_to_none=True)
        G.synthesis(ws).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in G.synthesis.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-3, atol=1e-6, msg=name)


def test_cudnn_autotuning_is_scoped_to_cuda_and_restored():
    from draggan.runtime import cudnn_autotuned
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_autotuned("cpu"), cudnn_autotuned("cuda", on=False):
            assert torch.backends.cudnn.benchmark is False          # a CPU run leaves cuDNN's policy alone
        with pytest.raises(RuntimeError), cudnn_autotuned(torch.device("cuda")):
            assert torch.backends.cudnn.benchmark is True
            raise RuntimeError("a step failed")
        assert torch.backends.cudnn.benchmark is False              # restored, also after an error
    finally:
        torch.backends.cudnn.benchmark = saved
