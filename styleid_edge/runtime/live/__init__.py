"""Live streams: cameras, network streams and files played in real time, anonymized under a
per-frame deadline (see :mod:`.scheduler`), to segmented files, an MJPEG HTTP stream or a window.

Entry points: :class:`~.scheduler.LivePipeline` (Python), ``styleid-edge live`` (:mod:`.cli`).
"""

from .scheduler import LiveConfig, LivePipeline, OutputFrame
from .sources import Capture, FileSource, SourceError, open_source
from .stats import LiveStats

__all__ = ["Capture", "FileSource", "LiveConfig", "LivePipeline", "LiveStats", "OutputFrame", "SourceError",
           "open_source"]
