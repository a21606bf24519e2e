"""Live streams (issue 6): memory stays flat over a long run.

The generative path (tiny pack, latent method, SFace verification) with a per-face deadline, into
segmented files and a UDP stream, for up to ~45 s on a small frame size; the process's resident
memory (VmRSS) after a warm-up is compared with the end."""

from __future__ import annotations

import socket
import time

import cv2
import pytest
from media import free_ports, moving_faces_clip

from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
from styleid_edge.runtime.live.engine import LiveEngine
from styleid_edge.runtime.live.scheduler import LiveConfig, LivePipeline
from styleid_edge.runtime.live.sinks import MemorySink, SegmentedFileSink, StreamSink
from styleid_edge.runtime.live.sources import Capture

WARMUP_FRAMES = 150
MAX_SECONDS = 40.0
MAX_FRAMES = 3000
MIN_MEASURED_FRAMES = 300
MAX_GROWTH_MB = 16.0  # after warm-up; a leak of one 240x136 frame per frame would be ~100 KB/frame


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


class LoopSource:
    """The clip's frames again and again, as fast as they are taken (the capture drops the rest)."""

    name = "loop"

    def __init__(self, frames) -> None:
        self.frames = frames
        self.i = 0

    def open(self) -> float:
        return 25.0

    def read(self):
        time.sleep(0.005)
        self.i += 1
        return self.frames[self.i % len(self.frames)]

    def close(self) -> None:
        pass


class RSSProbe:
    """Samples RSS at warm-up and at the end; stops the pipeline after MAX_FRAMES / MAX_SECONDS."""

    def __init__(self) -> None:
        self.frames = 0
        self.at_warmup: float | None = None
        self.frames_at_warmup = 0
        self.samples: list[float] = []
        self.t_warm = 0.0
        self.pipeline: LivePipeline | None = None

    def write(self, frame) -> None:
        self.frames += 1
        if self.frames == WARMUP_FRAMES:
            self.at_warmup, self.frames_at_warmup, self.t_warm = rss_mb(), self.frames, time.monotonic()
        if self.frames % 50 == 0:
            self.samples.append(rss_mb())
        if self.at_warmup is not None and (self.frames >= MAX_FRAMES or time.monotonic() - self.t_warm > MAX_SECONDS):
            self.pipeline.stop()

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_memory_flat_over_a_long_run(tiny_pack, tmp_path):
    if not __import__("os").path.exists("/proc/self/status"):
        pytest.skip("needs /proc/self/status (Linux)")
    clip = moving_faces_clip(25, size=(480, 270), fps=25, face_height=0.3, audio=False, seed=1)
    frames = [cv2.resize(f, (240, 136), interpolation=cv2.INTER_AREA) for f in clip.frames]
    anon = Anonymizer(AnonymizerConfig(method="latent", min_face=12), pack=tiny_pack)
    port = free_ports(1, socket.SOCK_DGRAM)[0]
    probe = RSSProbe()
    segments = SegmentedFileSink(tmp_path / "segs", segment_seconds=5.0, fps=25)
    sinks = [segments, StreamSink(f"udp://127.0.0.1:{port}", 25), MemorySink(maxlen=5), probe]
    # a budget that rounds often miss on a small CPU: the late path (snapshots, partial takes) runs too
    pipeline = LivePipeline(LiveEngine(anon, 25), Capture(LoopSource(frames)), sinks,
                            LiveConfig(fps=25, budget_ms=120, chunk_faces=1, max_age_ms=60000))
    probe.pipeline = pipeline
    stats = pipeline.run()
    end = rss_mb()
    measured = probe.frames - probe.frames_at_warmup
    growth = end - probe.at_warmup
    print(f"RSS {probe.at_warmup:.1f} MB after {WARMUP_FRAMES} frames -> {end:.1f} MB after {probe.frames} "
          f"(+{growth:.1f} MB over {measured} frames); faces {stats.faces}, late frames {stats.late_frames}, "
          f"fallbacks {dict(stats.fallbacks)}; model rounds {pipeline.batcher.rounds}; "
          f"samples {[round(x) for x in probe.samples]}")
    assert measured >= MIN_MEASURED_FRAMES
    assert stats.faces >= probe.frames  # faces on (nearly) every frame: the model path ran
    assert pipeline.batcher.jobs_done >= 20  # model rounds ran through (late ones too)
    assert growth < MAX_GROWTH_MB
    assert len(segments.segments) >= 2
