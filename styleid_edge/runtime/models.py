"""Thin classes over the pack's ONNX models: construct, then ``get``.

Each wraps one backend runner (ONNX Runtime by default; see ``backends.BACKENDS``) with the pack's
exact input/output names (DESIGN.md, model pack table). All take and return float32 numpy arrays with a
leading batch dimension of any size.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import SessionOptions, make_runner
from .crops import images_to_crops
from .pack import ModelPack

log = logging.getLogger(__name__)


class OnnxModel:
    """One pack model; ``get`` runs it on named float32 inputs and returns the named output."""

    role: str = ""
    input_names: tuple[str, ...] = ()
    output_name: str = ""

    def __init__(self, path: str | Path, options: SessionOptions | None = None):
        self.path = Path(path)
        self.runner = make_runner(self.path, self.role, options or SessionOptions())
        names = tuple(self.runner.input_names)
        if self.input_names and names != self.input_names:
            raise RuntimeError(f"{self.path}: inputs {names}, expected {self.input_names}; "
                               "re-export the pack with this styleid-edge version")
        outs = list(self.runner.output_names)
        if self.output_name and self.output_name not in outs:
            raise RuntimeError(f"{self.path}: outputs {outs}, expected {self.output_name!r}")
        self.provider = self.runner.provider

    def input_shape(self, name: str | None = None) -> tuple:
        """Shape of an input (the first by default); dynamic dimensions are str or None."""
        return tuple(self.runner.input_shapes[name or self.input_names[0]])

    def _run(self, *arrays: np.ndarray) -> np.ndarray:
        feeds = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(self.input_names, arrays)}
        return self.runner.run([self.output_name], feeds)[0]


class Mapping(OnnxModel):
    role = "mapping"
    input_names, output_name = ("z",), "w"

    def get(self, z: np.ndarray) -> np.ndarray:
        return self._run(z)


class Affine(OnnxModel):
    role = "affine"
    input_names, output_name = ("w_plus",), "styles"

    def get(self, w_plus: np.ndarray) -> np.ndarray:
        return self._run(w_plus)


class Synthesis(OnnxModel):
    role = "synthesis"
    input_names, output_name = ("styles",), "image"

    def get(self, styles: np.ndarray) -> np.ndarray:
        return self._run(styles)

    def get_crops(self, styles: np.ndarray, size: int) -> np.ndarray:
        """The images as BGR uint8 crops (B,size,size,3): on the backend's device where it can (the torch
        backend's ``run_crops``: only the uint8 crops are copied to the host), else on the host."""
        run_crops = getattr(self.runner, "run_crops", None)
        if run_crops is not None:
            return run_crops({self.input_names[0]: np.ascontiguousarray(styles, np.float32)}, size)
        return images_to_crops(self.get(styles), size)


class Encoder(OnnxModel):
    role = "encoder"
    input_names, output_name = ("image",), "w_plus"

    def get(self, image: np.ndarray) -> np.ndarray:
        return self._run(image)


class Recognizer(OnnxModel):
    role = "recognizer"
    input_names, output_name = (), "embedding"

    def __init__(self, path: str | Path, options: SessionOptions | None = None):
        super().__init__(path, options)
        self.input_names = (self.runner.input_names[0],)
        self.output_name = self.runner.output_names[0]

    def get(self, face: np.ndarray) -> np.ndarray:
        emb = self._run(face)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


class Mapper(OnnxModel):
    role = "mapper"
    input_names, output_name = ("w_src", "w_tar"), "w_anon"

    def get(self, w_src: np.ndarray, w_tar: np.ndarray) -> np.ndarray:
        return self._run(w_src, w_tar)


@dataclass
class StageTimer:
    """Accumulates wall time per named stage (for the run report)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, stage: str, started: float) -> None:
        self.seconds[stage] += time.perf_counter() - started
        self.calls[stage] += 1

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"seconds": round(v, 4), "calls": self.calls[k]} for k, v in self.seconds.items()}


class PackModels:
    """The pack's models, each created on first use."""

    _classes = {"mapping": Mapping, "affine": Affine, "synthesis": Synthesis, "encoder": Encoder,
                "recognizer": Recognizer, "mapper": Mapper}

    def __init__(self, pack: ModelPack, options: SessionOptions | None = None):
        self.pack = pack
        self.options = options or SessionOptions()
        self._models: dict[str, OnnxModel] = {}

    def has(self, role: str) -> bool:
        return self.pack.has(role)

    def __getattr__(self, role: str) -> OnnxModel:
        if role.startswith("_") or role not in self._classes:
            raise AttributeError(role)
        if role not in self._models:
            self._models[role] = self._classes[role](self.pack.model_path(role), self.options)
        return self._models[role]

    def providers(self) -> dict[str, str]:
        return {role: m.provider for role, m in self._models.items()}
