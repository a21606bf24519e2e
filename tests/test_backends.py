"""Execution providers: never a silent CPU fallback; the runtime stays torch-free."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
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


def test_backend_registry_errors_and_options():
    from styleid_edge.runtime.backends import (BackendUnavailableError, backend_class, parse_backend_options,
                                               OrtRunner)

    assert backend_class("onnxruntime") is OrtRunner
    assert backend_class("ORT") is OrtRunner
    with pytest.raises(ValueError, match="unknown backend 'cuda-magic'"):
        backend_class("cuda-magic")
    # a backend whose module/library is missing is a clear error, never a silent fallback
    from styleid_edge.runtime import backends
    backends.BACKENDS["nowhere"] = "styleid_edge.runtime.no_such_module:Runner"
    try:
        with pytest.raises(BackendUnavailableError, match="backend 'nowhere' is not available"):
            backend_class("nowhere")
    finally:
        del backends.BACKENDS["nowhere"]
    assert parse_backend_options(["url=127.0.0.1:8001", "fp16=1", "max-batch=8", "scale=0.5", "x=off"]) == {
        "url": "127.0.0.1:8001", "fp16": True, "max_batch": 8, "scale": 0.5, "x": False}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_backend_options(["fp16"])


def test_pack_models_report_backend_runner(tiny_pack):
    from styleid_edge.runtime.backends import SessionOptions
    from styleid_edge.runtime.models import PackModels

    models = PackModels(tiny_pack, SessionOptions(backend="onnxruntime"))
    w = models.mapping.get(np.random.default_rng(0).standard_normal((2, tiny_pack.manifest.style_dim),
                                                                    dtype=np.float32))
    assert w.shape == (2, tiny_pack.manifest.style_dim) and np.isfinite(w).all()
    assert models.encoder.input_shape()[-1] == 64  # the tiny e4e's input size, a static dimension
    assert models.providers() == {"mapping": "CPUExecutionProvider", "encoder": "CPUExecutionProvider"}
