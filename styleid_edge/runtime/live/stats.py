"""Live counters, latency percentiles and frame rates, as a console line, JSON and Prometheus text.

:class:`LiveStats` holds one source's; :class:`StatsGroup` shows several sources of one process
together (per-source series labelled ``source="source-N"``, totals, and the restarts of the render
worker they share). Everything is bounded (latency window, rate windows), so memory stays flat over
long runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

COUNTERS = ("frames_in", "frames_out", "frames_dropped", "frames_stale", "no_signal_frames", "faces", "late_frames",
            "busy_frames", "render_errors", "reconnects", "watchdog_restarts", "sink_errors", "frames_undelivered")


class RateMeter:
    """Events per second over the last ``window`` seconds of wall-clock time.

    It keeps samples of the running count (time, total) and reads the count at the start of the
    window by interpolating between the samples around it, so events booked together are spread
    over the time since the previous booking: frames read during a stall of the pipeline and
    counted when it ends (``tick(now, n)``, or n ticks at once) give the rate they came at, not n
    events in a microsecond. Before a whole window has passed, the rate is taken since the first
    booking. Thread-safe."""

    def __init__(self, window: float = 5.0, maxlen: int = 2048) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque(maxlen=maxlen)
        self._total = 0
        self._lock = threading.Lock()

    def tick(self, now: float | None = None, n: int = 1) -> None:
        """Book ``n`` events at ``now`` (default: time.monotonic())."""
        if n <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            self._total += n
            if self._samples and self._samples[-1][0] >= now:  # same instant: one sample
                self._samples[-1] = (self._samples[-1][0], self._total)
            else:
                self._samples.append((now, self._total))
            while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
                self._samples.popleft()  # keep one sample before the window, for the interpolation

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return 0.0
        start = now - self.window
        if samples[0][0] > start:  # less than a window of history: since the first booking
            span = now - samples[0][0]
            return (samples[-1][1] - samples[0][1]) / span if span > 0 else 0.0
        return (samples[-1][1] - _count_at(samples, start)) / self.window


def _count_at(samples: list[tuple[float, int]], t: float) -> float:
    """The running count at time ``t`` (samples[0] is at or before it), events spread evenly
    between two samples."""
    before = samples[0]
    for after in samples[1:]:
        if after[0] > t:
            gap = after[0] - before[0]
            return before[1] + (after[1] - before[1]) * (t - before[0]) / gap if gap > 0 else before[1]
        before = after
    return before[1]


@dataclass
class SinkCount:
    written: int = 0
    failed: int = 0


@dataclass
class LiveStats:
    """Counters of one live pipeline (one source)."""

    latency_window: int = 4096
    frames_in: int = 0  # frames read from the source(s)
    frames_dropped: int = 0  # replaced by a newer frame before processing (input side)
    frames_stale: int = 0  # taken too late (older than max_age) and skipped
    frames_out: int = 0  # anonymized frames sent to the sinks
    frames_undelivered: int = 0  # of those, frames that no sink took (every write failed)
    no_signal_frames: int = 0
    faces: int = 0
    fallbacks: Counter = field(default_factory=Counter)  # reason -> faces pixelated instead
    late_frames: int = 0  # frames with at least one face pixelated because its generation missed the deadline
    busy_frames: int = 0  # frames pixelated because the generator was still on a late frame
    render_errors: int = 0  # frames whose model round failed or was abandoned (faces pixelated)
    reconnects: int = 0
    watchdog_restarts: int = 0  # stuck stages (capture, render worker) restarted
    sink_errors: int = 0  # failed writes and closes, all sinks
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._latency: deque[float] = deque(maxlen=self.latency_window)
        self.rate_in = RateMeter()
        self.rate_out = RateMeter()
        self.max_latency = 0.0
        self.sinks: dict[str, SinkCount] = {}  # per sink (see record_write)

    # -- recording --------------------------------------------------------------------------------
    def add_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency.append(seconds)
            self.max_latency = max(self.max_latency, seconds)

    def record_write(self, sink: str, ok: bool) -> int:
        """Book one write (or close) of ``sink``; a failure also counts in ``sink_errors``. Returns
        that sink's failures so far (for logging the first few)."""
        with self._lock:
            count = self.sinks.setdefault(sink, SinkCount())
            if ok:
                count.written += 1
            else:
                count.failed += 1
                self.sink_errors += 1
            return count.failed

    def record_undelivered(self) -> None:
        """Book an anonymized frame that no sink took (each write failed)."""
        self.frames_undelivered += 1

    # -- reading ----------------------------------------------------------------------------------
    def latencies(self) -> np.ndarray:
        with self._lock:
            return np.asarray(self._latency, dtype=np.float64)

    def latency_ms(self) -> dict[str, float]:
        return _percentiles_ms(self.latencies(), self.max_latency)

    def failed_sinks(self) -> list[str]:
        """One line per sink that failed at least once ("NAME: F of N writes failed"), and the
        sink errors booked without a sink name; empty when every write went through. ``live``
        prints them at the end of a run (a failed recording also sets its exit code)."""
        with self._lock:
            counts = {name: SinkCount(c.written, c.failed) for name, c in self.sinks.items()}
        lines = [f"{name}: {c.failed} of {c.written + c.failed} writes failed"
                 for name, c in counts.items() if c.failed]
        unnamed = self.sink_errors - sum(c.failed for c in counts.values())
        if unnamed > 0:
            lines.append(f"{unnamed} sink error(s)")
        return lines

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            sinks = {name: {"written": c.written, "failed": c.failed} for name, c in self.sinks.items()}
        snap = {"uptime_seconds": round(time.monotonic() - self.started, 2),
                "fps_in": round(self.rate_in.rate(), 2), "fps_out": round(self.rate_out.rate(), 2)}
        snap.update({key: getattr(self, key) for key in COUNTERS})
        snap.update({"fallbacks": dict(self.fallbacks), "latency_ms": self.latency_ms(), "sinks": sinks})
        return snap

    def to_json(self) -> str:
        return json.dumps(self.snapshot())

    def samples(self, labels: dict[str, str] | None = None) -> list[Sample]:
        """The Prometheus series of this source, each with ``labels`` added."""
        return _samples(self.snapshot(), labels or {})

    def prometheus(self, prefix: str = "styleid_live") -> str:
        return render_prometheus(self.samples(), prefix)

    def line(self, notes: Sequence[str] = ()) -> str:
        """The console line; ``notes`` (the sinks' own status, e.g. frames lost) follow the sink errors."""
        return _line(self.snapshot(), notes)


# --------------------------------------------------------------------------------------------
# several sources


class StatsGroup:
    """The stats of several sources of one process, for ``/metrics`` and ``/stats.json``.

    ``members``: (label, LiveStats) per source, e.g. ("source-1", stats); the label (never the URL,
    which may hold a password) is the ``source`` label of its Prometheus series and the ``source``
    of its entry in the JSON ``sources`` list. Restarts of a stage the sources share (the render
    worker) are booked with :meth:`count_shared_restart` (a Watchdog ``on_restart`` callback), not
    on any one source; the totals include them."""

    def __init__(self, members: Iterable[tuple[str, LiveStats]]) -> None:
        self.members = list(members)
        labels = [label for label, _ in self.members]
        if len(set(labels)) != len(labels):
            raise ValueError(f"source labels must be distinct, got {labels}")
        self.shared_restarts = 0
        self.started = min((s.started for _, s in self.members), default=time.monotonic())

    def count_shared_restart(self, stage: object = None) -> None:
        self.shared_restarts += 1

    def totals(self) -> dict[str, Any]:
        snaps = [s.snapshot() for _, s in self.members]
        total: dict[str, Any] = {"uptime_seconds": round(time.monotonic() - self.started, 2)}
        total["fps_in"] = round(sum(s["fps_in"] for s in snaps), 2)
        total["fps_out"] = round(sum(s["fps_out"] for s in snaps), 2)
        total.update({key: sum(s[key] for s in snaps) for key in COUNTERS})
        total["watchdog_restarts"] += self.shared_restarts
        total["fallbacks"] = dict(sum((Counter(s["fallbacks"]) for s in snaps), Counter()))
        latencies = [s.latencies() for _, s in self.members]
        total["latency_ms"] = _percentiles_ms(np.concatenate(latencies) if latencies else np.zeros(0),
                                              max((s.max_latency for _, s in self.members), default=0.0))
        return total

    def snapshot(self) -> dict[str, Any]:
        return {"sources": [{"source": label, **s.snapshot()} for label, s in self.members],
                "shared_watchdog_restarts": self.shared_restarts, "totals": self.totals()}

    def to_json(self) -> str:
        return json.dumps(self.snapshot())

    def prometheus(self, prefix: str = "styleid_live") -> str:
        samples = [x for label, s in self.members for x in s.samples({"source": label})]
        samples.append(Sample("shared_watchdog_restarts_total", "counter", self.shared_restarts))
        return render_prometheus(samples, prefix)

    def line(self) -> str:
        """The totals as one console line (the sources print their own)."""
        return f"{len(self.members)} sources: " + _line(self.totals())

    def failed_sinks(self) -> list[str]:
        return [f"{label}: {line}" for label, s in self.members for line in s.failed_sinks()]


# --------------------------------------------------------------------------------------------
# formatting


@dataclass
class Sample:
    name: str  # without the prefix
    kind: str  # counter | gauge
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def _samples(s: dict[str, Any], labels: dict[str, str]) -> list[Sample]:
    out = [Sample(f"{key}_total", "counter", s[key], labels) for key in COUNTERS]
    out += [Sample("fallbacks_total", "counter", n, {**labels, "reason": reason})
            for reason, n in sorted(s["fallbacks"].items())]
    for name, count in sorted(s["sinks"].items()):
        out.append(Sample("sink_writes_total", "counter", count["written"], {**labels, "sink": name, "result": "ok"}))
        out.append(Sample("sink_writes_total", "counter", count["failed"],
                          {**labels, "sink": name, "result": "failed"}))
    out.append(Sample("fps_in", "gauge", s["fps_in"], labels))
    out.append(Sample("fps_out", "gauge", s["fps_out"], labels))
    out += [Sample("latency_ms", "gauge", s["latency_ms"][q], {**labels, "quantile": q})
            for q in ("p50", "p95", "p99", "max")]
    return out


def render_prometheus(samples: Sequence[Sample], prefix: str = "styleid_live") -> str:
    """Prometheus text: each metric's series together under one TYPE line, in first-seen order."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample.name, []).append(sample)
    lines = []
    for name, family in families.items():
        lines.append(f"# TYPE {prefix}_{name} {family[0].kind}\n")
        lines += [f"{prefix}_{name}{_labels(x.labels)} {x.value}\n" for x in family]
    return "".join(lines)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _percentiles_ms(values: np.ndarray, max_seconds: float) -> dict[str, float]:
    if values.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99]) * 1000.0
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1),
            "max": round(max_seconds * 1000.0, 1)}


def _line(s: dict[str, Any], notes: Sequence[str] = ()) -> str:
    lat = s["latency_ms"]
    fb = sum(s["fallbacks"].values())
    line = (f"fps in {s['fps_in']:.1f} out {s['fps_out']:.1f} | frames {s['frames_out']}/{s['frames_in']} "
            f"dropped {s['frames_dropped']} no-signal {s['no_signal_frames']} | faces {s['faces']} "
            f"fallbacks {fb} (late frames {s['late_frames']}, busy {s['busy_frames']}) | latency ms "
            f"p50 {lat['p50']:.0f} p95 {lat['p95']:.0f} p99 {lat['p99']:.0f} | reconnects {s['reconnects']}")
    if s["watchdog_restarts"]:
        line += f" | watchdog restarts {s['watchdog_restarts']}"
    details = ([f"{s['frames_undelivered']} frames reached no sink"] if s["frames_undelivered"] else []) + list(notes)
    if s["sink_errors"] or details:
        line += f" | sink errors {s['sink_errors']}" + (f" ({'; '.join(details)})" if details else "")
    return line
