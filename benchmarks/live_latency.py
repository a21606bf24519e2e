"""Live pipeline on a file source played in real time: output frame rate, capture->output latency,
fallbacks and memory, for pixelate-only and for a model pack (default: the tests' tiny synthetic pack).

    python benchmarks/live_latency.py --seconds 20 [--pack PACK] [--size 640x480] [--faces 3] [--json out.json]

Runs each mode for ``--seconds`` on a clip of real faces (tests/data/photos) looped at 25 fps, and
prints one line per mode plus the RSS at the start and at the end of the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PHOTOS = ("obama.jpg", "biden.jpg", "astronaut.png")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_mode(clip_path: Path, method: str, pack, seconds: float, fps: int, budget_ms: float | None,
             face_batch: int, detect_max_side: int = 0) -> dict:
    from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
    from styleid_edge.runtime.live.engine import LiveEngine
    from styleid_edge.runtime.live.scheduler import LiveConfig, LivePipeline
    from styleid_edge.runtime.live.sinks import MemorySink
    from styleid_edge.runtime.live.sources import Capture, FileSource

    anon = Anonymizer(AnonymizerConfig(method=method, min_face=16, detect_max_side=detect_max_side), pack=pack, use_default_pack=False)
    pipeline = LivePipeline(LiveEngine(anon, fps), Capture(FileSource(clip_path, loop=True)), [MemorySink(maxlen=2)],
                            LiveConfig(budget_ms=budget_ms, chunk_faces=face_batch))
    rss0 = rss_mb()
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(seconds / 10):
            samples.append(round(rss_mb()))

    timer = threading.Timer(seconds, pipeline.stop)
    timer.start()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    stats = pipeline.run()
    wall = time.monotonic() - t0
    timer.cancel()
    done.set()
    snap = stats.snapshot()
    return {"method": anon.method, "seconds": round(wall, 1), "fps_in_avg": round(stats.frames_in / wall, 2),
            "fps_out_avg": round(stats.frames_out / wall, 2), "frames_in": stats.frames_in,
            "frames_out": stats.frames_out, "dropped": stats.frames_dropped, "faces": stats.faces,
            "faces_per_frame": round(stats.faces / max(1, stats.frames_out), 2),
            "fallbacks": snap["fallbacks"], "late_frames": stats.late_frames, "busy_frames": stats.busy_frames,
            "latency_ms": snap["latency_ms"], "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss_mb(), 1),
            "rss_mb_samples": samples,
            "budget_ms": budget_ms or round(1000 / fps, 1), "model_rounds": getattr(pipeline.batcher, "rounds", 0),
            "stage_ms": anon.finish().to_dict().get("timings", {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--faces", type=int, default=3, choices=[1, 2, 3])
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--pack", help="model pack (default: build the tests' tiny synthetic pack; needs torch)")
    parser.add_argument("--method", default="latent", help="method run with the pack")
    parser.add_argument("--budget-ms", type=float, help="default 1000/fps")
    parser.add_argument("--face-batch", type=int, default=4)
    parser.add_argument("--detect-max-side", type=int, default=0, help="detect on a scaled copy (0: full size)")
    parser.add_argument("--modes", default="pixelate,pack")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from media import moving_faces_clip

    from styleid_edge.runtime.pack import ModelPack

    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="live-bench-"))
    clip = moving_faces_clip(args.fps * 4, size=(w, h), photos=PHOTOS[: args.faces], fps=args.fps,
                             face_height=0.25, path=tmp / "clip.mp4", audio=False)
    results = []
    for mode in args.modes.split(","):
        if mode == "pixelate":
            res = run_mode(clip.path, "pixelate", None, args.seconds, args.fps, args.budget_ms, args.face_batch,
                           args.detect_max_side)
        else:
            if args.pack:
                pack = ModelPack.load(args.pack)
            else:
                from styleid_edge.export.pack_writer import make_synthetic_pack

                pack = make_synthetic_pack(tmp / "tiny32", resolution=32, channel_multiplier=1, seed=0,
                                           recognizer=True)
            res = run_mode(clip.path, args.method, pack, args.seconds, args.fps, args.budget_ms, args.face_batch,
                           args.detect_max_side)
        res["mode"], res["detect_max_side"] = mode, args.detect_max_side
        results.append(res)
        lat = res["latency_ms"]
        print(f"{mode:9s} {res['method']:8s} detect@{args.detect_max_side or 'full'} {w}x{h} {args.faces} faces @ {args.fps} fps: out {res['fps_out_avg']:.1f} "
              f"fps (in {res['fps_in_avg']:.1f}), latency p50 {lat['p50']:.0f} p95 {lat['p95']:.0f} max "
              f"{lat['max']:.0f} ms, faces/frame {res['faces_per_frame']}, late frames {res['late_frames']}, "
              f"busy {res['busy_frames']}, fallbacks {res['fallbacks']}, RSS {res['rss_mb_start']:.0f} -> "
              f"{res['rss_mb_end']:.0f} MB (every {args.seconds / 10:g} s: {res['rss_mb_samples']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
