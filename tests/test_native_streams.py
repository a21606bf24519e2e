"""styleid-edge-rt input and output (issue 8): an H.264 stream sent by a real FFmpeg encoder on loopback
(PyAV's, through the package's own StreamSink) as MPEG-TS over UDP, or pushed over RTSP into
``--rtsp-listen``; Ctrl-C (SIGINT) on an endless stream finishes the output file; clear errors for streams
that cannot be opened and for flags that need an rtsp:// input; .mp4 output is H.264 and odd frame sizes
keep every pixel.

Camera devices (``0``, ``/dev/video0``) take the same read path after opening; there is no camera here.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import free_ports, moving_faces_clip
from test_live import face_changed
from test_native import native, native_assets  # noqa: F401 - the shared build and tiny pack fixtures

from styleid_edge.runtime.live.sinks import OutputFrame, StreamSink

FPS = 25


@pytest.fixture(scope="module")
def still():
    """A still scene with one face (the first frame of a clip) and its ground-truth boxes."""
    clip = moving_faces_clip(2, size=(320, 240), fps=FPS, face_height=0.35, audio=False, seed=3)
    return clip.frames[0], clip.boxes[0]


@pytest.fixture()
def rt(native):  # noqa: F811
    cli = native.path.parent / "styleid-edge-rt"
    if not cli.is_file():
        pytest.fail(f"{cli} is missing: build the native CLI (cmake --build build)")
    return cli


class Pusher:
    """Sends ``frame`` at 25 fps to ``url`` as H.264 (StreamSink: MPEG-TS over UDP, or an RTSP push)
    from a thread, until stopped or ``seconds`` have passed."""

    def __init__(self, url: str, frame: np.ndarray, seconds: float = 40.0) -> None:
        self.sink = StreamSink(url, FPS, retry_initial=0.2, retry_max=0.5)
        self.frame, self.seconds = frame, seconds
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0, n = time.monotonic(), 0
        while not self.stopped.is_set() and time.monotonic() - t0 < self.seconds:
            try:
                self.sink.write(OutputFrame(self.frame, time.monotonic()))
            except RuntimeError:
                pass  # the listener is not up yet: StreamSink retries after its back-off
            n += 1
            time.sleep(max(0.0, t0 + n / FPS - time.monotonic()))
        self.sink.close()

    def __enter__(self) -> Pusher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(20)


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            return frames
        frames.append(f)


def check_anonymized_stream(frames: list[np.ndarray], raw: np.ndarray, boxes) -> None:
    """Every frame is the still scene (close to it away from the face) with its face pixelated."""
    for i, f in enumerate(frames):
        assert f.shape == raw.shape, i
        assert cv2.absdiff(f, raw).mean() < 25, i  # the picture arrived
        assert face_changed(f, raw, boxes, min_diff=3.0), i  # ... and its face did not


def test_rt_anonymizes_a_udp_stream(rt, native_assets, still, tmp_path):  # noqa: F811
    raw, boxes = still
    port = free_ports(1, socket.SOCK_DGRAM)[0]
    out, report = tmp_path / "udp.avi", tmp_path / "udp.json"
    proc = subprocess.Popen([str(rt), f"udp://127.0.0.1:{port}", "-o", str(out), "--pack",
                             str(native_assets / "pack"), "--method", "pixelate", "--max-frames", "20",
                             "--report", str(report), "-q"], stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # listening first: UDP has no handshake
    with Pusher(f"udp://127.0.0.1:{port}", raw):
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    r = json.loads(report.read_text())
    assert r["frames"] == 20 and r["faces"] >= 20 and r["by_method"] == {"pixelate": r["faces"]}
    assert r["stopped_by_signal"] is False and r["error"] is None
    frames = read_video(out)
    assert len(frames) == 20
    check_anonymized_stream(frames, raw, boxes)


def test_rt_listens_for_an_rtsp_push_and_ctrl_c_finishes_the_output(rt, native_assets, still, tmp_path):  # noqa: F811
    """An endless RTSP push into --rtsp-listen, stopped with SIGINT after a few seconds: exit 0, the
    report says so, and the .mp4 is complete (playable, every anonymized frame in it)."""
    raw, boxes = still
    url = f"rtsp://127.0.0.1:{free_ports(1)[0]}/cam"
    out, report = tmp_path / "rtsp.mp4", tmp_path / "rtsp.json"
    proc = subprocess.Popen([str(rt), url, "--rtsp-listen", "--open-timeout", "60", "-o", str(out), "--pack",
                             str(native_assets / "pack"), "--method", "pixelate", "--report", str(report)],
                            stderr=subprocess.PIPE, text=True)
    try:
        with Pusher(url, raw) as pusher:
            deadline = time.monotonic() + 45
            while pusher.sink.frames_written < 75 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert pusher.sink.frames_written >= 75, "the RTSP push never got through"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "waiting up to 60 s for a push" in err and "stopped by a signal" in err
    r = json.loads(report.read_text())
    assert r["stopped_by_signal"] is True and r["error"] is None
    frames = read_video(out)
    assert r["frames"] >= 25 and len(frames) == r["frames"]  # nothing read was lost
    check_anonymized_stream(frames, raw, boxes)


def test_rt_stream_errors_name_the_url_and_the_fix(rt, native_assets, tmp_path):  # noqa: F811
    pack = str(native_assets / "pack")
    url = f"rtsp://127.0.0.1:{free_ports(1)[0]}/nothing-here"
    t0 = time.monotonic()
    run = subprocess.run([str(rt), url, "-o", str(tmp_path / "x.mp4"), "--pack", pack, "--open-timeout", "3",
                          "--rtsp-transport", "tcp", "-q"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert url in run.stderr and "cannot open this stream" in run.stderr, run.stderr
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "x.mp4").exists()

    run = subprocess.run([str(rt), str(tmp_path / "in.mp4"), "--rtsp-listen", "-o", str(tmp_path / "y.mp4"),
                          "--pack", pack], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "need an rtsp:// INPUT" in run.stderr, run.stderr
    run = subprocess.run([str(rt), url, "--rtsp-transport", "quic", "-o", str(tmp_path / "y.mp4"),
                          "--pack", pack], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "--rtsp-transport must be tcp or udp" in run.stderr, run.stderr
    for flag, value, message in (("--thresh", "7", "--thresh must be in (0, 1]"),
                                 ("--weak-thresh", "-1", "--weak-thresh must be in [0, 1]"),
                                 ("--min-face", "-3", "--min-face must be >= 0")):
        run = subprocess.run([str(rt), str(tmp_path / "in.mp4"), "-o", str(tmp_path / "y.mp4"), "--pack", pack,
                              flag, value], capture_output=True, text=True, timeout=30)
        assert run.returncode == 2 and message in run.stderr, (flag, run.stderr)


def test_rt_writes_h264_mp4_and_keeps_every_pixel_of_odd_sizes(rt, native_assets, tmp_path):  # noqa: F811
    """.mp4 out is H.264; a 321x241 input (odd: the encoders need even sizes, and OpenCV would drop the
    last row and column) comes out 322x242 with the last column/row repeated, every frame there."""
    av = pytest.importorskip("av")
    src = tmp_path / "odd.mkv"
    frames = [np.full((241, 321, 3), 30 + 40 * i, np.uint8) for i in range(5)]
    for f in frames:
        f[:, -1] = (0, 0, 255)  # the last column is red: it must survive
    with av.open(str(src), "w") as c:
        s = c.add_stream("ffv1", rate=FPS)
        s.width, s.height, s.pix_fmt = 321, 241, "bgr0"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = tmp_path / "odd.mp4"
    run = subprocess.run([str(rt), str(src), "-o", str(out), "--pack", str(native_assets / "pack"), "--method",
                          "pixelate", "-q"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        got = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(got) == 5 and got[0].shape == (242, 322, 3)
    for f, g in zip(frames, got):
        assert np.abs(g[:241, :320].astype(int) - f[:, :320]).mean() < 3  # the picture (no faces in it)
        red = g[:241, 320:322].reshape(-1, 3).mean(0)
        assert red[2] > 150 and red[0] < 90 and red[1] < 90, red  # column 321 kept (and repeated)
