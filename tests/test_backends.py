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


# --- GPU provider options and IO binding (no GPU needed) -----------------------------------------
def _relu_model(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_cuda_provider_options_from_backend_options():
    from styleid_edge.runtime.backends import provider_options

    assert provider_options("CUDAExecutionProvider", {"device_id": 1, "cudnn_conv_algo_search": "heuristic",
                                                      "gpu_mem_limit": 2 << 30, "cuda_graph": True,
                                                      "url": "ignored"}) == {
        "device_id": "1", "cudnn_conv_algo_search": "HEURISTIC", "gpu_mem_limit": str(2 << 30),
        "enable_cuda_graph": "True"}
    assert provider_options("CUDAExecutionProvider", {}) == {}
    assert provider_options("CPUExecutionProvider", {"fp16": True, "device_id": 1}) == {}
    with pytest.raises(ValueError, match="cudnn_conv_algo_search='fastest'.*EXHAUSTIVE"):
        provider_options("CUDAExecutionProvider", {"cudnn_conv_algo_search": "fastest"})


def test_tensorrt_provider_options_caches_fp16_and_profiles(tmp_path, monkeypatch):
    from styleid_edge.runtime.backends import provider_options, provider_specs

    model = _relu_model(tmp_path / "relu.onnx")
    opts = provider_options("TensorrtExecutionProvider",
                            {"fp16": True, "cache_dir": str(tmp_path / "c"), "workspace_gb": 2, "device_id": 0,
                             "builder_optimization_level": 5, "max_batch": 16, "opt_batch": 8}, model)
    assert opts == {
        "device_id": "0", "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(tmp_path / "c"),
        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(tmp_path / "c"),
        "trt_fp16_enable": "True", "trt_max_workspace_size": str(2 << 30), "trt_builder_optimization_level": "5",
        "trt_profile_min_shapes": "x:1x2x3", "trt_profile_opt_shapes": "x:8x2x3", "trt_profile_max_shapes": "x:16x2x3"}
    # caches are on by default, in the user cache dir (or $STYLEID_EDGE_TRT_CACHE)
    monkeypatch.setenv("STYLEID_EDGE_TRT_CACHE", str(tmp_path / "env"))
    default = provider_options("TensorrtExecutionProvider", {})
    assert default["trt_engine_cache_path"] == str(tmp_path / "env" / "ort") and default["trt_fp16_enable"] == "False"
    assert "trt_profile_min_shapes" not in default
    # aliases expand; explicit per-provider options win over backend options
    specs = provider_specs(["trt", ("cuda", {"device_id": 3}), "cpu"], {"device_id": 1, "fp16": True})
    assert specs[0][0] == "TensorrtExecutionProvider" and specs[0][1]["device_id"] == "1"
    assert specs[1] == ("CUDAExecutionProvider", {"device_id": "3"})
    assert specs[2] == "CPUExecutionProvider"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is present here")
def test_gpu_session_requested_without_the_provider_is_an_error(tmp_path):
    model = _relu_model(tmp_path / "relu.onnx")
    for providers in (["cuda"], ["tensorrt", "cuda", "cpu"]):
        with pytest.raises(ProviderError, match="not available"):
            create_session(model, SessionOptions(providers=providers, backend_options={"fp16": True}))


def test_session_options_reach_a_cpu_session_unchanged(tmp_path):
    model = _relu_model(tmp_path / "relu.onnx")
    sess = create_session(model, SessionOptions(providers=["cpu"], backend_options={"fp16": True, "device_id": 0}))
    x = np.array([[[-1, 2, 3], [4, -5, 6]]], np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0))


def test_io_binding_chain_equals_plain_runs(tiny_pack):
    from styleid_edge.runtime.gpu_io import BoundSession, run_chain

    affine = create_session(tiny_pack.model_path("affine"))
    synthesis = create_session(tiny_pack.model_path("synthesis"))
    m = tiny_pack.manifest
    w = np.random.default_rng(2).standard_normal((3, m.n_latent, m.style_dim)).astype(np.float32)
    styles = affine.run(None, {"w_plus": w})[0]
    plain = synthesis.run(None, {"styles": styles})[0]
    a, s = BoundSession.of(affine), BoundSession.of(synthesis)
    assert a.device == "cpu"
    mid = a.run({"w_plus": w})["styles"]
    assert isinstance(mid, ort.OrtValue) and mid.device_name().lower() == "cpu" and mid.shape() == list(styles.shape)
    np.testing.assert_array_equal(mid.numpy(), styles)
    chained = run_chain([(a, "w_plus", "styles"), (s, "styles", "image")], w)
    assert chained.shape == plain.shape
    np.testing.assert_allclose(chained, plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="at least one stage"):
        run_chain([], w)


def test_file_jobs_run_the_torch_backend_without_compile_unless_asked():
    """anonymize (files) passes compile=0 to the torch backend unless --backend-option compile is given: the
    compile costs more at the start than a file job earns back; live and bench keep the backend's default."""
    import argparse

    from styleid_edge.runtime.backend_args import backend_config

    def args(backend, *opts):
        return argparse.Namespace(backend=backend, backend_option=list(opts), url=None)

    assert backend_config(args("torch"), long_running=False)["backend_options"] == {"compile": False}
    assert backend_config(args("torch", "compile=1"), long_running=False)["backend_options"]["compile"] == 1
    assert "compile" not in backend_config(args("torch"))["backend_options"]  # live: the backend's default
    assert backend_config(args("onnxruntime"), long_running=False)["backend_options"] == {}
