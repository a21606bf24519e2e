"""OpenVINO backend: run a pack's ONNX models with OpenVINO's CPU (or another device) plugin.

Same contract as ``onnxruntime.InferenceSession.run`` (see ``backends.Runner``). ``openvino`` is imported
only here, when the backend is chosen (``pip install 'styleid-edge[openvino]'``). Models compile in fp32
(``INFERENCE_PRECISION_HINT=f32``) so results match ONNX Runtime to fp32 rounding; on CPUs with bf16/AMX
OpenVINO would otherwise pick bf16 by itself. ``SessionOptions.backend_options``: ``device`` (default
"CPU"), ``precision`` ("f32" default, or "bf16"/"f16" where the device supports it), ``threads``
(default ``intra_op_threads``; 0 = OpenVINO's choice).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class OpenVINORunner:
    """One compiled OpenVINO model with ONNX Runtime's ``run(output_names, feeds)`` contract."""

    def __init__(self, compiled: Any, path: Path, device: str, precision: str):
        self.compiled = compiled
        self.path = path
        self.request = compiled.create_infer_request()
        self.input_names = tuple(p.get_any_name() for p in compiled.inputs)
        self.output_names = tuple(p.get_any_name() for p in compiled.outputs)
        self.input_shapes = {p.get_any_name(): tuple(d.get_length() if d.is_static else None
                                                     for d in p.get_partial_shape())
                             for p in compiled.inputs}
        self.provider = f"OpenVINO {device} ({precision})"

    @classmethod
    def create(cls, path: Path, role: str, options: Any) -> OpenVINORunner:
        try:
            import openvino as ov
        except ImportError as exc:  # backend_class() turns this into BackendUnavailableError
            raise ImportError(f"OpenVINO is not installed ({exc}); pip install 'styleid-edge[openvino]'") from exc
        path = Path(path)
        if not path.is_file():
            raise RuntimeError(f"{path}: {role} model file is missing; re-export the pack")
        extra = dict(getattr(options, "backend_options", {}) or {})
        device = str(extra.get("device", "CPU"))
        precision = str(extra.get("precision", "f32"))
        threads = int(extra.get("threads", getattr(options, "intra_op_threads", 0) or 0))
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise RuntimeError(f"{path.name}: OpenVINO could not load it on {device} ({exc})") from exc
        runner = cls(compiled, path, device, precision)
        log.info("%s (%s) runs on %s", role, path.name, runner.provider)
        return runner

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.path.name}: missing inputs {missing} (model takes {list(self.input_names)})")
        wanted = list(output_names) if output_names else list(self.output_names)
        unknown = [n for n in wanted if n not in self.output_names]
        if unknown:
            raise ValueError(f"{self.path.name}: no outputs {unknown} (model has {list(self.output_names)})")
        inputs = {n: np.ascontiguousarray(feeds[n]) for n in self.input_names}
        try:
            result = self.request.infer(inputs)
        except Exception as exc:
            raise RuntimeError(f"{self.path.name}: OpenVINO inference failed ({exc})") from exc
        by_name = {port.get_any_name(): value for port, value in result.items()}
        return [np.array(by_name[n], copy=True) for n in wanted]
