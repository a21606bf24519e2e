"""Live streams (issue 6), network output: the anonymized output encoded as H.264 and sent as
MPEG-TS over UDP, or pushed over RTSP, on loopback, and read back by a second live pipeline
through FFmpeg (the package's own URL source); ``--show`` on a headless OpenCV."""

from __future__ import annotations

import socket
import threading
import time

import cv2
import pytest
from media import free_ports, moving_faces_clip
from test_live import face_changed

from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
from styleid_edge.runtime.live import cli as live_cli
from styleid_edge.runtime.live.engine import LiveEngine
from styleid_edge.runtime.live.scheduler import LiveConfig, LivePipeline
from styleid_edge.runtime.live.sinks import MemorySink, StreamSink
from styleid_edge.runtime.live.sources import AVSource, Backoff, Capture, open_source

FPS = 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("live_streams") / "clip.mp4"
    return moving_faces_clip(10, size=(320, 240), fps=FPS, face_height=0.35, path=path, audio=False, seed=3)


class StillCamera:
    """A camera looking at a still scene (the clip's first frame) at 25 fps, for ever: every
    received frame can be compared with the raw one."""

    name = "still camera"

    def __init__(self, frame) -> None:
        self.frame = frame

    def open(self) -> float:
        self._next = time.monotonic()
        return float(FPS)

    def read(self):
        self._next += 1.0 / FPS
        time.sleep(max(0.0, self._next - time.monotonic()))
        return self.frame

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def anonymizer():
    return Anonymizer(AnonymizerConfig(method="pixelate"), pack=None, use_default_pack=False)


def serve_and_read(clip, anonymizer, out_url: str, source, min_frames: int = 10, *, delay: float = 0.3,
                   reader_config: LiveConfig | None = None):
    """Pipeline A: the clip (looped) anonymized into StreamSink(out_url), started ``delay`` seconds
    after pipeline B: ``source`` read by live (``reader_config``) into memory until ``min_frames``
    arrived. Returns (B's frames, A's sink, B's stats)."""
    received = MemorySink()
    reader = LivePipeline(LiveEngine(anonymizer, FPS), Capture(source, Backoff(initial=0.2, maximum=0.5)),
                          [received], reader_config or LiveConfig(fps=FPS, no_signal_after_ms=60000), name="reader")
    reader_thread = threading.Thread(target=reader.run, daemon=True)
    reader_thread.start()
    time.sleep(delay)  # the reader listens first (UDP has no handshake; RTSP listen waits for the push)
    sink = StreamSink(out_url, FPS)
    sender = LivePipeline(LiveEngine(anonymizer, FPS), Capture(StillCamera(clip.frames[0])), [sink],
                          LiveConfig(), name="sender")
    sender_thread = threading.Thread(target=sender.run, daemon=True)
    sender_thread.start()
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and reader.stats.frames_out < min_frames:
            time.sleep(0.1)
    finally:
        sender.stop()
        sender_thread.join(20)
        reader.stop()
        reader_thread.join(20)
    return [f for f in received.frames if f.kind == "frame"], sink, reader.stats


def check_received(frames, clip, min_frames: int) -> None:
    assert len(frames) >= min_frames
    raw, boxes = clip.frames[0], clip.boxes[0]
    for f in frames:
        assert f.image.shape == raw.shape
        # the picture arrived (mean difference from the raw frame is small away from the faces) ...
        assert cv2.absdiff(f.image, raw).mean() < 25
        # ... and its faces did not: they are pixelated (by the sender)
        assert face_changed(f.image, raw, boxes, min_diff=3.0)


def test_udp_mpegts_stream_read_back_by_live(clip, anonymizer):
    port = free_ports(1, socket.SOCK_DGRAM)[0]
    frames, sink, stats = serve_and_read(clip, anonymizer, f"udp://127.0.0.1:{port}",
                                         open_source(f"udp://127.0.0.1:{port}"))
    assert sink.url.endswith("pkt_size=1316") and sink.format == "mpegts"
    assert sink.frames_written >= len(frames) and sink.failures == 0
    check_received(frames, clip, 10)
    assert stats.latency_ms()["p50"] < 2000


def test_rtsp_push_into_a_listening_live_source(clip, anonymizer):
    """FFmpeg cannot serve RTSP for output; a push (ANNOUNCE/RECORD) to a server can be tested with
    live's own listening RTSP source (``--rtsp-listen``)."""
    port = free_ports(1)[0]
    url = f"rtsp://127.0.0.1:{port}/live"
    source = AVSource(url, options={"rtsp_flags": "listen", "listen_timeout": "10"})
    frames, sink, _ = serve_and_read(clip, anonymizer, url, source)
    assert sink.format == "rtsp" and sink.frames_written >= len(frames)
    check_received(frames, clip, 10)


def test_watchdog_shorter_than_the_listen_timeout_lets_the_camera_connect(clip, anonymizer):
    """``--rtsp-listen --watchdog-seconds 1`` with a 6 s listen time-out, the camera pushing 2 s after
    the start: waiting for it is not being stuck. No restart binds the port beside the waiting
    listener, and the camera's connection is not accepted and dropped by an abandoned thread."""
    port = free_ports(1)[0]
    url = f"rtsp://127.0.0.1:{port}/live"
    source = AVSource(url, options={"rtsp_flags": "listen", "listen_timeout": "6"}, timeout=6.0)
    config = LiveConfig(fps=FPS, no_signal_after_ms=60000, capture_stall_s=1.0)
    frames, sink, stats = serve_and_read(clip, anonymizer, url, source, delay=2.0, reader_config=config)
    assert stats.watchdog_restarts == 0
    assert sink.failures == 0  # the push was never cut ("Broken pipe")
    check_received(frames, clip, 10)


def test_stream_sink_survives_a_missing_server(anonymizer):
    """Nobody listens on the RTSP port: writes fail (counted), retried with back-off, no crash."""
    import numpy as np

    from styleid_edge.runtime.live.sinks import OutputFrame

    sink = StreamSink(f"rtsp://127.0.0.1:{free_ports(1)[0]}/x", FPS, retry_initial=0.2)
    image = np.zeros((64, 64, 3), np.uint8)
    errors = 0
    t0 = time.monotonic()
    for i in range(10):
        try:
            sink.write(OutputFrame(image, t0 + i * 0.04))
        except RuntimeError as exc:
            assert "rtsp://127.0.0.1" in str(exc)
            errors += 1
    sink.close()
    assert errors == sink.failures == 2 and sink.frames_skipped == 8  # retried once 0.2 s later
    with pytest.raises(ValueError, match="udp://"):
        StreamSink("ftp://x/y", FPS)


def _gui_available() -> bool:
    from styleid_edge.runtime.live.sinks import check_gui

    try:
        check_gui()
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(_gui_available(), reason="this OpenCV has a GUI and a display: --show would open a window")
def test_show_on_headless_opencv_says_what_to_do(clip, capsys):
    code = live_cli.main([str(clip.path), "--show", "--method", "pixelate", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: --show needs" in err and "--serve-mjpeg" in err


def test_cli_checks_push_count(clip, capsys):
    code = live_cli.main([str(clip.path), "--source", str(clip.path), "--push", "rtsp://127.0.0.1:1/a",
                          "--method", "pixelate", "-q"])
    assert code == 2 and "one URL per source" in capsys.readouterr().err
