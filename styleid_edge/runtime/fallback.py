"""Fail-closed face obscuring: pixelate or blur a face box in place (torch-free).

Used whenever a detected face cannot be anonymized by a StyleID method (no
pack, face too small or in profile, a model error, a late frame). Both
functions cover the box plus a margin, clipped to the frame, and keep at most
``blocks x blocks`` samples of information about the covered region: pixelate
shows the block averages as flat tiles; blur shows the same averages smoothly
interpolated. Neither leaves detail finer than a block, which is what defeats
recognizers (a face covered by ~5 blocks across has no usable identity
signal), unlike a plain Gaussian blur whose detail can be partly recovered.

Boxes are ``(x1, y1, x2, y2)`` in frame pixels (floats are fine).
"""

from __future__ import annotations

import logging
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

Shape = Literal["rect", "ellipse"]
Region = tuple[int, int, int, int]


def cover_region(frame_shape: tuple[int, ...], box: np.ndarray, margin: float = 0.25,
                 shape: Shape = "rect") -> Region | None:
    """Frame pixels ``(x0, y0, x1, y1)`` (exclusive ends) that obscuring ``box`` covers, or None.

    The box grows by ``margin`` times its width (height) on the left and right
    (top and bottom). For ``shape="ellipse"`` the region is the bounding box of
    an ellipse that contains the whole face box (see :func:`_ellipse_axes`).
    Clipped to the frame; None when nothing of it is inside the frame.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape[0] < 4 or not np.isfinite(b[:4]).all():
        raise ValueError(f"box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x1, y1, x2, y2 = float(min(b[0], b[2])), float(min(b[1], b[3])), float(max(b[0], b[2])), float(max(b[1], b[3]))
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    if shape == "ellipse":
        ax, ay = _ellipse_axes(x2 - x1, y2 - y1, margin)
    elif shape == "rect":
        ax, ay = (x2 - x1) * (0.5 + margin), (y2 - y1) * (0.5 + margin)
    else:
        raise ValueError(f"shape must be 'rect' or 'ellipse', got {shape!r}")
    h, w = int(frame_shape[0]), int(frame_shape[1])
    rx0 = max(int(np.floor(cx - ax)), 0)
    ry0 = max(int(np.floor(cy - ay)), 0)
    rx1 = min(int(np.ceil(cx + ax)), w)
    ry1 = min(int(np.ceil(cy + ay)), h)
    if rx1 <= rx0 or ry1 <= ry0:
        return None
    return rx0, ry0, rx1, ry1


def _ellipse_axes(bw: float, bh: float, margin: float) -> tuple[float, float]:
    """Semi-axes of the elliptical cover: the margin-grown box's, but never smaller than the
    ellipse through the box corners (sqrt(2) x the half box), so the face box is always inside."""
    k = max(0.5 + margin, np.sqrt(2.0) / 2.0 + 1e-3)
    return bw * k, bh * k


def _ellipse_mask(region: Region, box: np.ndarray, margin: float) -> np.ndarray:
    x0, y0, x1, y1 = region
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    bx1, by1, bx2, by2 = min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])
    cx, cy = (bx1 + bx2) / 2.0, (by1 + by2) / 2.0
    ax, ay = _ellipse_axes(bx2 - bx1, by2 - by1, margin)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    # pixel (x, y) covers [x, x+1): test its centre, and err on the side of covering
    r = ((xs + 0.5 - cx) / max(ax, 0.5)) ** 2 + ((ys + 0.5 - cy) / max(ay, 0.5)) ** 2
    return r <= 1.0 + 1e-9


def _block_grid(h: int, w: int, blocks: int) -> tuple[int, int]:
    """Blocks along (x, y): ``blocks`` along the longer side, square-ish tiles, at least 1."""
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    longer = max(h, w)
    bx = max(1, min(w, int(round(blocks * w / longer))))
    by = max(1, min(h, int(round(blocks * h / longer))))
    return bx, by


def _obscure(frame: np.ndarray, box: np.ndarray, margin: float, shape: Shape, blocks: int,
             smooth: bool) -> Region | None:
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or frame.dtype != np.uint8:
        raise ValueError("frame must be a uint8 image (H, W) or (H, W, C)")
    region = cover_region(frame.shape, box, margin, shape)
    if region is None:
        log.debug("obscure: box %s lies outside the frame", box)
        return None
    x0, y0, x1, y1 = region
    roi = frame[y0:y1, x0:x1]
    h, w = roi.shape[:2]
    bx, by = _block_grid(h, w, blocks)
    small = cv2.resize(roi, (bx, by), interpolation=cv2.INTER_AREA)
    if smooth:
        # Smooth the block grid at 8 px per block (cheap whatever the face size), then upsample:
        # a function of `small` only, so no detail below a block comes back.
        up = min(8, max(1, min(w // bx, h // by)))
        mid = cv2.resize(small, (bx * up, by * up), interpolation=cv2.INTER_LINEAR)
        sigma = 0.35 * up
        if sigma > 0.3:
            mid = cv2.GaussianBlur(mid, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
        out = cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    if out.ndim < roi.ndim:
        out = out[..., None]
    if shape == "ellipse":
        inside = _ellipse_mask(region, box, margin)
        roi[inside] = out[inside]
    else:
        roi[...] = out
    return region


def pixelate(frame: np.ndarray, box: np.ndarray, blocks: int = 8, margin: float = 0.25,
             shape: Shape = "rect") -> Region | None:
    """Mosaic the face box (plus margin) in place with at most ``blocks`` tiles along its longer side.

    Returns the covered region ``(x0, y0, x1, y1)``, or None when the box is
    entirely outside the frame. Raises ValueError for a non-finite box.
    """
    return _obscure(frame, box, margin, shape, blocks, smooth=False)


def blur(frame: np.ndarray, box: np.ndarray, margin: float = 0.25, blocks: int = 8,
         shape: Shape = "rect") -> Region | None:
    """Blur the face box (plus margin) in place, keeping no more detail than ``blocks`` samples across.

    Implemented as an area downsample to the block grid, a bilinear upsample and
    a Gaussian smoothing of the result, so it looks like a strong blur while its
    output is a function of the ``blocks x blocks`` averages only. Returns the
    covered region or None, like :func:`pixelate`.
    """
    return _obscure(frame, box, margin, shape, blocks, smooth=True)
