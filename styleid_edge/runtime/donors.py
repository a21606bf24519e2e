"""Donor bank: the GAN-free variant of the pixel method (CPU real-time mode).

Donor faces are generated ahead of time from the pack's generator
(``styleid-edge donors build``) or taken from a folder of face images, stored
FFHQ-aligned with their 5 landmarks. At run time each track keeps one donor
(chosen by its pseudo-identity seed, so a person keeps one fake face) unless
that donor's pose is far from the source's, in which case the donor nearest in
pose is used; the donor is warped onto the source landmarks, colour-matched
and only its inner face is blended in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import align, blend

log = logging.getLogger(__name__)

FORMAT = 1


def pose_descriptor(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks normalised for position, scale and roll: what is left is pose and expression."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    eye_c = (lm[0] + lm[1]) / 2
    d = lm[1] - lm[0]
    scale = max(np.hypot(*d), 1e-6)
    c, s = d / scale
    rot = np.array([[c, s], [-s, c]])
    return ((lm - eye_c) @ rot.T / scale).ravel().astype(np.float32)


def canonical_ffhq_landmarks(size: int) -> np.ndarray:
    """Where the ArcFace template's 5 points land in an FFHQ crop of ``size`` px."""
    tpl = align.ARCFACE_TEMPLATE.astype(np.float32) * 4.0  # any scale: the crop normalises it
    _, m = align.ffhq_crop(np.zeros((512, 512, 3), np.uint8), tpl, size)
    return align.transform_points(m, tpl)


@dataclass
class DonorBank:
    images: np.ndarray  # (N, S, S, 3) uint8 BGR, FFHQ-aligned
    landmarks: np.ndarray  # (N, 5, 2) in crop coordinates
    source: str = ""
    pose_tolerance: float = 0.25  # descriptor distance above which the track's donor is swapped for a nearer one

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[0] == 0 or self.images.shape[-1] != 3:
            raise ValueError(f"donor bank {self.source}: expected (N,S,S,3) images, got {self.images.shape}")
        if self.landmarks.shape != (len(self.images), 5, 2):
            raise ValueError(f"donor bank {self.source}: landmarks shape {self.landmarks.shape} "
                             f"does not match {len(self.images)} images")
        self.poses = np.stack([pose_descriptor(lm) for lm in self.landmarks])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, format=np.int64(FORMAT), images=self.images,
                            landmarks=self.landmarks.astype(np.float32))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "DonorBank":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no donor bank here; build one with `styleid-edge donors build`")
        with np.load(path, allow_pickle=False) as z:
            if int(z.get("format", -1)) != FORMAT:
                raise ValueError(f"{path}: not a styleid-edge donor bank (format {FORMAT})")
            return cls(z["images"], z["landmarks"].astype(np.float32), source=str(path))

    def choose(self, landmarks_in_crop: np.ndarray, seed: int) -> int:
        scale = self.size / 256.0
        pose = pose_descriptor(np.asarray(landmarks_in_crop) / scale)
        dist = np.linalg.norm(self.poses - pose, axis=1)
        preferred = int(seed) % len(self.images)
        if dist[preferred] <= dist.min() + self.pose_tolerance:
            return preferred
        return int(np.argmin(dist))

    def render(self, crop: np.ndarray, landmarks_in_crop: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A new crop (the source with the donor's inner face) and the crop-space mask to paste it with."""
        size = crop.shape[0]
        i = self.choose(landmarks_in_crop * (256.0 / size), seed)
        donor = self.images[i]
        lm_d = self.landmarks[i] * (size / donor.shape[0])
        if donor.shape[0] != size:
            donor = cv2.resize(donor, (size, size), interpolation=cv2.INTER_AREA)
        m = align.similarity_transform(lm_d, np.asarray(landmarks_in_crop, np.float64))
        warped = cv2.warpAffine(donor, m[:2].astype(np.float64), (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        mask = blend.inner_face_mask(landmarks_in_crop, size)
        return blend.blend_inner_face(crop, warped, landmarks_in_crop), mask


def build_from_pack(models, count: int = 64, seed: int = 1000, truncation: float = 0.7, size: int = 256,
                    detector=None, progress=None) -> DonorBank:
    """Generate ``count`` donor faces with the pack's mapping, affine and synthesis models."""
    from .identity import seed_z, truncate
    from .methods import images_to_crops

    pack = models.pack
    n_latent = pack.manifest.n_latent
    canon = canonical_ffhq_landmarks(size)
    images, marks = [], []
    detected = 0
    for start in range(0, count, 8):
        seeds = list(range(seed + start, seed + min(start + 8, count)))
        w = truncate(models.mapping.get(np.stack([seed_z(s) for s in seeds])), pack.latent_avg, truncation)
        img = models.synthesis.get(models.affine.get(np.repeat(w[:, None], n_latent, axis=1)))
        for crop in images_to_crops(img, size):
            lm = None
            if detector is not None:
                padded = cv2.copyMakeBorder(crop, size // 2, size // 2, size // 2, size // 2, cv2.BORDER_REFLECT)
                dets = detector.detect(padded)
                if dets:
                    best = max(dets, key=lambda d: d.score)
                    lm = np.asarray(best.landmarks, np.float32) - size // 2
                    detected += 1
            images.append(crop)
            marks.append(canon if lm is None else lm)
        if progress is not None:
            progress(len(seeds))
    log.info("donor bank: %d faces, landmarks detected on %d (the rest use the canonical FFHQ positions)",
             len(images), detected)
    return DonorBank(np.stack(images), np.stack(marks).astype(np.float32), source=str(pack.root))


def build_from_images(paths: list[Path], detector, size: int = 256) -> DonorBank:
    """Donors from face photos (every detected face becomes one donor)."""
    from .images import read_image

    images, marks = [], []
    for p in paths:
        img = read_image(p)
        for det in detector.detect(img):
            crop, m = align.ffhq_crop(img, det.landmarks, size)
            images.append(crop)
            marks.append(align.transform_points(m, np.asarray(det.landmarks, np.float32)))
    if not images:
        raise ValueError("no faces found in the donor images")
    return DonorBank(np.stack(images), np.stack(marks).astype(np.float32), source="images")
