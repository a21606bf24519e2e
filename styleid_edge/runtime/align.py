"""Face alignment from 5 landmarks: ArcFace 112 px crops, FFHQ-style crops, face quality.

Landmark order everywhere (see :mod:`.detect`): eye at smaller image x, other eye, nose tip, mouth
corner at smaller x, mouth corner at larger x -- the order of the ArcFace template below.

Every crop function returns ``(crop, M)`` where ``M`` (2x3, float64) maps frame pixel
coordinates to crop pixel coordinates (``cv2.warpAffine`` convention); :func:`invert_affine`
gives the matrix for pasting back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import cv2
import numpy as np

__all__ = [
    "ARCFACE_TEMPLATE",
    "AlignedFace",
    "FaceQuality",
    "align_arcface",
    "affine_from_3_points",
    "align_ffhq",
    "arcface_crop",
    "face_quality",
    "ffhq_crop",
    "ffhq_quad",
    "invert_affine",
    "similarity_transform",
    "transform_points",
]

#: ArcFace / insightface 112x112 5-point template (left eye, right eye, nose, mouth left, mouth right).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


@dataclass
class AlignedFace:
    """A warped face crop and the 2x3 matrix that made it (frame -> crop pixels)."""

    crop: np.ndarray
    matrix: np.ndarray
    size: int

    @property
    def inverse(self) -> np.ndarray:
        """crop -> frame, for pasting back."""
        return invert_affine(self.matrix)


def _as_points(pts: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be an (N,2) array with N >= 2, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation + uniform scale + translation) mapping src onto dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns": with centred point sets, the covariance ``S = dst_c^T src_c / n`` has SVD
    ``U D V^T``; the rotation is ``U diag(1, det(U V^T)) V^T`` (no reflections), the scale is
    ``trace(D diag(1, d)) / var(src)`` and the translation aligns the means. Returns a 2x3 float64
    matrix for ``cv2.warpAffine``.
    """
    src = _as_points(src_pts, "src_pts")
    dst = _as_points(dst_pts, "dst_pts")
    if src.shape != dst.shape:
        raise ValueError(f"src_pts {src.shape} and dst_pts {dst.shape} must have the same shape")
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / n
    if var_s < 1e-12:
        raise ValueError("src_pts are all (nearly) the same point; cannot estimate a similarity")
    cov = dc.T @ sc / n
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    m = np.empty((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = t
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (float64)."""
    m = np.asarray(m, dtype=np.float64).reshape(2, 3)
    a = m[:, :2]
    det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
    if abs(det) < 1e-12:
        raise ValueError("affine matrix is singular; it cannot be inverted")
    ai = np.linalg.inv(a)
    out = np.empty((2, 3), np.float64)
    out[:, :2] = ai
    out[:, 2] = -ai @ m[:, 2]
    return out


def affine_from_3_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 affine taking 3 points onto 3 points (``cv2.getAffineTransform`` in float64)."""
    s = np.asarray(src, np.float64).reshape(3, 2)
    d = np.asarray(dst, np.float64).reshape(3, 2)
    a = np.hstack([s, np.ones((3, 1))])
    if abs(np.linalg.det(a)) < 1e-12:
        raise ValueError("the 3 source points are collinear; no affine transform")
    return np.linalg.solve(a, d).T


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N,2) points."""
    m = np.asarray(m, np.float64).reshape(2, 3)
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    return p @ m[:, :2].T + m[:, 2]


# --------------------------------------------------------------------------------------------
# ArcFace 112
# --------------------------------------------------------------------------------------------


def arcface_crop(frame: np.ndarray, landmarks: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Recognizer crop: similarity-warp the 5 landmarks onto the ArcFace template.

    ``size`` other than 112 scales the template (as insightface does for 128 px models).
    Same matrix as OpenCV's ``FaceRecognizerSF.alignCrop`` for 112 px; bilinear, constant border.
    """
    lm = _as_points(landmarks, "landmarks")
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must be (5,2), got {lm.shape}")
    m = similarity_transform(lm, ARCFACE_TEMPLATE * (size / 112.0))
    crop = cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, m


def align_arcface(frame: np.ndarray, landmarks: np.ndarray, size: int = 112) -> AlignedFace:
    crop, m = arcface_crop(frame, landmarks, size)
    return AlignedFace(crop, m, size)


# --------------------------------------------------------------------------------------------
# FFHQ
# --------------------------------------------------------------------------------------------


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad (4,2) from 5 points: top-left, bottom-left, bottom-right, top-right.

    The FFHQ rule (NVlabs ``ffhq-dataset``, used by StyleGAN2 / e4e), on eye centres and mouth
    corners only: eye_avg, eye_to_eye, mouth_avg, eye_to_mouth;
    ``x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1]``, normalised, scaled by
    ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``; ``y = flipud(x) * [-1, 1]``;
    ``c = eye_avg + 0.1 * eye_to_mouth``; quad = ``[c - x - y, c - x + y, c + x + y, c + x - y]``.
    """
    lm = _as_points(landmarks, "landmarks")
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must be (5,2), got {lm.shape}")
    eye_left, eye_right = lm[0], lm[1]
    mouth_left, mouth_right = lm[3], lm[4]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if norm < 1e-9:
        raise ValueError("degenerate landmarks (eyes and mouth coincide); cannot build the FFHQ quad")
    x = x / norm
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_crop(frame: np.ndarray, landmarks: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """FFHQ-aligned crop as ONE affine warp.

    The reference pipeline crops, reflect-pads (with a blurred border), shrinks, and resamples the
    quad with ``PIL.Image.transform(QUAD)``. The quad is a square (x and y are perpendicular and of
    equal length), so the quad-to-square map is a similarity and is fully determined by three
    corners: we map quad corners top-left, bottom-left, bottom-right onto the output corners
    (:func:`affine_from_3_points`, the float64 ``cv2.getAffineTransform``) and resample once with ``cv2.warpAffine`` (bilinear,
    ``BORDER_REFLECT_101`` = numpy ``'reflect'`` padding). PIL's QUAD works in pixel-*edge*
    coordinates (the reference adds 0.5 to the quad), OpenCV in pixel-*centre* coordinates, so the
    output corners are placed at -0.5 and ``size - 0.5``; the result matches the reference
    geometry exactly. Differences that remain, on purpose: no blur of the padded border, and
    downscaling by more than 2x first shrinks the source with ``INTER_AREA`` (the reference's
    "shrink" step) instead of PIL's antialiased filter.

    Returns ``(crop, M)`` with ``M`` mapping frame pixels to crop pixels.
    """
    quad = ffhq_quad(landmarks)
    dst = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]], np.float64)
    m = affine_from_3_points(quad[:3], dst)
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    shrink = int(math.floor(qsize / size * 0.5))
    src = frame
    pre = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if shrink > 1:
        h, w = frame.shape[:2]
        nw, nh = max(1, int(round(w / shrink))), max(1, int(round(h / shrink)))
        src = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
        sx, sy = nw / w, nh / h
        # frame pixel centre x -> shrunk pixel centre (x + 0.5) * s - 0.5
        pre = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
    m_src = m @ np.vstack([invert_affine(pre), [0, 0, 1]])
    crop = cv2.warpAffine(src, m_src, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return crop, m


def align_ffhq(frame: np.ndarray, landmarks: np.ndarray, size: int = 256) -> AlignedFace:
    crop, m = ffhq_crop(frame, landmarks, size)
    return AlignedFace(crop, m, size)


# --------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------


class FaceQuality(TypedDict):
    size_px: float  # side of the FFHQ quad in frame pixels (what the 256 px encoder crop is made from)
    eye_dist_px: float
    yaw_proxy: float  # 0 frontal, +-1 profile (nose level with an eye); sign: + nose towards larger x
    roll: float  # degrees, eye line vs horizontal, + clockwise in image coordinates (y down)


def face_quality(landmarks: np.ndarray) -> FaceQuality:
    """Cheap geometry from 5 landmarks for the runtime's fail-closed decisions.

    - ``size_px``: side length of the FFHQ quad in frame pixels. Below ~64 px the encoder works
      on a heavily upsampled crop; the runtime should blur such faces instead.
    - ``yaw_proxy``: horizontal offset of the nose tip from the midline of the eyes and mouth,
      measured after undoing roll, in units of half the eye distance, clipped to [-1, 1]. For a
      typical head it is about ``0.7 * tan(yaw)``: 0 frontal, ~0.4 at 30 degrees, ~0.7 at 45,
      1 (clipped) from ~55 degrees, where the nose tip reaches an eye -- a near profile.
    - ``roll``: angle of the eye line in degrees.
    """
    lm = _as_points(landmarks, "landmarks")
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must be (5,2), got {lm.shape}")
    eye_vec = lm[1] - lm[0]
    eye_dist = float(np.hypot(*eye_vec))
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    try:
        quad = ffhq_quad(lm)
        size = float(np.hypot(*(quad[3] - quad[0])))
    except ValueError:
        size = 0.0
    if eye_dist < 1e-6:
        return FaceQuality(size_px=size, eye_dist_px=0.0, yaw_proxy=1.0, roll=0.0)
    c, s = math.cos(-math.radians(roll)), math.sin(-math.radians(roll))
    r = np.array([[c, -s], [s, c]])
    p = (lm - lm.mean(0)) @ r.T
    mid = (p[0, 0] + p[1, 0] + p[3, 0] + p[4, 0]) / 4.0
    yaw = float(np.clip((p[2, 0] - mid) / (eye_dist / 2.0), -1.0, 1.0))
    return FaceQuality(size_px=size, eye_dist_px=eye_dist, yaw_proxy=yaw, roll=roll)
