"""Donor bank: the GAN-free variant of the pixel method (CPU real-time mode).

Donor faces are generated ahead of time from the pack's generator
(``styleid-edge donors build``) or taken from a folder of face images, stored
FFHQ-aligned with their 5 landmarks. At run time each track keeps one donor: the
one its pseudo-identity seed prefers, unless that donor's pose is far from the
source's, in which case one of the donors nearest in pose is picked (again by
the seed); a track keeps the donor it was given for as long as that donor's pose
stays acceptable, so a person does not flicker between fake faces. The donor is
warped onto the source landmarks (one similarity warp), colour-matched to the
source's inner face and only its inner face is blended in.
"""

from __future__ import annotations

import logging
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import align, blend

log = logging.getLogger(__name__)

FORMAT = 1
_STICKY_TRACKS = 4096  # seeds whose current donor is remembered (oldest forgotten first)
# Paste mask of a rendered crop: the inner-face hull grown until it is ~1 wherever the blend's alpha
# (inner_face_mask with dilate 0.05, feather 0.20 eye distances) is above ~0.02, so paste-back does not
# apply the alpha a second time (which would squeeze the donor out of the mask's feathered band).
_PASTE_DILATE = 0.45
_PASTE_FEATHER = 0.10
# Colour statistics: the inner face, shrunk a little (skin, brows, eyes, nose, mouth of both faces;
# no hair, ears or background, whose colours would skew the gain).
_COLOUR_DILATE = -0.05
_COLOUR_FEATHER = 0.05


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
    return align.transform_points(m, tpl).astype(np.float32)


@dataclass
class DonorBank:
    images: np.ndarray  # (N, S, S, 3) uint8 BGR, FFHQ-aligned
    landmarks: np.ndarray  # (N, 5, 2) in crop coordinates
    source: str = ""
    pose_tolerance: float = 0.25  # descriptor distance above the nearest donor's that still counts as "near"
    _current: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"donor bank {self.source}".rstrip()
        self.images = np.asarray(self.images)
        self.landmarks = np.asarray(self.landmarks, np.float32)
        if (self.images.ndim != 4 or self.images.shape[0] == 0 or self.images.shape[-1] != 3
                or self.images.shape[1] != self.images.shape[2] or self.images.shape[1] < 16):
            raise ValueError(f"{where}: expected (N,S,S,3) images with N >= 1, S >= 16, got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"{where}: images must be uint8 BGR, got {self.images.dtype}")
        if self.landmarks.shape != (len(self.images), 5, 2):
            raise ValueError(f"{where}: landmarks shape {self.landmarks.shape} "
                             f"does not match {len(self.images)} images")
        if not np.isfinite(self.landmarks).all():
            raise ValueError(f"{where}: landmarks contain NaN or inf")
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
    def load(cls, path: str | Path) -> DonorBank:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no donor bank here; build one with `styleid-edge donors build`")
        bad = f"{path}: not a styleid-edge donor bank (format {FORMAT}); build one with `styleid-edge donors build`"
        unreadable = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)  # incl. pickled content
        try:
            z = np.load(path, allow_pickle=False)
        except unreadable as exc:
            raise ValueError(f"{bad} ({exc})") from exc
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{bad} (a plain array, not an .npz archive)")
        with z:
            missing = {"format", "images", "landmarks"} - set(z.files)
            if missing:
                raise ValueError(f"{bad} (missing {', '.join(sorted(missing))})")
            try:
                fmt, images, landmarks = z["format"], z["images"], z["landmarks"]
            except unreadable as exc:
                raise ValueError(f"{bad} ({exc})") from exc
        if fmt.shape != () or not np.issubdtype(fmt.dtype, np.integer):
            raise ValueError(f"{bad} (malformed format field)")
        if int(fmt) != FORMAT:
            raise ValueError(f"{path}: donor bank format {int(fmt)}, this version reads format {FORMAT}; "
                             "rebuild it with `styleid-edge donors build`")
        if not np.issubdtype(landmarks.dtype, np.floating):
            raise ValueError(f"{bad} (landmarks must be float, got {landmarks.dtype})")
        return cls(images, landmarks.astype(np.float32), source=str(path))

    def choose(self, landmarks_in_crop: np.ndarray, seed: int) -> int:
        """The donor for a face with these landmarks (any crop scale: the pose descriptor ignores it).

        Donors within ``pose_tolerance`` of the nearest one in pose are acceptable. The seed's
        current donor is kept while it is acceptable; else the seed's preferred donor
        (``seed % N``) when acceptable; else one of the donors within half the tolerance of the
        nearest, picked by the seed (the margin to the tolerance is hysteresis: landmark jitter
        does not push a new choice straight out again).
        """
        pose = pose_descriptor(landmarks_in_crop)
        dist = np.linalg.norm(self.poses - pose, axis=1)
        ok = dist <= dist.min() + self.pose_tolerance
        seed = int(seed)
        current = self._current.get(seed)
        if current is not None and ok[current]:
            self._current.move_to_end(seed)
            return current
        preferred = seed % len(self.images)
        if ok[preferred]:
            pick = preferred
        else:
            near = np.flatnonzero(dist <= dist.min() + 0.5 * self.pose_tolerance)
            pick = int(near[(seed // len(self.images)) % len(near)])
        self._current[seed] = pick
        self._current.move_to_end(seed)
        while len(self._current) > _STICKY_TRACKS:
            self._current.popitem(last=False)
        return pick

    def warp_donor(self, index: int, landmarks_in_crop: np.ndarray, size: int) -> np.ndarray:
        """Donor ``index`` similarity-warped so its landmarks land on ``landmarks_in_crop`` (``size`` px crop)."""
        donor = self.images[index]
        lm_d = self.landmarks[index].astype(np.float64)
        if donor.shape[0] > 2 * size:  # much larger donor: area-shrink first (a plain warp would alias)
            k = size / donor.shape[0]
            donor = cv2.resize(donor, (size, size), interpolation=cv2.INTER_AREA)
            lm_d = (lm_d + 0.5) * k - 0.5
        m = align.similarity_transform(lm_d, np.asarray(landmarks_in_crop, np.float64))
        return cv2.warpAffine(donor, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def render(self, crop: np.ndarray, landmarks_in_crop: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A new crop (the source with the donor's inner face) and the crop-space mask to paste it with.

        The paste mask is ~1 over the whole blended region (the inner face and its feathered band;
        outside it the new crop holds the source's pixels), so pasting does not weaken the blend.
        """
        if crop.ndim != 3 or crop.shape[0] != crop.shape[1] or crop.shape[2] != 3:
            raise ValueError(f"crop must be a square BGR image, got {crop.shape}")
        size = crop.shape[0]
        lm = np.asarray(landmarks_in_crop, np.float64).reshape(5, 2)
        warped = self.warp_donor(self.choose(lm, seed), lm, size)
        colour_region = blend.inner_face_mask(lm, size, dilate=_COLOUR_DILATE, feather=_COLOUR_FEATHER)
        new = blend.blend_inner_face(crop, warped, lm, region_mask=colour_region)
        mask = blend.inner_face_mask(lm, size, dilate=_PASTE_DILATE, feather=_PASTE_FEATHER)
        return new, mask


def _plausible_landmarks(dets, canon: np.ndarray, offset: float, size: int) -> np.ndarray | None:
    """The detection that sits where an FFHQ-aligned face must be (each point within 0.1 crop of the
    canonical position, in crop coordinates once ``offset`` is removed), or None."""
    best, best_err = None, np.inf
    for d in dets:
        lm = np.asarray(d.landmarks, np.float32).reshape(5, 2) - offset
        err = float(np.linalg.norm(lm - canon, axis=1).max())
        if err < best_err:
            best, best_err = lm, err
    return best if best is not None and best_err <= 0.1 * size else None


def build_from_pack(models, count: int = 64, seed: int = 1000, truncation: float = 0.7, size: int = 256,
                    detector=None, progress=None) -> DonorBank:
    """Generate ``count`` donor faces with the pack's mapping, affine and synthesis models.

    Landmarks come from ``detector`` where it finds the face at the FFHQ position (the crop is
    reflect-padded so a face filling it is found; reflected copies and false detections elsewhere
    are ignored), else the canonical FFHQ positions are used.
    """
    from .identity import seed_z, truncate
    from .methods import images_to_crops

    if count < 1:
        raise ValueError(f"donor count must be >= 1, got {count}")
    pack = models.pack
    n_latent = pack.manifest.n_latent
    canon = canonical_ffhq_landmarks(size)
    pad = size // 2
    images, marks = [], []
    detected = 0
    for start in range(0, count, 8):
        seeds = list(range(seed + start, seed + min(start + 8, count)))
        w = truncate(models.mapping.get(np.stack([seed_z(s) for s in seeds])), pack.latent_avg, truncation)
        img = models.synthesis.get(models.affine.get(np.repeat(w[:, None], n_latent, axis=1)))
        for crop in images_to_crops(img, size):
            lm = None
            if detector is not None:
                padded = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REFLECT)
                lm = _plausible_landmarks(detector.detect(padded), canon, pad, size)
                detected += lm is not None
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
    log.info("donor bank: %d faces from %d images", len(images), len(paths))
    return DonorBank(np.stack(images), np.stack(marks).astype(np.float32), source="images")
