"""Split of :class:`~styleid_edge.runtime.anonymizer.Anonymizer` into the two steps the deadline
scheduler needs:

- :meth:`LiveEngine.locate`: detection + tracking (fast, run for every frame, synchronously);
  the tracks it returns are the faces that must not show in this frame's output;
- :meth:`LiveEngine.render`: the anonymization method for those faces, synchronously (blur and
  pixelate; the generative methods go through the shared :class:`~.batcher.RenderBatcher`, which
  runs the faces of every source together under the deadline);
- :meth:`LiveEngine.cover`: the fail-closed output for a late frame: every face pixelated.

One Anonymizer's models are shared by several engines (one per source, each with its own tracker);
detection and rendering each hold a lock of the shared Anonymizer.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from ..anonymizer import Anonymizer, FaceRecord
from ..track import Track, Tracker, TrackerConfig
from .batcher import cover

log = logging.getLogger(__name__)

_LOCKS: dict[int, tuple[threading.Lock, threading.Lock]] = {}
_LOCKS_GUARD = threading.Lock()


def _locks_for(anonymizer: Anonymizer) -> tuple[threading.Lock, threading.Lock]:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(anonymizer), (threading.Lock(), threading.Lock()))


class LiveEngine:
    def __init__(self, anonymizer: Anonymizer, fps: float = 30.0) -> None:
        self.anonymizer = anonymizer
        self.method = anonymizer.method
        self._detect_lock, self._render_lock = _locks_for(anonymizer)
        self._account_lock = threading.Lock()
        self.reset(fps)

    @property
    def generative(self) -> bool:
        """True when rendering runs a model (so it can be late); False for blur / pixelate."""
        return self.method not in ("blur", "pixelate")

    def reset(self, fps: float = 30.0) -> None:
        """New stream (or reconnection): tracks start afresh."""
        cfg = self.anonymizer.config
        self.tracker = Tracker(TrackerConfig(hold_frames=cfg.hold_frames, seed=cfg.seed, fps=max(float(fps), 1.0)))

    def locate(self, frame: np.ndarray, index: int) -> list[Track]:
        """Detect and track the faces of ``frame``; ``index`` counts source frames (dropped ones
        included), so hold-over and smoothing see the real gaps."""
        with self._detect_lock:
            return self.anonymizer.locate(frame, index, tracker=self.tracker)

    def render(self, frame: np.ndarray, tracks: list[Track]) -> tuple[np.ndarray, list[FaceRecord]]:
        """Anonymize ``tracks`` in a copy of ``frame`` with the method; fail closed per face."""
        with self._render_lock:
            return self.anonymizer.render(frame, tracks)

    def cover(self, frame: np.ndarray, tracks: list[Track], reason: str) -> tuple[np.ndarray, list[FaceRecord]]:
        """Every face pixelated (a late or skipped generative step); each record says ``reason``."""
        return cover(frame, tracks, reason)

    def account(self, records: list[FaceRecord]) -> None:
        """Count the frame's faces in the Anonymizer's run report."""
        with self._account_lock:
            self.anonymizer.account(records)

