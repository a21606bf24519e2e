"""Video files on PyAV (FFmpeg): probe, a damage-tolerant reader and an atomic writer that copies the
audio (the threaded decode -> process -> encode pipeline is in ``frame_pipeline``).

Conventions
- Frames are BGR uint8 ``(H, W, 3)`` numpy arrays in *stored* orientation; ``VideoInfo.rotation``
  says how a player turns them (PyAV's convention: counter-clockwise degrees, the value
  ``VideoFrame.rotation`` reads and ``VideoStream.set_display_rotation`` writes; a phone's portrait
  clip is usually 270, which ffprobe shows as -90 and old files tag as ``rotate=90``). The writer
  copies that display matrix, so outputs play the same way. :func:`to_display` / :func:`from_display`
  turn pixels for a stage that wants upright faces.
- Timestamps: each :class:`Frame` keeps its input ``pts`` (AVI, which stores none: the frame's slot
  on the frame-rate grid, see :class:`VideoReader`); the writer encodes with the input's time base
  and those pts, so frame count, duration and variable frame rate survive.
- Colour: BGR <-> YCbCr uses the file's matrix (BT.601 when untagged, as FFmpeg assumes) and range
  (limited, or full for ``yuvj*`` / full-range tags), with rounding, not truncation, both ways, so a
  write -> read round trip keeps the mean colour (see :func:`bgr_to_yuv_frame`). The writer tags its
  output with the input's matrix, range, primaries and transfer.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

log = logging.getLogger(__name__)

# Encoders that take a constant-quality "crf" option.
_CRF_CODECS = {"libx264", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1"}
# Containers that take "+faststart" (index first: streamable, and a truncated copy still opens).
_FASTSTART_SUFFIXES = {".mp4", ".m4v", ".mov", ".3gp", ".3g2"}
# The same MP4-family files written as fragmented MP4: an empty index first, then one index + data
# fragment per keyframe, each written out (flush_packets) as it completes. A file cut off by a crash,
# a full disk or a file-size limit plays up to its last complete fragment; a plain MP4 cut off before
# its index (written last, even with faststart) does not play at all.
_FRAGMENTED_OPTIONS = {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
_FRAME_GRID_SUFFIXES = {".avi"}
# Containers whose header records how long the video runs, so a cut-off copy can be told from a short
# video. MPEG-TS/PS and raw streams have no such record: FFmpeg estimates their duration from the
# timestamps actually in the file (a cut-off file looks complete) or from the bit rate (a guess).
_DECLARED_DURATION_FORMATS = {"matroska,webm", "avi", "flv"}
# Audio that players (QuickTime, browsers, phones, TVs) play from an MP4; FFmpeg also muxes Opus, FLAC
# and PCM into MP4, but many players refuse or silence them, so those are re-encoded to AAC there.
_MP4_SUFFIXES = {".mp4", ".m4v"}
_MP4_PLAYABLE_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac"}


class VideoError(RuntimeError):
    """A video could not be read or written; the message names the file and what to do."""


class OutputExistsError(VideoError, FileExistsError):
    """``VideoWriter(overwrite=False)``: the name to give the finished output is taken. Nothing was
    replaced and the finished file waits under its temporary name: :meth:`VideoWriter.retarget` to
    another name and ``close()`` again, or ``abort()`` to discard it."""


# --------------------------------------------------------------------------------------------
# probe


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int  # stored frame size (before rotation)
    height: int
    fps: Fraction  # average frame rate
    time_base: Fraction  # of the video stream
    frame_count: int  # exact when frame_count_exact, else estimated from duration * fps
    frame_count_exact: bool
    duration: float  # seconds
    start_time: float  # seconds, first video timestamp
    rotation: int  # display rotation, counter-clockwise degrees in {0, 90, 180, 270}
    codec: str
    pix_fmt: str | None
    container_format: str
    has_audio: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    # FFmpeg's AVColorSpace / AVColorRange / AVColorPrimaries / AVColorTransferCharacteristic;
    # 2 (0 for range) = unspecified. The writer tags and converts its output the same way.
    color_space: int = 2
    color_range: int = 0
    color_primaries: int = 2
    color_trc: int = 2

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as a player shows it."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise VideoError(f"{path} is a folder, not a video file; pass a file inside it")
    if path.stat().st_size == 0:
        raise VideoError(
            f"{path} is empty (0 bytes): the copy, download or recording did not finish; "
            "copy the file again from its source"
        )


def _open_input(path: Path) -> av.container.InputContainer:
    _check_input_file(path)
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        if _looks_like_unfinished_mp4(path):
            raise VideoError(
                f"{path} is an MP4/MOV cut off before its index (the 'moov' atom is missing): the "
                "recording or copy did not finish. FFmpeg cannot read it without the index; copy the "
                "file again, or rebuild the index with a repair tool (e.g. untrunc) and a good file "
                "from the same camera"
            ) from exc
        raise VideoError(
            f"{path} is not a video FFmpeg can read ({exc.strerror}): check that it is a video file "
            "(mp4, mov, mkv, webm, avi, ts), not renamed or still downloading"
        ) from exc
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: FFmpeg could not open it ({exc}); check the file and its permissions") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream (audio only or a data file); pass a video file")
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        container.close()
        raise VideoError(
            f"{path} is a still image ({fmt}), not a video; read images with "
            "styleid_edge.runtime.images.read_image"
        )
    return container


def _looks_like_unfinished_mp4(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(12)
    return len(head) == 12 and head[4:8] == b"ftyp"


def _norm_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) % 4 * 90


def _rotation_of(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Display rotation from the first decoded frame's display matrix (FFmpeg copies the stream's
    matrix onto frames), else the legacy clockwise 'rotate' tag."""
    tag = stream.metadata.get("rotate")
    try:
        for n, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                return _norm_rotation(frame.rotation)
            if packet.size == 0 or n > 300:
                break
    except av.error.FFmpegError as exc:
        log.debug("%s: could not decode a first frame to read the rotation: %s", container.name, exc)
    if tag:
        try:
            return _norm_rotation(-float(tag))
        except ValueError:
            log.warning("%s: ignoring unreadable rotate tag %r", container.name, tag)
    return 0


def _demux_skipping_damage(container: av.container.InputContainer, *streams: av.stream.Stream,
                           max_errors: int = 100) -> Iterator[av.Packet]:
    """The packets of ``streams`` (all streams when none) from where ``container`` stands, demuxing
    on past damaged data (up to ``max_errors`` read errors, then stops as at the end)."""
    demuxer = container.demux(*streams)
    errors = 0
    while True:
        try:
            packet = next(demuxer)
        except StopIteration:
            return
        except av.error.FFmpegError:
            errors += 1
            if errors > max_errors:
                return
            demuxer = container.demux(*streams)  # carries on from the current file position
            continue
        yield packet


def _count_packets(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    return sum(1 for packet in _demux_skipping_damage(container, stream) if packet.size)


def count_frames(path: str | Path) -> int:
    """Exact number of video packets (= frames for all common codecs), by demuxing without decoding."""
    container = _open_input(Path(path))
    try:
        return _count_packets(container, container.streams.video[0])
    finally:
        container.close()


def probe(path: str | Path, count: bool = False) -> VideoInfo:
    """Describe a video file. ``count=True`` counts frames when the container has no count (MKV,
    WebM, TS); otherwise such a count is estimated from duration and frame rate."""
    path = Path(path)
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        time_base = stream.time_base or Fraction(1, 90000)
        if stream.duration:
            duration = float(stream.duration * time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        start = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
        audio = container.streams.audio[0] if container.streams.audio else None
        # MP4/MOV sample tables count frames exactly; AVI indexes count empty (dropped-frame) chunks.
        frames = int(stream.frames or 0)
        exact = bool(frames) and container.format.name.startswith("mov,mp4")
        rotation = _rotation_of(container, stream)
        if not exact:
            if count:
                container.seek(0)
                frames, exact = _count_packets(container, stream), True
            elif not frames:
                frames = int(round(duration * fps))
        if not duration and frames:
            duration = float(frames / fps)
        return VideoInfo(
            path=path,
            width=ctx.width,
            height=ctx.height,
            fps=Fraction(fps),
            time_base=Fraction(time_base),
            frame_count=frames,
            frame_count_exact=exact,
            duration=duration,
            start_time=start,
            rotation=rotation,
            codec=ctx.name,
            pix_fmt=ctx.pix_fmt,
            container_format=container.format.name,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio else None,
            audio_sample_rate=audio.codec_context.sample_rate if audio else None,
            audio_channels=audio.codec_context.channels if audio else None,
            color_space=int(ctx.colorspace),
            color_range=int(ctx.color_range),
            color_primaries=int(ctx.color_primaries),
            color_trc=int(ctx.color_trc),
        )
    finally:
        container.close()


def to_display(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored frame upright, the way a player shows it (rotation counter-clockwise)."""
    codes = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}
    return cv2.rotate(image, codes[rotation]) if rotation in codes else image


def from_display(image: np.ndarray, rotation: int) -> np.ndarray:
    """Inverse of :func:`to_display`: back to stored orientation before writing."""
    return to_display(image, (360 - rotation) % 360)


# --------------------------------------------------------------------------------------------
# colour conversion
#
# FFmpeg's swscale, used as PyAV's defaults do, truncates instead of rounding: BGR -> yuv420p
# comes out about 0.5 code value low in Y, Cb and Cr, and the yuv420p -> BGR fast path is about
# 1-1.5 low again, so every encode/decode generation darkened frames by ~2 levels (B 2.7, G 1.7,
# R 2.0 lower, losslessly too) and the drift added up. With ACCURATE_RND and full-chroma interpolation swscale rounds, and its
# YCbCr -> BGR is then unbiased for every matrix and range; its BGR -> full-range YCbCr still puts
# chroma 0.5 low. So frames are converted to YCbCr here (exact matrix, rounding, 2x2-mean chroma
# at the centre of each block, as swscale places it) and decoded by swscale with those flags.

# AVColorSpace -> (Kr, Kb). Unspecified and anything unlisted decode as BT.601, as FFmpeg does.
_KR_KB = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (BT.601 625)
    6: (0.299, 0.114),  # SMPTE 170M (BT.601 525)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
    10: (0.2627, 0.0593),  # BT.2020 constant luminance (approximated like swscale does)
}
_BT601 = (0.299, 0.114)
# 8-bit planar YCbCr formats converted here; others (nv12, 10-bit, RGB ...) go through swscale.
_PLANAR_YUV8 = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv440p", "yuvj440p", "yuv444p", "yuvj444p"}
# swscale settings that round (ACCURATE_RND) and interpolate chroma on the full grid (FULL_CHR_*);
# without FULL_CHR_H_INT its unscaled YCbCr -> RGB fast path truncates however it is asked.
SWS_EXACT = (Interpolation.BILINEAR | Interpolation.ACCURATE_RND
             | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP)

_COLORSPACE_MATRICES: dict[tuple[float, float, bool], np.ndarray] = {}


def is_full_range(pix_fmt: str | None, color_range: int) -> bool:
    """True for full-range (JPEG, 0-255) YCbCr: ``yuvj*`` formats or the full-range tag (2)."""
    return int(color_range) == 2 or (pix_fmt or "").startswith("yuvj")


def bgr_to_ycbcr_matrix(color_space: int, full_range: bool) -> np.ndarray:
    """3x4 float32 matrix (rows Y, Cb, Cr; columns B, G, R, offset) taking BGR 0..255 to YCbCr code
    values of ``color_space`` (an AVColorSpace; unknown: BT.601) in limited (16-235/240) or full
    (0-255) range, before rounding."""
    kr, kb = _KR_KB.get(int(color_space), _BT601)
    key = (kr, kb, bool(full_range))
    if key not in _COLORSPACE_MATRICES:
        kg = 1.0 - kr - kb
        luma = np.array([kb, kg, kr])  # B, G, R
        cb = (np.array([1.0, 0.0, 0.0]) - luma) / (2.0 * (1.0 - kb))  # (B - Y) / (2 (1 - Kb))
        cr = (np.array([0.0, 0.0, 1.0]) - luma) / (2.0 * (1.0 - kr))
        y_scale, c_scale, y_offset = (255.0, 255.0, 0.0) if full_range else (219.0, 224.0, 16.0)
        matrix = np.stack([luma * y_scale, cb * c_scale, cr * c_scale]) / 255.0
        offsets = np.array([[y_offset], [128.0], [128.0]])
        _COLORSPACE_MATRICES[key] = np.hstack([matrix, offsets]).astype(np.float32)
    return _COLORSPACE_MATRICES[key]


def _store_plane(plane: av.video.plane.VideoPlane, values: np.ndarray) -> None:
    """Round float ``values`` (plane.height, plane.width) to uint8 into ``plane`` (in place)."""
    np.rint(values, out=values)
    np.clip(values, 0.0, 255.0, out=values)
    view = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: plane.height, : plane.width]
    view[...] = values


def bgr_to_yuv_frame(image: np.ndarray, pix_fmt: str = "yuv420p", color_space: int = 2,
                     full_range: bool = False) -> av.VideoFrame:
    """A BGR uint8 image as a ``pix_fmt`` frame, converted with the exact ``color_space`` matrix
    (AVColorSpace; unspecified: BT.601) and range and rounded to the nearest code value. Chroma is
    the mean of each subsampled block (sited at the block centre, as swscale reads it back), so the
    mean colour is kept. Formats other than 8-bit planar YCbCr go through swscale (rounding)."""
    height, width = image.shape[:2]
    if pix_fmt not in _PLANAR_YUV8:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        return frame.reformat(format=pix_fmt, dst_colorspace=color_space if color_space != 2 else None,
                              dst_color_range=2 if full_range else None, interpolation=SWS_EXACT)
    full_range = full_range or pix_fmt.startswith("yuvj")
    matrix = bgr_to_ycbcr_matrix(color_space, full_range)
    frame = av.VideoFrame(width, height, pix_fmt)
    luma_plane, cb_plane, cr_plane = frame.planes
    pixels = image.astype(np.float32)
    _store_plane(luma_plane, cv2.transform(pixels, matrix[:1]).reshape(height, width))
    chroma_size = (cb_plane.width, cb_plane.height)
    if chroma_size != (width, height):
        # The matrix is affine, so the mean BGR of a block gives the block's mean Cb/Cr.
        pixels = cv2.resize(pixels, chroma_size, interpolation=cv2.INTER_AREA)
    chroma = cv2.transform(pixels, matrix[1:])
    _store_plane(cb_plane, np.ascontiguousarray(chroma[..., 0]))
    _store_plane(cr_plane, np.ascontiguousarray(chroma[..., 1]))
    frame.colorspace = int(color_space)
    frame.color_range = 2 if full_range else 1
    return frame


def yuv_frame_to_bgr(frame: av.VideoFrame, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """Decode a frame to BGR uint8 with its own matrix (unspecified: BT.601) and range, rounded
    (swscale with :data:`SWS_EXACT`; pass a ``reformatter`` to reuse its context across frames)."""
    reformatter = reformatter or VideoReformatter()
    full = is_full_range(frame.format.name, int(frame.color_range))
    bgr = reformatter.reformat(frame, format="bgr24", src_color_range=2 if full else None,
                               interpolation=SWS_EXACT)
    return bgr.to_ndarray()


# --------------------------------------------------------------------------------------------
# reader


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8 (H, W, 3), stored orientation
    index: int  # 0-based among the frames this reader yielded
    pts: int | None  # in time_base units
    time: float | None  # seconds
    time_base: Fraction
    # Damaged or suspect: the decoder concealed errors in it, or it follows skipped damaged data
    # and comes before the next keyframe (so it may show smeared or wrong pixels).
    corrupt: bool = False


@dataclass
class ReadError:
    kind: str  # 'demux' | 'decode' | 'corrupt-frame' | 'missing-frames' | 'gave-up'
    message: str
    time: float | None = None  # seconds, where known
    frame_index: int | None = None  # index the next yielded frame gets


@dataclass(frozen=True)
class _DeclaredEnd:
    """Where a container's header says the video ends (seconds: the end of its last frame)."""

    seconds: float
    source: str  # what says so, for the message
    shared: bool  # a whole-file duration: audio or subtitles may run on past the video


def _parse_clock(value: str) -> float | None:
    """'HH:MM:SS.fffffffff' (Matroska DURATION tags) -> seconds, None when unreadable."""
    try:
        hours, minutes, seconds = value.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _track_duration_tag(stream: av.VideoStream) -> float | None:
    """The per-track DURATION tag FFmpeg and mkvmerge write into Matroska/WebM (key may carry a
    language suffix, e.g. DURATION-eng)."""
    for key, value in stream.metadata.items():
        if key.upper().split("-")[0] == "DURATION":
            seconds = _parse_clock(value)
            if seconds:
                return seconds
    return None


def _declared_video_end(container: av.container.InputContainer, stream: av.VideoStream) -> _DeclaredEnd | None:
    """Where the header of a container without a frame count says the video ends, or None when it
    records nothing reliable (see ``_DECLARED_DURATION_FORMATS``)."""
    fmt = container.format.name
    if fmt not in _DECLARED_DURATION_FORMATS:
        return None
    time_base = Fraction(stream.time_base) if stream.time_base else None
    if fmt == "avi":
        # The stream header's length: frames, empty (dropped-frame) chunks included, one per 1/rate.
        # (FFmpeg scales AVStream.duration down by the file size when the file is cut short.)
        if stream.frames and time_base:
            return _DeclaredEnd(float(stream.frames * time_base), f"AVI header ({stream.frames} frames)", False)
        return None
    tagged = _track_duration_tag(stream)
    if tagged:
        return _DeclaredEnd(tagged, "video track's DURATION tag", False)
    if stream.duration and time_base:
        start = stream.start_time or 0
        return _DeclaredEnd(float((start + stream.duration) * time_base), "video stream header", False)
    if container.duration and container.duration > 0:
        duration = container.duration / av.time_base
        start = (container.start_time or 0) / av.time_base
        # Muxers write the span from the first timestamp or the last timestamp itself: the earlier
        # reading, so a file whose timestamps start late is not taken for a cut-off one.
        return _DeclaredEnd(duration + min(0.0, start), "container header", len(container.streams) > 1)
    return None


def _last_packet_end(container: av.container.InputContainer) -> float | None:
    """Latest end time (seconds) of any packet of any stream, demuxing (not decoding) from where
    ``container`` stands."""
    ends = [float((p.pts + (p.duration or 0)) * p.time_base) for p in _demux_skipping_damage(container)
            if p.size and p.pts is not None and p.time_base]
    return max(ends, default=None)


def _packets_end(path: Path, from_time: float) -> float | None:
    """Where the data of ``path`` ends over all streams (seconds), reading from about ``from_time``
    on (from the start where seeking fails or lands past the data, as in files without an index);
    None when the file cannot be read again."""
    for seek in (True, False):
        try:
            with av.open(str(path), mode="r", metadata_errors="ignore") as container:
                if seek:
                    container.seek(max(0, int(from_time * av.time_base)), backward=True)
                end = _last_packet_end(container)
        except av.error.FFmpegError as exc:
            log.debug("%s: could not read the packets after %.3f s (seek: %s): %s", path, from_time, seek, exc)
            continue
        if end is not None and end >= from_time:
            return end
    return None


class VideoReader:
    """Decode a video's frames as BGR numpy arrays, surviving damage.

    Damaged packets are skipped and each problem is appended to ``errors`` instead of raising;
    frames the decoder had to conceal, and frames after skipped data up to the next keyframe, are
    still yielded with ``corrupt=True``; a cut-off file yields what is there. Missing files,
    empty files and non-videos raise :class:`VideoError` when the reader is created.

    A cut-off file is recorded as ``missing-frames`` after the last frame: in MP4/MOV when fewer
    frames decode than the index lists; in Matroska/WebM, AVI and FLV when the last decoded frame
    ends before the end the header declares for the video by more than 2 frame intervals or 3 % of
    the length (whichever is larger; the 3 % at most 2 s). The video track's own length is used
    where there is one; a whole-file duration (which covers the audio too) counts only when no
    stream's data reaches it, since audio may run on past the video. MPEG-TS records no length, so
    a cut-off TS file cannot be told from a short one.

    AVI stores no presentation times, only each frame's slot on the frame-rate grid; frames of
    codecs without reordering are timed by that slot (FFmpeg's pts guess for H.264/HEVC in AVI,
    which PyAV turns on, puts every frame one slot late against the audio).
    """

    def __init__(self, path: str | Path, *, threads: int = 0, max_consecutive_errors: int = 200) -> None:
        self.path = Path(path)
        self.info = probe(self.path)
        self.errors: list[ReadError] = []
        self.frames_read = 0
        self._threads = threads
        self._max_errors = max_consecutive_errors
        self._container: av.container.InputContainer | None = None
        self._tainted_since: float | None = None
        self._last_time = 0.0
        self._last_end = 0.0  # end time of the latest decoded frame (seconds)
        self._slot_timed = False  # AVI: frames timed by their chunk's slot (see class doc)
        self._reformatter = VideoReformatter()  # keeps one swscale context for all frames

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _error(self, kind: str, message: str, t: float | None = None) -> None:
        if kind in ("demux", "decode"):
            # Everything decoded from here to the next keyframe may lean on the lost data.
            since = t if t is not None else self._last_time
            self._tainted_since = since if self._tainted_since is None else min(self._tainted_since, since)
        err = ReadError(kind, message, t, self.frames_read)
        self.errors.append(err)
        where = f" at {t:.3f} s" if t is not None else ""
        log.warning("%s: %s%s (frame %d): %s", self.path, kind, where, self.frames_read, message)

    def __iter__(self) -> Iterator[Frame]:
        self.close()
        self.frames_read = 0
        self.errors = []
        self._tainted_since = None
        self._last_time = 0.0
        self._last_end = 0.0
        self._container = container = _open_input(self.path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if self._threads:
            stream.thread_count = self._threads
        self._slot_timed = container.format.name == "avi"
        declared = None if self.info.frame_count_exact else _declared_video_end(container, stream)
        time_base = Fraction(stream.time_base or self.info.time_base)
        try:
            yield from self._decode(container, stream, time_base)
        finally:
            self.close()
        if self.info.frame_count_exact and self.frames_read < self.info.frame_count:
            self._error(
                "missing-frames",
                f"decoded {self.frames_read} of the {self.info.frame_count} frames the container lists; "
                "the file is damaged or cut off (output has the frames that could be decoded)",
            )
        elif declared is not None:
            self._check_declared_end(declared)

    def _end_tolerance(self, seconds: float) -> float:
        """How far short of a declared end decoding may stop without a warning: 2 frames, or 3 % of
        the length up to 2 s (rounding in headers, a trailing dropped frame, VFR)."""
        fps = float(self.info.fps) if self.info.fps else 25.0
        return max(2.0 / fps, min(0.03 * seconds, 2.0))

    def _check_declared_end(self, declared: _DeclaredEnd) -> None:
        """Record ``missing-frames`` when decoding stopped clearly before ``declared``."""
        tolerance = self._end_tolerance(declared.seconds)
        if self._last_end >= declared.seconds - tolerance:
            return
        if declared.shared:
            # A whole-file duration also covers audio, which may simply run longer than the video.
            data_end = _packets_end(self.path, self._last_end)
            if data_end is not None and data_end >= declared.seconds - tolerance:
                log.debug("%s: video ends at %.3f s, other streams at %.3f s", self.path, self._last_end, data_end)
                return
        self._error(
            "missing-frames",
            f"decoding ended at {self._last_end:.2f} s but the {declared.source} says the video runs to "
            f"{declared.seconds:.2f} s; the file is damaged or cut off (output has the frames that could be decoded)",
            self._last_end,
        )

    def _decode(self, container: av.container.InputContainer, stream: av.VideoStream,
                time_base: Fraction) -> Iterator[Frame]:
        demuxer = container.demux(stream)
        failures = 0  # consecutive
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                failures += 1
                self._error("demux", str(exc))
                if failures > self._max_errors:
                    self._error("gave-up", f"{failures} errors in a row; stopped reading")
                    return
                demuxer = container.demux(stream)  # carries on from the current file position
                continue
            t = float(packet.pts * time_base) if packet.pts is not None else None
            try:
                decoded = stream.decode(packet if packet.size else None)
            except av.error.FFmpegError as exc:
                failures += 1
                self._error("decode", f"skipped a damaged packet: {exc}", t)
                if failures > self._max_errors:
                    self._error("gave-up", f"{failures} errors in a row; stopped reading")
                    return
                continue
            failures = 0
            for frame in decoded:
                yield self._convert(frame, time_base, stream)
            if not packet.size:
                return  # that was the flush packet: decoder drained
        try:  # the demuxer ended without a flush packet: drain the decoder ourselves
            for frame in stream.decode(None):
                yield self._convert(frame, time_base, stream)
        except av.error.FFmpegError as exc:
            self._error("decode", f"could not drain the decoder: {exc}")

    def _frame_pts(self, frame: av.VideoFrame, stream: av.VideoStream) -> int | None:
        """The frame's pts; in AVI, for a stream without reordering, its chunk's slot (the dts)."""
        if self._slot_timed and frame.dts is not None and not stream.codec_context.has_b_frames:
            return frame.dts
        return frame.pts

    def _convert(self, frame: av.VideoFrame, time_base: Fraction, stream: av.VideoStream) -> Frame:
        pts = self._frame_pts(frame, stream)
        t = float(pts * time_base) if pts is not None else None
        if frame.is_corrupt:
            self._error("corrupt-frame", "decoder concealed damaged data in this frame", t)
        tainted = self._tainted_since is not None and (t is None or t >= self._tainted_since)
        if tainted and frame.key_frame:
            self._tainted_since, tainted = None, False  # a keyframe decodes on its own: clean again
        corrupt = bool(frame.is_corrupt or tainted)
        if t is not None:
            self._last_time = t
            step = float(frame.duration * time_base) if frame.duration else 1.0 / float(self.info.fps or 25)
            self._last_end = max(self._last_end, t + step)
        # The frame's own colour matrix (BT.601/709/...) and range (limited/full) drive the conversion.
        image = yuv_frame_to_bgr(frame, self._reformatter)
        out = Frame(image, self.frames_read, pts, t, time_base, corrupt)
        self.frames_read += 1
        return out


# --------------------------------------------------------------------------------------------
# writer


def _audio_copy_check(format_name: str, audio: av.AudioStream) -> str | None:
    """None when ``audio`` can be stream-copied into ``format_name``, else the reason why not."""
    probe_out = av.open(io.BytesIO(), mode="w", format=format_name)
    try:
        probe_out.add_stream_from_template(audio)
        probe_out.start_encoding()
        return None
    except (av.error.FFmpegError, ValueError) as exc:
        return str(exc)
    finally:
        try:
            probe_out.close()
        except (av.error.FFmpegError, ValueError):
            pass


def _audio_playable_check(out_path: Path, audio: av.AudioStream) -> str | None:
    """None when players play ``audio``'s codec from ``out_path``'s container, else the reason why not.
    Only MP4 is checked: FFmpeg muxes Opus, FLAC and PCM into it, but QuickTime and many players
    refuse them there. MOV and MKV play what they take."""
    if out_path.suffix.lower() not in _MP4_SUFFIXES:
        return None
    codec = audio.codec_context.codec.canonical_name
    if codec in _MP4_PLAYABLE_AUDIO:
        return None
    return f"QuickTime and many players do not play {codec} audio in {out_path.suffix}"


class _AudioSource:
    """Feeds the audio of ``path`` into an output container: stream copy when the container takes
    the codec and players play it from there, else decode + re-encode (AAC, or the container's
    default audio codec)."""

    def __init__(self, path: Path, input_: av.container.InputContainer,
                 output: av.container.OutputContainer, out_path: Path) -> None:
        self.path = path
        self.input = input_
        self.in_stream = self.input.streams.audio[0]
        self.output = output
        self.time_base = Fraction(self.in_stream.time_base)
        self.done = False
        self.packets = 0
        self._errors = 0
        self._pending: av.Packet | None = None
        reason = _audio_copy_check(output.format.name, self.in_stream)
        reason = reason or _audio_playable_check(out_path, self.in_stream)
        if reason is None:
            self.mode = "copy"
            self.out_stream = output.add_stream_from_template(self.in_stream)
            self.resampler = None
        else:
            codec = "aac" if "aac" in output.supported_codecs else output.default_audio_codec
            ctx = self.in_stream.codec_context
            rate = 48000 if codec in {"libopus", "opus"} else ctx.sample_rate
            log.info("%s: audio %s cannot be copied into %s (%s); re-encoding it to %s",
                     out_path, ctx.name, out_path.suffix or output.format.name, reason, codec)
            self.mode = f"re-encode:{codec}"
            self.out_stream = output.add_stream(codec, rate=rate)
            self.out_stream.layout = ctx.layout.name if ctx.layout else "stereo"
            self.resampler = av.AudioResampler(
                format=self.out_stream.format.name, layout=self.out_stream.layout.name, rate=rate
            )
        self._demuxer = self.input.demux(self.in_stream)

    def _next_packet(self) -> av.Packet | None:
        while True:
            try:
                packet = next(self._demuxer)
            except StopIteration:
                return None
            except av.error.FFmpegError as exc:
                self._errors += 1
                log.warning("%s: skipped damaged audio data: %s", self.path, exc)
                if self._errors > 200:
                    return None
                self._demuxer = self.input.demux(self.in_stream)
                continue
            if packet.size and packet.dts is not None:
                return packet
            if not packet.size:
                return None

    def pump(self, until: float | None) -> None:
        """Move audio up to ``until`` seconds (None: all of it) into the output."""
        while not self.done:
            packet = self._pending or self._next_packet()
            self._pending = None
            if packet is None:
                self.finish()
                return
            t = float(packet.dts * self.time_base)
            if until is not None and t > until:
                self._pending = packet
                return
            self._write(packet)

    def _write(self, packet: av.Packet) -> None:
        try:
            if self.resampler is None:
                packet.stream = self.out_stream
                self.output.mux(packet)
                self.packets += 1
                return
            for frame in self.in_stream.decode(packet):
                self._encode(frame)
        except av.error.FFmpegError as exc:
            log.warning("%s: dropped an audio packet (%s)", self.path, exc)

    def _encode(self, frame: av.AudioFrame | None) -> None:
        assert self.resampler is not None
        frame_list = self.resampler.resample(frame)
        for resampled in frame_list:
            for out_packet in self.out_stream.encode(resampled):
                self.output.mux(out_packet)
                self.packets += 1
        if frame is None:
            for out_packet in self.out_stream.encode(None):
                self.output.mux(out_packet)
                self.packets += 1

    def finish(self) -> None:
        """Drain the decoder/encoder of a re-encode (a no-op for a copy); call once at the end."""
        if self.done:
            return
        self.done = True
        if self.resampler is not None:
            try:
                for frame in self.in_stream.decode(None):
                    self._encode(frame)
            except av.error.FFmpegError as exc:
                log.warning("%s: audio decoder flush failed: %s", self.path, exc)
            self._encode(None)

    def close(self) -> None:
        self.input.close()


def _open_audio(path: Path, output: av.container.OutputContainer, out_path: Path) -> _AudioSource | None:
    """The audio of ``path`` for ``output``, or None (logged) when ``path`` has no audio."""
    _check_input_file(path)
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoError(f"audio source {path} cannot be read ({exc}); pass audio_from=None to write no audio") from exc
    if not container.streams.audio:
        container.close()
        log.info("%s has no audio; %s will have none", path, out_path)
        return None
    try:
        return _AudioSource(path, container, output, out_path)
    except BaseException:
        container.close()
        raise


def check_output_container(path: str | Path, codec: str = "libx264") -> None:
    """Raise :class:`VideoError` now (before any frame is processed) when FFmpeg has no muxer for the
    suffix of ``path`` or its container does not take ``codec`` video (e.g. .webm and H.264)."""
    import tempfile

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            container = av.open(os.path.join(tmp, "probe" + path.suffix), mode="w")
        except ValueError as exc:
            raise VideoError(f"cannot write {path}: FFmpeg has no muxer for '{path.suffix or '(no extension)'}'; "
                             "name the output .mp4, .mkv or .mov") from exc
        try:
            container.add_stream(codec, rate=25)
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(f"cannot write {path}: the {path.suffix.lower()} container does not take {codec!r} "
                             f"video ({exc}); name the output .mp4, .mkv or .mov") from exc
        finally:
            container.close()


def _link_new(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` without ever replacing a file: FileExistsError when ``dst``
    exists. Atomic where the file system has hard links; elsewhere (FAT, exFAT, some network and FUSE
    file systems) an exists-check, then a rename."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError as exc:
        if not src.exists():
            raise
        log.debug("cannot hard-link %s (%s): checking %s, then renaming", src, exc, dst)
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.replace(src, dst)
        return
    try:
        os.unlink(src)
    except OSError as exc:
        log.warning("%s is finished, but its temporary name %s could not be removed (%s); delete it by hand",
                    dst, src, exc)


class _TrailerLost(Exception):
    """Finishing reported success, but the file does not end the way the muxer ends it."""


def _check_fragmented_end(path: Path) -> None:
    """FFmpeg's MP4 muxer drops a write error in a fragmented file's last fragment and index (seen
    with FFmpeg 8 under a file-size limit): the file must end in the 'mfro' box it writes last."""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 16))
        tail = fh.read(16)
    if tail[4:8] != b"mfro":
        raise _TrailerLost("its last fragment and index did not reach the disk, though FFmpeg reported no error: "
                           "a full disk or a file-size limit")


def _numbered(path: Path, n: int, partial: bool = False) -> Path:
    """``path`` (n=1) or ``<stem>-<n><suffix>``; ``partial``: ``<stem>[-n].partial<suffix>``."""
    number = "" if n == 1 else f"-{n}"
    return path.with_name(f"{path.stem}{number}{'.partial' if partial else ''}{path.suffix}")


class VideoWriter:
    """Encode BGR frames to ``path`` (H.264 by default) with the input's size, rate, time base and
    rotation, copying the audio of ``audio_from``.

    Output goes to a hidden temporary file in the same folder; ``close(ok=True)`` renames it to
    ``path``. ``close(ok=False)`` (Ctrl-C, a damaged input the caller gave up on) keeps what was
    written, playable, as ``<stem>.partial<suffix>`` next to it and logs where; with nothing written
    or ``keep_partial=False`` it removes the temporary file. As a context manager: a clean exit
    closes with ok=True, KeyboardInterrupt with ok=False, any other exception discards the output.
    The final ``path`` never holds a half-written file.

    When finishing itself fails (disk full, a file-size limit: the trailer or index cannot be
    written), ``close`` keeps what was written as ``partial_path`` (a taken name gets
    ``<stem>-2.partial<suffix>``, ... : a failure never replaces a file), logs where, sets
    ``result`` to it and raises (:class:`VideoError` for FFmpeg's errors). An ``.mp4``/``.mov``
    cut off before its index plays only when written with ``fragmented=True``.

    ``overwrite=False``: neither ``path`` nor ``partial_path`` ever replaces an existing file; a
    taken name raises :class:`OutputExistsError` from ``close`` with the finished file kept, so the
    caller can :meth:`retarget` and close again. ``fragmented=True`` (MP4-family suffixes only;
    instead of faststart): fragmented MP4, a fragment per keyframe written out as it completes, so a
    file cut off by a crash or a write error plays up to its last complete fragment (set the keyframe
    interval with ``options={"g": ...}``).

    Odd sizes cannot be 4:2:0: frames are padded by one replicated row/column (logged); pass
    ``pix_fmt='yuv444p'`` to keep the exact size at the cost of player support.
    """

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo,
        crf: int = 18,
        codec: str = "libx264",
        audio_from: str | Path | None = None,
        *,
        pix_fmt: str = "yuv420p",
        preset: str | None = None,
        options: dict[str, str] | None = None,
        faststart: bool = True,
        keep_partial: bool = True,
        overwrite: bool = True,
        fragmented: bool = False,
    ) -> None:
        self.path = Path(path)
        self.info = info
        self.partial_path = _numbered(self.path, 1, partial=True)
        self.keep_partial = keep_partial
        self.overwrite = overwrite
        self.frames_written = 0
        self.result: Path | None = None  # the file close() left: the output, or the partial file kept
        self._closed = False
        self._finished = False  # trailer written and file closed (close() may still have to name it)
        self._last_pts: int | None = None
        self._last_time = 0.0
        self._audio: _AudioSource | None = None

        if not self.path.parent.is_dir():
            raise VideoError(f"cannot write {self.path}: folder {self.path.parent} does not exist; create it first")
        if audio_from is not None and Path(audio_from).resolve() == self.path.resolve():
            raise VideoError(f"output {self.path} would replace its input; choose another output name")
        self._tmp = self.path.with_name(f".{self.path.stem}.{uuid.uuid4().hex[:8]}.tmp{self.path.suffix}")

        subsampled = pix_fmt.startswith(("yuv420", "yuvj420", "nv12", "yuv422", "yuvj422"))
        self._pad = (info.width % 2, info.height % 2) if subsampled else (0, 0)
        if any(self._pad):
            log.warning("%s: %dx%d is odd; written as %dx%d (last column/row repeated) for %s, which needs even "
                        "sizes", self.path, info.width, info.height, info.width + self._pad[0],
                        info.height + self._pad[1], pix_fmt)
        self._in_time_base = Fraction(info.time_base)  # what write()'s pts are in
        # AVI has no timestamps, only a frame rate (1 / its time base): there every frame goes on the grid of
        # the nominal rate, or the muxer fills the gaps with repeated frames. Other containers keep the input's.
        self._frame_grid = self.path.suffix.lower() in _FRAME_GRID_SUFFIXES
        self._time_base = 1 / Fraction(info.fps) if self._frame_grid else self._in_time_base
        self._default_step = 1 / (info.fps * self._time_base)  # pts units per frame

        self.fragmented = fragmented and self.path.suffix.lower() in _FASTSTART_SUFFIXES
        faststart = faststart and not self.fragmented and self.path.suffix.lower() in _FASTSTART_SUFFIXES
        try:
            opts = dict(_FRAGMENTED_OPTIONS) if self.fragmented else {"movflags": "+faststart"} if faststart else {}
            if self._frame_grid:  # AVI: no timestamps to shift; shifting for the AAC priming would insert a frame
                opts["avoid_negative_ts"] = "disabled"
            self._container = av.open(str(self._tmp), mode="w", options=opts)
        except ValueError as exc:
            raise VideoError(
                f"cannot write {self.path}: FFmpeg has no muxer for '{self.path.suffix}'; use .mp4, .mov or .mkv"
            ) from exc
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot create {self._tmp} ({exc}); check that {self.path.parent} is writable") from exc
        try:
            self._setup(info, crf, codec, pix_fmt, preset, options or {}, audio_from)
        except BaseException:
            self.abort()
            raise

    def _setup(self, info: VideoInfo, crf: int, codec: str, pix_fmt: str, preset: str | None,
               options: dict[str, str], audio_from: str | Path | None) -> None:
        container = self._container
        try:
            stream = container.add_stream(codec, rate=info.fps)
        except (av.error.FFmpegError, ValueError) as exc:
            suffix = self.path.suffix.lower() or "(no extension)"
            raise VideoError(f"cannot write {self.path}: the {suffix} container does not take {codec!r} video ({exc}); "
                             "name the output .mp4, .mkv or .mov") from exc
        stream.width = info.width + self._pad[0]
        stream.height = info.height + self._pad[1]
        stream.pix_fmt = pix_fmt
        stream.time_base = self._time_base
        stream.codec_context.time_base = self._time_base
        opts = {}
        if codec in _CRF_CODECS:
            opts["crf"] = str(crf)
        if preset:
            opts["preset"] = preset
        if self._frame_grid:  # AVI stores no reordering timestamps: with B-frames the decoded pts run out of order
            opts["bf"] = "0"
        opts.update(options)
        stream.options = opts
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        # Same colour tags as the input, so players show the same colours; frames are converted
        # with that matrix and range (a yuvj* input is full range even when untagged).
        self._full_range = is_full_range(info.pix_fmt, info.color_range) or is_full_range(pix_fmt, 0)
        # A matrix not converted here (RGB/GBR, YCgCo, ...) would mislabel BT.601 pixels: untagged.
        self._color_space = info.color_space if info.color_space in _KR_KB else 2
        ctx = stream.codec_context
        ctx.colorspace = self._color_space
        ctx.color_range = 2 if self._full_range else info.color_range
        ctx.color_primaries, ctx.color_trc = info.color_primaries, info.color_trc
        self._pix_fmt = pix_fmt
        self._stream = stream
        if audio_from is not None:
            self._audio = _open_audio(Path(audio_from), container, self.path)

    @property
    def audio_mode(self) -> str | None:
        """'copy', 're-encode:<codec>' or None (no audio)."""
        return self._audio.mode if self._audio else None

    # -- writing ------------------------------------------------------------------------------

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Encode one BGR uint8 frame; ``pts`` in the input's time base (from :class:`Frame`),
        default: the next frame at the nominal rate."""
        if self._closed:
            raise VideoError(f"{self.path}: write() after close()")
        if image.shape != (self.info.height, self.info.width, 3) or image.dtype != np.uint8:
            hint = ""
            if image.shape[:2] == (self.info.width, self.info.height):
                hint = "; it looks turned upright: pass it through from_display() before writing"
            raise ValueError(
                f"{self.path}: frame is {image.shape} {image.dtype}, the writer expects "
                f"({self.info.height}, {self.info.width}, 3) uint8 BGR like its input{hint}"
            )
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + max(1, round(self._default_step))
            if self.frames_written == 0 and self.info.start_time:
                pts = round(self.info.start_time / self._time_base)
        elif self._frame_grid:
            pts = round(pts * self._in_time_base / self._time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            log.debug("%s: pts %d not after %d; moved forward", self.path, pts, self._last_pts)
            pts = self._last_pts + 1
        if any(self._pad):
            image = cv2.copyMakeBorder(image, 0, self._pad[1], 0, self._pad[0], cv2.BORDER_REPLICATE)
        frame = bgr_to_yuv_frame(image, self._pix_fmt, self._color_space, self._full_range)
        ctx = self._stream.codec_context
        frame.colorspace, frame.color_range = ctx.colorspace, ctx.color_range
        frame.pts = pts
        frame.time_base = self._time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._last_pts = pts
        self._last_time = float(pts * self._time_base)
        self.frames_written += 1
        if self._audio is not None:
            # Audio just past this frame: interleaved as it goes, and no further than the video
            # if the run stops here.
            self._audio.pump(self._last_time + float(1 / self.info.fps))

    # -- closing ------------------------------------------------------------------------------

    def _finalize(self, audio_until: float | None) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.pump(audio_until)
            self._audio.finish()
        self._container.close()
        if self.fragmented:
            _check_fragmented_end(self._tmp)
        if self._audio is not None:
            self._audio.close()

    def close(self, ok: bool = True) -> Path | None:
        """Finish the file. ok: rename to ``path``. not ok: keep what was written as
        ``partial_path`` (or delete it, see class doc). Returns the file written, or None.

        Finishing that fails keeps what was written (see class doc) and raises; with
        ``overwrite=False`` a taken name raises :class:`OutputExistsError` (the writer stays open for
        :meth:`retarget` and another ``close``)."""
        if self._closed:
            return self.result
        if ok and self.frames_written == 0:
            self.abort()
            raise VideoError(f"{self.path}: no frame was given to write; nothing was written")
        if not ok and (self.frames_written == 0 or not self.keep_partial):
            self.abort()
            return None
        if not self._finished:
            # Partial output: audio only as far as the video goes (plus one frame).
            audio_until = None if ok else self._last_time + float(1 / self.info.fps)
            try:
                self._finalize(audio_until)
            except BaseException as exc:
                error = self._keep_after_failed_finish(exc)
                if error is None:
                    raise
                raise error from exc
            self._finished = True
        target = self.path if ok else self.partial_path
        try:
            self._publish(target)
        except OutputExistsError:
            raise
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self.result = target
        if ok:
            log.info("%s: wrote %d frames (audio: %s)", target, self.frames_written, self.audio_mode or "none")
        else:
            log.warning("stopped early: kept the %d frames processed so far (%.2f s) in %s; "
                        "%s was not written", self.frames_written, self._last_time, target, self.path)
        return target

    def _publish(self, target: Path) -> None:
        """Rename the finished temporary file to ``target`` (replacing only with ``overwrite``)."""
        if self.overwrite:
            os.replace(self._tmp, target)
            return
        try:
            _link_new(self._tmp, target)
        except FileExistsError:
            raise OutputExistsError(
                f"{target} already exists and overwrite=False: it was left as it is; the finished output waits "
                f"in {self._tmp} for retarget() and close(), or abort()"
            ) from None

    def _keep_after_failed_finish(self, exc: BaseException) -> VideoError | None:
        """Finishing raised ``exc``: close what is open, keep what was written (see class doc) and log
        where. Returns the :class:`VideoError` to raise for FFmpeg's errors (None: re-raise ``exc``)."""
        self._closed = True
        self._close_quietly()
        kept, where = self._keep_cut_off()
        self.result = kept
        log.warning("could not finish %s (%s); %s", self.path, exc, where)
        if isinstance(exc, (av.error.FFmpegError, _TrailerLost)):
            return VideoError(f"could not finish {self.path} ({exc}); {where}")
        return None

    def _keep_cut_off(self) -> tuple[Path | None, str]:
        """Name the temporary file of a failed finish ``partial_path`` (or ``<stem>-N.partial<suffix>``,
        never replacing a file); returns (the kept file or None, a note that says where)."""
        if not self.keep_partial:
            self._delete_tmp()
            return None, "nothing was kept (keep_partial=False)"
        if not self._tmp.exists():
            return None, "nothing had reached the disk"
        for n in range(1, 1000):
            dst = _numbered(self.path, n, partial=True)
            try:
                _link_new(self._tmp, dst)
            except FileExistsError:
                continue
            except OSError as exc:
                return None, f"what was written is still in {self._tmp} (naming it {dst} failed: {exc}); rename it"
            break
        else:
            return None, f"what was written is still in {self._tmp} (999 partial files exist); rename it by hand"
        note = f"what was written is kept in {dst}"
        if self.path.suffix.lower() in _FASTSTART_SUFFIXES and not self.fragmented:
            note += (f" (an {self.path.suffix} cut off before its index does not play; an .mkv or .ts output "
                     "stays playable up to where it was cut)")
        return dst, note

    def retarget(self, path: str | Path) -> None:
        """Give the output another final name in the same folder, with the same suffix (its partial
        name follows): before ``close``, or after ``close`` raised :class:`OutputExistsError`."""
        path = Path(path)
        if self._closed:
            raise VideoError(f"{self.path}: retarget() after close(); the output is {self.result}")
        if path.parent.resolve() != self.path.parent.resolve() or path.suffix != self.path.suffix:
            raise ValueError(f"cannot retarget {self.path} to {path}: the new name must be in {self.path.parent} "
                             f"and end in {self.path.suffix} (the file is written there, in that container)")
        self.path, self.partial_path = path, _numbered(path, 1, partial=True)

    def _close_quietly(self) -> None:
        for closer in (self._container.close, self._audio.close if self._audio else None):
            if closer is None:
                continue
            try:
                closer()
            except Exception as exc:  # noqa: BLE001 - already failing: what to do next is the caller's
                log.debug("%s: error while closing after a failure: %s", self.path, exc)

    def _delete_tmp(self) -> None:
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete temporary file %s (%s); delete it by hand", self._tmp, exc)

    def abort(self) -> None:
        """Discard everything: close without finishing and delete the temporary file."""
        self._closed = True
        self._close_quietly()
        self._delete_tmp()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close(ok=True)
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close(ok=False)
        else:
            self.abort()
