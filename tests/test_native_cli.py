"""styleid-edge-rt on wrong and damaged input, as a user meets it: bad flag values and paths are refused
before any work (exit 2), the input is never overwritten, a cut-off file is said to be cut off (exit 3, the
report's warnings), a file nothing can be decoded from leaves nothing behind, a write that fails (a full
disk, simulated with a file-size limit) is an error, and Ctrl-C on a file exits 130 with a playable output."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest
from media import moving_faces_clip
from test_native import native, native_assets  # noqa: F401 - the shared build and tiny pack fixtures
from test_native_streams import rt  # noqa: F401

FPS = 25


def _write_avi(frames, path):
    """MJPEG .avi (its container records the frame count)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip_avi(tmp_path_factory):
    """60 frames with a moving face."""
    clip = moving_faces_clip(60, size=(320, 180), fps=FPS, face_height=0.35, audio=False, seed=5)
    return _write_avi(clip.frames, tmp_path_factory.mktemp("rt-cli") / "clip.avi")


def _run(rt, *args, timeout=120, **kw):  # noqa: F811
    return subprocess.run([str(rt), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_rt_refuses_bad_values_and_paths_before_any_work(rt, native_assets, clip_avi, tmp_path):  # noqa: F811
    pack = native_assets / "pack"
    out = tmp_path / "out.mp4"
    before = clip_avi.read_bytes()
    cases = [
        (["--strength", "0"], "--strength must be in (0, 1]"),
        (["--strength", "nan"], "--strength must be in (0, 1]"),
        (["--seed", "-1"], "bad value for --seed"),
        (["--min-face", "12abc"], "'12abc' is not a number"),
        (["--max-frames", "0"], "--max-frames must be >= 1"),
        (["--threads", "-2"], "--threads must be >= 0"),
        (["--report", str(tmp_path / "missing" / "r.json")], "does not exist"),
        (["--report", str(tmp_path)], "is a folder"),
    ]
    for extra, message in cases:
        run = _run(rt, clip_avi, "-o", out, "--pack", pack, *extra)
        assert run.returncode == 2 and message in run.stderr, (extra, run.stderr)
        assert "error:" in run.stderr and len(run.stderr.splitlines()) == 2, run.stderr  # not the whole --help
    run = _run(rt, clip_avi, "-o", clip_avi, "--pack", pack)
    assert run.returncode == 2 and "is the input" in run.stderr
    assert clip_avi.read_bytes() == before  # untouched
    for report, what in ((clip_avi, "is the input"), (out, "is the output")):  # the report overwrote the input
        run = _run(rt, clip_avi, "-o", out, "--pack", pack, "--report", report)
        assert run.returncode == 2 and what in run.stderr, run.stderr
    run = _run(rt, clip_avi, "-o", tmp_path, "--pack", pack)
    assert run.returncode == 2 and "is a folder; give a file name" in run.stderr
    assert clip_avi.read_bytes() == before and not out.exists()
    run = _run(rt, clip_avi, "-o", tmp_path / "frame.png", "--pack", pack)
    assert run.returncode == 2 and "only its last frame would be kept" in run.stderr
    run = _run(rt, clip_avi, "-o", tmp_path / "missing" / "o.mp4", "--pack", pack)
    assert run.returncode == 2 and "does not exist; create it first" in run.stderr
    for timeout in ("nan", "inf", "1e12", "-1"):
        run = _run(rt, clip_avi, "-o", out, "--pack", pack, "--read-timeout", timeout)
        assert run.returncode == 2 and "must be in (0, 1e6] seconds" in run.stderr, (timeout, run.stderr)
    run = _run(rt, clip_avi, "-o", out, "--pack", pack, "--min-face", "4294967297")
    assert run.returncode == 2 and "--min-face must be" in run.stderr
    run = _run(rt, tmp_path / "nothere.mp4", "-o", out, "--pack", pack)
    assert run.returncode == 2 and "nothere.mp4: no such file" in run.stderr
    assert not out.exists() and not (tmp_path / "frame.png").exists()
    run = _run(rt, clip_avi, "-o", tmp_path / "one.png", "--pack", pack, "--method", "pixelate", "--max-frames", "1")
    assert run.returncode == 0 and cv2.imread(str(tmp_path / "one.png")).shape == (180, 320, 3), run.stderr
    # the library takes what the CLI allows: --thresh 1 and --weak-thresh 1 are valid (they find almost nothing)
    run = _run(rt, clip_avi, "-o", out, "--pack", pack, "--method", "pixelate", "--thresh", "1", "--weak-thresh", "1",
               "--max-frames", "3", "-q")
    assert run.returncode == 0, run.stderr
    assert _frames(out) == 3


def test_rt_says_a_cut_off_file_is_cut_off_and_leaves_nothing_for_an_undecodable_one(
        rt, native_assets, clip_avi, tmp_path):  # noqa: F811
    pack = native_assets / "pack"
    data = clip_avi.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out, report = tmp_path / "cut.mp4", tmp_path / "cut.json"
    run = _run(rt, cut, "-o", out, "--pack", pack, "--method", "pixelate", "--report", report)
    assert run.returncode == 3, run.stderr
    r = json.loads(report.read_text())
    assert 10 < r["frames"] < 40 and r["error"] is None
    assert len(r["warnings"]) == 1 and f"ended after {r['frames']} of its 60 frames" in r["warnings"][0]
    assert "WARNING" in run.stderr and "cut off or damaged" in run.stderr
    assert _frames(out) == r["frames"]  # every frame that could be read is in the output
    # the whole file: no warning, exit 0
    run = _run(rt, clip_avi, "-o", tmp_path / "whole.mp4", "--pack", pack, "--method", "pixelate", "--report", report)
    assert run.returncode == 0 and json.loads(report.read_text())["warnings"] == [], run.stderr
    assert _frames(tmp_path / "whole.mp4") == 60
    # cut inside its header: it cannot be opened; nothing is written
    head = tmp_path / "head.avi"
    head.write_bytes(data[:3000])
    run = _run(rt, head, "-o", tmp_path / "head.mp4", "--pack", pack, "--method", "pixelate")
    assert run.returncode == 2 and "head.avi" in run.stderr and "cannot open" in run.stderr
    assert not (tmp_path / "head.mp4").exists()


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_rt_reports_a_write_that_failed_instead_of_exit_0(rt, native_assets, clip_avi, tmp_path):  # noqa: F811
    out, report = tmp_path / "full.mp4", tmp_path / "full.json"
    run = _run(rt, clip_avi, "-o", out, "--pack", native_assets / "pack", "--method", "pixelate", "-q",
               "--report", report, preexec_fn=_file_size_limit(20_000))
    assert run.returncode == 3, run.stderr
    assert "could not finish the file" in run.stderr and "disk full" in run.stderr
    assert "may be incomplete" in run.stderr
    assert "disk full" in json.loads(report.read_text())["error"]


@pytest.mark.parametrize("presses", [1, 2])
def test_rt_ctrl_c_on_a_file_exits_130_with_a_playable_partial_output(
        rt, native_assets, tmp_path, presses):  # noqa: F811
    """One Ctrl-C: the frames already read are anonymized and the output finished; a second one finishes it at
    once with the frames done (the read ones are dropped, never written raw); both say so on the terminal."""
    clip = moving_faces_clip(400, size=(320, 180), fps=FPS, face_height=0.35, audio=False, seed=6)
    src = _write_avi(clip.frames, tmp_path / "long.avi")
    out, report = tmp_path / "long.mp4", tmp_path / "long.json"
    proc = subprocess.Popen([str(rt), str(src), "-o", str(out), "--pack", str(native_assets / "pack"),
                             "--report", str(report), "--threads", "1"], stderr=subprocess.PIPE, text=True)
    try:  # Ctrl-C finishes the output once it exists (during the model load it ends the process at once)
        deadline = time.monotonic() + 120
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None, "the run ended before Ctrl-C: make the clip longer"
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    r = json.loads(report.read_text())
    assert r["stopped_by_signal"] is True and 0 < r["frames"] < 400 and r["warnings"] == []
    assert "stopped by a signal" in err and f"holds {r['frames']} frames" in err
    assert "stopping: anonymizing the frames already read" in err
    assert ("finishing the output with the frames done so far" in err) == (presses == 2)
    assert _frames(out) == r["frames"]
    first = cv2.VideoCapture(str(out)).read()[1]
    assert first is not None and np.abs(first.astype(int) - clip.frames[0]).mean() < 20  # the same scene


def test_rt_loads_a_pack_whose_files_are_symlinks(rt, native_assets, clip_avi, tmp_path):  # noqa: F811
    linked = tmp_path / "linked"
    linked.mkdir()
    for item in (native_assets / "pack").iterdir():
        (linked / item.name).symlink_to(item.resolve())
    run = _run(rt, clip_avi, "-o", tmp_path / "o.mp4", "--pack", linked, "--max-frames", "2", "-q")
    assert run.returncode == 0, run.stderr
    assert _frames(tmp_path / "o.mp4") == 2


def test_rt_says_when_the_pack_has_no_calibrated_identity_ranks(
        rt, native, native_assets, clip_avi, tmp_path):  # noqa: F811
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(native_assets / "pack", bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    manifest["ranks"] = {}
    (bare / "manifest.json").write_text(json.dumps(manifest))
    for pack, calibrated in ((native_assets / "pack", 1), (bare, 0)):
        run = _run(rt, clip_avi, "-o", tmp_path / "o.mp4", "--pack", pack, "--max-frames", "2")
        assert run.returncode == 0, run.stderr
        assert ("no calibrated identity ranks" in run.stderr) == (not calibrated), run.stderr
        with native.create(pack) as h:
            assert h.info().ranks_calibrated == calibrated


@pytest.mark.parametrize("rotation", [90, 270])
def test_rt_writes_a_rotation_tagged_clip_upright(rt, native_assets, tmp_path, rotation):  # noqa: F811
    """A phone clip: frames stored sideways with a display rotation. The output shows it the way a player (and
    the Python runtime, through PyAV) does; OpenCV 4.6 alone turned such clips upside down (opencv#22088)."""
    from media import make_video

    from styleid_edge.runtime.video import from_display

    clip = moving_faces_clip(3, size=(320, 180), fps=FPS, face_height=0.35, audio=False, seed=5)
    stored = [from_display(f, rotation) for f in clip.frames]  # what the camera wrote
    src = make_video(tmp_path / "phone.mp4", stored, fps=FPS, audio=False, rotation=rotation)
    run = _run(rt, src, "-o", tmp_path / "o.png", "--pack", native_assets / "pack", "--method", "pixelate",
               "--max-frames", "1", "-q")
    assert run.returncode == 0, run.stderr
    out = cv2.imread(str(tmp_path / "o.png"))
    upright = clip.frames[0]
    assert out.shape == upright.shape
    diff = float(np.abs(out.astype(np.int16) - upright).mean())
    turned = float(np.abs(out.astype(np.int16) - cv2.rotate(upright, cv2.ROTATE_180)).mean())
    assert diff < 12 and turned > 2 * diff, (diff, turned)  # upright (the pixelated face aside), not turned
