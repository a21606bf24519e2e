"""Frame sources for live runs, and :class:`Capture`, the thread that reads one with reconnects.

A source is opened, read frame by frame, and closed. ``read`` returns a BGR uint8 frame, or None
at the end of a finite stream (a file played once); it raises :class:`SourceError` (or any
exception) when the source died. :class:`Capture` turns that into a stream that never blocks the
consumer: it keeps only the newest frame (older ones are dropped and counted), reconnects with
exponential back-off, and reports its state so the scheduler can show "no signal" meanwhile.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
NEEDS_PORT = ("udp", "tcp", "srt", "rtp")  # FFmpeg has no default port for these
CONNECTIONLESS = ("udp", "rtp")  # nothing answers: a silent sender looks like no data at all
CAMERA_PATHS = ("/dev/video", "/dev/v4l/")


class SourceError(RuntimeError):
    """A source could not be opened or stopped delivering frames."""


class FrameSource(Protocol):
    name: str

    def open(self) -> float | None:
        """Open (or reopen) the source; returns its nominal frame rate when known."""

    def read(self) -> np.ndarray | None:
        """Next BGR uint8 frame; None at the end of a finite stream; raises when the source died."""

    def close(self) -> None: ...

    def clone(self) -> FrameSource:
        """A fresh, unopened source reading the same thing (optional; the watchdog needs it)."""

    def step_timeout(self, step: str) -> float | None:
        """Optional: how long ``open`` or ``read`` (``step``) may block by the source's own time-out
        before it gives up by itself (math.inf: it may legitimately wait for ever, e.g. listening
        without a time-out; None: it has no time-out of its own). The watchdog never calls a step
        stuck before that, and a restart waits for the abandoned step to give up."""


# --------------------------------------------------------------------------------------------
# sources


class FileSource:
    """A video file played at its own frame rate (real-time pacing), once or looped."""

    def __init__(self, path: str | Path, *, loop: bool = False, realtime: bool = True) -> None:
        from ..video import probe

        self.path = Path(path)
        self.name = str(self.path)
        self.info = probe(self.path)  # raises VideoError with a hint for missing / broken files
        self.loop = loop
        self.realtime = realtime
        self._frames = None
        self._reader = None
        self._t0 = 0.0
        self._first_time: float | None = None

    def clone(self) -> FileSource:
        """A fresh, unopened copy (the watchdog reopens a stuck source through it)."""
        return FileSource(self.path, loop=self.loop, realtime=self.realtime)

    def open(self) -> float | None:
        from ..video import VideoReader

        self.close()
        self._reader = VideoReader(self.path)
        self._frames = iter(self._reader)
        self._t0 = time.monotonic()
        self._first_time = None
        return float(self.info.fps) if self.info.fps else None

    def read(self) -> np.ndarray | None:
        if self._frames is None:
            raise SourceError(f"{self.name}: read() before open()")
        frame = next(self._frames, None)
        if frame is None:
            if not self.loop:
                return None
            self.open()
            frame = next(self._frames, None)
            if frame is None:
                return None
        if self.realtime:
            t = frame.time if frame.time is not None else frame.index / float(self.info.fps or 25)
            if self._first_time is None:
                self._first_time, self._t0 = t, time.monotonic()
            wait = self._t0 + (t - self._first_time) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        return frame.image

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = self._frames = None


class AVSource:
    """A network stream or device read with PyAV (FFmpeg): RTSP/RTMP/HTTP/UDP/SRT URLs, or a
    V4L2 device with ``format='v4l2'``. Damaged packets are skipped (counted); many in a row, a
    read timeout, or the end of the stream count as the source dying (the capture reconnects).

    ``timeout`` bounds each blocking FFmpeg step (connecting, probing, one read). A listening RTSP
    source (``rtsp_flags=listen``) waits for the camera with FFmpeg's ``listen_timeout`` (seconds;
    absent or -1: for ever) instead."""

    def __init__(self, url: str, *, options: dict[str, str] | None = None, format: str | None = None,
                 timeout: float = 5.0, max_bad_packets: int = 100) -> None:
        self.url = url
        self.name = url
        self.scheme = check_url(url)
        self.format = format
        self.timeout = timeout
        self.max_bad_packets = max_bad_packets
        self.options = dict(options or {})
        if url.startswith(("rtsp://", "rtsps://")):
            self.options.setdefault("rtsp_transport", "tcp")
        self.bad_packets = 0
        self._container = None
        self._frames = None

    def clone(self) -> AVSource:
        return AVSource(self.url, options=self.options, format=self.format, timeout=self.timeout,
                        max_bad_packets=self.max_bad_packets)

    @property
    def listening(self) -> bool:
        """It waits for a sender to connect (RTSP ``rtsp_flags=listen``, or ``listen=1``)."""
        return "listen" in str(self.options.get("rtsp_flags", "")) or self.options.get("listen") == "1"

    def listen_seconds(self) -> float | None:
        """How long one ``open`` of a listening RTSP source waits for a camera (None: for ever)."""
        try:
            seconds = float(self.options.get("listen_timeout", -1))
        except ValueError:
            return None
        return seconds if seconds >= 0 and self.scheme in ("rtsp", "rtsps") else None

    def step_timeout(self, step: str) -> float | None:
        if step == "read":
            return self.timeout
        if self.listening:  # the wait for the camera, then its handshake and the stream probe
            wait = self.listen_seconds()
            return math.inf if wait is None else wait + self.timeout
        return 2 * self.timeout  # connect (or first data), then the stream probe: each bounded by timeout

    def open(self) -> float | None:
        import av

        from ..video import yuv_frame_to_bgr

        self.close()
        # Listening (rtsp_flags=listen) waits with FFmpeg's own listen_timeout, with no open timeout from
        # PyAV: its interrupt callback takes the GIL, which a pusher in this process (tests) may hold
        # through the handshake (a deadlock). Reads get the time-out either way.
        open_timeout = None if self.listening else self.timeout
        try:
            self._container = av.open(self.url, mode="r", format=self.format, options=self.options,
                                      timeout=(open_timeout, self.timeout), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(self._open_failure(exc)) from None
        if not self._container.streams.video:
            self.close()
            raise SourceError(f"{self.url} has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._frames = self._decode(stream, _reformatter(), yuv_frame_to_bgr)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return float(rate) if rate else None

    def _open_failure(self, exc: Exception) -> str:
        """What a failed ``open`` means, in words that say what happened and what to check."""
        import av

        code = getattr(exc, "errno", None)
        if code == errno.EADDRINUSE:
            return (f"cannot listen on {self.url}: the address is in use by another program (or by a capture of "
                    "this one that has not let go of it yet); choose another port or stop the program using it")
        if self.listening and (code == errno.ETIMEDOUT or isinstance(exc, TimeoutError)):
            wait = self.listen_seconds()
            return (f"no camera connected to the listening address {self.url}"
                    + (f" in {wait:g} s" if wait is not None else "")
                    + " (point the camera's or encoder's RTSP push at this address)")
        if isinstance(exc, av.error.ExitError):  # our own open time-out interrupted FFmpeg
            if self.scheme in CONNECTIONLESS:
                return (f"no data received on {self.url} in {self.timeout:g} s: check that the sender is running "
                        "and sends to this address and port")
            return f"{self.url} did not answer within {self.timeout:g} s; check the address and that the stream is up"
        return f"cannot open {self.url}: {exc}; check the address and that the stream is up"

    def _decode(self, stream, reformatter, to_bgr):
        """BGR frames of ``stream``; skips damaged packets, raises SourceError when it times out or
        too many packets in a row are bad."""
        import av

        bad = 0
        demuxer = self._container.demux(stream)
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                return
            except av.error.ExitError:  # the read time-out interrupted FFmpeg: nothing came
                raise SourceError(f"no data received from {self.url} in {self.timeout:g} s") from None
            except av.error.FFmpegError as exc:
                bad += 1
                self.bad_packets += 1
                if bad > self.max_bad_packets:
                    raise SourceError(f"{self.url}: {bad} read errors in a row ({exc})") from None
                demuxer = self._container.demux(stream)
                continue
            try:
                decoded = stream.decode(packet)
            except av.error.FFmpegError as exc:  # malformed packet: skip it
                bad += 1
                self.bad_packets += 1
                log.debug("%s: skipped a damaged packet: %s", self.url, exc)
                if bad > self.max_bad_packets:
                    raise SourceError(f"{self.url}: {bad} damaged packets in a row") from None
                continue
            bad = 0
            for f in decoded:
                yield to_bgr(f, reformatter)

    def read(self) -> np.ndarray | None:
        if self._frames is None:
            raise SourceError(f"{self.url}: read() before open()")
        frame = next(self._frames, None)
        if frame is None:  # a live stream that ends has died: reconnect
            raise SourceError(f"{self.url}: the stream ended")
        return frame

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead stream
                log.debug("%s: close failed: %s", self.url, exc)
        self._container = self._frames = None


def _reformatter():
    try:
        from av.video.reformatter import VideoReformatter
    except ImportError:  # pragma: no cover
        return None
    return VideoReformatter()


def check_url(url: str) -> str:
    """The URL's scheme (lower case); raises SourceError for a port outside 1-65535, or a missing
    port where FFmpeg has no default (udp://, tcp://, srt://, rtp://)."""
    scheme = url.split("://", 1)[0].lower()
    raw = url_port(url)
    example = f"e.g. {scheme}://127.0.0.1:5000"
    if raw is None:
        if scheme in NEEDS_PORT:
            raise SourceError(f"{url} has no port; give the one the stream is sent to, {example}")
        return scheme
    if not raw.isdigit():
        raise SourceError(f"{url}: port {raw!r} is not a number from 1 to 65535; give the port the stream uses, "
                          f"{example}")
    if not 1 <= int(raw) <= 65535:
        raise SourceError(f"{url}: port {int(raw)} is outside 1-65535; give the port the stream uses, {example}")
    return scheme


def url_port(url: str) -> str | None:
    """The port part of ``url`` as written (None when there is none); ``[::1]:5000`` style hosts work."""
    hostport = urlsplit(url).netloc.rpartition("@")[2]
    _, colon, raw = hostport.rpartition(":")
    if not colon or "]" in raw or not raw:
        return None
    return raw


class CameraSource:
    """A local camera (index like ``0`` or a device path like ``/dev/video0``) via OpenCV."""

    def __init__(self, device: int | str) -> None:
        self.device = device
        self.name = f"camera {device}"
        self._cap = None

    def clone(self) -> CameraSource:
        return CameraSource(self.device)

    def open(self) -> float | None:
        import cv2

        self.close()
        if isinstance(self.device, str) and not Path(self.device).exists():
            raise SourceError(f"cannot open {self.name}: {self.device} does not exist (camera unplugged?); "
                              "list the cameras with `ls /dev/video*`")
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}: check that it is plugged in, not used by another "
                              "program, and that you may read it (group 'video')")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        return float(fps) if fps and 1.0 <= fps <= 240.0 else None

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read() before open()")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise SourceError(f"{self.name}: no frame (camera unplugged or stopped)")
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None


def source_kind(spec: str, *, require_device: bool = False) -> str:
    """What a command-line source string is, "camera", "url" or "file", checked without opening it
    (so a typo is refused before any model loads): SourceError for an unsupported scheme, a bad port,
    a missing file, or (``require_device``) a device path that does not exist now; a camera index is
    never checked (the capture keeps retrying until it appears)."""
    spec = str(spec)
    if re.fullmatch(r"\d+", spec):
        return "camera"
    if spec.startswith(CAMERA_PATHS):
        if require_device and not Path(spec).exists():
            raise SourceError(f"camera device {spec} does not exist; list the cameras with `ls /dev/video*` "
                              "(or give a camera index such as 0, which is waited for until it appears)")
        return "camera"
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in URL_SCHEMES:
        check_url(spec)
        return "url"
    if scheme:
        raise SourceError(f"unsupported source scheme {scheme!r} in {spec!r}; use one of "
                          f"{', '.join(URL_SCHEMES)}, a camera index, or a file")
    if not Path(spec).exists():
        raise SourceError(f"source {spec!r} is neither a camera index, a /dev/video device, a URL nor an "
                          "existing file; check the spelling")
    return "file"


def open_source(spec: str, *, loop: bool = False, options: dict[str, str] | None = None,
                require_device: bool = False) -> FrameSource:
    """A source from a command-line string: a camera index (``0``), a device path (``/dev/video0``),
    a stream URL (rtsp://, http://, udp://, ...) or a video file (played in real time); checked as
    :func:`source_kind` says."""
    spec = str(spec)
    kind = source_kind(spec, require_device=require_device)
    if kind == "camera":
        return CameraSource(int(spec) if spec.isdigit() else spec)
    if kind == "url":
        return AVSource(spec, options=options)
    return FileSource(Path(spec), loop=loop)


# --------------------------------------------------------------------------------------------
# capture thread


@dataclass
class Captured:
    image: np.ndarray
    seq: int  # 0-based count of frames read from the source (dropped ones included)
    t_capture: float  # time.monotonic() when the frame was read
    generation: int  # connection number (1 = first connection): a new one restarts tracking


@dataclass
class Backoff:
    """Reconnect delays: ``initial``, doubled after each failed attempt, capped at ``maximum``;
    reset after a connection that delivered frames."""

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0

    def delays(self):
        d = self.initial
        while True:
            yield d
            d = min(self.maximum, d * self.factor)


HANDOVER_MARGIN = 1.0  # s a restarted capture waits beyond the abandoned step's own time-out
HANDOVER_MAX = 30.0  # s it waits at most for a step that may wait for ever (listening, no time-out)


@dataclass
class _Abandoned:
    """A capture thread left behind by a restart, and until when its successor waits for it."""

    thread: threading.Thread
    deadline: float


class Capture:
    """Reads ``source`` in a thread and keeps only its newest frame.

    ``get(timeout)`` returns the newest frame not yet taken (or None); a frame that is replaced
    before it is taken is dropped and counted in ``dropped`` — the input side drops, it never
    queues. On errors the source is closed and reopened after a back-off delay; ``state`` is
    'connecting', 'live', 'reconnecting', 'ended' (finite stream done) or 'stopped'.

    It is a watchdog stage: ``stuck_for`` says how long the thread has been inside one ``open``
    or ``read``, and ``own_timeout`` how long that step may take by the source's own time-out
    (waiting for a camera to connect is not being stuck: the watchdog waits at least that long).
    ``restart`` abandons that thread (a blocked read cannot be interrupted) and reads a fresh copy
    of the source (``source.clone()``) in a new one, which first waits for the abandoned step to
    give up by its own time-out, so that the old thread has let go of the port a listening source
    binds before the new one binds it.
    """

    def __init__(self, source: FrameSource, backoff: Backoff | None = None, *, reconnect: bool = True) -> None:
        self.source = source
        self.name = f"capture {source.name}"
        self.backoff = backoff or Backoff()
        self.reconnect = reconnect
        self.state = "connecting"
        self.fps: float | None = None
        self.frames_read = 0
        self.dropped = 0
        self.reconnects = 0  # successful reopenings after the first connection
        self.restarts = 0  # watchdog restarts (a stuck open/read abandoned)
        self.errors: list[str] = []
        self.generation = 0
        self.last_frame_time: float | None = None
        self._cond = threading.Condition()
        self._latest: Captured | None = None
        self._stop = threading.Event()
        self._started = False
        self._token = 0
        self._busy_step: str | None = None  # 'open' or 'read' while inside source.open()/read() ...
        self._busy_since: float | None = None  # ... since then
        self._thread = self._make_thread()

    def _make_thread(self, previous: _Abandoned | None = None) -> threading.Thread:
        return threading.Thread(target=self._run, args=(self._token, self.source, previous),
                                name=f"capture:{self.source.name}", daemon=True)

    def start(self) -> Capture:
        """Start reading (once; later calls do nothing)."""
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if not self._started:
            self.state = "stopped"
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: capture thread did not stop within %.0f s (blocked in a read); leaving it",
                        self.source.name, timeout)
        if self.state != "ended":
            self.state = "stopped"

    @property
    def finished(self) -> bool:
        return self.state in ("ended", "stopped") and self._latest is None

    def get(self, timeout: float) -> Captured | None:
        with self._cond:
            if self._latest is None and self.state not in ("ended", "stopped"):
                self._cond.wait(timeout)
            item, self._latest = self._latest, None
            return item

    # -- watchdog stage ---------------------------------------------------------------------------
    def stuck_for(self, now: float) -> float:
        since = self._busy_since
        if since is None or self._stop.is_set() or self.state in ("ended", "stopped"):
            return 0.0
        return now - since

    def own_timeout(self) -> float:
        """Seconds the step in progress (open or read) may block by the source's own time-out before
        it gives up by itself (math.inf: it may wait for ever; 0: none known, or not inside a step)."""
        step, probe = self._busy_step, getattr(self.source, "step_timeout", None)
        if step is None or probe is None:
            return 0.0
        try:
            value = probe(step)
        except Exception as exc:  # noqa: BLE001 - a broken probe must not break the watchdog
            log.debug("%s: step_timeout(%r) failed: %s", self.source.name, step, exc)
            return 0.0
        return float(value) if value else 0.0

    def restart(self, reason: str) -> None:
        clone = getattr(self.source, "clone", None)
        if clone is None:
            raise RuntimeError(f"{self.source.name} cannot be reopened by the watchdog (no clone())")
        fresh = clone()
        with self._cond:
            if self._stop.is_set():
                return
            previous = self._abandon(time.monotonic())
            self._token += 1
            self.source = fresh
            self._busy_since = self._busy_step = None
            self.restarts += 1
            self.state = "reconnecting"
            self._thread = self._make_thread(previous)
            self._cond.notify_all()
        log.error("%s: capture restarted by the watchdog (%s)", fresh.name, reason)
        self._thread.start()

    def _abandon(self, now: float) -> _Abandoned | None:
        """The thread a restart leaves behind, if its successor should wait for it: a step with an own
        time-out gives up by itself (and lets go of its socket) by then; one without may never return."""
        own = self.own_timeout()
        since = self._busy_since
        if not own or since is None or not self._thread.is_alive():
            return None
        left = min(max(0.0, since + own - now), HANDOVER_MAX)
        return _Abandoned(self._thread, now + left + HANDOVER_MARGIN)

    # -- capture thread ---------------------------------------------------------------------------
    def _current(self, token: int) -> bool:
        return token == self._token and not self._stop.is_set()

    def _await_previous(self, previous: _Abandoned, token: int) -> None:
        """Wait until the abandoned thread has let go of the source (or its time is up)."""
        while previous.thread.is_alive() and self._current(token):
            left = previous.deadline - time.monotonic()
            if left <= 0:
                log.warning("%s: the abandoned capture thread has not let go of the source; opening anyway",
                            self.source.name)
                return
            previous.thread.join(min(0.1, left))

    def _put(self, image: np.ndarray, token: int) -> None:
        now = time.monotonic()
        with self._cond:
            if token != self._token:
                return  # an abandoned thread came back: its frame is not shown
            if self._latest is not None:
                self.dropped += 1
            self._latest = Captured(image, self.frames_read, now, self.generation)
            self.frames_read += 1
            self.last_frame_time = now
            self._cond.notify_all()

    def _set_state(self, state: str, token: int) -> None:
        with self._cond:
            if token == self._token:
                self.state = state
                self._cond.notify_all()

    def _busy(self, token: int, step: str | None) -> None:
        """Mark the thread as inside ``step`` ('open', 'read') from now, or (None) outside any."""
        if token != self._token:
            return
        if step is None:
            self._busy_since = None
            self._busy_step = None
        else:
            self._busy_step = step
            self._busy_since = time.monotonic()

    def _run(self, token: int, source: FrameSource, previous: _Abandoned | None = None) -> None:
        if previous is not None:
            self._await_previous(previous, token)
        delays = self.backoff.delays()
        while self._current(token):
            self._busy(token, "open")
            try:
                fps = source.open()
            except Exception as exc:  # noqa: BLE001 - any failure to open: wait and retry
                self._busy(token, None)
                if not self._current(token):
                    break
                self._failed(f"open: {exc}", token)
                if not self.reconnect or self._stop.wait(next(delays)):
                    break
                continue
            self._busy(token, None)
            if not self._current(token):
                break
            with self._cond:
                self.fps = fps or self.fps
                self.generation += 1
                generation = self.generation
            if generation > 1:
                self.reconnects += 1
                log.warning("%s: reconnected (attempt %d)", source.name, self.reconnects)
            self._set_state("live", token)
            got = 0
            try:
                while self._current(token):
                    self._busy(token, "read")
                    image = source.read()
                    if image is None:
                        self._busy(token, None)
                        self._close_source(source)
                        self._set_state("ended", token)
                        return
                    self._put(image, token)
                    got += 1
            except Exception as exc:  # noqa: BLE001 - source died: reconnect
                if self._current(token):
                    self._failed(f"read: {exc}", token)
            self._busy(token, None)
            self._close_source(source)
            if not self._current(token):
                return
            if got:
                delays = self.backoff.delays()  # it worked for a while: start back-off afresh
            if not self.reconnect:
                break
            if self._stop.wait(next(delays)):
                break
        self._busy(token, None)
        self._close_source(source)
        if token == self._token and self.state != "ended":
            self._set_state("stopped", token)

    def _failed(self, message: str, token: int) -> None:
        self.errors.append(message)
        del self.errors[:-50]  # keep memory flat over long runs
        log.warning("%s: %s; reconnecting with back-off", self.source.name, message)
        self._set_state("reconnecting", token)

    def _close_source(self, source: FrameSource) -> None:
        try:
            source.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("%s: close failed: %s", source.name, exc)
