"""Donor bank (``--method donor``): built from DCGAN test faces, used end to end through the CLI.

The donors here come from the DCGAN in the ``gan-face-generate`` wheel (see ``dcgan_faces``; trained
on DigiFace-1M, non-commercial: test donors only, never shipped). What a user relies on: every face
in the output is changed (SFace no longer matches it), by the donor blend or else by the identity
check's pixelation, and the report accounts for each face; a person keeps one donor; the pose
choice picks a donor that fits the face; a bad bank file is a clear error, not a crash.
"""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import media
from privacy import decode_frames, identity_scores
from styleid_edge.cli import main as cli_main
from styleid_edge.runtime import align, blend
from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
from styleid_edge.runtime.donors import (DonorBank, build_from_images, canonical_ffhq_landmarks,
                                         pose_descriptor)
from styleid_edge.runtime.recognize import SAME_PERSON_COSINE
from styleid_edge.runtime.track import Tracker, TrackerConfig
from styleid_edge.runtime.video import probe

from conftest import PHOTOS

pytest.importorskip("torch")
dcgan_faces = pytest.importorskip("dcgan_faces")
if dcgan_faces.weights_path() is None:
    pytest.skip("gan-face-generate (test faces) is not installed", allow_module_level=True)

N_DONORS = 12


# ----------------------------------------------------------------------------------------------
# fixtures and helpers
@pytest.fixture(scope="module")
def dcgan_bank(tmp_path_factory, yunet):
    """A donor bank built with build_from_images from a folder of DCGAN faces, and its file."""
    folder = tmp_path_factory.mktemp("dcgan_faces")
    for i, face in enumerate(dcgan_faces.generate_faces(N_DONORS, seed=0)):
        assert cv2.imwrite(str(folder / f"face{i:02d}.png"), face)
    bank = build_from_images(sorted(folder.iterdir()), yunet)
    path = folder.parent / "dcgan_donors.npz"
    bank.save(path)
    return bank, path


def _face_crop(photo: str, detector, size: int = 256):
    image = media.load_photo(photo)
    det = max(detector.detect(image), key=lambda d: d.score)
    crop, m = align.ffhq_crop(image, det.landmarks, size)
    return crop, align.transform_points(m, det.landmarks)


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)


# ----------------------------------------------------------------------------------------------
# the test faces and the bank
def test_dcgan_generator_is_deterministic_faces():
    a, b = dcgan_faces.generate_faces(3, seed=5), dcgan_faces.generate_faces(3, seed=5)
    assert all(x.shape == (256, 256, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.abs(a[0].astype(int) - a[1].astype(int)).mean() > 10  # different z, different face
    try:  # our module against the wheel's own class, where its import works (it needs only torch)
        import torch
        from gan_face_generate.models import Generator
    except Exception:  # noqa: BLE001
        return
    ref = Generator(0, 3, dcgan_faces.Z_DIM, 64)
    checkpoint = torch.load(dcgan_faces.weights_path(), map_location="cpu", weights_only=True)
    ref.load_state_dict(checkpoint["netG_state_dict"])
    z = torch.randn(2, dcgan_faces.Z_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ref.eval()(z[:, :, None, None]), dcgan_faces.load_generator()(z))


def test_bank_from_dcgan_faces_and_round_trip(dcgan_bank):
    bank, path = dcgan_bank
    # every generated face was found by the real detector and became a donor with landmarks
    assert len(bank.images) == N_DONORS
    assert bank.images.shape == (N_DONORS, 256, 256, 3) and bank.images.dtype == np.uint8
    canon = canonical_ffhq_landmarks(256)
    # FFHQ-aligned: each donor's landmarks sit near the canonical positions (pose varies a little)
    assert np.linalg.norm(bank.landmarks - canon, axis=2).max() < 0.12 * 256
    loaded = DonorBank.load(path)
    assert np.array_equal(loaded.images, bank.images)
    assert np.allclose(loaded.landmarks, bank.landmarks)
    assert np.allclose(loaded.poses, bank.poses)
    assert loaded.source == str(path)


def test_render_blends_inner_face_and_paste_mask_covers_it(dcgan_bank, yunet):
    bank = DonorBank(dcgan_bank[0].images, dcgan_bank[0].landmarks)
    crop, lm = _face_crop("biden.jpg", yunet)
    core = blend.inner_face_mask(lm, 256, dilate=-0.05, feather=0.05) > 0.5
    for seed in range(0, N_DONORS, 3):
        new, mask = bank.render(crop, lm, seed)
        assert new.shape == crop.shape and new.dtype == np.uint8
        assert mask.shape == (256, 256) and 0.0 <= mask.min() and mask.max() <= 1.0
        diff = np.abs(new.astype(int) - crop.astype(int)).max(axis=2)
        assert np.array_equal(new[mask == 0], crop[mask == 0])  # outside the mask: the source, exactly
        # the paste mask is ~1 wherever the blend changed the crop, so pasting keeps the blend's strength
        assert mask[diff > 2].min() > 0.97
        assert diff[core].mean() > 8  # the inner face is the donor's
        # colour matched to the source's inner face (not skewed by hair, ears or background)
        d_lab = np.abs(_lab(new)[core].mean(0) - _lab(crop)[core].mean(0))
        assert d_lab[0] < 3.0 and d_lab[1:].max() < 3.0, d_lab


# ----------------------------------------------------------------------------------------------
# end to end
@pytest.fixture(scope="module")
def donor_run(tmp_path_factory, dcgan_bank, sface, yunet):
    """``styleid-edge anonymize --method donor --donors FILE`` on a clip of two moving faces, run once:
    the clip, the output frames, SFace scores (input vs output, per face), the report, and the donor
    index chosen for each track seed in every frame."""
    tmp = tmp_path_factory.mktemp("donor_run")
    chosen: dict[int, list[int]] = defaultdict(list)
    original_choose = DonorBank.choose

    def spy(self, landmarks_in_crop, seed):
        index = original_choose(self, landmarks_in_crop, seed)
        chosen[int(seed)].append(index)
        return index

    clip = media.moving_faces_clip(n_frames=12, size=(640, 360), photos=("obama.jpg", "biden.jpg"),
                                   background="plain", path=tmp / "in.mp4", audio=False, seed=0)
    out, report_path = tmp / "out.mp4", tmp / "report.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DonorBank, "choose", spy)
        code = cli_main(["anonymize", str(clip.path), "-o", str(out), "--method", "donor",
                         "--donors", str(dcgan_bank[1]), "--report", str(report_path), "-q"])
    assert code == 0
    frames_in, frames_out = decode_frames(clip.path), decode_frames(out)
    scores = identity_scores(frames_in, frames_out, clip.boxes, yunet, sface)
    return SimpleNamespace(clip=clip, out=out, frames_out=frames_out, scores=scores, chosen=dict(chosen),
                           report=json.loads(report_path.read_text()))


def test_donor_method_video_stream_and_report(donor_run):
    assert probe(donor_run.out).frame_count == probe(donor_run.clip.path).frame_count == 12
    assert len(donor_run.frames_out) == 12
    report = donor_run.report
    assert report["method"] == "donor" and report["frames"] == 12
    assert report["faces"] >= 24 and report["faces_accounted"]
    by_method, fallbacks = report["faces_by_method"], report["fallbacks"]
    assert set(fallbacks) <= {"identity_still_matches"}, fallbacks
    # every face: the donor blend, or pixelated by the identity check
    assert by_method.get("donor", 0) + sum(fallbacks.values()) == report["faces"]
    assert by_method.get("donor", 0) >= 6  # the donor blend itself anonymizes faces, not only the fallback
    # a person keeps one donor: two tracks, each with one donor index in every frame
    chosen = donor_run.chosen
    assert len(chosen) == 2 and all(len(v) >= 10 for v in chosen.values())
    assert all(len(set(v)) == 1 for v in chosen.values()), chosen


def test_donor_method_video_every_face_changed(donor_run):
    """SFace no longer matches any face of the output (measured at the reference detector's landmarks)."""
    assert len(donor_run.scores) == 24
    assert donor_run.scores.max() < SAME_PERSON_COSINE, np.round(donor_run.scores, 3)


def test_donor_blend_alone_changes_faces_at_exact_landmarks(dcgan_bank, sface, yunet):
    """The donor blend on its own (hardly any fallback needed), when the landmarks it is given are where the
    face is: the tracker's landmark smoothing switched off, the same motion, uncompressed frames."""
    clip = media.moving_faces_clip(n_frames=8, size=(640, 360), photos=("obama.jpg", "biden.jpg"),
                                   background="plain", audio=False, seed=0)
    anon = Anonymizer(AnonymizerConfig(method="donor", donors=str(dcgan_bank[1])), use_default_pack=False)
    anon.tracker = Tracker(TrackerConfig(smoothing="none", fps=25))
    outs = [anon.process(f)[0] for f in clip.frames]
    scores = identity_scores(clip.frames, outs, clip.boxes, yunet, sface)
    report = anon.finish().to_dict()
    assert scores.max() < SAME_PERSON_COSINE, np.round(scores, 3)
    assert report["faces_by_method"].get("donor", 0) >= 12, report["faces_by_method"]


def test_donors_build_from_pack_cli(tmp_path, tiny_pack, capsys):
    out = tmp_path / "bank.npz"
    assert cli_main(["donors", "build", "--pack", str(tiny_pack.root), "--count", "8", "--out", str(out), "-q"]) == 0
    assert "8 faces" in capsys.readouterr().out
    assert not (tiny_pack.root / "donors.npz").exists()  # --out respected, the pack untouched
    bank = DonorBank.load(out)
    assert bank.images.shape == (8, 256, 256, 3)
    assert np.abs(bank.images.astype(int) - bank.images[:1].astype(int)).max() > 0  # 8 different textures
    # a random-weight 32 px pack makes textures, not faces: every donor has the canonical FFHQ landmarks
    assert np.allclose(bank.landmarks, canonical_ffhq_landmarks(256)[None], atol=1e-4)


# ----------------------------------------------------------------------------------------------
# pose choice
def _posed(nose_dx: float = 0.0, mouth_dx: float = 0.0, mouth_dy: float = 0.0, roll_deg: float = 0.0,
           scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """Canonical FFHQ landmarks with the nose / mouth moved (in eye distances: yaw, expression), then
    rolled, scaled and shifted as a whole."""
    lm = canonical_ffhq_landmarks(256).astype(np.float64)
    d = float(np.linalg.norm(lm[1] - lm[0]))
    lm[2, 0] += nose_dx * d
    lm[3:, 0] += mouth_dx * d
    lm[3:, 1] += mouth_dy * d
    c = lm.mean(0)
    t = np.deg2rad(roll_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return ((lm - c) @ rot.T) * scale + c + np.asarray(shift)


def _pose_bank() -> DonorBank:
    marks = np.stack([_posed(), _posed(nose_dx=-0.35, mouth_dx=-0.15), _posed(nose_dx=0.35, mouth_dx=0.15),
                      _posed(mouth_dy=0.35)]).astype(np.float32)
    images = np.zeros((4, 64, 64, 3), np.uint8)
    return DonorBank(images, marks * (64 / 256))  # landmarks in the donors' own 64 px crops


def test_pose_descriptor_ignores_position_scale_roll():
    a = pose_descriptor(_posed(nose_dx=0.2))
    b = pose_descriptor(_posed(nose_dx=0.2, roll_deg=25, scale=0.6, shift=(13, -7)))
    assert np.allclose(a, b, atol=1e-4)
    assert np.linalg.norm(a - pose_descriptor(_posed())) > 0.15


def test_pose_choice_prefers_fitting_donor_over_seed_preference():
    bank = _pose_bank()
    # seed 0 prefers the frontal donor 0; a rolled, yawed face is far from it: the yawed donor 2 is used
    turned = _posed(nose_dx=0.33, mouth_dx=0.14, roll_deg=-20, scale=0.8, shift=(10, 5))
    assert bank.choose(turned, seed=0) == 2
    assert bank.choose(_posed(nose_dx=-0.33, mouth_dx=-0.14, roll_deg=15), seed=4) == 1  # turned the other way
    assert bank.choose(_posed(mouth_dy=0.3), seed=8) == 3  # open mouth
    # a pose close enough keeps the seed's own donor, whichever is nearest
    bank = _pose_bank()
    assert bank.choose(_posed(nose_dx=0.12, mouth_dx=0.05), seed=0) == 0
    assert bank.choose(_posed(nose_dx=0.2, mouth_dx=0.08), seed=2) == 2
    assert bank.choose(_posed(), seed=1) == 0  # seed 1's donor (turned left) is far from a frontal face


def test_pose_choice_is_sticky_per_track():
    bank = _pose_bank()
    rng = np.random.default_rng(0)
    seed = 1  # prefers donor 1 (turned left): far from a face turned right
    right = _posed(nose_dx=0.2, mouth_dx=0.08)  # donors 0 (frontal) and 2 (turned right) both fit
    assert bank.choose(right, seed) == 0  # one of the fitting donors, picked by the seed
    for _ in range(5):  # landmark jitter changes nothing
        assert bank.choose(right + rng.normal(0, 0.5, (5, 2)), seed) == 0
    # the face turns further right: donor 2 is now the nearest (a new track would get it), but
    # donor 0 is still acceptable, so this track keeps it
    further = _posed(nose_dx=0.27, mouth_dx=0.11)
    assert _pose_bank().choose(further, seed) == 2
    assert bank.choose(further, seed) == 0
    # turned hard right, donor 0 is no longer acceptable: the track moves to donor 2 and keeps it
    hard = _posed(nose_dx=0.36, mouth_dx=0.15)
    assert bank.choose(hard, seed) == 2
    assert bank.choose(right, seed) == 2
    assert bank.choose(_posed(nose_dx=0.12, mouth_dx=0.05), seed=seed + 4 * 17) in (0, 2)  # other tracks unaffected


def test_render_uses_the_pose_choice(dcgan_bank, yunet, monkeypatch):
    bank = DonorBank(dcgan_bank[0].images, dcgan_bank[0].landmarks)
    crop, lm = _face_crop("obama.jpg", yunet)
    calls = []
    original = DonorBank.choose
    def spy(self, landmarks_in_crop, seed):
        calls.append(original(self, landmarks_in_crop, seed))
        return calls[-1]

    monkeypatch.setattr(DonorBank, "choose", spy)
    a, _ = bank.render(crop, lm, 3)
    b, _ = bank.render(crop, lm, 3)
    assert len(calls) == 2 and calls[0] == calls[1] and np.array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# bad bank files
def test_bad_donor_files_clear_errors(tmp_path, dcgan_bank):
    with pytest.raises(FileNotFoundError, match="no donor bank"):
        DonorBank.load(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not a donor bank")
    with pytest.raises(ValueError, match="not a styleid-edge donor bank"):
        DonorBank.load(text)
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    with pytest.raises(ValueError, match="not a styleid-edge donor bank"):
        DonorBank.load(plain)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ValueError, match="missing format, images, landmarks"):
        DonorBank.load(other)
    bank = dcgan_bank[0]
    newer = tmp_path / "newer.npz"
    np.savez(newer, format=np.int64(99), images=bank.images[:1], landmarks=bank.landmarks[:1])
    with pytest.raises(ValueError, match="format 99"):
        DonorBank.load(newer)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.int64(1), images=np.array([object()], dtype=object), landmarks=bank.landmarks[:1])
    with pytest.raises(ValueError, match="not a styleid-edge donor bank"):
        DonorBank.load(pickled)
    floats = tmp_path / "floats.npz"
    np.savez(floats, format=np.int64(1), images=bank.images[:2].astype(np.float32), landmarks=bank.landmarks[:2])
    with pytest.raises(ValueError, match="uint8"):
        DonorBank.load(floats)
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, format=np.int64(1), images=bank.images[:2], landmarks=bank.landmarks[:1])
    with pytest.raises(ValueError, match="does not match 2 images"):
        DonorBank.load(mismatch)


def test_bad_donor_file_cli_error_no_output(tmp_path, capsys):
    src = tmp_path / "in.jpg"
    cv2.imwrite(str(src), cv2.resize(cv2.imread(str(PHOTOS / "obama.jpg")), (455, 568)))
    out = tmp_path / "out.jpg"
    bad = tmp_path / "bank.npz"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    assert cli_main(["anonymize", str(src), "-o", str(out), "--method", "donor", "--donors", str(bad), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bank.npz" in err and "not a styleid-edge donor bank" in err
    assert cli_main(["anonymize", str(src), "-o", str(out), "--method", "donor",
                     "--donors", str(tmp_path / "nope.npz"), "-q"]) == 2
    assert "no donor bank" in capsys.readouterr().err
    assert not out.exists()
