"""Live streams (issue 6): real-time file source, deadline scheduler, segmented files, MJPEG,
reconnects, SIGTERM, and the Anonymizer API in a loop. CPU only, pixelate method (no pack).

No assertion depends on how fast this machine is, except generous latency bounds (seconds)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from media import moving_faces_clip

from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
from styleid_edge.runtime.live.engine import LiveEngine
from styleid_edge.runtime.live.httpserve import MetricsServer, parse_hostport
from styleid_edge.runtime.live.scheduler import LiveConfig, LivePipeline
from styleid_edge.runtime.live.sinks import (
    MemorySink,
    MJPEGServer,
    OutputFrame,
    SegmentedFileSink,
)
from styleid_edge.runtime.live.sources import (
    AVSource,
    Backoff,
    CameraSource,
    Capture,
    FileSource,
    SourceError,
    open_source,
)
from styleid_edge.runtime.live.stats import LiveStats
from styleid_edge.runtime.video import probe

FPS = 10
N_FRAMES = 30
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "clip.mp4"
    return moving_faces_clip(N_FRAMES, size=(480, 270), fps=FPS, face_height=0.3, path=path, audio=False)


@pytest.fixture(scope="module")
def anonymizer():
    return Anonymizer(AnonymizerConfig(method="pixelate"), pack=None, use_default_pack=False)


def face_changed(out: np.ndarray, original: np.ndarray, boxes, min_diff: float = 4.0) -> bool:
    """Every ground-truth face region differs clearly from the input (i.e. it is not raw)."""
    for b in boxes:
        x1, y1, x2, y2 = (round(v) for v in (b.x1, b.y1, b.x2, b.y2))
        diff = np.abs(out[y1:y2, x1:x2].astype(np.int16) - original[y1:y2, x1:x2].astype(np.int16)).mean()
        if diff < min_diff:
            return False
    return True


def check_no_raw_faces(frames: list[OutputFrame], clip) -> int:
    shown = 0
    for f in frames:
        if f.kind != "frame":
            continue
        shown += 1
        original = clip.frames[f.seq % len(clip.frames)]
        assert face_changed(f.image, original, clip.boxes[f.seq % len(clip.frames)]), f"raw face in frame {f.seq}"
    return shown


# --------------------------------------------------------------------------------------------


def test_file_source_realtime_to_segments(clip, anonymizer, tmp_path):
    memory = MemorySink()
    segments = SegmentedFileSink(tmp_path / "out", segment_seconds=1.0, fps=FPS)
    capture = Capture(FileSource(clip.path))
    pipeline = LivePipeline(LiveEngine(anonymizer, FPS), capture, [segments, memory], LiveConfig())
    t0 = time.monotonic()
    stats = pipeline.run()
    assert time.monotonic() - t0 >= (N_FRAMES - 1) / FPS * 0.9  # paced at the file's rate, not faster
    assert stats.frames_in == N_FRAMES
    assert stats.frames_out + stats.frames_dropped + stats.frames_stale == N_FRAMES
    assert stats.frames_out >= N_FRAMES // 4  # a busy 2-core machine drops some; an idle one none
    assert stats.faces >= stats.frames_out  # faces were found and counted
    # segment files: finished, playable, together holding every output frame
    files = sorted((tmp_path / "out").glob("*.mp4"))
    assert files == sorted(segments.segments) and len(files) >= 2
    assert not list((tmp_path / "out").glob(".*tmp*"))
    counts = [probe(f, count=True).frame_count for f in files]
    assert all(c > 0 for c in counts) and sum(counts) == stats.frames_out == segments.frames_written
    assert check_no_raw_faces(list(memory.frames), clip) == stats.frames_out
    lat = stats.latency_ms()
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def slow_generator(anon: Anonymizer, seconds: float) -> list[int]:
    """Make the pack's real generator ``seconds`` slower per call; returns the list of batch sizes."""
    calls: list[int] = []
    real = anon.engine.generate_crops  # what the anonymizer calls

    def generate_crops(crops, seeds, size):
        calls.append(len(crops))
        time.sleep(seconds)
        return real(crops, seeds, size)

    anon.engine.generate_crops = generate_crops
    return calls


def test_overloaded_pipeline_pixelates_late_faces(clip, tiny_pack):
    """The generator takes 0.3 s per call and the budget is 30 ms: every frame still goes out at
    the source's pace, with its faces pixelated (late or busy), never raw and never the late result."""
    anon = Anonymizer(AnonymizerConfig(method="latent", min_face=16), pack=tiny_pack)
    calls = slow_generator(anon, 0.3)
    memory = MemorySink()
    capture = Capture(FileSource(clip.path))
    pipeline = LivePipeline(LiveEngine(anon, FPS), capture, [memory], LiveConfig(budget_ms=30))
    stats = pipeline.run()
    frames = list(memory.frames)
    assert calls  # the generator did run (and was late)
    assert stats.frames_out == len(frames) >= N_FRAMES // 4
    assert stats.frames_out + stats.frames_dropped + stats.frames_stale == N_FRAMES
    assert check_no_raw_faces(frames, clip) == len(frames)
    assert all(f.late for f in frames if f.records)  # none waited for the slow generator
    records = [r for f in frames for r in f.records]
    assert records and all(r.method == "pixelate" and r.fallback for r in records)  # no late result shown
    assert {r.fallback for r in records} <= {"late", "busy", "too_small", "profile", "no_landmarks"}
    assert stats.late_frames >= 1 and stats.fallbacks["late"] >= 1
    assert sum(stats.fallbacks.values()) == stats.faces == len(records)
    # bounded latency: nowhere near a backlog of 0.3 s per frame
    assert stats.latency_ms()["max"] < 3000


def test_mjpeg_and_metrics_over_http(clip):
    server = MJPEGServer("127.0.0.1", 0)
    stats = LiveStats()
    stats.frames_out, stats.faces = 3, 5
    stats.add_latency(0.05)
    metrics = MetricsServer(stats, "127.0.0.1", 0)
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            server.write(OutputFrame(clip.frames[i % len(clip.frames)], time.monotonic(), i))
            i += 1
            time.sleep(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert server.host == "127.0.0.1"
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            ctype = resp.headers["Content-Type"]
            assert ctype.startswith("multipart/x-mixed-replace")
            boundary = ctype.split("boundary=")[1].encode()
            images = []
            while len(images) < 2:
                line = resp.readline()
                if line.strip() != b"--" + boundary:
                    continue
                headers = {}
                while (h := resp.readline().strip()):
                    k, v = h.decode().split(":", 1)
                    headers[k.lower()] = v.strip()
                assert headers["content-type"] == "image/jpeg"
                data = resp.read(int(headers["content-length"]))
                import cv2

                images.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        assert all(im is not None and im.shape == clip.frames[0].shape for im in images)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/stats.json", timeout=10) as resp:
            snap = json.loads(resp.read())
        assert snap["frames_out"] == 3 and snap["latency_ms"]["p50"] == 50.0
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "styleid_live_frames_out_total 3" in text and 'quantile="p99"' in text
    finally:
        stop.set()
        feeder.join(5)
        server.close()
        metrics.close()


class FlakySource:
    """Gives ``n`` frames, dies, refuses the first reconnection, then gives ``n`` more and ends."""

    name = "flaky"

    def __init__(self, frames: list[np.ndarray], n: int = 8) -> None:
        self.frames, self.n = frames, n
        self.opens = 0
        self.sent = 0

    def open(self) -> float:
        self.opens += 1
        if self.opens == 2:
            raise SourceError("connection refused")
        self.in_session = 0
        return 25.0

    def read(self):
        if self.opens == 1 and self.in_session == self.n:
            raise SourceError("cable unplugged")
        if self.opens >= 3 and self.in_session == self.n:
            return None
        time.sleep(0.02)
        image = self.frames[self.sent % len(self.frames)]
        self.in_session += 1
        self.sent += 1
        return image

    def close(self) -> None:
        pass


def test_source_dies_and_comes_back(clip, anonymizer):
    memory = MemorySink()
    source = FlakySource(clip.frames)
    capture = Capture(source, Backoff(initial=0.4, maximum=1.0))
    pipeline = LivePipeline(LiveEngine(anonymizer, 25), capture, [memory],
                            LiveConfig(fps=25, no_signal_after_ms=100))
    stats = pipeline.run()
    frames = list(memory.frames)
    kinds = "".join("F" if f.kind == "frame" else "N" for f in frames)
    assert source.opens == 3 and capture.reconnects == 1 and stats.reconnects == 1
    assert stats.no_signal_frames >= 1
    # frames, then no-signal cards while down, then frames again (nothing raw in between)
    assert kinds.startswith("F") and kinds.endswith("F") and "FN" in kinds and "NF" in kinds
    for f in frames:
        if f.kind == "no_signal":
            assert f.seq is None and not f.records
            assert all(np.abs(f.image.astype(np.int16) - raw).mean() > 20 for raw in clip.frames[:16])
    assert check_no_raw_faces(frames, clip) == stats.frames_out


def test_sigterm_finishes_last_segment(clip, tmp_path):
    out = tmp_path / "segs"
    argv = [str(clip.path), "--output", str(out), "--segment-seconds", "1", "--method", "pixelate", "--loop",
            "--stats-every", "0.5"]
    code = f"import sys; from styleid_edge.runtime.live.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.glob("*.mp4"))) < 1 and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.6)  # well inside the second segment
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    files = sorted(out.glob("*.mp4"))
    assert len(files) >= 2, log
    assert not [p for p in out.iterdir() if p.name.startswith(".") or ".partial" in p.name], log
    for f in files:
        assert probe(f, count=True).frame_count > 0
    assert "SIGTERM" in log and "final:" in log


def test_anonymizer_api_in_a_loop(clip):
    anon = Anonymizer(AnonymizerConfig(method="pixelate"), pack=None, use_default_pack=False)
    for frame, boxes in zip(clip.frames, clip.boxes):
        out, faces = anon.process(frame)
        assert out.shape == frame.shape and out is not frame
        assert len(faces) >= len(boxes)
        assert all(f.method == "pixelate" for f in faces)
        assert face_changed(out, frame, boxes)
    report = anon.finish().to_dict()
    assert report["frames"] == len(clip.frames) and report["faces_accounted"]


def test_source_specs_and_addresses(clip):
    assert isinstance(open_source("0"), CameraSource)
    assert isinstance(open_source("/dev/video3"), CameraSource)
    src = open_source("rtsp://127.0.0.1:8554/cam")
    assert isinstance(src, AVSource) and src.options["rtsp_transport"] == "tcp"
    assert isinstance(open_source(str(clip.path)), FileSource)
    with pytest.raises(SourceError, match="neither"):
        open_source("no/such/file.mp4")
    with pytest.raises(SourceError, match="scheme"):
        open_source("gopher://x")
    assert parse_hostport("8080") == ("127.0.0.1", 8080)
    assert parse_hostport("0.0.0.0:81") == ("0.0.0.0", 81)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_hostport("abc")


def test_mjpeg_stream_on_loopback_read_by_live_with_restart(clip, anonymizer):
    """A real HTTP/MJPEG stream (the package's own sink, serving the raw clip as a 'camera') read by
    the live pipeline through FFmpeg; the camera server is killed and restarted on the same port."""
    frame, boxes = clip.frames[0], clip.boxes[0]
    stop = threading.Event()

    def camera(server: MJPEGServer, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            server.write(OutputFrame(frame, time.monotonic()))
            time.sleep(0.04)
        server.close()

    cam = MJPEGServer("127.0.0.1", 0)
    port = cam.port
    feeder = threading.Thread(target=camera, args=(cam, 1.5), daemon=True)
    feeder.start()
    memory = MemorySink()
    capture = Capture(open_source(cam.url), Backoff(initial=0.2, maximum=0.5))
    pipeline = LivePipeline(LiveEngine(anonymizer, 25), capture, [memory],
                            LiveConfig(fps=25, no_signal_after_ms=150))
    runner = threading.Thread(target=pipeline.run, daemon=True)
    runner.start()
    try:
        feeder.join(10)
        time.sleep(0.6)  # camera down
        cam2 = MJPEGServer("127.0.0.1", port)
        feeder = threading.Thread(target=camera, args=(cam2, 30.0), daemon=True)
        feeder.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (capture.reconnects >= 1
                                                   and _frames_after_no_signal(memory) >= 5):
            time.sleep(0.1)
    finally:
        pipeline.stop()
        runner.join(30)
        stop.set()
        feeder.join(10)
    frames = list(memory.frames)
    assert capture.reconnects >= 1 and pipeline.stats.no_signal_frames >= 1
    assert _frames_after_no_signal(memory) >= 5
    for f in frames:
        if f.kind == "frame":
            assert face_changed(f.image, frame, boxes, min_diff=3.0)


def _frames_after_no_signal(memory: MemorySink) -> int:
    frames = list(memory.frames)
    kinds = [f.kind for f in frames]
    if "no_signal" not in kinds:
        return 0
    last_ns = len(kinds) - 1 - kinds[::-1].index("no_signal")
    return sum(k == "frame" for k in kinds[last_ns:])


class ListSource:
    name = "list"

    def __init__(self, frames: list[np.ndarray], interval: float = 0.1) -> None:
        self.frames, self.interval = frames, interval

    def open(self) -> float:
        self._i = 0
        return 1.0 / self.interval

    def read(self):
        if self._i >= len(self.frames):
            return None
        time.sleep(self.interval)
        self._i += 1
        return self.frames[self._i - 1]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("budget_ms, expect_late", [(20000, False), (1, True)])
def test_generative_method_under_deadline(clip, tiny_pack, budget_ms, expect_late):
    anon = Anonymizer(AnonymizerConfig(method="latent", min_face=16), pack=tiny_pack)
    frames = clip.frames[:6]
    memory = MemorySink()
    # the frame interval is long so that no frame is dropped while a frame's faces are generated
    capture = Capture(ListSource(frames, interval=0.05))
    pipeline = LivePipeline(LiveEngine(anon, 20), capture, [memory],
                            LiveConfig(budget_ms=budget_ms, max_age_ms=60000))
    stats = pipeline.run()
    out = list(memory.frames)
    assert out and check_no_raw_faces(out, clip) == len(out)
    methods = {r.method for f in out for r in f.records}
    if expect_late:
        assert stats.late_frames >= 1 and methods == {"pixelate"}
        assert stats.fallbacks["late"] >= 1
    else:
        assert stats.late_frames == 0 and stats.busy_frames == 0
        assert "latent" in methods  # the generative path produced the output
    report = anon.finish().to_dict()
    assert report["faces_accounted"] and report["frames"] == stats.frames_out


def test_detection_on_a_scaled_copy_finds_the_same_faces(clip):
    """``detect_max_side``: detection on a 3/4-size copy, boxes and landmarks mapped back (close to the
    full-size ones: the pixelation margin, 25 % of the box, covers the difference)."""
    from privacy import iou

    full = Anonymizer(AnonymizerConfig(method="pixelate"), pack=None, use_default_pack=False)
    half = Anonymizer(AnonymizerConfig(method="pixelate", detect_max_side=360), pack=None, use_default_pack=False)
    for frame, boxes in zip(clip.frames[::5], clip.boxes[::5]):
        a, b = full._detect(frame), half._detect(frame)
        for gt in boxes:  # every real face found by both, at the same place
            da = max(a, key=lambda d: iou(d.box, gt.xyxy))
            db = max(b, key=lambda d: iou(d.box, gt.xyxy))
            assert iou(da.box, gt.xyxy) > 0.5 and iou(db.box, da.box) > 0.6
            assert np.abs(db.landmarks - da.landmarks).max() < 0.15 * (da.box[2] - da.box[0])


@pytest.mark.parametrize("flag, value, message", [
    ("--fps", "0", "--fps: 0 is outside (0, 1000]"),
    ("--budget-ms", "-5", "--budget-ms: -5 is outside (0,"),
    ("--detect-max-side", "-1", "--detect-max-side: -1 is outside [0,"),
    ("--face-batch", "0", "--face-batch: 0 is outside [1, 1024]"),
    ("--thresh", "7", "--thresh: 7 is outside (0, 1]"),
])
def test_live_refuses_out_of_range_flags(tmp_path, capsys, flag, value, message):
    from styleid_edge.cli import main as cli_main

    with pytest.raises(SystemExit) as exc:
        cli_main(["live", "0", "-o", str(tmp_path / "out"), flag, value])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
