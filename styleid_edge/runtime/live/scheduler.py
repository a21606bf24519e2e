"""The deadline scheduler: capture → locate faces → anonymize under a deadline → sinks.

Per frame, on the pipeline thread:

1. take the newest captured frame (the capture keeps one; older frames are dropped there, so the
   input never queues); a frame older than ``max_age_ms`` is skipped as stale;
2. **locate** faces (detection + tracking) synchronously: this is what must never be skipped;
3. **render** (the generative method) in the shared worker (:class:`~.batcher.RenderBatcher`,
   which batches the faces of every source together), with ``budget_ms`` to finish. Faces whose
   generation is done by then keep it; the others are pixelated (``late``, counted per face); a job
   that had not even started is withdrawn. While a late job still runs, the source's following
   frames are pixelated at once (``busy``) instead of waiting. A render that raises, or a round the
   watchdog abandons, also falls back to pixelation. So every output frame has every located face
   either regenerated or pixelated — never raw — and capture→output latency is bounded by about
   one input frame interval + locate time + budget + sink time (measured: ``LiveStats.latency_ms``);
4. hand the frame to every sink (network streams run behind a :class:`~.sinks.BackgroundSink`, so a
   stalled receiver never holds the pipeline up). While the source is down (or sends nothing for
   ``no_signal_after_ms``), "no signal" cards are output at the stream's rate instead — never a
   stale raw frame.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from .batcher import RenderBatcher, RenderJob, cover
from .engine import LiveEngine
from .sinks import BackgroundSink, OutputFrame, SegmentedFileSink, Sink, no_signal_frame
from .sources import Capture
from .stats import LiveStats
from .watchdog import Watchdog

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
    chunk_faces: int = 4  # faces per model call (smaller: finer per-face deadline; larger: GPU throughput)
    gather_ms: float = 5.0  # how long the shared worker waits for the other sources' faces of a tick
    capture_stall_s: float = 10.0  # watchdog: restart the capture after this long inside one open/read (0: off)
    render_stuck_s: float = 60.0  # watchdog: abandon a model round running this long (0: off)


def sink_label(sink: Sink) -> str:
    return getattr(sink, "label", None) or type(sink).__name__


class LivePipeline:
    """Runs one source through the scheduler into ``sinks`` until the source ends or
    :meth:`stop` is called (from any thread or a signal handler). ``run`` closes the sinks:
    recordings first (``files_done`` is set once they are finished), then the other sinks, the
    capture and the render worker, which may take seconds."""

    def __init__(self, engine: LiveEngine, capture: Capture, sinks: list[Sink], config: LiveConfig | None = None,
                 stats: LiveStats | None = None, name: str | None = None,
                 batcher: RenderBatcher | None = None) -> None:
        """``batcher``: the render worker shared with other pipelines (and watched by the caller's
        watchdog, see :func:`run_all`); by default the pipeline makes and watches its own."""
        self.engine = engine
        self.capture = capture
        self.sinks = list(sinks)
        self.config = config or LiveConfig()
        self.stats = stats or LiveStats()
        self.name = name or capture.source.name
        self._stop = threading.Event()
        self._urgent = False  # stop(now=True): do not wait for the capture and render threads
        self.files_done = threading.Event()  # set once close() has finished the recordings
        self.closed_sinks: list[Sink] = []  # the sinks as they were when closed (for the final report)
        self._own_batcher = batcher is None and engine.generative
        if self._own_batcher:
            batcher = RenderBatcher(engine.anonymizer, chunk_faces=self.config.chunk_faces,
                                    gather_s=self.config.gather_ms / 1000.0)
        self.batcher = batcher
        self.watchdog = Watchdog(on_restart=self._on_restart)
        self.watchdog.watch(capture, self.config.capture_stall_s)
        if self._own_batcher:
            self.watchdog.watch(batcher, self.config.render_stuck_s)
        self._job: RenderJob | None = None  # a late job still running
        self._generation = 0
        self._size: tuple[int, int] | None = None
        self._last_emit = 0.0
        self._last_frame = time.monotonic()  # last real frame taken (start counts as one)
        self._last_print = time.monotonic()
        self._counted_in = self._counted_drop = self._counted_reconnects = 0

    # -- control ----------------------------------------------------------------------------------
    def stop(self, now: bool = False) -> None:
        """End the run. ``now``: the recordings are still finished, but the capture and render threads
        are not waited for."""
        if now:
            self._urgent = True
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
        self.watchdog.start()
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
        """Finish the recordings first, then close the other sinks (network streams: bounded) and
        stop the capture and the render worker (skipped waits after ``stop(now=True)``)."""
        try:
            self._stop.set()
            sinks, self.sinks = self.sinks, []
            self.closed_sinks = self.closed_sinks or sinks
            recordings = [s for s in sinks if isinstance(s, SegmentedFileSink)]
            self._close_sinks(recordings)
        finally:
            self.files_done.set()
        for sink in sinks:
            if isinstance(sink, BackgroundSink):
                sink.request_close()  # all network sinks wind down together
        self._close_sinks([s for s in sinks if not isinstance(s, SegmentedFileSink)])
        self.watchdog.stop()
        self.capture.stop(timeout=0.5 if self._urgent else 5.0)
        self._sync_capture_counters()
        if self._own_batcher:
            self.batcher.close(timeout=1.0 if self._urgent else 10.0)
        if self.config.stats_every:
            print(f"[{self.name}] final: {self.stats_line()}", file=sys.stderr, flush=True)

    def _close_sinks(self, sinks: list[Sink]) -> None:
        for sink in sinks:
            try:
                if isinstance(sink, BackgroundSink) and self._urgent:
                    sink.close(timeout=0.5)
                else:
                    sink.close()
            except Exception as exc:  # noqa: BLE001 - close the others anyway
                log.error("%s: closing sink %s failed: %s", self.name, sink_label(sink), exc)
                self.stats.record_write(sink_label(sink), ok=False)

    def stats_line(self) -> str:
        """The stats line, with the sinks' troubles (errors, dropped or lost frames) when there are any."""
        return self.stats.line([note for sink in (self.sinks or self.closed_sinks) if (note := _sink_status(sink))])

    # -- per frame --------------------------------------------------------------------------------
    def _process(self, image: np.ndarray, seq: int, t_capture: float) -> None:
        engine = self.engine
        tracks = engine.locate(image, seq)
        late = False
        if not engine.generative:
            out, records = engine.render(image, tracks)
        elif not tracks:
            out, records = image.copy(), []
        elif self._job is not None and not self._job.finished.is_set():
            out, records = cover(image, tracks, "busy")
            self.stats.busy_frames += 1
            late = True
        else:
            self._job = None
            job = self.batcher.submit(image, tracks)
            if not job.finished.wait(self.budget) and self.batcher.cancel(job):
                out, records = cover(image, tracks, "late")  # it never started: nothing to keep
                n_late = len(records)
            else:
                out, records, n_late = job.take("late")
                if not job.finished.is_set():
                    self._job = job  # still running: the next frames are 'busy' until it ends
            if job.error:
                self.stats.render_errors += 1
                if self.stats.render_errors <= 5:
                    log.error("%s: anonymization failed (%s), the frame's faces are pixelated", self.name, job.error)
                late = True
            elif n_late:
                self.stats.late_frames += 1
                late = True
        engine.account(records)
        self.stats.faces += len(records)
        for rec in records:
            if rec.fallback:
                self.stats.fallbacks[rec.fallback.split(":")[0]] += 1
        self._emit(OutputFrame(out, time.monotonic(), seq, t_capture, "frame", records, late))

    def _on_restart(self, stage) -> None:
        self.stats.watchdog_restarts += 1

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
        delivered = False
        for sink in self.sinks:
            label = sink_label(sink)
            try:
                sink.write(frame)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not stop the others
                failed = self.stats.record_write(label, ok=False)
                if failed <= 5 or failed % 1000 == 0:
                    log.error("%s: sink %s failed (%d errors so far): %s", self.name, label, failed, exc)
            else:
                self.stats.record_write(label, ok=True)
                delivered = True
        if frame.kind == "frame" and self.sinks and not delivered:
            self.stats.record_undelivered()
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
        self.stats.rate_in.tick(n=new_in)
        self.stats.frames_in += new_in
        self.stats.frames_dropped += cap.dropped - self._counted_drop
        self.stats.reconnects += cap.reconnects - self._counted_reconnects
        self._counted_in, self._counted_drop, self._counted_reconnects = cap.frames_read, cap.dropped, cap.reconnects

    def _maybe_print(self, now: float) -> None:
        every = self.config.stats_every
        if every and now - self._last_print >= every:
            self._last_print = now
            print(f"[{self.name}] {self.stats_line()}", file=sys.stderr, flush=True)


def _sink_status(sink: Sink) -> str:
    status = getattr(sink, "status", None)
    try:
        return status() if callable(status) else ""
    except Exception:  # noqa: BLE001 - a note must never break the stats line
        return ""


def run_all(pipelines: list[LivePipeline], shared: RenderBatcher | None = None,
            render_stuck_s: float = 60.0, on_shared_restart=None) -> list[LiveStats]:
    """Run several pipelines (one per source) in threads until all end; ``stop()`` each to end.
    ``shared``: their common render worker, watched here and closed at the end; its restarts go to
    ``on_shared_restart`` (e.g. ``StatsGroup.count_shared_restart``; default: the first source's stats)."""
    if on_shared_restart is None:
        def on_shared_restart(stage) -> None:
            pipelines[0].stats.watchdog_restarts += 1
    watchdog = Watchdog(on_restart=on_shared_restart)
    if shared is not None:
        watchdog.watch(shared, render_stuck_s).start()
    # Every pipeline runs on a thread of its own, also a single one: the main thread only waits here, so a
    # signal handler's KeyboardInterrupt can land nowhere else (never inside a segment being finished).
    errors: list[BaseException] = []

    def run(p: LivePipeline) -> None:
        try:
            p.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread below
            errors.append(exc)

    interrupted = False
    try:
        threads = [threading.Thread(target=run, args=(p,), name=f"live:{p.name}", daemon=True) for p in pipelines]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.2)
        except BaseException:  # stop now (a later signal): still let every pipeline finish its recordings
            interrupted = True
            for p in pipelines:
                p.stop(now=True)
            deadline = time.monotonic() + 30.0
            for p in pipelines:
                if not p.files_done.wait(max(0.0, deadline - time.monotonic())):
                    log.error("%s: its recording is still being finished after 30 s; leaving it", p.name)
            raise
        if errors:
            raise errors[0]
        return [p.stats for p in pipelines]
    finally:
        watchdog.stop()
        if shared is not None:
            shared.close(timeout=1.0 if interrupted else 10.0)
