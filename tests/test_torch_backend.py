"""The torch backend: pack models rebuilt from their ONNX initializers, parity with ONNX Runtime on CPU;
fp16 / CUDA-graph parity on a GPU (skipped here without one)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from styleid_edge.runtime.backends import BackendUnavailableError, SessionOptions, make_runner  # noqa: E402

CPU = SessionOptions(backend="torch", backend_options={"device": "cpu"})
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def _feeds(pack, role: str, batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    m = pack.manifest
    if role == "mapping":
        return {"z": rng.standard_normal((batch, m.style_dim)).astype(np.float32)}
    if role == "affine":
        return {"w_plus": rng.standard_normal((batch, m.n_latent, m.style_dim)).astype(np.float32)}
    if role == "synthesis":
        affine = make_runner(pack.model_path("affine"), "affine")
        w = rng.standard_normal((batch, m.n_latent, m.style_dim)).astype(np.float32)
        return {"styles": affine.run(None, {"w_plus": w})[0]}
    if role == "encoder":
        size = make_runner(pack.model_path("encoder"), "encoder").input_shapes["image"][-1]
        return {"image": rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)}
    w = rng.standard_normal((2, batch, m.n_latent, m.style_dim)).astype(np.float32)
    return {"w_src": w[0], "w_tar": w[1]}


@pytest.mark.parametrize("role", ["mapping", "affine", "synthesis", "encoder", "mapper"])
def test_cpu_fp32_matches_onnxruntime(tiny_pack, role):
    feeds = _feeds(tiny_pack, role)
    expected = make_runner(tiny_pack.model_path(role), role).run(None, feeds)[0]
    runner = make_runner(tiny_pack.model_path(role), role, CPU)
    assert runner.provider.startswith("torch") and "cpu" in runner.provider
    assert set(runner.input_names) == set(feeds)
    got = runner.run(None, feeds)[0]
    assert got.dtype == np.float32 and got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * scale)
    # a different batch size through the same runner
    one = runner.run(None, {k: v[:1] for k, v in feeds.items()})[0]
    np.testing.assert_allclose(one, expected[:1], rtol=1e-3, atol=1e-4 * scale)


def test_pack_models_run_on_the_torch_backend(tiny_pack):
    from styleid_edge.runtime.models import PackModels

    models = PackModels(tiny_pack, CPU)
    w = models.mapping.get(np.zeros((2, tiny_pack.manifest.style_dim), np.float32))
    img = models.synthesis.get(models.affine.get(np.repeat(w[:, None], tiny_pack.manifest.n_latent, axis=1)))
    res = tiny_pack.manifest.resolution
    assert img.shape == (2, 3, res, res) and np.isfinite(img).all()
    assert all(p.startswith("torch") for p in models.providers().values())


def test_recognizer_is_refused_with_a_clear_error(tiny_pack):
    from styleid_edge.export.torch_runner import PackMappingError

    with pytest.raises(PackMappingError, match="recognizer.*--backend onnxruntime"):
        make_runner(tiny_pack.model_path("recognizer"), "recognizer", CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the error path cannot be shown")
@pytest.mark.parametrize("role, options", [
    ("synthesis", {"polyphase_up": True, "channels_last": "synthesis"}),  # gpu_check's "nhwc" variant's form
    ("encoder", {"channels_last": "encoder"}),
], ids=["nhwc-polyphase-synthesis", "nhwc-encoder"])
def test_cpu_fp32_nhwc_forms_match_onnxruntime(tiny_pack, role, options):
    feeds = _feeds(tiny_pack, role)
    expected = make_runner(tiny_pack.model_path(role), role).run(None, feeds)[0]
    runner = make_runner(tiny_pack.model_path(role), role,
                         SessionOptions(backend="torch", backend_options={"device": "cpu", **options}))
    got = runner.run(None, feeds)[0]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * scale)


def test_cuda_requested_without_a_gpu_is_an_error_not_a_cpu_fallback(tiny_pack):
    with pytest.raises(BackendUnavailableError, match="device=cuda.*device=cpu"):
        make_runner(tiny_pack.model_path("synthesis"), "synthesis", SessionOptions(backend="torch"))


@pytest.mark.parametrize("options, message", [({"device": "cpu", "fp16": True}, "fp16 runs on CUDA only"),
                                              ({"device": "cpu", "cuda_graphs": True}, "cuda_graphs needs"),
                                              ({"device": "tpu"}, "device="),
                                              ({"device": "cpu", "bogus": 1}, "unknown --backend-option"),
                                              ({"device": "cpu", "channels_last": "mapper"}, "channels_last=")])
def test_bad_options_are_rejected(tiny_pack, options, message):
    with pytest.raises(ValueError, match=message):
        make_runner(tiny_pack.model_path("affine"), "affine", SessionOptions(backend="torch", backend_options=options))


def test_channels_last_is_chosen_per_role():
    from styleid_edge.export.torch_runner import TorchOptions

    assert TorchOptions.from_backend_options({"channels_last": "encoder"}).channels_last == ("encoder",)
    assert TorchOptions.from_backend_options({"channels_last": True}).channels_last == ("encoder", "synthesis")
    assert TorchOptions.from_backend_options({"channels_last": "encoder+synthesis"}).channels_last == (
        "encoder", "synthesis")
    assert TorchOptions.from_backend_options({"device": "cpu"}).channels_last == ()
    assert TorchOptions.from_backend_options({}).channels_last == ("encoder",)  # cuda default
    assert TorchOptions.from_backend_options({"channels_last": 0}).channels_last == ()
    assert TorchOptions.from_backend_options({}).polyphase_up  # cuda + fp16 default
    assert not TorchOptions.from_backend_options({"device": "cpu"}).polyphase_up
    assert not TorchOptions.from_backend_options({"fp16": False}).polyphase_up  # fp32 convs are compute bound
    assert TorchOptions.from_backend_options({"fp16": False}).channels_last == ()
    assert TorchOptions.from_backend_options({"channels_last": "1"}).channels_last == ("encoder", "synthesis")
    assert TorchOptions.from_backend_options({"channels_last": "0"}).channels_last == ()
    assert not TorchOptions.from_backend_options({"polyphase_up": False}).polyphase_up


def test_compile_is_on_by_default_only_for_fp16_on_cuda_with_triton(monkeypatch):
    from styleid_edge.export import torch_runner
    from styleid_edge.export.torch_runner import TorchOptions

    monkeypatch.setattr(torch_runner, "triton_usable", lambda: True)
    default = TorchOptions.from_backend_options({})
    assert default.compile and default.compile_fallback  # chosen by default: a failure falls back to eager
    assert not TorchOptions.from_backend_options({"device": "cpu"}).compile
    assert not TorchOptions.from_backend_options({"fp16": False}).compile
    assert not TorchOptions.from_backend_options({"compile": 0}).compile
    assert not TorchOptions.from_backend_options({"cuda_graphs": 0}).compile  # no buckets: a compile per size
    monkeypatch.setattr(torch_runner, "triton_usable", lambda: False)
    assert not TorchOptions.from_backend_options({}).compile
    asked = TorchOptions.from_backend_options({"compile": 1})
    assert asked.compile and not asked.compile_fallback  # asked for: a failure is an error


def test_a_failed_default_compile_runs_eagerly_with_a_warning(caplog):
    from styleid_edge.export.torch_runner import CompiledCall

    calls = []

    def eager(x):
        calls.append(x.shape[0])
        return x * 2

    def broken_compiler(fn, dynamic):
        assert dynamic is False  # one static-shape compile per batch bucket

        def compiled(*inputs):
            raise RuntimeError("triton: no C compiler found\nlong traceback")
        return compiled

    x = torch.ones(2, 3)
    call = CompiledCall(eager, "synthesis", fallback=True, max_batch=16, compiler=broken_compiler)
    with caplog.at_level("WARNING", logger="styleid_edge.export.torch_runner"):
        assert torch.equal(call(x), x * 2)
    assert "torch.compile failed for the synthesis (RuntimeError: triton: no C compiler found)" in caplog.text
    assert "compile=0" in caplog.text and isinstance(call.error, RuntimeError)
    assert torch.equal(call(x[:1]), x[:1] * 2) and calls == [2, 1]  # no second attempt
    strict = CompiledCall(eager, "encoder", fallback=False, max_batch=16, compiler=broken_compiler)
    with pytest.raises(RuntimeError, match="no C compiler"):
        strict(x)

    def oom_compiler(fn, dynamic):
        def compiled(*inputs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return compiled

    with pytest.raises(torch.cuda.OutOfMemoryError):  # not a compile failure: never hidden by the fallback
        CompiledCall(eager, "synthesis", fallback=True, max_batch=16, compiler=oom_compiler)(x)

    def later_failure_compiler(fn, dynamic):
        def compiled(*inputs):
            if failing:
                raise RuntimeError("an error at run time")
            return fn(*inputs)
        return compiled

    failing = False
    call = CompiledCall(eager, "synthesis", fallback=True, max_batch=16, compiler=later_failure_compiler)
    assert torch.equal(call(x), x * 2)
    failing = True
    with pytest.raises(RuntimeError, match="at run time"):  # this shape compiled and ran before
        call(x)


def test_a_graph_that_is_not_ours_is_refused(tiny_pack, tmp_path):
    import shutil

    from styleid_edge.export.torch_runner import PackMappingError

    pack_dir = tmp_path / "pack"
    shutil.copytree(tiny_pack.root, pack_dir)
    shutil.copy(pack_dir / "mapping.onnx", pack_dir / "synthesis.onnx")  # wrong graph under the synthesis name
    with pytest.raises(PackMappingError, match="re-export the pack"):
        make_runner(pack_dir / "synthesis.onnx", "synthesis", CPU)


def test_fast_synthesis_math_matches_the_generator_in_fp32(tiny_pack):
    from styleid_edge.export.torch_runner import FastSynthesis, generator_from_pack

    gen = generator_from_pack(tiny_pack)
    s = gen.styles(torch.randn(2, gen.n_latent, gen.style_dim, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        ref = gen.synthesize(s)
        fast = FastSynthesis(gen)(s)
    assert float((fast - ref).abs().max()) < 1e-4 * max(1.0, float(ref.abs().max()))


# ---------------------------------------------------------------------------------------------- GPU
def _gpu_parity(pack, role: str, options: dict, rel: float) -> None:
    feeds = _feeds(pack, role, batch=3)
    expected = make_runner(pack.model_path(role), role).run(None, feeds)[0]
    runner = make_runner(pack.model_path(role), role, SessionOptions(backend="torch", backend_options=options))
    assert "cuda" in runner.provider
    for batch in (3, 1, 3):  # bucket 4 (padded), bucket 1, bucket 4 replayed
        got = runner.run(None, {k: v[:batch] for k, v in feeds.items()})[0]
        err = float(np.abs(got - expected[:batch]).max())
        assert err <= rel * max(1.0, float(np.abs(expected).max())), (role, batch, err)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("role", ["mapping", "affine", "synthesis", "encoder", "mapper"])
def test_cuda_fp32_eager_matches_onnxruntime(tiny_pack, role):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    _gpu_parity(tiny_pack, role, {"device": "cuda", "fp16": False, "cuda_graphs": False}, 1e-3)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("role", ["synthesis", "encoder"])
def test_cuda_fp16_graphs_match_onnxruntime(tiny_pack, role):
    _gpu_parity(tiny_pack, role, {"device": "cuda", "compile": False}, 3e-2)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("role", ["synthesis", "encoder"])
def test_cuda_defaults_match_onnxruntime(tiny_pack, role):
    """The CUDA defaults: fp16, CUDA graphs and, where Triton is usable, torch.compile."""
    _gpu_parity(tiny_pack, role, {"device": "cuda"}, 3e-2)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("options, rel", [
    ({"fp16": False, "cuda_graphs": False, "polyphase_up": True}, 1e-3),  # polyphase in fp32: exact form
    ({"channels_last": "synthesis"}, 3e-2),  # NHWC synthesis with polyphase (pixel_shuffle's format)
    ({"compile": True}, 3e-2),  # torch.compile, then CUDA graph capture per bucket
], ids=["fp32-polyphase", "nhwc-synthesis", "compile"])
def test_cuda_synthesis_variants_match_onnxruntime(tiny_pack, options, rel):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    _gpu_parity(tiny_pack, "synthesis", {"device": "cuda", **options}, rel)


@pytest.mark.gpu
@gpu
def test_cuda_graph_memory_stays_flat(tiny_pack):
    runner = make_runner(tiny_pack.model_path("synthesis"), "synthesis",
                         SessionOptions(backend="torch", backend_options={"device": "cuda"}))
    feeds = _feeds(tiny_pack, "synthesis", batch=2)
    runner.run(None, feeds)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(200):
        runner.run(None, feeds)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= before + 1024 * 1024


@pytest.mark.slow
def test_compiled_synthesis_matches_onnxruntime_on_cpu(tiny_pack):
    """compile=1 with polyphase upsampling (the CUDA defaults' form): the synthesis through torch.compile
    (inductor; about 40 s on 2 cores) keeps parity."""
    expected_runner = make_runner(tiny_pack.model_path("synthesis"), "synthesis")
    runner = make_runner(tiny_pack.model_path("synthesis"), "synthesis",
                         SessionOptions(backend="torch", backend_options={"device": "cpu", "compile": True,
                                                                          "polyphase_up": True}))
    assert "torch.compile" in runner.provider
    feeds = _feeds(tiny_pack, "synthesis", batch=2)
    got = runner.run(None, feeds)[0]
    expected = expected_runner.run(None, feeds)[0]
    assert float(np.abs(got - expected).max()) <= 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_synthesis_to_crops_on_the_device_matches_the_host_conversion(tiny_pack):
    """get_crops: the torch backend converts on its device (area / bicubic in float), ONNX Runtime on the host
    (uint8 then resize); within one grey level for integer shrink factors, growth and the same size; other
    shrink factors go through the host conversion."""
    from styleid_edge.runtime.models import PackModels

    host, dev = PackModels(tiny_pack), PackModels(tiny_pack, CPU)
    rng = np.random.default_rng(2)
    styles = host.affine.get(rng.standard_normal((3, tiny_pack.manifest.n_latent, 512)).astype(np.float32))
    r = tiny_pack.manifest.resolution
    for size in (r // 2, r, 2 * r, r + r // 2, r - r // 4):
        a, b = host.synthesis.get_crops(styles, size), dev.synthesis.get_crops(styles, size)
        assert a.shape == b.shape == (3, size, size, 3) and b.dtype == np.uint8
        diff = np.abs(a.astype(int) - b)
        assert diff.max() <= 1 and diff.mean() < 0.2, (size, diff.max(), diff.mean())
    with pytest.raises(ValueError, match="synthesis"):
        dev.affine.runner.run_crops({"w_plus": np.zeros((1, 1), np.float32)}, 8)
