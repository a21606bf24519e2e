"""A 1080p frame with several real faces, composed from photographs, with each face's 5 landmarks.

The photos are the public-domain test photographs of this repository (``tests/data/photos``, see its
PROVENANCE.md). A source checkout finds them on its own; an installed package needs ``--photos DIR``
with the same files (or any photos named in :data:`PHOTO_LANDMARKS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FRAME_SIZE = (1920, 1080)  # width, height
# 5 landmarks (ArcFace order) per photo, in the photo's own pixels: measured once with YuNet.
PHOTO_LANDMARKS: dict[str, list[list[float]]] = {
    "astronaut.png": [[200.1, 101.8], [247.2, 102.6], [220.3, 124.7], [198.9, 143.2], [239.8, 143.9]],
    "biden.jpg": [[530.6, 324.4], [651.0, 345.8], [592.1, 411.4], [512.9, 450.7], [618.2, 470.9]],
    "obama.jpg": [[439.7, 214.7], [554.7, 214.5], [495.6, 268.2], [440.7, 318.3], [546.9, 320.6]],
    "obama2.jpg": [[244.9, 375.7], [368.4, 384.4], [276.9, 456.0], [244.9, 523.3], [350.3, 531.7]],
    "obama3.jpg": [[735.6, 379.4], [866.6, 382.4], [812.6, 445.7], [736.8, 509.1], [850.0, 511.3]],
}


@dataclass
class BenchFrame:
    image: np.ndarray  # BGR uint8 (1080, 1920, 3)
    landmarks: list[np.ndarray]  # per face (5, 2) float32, frame pixels
    photos: list[str]


def default_photos_dir() -> Path | None:
    """``tests/data/photos`` of a source checkout, if this package runs from one."""
    candidate = Path(__file__).resolve().parents[2] / "tests" / "data" / "photos"
    return candidate if candidate.is_dir() else None


def compose_frame(photos_dir: str | Path | None = None, faces: int = 5, face_height: int = 200) -> BenchFrame:
    """Tile ``faces`` photos across a 1920x1080 canvas, each scaled so its eye-to-mouth span is about
    ``face_height`` / 2.5 pixels (a face about ``face_height`` px tall)."""
    root = Path(photos_dir) if photos_dir else default_photos_dir()
    if root is None:
        raise FileNotFoundError("bench needs photos with faces: pass --photos DIR holding "
                                f"{', '.join(PHOTO_LANDMARKS)} (the repository's tests/data/photos)")
    names = [n for n in PHOTO_LANDMARKS if (root / n).is_file()]
    if not names:
        raise FileNotFoundError(f"{root}: none of {', '.join(PHOTO_LANDMARKS)} is there; pass --photos DIR "
                                "pointing at the repository's tests/data/photos")
    w, h = FRAME_SIZE
    canvas = np.full((h, w, 3), 96, np.uint8)
    faces = max(1, min(int(faces), 8))
    tile_w = w // faces
    out_lms: list[np.ndarray] = []
    used: list[str] = []
    for i in range(faces):
        name = names[i % len(names)]
        photo = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
        if photo is None:
            raise FileNotFoundError(f"{root / name}: unreadable image")
        lm = np.asarray(PHOTO_LANDMARKS[name], np.float64)
        span = float(np.linalg.norm(lm[3:].mean(0) - lm[:2].mean(0)))  # eyes to mouth
        scale = (face_height / 2.5) / span
        centre = lm.mean(0)
        # similarity: photo -> frame, face centre to the tile centre (rows alternate up/down a little)
        cx, cy = tile_w * (i + 0.5), h * (0.45 if i % 2 == 0 else 0.6)
        m = np.array([[scale, 0, cx - scale * centre[0]], [0, scale, cy - scale * centre[1]]])
        tile = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(96, 96, 96))
        x0, x1 = i * tile_w, (i + 1) * tile_w
        canvas[:, x0:x1] = tile[:, x0:x1]
        out_lms.append((lm @ m[:, :2].T + m[:, 2]).astype(np.float32))
        used.append(name)
    return BenchFrame(canvas, out_lms, used)
