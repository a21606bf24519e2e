"""The ``tensorrt`` backend: pack models as native TensorRT engines (TensorRT 10.x and 11.x).

Chosen with ``--backend tensorrt`` (``--backend-option fp16=1 max_batch=16 cache_dir=DIR ...``, the
keys of ``export.tensorrt.BuildConfig``). The engine comes from the same cache as
``styleid-edge export tensorrt``; if it is not there yet it is built now (logged), once.

Device memory route: **cuda-python** (``cuda.bindings.runtime``, or ``cuda.cudart`` in older
releases), the route NVIDIA's TensorRT Python samples use: ``cudaMalloc`` for buffers (grown when
a larger batch comes), ``cudaMemcpyAsync`` on one CUDA stream, ``execute_async_v3`` on that
stream. The tensor API (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) is the same in 10.x and 11.x.

This module imports neither TensorRT nor cuda-python at import time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backends import SessionOptions

log = logging.getLogger(__name__)


class CudaBuffers:
    """Named device buffers (cuda-python), grown on demand, plus one CUDA stream."""

    def __init__(self, device_id: int | None = None):
        from ..export.tensorrt import cuda_check, cudart

        self.rt = cudart()
        self.check = cuda_check
        if device_id is not None:
            self.check(self.rt.cudaSetDevice(int(device_id)), "cudaSetDevice")
        self.stream = self.check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.ptrs: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)

    def ensure(self, name: str, nbytes: int) -> int:
        ptr, size = self.ptrs.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.check(self.rt.cudaFree(ptr), "cudaFree")
            ptr = int(self.check(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))
            self.ptrs[name] = (ptr, int(nbytes))
        return ptr

    def upload(self, name: str, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr)
        ptr = self.ensure(name, arr.nbytes)
        self.check(self.rt.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream),
                   "cudaMemcpyAsync (host to device)")
        self.synchronize()  # the host array may go away after this call
        return ptr

    def download(self, name: str, out: np.ndarray) -> np.ndarray:
        ptr, _ = self.ptrs[name]
        self.check(self.rt.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream),
                   "cudaMemcpyAsync (device to host)")
        return out

    def synchronize(self) -> None:
        self.check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for ptr, _ in self.ptrs.values():
            self.rt.cudaFree(ptr)
        self.ptrs.clear()
        if self.stream is not None:
            self.rt.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:  # best effort; the process exit frees device memory anyway
        try:
            self.close()
        except Exception:
            pass


class TensorRTRunner:
    """One deserialized engine behind the runner contract (numpy in, numpy out, any batch size)."""

    def __init__(self, engine_path: str | Path, trt: Any, device_id: int = 0, label: str | None = None,
                 precision: str = ""):
        self.path = Path(engine_path)
        self.trt = trt
        self.buffers = CudaBuffers(device_id)  # cudaSetDevice first: the engine loads onto the current device
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{self.path}: TensorRT {trt.__version__} could not load this engine (built for another "
                               "GPU or TensorRT version?); delete it and run `styleid-edge export tensorrt` again")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode_in = trt.TensorIOMode.INPUT
        self.input_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == mode_in)
        self.output_names = tuple(n for n in names if self.engine.get_tensor_mode(n) != mode_in)
        self.input_shapes = {n: tuple(None if d < 0 else int(d) for d in self.engine.get_tensor_shape(n))
                             for n in self.input_names}
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        # profile 0: (min, opt, max) per input; the batch (dim 0) upper bound splits larger batches
        self.max_batch = min(int(self.engine.get_tensor_profile_shape(n, 0)[2][0]) for n in self.input_names)
        # and its lower bound (export --min-batch): smaller batches are padded up to it
        self.min_batch = max(int(self.engine.get_tensor_profile_shape(n, 0)[0][0]) for n in self.input_names)
        self.provider = f"TensorRT {trt.__version__}{' ' + precision if precision else ''}"
        self.label = label or self.path.name

    @classmethod
    def create(cls, path: Path, role: str, options: SessionOptions) -> "TensorRTRunner":
        from ..export.tensorrt import BuildConfig, engine_for, import_tensorrt
        from .pack import ModelPack

        trt = import_tensorrt()
        config = BuildConfig.from_backend_options(options.backend_options)
        pack = ModelPack.load(Path(path).parent)
        if pack.model_path(role).resolve() != Path(path).resolve():
            raise RuntimeError(f"{path} is not the pack's {role} model; the tensorrt backend builds from a model pack")
        rec = engine_for(pack, role, config, trt=trt)
        log.info("%s: TensorRT engine %s (%s)", role, rec.path.name, rec.status)
        plan = rec.precision
        precision = "+".join(p for p, on in (("fp16", plan.get("fp16")), ("int8", plan.get("int8"))) if on) or "fp32"
        return cls(rec.path, trt, config.device_id, f"{role} ({rec.path.name})", precision)

    def _run_batch(self, feeds: dict[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        batch = len(next(iter(feeds.values())))
        if batch < self.min_batch:  # repeat the last row up to the profile's minimum, drop the extra outputs
            pad = self.min_batch - batch
            feeds = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in feeds.items()}
            return [out[:batch] for out in self._run_batch(feeds, names)]
        for n in self.input_names:
            arr = np.ascontiguousarray(feeds[n], self.dtypes[n])
            if not self.context.set_input_shape(n, tuple(arr.shape)):
                raise ValueError(f"{self.label}: input {n!r} shape {arr.shape} is outside the engine's profile "
                                 f"{self.engine.get_tensor_profile_shape(n, 0)}")
            self.context.set_tensor_address(n, self.buffers.upload(n, arr))
        outs = {}
        for n in self.output_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(n))
            out = np.empty(shape, self.dtypes[n])
            self.context.set_tensor_address(n, self.buffers.ensure(n, out.nbytes))
            outs[n] = out
        if not self.context.execute_async_v3(int(self.buffers.stream)):
            raise RuntimeError(f"{self.label}: TensorRT execution failed (see its log)")
        for n in names:
            self.buffers.download(n, outs[n])
        self.buffers.synchronize()
        return [outs[n].astype(np.float32, copy=False) for n in names]

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = list(output_names) if output_names else list(self.output_names)
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.label}: missing inputs {missing}")
        batch = len(next(iter(feeds.values())))
        if batch <= self.max_batch:
            return self._run_batch(feeds, names)
        parts = [self._run_batch({k: v[i:i + self.max_batch] for k, v in feeds.items()}, names)
                 for i in range(0, batch, self.max_batch)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(names))]
