"""``styleid-edge bench``: the CLI of :mod:`styleid_edge.bench.run`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from styleid_edge.runtime.backends import BACKENDS, parse_backend_options

log = logging.getLogger(__name__)


def register_bench(subparsers) -> None:
    """Add the top-level ``bench`` command to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "bench", help="per-stage latency at 1080p and the original StyleID math as baseline (needs torch)",
        description="Time detect, align, encode, manipulate, synthesize, paste back and video decode/encode on a "
                    "1080p frame of real faces, at each batch size; in the same run the original StyleID math "
                    "(PyTorch eager, fp32, same weights) as the baseline, with an image check and the ratio "
                    "baseline / fast for encoder + synthesis per face. Without --pack it makes a random-weight "
                    "pack (latency does not depend on weight values).")
    p.add_argument("--pack", help="model pack to time (default: a random-weight pack in a temp dir)")
    p.add_argument("--resolution", type=int, default=1024, help="random pack: generator size (default 1024)")
    p.add_argument("--channel-multiplier", type=int, default=2, help="random pack: channel multiplier (default 2)")
    p.add_argument("--encoder", choices=["full", "tiny"], default=None,
                   help="random pack: full = IR-SE50 e4e with 256 px input (default), tiny = the test-size e4e")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the models and the baseline run")
    p.add_argument("--backend", choices=list(BACKENDS), default=None,
                   help="what runs the pack (default: onnxruntime on cpu, torch on cuda)")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend setting, repeatable (torch: fp16=0, cuda_graphs=0, channels_last=1, max_batch=16)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--frames", type=int, default=30, help="1080p frames for the video encode/decode stages")
    p.add_argument("--faces", type=int, default=5, help="faces in the composed 1080p frame (1-8)")
    p.add_argument("--photos", help="directory with the test photos (default: the checkout's tests/data/photos)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before each measurement")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch and ONNX Runtime (0 = default)")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="after the timings, run the whole per-face path this long at the largest batch and "
                        "sample host and GPU memory (default 0: off)")
    p.add_argument("--no-baseline", action="store_true", help="skip the original-math baseline")
    p.add_argument("--quick", action="store_true",
                   help="a fast smoke run: 32 px random pack with the tiny e4e, batches 1,2, 2 repeats, 4 frames")
    p.add_argument("--json", metavar="PATH", help="write every number to this JSON file")
    p.set_defaults(func=cmd_bench)


def _batches(text: str) -> list[int]:
    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        out = []
    if not out or any(b < 1 for b in out):
        raise ValueError(f"--batches {text!r}: expected positive integers such as 1,8")
    return out


def config_from_args(args: argparse.Namespace):
    from .run import BenchConfig

    cfg = BenchConfig(pack=args.pack, resolution=args.resolution, channel_multiplier=args.channel_multiplier,
                      encoder=args.encoder or "full", device=args.device, backend=args.backend,
                      backend_options=parse_backend_options(args.backend_option), batches=_batches(args.batches),
                      frames=args.frames, faces=args.faces, photos=args.photos, repeats=args.repeats,
                      warmup=args.warmup, baseline=not args.no_baseline, threads=args.threads,
                      soak_seconds=max(0.0, args.soak))
    if args.quick:
        cfg.batches = cfg.batches if args.batches != "1,8" else [1, 2]
        cfg.repeats, cfg.warmup, cfg.frames = min(cfg.repeats, 2), min(cfg.warmup, 1), min(cfg.frames, 4)
        if not args.pack:
            cfg.resolution = 32 if args.resolution == 1024 else args.resolution
            cfg.channel_multiplier = 1 if args.channel_multiplier == 2 else args.channel_multiplier
            cfg.encoder = args.encoder or "tiny"
    return cfg


def format_table(result: dict) -> str:
    lines = []
    stages = result.get("stages", {})
    for key in ("detect_ms_per_frame", "align_ms_per_face", "video_decode_ms_per_frame", "video_encode_ms_per_frame"):
        if key in stages:
            lines.append(f"{key:42s} {stages[key]:10.3f}")
    keys = ["encode_ms_per_face", "manipulate_ms_per_face", "synthesize_ms_per_face", "paste_back_ms_per_face",
            "synthesize_to_crops_ms_per_face",
            "encoder_plus_synthesis_ms_per_face", "device_encoder_plus_synthesis_ms_per_face",
            "baseline_encode_ms_per_face", "baseline_generator_ms_per_face",
            "baseline_encoder_plus_synthesis_ms_per_face", "ratio_baseline_over_fast",
            "ratio_baseline_over_fast_device", "faces_per_s", "frames_per_s_1080p"]
    batches = result.get("batches", {})
    if batches:
        lines.append(f"{'median':42s} " + " ".join(f"{b:>10s}" for b in batches))
        for k in keys:
            if any(k in row for row in batches.values()):
                lines.append(f"{k:42s} " + " ".join(
                    f"{row[k]:10.3f}" if k in row else f"{'-':>10s}" for row in batches.values()))
    check = result.get("image_check")
    if check:
        lines.append(f"image check (baseline vs fast, {check['precision']}): max abs diff {check['max_abs_diff']:.3g} "
                     f"(tolerance {check['tolerance']:.3g}, output scale {check['output_scale']:.3g}) "
                     f"{'OK' if check['ok'] else 'MISMATCH'}")
    mem = result.get("memory")
    if mem:
        lines.append("memory: " + ", ".join(f"{k} {v}" for k, v in mem.items() if k != "soak"))
        soak = mem.get("soak")
        if soak:
            cuda = "" if soak["cuda_growth_mb"] is None else (
                f", CUDA allocated {soak['cuda_growth_mb']:+.1f} MB, reserved {soak['cuda_reserved_growth_mb']:+.1f} MB")
            lines.append(f"soak: {soak['iterations']} rounds of batch {soak['batch']} in {soak['seconds']} s "
                         f"({soak['faces_per_s']} faces/s); growth from a third of the run: RSS {soak['rss_growth_mb']:+.1f} MB"
                         + cuda)
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from .run import run_bench

    cfg = config_from_args(args)
    result = run_bench(cfg)
    machine = result.get("machine", {})
    print(f"machine: {machine.get('gpu') or machine.get('cpu')} ({machine.get('cpu_count')} CPUs), "
          f"torch {machine.get('torch')}, onnxruntime {machine.get('onnxruntime')}, device {cfg.device}, "
          f"backend {result.get('backend')}")
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    check = result.get("image_check")
    if check is not None and not check["ok"]:
        log.error("the fast path's images differ from the baseline's beyond tolerance")
        return 1
    return 0
