"""Bounded, ordered, threaded frame pipeline (decode | process | encode) and the progress bar.

Decoding and encoding run in their own threads, processing in the caller's thread (so Ctrl-C
lands there); bounded queues keep memory flat on long videos.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .video import Frame, ReadError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# progress


class Progress:
    """tqdm bar over frames, with frames/s (tqdm's rate) and faces/s (from ``update(faces=n)``).

    ``quiet`` disables it. While the bar shows, log lines print above it instead of through it. When
    stderr is not a terminal (a log file, a service) there is no bar: a progress line is logged every
    ``log_interval`` seconds instead, and one at the end."""

    def __init__(self, total: int | None = None, quiet: bool = False, desc: str = "anonymizing",
                 min_postfix_interval: float = 0.5, log_interval: float = 30.0) -> None:
        self.frames = 0
        self.faces = 0
        self.total = total or None
        self.desc = desc
        self._start = time.perf_counter()
        self._last_postfix = 0.0
        self._interval = min_postfix_interval
        self._lock = threading.Lock()
        tty = sys.stderr.isatty()
        self._log_interval = None if quiet or tty else log_interval
        self._last_log = self._start
        self._bar = tqdm(total=self.total, disable=quiet or not tty, desc=desc, unit="frame", dynamic_ncols=True)
        self._redirect = None
        if not self._bar.disable:
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def _faces_per_s(self) -> str:
        return f"{self.faces / max(self.elapsed, 1e-9):.1f} faces/s"

    def _line(self) -> str:
        of = f"/{self.total}" if self.total else ""
        return (f"{self.desc}: {self.frames}{of} frames in {self.elapsed:.0f} s, "
                f"{self.frames / max(self.elapsed, 1e-9):.1f} frames/s, {self._faces_per_s()}")

    def update(self, frames: int = 1, faces: int = 0) -> None:
        with self._lock:
            self.frames += frames
            self.faces += faces
            if frames:
                self._bar.update(frames)
            now = time.perf_counter()
            if now - self._last_postfix >= self._interval:
                self._last_postfix = now
                self._bar.set_postfix_str(self._faces_per_s(), refresh=False)
            if self._log_interval is not None and now - self._last_log >= self._log_interval:
                self._last_log = now
                log.info("%s", self._line())

    def close(self) -> None:
        with self._lock:
            self._bar.set_postfix_str(self._faces_per_s(), refresh=False)
            self._bar.close()
            if self._redirect is not None:
                self._redirect.__exit__(None, None, None)
                self._redirect = None
            if self._log_interval is not None:
                self._log_interval = None
                log.info("%s", self._line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# threaded pipeline


class FrameSink(Protocol):
    def write(self, image: np.ndarray, pts: int | None = None) -> None: ...


@dataclass
class PipelineStats:
    frames_in: int = 0
    frames_out: int = 0
    seconds: float = 0.0
    max_in_flight: int = 0  # most frames decoded but not yet encoded at once
    read_errors: list[ReadError] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds else 0.0


_END = object()


class _Stop(Exception):
    """Another stage failed; this one stops quietly."""


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> object:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            continue


def run_threaded(
    reader: Iterable[Frame],
    process_fn: Callable[[Frame], np.ndarray],
    writer: FrameSink | None,
    queue_size: int = 8,
    progress: Progress | None = None,
) -> PipelineStats:
    """Decode (thread), ``process_fn`` (the calling thread, so Ctrl-C lands there), encode
    (thread), joined by bounded queues: at most about ``2 * queue_size + 3`` frames exist at once,
    so memory stays flat on long videos. Frame order is kept.

    The first exception from any stage (KeyboardInterrupt included) stops decoding and is re-raised
    here. Frames already processed are still written first, so an interrupted run's partial output
    holds everything processed (a second Ctrl-C while draining stops at once). What happens to the
    output file is the writer's decision (see :meth:`VideoWriter.close`).
    """
    if queue_size < 1:
        raise ValueError("queue_size must be at least 1")
    to_process: queue.Queue = queue.Queue(maxsize=queue_size)
    to_encode: queue.Queue = queue.Queue(maxsize=queue_size)
    upstream_stop = threading.Event()  # decoding and processing stop
    encode_stop = threading.Event()  # the encoder stops without draining
    failures: list[BaseException] = []
    stats = PipelineStats()
    lock = threading.Lock()
    in_flight = 0
    start = time.perf_counter()

    def fail(exc: BaseException) -> None:
        with lock:
            failures.append(exc)
        upstream_stop.set()

    def decode() -> None:
        nonlocal in_flight
        iterator = iter(reader)
        try:
            for frame in iterator:
                with lock:
                    stats.frames_in += 1
                    in_flight += 1
                    stats.max_in_flight = max(stats.max_in_flight, in_flight)
                _put(to_process, frame, upstream_stop)
            _put(to_process, _END, upstream_stop)
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            fail(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001
                    log.debug("closing the frame source failed: %s", exc)

    def encode() -> None:
        nonlocal in_flight
        try:
            while True:
                item = _get(to_encode, encode_stop)
                if item is _END:
                    return
                frame, image = item  # type: ignore[misc]
                if writer is not None:
                    writer.write(image, pts=frame.pts)
                with lock:
                    stats.frames_out += 1
                    in_flight -= 1
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001
            fail(exc)
            encode_stop.set()

    decoder = threading.Thread(target=decode, name="video-decode", daemon=True)
    encoder = threading.Thread(target=encode, name="video-encode", daemon=True)
    decoder.start()
    encoder.start()
    try:
        try:
            while True:
                item = _get(to_process, upstream_stop)
                if item is _END:
                    break
                frame: Frame = item  # type: ignore[assignment]
                image = process_fn(frame)
                if image is None:
                    raise ValueError("process_fn returned None; it must return the frame to write (BGR uint8)")
                _put(to_encode, (frame, image), encode_stop)
                if progress is not None:
                    progress.update(frames=1)
        except _Stop:
            pass
        except BaseException as exc:
            fail(exc)
        # Let the encoder write what was processed, then end it.
        try:
            _put(to_encode, _END, encode_stop)
        except _Stop:
            pass
        while encoder.is_alive():
            encoder.join(timeout=0.1)
    except BaseException as exc:  # e.g. a second Ctrl-C while draining
        fail(exc)
        encode_stop.set()
    finally:
        upstream_stop.set()
        for thread in (decoder, encoder):
            while thread.is_alive():
                thread.join(timeout=0.1)
    stats.seconds = time.perf_counter() - start
    stats.read_errors = list(getattr(reader, "errors", []))
    if failures:
        raise failures[0]
    return stats
