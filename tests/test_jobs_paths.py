"""File jobs: what a user's paths and flags may and may not do (``styleid-edge anonymize``).

Nothing here may destroy an input or an output (``-o`` a folder holding the input, ``--report`` on a
media file), folders are walked with their subfolders, a failed run still leaves a report that says
so, SIGTERM stops a run the way Ctrl-C does, and flags that do nothing on their own are refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import media
from styleid_edge.cli import main as cli_main
from styleid_edge.files import sha256_file
from styleid_edge.runtime.video import probe

from conftest import PHOTOS

REPO = Path(__file__).resolve().parents[1]


def _small_photo(path: Path, name: str = "obama2.jpg") -> Path:
    img = cv2.imread(str(PHOTOS / name))
    cv2.imwrite(str(path), cv2.resize(img, (img.shape[1] // 3, img.shape[0] // 3)))
    return path


def test_output_folder_holding_the_input_never_overwrites_it(tmp_path, capsys):
    photo = _small_photo(tmp_path / "victim.jpg")
    before = sha256_file(photo)
    os.chdir(tmp_path)
    assert cli_main(["anonymize", "victim.jpg", "-o", ".", "--method", "pixelate", "-q"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert cli_main(["anonymize", str(tmp_path), "-o", str(tmp_path), "--method", "pixelate", "-q"]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert sha256_file(photo) == before and sorted(p.name for p in tmp_path.iterdir()) == ["victim.jpg"]


def test_report_path_may_not_be_an_input_or_an_output(tmp_path, capsys):
    photo = _small_photo(tmp_path / "in.jpg")
    before = sha256_file(photo)
    out = tmp_path / "out.jpg"
    for report, what in ((photo, "is the input"), (out, "is an output"), (tmp_path, "is a folder")):
        assert cli_main(["anonymize", str(photo), "-o", str(out), "--report", str(report), "--method", "pixelate",
                         "-q"]) == 2
        assert what in capsys.readouterr().err
    assert sha256_file(photo) == before and not out.exists()


def test_folder_input_walks_subfolders_and_skips_its_own_output_folder(tmp_path, tiny_pack, caplog):
    src = tmp_path / "footage"
    (src / "2024-05-01" / "cam 1").mkdir(parents=True)
    _small_photo(src / "top.jpg", "biden.jpg")
    _small_photo(src / "2024-05-01" / "cam 1" / "nested.jpg")
    media.moving_faces_clip(n_frames=4, size=(320, 240), path=src / "2024-05-01" / "clip.mp4", audio=False)
    (src / "notes.txt").write_text("not media")
    out = src / "anonymized"  # inside the input folder: its files are outputs, not inputs
    report_path = tmp_path / "reports" / "deep" / "r.json"  # folders made up front
    argv = ["anonymize", str(src), "-o", str(out), "--pack", str(tiny_pack.root), "--method", "pixel", "-q",
            "--report", str(report_path)]
    caplog.set_level("INFO")
    assert cli_main(argv) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["2024-05-01/cam 1/nested.jpg", "2024-05-01/clip.mp4", "top.jpg"]
    assert "skipping 1 file(s) that are not inputs (1 neither image nor video): notes.txt" in caplog.text
    a, b = cv2.imread(str(src / "2024-05-01" / "cam 1" / "nested.jpg")), cv2.imread(str(out / written[0]))
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() > 50
    d = json.loads(report_path.read_text())
    assert d["tool"].startswith("styleid-edge ") and not d["failed"] and not d["errors"]
    assert d["skipped"] == [{"path": str(src / "notes.txt"), "reason": "neither an image nor a video"}]
    by_name = {Path(e["input"]).name: e for e in d["inputs"]}
    assert by_name["clip.mp4"]["output_sha256"] == sha256_file(out / "2024-05-01" / "clip.mp4")
    assert by_name["nested.jpg"]["input_sha256"] == sha256_file(src / "2024-05-01" / "cam 1" / "nested.jpg")
    assert cli_main(argv) == 0  # a second run: the earlier outputs are not taken as inputs
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == written


def test_failed_runs_write_a_report_that_says_so(tmp_path, tiny_pack):
    fake = tmp_path / "fake.mp4"
    fake.write_text("hello, not a video")
    report = tmp_path / "fake.json"
    assert cli_main(["anonymize", str(fake), "-o", str(tmp_path / "x.mp4"), "--report", str(report), "-q"]) == 2
    d = json.loads(report.read_text())
    assert d["failed"] and d["errors"] and "fake.mp4" in d["errors"][0]
    # a pack that cannot load: the report names the problem too
    report2 = tmp_path / "nopack.json"
    photo = _small_photo(tmp_path / "p.jpg")
    assert cli_main(["anonymize", str(photo), "-o", str(tmp_path / "p_out.jpg"), "--pack", str(tmp_path / "nope"),
                     "--report", str(report2), "-q"]) == 2
    d2 = json.loads(report2.read_text())
    assert d2["failed"] and "does not exist" in d2["errors"][0]
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "p_out.jpg").exists()


def test_image_and_video_outputs_must_match_their_input_before_models_load(tmp_path, capsys):
    clip = media.moving_faces_clip(n_frames=2, size=(160, 120), path=tmp_path / "c.mp4", audio=False)
    assert cli_main(["anonymize", str(clip.path), "-o", str(tmp_path / "c.jpg"), "-q"]) == 2
    assert "is an image but" in capsys.readouterr().err
    photo = _small_photo(tmp_path / "p.jpg")
    assert cli_main(["anonymize", str(photo), "-o", str(tmp_path / "p.mp4"), "-q"]) == 2
    assert "p.jpg is an image" in capsys.readouterr().err
    # an image into a folder that does not exist yet: made, as for videos
    assert cli_main(["anonymize", str(photo), "-o", str(tmp_path / "new" / "dir" / "p.jpg"), "--method",
                     "pixelate", "-q"]) == 0
    assert cv2.imread(str(tmp_path / "new" / "dir" / "p.jpg")) is not None


@pytest.mark.parametrize("argv, message", [
    (["--workers", "4"], "--workers sets how many files run in parallel on a Ray cluster: add --ray"),
    (["--url", "localhost:8001"], "--url is the Triton server's address: add --backend triton"),
    (["--strength", "2"], "--strength: 2 is outside (0, 1]"),
    (["--min-face", "-5"], "--min-face: -5 is outside [0, 1048576]"),
])
def test_flags_that_do_nothing_or_are_out_of_range_are_refused(tmp_path, capsys, argv, message):
    photo = _small_photo(tmp_path / "p.jpg")
    try:
        code = cli_main(["anonymize", str(photo), "-o", str(tmp_path / "o.jpg"), "--method", "pixelate", *argv])
    except SystemExit as exc:  # argparse's own range errors
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o.jpg").exists()


def test_verbose_flag_after_the_subcommand_and_pack_given_as_a_file(tmp_path, capsys, tiny_pack):
    photo = _small_photo(tmp_path / "p.jpg")
    manifest = tiny_pack.root / "manifest.json"
    assert cli_main(["anonymize", str(photo), "-o", str(tmp_path / "o.jpg"), "--pack", str(manifest), "-v"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a model pack" in err and str(tiny_pack.root) in err


def test_weak_threshold_above_the_threshold_is_warned(tmp_path, caplog):
    from styleid_edge.runtime.detect import make_detector

    make_detector("yunet", threshold=0.5, weak_threshold=0.9)
    assert "weak threshold 0.9 is above the detection threshold 0.5" in caplog.text


def test_sigterm_stops_a_run_like_ctrl_c(tmp_path, tiny_pack):
    """`kill`/`docker stop`/systemd: the frames done are kept in NAME.partial.mp4, the report says
    interrupted, exit 143, no temporary file left behind."""
    n = 400
    clip = media.moving_faces_clip(n_frames=n, size=(320, 240), path=tmp_path / "in.mp4", audio=True)
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "styleid_edge", "anonymize", str(clip.path), "-o", str(out),
                             "--pack", str(tiny_pack.root), "--method", "pixelate", "--report", str(report)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait until frames are being written
        if list(tmp_path.glob(".out.*.tmp.mp4")):
            time.sleep(0.5)
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err
    partial = tmp_path / "out.partial.mp4"
    d = json.loads(report.read_text())
    assert d["interrupted"] and 0 < d["inputs"][0]["frames_out"] < n
    assert probe(partial).frame_count == d["inputs"][0]["frames_out"]
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_sigterm_handler_leaves_no_trace_after_the_command(tmp_path):
    """main() installs its SIGTERM handler for the command only on the main thread; a library caller's own
    handler is what it was when main() returns."""
    previous = signal.getsignal(signal.SIGTERM)
    photo = _small_photo(tmp_path / "p.jpg")
    cli_main(["anonymize", str(photo), "-o", str(tmp_path / "o.jpg"), "--method", "pixelate", "-q"])
    assert signal.getsignal(signal.SIGTERM) is previous


def test_detect_angles_find_faces_of_a_sideways_camera_without_a_rotation_tag(tmp_path, tiny_pack):
    """Pixels turned 90 degrees and no tag: the default passes (+-30) miss faces lying on their side,
    --detect-angles 90,-90 finds and pixelates them."""
    clip = media.moving_faces_clip(n_frames=3, size=(480, 272), photos=("obama.jpg",), seed=0, background="plain")
    sideways = [np.ascontiguousarray(np.rot90(f, -1)) for f in clip.frames]
    src = media.make_video(tmp_path / "side.mp4", sideways, fps=25, audio=False)
    counts = {}
    for name, angles in (("default", []), ("sideways", ["--detect-angles", "30,-30,90,-90"])):
        report = tmp_path / f"{name}.json"
        assert cli_main(["anonymize", str(src), "-o", str(tmp_path / f"{name}.mp4"), "--method", "pixelate", "-q",
                         "--pack", str(tiny_pack.root), "--report", str(report), *angles]) == 0
        counts[name] = json.loads(report.read_text())["faces_detected"]
    assert counts["default"] < 3 <= counts["sideways"], counts  # the default misses frames, 90 finds every one


def test_detect_angles_flag_values():
    from styleid_edge.runtime.cli_types import angle_list

    assert angle_list("-30,30,90") == (-30.0, 30.0, 90.0) and angle_list("none") == ()
    for bad in ("x", "200"):
        with pytest.raises(Exception, match="angle|outside"):
            angle_list(bad)


def test_a_container_that_cannot_take_h264_is_refused_before_any_work(tmp_path, capsys, caplog):
    clip = media.moving_faces_clip(n_frames=2, size=(160, 120), path=tmp_path / "c.mp4", audio=False)
    caplog.set_level("INFO")
    assert cli_main(["anonymize", str(clip.path), "-o", str(tmp_path / "c.webm"), "--method", "pixelate"]) == 2
    assert "the .webm container does not take 'libx264' video" in capsys.readouterr().err
    assert "frames" not in caplog.text and not list(tmp_path.glob("*.webm")) and not list(tmp_path.glob(".c*"))


def test_an_output_folder_above_the_input_folder_never_replaces_an_input(tmp_path, capsys):
    nest = tmp_path / "nest"
    (nest / "photos" / "photos").mkdir(parents=True)
    deep = _small_photo(nest / "photos" / "photos" / "a.jpg")
    top = _small_photo(nest / "photos" / "a.jpg", "biden.jpg")
    before = sha256_file(top)
    # nest/photos/photos/a.jpg would be written to nest/photos/a.jpg, which is an input
    assert cli_main(["anonymize", str(nest / "photos"), "-o", str(nest), "--method", "pixelate", "-q"]) == 2
    assert "would replace an input" in capsys.readouterr().err
    assert sha256_file(top) == before and deep.exists()
    # no clash: the folder above takes the outputs
    (nest / "photos" / "photos" / "a.jpg").rename(nest / "photos" / "photos" / "b.jpg")
    assert cli_main(["anonymize", str(nest / "photos"), "-o", str(nest), "--method", "pixelate", "-q"]) == 0
    assert (nest / "a.jpg").is_file() and (nest / "photos" / "b.jpg").is_file() and sha256_file(top) == before


# In a child process: Ctrl-C at frame 100 of anonymize (x264 holds back ~40 frames before its first packet), with files limited to what the output holds by
# then (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG as on a full disk), so finishing fails too.
CTRL_C_ON_A_FULL_DISK = r"""
import json, resource, signal, sys
from pathlib import Path
from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
from styleid_edge.runtime.jobs import JobOptions, anonymize_path

src, out, report = map(Path, sys.argv[1:4])
real, calls = Anonymizer.process, {"n": 0}

def process(self, image):
    calls["n"] += 1
    if calls["n"] == 100:
        tmp = max(out.parent.glob(".out.*"), key=lambda p: p.stat().st_size)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (tmp.stat().st_size, resource.RLIM_INFINITY))
        raise KeyboardInterrupt
    return real(self, image)

Anonymizer.process = process
try:
    anonymize_path(src, out, AnonymizerConfig(method="pixelate"), options=JobOptions(quiet=True, report=report))
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c_stays_the_outcome_when_finishing_the_output_fails_too(tmp_path):
    clip = media.moving_faces_clip(n_frames=120, size=(320, 240), path=tmp_path / "in.mp4", audio=False)
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    report.write_text("{}")  # (the report may not grow past the limit either: it exists, small)
    done = subprocess.run([sys.executable, "-c", CTRL_C_ON_A_FULL_DISK, str(clip.path), str(out), str(report)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("interrupted"), done.stderr[-2000:]
    assert "kept" in done.stderr and not out.exists()
    assert list(tmp_path.glob("out*.partial.mp4")), sorted(p.name for p in tmp_path.iterdir())


# --- paths that cannot be written, skipped inputs, stale partial files, a full disk ----------------------
def _refuses_new_files(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return True
    os.close(fd)
    os.unlink(name)
    return False


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder that refuses new files: ours made read-only (chmod 555), or, where that does not stop writes
    (running as root, as CI does), /sys, which refuses new files to root too."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if _refuses_new_files(ro):
            yield ro
            return
        sysfs = Path("/sys")
        if not (sysfs.is_dir() and _refuses_new_files(sysfs)):
            pytest.skip("no folder here refuses new files (not even /sys); the tests with a file in the path cover "
                        "the refusal")
        yield sysfs
    finally:
        ro.chmod(0o755)


def test_unwritable_report_path_is_refused_before_the_models_load(tmp_path, capsys, caplog):
    photo = _small_photo(tmp_path / "p.jpg")
    blocker = tmp_path / "notes.txt"  # a regular file where the report's folder would be: no one can write there
    blocker.write_text("a file, not a folder")
    caplog.set_level("INFO")
    for report in (blocker / "r.json", blocker / "deep" / "r.json"):
        assert cli_main(["anonymize", str(photo), "-o", str(tmp_path / "o.jpg"), "--report", str(report),
                         "--method", "pixelate", "-q"]) == 2
        err = capsys.readouterr().err
        assert f"cannot write the report {report}" in err and "is a file, not a folder" in err, err
        assert "--report path in a folder you can write to" in err
    assert not (tmp_path / "o.jpg").exists() and "Traceback" not in caplog.text


def test_read_only_report_folder_is_refused(tmp_path, capsys, read_only_dir):
    ro = read_only_dir
    photo = _small_photo(tmp_path / "p.jpg")
    assert cli_main(["anonymize", str(photo), "-o", str(tmp_path / "o.jpg"), "--report", str(ro / "r.json"),
                     "--method", "pixelate", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the report {ro / 'r.json'}" in err and "not writable" in err
    assert not (tmp_path / "o.jpg").exists()


def test_report_that_cannot_be_written_at_the_end_exits_3(tmp_path, capsys, monkeypatch):
    """The report's folder passed the check, but writing fails at the end (e.g. the disk filled up): the
    run says so on stderr and exits 3 (done, with errors), not 0."""
    import errno

    photo = _small_photo(tmp_path / "p.jpg")
    real_write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name == "r.json.tmp":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert cli_main(["anonymize", str(photo), "-o", str(tmp_path / "o.jpg"), "--report", str(tmp_path / "r.json"),
                     "--method", "pixelate", "-q"]) == 3
    err = capsys.readouterr().err
    assert f"could not write the report {tmp_path / 'r.json'} (No space left on device)" in err
    assert (tmp_path / "o.jpg").is_file() and not (tmp_path / "r.json").exists()
    assert not (tmp_path / "r.json.tmp").exists()


def test_unwritable_output_is_refused_before_any_frame_is_processed(tmp_path, capsys, caplog):
    clip = media.moving_faces_clip(n_frames=3, size=(160, 120), path=tmp_path / "in.mp4", audio=False)
    folder = tmp_path / "footage"
    folder.mkdir()
    _small_photo(folder / "a.jpg")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    caplog.set_level("INFO")
    for src, out in ((clip.path, blocker / "x.mp4"), (folder, blocker / "fo"), (folder, blocker / "fo" / "deep")):
        assert cli_main(["anonymize", str(src), "-o", str(out), "--method", "pixelate", "-q"]) == 2, out
        err = capsys.readouterr().err
        assert "cannot write the output" in err and f"{blocker} is a file, not a folder" in err, err
        assert "Traceback" not in err
    assert "wrote" not in caplog.text and blocker.read_text() == "a file, not a folder"


def test_read_only_output_folder_is_refused(tmp_path, capsys, caplog, read_only_dir):
    ro = read_only_dir
    clip = media.moving_faces_clip(n_frames=3, size=(160, 120), path=tmp_path / "in.mp4", audio=False)
    caplog.set_level("INFO")
    for out in (ro / "x.mp4", ro / "fo" / "x.mp4"):
        assert cli_main(["anonymize", str(clip.path), "-o", str(out), "--method", "pixelate", "-q"]) == 2
        err = capsys.readouterr().err
        assert f"cannot write the output {out}" in err and "not writable" in err, err
    assert "wrote" not in caplog.text


def test_skipped_files_are_listed_in_the_report_and_logged(tmp_path, caplog):
    src = tmp_path / "shoot"
    (src / ".thumbs").mkdir(parents=True)
    _small_photo(src / "a.jpg")
    _small_photo(src / ".hidden.jpg")
    _small_photo(src / "take.partial.jpg")
    _small_photo(src / ".thumbs" / "t1.jpg")
    (src / "notes.txt").write_text("not media")
    report = tmp_path / "r.json"
    caplog.set_level("INFO")
    assert cli_main(["anonymize", str(src), "-o", str(src / "out"), "--method", "pixelate", "-q",
                     "--report", str(report)]) == 0
    d = json.loads(report.read_text())
    reasons = {Path(e["path"]).name: e["reason"] for e in d["skipped"]}
    assert set(reasons) == {".hidden.jpg", "take.partial.jpg", ".thumbs", "notes.txt"}, reasons
    assert reasons["notes.txt"] == "neither an image nor a video"
    assert reasons[".hidden.jpg"].startswith("hidden") and "1 file(s)" in reasons[".thumbs"]
    assert "not finished" in reasons["take.partial.jpg"]
    assert [Path(e["input"]).name for e in d["inputs"]] == ["a.jpg"]
    assert "skipping 4 file(s) that are not inputs" in caplog.text and ".hidden.jpg" in caplog.text
    # a second run: the outputs in shoot/out are neither inputs nor skipped files
    caplog.clear()
    assert cli_main(["anonymize", str(src), "-o", str(src / "out"), "--method", "pixelate", "-q",
                     "--report", str(report)]) == 0
    assert len(json.loads(report.read_text())["skipped"]) == 4


def test_a_complete_output_removes_the_stale_partial_of_an_earlier_run(tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    media.moving_faces_clip(n_frames=3, size=(160, 120), path=src / "clip.mp4", audio=False)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "clip.partial.mp4"  # what an interrupted earlier run left
    stale.write_bytes(b"cut off")
    other = out / "clip-2.partial.mp4"  # another output's name: left alone
    other.write_bytes(b"not ours to judge")
    report = tmp_path / "r.json"
    caplog.set_level("INFO")
    assert cli_main(["anonymize", str(src), "-o", str(out), "--method", "pixelate", "-q",
                     "--report", str(report)]) == 0
    assert (out / "clip.mp4").is_file() and not stale.exists() and other.exists()
    assert f"removed {stale}" in caplog.text
    assert json.loads(report.read_text())["inputs"][0]["removed_stale_partial"] == str(stale)


def test_a_partial_file_in_the_input_folder_is_never_removed(tmp_path):
    """Output folder above the input folder: nest/photos/clip.partial.mp4 is the user's file, skipped as
    an input, and stays, though nest/photos/clip.mp4 (from nest/photos/photos/clip.mp4) is written."""
    nest = tmp_path / "nest"
    (nest / "photos" / "photos").mkdir(parents=True)
    media.moving_faces_clip(n_frames=3, size=(160, 120), path=nest / "photos" / "photos" / "clip.mp4", audio=False)
    keep = nest / "photos" / "clip.partial.mp4"
    keep.write_bytes(b"the user's")
    assert cli_main(["anonymize", str(nest / "photos"), "-o", str(nest), "--method", "pixelate", "-q"]) == 0
    assert (nest / "photos" / "clip.mp4").is_file() and keep.read_bytes() == b"the user's"


# In a child process: the CLI on a clip; at frame 100 files may no longer grow (RLIMIT_FSIZE, SIGXFSZ ignored:
# writes fail with EFBIG as on a full disk) until the video writer has closed, so the report is still written.
FULL_DISK_CLI = r"""
import resource, signal, sys
from pathlib import Path
from styleid_edge.cli import main
from styleid_edge.runtime.anonymizer import Anonymizer
from styleid_edge.runtime.video import VideoWriter

src, out, report = sys.argv[1:4]
real, real_close, calls = Anonymizer.process, VideoWriter.close, {"n": 0}

def process(self, image):
    calls["n"] += 1
    if calls["n"] == 100:
        tmp = max(Path(out).parent.glob(".out.*"), key=lambda p: p.stat().st_size)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (tmp.stat().st_size, resource.RLIM_INFINITY))
    return real(self, image)

def close(self, *args, **kwargs):
    try:
        return real_close(self, *args, **kwargs)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

Anonymizer.process, VideoWriter.close = process, close
sys.exit(main(["anonymize", src, "-o", out, "--method", "pixelate", "-q", "--report", report]))
"""


def test_a_full_disk_exits_1_and_the_report_lists_the_failed_file(tmp_path):
    clip = media.moving_faces_clip(n_frames=120, size=(320, 240), path=tmp_path / "in.mp4", audio=False)
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-c", FULL_DISK_CLI, str(clip.path), str(out), str(report)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "could not finish the output" in done.stderr and "Free disk space" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "fragmented=True" not in last, last
    assert not out.exists()
    d = json.loads(report.read_text())
    assert d["failed"] and d["errors"]
    entry = d["inputs"][0]
    assert entry["input"] == str(clip.path) and "could not finish" in entry["error"]
    assert entry["partial_output"].endswith(".partial.mp4") and Path(entry["partial_output"]).is_file()
