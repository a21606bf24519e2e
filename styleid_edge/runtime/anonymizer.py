"""Per-frame anonymization: detect -> track -> align -> method -> paste back, fail closed.

``Anonymizer`` is also the Python API for appliances::

    from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig
    anon = Anonymizer(AnonymizerConfig(method="latent"), pack="packs/ffhq")
    out, faces = anon.process(frame_bgr)      # frame in, anonymized frame + face records out

Every detected (or held-over) face leaves ``process`` anonymized: by the
requested method, or pixelated when that is impossible for that face (too
small, extreme pose, model error) — each fallback counted in the report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import align, blend, fallback
from .backends import SessionOptions
from .detect import DEFAULT_DETECTOR, RobustOptions, make_detector
from .methods import METHODS, MethodConfig, StyleIDMethods, best_method
from .models import PackModels, StageTimer
from .pack import ModelPack, find_pack
from .recognize import SAME_PERSON_COSINE, cosine

VERIFY_COSINE = SAME_PERSON_COSINE - 0.063  # 0.30
# Lowest detector score that may continue a track (benchmarks/detectors.py: YuNet's false faces on
# background reach ~0.5, so they may score here too, but a weak face only matters where a tracked face was).
WEAK_DETECTION_SCORE = 0.3


def weak_threshold(flag: float | None) -> float | None:
    """The ``--weak-thresh`` flag as a config value: None -> the default, 0 -> off."""
    if flag is None:
        return WEAK_DETECTION_SCORE
    return float(flag) if flag > 0 else None
from .report import RunReport
from .track import Tracker, TrackerConfig

log = logging.getLogger(__name__)


@dataclass
class AnonymizerConfig:
    method: str | None = None  # None: the best the pack allows (methods.best_method)
    strength: float | None = None  # privacy knob in (0, 1]; None: the pack's calibrated default
    seed: int = 0  # pseudo-identities derive from it (one per track)
    target: str | None = None  # image of a face to anonymize toward instead of random identities
    truncation: float = 0.7
    detector: str = DEFAULT_DETECTOR
    detector_threshold: float | None = None
    # Faces scoring from this up to the detector's threshold may continue an existing track (they never
    # start one): a face the detector grows unsure of for a few frames (small, turning, motion blur)
    # stays anonymized instead of leaking once hold-over runs out. None or >= the threshold: off.
    weak_threshold: float | None = WEAK_DETECTION_SCORE
    min_face: int = 24  # faces whose box is smaller (px) are pixelated instead of regenerated
    max_yaw: float = 0.8  # profile limit on the landmark yaw proxy (0 frontal, 1 full profile)
    hold_frames: int = 5
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    backend: str = "onnxruntime"  # what runs the pack's models: onnxruntime, tensorrt, torch, triton, openvino
    backend_options: dict = field(default_factory=dict)  # e.g. {"url": "host:8001"} for triton
    batch_size: int = 16
    donors: str | None = None  # donor bank file for --method donor (default: the pack's donors.npz)
    # Privacy check after generation: a face that a real recognizer (SFace) still matches to its
    # original at this cosine or above is pixelated instead (counted as "identity_still_matches"; for a box the
    # tracker held with no detection this frame, often background after the face left, "held_still_matches").
    # The default sits below SFace's same-person threshold (0.363) with a margin for video
    # re-encoding and landmark jitter, which move the score by a few hundredths.
    verify: bool = True
    verify_threshold: float = VERIFY_COSINE
    # Detect on a copy scaled down to this longer side (0: full size). Faster on small CPUs; faces
    # smaller than ~10 px after scaling are missed, so keep it 0 when small faces matter.
    detect_max_side: int = 0
    # Extra detection passes on the frame turned by these angles (degrees): faces rolled up to about 30 degrees
    # beyond each are found. Add 90, -90 (and 180) for a camera mounted sideways (or upside down) whose
    # video carries no rotation tag; each angle costs one more detector pass per frame.
    detect_angles: tuple[float, ...] = (-30.0, 30.0)


HIGH_THRESHOLD = 0.9  # a --thresh above this lets clearly visible faces through untouched: warned about


@dataclass
class FaceRecord:
    track_id: int
    box: list[float]
    method: str  # what was applied to this face in this frame
    held: bool  # output from tracker hold-over (no detection this frame)
    fallback: str | None = None  # why it was pixelated instead of the requested method


@dataclass
class _Work:
    """One face on its way through the generative path (frame ``fi``, face ``ti`` of that frame)."""

    tr: object
    rec: FaceRecord
    fi: int
    ti: int
    crop: np.ndarray | None = None
    m: np.ndarray | None = None
    lm: np.ndarray | None = None


class Anonymizer:
    def __init__(self, config: AnonymizerConfig | None = None, pack: ModelPack | str | Path | None = None,
                 report: RunReport | None = None, *, use_default_pack: bool = True):
        self.config = config = config or AnonymizerConfig()
        self.report = report or RunReport()
        self.timer = StageTimer()
        options = SessionOptions(providers=list(config.providers), backend=config.backend,
                                 backend_options=dict(config.backend_options))
        if isinstance(pack, (str, Path)):
            pack = ModelPack.load(pack)
        elif pack is None and use_default_pack:
            pack = find_pack(None)
        self.pack = pack
        self.report.pack = str(pack.root) if pack else None
        self.report.pack_synthetic = bool(pack and pack.manifest.synthetic)
        if pack is not None and pack.manifest.synthetic:
            msg = (f"model pack {pack.root} is SYNTHETIC (random weights): faces are replaced by "
                   "generated textures, not natural faces")
            log.warning(msg)
            self.report.note(msg)
        self.donor_bank = None
        has_donors = bool(config.donors) or bool(pack and (pack.root / "donors.npz").is_file())
        method = config.method or best_method(pack, has_donors)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.report.requested_method = config.method
        if method in ("latent", "pixel", "swapper") and pack is None:  # asked for by name: never a silent swap
            raise ValueError(f"--method {method} needs a model pack and none is installed: make one with "
                             "`styleid-edge export` and pass --pack DIR (or set STYLEID_EDGE_PACK), or leave out "
                             "--method to pixelate every face")
        if config.method is None and pack is None and method == "pixelate":
            msg = ("no model pack installed: every face is PIXELATED. Make a pack with `styleid-edge export` "
                   "and pass --pack (or set STYLEID_EDGE_PACK) for StyleID anonymization.")
            log.warning(msg)
            self.report.note(msg)
        if config.strength is not None and method not in ("latent", "pixel", "swapper"):
            msg = (f"--strength {config.strength} has no effect with the {method} method (it sets how far the "
                   "latent, pixel and swapper methods move a face from its identity)")
            log.warning(msg)
            self.report.note(msg)
        self.method = method
        self.report.method = method
        self.models = PackModels(pack, options) if pack is not None else None
        self.engine: StyleIDMethods | None = None
        if method in ("latent", "pixel", "swapper"):
            self.engine = StyleIDMethods(self.models, MethodConfig(method, config.strength, config.truncation))
            selector = self.engine.selector
            if selector is not None and selector.source.startswith("structural prior"):
                self.report.note(f"latent method: identity channels from a {selector.source}")  # (logged there)
            self.crop_size = max(256, min(pack.manifest.resolution, 512))
        else:
            self.crop_size = 256
        if method == "donor":
            from .donors import DonorBank

            path = config.donors or (pack.root / "donors.npz" if pack else None)
            if path is None:
                raise ValueError("--method donor needs a donor bank: run `styleid-edge donors build --pack PACK` "
                                 "or pass --donors FILE")
            self.donor_bank = DonorBank.load(path)
        self.detector = make_detector(config.detector, providers=list(config.providers),
                                      threshold=config.detector_threshold, weak_threshold=config.weak_threshold,
                                      options=RobustOptions(rotations=tuple(config.detect_angles)))
        self.report.detector = str(config.detector)
        if config.detector_threshold is not None and config.detector_threshold > HIGH_THRESHOLD:
            msg = (f"--thresh {config.detector_threshold:g} is high: faces the detector scores lower stay UNCHANGED "
                   f"in the output (sharp frontal faces often score 0.8-0.95); the default is safer")
            log.warning(msg)
            self.report.note(msg)
        self.tracker = Tracker(TrackerConfig(hold_frames=config.hold_frames, seed=config.seed))
        self.verifier = None
        if config.verify and method in ("latent", "pixel", "swapper", "donor"):
            from .recognize import SFace

            self.verifier = SFace(providers=list(config.providers))
        self._frame_index = 0
        self._seen_tracks: set[int] = set()
        if config.target and self.engine is not None:
            self._set_target(config.target)
        elif config.target:
            log.warning("--target is used by the latent, pixel and swapper methods only; ignored for %s", method)

    def _set_target(self, path: str) -> None:
        from .images import read_image

        image = read_image(path)
        dets = self.detector.detect(image)
        if not dets:
            raise ValueError(f"{path}: no face found in the --target image; use a clear frontal photo")
        best = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        crop, _ = align.ffhq_crop(image, best.landmarks, self.crop_size)
        self.engine.set_target(crop)

    def reset(self, fps: float = 30.0) -> None:
        """Start a new stream (tracks and frame numbering); pseudo-identity seeds stay the same."""
        self.tracker = Tracker(TrackerConfig(hold_frames=self.config.hold_frames, seed=self.config.seed, fps=fps))
        self._frame_index = 0
        self._seen_tracks = set()  # track ids restart with the new tracker; the report keeps the running total

    # -----------------------------------------------------------------------------------------
    def process(self, frame: np.ndarray, frame_index: int | None = None) -> tuple[np.ndarray, list[FaceRecord]]:
        """Anonymize one BGR frame (a copy is returned; the input is not modified)."""
        idx = self._frame_index if frame_index is None else frame_index
        self._frame_index = idx + 1
        tracks = self.locate(frame, idx)
        for tr in tracks:
            if tr.track_id not in self._seen_tracks:
                self._seen_tracks.add(tr.track_id)
                self.report.tracks += 1
        out, records = self.render(frame, tracks)
        self.account(records)
        return out, records

    def locate(self, frame: np.ndarray, frame_index: int, tracker: Tracker | None = None) -> list:
        """Detect and track the faces of ``frame``: the faces that must not show in its output.

        ``tracker`` defaults to this Anonymizer's; a caller running several streams passes one per stream.
        """
        t = time.perf_counter()
        detections = self._detect(frame)
        self.timer.add("detect", t)
        t = time.perf_counter()
        tracks = (tracker or self.tracker).update(detections, frame_index)
        self.timer.add("track", t)
        return tracks

    def _detect(self, frame: np.ndarray) -> list:
        side = int(self.config.detect_max_side or 0)
        longer = max(frame.shape[:2])
        weak = self.config.weak_threshold is not None
        if side <= 0 or longer <= side:
            return self.detector.detect(frame, weak=weak)
        scale = side / longer
        small = cv2.resize(frame, (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        detections = self.detector.detect(small, weak=weak)
        sx, sy = frame.shape[1] / small.shape[1], frame.shape[0] / small.shape[0]
        for d in detections:
            d.box = d.box * np.array([sx, sy, sx, sy], np.float32)
            d.landmarks = d.landmarks * np.array([sx, sy], np.float32)
        return detections

    def render(self, frame: np.ndarray, tracks: list) -> tuple[np.ndarray, list[FaceRecord]]:
        """Anonymize ``tracks`` in a copy of ``frame`` with the method, failing closed per face."""
        return self.render_many([frame], [tracks])[0]

    def plan(self, tracks: list) -> list[FaceRecord]:
        """One record per track: the method it will get, or the reason it is pixelated instead
        (too small, no landmarks, profile) without running any model."""
        records = []
        for tr in tracks:
            rec = FaceRecord(int(tr.track_id), [round(float(v), 1) for v in tr.box], self.method, bool(tr.is_held))
            records.append(rec)
            if self.method in ("blur", "pixelate"):
                continue
            reason = self._unsuitable(tr)
            if reason:
                rec.method, rec.fallback = "pixelate", reason
        return records

    def render_many(self, frames: list[np.ndarray], tracks_per_frame: list[list],
                    records_per_frame: list[list[FaceRecord]] | None = None, *, chunk: int | None = None,
                    on_chunk=None) -> list[tuple[np.ndarray, list[FaceRecord]]]:
        """Anonymize the faces of several frames (e.g. one frame of each live source) with shared
        model batches of up to ``chunk`` faces (default ``config.batch_size``); fail closed per face.

        ``records_per_frame`` (from :meth:`plan`) is filled in place when given. After each chunk,
        ``on_chunk(outs, done)`` is called with the working copies and the ``(frame, face)``
        indices whose result is now final in them (pasted, or marked ``pixelate`` in its record:
        the caller obscures those); :meth:`obscure` is applied to every frame at the end.
        """
        outs = [frame.copy() for frame in frames]
        if records_per_frame is None:
            records_per_frame = [self.plan(tracks) for tracks in tracks_per_frame]
        # Faces planned to be obscured (too small, profile, ...) are drawn first, under the generated
        # faces: a large fallback box (often a false detection) must not cover faces that were
        # anonymized properly. Faces that fail later (model, paste, identity check) are drawn last, on top.
        planned = [[rec.method in ("pixelate", "blur") for rec in records] for records in records_per_frame]
        for out, tracks, records in zip(outs, tracks_per_frame, records_per_frame):
            self.obscure(out, tracks, records)
        work = []
        if self.method not in ("blur", "pixelate"):
            for fi, (tracks, records) in enumerate(zip(tracks_per_frame, records_per_frame)):
                for ti, (tr, rec) in enumerate(zip(tracks, records)):
                    if rec.fallback is None:
                        work.append(_Work(tr, rec, fi, ti))
        if work:
            self._run_generative(outs, frames, work, chunk or self.config.batch_size, on_chunk)
            for out, tracks, records, skip in zip(outs, tracks_per_frame, records_per_frame, planned):
                self.obscure(out, tracks, records, skip=skip)
        return list(zip(outs, records_per_frame))

    @staticmethod
    def obscure(out: np.ndarray, tracks: list, records: list[FaceRecord], skip: list[bool] | None = None) -> None:
        """Pixelate (or blur) in place every face whose record says so (except where ``skip`` is True):
        these faces must never show, whatever was pasted before."""
        for i, (tr, rec) in enumerate(zip(tracks, records)):
            if skip is not None and skip[i]:
                continue
            if rec.method == "pixelate":
                fallback.pixelate(out, np.asarray(tr.box, dtype=np.float32))
            elif rec.method == "blur":
                fallback.blur(out, np.asarray(tr.box, dtype=np.float32))

    def _unsuitable(self, tr) -> str | None:
        box = np.asarray(tr.box, dtype=np.float32)
        if min(box[2] - box[0], box[3] - box[1]) < self.config.min_face:
            return "too_small"
        lm = np.asarray(tr.landmarks, dtype=np.float32)
        if lm.shape != (5, 2) or not np.isfinite(lm).all():
            return "no_landmarks"
        q = align.face_quality(lm)
        if abs(float(q.get("yaw_proxy", 0.0))) > self.config.max_yaw:
            return "profile"
        return None

    def _run_generative(self, outs: list[np.ndarray], frames: list[np.ndarray], items: list[_Work], chunk: int,
                        on_chunk=None) -> None:
        t = time.perf_counter()
        aligned: list[_Work] = []
        failed: list[_Work] = []
        for w in items:
            try:
                w.crop, w.m = align.ffhq_crop(frames[w.fi], np.asarray(w.tr.landmarks, np.float32), self.crop_size)
                w.lm = align.transform_points(w.m, np.asarray(w.tr.landmarks, np.float32))
                aligned.append(w)
            except Exception as exc:  # noqa: BLE001 - any failure on one face means: pixelate it
                w.rec.method, w.rec.fallback = "pixelate", f"align_error: {exc}"
                failed.append(w)
        self.timer.add("align", t)
        if failed and on_chunk is not None:
            on_chunk(outs, [(w.fi, w.ti) for w in failed])
        for start in range(0, len(aligned), max(1, int(chunk))):
            batch = aligned[start:start + max(1, int(chunk))]
            try:
                new_crops = self._generate(batch)
            except Exception as exc:  # noqa: BLE001 - fail closed for the whole batch
                log.error("generation failed for %d face(s), pixelating them: %s", len(batch), exc)
                self.report.error(f"generation: {type(exc).__name__}: {exc}")
                del self.report.errors[:-100]  # a live run must not grow without bound
                for w in batch:
                    w.rec.method, w.rec.fallback = "pixelate", "model_error"
            else:
                t = time.perf_counter()
                for w, (new, mask) in zip(batch, new_crops):
                    try:
                        blend.paste_back(outs[w.fi], new, w.m, mask=mask)
                    except Exception as exc:  # noqa: BLE001
                        w.rec.method, w.rec.fallback = "pixelate", f"paste_error: {exc}"
                self.timer.add("paste_back", t)
                if self.verifier is not None:
                    for fi in sorted({w.fi for w in batch}):
                        self._verify(frames[fi], outs[fi], [w for w in batch if w.fi == fi and w.rec.fallback is None])
            if on_chunk is not None:
                on_chunk(outs, [(w.fi, w.ti) for w in batch])

    def _verify(self, frame: np.ndarray, out: np.ndarray, batch: list) -> None:
        """Pixelate any face that the recognizer still matches to the person in the input."""
        if not batch:
            return
        t = time.perf_counter()
        try:
            # Measure at the landmarks the face was aligned with and, when there was a detection this
            # frame, at the detector's own: a face pasted slightly off must not pass.
            points = [np.asarray(w.tr.landmarks, np.float32) for w in batch]
            owner = list(range(len(batch)))
            for i, w in enumerate(batch):
                raw = getattr(w.tr, "raw_landmarks", None)
                if raw is not None:
                    points.append(np.asarray(raw, np.float32))
                    owner.append(i)
            before = np.stack([align.arcface_crop(frame, p)[0] for p in points])
            after = np.stack([align.arcface_crop(out, p)[0] for p in points])
            emb = self.verifier.embed(np.concatenate([before, after]))
            per_point = np.atleast_1d(cosine(emb[: len(points)], emb[len(points):]))
            sims = np.full(len(batch), -1.0)
            for i, sim in zip(owner, per_point):
                sims[i] = max(sims[i], float(sim))
        except Exception as exc:  # noqa: BLE001 - cannot verify: fail closed
            log.error("identity check failed, pixelating %d face(s): %s", len(batch), exc)
            for w in batch:
                w.rec.method, w.rec.fallback = "pixelate", "verify_error"
            self.timer.add("verify", t)
            return
        for w, sim in zip(batch, sims):
            if sim >= self.config.verify_threshold:
                # a held box (no detection this frame) is counted apart: often background after the face left,
                # sometimes a face the detector missed; pixelated either way
                w.rec.method = "pixelate"
                w.rec.fallback = "held_still_matches" if w.rec.held else "identity_still_matches"
        self.timer.add("verify", t)

    def warm_up(self, max_faces: int) -> list[int]:
        """Build now what a backend builds per batch size on first use (``torch.compile``: about 20 s per size
        at 1024 px on an H100), for every bucket up to ``max_faces`` faces, so that a live stream does not stall
        on its first faces. Runs the generative path on blank crops; returns the batch sizes run (none when no
        model builds per shape)."""
        if self.engine is None or self.method == "donor":
            return []
        models = [getattr(self.models, r) for r in ("encoder", "synthesis") if self.models.has(r)]
        if not any(getattr(m.runner, "builds_per_shape", False) for m in models):
            return []
        sizes = [1 << i for i in range(max(1, max_faces).bit_length()) if 1 << i < max_faces] + [max(1, max_faces)]
        log.info("warming up the models for batches of %s faces before starting (torch.compile; cached on disk "
                 "for later runs)", ", ".join(map(str, sizes)))
        for b in sizes:
            t = time.perf_counter()
            blank = np.zeros((b, self.crop_size, self.crop_size, 3), np.uint8)
            self.engine.generate_crops(blank, list(range(b)), self.crop_size)
            log.info("  %d face%s: ready in %.1f s", b, "" if b == 1 else "s", time.perf_counter() - t)
        return sizes

    def _generate(self, batch: list[_Work]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        crops = np.stack([w.crop for w in batch])
        seeds = [int(w.tr.seed) for w in batch]
        if self.method == "donor":
            t = time.perf_counter()
            res = [self.donor_bank.render(w.crop, w.lm, seed) for w, seed in zip(batch, seeds)]
            self.timer.add("donor", t)
            return res
        t = time.perf_counter()
        new = self.engine.generate_crops(crops, seeds, self.crop_size)
        self.timer.add(f"generate_{self.method}", t)
        if self.method == "pixel":
            results = []
            for w, gen in zip(batch, new):
                mask = blend.inner_face_mask(w.lm, self.crop_size)
                results.append((blend.blend_inner_face(w.crop, gen, w.lm), mask))
            return results
        return [(n, None) for n in new]

    def account(self, records: list[FaceRecord]) -> None:
        """Count a frame's faces in the run report."""
        r = self.report
        r.frames += 1
        for rec in records:
            r.faces += 1
            r.faces_held += rec.held
            r.faces_detected += not rec.held
            r.by_method[rec.method] += 1
            if rec.fallback:
                r.fallbacks[rec.fallback.split(":")[0]] += 1

    def finish(self) -> RunReport:
        self.report.timings = self.timer.as_dict()
        providers = {f"detector ({self.detector.name})": ", ".join(getattr(self.detector, "providers", []))}
        if self.verifier is not None:
            providers["verifier (sface)"] = ", ".join(self.verifier.session.get_providers())
        if self.models is not None:
            providers.update(self.models.providers())
        self.report.providers = providers
        return self.report
