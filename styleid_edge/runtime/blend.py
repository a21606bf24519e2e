"""Paste-back, colour transfer and landmark-built face masks (torch-free).

Conventions: images are BGR ``uint8``; a face crop was made with
``cv2.warpAffine(frame, M, (size, size))`` where ``M`` is the 2x3 affine map
frame -> crop; landmarks are 5 points (left eye, right eye, nose, left and
right mouth corner) as (x, y).

Paste-back (:func:`paste_back`) works the way face swappers do it: the new
crop and a soft mask are warped back with the inverse of ``M`` and
alpha-blended into the frame. Only the bounding box of the warped crop (the
ROI) is read, warped into and written, with ``M`` shifted to the ROI origin, so
the cost follows the face size, not the frame size (a 64 px face in a 4K frame
costs the same as in a 480p one).

The pixel method's blend (:func:`blend_inner_face`) follows StyleID's
pixel-space disentanglement without a face parser: the generated face is
colour-matched (Reinhard LAB, or StyleID's histogram matching) to the source
inside a face oval, and
only the inner face (brows, eyes, nose, mouth, cheeks) is blended in with a
feathered mask built from the 5 landmarks; hair, ears, neck and background stay
the source's. Both masks can be replaced by a segmenter's when one exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

ColourMode = Literal["reinhard", "none"]
InnerColourMode = Literal["histogram", "reinhard", "none"]

_MIN_STAT_PIXELS = 16  # fewer masked pixels than this: colour statistics are not trusted
_STD_RATIO_LIMITS = (0.25, 4.0)  # Reinhard gain clamp: a flat source cannot blow noise up
_MASK_WORK_SIZE = 256  # soft masks are drawn at most this large, then resized (they are smooth)


# ----------------------------------------------------------------------------------------------
# configuration
@dataclass(frozen=True)
class PasteConfig:
    """How :func:`paste_back` builds its default mask and matches colour.

    erode_frac: the default mask is a white square shrunk by this fraction of
        the crop size on every side (so the crop's border, where warps are
        unreliable, never shows).
    feather_frac: half-width of the Gaussian transition of the default mask, as
        a fraction of the crop size (sigma = feather_frac * size / 3, so the
        mask is ~0 at the crop edge as long as feather_frac <= erode_frac).
    colour: ``"reinhard"`` matches the new crop's LAB mean/std to the frame
        content under the mask before blending; ``"none"`` pastes as is.
    """

    erode_frac: float = 0.10
    feather_frac: float = 0.05
    colour: ColourMode = "reinhard"

    def __post_init__(self) -> None:
        if not 0.0 <= self.erode_frac < 0.5:
            raise ValueError(f"erode_frac must be in [0, 0.5), got {self.erode_frac}")
        if self.feather_frac < 0.0:
            raise ValueError(f"feather_frac must be >= 0, got {self.feather_frac}")
        if self.colour not in ("reinhard", "none"):
            raise ValueError(f"colour must be 'reinhard' or 'none', got {self.colour!r}")


@dataclass(frozen=True)
class InnerBlendConfig:
    """How :func:`blend_inner_face` matches colour and shapes its masks.

    colour: ``"reinhard"`` (LAB mean/std inside the face region; the
        default), ``"histogram"`` (per-channel histogram matching, as StyleID's
        own pixel method does) or ``"none"``. Reinhard is the default because
        it only shifts and scales: per-channel histogram matching bends colours
        (green brows, white blotches on real photos here) whenever the two
        face regions hold different proportions of skin, hair and brows, which
        is the normal case for donor faces.
    inner_dilate / inner_feather: passed to :func:`inner_face_mask` (fractions
        of the eye distance).
    region_scale / region_feather: passed to :func:`face_region_mask`.
    """

    colour: InnerColourMode = "reinhard"
    inner_dilate: float = 0.05
    inner_feather: float = 0.20
    region_scale: float = 1.0
    region_feather: float = 0.15

    def __post_init__(self) -> None:
        if self.colour not in ("histogram", "reinhard", "none"):
            raise ValueError(f"colour must be 'histogram', 'reinhard' or 'none', got {self.colour!r}")


# ----------------------------------------------------------------------------------------------
# small helpers
def _as_affine(M: np.ndarray) -> np.ndarray:
    m = np.asarray(M, dtype=np.float64)
    if m.shape == (3, 3):
        m = m[:2]
    if m.shape != (2, 3) or not np.isfinite(m).all():
        raise ValueError(f"M must be a finite 2x3 (or 3x3) affine matrix, got shape {np.shape(M)}")
    if abs(np.linalg.det(m[:, :2])) < 1e-12:
        raise ValueError("M is singular: cannot invert the crop transform")
    return m


def _check_bgr(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be a BGR uint8 array (H, W, 3), got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")


def _as_float_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {m.shape}")
    if m.dtype == np.uint8:
        return m.astype(np.float32) * np.float32(1.0 / 255.0)
    if m.dtype == bool:
        return m.astype(np.float32)
    return np.clip(m.astype(np.float32), 0.0, 1.0)


def paste_roi(frame_shape: tuple[int, ...], M: np.ndarray,
              crop_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Frame pixels a crop pasted with ``M`` can touch: ``(x0, y0, x1, y1)`` (exclusive ends), or None.

    The bounding box of the crop's four corners mapped back to the frame, padded
    by one pixel for bilinear support and clipped to the frame; None when the
    crop lies entirely outside the frame.
    """
    m = _as_affine(M)
    h, w = int(frame_shape[0]), int(frame_shape[1])
    ch, cw = int(crop_shape[0]), int(crop_shape[1])
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [cw, 0, 1], [cw, ch, 1], [0, ch, 1]], dtype=np.float64)
    pts = corners @ inv.T
    # bilinear support reaches one crop pixel past the corners: that many frame pixels, at least one
    pad = int(np.ceil(max(1.0, 1.0 / np.linalg.svd(m[:, :2], compute_uv=False).min())))
    x0 = max(int(np.floor(pts[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + pad + 1, w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + pad + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


@lru_cache(maxsize=32)
def _default_mask_cached(h: int, w: int, erode_frac: float, feather_frac: float) -> np.ndarray:
    size = min(h, w)
    e = int(round(erode_frac * size))
    mask = np.zeros((h, w), np.float32)
    mask[e:h - e, e:w - e] = 1.0
    sigma = feather_frac * size / 3.0
    if sigma > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    mask.setflags(write=False)
    return mask


def default_paste_mask(size: int | tuple[int, int], erode_frac: float = 0.10, feather_frac: float = 0.05) -> np.ndarray:
    """The default crop-space paste mask: an eroded, Gaussian-feathered white square (float32, read-only)."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    return _default_mask_cached(int(h), int(w), float(erode_frac), float(feather_frac))


def _crop_validity(roi_to_crop: np.ndarray, roi_hw: tuple[int, int], crop_hw: tuple[int, int]) -> np.ndarray:
    """Crop pixels whose source lies inside the frame (0/1 uint8): the ROI holds every in-frame pixel of the
    crop's footprint, so whatever maps outside the ROI is outside the frame (border fill in the crop)."""
    ones = np.ones(roi_hw, np.uint8)
    return cv2.warpAffine(ones, roi_to_crop, (crop_hw[1], crop_hw[0]), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _shrink_to_footprint(crop: np.ndarray, alpha: np.ndarray, m: np.ndarray,
                         max_ratio: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-downsample a crop much larger than its footprint in the frame (a 1024 px crop pasted on a
    150 px face): bilinear warping alone would alias. Returns the crop, its mask and the adjusted M."""
    ratio = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # crop pixels per frame pixel
    if ratio <= max_ratio:
        return crop, alpha, m
    ch, cw = crop.shape[:2]
    nh, nw = max(2, int(round(ch / ratio))), max(2, int(round(cw / ratio)))
    kx, ky = nw / cw, nh / ch
    # resize maps pixel centres: x' = (x + 0.5) * k - 0.5
    scale = np.array([[kx, 0.0, 0.5 * kx - 0.5], [0.0, ky, 0.5 * ky - 0.5], [0.0, 0.0, 1.0]])
    m_small = (scale @ np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    crop = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(np.ascontiguousarray(alpha), (nw, nh), interpolation=cv2.INTER_AREA)
    return crop, alpha, m_small


# ----------------------------------------------------------------------------------------------
# paste back
def paste_back(frame: np.ndarray, face_crop: np.ndarray, M: np.ndarray, mask: np.ndarray | None = None,
               config: PasteConfig = PasteConfig()) -> np.ndarray:
    """Blend ``face_crop`` back into ``frame`` in place; returns ``frame``.

    ``M`` is the frame -> crop affine that produced the crop. ``mask`` is an
    optional crop-space alpha (float in [0, 1] or uint8 0..255, shape of the
    crop), used as given; by default :func:`default_paste_mask` with the
    config's erosion and feathering. A crop much larger than its footprint
    is area-downsampled first (no aliasing). Only the ROI returned by
    :func:`paste_roi` is read and written; pixels where the warped alpha is 0
    keep their exact values. A crop entirely outside the frame is a no-op.
    Raises ValueError for malformed input (callers fall back to obscuring).
    """
    _check_bgr(frame, "frame")
    _check_bgr(face_crop, "face_crop")
    m = _as_affine(M)
    ch, cw = face_crop.shape[:2]
    alpha_crop = (default_paste_mask((ch, cw), config.erode_frac, config.feather_frac) if mask is None
                  else _as_float_mask(mask, (ch, cw)))
    face_crop, alpha_crop, m = _shrink_to_footprint(face_crop, alpha_crop, m)
    ch, cw = face_crop.shape[:2]
    roi_box = paste_roi(frame.shape, m, face_crop.shape)
    if roi_box is None:
        log.debug("paste_back: crop lies outside the frame, nothing pasted")
        return frame
    x0, y0, x1, y1 = roi_box
    roi = frame[y0:y1, x0:x1]

    # ROI pixel (u, v) is frame pixel (u + x0, v + y0): m_roi maps ROI -> crop.
    m_roi = m.copy()
    m_roi[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)

    crop = face_crop
    if config.colour == "reinhard":
        # The frame content under the crop, sampled the way the crop was made, at the crop pixels that the
        # statistics read (every k-th row and column of a large crop; the crop's own stats are taken there too)
        k = stats_step((ch, cw))
        m_stats = m_roi / k  # ROI -> the crop's (k*u, k*v) grid
        hs, ws = -(-ch // k), -(-cw // k)
        original = cv2.warpAffine(roi, m_stats, (ws, hs), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid = (alpha_crop[::k, ::k] > 0.5) & (_crop_validity(m_stats, roi.shape[:2], (hs, ws)) > 0)
        stats_mask = np.zeros((ch, cw), bool)
        stats_mask[::k, ::k] = valid
        crop = reinhard_lab(face_crop, original, stats_mask, ref_mask=valid)

    # With WARP_INVERSE_MAP the matrix maps dst (ROI) -> src (crop), exactly the forward sampling inverted.
    size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(crop, m_roi, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(alpha_crop, m_roi, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    np.clip(alpha, 0.0, 1.0, out=alpha)

    # (alpha * warped + (1 - alpha) * roi), rounded; exact where alpha is 0 or 1
    roi[...] = cv2.blendLinear(warped, np.ascontiguousarray(roi), alpha, 1.0 - alpha)
    return frame


# ----------------------------------------------------------------------------------------------
# colour transfer
_STATS_SIDE = 128  # colour statistics read about this many rows and columns of a larger image


def stats_step(hw: tuple[int, int]) -> int:
    """The stride at which colour statistics sample an image of shape ``hw``: 1 up to 255 px, then every
    k-th row and column so that at least 128 of each are read (a 512 px crop: every 4th, 16k pixels). Mean and
    standard deviation of such a regular sample differ from the full image's by a small fraction of a LAB
    unit on faces, at 1/k^2 of the colour conversions."""
    return max(1, min(hw) // _STATS_SIDE)


def _sampled(sel: np.ndarray | None, hw: tuple[int, int]) -> tuple[int, np.ndarray | None]:
    """The statistics stride for an image of shape ``hw`` and its 0/1 mask at that stride; every pixel (stride
    1) when the sampled mask keeps too few pixels (a small mask, or one lying between the sampled rows)."""
    k = stats_step(hw)
    if sel is None or k == 1:
        return k, sel
    sampled = np.ascontiguousarray(sel[::k, ::k])
    if cv2.countNonZero(sampled) < _MIN_STAT_PIXELS * 16:
        return 1, sel
    return k, sampled


def _bgr_to_lab(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.multiply(img, np.float32(1.0 / 255.0), dtype=np.float32), cv2.COLOR_BGR2Lab)


def _lab_to_bgr_u8(lab: np.ndarray) -> np.ndarray:
    bgr = cv2.cvtColor(lab.astype(np.float32, copy=False), cv2.COLOR_Lab2BGR)
    np.clip(bgr, 0.0, 1.0, out=bgr)
    return cv2.convertScaleAbs(bgr, alpha=255.0)  # x 255, rounded, as uint8


def _binary(mask: np.ndarray | None, shape: tuple[int, int], name: str = "mask") -> np.ndarray | None:
    """A uint8 0/1 mask (pixels where ``mask`` > 0.5), or None for "everywhere"."""
    if mask is None:
        return None
    return (_as_float_mask(mask, shape, name) > 0.5).astype(np.uint8)


def masked_mean_std(values: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of an (H, W, C) array over a 0/1 uint8 mask (None: all)."""
    mean, std = cv2.meanStdDev(values, mask=mask)
    return mean.reshape(-1), std.reshape(-1)


def reinhard_lab(src_crop: np.ndarray, ref_crop: np.ndarray, mask: np.ndarray | None = None,
                 ref_mask: np.ndarray | None = None) -> np.ndarray:
    """Reinhard colour transfer: give ``src_crop`` the LAB mean and std of ``ref_crop``.

    Statistics are taken where ``mask`` > 0.5 (float, uint8 0..255 or bool;
    the whole image when None) — for the reference where ``ref_mask`` > 0.5
    when given, else the same mask — on every :func:`stats_step`-th row and
    column of images of 256 px and more (every pixel when the mask keeps
    fewer than 256 of the sampled ones). The per-channel affine map is
    applied to every pixel of ``src_crop`` (callers blend with their own
    mask). LAB is computed in float (L 0..100), so there is no 8-bit LAB
    quantisation; the std gain is clamped to [0.25, 4]. Returns a new uint8
    image.
    """
    _check_bgr(src_crop, "src_crop")
    _check_bgr(ref_crop, "ref_crop")
    sel_s = _binary(mask, src_crop.shape[:2])
    rm = ref_mask if ref_mask is not None else (mask if ref_crop.shape[:2] == src_crop.shape[:2] else None)
    sel_r = _binary(rm, ref_crop.shape[:2], "ref_mask")
    ks, sel_s = _sampled(sel_s, src_crop.shape[:2])
    kr, sel_r = _sampled(sel_r, ref_crop.shape[:2])
    if (sel_s is not None and cv2.countNonZero(sel_s) < _MIN_STAT_PIXELS) or (
            sel_r is not None and cv2.countNonZero(sel_r) < _MIN_STAT_PIXELS):
        log.debug("reinhard_lab: mask too small for statistics, colour left as is")
        return src_crop.copy()
    lab_s = _bgr_to_lab(src_crop)
    mu_s, sd_s = masked_mean_std(np.ascontiguousarray(lab_s[::ks, ::ks]), sel_s)
    mu_r, sd_r = masked_mean_std(_bgr_to_lab(np.ascontiguousarray(ref_crop[::kr, ::kr])), sel_r)
    gain = np.clip(sd_r / np.maximum(sd_s, 1e-6), *_STD_RATIO_LIMITS)
    # lab * gain + (mu_r - mu_s * gain), per channel, in one pass
    affine = np.hstack([np.diag(gain), (mu_r - mu_s * gain)[:, None]]).astype(np.float32)
    return _lab_to_bgr_u8(cv2.transform(lab_s, affine))


def _match_lut(src_values: np.ndarray, ref_values: np.ndarray) -> np.ndarray:
    """A 256-entry LUT mapping source levels to reference levels with equal (mid-point) CDF."""
    hs = np.bincount(src_values, minlength=256).astype(np.float64)
    hr = np.bincount(ref_values, minlength=256).astype(np.float64)
    cdf_s = (np.cumsum(hs) - 0.5 * hs) / hs.sum()
    cdf_r = (np.cumsum(hr) - 0.5 * hr) / hr.sum()
    present = hr > 0
    levels = np.arange(256, dtype=np.float64)
    lut = np.interp(cdf_s, cdf_r[present], levels[present])
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def histogram_match(src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None,
                    ref_mask: np.ndarray | None = None) -> np.ndarray:
    """Per-channel histogram matching of ``src`` to ``ref`` (BGR uint8).

    Histograms are taken over pixels where ``mask`` > 0.5 (``ref_mask`` for the
    reference when given; the whole image when None); each channel's lookup
    table maps a source level to the reference level at the same cumulative
    fraction, and is applied to every pixel of ``src``. Returns a new image.
    """
    _check_bgr(src, "src")
    _check_bgr(ref, "ref")
    sel_s = None if mask is None else _as_float_mask(mask, src.shape[:2]) > 0.5
    rm = ref_mask if ref_mask is not None else (mask if ref.shape[:2] == src.shape[:2] else None)
    sel_r = None if rm is None else _as_float_mask(rm, ref.shape[:2], "ref_mask") > 0.5
    if (sel_s is not None and sel_s.sum() < _MIN_STAT_PIXELS) or (sel_r is not None and sel_r.sum() < _MIN_STAT_PIXELS):
        log.debug("histogram_match: mask too small for statistics, colour left as is")
        return src.copy()
    out = np.empty_like(src)
    for c in range(3):
        s_vals = src[..., c][sel_s] if sel_s is not None else src[..., c].ravel()
        r_vals = ref[..., c][sel_r] if sel_r is not None else ref[..., c].ravel()
        out[..., c] = cv2.LUT(src[..., c], _match_lut(s_vals, r_vals))
    return out


# ----------------------------------------------------------------------------------------------
# landmark-built masks
@dataclass(frozen=True)
class FaceFrame:
    """A face-aligned coordinate frame from 5 landmarks (crop pixels).

    ``u`` points from the left towards the right eye (FFHQ's x axis: eye-to-eye
    corrected by the eye-to-mouth direction, so it stays sane under yaw), ``v``
    is perpendicular and points from the eyes towards the mouth. ``d`` is the
    eye distance along ``u`` and ``h`` the eye-to-mouth distance along ``v``
    (each floored at a fraction of the other so a profile face keeps a size).
    """

    points: np.ndarray  # (5, 2) float64
    eye_mid: np.ndarray
    mouth_mid: np.ndarray
    u: np.ndarray
    v: np.ndarray
    d: float
    h: float

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> FaceFrame:
        p = np.asarray(landmarks, dtype=np.float64)
        if p.shape != (5, 2) or not np.isfinite(p).all():
            raise ValueError(f"landmarks must be 5 finite (x, y) points, got shape {p.shape}")
        eye_mid = (p[0] + p[1]) / 2.0
        mouth_mid = (p[3] + p[4]) / 2.0
        e2e = p[1] - p[0]
        e2m = mouth_mid - eye_mid
        x = e2e - np.array([-e2m[1], e2m[0]])
        n = np.linalg.norm(x)
        u = x / n if n > 1e-9 else np.array([1.0, 0.0])
        v = np.array([-u[1], u[0]])
        d = float(abs(e2e @ u))
        h = float(abs(e2m @ v))
        scale = max(d, h, 1e-3)
        d = max(d, 0.5 * h, 1e-3 * scale)
        h = max(h, 0.5 * d, 1e-3 * scale)
        return cls(p, eye_mid, mouth_mid, u, v, d, h)

    def at(self, origin: np.ndarray, du: float, dv: float) -> np.ndarray:
        """``origin`` moved by ``du`` eye distances along u and ``dv`` eye-to-mouth distances along v."""
        return origin + du * self.d * self.u + dv * self.h * self.v


# Inner-face polygon, as offsets from landmarks: (landmark index, du, dv) for the left half; the right half
# mirrors du with the right-side landmark (and the nose entries are mirrored about the nose).
_INNER_LEFT = (
    (0, -0.38, -0.48),   # above the outer end of the left brow
    (0, +0.20, -0.55),   # above the inner end of the left brow
    (0, -0.50, +0.05),   # outer eye corner / temple edge, at eye level
    (0, -0.46, +0.55),   # left cheek, between eye and mouth
    (3, -0.28, +0.05),   # beyond the left mouth corner
    (3, +0.05, +0.45),   # below the lower lip, left
    (2, -0.32, +0.10),   # left nose wing (keeps the nose inside on turned faces)
)
_INNER_MIRROR = {0: 1, 3: 4, 2: 2}


def _inner_polygon(ff: FaceFrame, dilate: float) -> np.ndarray:
    pts = []
    for idx, du, dv in _INNER_LEFT:
        pts.append(ff.at(ff.points[idx], du, dv))
        pts.append(ff.at(ff.points[_INNER_MIRROR[idx]], -du, dv))
    pts.extend(ff.points)  # the landmarks themselves are always inside
    pts = np.asarray(pts)
    if dilate:
        centre = pts.mean(axis=0)
        # push every vertex outward along its direction from the centroid by `dilate` eye distances
        vec = pts - centre
        norm = np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-9)
        pts = pts + vec / norm * (dilate * ff.d)
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)


def _soft_fill(size: int | tuple[int, int], draw, feather_px: float) -> np.ndarray:
    """Draw a hard shape with ``draw(img, scale)`` at a working resolution, feather it, resize to size."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    scale = min(1.0, _MASK_WORK_SIZE / max(h, w))
    wh, ww = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    img = np.zeros((wh, ww), np.uint8)
    draw(img, scale)
    mask = img.astype(np.float32) * np.float32(1.0 / 255.0)
    sigma = feather_px * scale / 2.0  # feather_px = 2 sigma: 0.98 .. 0.02 across +-feather_px
    if sigma > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    if (wh, ww) != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(mask, 0.0, 1.0)


def _fill_poly(points: np.ndarray):
    def draw(img: np.ndarray, scale: float) -> None:
        pts = np.round(points * scale * 16.0).astype(np.int32)  # 4 fractional bits
        cv2.fillConvexPoly(img, pts, 255, lineType=cv2.LINE_AA, shift=4)
    return draw


def inner_face_mask(landmarks_in_crop: np.ndarray, size: int | tuple[int, int], dilate: float = 0.05,
                    feather: float = 0.20) -> np.ndarray:
    """Soft mask (float32 (H, W) in [0, 1]) of the inner face: brows, eyes, nose, mouth and cheeks.

    Geometry (see :class:`FaceFrame`; d = eye distance, h = eye-to-mouth
    distance): the convex hull of the 5 landmarks and, per side, points
    0.48-0.55 h above each eye (brows: 0.38 d outward, 0.2 d inward), 0.5 d
    outside each eye (temple edge), 0.46 d outside and 0.55 h below each eye
    (cheek), 0.28 d beyond each mouth corner, 0.45 h below the mouth corners
    (lower lip) and 0.32 d either side of the nose tip. The hull is dilated by
    ``dilate`` eye distances and feathered with a Gaussian of sigma
    ``feather / 2`` eye distances: alpha is 0.5 on the hull edge and goes from
    ~0.98 to ~0.02 between ``feather`` eye distances inside and outside it. The forehead
    above the brows, hair, ears, jaw line and neck stay outside. Landmarks
    outside the crop are fine.
    """
    ff = FaceFrame.from_landmarks(landmarks_in_crop)
    poly = _inner_polygon(ff, dilate)
    return _soft_fill(size, _fill_poly(poly), feather * ff.d)


def face_region_mask(landmarks_in_crop: np.ndarray, size: int | tuple[int, int], scale: float = 1.0,
                     feather: float = 0.15) -> np.ndarray:
    """Soft face oval (float32 (H, W)) for colour statistics: skin, brows, eyes, nose, mouth, chin.

    An ellipse in the face frame: centre 0.4 h below the eye midpoint, semi-axes
    1.1 d across and 1.2 h along the face (so it spans from 0.8 h above the
    eyes — lower forehead — to ~0.6 h below the mouth — chin — and contains
    :func:`inner_face_mask`'s region), both times ``scale``; feathered like :func:`inner_face_mask` (0.5 on the ellipse,
    ~0.02 at ``feather`` eye distances outside it).
    """
    ff = FaceFrame.from_landmarks(landmarks_in_crop)
    centre = ff.at(ff.eye_mid, 0.0, 0.40)
    a, b = 1.1 * ff.d * scale, 1.2 * ff.h * scale
    ang = np.arange(0, 360, 4, dtype=np.float64) * np.pi / 180.0
    ring = centre + np.outer(a * np.cos(ang), ff.u) + np.outer(b * np.sin(ang), ff.v)
    return _soft_fill(size, _fill_poly(ring), feather * ff.d)


# ----------------------------------------------------------------------------------------------
# the pixel method's blend
def blend_inner_face(source_crop: np.ndarray, generated_crop: np.ndarray, landmarks_in_crop: np.ndarray,
                     config: InnerBlendConfig = InnerBlendConfig(), *, region_mask: np.ndarray | None = None,
                     inner_mask: np.ndarray | None = None) -> np.ndarray:
    """StyleID's pixel-space blend: the generated face's inner face on the source crop.

    1. colour: ``generated_crop`` is matched to ``source_crop`` inside the face
       region (``region_mask`` > 0.5, default :func:`face_region_mask`);
    2. blend: ``source + alpha * (matched - source)`` with ``alpha`` =
       ``inner_mask`` (default :func:`inner_face_mask`), so hair, ears, neck and
       background keep the source's exact pixels wherever alpha is 0.
    Both crops share the same alignment (the generator keeps the source's
    layout); a generated crop of another size is resized first. Returns a new
    uint8 crop.
    """
    _check_bgr(source_crop, "source_crop")
    _check_bgr(generated_crop, "generated_crop")
    h, w = source_crop.shape[:2]
    gen = generated_crop
    if gen.shape[:2] != (h, w):
        interp = cv2.INTER_AREA if gen.shape[0] > h else cv2.INTER_LINEAR
        gen = cv2.resize(gen, (w, h), interpolation=interp)
    region = (face_region_mask(landmarks_in_crop, (h, w), config.region_scale, config.region_feather)
              if region_mask is None else _as_float_mask(region_mask, (h, w), "region_mask"))
    alpha = (inner_face_mask(landmarks_in_crop, (h, w), config.inner_dilate, config.inner_feather)
             if inner_mask is None else _as_float_mask(inner_mask, (h, w), "inner_mask"))
    stats = (region > 0.5).astype(np.float32)
    if config.colour == "histogram":
        gen = histogram_match(gen, source_crop, stats)
    elif config.colour == "reinhard":
        gen = reinhard_lab(gen, source_crop, stats)
    base = source_crop.astype(np.float32)
    out = base + alpha[..., None] * (gen.astype(np.float32) - base)
    np.clip(out, 0.0, 255.0, out=out)
    return (out + 0.5).astype(np.uint8)
