"""``styleid-edge evaluate``: real recognizer on real photographs, blur ordering, a video with known
untouched frames, the report and the exit codes."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import load_photo, make_video, moving_faces_clip, truncate

from styleid_edge.calibration.evaluate import EvalConfig, EvaluateError, Evaluator, evaluate, resolve_pairs
from styleid_edge.calibration.evaluate_cli import register_evaluate
from styleid_edge.runtime.align import similarity_transform
from styleid_edge.runtime.detect import make_detector
from styleid_edge.runtime.fallback import blur, pixelate
from styleid_edge.runtime.recognize import SAME_PERSON_COSINE
from styleid_edge.runtime.video import VideoReader, probe

UNTOUCHED = {3, 7}
N_FRAMES = 12


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(EvalConfig(progress=False))


def _face(ev: Evaluator, image: np.ndarray):
    dets = ev.detector.detect(image)
    assert dets, "the detector missed a clear face in a test photo"
    return max(dets, key=lambda d: d.width * d.height)


def _swap(ev: Evaluator, dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``dst`` with its face replaced by ``src``'s face, warped onto dst's landmarks (feathered)."""
    fd, fs = _face(ev, dst), _face(ev, src)
    m = similarity_transform(fs.landmarks, fd.landmarks)
    h, w = dst.shape[:2]
    warped = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = np.zeros((h, w), np.float32)
    x1, y1, x2, y2 = fd.box
    cx, cy, ax, ay = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 0.6, (y2 - y1) * 0.6
    cv2.ellipse(mask, (int(cx), int(cy)), (int(ax), int(ay)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(2.0, 0.05 * (x2 - x1)))[..., None]
    return np.clip(mask * warped + (1 - mask) * dst + 0.5, 0, 255).astype(np.uint8)


def _only(results):
    assert len(results) == 1, f"expected one face, got {len(results)}"
    return results[0]


# ---------------------------------------------------------------------------------------------
# real photographs


def test_same_person_is_a_leak_and_a_different_person_is_not(evaluator: Evaluator) -> None:
    obama = load_photo("obama.jpg")
    for other in ("obama2.jpg", "obama3.jpg"):
        r = _only(evaluator.add_frame(obama, _swap(evaluator, obama, load_photo(other))))
        assert r.processed and r.leak and r.reason == "identity", (other, r)
        assert r.similarity >= SAME_PERSON_COSINE
    r = _only(evaluator.add_frame(obama, _swap(evaluator, obama, load_photo("biden.jpg"))))
    assert r.processed and not r.leak and r.reason is None, r
    assert r.similarity < SAME_PERSON_COSINE
    pixelated = obama.copy()
    pixelate(pixelated, _face(evaluator, obama).box, blocks=8)
    r = _only(evaluator.add_frame(obama, pixelated))
    assert r.processed and not r.leak, r


def test_untouched_face_is_a_leak(evaluator: Evaluator) -> None:
    obama = load_photo("obama.jpg")
    r = _only(evaluator.add_frame(obama, obama.copy()))
    assert r.leak and not r.processed and r.reason == "unprocessed"
    assert r.similarity > 0.99


def test_unprocessed_face_leaks_even_with_low_similarity(evaluator: Evaluator) -> None:
    class Orthogonal:  # a recognizer that never matches anything
        name, input_size = "orthogonal", 112
        calls = 0

        def embed(self, crops: np.ndarray) -> np.ndarray:
            out = np.zeros((len(crops), 256), np.float32)
            for i in range(len(crops)):
                out[i, Orthogonal.calls % 256] = 1.0
                Orthogonal.calls += 1
            return out

    ev = Evaluator(EvalConfig(progress=False), detector=evaluator.detector, recognizer=Orthogonal())
    obama = load_photo("obama.jpg")
    noisy = np.clip(obama.astype(np.int16) + np.random.default_rng(0).integers(-1, 2, obama.shape), 0, 255)
    r = _only(ev.add_frame(obama, noisy.astype(np.uint8)))
    assert r.similarity < 0.01 and not r.processed and r.leak and r.reason == "unprocessed"


def test_faces_too_small_for_the_recognizer_are_judged_by_processing_only(evaluator: Evaluator) -> None:
    """Below min_judge_size a recognizer's score is noise: a processed small face is not called an identity
    leak (it is counted too_small_to_judge), an untouched one still leaks; large faces are judged as before."""
    class Same:  # a recognizer that matches everything: every processed, judged face is an identity leak
        name, input_size = "same", 112

        def embed(self, crops: np.ndarray) -> np.ndarray:
            return np.ones((len(crops), 8), np.float32) / np.sqrt(8)

    ev = Evaluator(EvalConfig(progress=False, min_judge_size=40), detector=evaluator.detector, recognizer=Same())
    obama = load_photo("obama.jpg")
    face = _face(evaluator, obama)
    scale = 30.0 / (face.box[2] - face.box[0])
    small = cv2.resize(obama, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small_pix = small.copy()
    pixelate(small_pix, _face(evaluator, small).box, blocks=8)
    r = _only(ev.add_frame(small, small_pix))
    assert r.processed and not r.judged and not r.leak, r
    r = _only(ev.add_frame(small, small.copy()))
    assert not r.judged and r.leak and r.reason == "unprocessed", r
    big_pix = obama.copy()
    pixelate(big_pix, face.box, blocks=8)
    r = _only(ev.add_frame(obama, big_pix))
    assert r.judged and r.leak and r.reason == "identity", r
    d = ev.report().to_dict()
    assert d["too_small_to_judge"] == 2 and d["leaks"] == 2


def test_large_change_elsewhere_does_not_hide_an_untouched_face(evaluator: Evaluator) -> None:
    """A big area changed outside the face (e.g. a false detection the anonymizer pixelated) is not
    codec noise: the untouched face next to it is still a leak, and a processed face still counts."""
    obama = load_photo("obama.jpg")
    h, w = obama.shape[:2]
    canvas = np.full((h, 3 * w, 3), 128, np.uint8)
    canvas[:, w:2 * w] = obama
    canvas[:, :w] = np.linspace(40, 90, w, dtype=np.float32).astype(np.uint8)[None, :, None]
    out = canvas.copy()
    out[:, :w] = 255 - out[:, :w]  # a third of the frame changed by ~100 levels, far from the face
    r = _only([f for f in evaluator.add_frame(canvas, out) if w <= f.box[0] < 2 * w])
    assert r.leak and not r.processed and r.reason == "unprocessed"
    done = out.copy()
    pixelate(done, np.array(r.box, np.float32))
    r2 = _only([f for f in evaluator.add_frame(canvas, done) if w <= f.box[0] < 2 * w])
    assert r2.processed


def test_blur_levels_score_in_order(evaluator: Evaluator) -> None:
    obama = load_photo("obama.jpg")
    box = _face(evaluator, obama).box
    x0, y0 = int(box[0] - 0.25 * (box[2] - box[0])), int(box[1] - 0.25 * (box[3] - box[1]))
    x1, y1 = int(box[2] + 0.25 * (box[2] - box[0])), int(box[3] + 0.25 * (box[3] - box[1]))

    gauss = []
    for sigma in (1, 4, 8, 16, 32):
        out = obama.copy()
        out[y0:y1, x0:x1] = cv2.GaussianBlur(out[y0:y1, x0:x1], (0, 0), sigma)
        gauss.append(_only(evaluator.add_frame(obama, out)).similarity)
    assert all(a > b for a, b in itertools.pairwise(gauss)), gauss
    assert gauss[0] >= SAME_PERSON_COSINE > gauss[-1], gauss

    blocks = []
    for n in (32, 16, 8):
        out = obama.copy()
        blur(out, box, blocks=n)
        blocks.append(_only(evaluator.add_frame(obama, out)).similarity)
    assert all(a > b for a, b in itertools.pairwise(blocks)), blocks


# ---------------------------------------------------------------------------------------------
# a video with known truth


@pytest.fixture(scope="module")
def clip_pair(tmp_path_factory) -> tuple[Path, Path, object]:
    root = tmp_path_factory.mktemp("evaluate")
    # seed 7: the two faces never overlap (overlapping faces make the detector merge them)
    clip = moving_faces_clip(N_FRAMES, (640, 360), photos=("obama.jpg", "biden.jpg"), background="plain",
                             seed=7, path=root / "original.mp4", audio=False)
    frames = []
    for i, (frame, boxes) in enumerate(zip(clip.frames, clip.boxes)):
        out = frame.copy()
        if i not in UNTOUCHED:
            for b in boxes:
                pixelate(out, np.array(b.xyxy), blocks=8, margin=0.25)
        frames.append(out)
    make_video(root / "anonymized.mp4", frames, fps=clip.fps, audio=False)
    return root / "original.mp4", root / "anonymized.mp4", clip


def test_video_untouched_frames_are_exactly_the_leaks(evaluator: Evaluator, clip_pair) -> None:
    original, anonymized, _ = clip_pair
    report = evaluate(original, anonymized, EvalConfig(progress=False), detector=evaluator.detector,
                      recognizer=evaluator.recognizer)
    d = report.to_dict()
    assert d["frames"] == N_FRAMES
    assert d["faces"] == 2 * N_FRAMES, "the reference detector should find both faces in every frame"
    assert d["leak_frames"] == sorted(UNTOUCHED)
    for f in d["per_face"]:
        assert f["leak"] == (f["frame"] in UNTOUCHED), f
        if f["frame"] not in UNTOUCHED:
            assert f["processed"] and f["similarity"] < SAME_PERSON_COSINE, f
    assert d["leaks"] == 2 * len(UNTOUCHED)
    assert d["leak_rate"] == pytest.approx(len(UNTOUCHED) / N_FRAMES)
    assert d["coverage"] == pytest.approx(1 - len(UNTOUCHED) / N_FRAMES)
    assert d["outside_change"]["mean"] < 2.0, "only codec noise outside the faces"
    assert d["tracks"]["count"] == 2
    for t in d["tracks"]["per_track"]:
        assert t["faces"] == N_FRAMES and t["leaks"] == len(UNTOUCHED)
        assert t["identity_consistency"] is not None
    assert d["recognizer"] == "sface" and d["threshold"] == pytest.approx(SAME_PERSON_COSINE)


# ---------------------------------------------------------------------------------------------
# CLI


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="styleid-edge")
    sub = parser.add_subparsers(dest="command", required=True)
    register_evaluate(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exit_codes_report_and_plot(clip_pair, tmp_path: Path, capsys) -> None:
    original, anonymized, _ = clip_pair
    report, plot = tmp_path / "report.json", tmp_path / "plot.png"
    assert _run(["evaluate", str(original), str(anonymized), "--report", str(report), "--plot", str(plot), "-q"]) == 1
    d = json.loads(report.read_text())
    for key in ("faces", "leaks", "leak_frames", "leak_rate", "recognizer", "threshold", "per_face", "coverage",
                "tracks", "outside_change"):
        assert key in d, key
    assert d["leak_frames"] == sorted(UNTOUCHED)
    img = cv2.imread(str(plot))
    assert img is not None and img.shape[0] > 100

    # images: a pixelated face is no leak (exit 0); the untouched copy is (exit 1); folders pair by name
    obama = load_photo("obama.jpg")
    box = make_detector("yunet").detect(obama)[0].box
    pix = obama.copy()
    pixelate(pix, box, blocks=8)
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), obama)
    cv2.imwrite(str(tmp_path / "out" / "a.png"), pix)
    cv2.imwrite(str(tmp_path / "same.png"), obama)
    assert _run(["evaluate", str(tmp_path / "in" / "a.png"), str(tmp_path / "out" / "a.png"), "-q"]) == 0
    assert _run(["evaluate", str(tmp_path / "in" / "a.png"), str(tmp_path / "same.png"), "-q"]) == 1
    assert _run(["evaluate", str(tmp_path / "in"), str(tmp_path / "out"), "-q"]) == 0

    # errors: a missing file, mismatched frame counts
    capsys.readouterr()
    assert _run(["evaluate", str(tmp_path / "missing.mp4"), str(anonymized), "-q"]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert _run(["evaluate", str(original), str(anonymized), "--report", str(tmp_path), "-q"]) == 2  # a folder
    assert "it is a folder; give a file name" in capsys.readouterr().err
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}*.tmp"))
    before = Path(anonymized).read_bytes()
    assert _run(["evaluate", str(original), str(anonymized), "--report", str(anonymized), "-q"]) == 2
    assert "one of the files being compared" in capsys.readouterr().err
    assert Path(anonymized).read_bytes() == before
    clip = moving_faces_clip(N_FRAMES - 2, (640, 360), photos=("obama.jpg",), background="plain", seed=7,
                             audio=False)
    short = make_video(tmp_path / "short.mp4", clip.frames, fps=25, audio=False)
    assert _run(["evaluate", str(original), str(short), "-q"]) == 2
    err = capsys.readouterr().err
    assert "frames" in err and "short.mp4" in err


# ---------------------------------------------------------------------------------------------
# what anonymize writes: folders mirrored recursively, cut-off videos


def _pixelated(image: np.ndarray, detector) -> np.ndarray:
    out = image.copy()
    for d in detector.detect(image):
        pixelate(out, d.box, blocks=8, margin=0.25)
    return out


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path
    return path


def _rel_pairs(pairs, original: Path, anonymized: Path) -> list[tuple[str, str]]:
    return [(p.original.relative_to(original).as_posix(), p.anonymized.relative_to(anonymized).as_posix())
            for p in pairs]


def test_folders_pair_every_file_by_relative_path_subfolders_included(evaluator: Evaluator, tmp_path: Path,
                                                                     capsys) -> None:
    """``anonymize in -o out`` mirrors in's subfolders; evaluate pairs every input with the output at the same
    relative path (a name repeated in a subfolder is another file), skips what anonymize skips (hidden files,
    ``*.partial.*`` leftovers, non-media), and refuses, naming them, inputs with no output."""
    det = evaluator.detector
    obama, biden = load_photo("obama.jpg"), load_photo("biden.jpg")
    src, out = tmp_path / "in", tmp_path / "out"
    _write(src / "a.png", obama)
    _write(src / "sub" / "a.png", biden)  # same name as the top-level file: it must meet its own output
    _write(src / "sub" / "deeper" / "b.jpg", biden)
    _write(src / ".hidden" / "x.png", obama)  # what anonymize skips needs no output
    _write(src / "c.partial.png", obama)
    (src / "notes.txt").write_text("not an image")
    _write(out / "a.png", _pixelated(obama, det))
    _write(out / "sub" / "a.png", biden)  # left untouched: a leak, but only in the subfolder
    _write(out / "sub" / "deeper" / "b.jpg", _pixelated(biden, det))
    _write(out / "stray.png", obama)  # an output with no input is ignored

    pairs = resolve_pairs(src, out)
    assert _rel_pairs(pairs, src, out) == [("a.png", "a.png"), ("sub/a.png", "sub/a.png"),
                                           ("sub/deeper/b.jpg", "sub/deeper/b.jpg")]
    d = evaluate(src, out, EvalConfig(progress=False), detector=det, recognizer=evaluator.recognizer).to_dict()
    leaks = {Path(f["original"]).relative_to(src).as_posix(): f["leaks"] for f in d["files"]}
    assert leaks == {"a.png": 0, "sub/a.png": 1, "sub/deeper/b.jpg": 0}, d["files"]
    assert d["frames"] == 3
    assert _run(["evaluate", str(src), str(out), "-q"]) == 1  # the leak in the subfolder is found

    # a file and the folder anonymize FILE -o FOLDER wrote it into
    assert _run(["evaluate", str(src / "a.png"), str(out), "-q"]) == 0

    # an input with no output (anonymize stopped before finishing it): exit 2, naming it
    (out / "sub" / "deeper" / "b.jpg").rename(out / "sub" / "deeper" / "b.partial.jpg")
    capsys.readouterr()
    assert _run(["evaluate", str(src), str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no anonymized counterpart" in err and "sub/deeper/b.jpg" in err and "b.partial.jpg" in err, err
    (tmp_path / "empty_out").mkdir()
    with pytest.raises(EvaluateError, match=r"3 of the 3 input file\(s\)"):
        resolve_pairs(src, tmp_path / "empty_out")

    # an output in another format stands in only when it is no other input's own output
    other_in, other_out = tmp_path / "in2", tmp_path / "out2"
    _write(other_in / "k.png", obama)
    _write(other_in / "k.jpg", biden)
    _write(other_in / "p" / "x.png", biden)
    _write(other_out / "k.jpg", biden)
    _write(other_out / "p" / "x.jpg", biden)
    with pytest.raises(EvaluateError) as exc:  # k.jpg is k.jpg's output, not a stand-in for k.png's
        resolve_pairs(other_in, other_out)
    assert "1 of the 3 input file(s)" in str(exc.value) and ": k.png. " in str(exc.value), exc.value
    _write(other_out / "k.png", obama)
    assert _rel_pairs(resolve_pairs(other_in, other_out), other_in, other_out) == [
        ("k.jpg", "k.jpg"), ("k.png", "k.png"), ("p/x.png", "p/x.jpg")]

    # the output folder inside the input folder: its files are outputs, not inputs (as anonymize treats them)
    nested = tmp_path / "nested"
    _write(nested / "a.png", obama)
    _write(nested / "anon" / "a.png", _pixelated(obama, det))
    assert _rel_pairs(resolve_pairs(nested, nested / "anon"), nested, nested / "anon") == [("a.png", "a.png")]


def test_cut_off_original_is_compared_over_the_frames_that_decode(evaluator: Evaluator, tmp_path: Path,
                                                                  capsys) -> None:
    """A cut-off MP4 lists more frames than decode; anonymize writes those that decode (and exits 3). Evaluate
    compares exactly those, and still refuses an output with fewer or more frames."""
    n_frames = 30
    clip = moving_faces_clip(n_frames, (640, 360), photos=("obama.jpg",), background="plain", seed=7,
                             path=tmp_path / "whole.mp4", audio=False, gop=5)
    cut = truncate(tmp_path / "whole.mp4", tmp_path / "cut.mp4", 0.5)
    info = probe(cut)
    assert info.frame_count_exact and info.frame_count == n_frames
    decoded = [f.image for f in VideoReader(cut)]
    n = len(decoded)
    assert 3 < n < n_frames, n

    def anonymized(frames: list[np.ndarray], name: str) -> Path:
        out = []
        for frame, boxes in zip(frames, clip.boxes):
            frame = frame.copy()
            for b in boxes:
                pixelate(frame, np.array(b.xyxy), blocks=8, margin=0.25)
            out.append(frame)
        return make_video(tmp_path / name, out, fps=clip.fps, audio=False)

    anon = anonymized(decoded, "anon.mp4")  # what anonymize writes for the cut file
    d = evaluate(cut, anon, EvalConfig(progress=False), detector=evaluator.detector,
                 recognizer=evaluator.recognizer).to_dict()
    assert d["frames"] == n and d["faces"] == n and d["leaks"] == 0, d
    assert any("missing-frames" in e for e in d["read_errors"]), d["read_errors"]
    assert _run(["evaluate", str(cut), str(anon), "-q"]) == 0

    capsys.readouterr()
    short = anonymized(decoded[:-1], "short.mp4")  # a frame lost: still refused
    assert _run(["evaluate", str(cut), str(short), "-q"]) == 2
    err = capsys.readouterr().err
    assert "cut.mp4" in err and "short.mp4" in err and f"at least {n} of which decode" in err, err
    extra = anonymized(decoded + clip.frames[n:n + 2], "extra.mp4")  # two frames more than decode
    assert _run(["evaluate", str(cut), str(extra), "-q"]) == 2
    err = capsys.readouterr().err
    assert "extra.mp4" in err and f"only {n} of which decode" in err, err
    longer = anonymized(clip.frames, "whole_anon.mp4")  # made from the whole file: more frames than decode
    assert _run(["evaluate", str(cut), str(longer), "-q"]) == 2
    err = capsys.readouterr().err
    assert "cut.mp4" in err and "whole_anon.mp4" in err and f"has {n} frames that decode" in err, err
