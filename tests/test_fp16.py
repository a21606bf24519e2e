"""FP16 ONNX conversion: protected nodes stay FP32, graphs stay valid, outputs stay close to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from styleid_edge.export.fp16 import Fp16Config, Fp16Error, convert_file, convert_model

# max |fp16 - fp32| allowed, as a fraction of the FP32 output's range (measured on the tiny pack:
# synthesis 4e-4, mapping 4e-4, affine 3e-4, encoder 3e-4, mapper 1.3e-4, recognizer 2.4e-4)
REL_BOUND = 1e-2


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(model: onnx.ModelProto, batch: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([batch] + [d.dim_value for d in i.type.tensor_type.shape.dim][1:])
            .astype(np.float32) for i in model.graph.input}


def _types(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    t = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    t.update({i.name: i.data_type for i in g.initializer})
    return t



@pytest.mark.parametrize("role", ["mapping", "affine", "synthesis", "encoder", "recognizer", "mapper"])
def test_convert_each_pack_model_checks_and_stays_close(tiny_pack, role):
    fp32 = onnx.load(str(tiny_pack.model_path(role)))
    result = convert_model(fp32)
    fp16 = result.model
    onnx.checker.check_model(fp16, full_check=True)
    # the runtime contract: float32 inputs and outputs with the same names
    assert [(i.name, i.type.tensor_type.elem_type) for i in fp16.graph.input] == \
        [(i.name, TensorProto.FLOAT) for i in fp32.graph.input]
    assert [(o.name, o.type.tensor_type.elem_type) for o in fp16.graph.output] == \
        [(o.name, TensorProto.FLOAT) for o in fp32.graph.output]
    # most weights really are FP16 now
    sizes = {t: 0 for t in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    for init in fp16.graph.initializer:
        if init.data_type in sizes:
            sizes[init.data_type] += int(np.prod(init.dims))
    assert sizes[TensorProto.FLOAT16] > 0.8 * sum(sizes.values()), sizes  # (synthesis: the Σw² demod weights stay FP32)
    assert result.fp16_nodes > 0 and result.casts >= 2
    feeds = _feeds(fp32)
    ref = _session(fp32).run(None, feeds)[0]
    out = _session(fp16).run(None, feeds)[0]
    assert out.dtype == np.float32 and out.shape == ref.shape and np.isfinite(out).all()
    err = float(np.abs(out - ref).max())
    assert err < REL_BOUND * float(np.ptp(ref)), (role, err, float(np.ptp(ref)))
    assert err > 0  # it really computed in reduced precision


def test_synthesis_modulation_and_demodulation_stay_fp32(tiny_pack):
    fp32 = onnx.load(str(tiny_pack.model_path("synthesis")))
    result = convert_model(fp32)
    types = _types(result.model)
    nodes = {n.name: n for n in result.model.graph.node}
    demod = [n for n in nodes if n.endswith(("/conv/Mul_1", "/conv/MatMul", "/conv/Sqrt", "/conv/Div", "/conv/Mul_2"))]
    modulation = [n for n in nodes if n.endswith("/conv/Mul")]
    assert len(demod) >= 5 * 7 and len(modulation) >= 7  # every modulated conv of the tiny generator
    for name in demod + modulation + ["/Split"]:
        assert name in result.fp32_nodes, name
        node = nodes[name]
        float_io = [t for t in [*node.input, *node.output] if t and types.get(t) in (TensorProto.FLOAT,
                                                                                    TensorProto.FLOAT16)]
        assert all(types[t] == TensorProto.FLOAT for t in float_io), (name, [(t, types[t]) for t in float_io])
    # while the convolutions themselves run in FP16
    convs = [n for n in result.model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(types[n.input[1]] == TensorProto.FLOAT16 for n in convs)
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in convs)


def test_pixelnorm_and_l2_norm_stay_fp32(tiny_pack):
    mapping = convert_model(onnx.load(str(tiny_pack.model_path("mapping"))))
    kept = set(mapping.fp32_nodes)
    assert {"/style/style.0/Mul", "/style/style.0/ReduceMean", "/style/style.0/Sqrt", "/style/style.0/Div",
            "/style/style.0/Mul_1"} <= kept
    assert "/style/style.1/MatMul" not in kept  # the MLP after PixelNorm is FP16
    rec = convert_model(onnx.load(str(tiny_pack.model_path("recognizer"))))
    ops = {n.op_type for n in rec.model.graph.node if n.name in rec.fp32_nodes}
    assert {"ReduceL2", "Div"} <= ops


def test_converted_model_loads_in_the_runtime_classes(tiny_pack, tmp_path):
    from styleid_edge.runtime.models import Affine, Synthesis

    syn16 = tmp_path / "synthesis.fp16.onnx"
    aff16 = tmp_path / "affine.fp16.onnx"
    convert_file(tiny_pack.model_path("synthesis"), syn16)
    convert_file(tiny_pack.model_path("affine"), aff16)
    m = tiny_pack.manifest
    w = np.random.default_rng(1).standard_normal((2, m.n_latent, m.style_dim)).astype(np.float32)
    s32 = Affine(tiny_pack.model_path("affine")).get(w)
    s16 = Affine(aff16).get(w)
    assert s16.dtype == np.float32 and s16.shape == s32.shape
    img32 = Synthesis(tiny_pack.model_path("synthesis")).get(s32)
    img16 = Synthesis(syn16).get(s16)
    assert img16.dtype == np.float32 and img16.shape == img32.shape == (2, 3, m.resolution, m.resolution)
    assert float(np.abs(img16 - img32).max()) < REL_BOUND * float(np.ptp(img32))


def test_keep_nodes_and_range_clipping():
    big = numpy_helper.from_array(np.array([[1e6, 2.0]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"], name="scale"), helper.make_node("Relu", ["y"], ["z"], name="act")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", 2])], [big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    res = convert_model(model)
    assert res.clipped == 1
    out = _session(res.model).run(None, {"x": np.array([[1e-3, 1.0]], np.float32)})[0]
    assert np.isfinite(out).all() and out[0, 0] == pytest.approx(65.504, rel=1e-3)
    kept = convert_model(model, Fp16Config(keep_nodes=("scale",)))
    assert kept.fp32_nodes == {"scale": "requested"} and kept.clipped == 0
    assert _session(kept.model).run(None, {"x": np.array([[1e-3, 1.0]], np.float32)})[0][0, 0] == pytest.approx(1000)
    with pytest.raises(Fp16Error, match="not nodes of this model"):
        convert_model(model, Fp16Config(keep_nodes=("nope",)))
