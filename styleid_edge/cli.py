"""The one entry point: ``styleid-edge <command>``.

Commands import their package lazily, so ``anonymize`` never loads torch and
``export`` is the only one that needs the ``export`` extra.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .runtime.backend_args import add_backend_arguments, backend_config
from .runtime.cli_types import angle_list, number_in

log = logging.getLogger("styleid_edge")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if verbose
                        else "%(levelname)s: %(message)s")


# --- export -------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    if not args.out:
        raise ValueError("export needs --out PACK_DIR (the model pack directory to write)")
    if args.synthetic is None and not args.stylegan2:
        raise ValueError("export needs --stylegan2 CKPT (or --synthetic RES for a random test pack)")
    if args.synthetic is not None and (args.stylegan2 or args.e4e or args.arcface or args.mapper):
        raise ValueError("--synthetic writes a random-weight pack; it takes no checkpoints: drop --synthetic, "
                         "or drop --stylegan2/--e4e/--arcface/--mapper")
    try:
        from .export.pack_writer import build_pack, make_synthetic_pack
    except ImportError as exc:
        raise RuntimeError(f"`styleid-edge export` needs the export extra (torch, onnx): "
                           f"pip install 'styleid-edge[export]'  ({exc})")
    if args.synthetic is not None:
        pack = make_synthetic_pack(args.out, resolution=args.synthetic, channel_multiplier=args.channel_multiplier,
                                   seed=args.seed, recognizer=args.with_recognizer, replace=args.force)
    else:
        pack = build_pack(args.out, stylegan2=args.stylegan2, e4e=args.e4e, arcface=args.arcface,
                          mapper=args.mapper, replace=args.force)
    print(_pack_summary(pack))
    return 0


def _pack_summary(pack) -> str:
    m = pack.manifest
    lines = [f"pack: {pack.root}", f"  resolution {m.resolution} px, W+ {m.n_latent}x{m.style_dim}, "
             f"StyleSpace {m.n_styles} channels ({sum(layer.size for layer in m.layers if not layer.is_torgb)} "
             f"without toRGB) in {len(m.layers)} layers"]
    for role, name in m.files.items():
        size = pack.path(name).stat().st_size / 1e6
        lines.append(f"  {role:<10} {name} ({size:.1f} MB)")
    lines.append(f"  identity ranks: {', '.join(m.ranks) if m.ranks else 'none (run styleid-edge calibrate ranks)'}")
    if (pack.root / "donors.npz").is_file():
        lines.append("  donor bank: donors.npz")
    if m.synthetic:
        lines.append("  SYNTHETIC pack: random weights, for tests and demos only")
    for src in m.provenance.get("sources", []):
        lines.append(f"  source {src.get('role')}: {src.get('file')} sha256 {src.get('sha256', '')[:16]}...")
    for lic in m.licences:
        lines.append(f"  licence: {lic}")
    return "\n".join(lines)


def cmd_pack_info(args: argparse.Namespace) -> int:
    from .runtime.pack import CHECKSUMS, ModelPack, PackError

    try:
        pack = ModelPack.load(args.pack)
    except PackError as exc:
        print(f"invalid pack: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(pack.manifest.to_json())
    else:
        print(_pack_summary(pack))
    if not args.verify:
        return 0
    results = pack.verify_files()
    for name, status in results:
        print(f"  {status:<10} {name}", file=sys.stderr if args.json else sys.stdout)
    bad = [name for name, status in results if status in ("changed", "missing")]
    if bad:
        print(f"error: {len(bad)} pack file(s) differ from the checksums in {pack.root / CHECKSUMS}: "
              f"{', '.join(bad)}. Copy the pack again from its source, or rebuild it with `styleid-edge export`.",
              file=sys.stderr)
        return 2
    if any(status == "unrecorded" for _, status in results):
        print("note: this pack was written before packs recorded checksums; nothing to compare against "
              "(re-export it to add them)", file=sys.stderr)
    return 0


# --- anonymize ----------------------------------------------------------------------------
def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_anonymize(args: argparse.Namespace) -> int:
    if getattr(args, "ray", None):
        from .runtime.archive import anonymize_with_ray

        return anonymize_with_ray(args)
    if args.workers is not None:
        raise ValueError("--workers sets how many files run in parallel on a Ray cluster: add --ray, or drop "
                         "--workers (without --ray one process handles the files one after another)")
    from .runtime.anonymizer import AnonymizerConfig, weak_threshold
    from .runtime.backends import parse_providers
    from .runtime.jobs import JobOptions, OutputError, anonymize_path

    config = AnonymizerConfig(method=args.method, strength=args.strength, seed=args.seed, target=args.target,
                              detector=args.detector, detector_threshold=args.thresh,
                              weak_threshold=weak_threshold(args.weak_thresh), min_face=args.min_face,
                              detect_angles=args.detect_angles, providers=parse_providers(args.providers),
                              donors=args.donors, **backend_config(args, long_running=False))
    options = JobOptions(crf=args.crf, quiet=args.quiet, report=args.report)
    try:
        report = anonymize_path(args.input, args.output, config, pack=args.pack, options=options)
    except OutputError as exc:  # processed, but the output could not be finished (disk full): not exit 2
        print(f"error: {exc}{f' (report: {args.report})' if args.report else ''}", file=sys.stderr)
        return 1
    summary = report.to_dict()
    if not args.quiet:
        fb = ", ".join(f"{k}: {v}" for k, v in summary["fallbacks"].items()) or "none"
        by = ", ".join(f"{k}: {v}" for k, v in summary["faces_by_method"].items()) or "none"
        print(f"{_count(summary['frames'], 'frame')}, {_count(summary['faces'], 'face')} "
              f"({_count(summary['tracks'], 'track')}) anonymized ({by}); fallbacks: {fb}")
        for note in summary["notes"]:  # logged as warnings when they arose; repeated under the result
            print(f"NOTE: {note}")
        if args.report:
            print(f"report: {args.report}")
    if summary["errors_total"]:
        shown = summary["errors"][:3]
        more = summary["errors_total"] - len(shown)
        print(f"WARNING: {summary['errors_total']} error(s) during the run; the output may be incomplete: "
              + " | ".join(shown) + (f" (and {more} more{', see the report' if args.report else ''})" if more else ""),
              file=sys.stderr)
        return 1 if not summary["frames"] else 3
    return 0


# --- donors -------------------------------------------------------------------------------
def cmd_donors_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .runtime.backends import SessionOptions, parse_providers
    from .runtime.detect import DEFAULT_DETECTOR, make_detector
    from .runtime.donors import build_from_images, build_from_pack
    from .runtime.images import iter_inputs
    from .runtime.models import PackModels
    from .runtime.pack import ModelPack

    detector = make_detector(DEFAULT_DETECTOR)
    if args.from_images:
        paths = [p for p in iter_inputs(Path(args.from_images)) if p.suffix.lower() in (".jpg", ".jpeg", ".png",
                                                                                         ".webp", ".bmp")]
        bank = build_from_images(paths, detector)
        out = Path(args.out or "donors.npz")
    else:
        pack = ModelPack.load(args.pack)
        models = PackModels(pack, SessionOptions(providers=parse_providers(args.providers)))
        with tqdm(total=args.count, desc="donors", unit="face", disable=args.quiet) as bar:
            bank = build_from_pack(models, count=args.count, seed=args.seed, detector=detector,
                                   progress=bar.update)
        out = Path(args.out) if args.out else pack.root / "donors.npz"
    bank.save(out)
    print(f"donor bank: {len(bank.images)} faces -> {out}")
    return 0


def _register_export_targets(export_targets) -> None:
    """`export tensorrt` and `export triton` (their modules import TensorRT / Triton only when run)."""
    from .export.trt_cli import register_export_tensorrt
    from .serving.cli import register_export_triton

    register_export_tensorrt(export_targets)
    register_export_triton(export_targets)


# --- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="styleid-edge", description="Face anonymization with StyleID.")
    p.add_argument("--version", action="version", version=f"styleid-edge {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("anonymize", help="anonymize an image, a video, or a folder of them")
    a.add_argument("input", help="image, video file or folder")
    a.add_argument("-o", "--output", required=True, help="output file (or folder for a folder input)")
    a.add_argument("--pack", help="model pack directory (default: $STYLEID_EDGE_PACK, then ~/.local/share/"
                                  "styleid-edge/pack; with none, faces are pixelated)")
    a.add_argument("--method", choices=["latent", "pixel", "swapper", "donor", "blur", "pixelate"],
                   help="default: the best the pack allows (swapper > latent > pixel > donor > pixelate)")
    a.add_argument("--strength", type=number_in(float, 0.0, 1.0, low_open=True), help="privacy knob in (0,1]: share of identity channels swapped "
                                                  "(latent); default: the pack's calibrated value")
    a.add_argument("--target", help="image of a face to anonymize toward (instead of random identities)")
    a.add_argument("--seed", type=int, default=0,
                   help="seed of the pseudo-identities (one per tracked person; default 0)")
    a.add_argument("--detector", default=None,
                   help="yunet (default), centerface, retinaface, or a SCRFD .onnx path")
    a.add_argument("--thresh", type=number_in(float, 0.0, 1.0, low_open=True),
                   help="detection score threshold in (0,1]; lower finds more faces (default: 0.5, centerface 0.3)")
    a.add_argument("--weak-thresh", type=number_in(float, 0.0, 1.0),
                   help="faces scoring from this up to --thresh only continue a tracked face, never start one "
                        "(default 0.3; 0 turns it off)")
    a.add_argument("--min-face", type=number_in(int, 0, 1 << 20), default=24,
                   help="faces smaller than this (px) are pixelated (default 24)")
    a.add_argument("--detect-angles", type=angle_list, default=(-30.0, 30.0), metavar="DEG,DEG",
                   help="extra detection passes on the frame turned by these angles (default -30,30; 'none': "
                        "off). For a camera mounted sideways whose video has no rotation tag: 30,-30,90,-90")
    a.add_argument("--donors", help="donor bank file for --method donor")
    a.add_argument("--providers", default="cpu", help="ONNX Runtime providers in order, e.g. cuda,cpu")
    add_backend_arguments(a)
    from .runtime.archive import register_archive_args

    register_archive_args(a)
    a.add_argument("--crf", type=number_in(int, 0, 51), default=18,
                   help="H.264 quality, 0-51 (lower = better and larger; default 18, about visually lossless)")
    a.add_argument("--report", help="write a JSON report here: faces per method, fallbacks and errors per run and "
                                    "per input file, the model providers, timings")
    a.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, no summary (warnings and errors still print)")
    a.set_defaults(func=cmd_anonymize)

    e = sub.add_parser("export", help="turn checkpoints into a model pack (needs the export extra); "
                                      "`export tensorrt` / `export triton` turn a pack into engines / a Triton repo")
    e.add_argument("--stylegan2", help="rosinality StyleGAN2 checkpoint (e.g. stylegan2-ffhq-config-f.pt)")
    e.add_argument("--e4e", help="encoder4editing checkpoint (e4e_ffhq_encode.pt)")
    e.add_argument("--arcface", help="ArcFace IR-SE50 (model_ir_se50.pth) or a recognizer .onnx")
    e.add_argument("--mapper", help="StyleID latent swapper (mapper.pt)")
    e.add_argument("--out", help="pack directory to write (new or empty; an existing pack only with --force)")
    e.add_argument("--force", action="store_true", help="replace the pack already at --out, with all it holds")
    e.add_argument("--synthetic", type=number_in(int, 8, 1024), metavar="RES",
                   help="write a random-weight pack of this resolution (a power of two, 8-1024)")
    e.add_argument("--channel-multiplier", type=int, default=1, help="with --synthetic")
    e.add_argument("--with-recognizer", action="store_true", help="with --synthetic: add a random ArcFace")
    e.add_argument("--seed", type=int, default=0, help="with --synthetic")
    e.set_defaults(func=cmd_export)
    export_targets = e.add_subparsers(dest="export_target", metavar="{tensorrt,triton}",
                                      help="(optional) build from an existing pack instead")
    _register_export_targets(export_targets)

    pk = sub.add_parser("pack", help="inspect model packs").add_subparsers(dest="pack_command", required=True)
    pi = pk.add_parser("info", help="validate a pack and print what is in it")
    pi.add_argument("pack")
    pi.add_argument("--json", action="store_true")
    pi.add_argument("--verify", action="store_true",
                    help="hash every model and rank file against the pack's checksums.sha256 (exit 2 on a mismatch)")
    pi.set_defaults(func=cmd_pack_info)

    from .bench.cli import register_bench
    from .calibration.cli import register as register_calibrate
    from .calibration.evaluate_cli import register_evaluate
    from .runtime.live.cli import register_live
    from .serving.cli import register_serve
    from .weights.cli import register as register_models

    register_models(sub)
    register_calibrate(sub)
    register_evaluate(sub)
    register_live(sub)
    register_serve(sub)
    register_bench(sub)

    dn = sub.add_parser("donors", help="donor bank for --method donor").add_subparsers(dest="donors_command",
                                                                                       required=True)
    db = dn.add_parser("build", help="generate donor faces from a pack (or take them from photos)")
    db.add_argument("--pack", help="model pack to generate from")
    db.add_argument("--from-images", help="folder of face photos to use as donors instead")
    db.add_argument("--count", type=int, default=64)
    db.add_argument("--seed", type=int, default=1000)
    db.add_argument("--out", help="output file (default: PACK/donors.npz)")
    db.add_argument("--providers", default="cpu")
    db.add_argument("-q", "--quiet", action="store_true")
    db.set_defaults(func=cmd_donors_build)
    return p


def _tag_subparsers(parser: argparse.ArgumentParser) -> None:
    """Each (nested) subcommand parser records itself in the namespace, so errors show its usage, and
    takes -v too (``styleid-edge anonymize ... -v`` as well as ``styleid-edge -v anonymize ...``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(_command_parser=sub)
                if "-v" not in sub._option_string_actions:
                    sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                                     help="more log output (-vv: debug)")
                _tag_subparsers(sub)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, systemd) ends a command the way Ctrl-C does: outputs finished
    and kept (``NAME.partial.mp4``), the report written; exit 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_sigterm(signum: int, _frame) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _tag_subparsers(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the subcommand's parser: its usage, not the top level's
        getattr(args, "_command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    _setup_logging(args.verbose, getattr(args, "quiet", False))
    if getattr(args, "detector", "x") is None:
        from .runtime.detect import DEFAULT_DETECTOR

        args.detector = DEFAULT_DETECTOR
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main_thread else None  # (live installs its own)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            print(f"stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
            return 128 + exc.signum
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` closed the pipe: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        log.debug("error", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
