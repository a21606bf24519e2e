"""ONNX Runtime sessions on exactly the requested execution providers.

Never falls back to the CPU silently: a provider that was asked for but is not
available in the installed onnxruntime, or that ONNX Runtime drops while
creating a session (missing CUDA/TensorRT libraries), is an error that names it
and says what to install; every session logs which provider runs it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

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
    providers: list[ProviderSpec] = field(default_factory=lambda: list(DEFAULT_PROVIDERS))
    intra_op_threads: int = 0  # 0 = onnxruntime's default (all cores)


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
