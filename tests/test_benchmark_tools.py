"""The profiling scripts in benchmarks/: their multiply-add counts and their dry runs on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _two_convs(path: Path) -> float:
    """x (N,8,32,32) -> 3x3 conv to 16 ch -> stride-2 3x3 ConvTranspose to 4 ch; returns GMAC per sample."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.1, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4, 3, 3)).astype(np.float32) * 0.1, "w2")  # (I, O, k, k)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["h"], name="conv_a", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["h"], ["r"], name="relu_a"),
         helper.make_node("ConvTranspose", ["r", "w2"], ["y"], name="up_b", strides=[2, 2])],
        "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    conv = 32 * 32 * 16 * 8 * 9  # each output element: 8 inputs x 9 taps
    up = 32 * 32 * 16 * 4 * 9  # each input element: 4 outputs x 9 taps
    return (conv + up) / 1e9


def test_ort_profile_counts_the_multiply_adds_of_float_and_int8_convs(tmp_path):
    ort_profile = _load("ort_profile")
    src = tmp_path / "two.onnx"
    expected = _two_convs(src)
    r = ort_profile.profile(src, batch=2, threads=1, runs=2)
    assert r["conv_nodes_matched"] == 2
    assert r["conv_gmac_per_face"] == pytest.approx(expected, rel=1e-3)
    assert r["conv_gmac_per_s"] > 0 and r["kernel_ms_per_face"] >= r["conv_ms_per_face"] > 0

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": np.random.default_rng(i).standard_normal((1, 8, 32, 32)).astype(np.float32)}
                               for i in range(4)])

        def get_next(self):
            return next(self.items, None)

    q = tmp_path / "two.int8.onnx"
    quantize_static(str(src), str(q), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    rq = ort_profile.profile(q, batch=2, threads=1, runs=2)
    assert "QLinearConv" in rq["ops_ms_per_face"]  # the QDQ Conv fused into an int8 kernel
    assert rq["conv_nodes_matched"] == 2  # QLinearConv (weight found through its DequantizeLinear) + ConvTranspose
    assert rq["conv_gmac_per_face"] == pytest.approx(expected, rel=1e-3)


def test_gpu_profile_dry_run_on_cpu(tiny_pack, tmp_path):
    gpu_profile = _load("gpu_profile")
    out = tmp_path / "profile.json"
    assert gpu_profile.main(["--pack", str(tiny_pack.root), "--device", "cpu", "--batch", "2", "--runs", "2",
                             "--warmup", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["roles"]) == {"synthesis", "encoder"}
    for role, r in result["roles"].items():
        assert r["eager_ms_per_face"] > 0 and r["top_kernels"], role
        # convolutions dominate both networks, even at 32 px
        assert max(r["categories_ms_per_face"], key=r["categories_ms_per_face"].get) == "convolution", role
        assert abs(sum(r["categories_share"].values()) - 1.0) < 0.01, role
    assert gpu_profile.category("sm90_xmma_fprop_implicit_gemm_f16f16") == "convolution"
    assert gpu_profile.category("void at::native::vectorized_elementwise_kernel<4, leaky_relu>") == "elementwise"
    assert gpu_profile.category("nchwToNhwcKernel") == "layout"
