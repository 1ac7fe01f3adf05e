"""Checkpoint loading (NVIDIA .pkl, TF .pkl, rosinality .pt, project dir), registry and download cache.

Every fixture is built here from random tensors; generated images are compared
with plainly written reference implementations of the layers (NVIDIA layout and
rosinality layout), computed from the raw tensors, not from draggan's code.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import io
import math
import os
import pickle
import re
import socket
import threading
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from nvidia_fixture import block_resolutions, fake_nvidia_modules, fir_filter, nvidia_layout, write_nvidia_pickle, write_tf_pickle

from draggan.loaders import registry
from draggan.loaders.checkpoints import CheckpointError, load_generator, plain_load_failure
from draggan.loaders.download import DownloadError, download
from draggan.models.networks import Generator

CFG = dict(z_dim=12, w_dim=8, num_layers=2, img_resolution=16, img_channels=3,
           channel_base=128, channel_max=16, conv_clamp=1.5)  # channels 4:16, 8:16, 16:8


def marker_source(marker: Path) -> str:
    """Module source a malicious or careless loader would execute: it leaves a marker file."""
    return (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module_src was executed')\n"
            "class Generator:\n    pass\n")


# --------------------------------------------------------------------------- plain reference: NVIDIA layout

SQRT2 = math.sqrt(2)


def lrelu(x):
    return F.leaky_relu(x, 0.2) * SQRT2


def fir(x, pad0, pad1, gain):
    """Pad, then convolve each channel with the [1,3,3,1] filter times ``gain``."""
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    k = (fir_filter() * gain).flip([0, 1])[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(x, k, groups=x.shape[1])


def upsample_image(img):
    """2x: insert zeros, then filter (StyleGAN2's skip-connection upsampling)."""
    n, c, h, w = img.shape
    up = torch.zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = img
    return fir(up, 2, 1, 4)


def ref_fc(x, weight, bias, lr=1.0, act=False):
    y = x @ (weight * lr / math.sqrt(weight.shape[1])).t() + bias * lr
    return lrelu(y) if act else y


def ref_mapping(raw, z, num_layers):
    x = z / torch.sqrt(z.square().mean(1, keepdim=True) + 1e-8)
    for i in range(num_layers):
        x = ref_fc(x, raw[f"mapping.fc{i}.weight"], raw[f"mapping.fc{i}.bias"], lr=0.01, act=True)
    return x


def ref_modconv(x, weight, styles, demodulate=True, up=False):
    """Modulated conv, one sample at a time; up=True is a stride-2 transposed conv + FIR filter."""
    out = []
    for n in range(x.shape[0]):
        w = weight * styles[n][None, :, None, None]
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        xi = x[n:n + 1]
        if up:
            out.append(fir(F.conv_transpose2d(xi, w.transpose(0, 1), stride=2), 1, 1, 4))
        else:
            out.append(F.conv2d(xi, w, padding=w.shape[-1] // 2))
    return torch.cat(out)


def ref_synthesis(raw, ws, cfg, conv_clamp):
    clamp = (lambda t: t.clamp(-conv_clamp, conv_clamp)) if conv_clamp is not None else (lambda t: t)
    x = img = None
    wi = 0
    for res in block_resolutions(cfg):
        p = f"synthesis.b{res}"
        if res == 4:
            x, names = raw[f"{p}.const"][None].repeat(ws.shape[0], 1, 1, 1), ["conv1"]
        else:
            names = ["conv0", "conv1"]
        for name in names:
            q = f"{p}.{name}"
            styles = ref_fc(ws[:, wi], raw[f"{q}.affine.weight"], raw[f"{q}.affine.bias"])
            wi += 1
            y = ref_modconv(x, raw[f"{q}.weight"], styles, up=(name == "conv0"))
            y = y + raw[f"{q}.noise_const"] * raw[f"{q}.noise_strength"]
            x = clamp(lrelu(y + raw[f"{q}.bias"][None, :, None, None]))
        styles = ref_fc(ws[:, wi], raw[f"{p}.torgb.affine.weight"], raw[f"{p}.torgb.affine.bias"])
        styles = styles / math.sqrt(x.shape[1])
        y = clamp(ref_modconv(x, raw[f"{p}.torgb.weight"], styles, demodulate=False)
                  + raw[f"{p}.torgb.bias"][None, :, None, None])
        img = y if img is None else upsample_image(img) + y
    return img


def assert_matches_reference(G, raw, cfg, conv_clamp):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, cfg["z_dim"], generator=gen)
    with torch.no_grad():
        ws = G.mapping(z, None)
        w_ref = ref_mapping(raw, z, cfg["num_layers"])
        assert ws.shape == (3, G.num_ws, cfg["w_dim"])
        torch.testing.assert_close(ws[:, 0], w_ref, rtol=1e-4, atol=1e-4)
        w_trunc = G.mapping(z, None, truncation_psi=0.5)[:, 0]
        torch.testing.assert_close(w_trunc, raw["mapping.w_avg"] + 0.5 * (w_ref - raw["mapping.w_avg"]),
                                   rtol=1e-4, atol=1e-4)
        # Different W per layer, so a mix-up of layer indices cannot go unnoticed.
        ws_mixed = ws + 0.3 * torch.randn(ws.shape, generator=gen)
        ref = ref_synthesis(raw, ws_mixed, cfg, conv_clamp)
        img = G.synthesis(ws_mixed, noise_mode="const")                 # batched path
        img1 = G.synthesis(ws_mixed[:1], noise_mode="const")            # single-sample path
    assert img.shape == (3, cfg["img_channels"], cfg["img_resolution"], cfg["img_resolution"])
    assert ref.abs().max() > 0.1  # a meaningful image, not all zeros
    torch.testing.assert_close(img, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(img1, ref[:1], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- NVIDIA pickles


@pytest.fixture(scope="module")
def raw():
    return nvidia_layout(CFG, seed=0)


@pytest.fixture(scope="module")
def nvidia_pkl(tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("nv")
    marker = d / "MARKER"
    path = write_nvidia_pickle(d / "tiny.pkl", raw, CFG, marker_source(marker))
    return path, marker


@pytest.mark.parametrize("flat_kwargs", [False, True], ids=["ada-nested-kwargs", "sg3-flat-kwargs"])
def test_nvidia_pickle_loads_exactly_and_renders_like_reference(tmp_path, raw, flat_kwargs):
    marker = tmp_path / "MARKER"
    path = write_nvidia_pickle(tmp_path / "g.pkl", raw, CFG, marker_source(marker), flat_kwargs=flat_kwargs)
    assert "torch_utils.persistence" not in __import__("sys").modules  # fakes are gone before loading
    G = load_generator(path)

    assert not marker.exists(), "module_src from the pickle was executed"
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    # Architecture comes from G_ema's init_kwargs (file name says nothing).
    assert (G.cfg.z_dim, G.cfg.w_dim, G.cfg.img_resolution, G.cfg.mapping_layers) == (12, 8, 16, 2)
    assert (G.cfg.channel_base, G.cfg.channel_max, G.cfg.conv_clamp) == (128, 16, 1.5)
    # Every tensor of G_ema is used, unchanged; ours has nothing the pickle did not provide
    # (apart from filters, which NVIDIA repeats per layer and we check instead).
    sd = G.state_dict()
    for key, value in raw.items():
        if key in sd:
            torch.testing.assert_close(sd[key], value, rtol=0, atol=0)
        else:
            assert key.endswith("resample_filter")
    assert set(sd) - set(raw) == set()
    assert_matches_reference(G, raw, CFG, conv_clamp=1.5)


def test_nvidia_pickle_protocol_2_and_G_ema_not_G(tmp_path, raw):
    path = write_nvidia_pickle(tmp_path / "p2.pkl", raw, CFG, "pass\n", protocol=2)
    G = load_generator(path)
    # The fixture's G is G_ema + 0.5: G_ema must be the one taken.
    torch.testing.assert_close(G.synthesis.b4.const, raw["synthesis.b4.const"], rtol=0, atol=0)


def test_nvidia_pickle_without_noise_or_w_avg(tmp_path, raw):
    # use_noise=False layers have no noise tensors; w_avg_beta=None generators have no w_avg.
    bare = OrderedDict((k, v) for k, v in raw.items()
                       if not k.endswith(("noise_const", "noise_strength")) and k != "mapping.w_avg")
    G = load_generator(write_nvidia_pickle(tmp_path / "bare.pkl", bare, CFG, "pass\n"))
    silent = OrderedDict((k, torch.zeros_like(v) if k.endswith(("noise_const", "noise_strength")) else v)
                         for k, v in raw.items())
    with torch.no_grad():
        w_mean = ref_mapping(raw, torch.randn(20_000, CFG["z_dim"], generator=torch.Generator().manual_seed(9)),
                             CFG["num_layers"]).mean(0)
    assert (G.mapping.w_avg - w_mean).abs().max() < 0.05 * w_mean.abs().max()
    silent["mapping.w_avg"] = G.mapping.w_avg.clone()
    assert_matches_reference(G, silent, CFG, conv_clamp=1.5)


def test_missing_and_left_over_tensors_are_reported(tmp_path, raw):
    short = OrderedDict((k, v) for k, v in raw.items() if k != "synthesis.b8.conv0.affine.bias")
    path = write_nvidia_pickle(tmp_path / "short.pkl", short, CFG, "pass\n")
    with pytest.raises(CheckpointError, match=r"missing: synthesis\.b8\.conv0\.affine\.bias"):
        load_generator(path)
    extra = OrderedDict(raw)
    extra["synthesis.b8.conv1.unknown_gain"] = torch.ones(3)
    path = write_nvidia_pickle(tmp_path / "extra.pkl", extra, CFG, "pass\n")
    with pytest.raises(CheckpointError, match=r"left over: synthesis\.b8\.conv1\.unknown_gain"):
        load_generator(path)


def test_unsupported_architectures_are_refused(tmp_path, raw):
    path = write_nvidia_pickle(tmp_path / "resnet.pkl", raw, {**CFG, "architecture": "resnet"}, "pass\n")
    with pytest.raises(CheckpointError, match="architecture 'resnet' is not supported"):
        load_generator(path)
    path = write_nvidia_pickle(tmp_path / "ws.pkl", raw, CFG, "pass\n", root_attrs={"num_ws": 7})
    with pytest.raises(CheckpointError, match="uses 7 W vectors"):
        load_generator(path)


def test_stylegan3_generator_is_refused_clearly(tmp_path):
    with fake_nvidia_modules() as ns:
        def mod(cls, children=(), **attrs):
            return ns.Persistent(cls, dict(_parameters=OrderedDict(), _buffers=OrderedDict(),
                                           _modules=OrderedDict(children), _init_kwargs=ns.EasyDict(), **attrs),
                                 "pass\n")
        synthesis = mod("SynthesisNetwork", [("input", mod("SynthesisInput")), ("L0_36_512", mod("SynthesisLayer"))])
        G = mod("Generator", [("synthesis", synthesis), ("mapping", mod("MappingNetwork"))], num_ws=16)
        path = tmp_path / "sg3.pkl"
        path.write_bytes(pickle.dumps({"G_ema": G}, protocol=4))
    with pytest.raises(CheckpointError, match="StyleGAN3.*Only StyleGAN2-architecture pickles are supported"):
        load_generator(path)


class _Evil:
    """Pickles as a call to ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "nested-in-module-state"])
def test_malicious_pickles_are_refused_without_running(tmp_path, kind):
    marker = tmp_path / "PWNED"
    if kind == "os.system":
        payload = {"G_ema": _Evil(os.system, f"touch {marker}")}
    elif kind == "builtins.exec":
        payload = {"G_ema": _Evil(exec, f"open({str(marker)!r}, 'w').write('x')")}
    path = tmp_path / "evil.pkl"
    if kind == "nested-in-module-state":
        with fake_nvidia_modules() as ns:
            state = dict(_parameters=OrderedDict(), _buffers=OrderedDict(), _modules=OrderedDict(),
                         _init_kwargs=ns.EasyDict(z_dim=_Evil(exec, f"open({str(marker)!r}, 'w')")))
            path.write_bytes(pickle.dumps({"G_ema": ns.Persistent("Generator", state, "pass\n")}, protocol=4))
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(CheckpointError, match=r"refused to load: the pickle asks for '(posix|os|nt|builtins)\.(system|exec)'"):
        load_generator(path)
    assert not marker.exists()


def test_malicious_torch_file_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _Evil(exec, f"open({str(marker)!r}, 'w')")}, path)
    with pytest.raises(CheckpointError, match=r"refused to load: the file asks for '(builtins\.)?exec'.*Nothing from the "
                                              "file was executed") as refused:
        load_generator(path)
    assert not marker.exists()
    assert not loader_internals(str(refused.value))


# What must never reach a user from torch.load or the unpickler: C++ sources, bug-report requests, and above
# all the advice to re-run torch.load with weights_only=False (the path that runs code from the file).
LOADER_INTERNALS = ("weights_only", "enforce fail", "could this error message be improved", "pytorchstreamreader",
                    "miniz", "inline_container", "please file an issue", "add_safe_globals", "traceback",
                    "unpicklingerror", "runtimeerror", "attributeerror", "torch.load", "report a bug")


def loader_internals(message: str) -> list[str]:
    return [w for w in LOADER_INTERNALS if w in message.lower()]


class _Blob:
    """Pickles as torch.storage._load_from_bytes(data): how NVIDIA pickles embed tensor storages."""

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


def _torch_bytes(obj, legacy=False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _bad_checkpoints(marker: Path) -> dict[str, bytes]:
    """Hostile and broken checkpoint files: each must be refused, in words, running nothing."""
    run = _Evil(exec, f"open({str(marker)!r}, 'w').write('x')")
    good = _torch_bytes({"g_ema": {"w": torch.zeros(4)}})
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    return {
        "torch-exec.pt": _torch_bytes({"g_ema": run}),
        "torch-exec-legacy.pt": _torch_bytes({"g_ema": run}, legacy=True),
        "torch-truncated.pt": good[: len(good) // 2],
        "torch-damaged.pt": good[:200] + b"\0" * 300 + good[500:],
        "zip-not-torch.pt": zipped.getvalue(),
        "legacy-magic-then-garbage.pt": b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19" + b"garbage" * 10,
        "pickle-storage-runs-exec.pkl": pickle.dumps({"G_ema": _Blob(_torch_bytes(run, legacy=True))}, protocol=4),
        "pickle-storage-garbage.pkl": pickle.dumps({"G_ema": _Blob(b"garbage bytes")}, protocol=4),
        "pickle-storage-truncated.pkl": pickle.dumps({"G_ema": _Blob(good[:300])}, protocol=4),
        "pickle-rebuild-wrong-args.pkl": pickle.dumps(
            {"G_ema": _Evil(torch._utils._rebuild_tensor_v2, "a", "b", "c", "d", "e", "f")}, protocol=4),
        "pickle-os-system.pkl": pickle.dumps({"G_ema": _Evil(os.system, f"touch {marker}")}, protocol=4),
        "pickle-truncated.pkl": pickle.dumps({"G_ema": 1}, protocol=4)[:-3],
    }


def test_hostile_checkpoints_are_refused_in_plain_words(tmp_path):
    marker = tmp_path / "PWNED"
    for name, data in _bad_checkpoints(marker).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as refused:
            load_generator(path)
        message = str(refused.value)
        assert not loader_internals(message), (name, message)
        assert message.startswith(f"{path}: ") and message.endswith("."), (name, message)
        if "exec" in name or "system" in name:
            assert re.search(r"refused to load: the (file|pickle) asks for '((builtins|posix|os|nt)\.)?(exec|system)'",
                             message), (name, message)
        assert not marker.exists(), name


def test_the_loader_never_advises_the_unsafe_path():
    """Whatever torch.load said, the sentence made of it names neither weights_only nor PyTorch internals."""
    torch_texts = [
        "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument in "
        "`torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will likely "
        "succeed, but it can result in arbitrary code execution.\n\nTrying to load unsupported GLOBAL posix.system",
        "[enforce fail at inline_container.cc:180] . file in archive is not in a subdirectory: a.txt",
        "PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal miniz "
        "error.",
        "setStorage: sizes [2], strides [1] out of bounds. Could this error message be improved? If so, please "
        "report an enhancement request to PyTorch.",
        "Please file an issue with the following so that we can make `weights_only=True` compatible with your use "
        "case: WeightsUnpickler error: Unsupported operand 103",
    ]
    for text in torch_texts:
        for error in (pickle.UnpicklingError(text), RuntimeError(text)):
            sentence = plain_load_failure(error)
            assert not loader_internals(sentence) and "weights_only=False" not in sentence, sentence


def test_tensorflow_stylegan2_pickle_is_converted(tmp_path, raw):
    marker = tmp_path / "MARKER"
    path = write_tf_pickle(tmp_path / "tf.pkl", raw, CFG, marker_source(marker))
    G = load_generator(path)
    assert not marker.exists()
    assert G.cfg.conv_clamp is None and G.cfg.channel_base == 128
    assert_matches_reference(G, raw, CFG, conv_clamp=None)


# --------------------------------------------------------------------------- rosinality

ROS = dict(style_dim=8, n_mlp=2, size=16, channels={4: 16, 8: 16, 16: 8})


def make_kernel4():
    return fir_filter() * 4


def rosinality_state(seed=0):
    """Random g_ema state dict with rosinality's names and shapes."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, scale=1.0: torch.randn(*s, generator=g) * scale
    sd, d, ch = OrderedDict(), ROS["style_dim"], ROS["channels"]
    for i in range(1, ROS["n_mlp"] + 1):
        sd[f"style.{i}.weight"] = rnd(d, d, scale=100.0)
        sd[f"style.{i}.bias"] = rnd(d, scale=10.0)
    sd["input.input"] = rnd(1, ch[4], 4, 4)

    def styled(prefix, cin, cout, up):
        sd[f"{prefix}.conv.weight"] = rnd(1, cout, cin, 3, 3)
        sd[f"{prefix}.conv.modulation.weight"] = rnd(cin, d)
        sd[f"{prefix}.conv.modulation.bias"] = 1 + rnd(cin, scale=0.2)
        if up:
            sd[f"{prefix}.conv.blur.kernel"] = make_kernel4()
        sd[f"{prefix}.noise.weight"] = rnd(1, scale=0.5)
        sd[f"{prefix}.activate.bias"] = rnd(cout, scale=0.3)

    def rgb(prefix, cin, up):
        if up:
            sd[f"{prefix}.upsample.kernel"] = make_kernel4()
        sd[f"{prefix}.conv.weight"] = rnd(1, 3, cin, 1, 1)
        sd[f"{prefix}.conv.modulation.weight"] = rnd(cin, d)
        sd[f"{prefix}.conv.modulation.bias"] = 1 + rnd(cin, scale=0.2)
        sd[f"{prefix}.bias"] = rnd(1, 3, 1, 1, scale=0.1)

    styled("conv1", ch[4], ch[4], False)
    rgb("to_rgb1", ch[4], False)
    res_list = [8, 16]
    for k, res in enumerate(res_list):
        styled(f"convs.{2 * k}", ch[res // 2], ch[res], True)
        styled(f"convs.{2 * k + 1}", ch[res], ch[res], False)
        rgb(f"to_rgbs.{k}", ch[res], True)
    for n in range(1 + 2 * len(res_list)):
        r = 2 ** ((n + 5) // 2)
        sd[f"noises.noise_{n}"] = rnd(1, 1, r, r)
    return sd


def ros_linear(x, weight, bias, lr=1.0, act=False):
    """rosinality's EqualLinear (+ fused leaky ReLU)."""
    out = F.linear(x, weight * (1 / math.sqrt(weight.shape[1])) * lr)
    if act:
        return F.leaky_relu(out + bias * lr, 0.2) * 2 ** 0.5
    return out + bias * lr


def ros_style(sd, z):
    x = z * torch.rsqrt(torch.mean(z ** 2, dim=1, keepdim=True) + 1e-8)
    for i in range(1, ROS["n_mlp"] + 1):
        x = ros_linear(x, sd[f"style.{i}.weight"], sd[f"style.{i}.bias"], lr=0.01, act=True)
    return x


def ros_modconv(sd, prefix, x, style, demodulate=True, upsample=False):
    """rosinality's fused ModulatedConv2d: batch folded into groups."""
    batch, cin, h, w = x.shape
    weight = sd[f"{prefix}.conv.weight"]
    _, cout, _, k, _ = weight.shape
    s = ros_linear(style, sd[f"{prefix}.conv.modulation.weight"], sd[f"{prefix}.conv.modulation.bias"])
    weight = (1 / math.sqrt(cin * k * k)) * weight * s.view(batch, 1, cin, 1, 1)
    if demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, cout, 1, 1, 1)
    if upsample:
        weight = weight.transpose(1, 2).reshape(batch * cin, cout, k, k)
        out = F.conv_transpose2d(x.view(1, batch * cin, h, w), weight, padding=0, stride=2, groups=batch)
        out = out.view(batch, cout, *out.shape[2:])
        return fir(out, 1, 1, 4)  # Blur(pad=(1, 1)) with kernel * factor**2
    out = F.conv2d(x.view(1, batch * cin, h, w), weight.view(batch * cout, cin, k, k), padding=k // 2, groups=batch)
    return out.view(batch, cout, h, w)


def ros_forward(sd, latent):
    """rosinality Generator.forward(..., input_is_latent=True, randomize_noise=False)."""
    noise = [sd[f"noises.noise_{n}"] for n in range(5)]

    def styled(prefix, x, style, nz, up=False):
        out = ros_modconv(sd, prefix, x, style, upsample=up)
        out = out + sd[f"{prefix}.noise.weight"] * nz
        return F.leaky_relu(out + sd[f"{prefix}.activate.bias"].view(1, -1, 1, 1), 0.2) * 2 ** 0.5

    def to_rgb(prefix, x, style, skip=None):
        out = ros_modconv(sd, prefix, x, style, demodulate=False) + sd[f"{prefix}.bias"]
        return out if skip is None else out + upsample_image(skip)

    out = sd["input.input"].repeat(latent.shape[0], 1, 1, 1)
    out = styled("conv1", out, latent[:, 0], noise[0])
    skip = to_rgb("to_rgb1", out, latent[:, 1])
    i = 1
    for k in range(2):
        out = styled(f"convs.{2 * k}", out, latent[:, i], noise[1 + 2 * k], up=True)
        out = styled(f"convs.{2 * k + 1}", out, latent[:, i + 1], noise[2 + 2 * k])
        skip = to_rgb(f"to_rgbs.{k}", out, latent[:, i + 2], skip)
        i += 2
    return skip


@pytest.mark.parametrize("zipfile_format", [True, False], ids=["zip", "legacy"])
def test_rosinality_checkpoint_matches_rosinality_forward(tmp_path, zipfile_format):
    sd = rosinality_state()
    path = tmp_path / "550000.pt"
    torch.save({"g": sd, "g_ema": sd, "args": argparse.Namespace(size=16, n_mlp=2)}, path,
               _use_new_zipfile_serialization=zipfile_format)
    G = load_generator(path)
    assert G.cfg.conv_clamp is None and G.cfg.img_resolution == 16 and G.cfg.mapping_layers == 2
    assert G.cfg.channels(4) == 16 and G.cfg.channels(8) == 16 and G.cfg.channels(16) == 8

    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 8, generator=gen)
    with torch.no_grad():
        ws = G.mapping(z, None)
        torch.testing.assert_close(ws[:, 0], ros_style(sd, z), rtol=1e-4, atol=1e-4)
        latent = ws + 0.3 * torch.randn(ws.shape, generator=gen)
        ref = ros_forward(sd, latent)
        torch.testing.assert_close(G.synthesis(latent, noise_mode="const"), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(G.synthesis(latent[1:], noise_mode="const"), ref[1:], rtol=1e-4, atol=1e-4)
        # w_avg is not stored: it is the mean W over many z (checked against an independent sample).
        w_mean = ros_style(sd, torch.randn(20_000, 8, generator=gen)).mean(0)
    spread = ros_style(sd, torch.randn(1000, 8, generator=gen)).std(0)
    assert ((G.mapping.w_avg - w_mean).abs() < 0.05 * spread + 1e-6).all()


def test_rosinality_latent_avg_is_used_and_leftovers_refused(tmp_path):
    sd = rosinality_state()
    latent_avg = torch.randn(8)
    torch.save({"g_ema": sd, "latent_avg": latent_avg}, tmp_path / "conv.pt")
    G = load_generator(tmp_path / "conv.pt")
    torch.testing.assert_close(G.mapping.w_avg, latent_avg, rtol=0, atol=0)
    sd["convs.0.conv.surprise"] = torch.ones(2)
    torch.save({"g_ema": sd}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"left over.*convs\.0\.conv\.surprise"):
        load_generator(tmp_path / "odd.pt")


# --------------------------------------------------------------------------- project format and sources


def tiny_generator(seed=0):
    torch.manual_seed(seed)
    G = Generator(img_resolution=16, channel_base=128, channel_max=16, z_dim=8, w_dim=8, mapping_layers=2)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return G.eval()


def test_project_directory_and_its_files_load(tmp_path):
    tiny_generator().save_pretrained(tmp_path / "m")
    expected = Generator.from_pretrained(tmp_path / "m")
    ws = expected.ws_from_seed(5)
    ref = expected.synthesis(ws)
    for src in (tmp_path / "m", tmp_path / "m" / "config.json", str(tmp_path / "m" / "model.safetensors")):
        G = load_generator(src)
        assert not G.training
        torch.testing.assert_close(G.synthesis(ws), ref, rtol=0, atol=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_generator(tmp_path / "empty")


def test_unknown_sources_get_clear_messages(tmp_path):
    with pytest.raises(CheckpointError, match="not a known model name.*stylegan2-ffhq-512x512"):
        load_generator("no-such-model")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="unrecognised file format"):
        load_generator(junk)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps({"G_ema": 1}, protocol=4)[:-3])
    with pytest.raises(CheckpointError, match="not a readable StyleGAN2 pickle"):
        load_generator(trunc)


# --------------------------------------------------------------------------- registry


def test_registry_lists_the_draggan_models_with_sources_and_licences():
    ngc = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
    expected = {
        "stylegan2-ffhq-512x512": (ngc + "stylegan2-ffhq-512x512.pkl", 512),
        "stylegan2-afhqcat-512x512": (ngc + "stylegan2-afhqcat-512x512.pkl", 512),
        "stylegan2-car-config-f": ("http://d36zk2xti64re0.cloudfront.net/stylegan2/networks/stylegan2-car-config-f.pkl", 512),
        "stylegan2-cat-config-f": ("http://d36zk2xti64re0.cloudfront.net/stylegan2/networks/stylegan2-cat-config-f.pkl", 256),
        "stylegan2-lions-512": ("https://storage.googleapis.com/self-distilled-stylegan/lions_512_pytorch.pkl", 512),
        "stylegan2-dogs-1024": ("https://storage.googleapis.com/self-distilled-stylegan/dogs_1024_pytorch.pkl", 1024),
        "stylegan2-horses-256": ("https://storage.googleapis.com/self-distilled-stylegan/horses_256_pytorch.pkl", 256),
        "stylegan2-elephants-512": ("https://storage.googleapis.com/self-distilled-stylegan/elephants_512_pytorch.pkl", 512),
    }
    for name, (url, res) in expected.items():
        info = registry.get_model(name)
        assert (info.url, info.resolution) == (url, res)
        assert info.licence and info.description
    assert "NVIDIA Source Code License-NC" in registry.get_model("stylegan2-ffhq-512x512").licence
    assert "Self-Distilled" in registry.get_model("stylegan2-dogs-1024").licence
    assert registry.get_model("stylegan2-ffhq-512x512.pkl").name == "stylegan2-ffhq-512x512"  # by file name
    celeba = registry.get_model("celeba128")
    assert celeba.path == "checkpoints/celeba128" and celeba.resolution == 128 and "CelebA" in celeba.licence


def test_bundled_model_missing_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "REPO_ROOT", tmp_path)
    with pytest.raises(CheckpointError, match=f"celeba128.*{tmp_path / 'checkpoints' / 'celeba128'}"):
        load_generator("celeba128")
    tiny_generator().save_pretrained(tmp_path / "checkpoints" / "celeba128")
    assert load_generator("celeba128").img_resolution == 16


def test_list_models_and_table_show_cache_state(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "REPO_ROOT", tmp_path)
    rows = {r["name"]: r for r in registry.list_models(cache_dir=tmp_path / "cache")}
    assert not rows["stylegan2-lions-512"]["available"]
    assert rows["stylegan2-lions-512"]["path"] == str(tmp_path / "cache" / "stylegan2_lions_512_pytorch.pkl")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "stylegan2_lions_512_pytorch.pkl").write_bytes(b"x")
    rows = {r["name"]: r for r in registry.list_models(cache_dir=tmp_path / "cache")}
    assert rows["stylegan2-lions-512"]["available"] and not rows["stylegan2-dogs-1024"]["available"]
    table = registry.format_model_table(cache_dir=tmp_path / "cache")
    lions = next(line for line in table.splitlines() if line.startswith("stylegan2-lions-512 "))
    assert "512" in lions and "cached" in lions
    assert "not downloaded" in next(line for line in table.splitlines() if line.startswith("stylegan2-dogs-1024 "))
    assert "missing" in next(line for line in table.splitlines() if line.startswith("celeba128 "))


# --------------------------------------------------------------------------- downloads


class _Server:
    """A local HTTP server with a good file, a truncated one, and a request log."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                truncated = self.path.startswith("/truncated")
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if truncated else body)
                if truncated:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(nvidia_pkl):
    body = nvidia_pkl[0].read_bytes()
    srv = _Server({"/nv.pkl": body, "/truncated.pkl": body, "/other/nv.pkl": body})
    yield srv
    srv.close()


def _files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_load_from_url_caches_the_file(tmp_path, server, raw, nvidia_pkl):
    calls = []
    G = load_generator(server.url + "/nv.pkl", cache_dir=tmp_path, progress=lambda d, t: calls.append((d, t)))
    size = nvidia_pkl[0].stat().st_size
    assert calls[-1] == (size, size)
    assert_matches_reference(G, raw, CFG, conv_clamp=1.5)
    n = len(server.requests)
    load_generator(server.url + "/nv.pkl", cache_dir=tmp_path, progress=False)
    assert len(server.requests) == n  # served from the cache
    load_generator(server.url + "/other/nv.pkl", cache_dir=tmp_path, progress=False)
    assert len(_files(tmp_path)) == 2  # same file name, different URL: no collision
    assert not nvidia_pkl[1].exists()


def test_registry_entry_downloads_with_checksum(tmp_path, server, monkeypatch, nvidia_pkl):
    digest = hashlib.sha256(nvidia_pkl[0].read_bytes()).hexdigest()
    good = registry.ModelInfo("tiny-test", 16, "test", "tiny", url=server.url + "/nv.pkl",
                              filename="tiny-test.pkl", sha256=digest)
    bad = registry.ModelInfo("tiny-bad", 16, "test", "tiny", url=server.url + "/nv.pkl",
                             filename="tiny-bad.pkl", sha256="0" * 64)
    monkeypatch.setitem(registry.MODELS, "tiny-test", good)
    monkeypatch.setitem(registry.MODELS, "tiny-bad", bad)

    G = load_generator("tiny-test", cache_dir=tmp_path, progress=False)
    assert G.img_resolution == 16 and (tmp_path / "tiny-test.pkl").is_file()
    n = len(server.requests)
    load_generator("tiny-test", cache_dir=tmp_path, progress=False)
    assert len(server.requests) == n
    assert {r["name"]: r["available"] for r in registry.list_models(tmp_path)}["tiny-test"]

    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        load_generator("tiny-bad", cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "tiny-bad.pkl").exists()
    assert not any(".part" in f for f in _files(tmp_path))


def test_truncated_download_leaves_nothing(tmp_path, server):
    dest = tmp_path / "cache" / "t.pkl"
    with pytest.raises(DownloadError, match=str(dest)):
        download(server.url + "/truncated.pkl", dest, progress=False)
    assert _files(tmp_path) == []
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url + "/missing.pkl", dest, progress=False)
    assert _files(tmp_path) == []


@contextlib.contextmanager
def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    yield port


@pytest.mark.parametrize("how", ["DRAGGAN_OFFLINE", "HF_HUB_OFFLINE", "closed-port", "unroutable"])
def test_offline_fails_fast_and_says_where_to_put_the_file(tmp_path, monkeypatch, how):
    monkeypatch.delenv("DRAGGAN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("DRAGGAN_CONNECT_TIMEOUT", "1")
    info = registry.ModelInfo("tiny-offline", 16, "test", "tiny", url="http://10.255.255.1/m.pkl",
                              filename="tiny-offline.pkl")
    with _closed_port() as port:
        if how in ("DRAGGAN_OFFLINE", "HF_HUB_OFFLINE"):
            monkeypatch.setenv(how, "1")
        elif how == "closed-port":
            info = registry.ModelInfo("tiny-offline", 16, "test", "tiny", url=f"http://127.0.0.1:{port}/m.pkl",
                                      filename="tiny-offline.pkl")
        monkeypatch.setitem(registry.MODELS, "tiny-offline", info)
        t0 = time.perf_counter()
        with pytest.raises(DownloadError) as err:
            load_generator("tiny-offline", cache_dir=tmp_path)
        elapsed = time.perf_counter() - t0
    assert elapsed < 3.0
    assert str(tmp_path / "tiny-offline.pkl") in str(err.value)
    assert info.url in str(err.value)
    assert _files(tmp_path) == []
