"""One generative worker shared by every live source of a process.

Each pipeline submits its frame's faces as a :class:`RenderJob` and waits up to its budget. The
worker takes every job waiting (one per source at most: a pipeline never has two jobs queued) and
runs their faces through the model together, ``chunk_faces`` faces per model call
(:meth:`Anonymizer.render_many`). After each chunk it publishes what is done, so a pipeline whose
budget runs out keeps the faces that made it and pixelates only the late ones
(:meth:`RenderJob.take`).

The worker is a stage the watchdog can restart: a round that runs longer than ``stuck_after``
seconds is abandoned (its jobs fail closed, their faces pixelated), and a fresh worker thread takes
the next jobs. Python cannot kill the stuck thread; it is left to finish or hang on its own, and
whatever it returns is discarded.
"""

from __future__ import annotations

import copy
import logging
import threading
import time

import numpy as np

from .. import fallback
from ..anonymizer import Anonymizer, FaceRecord

log = logging.getLogger(__name__)

__all__ = ["RenderBatcher", "RenderJob", "cover"]


def cover(frame: np.ndarray, tracks: list, reason: str) -> tuple[np.ndarray, list[FaceRecord]]:
    """``frame`` with every face of ``tracks`` pixelated; each record says ``reason``."""
    out = frame.copy()
    records = []
    for tr in tracks:
        fallback.pixelate(out, np.asarray(tr.box, dtype=np.float32))
        records.append(FaceRecord(int(tr.track_id), [round(float(v), 1) for v in tr.box], "pixelate",
                                  bool(tr.is_held), fallback=reason))
    return out, records


class RenderJob:
    """The faces of one frame, on their way through the shared worker."""

    def __init__(self, frame: np.ndarray, tracks: list, records: list[FaceRecord]) -> None:
        self.frame = frame
        self.tracks = tracks
        self.records = records
        self.finished = threading.Event()
        self.started = False
        self.cancelled = False
        self.error: str | None = None
        self._lock = threading.Lock()
        self._snapshot: np.ndarray | None = None  # working copy with the faces done so far pasted
        # faces that need no model (too small, profile...) are final from the start
        self._done = [rec.fallback is not None for rec in records]
        self._result: tuple[np.ndarray, list[FaceRecord]] | None = None

    # -- worker side ------------------------------------------------------------------------------
    def _progress(self, out: np.ndarray, faces: list[int]) -> None:
        with self._lock:
            self._snapshot = out.copy()
            for i in faces:
                self._done[i] = True

    def _finish(self, out: np.ndarray, records: list[FaceRecord]) -> None:
        with self._lock:
            self._result = (out, records)
            self._done = [True] * len(records)
        self.finished.set()

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._result is None:
                self.error = reason
        self.finished.set()

    # -- pipeline side ----------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self._result is not None

    def take(self, late_reason: str = "late") -> tuple[np.ndarray, list[FaceRecord], int]:
        """The output frame now: faces done keep their result, the others are pixelated with
        ``late_reason`` (a failed job: every face, reason ``render_error``). Returns (frame,
        records, number of faces pixelated for lateness or error)."""
        with self._lock:
            if self._result is not None:
                out, records = self._result
                return out, records, 0
            if self.error is not None:
                out, records = cover(self.frame, self.tracks, self.error)
                return out, records, len(records)
            base = self._snapshot if self._snapshot is not None else self.frame
            out = base.copy()
            done = list(self._done)
            records = [copy.copy(r) for r in self.records]
        late = 0
        for i, (tr, rec) in enumerate(zip(self.tracks, records)):
            if not done[i]:
                rec.method, rec.fallback = "pixelate", late_reason
                late += 1
        Anonymizer.obscure(out, self.tracks, records)
        return out, records, late


class RenderBatcher:
    """The shared generative worker (see the module doc). ``sources`` is how many pipelines feed
    it: once that many jobs wait (or ``gather_s`` passed since the first), a round starts."""

    def __init__(self, anonymizer: Anonymizer, *, chunk_faces: int = 4, gather_s: float = 0.005,
                 sources: int = 1, stuck_after: float | None = None) -> None:
        self.anonymizer = anonymizer
        self.chunk_faces = max(1, int(chunk_faces))
        self.gather_s = float(gather_s)
        self.sources = max(1, int(sources))
        self.stuck_after = stuck_after
        self.name = "render worker"
        self.rounds = 0  # model rounds run
        self.jobs_done = 0
        self.max_jobs_per_round = 0
        self.restarts = 0  # watchdog restarts
        self._cond = threading.Condition()
        self._queue: list[RenderJob] = []
        self._running: list[RenderJob] = []
        self._round_started: float | None = None
        self._token = 0
        self._closed = False
        self._thread = self._spawn()

    def _spawn(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, args=(self._token,), name=f"live-render-{self._token}",
                                  daemon=True)
        thread.start()
        return thread

    # -- pipeline side ----------------------------------------------------------------------------
    def submit(self, frame: np.ndarray, tracks: list) -> RenderJob:
        job = RenderJob(frame, tracks, self.anonymizer.plan(tracks))
        with self._cond:
            if self._closed:
                job._fail("render_error")
                return job
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def cancel(self, job: RenderJob) -> bool:
        """Withdraw a job that has not started (True); a started one runs on (False)."""
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                job.cancelled = True
                return True
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Fail the waiting jobs and let the worker finish its round (up to ``timeout`` seconds:
        a thread left inside a model call at interpreter exit can abort the process)."""
        with self._cond:
            self._closed = True
            for job in self._queue:
                job._fail("render_error")
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: still inside a model call after %.0f s; leaving it", self.name, timeout)

    # -- watchdog ---------------------------------------------------------------------------------
    def stuck_for(self, now: float) -> float:
        """Seconds the current round has run (0 when idle)."""
        started = self._round_started
        return 0.0 if started is None else now - started

    def restart(self, reason: str) -> None:
        """Abandon the running round (its jobs fail closed) and start a fresh worker thread."""
        with self._cond:
            if self._closed:
                return
            self._token += 1
            stuck, self._running, self._round_started = self._running, [], None
            self.restarts += 1
            self._thread = self._spawn()
        for job in stuck:
            job._fail("stuck")
        log.error("%s restarted (%s); %d frame(s) of that round pixelated", self.name, reason, len(stuck))

    # -- worker -----------------------------------------------------------------------------------
    def _take_round(self, token: int) -> list[RenderJob] | None:
        with self._cond:
            while not self._queue and not self._closed and token == self._token:
                self._cond.wait(0.5)
            if self._closed or token != self._token:
                return None
            deadline = time.monotonic() + self.gather_s
            while len(self._queue) < self.sources and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._closed or token != self._token or not self._queue:
                return [] if not self._closed and token == self._token else None
            jobs, self._queue = self._queue, []
            for job in jobs:
                job.started = True
            self._running, self._round_started = jobs, time.monotonic()
            return jobs

    def _loop(self, token: int) -> None:
        while True:
            jobs = self._take_round(token)
            if jobs is None:
                return
            if not jobs:
                continue
            self.rounds += 1
            self.max_jobs_per_round = max(self.max_jobs_per_round, len(jobs))

            def on_chunk(outs, done, jobs=jobs):
                if token != self._token:
                    return
                by_job: dict[int, list[int]] = {}
                for fi, ti in done:
                    by_job.setdefault(fi, []).append(ti)
                for fi, faces in by_job.items():
                    jobs[fi]._progress(outs[fi], faces)

            try:
                results = self.anonymizer.render_many([j.frame for j in jobs], [j.tracks for j in jobs],
                                                      [j.records for j in jobs], chunk=self.chunk_faces,
                                                      on_chunk=on_chunk)
            except Exception as exc:  # noqa: BLE001 - fail closed for this round
                log.error("%s: anonymization failed, pixelating %d frame(s): %s", self.name, len(jobs), exc)
                results = None
            with self._cond:
                if token != self._token:
                    log.warning("%s: an abandoned round finished; its result is discarded", self.name)
                    return
                self._running, self._round_started = [], None
            for i, job in enumerate(jobs):
                if results is None:
                    job._fail("render_error")
                else:
                    job._finish(*results[i])
            self.jobs_done += len(jobs)
