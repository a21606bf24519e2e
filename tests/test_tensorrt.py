"""TensorRT engines: cache keys, profiles, the build-or-load cache, calibration batches, errors.

Everything except the marked GPU tests runs here (no TensorRT, no GPU). The cache logic is tested
with a fake build function injected at ``ensure_engine``'s seam; the real build
(``build_serialized`` / ``engine_for`` / ``TensorRTRunner``) is tested only where TensorRT and a GPU
exist (``@pytest.mark.gpu``, skipped otherwise).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from styleid_edge.export.tensorrt import (BuildConfig, CalibrationBatches, GpuInfo, TensorRTError, builder_settings,
                                          cache_key, calibration_arrays, ensure_engine, import_tensorrt, precision_plan,
                                          profile_shapes, role_profile, timing_cache_name)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
PROFILE = {"styles": ((1, 5632), (4, 5632), (8, 5632))}


def test_cache_key_is_stable_and_changes_with_each_component():
    base = dict(gpu=H100, trt_version="10.13.0", onnx_sha256="a" * 64, precision={"fp16": True, "int8": None},
                profile=PROFILE)
    base["builder"] = builder_settings(BuildConfig())
    key = cache_key(**base)
    assert key == cache_key(**base) and len(key) == 64
    assert key == cache_key(**{**base, "precision": {"int8": None, "fp16": True}})  # dict order does not matter
    variants = {
        "gpu name": {"gpu": GpuInfo("NVIDIA L4", (9, 0))},
        "compute capability": {"gpu": GpuInfo(H100.name, (8, 9))},
        "tensorrt version": {"trt_version": "11.4.0"},
        "onnx hash": {"onnx_sha256": "b" * 64},
        "precision": {"precision": {"fp16": False, "int8": None}},
        "profile": {"profile": {"styles": ((1, 5632), (4, 5632), (16, 5632))}},
        "optimization level": {"builder": builder_settings(BuildConfig(builder_optimization_level=5))},
        "workspace": {"builder": builder_settings(BuildConfig(workspace_gb=1.0))},
    }
    # the default settings add nothing: engines built before the builder settings were keyed keep their key
    assert builder_settings(BuildConfig()) == {}
    assert key == cache_key(**{k: v for k, v in base.items() if k != "builder"})
    keys = {name: cache_key(**{**base, **change}) for name, change in variants.items()}
    for name, k in keys.items():
        assert k != key, f"changing the {name} must change the key"
    assert len(set(keys.values())) == len(keys)
    assert timing_cache_name(H100, "10.13.0") == timing_cache_name(H100, "10.13.0")
    assert timing_cache_name(H100, "10.13.0") != timing_cache_name(H100, "11.4.0")


def test_profile_shapes_per_role_of_the_pack(tiny_pack):
    m = tiny_pack.manifest
    cfg = BuildConfig(max_batch=8)  # opt defaults to min(4, max)
    assert cfg.opt_batch == 4
    syn = role_profile(tiny_pack, "synthesis", cfg)
    assert syn == {"styles": ((1, m.n_styles), (4, m.n_styles), (8, m.n_styles))}
    assert role_profile(tiny_pack, "mapping", cfg) == {"z": ((1, m.style_dim), (4, m.style_dim), (8, m.style_dim))}
    assert role_profile(tiny_pack, "affine", cfg)["w_plus"][2] == (8, m.n_latent, m.style_dim)
    enc = role_profile(tiny_pack, "encoder", BuildConfig(min_batch=2, opt_batch=3, max_batch=16))
    assert enc == {"image": ((2, 3, 64, 64), (3, 3, 64, 64), (16, 3, 64, 64))}
    mapper = role_profile(tiny_pack, "mapper", cfg)
    assert set(mapper) == {"w_src", "w_tar"} and mapper["w_tar"][0] == (1, m.n_latent, m.style_dim)
    with pytest.raises(TensorRTError, match="dynamic dimensions"):
        profile_shapes({"image": ["b", 3, "h", "w"]}, 1, 2, 4)
    with pytest.raises(ValueError, match="opt-batch"):
        BuildConfig(max_batch=4, opt_batch=8)


def test_backend_options_from_the_cli_keep_numbers_so_the_cache_key_matches_the_export(tiny_pack):
    from styleid_edge.runtime.backends import parse_backend_options

    # "--backend-option max_batch=1" parses to True: the profile (and so the cache key) must still say 1
    raw = parse_backend_options(["max_batch=1", "min_batch=1", "opt_batch=1", "workspace_gb=1", "fp16=1",
                                 "builder_optimization_level=1"])
    assert raw["max_batch"] is True
    cfg = BuildConfig.from_backend_options(raw)
    exported = BuildConfig(max_batch=1, min_batch=1, opt_batch=1, workspace_gb=1.0, fp16=True,
                           builder_optimization_level=1)
    assert builder_settings(cfg) == builder_settings(exported) == {"optimization_level": 1, "workspace_gb": 1.0}
    for field in ("max_batch", "min_batch", "opt_batch"):
        assert type(getattr(cfg, field)) is int and getattr(cfg, field) == 1
    assert type(cfg.workspace_gb) is float
    assert role_profile(tiny_pack, "synthesis", cfg) == role_profile(tiny_pack, "synthesis", exported)
    key = {"gpu": H100, "trt_version": "10.13.0", "onnx_sha256": "a" * 64, "precision": {"fp16": True}}
    assert cache_key(**key, profile=role_profile(tiny_pack, "synthesis", cfg)) == \
        cache_key(**key, profile=role_profile(tiny_pack, "synthesis", exported))


def test_runner_splits_batches_above_the_profile_and_pads_those_below_it():
    """TensorRTRunner's batching against a stand-in engine (profile batch 2..4) that doubles its input;
    the TensorRT calls it makes are the real API's (set_input_shape, set_tensor_address, execute_async_v3)."""
    from styleid_edge.runtime.trt_backend import TensorRTRunner

    shapes_run = []

    class Context:
        def set_input_shape(self, name, shape):
            self.shape = shape
            shapes_run.append(shape[0])
            return 2 <= shape[0] <= 4

        def get_tensor_shape(self, name):
            return self.shape

        def set_tensor_address(self, name, ptr):
            pass

        def execute_async_v3(self, stream):
            buffers.device["y"] = buffers.device["x"] * 2
            return True

    class Buffers:
        stream, device = 0, {}

        def upload(self, name, arr):
            self.device[name] = arr.copy()
            return 1

        def ensure(self, name, nbytes):
            return 2

        def download(self, name, out):
            out[...] = self.device[name]

        def synchronize(self):
            pass

    buffers = Buffers()
    runner = TensorRTRunner.__new__(TensorRTRunner)
    runner.context, runner.buffers, runner.label = Context(), buffers, "stand-in"
    runner.input_names, runner.output_names = ("x",), ("y",)
    runner.dtypes = {"x": np.dtype(np.float32), "y": np.dtype(np.float32)}
    runner.min_batch, runner.max_batch = 2, 4
    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    for n in (1, 2, 4, 5, 7):  # 1: padded; 5 = 4 + 1 (padded tail); 7 = 4 + 3
        shapes_run.clear()
        (out,) = runner.run(None, {"x": x[:n]})
        assert out.shape == (n, 3) and np.array_equal(out, x[:n] * 2), n
        assert all(2 <= b <= 4 for b in shapes_run), (n, shapes_run)


def test_engine_cache_builds_once_then_loads(tmp_path, caplog):
    calls = []

    def fake_build(engine_path):  # stands in for TensorRT at the seam; only the cache logic is under test
        calls.append(engine_path)
        return b"engine-bytes-" + engine_path.name.encode()

    key = cache_key(H100, "10.13.0", "c" * 64, {"fp16": True}, PROFILE)
    caplog.set_level("INFO")
    first = ensure_engine("synthesis", key, tmp_path, fake_build, meta={"gpu": H100.name})
    assert first.status == "built" and len(calls) == 1 and first.path.is_file()
    assert "built" in first.line() and "synthesis" in first.line()
    assert json.loads(first.path.with_suffix(".json").read_text())["key"] == key
    second = ensure_engine("synthesis", key, tmp_path, fake_build)
    assert second.status == "loaded from cache" and len(calls) == 1 and second.path == first.path
    assert "loaded from cache" in second.line()
    assert any("loaded from cache" in r.getMessage() for r in caplog.records)
    # an engine that no longer deserializes (new driver, ...) is rebuilt, not used
    third = ensure_engine("synthesis", key, tmp_path, fake_build, verify=lambda blob: False)
    assert third.status == "built" and len(calls) == 2
    # another key (e.g. fp32) is another file
    other = ensure_engine("synthesis", cache_key(H100, "10.13.0", "c" * 64, {"fp16": False}, PROFILE), tmp_path,
                          fake_build)
    assert other.status == "built" and other.path != first.path
    with pytest.raises(TensorRTError, match="no engine"):
        ensure_engine("mapping", "d" * 64, tmp_path, lambda p: b"")


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_a_clear_error(tiny_pack, capsys):
    with pytest.raises(TensorRTError, match=r"TensorRT is not installed: pip install 'styleid-edge\[tensorrt\]'"):
        import_tensorrt()
    from styleid_edge.export.trt_cli import register_export_tensorrt

    parser = argparse.ArgumentParser()
    register_export_tensorrt(parser.add_subparsers(dest="target"))
    args = parser.parse_args(["tensorrt", "--pack", str(tiny_pack.root), "--fp16", "--max-batch", "4"])
    assert args.fp16 and args.max_batch == 4 and args.opt_batch is None
    with pytest.raises(TensorRTError, match="TensorRT is not installed"):
        args.func(args)
    # the runtime backend says the same, never falls back to CPU
    from styleid_edge.runtime.backends import SessionOptions
    from styleid_edge.runtime.models import Synthesis

    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        Synthesis(tiny_pack.model_path("synthesis"), SessionOptions(backend="tensorrt"))
    # and through the CLI entry point: exit code 2 with the message
    from styleid_edge.cli import main

    assert main(["export", "tensorrt", "--pack", str(tiny_pack.root)]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err


def test_export_tensorrt_rejects_a_folder_without_a_pack(tmp_path):
    from styleid_edge.export.trt_cli import register_export_tensorrt

    parser = argparse.ArgumentParser()
    register_export_tensorrt(parser.add_subparsers(dest="target"))
    args = parser.parse_args(["tensorrt", "--pack", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        args.func(args)


def _qdq_view(tiny_pack, tmp_path):
    """The tiny pack's files under a manifest that says the synthesis is an INT8 QDQ model."""
    from styleid_edge.runtime.pack import ModelPack

    root = tmp_path / "tiny-int8"
    root.mkdir()
    for f in tiny_pack.root.iterdir():
        if f.suffix == ".onnx":
            os.link(f, root / f.name)  # a hard link: the pack refuses files that resolve outside it
    manifest = json.loads((tiny_pack.root / "manifest.json").read_text())
    manifest.setdefault("defaults", {})["quantization"] = {"int8": ["synthesis"], "format": "QDQ"}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return ModelPack.load(root)


def test_precision_plan_for_tensorrt_10_and_11(tiny_pack, tmp_path):
    fp16 = BuildConfig(fp16=True)
    assert precision_plan(tiny_pack, "synthesis", fp16, "10.13.0")["typing"] == "weak"
    p11 = precision_plan(tiny_pack, "synthesis", fp16, "11.4.0")
    assert p11["typing"] == "strong" and p11["fp16_onnx"] and p11["int8"] is None
    int8 = BuildConfig(int8=True, calib_synthetic=16)
    assert precision_plan(tiny_pack, "encoder", int8, "10.13.0")["int8"] == "calibrator"
    assert precision_plan(tiny_pack, "encoder", int8, "10.13.0")["calibration"] == "synthetic:16"
    assert precision_plan(tiny_pack, "affine", int8, "10.13.0")["int8"] is None  # stays float by design
    with pytest.raises(TensorRTError, match="no INT8 calibrator.*calibrate int8 --pack .* --target tensorrt"):
        precision_plan(tiny_pack, "encoder", int8, "11.4.0")
    qdq = _qdq_view(tiny_pack, tmp_path)
    assert precision_plan(qdq, "synthesis", int8, "11.4.0")["int8"] == "qdq"
    assert precision_plan(qdq, "synthesis", BuildConfig(), "10.13.0")["int8"] == "qdq"
    # a QDQ pack whose encoder was left float: the error names the pack's INT8 models, not "make a QDQ pack"
    with pytest.raises(TensorRTError, match=r"INT8 Q/DQ models are \['synthesis'\]; its encoder is float.*"
                                            r"--roles encoder.*--roles encoder,synthesis"):
        precision_plan(qdq, "encoder", int8, "11.4.0")
    assert precision_plan(qdq, "encoder", int8, "10.13.0")["int8"] == "calibrator"  # 10.x calibrates it


def test_calibration_batches_over_the_calibration_modules_data(tiny_pack):
    arrays = calibration_arrays(tiny_pack, BuildConfig(int8=True, calib_synthetic=5))
    assert set(arrays) == {"encoder", "recognizer", "synthesis"}
    styles = arrays["synthesis"]
    assert styles.shape[1] == tiny_pack.manifest.n_styles
    batches = CalibrationBatches({"styles": styles}, batch_size=4)
    got = list(batches)
    assert len(got) == len(batches) == -(-len(styles) // 4)
    for b in got:
        assert b["styles"].shape == (4, styles.shape[1]) and b["styles"].dtype == np.float32
        assert b["styles"].flags["C_CONTIGUOUS"]
    stacked = np.concatenate([b["styles"] for b in got])
    np.testing.assert_array_equal(stacked[: len(styles)], styles)  # every sample once, in order
    np.testing.assert_array_equal(stacked[len(styles):], styles[: len(stacked) - len(styles)])  # wrap-around fill
    assert len(list(batches)) == len(got)  # iterable again (TensorRT may calibrate twice)
    with pytest.raises(ValueError, match="same, non-zero"):
        CalibrationBatches({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, 2)


# --------------------------------------------------------------------------------------------
# real TensorRT on a GPU


def _gpu_or_skip():
    trt = pytest.importorskip("tensorrt")
    from styleid_edge.export.tensorrt import gpu_info

    try:
        return trt, gpu_info(0)
    except TensorRTError as exc:
        pytest.skip(f"no GPU: {exc}")


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_real_engine_build_load_and_parity(tiny_pack, tmp_path, fp16):
    trt, gpu = _gpu_or_skip()
    from styleid_edge.export.tensorrt import engine_for
    from styleid_edge.runtime.backends import SessionOptions
    from styleid_edge.runtime.models import Synthesis

    cfg = BuildConfig(fp16=fp16, max_batch=4, cache_dir=tmp_path, workspace_gb=2)
    first = engine_for(tiny_pack, "synthesis", cfg, trt=trt, gpu=gpu)
    assert first.status == "built"
    assert engine_for(tiny_pack, "synthesis", cfg, trt=trt, gpu=gpu).status == "loaded from cache"
    assert any(p.name.startswith("timing-") for p in tmp_path.iterdir())
    opts = SessionOptions(backend="tensorrt", backend_options={"fp16": fp16, "max_batch": 4,
                                                                "cache_dir": str(tmp_path)})
    trt_model = Synthesis(tiny_pack.model_path("synthesis"), opts)
    assert trt_model.provider.startswith("TensorRT")
    cpu_model = Synthesis(tiny_pack.model_path("synthesis"))
    styles = cpu_model.runner.session.get_inputs()[0].shape
    x = np.random.default_rng(0).standard_normal((6, styles[1])).astype(np.float32)  # 6 > max batch: split in two
    ref, out = cpu_model.get(x), trt_model.get(x)
    assert out.shape == ref.shape and out.dtype == np.float32
    tol = 3e-2 * float(np.ptp(ref)) if fp16 else 1e-3 * float(np.ptp(ref))
    assert float(np.abs(out - ref).max()) < tol


@pytest.mark.gpu
def test_real_tensorrt_10_int8_calibrator_build(tiny_pack, tmp_path):
    trt, gpu = _gpu_or_skip()
    from styleid_edge.export.tensorrt import engine_for, trt_major

    if trt_major(trt.__version__) >= 11:
        pytest.skip("TensorRT 11 has no calibrator (explicit Q/DQ only)")
    cfg = BuildConfig(int8=True, max_batch=4, calib_synthetic=8, calib_batch=4, cache_dir=tmp_path)
    rec = engine_for(tiny_pack, "synthesis", cfg, trt=trt, gpu=gpu)
    assert rec.status == "built" and rec.precision["int8"] == "calibrator"
    assert list((tmp_path / "calibration").glob("synthesis-*.cache"))


def test_modules_import_without_tensorrt_cuda_or_torch():
    code = ("import sys\n"
            "for m in ('tensorrt', 'torch', 'cuda', 'cuda.bindings'): sys.modules[m] = None\n"
            "import styleid_edge.export.tensorrt, styleid_edge.export.fp16, styleid_edge.export.trt_cli\n"
            "import styleid_edge.runtime.trt_backend, styleid_edge.runtime.gpu_io\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_nvidia_smi_fallback_numbers_gpus_as_cuda_does_under_cuda_visible_devices():
    from styleid_edge.export.tensorrt import smi_gpu

    csv = ("0, GPU-aaaa1111-0000, NVIDIA A100-SXM4-80GB, 8.0\n"
           "1, GPU-bbbb2222-0000, NVIDIA L4, 8.9\n"
           "2, GPU-cccc3333-0000, NVIDIA H100 80GB HBM3, 9.0\n")
    pci = "PCI_BUS_ID"  # nvidia-smi's order; CUDA's default is fastest first
    assert smi_gpu(csv, 0, None, pci) == GpuInfo("NVIDIA A100-SXM4-80GB", (8, 0))
    assert smi_gpu(csv, 2, None, pci) == H100
    assert smi_gpu(csv, 0, "2,1", pci) == H100  # CUDA device 0 is the first visible one
    assert smi_gpu(csv, 1, "2,1", pci) == GpuInfo("NVIDIA L4", (8, 9))
    assert smi_gpu(csv, 0, "GPU-bbbb") == GpuInfo("NVIDIA L4", (8, 9))  # UUID prefixes; one GPU: any order
    assert smi_gpu(csv, 1, "2,7,0", pci) is None  # the list ends at the first entry that matches no GPU
    assert smi_gpu(csv, 0, "", pci) is None and smi_gpu(csv, 0, "-1", pci) is None  # nothing visible
    assert smi_gpu(csv, 3, None, pci) is None
    # CUDA's default order with different models: nvidia-smi cannot tell which is device 0
    assert smi_gpu(csv, 0, None) is None and smi_gpu(csv, 0, "2,1") is None
    same = "0, GPU-a, NVIDIA H100 80GB HBM3, 9.0\n1, GPU-b, NVIDIA H100 80GB HBM3, 9.0\n"
    assert smi_gpu(same, 1, None) == H100  # identical GPUs: the order does not change the answer
