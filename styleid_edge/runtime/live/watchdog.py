"""A watchdog thread that restarts stuck live stages.

A stage is anything with ``name``, ``stuck_for(now) -> seconds`` (how long it has been inside one
step that should have been quick: a blocking read, one model round) and ``restart(reason)``. The
capture thread (:class:`~.sources.Capture`) and the shared render worker
(:class:`~.batcher.RenderBatcher`) are such stages. Detection runs on the pipeline thread and is
not covered: a hang there stops that source's output (its stats show it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class Stage(Protocol):
    name: str

    def stuck_for(self, now: float) -> float: ...

    def restart(self, reason: str) -> None: ...


@dataclass
class _Watched:
    stage: Stage
    limit: float


class Watchdog:
    """Checks its stages every ``interval`` seconds; a stage stuck longer than its limit is
    restarted (and counted in ``restarts``, and by the ``on_restart`` callback)."""

    def __init__(self, interval: float = 0.25, on_restart=None) -> None:
        self.interval = float(interval)
        self.on_restart = on_restart
        self.restarts = 0
        self._stages: list[_Watched] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-watchdog", daemon=True)

    def watch(self, stage: Stage, limit: float) -> Watchdog:
        if limit and limit > 0:
            self._stages.append(_Watched(stage, float(limit)))
        return self

    def start(self) -> Watchdog:
        if self._stages and not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def check(self, now: float | None = None) -> int:
        """One pass over the stages; returns how many were restarted."""
        now = time.monotonic() if now is None else now
        restarted = 0
        for w in self._stages:
            try:
                stuck = w.stage.stuck_for(now)
            except Exception as exc:  # noqa: BLE001 - a broken probe must not end the watchdog
                log.debug("watchdog: probing %s failed: %s", w.stage.name, exc)
                continue
            if stuck > w.limit:
                reason = f"no progress for {stuck:.1f} s (limit {w.limit:g} s)"
                log.error("watchdog: %s is stuck: %s; restarting it", w.stage.name, reason)
                try:
                    w.stage.restart(reason)
                except Exception as exc:  # noqa: BLE001
                    log.error("watchdog: restarting %s failed: %s", w.stage.name, exc)
                    continue
                restarted += 1
                self.restarts += 1
                if self.on_restart is not None:
                    self.on_restart(w.stage)
        return restarted

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
