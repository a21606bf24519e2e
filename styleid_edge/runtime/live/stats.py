"""Live counters, latency percentiles and frame rates, as a console line, JSON and Prometheus text.

Everything is bounded (latency window, rate windows), so memory stays flat over long runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class RateMeter:
    """Events per second over the last ``window`` seconds."""

    def __init__(self, window: float = 5.0, maxlen: int = 2048) -> None:
        self.window = window
        self._times: deque[float] = deque(maxlen=maxlen)

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._times if now - t <= self.window]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], recent[-1] - recent[0])
        return (len(recent) - 1) / span if span > 0 else 0.0


@dataclass
class LiveStats:
    """Counters of one live pipeline (all sources of a process can share one)."""

    latency_window: int = 4096
    frames_in: int = 0  # frames read from the source(s)
    frames_dropped: int = 0  # replaced by a newer frame before processing (input side)
    frames_stale: int = 0  # taken too late (older than max_age) and skipped
    frames_out: int = 0  # anonymized frames sent to the sinks
    no_signal_frames: int = 0
    faces: int = 0
    fallbacks: Counter = field(default_factory=Counter)  # reason -> faces pixelated instead
    late_frames: int = 0  # frames with at least one face pixelated because its generation missed the deadline
    busy_frames: int = 0  # frames pixelated because the generator was still on a late frame
    render_errors: int = 0  # frames whose model round failed or was abandoned (faces pixelated)
    reconnects: int = 0
    watchdog_restarts: int = 0  # stuck stages (capture, render worker) restarted
    sink_errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._latency: deque[float] = deque(maxlen=self.latency_window)
        self.rate_in = RateMeter()
        self.rate_out = RateMeter()
        self.max_latency = 0.0

    def add_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency.append(seconds)
            self.max_latency = max(self.max_latency, seconds)

    def latency_ms(self) -> dict[str, float]:
        with self._lock:
            values = np.asarray(self._latency, dtype=np.float64)
        if values.size == 0:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99]) * 1000.0
        return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1),
                "max": round(self.max_latency * 1000.0, 1)}

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_seconds": round(time.monotonic() - self.started, 2),
            "fps_in": round(self.rate_in.rate(), 2), "fps_out": round(self.rate_out.rate(), 2),
            "frames_in": self.frames_in, "frames_out": self.frames_out, "frames_dropped": self.frames_dropped,
            "frames_stale": self.frames_stale, "no_signal_frames": self.no_signal_frames,
            "faces": self.faces, "fallbacks": dict(self.fallbacks), "late_frames": self.late_frames,
            "busy_frames": self.busy_frames, "render_errors": self.render_errors, "reconnects": self.reconnects,
            "watchdog_restarts": self.watchdog_restarts, "sink_errors": self.sink_errors,
            "latency_ms": self.latency_ms(),
        }

    def to_json(self) -> str:
        return json.dumps(self.snapshot())

    def prometheus(self, prefix: str = "styleid_live") -> str:
        s = self.snapshot()
        lines = []

        def metric(name: str, kind: str, value: float, labels: str = "") -> None:
            if f"# TYPE {prefix}_{name} " not in "".join(lines):
                lines.append(f"# TYPE {prefix}_{name} {kind}\n")
            lines.append(f"{prefix}_{name}{labels} {value}\n")

        for key in ("frames_in", "frames_out", "frames_dropped", "frames_stale", "no_signal_frames", "faces",
                    "late_frames", "busy_frames", "render_errors", "reconnects", "watchdog_restarts", "sink_errors"):
            metric(f"{key}_total", "counter", s[key])
        for reason, n in sorted(s["fallbacks"].items()):
            metric("fallbacks_total", "counter", n, f'{{reason="{reason}"}}')
        metric("fps_in", "gauge", s["fps_in"])
        metric("fps_out", "gauge", s["fps_out"])
        for q in ("p50", "p95", "p99", "max"):
            metric("latency_ms", "gauge", s["latency_ms"][q], f'{{quantile="{q}"}}')
        return "".join(lines)

    def line(self) -> str:
        s = self.snapshot()
        lat = s["latency_ms"]
        fb = sum(s["fallbacks"].values())
        return (f"fps in {s['fps_in']:.1f} out {s['fps_out']:.1f} | frames {s['frames_out']}/{s['frames_in']} "
                f"dropped {s['frames_dropped']} no-signal {s['no_signal_frames']} | faces {s['faces']} "
                f"fallbacks {fb} (late frames {s['late_frames']}, busy {s['busy_frames']}) | latency ms "
                f"p50 {lat['p50']:.0f} p95 {lat['p95']:.0f} p99 {lat['p99']:.0f} | reconnects {s['reconnects']}"
                + (f" | watchdog restarts {s['watchdog_restarts']}" if s["watchdog_restarts"] else ""))
