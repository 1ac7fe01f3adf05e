"""Read NVIDIA StyleGAN2 pickles without running any code from them.

NVIDIA's stylegan2-ada-pytorch / stylegan3 ``.pkl`` files pickle each network
module through ``torch_utils.persistence``: the module becomes a call
``_reconstruct_persistent_obj(meta)`` where ``meta`` holds the *Python source*
of the module that defines the class (``module_src``), the ``class_name`` and
the instance ``state`` (its ``__dict__``: ``_init_kwargs``, ``_parameters``,
``_buffers``, ``_modules``, ...). NVIDIA's loader ``exec``s that source; a file
from the internet can therefore run anything.

Here the unpickler resolves globals through a short allow-list only. The
persistence call is mapped to ``ModuleRecord``, an inert record of class name +
state; the source text is kept as a string and never executed. Tensors come in
through torch's own rebuild functions (their storages are nested legacy
``torch.save`` blobs, loaded with ``weights_only=True``). Anything else in the
file is refused before it is called, and the error names it.

The record tree of ``G_ema`` is then checked (StyleGAN2 'skip' generator only),
its ``init_kwargs`` mapped to a ``GeneratorConfig`` and its tensors flattened
into a state dict that must load into ``draggan.models.networks.Generator`` exactly.

TensorFlow-era StyleGAN2 pickles (``dnnlib.tflib.network.Network``) are read the
same way and converted with the variable mapping of NVIDIA's ``legacy.py``.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
from pathlib import Path

import numpy as np
import torch

from ..models.networks import Generator, GeneratorConfig
from .convert import adopt_fixed_filters, estimate_w_avg, load_state_strict
from .errors import CheckpointError, plain_load_failure

# --------------------------------------------------------------------------- records


class ModuleRecord:
    """A pickled NVIDIA persistent module, as data: never instantiated, never executed."""

    def __init__(self, meta):
        meta = dict(meta) if isinstance(meta, dict) else {}
        self.type = meta.get("type")
        self.version = meta.get("version")
        self.class_name = str(meta.get("class_name"))
        self.module_src = meta.get("module_src")  # kept as text only
        state = meta.get("state")
        self.state = dict(state) if isinstance(state, dict) else {}

    @property
    def init_kwargs(self) -> dict:
        kwargs = self.state.get("_init_kwargs")
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    @property
    def init_args(self) -> tuple:
        args = self.state.get("_init_args")
        return tuple(args) if isinstance(args, (tuple, list)) else ()

    def children(self) -> dict:
        modules = self.state.get("_modules")
        return {k: v for k, v in modules.items() if v is not None} if isinstance(modules, dict) else {}

    def walk(self, prefix=""):
        """Yield (dotted name, record) for this record and all records below it."""
        yield prefix, self
        for name, child in self.children().items():
            if isinstance(child, ModuleRecord):
                yield from child.walk(f"{prefix}{name}.")

    def __repr__(self):
        return f"ModuleRecord({self.class_name})"


class AttrDict(dict):
    """Stands in for ``dnnlib.EasyDict`` (a dict with attribute access); plain data."""


class TFNetworkRecord:
    """A pickled ``dnnlib.tflib.network.Network`` (TensorFlow StyleGAN2), as data."""

    def __setstate__(self, state):
        self.state = dict(state) if isinstance(state, dict) else {}

    def variables(self, prefix="") -> dict:
        """All variables of this network and its components, as {'mapping/Dense0/weight': array}."""
        out = {}
        for name, value in self.state.get("variables", []) or []:
            out[prefix + str(name)] = value
        for name, comp in (self.state.get("components") or {}).items():
            if isinstance(comp, TFNetworkRecord):
                out.update(comp.variables(f"{prefix}{name}/"))
        return out


def _record_from_persistence(meta):
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj``: no exec."""
    return ModuleRecord(meta)


def _storage_from_bytes(data):
    """Replacement for ``torch.storage._load_from_bytes``: the blob is a legacy torch.save."""
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError("malformed tensor storage in the pickle")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _safe_globals() -> dict:
    safe = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("_codecs", "encode"): __import__("codecs").encode,  # bytes in protocol-2 pickles
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record_from_persistence,
        ("dnnlib.util", "EasyDict"): AttrDict,
        ("dnnlib", "EasyDict"): AttrDict,
        ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    if hasattr(torch._utils, "_rebuild_parameter_with_state"):
        safe[("torch._utils", "_rebuild_parameter_with_state")] = torch._utils._rebuild_parameter_with_state
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        safe[(mod, "_reconstruct")] = _numpy_reconstruct
        safe[(mod, "scalar")] = _numpy_scalar
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            safe[("torch", name)] = getattr(torch, name)
    return safe


def _numpy_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise CheckpointError(f"refused numpy array subclass {subtype!r} in the pickle")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise CheckpointError("refused a numpy object scalar in the pickle")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


_SAFE = _safe_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals a StyleGAN2 checkpoint needs."""

    def find_class(self, module, name):
        # Protocol 0-2 pickles name Python 2 modules ('__builtin__.set'); map them as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _SAFE[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused to load: the pickle asks for '{module}.{name}', which is not part of a "
                "StyleGAN2 checkpoint (loading it could run arbitrary code). Nothing from the file "
                "was executed.") from None

    def persistent_load(self, pid):
        raise CheckpointError("refused to load: the pickle uses persistent ids, which StyleGAN2 pickles never do")


def read_pickle(path_or_bytes):
    """Unpickle a NVIDIA checkpoint into plain data + ``ModuleRecord``s (nothing executed)."""
    name = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    try:
        if isinstance(path_or_bytes, (bytes, bytearray)):
            return RestrictedUnpickler(io.BytesIO(path_or_bytes)).load()
        with open(path_or_bytes, "rb") as f:
            return RestrictedUnpickler(f).load()
    except CheckpointError as e:
        raise CheckpointError(f"{name}: {e}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError,
            KeyError, RuntimeError, MemoryError) as e:

        reason = plain_load_failure(e)
        if not reason.startswith("refused"):
            reason = f"not a readable StyleGAN2 pickle: {reason}"
        raise CheckpointError(f"{name}: {reason}.") from e


# --------------------------------------------------------------------------- NVIDIA PyTorch pickles

_TOP_LEVEL_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def _tensor(value, what):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32) if value.is_floating_point() else value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, dtype=np.float32))
    raise CheckpointError(f"{what} is not a tensor (got {type(value).__name__})")


def flatten_state(record: ModuleRecord, prefix="") -> dict:
    """Parameters and persistent buffers of a record tree, with PyTorch's dotted names."""
    out = {}
    state = record.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if value is None or (kind == "_buffers" and name in skip):
                continue
            out[prefix + name] = _tensor(value, prefix + name)
    for name, child in record.children().items():
        if not isinstance(child, ModuleRecord):
            raise CheckpointError(f"submodule '{prefix}{name}' is not a StyleGAN2 module ({type(child).__name__})")
        out.update(flatten_state(child, f"{prefix}{name}."))
    return out


def _is_stylegan3(G: ModuleRecord) -> bool:
    names = {r.class_name for _, r in G.walk()}
    if "SynthesisInput" in names:
        return True
    synthesis = G.children().get("synthesis")
    return isinstance(synthesis, ModuleRecord) and any(k.startswith("L0_") or k == "input" for k in synthesis.children())


def _pick_generator(data, name) -> ModuleRecord:
    if isinstance(data, dict):
        G = data.get("G_ema")
        if G is None:
            keys = ", ".join(sorted(map(str, data))) or "none"
            raise CheckpointError(f"{name}: no 'G_ema' generator in this pickle (keys: {keys})")
    else:
        G = data
    if not isinstance(G, ModuleRecord):
        raise CheckpointError(f"{name}: not a NVIDIA StyleGAN2 network pickle (found {type(G).__name__})")
    return G


def config_from_record(G: ModuleRecord, name="checkpoint"):
    """Map ``G_ema``'s own init_kwargs (module attributes as fallback) to a ``GeneratorConfig``."""
    if _is_stylegan3(G):
        raise CheckpointError(
            f"{name}: this is a StyleGAN3 (alias-free) generator. Only StyleGAN2-architecture "
            "pickles are supported (e.g. stylegan2-*.pkl from NVIDIA's stylegan2-ada-pytorch or stylegan3 releases)")
    if G.class_name != "Generator":
        raise CheckpointError(f"{name}: 'G_ema' is a {G.class_name}, not a StyleGAN2 Generator")
    children = G.children()
    mapping, synthesis = children.get("mapping"), children.get("synthesis")
    if not isinstance(mapping, ModuleRecord) or not isinstance(synthesis, ModuleRecord):
        raise CheckpointError(f"{name}: the generator has no mapping/synthesis networks")

    kw = G.init_kwargs
    for key, value in zip(_TOP_LEVEL_ARGS, G.init_args):  # positional arguments, if any
        kw.setdefault(key, value)
    # stylegan2-ada-pytorch nests synthesis_kwargs; stylegan3's networks_stylegan2 passes them flat.
    syn_kw = dict(kw.get("synthesis_kwargs") or {})
    for key, value in kw.items():
        if key not in _TOP_LEVEL_ARGS and key not in ("mapping_kwargs", "synthesis_kwargs"):
            syn_kw.setdefault(key, value)
    map_kw = dict(kw.get("mapping_kwargs") or {})

    def top(key):
        value = kw.get(key, G.state.get(key))
        if value is None:
            raise CheckpointError(f"{name}: the generator does not record its '{key}'")
        return int(value)

    first_layer = next((r for n, r in G.walk() if r.class_name == "SynthesisLayer"), None)
    first_block = next((r for n, r in G.walk() if r.class_name == "SynthesisBlock"), None)
    layer_state = first_layer.state if first_layer else {}
    block_state = first_block.state if first_block else {}

    architecture = syn_kw.get("architecture", block_state.get("architecture", "skip"))
    if architecture != "skip":
        raise CheckpointError(
            f"{name}: synthesis architecture {architecture!r} is not supported; only StyleGAN2's "
            "default 'skip' generator is")
    for key, expected, attr in (("activation", "lrelu", layer_state.get("activation", "lrelu")),
                                ("resample_filter", [1, 3, 3, 1], [1, 3, 3, 1]),
                                ("kernel_size", 3, 3)):
        value = syn_kw.get(key, attr)
        if (list(value) if isinstance(value, (list, tuple)) else value) != expected:
            raise CheckpointError(f"{name}: synthesis {key}={value!r} is not supported (expected {expected!r})")
    if map_kw.get("activation", "lrelu") != "lrelu":
        raise CheckpointError(f"{name}: mapping activation {map_kw['activation']!r} is not supported")

    w_dim = top("w_dim")
    layer_features = map_kw.get("layer_features")
    if layer_features not in (None, w_dim):
        raise CheckpointError(f"{name}: mapping layer_features={layer_features} != w_dim={w_dim} is not supported")
    num_layers = map_kw.get("num_layers")
    if num_layers is None:
        num_layers = mapping.state.get("num_layers")
    if num_layers is None:
        num_layers = sum(1 for k in mapping.children() if k.startswith("fc"))
    conv_clamp = syn_kw["conv_clamp"] if "conv_clamp" in syn_kw else layer_state.get("conv_clamp")

    try:
        cfg = GeneratorConfig(
            z_dim=top("z_dim"), c_dim=top("c_dim"), w_dim=w_dim,
            img_resolution=top("img_resolution"), img_channels=top("img_channels"),
            mapping_layers=int(num_layers),
            mapping_lr_multiplier=float(map_kw.get("lr_multiplier", 0.01)),
            channel_base=int(syn_kw.get("channel_base", 32768)),
            channel_max=int(syn_kw.get("channel_max", 512)),
            conv_clamp=None if conv_clamp is None else float(conv_clamp),
            num_fp16_res=int(syn_kw.get("num_fp16_res", 0) or 0),
            embed_features=map_kw.get("embed_features"),
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: unsupported generator settings: {e}") from e

    num_ws = G.state.get("num_ws")
    if num_ws is not None and int(num_ws) != cfg.num_ws:
        raise CheckpointError(
            f"{name}: the generator uses {num_ws} W vectors but a StyleGAN2 'skip' generator of "
            f"resolution {cfg.img_resolution} has {cfg.num_ws}; the architecture differs")
    return cfg


def generator_from_record(G_rec: ModuleRecord, name="checkpoint"):
    cfg = config_from_record(G_rec, name)
    G = Generator(cfg)
    own = G.state_dict()
    state = adopt_fixed_filters(flatten_state(G_rec), own, name)
    # Layers built with use_noise=False carry no noise; zero strength reproduces that.
    for key in own:
        if key.endswith("noise_strength") and key not in state:
            state[key] = torch.zeros_like(own[key])
            state[key[: -len("noise_strength")] + "noise_const"] = torch.zeros_like(
                own[key[: -len("noise_strength")] + "noise_const"])
    if "mapping.w_avg" not in state:  # trained with w_avg_beta=None
        load_state_strict(G, {**state, "mapping.w_avg": own["mapping.w_avg"]}, name)
        state["mapping.w_avg"] = estimate_w_avg(G.mapping)
    return load_state_strict(G, state, name)


# --------------------------------------------------------------------------- TensorFlow pickles


def generator_from_tf(tf_G: TFNetworkRecord, name="checkpoint"):
    """Convert a TensorFlow StyleGAN2 generator (config E/F) with legacy.py's variable mapping."""
    st = tf_G.state
    if int(st.get("version", 0) or 0) < 4:
        raise CheckpointError(f"{name}: TensorFlow pickle version too old (StyleGAN1?); only StyleGAN2 is supported")
    kw = dict(st.get("static_kwargs") or {})
    if kw.get("architecture", "skip") != "skip":
        raise CheckpointError(f"{name}: architecture {kw['architecture']!r} is not supported; "
                              "only StyleGAN2's 'skip' generator is")
    if (kw.get("nonlinearity", "lrelu") != "lrelu" or kw.get("mapping_nonlinearity", "lrelu") != "lrelu"
            or list(kw.get("resample_kernel", [1, 3, 3, 1])) != [1, 3, 3, 1]):
        raise CheckpointError(f"{name}: unsupported TensorFlow generator settings")
    if kw.get("mapping_fmaps") not in (None, kw.get("dlatent_size", 512)):
        raise CheckpointError(f"{name}: mapping_fmaps != dlatent_size is not supported")
    v = {k: np.asarray(a, dtype=np.float32) for k, a in tf_G.variables().items()}
    if any(k.startswith("synthesis/ToRGB_lod") for k in v):
        raise CheckpointError(f"{name}: this is an 'orig' (StyleGAN1-style) generator; only 'skip' is supported")
    try:
        cfg = GeneratorConfig(
            z_dim=int(kw.get("latent_size", 512)), c_dim=int(kw.get("label_size", 0)),
            w_dim=int(kw.get("dlatent_size", 512)), img_resolution=int(kw.get("resolution", 1024)),
            img_channels=int(kw.get("num_channels", 3)), mapping_layers=int(kw.get("mapping_layers", 8)),
            mapping_lr_multiplier=float(kw.get("mapping_lrmul", 0.01)),
            channel_base=int(kw.get("fmap_base", 16384)) * 2, channel_max=int(kw.get("fmap_max", 512)),
            conv_clamp=kw.get("conv_clamp"), embed_features=kw.get("label_fmaps"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: unsupported generator settings: {e}") from e

    def get(key):
        if key not in v:
            raise CheckpointError(f"{name}: TensorFlow variable '{key}' is missing")
        return v.pop(key)

    conv = lambda a: a.transpose(3, 2, 0, 1)            # [k, k, in, out] -> [out, in, k, k]
    conv_up = lambda a: a[::-1, ::-1].transpose(3, 2, 0, 1)  # TF's transposed conv flips the kernel
    state = {"mapping.w_avg": get("dlatent_avg")}
    if cfg.c_dim:
        state["mapping.embed.weight"] = get("mapping/LabelEmbed/weight").T
        state["mapping.embed.bias"] = get("mapping/LabelEmbed/bias")
    for i in range(cfg.mapping_layers):
        state[f"mapping.fc{i}.weight"] = get(f"mapping/Dense{i}/weight").T
        state[f"mapping.fc{i}.bias"] = get(f"mapping/Dense{i}/bias")

    def layer(prefix, tf, noise_idx, up=False):
        state[f"{prefix}.weight"] = (conv_up if up else conv)(get(f"{tf}/weight"))
        state[f"{prefix}.bias"] = get(f"{tf}/bias")
        state[f"{prefix}.noise_const"] = get(f"synthesis/noise{noise_idx}")[0, 0]
        state[f"{prefix}.noise_strength"] = get(f"{tf}/noise_strength").reshape(())
        state[f"{prefix}.affine.weight"] = get(f"{tf}/mod_weight").T
        state[f"{prefix}.affine.bias"] = get(f"{tf}/mod_bias") + 1  # TF adds the 1 at run time

    for res in cfg.block_resolutions:
        p, t = f"synthesis.b{res}", f"synthesis/{res}x{res}"
        log2 = int(math.log2(res))
        if res == 4:
            state[f"{p}.const"] = get(f"{t}/Const/const")[0]
            layer(f"{p}.conv1", f"{t}/Conv", 0)
        else:
            layer(f"{p}.conv0", f"{t}/Conv0_up", 2 * log2 - 5, up=True)
            layer(f"{p}.conv1", f"{t}/Conv1", 2 * log2 - 4)
        state[f"{p}.torgb.weight"] = conv(get(f"{t}/ToRGB/weight"))
        state[f"{p}.torgb.bias"] = get(f"{t}/ToRGB/bias")
        state[f"{p}.torgb.affine.weight"] = get(f"{t}/ToRGB/mod_weight").T
        state[f"{p}.torgb.affine.bias"] = get(f"{t}/ToRGB/mod_bias") + 1
    left = sorted(k for k in v if k.rsplit("/", 1)[-1] != "lod")  # progressive-growing leftover
    if left:
        raise CheckpointError(f"{name}: TensorFlow variables not understood: {', '.join(left[:8])}")
    G = Generator(cfg)
    own = G.state_dict()
    state = {k: torch.from_numpy(np.array(a, dtype=np.float32, order="C")) for k, a in state.items()}
    state.update({k: t for k, t in own.items() if k.endswith("resample_filter")})
    return load_state_strict(G, state, name)


# --------------------------------------------------------------------------- entry point


def generator_from_nvidia_pickle(path_or_bytes, name=None):
    """Load ``G_ema`` of a NVIDIA StyleGAN2 pickle into ``draggan.models.networks.Generator``."""
    name = name or (str(path_or_bytes) if isinstance(path_or_bytes, (str, Path)) else "checkpoint")
    data = read_pickle(path_or_bytes)
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(x, TFNetworkRecord) for x in data):
        return generator_from_tf(data[2], name)  # (G, D, Gs): Gs is the moving average
    if isinstance(data, TFNetworkRecord):
        return generator_from_tf(data, name)
    return generator_from_record(_pick_generator(data, name), name)
