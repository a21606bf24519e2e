"""End to end: real photos and videos made from them, real detector, real recognizer, tiny random pack.

What a user relies on: every face changes (SFace no longer matches it), nothing else about the
video changes (frames, rate, audio), one-frame detector misses do not leak, a person keeps one
pseudo-identity, and bad inputs give clear errors without partial files under the final name.
"""

from __future__ import annotations

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

import media
from privacy import decode_frames, identity_scores
from styleid_edge.cli import main as cli_main
from styleid_edge.runtime import align
from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
from styleid_edge.runtime.jobs import JobOptions, anonymize_path
from styleid_edge.runtime.recognize import SAME_PERSON_COSINE, cosine
from styleid_edge.runtime.video import probe

from conftest import PHOTOS


def _audio_packets(path):
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.mark.parametrize("method", ["latent", "pixel", "swapper", "pixelate"])
def test_video_every_face_changed_and_stream_kept(tmp_path, tiny_pack, sface, yunet, method):
    clip = media.moving_faces_clip(n_frames=12, size=(640, 360), path=tmp_path / "in.mp4", audio=True, seed=0)
    out = tmp_path / f"out_{method}.mp4"
    report_path = tmp_path / "report.json"
    code = cli_main(["anonymize", str(clip.path), "-o", str(out), "--pack", str(tiny_pack.root),
                     "--method", method, "--report", str(report_path), "-q"])
    assert code == 0
    info_in, info_out = probe(clip.path), probe(out)
    assert (info_out.width, info_out.height) == (info_in.width, info_in.height)
    assert info_out.fps == info_in.fps == Fraction(25)
    assert info_out.frame_count == info_in.frame_count == 12
    assert abs(info_out.duration - info_in.duration) < 0.05
    assert _audio_packets(out) == _audio_packets(clip.path)  # audio copied bit for bit
    frames_in, frames_out = decode_frames(clip.path), decode_frames(out)
    scores = identity_scores(frames_in, frames_out, clip.boxes, yunet, sface)
    unchanged = identity_scores(frames_in[:3], frames_in[:3], clip.boxes[:3], yunet, sface)
    assert unchanged.min() > 0.9  # the measurement itself works
    assert scores.max() < SAME_PERSON_COSINE, scores
    # Background far from the faces is untouched (only H.264 noise).
    boxes = np.array([b.xyxy for b in clip.boxes[0]])
    far = np.ones(frames_in[0].shape[:2], bool)
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        far[max(0, int(y1 - h)):int(y2 + h), max(0, int(x1 - w)):int(x2 + w)] = False
    diff = np.abs(frames_in[0].astype(int) - frames_out[0].astype(int))[far]
    assert diff.mean() < 2.0
    report = json.loads(report_path.read_text())
    assert report["frames"] == 12
    assert report["faces"] >= 24 and report["faces_accounted"]
    assert sum(report["faces_by_method"].values()) == report["faces"]
    assert report["faces_by_method"].get(method, 0) + sum(report["fallbacks"].values()) == report["faces"]
    assert report["pack_synthetic"] is True


def test_no_pack_pixelates_and_says_so(tmp_path, sface, yunet, monkeypatch, caplog):
    monkeypatch.delenv("STYLEID_EDGE_PACK", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "empty"))
    src = PHOTOS / "obama.jpg"
    out = tmp_path / "o.jpg"
    report = anonymize_path(src, out, AnonymizerConfig(), options=JobOptions(quiet=True))
    d = report.to_dict()
    assert d["method"] == "pixelate" and d["pack"] is None
    assert any("no model pack" in n for n in d["notes"])
    assert any("no model pack" in r.message for r in caplog.records)
    img, res = cv2.imread(str(src)), cv2.imread(str(out))
    det = max(yunet.detect(img), key=lambda x: x.score)
    a, _ = align.arcface_crop(img, det.landmarks)
    b, _ = align.arcface_crop(res, det.landmarks)
    assert float(cosine(sface.embed(a[None]), sface.embed(b[None]))[0]) < SAME_PERSON_COSINE


class _MissOnFrames:
    """The real detector, blind on chosen frames: how a detector miss looks to the pipeline."""

    def __init__(self, detector, blind):
        self.detector, self.blind, self.calls = detector, set(blind), 0

    def detect(self, frame, weak=False):
        i, self.calls = self.calls, self.calls + 1
        return [] if i in self.blind else self.detector.detect(frame, weak=weak)


def test_detector_misses_are_covered_by_hold_over(tiny_pack, sface, yunet):
    clip = media.moving_faces_clip(n_frames=10, size=(640, 360), photos=("obama.jpg",), seed=5, background="plain")
    anon = Anonymizer(AnonymizerConfig(method="latent", hold_frames=3), pack=tiny_pack.root)
    anon.detector = _MissOnFrames(yunet, blind={4, 5})
    outs, records = [], []
    for f in clip.frames:
        o, r = anon.process(f)
        outs.append(o)
        records.append(r)
    assert [len(r) for r in records] == [1] * 10
    assert records[4][0].held and records[5][0].held and not records[3][0].held
    assert len({r[0].track_id for r in records}) == 1
    scores = identity_scores(clip.frames, outs, clip.boxes, yunet, sface)
    assert scores.max() < SAME_PERSON_COSINE, scores
    assert anon.report.faces_held == 2


def test_warm_up_builds_every_batch_bucket_only_for_backends_that_build_per_shape(tiny_pack):
    anon = Anonymizer(AnonymizerConfig(method="latent"), pack=tiny_pack.root)
    assert anon.warm_up(6) == []  # ONNX Runtime builds nothing per batch size
    runs = []
    generate = anon.engine.generate_crops

    def spy(crops, seeds, size):
        out = generate(crops, seeds, size)
        runs.append((len(crops), out.shape))
        return out

    anon.engine.generate_crops = spy
    anon.models.synthesis.runner.builds_per_shape = True  # what the torch backend sets with torch.compile
    assert anon.warm_up(6) == [1, 2, 4, 6]
    s = anon.crop_size
    assert runs == [(b, (b, s, s, 3)) for b in (1, 2, 4, 6)]  # the real generative path, per batch size
    assert anon.warm_up(1) == [1]


def test_pseudo_identity_fixed_per_track(tiny_pack):
    frame = cv2.imread(str(PHOTOS / "obama.jpg"))
    frame = cv2.resize(frame, (455, 568))
    anon = Anonymizer(AnonymizerConfig(method="latent", seed=7), pack=tiny_pack.root)
    a, ra = anon.process(frame)
    b, rb = anon.process(frame)
    assert ra[0].track_id == rb[0].track_id
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # same person -> same fake face
    other = Anonymizer(AnonymizerConfig(method="latent", seed=8), pack=tiny_pack.root)
    c, _ = other.process(frame)
    x1, y1, x2, y2 = map(int, ra[0].box)
    assert np.abs(a[y1:y2, x1:x2].astype(int) - c[y1:y2, x1:x2].astype(int)).mean() > 3  # another seed


def test_folder_of_images_and_videos(tmp_path, tiny_pack):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("obama2.jpg", "biden.jpg"):
        img = cv2.imread(str(PHOTOS / name))
        cv2.imwrite(str(src / name), cv2.resize(img, (img.shape[1] // 3, img.shape[0] // 3)))
    media.moving_faces_clip(n_frames=5, path=src / "clip.mp4", audio=False)
    (src / "notes.txt").write_text("not media")
    out = tmp_path / "out"
    report = anonymize_path(src, out, AnonymizerConfig(method="pixel"), pack=tiny_pack.root,
                            options=JobOptions(quiet=True))
    assert sorted(p.name for p in out.iterdir()) == ["biden.jpg", "clip.mp4", "obama2.jpg"]
    assert report.faces >= 2 + 10 and not report.errors
    assert report.tracks >= 4  # one per image face + two in the clip: counted across files
    a, b = cv2.imread(str(src / "biden.jpg")), cv2.imread(str(out / "biden.jpg"))
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() > 50


def test_bad_inputs_clear_errors_no_output(tmp_path, tiny_pack, capsys):
    out = tmp_path / "out.mp4"
    assert cli_main(["anonymize", str(tmp_path / "missing.mp4"), "-o", str(out), "-q"]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert cli_main(["anonymize", str(empty), "-o", str(out), "-q", "--method", "pixelate"]) == 2
    assert "empty.mp4" in capsys.readouterr().err
    text = tmp_path / "fake.mp4"
    text.write_text("hello, not a video")
    assert cli_main(["anonymize", str(text), "-o", str(out), "-q", "--method", "pixelate"]) == 2
    assert "fake.mp4" in capsys.readouterr().err
    assert not out.exists()
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".out*"))


def test_corrupt_middle_is_processed_and_reported(tmp_path, tiny_pack):
    clip = media.moving_faces_clip(n_frames=40, path=tmp_path / "in.mp4", audio=True, gop=10)
    bad = media.corrupt_middle(clip.path, tmp_path / "bad.mp4")
    out = tmp_path / "out.mp4"
    report = anonymize_path(bad, out, AnonymizerConfig(method="pixelate"), pack=tiny_pack.root,
                            options=JobOptions(quiet=True))
    assert out.exists()
    entry = report.inputs[0]
    assert entry["frames_out"] >= 30
    assert entry.get("read_errors") and report.errors
    assert probe(out).frame_count == entry["frames_out"]


def test_cut_off_inputs_exit_codes_and_reports(tmp_path, tiny_pack, capsys):
    """A file cut in the middle: the decodable frames are written and the run exits 3 (done, with errors),
    the first error printed; cut inside the header: exit 2, a clear message, nothing written."""
    clip = media.moving_faces_clip(n_frames=30, size=(320, 240), path=tmp_path / "in.mp4", seed=3)
    data = clip.path.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) * 6 // 10])
    out, report = tmp_path / "half_out.mp4", tmp_path / "half.json"
    code = cli_main(["anonymize", str(half), "-o", str(out), "--pack", str(tiny_pack.root), "--method", "pixelate",
                     "--report", str(report), "-q"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "error(s) during the run" in err and "half.mp4" in err
    d = json.loads(report.read_text())
    entry = d["inputs"][0]
    assert 0 < entry["frames_out"] < 30 and probe(out).frame_count == entry["frames_out"]
    assert d["errors_total"] >= 1 and entry["read_errors"] and " at None" not in entry["read_errors"][0]

    head = tmp_path / "head.mp4"
    head.write_bytes(data[:2000])
    out2 = tmp_path / "head_out.mp4"
    assert cli_main(["anonymize", str(head), "-o", str(out2), "--method", "pixelate", "-q"]) == 2
    err = capsys.readouterr().err
    assert "head.mp4" in err and ("no frame could be decoded" in err or "cannot" in err), err
    assert "Errno" not in err and not out2.exists()
    assert not list(tmp_path.glob(".head_out*")) and not list(tmp_path.glob("head_out.partial*"))


@pytest.mark.parametrize("argv, message", [
    (["--thresh", "7"], "--thresh: 7 is outside (0, 1]"),
    (["--thresh", "0"], "--thresh: 0 is outside (0, 1]"),
    (["--crf", "-5"], "--crf: -5 is outside [0, 51]"),
    (["--crf", "99"], "--crf: 99 is outside [0, 51]"),
    (["--min-face", "-3"], "--min-face: -3 is outside"),
    (["--weak-thresh", "x"], "--weak-thresh: 'x' is not a number"),
    (["--frobnicate"], "styleid-edge anonymize: error: unrecognized arguments: --frobnicate"),  # its own usage
])
def test_out_of_range_flags_are_refused(tmp_path, capsys, argv, message):
    src = PHOTOS / "obama.jpg"
    with pytest.raises(SystemExit) as exc:
        cli_main(["anonymize", str(src), "-o", str(tmp_path / "o.jpg"), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jpg").exists()


def test_a_styleid_method_without_a_pack_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("STYLEID_EDGE_PACK", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "empty"))
    out = tmp_path / "o.jpg"
    assert cli_main(["anonymize", str(PHOTOS / "obama.jpg"), "-o", str(out), "--method", "latent", "-q"]) == 2
    assert "--method latent needs a model pack" in capsys.readouterr().err
    assert not out.exists()


def test_no_face_found_is_said_and_the_report_names_every_provider(tmp_path, tiny_pack):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    report = anonymize_path(blank, tmp_path / "wall_out.png", AnonymizerConfig(), pack=tiny_pack.root,
                            options=JobOptions(quiet=True))
    d = report.to_dict()
    assert d["frames"] == 1 and d["faces"] == 0
    assert any("no face was found in 1 frame" in n for n in d["notes"])
    assert d["providers"]["detector (yunet)"] == "CPUExecutionProvider"
    assert d["providers"]["verifier (sface)"] == "CPUExecutionProvider"  # and each pack model that ran
    assert all(v for v in d["providers"].values())
    assert cv2.imread(str(tmp_path / "wall_out.png")).mean() == pytest.approx(128, abs=1)


def test_avi_output_keeps_frame_rate_and_count(tmp_path, tiny_pack):
    clip = media.moving_faces_clip(n_frames=10, size=(320, 240), path=tmp_path / "in.mp4", seed=4)
    out = tmp_path / "out.avi"
    anonymize_path(clip.path, out, AnonymizerConfig(method="pixelate"), pack=tiny_pack.root,
                   options=JobOptions(quiet=True))
    info = probe(out)
    assert info.fps == Fraction(25) and info.frame_count == 10 and info.has_audio
    assert len(decode_frames(out)) == 10
    with av.open(str(out)) as c:  # no B-frames: AVI keeps no reordering timestamps, decoded pts must rise
        pts = [f.pts for f in c.decode(video=0)]
    assert pts == sorted(pts) and len(set(pts)) == 10, pts


def test_interrupted_run_is_marked_in_the_report(tmp_path, tiny_pack, monkeypatch):
    clip = media.moving_faces_clip(n_frames=20, size=(320, 240), path=tmp_path / "in.mp4", seed=5)
    calls = {"n": 0}
    real = Anonymizer.process

    def process_then_interrupt(self, image):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(self, image)

    monkeypatch.setattr(Anonymizer, "process", process_then_interrupt)
    report_path = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        anonymize_path(clip.path, tmp_path / "out.mp4", AnonymizerConfig(method="pixelate"), pack=tiny_pack.root,
                       options=JobOptions(quiet=True, report=report_path))
    d = json.loads(report_path.read_text())
    assert d["interrupted"] is True and d["frames"] == 7
    entry = d["inputs"][0]
    assert entry["interrupted"] and entry["partial_output"].endswith("out.partial.mp4")
    assert probe(tmp_path / "out.partial.mp4").frame_count == entry["frames_out"] > 0
    assert not (tmp_path / "out.mp4").exists()


def test_rotated_video_detected_upright_and_metadata_kept(tmp_path, tiny_pack, sface, yunet):
    """A phone clip stored sideways with rotation metadata: faces are found upright and replaced."""
    clip = media.moving_faces_clip(n_frames=6, size=(480, 272), photos=("obama.jpg",), seed=0,
                                   background="plain")
    # Rotation 90 = the player turns the stored picture 90 degrees counter-clockwise (display matrix),
    # so a sideways sensor stores the upright picture turned clockwise.
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in clip.frames]
    src = media.make_video(tmp_path / "rot.mp4", stored, fps=25, audio=True, rotation=90)
    info = probe(src)
    upright = [np.ascontiguousarray(np.rot90(f, 1)) for f in decode_frames(src)]
    assert np.abs(upright[0].astype(int) - clip.frames[0].astype(int)).mean() < 3  # rot90 convention check
    out = tmp_path / "out.mp4"
    report = anonymize_path(src, out, AnonymizerConfig(method="swapper"), pack=tiny_pack.root,
                            options=JobOptions(quiet=True))
    assert probe(out).rotation == info.rotation == 90
    out_upright = [np.ascontiguousarray(np.rot90(f, 1)) for f in decode_frames(out)]
    assert report.faces_detected >= 6  # every frame's face found upright (extra boxes are obscured too)
    scores = identity_scores(upright, out_upright, clip.boxes, yunet, sface)
    assert scores.max() < SAME_PERSON_COSINE, scores


def test_target_face_steers_identity(tmp_path, tiny_pack):
    """--target: the replacement comes from the chosen face, the same for every person."""
    frame = cv2.resize(cv2.imread(str(PHOTOS / "obama.jpg")), (455, 568))
    a = Anonymizer(AnonymizerConfig(method="swapper", seed=1, target=str(PHOTOS / "biden.jpg"), verify=False),
                   pack=tiny_pack.root)
    b = Anonymizer(AnonymizerConfig(method="swapper", seed=2, target=str(PHOTOS / "biden.jpg"), verify=False),
                   pack=tiny_pack.root)
    c = Anonymizer(AnonymizerConfig(method="swapper", seed=1, verify=False), pack=tiny_pack.root)
    oa, ra = a.process(frame)
    ob, _ = b.process(frame)
    oc, _ = c.process(frame)
    x1, y1, x2, y2 = map(int, ra[0].box)
    region = (slice(y1, y2), slice(x1, x2))
    assert np.abs(oa[region].astype(int) - ob[region].astype(int)).max() <= 1  # seed no longer matters
    assert np.abs(oa[region].astype(int) - oc[region].astype(int)).mean() > 2  # the target does
    with pytest.raises(ValueError, match="no face"):
        Anonymizer(AnonymizerConfig(method="swapper", target=str(tmp_path / "blank.png")), pack=tiny_pack.root) \
            if cv2.imwrite(str(tmp_path / "blank.png"), np.full((200, 200, 3), 128, np.uint8)) else None


def test_strength_moves_the_swapper_and_pixel_output(tiny_pack):
    """--strength for swapper/pixel: w = w_src + a (w_method - w_src), the knob calibrate strength sweeps."""
    frame = cv2.resize(cv2.imread(str(PHOTOS / "obama.jpg")), (455, 568))
    for method in ("swapper", "pixel"):
        outs = {}
        for a in (0.2, 1.0):
            anon = Anonymizer(AnonymizerConfig(method=method, strength=a, seed=3, verify=False), pack=tiny_pack.root)
            outs[a], rec = anon.process(frame)
        x1, y1, x2, y2 = map(int, rec[0].box)
        diff = np.abs(outs[0.2][y1:y2, x1:x2].astype(int) - outs[1.0][y1:y2, x1:x2].astype(int)).mean()
        assert diff > 1.0, method
    with pytest.raises(ValueError, match="strength"):
        Anonymizer(AnonymizerConfig(method="swapper", strength=1.5), pack=tiny_pack.root)


def test_report_keeps_errors_bounded_but_counts_all():
    from styleid_edge.runtime.report import RunReport

    r = RunReport()
    for i in range(5000):  # a long outage: the same failure on every batch, plus many distinct ones
        r.error("generation: TritonUnavailable: all servers down")
        r.error(f"file {i}: unreadable")
    d = r.to_dict()
    assert d["errors_total"] == 10000
    assert len(d["errors"]) == RunReport.MAX_ERRORS
    assert d["errors"][0] == "generation: TritonUnavailable: all servers down"
    assert d["errors"].count("generation: TritonUnavailable: all servers down") == 1


def test_planned_fallback_box_is_drawn_under_a_generated_face(tiny_pack, yunet):
    """A large box to pixelate (here: no landmarks, as a false detection often is) that covers a face
    anonymized by the method must not mosaic over it: planned fallbacks go first, generated faces on top."""
    from styleid_edge.runtime.track import Tracker

    frame = media.load_photo("obama.jpg")
    (det,) = yunet.detect(frame)
    h, w = frame.shape[:2]
    big = np.array([0, 0, w, h], np.float32)
    anon = Anonymizer(AnonymizerConfig(method="latent", verify=False), pack=tiny_pack.root)
    alone = anon.render(frame, Tracker().update([det], 0))[0]
    tracks = Tracker().update([det, (big, 0.9, None)], 0)
    out, records = anon.render(frame, tracks)
    assert sorted(r.method for r in records) == ["latent", "pixelate"]
    x1, y1, x2, y2 = det.box
    cx, cy, r = int((x1 + x2) / 2), int((y1 + y2) / 2), int((x2 - x1) / 6)
    inner = (slice(cy - r, cy + r), slice(cx - r, cx + r))
    # the generated face, intact up to the colour match (which sees the mosaic around it): same texture ...
    a, b = out[inner].astype(np.float64).mean(2).ravel(), alone[inner].astype(np.float64).mean(2).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.95
    # ... and not a mosaic: a block of the big box's 8 x 8 grid is wider than this whole region
    assert len(np.unique(out[inner].reshape(-1, 3), axis=0)) > 100
    assert np.abs(out[inner].astype(int) - frame[inner].astype(int)).mean() > 10  # and not the original
    corner = (slice(0, 40), slice(0, 40))
    assert np.abs(out[corner].astype(int) - frame[corner].astype(int)).mean() > 0  # the big box was obscured


def test_images_to_crops_values_channel_order_and_resizing():
    import cv2

    from styleid_edge.runtime.methods import images_to_crops

    x = np.array([-2, -1, -0.5, 0, 0.5, 1, 3], np.float32)
    imgs = np.tile(x[None, None, None, :], (2, 3, 7, 1))
    imgs[:, 0] *= -1  # red runs the other way
    out = images_to_crops(imgs, 7)
    assert out.shape == (2, 7, 7, 3) and out.dtype == np.uint8
    assert out[1, 3, :, 0].tolist() == [0, 0, 64, 128, 191, 255, 255]  # blue
    assert out[1, 3, :, 2].tolist() == [255, 255, 191, 128, 64, 0, 0]  # red, clipped both ways

    rng = np.random.default_rng(4)
    imgs = rng.uniform(-1.2, 1.2, (3, 3, 64, 64)).astype(np.float32)
    for size, interp in ((32, cv2.INTER_AREA), (96, cv2.INTER_CUBIC), (64, None)):
        ref_u8 = np.clip((imgs.transpose(0, 2, 3, 1) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)[..., ::-1]
        ref = np.stack([im if interp is None else cv2.resize(np.ascontiguousarray(im), (size, size),
                                                              interpolation=interp) for im in ref_u8])
        got = images_to_crops(imgs, size)
        assert got.shape == (3, size, size, 3)
        assert int(np.abs(got.astype(int) - ref).max()) <= 1  # rounding of exact halves may differ


def test_a_threshold_high_enough_to_let_faces_through_is_warned_about(tmp_path, caplog):
    out = tmp_path / "o.jpg"
    report = anonymize_path(PHOTOS / "obama.jpg", out, AnonymizerConfig(method="pixelate", detector_threshold=0.99),
                            options=JobOptions(quiet=True))
    notes = report.to_dict()["notes"]
    assert any("--thresh 0.99 is high" in n and "UNCHANGED" in n for n in notes), notes
    assert "--thresh 0.99 is high" in caplog.text
    default = anonymize_path(PHOTOS / "obama.jpg", tmp_path / "d.jpg", AnonymizerConfig(method="pixelate"),
                             options=JobOptions(quiet=True))
    assert default.faces >= 1 and not any("is high" in n for n in default.to_dict()["notes"])


def test_a_held_box_that_still_matches_is_counted_apart_from_a_detected_face(tiny_pack, yunet):
    """The identity check pixelates any face still matching its input; a box the tracker held with no
    detection this frame (often background after the face left) is counted as held_still_matches, a
    detected face as identity_still_matches. Real SFace on a real photograph, the output left unchanged."""
    from types import SimpleNamespace

    from styleid_edge.runtime.anonymizer import FaceRecord, _Work

    anonymizer = Anonymizer(AnonymizerConfig(method="latent"), pack=tiny_pack.root)
    assert anonymizer.verifier is not None
    frame = cv2.imread(str(PHOTOS / "obama.jpg"))
    [det] = yunet.detect(frame)[:1]
    batch = []
    for held in (False, True):
        tr = SimpleNamespace(landmarks=det.landmarks, raw_landmarks=None if held else det.landmarks)
        batch.append(_Work(tr, FaceRecord(1, [0, 0, 1, 1], "latent", held), 0, len(batch)))
    anonymizer._verify(frame, frame.copy(), batch)
    assert [(w.rec.method, w.rec.fallback) for w in batch] == [("pixelate", "identity_still_matches"),
                                                               ("pixelate", "held_still_matches")]
    for w in batch:
        w.rec.method, w.rec.fallback = "latent", None
    anonymizer._verify(frame, None, batch)  # the check itself fails (no output image): fail closed
    assert {(w.rec.method, w.rec.fallback) for w in batch} == {("pixelate", "verify_error")}


def test_strength_without_a_method_that_uses_it_is_said_not_silently_ignored(caplog):
    """--strength with pixelate (or no pack, which pixelates) changes nothing: the log and report say so."""
    with caplog.at_level("WARNING"):
        anon = Anonymizer(AnonymizerConfig(method="pixelate", strength=0.4), use_default_pack=False)
    assert "--strength 0.4 has no effect with the pixelate method" in caplog.text
    assert any("--strength 0.4 has no effect" in n for n in anon.report.notes)
