"""``styleid-edge live``: anonymize cameras, network streams or files in real time.

Wire into the main CLI with ``register_live(subparsers)``; ``main(argv)`` runs it on its own
(``python -m styleid_edge.runtime.live.cli SOURCE ...``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from ..backend_args import add_backend_arguments, backend_config
from ..cli_types import angle_list, number_in

log = logging.getLogger(__name__)

EXIT_RECORDING_FAILED = 3  # a recording lost frames or a segment could not be finished

NON_NEGATIVE = number_in(float, 0.0, 1e9)  # durations and intervals where 0 means "off"
POSITIVE = number_in(float, 0.0, 1e9, low_open=True)

METHODS = ["latent", "pixel", "swapper", "donor", "blur", "pixelate"]


def output_target(output: Path, index: int, n_sources: int) -> Path:
    """Where source ``index`` writes: ``output`` itself for one source; with several, ``DIR/source-N/`` for a
    folder and ``NAME-source-N.mp4`` beside it for a file name (not a folder called NAME.mp4)."""
    from .sinks import VIDEO_SUFFIXES

    if n_sources == 1:
        return output
    if output.suffix.lower() in VIDEO_SUFFIXES:
        return output.with_name(f"{output.stem}-source-{index + 1}{output.suffix}")
    return output / f"source-{index + 1}"


def check_outputs(output: Path, n_sources: int) -> None:
    """Refuse an ``-o`` that cannot be recorded to (an unsupported suffix such as .avi, a folder that
    cannot be created or written) with a ValueError naming it and the fix."""
    from .sinks import prepare_folder, resolve_target

    resolve_target(output)  # the name as given (with several sources, rec.avi would become rec.avi/source-N/)
    for i in range(n_sources):
        folder, _, _ = resolve_target(output_target(output, i, n_sources))
        prepare_folder(folder)


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source_main", metavar="SOURCE", nargs="?",
                   help="camera index (0), device (/dev/video0), stream URL (rtsp://, http://, udp://...) "
                        "or a video file (played at its own frame rate)")
    p.add_argument("--source", action="append", default=[], help="another source (repeatable); each gets its "
                   "own outputs (OUTPUT/source-N/ or NAME-source-N.mp4, MJPEG and UDP port + N, its own --push "
                   "URL) and shares the models: the faces of all sources are generated together, one batch per tick")
    p.add_argument("-o", "--output", help="folder (or NAME.mp4, .mkv, .mov, .m4v, .ts) for segmented H.264 "
                   "files, named by each segment's start time (live_YYYYmmdd-HHMMSS_00001.mp4, "
                   "NAME_YYYYmmdd-HHMMSS_00001.mp4); existing files are never replaced")
    p.add_argument("--segment-seconds", type=NON_NEGATIVE, default=60.0,
                   help="length of each output file (0: one file)")
    p.add_argument("--serve-mjpeg", metavar="HOST:PORT", help="serve the output as MJPEG over HTTP "
                   "(e.g. 8080 or 127.0.0.1:8080; loopback unless a host is given)")
    p.add_argument("--serve-udp", metavar="HOST:PORT", help="send the output as H.264 in MPEG-TS over UDP "
                   "(e.g. 5000 or 127.0.0.1:5000; loopback unless a host is given; multicast addresses work); "
                   "play it with `ffplay udp://127.0.0.1:5000` or read it with `styleid-edge live udp://...`")
    p.add_argument("--push", metavar="URL", action="append", default=[], help="push the output as H.264 to a "
                   "streaming server: rtsp://HOST:8554/NAME (e.g. MediaMTX), rtmp://..., srt://...; once per "
                   "source, in order. (FFmpeg cannot serve RTSP itself: push to a server that does.)")
    p.add_argument("--stream-bitrate", metavar="RATE", help="bitrate of --serve-udp/--push, e.g. 2M "
                   "(default: constant quality --crf)")
    p.add_argument("--show", action="store_true", help="show the output in a window (needs OpenCV with GUI)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve /metrics (Prometheus) and /stats.json here")
    p.add_argument("--pack", help="model pack directory (default: $STYLEID_EDGE_PACK, then the user pack)")
    p.add_argument("--method", choices=METHODS, help="default: the best the pack allows")
    p.add_argument("--strength", type=number_in(float, 0.0, 1.0, low_open=True),
                   help="privacy knob in (0,1]; default: the pack's calibrated value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detector", default=None, help="yunet (default), centerface, retinaface, or SCRFD .onnx")
    p.add_argument("--thresh", type=number_in(float, 0.0, 1.0, low_open=True),
                   help="detection score threshold in (0,1] (default: 0.5, centerface 0.3)")
    p.add_argument("--weak-thresh", type=number_in(float, 0.0, 1.0), help="faces scoring from this up to --thresh only "
                   "continue a tracked face, never start one (default 0.3; 0 turns it off)")
    p.add_argument("--min-face", type=number_in(int, 0, 1 << 20), default=24,
                   help="faces smaller than this (px) are pixelated (default 24)")
    p.add_argument("--detect-angles", type=angle_list, default=(-30.0, 30.0), metavar="DEG,DEG",
                   help="extra detection passes on the frame turned by these angles (default -30,30; 'none': "
                        "off). For a camera mounted sideways: 30,-30,90,-90")
    p.add_argument("--detect-max-side", type=number_in(int, 0, 1 << 16), default=0,
                   help="detect faces on a copy scaled down to this longer side, e.g. 640 (faster on small CPUs; "
                        "faces under ~10 px after scaling are missed; default 0: full size)")
    p.add_argument("--providers", default="cpu", help="ONNX Runtime providers in order, e.g. cuda,cpu")
    add_backend_arguments(p)
    p.add_argument("--budget-ms", type=POSITIVE, help="time the anonymization of a frame's faces may take before "
                   "the frame is output with its faces pixelated instead (default: 1000/fps)")
    p.add_argument("--fps", type=number_in(float, 0.0, 1000.0, low_open=True),
                   help="nominal stream rate (default: the source's, else 25)")
    p.add_argument("--max-age-ms", type=POSITIVE, default=1000.0, help="skip frames older than this when taken")
    p.add_argument("--loop", action="store_true", help="file sources: play again from the start at the end")
    p.add_argument("--rtsp-transport", choices=["tcp", "udp"], default="tcp")
    p.add_argument("--rtsp-listen", action="store_true", help="rtsp:// sources: listen on that address for a "
                   "camera or encoder that pushes (ANNOUNCE/RECORD) instead of pulling from a server")
    p.add_argument("--face-batch", type=number_in(int, 1, 1024), default=4,
                   help="faces per model call in the shared generative worker (smaller: a late frame keeps more "
                        "of its finished faces; larger: more GPU throughput)")
    p.add_argument("--gather-ms", type=number_in(float, 0.0, 1e6), default=5.0,
                   help="how long the worker waits for the faces of the other sources before a batch starts")
    p.add_argument("--watchdog-seconds", type=NON_NEGATIVE, default=10.0, help="restart a capture that is stuck this "
                   "long in one read or open (0: off); waiting within the source's own time-out (connecting, "
                   "listening for a camera, a read's 5 s) does not count: the limit is raised to cover it")
    p.add_argument("--render-stuck-seconds", type=NON_NEGATIVE, default=60.0, help="abandon a model batch that runs "
                   "this long (its faces pixelated) and start a fresh worker (0: off)")
    p.add_argument("--crf", type=number_in(int, 0, 51), default=23,
                   help="H.264 quality of the segment files, 0-51 (default 23)")
    p.add_argument("--stats-every", type=NON_NEGATIVE, default=5.0, help="seconds between console stats lines (0: off)")
    p.add_argument("-q", "--quiet", action="store_true", help="no stats lines")


def register_live(subparsers) -> None:
    """Add the top-level ``live`` command to the main CLI's subparsers."""
    p = subparsers.add_parser("live", help="anonymize a camera, a network stream or a file in real time")
    add_live_arguments(p)
    p.set_defaults(func=cmd_live)


def _build(args: argparse.Namespace):
    from ..anonymizer import Anonymizer, AnonymizerConfig, weak_threshold
    from ..backends import parse_providers
    from ..detect import DEFAULT_DETECTOR
    from .batcher import RenderBatcher
    from .engine import LiveEngine
    from .httpserve import MetricsServer, parse_hostport
    from .scheduler import LiveConfig, LivePipeline
    from .sinks import (
        BackgroundSink,
        MJPEGServer,
        SegmentedFileSink,
        StreamSink,
        WindowSink,
        check_gui,
    )
    from .sources import Capture, open_source, source_kind
    from .stats import LiveStats, StatsGroup

    specs = ([args.source_main] if args.source_main else []) + list(args.source)
    if not specs:
        raise ValueError("live needs a SOURCE: a camera index (0), /dev/video0, a stream URL or a video file")
    if args.show:
        check_gui()  # before loading models or opening sources
    if args.push and len(args.push) != len(specs):
        raise ValueError(f"--push was given {len(args.push)} time(s) for {len(specs)} source(s): give one URL per "
                         "source, in the order of the sources")
    if args.face_batch < 1:
        raise ValueError("--face-batch must be at least 1")
    for spec in specs:  # before loading models: a typo in a URL, port or device path
        source_kind(spec, require_device=True)
    if args.output:  # before loading models or opening sources
        check_outputs(Path(args.output), len(specs))
    if not (args.output or args.serve_mjpeg or args.show or args.serve_udp or args.push):
        log.warning("no output chosen (--output, --serve-mjpeg, --serve-udp, --push or --show): frames are "
                    "anonymized and counted only")
    config = AnonymizerConfig(method=args.method, strength=args.strength, seed=args.seed,
                              detector=args.detector or DEFAULT_DETECTOR, detector_threshold=args.thresh,
                              weak_threshold=weak_threshold(args.weak_thresh),
                              min_face=args.min_face, providers=parse_providers(args.providers),
                              detect_max_side=args.detect_max_side, detect_angles=args.detect_angles,
                              **backend_config(args))
    anonymizer = Anonymizer(config, pack=args.pack)
    anonymizer.warm_up(args.face_batch)  # before any source opens: a compile must not stall the first faces
    stats_every = 0.0 if args.quiet else args.stats_every
    pipelines, servers = [], []
    live_config = LiveConfig(budget_ms=args.budget_ms, fps=args.fps, max_age_ms=args.max_age_ms,
                             stats_every=stats_every, chunk_faces=args.face_batch, gather_ms=args.gather_ms,
                             capture_stall_s=args.watchdog_seconds, render_stuck_s=args.render_stuck_seconds)
    shared = None
    if len(specs) > 1 and anonymizer.method not in ("blur", "pixelate"):
        shared = RenderBatcher(anonymizer, chunk_faces=args.face_batch, gather_s=args.gather_ms / 1000.0,
                               sources=len(specs))
    sinks: list = []
    try:
        for i, spec in enumerate(specs):
            options = None
            if str(spec).startswith("rtsp"):
                options = {"rtsp_transport": args.rtsp_transport}
                if args.rtsp_listen:
                    options.update({"rtsp_flags": "listen", "listen_timeout": "5"})
            source = open_source(spec, loop=args.loop, options=options, require_device=True)
            capture = Capture(source)
            fps = args.fps or getattr(getattr(source, "info", None), "fps", None) or 25.0
            sinks = []
            if args.output:
                target = output_target(Path(args.output), i, len(specs))
                sinks.append(SegmentedFileSink(target, args.segment_seconds, fps=float(fps), crf=args.crf))
            if args.serve_mjpeg:
                host, port = parse_hostport(args.serve_mjpeg)
                sinks.append(MJPEGServer(host, port + i if port else 0))
            if args.serve_udp:
                host, port = parse_hostport(args.serve_udp)
                if not port:
                    raise ValueError("--serve-udp needs a port, e.g. 127.0.0.1:5000")
                sinks.append(BackgroundSink(StreamSink(f"udp://{host}:{port + i}", float(fps),
                                                       bitrate=args.stream_bitrate, crf=args.crf)))
            if args.push:  # in a thread of its own: a stalled receiver must not hold the pipeline up
                sinks.append(BackgroundSink(StreamSink(args.push[i], float(fps), bitrate=args.stream_bitrate,
                                                       crf=args.crf)))
            pipeline = LivePipeline(LiveEngine(anonymizer, float(fps)), capture, sinks, live_config,
                                    LiveStats(), name=f"source-{i + 1} {spec}" if len(specs) > 1 else "live",
                                    batcher=shared)
            sinks = []  # owned by the pipeline now
            if args.show:
                pipeline.sinks.append(WindowSink(f"styleid-edge live: {spec}", on_quit=pipeline.stop))
            pipelines.append(pipeline)
        group = StatsGroup([(f"source-{i + 1}", p.stats) for i, p in enumerate(pipelines)])
        if args.metrics:  # one source: its own series, unlabelled; several: labelled per source, with totals
            host, port = parse_hostport(args.metrics)
            servers.append(MetricsServer(pipelines[0].stats if len(pipelines) == 1 else group, host, port))
    except BaseException:
        for sink in sinks:  # a source that failed half-way: close what it had opened (ports, threads)
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - the original error matters more
                log.debug("closing %s after a failed start", type(sink).__name__, exc_info=True)
        for p in pipelines:
            p.close()
        if shared is not None:
            shared.close()
        raise
    return anonymizer, pipelines, servers, shared, group


def _signal_handler(pipelines: list):
    """SIGINT, SIGTERM, SIGHUP: finish the current segments and stop. A second signal within a second
    is the same request (GNU timeout, for one, signals the process and then its group); a later one
    means: stop now. The recordings are still finished (never interrupted half-way); only the
    waits for the capture and render threads are cut short."""
    state = {"n": 0, "t": 0.0}

    def safe_to_interrupt() -> bool:  # (the pipelines run on threads of their own: see scheduler.run_all)
        return all(p.files_done.is_set() for p in pipelines)

    def on_signal(signum, _frame) -> None:
        now = time.monotonic()
        name = signal.Signals(signum).name
        state["n"] += 1
        if state["n"] == 1:
            state["t"] = now
            log.warning("%s: finishing the current segment and stopping", name)
            for p in pipelines:
                p.stop()
            return
        if now - state["t"] <= 1.0:
            return
        for p in pipelines:
            p.stop(now=True)
        if safe_to_interrupt():
            raise KeyboardInterrupt
        log.warning("%s: stopping now; the recordings are being finished first (a few seconds at most)", name)

    return on_signal


def cmd_live(args: argparse.Namespace) -> int:
    from .scheduler import run_all
    from .sinks import SegmentedFileSink

    anonymizer, pipelines, servers, shared, group = _build(args)
    for p in pipelines:
        for sink in p.sinks:
            if getattr(sink, "url", None):
                kind = "MJPEG stream" if type(sink).__name__ == "MJPEGServer" else "H.264 stream"
                print(f"[{p.name}] {kind}: {sink.url}", file=sys.stderr)
    recorders = [s for p in pipelines for s in p.sinks if isinstance(s, SegmentedFileSink)]
    previous = {}
    if threading.current_thread() is threading.main_thread():
        handler = _signal_handler(pipelines)
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            # an ignored SIGHUP or SIGINT (nohup, a background job) stays ignored
            if sig is not None and not (sig != signal.SIGTERM and signal.getsignal(sig) is signal.SIG_IGN):
                previous[sig] = signal.signal(sig, handler)
    try:
        run_all(pipelines, shared, args.render_stuck_seconds, on_shared_restart=group.count_shared_restart)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for server in servers:
            server.close()
    report = anonymizer.finish().to_dict()
    if not args.quiet and not args.stats_every:  # else close() printed the final line
        for p in pipelines:
            print(f"[{p.name}] {p.stats_line()}", file=sys.stderr)
    if not args.quiet and len(pipelines) > 1:
        print(f"[all] {group.line()}", file=sys.stderr)
    for failure in group.failed_sinks():
        print(f"WARNING: {failure}", file=sys.stderr)
    for note in report["notes"]:
        print(f"NOTE: {note}", file=sys.stderr)
    return _recording_result(recorders)


def _recording_result(recorders: list) -> int:
    """0, or EXIT_RECORDING_FAILED (with what was lost and kept) when a recording failed."""
    failed = [r for r in recorders if r.failures]
    if not failed:
        return 0
    for r in failed:
        kept = ", ".join(str(p) for p in r.partials) or "none"
        print(f"error: recording into {r.folder} failed {r.failures} time(s), {r.frames_lost} frame(s) not "
              f"recorded; partial files kept: {kept}", file=sys.stderr)
    return EXIT_RECORDING_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="styleid-edge live", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_live_arguments(parser)
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    try:
        return cmd_live(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        log.debug("error", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
