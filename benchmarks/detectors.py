"""Recall and speed of the wheel-shipped face detectors on real photographs.

Run:  python benchmarks/detectors.py [--detectors yunet,centerface,retinaface,yunet+retinaface] [--reps 5]

Data: the real photos in ``tests/data/photos`` and augmented versions of them --
  small   faces scaled to 12/14/16/20/24/32 px wide, pasted at random places in 1920x1080 and
          1280x720 frames
  rot15   photo rotated by +-15 degrees about the face, face 24 px wide, in a 1280x720 frame
          (upright detectors lose tilted faces first when they are small)
  rot30   same, +-30 degrees
  rot45   same, +-45 degrees (beyond the requirement; shows where each configuration stops)
  occl    mask over mouth and chin / skin-coloured "hand" over mouth and a cheek / dark glasses /
          mask + glasses / an object hiding half the face, one eye included
  dark    low light: 0.12x brightness, gamma 1.5, sensor noise (sigma 4)
Ground truth = faces that at least two of the three detectors agree on in the clean photo
(printed). False positives are counted on the augmented frames and on face-free scikit-image
photos (coffee, rocket, chelsea the cat, ...), reported per frame.

Configurations (see ``RobustOptions``): ``single@960`` = one pass with the frame shrunk to a
960 px long side (what "detect at a working size" alone gives); ``w640+tiles`` = a 640 px
working pass plus full-resolution tiles (<= 1280 px, 128 px overlap); ``w640+tiles+rot30`` =
plus passes on the working frame rotated by +-30 degrees (the product default).
``--grid`` compares variants of the default instead. Speed: median wall time per frame of ``detect()`` on 1280x720 and
1920x1080 frames, after one warm-up call, with the CPU execution provider.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from styleid_edge.runtime.detect import (  # noqa: E402
    DETECTOR_NAMES,
    Candidates,
    RobustDetector,
    RobustOptions,
    make_single,
)

log = logging.getLogger("bench.detectors")
PHOTOS = ROOT / "tests" / "data" / "photos"
RNG_SEED = 1234


# --------------------------------------------------------------------------------------------
# Ground truth and augmentation
# --------------------------------------------------------------------------------------------


@dataclass
class Face:
    box: np.ndarray  # x1 y1 x2 y2
    landmarks: np.ndarray  # (5,2)


@dataclass
class Frame:
    family: str
    image: np.ndarray
    faces: list[Face] = field(default_factory=list)


def load_photos() -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(PHOTOS.iterdir()):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None:
            out[p.stem] = img
    if not out:
        raise SystemExit(f"no photos found in {PHOTOS}")
    return out


def consensus_faces(img: np.ndarray, singles: dict) -> list[Face]:
    """Faces found by >= 2 detectors (IoU > 0.4) on the clean photo at <= 960 px."""
    scale = min(1.0, 960 / max(img.shape[:2]))
    work = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else img
    found = []
    for name, det in singles.items():
        c = det.candidates(work)
        for b, lm in zip(c.boxes / scale, c.landmarks / scale):
            found.append((name, b, lm))
    faces: list[Face] = []
    used = [False] * len(found)
    for i, (n, b, lm) in enumerate(found):
        if used[i]:
            continue
        group = [(n, b, lm)]
        used[i] = True
        for j in range(i + 1, len(found)):
            if not used[j] and iou(b, found[j][1]) > 0.4:
                group.append(found[j])
                used[j] = True
        if len({g[0] for g in group}) >= 2:
            faces.append(Face(np.mean([g[1] for g in group], 0), np.mean([g[2] for g in group], 0)))
    return faces


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / ua) if ua > 0 else 0.0


def map_faces(faces: list[Face], m: np.ndarray) -> list[Face]:
    if not faces:
        return []
    c = Candidates(
        np.stack([f.box for f in faces]).astype(np.float32),
        np.ones(len(faces), np.float32),
        np.stack([f.landmarks for f in faces]).astype(np.float32),
    ).affine(m)
    return [Face(b, lm) for b, lm in zip(c.boxes, c.landmarks)]


def face_patch(img: np.ndarray, face: Face, margin: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Crop around a face with a margin; returns the patch and the face box in patch coords."""
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    X1, Y1 = int(max(0, x1 - margin * w)), int(max(0, y1 - margin * h))
    X2, Y2 = int(min(img.shape[1], x2 + margin * w)), int(min(img.shape[0], y2 + margin * h))
    return img[Y1:Y2, X1:X2], face.box - np.array([X1, Y1, X1, Y1], np.float32)


def backgrounds() -> list[np.ndarray]:
    """Face-free photos from scikit-image (bundled files, no download)."""
    try:
        import skimage.data as sd
    except ImportError:  # pragma: no cover
        log.warning("scikit-image not installed: using flat grey backgrounds and no false-positive set")
        return [np.full((512, 512, 3), 110, np.uint8)]
    out = []
    for name in ("coffee", "rocket", "chelsea", "hubble_deep_field", "coins", "motorcycle_left", "page", "brick"):
        try:
            a = getattr(sd, name)() if name != "motorcycle_left" else sd.stereo_motorcycle()[0]
        except Exception:  # noqa: BLE001 - optional images
            continue
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        out.append(cv2.cvtColor(a[..., :3].astype(np.uint8), cv2.COLOR_RGB2BGR))
    return out


def make_small(photos, gts, bgs, rng) -> list[Frame]:
    frames = []
    items = [(n, f) for n in photos for f in gts[n]]
    widths = (12, 14, 16, 20, 24, 32)
    for k, (fw, fh) in enumerate(((1920, 1080), (1920, 1080), (1280, 720))):
        bg = cv2.resize(bgs[k % len(bgs)], (fw, fh), interpolation=cv2.INTER_LINEAR)
        frame = Frame("small", bg.copy())
        occupied: list[np.ndarray] = []
        for n, f in items:
            for wpx in widths:
                if rng.random() > 1 / 3 * 1.2:  # ~40% of (face, size) pairs per frame
                    continue
                patch, pbox = face_patch(photos[n], f)
                s = wpx / (pbox[2] - pbox[0])
                small = cv2.resize(patch, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                ph, pw = small.shape[:2]
                for _ in range(50):
                    x, y = int(rng.integers(0, fw - pw)), int(rng.integers(0, fh - ph))
                    cand = np.array([x, y, x + pw, y + ph], np.float32)
                    if all(iou(cand, o) == 0 and not _overlap(cand, o) for o in occupied):
                        break
                else:
                    continue
                occupied.append(cand)
                frame.image[y : y + ph, x : x + pw] = small
                frame.faces.append(Face(pbox * s + [x, y, x, y], f.landmarks))
        frames.append(frame)
    return frames


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def make_rotated(photos, gts, angle: float, face_w: float = 24.0) -> list[Frame]:
    frames = []
    for n, img in photos.items():
        if not gts[n]:
            continue
        f = gts[n][0]
        s = face_w / (f.box[2] - f.box[0])
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        for sign in (1, -1):
            cx, cy = (f.box[0] + f.box[2]) / 2 * s, (f.box[1] + f.box[3]) / 2 * s
            m = cv2.getRotationMatrix2D((float(cx), float(cy)), sign * angle, 1.0)
            m[0, 2] += 640 - cx
            m[1, 2] += 360 - cy
            out = cv2.warpAffine(small, m, (1280, 720), borderMode=cv2.BORDER_CONSTANT, borderValue=(110, 110, 110))
            full = m @ np.vstack([np.diag([s, s, 1.0])[:2], [0, 0, 1]])
            faces = [g for g in map_faces(gts[n], full) if 0 <= g.box[0] and g.box[2] <= 1280 and 0 <= g.box[1] and g.box[3] <= 720]
            frames.append(Frame(f"rot{int(angle)}", out, faces))
    return frames


def make_occluded(photos, gts) -> list[Frame]:
    frames = []
    for n, img in photos.items():
        scale = min(1.0, 960 / max(img.shape[:2]))
        base = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        faces = [Face(f.box * scale, f.landmarks * scale) for f in gts[n]]
        for kinds in (("mask",), ("hand",), ("glasses",), ("mask", "glasses"), ("half",)):
            im = base.copy()
            for f in faces:
                for kind in kinds:
                    occlude(im, f.landmarks, kind)
            frames.append(Frame("occl", im, faces))
    return frames


def occlude(im: np.ndarray, lm: np.ndarray, kind: str) -> None:
    """Draw a synthetic occluder in place (also used by the tests)."""
    le, re, nose, ml, mr = lm.astype(np.float64)
    ed = float(np.hypot(*(re - le)))
    if kind == "mask":  # surgical mask: nose bridge to chin, light blue
        top = nose[1] - 0.15 * ed
        chin = (ml[1] + mr[1]) / 2 + 0.9 * ed
        pts = np.array([[le[0] - 0.6 * ed, top], [re[0] + 0.6 * ed, top], [re[0] + 0.5 * ed, chin], [le[0] - 0.5 * ed, chin]])
        cv2.fillPoly(im, [pts.astype(np.int32)], (235, 215, 190))
    elif kind == "hand":  # skin-coloured blob over mouth, chin and one cheek, blurred edge
        x0, y0 = int(max(0, nose[0] - 0.2 * ed)), int(max(0, nose[1] - 0.2 * ed))
        cheek = im[max(0, y0 - 2) : y0 + 3, max(0, x0 - 2) : x0 + 3].reshape(-1, 3)
        colour = tuple(int(v) for v in (cheek.mean(0) * 0.9 if len(cheek) else (90, 120, 170)))
        layer = im.copy()
        centre = (int((ml[0] + mr[0]) / 2 - 0.3 * ed), int((ml[1] + mr[1]) / 2 + 0.1 * ed))
        cv2.ellipse(layer, centre, (int(1.0 * ed), int(0.6 * ed)), -20, 0, 360, colour, -1)
        mask = np.zeros(im.shape[:2], np.float32)
        cv2.ellipse(mask, centre, (int(1.0 * ed), int(0.6 * ed)), -20, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.05 * ed))[..., None]
        im[:] = (layer * mask + im * (1 - mask)).astype(np.uint8)
    elif kind == "glasses":  # dark glasses
        for e in (le, re):
            cv2.ellipse(im, (int(e[0]), int(e[1])), (int(0.45 * ed), int(0.3 * ed)), 0, 0, 360, (20, 20, 20), -1)
        cv2.line(im, tuple(int(v) for v in le), tuple(int(v) for v in re), (20, 20, 20), max(1, int(0.08 * ed)))
    elif kind == "half":  # a hand / object hiding the face's right half (image left), eye included
        x = int(nose[0] - 0.1 * ed)
        top, bottom = int(le[1] - 1.2 * ed), int(ml[1] + 1.2 * ed)
        cv2.rectangle(im, (int(le[0] - 1.5 * ed), max(0, top)), (x, bottom), (60, 90, 140), -1)
    else:
        raise ValueError(kind)


def make_dark(photos, gts, rng) -> list[Frame]:
    frames = []
    for n, img in photos.items():
        scale = min(1.0, 960 / max(img.shape[:2]))
        base = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        dark = (base**1.5) * 0.12 * 255 + rng.normal(0, 4.0, base.shape)
        frames.append(Frame("dark", np.clip(dark, 0, 255).astype(np.uint8), [Face(f.box * scale, f.landmarks * scale) for f in gts[n]]))
    return frames


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def matches(det_box: np.ndarray, gt: Face) -> bool:
    if iou(det_box, gt.box) >= 0.3:
        return True
    dc = ((det_box[0] + det_box[2]) / 2, (det_box[1] + det_box[3]) / 2)
    gc = ((gt.box[0] + gt.box[2]) / 2, (gt.box[1] + gt.box[3]) / 2)
    inside = lambda p, b: b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]  # noqa: E731
    return inside(dc, gt.box) and inside(gc, det_box)


@dataclass
class Score:
    found: int = 0
    total: int = 0

    def add(self, f: int, t: int) -> None:
        self.found += f
        self.total += t

    def __str__(self) -> str:
        return f"{self.found / self.total:.2f}" if self.total else "-"


def evaluate(det: RobustDetector, frames: list[Frame], negatives: list[np.ndarray]) -> tuple[dict[str, Score], float]:
    per: dict[str, Score] = {}
    fp = 0
    n_frames = 0
    for fr in frames:
        boxes = [d.box for d in det.detect(fr.image)]
        hit = [any(matches(b, g) for b in boxes) for g in fr.faces]
        per.setdefault(fr.family, Score()).add(sum(hit), len(fr.faces))
        fp += sum(1 for b in boxes if not any(matches(b, g) for g in fr.faces))
        n_frames += 1
    for im in negatives:
        fp += len(det.detect(im))
        n_frames += 1
    return per, fp / max(1, n_frames)


def speed_frame(photo: np.ndarray, w: int, h: int) -> np.ndarray:
    s = min(w / photo.shape[1], h / photo.shape[0])
    im = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), 90, np.uint8)
    y, x = (h - im.shape[0]) // 2, (w - im.shape[1]) // 2
    out[y : y + im.shape[0], x : x + im.shape[1]] = im
    return out


CONFIGS = {
    "single@960": RobustOptions(working_size=960, tile_size=None, rotations=()),
    "w640+tiles": RobustOptions(working_size=640, rotations=()),
    "w640+tiles+rot30 (default)": RobustOptions(),
}
#: ``--grid``: variants of the product configuration, to choose its defaults.
GRID = {
    "w640+tiles": RobustOptions(working_size=640, rotations=()),
    "w640+tiles+rot30@640": RobustOptions(working_size=640),
    "w640+tiles+rot30@960": RobustOptions(working_size=640, rotation_size=960),
    "w960+tiles": RobustOptions(working_size=960, rotations=()),
    "w960+tiles+rot30@960": RobustOptions(working_size=960),
    "w960+tiles+rot20@960": RobustOptions(working_size=960, rotations=(-20.0, 20.0)),
    "w960+tiles640+rot30@960": RobustOptions(working_size=960, tile_size=640),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", default=",".join(DETECTOR_NAMES + ("yunet+retinaface",)),
                    help="comma-separated; 'a+b' runs b on the working-size pass next to a")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per frame size")
    ap.add_argument("--threshold", type=float, default=None, help="score threshold for all detectors")
    ap.add_argument("--quick", action="store_true", help="fewer frames (smoke run)")
    ap.add_argument("--no-speed", action="store_true", help="recall and false positives only")
    ap.add_argument("--grid", action="store_true", help="compare RobustOptions variants instead of the 3 configs")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    table = GRID if args.grid else CONFIGS
    configs = list(GRID) if args.grid else [c.strip() for c in args.configs.split(",") if c.strip()]
    photos = load_photos()
    singles_all = {n: make_single(n) for n in DETECTOR_NAMES}
    gts = {n: consensus_faces(img, singles_all) for n, img in photos.items()}
    print("ground truth (faces agreed by >= 2 detectors):")
    for n, fs in gts.items():
        print(f"  {n:22s} {photos[n].shape[1]}x{photos[n].shape[0]}  " + "; ".join(f"box {np.round(f.box).astype(int).tolist()}" for f in fs))

    rng = np.random.default_rng(RNG_SEED)
    bgs = backgrounds()
    frames: list[Frame] = [Frame("clean", img, gts[n]) for n, img in photos.items()]
    frames += make_small(photos, gts, bgs, rng)
    for a in (15, 30, 45):
        frames += make_rotated(photos, gts, a)
    frames += make_occluded(photos, gts)
    frames += make_dark(photos, gts, rng)
    negatives = [cv2.resize(b, None, fx=min(1, 960 / max(b.shape[:2])), fy=min(1, 960 / max(b.shape[:2]))) for b in bgs]
    if args.quick:
        frames = frames[::3]
    families = list(dict.fromkeys(f.family for f in frames))
    print(f"{len(frames)} frames with {sum(len(f.faces) for f in frames)} faces, {len(negatives)} face-free photos; "
          f"{os.cpu_count()} CPU cores; load avg {os.getloadavg()[0]:.1f}")

    sp720 = speed_frame(photos.get("obama", next(iter(photos.values()))), 1280, 720)
    sp1080 = speed_frame(photos.get("obama", next(iter(photos.values()))), 1920, 1080)
    header = f"| detector | config | {' | '.join(families)} | all | FP/frame | passes 720p/1080p | ms 1280x720 | ms 1920x1080 |"
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for n in names:
        models = [singles_all[p] if args.threshold is None else make_single(p, threshold=args.threshold) for p in n.split("+")]
        dets = {c: RobustDetector(models[0], table[c], helpers=models[1:]) for c in configs}
        recall = {}
        for c, det in dets.items():
            recall[c] = evaluate(det, frames, negatives)
            log.info("%s %s recall done", n, c)
        # Interleave the timing of the configurations so that load from other processes on the
        # machine hits all of them alike; report the median.
        times: dict[tuple[str, int], list[float]] = {}
        passes: dict[tuple[str, int], int] = {}
        for c, det in dets.items():
            for im in (sp720, sp1080):
                det.detect(im)  # warm-up: ORT allocations for these shapes
        for _ in range(args.reps if not args.no_speed else 0):
            for c, det in dets.items():
                for im in (sp720, sp1080):
                    t = time.perf_counter()
                    det.detect(im)
                    times.setdefault((c, im.shape[0]), []).append((time.perf_counter() - t) * 1000)
                    passes[(c, im.shape[0])] = det.last_passes
        for c in configs:
            per, fp = recall[c]
            allsc = Score(sum(s.found for s in per.values()), sum(s.total for s in per.values()))
            med = {h: (f"{statistics.median(times[(c, h)]):.0f}" if (c, h) in times else "-") for h in (720, 1080)}
            row = f"| {n} | {c} | " + " | ".join(str(per.get(f, Score())) for f in families)
            row += f" | {allsc} | {fp:.2f} | {passes.get((c, 720), '-')}/{passes.get((c, 1080), '-')} | {med[720]} | {med[1080]} |"
            rows.append(row)
            print(row, flush=True)
    print(f"\nload average after the run: {os.getloadavg()[0]:.1f} (other processes share these cores)")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
