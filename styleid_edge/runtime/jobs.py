"""File-level jobs: anonymize an image, a video, or a folder of them.

Videos are processed upright (rotation metadata applied for detection, then
undone, and kept in the output), decode/inference/encode overlap in threads,
audio is copied, and the output appears under its final name only when it is
complete (see ``video.VideoWriter``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import sha256_file
from .anonymizer import Anonymizer, AnonymizerConfig
from .images import (SKIP_HIDDEN, SKIP_NOT_MEDIA, SKIP_PARTIAL, input_kind, is_image, iter_inputs, read_image,
                     write_image)
from .pack import ModelPack
from .report import RunReport
from .frame_pipeline import Progress, run_threaded
from .video import VideoError, VideoReader, VideoWriter, check_output_container, from_display, probe, to_display

log = logging.getLogger(__name__)


class OutputError(RuntimeError):
    """A file's output could not be written or finished after its frames were processed (disk full, a
    file-size limit): ``entry`` is its report entry (``error``, ``frames_out``, ``partial_output``)."""

    def __init__(self, message: str, entry: dict[str, Any]) -> None:
        super().__init__(message)
        self.entry = entry


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
        except Exception as exc:
            failed_at = exc
        else:
            failed_at = None
        finally:
            try:
                result = writer.close(ok=ok)
            except VideoError as exc:  # finishing failed (disk full): the writer kept what it could
                if ok:
                    raise _output_error(src, dst, writer, exc, entry) from exc
                log.error("%s", exc)  # stopped already (an error or Ctrl-C): that stays the outcome
                result = writer.result
            if not ok:
                entry["frames_out"] = writer.frames_written
                if result is not None:  # (the writer logged where)
                    entry["partial_output"] = str(result)
        if failed_at is not None:
            if writer.frames_written and isinstance(failed_at, (OSError, VideoError)):  # writing failed midway
                raise _output_error(src, dst, writer, failed_at, entry) from failed_at
            raise failed_at
        entry.update(frames_out=stats.frames_out, audio=writer.audio_mode, fps_processed=round(stats.fps, 2),
                     faces=anonymizer.report.faces - faces_before)
        if reader.errors:
            entry["read_errors"] = [f"{e.kind}{_where(e)}: {e.message}" for e in reader.errors[:50]]
            first, more = reader.errors[0], len(reader.errors) - 1
            anonymizer.report.error(f"{src}: {first.kind}{_where(first)}: {first.message}"
                                    + (f" (and {more} more read errors: inputs[].read_errors)" if more else ""))
    return entry


def _output_error(src: Path, dst: Path, writer: VideoWriter, exc: BaseException, entry: dict) -> OutputError:
    """The error of an output that could not be written or finished, worded for a command-line user (the
    writer's own message names a Python-API option), with the file's report entry."""
    cause = exc.__cause__ or exc
    kept = writer.result
    entry.update(frames_out=writer.frames_written, error=f"could not finish {dst} ({cause})")
    if kept is not None:
        entry["partial_output"] = str(kept)
        where = f"what was written is kept in {kept}"
        if dst.suffix.lower() in (".mp4", ".m4v", ".mov", ".3gp", ".3g2"):
            where += (f" (a {dst.suffix} file cut off before its index does not play: name the output .mkv or .ts "
                      "to keep what a full disk cuts off playable)")
    else:
        where = "nothing was kept"
    message = (f"{src}: could not finish the output {dst} ({cause}); {where}. Free disk space (or raise the "
               "file-size limit, `ulimit -f`) and run again")
    entry["error"] = message
    return OutputError(message, entry)


def _where(error) -> str:
    if error.time is not None:
        return f" at {error.time:.3f} s"
    return f" at frame {error.frame_index}" if error.frame_index is not None else ""


def plan_outputs(src: Path, dst: Path, skipped: list[dict[str, str]] | None = None) -> list[tuple[Path, Path]]:
    """(input, output) pairs for a file or a folder (walked recursively; the output folder mirrors its
    subfolders), checked before any model loads: no output may replace an input, and a folder's
    output folder may sit inside it (its contents are then not inputs). ``skipped`` (when given) gets
    every file of the folder that is not an input, as ``{"path", "reason"}``; a one-line summary is logged."""
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
    out_root, not_inputs = dst.resolve(), []
    inside = src.resolve() in out_root.parents  # the output folder is in the input folder: its files are outputs

    def in_output(p: Path) -> bool:
        return inside and (p.resolve() == out_root or out_root in p.resolve().parents)

    items = [p for p in iter_inputs(src, recursive=True, skipped=not_inputs) if not in_output(p)]
    found = sorted((e for e in not_inputs if not in_output(Path(e["path"]))), key=lambda e: e["path"])
    if found:
        _log_skipped(src, found)
    if skipped is not None:
        skipped.extend(found)
    if not items:
        raise ValueError(f"{src}: no images or videos in this folder or its subfolders")
    pairs = [(item, dst / item.relative_to(src)) for item in items]
    inputs = {item.resolve() for item in items}
    clash = next((target for _, target in pairs if target.resolve() in inputs), None)
    if clash is not None:
        raise ValueError(f"output {clash} would replace an input: choose an output folder outside {src} "
                         "(the inputs are never overwritten)")
    return pairs


def _log_skipped(src: Path, found: list[dict[str, str]]) -> None:
    """One INFO line: how many files were skipped, why, and the first few names."""
    short = {SKIP_NOT_MEDIA: "neither image nor video", SKIP_HIDDEN: "hidden",
             SKIP_PARTIAL: "unfinished output (*.partial.*)"}
    counts: dict[str, int] = {}
    for e in found:
        why = short.get(e["reason"], "hidden folder")
        counts[why] = counts.get(why, 0) + 1
    names = ", ".join(f"{Path(e['path']).relative_to(src)}{os.sep if e['path'].endswith(os.sep) else ''}"
                      for e in found[:5])
    log.info("%s: skipping %d file(s) that are not inputs (%s): %s%s; the report's `skipped` lists each with "
             "its reason", src, len(found), ", ".join(f"{n} {why}" for why, n in counts.items()), names,
             ", ..." if len(found) > 5 else "")


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
    writes) the report. Paths are checked before any model loads (including that every output's folder and
    the report's can be written); a run that fails still writes its report (with the error) when one was
    asked for. A file whose output cannot be finished raises :class:`OutputError` (a folder goes on with
    the next file); the report lists it with its error and partial output."""
    options = options or JobOptions()
    src, dst = Path(input_path), Path(output)
    skipped: list[dict[str, str]] = []
    pairs = plan_outputs(src, dst, skipped=skipped)
    if options.report:
        _check_report_path(options.report, pairs)
    check_writable(pairs, options.report)
    if options.report:
        Path(options.report).parent.mkdir(parents=True, exist_ok=True)
    try:
        anonymizer = Anonymizer(config, pack=pack)
    except Exception as exc:
        _write_failed_report(options.report, exc)
        raise
    report = anonymizer.report
    report.skipped = skipped  # every file of the folder that is not an input, with the reason
    started = time.perf_counter()
    try:
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        roots = (src, dst) if src.is_dir() else None
        for item, target in pairs:
            try:
                report.inputs.append(_one(item, target, anonymizer, options, roots=roots))
            except OutputError as exc:
                report.inputs.append({"input": str(item), "output": str(target), **exc.entry})
                if not src.is_dir():
                    raise
                log.error("%s", exc)
                report.error(str(exc))
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


def check_writable(pairs: list[tuple[Path, Path]], report: str | Path | None = None) -> None:
    """Every output's folder and the report's exist or can be created, and can be written (a file is
    created there and removed): checked before any model loads, so a run never processes every frame
    only to fail at the end. Raises ValueError naming the path and the fix."""
    probed: dict[Path, str | None] = {}
    for _, target in pairs:
        problem = _folder_problem(target.parent, probed)
        if problem:
            raise ValueError(f"cannot write the output {target}: {problem}; choose an output (-o) in a folder you "
                             "can write to, or make that folder writable")
    if report:
        problem = _folder_problem(Path(report).parent, probed)
        if problem:
            raise ValueError(f"cannot write the report {report}: {problem}; choose a --report path in a folder "
                             "you can write to, or make that folder writable")


def _folder_problem(folder: Path, probed: dict[Path, str | None]) -> str | None:
    """Why files cannot be written in ``folder`` (created where missing), or None: its nearest existing
    folder must be a folder and take a new file."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing not in probed:
        if not existing.is_dir():
            probed[existing] = f"{existing} is a file, not a folder, so {folder} cannot be created"
        else:
            try:
                fd, name = tempfile.mkstemp(prefix=".styleid-edge-write-test-", dir=existing)
                os.close(fd)
                os.unlink(name)
                probed[existing] = None
            except OSError as exc:
                made = "" if existing == Path(os.path.abspath(folder)) else f" (where {folder} would be created)"
                probed[existing] = f"folder {existing}{made} is not writable ({exc.strerror or exc})"
    return probed[existing]


def _write_failed_report(path: str | Path | None, exc: Exception) -> None:
    """The report of a run that failed before it started (e.g. a bad pack): the error, nothing else."""
    report = RunReport(failed=True)
    report.error(str(exc) or type(exc).__name__)
    _write_report(report, path)


def _write_report(report: RunReport, path: str | Path | None) -> None:
    """Write the report; a failure to write it is logged and recorded as an error of the run (the command exits
    3), never raised over the run's own outcome."""
    if not path:
        return
    try:
        report.write(path)
    except OSError as exc:
        message = f"could not write the report {path} ({exc.strerror or exc}); the run's outputs are not affected"
        log.error("%s", message)
        report.error(message)


def _one(src: Path, dst: Path, anonymizer: Anonymizer, options: JobOptions,
         roots: tuple[Path, Path] | None = None) -> dict:
    """One file; its report entry carries the sha256 of input and output (an audit trail: which file
    became which)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if input_kind(src) == "image":  # (plan_outputs let only images and videos through)
        entry = anonymize_image(src, dst, anonymizer)
    else:
        entry = anonymize_video(src, dst, anonymizer, options)
        stale = _remove_stale_partial(src, dst, roots)
        if stale is not None:
            entry["removed_stale_partial"] = str(stale)
    entry["input_sha256"] = sha256_file(src)
    entry["output_sha256"] = sha256_file(dst)
    return entry


def _remove_stale_partial(src: Path, dst: Path, roots: tuple[Path, Path] | None = None) -> Path | None:
    """``dst`` is complete: an earlier run's unfinished ``NAME.partial.EXT`` of the same output (the name the
    video writer gives it; nothing else) is outdated and removed. Never the input, nor (``roots``: the input
    and output folders) a file in the input folder outside an output folder within it: with the output
    folder above the input folder, that file may be the user's."""
    stale = dst.with_name(f"{dst.stem}.partial{dst.suffix}")
    if not stale.is_file() or stale.resolve() == src.resolve():
        return None
    where = stale.resolve().parents
    in_root, out_root = (roots[0].resolve(), roots[1].resolve()) if roots else (None, None)
    if in_root in where and not (in_root in out_root.parents and out_root in where):
        log.info("%s is complete; %s was left as it is (it is inside the input folder)", dst, stale)
        return None
    try:
        stale.unlink()
    except OSError as exc:
        log.warning("%s is complete, but the unfinished %s of an earlier run could not be removed (%s); "
                    "delete it by hand", dst, stale, exc)
        return None
    log.info("removed %s, the unfinished output of an earlier run: %s is now complete", stale, dst)
    return stale
