"""ONNX Runtime sessions with explicit execution providers.

Never falls back to the CPU silently: a provider that was asked for but is not
available in the installed onnxruntime is an error that names it, and every
session logs which provider actually runs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

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
    "CUDAExecutionProvider": "pip install 'styleid-edge[gpu]' (onnxruntime-gpu) and a matching CUDA runtime",
    "TensorrtExecutionProvider": "pip install 'styleid-edge[gpu]' and TensorRT libraries on the library path",
    "OpenVINOExecutionProvider": "pip install onnxruntime-openvino",
}


class ProviderError(RuntimeError):
    """A requested execution provider is not available."""


def parse_providers(spec: str | list[str] | None) -> list[str]:
    """'cuda,cpu' or ['cuda'] -> full ONNX Runtime provider names, in order; default CPU."""
    if spec is None or spec == "" or spec == []:
        return ["CPUExecutionProvider"]
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [PROVIDER_ALIASES.get(s.strip().lower(), s.strip()) for s in items if s.strip()]
    available = ort.get_available_providers()
    missing = [n for n in names if n not in available]
    if missing:
        hints = "; ".join(f"{n}: {INSTALL_HINT.get(n, 'install an onnxruntime build that has it')}" for n in missing)
        raise ProviderError(f"execution provider(s) {missing} not available in this onnxruntime "
                            f"(available: {available}). {hints}")
    return names


@dataclass
class SessionOptions:
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = 0  # 0 = onnxruntime's default (all cores)
    log_providers: bool = True


def create_session(model: str | Path | bytes, options: SessionOptions | None = None,
                   name: str | None = None) -> ort.InferenceSession:
    """An InferenceSession on exactly the requested providers (checked after creation too)."""
    options = options or SessionOptions()
    providers = parse_providers(options.providers)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if options.intra_op_threads:
        so.intra_op_num_threads = options.intra_op_threads
    so.log_severity_level = 3
    label = name or (Path(model).name if not isinstance(model, bytes) else "model")
    try:
        sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=so,
                                    providers=providers)
    except Exception as exc:
        raise RuntimeError(f"{label}: ONNX Runtime could not load it ({exc})") from exc
    used = sess.get_providers()
    # ORT may drop a GPU provider whose libraries fail to load and keep only CPU: refuse that.
    if providers[0] not in used:
        raise ProviderError(f"{label}: asked for {providers[0]} but ONNX Runtime runs it on {used}. "
                            f"{INSTALL_HINT.get(providers[0], '')}")
    if options.log_providers:
        log.info("%s runs on %s", label, used[0])
    return sess
