"""Aligned face crops <-> the networks' tensors: BGR uint8 crops in, RGB [-1, 1] tensors out, and back."""

from __future__ import annotations

import cv2
import numpy as np


def crops_to_input(crops: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 crops (B,H,W,3) -> RGB float32 (B,3,size,size) in [-1, 1]."""
    out = np.empty((len(crops), 3, size, size), np.float32)
    for i, c in enumerate(crops):
        if c.shape[0] != size:
            interp = cv2.INTER_AREA if c.shape[0] > size else cv2.INTER_CUBIC
            c = cv2.resize(c, (size, size), interpolation=interp)
        out[i] = c[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
    return out


def images_to_crops(images: np.ndarray, size: int) -> np.ndarray:
    """Generator output RGB (B,3,R,R) in [-1,1] -> BGR uint8 (B,size,size,3).

    Plane by plane on contiguous (R,R) arrays: clip, scale to uint8 (rounded), resize in uint8 (area when
    shrinking, cubic when growing), then interleave. About 6x faster at 1024 px than arithmetic on the
    transposed (B,R,R,3) view."""
    b, _, r = images.shape[:3]
    out = np.empty((b, size, size, 3), np.uint8)
    plane = np.empty(images.shape[2:], np.float32)
    interp = cv2.INTER_AREA if r > size else cv2.INTER_CUBIC
    for i in range(b):
        bgr = []
        for c in (2, 1, 0):
            np.clip(images[i, c], -1.0, 1.0, out=plane)
            u8 = cv2.convertScaleAbs(plane, alpha=127.5, beta=127.5)  # values >= 0 here, so |.| is a no-op
            bgr.append(u8 if r == size else cv2.resize(u8, (size, size), interpolation=interp))
        cv2.merge(bgr, dst=out[i])
    return out
