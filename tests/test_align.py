"""Alignment: Umeyama similarity, ArcFace 112 crop, FFHQ crop as one affine warp, face quality."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from styleid_edge.runtime import align as A

PHOTOS = Path(__file__).parent / "data" / "photos"


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


@pytest.fixture(scope="module")
def obama():
    img = cv2.imread(str(PHOTOS / "obama.jpg"))
    # landmarks from YuNet on this photo (left eye, right eye, nose, mouth left, mouth right)
    lm = np.array([[443.1, 208.2], [550.2, 210.5], [500.5, 271.4], [445.1, 317.4], [544.4, 319.5]])
    return img, lm


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    m_true = similarity(23.0, 1.7, -12.0, 40.0)
    dst = A.transform_points(m_true, src)
    m = A.similarity_transform(src, dst)
    np.testing.assert_allclose(m, m_true, atol=1e-9)


def test_similarity_transform_never_reflects():
    src = A.ARCFACE_TEMPLATE.copy()
    dst = src * [-1, 1]  # a mirror image: the best *similarity* is still a rotation
    a = A.similarity_transform(src, dst)[:, :2]
    assert a[0, 0] == pytest.approx(a[1, 1]) and a[0, 1] == pytest.approx(-a[1, 0])
    assert np.linalg.det(a) >= 0


def test_similarity_transform_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        A.similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same point"):
        A.similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))


def test_arcface_crop_puts_landmarks_on_the_template():
    # landmarks that are an exact similarity image of the template land on it (< 1 px; here ~0)
    m_face = similarity(-17.0, 2.3, 300.0, 150.0)
    lm = A.transform_points(m_face, A.ARCFACE_TEMPLATE)
    frame = np.random.default_rng(1).integers(0, 255, (600, 700, 3), dtype=np.uint8)
    crop, m = A.arcface_crop(frame, lm)
    assert crop.shape == (112, 112, 3)
    err = np.linalg.norm(A.transform_points(m, lm) - A.ARCFACE_TEMPLATE, axis=1)
    assert err.max() < 1e-6


def test_arcface_crop_on_a_real_face_is_close_to_the_template(obama):
    img, lm = obama
    crop, m = A.arcface_crop(img, lm)
    err = np.linalg.norm(A.transform_points(m, lm) - A.ARCFACE_TEMPLATE, axis=1)
    assert err.mean() < 3.0  # real faces are not an exact similarity of the template
    assert crop.std() > 20  # a face, not border


def test_invert_affine_round_trip():
    m = similarity(40.0, 0.6, 10.0, -5.0)
    m[0, 1] += 0.1  # not just similarities
    mi = A.invert_affine(m)
    pts = np.random.default_rng(2).uniform(-50, 50, (10, 2))
    np.testing.assert_allclose(A.transform_points(mi, A.transform_points(m, pts)), pts, atol=1e-9)
    np.testing.assert_allclose(mi, cv2.invertAffineTransform(m), atol=1e-9)


def test_ffhq_quad_follows_the_reference_rule(obama):
    _, lm = obama
    q = A.ffhq_quad(lm)
    eye_avg = (lm[0] + lm[1]) / 2
    mouth_avg = (lm[3] + lm[4]) / 2
    e2e, e2m = lm[1] - lm[0], mouth_avg - eye_avg
    side = 2 * max(2 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    np.testing.assert_allclose(np.linalg.norm(q[3] - q[0]), side, rtol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(q[1] - q[0]), side, rtol=1e-9)
    np.testing.assert_allclose(q.mean(0), eye_avg + 0.1 * e2m, atol=1e-9)
    assert q[0][1] < q[1][1] and q[0][0] < q[3][0]  # top-left, bottom-left, ..., top-right


def test_ffhq_crop_maps_quad_to_output_corners_and_back(obama):
    img, lm = obama
    size = 256
    crop, m = A.ffhq_crop(img, lm, size)
    assert crop.shape == (size, size, 3)
    q = A.ffhq_quad(lm)
    corners = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]])
    np.testing.assert_allclose(A.transform_points(m, q), corners, atol=1e-6)
    np.testing.assert_allclose(A.transform_points(A.invert_affine(m), corners), q, atol=1e-6)


def test_ffhq_crop_round_trip_restores_the_face(obama):
    img, lm = obama
    crop, m = A.ffhq_crop(img, lm, 512)
    back = cv2.warpAffine(crop, A.invert_affine(m), (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR)
    x0, y0 = (lm.min(0) - 20).astype(int)
    x1, y1 = (lm.max(0) + 20).astype(int)
    diff = np.abs(back[y0:y1, x0:x1].astype(float) - img[y0:y1, x0:x1]).mean()
    assert diff < 4.0, diff


def test_ffhq_crop_matches_the_pil_quad_reference(obama):
    """Same geometry as the FFHQ script's PIL QUAD transform (``quad + 0.5``), within resampling noise."""
    Image = pytest.importorskip("PIL.Image")
    img, lm = obama
    size = 256
    # keep the quad inside the photo and skip the reference's shrink step: compare at 1/1.5x scale
    small = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    lm_s = (lm + 0.5) * 0.5 - 0.5
    q = A.ffhq_quad(lm_s)
    assert q.min() > 0 and q[:, 0].max() < small.shape[1] and q[:, 1].max() < small.shape[0]
    pil = Image.fromarray(small[:, :, ::-1])
    ref = np.asarray(pil.transform((size, size), Image.QUAD, (q + 0.5).flatten(), Image.BILINEAR))[:, :, ::-1]
    ours, _ = A.ffhq_crop(small, lm_s, size)
    diff = np.abs(ours.astype(float) - ref.astype(float))
    assert diff.mean() < 2.0, diff.mean()


def test_ffhq_crop_downscales_large_faces_with_the_same_geometry(obama):
    img, lm = obama
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    lm_big = (lm + 0.5) * 2 - 0.5
    a, ma = A.ffhq_crop(img, lm, 128)
    b, mb = A.ffhq_crop(big, lm_big, 128)  # quad ~4.6x the output: takes the shrink path
    np.testing.assert_allclose(A.transform_points(mb, lm_big), A.transform_points(ma, lm), atol=1e-6)
    assert np.abs(a.astype(float) - b).mean() < 6.0


def test_aligned_face_dataclass(obama):
    img, lm = obama
    face = A.align_ffhq(img, lm, 256)
    assert face.size == 256 and face.crop.shape == (256, 256, 3)
    np.testing.assert_allclose(face.inverse, A.invert_affine(face.matrix))
    assert A.align_arcface(img, lm).crop.shape == (112, 112, 3)


def test_face_quality_reports_size_yaw_and_roll(obama):
    _, lm = obama
    q = A.face_quality(lm)
    assert set(q) >= {"size_px", "yaw_proxy", "roll"}
    assert abs(q["yaw_proxy"]) < 0.15 and abs(q["roll"]) < 3.0
    assert q["size_px"] == pytest.approx(np.linalg.norm(A.ffhq_quad(lm)[3] - A.ffhq_quad(lm)[0]))
    # scaled down 10x: 10x smaller
    assert A.face_quality(lm / 10)["size_px"] == pytest.approx(q["size_px"] / 10)
    # rolled by 25 degrees: roll follows, yaw does not
    r = A.transform_points(similarity(25.0, 1.0, 0, 0), lm)
    qr = A.face_quality(r)
    assert qr["roll"] == pytest.approx(q["roll"] + 25.0, abs=1e-6)
    assert qr["yaw_proxy"] == pytest.approx(q["yaw_proxy"], abs=1e-6)
    # nose pushed level with the right eye's x: a near profile
    prof = lm.copy()
    prof[2, 0] = lm[1, 0]
    assert A.face_quality(prof)["yaw_proxy"] > 0.8
    prof[2, 0] = lm[0, 0]
    assert A.face_quality(prof)["yaw_proxy"] < -0.8
