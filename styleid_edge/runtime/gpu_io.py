"""ONNX Runtime IO binding: inputs and outputs on a device, and stage chains without host copies.

With the CUDA or TensorRT execution provider, ``session.run`` copies every input to the GPU and
every output back. :class:`BoundSession` binds ``OrtValue`` tensors that already live on the device
instead, and returns its outputs as device ``OrtValue`` s, so one stage's output feeds the next
(encoder → affine → synthesis) without a round trip through host memory; only :func:`run_chain`'s
final result is copied to numpy. The same API works with device ``"cpu"`` (what the tests use).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

Tensor = Union[np.ndarray, "ort.OrtValue"]
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def session_device(session: Any) -> str:
    """'cuda' when the session's first provider runs on an NVIDIA GPU, else 'cpu'."""
    return "cuda" if session.get_providers()[0] in GPU_PROVIDERS else "cpu"


@dataclass
class BoundSession:
    """An ONNX Runtime session run through IO binding on ``device`` ('cpu' or 'cuda', device ``device_id``)."""

    session: Any
    device: str = "cpu"
    device_id: int = 0

    @classmethod
    def of(cls, session: Any, device_id: int = 0) -> "BoundSession":
        return cls(session, session_device(session), device_id)

    def to_device(self, arr: np.ndarray) -> "ort.OrtValue":
        """Copy a host array to this session's device (the one host-to-device copy of a chain)."""
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr, np.float32), self.device, self.device_id)

    def run(self, feeds: dict[str, Tensor], output_names: Sequence[str] | None = None) -> dict[str, "ort.OrtValue"]:
        """Run with every input bound (device OrtValues as they are; numpy copied once); outputs stay on the device."""
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, value if isinstance(value, ort.OrtValue) else self.to_device(value))
        names = list(output_names) if output_names else [o.name for o in self.session.get_outputs()]
        for name in names:
            binding.bind_output(name, self.device, self.device_id)
        if self.device != "cpu":
            binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        if self.device != "cpu":
            binding.synchronize_outputs()
        return dict(zip(names, binding.get_outputs()))


def run_chain(stages: Sequence[tuple[BoundSession, str, str]], x: np.ndarray) -> np.ndarray:
    """Run ``(session, input_name, output_name)`` stages in order, device tensors between them.

    ``x`` goes to the first stage's device once; each stage's output ``OrtValue`` is bound as the
    next stage's input; only the last output is copied to the host.
    """
    if not stages:
        raise ValueError("run_chain needs at least one stage")
    value: Tensor = stages[0][0].to_device(x)
    for bound, in_name, out_name in stages:
        value = bound.run({in_name: value}, [out_name])[out_name]
    return value.numpy()


__all__ = ["BoundSession", "run_chain", "session_device"]
