"""A watchdog thread that restarts stuck live stages.

A stage is anything with ``name``, ``stuck_for(now) -> seconds`` (how long it has been inside one
step that should have been quick: a blocking read, one model round) and ``restart(reason)``. A
stage may also have ``own_timeout() -> seconds``: how long the step in progress may take by the
stage's own time-out (a source waiting for a camera to connect, a read with an I/O time-out). Such
a step is not stuck before it had that long (plus a margin) to give up by itself, whatever the
configured limit: a restart then would only fight the step for its socket. The capture thread
(:class:`~.sources.Capture`) and the shared render worker (:class:`~.batcher.RenderBatcher`) are
such stages. Detection runs on the pipeline thread and is not covered: a hang there stops that
source's output (its stats show it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

OWN_TIMEOUT_MARGIN = 1.0  # s beyond a stage's own time-out (plus 10 %) before it counts as stuck


class Stage(Protocol):
    name: str

    def stuck_for(self, now: float) -> float: ...

    def restart(self, reason: str) -> None: ...


@dataclass
class _Watched:
    stage: Stage
    limit: float
    logged: set = field(default_factory=set)  # raised limits already logged (once each)


def own_limit(own: float) -> float:
    """The shortest limit for a step with ``own`` seconds of own time-out (inf stays inf)."""
    return own * 1.1 + OWN_TIMEOUT_MARGIN if own > 0 else 0.0


class Watchdog:
    """Checks its stages every ``interval`` seconds; a stage stuck longer than its limit (and than
    its own time-out, see the module doc) is restarted (and counted in ``restarts``, and by the
    ``on_restart`` callback)."""

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

    def limit_for(self, w: _Watched) -> float:
        """``w``'s limit now: its configured one, raised to cover the step's own time-out."""
        probe = getattr(w.stage, "own_timeout", None)
        try:
            own = float(probe()) if callable(probe) else 0.0
        except Exception as exc:  # noqa: BLE001 - a broken probe must not end the watchdog
            log.debug("watchdog: own_timeout of %s failed: %s", w.stage.name, exc)
            own = 0.0
        limit = max(w.limit, own_limit(own))
        if limit > w.limit and limit not in w.logged:
            w.logged.add(limit)
            if math.isinf(limit):
                log.info("watchdog: %s may wait for ever by design (listening with no time-out); not counted "
                         "as stuck while it does", w.stage.name)
            else:
                log.info("watchdog: %s waits up to %g s by its own time-out; it counts as stuck only after "
                         "%.1f s, not %g s", w.stage.name, own, limit, w.limit)
        return limit

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
            if stuck <= w.limit:
                continue
            limit = self.limit_for(w)
            if stuck > limit and self._restart(w, f"no progress for {stuck:.1f} s (limit {limit:g} s)"):
                restarted += 1
        return restarted

    def _restart(self, w: _Watched, reason: str) -> bool:
        log.error("watchdog: %s is stuck: %s; restarting it", w.stage.name, reason)
        try:
            w.stage.restart(reason)
        except Exception as exc:  # noqa: BLE001
            log.error("watchdog: restarting %s failed: %s", w.stage.name, exc)
            return False
        self.restarts += 1
        if self.on_restart is not None:
            self.on_restart(w.stage)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
