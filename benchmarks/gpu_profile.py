"""Where the torch backend's time goes: kernel-level profile of the synthesis and the encoder.

For a GPU session: `bench` says how long encoder + synthesis take per face; this says which kernels
take it (convolutions, elementwise chains, layout conversions, pixel shuffles), so the next change to
the torch backend (or the case for TensorRT) rests on numbers. Each role is rebuilt from the pack by
the torch backend exactly as `--backend torch` runs it, but without CUDA graphs (the profiler then
sees every kernel), warmed up, then profiled over `--runs` batches with ``torch.profiler``.

    python benchmarks/gpu_profile.py --pack PACK --batch 8 --out profile.json
    python benchmarks/gpu_profile.py --pack PACK --batch 8 --backend-option polyphase_up=0
    python benchmarks/gpu_profile.py --pack PACK --device cpu --batch 1     # dry run on a CPU (fp32)

It prints (and writes with ``--out``) one JSON object: device, torch version, the backend options, and
per role: eager ms per batch and per face (median of ``--runs``, outside the profiler), the device time
per face by category and the top kernels (name, calls, total ms per face, share).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("gpu_profile")

# substrings of kernel / op names, first match wins; lower-case
CATEGORIES = (
    ("layout", ("nchwtonhwc", "nhwctonchw", "transpose", "pixel_shuffle", "permute", "copy_", "contiguous")),
    ("convolution", ("conv", "xmma", "cutlass", "implicit", "gemm", "sm80_", "sm90_", "cudnn", "winograd",
                     "mkldnn", "addmm", "matmul", "bmm", "mm")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "leaky", "mul", "add", "rsqrt", "clamp", "where",
                     "fill", "cat")),
    ("reduction", ("reduce", "norm", "mean", "sum", "pool")),
)


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def profile_role(runner: Any, shape: tuple[int, ...], batch: int, runs: int, warmup: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = runner.device.type == "cuda"
    x = torch.randn((batch, *shape), device=runner.device) * 0.5

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(runner.device)

    for _ in range(warmup):
        runner.run_torch(x)
    sync()
    wall = []
    for _ in range(runs):
        t = time.perf_counter()
        runner.run_torch(x)
        sync()
        wall.append(time.perf_counter() - t)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(runs):
            runner.run_torch(x)
        sync()
    rows = []
    for evt in prof.key_averages():
        if cuda:
            is_kernel = str(getattr(evt, "device_type", "")).endswith("CUDA")
            t_us = getattr(evt, "self_device_time_total", None)
            if t_us is None:  # torch < 2.4 names it after CUDA
                t_us = getattr(evt, "self_cuda_time_total", 0)
        else:  # CPU dry run: the aten ops are what runs
            is_kernel = evt.key.startswith("aten::")
            t_us = evt.self_cpu_time_total
        if is_kernel and t_us > 0:
            rows.append((evt.key, evt.count, t_us))
    total_us = sum(r[2] for r in rows) or 1.0
    per_face = runs * batch * 1000.0  # us over all profiled runs -> ms per face
    by_cat: dict[str, float] = {}
    for name, _, t_us in rows:
        by_cat[category(name)] = by_cat.get(category(name), 0.0) + t_us
    rows.sort(key=lambda r: -r[2])
    return {
        "batch": batch,
        "eager_ms_per_batch": round(statistics.median(wall) * 1000, 3),
        "eager_ms_per_face": round(statistics.median(wall) * 1000 / batch, 3),
        "profiled_ms_per_face": round(total_us / per_face, 3),
        "categories_ms_per_face": {k: round(v / per_face, 3) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "categories_share": {k: round(v / total_us, 3) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"name": name[:160], "category": category(name), "calls_per_run": count // runs,
                         "ms_per_face": round(t_us / per_face, 4), "share": round(t_us / total_us, 4)}
                        for name, count, t_us in rows[:30]],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", type=Path, required=True, help="model pack folder (e.g. one gpu_check.sh exported)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run, fp32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=5, help="profiled batches (and timed eager batches)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--roles", default="synthesis,encoder")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="torch backend options on top of device=... cuda_graphs=0 (e.g. polyphase_up=0)")
    p.add_argument("--out", type=Path, help="write the JSON here too")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from styleid_edge.export.torch_runner import TorchRunner
    from styleid_edge.runtime.backends import SessionOptions, parse_backend_options
    from styleid_edge.runtime.pack import ModelPack

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"error": f"torch {torch.__version__} sees no CUDA GPU; use --device cpu for a dry run"}))
        return 2
    pack = ModelPack.load(args.pack)
    options = {"device": args.device, "cuda_graphs": False, **parse_backend_options(args.backend_option)}
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "pack": str(args.pack), "backend_options": options, "roles": {}}
    for role in [r.strip() for r in args.roles.split(",") if r.strip()]:
        path = pack.model_path(role)
        runner = TorchRunner.create(path, role, SessionOptions(backend="torch", backend_options=dict(options)))
        shape = tuple(int(d) for d in list(runner.input_shapes[runner.input_names[0]])[1:])
        log.info("%s: %s, input %s, batch %d", role, runner.provider, shape, args.batch)
        result["roles"][role] = {"provider": runner.provider,
                                 **profile_role(runner, shape, args.batch, args.runs, args.warmup)}
        del runner
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
