"""Backends that run the pack's models, and ONNX Runtime sessions on exactly the requested providers.

A *backend* turns one pack ONNX file into a :class:`Runner` (``run(output_names, feeds)``, the
contract of ``onnxruntime.InferenceSession.run``). ``onnxruntime`` is built in; the others
(``tensorrt``, ``torch``, ``triton``, ``openvino``) live in their own modules and are imported only
when chosen, so ``import styleid_edge.runtime`` never loads torch, TensorRT or a network client.

ONNX Runtime never falls back to the CPU silently: a provider that was asked for but is not
available in the installed onnxruntime, or that ONNX Runtime drops while
creating a session (missing CUDA/TensorRT libraries), is an error that names it
and says what to install; every session logs which provider runs it.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, Union

import numpy as np
import onnxruntime as ort

from ..files import user_cache_dir

log = logging.getLogger(__name__)

ProviderSpec = Union[str, tuple[str, dict[str, Any]]]  # a name, or (name, provider options)
DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
}
INSTALL_HINT = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (pip install 'styleid-edge[gpu]') and a matching CUDA runtime",
    "TensorrtExecutionProvider": "install onnxruntime-gpu with TensorRT libraries on the library path",
    "OpenVINOExecutionProvider": "install onnxruntime-openvino",
    "CoreMLExecutionProvider": "use the macOS onnxruntime wheel",
    "DmlExecutionProvider": "install onnxruntime-directml",
}


class ProviderUnavailableError(RuntimeError):
    """A requested ONNX Runtime execution provider is not available in this installation."""


ProviderError = ProviderUnavailableError


def _canonical(p: ProviderSpec) -> ProviderSpec:
    if isinstance(p, str):
        return PROVIDER_ALIASES.get(p.strip().lower(), p.strip())
    return (PROVIDER_ALIASES.get(p[0].strip().lower(), p[0].strip()), dict(p[1]))


def provider_name(p: ProviderSpec) -> str:
    return p if isinstance(p, str) else p[0]


def check_providers(providers: Sequence[ProviderSpec]) -> list[ProviderSpec]:
    """Full provider names (aliases expanded); raise naming any this onnxruntime cannot offer."""
    if not providers:
        raise ValueError("providers must name at least one ONNX Runtime execution provider")
    providers = [_canonical(p) for p in providers]
    available = ort.get_available_providers()
    missing = [provider_name(p) for p in providers if provider_name(p) not in available]
    if missing:
        hints = "; ".join(f"{n}: {INSTALL_HINT.get(n, 'install an onnxruntime build that includes it')}"
                          for n in missing)
        raise ProviderUnavailableError(
            f"ONNX Runtime execution provider(s) {missing} requested but not available "
            f"(available: {', '.join(available)}). {hints}; or request only available providers.")
    return list(providers)


def parse_providers(spec: str | Sequence[ProviderSpec] | None) -> list[ProviderSpec]:
    """'cuda,cpu' or ['cuda'] -> checked provider list, in priority order; default CPU."""
    if spec is None or spec == "" or (not isinstance(spec, str) and len(spec) == 0):
        return list(DEFAULT_PROVIDERS)
    items = [s for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    return check_providers(items)


@dataclass
class SessionOptions:
    """How the pack's models run: which backend, and its settings."""

    providers: list[ProviderSpec] = field(default_factory=lambda: list(DEFAULT_PROVIDERS))
    intra_op_threads: int = 0  # 0 = onnxruntime's default (all cores)
    backend: str = "onnxruntime"  # a key of BACKENDS
    backend_options: dict[str, Any] = field(default_factory=dict)  # backend-specific (url, fp16, cache dir, ...)


def default_engine_cache_dir() -> Path:
    """Where TensorRT engines and timing caches live: $STYLEID_EDGE_TRT_CACHE, else the user cache dir."""
    env = os.environ.get("STYLEID_EDGE_TRT_CACHE")
    if env:
        return Path(env).expanduser()
    return user_cache_dir("tensorrt")


CUDA_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


def _opt_str(v: Any) -> str:
    return ("True" if v else "False") if isinstance(v, bool) else str(v)


def _batch_profile(model: str | os.PathLike, opts: dict[str, Any]) -> dict[str, str]:
    """trt_profile_min/opt/max_shapes for the model's inputs, batch = min/opt/max_batch (other dims as exported)."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    lo, hi = int(opts.get("min_batch", 1)), int(opts.get("max_batch", 8))
    mid = int(opts.get("opt_batch", max(lo, min(4, hi))))
    parts: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for i in m.graph.input:
        if i.name in inits:
            continue
        rest = [d.dim_value for d in i.type.tensor_type.shape.dim][1:]
        if any(d <= 0 for d in rest):
            return {}  # dynamic beyond the batch: let the TensorRT EP derive profiles itself
        for key, b in (("min", lo), ("opt", mid), ("max", hi)):
            parts[key].append(f"{i.name}:" + "x".join(str(d) for d in (b, *rest)))
    return {f"trt_profile_{k}_shapes": ",".join(v) for k, v in parts.items()}


def provider_options(name: str, backend_options: dict[str, Any] | None = None,
                     model: str | os.PathLike | None = None) -> dict[str, str]:
    """ONNX Runtime provider options for ``name`` from ``SessionOptions.backend_options``.

    CUDA EP: ``device_id``, ``cudnn_conv_algo_search`` (EXHAUSTIVE/HEURISTIC/DEFAULT),
    ``gpu_mem_limit`` (bytes), ``arena_extend_strategy``, ``cuda_graph`` (enable_cuda_graph).
    TensorRT EP: ``device_id``, engine and timing caches on (``cache_dir``, default
    :func:`default_engine_cache_dir`/ort), ``fp16``, ``int8``, ``workspace_gb``,
    ``builder_optimization_level``, and batch profiles from ``min/opt/max_batch`` when ``model`` is given.
    Other providers get none. Values are strings, as ONNX Runtime takes them.
    """
    o = dict(backend_options or {})
    out: dict[str, Any] = {}
    if name in ("CUDAExecutionProvider", "TensorrtExecutionProvider") and "device_id" in o:
        out["device_id"] = int(o["device_id"])
    if name == "CUDAExecutionProvider":
        if "cudnn_conv_algo_search" in o:
            algo = str(o["cudnn_conv_algo_search"]).upper()
            if algo not in CUDA_ALGO_SEARCH:
                raise ValueError(f"cudnn_conv_algo_search={o['cudnn_conv_algo_search']!r}: choose one of "
                                 f"{', '.join(CUDA_ALGO_SEARCH)}")
            out["cudnn_conv_algo_search"] = algo
        for key, ort_key in (("gpu_mem_limit", "gpu_mem_limit"), ("arena_extend_strategy", "arena_extend_strategy"),
                             ("cuda_graph", "enable_cuda_graph")):
            if key in o:
                out[ort_key] = o[key]
    elif name == "TensorrtExecutionProvider":
        cache = Path(str(o["cache_dir"])).expanduser() if o.get("cache_dir") else default_engine_cache_dir() / "ort"
        out.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                    "trt_fp16_enable": bool(o.get("fp16", False))})
        if o.get("int8"):
            out["trt_int8_enable"] = True
        if "workspace_gb" in o:
            out["trt_max_workspace_size"] = int(float(o["workspace_gb"]) * (1 << 30))
        if "builder_optimization_level" in o:
            out["trt_builder_optimization_level"] = int(o["builder_optimization_level"])
        if model is not None and not isinstance(model, bytes):
            out.update(_batch_profile(model, o))
    return {k: _opt_str(v) for k, v in out.items()}


def provider_specs(providers: Sequence[ProviderSpec], backend_options: dict[str, Any] | None = None,
                   model: str | os.PathLike | None = None) -> list[ProviderSpec]:
    """Providers with their options from ``backend_options`` (explicit per-provider options win)."""
    specs: list[ProviderSpec] = []
    for p in providers:
        p = _canonical(p)
        name = provider_name(p)
        opts = provider_options(name, backend_options, model)
        if not isinstance(p, str):
            opts.update({k: _opt_str(v) for k, v in p[1].items()})
        specs.append((name, opts) if opts else name)
    return specs


def create_session(model: str | os.PathLike | bytes, providers: Sequence[ProviderSpec] | SessionOptions | None = None,
                   *, intra_op_threads: int = 0, log_severity: int = 3, name: str | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on exactly the requested providers (default CPU).

    Given :class:`SessionOptions`, GPU providers get their options from ``backend_options``
    (:func:`provider_options`: device, cuDNN search, TensorRT engine/timing caches, FP16, profiles).
    """
    backend_options: dict[str, Any] = {}
    if isinstance(providers, SessionOptions):
        intra_op_threads = intra_op_threads or providers.intra_op_threads
        backend_options = providers.backend_options
        providers = providers.providers
    requested = check_providers(list(providers) if providers is not None else list(DEFAULT_PROVIDERS))
    requested = provider_specs(requested, backend_options, None if isinstance(model, bytes) else model)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = log_severity
    if intra_op_threads:
        so.intra_op_num_threads = intra_op_threads
    label = name or (Path(model).name if not isinstance(model, bytes) else "model")
    names = [provider_name(p) for p in requested]
    options = [{} if isinstance(p, str) else p[1] for p in requested]
    try:
        sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=so,
                                    providers=names, provider_options=options)
    except Exception as exc:
        raise RuntimeError(f"{label}: ONNX Runtime could not load it ({exc})") from exc
    active = sess.get_providers()
    dropped = [n for n in names if n not in active]
    if dropped:
        raise ProviderUnavailableError(
            f"{label}: ONNX Runtime could not start execution provider(s) {dropped} (running: {active}). "
            "Check that the provider's libraries (CUDA/cuDNN/TensorRT) are installed and on the library "
            "path, or request only the providers that work.")
    detail = options[names.index(active[0])] if active[0] in names else {}
    extras = [k for k in ("trt_fp16_enable", "trt_int8_enable") if detail.get(k) == "True"]
    log.debug("%s runs on %s%s", label, active[0], f" ({', '.join(extras)})" if extras else "")
    return sess


# --- backends -------------------------------------------------------------------------------
class Runner(Protocol):
    """One model ready to run: what every backend returns for a pack ONNX file."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shapes: dict[str, tuple]  # per input; dynamic dims as str or None
    provider: str  # what runs it, for logs and reports ("CPUExecutionProvider", "TensorRT 10.3 fp16", ...)

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class OrtRunner:
    """The built-in backend: one ONNX Runtime session on exactly ``options.providers``."""

    def __init__(self, session: Any):
        self.session = session
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.output_names = tuple(o.name for o in session.get_outputs())
        self.input_shapes = {i.name: tuple(i.shape) for i in session.get_inputs()}
        self.provider = session.get_providers()[0]

    @classmethod
    def create(cls, path: Path, role: str, options: SessionOptions) -> "OrtRunner":
        return cls(create_session(path, options, name=Path(path).name))

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(list(output_names) if output_names else None, feeds)


BACKENDS: dict[str, str] = {
    "onnxruntime": "styleid_edge.runtime.backends:OrtRunner",
    "tensorrt": "styleid_edge.runtime.trt_backend:TensorRTRunner",
    "torch": "styleid_edge.export.torch_runner:TorchRunner",
    "triton": "styleid_edge.runtime.triton_backend:TritonRunner",
    "openvino": "styleid_edge.runtime.openvino_backend:OpenVINORunner",
}
BACKEND_HINT = {
    "tensorrt": "install TensorRT 10 or 11 with its Python bindings (pip install 'styleid-edge[tensorrt]') "
                "on a machine with an NVIDIA GPU",
    "torch": "install PyTorch (pip install 'styleid-edge[export]'); a CUDA build for --device cuda",
    "triton": "install the Triton client (pip install 'styleid-edge[triton]')",
    "openvino": "install OpenVINO (pip install 'styleid-edge[openvino]')",
}


class BackendUnavailableError(RuntimeError):
    """A requested backend cannot run here (its library is missing)."""


def backend_class(name: str) -> Any:
    """The runner class of backend ``name``, imported on first use; a clear error if it cannot be."""
    key = name.strip().lower()
    if key in ("ort", "onnx"):
        key = "onnxruntime"
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, _, attr = BACKENDS[key].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {key!r} is not available here ({exc}): "
                                      f"{BACKEND_HINT.get(key, 'install its library')}") from exc
    return getattr(module, attr)


def make_runner(path: str | os.PathLike, role: str, options: SessionOptions | None = None) -> Runner:
    """A :class:`Runner` for one pack model (``role`` is its pack role) on ``options.backend``."""
    options = options or SessionOptions()
    runner = backend_class(options.backend).create(Path(path), role, options)
    log.info("%s (%s) runs on %s [%s]", role, Path(path).name, runner.provider, options.backend)
    return runner


def parse_backend_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``["url=host:8001", "fp16=1"]`` -> ``{"url": "host:8001", "fp16": True}`` (CLI ``--backend-option``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--backend-option {item!r}: expected KEY=VALUE, e.g. url=127.0.0.1:8001")
        v: Any = value.strip()
        if v.lower() in ("1", "true", "yes", "on"):
            v = True
        elif v.lower() in ("0", "false", "no", "off"):
            v = False
        else:
            try:
                v = int(v)
            except ValueError:
                try:
                    v = float(v)
                except ValueError:
                    pass
        out[key.strip().replace("-", "_")] = v
    return out
