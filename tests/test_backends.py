"""Execution providers: never a silent CPU fallback; the runtime stays torch-free."""

from __future__ import annotations

import subprocess
import sys

import onnxruntime as ort
import pytest

from styleid_edge.runtime.backends import ProviderError, SessionOptions, create_session, parse_providers


def test_parse_providers_aliases_and_default():
    assert parse_providers(None) == ["CPUExecutionProvider"]
    assert parse_providers("cpu") == ["CPUExecutionProvider"]


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is present here")
def test_missing_provider_is_an_error_not_a_fallback():
    with pytest.raises(ProviderError, match="CUDAExecutionProvider.*not available"):
        parse_providers("cuda,cpu")
    with pytest.raises(ProviderError, match="onnxruntime-gpu|gpu"):
        parse_providers("tensorrt")


def test_session_reports_its_provider(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    sess = create_session(path, SessionOptions(providers=["CPUExecutionProvider"]))
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    import numpy as np

    assert sess.run(None, {"x": np.array([[-1.0, 2.0]], np.float32)})[0].tolist() == [[0.0, 2.0]]


def test_runtime_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import importlib, pkgutil, styleid_edge.runtime as r\n"
        "names = [m.name for m in pkgutil.iter_modules(r.__path__)]\n"
        "for n in names: importlib.import_module('styleid_edge.runtime.' + n)\n"
        "import styleid_edge.cli\n"
        "print(len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 10
