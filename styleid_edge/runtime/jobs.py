"""File-level jobs: anonymize an image, a video, or a folder of them.

Videos are processed upright (rotation metadata applied for detection, then
undone, and kept in the output), decode/inference/encode overlap in threads,
audio is copied, and the output appears under its final name only when it is
complete (see ``video.VideoWriter``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..files import sha256_file
from .anonymizer import Anonymizer, AnonymizerConfig
from .images import input_kind, is_image, iter_inputs, read_image, write_image
from .pack import ModelPack
from .report import RunReport
from .frame_pipeline import Progress, run_threaded
from .video import VideoError, VideoReader, VideoWriter, check_output_container, from_display, probe, to_display

log = logging.getLogger(__name__)


@dataclass
class JobOptions:
    crf: int = 18
    quiet: bool = False
    report: str | Path | None = None
    queue_size: int = 8


def anonymize_image(src: Path, dst: Path, anonymizer: Anonymizer) -> dict:
    image = read_image(src)
    anonymizer.reset()
    out, faces = anonymizer.process(image)
    write_image(dst, out)
    return {"input": str(src), "output": str(dst), "kind": "image", "faces": len(faces)}


def anonymize_video(src: Path, dst: Path, anonymizer: Anonymizer, options: JobOptions) -> dict:
    info = probe(src)
    anonymizer.reset(fps=float(info.fps) if info.fps else 30.0)
    faces_before = anonymizer.report.faces
    entry = {"input": str(src), "output": str(dst), "kind": "video", "width": info.width,
             "height": info.height, "fps": str(info.fps), "rotation": info.rotation,
             "frames_in_container": info.frame_count}
    rotation = info.rotation
    with VideoReader(src) as reader, Progress(total=info.frame_count, quiet=options.quiet,
                                              desc=src.name) as progress:
        def process(frame) -> "np.ndarray":  # noqa: F821
            upright = to_display(frame.image, rotation)
            out, faces = anonymizer.process(upright)
            progress.update(frames=0, faces=len(faces))
            return from_display(out, rotation)

        writer = VideoWriter(dst, info, crf=options.crf, audio_from=src)
        ok = False
        try:
            stats = run_threaded(reader, process, writer, queue_size=options.queue_size, progress=progress)
            if stats.frames_out == 0:
                first = reader.errors[0] if reader.errors else None
                raise VideoError(f"{src}: no frame could be decoded{f' ({first.kind})' if first else ''}; the file "
                                 "is damaged, cut off or holds no video. Nothing was written.")
            ok = True
        except KeyboardInterrupt:
            entry["interrupted"] = True
            anonymizer.report.inputs.append(entry)  # the caller never gets it: the report still lists the file
            raise
        finally:
            try:
                result = writer.close(ok=ok)
            except VideoError as exc:  # finishing failed (disk full): the writer kept what it could
                if ok:
                    raise
                log.error("%s", exc)  # stopped already (an error or Ctrl-C): that stays the outcome
                result = writer.result
            if not ok:
                entry["frames_out"] = writer.frames_written
                if result is not None:  # (the writer logged where)
                    entry["partial_output"] = str(result)
        entry.update(frames_out=stats.frames_out, audio=writer.audio_mode, fps_processed=round(stats.fps, 2),
                     faces=anonymizer.report.faces - faces_before)
        if reader.errors:
            entry["read_errors"] = [f"{e.kind}{_where(e)}: {e.message}" for e in reader.errors[:50]]
            first, more = reader.errors[0], len(reader.errors) - 1
            anonymizer.report.error(f"{src}: {first.kind}{_where(first)}: {first.message}"
                                    + (f" (and {more} more read errors: inputs[].read_errors)" if more else ""))
    return entry


def _where(error) -> str:
    if error.time is not None:
        return f" at {error.time:.3f} s"
    return f" at frame {error.frame_index}" if error.frame_index is not None else ""


def plan_outputs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs for a file or a folder (walked recursively; the output folder mirrors its
    subfolders), checked before any model loads: no output may replace an input, and a folder's
    output folder may sit inside it (its contents are then not inputs)."""
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    if not src.is_dir():
        target = dst / src.name if dst.is_dir() else dst
        if target.resolve() == src.resolve():
            raise ValueError(f"output {target} is the input: choose another output path or folder "
                             "(the input is never overwritten)")
        _check_kinds(src, target)
        return [(src, target)]
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst}: the input is a folder, so the output must be a folder too")
    if dst.resolve() == src.resolve():
        raise ValueError(f"output folder {dst} is the input folder: choose another one "
                         "(the inputs are never overwritten)")
    out_root, skipped = dst.resolve(), []
    inside = src.resolve() in out_root.parents  # the output folder is in the input folder: its files are outputs
    items = [p for p in iter_inputs(src, recursive=True, skipped=skipped)
             if not (inside and out_root in p.resolve().parents)]
    if skipped:
        names = ", ".join(str(p.relative_to(src)) for p in skipped[:5])
        log.info("%s: skipping %d file(s) that are neither images nor videos: %s%s", src, len(skipped), names,
                 ", ..." if len(skipped) > 5 else "")
    if not items:
        raise ValueError(f"{src}: no images or videos in this folder or its subfolders")
    pairs = [(item, dst / item.relative_to(src)) for item in items]
    inputs = {item.resolve() for item in items}
    clash = next((target for _, target in pairs if target.resolve() in inputs), None)
    if clash is not None:
        raise ValueError(f"output {clash} would replace an input: choose an output folder outside {src} "
                         "(the inputs are never overwritten)")
    return pairs


def _check_kinds(src: Path, target: Path) -> None:
    """A single input's kind (image or video) and its output's must agree."""
    kind = input_kind(src)
    if kind is None:
        raise ValueError(f"{src}: not an image or a video this tool can read (FFmpeg could not open it)")
    if kind == "video" and is_image(target):
        raise ValueError(f"output {target} is an image but {src} is a video: name the output .mp4, .mkv or .mov")
    if kind == "video":
        check_output_container(target)
    if kind == "image" and not is_image(target):
        raise ValueError(f"output {target} is not an image type but {src} is an image: name the output "
                         f".jpg, .png or .webp (e.g. {target.with_suffix(src.suffix.lower())})")


def _check_report_path(report: str | Path, pairs: list[tuple[Path, Path]]) -> None:
    path = Path(report).resolve()
    for src, target in pairs:
        if path in (src.resolve(), target.resolve()):
            what = "the input" if path == src.resolve() else "an output"
            raise ValueError(f"--report {report} is {what} ({src if what == 'the input' else target}): "
                             "write the report to a .json file of its own")
    if Path(report).is_dir():
        raise ValueError(f"--report {report} is a folder: name a file, e.g. {Path(report) / 'report.json'}")


def anonymize_path(input_path: str | Path, output: str | Path, config: AnonymizerConfig,
                   pack: ModelPack | str | Path | None = None, options: JobOptions | None = None) -> RunReport:
    """Anonymize a file or every image/video in a folder and its subfolders; returns (and optionally
    writes) the report. Paths are checked before any model loads; a run that fails still writes its
    report (with the error) when one was asked for."""
    options = options or JobOptions()
    src, dst = Path(input_path), Path(output)
    pairs = plan_outputs(src, dst)
    if options.report:
        _check_report_path(options.report, pairs)
        Path(options.report).parent.mkdir(parents=True, exist_ok=True)
    try:
        anonymizer = Anonymizer(config, pack=pack)
    except Exception as exc:
        _write_failed_report(options.report, exc)
        raise
    report = anonymizer.report
    started = time.perf_counter()
    try:
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        for item, target in pairs:
            try:
                report.inputs.append(_one(item, target, anonymizer, options))
            except Exception as exc:
                if not src.is_dir():
                    raise
                # one bad file must not stop a folder
                message = str(exc) if str(item) in str(exc) else f"{item}: {exc}"
                log.error("%s", message)
                report.error(message)
                report.inputs.append({"input": str(item), "error": str(exc)})
        if report.frames and not report.faces:
            msg = (f"no face was found in {report.frames} frame(s), so the output shows them unchanged; if faces "
                   "are visible, lower --thresh (YuNet scores clear faces about 0.8-0.95)")
            log.warning(msg)
            report.note(msg)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    except Exception as exc:
        report.error(str(exc) or type(exc).__name__)
        report.failed = True
        raise
    finally:
        anonymizer.finish()
        report.timings["total_seconds"] = round(time.perf_counter() - started, 3)
        _write_report(report, options.report)
    return report


def _write_failed_report(path: str | Path | None, exc: Exception) -> None:
    """The report of a run that failed before it started (e.g. a bad pack): the error, nothing else."""
    report = RunReport(failed=True)
    report.error(str(exc) or type(exc).__name__)
    _write_report(report, path)


def _write_report(report: RunReport, path: str | Path | None) -> None:
    """Write the report; a failure to write it is logged, never raised over the run's own outcome."""
    if not path:
        return
    try:
        report.write(path)
    except OSError as exc:
        log.error("could not write the report %s (%s); the run's outputs are not affected", path, exc)


def _one(src: Path, dst: Path, anonymizer: Anonymizer, options: JobOptions) -> dict:
    """One file; its report entry carries the sha256 of input and output (an audit trail: which file
    became which)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if input_kind(src) == "image":  # (plan_outputs let only images and videos through)
        entry = anonymize_image(src, dst, anonymizer)
    else:
        entry = anonymize_video(src, dst, anonymizer, options)
    entry["input_sha256"] = sha256_file(src)
    entry["output_sha256"] = sha256_file(dst)
    return entry
