"""Float vs INT8 (QDQ) encoder + synthesis on ONNX Runtime CPU, per face, at 256 px.

    python benchmarks/int8_speed.py [--pack PACK] [--keep DIR] [--repeats 9] [--calib 8]

Without --pack it exports a random-weight 256 px config (channel_multiplier 2, 8-layer mapping)
with ``make_synthetic_pack(resolution=256, channel_multiplier=2, n_mlp=8, encoder_input=256)``.
Its encoder is e4e's structure with a *tiny* IR-SE body (16-48 channels) but full-size 512-channel
style blocks (about 590 MB of float weights); the real e4e IR-SE50 encoder differs in cost, so the
encoder ratio here is indicative only. The synthesis network is the real 256 px config-e/f shape.
Both packs are timed in the same process, interleaved, batch 1, median of repeats, with ONNX
Runtime's default threads and with one intra-op thread. Prints ratios (float / int8).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from styleid_edge.calibration.int8 import Int8Config, calibrate_int8, heldout_eval_set
from styleid_edge.runtime.backends import SessionOptions, create_session
from styleid_edge.runtime.pack import ModelPack


def bench(float_pack: ModelPack, int8_pack: ModelPack, x_enc: np.ndarray, styles: np.ndarray, repeats: int,
          threads: int) -> dict[str, tuple[float, float]]:
    opts = SessionOptions(intra_op_threads=threads)
    sess = {(kind, role): create_session(p.model_path(role), opts)
            for kind, p in (("float", float_pack), ("int8", int8_pack)) for role in ("encoder", "synthesis")}
    feeds = {"encoder": lambda i: {"image": x_enc[i % len(x_enc)][None]},
             "synthesis": lambda i: {"styles": styles[i % len(styles)][None]}}
    times: dict = {k: [] for k in sess}
    for key, s in sess.items():  # warm-up
        s.run(None, feeds[key[1]](0))
    for i in range(repeats):  # interleaved: float and int8 see the same machine load
        for key, s in sess.items():
            t = time.perf_counter()
            s.run(None, feeds[key[1]](i))
            times[key].append((time.perf_counter() - t) * 1e3)
    res = {}
    for role in ("encoder", "synthesis"):
        res[role] = (statistics.median(times[("float", role)]), statistics.median(times[("int8", role)]))
    f = [a + b for a, b in zip(times[("float", "encoder")], times[("float", "synthesis")])]
    q = [a + b for a, b in zip(times[("int8", "encoder")], times[("int8", "synthesis")])]
    res["encoder+synthesis"] = (statistics.median(f), statistics.median(q))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", help="a float pack (default: export a random 256 px cm2 pack to a temp dir)")
    ap.add_argument("--keep", help="keep the exported/quantized packs in this folder")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--calib", type=int, default=8, help="synthetic calibration faces")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.pack:
            pack = ModelPack.load(args.pack)
        else:
            from styleid_edge.export.pack_writer import make_synthetic_pack

            t = time.perf_counter()
            pack = make_synthetic_pack(root / "float256", resolution=256, channel_multiplier=2, n_mlp=8,
                                       encoder_input=256, seed=0)
            print(f"exported random 256 px cm2 pack in {time.perf_counter() - t:.0f}s "
                  "(tiny e4e body, full-size style blocks)")
        t = time.perf_counter()
        cfg = Int8Config(roles=("encoder", "synthesis"), eval_samples=4)
        int8, report = calibrate_int8(pack, root / "int8", synthetic=args.calib, config=cfg, overwrite=True,
                                      speed=False)
        print(f"calibrated + quantized in {time.perf_counter() - t:.0f}s on {args.calib} synthetic faces")
        print(report.table())
        ev = heldout_eval_set(pack, 4, 99)
        print(f"\nper face, batch 1, median of {args.repeats} (ms; ratio = float / int8):")
        print(f"{'threads':<9}{'model':<19}{'float':>9}{'int8':>9}{'ratio':>8}")
        for threads in (0, 1):
            res = bench(pack, int8, ev.encoder, ev.styles, args.repeats, threads)
            for role, (f, q) in res.items():
                print(f"{threads or 'default':<9}{role:<19}{f:>9.1f}{q:>9.1f}{f / q:>7.2f}x")


if __name__ == "__main__":
    main()
