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

from .anonymizer import Anonymizer, AnonymizerConfig
from .images import input_kind, iter_inputs, read_image, write_image
from .pack import ModelPack
from .report import RunReport
from .frame_pipeline import Progress, run_threaded
from .video import VideoError, VideoReader, VideoWriter, from_display, probe, to_display

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
            result = writer.close(ok=ok)
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


def anonymize_path(input_path: str | Path, output: str | Path, config: AnonymizerConfig,
                   pack: ModelPack | str | Path | None = None, options: JobOptions | None = None) -> RunReport:
    """Anonymize a file or every image/video in a folder; returns (and optionally writes) the report."""
    options = options or JobOptions()
    src, dst = Path(input_path), Path(output)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    if src.resolve() == dst.resolve():
        raise ValueError(f"output {dst} is the input: choose another output path (the input is never overwritten)")
    anonymizer = Anonymizer(config, pack=pack)
    report = anonymizer.report
    started = time.perf_counter()
    try:
        if src.is_dir():
            if dst.exists() and not dst.is_dir():
                raise ValueError(f"{dst}: the input is a folder, so the output must be a folder too")
            dst.mkdir(parents=True, exist_ok=True)
            items = list(iter_inputs(src))
            if not items:
                raise ValueError(f"{src}: no images or videos in this folder")
            for item in items:
                target = dst / item.name
                try:
                    report.inputs.append(_one(item, target, anonymizer, options))
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop a folder
                    log.error("%s: %s", item, exc)
                    report.error(f"{item}: {exc}")
                    report.inputs.append({"input": str(item), "error": str(exc)})
        else:
            if dst.is_dir():
                dst = dst / src.name
            report.inputs.append(_one(src, dst, anonymizer, options))
        if report.frames and not report.faces:
            msg = (f"no face was found in {report.frames} frame(s), so the output shows them unchanged; if faces "
                   "are visible, lower --thresh (YuNet scores clear faces about 0.8-0.95)")
            log.warning(msg)
            report.note(msg)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        anonymizer.finish()
        report.timings["total_seconds"] = round(time.perf_counter() - started, 3)
        if options.report:
            report.write(options.report)
    return report


def _one(src: Path, dst: Path, anonymizer: Anonymizer, options: JobOptions) -> dict:
    kind = input_kind(src)
    if kind == "image":
        return anonymize_image(src, dst, anonymizer)
    if kind == "video":
        dst.parent.mkdir(parents=True, exist_ok=True)
        return anonymize_video(src, dst, anonymizer, options)
    raise ValueError(f"{src}: not an image or a video this tool can read (ffmpeg could not open it)")
