"""The run report: every face accounted for (DESIGN.md privacy rules)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__


@dataclass
class RunReport:
    started: float = field(default_factory=time.time)
    pack: str | None = None
    pack_synthetic: bool = False
    requested_method: str | None = None
    method: str | None = None
    detector: str | None = None
    providers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # one entry per processed file
    skipped: list[dict[str, str]] = field(default_factory=list)  # files of an input folder that are not inputs
    frames: int = 0
    faces: int = 0  # face instances (detected or held over), each anonymized by some method
    faces_detected: int = 0
    faces_held: int = 0  # covered by tracker hold-over on a frame without a detection
    tracks: int = 0
    by_method: Counter = field(default_factory=Counter)  # method actually applied per face instance
    fallbacks: Counter = field(default_factory=Counter)  # reason -> count (face pixelated instead)
    errors: list[str] = field(default_factory=list)  # the first MAX_ERRORS distinct messages
    errors_total: int = 0  # every error, also those not kept in ``errors``
    timings: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False  # stopped by Ctrl-C / SIGINT: the counts cover what was processed until then
    failed: bool = False  # the run stopped on an error (in ``errors``); outputs may be missing

    MAX_ERRORS = 100  # a long outage (e.g. a dead model server) repeats one error per batch: keep the report small

    def error(self, text: str) -> None:
        """Record an error: counted always, its message kept if new and fewer than MAX_ERRORS are kept."""
        self.errors_total += 1
        if text not in self.errors and len(self.errors) < self.MAX_ERRORS:
            self.errors.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        elapsed = time.time() - self.started
        return {
            "tool": f"styleid-edge {__version__}",
            "pack": self.pack, "pack_synthetic": self.pack_synthetic,
            "requested_method": self.requested_method, "method": self.method, "detector": self.detector,
            "providers": self.providers, "notes": self.notes, "inputs": self.inputs, "skipped": self.skipped,
            "frames": self.frames, "faces": self.faces, "faces_detected": self.faces_detected,
            "faces_held": self.faces_held, "tracks": self.tracks,
            "faces_by_method": dict(self.by_method), "fallbacks": dict(self.fallbacks),
            "faces_accounted": sum(self.by_method.values()) == self.faces,
            "errors": self.errors, "errors_total": max(self.errors_total, len(self.errors)),
            "interrupted": self.interrupted, "failed": self.failed, "timings": self.timings, "elapsed_seconds": round(elapsed, 3),
        }

    def write(self, path: str | Path) -> None:
        """Write the JSON through a temporary file and a rename; the temporary file goes when that fails."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
