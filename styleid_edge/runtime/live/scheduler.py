"""The deadline scheduler: capture → locate faces → anonymize under a deadline → sinks.

Per frame, on the pipeline thread:

1. take the newest captured frame (the capture keeps one; older frames are dropped there, so the
   input never queues); a frame older than ``max_age_ms`` is skipped as stale;
2. **locate** faces (detection + tracking) synchronously: this is what must never be skipped;
3. **render** (the generative method) in a worker thread, with ``budget_ms`` to finish. If it
   does not, the frame is output with every located face pixelated (``late``), and while that late
   job still runs, following frames are pixelated at once (``busy``) instead of waiting. A render
   that raises also falls back to pixelation. So every output frame has every located face either
   regenerated or pixelated — never raw — and capture→output latency is bounded by about one input
   frame interval + locate time + budget + sink time (measured: ``LiveStats.latency_ms``);
4. hand the frame to every sink. While the source is down (or sends nothing for
   ``no_signal_after_ms``), "no signal" cards are output at the stream's rate instead — never a
   stale raw frame.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from .engine import LiveEngine
from .sinks import OutputFrame, Sink, no_signal_frame
from .sources import Capture
from .stats import LiveStats

log = logging.getLogger(__name__)

__all__ = ["LiveConfig", "LivePipeline", "OutputFrame"]


@dataclass
class LiveConfig:
    budget_ms: float | None = None  # time the generative step may take per frame; None: 1000 / fps
    fps: float | None = None  # nominal stream rate; None: the source's (else 25)
    max_age_ms: float = 1000.0  # a frame older than this when taken is skipped, not shown late
    no_signal_after_ms: float = 1000.0  # without a frame for this long, output "no signal" cards
    default_size: tuple[int, int] = (640, 360)  # no-signal card size before any frame was seen
    stats_every: float = 0.0  # seconds between console stats lines; 0: none


class LivePipeline:
    """Runs one source through the scheduler into ``sinks`` until the source ends or
    :meth:`stop` is called (from any thread or a signal handler). ``run`` closes the sinks."""

    def __init__(self, engine: LiveEngine, capture: Capture, sinks: list[Sink], config: LiveConfig | None = None,
                 stats: LiveStats | None = None, name: str | None = None) -> None:
        self.engine = engine
        self.capture = capture
        self.sinks = list(sinks)
        self.config = config or LiveConfig()
        self.stats = stats or LiveStats()
        self.name = name or capture.source.name
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-render")
        self._pending: Future | None = None  # a late render still running
        self._generation = 0
        self._size: tuple[int, int] | None = None
        self._last_emit = 0.0
        self._last_frame = time.monotonic()  # last real frame taken (start counts as one)
        self._last_print = time.monotonic()
        self._counted_in = self._counted_drop = self._counted_reconnects = 0

    # -- control ----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    @property
    def fps(self) -> float:
        return float(self.config.fps or self.capture.fps or 25.0)

    @property
    def budget(self) -> float:
        return (self.config.budget_ms / 1000.0) if self.config.budget_ms else 1.0 / self.fps

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> LiveStats:
        self.capture.start()
        try:
            while not self._stop.is_set():
                item = self.capture.get(timeout=min(0.05, 0.5 / self.fps))
                self._sync_capture_counters()
                now = time.monotonic()
                if item is None:
                    if self.capture.state in ("ended", "stopped"):
                        break
                    self._maybe_no_signal(now)
                    self._maybe_print(now)
                    continue
                self._last_frame = now
                if now - item.t_capture > self.config.max_age_ms / 1000.0:
                    self.stats.frames_stale += 1
                    continue
                if item.generation != self._generation:
                    self._generation = item.generation
                    self.engine.reset(self.fps)
                self._process(item.image, item.seq, item.t_capture)
                self._maybe_print(time.monotonic())
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        self._stop.set()
        self.capture.stop()
        self._sync_capture_counters()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - close the others anyway
                log.error("%s: closing sink %s failed: %s", self.name, type(sink).__name__, exc)
                self.stats.sink_errors += 1
        self.sinks = []
        if self.config.stats_every:
            print(f"[{self.name}] final: {self.stats.line()}", file=sys.stderr, flush=True)

    # -- per frame --------------------------------------------------------------------------------
    def _process(self, image: np.ndarray, seq: int, t_capture: float) -> None:
        engine = self.engine
        tracks = engine.locate(image, seq)
        late = False
        if not engine.generative:
            out, records = engine.render(image, tracks)
        elif not tracks:
            out, records = image.copy(), []
        elif self._pending is not None and not self._pending.done():
            out, records = engine.cover(image, tracks, "busy")
            self.stats.busy_frames += 1
            late = True
        else:
            self._pending = None
            future = self._executor.submit(engine.render, image, tracks)
            try:
                out, records = future.result(timeout=self.budget)
            except FutureTimeout:
                self._pending = future
                out, records = engine.cover(image, tracks, "late")
                self.stats.late_frames += 1
                late = True
            except Exception as exc:  # noqa: BLE001 - fail closed
                log.error("%s: anonymization failed, pixelating the frame's faces: %s", self.name, exc)
                out, records = engine.cover(image, tracks, "render_error")
        engine.account(records)
        self.stats.faces += len(records)
        for rec in records:
            if rec.fallback:
                self.stats.fallbacks[rec.fallback.split(":")[0]] += 1
        self._emit(OutputFrame(out, time.monotonic(), seq, t_capture, "frame", records, late))

    def _maybe_no_signal(self, now: float) -> None:
        if now - self._last_frame < self.config.no_signal_after_ms / 1000.0:
            return
        if now - self._last_emit < 1.0 / self.fps:
            return
        w, h = self._size or self.config.default_size
        text = "NO SIGNAL" if self.capture.state != "live" else "NO SIGNAL (stalled)"
        self.stats.no_signal_frames += 1
        self._emit(OutputFrame(no_signal_frame(w, h, text), now, kind="no_signal"))

    def _emit(self, frame: OutputFrame) -> None:
        self._size = (frame.image.shape[1], frame.image.shape[0])
        for sink in self.sinks:
            try:
                sink.write(frame)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not stop the others
                self.stats.sink_errors += 1
                if self.stats.sink_errors <= 5 or self.stats.sink_errors % 1000 == 0:
                    log.error("%s: sink %s failed (%d errors so far): %s", self.name, type(sink).__name__,
                              self.stats.sink_errors, exc)
        done = time.monotonic()
        self._last_emit = done
        if frame.kind == "frame":
            self.stats.frames_out += 1
            self.stats.rate_out.tick(done)
            if frame.t_capture is not None:
                self.stats.add_latency(done - frame.t_capture)

    def _sync_capture_counters(self) -> None:
        cap = self.capture
        new_in = cap.frames_read - self._counted_in
        for _ in range(min(new_in, 64)):
            self.stats.rate_in.tick()
        self.stats.frames_in += new_in
        self.stats.frames_dropped += cap.dropped - self._counted_drop
        self.stats.reconnects += cap.reconnects - self._counted_reconnects
        self._counted_in, self._counted_drop, self._counted_reconnects = cap.frames_read, cap.dropped, cap.reconnects

    def _maybe_print(self, now: float) -> None:
        every = self.config.stats_every
        if every and now - self._last_print >= every:
            self._last_print = now
            print(f"[{self.name}] {self.stats.line()}", file=sys.stderr, flush=True)


def run_all(pipelines: list[LivePipeline]) -> list[LiveStats]:
    """Run several pipelines (one per source) in threads until all end; ``stop()`` each to end."""
    if len(pipelines) == 1:
        return [pipelines[0].run()]
    threads = [threading.Thread(target=p.run, name=f"live:{p.name}", daemon=True) for p in pipelines]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.2)
    return [p.stats for p in pipelines]
