"""One-call GPU check for a session that has the GPU machine (prints JSON; see benchmarks/README.md).

    python3 benchmarks/gpu_check.py --out results.json

Per resolution (256 and 1024 px, channel multiplier 2, random weights, the same weights everywhere):
- parity: our export-friendly generator on CUDA and the exported synthesis.onnx on ONNX Runtime CPU,
  each against the original StyleID math (weight modulation, grouped conv) on CUDA, TF32 off;
- speed: per-face median latency of the original math vs ours in PyTorch eager fp32 on CUDA, batch 1
  and 8, measured in the same run (CUDA events).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import reference_stylegan2 as ref_impl  # noqa: E402
from styleid_edge.export.onnx_io import export_onnx  # noqa: E402
from styleid_edge.export.stylegan2 import SynthesisModule, random_generator  # noqa: E402


def cuda_median_ms(fn, warmup: int = 5, repeats: int = 20) -> float:
    if DEVICE == "cpu":  # dry run of this script without a GPU
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


DEVICE = "cuda"


def check(size: int, batches: list[int]) -> dict:
    import onnxruntime as ort

    out: dict = {"size": size}
    gen = random_generator(size, 2, seed=0, n_mlp=8).eval()
    reference = ref_impl.ReferenceStyleGAN2(gen.state_dict(), size, n_mlp=8, channel_multiplier=2)
    reference.sd = {k: v.to(DEVICE) for k, v in reference.sd.items()}
    w_plus = torch.randn(2, gen.n_latent, gen.style_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        styles = gen.styles(w_plus)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            path = export_onnx(SynthesisModule(gen), [styles[:1]], Path(tmp) / "synthesis.onnx",
                               input_names=["styles"], output_names=["image"])
            out["export_seconds"] = round(time.perf_counter() - t, 1)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            img_ort = sess.run(None, {"styles": styles.numpy()})[0]
        gen = gen.to(DEVICE)
        s_cuda = styles.to(DEVICE)
        img_ours = gen.synthesize(s_cuda).float().cpu().numpy()
        img_ref = reference.forward_stylespace(reference.unflatten(s_cuda)).float().cpu().numpy()
    scale = float(np.abs(img_ref).max())
    out["output_scale"] = scale
    out["max_abs_err_ours_cuda_vs_original_cuda"] = float(np.abs(img_ours - img_ref).max())
    out["max_abs_err_onnx_cpu_vs_original_cuda"] = float(np.abs(img_ort - img_ref).max())
    out["parity_ok"] = max(out["max_abs_err_ours_cuda_vs_original_cuda"],
                           out["max_abs_err_onnx_cpu_vs_original_cuda"]) < 1e-3 * scale
    timings = {}
    for b in batches:
        wp = torch.randn(b, gen.n_latent, gen.style_dim, device=DEVICE)
        with torch.no_grad():
            s_b = gen.styles(wp)
            ref_ms = cuda_median_ms(lambda: reference.forward_stylespace(reference.unflatten(s_b)))
            ours_ms = cuda_median_ms(lambda: gen.synthesize(s_b))
        timings[f"batch{b}"] = {"original_ms_per_face": round(ref_ms / b, 3), "ours_ms_per_face": round(ours_ms / b, 3),
                                "speedup": round(ref_ms / ours_ms, 2)}
    out["eager_fp32_tf32_off"] = timings
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,1024")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--out", help="write the JSON here too")
    p.add_argument("--device", default="cuda", help="cpu: a quick dry run of the script itself")
    args = p.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "CUDA is not available: run this on the GPU machine"}))
        return 2
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
    result = {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", "torch": torch.__version__, "python": platform.python_version(),
              "results": []}
    for size in [int(s) for s in args.sizes.split(",")]:
        try:
            result["results"].append(check(size, [int(b) for b in args.batches.split(",")]))
        except Exception as exc:  # report and go on with the next size
            result["results"].append({"size": size, "error": f"{type(exc).__name__}: {exc}"})
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
