"""Where anonymized live frames go: segmented files, an MJPEG HTTP stream, an encoded network
stream (MPEG-TS over UDP, or a push to an RTSP/RTMP/SRT server), a window.

A sink gets every output frame (:class:`OutputFrame`, already anonymized or a "no signal" card)
through ``write`` and is finished by ``close``. Sinks never see a raw input frame.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..video import VideoInfo, VideoWriter
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


class SegmentedFileSink:
    """H.264 files of ``segment_seconds`` each (0: one file for the whole run).

    ``target`` is a folder (segments ``live_YYYYmmdd-HHMMSS_00001.mp4`` inside) or a file name
    (``name_00001.mp4`` next to it). A segment is written to a hidden temporary file and gets its
    name only when finished (rotation or ``close``), so a crash loses at most the current segment.
    Timestamps are output wall-clock times, so dropped frames and no-signal gaps keep real time.
    A frame of another size starts a new segment.
    """

    def __init__(self, target: str | Path, segment_seconds: float = 60.0, fps: float = 25.0, crf: int = 23,
                 preset: str | None = "veryfast") -> None:
        target = Path(target)
        if target.suffix.lower() in VIDEO_SUFFIXES:
            self.folder, self.stem, self.suffix = target.parent, target.stem, target.suffix
        else:
            self.folder, self.stem, self.suffix = target, None, ".mp4"
        self.folder.mkdir(parents=True, exist_ok=True)
        if segment_seconds < 0:
            raise ValueError(f"segment_seconds must be >= 0 (0: one file), got {segment_seconds}")
        self.segment_seconds = float(segment_seconds)
        self.fps = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.crf = crf
        self.preset = preset
        self.segments: list[Path] = []  # finished segment files
        self.frames_written = 0
        self._writer: VideoWriter | None = None
        self._t0 = 0.0
        self._size: tuple[int, int] | None = None
        self._count = 0
        self._run_tag = time.strftime("%Y%m%d-%H%M%S")

    def _name(self) -> Path:
        self._count += 1
        if self.stem is not None:
            name = f"{self.stem}_{self._count:05d}{self.suffix}" if self.segment_seconds else f"{self.stem}{self.suffix}"
        else:
            name = f"live_{self._run_tag}_{self._count:05d}{self.suffix}"
        return self.folder / name

    def _open(self, width: int, height: int, t: float) -> None:
        info = VideoInfo(path=Path("live"), width=width, height=height, fps=self.fps, time_base=Fraction(1, 1000),
                         frame_count=0, frame_count_exact=False, duration=0.0, start_time=0.0, rotation=0,
                         codec="rawvideo", pix_fmt="yuv420p", container_format="live", has_audio=False)
        self._writer = VideoWriter(self._name(), info, crf=self.crf, preset=self.preset)
        self._t0, self._size = t, (width, height)

    def _finish(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if writer.frames_written == 0:
            writer.abort()
            return
        path = writer.close(ok=True)
        if path is not None:
            self.segments.append(path)
            log.info("segment finished: %s (%d frames)", path, writer.frames_written)

    def write(self, frame: OutputFrame) -> None:
        h, w = frame.image.shape[:2]
        t = frame.t_output
        if self._writer is not None and (
                (w, h) != self._size or (self.segment_seconds and t - self._t0 >= self.segment_seconds)):
            self._finish()
        if self._writer is None:
            self._open(w, h, t)
        pts = round((t - self._t0) * 1000)
        self._writer.write(frame.image, pts=pts)
        self.frames_written += 1

    def close(self) -> None:
        self._finish()


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


class StreamSink:
    """Encodes the output as low-latency H.264 and sends it to ``url``: MPEG-TS over UDP
    (``udp://127.0.0.1:5000``: any player or ``styleid-edge live udp://...`` reads it), or a push
    to a server (``rtsp://server:8554/name`` with ANNOUNCE/RECORD, e.g. MediaMTX; ``rtmp://``,
    ``srt://``). FFmpeg in the PyAV wheel has no RTSP *server* for output: to offer RTSP to
    several players, push to one. A keyframe every ``gop_seconds`` lets a late viewer start.

    The stream opens on the first frame (its size) and reopens when the size changes. When the
    connection fails, frames are skipped (counted in ``frames_skipped``) and it reconnects after a
    back-off delay; the error is raised once per failure so the pipeline counts it.
    """

    def __init__(self, url: str, fps: float = 25.0, *, format: str | None = None, bitrate: str | None = None,
                 crf: int = 23, gop_seconds: float = 1.0, options: dict[str, str] | None = None,
                 retry_initial: float = 0.5, retry_max: float = 10.0) -> None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        self.format = format or STREAM_FORMATS.get(scheme)
        if self.format is None:
            raise ValueError(f"cannot stream to {url!r}: use udp://HOST:PORT, rtsp://, rtmp:// or srt:// "
                             "(or give the FFmpeg format)")
        if scheme == "udp" and "pkt_size" not in url:
            url += ("&" if "?" in url else "?") + "pkt_size=1316"  # 7 TS packets: no IP fragmentation
        self.url = url
        self.fps = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.bitrate, self.crf, self.gop_seconds = bitrate, crf, gop_seconds
        self.options = dict(options or {})
        if self.format == "rtsp":
            self.options.setdefault("rtsp_transport", "tcp")
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

    def _open(self, width: int, height: int, t: float) -> None:
        import av

        container = av.open(self.url, mode="w", format=self.format, options=self.options)
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
        self._size, self._t0, self._last_pts = (width, height), t, -1
        log.info("streaming %dx%d H.264 to %s (%s)", width, height, self.url, self.format)

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
        if self._container is None:
            if now < self._retry_at:
                self.frames_skipped += 1
                return
            try:
                self._open(w, h, now)
            except Exception as exc:
                self._failed(now)
                raise RuntimeError(f"cannot stream to {self.url}: {exc}; retrying in {self._delay:g} s") from exc
        image = frame.image
        if w % 2 or h % 2:
            image = cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        pts = max(self._last_pts + 1, round((now - self._t0) * 1000))
        yuv = bgr_to_yuv_frame(image)
        yuv.pts, yuv.time_base = pts, Fraction(1, 1000)
        try:
            for packet in self._stream.encode(yuv):
                self._container.mux(packet)
        except Exception as exc:
            self._close_stream(flush=False)
            self._failed(now)
            raise RuntimeError(f"streaming to {self.url} failed: {exc}; reconnecting in {self._delay:g} s") from exc
        self._last_pts = pts
        self.frames_written += 1
        self._delay = self.retry_initial

    def _failed(self, now: float) -> None:
        self.failures += 1
        self._retry_at = now + self._delay
        self._delay = min(self.retry_max, self._delay * 2)

    def close(self) -> None:
        self._close_stream(flush=True)


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
