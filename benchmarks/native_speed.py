"""OpenVINO (the C++ runtime, libstyleid_edge) vs the Python runtime on ONNX Runtime CPU: encoder + latent
swap + synthesis per face at 256 px, same pack, same crop, same machine, same run.

Run:  python benchmarks/native_speed.py [--repeats 7] [--warmup 2] [--pack DIR] [--threads N]

The pack is a random-weight 256 px pack (generator channel multiplier 2, as the 256 px config of
export_speed.py; the encoder is the tiny e4e body with a 256 px input) written once to
~/.cache/styleid-edge/bench-256 unless --pack is given. Both sides run the whole per-face method:
BGR crop -> encoder -> affine (source + pseudo-identity) -> channel swap -> synthesis -> BGR crop. The
pseudo-identity's mapping result is cached by both runtimes after the first call, as in a video.
Needs the built library (cmake --build build) and the `export` extra to write the pack.
Prints a table: median / min ms per face for each, and the ratio ORT / OpenVINO.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "native" / "python"))
sys.path.insert(0, str(ROOT / "native" / "tools"))

log = logging.getLogger("native_speed")


def ensure_pack(path: Path) -> Path:
    if (path / "manifest.json").is_file() and (path / "detector.onnx").is_file():
        return path
    from prepare_assets import write_channel_rank, write_detector

    from styleid_edge.export.pack_writer import make_synthetic_pack

    log.info("writing a 256 px random pack to %s (once)", path)
    pack = make_synthetic_pack(path, resolution=256, channel_multiplier=2, seed=0, mapper=False, encoder_input=256)
    write_channel_rank(pack)
    write_detector(path / "detector.onnx")
    return path


def timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", type=Path, default=Path.home() / ".cache" / "styleid-edge" / "bench-256")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="inference threads for both (0: library defaults)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from styleid_native import NativeLib, find_library

    lib_path = find_library()
    if lib_path is None:
        raise SystemExit("libstyleid_edge.so not found: build it first (cmake -S . -B build && cmake --build build)")
    pack = ensure_pack(args.pack)

    import cv2
    import onnxruntime as ort

    from styleid_edge.runtime import align
    from styleid_edge.runtime.backends import SessionOptions
    from styleid_edge.runtime.methods import (
        MethodConfig,
        StyleIDMethods,
        images_to_crops,
    )
    from styleid_edge.runtime.models import PackModels
    from styleid_edge.runtime.pack import ModelPack

    photo = cv2.imread(str(ROOT / "tests" / "data" / "photos" / "obama.jpg"))
    native = NativeLib(lib_path)
    rt = native.create(pack, num_threads=args.threads)
    det = rt.detect(photo)[0]
    crop, _ = align.ffhq_crop(photo, det["landmarks"], 256)
    seed = 12345

    # the same pseudo-identity on both sides: pin Python's seed -> z to the native derivation
    from styleid_edge.runtime import methods

    methods.seed_z = lambda s, dim=512: native.seed_z(s, dim)
    models = PackModels(ModelPack.load(pack), SessionOptions(intra_op_threads=args.threads))
    engine = StyleIDMethods(models, MethodConfig("latent"))

    def python_face():
        return images_to_crops(engine.generate(crop[None], [seed]), 256)[0]

    def native_face():
        return rt.generate(crop, seed)[2]

    diff = np.abs(python_face().astype(np.int16) - native_face())
    ov_ms = timed(native_face, args.warmup, args.repeats)
    ort_ms = timed(python_face, args.warmup, args.repeats)
    import openvino

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"onnxruntime {ort.__version__} (CPUExecutionProvider), openvino {openvino.__version__} (CPU, fp32)")
    print(f"pack: {pack} (256 px, S={rt.info().n_styles}, encoder {rt.info().encoder_size} px)")
    print(f"outputs agree: generated face mean |diff| {diff.mean():.3f}, max {diff.max()} grey levels")
    print(f"{'runtime':34s} {'median ms/face':>15s} {'min ms/face':>12s}")
    print(f"{'C++ OpenVINO (libstyleid_edge)':34s} {statistics.median(ov_ms):15.1f} {min(ov_ms):12.1f}")
    print(f"{'Python ONNX Runtime CPU':34s} {statistics.median(ort_ms):15.1f} {min(ort_ms):12.1f}")
    print(f"ratio ORT / OpenVINO (median): {statistics.median(ort_ms) / statistics.median(ov_ms):.2f}x")
    rt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
