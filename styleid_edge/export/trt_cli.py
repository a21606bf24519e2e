"""``styleid-edge export tensorrt``: build (or load from the cache) one TensorRT engine per pack model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..runtime.pack import MODEL_ROLES

log = logging.getLogger(__name__)


def cmd_export_tensorrt(args: argparse.Namespace) -> int:
    from ..runtime.pack import ModelPack
    from .tensorrt import BuildConfig, EngineRecord, export_tensorrt, import_tensorrt

    pack_dir = Path(args.pack)
    if not (pack_dir / "manifest.json").is_file():
        raise FileNotFoundError(f"{pack_dir}: no model pack here (manifest.json missing); make one with "
                                "`styleid-edge export --out DIR ...` or give the right --pack")
    config = BuildConfig(fp16=args.fp16, int8=args.int8, min_batch=args.min_batch, opt_batch=args.opt_batch,
                         max_batch=args.max_batch, workspace_gb=args.workspace_gb, cache_dir=args.cache_dir,
                         device_id=args.device_id, builder_optimization_level=args.opt_level,
                         calib_data=Path(args.calib_data) if args.calib_data else None,
                         calib_synthetic=args.calib_synthetic,
                         roles=tuple(args.roles.split(",")) if args.roles else None)
    pack = ModelPack.load(pack_dir)
    trt = import_tensorrt()  # a clear error before any work if TensorRT is missing
    print(f"TensorRT {trt.__version__}: engines for {pack.root} "
          f"(batch {config.min_batch}/{config.opt_batch}/{config.max_batch}, "
          f"{'fp16' if config.fp16 else 'fp32'}{' + int8' if config.int8 else ''}; cache {config.cache})")

    def progress(rec: EngineRecord) -> None:
        print(rec.line(), flush=True)

    records = export_tensorrt(pack, config, progress)
    built = sum(r.status == "built" for r in records)
    # every option that enters the engine cache key, so the runtime finds these engines instead of rebuilding
    keyed = {"fp16": 1 if config.fp16 else None, "int8": 1 if config.int8 else None,
             "cache_dir": config.cache_dir, "max_batch": config.max_batch if config.max_batch != 8 else None,
             "min_batch": config.min_batch if config.min_batch != 1 else None,
             "opt_batch": config.opt_batch if args.opt_batch is not None else None,
             "calib_data": config.calib_data if config.int8 else None,
             "calib_synthetic": (config.calib_synthetic if config.int8 and not config.calib_data
                                 and config.calib_synthetic != 32 else None),
             "device_id": config.device_id or None,
             "builder_optimization_level": config.builder_optimization_level,
             "workspace_gb": config.workspace_gb if config.workspace_gb != BuildConfig.workspace_gb else None}
    print(f"{len(records)} engines: {built} built, {len(records) - built} loaded from cache. "
          f"Run with: styleid-edge anonymize ... --backend tensorrt"
          + "".join(f" --backend-option {k}={v}" for k, v in keyed.items() if v is not None))
    return 0


def register_export_tensorrt(export_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``tensorrt`` to the ``export`` command's sub-commands."""
    p = export_subparsers.add_parser(
        "tensorrt", help="build TensorRT engines from a pack (cached per GPU + TensorRT version)",
        description="Build one TensorRT engine per model of a pack, with a dynamic-batch profile, a timing cache "
                    "and an engine cache (a second run loads instead of building). TensorRT 10.x and 11.x.")
    p.add_argument("--pack", required=True, help="model pack directory (a QDQ pack from `calibrate int8 --target "
                                                 "tensorrt` for --int8 on TensorRT 11)")
    p.add_argument("--fp16", action="store_true", help="FP16 engines; modulation/demodulation and normalisation "
                                                       "stay FP32")
    p.add_argument("--int8", action="store_true", help="INT8 for encoder/recognizer/synthesis (TensorRT 10: "
                                                       "calibrator; TensorRT 11: needs a QDQ pack)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch the engines take (default 8)")
    p.add_argument("--opt-batch", type=int, default=None, help="batch size tuned for (default min(4, max))")
    p.add_argument("--min-batch", type=int, default=1, help="smallest batch (default 1)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="engine + timing cache directory (default $STYLEID_EDGE_TRT_CACHE or "
                        "~/.cache/styleid-edge/tensorrt)")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit in GiB (default 4)")
    p.add_argument("--opt-level", type=int, default=None, help="builder optimization level 0-5 (TensorRT default 3)")
    p.add_argument("--device-id", type=int, default=0, help="CUDA device (default 0)")
    p.add_argument("--roles", help=f"comma-separated models to build (default all of {', '.join(MODEL_ROLES)} "
                                   "the pack has)")
    p.add_argument("--calib-data", help="TensorRT 10 --int8: folder of face photos for calibration")
    p.add_argument("--calib-synthetic", type=int, default=32,
                   help="TensorRT 10 --int8 without --calib-data: faces generated by the pack (default 32)")
    p.set_defaults(func=cmd_export_tensorrt)
    return p


__all__ = ["cmd_export_tensorrt", "register_export_tensorrt"]
