"""Privacy strength calibration (``styleid-edge calibrate strength``).

Sweeps a method's privacy knob over a calibration set and picks the smallest
setting whose recognizer similarity between source and anonymized face falls
below a target T. The knob, per method (all in (0, 1]):

- ``latent``: the runtime's ``--strength``: the share of ranked identity
  channels swapped from the target (``k = round(strength * len(rank))``,
  exactly :class:`~styleid_edge.runtime.identity.ChannelSelector`);
- ``pixel`` / ``swapper``: how far W+ moves from the source toward the
  method's full output, ``w = w_src + a * (w_method - w_src)`` (``a = 1`` is
  the method as it runs today).

Calibration set: ``faces`` generated faces (seeded, truncated like the
runtime's pseudo-identities) or a folder of FFHQ-aligned face images (read
through the pack's encoder). Each face gets a seeded pseudo-identity target.
Per setting the curve has: mean and max recognizer cosine similarity (source
vs anonymized, the ArcFace crop of both, same recognizer as ``calibrate
ranks``) and the mean image change ``mean |x_anon - x_src|`` in [0, 1] pixel
units. Chosen: the smallest setting at which the criterion (mean, or max)
similarity is below T *and stays below T for every larger setting* (a curve
that dips and comes back does not count). Written: ``strength_<method>.csv``,
``strength_<method>.png`` (drawn with OpenCV) and
``manifest.defaults["strength"][method]``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..runtime.identity import ChannelSelector, truncate
from ..runtime.methods import crops_to_input
from ..runtime.stylespace import identity_rows
from .ranks import RecognizerSpec, make_recognizer

log = logging.getLogger(__name__)

STRENGTH_METHODS = ("latent", "pixel", "swapper")
DEFAULT_SETTINGS = {
    "latent": (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "pixel": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "swapper": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
}
CSV_COLUMNS = ("setting", "channels", "mean_similarity", "max_similarity", "mean_image_change")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class StrengthConfig:
    method: str
    target_similarity: float
    settings: Sequence[float] | None = None  # None: DEFAULT_SETTINGS[method]
    faces: int = 32  # generated calibration faces (ignored with faces_dir)
    faces_dir: str | Path | None = None  # folder of FFHQ-aligned face images instead
    seed: int = 0
    truncation: float = 0.7
    recognizer: RecognizerSpec = "auto"
    criterion: str = "mean"  # "mean" or "max" similarity must fall below the target
    batch: int = 8
    use_groups: bool = False  # latent: the pack's 256-group rank
    rank: np.ndarray | None = None  # latent: an explicit channel rank instead of the pack's

    def check(self) -> None:
        if self.method not in STRENGTH_METHODS:
            raise ValueError(f"--method must be one of {', '.join(STRENGTH_METHODS)}, got {self.method!r}")
        if not -1.0 <= self.target_similarity <= 1.0:
            raise ValueError(f"--target-similarity is a cosine in [-1, 1], got {self.target_similarity}")
        if self.criterion not in ("mean", "max"):
            raise ValueError(f"criterion must be mean or max, got {self.criterion!r}")
        bad = [s for s in self.sweep_settings() if not 0.0 < s <= 1.0]
        if bad:
            raise ValueError(f"settings must be in (0, 1], got {bad}")
        if self.faces_dir is None and self.faces < 1:
            raise ValueError("need at least one calibration face (--faces N or --faces-dir DIR)")

    def sweep_settings(self) -> list[float]:
        return sorted({float(s) for s in (self.settings or DEFAULT_SETTINGS[self.method])})


@dataclass
class CurveRow:
    setting: float
    channels: int | None  # latent: channels swapped
    mean_similarity: float
    max_similarity: float
    mean_image_change: float


@dataclass
class StrengthResult:
    method: str
    target_similarity: float
    criterion: str
    rows: list[CurveRow]
    chosen: float | None  # None: no setting reaches the target
    info: dict[str, Any] = field(default_factory=dict)


# --- calibration set ------------------------------------------------------------------------
def _wplus(models: Any, z: np.ndarray, psi: float) -> np.ndarray:
    m = models.pack.manifest
    w = truncate(models.mapping.get(z.astype(np.float32)), models.pack.latent_avg, psi)
    return np.repeat(w[:, None, :], m.n_latent, axis=1).astype(np.float32)


def _load_folder(models: Any, folder: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """W+ (encoder) and source images (B,3,R,R) of every aligned face image in a folder."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; pass a folder of FFHQ-aligned face images")
    if not models.has("encoder"):
        raise ValueError("calibrating on photos needs the pack's encoder; this pack has none "
                         "(use generated faces: leave out --faces-dir)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    crops = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    crops = [c for c in crops if c is not None]
    if not crops:
        raise ValueError(f"{folder}: no readable images ({', '.join(IMAGE_EXTS)})")
    size = int(models.encoder.input_shape()[-1])
    wplus = np.concatenate([models.encoder.get(crops_to_input(np.stack([_square(c, size)]), size))
                            for c in crops])
    images = np.concatenate([crops_to_input(np.stack([_square(c, resolution)]), resolution) for c in crops])
    return wplus, images


def _square(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] != img.shape[1]:
        raise ValueError(f"calibration images must be square FFHQ-aligned crops, got {img.shape[1]}x{img.shape[0]}")
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC)


def _targets(models: Any, n: int, cfg: StrengthConfig) -> np.ndarray:
    dim = models.pack.manifest.style_dim
    z = np.stack([np.random.default_rng([cfg.seed & 0xFFFFFFFF, 2, i]).standard_normal(dim) for i in range(n)])
    return _wplus(models, z, cfg.truncation)


# --- the sweep ------------------------------------------------------------------------------
def _latent_rank(models: Any, cfg: StrengthConfig) -> tuple[np.ndarray, str]:
    if cfg.rank is not None:
        return np.asarray(cfg.rank, np.int64).ravel(), "given rank"
    sel = ChannelSelector(models.pack, cfg.use_groups)
    if not sel.source.startswith("pack"):
        log.warning("the pack has no identity ranks: calibrating the structural prior; run "
                    "`styleid-edge calibrate ranks` first for a better latent method")
    return sel.rank, sel.source


def sweep_strength(models: Any, config: StrengthConfig, progress: bool = True) -> StrengthResult:
    """Run the sweep (module docstring) and choose the smallest setting that reaches the target."""
    cfg = config
    cfg.check()
    settings = cfg.sweep_settings()
    recognize, rec_name = make_recognizer(models, cfg.recognizer)
    m = models.pack.manifest
    if cfg.method == "swapper" and not models.has("mapper"):
        raise ValueError("--method swapper needs the pack's mapper.onnx; re-export with --mapper or pick latent/pixel")

    if cfg.faces_dir is not None:
        w_src, x_src = _load_folder(models, Path(cfg.faces_dir), m.resolution)
        src_kind = f"folder {cfg.faces_dir}"
    else:
        z = np.stack([np.random.default_rng([cfg.seed & 0xFFFFFFFF, 1, i]).standard_normal(m.style_dim)
                      for i in range(cfg.faces)])
        w_src = _wplus(models, z, cfg.truncation)
        x_src = np.concatenate([models.synthesis.get(models.affine.get(w_src[i:i + cfg.batch]))
                                for i in range(0, len(w_src), cfg.batch)])
        src_kind = f"{cfg.faces} generated faces (seed {cfg.seed})"
    n = len(w_src)
    w_tar = _targets(models, n, cfg)
    e_src = np.concatenate([recognize(x_src[i:i + cfg.batch]) for i in range(0, n, cfg.batch)])

    rank, rank_source = (None, "")
    full: np.ndarray | None = None
    s_src = s_tar = None
    if cfg.method == "latent":
        rank, rank_source = _latent_rank(models, cfg)
        s_src = np.concatenate([models.affine.get(w_src[i:i + cfg.batch]) for i in range(0, n, cfg.batch)])
        s_tar = np.concatenate([models.affine.get(w_tar[i:i + cfg.batch]) for i in range(0, n, cfg.batch)])
    elif cfg.method == "pixel":
        full = w_src.copy()
        rows = identity_rows(m.n_latent)
        full[:, rows] = w_tar[:, rows]
    else:
        full = np.concatenate([models.mapper.get(w_src[i:i + cfg.batch], w_tar[i:i + cfg.batch])
                               for i in range(0, n, cfg.batch)])

    rows_out: list[CurveRow] = []
    bar = tqdm(total=len(settings) * n, disable=not progress, unit="face", desc=f"calibrate strength ({cfg.method})",
               dynamic_ncols=True)
    try:
        for setting in settings:
            sims, changes = [], []
            k = None
            for i in range(0, n, cfg.batch):
                j = min(i + cfg.batch, n)
                if cfg.method == "latent":
                    k = max(1, int(round(setting * len(rank))))
                    s = s_src[i:j].copy()
                    s[:, rank[:k]] = s_tar[i:j][:, rank[:k]]
                else:
                    s = models.affine.get(w_src[i:j] + setting * (full[i:j] - w_src[i:j]))
                x = models.synthesis.get(s)
                e = recognize(x)
                sims.append((e.astype(np.float64) * e_src[i:j]).sum(axis=1))
                changes.append(np.abs(x - x_src[i:j]).reshape(j - i, -1).mean(axis=1) * 0.5)
                bar.update(j - i)
            sim = np.concatenate(sims)
            rows_out.append(CurveRow(setting, k, float(sim.mean()), float(sim.max()),
                                     float(np.concatenate(changes).mean())))
    finally:
        bar.close()

    chosen = choose_setting(rows_out, cfg.target_similarity, cfg.criterion)
    info = {"recognizer": rec_name, "calibration_set": src_kind, "faces": n, "criterion": cfg.criterion,
            "target_similarity": cfg.target_similarity, "seed": cfg.seed, "truncation": cfg.truncation}
    if rank_source:
        info["rank"] = rank_source
    if chosen is None:
        last = rows_out[-1]
        log.warning("no %s setting brings the %s similarity below %.3f (at %.2f it is %.3f)", cfg.method,
                    cfg.criterion, cfg.target_similarity, last.setting,
                    last.mean_similarity if cfg.criterion == "mean" else last.max_similarity)
    return StrengthResult(cfg.method, cfg.target_similarity, cfg.criterion, rows_out, chosen, info)


def choose_setting(rows: list[CurveRow], target: float, criterion: str = "mean") -> float | None:
    """Smallest setting whose similarity is below ``target`` at it and at every larger setting."""
    chosen = None
    for row in sorted(rows, key=lambda r: r.setting, reverse=True):
        sim = row.mean_similarity if criterion == "mean" else row.max_similarity
        if sim >= target:
            break
        chosen = row.setting
    return chosen


# --- outputs --------------------------------------------------------------------------------
def write_curve_csv(result: StrengthResult, path: str | Path) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(CSV_COLUMNS)
        for r in result.rows:
            wr.writerow([f"{r.setting:.4f}", "" if r.channels is None else r.channels, f"{r.mean_similarity:.6f}",
                         f"{r.max_similarity:.6f}", f"{r.mean_image_change:.6f}"])
    return path


def plot_curve(result: StrengthResult, path: str | Path, size: tuple[int, int] = (720, 480)) -> Path:
    """The curve as a PNG: similarities (left axis), image change (right axis), target and choice."""
    w, h = size
    left, right, top, bottom = 70, 80, 60, 60
    img = np.full((h, w, 3), 255, np.uint8)
    pw, ph = w - left - right, h - top - bottom
    sims = [r.mean_similarity for r in result.rows] + [r.max_similarity for r in result.rows]
    y_lo = min(0.0, min(sims + [result.target_similarity]))
    y_hi = 1.0
    c_hi = max([r.mean_image_change for r in result.rows] + [1e-6]) * 1.1

    def px(x: float, y: float, lo: float = y_lo, hi: float = y_hi) -> tuple[int, int]:
        return (int(round(left + x * pw)), int(round(top + (1 - (y - lo) / (hi - lo)) * ph)))

    font, black, grey = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0), (160, 160, 160)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), black, 1)
    for t in np.linspace(0, 1, 6):
        x, _ = px(t, y_lo)
        cv2.line(img, (x, top + ph), (x, top + ph + 5), black, 1)
        cv2.putText(img, f"{t:.1f}", (x - 12, top + ph + 20), font, 0.45, black, 1, cv2.LINE_AA)
    for t in np.linspace(y_lo, y_hi, 5):
        _, y = px(0, t)
        cv2.line(img, (left - 5, y), (left, y), black, 1)
        cv2.putText(img, f"{t:.2f}", (5, y + 5), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(img, f"{(t - y_lo) / (y_hi - y_lo) * c_hi:.3f}", (left + pw + 8, y + 5), font, 0.45,
                    (0, 140, 0), 1, cv2.LINE_AA)
    _, ty = px(0, result.target_similarity)
    cv2.line(img, (left, ty), (left + pw, ty), grey, 1, cv2.LINE_AA)
    cv2.putText(img, f"T={result.target_similarity:.2f}", (left + 5, ty - 5), font, 0.45, grey, 1, cv2.LINE_AA)
    if result.chosen is not None:
        cx, _ = px(result.chosen, y_lo)
        cv2.line(img, (cx, top), (cx, top + ph), (0, 0, 200), 1, cv2.LINE_AA)
        cv2.putText(img, f"chosen {result.chosen:.2f}", (cx + 4, top + 15), font, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
    series = [("mean similarity", (200, 80, 0), [px(r.setting, r.mean_similarity) for r in result.rows]),
              ("max similarity", (200, 0, 200), [px(r.setting, r.max_similarity) for r in result.rows]),
              ("image change (right)", (0, 140, 0),
               [px(r.setting, y_lo + r.mean_image_change / c_hi * (y_hi - y_lo)) for r in result.rows])]
    for k, (name, color, pts) in enumerate(series):
        cv2.polylines(img, [np.array(pts, np.int32)], False, color, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, color, -1, cv2.LINE_AA)
        cv2.putText(img, name, (left + 200 * k, top - 10), font, 0.45, color, 1, cv2.LINE_AA)
    cv2.putText(img, f"calibrate strength: {result.method} ({result.criterion} similarity)", (left, 25), font,
                0.55, black, 1, cv2.LINE_AA)
    cv2.putText(img, "setting", (left + pw // 2 - 25, h - 15), font, 0.5, black, 1, cv2.LINE_AA)
    path = Path(path)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
    return path


def write_strength(pack: Any, result: StrengthResult, out_dir: str | Path | None = None) -> dict[str, Path]:
    """CSV + PNG (into ``out_dir``, default the pack) and, if a setting was chosen, the pack default."""
    out = Path(out_dir) if out_dir is not None else Path(pack.root)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": write_curve_csv(result, out / f"strength_{result.method}.csv"),
             "png": plot_curve(result, out / f"strength_{result.method}.png")}
    if result.chosen is not None:
        defaults = dict(pack.manifest.defaults)
        strength = dict(defaults.get("strength") or {})
        strength[result.method] = float(result.chosen)
        defaults["strength"] = strength
        pack.manifest.defaults = defaults
        prov = dict(pack.manifest.provenance)
        cal = dict(prov.get("calibrate_strength") or {})
        cal[result.method] = {**result.info, "chosen": result.chosen,
                              "curve": [asdict(r) for r in result.rows]}
        prov["calibrate_strength"] = cal
        pack.manifest.provenance = prov
        pack.save_manifest()
        log.info("default %s strength %.3g stored in %s", result.method, result.chosen, pack.root)
    return files
