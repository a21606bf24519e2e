"""FP16 conversion of a pack's ONNX models, keeping the numerically fragile nodes in FP32.

TensorRT 11 builds only strongly typed networks: the precision of every tensor comes from the ONNX
model, so an FP16 engine needs an FP16 ONNX model first (DESIGN.md "Calibration: INT8 / FP16").
This module is our own converter (onnx only; no torch, no TensorRT):

- float32 initializers, Constant nodes and the outputs of convertible ops (:data:`FP16_OPS`) become
  float16; every edge where a float16 tensor meets an FP32 node (or the other way round) gets one
  ``Cast`` node, shared by all consumers of that tensor;
- model inputs and outputs stay float32 (a ``Cast`` after each input and before each output), so the
  runtime contract (float32 in, float32 out) does not change;
- kept in FP32 (:func:`protected_nodes`): the **style path** of the synthesis (the StyleSpace input
  and everything computed from it: Split/Reshape of the styles, the modulation ``x*s``, the
  demodulation ``s*s`` → ``MatMul(Σw²)`` → ``+eps`` → ``Sqrt`` → ``Div`` → ``conv*d``; the sum of
  squares over 512·9 terms overflows half precision), every **normalisation** (PixelNorm in the
  mapping and the latent swapper, the recognizer's L2 norm: a reduction or a square and what follows
  from it up to the node that applies it), any op not in :data:`FP16_OPS`, and names the caller adds.

Initializer values beyond the FP16 range are clipped to ±65504 (and counted); values below FP16's
smallest subnormal become 0, as a cast would make them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
ALL = None  # every float input of the op takes the op's type T
# op type -> indices of the inputs that take the type T (the others, e.g. Resize scales, stay as they are)
FP16_OPS: dict[str, tuple[int, ...] | None] = {
    "Conv": ALL, "ConvTranspose": ALL, "MatMul": ALL, "Gemm": ALL, "Add": ALL, "Sub": ALL, "Mul": ALL,
    "Div": ALL, "Neg": ALL, "Abs": ALL, "Max": ALL, "Min": ALL, "Relu": ALL, "LeakyRelu": ALL, "PRelu": ALL,
    "Sigmoid": ALL, "Tanh": ALL, "Elu": ALL, "HardSigmoid": ALL, "Concat": ALL, "Flatten": ALL,
    "Transpose": ALL, "Identity": ALL, "Clip": ALL, "DepthToSpace": ALL, "SpaceToDepth": ALL,
    "MaxPool": ALL, "AveragePool": ALL, "GlobalAveragePool": ALL, "GlobalMaxPool": ALL,
    "BatchNormalization": ALL, "Reshape": (0,), "Slice": (0,), "Split": (0,), "Squeeze": (0,),
    "Unsqueeze": (0,), "Gather": (0,), "Expand": (0,), "Tile": (0,), "Pad": (0, 2), "Resize": (0,),
    "Where": (1, 2),
}
# ops whose input type does not matter (no cast needed in front of them)
ANY_TYPE_OPS = {"Cast", "Shape", "Size"}
# normalisation: where it starts (a reduction, or a square) and what it flows through until applied
REDUCE_OPS = {"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp"}
NORM_PASS_OPS = {"Add", "Sub", "Mul", "Div", "Sqrt", "Reciprocal", "Pow", "Clip", "Max", "Min", "Expand",
                 "Reshape", "Unsqueeze", "Squeeze", "MatMul", "Neg", "Abs", "Identity", *REDUCE_OPS}
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)


class Fp16Error(RuntimeError):
    """The model cannot be converted; the message says why and what to do."""


@dataclass
class Fp16Config:
    """What stays FP32 besides the defaults (style path, normalisation, I/O)."""

    keep_nodes: tuple[str, ...] = ()  # extra ONNX node names kept in FP32
    style_input: str = "styles"  # a graph input of this name marks a synthesis model: its style path stays FP32
    protect_normalisation: bool = True
    protect_style_path: bool = True


@dataclass
class Fp16Result:
    model: onnx.ModelProto
    fp32_nodes: dict[str, str]  # protected node name -> why it stays FP32
    fp16_nodes: int  # nodes converted to FP16
    casts: int  # Cast nodes inserted
    clipped: int  # initializer values clipped to the FP16 range
    kept_ops: dict[str, int] = field(default_factory=dict)  # op types left FP32 because not in FP16_OPS

    def summary(self) -> str:
        return (f"{self.fp16_nodes} nodes FP16, {len(self.fp32_nodes)} kept FP32 "
                f"(style path/normalisation/named), {self.casts} casts, {self.clipped} values clipped")


def _name_nodes(graph: onnx.GraphProto) -> None:
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}" if not node.name else f"{node.name}_{i}"
        seen.add(node.name)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]
             if v.type.HasField("tensor_type")}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def _constants(graph: onnx.GraphProto) -> set[str]:
    return {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def normalisation_nodes(model: onnx.ModelProto, types: dict[str, int] | None = None) -> set[str]:
    """Names of the nodes that compute and apply a normalisation (see the module docstring).

    Starts: reductions (ReduceMean/Sum/L2, ...) and squares (``Mul(x, x)``, ``Pow(x, 2)``). From
    their outputs, follow consumers through :data:`NORM_PASS_OPS` while every other dynamic float
    input is itself part of the statistic (or a constant); the first node that mixes the statistic
    with another tensor (``z * inv_norm``, ``conv * d``, ``emb / norm``) applies it: it is included and
    the walk stops there.
    """
    graph = model.graph
    types = types if types is not None else _elem_types(model)
    consts = _constants(graph)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    out: set[str] = set()
    stat: set[str] = set()  # tensors that are (functions of) a statistic
    frontier: list[str] = []
    for n in graph.node:
        square = (n.op_type == "Mul" and len(n.input) == 2 and n.input[0] == n.input[1]) or n.op_type == "Pow"
        if n.op_type in REDUCE_OPS or square:
            out.add(n.name)
            stat.update(n.output)
            frontier.extend(n.output)
    while frontier:
        t = frontier.pop()
        for c in consumers.get(t, []):
            others = [i for i in c.input if i and i not in consts and i not in stat
                      and types.get(i) in FLOAT_TYPES]
            out.add(c.name)
            if c.op_type in NORM_PASS_OPS and not others:
                for o in c.output:
                    if o not in stat:
                        stat.add(o)
                        frontier.append(o)
    return out


def protected_nodes(model: onnx.ModelProto, config: Fp16Config | None = None,
                    types: dict[str, int] | None = None) -> dict[str, str]:
    """Node name -> reason, for every node that stays FP32 by rule (style path, normalisation, named)."""
    config = config or Fp16Config()
    types = types if types is not None else _elem_types(model)
    reasons: dict[str, str] = {}
    inputs = {i.name for i in model.graph.input}
    if config.protect_style_path and config.style_input in inputs:
        from ..calibration.int8 import style_path  # the same rule the INT8 quantizer keeps float

        for name in style_path(model, config.style_input)[1]:
            reasons[name] = "style path (modulation/demodulation)"
    if config.protect_normalisation:
        for name in normalisation_nodes(model, types):
            reasons.setdefault(name, "normalisation")
    names = {n.name for n in model.graph.node}
    unknown = [k for k in config.keep_nodes if k not in names]
    if unknown:
        raise Fp16Error(f"keep_nodes {unknown[:5]} are not nodes of this model; use names from the ONNX graph "
                        "(e.g. netron or onnx.load(...).graph.node)")
    for name in config.keep_nodes:
        reasons.setdefault(name, "requested")
    return reasons


def _t_inputs(node: onnx.NodeProto) -> Iterable[int]:
    idx = FP16_OPS[node.op_type]
    return range(len(node.input)) if idx is None else [i for i in idx if i < len(node.input)]


def _to_fp16(arr: np.ndarray) -> tuple[np.ndarray, int]:
    over = int(np.count_nonzero(np.abs(arr) > FP16_MAX))
    return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), over


def convert_model(model: onnx.ModelProto, config: Fp16Config | None = None) -> Fp16Result:
    """An FP16 copy of ``model`` with the protected nodes, inputs and outputs in FP32."""
    config = config or Fp16Config()
    model = _deepcopy(model)
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        log.warning("the model has control-flow subgraphs; their nodes stay FP32")
    _name_nodes(graph)
    types = _elem_types(model)
    protected = protected_nodes(model, config, types)

    def is_float32(t: str) -> bool:
        return types.get(t) == TensorProto.FLOAT

    low: set[str] = set()
    kept_ops: dict[str, int] = defaultdict(int)
    for n in graph.node:
        if n.op_type == "Constant":
            continue
        has_float = any(is_float32(t) for t in [*n.input, *n.output] if t)
        if not has_float:
            continue
        if n.op_type not in FP16_OPS:
            kept_ops[n.op_type] += 1
        elif n.name not in protected:
            low.add(n.name)

    # which type each node wants on each input edge (None: leave as is)
    wants: dict[tuple[str, int], int] = {}
    for n in graph.node:
        if n.op_type == "Constant" or n.op_type in ANY_TYPE_OPS:
            continue
        t_idx = set(_t_inputs(n)) if n.name in low else set()
        for k, t in enumerate(n.input):
            if t and is_float32(t):
                wants[(n.name, k)] = TensorProto.FLOAT16 if k in t_idx else TensorProto.FLOAT

    # the type every float tensor has after conversion
    produced_by = {o: n for n in graph.node for o in n.output}
    new_type: dict[str, int] = {}
    for n in graph.node:
        if n.name in low:
            for o in n.output:
                if is_float32(o):
                    new_type[o] = TensorProto.FLOAT16

    # constants (initializers and Constant nodes): convert in place if every consumer wants FP16,
    # else give the FP16 consumers their own copy
    edge_users: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for n in graph.node:
        for k, t in enumerate(n.input):
            if t:
                edge_users[t].append((n, k))
    outputs = {o.name for o in graph.output}
    clipped = 0
    inits = {i.name: i for i in graph.initializer}
    const_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    extra_inits: list[onnx.TensorProto] = []
    for name in list(inits) + list(const_nodes):
        if not is_float32(name):
            continue
        users = edge_users.get(name, [])
        want16 = [(n, k) for n, k in users if wants.get((n.name, k)) == TensorProto.FLOAT16]
        if not want16:
            continue
        all16 = len(want16) == len(users) and name not in outputs
        if name in inits:
            arr16, over = _to_fp16(numpy_helper.to_array(inits[name]))
            clipped += over
            if all16:
                inits[name].CopyFrom(numpy_helper.from_array(arr16, name))
                new_type[name] = TensorProto.FLOAT16
                continue
            copy = numpy_helper.from_array(arr16, f"{name}_fp16")
            extra_inits.append(copy)
        else:
            node = const_nodes[name]
            attr = next(a for a in node.attribute if a.name == "value")
            arr16, over = _to_fp16(numpy_helper.to_array(attr.t))
            clipped += over
            if all16:
                attr.t.CopyFrom(numpy_helper.from_array(arr16, attr.t.name))
                new_type[name] = TensorProto.FLOAT16
                continue
            extra_inits.append(numpy_helper.from_array(arr16, f"{name}_fp16"))
        new_type[f"{name}_fp16"] = TensorProto.FLOAT16
        for n, k in want16:
            n.input[k] = f"{name}_fp16"
            wants[(n.name, k)] = TensorProto.FLOAT16
    graph.initializer.extend(extra_inits)

    # graph outputs produced in FP16: the producer writes NAME_fp16, a Cast writes NAME (float32)
    tail: list[onnx.NodeProto] = []
    for o in graph.output:
        if new_type.get(o.name) == TensorProto.FLOAT16:
            inner = f"{o.name}_fp16"
            prod = produced_by[o.name]
            prod.output[list(prod.output).index(o.name)] = inner
            for n, k in edge_users.get(o.name, []):
                n.input[k] = inner
            new_type[inner] = TensorProto.FLOAT16
            tail.append(helper.make_node("Cast", [inner], [o.name], name=f"{o.name}/to_fp32", to=TensorProto.FLOAT))
    # Cast on every edge where the tensor's type differs from what its consumer wants (one per tensor/type)
    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []
    for n in graph.node:
        for k, t in enumerate(n.input):
            want = wants.get((n.name, k))
            have = new_type.get(t, TensorProto.FLOAT)
            if want is None or want == have:
                continue
            key = (t, want)
            if key not in casts:
                suffix = "to_fp16" if want == TensorProto.FLOAT16 else "to_fp32"
                casts[key] = f"{t}/{suffix}"
                nodes.append(helper.make_node("Cast", [t], [casts[key]], name=f"{t}/{suffix}", to=want))
            n.input[k] = casts[key]
        nodes.append(n)
    nodes.extend(tail)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # types changed; shape inference re-derives them
    try:
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # a type mismatch means a converter bug, not a user error
        raise Fp16Error(f"the FP16 graph does not type-check ({exc}); keep the offending node in FP32 with "
                        "Fp16Config.keep_nodes and report it") from exc
    n_casts = len(casts) + len(tail)
    if clipped:
        log.warning("%d initializer values beyond the FP16 range were clipped to ±%g", clipped, FP16_MAX)
    return Fp16Result(model, protected, len(low), n_casts, clipped, dict(kept_ops))


def _deepcopy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def convert_file(src: str | Path, dst: str | Path, config: Fp16Config | None = None) -> Fp16Result:
    """Convert the ONNX file ``src`` to FP16 at ``dst`` (external data for models over 2 GB)."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such ONNX file; export the pack first (styleid-edge export ...)")
    result = convert_model(onnx.load(str(src)), config)
    dst.parent.mkdir(parents=True, exist_ok=True)
    big = result.model.ByteSize() > (1 << 31) - (1 << 26)
    onnx.save(result.model, str(dst), save_as_external_data=big,
              location=f"{dst.name}.data" if big else None)
    log.info("%s -> %s: %s", src.name, dst.name, result.summary())
    return result


__all__ = ["FP16_OPS", "Fp16Config", "Fp16Error", "Fp16Result", "convert_file", "convert_model",
           "normalisation_nodes", "protected_nodes"]
