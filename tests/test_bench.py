"""`styleid-edge bench --quick` on CPU: every stage timed, the baseline computes the fast path's images, ratios."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("torch")


def _parser() -> argparse.ArgumentParser:
    from styleid_edge.bench.cli import register_bench

    p = argparse.ArgumentParser(prog="styleid-edge")
    register_bench(p.add_subparsers())
    return p


def test_bench_quick_on_cpu_writes_every_stage(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = _parser().parse_args(["bench", "--quick", "--batches", "1,2", "--repeats", "1", "--warmup", "0",
                                 "--frames", "2", "--faces", "2", "--json", str(out)])
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["pack"]["resolution"] == 32 and result["pack"]["synthetic"]
    assert result["backend"] == "onnxruntime"
    assert set(result["providers"]) >= {"encoder", "affine", "synthesis", "mapping"}
    stages = result["stages"]
    assert stages["detect_ms_per_frame"] > 0 and stages["faces_detected"] == 2
    assert stages["align_ms_per_face"] > 0
    assert stages["video_encode_ms_per_frame"] > 0 and stages["video_decode_ms_per_frame"] > 0
    assert set(result["batches"]) == {"batch1", "batch2"}
    for row in result["batches"].values():
        for key in ("encode_ms_per_face", "manipulate_ms_per_face", "synthesize_ms_per_face",
                    "paste_back_ms_per_face", "baseline_encode_ms_per_face", "baseline_generator_ms_per_face",
                    "faces_per_s", "frames_per_s_1080p"):
            assert row[key] > 0, key
        ratio = row["baseline_encoder_plus_synthesis_ms_per_face"] / row["encoder_plus_synthesis_ms_per_face"]
        assert row["ratio_baseline_over_fast"] == pytest.approx(ratio, rel=1e-2)
        # faces/s is the anonymizer's per-face path: synthesis straight to crops, then the blending
        per_face = sum(row[k] for k in ("align_ms_per_face", "encode_ms_per_face", "manipulate_ms_per_face",
                                        "synthesize_to_crops_ms_per_face", "paste_back_ms_per_face"))
        assert row["faces_per_s"] == pytest.approx(1000.0 / per_face, rel=1e-2)
    check = result["image_check"]
    assert check["precision"] == "fp32" and check["ok"]
    assert check["max_abs_diff"] < 1e-3 * max(1.0, check["output_scale"]) and check["output_scale"] > 0.1
    assert result["memory"]["rss_mb_end"] > 0
    printed = capsys.readouterr().out
    assert "ratio_baseline_over_fast" in printed and "image check" in printed and "OK" in printed


def test_bench_cuda_without_a_gpu_fails_before_any_work():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = _parser().parse_args(["bench", "--quick", "--device", "cuda"])
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        args.func(args)


def test_bench_rejects_bad_batches():
    args = _parser().parse_args(["bench", "--batches", "0,x"])
    with pytest.raises(ValueError, match="--batches"):
        args.func(args)


def test_baseline_original_math_matches_the_export_generator(tiny_pack):
    """The bench's baseline (StyleID's weight-modulated generator) on weights read back from the pack."""
    import numpy as np
    import torch

    from styleid_edge.export.original_math import ReferenceStyleGAN2
    from styleid_edge.runtime.backends import make_runner
    from styleid_edge.export.torch_runner import generator_from_pack

    gen = generator_from_pack(tiny_pack)
    ref = ReferenceStyleGAN2(gen.state_dict(), gen.size, n_mlp=gen.n_mlp, channel_multiplier=gen.channel_multiplier)
    w = torch.randn(2, gen.n_latent, gen.style_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        img_ref = ref.forward_wplus(w)[0].numpy()
        z = torch.randn(2, gen.style_dim)
        w_ref = ref.mapping(z).numpy()
    styles = make_runner(tiny_pack.model_path("affine"), "affine").run(None, {"w_plus": w.numpy()})[0]
    img = make_runner(tiny_pack.model_path("synthesis"), "synthesis").run(None, {"styles": styles})[0]
    w_ort = make_runner(tiny_pack.model_path("mapping"), "mapping").run(None, {"z": z.numpy()})[0]
    scale = max(1.0, float(np.abs(img_ref).max()))
    assert float(np.abs(img - img_ref).max()) < 1e-3 * scale
    assert float(np.abs(w_ort - w_ref).max()) < 1e-3 * max(1.0, float(np.abs(w_ref).max()))


def test_bench_soak_samples_memory_over_the_whole_path(tmp_path, capsys):
    """--soak: the whole per-face path in a loop, memory sampled; flat on the tiny pack."""
    out = tmp_path / "soak.json"
    args = _parser().parse_args(["bench", "--quick", "--batches", "2", "--repeats", "1", "--warmup", "0",
                                 "--frames", "2", "--faces", "2", "--no-baseline", "--soak", "3",
                                 "--json", str(out)])
    assert args.func(args) == 0
    soak = json.loads(out.read_text())["memory"]["soak"]
    assert soak["batch"] == 2 and soak["iterations"] >= 2 and soak["seconds"] >= 3  # a busy machine runs fewer
    assert len(soak["samples"]) >= 3
    assert [s["iterations"] for s in soak["samples"]] == sorted(s["iterations"] for s in soak["samples"])
    assert all(s["rss_mb"] > 0 and s["cuda_allocated_mb"] is None and s["cuda_reserved_mb"] is None
               for s in soak["samples"])
    assert soak["cuda_growth_mb"] is None and soak["cuda_reserved_growth_mb"] is None
    assert abs(soak["rss_growth_mb"]) < 64, soak  # 32 px pack: anything near this is a leak
    assert "soak:" in capsys.readouterr().out


def test_bench_soak_on_a_pack_without_mapper(tiny_pack, tmp_path):
    """A pack without the latent swapper: the soak mixes the identity rows (pixel method) every round."""
    import shutil

    from styleid_edge.bench.run import BenchConfig, run_bench

    pack_dir = tmp_path / "pack"
    shutil.copytree(tiny_pack.root, pack_dir)
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    manifest["files"].pop("mapper")
    (pack_dir / "mapper.onnx").unlink()
    (pack_dir / "manifest.json").write_text(json.dumps(manifest))
    result = run_bench(BenchConfig(pack=str(pack_dir), batches=[2], repeats=1, warmup=0, frames=2, faces=2,
                                   baseline=False, soak_seconds=2.0))
    assert "mapper" not in result["providers"] and result["config"]["resolution"] == 32
    soak = result["memory"]["soak"]
    assert soak["iterations"] >= 2 and abs(soak["rss_growth_mb"]) < 64
