"""Live sources that wait (a UDP receiver before its sender starts, a listening RTSP source before
its camera connects) under the watchdog, the messages a source gives when nothing comes, up-front
checks of ports and camera paths, and the stats: frame rates after a stall, sink errors, several
sources on one /metrics.

Real sockets on 127.0.0.1, real H.264 over MPEG-TS sent with PyAV, a real photo as the picture."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import av
import cv2
import pytest
from media import free_ports, load_photo

from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
from styleid_edge.runtime.live.engine import LiveEngine
from styleid_edge.runtime.live.httpserve import MetricsServer
from styleid_edge.runtime.live.scheduler import LiveConfig, LivePipeline
from styleid_edge.runtime.live.sinks import StreamSink
from styleid_edge.runtime.live.sources import (
    AVSource,
    Backoff,
    CameraSource,
    Capture,
    FileSource,
    SourceError,
    open_source,
)
from styleid_edge.runtime.live.stats import LiveStats, RateMeter, StatsGroup
from styleid_edge.runtime.live.watchdog import Watchdog

FPS = 25


class UDPSender:
    """Sends a real photo as H.264 in MPEG-TS to ``udp://127.0.0.1:port`` at 25 fps, from ``delay``
    seconds after start() for ``seconds`` seconds (a camera or encoder that starts late, then stops)."""

    def __init__(self, port: int, delay: float, seconds: float) -> None:
        self.url = f"udp://127.0.0.1:{port}?pkt_size=1316"
        self.delay, self.seconds = delay, seconds
        self.sent = 0
        self.image = cv2.resize(load_photo("obama.jpg"), (320, 240), interpolation=cv2.INTER_AREA)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> UDPSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        with av.open(self.url, "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "10"}
            t0 = time.monotonic()
            while not self._stop.is_set() and time.monotonic() - t0 < self.seconds:
                frame = av.VideoFrame.from_ndarray(self.image, format="bgr24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                self.sent += 1
                time.sleep(max(0.0, t0 + self.sent / FPS - time.monotonic()))
            for packet in stream.encode(None):
                container.mux(packet)


def udp_port() -> int:
    return free_ports(1, socket.SOCK_DGRAM)[0]


def wait_for(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# --------------------------------------------------------------------------------------------
# messages and up-front checks


def test_silent_udp_source_says_no_data_came():
    port = udp_port()
    source = AVSource(f"udp://127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(SourceError) as info:
        source.open()
    message = str(info.value)
    assert f"no data received on udp://127.0.0.1:{port} in 1 s" in message and "sender" in message
    assert "Immediate exit" not in message
    assert source.step_timeout("open") == 2.0 and source.step_timeout("read") == 1.0  # what the watchdog allows


def test_listening_rtsp_source_says_no_camera_connected():
    url = f"rtsp://127.0.0.1:{free_ports(1)[0]}/live"
    source = AVSource(url, options={"rtsp_flags": "listen", "listen_timeout": "1"}, timeout=2.0)
    with pytest.raises(SourceError) as info:
        source.open()
    message = str(info.value)
    assert f"no camera connected to the listening address {url} in 1 s" in message
    assert "timed out" not in message and "stream is up" not in message
    assert source.step_timeout("open") == 3.0  # the wait, then the handshake and the probe
    forever = AVSource(url, options={"rtsp_flags": "listen"})
    assert forever.step_timeout("open") == float("inf")  # no listen_timeout: waiting is never "stuck"


def test_port_in_use_says_so():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        url = f"udp://127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(SourceError, match="address is in use by another program"):
            AVSource(url, timeout=1.0).open()


def test_ports_are_checked_up_front():
    for url, message in [("udp://127.0.0.1:99999", "port 99999 is outside 1-65535"),
                         ("udp://127.0.0.1:0", "port 0 is outside 1-65535"),
                         ("rtsp://127.0.0.1:70000/cam", "port 70000 is outside 1-65535"),
                         ("udp://127.0.0.1:5o00", "is not a number from 1 to 65535"),
                         ("udp://127.0.0.1", "has no port")]:
        with pytest.raises(SourceError, match=message):
            open_source(url)
    for url in ("udp://127.0.0.1:5000", "udp://@:1234", "udp://[::1]:5000?overrun_nonfatal=1",
                "rtsp://user:secret@127.0.0.1/cam", "http://127.0.0.1/stream.mjpg", "srt://127.0.0.1:9000"):
        assert isinstance(open_source(url), AVSource)


def test_missing_camera_device_is_refused_at_start_and_explained():
    missing = next(f"/dev/video{n}" for n in range(90, 200) if not Path(f"/dev/video{n}").exists())
    with pytest.raises(SourceError, match=f"camera device {missing} does not exist"):
        open_source(missing, require_device=True)
    camera = open_source("7", require_device=True)  # an index may appear later: not checked
    assert isinstance(camera, CameraSource) and camera.device == 7
    later = open_source(missing)  # without the check (the API default), opening it says why it fails
    with pytest.raises(SourceError, match=f"{missing} does not exist"):
        later.open()


def test_stream_that_goes_silent_times_out_at_once():
    """A read time-out is not a damaged packet to retry (100 times over): the source gives up after
    one time-out and says nothing came."""
    port = udp_port()
    sender = UDPSender(port, delay=0.5, seconds=2.0).start()
    source = AVSource(f"udp://127.0.0.1:{port}", timeout=1.5)
    try:
        source.open()
        frames, last = 0, time.monotonic()
        with pytest.raises(SourceError, match=f"no data received from udp://127.0.0.1:{port} in 1.5 s"):
            while True:
                source.read()
                frames, last = frames + 1, time.monotonic()
        assert frames >= 10
        assert time.monotonic() - last < 5.0  # one time-out (1.5 s), not a hundred
    finally:
        source.close()
        sender.stop()


# --------------------------------------------------------------------------------------------
# the watchdog and sources that wait


def test_watchdog_leaves_a_udp_source_waiting_for_its_sender_alone():
    """The watchdog limit (0.5 s) is shorter than the source's own open time-out (1.5 s): waiting
    for the sender is not being stuck, so no restart fights the waiting open for its port."""
    port = udp_port()
    capture = Capture(AVSource(f"udp://127.0.0.1:{port}", timeout=1.5), Backoff(initial=0.2, maximum=0.5))
    watchdog = Watchdog(interval=0.1).watch(capture, 0.5)
    sender = UDPSender(port, delay=2.5, seconds=6.0)
    capture.start()
    watchdog.start()
    sender.start()
    try:
        assert wait_for(lambda: capture.frames_read >= 10, 25), capture.errors
    finally:
        watchdog.stop()
        capture.stop()
        sender.stop()
    assert capture.restarts == 0 and watchdog.restarts == 0
    assert any(f"no data received on udp://127.0.0.1:{port}" in e for e in capture.errors)  # it did wait
    assert not any("in use" in e for e in capture.errors)


def test_restart_waits_for_the_abandoned_open_to_let_go_of_the_port():
    """A restart while the thread waits in open (UDP, nothing sent yet): the fresh thread does not
    bind the port while the abandoned open still holds it."""
    port = udp_port()
    capture = Capture(AVSource(f"udp://127.0.0.1:{port}", timeout=1.5), Backoff(initial=0.2, maximum=0.5))
    sender = UDPSender(port, delay=0.8, seconds=8.0)
    capture.start()
    try:
        assert wait_for(lambda: capture.stuck_for(time.monotonic()) > 0.3, 10)  # inside open, waiting
        capture.restart("test: restarted while waiting")
        sender.start()
        assert wait_for(lambda: capture.frames_read >= 5, 25), capture.errors
    finally:
        capture.stop()
        sender.stop()
    assert capture.restarts == 1
    assert not any("in use" in e for e in capture.errors), capture.errors


def test_watchdog_still_restarts_a_step_past_its_own_timeout(tmp_path):
    """A source with its own read time-out (0.3 s) that overruns it (a hung driver) is restarted, but
    only once it had that long plus the margin (1.33 s) to give up by itself, not at the watchdog's
    0.2 s; the fresh thread then waits briefly for the hung one and reads on."""
    from media import make_video

    clip = make_video(tmp_path / "c.mp4", [load_photo("astronaut.png")] * 5, fps=FPS, audio=False)

    class Hanging(FileSource):
        """A file whose reads claim a 0.3 s time-out but hang once the first copy has sent 3 frames."""

        release = threading.Event()
        hung_at: float | None = None
        count = 0

        def clone(self):
            fresh = Hanging(self.path)
            fresh.count = -1000  # the fresh copy never hangs
            return fresh

        def step_timeout(self, step: str) -> float:
            return 0.3

        def read(self):
            self.count += 1
            if self.count == 4:
                Hanging.hung_at = time.monotonic()
                self.release.wait(30)
            return super().read()

    capture = Capture(Hanging(clip, loop=True), Backoff(initial=0.1, maximum=0.2))
    watchdog = Watchdog(interval=0.1).watch(capture, 0.2)
    capture.start()
    watchdog.start()
    restarted_at = None
    try:
        assert wait_for(lambda: capture.restarts == 1, 20)
        restarted_at = time.monotonic()
        assert wait_for(lambda: capture.frames_read >= 8, 20)
    finally:
        Hanging.release.set()
        watchdog.stop()
        capture.stop()
    assert restarted_at - Hanging.hung_at >= 1.2  # not at the watchdog's 0.2 s


# --------------------------------------------------------------------------------------------
# stats


def test_input_rate_after_a_stall_is_the_rate_frames_came_at():
    """25 fps, then the pipeline stalls for 10 s while the capture reads on; the frames read meanwhile
    are booked when it resumes, all at one instant. The rate stays near 25 fps (it was 5220 fps)."""
    t0, resume = 1000.0, 1014.0
    booked_together = RateMeter()  # the scheduler before tick(n=...): up to 64 ticks at the same moment
    for i in range(100):
        booked_together.tick(t0 + i / FPS)
    for _ in range(64):
        booked_together.tick(resume)
    for i in range(50):
        if i:
            booked_together.tick(resume + i / FPS)
        assert 0 < booked_together.rate(resume + i / FPS) <= 30
    counted = RateMeter()  # with the count booked at once: tick(now, n)
    for i in range(100):
        counted.tick(t0 + i / FPS)
    counted.tick(resume, 250)
    for i in range(50):
        if i:
            counted.tick(resume + i / FPS)
        assert 20 <= counted.rate(resume + i / FPS) <= 30
    steady = RateMeter()
    for i in range(300):
        steady.tick(t0 + i / FPS)
    assert steady.rate(t0 + 299 / FPS) == pytest.approx(25, abs=0.5)
    assert steady.rate(t0 + 20) == 0.0  # stopped long ago


def test_sink_errors_in_the_console_line_and_the_end_of_run_summary():
    stats = LiveStats()
    assert stats.failed_sinks() == [] and "sink errors" not in stats.line()
    for _ in range(3):
        stats.frames_out += 1
        assert stats.record_write("SegmentedFileSink", False) >= 1
        stats.record_write("MJPEGServer", True)
    stats.frames_out += 1
    stats.record_write("SegmentedFileSink", False)
    stats.record_write("MJPEGServer", False)
    stats.record_undelivered()
    assert stats.sink_errors == 5 and stats.frames_undelivered == 1
    assert "| sink errors 5 (1 frames reached no sink; disk full)" in stats.line(["disk full"])
    assert stats.failed_sinks() == ["SegmentedFileSink: 4 of 4 writes failed", "MJPEGServer: 1 of 4 writes failed"]
    snap = stats.snapshot()
    assert snap["sinks"]["SegmentedFileSink"] == {"written": 0, "failed": 4} and snap["frames_undelivered"] == 1
    assert 'styleid_live_sink_writes_total{sink="MJPEGServer",result="ok"} 3' in stats.prometheus()
    stats.sink_errors += 2  # booked without a sink name (e.g. a sink that failed to close)
    assert stats.failed_sinks()[-1] == "2 sink error(s)"


def test_sink_errors_of_a_real_pipeline_show_in_its_line():
    """A live pipeline whose only sink pushes to an RTSP port nobody listens on."""
    photo = cv2.resize(load_photo("biden.jpg"), (320, 240), interpolation=cv2.INTER_AREA)

    class Camera:
        name = "camera"
        frames = 20

        def open(self) -> float:
            return float(FPS)

        def read(self):
            self.frames -= 1
            time.sleep(1.0 / FPS)
            return photo if self.frames >= 0 else None

        def close(self) -> None:
            pass

    anon = Anonymizer(AnonymizerConfig(method="pixelate"), pack=None, use_default_pack=False)
    sink = StreamSink(f"rtsp://127.0.0.1:{free_ports(1)[0]}/out", FPS, retry_initial=0.2)
    pipeline = LivePipeline(LiveEngine(anon, FPS), Capture(Camera()), [sink], LiveConfig(fps=FPS))
    stats = pipeline.run()
    assert stats.sink_errors >= 1
    assert f"| sink errors {stats.sink_errors}" in stats.line() and stats.failed_sinks()


def test_several_sources_on_one_metrics_endpoint():
    one, two = LiveStats(), LiveStats()
    one.frames_in, one.frames_out, one.watchdog_restarts = 10, 8, 1
    two.frames_in, two.frames_out = 30, 25
    one.add_latency(0.010)
    two.add_latency(0.030)
    two.fallbacks["late"] += 2
    group = StatsGroup([("source-1", one), ("source-2", two)])
    group.count_shared_restart()  # what run_all's watchdog of the shared render worker calls
    server = MetricsServer(group, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/stats.json", timeout=10) as resp:
            snap = json.loads(resp.read())
    finally:
        server.close()
    assert 'styleid_live_frames_out_total{source="source-1"} 8' in text
    assert 'styleid_live_frames_out_total{source="source-2"} 25' in text
    assert 'styleid_live_fallbacks_total{source="source-2",reason="late"} 2' in text
    assert 'styleid_live_latency_ms{source="source-1",quantile="p50"} 10.0' in text
    assert 'styleid_live_watchdog_restarts_total{source="source-1"} 1' in text  # its capture, not the worker
    assert "styleid_live_shared_watchdog_restarts_total 1" in text
    assert text.count("# TYPE styleid_live_frames_out_total counter") == 1
    assert "\nstyleid_live_frames_out_total " not in text  # no unlabelled series beside the labelled ones
    lines = text.splitlines()
    family = [i for i, line in enumerate(lines) if line.startswith("styleid_live_frames_out_total")]
    assert family == list(range(family[0], family[0] + 2))  # one family's series together
    assert [s["source"] for s in snap["sources"]] == ["source-1", "source-2"]
    assert snap["sources"][1]["frames_out"] == 25 and snap["shared_watchdog_restarts"] == 1
    totals = snap["totals"]
    assert totals["frames_in"] == 40 and totals["frames_out"] == 33 and totals["watchdog_restarts"] == 2
    assert totals["fallbacks"] == {"late": 2} and totals["latency_ms"]["max"] == 30.0
    assert group.line().startswith("2 sources: ")
