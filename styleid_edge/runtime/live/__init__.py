"""Live streams: cameras, network streams and files played in real time, anonymized under a
per-frame deadline (see :mod:`.scheduler`), to segmented files, an MJPEG HTTP stream or a window.

Entry points: :class:`~.scheduler.LivePipeline` (Python), ``styleid-edge live`` (:mod:`.cli`).
"""

from .batcher import RenderBatcher
from .scheduler import LiveConfig, LivePipeline, OutputFrame, run_all
from .sources import Capture, FileSource, SourceError, open_source
from .stats import LiveStats
from .watchdog import Watchdog

__all__ = ["Capture", "FileSource", "LiveConfig", "LivePipeline", "LiveStats", "OutputFrame", "RenderBatcher",
           "SourceError", "Watchdog", "open_source", "run_all"]
