"""Face tracking: stable ids, One Euro-smoothed landmarks, hold-over on missed detections.

Per frame, :meth:`Tracker.update` takes the detector's faces and returns one
:class:`Track` per face to anonymize:

* **Matching.** Each live track predicts its box at this frame (last box moved
  by its velocity). Detections are assigned by an optimal (Hungarian) matching
  on 1 - IoU, pairs below ``iou_match`` forbidden; tracks and detections left
  over are then matched on the mean landmark distance, in units of the track's
  box size (``landmark_match``), which catches fast motion where boxes no
  longer overlap. When frame indices jump between calls (frames dropped), that
  gate widens to what a face moving at ``max_speed`` covers in the skipped
  frames (:meth:`Tracker.landmark_gate`), so a fast face keeps its track, and
  its pseudo-identity, at a low processing rate too.
* **Weak detections.** Detections flagged ``weak`` (scored below the
  detector's threshold, kept down to its weak threshold) are matched in a
  second stage, by IoU only, to the tracks still unmatched: a face the
  detector grows unsure of (small, turning, blurred) keeps its track instead
  of leaking when hold-over runs out. A weak detection never starts a track;
  unmatched ones are dropped. (Two-stage association as in ByteTrack, Zhang
  et al., ECCV 2022.)
* **Fail closed.** Every strong detection of this frame comes back as a track (new
  ones included), whatever ``min_hits`` says. ``min_hits`` only decides when a
  track is *confirmed*; only confirmed tracks are held over.
* **Hold-over.** A confirmed track that misses its detection is still returned
  for up to ``hold_frames`` frames (``is_held=True``), its box extrapolated with
  its last centre velocity and enlarged by ``hold_grow`` per missed frame, so a
  one- or two-frame detector miss never leaks a face (a face first seen one frame
  before the miss has no velocity yet: its held box stays where it was). It ends once it has
  missed both ``hold_frames`` frames of the stream and ``hold_frames`` calls of
  :meth:`Tracker.update`: a live pipeline that drops frames under load (frame
  indices jumping by 5) still holds a face over that many *processed* frames.
* **Smoothing.** Landmarks are smoothed with a One Euro filter (Casiez, Roussel
  and Vogel, CHI 2012) per coordinate. Speeds are measured in face sizes per
  second (the filter's ``beta`` is scale-free, the same at 480p and 4K). Boxes
  are not smoothed: a lagging box could uncover a moving face.
* **Pseudo-identity.** Each track carries ``seed``, derived from the run seed
  and its ``track_id`` by a hash, so the same person keeps the same fake
  identity for the whole video and reruns reproduce it.

Detections may be ``(box, score, landmarks)`` tuples or any object with
``box``, ``score`` and ``landmarks`` attributes; boxes are ``(x1, y1, x2, y2)``
pixels, landmarks ``(5, 2)`` or None.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import numpy as np

log = logging.getLogger(__name__)

_FORBIDDEN = 1e6  # assignment cost of a pair that must not match


# ----------------------------------------------------------------------------------------------
# One Euro filter
def _smoothing_factor(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Exponential smoothing factor of a first-order low-pass with this cutoff (Hz) and sample period (s)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The 1€ filter on an array of independent coordinates.

    For each new sample ``x`` at period ``dt``: the speed ``(x - x_hat_prev) / dt``
    is low-passed at ``d_cutoff``; the cutoff for ``x`` is
    ``min_cutoff + beta * |speed| / speed_scale``; ``x_hat`` is ``x`` low-passed
    at that cutoff. Slow motion gets the low cutoff (little jitter), fast motion
    a high one (little lag).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("One Euro filter needs min_cutoff > 0, d_cutoff > 0, beta >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def reset(self) -> None:
        self._x = None
        self._dx = None

    @property
    def value(self) -> np.ndarray | None:
        return None if self._x is None else self._x.copy()

    def __call__(self, x: np.ndarray, dt: float, speed_scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            return x.copy()
        dt = max(float(dt), 1e-6)
        speed = (x - self._x) / dt
        a_d = _smoothing_factor(self.d_cutoff, dt)
        self._dx = self._dx + a_d * (speed - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx) / max(float(speed_scale), 1e-9)
        a = _smoothing_factor(cutoff, dt)
        self._x = self._x + a * (x - self._x)
        return self._x.copy()


# ----------------------------------------------------------------------------------------------
# assignment
def linear_assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one assignment (Hungarian method with potentials, O(n^2 m)).

    ``cost`` is (rows, cols), finite. Returns ``(row, col)`` pairs; every row
    is assigned when rows <= cols, else every column.
    """
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2 or c.size == 0:
        return []
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    n, m = c.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: row (1-based) assigned to column j; column 0 is virtual
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        min_slack = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            slack = c[i0 - 1] - u[i0] - v[1:]
            better = free & (slack < min_slack[1:])
            min_slack[1:][better] = slack[better]
            way[1:][better] = j0
            candidates = np.where(free, min_slack[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            min_slack[~used] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = [(int(owner[j]) - 1, j - 1) for j in range(1, m + 1) if owner[j] != 0]
    if transposed:
        pairs = [(col, row) for row, col in pairs]
    return sorted(pairs)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), boxes ``(x1, y1, x2, y2)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


# ----------------------------------------------------------------------------------------------
# configuration and outputs
_MAX_SKIP_GATE = 3.0  # widest landmark gate when frames are skipped (box sizes)


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings (see the module docstring for what each mechanism does).

    fps: frame rate of the stream; One Euro's time step is (frame gap) / fps.
    one_euro_min_cutoff (Hz), one_euro_beta (per face size per second),
    one_euro_d_cutoff (Hz): the filter's parameters.
    landmark_match: largest mean landmark distance (in track box sizes) for the
        fallback matching between consecutive frames (wider when frames are
        skipped, see Tracker.landmark_gate); 0 disables it.
    hold_grow: box enlargement per missed frame during hold-over (0.1 = +10 %).
    max_speed: cap on the extrapolation velocity, in box sizes per frame.
    min_motion_px: pixels per frame any face may move whatever its size (a camera pan moves a 20 px face as many
        pixels as a 200 px one): the floor of the velocity cap and of the landmark gate between consecutive frames.
    seed: the run seed that every track's pseudo-identity seed derives from.
    """

    iou_match: float = 0.3
    hold_frames: int = 5
    min_hits: int = 1
    smoothing: Literal["one_euro", "none"] = "one_euro"
    one_euro_min_cutoff: float = 1.0
    one_euro_beta: float = 2.0
    one_euro_d_cutoff: float = 1.0
    fps: float = 30.0
    landmark_match: float = 0.75
    hold_grow: float = 0.10
    max_speed: float = 0.5
    min_motion_px: float = 24.0
    seed: int = 0
    # Smoothed landmarks may trail the detector's by at most this many eye distances; beyond that the
    # filter restarts from the detection (a lagging alignment would paste the new face beside the real one).
    max_landmark_lag: float = 0.15

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_match <= 1.0:
            raise ValueError(f"iou_match must be in (0, 1], got {self.iou_match}")
        if self.hold_frames < 0 or self.min_hits < 1:
            raise ValueError("hold_frames must be >= 0 and min_hits >= 1")
        if self.smoothing not in ("one_euro", "none"):
            raise ValueError(f"smoothing must be 'one_euro' or 'none', got {self.smoothing!r}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.min_motion_px < 0:
            raise ValueError(f"min_motion_px must be >= 0, got {self.min_motion_px}")


@dataclass(frozen=True)
class Track:
    """One face to anonymize in this frame (a snapshot; arrays are copies)."""

    track_id: int
    box: np.ndarray  # (4,) x1, y1, x2, y2 (detected box, or the extrapolated, enlarged one when held)
    landmarks: np.ndarray | None  # (5, 2) smoothed (translated with the box when held)
    score: float  # score of the last detection
    age: int  # frames since the track began (1 on its first frame)
    misses: int  # frames since its last detection (0: detected this frame)
    is_held: bool  # returned by hold-over, without a detection this frame
    seed: int  # fixed pseudo-identity seed for this track
    hits: int  # detections matched so far
    confirmed: bool  # hits >= min_hits (only confirmed tracks are held over)
    raw_landmarks: np.ndarray | None = None  # the detector's landmarks (None when held)
    weak: bool = False  # matched this frame to a detection below the detector's threshold


def track_seed(run_seed: int, track_id: int) -> int:
    """The pseudo-identity seed of a track: 63 bits of BLAKE2b over (run seed, track id); platform-stable."""
    digest = hashlib.blake2b(f"styleid-edge/track/{int(run_seed)}/{int(track_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class _Det:
    box: np.ndarray
    score: float
    landmarks: np.ndarray | None
    weak: bool = False


def _as_det(d: Any) -> _Det | None:
    """Normalise one detection; None (logged) for a box that cannot locate anything."""
    weak = False
    if hasattr(d, "box"):
        box, score, lm = d.box, getattr(d, "score", 1.0), getattr(d, "landmarks", None)
        weak = bool(getattr(d, "weak", False))
    else:
        box, score, lm = d
    b = np.asarray(box, dtype=np.float64).reshape(-1)[:4]
    if b.shape != (4,) or not np.isfinite(b).all():
        log.warning("detection with an unusable box ignored: %r", box)
        return None
    b = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])])
    land = None
    if lm is not None:
        arr = np.asarray(lm, dtype=np.float64)
        if arr.size == 10 and np.isfinite(arr).all():
            land = arr.reshape(5, 2)
        else:
            log.debug("detection landmarks ignored (need 5 finite points): %s", np.shape(lm))
    return _Det(b, float(score) if score is not None else 1.0, land, weak)


def _box_size(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1], 1.0))


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


@dataclass
class _TrackState:
    track_id: int
    seed: int
    start_frame: int
    last_frame: int
    box: np.ndarray
    score: float
    raw_landmarks: np.ndarray | None
    landmarks: np.ndarray | None
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # centre, pixels per frame
    hits: int = 1
    filter: OneEuroFilter | None = None
    weak: bool = False  # last matched detection was weak
    missed_updates: int = 0  # update() calls since the last detection (frames processed without one)

    def predicted_box(self, frame_index: int, grow: float = 0.0) -> np.ndarray:
        gap = frame_index - self.last_frame
        c = _centre(self.box) + self.velocity * gap
        half = (self.box[2:] - self.box[:2]) / 2.0 * (1.0 + grow * gap)
        return np.concatenate([c - half, c + half])

    def predicted_landmarks(self, frame_index: int) -> np.ndarray | None:
        if self.landmarks is None:
            return None
        return self.landmarks + self.velocity * (frame_index - self.last_frame)


# ----------------------------------------------------------------------------------------------
class Tracker:
    """Frame-to-frame face tracker; call :meth:`update` once per frame with increasing frame indices."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._tracks: list[_TrackState] = []
        self._next_id = 1
        self._last_frame: int | None = None

    def reset(self) -> None:
        """Forget every track (new video). Ids keep counting up, so seeds never repeat in a run."""
        self._tracks = []
        self._last_frame = None

    @property
    def active(self) -> int:
        return len(self._tracks)

    def update(self, detections: Iterable[Any], frame_index: int) -> list[Track]:
        """Match this frame's detections to tracks; return every face to anonymize, by track id."""
        cfg = self.config
        frame_index = int(frame_index)
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(f"frame_index must increase: got {frame_index} after {self._last_frame} "
                             "(call reset() for a new stream)")
        step = 1 if self._last_frame is None else frame_index - self._last_frame  # stream frames since the last call
        self._last_frame = frame_index
        parsed = [d for d in map(_as_det, detections) if d is not None]
        dets = [d for d in parsed if not d.weak]
        weak = [d for d in parsed if d.weak]

        matches, free_tracks, free_dets = self._match(dets, frame_index, step)
        if weak and free_tracks:
            extra = self._match_weak(free_tracks, weak, frame_index)
            if extra:
                log.debug("%d track(s) continued by a weak detection at frame %d", len(extra), frame_index)
                base = len(dets)
                dets = dets + weak
                matches = matches + [(ti, base + wi) for ti, wi in extra]
                free_tracks = [ti for ti in free_tracks if ti not in {m[0] for m in extra}]
        out: list[Track] = []
        for ti, di in matches:
            st = self._tracks[ti]
            self._update_track(st, dets[di], frame_index)
            out.append(self._snapshot(st, frame_index, held=False))
        survivors = [self._tracks[ti] for ti, _ in matches]
        for ti in free_tracks:
            st = self._tracks[ti]
            misses = frame_index - st.last_frame
            st.missed_updates += 1
            if st.hits >= cfg.min_hits and min(misses, st.missed_updates) <= cfg.hold_frames:
                survivors.append(st)
                out.append(self._snapshot(st, frame_index, held=True))
            else:
                log.debug("track %d ended after %d missed frame(s)", st.track_id, misses)
        for di in free_dets:
            st = self._new_track(dets[di], frame_index)
            survivors.append(st)
            out.append(self._snapshot(st, frame_index, held=False))
        self._tracks = survivors
        out.sort(key=lambda t: t.track_id)
        return out

    def landmark_gate(self, step: int) -> float:
        """Largest landmark distance (in track box sizes) the fallback matching accepts when ``step`` stream
        frames passed since the previous :meth:`update` call.

        ``landmark_match`` is the gate between consecutive frames. When the caller skips frames (a live
        pipeline dropping frames under load), a face moves ``step`` times as far between two calls, so the
        gate widens to ``max_speed * step``: what a face moving at the tracker's top speed covers in that time,
        at most 3 box sizes (at one processed frame a second a face elsewhere in the picture is someone else).
        Without it, a face moving faster than ``landmark_match / step`` box sizes per frame (0.15 at every 5th
        frame: 3.75 face sizes a second at 25 fps) matched no track and got a new one, hence a new
        pseudo-identity, on every processed frame. At one frame per call the gate is unchanged.
        """
        cfg = self.config
        if cfg.landmark_match <= 0:
            return 0.0
        if step <= 1:
            return float(cfg.landmark_match)
        return float(max(cfg.landmark_match, min(cfg.max_speed * step, _MAX_SKIP_GATE)))

    # -- internals ------------------------------------------------------------------------------
    def _match(self, dets: list[_Det], frame_index: int,
               step: int = 1) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        cfg = self.config
        n_t, n_d = len(self._tracks), len(dets)
        if n_t == 0 or n_d == 0:
            return [], list(range(n_t)), list(range(n_d))
        pred = np.stack([t.predicted_box(frame_index) for t in self._tracks])
        det_boxes = np.stack([d.box for d in dets])
        matches = self._iou_pairs(pred, det_boxes)
        free_t = [i for i in range(n_t) if i not in {m[0] for m in matches}]
        free_d = [j for j in range(n_d) if j not in {m[1] for m in matches}]
        gate = self.landmark_gate(step)
        if gate > 0 and free_t and free_d:
            cost2 = np.full((len(free_t), len(free_d)), _FORBIDDEN)
            for a, ti in enumerate(free_t):
                st = self._tracks[ti]
                size = _box_size(pred[ti])
                p_lm = st.predicted_landmarks(frame_index)
                for b, dj in enumerate(free_d):
                    d = dets[dj]
                    ratio = _box_size(d.box) / size
                    if not 0.5 <= ratio <= 2.0:
                        continue
                    if p_lm is not None and d.landmarks is not None:
                        dist = float(np.linalg.norm(p_lm - d.landmarks, axis=1).mean())
                    else:
                        dist = float(np.linalg.norm(_centre(pred[ti]) - _centre(d.box)))
                    if dist <= gate * size or dist <= cfg.min_motion_px:  # the pixel floor: small fast faces
                        cost2[a, b] = dist / size
            extra = [(free_t[a], free_d[b]) for a, b in linear_assignment(cost2) if cost2[a, b] < _FORBIDDEN]
            if extra:
                log.debug("landmark fallback matched %d track(s)", len(extra))
            matches += extra
            free_t = [i for i in free_t if i not in {m[0] for m in extra}]
            free_d = [j for j in free_d if j not in {m[1] for m in extra}]
        return matches, free_t, free_d

    def _match_weak(self, free_tracks: list[int], weak: list[_Det], frame_index: int) -> list[tuple[int, int]]:
        """Second stage: unmatched tracks x weak detections, Hungarian on 1 - IoU with the predicted box."""
        pred = np.stack([self._tracks[ti].predicted_box(frame_index) for ti in free_tracks])
        return [(free_tracks[a], b) for a, b in self._iou_pairs(pred, np.stack([d.box for d in weak]))]

    def _iou_pairs(self, boxes_a: np.ndarray, boxes_b: np.ndarray) -> list[tuple[int, int]]:
        """Optimal one-to-one pairs on 1 - IoU; pairs under ``iou_match`` are not pairs."""
        iou = iou_matrix(boxes_a, boxes_b)
        cost = np.where(iou >= self.config.iou_match, 1.0 - iou, _FORBIDDEN)
        return [(i, j) for i, j in linear_assignment(cost) if cost[i, j] < _FORBIDDEN]

    def _make_filter(self) -> OneEuroFilter | None:
        cfg = self.config
        if cfg.smoothing != "one_euro":
            return None
        return OneEuroFilter(cfg.one_euro_min_cutoff, cfg.one_euro_beta, cfg.one_euro_d_cutoff)

    def _new_track(self, det: _Det, frame_index: int) -> _TrackState:
        tid = self._next_id
        self._next_id += 1
        st = _TrackState(tid, track_seed(self.config.seed, tid), frame_index, frame_index, det.box.copy(),
                         det.score, det.landmarks, None, filter=self._make_filter())
        st.landmarks = self._smooth(st, det.landmarks, dt=1.0 / self.config.fps)
        log.debug("track %d started at frame %d", tid, frame_index)
        return st

    def _smooth(self, st: _TrackState, landmarks: np.ndarray | None, dt: float) -> np.ndarray | None:
        if landmarks is None:
            if st.filter is not None:
                st.filter.reset()
            return None
        if st.filter is None:
            return landmarks.copy()
        smoothed = st.filter(landmarks, dt, speed_scale=_box_size(st.box)).reshape(5, 2)
        eye_dist = float(np.linalg.norm(landmarks[1] - landmarks[0]))
        if float(np.abs(smoothed - landmarks).max()) > self.config.max_landmark_lag * max(eye_dist, 1.0):
            st.filter.reset()
            st.filter(landmarks, dt, speed_scale=_box_size(st.box))  # restart from the detection
            return landmarks.copy()
        return smoothed

    def _update_track(self, st: _TrackState, det: _Det, frame_index: int) -> None:
        cfg = self.config
        gap = frame_index - st.last_frame
        observed = (_centre(det.box) - _centre(st.box)) / gap
        st.velocity = observed if st.hits == 1 else 0.5 * st.velocity + 0.5 * observed
        limit = max(cfg.max_speed * _box_size(det.box), cfg.min_motion_px)
        speed = float(np.linalg.norm(st.velocity))
        if speed > limit:
            st.velocity = st.velocity * (limit / speed)
        st.box = det.box.copy()
        st.score = det.score
        st.weak = det.weak
        st.raw_landmarks = det.landmarks
        st.landmarks = self._smooth(st, det.landmarks, dt=gap / cfg.fps)
        st.last_frame = frame_index
        st.missed_updates = 0
        st.hits += 1

    def _snapshot(self, st: _TrackState, frame_index: int, held: bool) -> Track:
        cfg = self.config
        misses = frame_index - st.last_frame
        if held:
            box = st.predicted_box(frame_index, grow=cfg.hold_grow)
            lm = st.predicted_landmarks(frame_index)
            raw = None
        else:
            box = st.box.copy()
            lm = None if st.landmarks is None else st.landmarks.copy()
            raw = None if st.raw_landmarks is None else st.raw_landmarks.copy()
        return Track(track_id=st.track_id, box=box, landmarks=lm, score=st.score,
                     age=frame_index - st.start_frame + 1, misses=misses, is_held=held, seed=st.seed,
                     hits=st.hits, confirmed=st.hits >= cfg.min_hits, raw_landmarks=raw, weak=not held and st.weak)
