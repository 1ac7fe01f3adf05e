"""Build NVIDIA-style StyleGAN2 checkpoints for tests, without NVIDIA's code.

``fake_nvidia_modules()`` puts stand-ins for ``torch_utils.persistence`` and
``dnnlib.util`` into ``sys.modules`` (only while a fixture is being written), so
that pickling produces exactly the globals a real ``.pkl`` refers to:

* each network module pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
  with ``meta = {type, version, module_src, class_name, state}``, ``state`` being
  the module's ``__dict__`` (taken from a real ``torch.nn.Module`` so all of its
  bookkeeping fields are there), sub-modules nested the same way;
* init kwargs are ``dnnlib.util.EasyDict``;
* tensors use torch's standard pickling (storages as legacy ``torch.save`` bytes).

The layout of the tensors (``nvidia_layout``) is written from the StyleGAN2
architecture: every SynthesisLayer and SynthesisBlock carries its own
``resample_filter`` buffer, as in NVIDIA's networks.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import torch

FIR = [1.0, 3.0, 3.0, 1.0]


def fir_filter() -> torch.Tensor:
    f = torch.tensor(FIR)
    f = torch.outer(f, f)
    return f / f.sum()


# --------------------------------------------------------------------------- fake NVIDIA modules

_FAKE_NAMES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util", "dnnlib.tflib", "dnnlib.tflib.network")


@contextlib.contextmanager
def fake_nvidia_modules():
    """Yield a namespace with ``Persistent``, ``EasyDict``, ``TFNetwork`` whose pickles look like NVIDIA's."""
    saved = {n: sys.modules.get(n) for n in _FAKE_NAMES}
    mods = {n: types.ModuleType(n) for n in _FAKE_NAMES}

    def _reconstruct_persistent_obj(meta):  # never called by the loader under test
        raise AssertionError("the fake reconstructor must never run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    mods["dnnlib.util"].EasyDict = EasyDict
    mods["dnnlib"].EasyDict = EasyDict

    class Persistent:
        """Pickles as NVIDIA's persistence decorator does."""

        def __init__(self, class_name, state, module_src):
            self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

        def __reduce__(self):
            return _reconstruct_persistent_obj, (self.meta,), None

    class Network:
        """Pickles as dnnlib.tflib.network.Network: NEWOBJ + BUILD(state dict)."""

        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    mods["dnnlib.tflib.network"].Network = Network
    mods["torch_utils"].persistence = mods["torch_utils.persistence"]
    mods["dnnlib"].util = mods["dnnlib.util"]
    mods["dnnlib"].tflib = mods["dnnlib.tflib"]
    mods["dnnlib.tflib"].network = mods["dnnlib.tflib.network"]
    sys.modules.update(mods)
    try:
        yield types.SimpleNamespace(Persistent=Persistent, EasyDict=EasyDict, TFNetwork=Network)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


# --------------------------------------------------------------------------- NVIDIA tensor layout


def channels(cfg, res):
    return min(cfg["channel_base"] // res, cfg["channel_max"])


def block_resolutions(cfg):
    return [2 ** i for i in range(2, int(math.log2(cfg["img_resolution"])) + 1)]


def nvidia_layout(cfg, seed=0) -> dict:
    """Random tensors named and shaped like a stylegan2-ada-pytorch G_ema (non-trivial values everywhere)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s, scale=1.0: torch.randn(*s, generator=g) * scale
    raw = OrderedDict()
    feats = [cfg["z_dim"]] + [cfg["w_dim"]] * cfg["num_layers"]
    for i in range(cfg["num_layers"]):
        raw[f"mapping.fc{i}.weight"] = rnd(feats[i + 1], feats[i], scale=100.0)  # stored / lr_multiplier
        raw[f"mapping.fc{i}.bias"] = rnd(feats[i + 1], scale=10.0)
    raw["mapping.w_avg"] = rnd(cfg["w_dim"])
    w = cfg["w_dim"]
    for res in block_resolutions(cfg):
        p, out = f"synthesis.b{res}", channels(cfg, res)
        raw[f"{p}.resample_filter"] = fir_filter()
        layers = [("conv1", out)] if res == 4 else [("conv0", channels(cfg, res // 2)), ("conv1", out)]
        if res == 4:
            raw[f"{p}.const"] = rnd(out, 4, 4)
        for name, cin in layers:
            q = f"{p}.{name}"
            raw[f"{q}.weight"] = rnd(out, cin, 3, 3)
            raw[f"{q}.noise_strength"] = rnd(()) * 0.5
            raw[f"{q}.bias"] = rnd(out, scale=0.3)
            raw[f"{q}.resample_filter"] = fir_filter()
            raw[f"{q}.noise_const"] = rnd(res, res)
            raw[f"{q}.affine.weight"] = rnd(cin, w)
            raw[f"{q}.affine.bias"] = 1 + rnd(cin, scale=0.2)
        raw[f"{p}.torgb.weight"] = rnd(cfg["img_channels"], out, 1, 1)
        raw[f"{p}.torgb.bias"] = rnd(cfg["img_channels"], scale=0.1)
        raw[f"{p}.torgb.affine.weight"] = rnd(out, w)
        raw[f"{p}.torgb.affine.bias"] = 1 + rnd(out, scale=0.2)
    return raw


# Which NVIDIA class each module path is, and which tensors are buffers (the rest are parameters).
_BUFFERS = ("resample_filter", "noise_const", "w_avg")


def _class_of(path):
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return "Generator"
    if path == "mapping":
        return "MappingNetwork"
    if path == "synthesis":
        return "SynthesisNetwork"
    if last.startswith("fc") or last == "affine":
        return "FullyConnectedLayer"
    if last.startswith("b") and last[1:].isdigit():
        return "SynthesisBlock"
    if last in ("conv0", "conv1"):
        return "SynthesisLayer"
    if last == "torgb":
        return "ToRGBLayer"
    raise KeyError(path)


def module_tree(ns, raw, cfg, module_src, init_kwargs_for, attrs_for=lambda path: {}):
    """Nested ``Persistent`` objects holding ``raw`` the way NVIDIA's modules hold their tensors."""
    paths = {""}
    for key in raw:
        parts = key.split(".")[:-1]
        for i in range(len(parts) + 1):
            paths.add(".".join(parts[:i]))

    def build(path):
        m = torch.nn.Module()  # only to get a realistic __dict__ (hooks, flags, ...)
        prefix = f"{path}." if path else ""
        for key, value in raw.items():
            if key.startswith(prefix) and "." not in key[len(prefix):]:
                name = key[len(prefix):]
                if name in _BUFFERS:
                    m.register_buffer(name, value.clone())
                else:
                    m.register_parameter(name, torch.nn.Parameter(value.clone(), requires_grad=False))
        state = dict(vars(m))
        children = sorted(p for p in paths if p and p != path and p.startswith(prefix) and "." not in p[len(prefix):])
        state["_modules"] = OrderedDict((c[len(prefix):], build(c)) for c in children)
        state["_init_args"] = ()
        state["_init_kwargs"] = init_kwargs_for(path)
        state.update(attrs_for(path))
        return ns.Persistent(_class_of(path), state, module_src)

    return build("")


def generator_init_kwargs(ns, cfg, flat=False):
    """G_ema's init kwargs: stylegan2-ada nests synthesis_kwargs; stylegan3's networks_stylegan2 is flat."""
    syn = ns.EasyDict(channel_base=cfg["channel_base"], channel_max=cfg["channel_max"], num_fp16_res=0,
                      conv_clamp=cfg["conv_clamp"], architecture=cfg.get("architecture", "skip"))
    kw = ns.EasyDict(z_dim=cfg["z_dim"], c_dim=0, w_dim=cfg["w_dim"], img_resolution=cfg["img_resolution"],
                     img_channels=cfg["img_channels"], mapping_kwargs=ns.EasyDict(num_layers=cfg["num_layers"]))
    if flat:
        kw.update(syn)
    else:
        kw["synthesis_kwargs"] = syn
    return kw


def write_nvidia_pickle(path, raw, cfg, module_src, flat_kwargs=False, extra_top_level=None, protocol=4,
                        root_attrs=None):
    """Write a ``network-snapshot``-like pickle: G, D, G_ema, augment_pipe, training_set_kwargs."""
    num_ws = 2 * len(block_resolutions(cfg))

    def attrs_for(path):
        if path == "":
            return dict(z_dim=cfg["z_dim"], c_dim=0, w_dim=cfg["w_dim"], img_resolution=cfg["img_resolution"],
                        img_channels=cfg["img_channels"], num_ws=num_ws) | (root_attrs or {})
        if path.endswith(("conv0", "conv1")):
            return dict(conv_clamp=cfg["conv_clamp"], activation="lrelu", use_noise=True,
                        up=2 if path.endswith("conv0") else 1)
        return {}

    with fake_nvidia_modules() as ns:
        kwargs = lambda path: generator_init_kwargs(ns, cfg, flat_kwargs) if path == "" else ns.EasyDict()
        G_ema = module_tree(ns, raw, cfg, module_src, kwargs, attrs_for)
        perturbed = OrderedDict((k, v + 0.5) for k, v in raw.items())  # G differs from G_ema
        G = module_tree(ns, perturbed, cfg, module_src, kwargs, attrs_for)
        D = ns.Persistent("Discriminator", {"_parameters": OrderedDict(w=torch.nn.Parameter(torch.randn(3))),
                                            "_buffers": OrderedDict(), "_modules": OrderedDict(),
                                            "_init_kwargs": ns.EasyDict(c_dim=0)}, module_src)
        data = dict(G=G, D=D, G_ema=G_ema, augment_pipe=None,
                    training_set_kwargs=ns.EasyDict(path="~/datasets/x.zip", resolution=cfg["img_resolution"],
                                                    mean=np.float32(0.5), hist=np.arange(3, dtype=np.float64)),
                    **(extra_top_level or {}))
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)
    return path


def write_tf_pickle(path, raw, cfg, build_src):
    """A TensorFlow StyleGAN2 pickle (G, D, Gs) whose Gs holds ``raw`` converted to TF's layout."""
    a = lambda t: t.detach().numpy().astype(np.float32)
    mapping = [(f"Dense{i}/weight", a(raw[f"mapping.fc{i}.weight"]).T) for i in range(cfg["num_layers"])]
    mapping += [(f"Dense{i}/bias", a(raw[f"mapping.fc{i}.bias"])) for i in range(cfg["num_layers"])]
    syn = []
    for res in block_resolutions(cfg):
        p, t = f"synthesis.b{res}", f"{res}x{res}"
        log2 = int(math.log2(res))
        layers = [("conv1", "Conv", 0, False)] if res == 4 else [("conv0", "Conv0_up", 2 * log2 - 5, True),
                                                                 ("conv1", "Conv1", 2 * log2 - 4, False)]
        if res == 4:
            syn.append((f"{t}/Const/const", a(raw[f"{p}.const"])[None]))
        for name, tf, noise, up in layers:
            wt = a(raw[f"{p}.{name}.weight"]).transpose(2, 3, 1, 0)  # [out,in,k,k] -> [k,k,in,out]
            syn.append((f"{t}/{tf}/weight", wt[::-1, ::-1].copy() if up else wt))
            syn.append((f"{t}/{tf}/bias", a(raw[f"{p}.{name}.bias"])))
            syn.append((f"{t}/{tf}/noise_strength", a(raw[f"{p}.{name}.noise_strength"])))
            syn.append((f"{t}/{tf}/mod_weight", a(raw[f"{p}.{name}.affine.weight"]).T))
            syn.append((f"{t}/{tf}/mod_bias", a(raw[f"{p}.{name}.affine.bias"]) - 1))
            syn.append((f"noise{noise}", a(raw[f"{p}.{name}.noise_const"])[None, None]))
        syn.append((f"{t}/ToRGB/weight", a(raw[f"{p}.torgb.weight"]).transpose(2, 3, 1, 0)))
        syn.append((f"{t}/ToRGB/bias", a(raw[f"{p}.torgb.bias"])))
        syn.append((f"{t}/ToRGB/mod_weight", a(raw[f"{p}.torgb.affine.weight"]).T))
        syn.append((f"{t}/ToRGB/mod_bias", a(raw[f"{p}.torgb.affine.bias"]) - 1))
    static = dict(latent_size=cfg["z_dim"], dlatent_size=cfg["w_dim"], resolution=cfg["img_resolution"],
                  num_channels=cfg["img_channels"], mapping_layers=cfg["num_layers"],
                  fmap_base=cfg["channel_base"] // 2, fmap_max=cfg["channel_max"], truncation_psi=0.5)
    with fake_nvidia_modules() as ns:
        def net(name, variables, components=None, kwargs=None):
            return ns.TFNetwork(dict(version=4, name=name, static_kwargs=kwargs or {}, components=components or {},
                                     build_module_src=build_src, build_func_name="G_main", variables=variables))
        Gs = net("G_synthesis_stylegan2", [("dlatent_avg", a(raw["mapping.w_avg"]))], kwargs=static,
                 components=dict(mapping=net("G_mapping", mapping), synthesis=net("G_synthesis", syn)))
        D = net("D_stylegan2", [("Output/weight", np.zeros((4, 1), np.float32))])
        with open(path, "wb") as f:
            pickle.dump((Gs, D, Gs), f, protocol=2)
    return path
