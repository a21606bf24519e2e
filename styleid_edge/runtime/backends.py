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

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
import importlib
from typing import Any, Protocol, Sequence, Union

import numpy as np
import onnxruntime as ort

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


def create_session(model: str | os.PathLike | bytes, providers: Sequence[ProviderSpec] | SessionOptions | None = None,
                   *, intra_op_threads: int = 0, log_severity: int = 3, name: str | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on exactly the requested providers (default CPU)."""
    if isinstance(providers, SessionOptions):
        intra_op_threads = intra_op_threads or providers.intra_op_threads
        providers = providers.providers
    requested = check_providers(list(providers) if providers is not None else list(DEFAULT_PROVIDERS))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = log_severity
    if intra_op_threads:
        so.intra_op_num_threads = intra_op_threads
    label = name or (Path(model).name if not isinstance(model, bytes) else "model")
    try:
        sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=so,
                                    providers=requested)
    except Exception as exc:
        raise RuntimeError(f"{label}: ONNX Runtime could not load it ({exc})") from exc
    active = sess.get_providers()
    dropped = [provider_name(p) for p in requested if provider_name(p) not in active]
    if dropped:
        raise ProviderUnavailableError(
            f"{label}: ONNX Runtime could not start execution provider(s) {dropped} (running: {active}). "
            "Check that the provider's libraries (CUDA/cuDNN/TensorRT) are installed and on the library "
            "path, or request only the providers that work.")
    log.info("%s runs on %s", label, active[0])
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
    "torch": "styleid_edge.runtime.torch_backend:TorchRunner",
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
