"""Where anonymized live frames go: segmented files, an MJPEG HTTP stream, an encoded network
stream (MPEG-TS over UDP, or a push to an RTSP/RTMP/SRT server), a window.

A sink gets every output frame (:class:`OutputFrame`, already anonymized or a "no signal" card)
through ``write`` and is finished by ``close``. Sinks never see a raw input frame.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..video import OutputExistsError, VideoInfo, VideoWriter
from .httpserve import serve_http

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".m4v", ".ts"}


@dataclass
class OutputFrame:
    image: np.ndarray  # BGR uint8, anonymized (or a no-signal card)
    t_output: float  # time.monotonic() when it was produced
    seq: int | None = None  # source frame number (None for no-signal frames)
    t_capture: float | None = None
    kind: str = "frame"  # 'frame' | 'no_signal'
    records: list = field(default_factory=list)  # FaceRecord of each face
    late: bool = False  # the generative step missed the deadline: faces pixelated


class Sink(Protocol):
    def write(self, frame: OutputFrame) -> None: ...

    def close(self) -> None: ...


def no_signal_frame(width: int, height: int, text: str = "NO SIGNAL") -> np.ndarray:
    """A dark grey card with ``text`` and the time (never any pixels of the input)."""
    image = np.full((height, width, 3), 32, np.uint8)
    scale = max(0.4, min(width, height) / 360.0)
    thickness = max(1, round(2 * scale))
    for line, dy in ((text, 0.0), (time.strftime("%Y-%m-%d %H:%M:%S"), 1.6)):
        (tw, th), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        org = (max(0, (width - tw) // 2), int(height / 2 + th / 2 + dy * th * (1 if dy else 0)))
        cv2.putText(image, line, org, cv2.FONT_HERSHEY_SIMPLEX, scale * (0.6 if dy else 1.0), (200, 200, 200),
                    thickness, cv2.LINE_AA)
    return image


# --------------------------------------------------------------------------------------------
# segmented files


@functools.lru_cache(maxsize=1)
def _muxer_suffixes() -> frozenset[str]:
    """Every file suffix FFmpeg writes (``.avi``, ``.webm``, ``.gif``, ...): a target ending in one
    of them is meant as a file, not as a folder."""
    import av

    suffixes = set()
    for name in av.formats_available:
        try:
            suffixes.update(f".{ext.strip().lower()}" for ext in av.ContainerFormat(name, "w").extensions)
        except (ValueError, av.error.FFmpegError):
            continue  # an input-only format
    return frozenset(suffixes)


def resolve_target(target: str | Path) -> tuple[Path, str | None, str]:
    """``-o`` as (folder, file stem or None for a folder, suffix). An existing folder, or a name
    without a media suffix, is a folder; ``NAME.mp4`` (.mkv, .mov, .m4v, .ts) names the files; any
    other media suffix (``rec.avi``, ``rec.webm``) is refused instead of becoming a folder."""
    target = Path(target)
    suffix = target.suffix.lower()
    if suffix in VIDEO_SUFFIXES and not target.is_dir():
        return target.parent, target.stem, target.suffix
    if suffix and suffix in _muxer_suffixes() and not target.is_dir():
        raise ValueError(f"cannot record to {target}: live writes H.264 segments as "
                         f"{', '.join(sorted(VIDEO_SUFFIXES))}; name the output e.g. {target.with_suffix('.mp4')} "
                         f"(or .ts, which stays playable up to a write error), or give a folder")
    return target, None, ".mp4"


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` and check that files can be created in it; a ValueError that names the
    folder and the fix otherwise (before any model is loaded or source opened)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"cannot record into {folder}: it exists and is not a folder; choose another "
                         "-o (a folder, or NAME.mp4)") from None
    except OSError as exc:
        raise ValueError(f"cannot create the output folder {folder} ({exc.strerror}); create it by hand or "
                         "choose another -o") from exc
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".styleid-write-check-"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write into the output folder {folder} ({exc.strerror}); make it writable "
                         "(permissions, a read-only or full disk) or choose another -o") from exc


class SegmentedFileSink:
    """H.264 files of ``segment_seconds`` each (0: one file for the whole run).

    ``target`` is a folder (segments ``live_YYYYmmdd-HHMMSS_00001.mp4`` inside) or a file name
    ``NAME.mp4`` (segments ``NAME_YYYYmmdd-HHMMSS_00001.mp4`` next to it; with ``segment_seconds=0``
    the file is ``NAME.mp4``). The time is the segment's own wall-clock start, the number counts the
    segments of this run. An existing file is never replaced: a taken name gets ``-2``, ``-3``, ...
    (a restarted service, two recorders in one folder); the writer itself never replaces a file
    (``VideoWriter(overwrite=False)``), so two recorders racing for a name both keep theirs.

    A segment is written to a hidden temporary file and gets its name only when finished (rotation
    or ``close``). ``.mp4``/``.mov``/``.m4v`` segments are fragmented MP4 with a keyframe (and so a
    fragment written to disk) every ``keyframe_seconds``: a segment cut off by a crash, a power loss
    or a write error plays up to its last complete fragment, like ``.ts`` and ``.mkv``. Timestamps
    are output wall-clock times, so dropped frames and no-signal gaps keep real time. A frame of
    another size starts a new segment.

    A write error (disk full, file too large) keeps what the segment holds as
    ``<name>.partial<suffix>``, raises once (the pipeline counts it), skips frames for a back-off
    delay (``retry_initial`` doubling to ``retry_max``, counted in ``frames_lost``) and then starts a
    new segment. ``failures`` counts segments that did not finish cleanly.
    """

    def __init__(self, target: str | Path, segment_seconds: float = 60.0, fps: float = 25.0, crf: int = 23,
                 preset: str | None = "veryfast", *, keyframe_seconds: float = 2.0, retry_initial: float = 1.0,
                 retry_max: float = 30.0) -> None:
        if segment_seconds < 0:
            raise ValueError(f"segment_seconds must be >= 0 (0: one file), got {segment_seconds}")
        if keyframe_seconds <= 0:
            raise ValueError(f"keyframe_seconds must be > 0, got {keyframe_seconds}")
        self.folder, self.stem, self.suffix = resolve_target(target)
        prepare_folder(self.folder)
        self.segment_seconds = float(segment_seconds)
        self.fps = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.crf = crf
        self.preset = preset
        self.keyframe_seconds = float(keyframe_seconds)
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.segments: list[Path] = []  # finished segment files
        self.partials: list[Path] = []  # segments cut off by an error, kept as <name>.partial<suffix>
        self.frames_written = 0
        self.frames_lost = 0  # frames not recorded while waiting to start a new segment after an error
        self.failures = 0
        self._writer: VideoWriter | None = None
        self._base = ""  # the current segment's name without suffix (before any -2, -3, ...)
        self._n = 1  # its number among the names taken: 1 is _base itself, 2 is _base-2, ...
        self._t0 = 0.0
        self._size: tuple[int, int] | None = None
        self._count = 0
        self._retry_at = 0.0
        self._delay = retry_initial

    def _base_name(self, t: float) -> str:
        """The current segment's name without suffix: its wall-clock start and number in this run."""
        self._count += 1
        wall = time.time() - max(0.0, time.monotonic() - t)
        tag = time.strftime("%Y%m%d-%H%M%S", time.localtime(wall))
        if self.stem is None:
            return f"live_{tag}_{self._count:05d}"
        if not self.segment_seconds and self._count == 1:
            return self.stem
        return f"{self.stem}_{tag}_{self._count:05d}"

    def _free_path(self, start: int) -> Path:
        """The first name from ``start`` on (1: BASE.mp4, 2: BASE-2.mp4, ...) taken neither by a file
        nor by a partial file (NAME.partial.mp4); sets ``_n``."""
        for n in range(start, 1000):
            name = self._base if n == 1 else f"{self._base}-{n}"
            path = self.folder / f"{name}{self.suffix}"
            if not (os.path.lexists(path) or os.path.lexists(self.folder / f"{name}.partial{self.suffix}")):
                if n > 1:
                    log.warning("%s is taken: kept it, this segment is %s", self.folder / f"{self._base}{self.suffix}",
                                path.name)
                self._n = n
                return path
        raise OSError(f"999 files named {self._base}*{self.suffix} exist already in {self.folder}; move some away")

    def _open(self, width: int, height: int, t: float) -> None:
        info = VideoInfo(path=Path("live"), width=width, height=height, fps=self.fps, time_base=Fraction(1, 1000),
                         frame_count=0, frame_count_exact=False, duration=0.0, start_time=0.0, rotation=0,
                         codec="rawvideo", pix_fmt="yuv420p", container_format="live", has_audio=False)
        self._base = self._base_name(t)
        gop = max(1, round(float(self.fps) * self.keyframe_seconds))  # frames per keyframe (and per MP4 fragment)
        self._writer = VideoWriter(self._free_path(1), info, crf=self.crf, preset=self.preset, options={"g": str(gop)},
                                   overwrite=False, fragmented=True)
        self._t0, self._size = t, (width, height)

    def _close_writer(self, writer: VideoWriter, ok: bool) -> Path | None:
        """``writer.close(ok)``; a name taken meanwhile (another recorder) moves on to the next free one."""
        while True:
            try:
                return writer.close(ok=ok)
            except OutputExistsError as taken:
                try:
                    path = self._free_path(self._n + 1)
                except OSError as exc:
                    raise OSError(f"{exc} ({taken})") from taken  # (it says where the finished file waits)
                writer.retarget(path)

    def _finish(self, ok: bool = True) -> str | None:
        """Finish the current segment (``ok=False``: after a write error, keep it as a partial
        file). Returns None, or what went wrong and what was kept."""
        writer, self._writer = self._writer, None
        if writer is None:
            return None
        if writer.frames_written == 0:
            writer.abort()
            return None
        try:
            path, error = self._close_writer(writer, ok), None
        except Exception as exc:  # noqa: BLE001 - the disk filled up, the file got too large, ...
            path, error = writer.result, exc  # the writer kept what it could (result) and said where
        if ok and error is None:
            self.segments.append(path)
            self._delay = self.retry_initial
            log.info("segment finished: %s (%d frames)", path, writer.frames_written)
            return None
        if path is not None:
            self.partials.append(path)
        kept = f"kept what was written in {path}" if path is not None else "nothing could be kept"
        if error is not None and ok:
            return f"could not finish {writer.path} ({error.__cause__ or error}); {kept}"
        if error is not None and path is None:
            return f"{kept} ({error})"
        return kept

    def _back_off(self, t: float) -> float:
        self.failures += 1
        delay = self._delay
        self._retry_at = t + delay
        self._delay = min(self.retry_max, self._delay * 2)
        return delay

    def write(self, frame: OutputFrame) -> None:
        h, w = frame.image.shape[:2]
        t = frame.t_output
        if self._writer is not None and (
                (w, h) != self._size or (self.segment_seconds and t - self._t0 >= self.segment_seconds)):
            problem = self._finish()
            if problem:
                self._back_off(t)
                self.frames_lost += 1
                raise RuntimeError(f"{problem}; the next segment starts in {self._retry_at - t:g} s")
        if self._writer is None:
            if t < self._retry_at:
                self.frames_lost += 1
                return
            try:
                self._open(w, h, t)
            except Exception as exc:
                delay = self._back_off(t)
                self.frames_lost += 1
                raise RuntimeError(f"cannot start a segment in {self.folder} ({exc}); retrying in {delay:g} s") from exc
        pts = round((t - self._t0) * 1000)
        try:
            self._writer.write(frame.image, pts=pts)
        except Exception as exc:
            name = self._writer.path
            delay = self._back_off(t)
            self.frames_lost += 1
            kept = self._finish(ok=False)
            raise RuntimeError(f"writing {name} failed ({exc}); {kept}; a new segment starts in {delay:g} s") from exc
        self.frames_written += 1

    def status(self) -> str:
        """A short note for the stats line when something went wrong ('' otherwise)."""
        if not self.failures:
            return ""
        return f"files: {self.failures} failed, {self.frames_lost} frames lost, {len(self.partials)} partial kept"

    def close(self) -> None:
        problem = self._finish()
        if problem:
            self.failures += 1
            raise RuntimeError(problem)


# --------------------------------------------------------------------------------------------
# MJPEG over HTTP


class MJPEGServer:
    """Serves the output as ``multipart/x-mixed-replace`` JPEGs (what browsers, VLC and ffmpeg read
    as an MJPEG stream) on http://HOST:PORT/ (also /stream.mjpg), and the newest frame as
    /snapshot.jpg. Binds 127.0.0.1 unless told otherwise. Port 0 picks a free port (see ``port``)."""

    BOUNDARY = "styleidframe"

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, quality: int = 80) -> None:
        self.quality = int(quality)
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._closed = False
        self.clients = 0
        self._server = serve_http(host, port, self._handle, name="mjpeg")
        self.host, self.port = self._server.server_address[:2]
        log.info("MJPEG stream on http://%s:%d/", self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def write(self, frame: OutputFrame) -> None:
        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        with self._cond:
            self._jpeg, self._seq = buf.tobytes(), self._seq + 1
            self._cond.notify_all()

    def _next(self, last: int, timeout: float = 1.0) -> tuple[int, bytes | None]:
        with self._cond:
            if self._seq == last and not self._closed:
                self._cond.wait(timeout)
            return self._seq, self._jpeg

    def _handle(self, handler) -> None:
        path = handler.path.split("?", 1)[0]
        if path in ("/snapshot.jpg", "/snapshot"):
            seq, jpeg = self._next(0, timeout=5.0)
            if jpeg is None:
                handler.send_error(503, "no frame yet")
                return
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(len(jpeg)))
            handler.end_headers()
            handler.wfile.write(jpeg)
            return
        if path not in ("/", "/stream.mjpg", "/stream", "/video"):
            handler.send_error(404, "try / or /snapshot.jpg")
            return
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={self.BOUNDARY}")
        handler.send_header("Cache-Control", "no-cache, no-store")
        handler.send_header("Connection", "close")
        handler.end_headers()
        self.clients += 1
        last = 0
        try:
            while not self._closed:
                seq, jpeg = self._next(last)
                if jpeg is None or seq == last:
                    continue
                last = seq
                handler.wfile.write(f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                    f"Content-Length: {len(jpeg)}\r\n\r\n".encode())
                handler.wfile.write(jpeg)
                handler.wfile.write(b"\r\n")
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away
        finally:
            self.clients -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------------------------
# encoded network streams

STREAM_FORMATS = {"udp": "mpegts", "srt": "mpegts", "tcp": "mpegts", "rtp": "rtp_mpegts", "rtsp": "rtsp",
                  "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv"}
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}


def redact_url(url: str) -> str:
    """``url`` without user name, password and query (which may hold a passphrase): for logs and
    stats labels."""
    scheme, sep, rest = url.split("?", 1)[0].partition("://")
    if not sep:
        return url.split("?", 1)[0]
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rsplit('@', 1)[-1]}{slash}{path}"


def _with_query(url: str, key: str, value: str) -> str:
    """``url`` with ``key=value`` added to its query, unless it has ``key`` already."""
    query = url.split("?", 1)[1] if "?" in url else ""
    if any(part.split("=", 1)[0] == key for part in query.split("&") if part):
        return url
    return url + ("&" if "?" in url else "?") + f"{key}={value}"


def check_server(url: str, timeout: float) -> None:
    """Ask the server of ``url`` whether it answers, with Python sockets (which, unlike FFmpeg's
    connection set-up inside PyAV, let the other threads run while waiting): a TCP connection,
    then for rtsp:// an OPTIONS request and for rtmp:// the RTMP handshake. ConnectionError (an
    OSError) when it does not within ``timeout`` seconds."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or DEFAULT_PORTS.get(scheme)
    if scheme not in ("tcp", *DEFAULT_PORTS) or not parts.hostname or not port:
        return  # not over TCP (udp, srt), or nothing to check (FFmpeg reports the URL itself)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout) as raw:
            sock = raw
            if scheme in ("rtsps", "rtmps"):
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only: does it answer?
                sock = context.wrap_socket(raw, server_hostname=parts.hostname)
            if scheme.startswith("rtsp"):
                sock.sendall(f"OPTIONS {url.split('?', 1)[0]} RTSP/1.0\r\nCSeq: 1\r\n"
                             "User-Agent: styleid-edge\r\n\r\n".encode())
                if not sock.recv(16).startswith(b"RTSP/"):
                    raise ConnectionError("it does not answer as an RTSP server")
            elif scheme.startswith("rtmp"):
                sock.sendall(b"\x03" + bytes(1536))  # C0 + C1; S0 is the version byte
                if sock.recv(1)[:1] != b"\x03":
                    raise ConnectionError("it does not answer as an RTMP server")
    except TimeoutError:
        raise ConnectionError(f"no answer within {timeout:g} s") from None


class StreamSink:
    """Encodes the output as low-latency H.264 and sends it to ``url``: MPEG-TS over UDP
    (``udp://127.0.0.1:5000``: any player or ``styleid-edge live udp://...`` reads it) or TCP, or a
    push to a server (``rtsp://server:8554/name`` with ANNOUNCE/RECORD, e.g. MediaMTX; ``rtmp://``,
    ``srt://``). FFmpeg in the PyAV wheel has no RTSP *server* for output: to offer RTSP to
    several players, push to one. A keyframe every ``gop_seconds`` lets a late viewer start.

    The stream opens on the first frame (its size) and reopens when the size changes. When the
    connection fails, frames are skipped (counted in ``frames_skipped``) and it reconnects after a
    back-off delay; the error is raised once per failure so the pipeline counts it.

    ``timeout`` (seconds) bounds connecting and every send for tcp:// (FFmpeg's ``timeout``) and
    rtsp:// (its ``timeout``): a receiver that stops reading is dropped and reconnected. FFmpeg
    connects while holding Python's GIL (every thread waits), so after an attempt that ran into the
    time-out, and before every rtmp:// attempt (FFmpeg's RTMP client has no time-out PyAV can set),
    :func:`check_server` first checks from Python that the server answers. Writes may still block
    up to ``timeout``: run the sink behind a :class:`BackgroundSink` so the pipeline never waits.
    """

    def __init__(self, url: str, fps: float = 25.0, *, format: str | None = None, bitrate: str | None = None,
                 crf: int = 23, gop_seconds: float = 1.0, options: dict[str, str] | None = None,
                 retry_initial: float = 0.5, retry_max: float = 10.0, timeout: float = 2.0) -> None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        self.format = format or STREAM_FORMATS.get(scheme)
        if self.format is None:
            raise ValueError(f"cannot stream to {url!r}: use udp://HOST:PORT, tcp://, rtsp://, rtmp:// or srt:// "
                             "(or give the FFmpeg format)")
        self.scheme = scheme
        self.timeout = float(timeout)
        if scheme == "udp" and "pkt_size" not in url:
            url += ("&" if "?" in url else "?") + "pkt_size=1316"  # 7 TS packets: no IP fragmentation
        self.url = url
        self.name = redact_url(url)
        self._open_url = url
        if scheme == "tcp" and self.timeout > 0:  # connect and send time-out, in microseconds
            self._open_url = _with_query(url, "timeout", str(round(self.timeout * 1e6)))
        self.fps = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.bitrate, self.crf, self.gop_seconds = bitrate, crf, gop_seconds
        self.options = dict(options or {})
        if self.format == "rtsp":
            self.options.setdefault("rtsp_transport", "tcp")
            if self.timeout > 0:
                self.options.setdefault("timeout", str(round(self.timeout * 1e6)))  # socket I/O, microseconds
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.frames_written = 0
        self.frames_skipped = 0
        self.failures = 0
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self._t0 = 0.0
        self._last_pts = -1
        self._retry_at = 0.0
        self._delay = retry_initial
        self._sent = 0  # frames sent on the current connection
        self._suspect = scheme.startswith("rtmp")  # check the server from Python before FFmpeg connects

    def _open(self, width: int, height: int, t: float) -> None:
        import av

        if self._suspect and self.timeout > 0:
            check_server(self.url, self.timeout)
        container = av.open(self._open_url, mode="w", format=self.format, options=self.options)
        try:
            stream = container.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
            opts = {"preset": "ultrafast", "tune": "zerolatency",
                    "g": str(max(1, round(float(self.fps) * self.gop_seconds))), "bf": "0"}
            if self.bitrate:
                opts.update({"b": self.bitrate, "maxrate": self.bitrate, "bufsize": self.bitrate})
            else:
                opts["crf"] = str(self.crf)
            stream.options = opts
        except BaseException:
            container.close()
            raise
        self._container, self._stream = container, stream
        self._size, self._t0, self._last_pts, self._sent = (width, height), t, -1, 0

    def _close_stream(self, flush: bool) -> None:
        container, self._container = self._container, None
        stream, self._stream = self._stream, None
        if container is None:
            return
        try:
            if flush and stream is not None:
                for packet in stream.encode(None):
                    container.mux(packet)
        except Exception as exc:  # noqa: BLE001 - the peer may be gone
            log.debug("%s: flushing failed: %s", self.url, exc)
        try:
            container.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("%s: close failed: %s", self.url, exc)

    def write(self, frame: OutputFrame) -> None:
        from ..video import bgr_to_yuv_frame

        h, w = frame.image.shape[:2]
        now = frame.t_output
        if self._container is not None and (w, h) != self._size:
            self._close_stream(flush=True)
        started = time.monotonic()
        if self._container is None:
            if now < self._retry_at:
                self.frames_skipped += 1
                return
            try:
                self._open(w, h, now)
            except Exception as exc:
                self._failed(now, started)
                raise RuntimeError(f"cannot stream to {self.name}: {exc}; retrying in {self._delay:g} s") from exc
        image = frame.image
        if w % 2 or h % 2:
            image = cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        pts = max(self._last_pts + 1, round((now - self._t0) * 1000))
        yuv = bgr_to_yuv_frame(image)
        yuv.pts, yuv.time_base = pts, Fraction(1, 1000)
        try:
            for packet in self._stream.encode(yuv):
                self._container.mux(packet)  # connects (tcp, udp) on the first packet
        except Exception as exc:
            self._close_stream(flush=False)
            self._failed(now, started)
            raise RuntimeError(f"streaming to {self.name} failed: {exc}; reconnecting in {self._delay:g} s") from exc
        self._last_pts = pts
        self.frames_written += 1
        self._sent += 1
        if self._sent == 1:
            log.info("streaming %dx%d H.264 to %s (%s)", w, h, self.name, self.format)
        self._delay = self.retry_initial
        self._suspect = self.scheme.startswith("rtmp")

    def _failed(self, now: float, started: float) -> None:
        self.failures += 1
        self._retry_at = now + self._delay
        self._delay = min(self.retry_max, self._delay * 2)
        if self.timeout > 0 and time.monotonic() - started >= 0.5 * self.timeout:
            self._suspect = True  # it hung rather than refused: check it from Python before FFmpeg again

    def close(self) -> None:
        self._close_stream(flush=True)


class BackgroundSink:
    """Runs ``sink`` (a network stream, whose writes block while the receiver is slow, stalled or
    being reconnected) in a thread of its own, so the pipeline, the files and the MJPEG server never
    wait for it. ``write`` only queues the frame; with ``max_frames`` already waiting the oldest is
    dropped (``frames_dropped``). The sink's errors are raised from a later ``write``, once each, so
    the pipeline counts them. ``close`` lets the thread send what is queued and close the sink, for
    at most ``close_timeout`` seconds; a thread still stuck then is left behind (Python cannot stop
    it) and the program goes on."""

    def __init__(self, sink: Sink, max_frames: int = 8, close_timeout: float = 3.0) -> None:
        from collections import deque

        self.sink = sink
        self.max_frames = max(1, int(max_frames))
        self.close_timeout = float(close_timeout)
        self.frames_dropped = 0
        self.errors = 0
        self._queue: deque[OutputFrame] = deque()
        self._errors: deque[BaseException] = deque(maxlen=16)
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = 0.0
        self._done = threading.Event()
        self.label = f"{type(sink).__name__} {redact_url(getattr(sink, 'url', '') or '')}".strip()
        self._thread = threading.Thread(target=self._run, name=f"sink:{self.label}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str | None:
        return getattr(self.sink, "url", None)

    def write(self, frame: OutputFrame) -> None:
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self.max_frames:
                self._queue.popleft()
                self.frames_dropped += 1
            self._queue.append(frame)
            self._cond.notify()
            error = self._errors.popleft() if self._errors else None
        if error is not None:
            raise error

    def _next(self) -> OutputFrame | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            return self._queue.popleft() if self._queue else None

    def _run(self) -> None:
        try:
            while (frame := self._next()) is not None:
                try:
                    self.sink.write(frame)
                except Exception as exc:  # noqa: BLE001 - reported through write()
                    with self._cond:
                        self.errors += 1
                        self._errors.append(exc)
            self.sink.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: closing failed: %s", self.label, exc)
        finally:
            self._done.set()

    def request_close(self) -> None:
        """Stop taking frames; the thread sends what is queued, then closes the sink (no waiting)."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + self.close_timeout
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Wait for the thread (at most ``close_timeout`` s after :meth:`request_close`, or ``timeout``)."""
        self.request_close()
        wait = max(0.0, self._deadline - time.monotonic()) if timeout is None else timeout
        if not self._done.wait(wait):
            with self._cond:
                left = len(self._queue)
                self._queue.clear()
            log.warning("%s: still blocked after %.1f s (a stalled receiver?); leaving it behind, %d queued frames "
                        "not sent", self.label, self.close_timeout if timeout is None else timeout, left)

    def status(self) -> str:
        """A short note for the stats line when frames were dropped or sending failed ('' otherwise)."""
        failures = getattr(self.sink, "failures", self.errors)
        if not (self.frames_dropped or failures):
            return ""
        return f"{self.label}: {self.frames_dropped} frames dropped, {failures} failures"


# --------------------------------------------------------------------------------------------
# window


def check_gui() -> None:
    """Raise a RuntimeError that says what to do when no window can be shown: an OpenCV built
    without a GUI (opencv-python-headless), or no display to show it on."""
    info = cv2.getBuildInformation()
    gui = ""
    if "GUI:" in info:
        gui = info.split("GUI:", 1)[1].splitlines()[0].strip()
    if gui.upper() == "NONE":
        raise RuntimeError("--show needs an OpenCV with a GUI, but this one is built without (GUI: NONE, e.g. "
                           "opencv-python-headless): install opencv-python instead, or watch the output with "
                           "--serve-mjpeg 8080 and a browser")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("--show needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set (a headless "
                           "machine or an SSH session without -X): use --serve-mjpeg 8080 and a browser instead")


class WindowSink:
    """Shows the output in a window (needs an OpenCV build with a GUI: ``opencv-python``, not
    ``-headless``). Esc or q in the window calls ``on_quit``."""

    def __init__(self, title: str = "styleid-edge live", on_quit=None) -> None:
        self.title = title
        self.on_quit = on_quit
        check_gui()
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise RuntimeError(f"--show needs an OpenCV with a GUI ({exc.msg.strip()}); install opencv-python "
                               "instead of opencv-python-headless, or use --serve-mjpeg and a browser") from exc

    def write(self, frame: OutputFrame) -> None:
        cv2.imshow(self.title, frame.image)
        if cv2.waitKey(1) & 0xFF in (27, ord("q")) and self.on_quit is not None:
            self.on_quit()

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class MemorySink:
    """Keeps the last ``maxlen`` output frames (tests, embedding)."""

    def __init__(self, maxlen: int | None = None) -> None:
        from collections import deque

        self.frames: deque[OutputFrame] = deque(maxlen=maxlen)

    def write(self, frame: OutputFrame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass
