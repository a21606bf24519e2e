"""PyTorch backend (``--backend torch``): the pack's models rebuilt as our export modules, on CUDA in half precision with CUDA graphs.

For machines that have torch but no TensorRT. It lives in the torch side of the package (``export``) so
that ``styleid_edge.runtime`` never imports torch; ``runtime.backends`` loads it only when it is chosen. A pack holds only ONNX files and ``manifest.json``, so each
role is rebuilt as the module that exported it (:mod:`styleid_edge.export.stylegan2` ``Generator``,
:mod:`~styleid_edge.export.e4e` ``E4EEncoderModule``, :mod:`~styleid_edge.export.mapper` ``MapperModule``)
from the manifest's config and the ONNX initializers:

- ``synthesis``: initializers named by :func:`styleid_edge.export.layers.register_derived`
  (``derived_<module path>_conv_weight`` / ``_demod_weight`` / ``_depthwise``), ``gen.input.input``,
  ``gen.to_rgb*.bias``; the anonymous ``Add`` constants are, in graph order, each styled conv's folded
  ``noise.weight * noise`` (1, 1, r, r) and its activation bias (1, C, 1, 1);
- ``mapping``, ``affine``, ``encoder``, ``mapper``: parameters are matched in execution order to the graph's
  ``Conv`` / ``BatchNormalization`` / ``PRelu`` / ``MatMul``/``Gemm`` (+ bias ``Add``) nodes, shapes checked
  one by one (a Conv whose BatchNorm the exporter folded in gets the folded weight and bias, the BatchNorm
  becomes an identity);
- ``recognizer``: not supported (a pack's recognizer may be any user ONNX file); it raises.

On ``device=cuda`` (the default) the generator's synthesis runs in fp16 with modulation, demodulation and
the RGB skip path in fp32, the encoder in fp16 with its BatchNorms in fp32, and every model is captured as a
CUDA graph per batch bucket (1, 2, 4, ... up to ``max_batch``) on first use; smaller batches are padded to
the bucket. CUDA that was asked for but is missing is an error, never a CPU fallback. ``device=cpu`` runs
fp32 eagerly and matches ONNX Runtime within fp32 tolerance (the parity test).

Backend options (``--backend torch --backend-option KEY=VALUE``): ``device`` (cuda|cpu, default cuda),
``fp16`` (default 1 on cuda; cpu is fp32 only), ``cuda_graphs`` (default 1 on cuda), ``max_batch``
(default 16), ``channels_last`` (0, 1, ``encoder`` or ``synthesis``: the roles run in NHWC; default ``encoder``
with fp16, where the encoder measured 1.3-1.8x faster in NHWC on an H100 and the synthesis slower; else 0),
``cudnn_benchmark`` (default 1), ``polyphase_up`` (each stride-2 upsampling of the synthesis, transposed
conv + FIR blur and the RGB skip's FIR upsampler, runs as one 3x3 conv + pixel shuffle, see
:mod:`styleid_edge.export.polyphase`; default 1 with fp16, where it measured 1.1-1.3x faster on an H100,
0 otherwise: it does 4x the multiply-adds in those convs, which fp32 convolutions (compute bound) pay for;
H100 fp32 synthesis 11.7 vs 11.0 ms with and without it (two machines), 2-core CPU 256 px 1465 vs 933 ms),
``compile`` (the synthesis and the encoder through ``torch.compile`` (inductor) before the graph capture; default 1
with fp16 and CUDA graphs (whose buckets bound the compiles) on CUDA where Triton is usable, else 0; ``anonymize``
passes 0 for files unless compile is given; measured on an H100 at 1024 px: encoder + synthesis 1.55 vs 3.40 ms
per face at batch 8 and 4.16 vs 7.76 at batch 1. Each batch bucket compiles on first use, about 20 s per bucket
for both models at 1024 px, cached on disk by inductor for later runs. When the default is in force and compiling fails, the model runs eagerly with a warning;
``compile=1`` given explicitly makes the failure an error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ..runtime.backends import BackendUnavailableError, SessionOptions
from ..runtime.crops import images_to_crops
from ..runtime.pack import ModelPack
from . import polyphase
from .layers import EqualLinear, fir_filter, fir_upsample

log = logging.getLogger(__name__)

SQRT2 = 2 ** 0.5
DEMOD_EPS = 1e-8
SUPPORTED_ROLES = ("mapping", "affine", "synthesis", "encoder", "mapper")
ROLE_IO = {"mapping": (("z",), ("w",)), "affine": (("w_plus",), ("styles",)),
           "synthesis": (("styles",), ("image",)), "encoder": (("image",), ("w_plus",)),
           "mapper": (("w_src", "w_tar"), ("w_anon",))}


class PackMappingError(RuntimeError):
    """An ONNX file of a pack cannot be mapped back onto our torch modules."""


# ------------------------------------------------------------------------------------ options
@dataclass
class TorchOptions:
    device: str = "cuda"
    fp16: bool = True
    cuda_graphs: bool = True
    max_batch: int = 16
    channels_last: tuple[str, ...] = ()  # roles whose 4-D tensors are NHWC
    cudnn_benchmark: bool = True
    polyphase_up: bool = True
    compile: bool = False  # torch.compile (inductor) the synthesis and the encoder before graph capture
    compile_fallback: bool = False  # compile chosen by default: a failure to compile runs the model eagerly

    @classmethod
    def from_backend_options(cls, raw: dict[str, Any]) -> "TorchOptions":
        known = {"device", "fp16", "half", "cuda_graphs", "max_batch", "channels_last", "cudnn_benchmark",
                 "polyphase_up", "compile"}
        unknown = sorted(set(raw) - known - {"url"})
        if unknown:
            raise ValueError(f"torch backend: unknown --backend-option {unknown}; known: {sorted(known)}")
        device = str(raw.get("device", "cuda")).lower()
        if device not in ("cuda", "cpu") and not device.startswith("cuda:"):
            raise ValueError(f"torch backend: device={device!r}; use device=cuda, cuda:N or cpu")
        on_cuda = device.startswith("cuda")
        fp16 = bool(raw.get("fp16", raw.get("half", on_cuda)))
        if fp16 and not on_cuda:
            raise ValueError("torch backend: fp16 runs on CUDA only; drop fp16=1 or use device=cuda")
        graphs = bool(raw.get("cuda_graphs", on_cuda))
        if graphs and not on_cuda:
            raise ValueError("torch backend: cuda_graphs needs device=cuda")
        max_batch = int(raw.get("max_batch", 16))
        if max_batch < 1:
            raise ValueError(f"torch backend: max_batch must be >= 1, got {max_batch}")
        cl = raw.get("channels_last", "encoder" if fp16 else False)  # NHWC: faster fp16 IR-SE50 convs on H100
        if isinstance(cl, str) and cl.strip().lower() in ("0", "1", "true", "false", "yes", "no", "on", "off", ""):
            cl = cl.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(cl, str):
            roles = tuple(r.strip() for r in cl.replace("+", ",").split(",") if r.strip())
            bad = [r for r in roles if r not in ("encoder", "synthesis")]
            if bad:
                raise ValueError(f"torch backend: channels_last={cl!r}; use 0, 1, encoder or synthesis")
        else:
            roles = ("encoder", "synthesis") if cl else ()
        if "compile" in raw:
            compile_, fallback = bool(raw["compile"]), False
        else:  # default: on where it measured faster (fp16 + CUDA graphs, whose buckets bound the compiles to one
            # per power-of-two batch size) and Triton can build kernels
            compile_ = fallback = fp16 and on_cuda and graphs and triton_usable()
        return cls(device=device, fp16=fp16, cuda_graphs=graphs, max_batch=max_batch, channels_last=roles,
                   cudnn_benchmark=bool(raw.get("cudnn_benchmark", True)),
                   polyphase_up=bool(raw.get("polyphase_up", fp16)), compile=compile_, compile_fallback=fallback)


def triton_usable() -> bool:
    """Whether torch.compile can build GPU kernels here (Triton installed, a GPU it supports)."""
    try:
        from torch.utils._triton import has_triton
        return bool(has_triton())
    except Exception:  # noqa: BLE001 - a private helper; any failure means "do not compile by default"
        return False


class CompiledCall:
    """``fn`` through ``torch.compile`` with static shapes (one compile per batch bucket).

    With ``fallback`` (compile chosen by default) a failure while a new input shape compiles (its first call) is
    logged as a warning and ``fn`` runs eagerly from then on; without it (``compile=1`` asked for) the failure
    is raised. Out-of-memory errors and failures of shapes that compiled before are always raised.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], role: str, fallback: bool, max_batch: int,
                 compiler: Callable[..., Callable[..., torch.Tensor]] | None = None):
        self.eager = fn
        self.role = role
        self.fallback = fallback
        _allow_recompiles(max_batch.bit_length() + 2)
        self.compiled: Callable[..., torch.Tensor] | None = (compiler or torch.compile)(fn, dynamic=False)
        self.error: BaseException | None = None
        self.shapes: set[tuple] = set()  # input shapes that compiled and ran

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            shape = tuple(tuple(x.shape) for x in inputs)
            try:
                out = self.compiled(*inputs)
                self.shapes.add(shape)
                return out
            except Exception as exc:  # noqa: BLE001 - inductor/Triton failures have many types
                capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
                if (not self.fallback or capturing or shape in self.shapes
                        or isinstance(exc, torch.cuda.OutOfMemoryError)):
                    raise
                self.compiled, self.error = None, exc
                log.warning("torch backend: torch.compile failed for the %s (%s: %s); it runs without compile. "
                            "Pass --backend-option compile=0 to skip the attempt.", self.role,
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return self.eager(*inputs)


def _allow_recompiles(n: int) -> None:
    """Let dynamo keep ``n`` static-shape compilations per function (one per batch bucket); past its limit
    (8 by default) it would silently run later buckets eagerly."""
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch releases
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(int(getattr(dynamo_config, name)), n))


def check_device(device: str) -> torch.device:
    """The torch device; an error (never a CPU fallback) when CUDA is asked for and absent."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"torch backend: device={device} requested but torch {torch.__version__} sees no CUDA GPU "
                f"(built with CUDA {torch.version.cuda or 'none'}). Install a CUDA build of PyTorch on a machine "
                "with an NVIDIA GPU, or pass --backend-option device=cpu.")
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"torch backend: {device} requested but only "
                                          f"{torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    return torch.device("cpu")


# ------------------------------------------------------------------------------------ ONNX graph
class OnnxGraph:
    """Initializers and nodes of one ONNX file, with the lookups the mappers need."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            model = onnx.load(str(self.path))
        except Exception as exc:
            raise PackMappingError(f"{self.path}: cannot read it as ONNX ({exc})") from exc
        self.inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for node in model.graph.node:  # Constant nodes hold tensors too
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.inits[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.nodes = list(model.graph.node)
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.input_shapes = {i.name: tuple(d.dim_param or d.dim_value or None for d in i.type.tensor_type.shape.dim)
                             for i in model.graph.input if i.name not in self.inits}

    def tensor(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self.inits[name], dtype=np.float32))

    def const_input(self, node, index: int) -> str | None:
        return node.input[index] if len(node.input) > index and node.input[index] in self.inits else None

    def fail(self, why: str) -> PackMappingError:
        return PackMappingError(f"{self.path}: {why}. The torch backend reads packs written by `styleid-edge export` "
                                "of this version; re-export the pack, or use --backend onnxruntime.")


def _attr(node, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def exec_order(module: nn.Module, inputs: Sequence[torch.Tensor], call: Callable | None = None,
               types: tuple | None = None) -> list[str]:
    """Names of the ``types`` submodules of ``module`` in the order a forward pass calls them
    (default: Conv2d, BatchNorm2d, PReLU, EqualLinear)."""
    types = types or (nn.Conv2d, nn.BatchNorm2d, nn.PReLU, EqualLinear)
    order: list[str] = []
    hooks = []
    for name, sub in module.named_modules():
        if isinstance(sub, types):
            hooks.append(sub.register_forward_hook(lambda m, i, o, n=name: order.append(n)))
    try:
        with torch.no_grad():
            (call or module)(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return order


@torch.no_grad()
def load_by_order(module: nn.Module, order: list[str], graph: OnnxGraph) -> None:
    """Fill ``module``'s Conv2d / BatchNorm2d / PReLU / EqualLinear parameters from ``graph`` by execution order."""
    subs = dict(module.named_modules())
    convs = [n for n in graph.nodes if n.op_type == "Conv" and graph.const_input(n, 1)]
    bns = [n for n in graph.nodes if n.op_type == "BatchNormalization"]
    prelus = [n for n in graph.nodes if n.op_type == "PRelu" and graph.const_input(n, 1)]
    linears = [n for n in graph.nodes if n.op_type in ("MatMul", "Gemm") and graph.const_input(n, 1)]
    t_convs = [n for n in order if isinstance(subs[n], nn.Conv2d)]
    t_prelus = [n for n in order if isinstance(subs[n], nn.PReLU)]
    t_linears = [n for n in order if isinstance(subs[n], EqualLinear)]
    for kind, a, b in (("Conv", t_convs, convs), ("PRelu", t_prelus, prelus), ("MatMul/Gemm", t_linears, linears)):
        if len(a) != len(b):
            raise graph.fail(f"{len(b)} {kind} nodes with constant weights, but the rebuilt module has {len(a)}")
    fused: set[str] = set()
    for name, node in zip(t_convs, convs):
        conv = subs[name]
        weight = graph.tensor(node.input[1])
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise graph.fail(f"Conv {node.name or node.output[0]} has weight {tuple(weight.shape)}, "
                             f"{name} expects {tuple(conv.weight.shape)}")
        conv.weight.copy_(weight)
        bias_name = graph.const_input(node, 2)
        if conv.bias is not None:
            if bias_name is None:
                raise graph.fail(f"Conv for {name} has no bias")
            conv.bias.copy_(graph.tensor(bias_name))
        elif bias_name is not None:  # the exporter folded the following BatchNorm into this conv
            parent_name, _, idx = name.rpartition(".")
            parent = subs[parent_name]
            if not (isinstance(parent, nn.Sequential) and idx.isdigit() and int(idx) + 1 < len(parent)
                    and isinstance(parent[int(idx) + 1], nn.BatchNorm2d)):
                raise graph.fail(f"Conv for {name} has a bias but the module has none and no BatchNorm follows")
            conv.bias = nn.Parameter(graph.tensor(bias_name), requires_grad=False)
            bn_name = f"{parent_name}.{int(idx) + 1}"
            parent[int(idx) + 1] = nn.Identity()
            fused.add(bn_name)
    t_bns = [n for n in order if isinstance(subs[n], nn.BatchNorm2d) and n not in fused]
    if len(t_bns) != len(bns):
        raise graph.fail(f"{len(bns)} BatchNormalization nodes, but the rebuilt module has {len(t_bns)} unfused")
    for name, node in zip(t_bns, bns):
        bn = subs[name]
        for attr, idx in (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)):
            src = graph.const_input(node, idx)
            if src is None:
                raise graph.fail(f"BatchNormalization for {name} has no constant input {idx}")
            getattr(bn, attr).copy_(graph.tensor(src).reshape(getattr(bn, attr).shape))
        bn.eps = float(_attr(node, "epsilon", 1e-5))
    for name, node in zip(t_prelus, prelus):
        p = subs[name]
        slope = graph.tensor(node.input[1]).reshape(-1)
        if slope.numel() != p.weight.numel():
            raise graph.fail(f"PRelu for {name} has {slope.numel()} slopes, expected {p.weight.numel()}")
        p.weight.copy_(slope.reshape(p.weight.shape))
    for name, node in zip(t_linears, linears):
        lin: EqualLinear = subs[name]
        w = graph.tensor(node.input[1])
        if node.op_type == "Gemm":
            w = w if _attr(node, "transB", 0) else w.t()
        else:
            w = w.t()  # MatMul(x, W^T)
        if tuple(w.shape) != tuple(lin.weight.shape):
            raise graph.fail(f"{node.op_type} for {name} has weight {tuple(w.shape)}^T, expected {tuple(lin.weight.shape)}")
        lin.weight.copy_(w / lin.scale)
        bias = None
        if node.op_type == "Gemm":
            bias = graph.const_input(node, 2)
        else:
            for consumer in graph.consumers.get(node.output[0], []):
                if consumer.op_type == "Add":
                    other = [i for i in consumer.input if i != node.output[0]]
                    if other and other[0] in graph.inits:
                        bias = other[0]
                        break
        if lin.bias is not None:
            if bias is None:
                raise graph.fail(f"no bias Add after the {node.op_type} of {name}")
            lin.bias.copy_(graph.tensor(bias).reshape(lin.bias.shape) / lin.lr_mul)


# ------------------------------------------------------------------------------------ rebuilders
def _manifest(path: Path) -> Any:
    try:
        return ModelPack.load(path.parent).manifest
    except Exception as exc:
        raise PackMappingError(f"{path}: the torch backend needs the pack's manifest.json next to it ({exc})") from exc


def _new_generator(manifest: Any, n_mlp: int) -> Any:
    from styleid_edge.export.stylegan2 import Generator

    with torch.random.fork_rng():
        gen = Generator(manifest.resolution, manifest.style_dim, n_mlp, manifest.channel_multiplier)
    return gen.eval().requires_grad_(False)


def load_mapping(gen: Any, path: str | Path) -> None:
    """``mapping.onnx`` -> ``gen.style``."""
    graph = OnnxGraph(path)
    order = exec_order(gen.style, [torch.zeros(1, gen.style_dim)])
    load_by_order(gen.style, order, graph)


def load_affine(gen: Any, path: str | Path) -> None:
    """``affine.onnx`` -> every modulation EqualLinear, in StyleSpace layer order."""
    graph = OnnxGraph(path)
    order = exec_order(gen, [torch.zeros(1, gen.n_latent, gen.style_dim)], call=gen.styles, types=(EqualLinear,))
    load_by_order(gen, order, graph)


@torch.no_grad()
def load_synthesis(gen: Any, path: str | Path) -> None:
    """``synthesis.onnx`` -> conv weights, FIR kernels, constant input, noise and biases of ``gen``."""
    from styleid_edge.export.layers import derived_tensors

    graph = OnnxGraph(path)
    gen.precompute()
    expected = derived_tensors(gen)  # "<module path>.<derived name>" -> tensor, as register_derived names them
    used: set[str] = set()

    def take(name: str, shape: tuple) -> torch.Tensor:
        if name not in graph.inits:
            raise graph.fail(f"no initializer {name!r}")
        t = graph.tensor(name)
        if tuple(t.shape) != tuple(shape):
            raise graph.fail(f"initializer {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        used.add(name)
        return t

    for key, value in expected.items():
        onnx_name = "derived_" + key.replace(".", "_")
        path_, _, what = key.rpartition(".")
        module = gen.get_submodule(path_)
        if what == "depthwise" and onnx_name not in graph.inits:
            # the exporter stores identical tensors once: FIR filters of equal width share one initializer
            same = sorted(n for n, a in graph.inits.items()
                          if n.startswith("derived_") and n.endswith("_depthwise") and a.shape == tuple(value.shape))
            onnx_name = same[0] if same else onnx_name
        t = take(onnx_name, value.shape)
        if what == "conv_weight":
            w = t.transpose(0, 1) if module.upsample else t
            module.weight.copy_((w / module.scale).unsqueeze(0))
        elif what == "depthwise":
            k = t[0, 0]
            module.kernel.copy_(k.flip([0, 1]) if module.flip else k)
        elif what != "demod_weight":  # the demodulation sums are recomputed from the weights
            raise graph.fail(f"unexpected derived tensor {onnx_name!r}")
    gen.input.input.copy_(take("gen.input.input", gen.input.input.shape))
    gen.to_rgb1.bias.copy_(take("gen.to_rgb1.bias", gen.to_rgb1.bias.shape))
    for k, rgb in enumerate(gen.to_rgbs):
        rgb.bias.copy_(take(f"gen.to_rgbs.{k}.bias", rgb.bias.shape))
    styled = [gen.conv1, *gen.convs]
    adds = []
    for node in graph.nodes:
        if node.op_type != "Add":
            continue
        consts = [i for i in node.input if i in graph.inits and i not in used and graph.inits[i].ndim == 4]
        if consts:
            adds.append(consts[0])
    if len(adds) != 2 * len(styled):
        raise graph.fail(f"{len(adds)} Add nodes with folded constants, expected {2 * len(styled)} "
                         "(noise and bias of every styled conv)")
    for i, layer in enumerate(styled):
        noise_buf = getattr(gen.noises, f"noise_{i}")
        noise = take(adds[2 * i], noise_buf.shape)
        bias = take(adds[2 * i + 1], (1, layer.activate.bias.numel(), 1, 1))
        noise_buf.copy_(noise)  # the folded weight * noise
        layer.noise.weight.fill_(1.0)
        layer.activate.bias.copy_(bias.reshape(-1))
    gen.precompute()


def generator_from_pack(pack: ModelPack | str | Path, roles: Sequence[str] = ("mapping", "affine", "synthesis")) -> Any:
    """Our ``Generator`` with the weights of the pack's mapping / affine / synthesis ONNX files (CPU, fp32)."""
    pack = pack if isinstance(pack, ModelPack) else ModelPack.load(pack)
    n_mlp = 1
    if "mapping" in roles:
        graph = OnnxGraph(pack.model_path("mapping"))
        n_mlp = sum(1 for n in graph.nodes if n.op_type in ("MatMul", "Gemm") and graph.const_input(n, 1))
    gen = _new_generator(pack.manifest, n_mlp)
    loaders = {"mapping": load_mapping, "affine": load_affine, "synthesis": load_synthesis}
    for role in roles:
        loaders[role](gen, pack.model_path(role))
    return gen


def encoder_from_onnx(path: str | Path, n_latent: int | None = None) -> Any:
    """``encoder.onnx`` -> ``E4EEncoderModule`` (CPU, fp32, eval; folded BatchNorms become identities)."""
    from styleid_edge.export.e4e import E4EConfig, E4EEncoderModule, infer_e4e_config

    graph = OnnxGraph(path)
    shapes: dict[str, torch.Tensor] = {}
    for name, arr in graph.inits.items():
        if name.startswith("encoder."):
            shapes[name[len("encoder."):]] = torch.empty(arr.shape, device="meta")
    image = graph.input_shapes.get("image")
    if not shapes or image is None or len(image) != 4 or not isinstance(image[1], int):
        raise graph.fail("no 'image' input or no 'encoder.*' initializers: not an e4e encoder export")
    if "body.0.res_layer.1.weight" not in shapes:
        raise graph.fail("no encoder.body.0.res_layer.1.weight initializer")
    shapes["input_layer.0.weight"] = torch.empty(shapes["body.0.res_layer.1.weight"].shape[1], image[1], 3, 3,
                                                 device="meta")
    i = 0
    while f"styles.{i}.convs.0.weight" in shapes:
        d = shapes[f"styles.{i}.convs.0.weight"].shape[0]
        shapes[f"styles.{i}.linear.weight"] = torch.empty(d, d, device="meta")
        i += 1
    try:
        config: E4EConfig = infer_e4e_config(shapes)
    except (KeyError, ValueError) as exc:
        raise graph.fail(f"cannot read the encoder shape from its initializers ({exc})") from exc
    if isinstance(image[2], int) and image[2] != config.input_size:
        raise graph.fail(f"input is {image[2]} px but the weights say {config.input_size} px")
    if n_latent is not None and config.n_styles != n_latent:
        raise graph.fail(f"the encoder makes {config.n_styles} W+ rows, the manifest says {n_latent}")
    with torch.device("meta"):
        probe = E4EEncoderModule(config)
    order = exec_order(probe, [torch.zeros(1, 3, config.input_size, config.input_size, device="meta")])
    module = probe.to_empty(device="cpu").eval().requires_grad_(False)  # skip the (slow) random init
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.fill_(float("nan"))  # anything the graph does not fill shows up below
    load_by_order(module, order, graph)
    if "latent_avg" not in graph.inits:
        raise graph.fail("no latent_avg initializer")
    with torch.no_grad():
        module.latent_avg.copy_(graph.tensor("latent_avg").reshape(module.latent_avg.shape))
    unfilled = [n for n, t in [*module.named_parameters(), *module.named_buffers()]
                if t.is_floating_point() and bool(torch.isnan(t).any())]
    if unfilled:
        raise graph.fail(f"no weights in the graph for {unfilled[:5]}")
    return module


def mapper_from_onnx(path: str | Path, n_latent: int, latent_dim: int) -> Any:
    """``mapper.onnx`` -> ``MapperModule`` (src_first=True, as ``build_pack`` loads it)."""
    from styleid_edge.export.mapper import MapperConfig, MapperModule

    graph = OnnxGraph(path)
    with torch.random.fork_rng():
        module = MapperModule(MapperConfig(n_latent=n_latent, latent_dim=latent_dim)).eval().requires_grad_(False)
    w = torch.zeros(1, n_latent, latent_dim)
    load_by_order(module, exec_order(module, [w, w]), graph)
    return module


# ------------------------------------------------------------------------------------ fast synthesis
class FastSynthesis(nn.Module):
    """``styles`` (B, S) fp32 -> ``image`` (B, 3, R, R) fp32 from a ``Generator``'s weights.

    The same math as ``Generator.synthesize`` (activation modulation), arranged for speed: the convs and
    FIR filters run in ``dtype``; the demodulation ``rsqrt(s^2 @ sum W^2 + eps)``, the styles and the RGB
    skip path stay in fp32; each styled conv's noise and bias are one precomputed (1, C, r, r) constant added
    by ``addcmul`` with the demodulation; the leaky ReLU's sqrt(2) gain is folded into the next style.
    """

    def __init__(self, gen: Any, dtype: torch.dtype | None = None, channels_last: bool = False,
                 polyphase_up: bool = False):
        super().__init__()
        gen.precompute()
        dtype = dtype or torch.float32
        self.dtype = dtype
        self.polyphase_up = polyphase_up
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.sizes = [layer.size for layer in gen.layers]
        self.register_buffer("const", gen.input.input.detach().to(dtype).contiguous(memory_format=self.memory_format))
        self.styled: list[dict[str, Any]] = []
        self.rgb: list[dict[str, Any]] = []
        noise = [getattr(gen.noises, f"noise_{i}") for i in range(gen.num_layers)]
        for i, layer in enumerate([gen.conv1, *gen.convs]):
            conv = layer.conv
            nb = noise[i] * layer.noise.weight + layer.activate.bias.reshape(1, -1, 1, 1)
            poly = conv.upsample and polyphase_up
            w = (polyphase.upconv_blur_kernel(conv.conv_weight().detach(), conv.blur.depthwise(), conv.blur.pad)
                 if poly else conv.conv_weight())
            entry = {"w": self._buf(f"w{i}", w, dtype),
                     "demod": self._buf(f"d{i}", conv.demod_weight(), torch.float32),
                     "nb": self._buf(f"nb{i}", nb, dtype), "up": conv.upsample, "pad": conv.padding}
            if conv.upsample and not poly:
                entry["blur"] = self._buf(f"blur{i}", conv.blur.depthwise(), dtype)
                entry["blur_pad"] = conv.blur.pad
            self.styled.append(entry)
        for k, rgb in enumerate([gen.to_rgb1, *gen.to_rgbs]):
            entry = {"w": self._buf(f"rgbw{k}", rgb.conv.conv_weight(), dtype),
                     "bias": self._buf(f"rgbb{k}", rgb.bias, torch.float32)}
            if k > 0 and polyphase_up:
                entry["up_poly"] = self._buf(f"rgbup{k}", polyphase.upsample_kernel(
                    rgb.upsample.depthwise(), rgb.upsample.pad, rgb.upsample.factor), torch.float32)
            elif k > 0:
                entry["up"] = self._buf(f"rgbup{k}", rgb.upsample.depthwise(), torch.float32)
                entry["up_pad"] = rgb.upsample.pad
                entry["factor"] = rgb.upsample.factor
            self.rgb.append(entry)

    def _buf(self, name: str, t: torch.Tensor, dtype: torch.dtype) -> str:
        t = t.detach().to(dtype).contiguous()
        if t.ndim == 4 and self.memory_format is torch.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        self.register_buffer(name, t)
        return name

    def _styled(self, e: dict, x: torch.Tensor, s: torch.Tensor, gain: float) -> torch.Tensor:
        d = torch.rsqrt((s * s) @ getattr(self, e["demod"]) + DEMOD_EPS)  # fp32 (B, O)
        x = x * (s * gain).to(self.dtype)[:, :, None, None]
        if e["up"] and self.polyphase_up:  # pixel_shuffle returns NCHW on CUDA: back to the chosen format
            out = polyphase.apply(x, getattr(self, e["w"])).contiguous(memory_format=self.memory_format)
        elif e["up"]:
            out = fir_filter(F.conv_transpose2d(x, getattr(self, e["w"]), stride=2), getattr(self, e["blur"]),
                             e["blur_pad"])
        else:
            out = F.conv2d(x, getattr(self, e["w"]), padding=e["pad"])
        out = torch.addcmul(getattr(self, e["nb"]), out, d.to(self.dtype)[:, :, None, None])
        return F.leaky_relu(out, 0.2, inplace=True)  # times sqrt(2): folded into the next style

    def _to_rgb(self, e: dict, x: torch.Tensor, s: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = x * (s * SQRT2).to(self.dtype)[:, :, None, None]
        out = F.conv2d(x, getattr(self, e["w"])).float() + getattr(self, e["bias"])
        if skip is not None and "up_poly" in e:
            out = out + polyphase.apply(skip, getattr(self, e["up_poly"]))
        elif skip is not None:
            out = out + fir_upsample(skip, getattr(self, e["up"]), e["up_pad"], e["factor"])
        return out

    def forward(self, styles: torch.Tensor) -> torch.Tensor:
        parts = torch.split(styles.float(), self.sizes, dim=1)
        x = self._styled(self.styled[0], self.const, parts[0], 1.0)
        skip = self._to_rgb(self.rgb[0], x, parts[1], None)
        for k in range(1, len(self.rgb)):
            x = self._styled(self.styled[2 * k - 1], x, parts[3 * k - 1], SQRT2)
            x = self._styled(self.styled[2 * k], x, parts[3 * k], SQRT2)
            skip = self._to_rgb(self.rgb[k], x, parts[3 * k + 1], skip)
        return skip.contiguous()


def half_encoder(module: nn.Module) -> nn.Module:
    """The encoder in fp16 with its BatchNorms (normalisation) and latent_avg in fp32."""
    module = module.half()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.float()
    module.latent_avg.data = module.latent_avg.data.float()
    return module


# ------------------------------------------------------------------------------------ CUDA graphs
class GraphedCall:
    """``fn(*inputs)`` replayed from a CUDA graph captured per batch bucket (powers of two up to max_batch).

    A batch smaller than its bucket is padded (rows past it keep finite stale values, sliced off); a batch
    above ``max_batch`` runs in chunks. Outputs are views of the graph's static memory: valid until the next
    call with the same bucket.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], device: torch.device, max_batch: int = 16):
        self.fn = fn
        self.device = device
        self.max_batch = max_batch
        self.graphs: dict[int, tuple[Any, list[torch.Tensor], torch.Tensor]] = {}

    def bucket(self, b: int) -> int:
        size = 1
        while size < b:
            size *= 2
        return min(size, self.max_batch)

    def _capture(self, bucket: int, like: Sequence[torch.Tensor]):
        static = [torch.zeros((bucket, *x.shape[1:]), dtype=x.dtype, device=self.device) for x in like]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):  # warm up cuDNN autotuning and the allocator outside the capture
                self.fn(*static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            out = self.fn(*static)
        log.info("captured a CUDA graph for batch %d", bucket)
        return graph, static, out

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        b = inputs[0].shape[0]
        if b > self.max_batch:
            return torch.cat([self(*(x[i:i + self.max_batch] for x in inputs)).clone()
                              for i in range(0, b, self.max_batch)])
        bucket = self.bucket(b)
        if bucket not in self.graphs:
            self.graphs[bucket] = self._capture(bucket, inputs)
        graph, static, out = self.graphs[bucket]
        for s, x in zip(static, inputs):
            s[:b].copy_(x)
        graph.replay()
        return out[:b]


# ------------------------------------------------------------------------------------ the runner
class TorchRunner:
    """One pack model rebuilt in torch; ``run`` has the contract of ``onnxruntime.InferenceSession.run``."""

    def __init__(self, role: str, module: nn.Module, fn: Callable[..., torch.Tensor], opts: TorchOptions,
                 input_shapes: dict[str, tuple]):
        self.role = role
        self.module = module
        self.options = opts
        self.device = check_device(opts.device)
        self.input_names, self.output_names = ROLE_IO[role]
        self.input_shapes = input_shapes
        if opts.cuda_graphs:
            self._call: Callable[..., torch.Tensor] = GraphedCall(fn, self.device, opts.max_batch)
        else:
            self._call = fn
        precision = "fp16" if opts.fp16 and role in ("synthesis", "encoder") else "fp32"
        where = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        # built per batch shape on first use (seconds each): callers that must not stall later warm up first
        self.builds_per_shape = bool(opts.compile and role in ("synthesis", "encoder"))
        compiled = " + torch.compile" if self.builds_per_shape else ""
        self.provider = (f"torch {torch.__version__} {self.device} ({where}) {precision}{compiled}"
                         f"{' + CUDA graphs' if opts.cuda_graphs else ''}")

    @classmethod
    def create(cls, path: Path, role: str, options: SessionOptions) -> "TorchRunner":
        opts = TorchOptions.from_backend_options(dict(options.backend_options or {}))
        device = check_device(opts.device)  # before any work: CUDA asked for and absent is an error
        if role not in SUPPORTED_ROLES:
            raise PackMappingError(
                f"{path}: the torch backend cannot run the {role!r} model (a pack's recognizer may be any ONNX "
                "file, so it has no torch module to rebuild); run the pack with --backend onnxruntime "
                "(or another backend) for it.")
        if options.intra_op_threads and device.type == "cpu":
            torch.set_num_threads(options.intra_op_threads)
        if opts.cudnn_benchmark and device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        path = Path(path)
        manifest = _manifest(path)
        input_shapes = {k: v for k, v in OnnxGraph(path).input_shapes.items()}
        dtype = torch.float16 if opts.fp16 else torch.float32
        nhwc = role in opts.channels_last
        mf = torch.channels_last if nhwc else torch.contiguous_format
        if role in ("mapping", "affine", "synthesis"):
            graph_n_mlp = 1
            if role == "mapping":
                g = OnnxGraph(path)
                graph_n_mlp = sum(1 for n in g.nodes if n.op_type in ("MatMul", "Gemm") and g.const_input(n, 1))
            gen = _new_generator(manifest, graph_n_mlp)
            {"mapping": load_mapping, "affine": load_affine, "synthesis": load_synthesis}[role](gen, path)
            if role == "synthesis":
                module: nn.Module = FastSynthesis(gen, dtype, nhwc, opts.polyphase_up).to(device)
                fn = module
            else:
                module = gen.style.to(device) if role == "mapping" else gen.to(device)
                fn = module if role == "mapping" else module.styles
        elif role == "encoder":
            module = encoder_from_onnx(path, manifest.n_latent).to(device)
            fn = module
            if opts.fp16:
                module = half_encoder(module)
            if nhwc:
                module = module.to(memory_format=torch.channels_last)
            if opts.fp16 or nhwc:
                enc = module

                def fn(image: torch.Tensor) -> torch.Tensor:
                    return enc(image.to(dtype).contiguous(memory_format=mf)).float()
        else:  # mapper
            module = mapper_from_onnx(path, manifest.n_latent, manifest.style_dim).to(device)
            fn = module
        module.eval()
        if opts.compile and role in ("synthesis", "encoder"):
            # fuses the elementwise chains (modulation, demodulation, noise + bias, leaky ReLU) into few
            # kernels; shapes are static per batch bucket, so each bucket compiles once, before its capture
            fn = CompiledCall(fn, role, opts.compile_fallback, opts.max_batch)
            log.info("torch backend: the %s runs through torch.compile; the first batch of each size compiles "
                     "(about 20 s at 1024 px on an H100; inductor caches it on disk for later runs); "
                     "--backend-option compile=0 turns it off", role)
        return cls(role, module, fn, opts, input_shapes)

    def run_torch(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Device tensors in (in ``input_names`` order), a device tensor out (fp32); no host copies.

        With CUDA graphs the result is a view of the graph's memory: use it before the next call.
        """
        with torch.no_grad():
            return self._call(*[x.to(self.device, torch.float32) for x in inputs])

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if output_names and list(output_names) != list(self.output_names):
            raise ValueError(f"{self.role}: outputs {list(output_names)} requested; this model has "
                             f"{list(self.output_names)}")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.role}: missing inputs {missing}")
        out = self.run_torch(*self._to_device(feeds))
        return [out.float().cpu().numpy()]

    def _to_device(self, feeds: dict[str, np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.float32)).to(self.device, non_blocking=True)
                for n in self.input_names]

    def run_crops(self, feeds: dict[str, np.ndarray], size: int) -> np.ndarray:
        """synthesis only: the images converted to BGR uint8 crops (B,size,size,3) on the device, so only the
        crops cross to the host (at 1024 px and 512 px crops: 0.75 MB instead of 12 MB per face)."""
        if self.role != "synthesis":
            raise ValueError(f"run_crops is for the synthesis model, not {self.role}")
        with torch.no_grad():
            images = self.run_torch(*self._to_device(feeds))
            if images.shape[-1] > size and images.shape[-1] % size:  # area averaging differs: do it as the host does
                return images_to_crops(images.float().cpu().numpy(), size)
            return images_to_crops_torch(images, size).cpu().numpy()


def images_to_crops_torch(images: torch.Tensor, size: int) -> torch.Tensor:
    """Generator output RGB (B,3,R,R) in [-1,1] on any device -> BGR uint8 (B,size,size,3) on that device.

    The device-side twin of :func:`styleid_edge.runtime.crops.images_to_crops`: the same clip and scale,
    resized with area averaging when shrinking by an integer factor (= OpenCV's INTER_AREA) and bicubic
    (a=-0.75, half-pixel centres, as INTER_CUBIC) when growing, in float before rounding (the host version
    rounds first), so values may differ by a grey level."""
    x = (images.float().clamp(-1.0, 1.0) * 127.5 + 127.5)
    r = x.shape[-1]
    if r > size:
        x = F.interpolate(x, size=(size, size), mode="area")
    elif r < size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = x.clamp(0.0, 255.0).round().to(torch.uint8)
    return x.flip(1).permute(0, 2, 3, 1).contiguous()


def warm_up(runner: TorchRunner, batch: int, shapes: dict[str, tuple]) -> None:
    """Capture / autotune ``runner`` for ``batch`` (zeros of ``shapes`` without the batch dim)."""
    xs = [torch.zeros((batch, *shapes[n]), device=runner.device) for n in runner.input_names]
    runner.run_torch(*xs)
    if runner.device.type == "cuda":
        torch.cuda.synchronize(runner.device)
