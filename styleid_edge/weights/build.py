"""`models build`: the cached official files -> a ready model pack.

Exports the generator, e4e encoder, ArcFace IR-SE50 and latent swapper with
``styleid_edge.export.pack_writer.build_pack`` (imported lazily: torch), then
imports the official identity ranks into the pack's own format (flat S
indices for ``ranks.channels``; indices into
``channel_groups(layers, 256, include_torgb=True)`` for ``ranks.groups``) and
turns ``celeba_samples.pt`` into ``calibration_latents.npy``.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.pack import ModelPack
from ..runtime.stylespace import (
    StyleLayer,
    channel_groups,
    style_dim_total,
    torgb_channel_mask,
)
from .cache import resolve_cache_dir, sha256_file
from .download import DownloadOptions, fetch
from .errors import RankFormatError, WeightsError
from .registry import CELEBA_TERMS, OFFICIAL_FILES, WeightFile

log = logging.getLogger(__name__)

CHANNELS_FILE = "channels_rank.npy"
GROUPS_FILE = "group_256_rank.npy"
CALIBRATION_FILE = "calibration_latents.npy"
GROUP_SIZE = 256


@dataclass
class RankImport:
    kind: str  # "channels" | "groups"
    layout: str  # which channels the official file indexes
    rank: np.ndarray  # int64, in the pack's format


@dataclass
class BuildResult:
    pack: ModelPack
    sources: dict[str, Path]  # role -> cached file used
    ranks: list[RankImport] = field(default_factory=list)
    calibration_latents: int = 0  # how many W+ codes were imported


# --- rank import --------------------------------------------------------------------------
def _as_index_vector(arr: np.ndarray, source: str, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1 or a.size == 0:
        raise RankFormatError(f"{source}: expected a 1-D array of {what} indices (most identity-bearing first), "
                              f"got shape {tuple(np.shape(arr))}. Use the official {Path(source).name} file.")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise RankFormatError(f"{source}: holds non-integer values (scores?), expected {what} indices, most "
                                  f"identity-bearing first. Use the official rank file.")
    elif a.dtype.kind not in "iu":
        raise RankFormatError(f"{source}: dtype {a.dtype} is not an index array; use the official rank file.")
    return a.astype(np.int64)


def _check_permutation(a: np.ndarray, n: int, source: str, layout: str) -> None:
    if a.min() < 0 or a.max() >= n or len(np.unique(a)) != len(a):
        raise RankFormatError(f"{source}: has the length of {layout} ({n}) but its values are not a ranking of "
                              f"them (out of range or repeated); the file is damaged or of another kind. "
                              f"Delete it and run `styleid-edge models fetch {Path(source).name}`.")


def import_channel_rank(arr: np.ndarray, layers: list[StyleLayer], source: str = CHANNELS_FILE) -> RankImport:
    """An official channel rank -> flat S indices, detecting whether it indexes all of S or only non-toRGB."""
    a = _as_index_vector(arr, source, "StyleSpace channel")
    mask = torgb_channel_mask(layers)
    n_all, n_conv = style_dim_total(layers), int((~mask).sum())
    if len(a) == n_all:
        _check_permutation(a, n_all, source, "all StyleSpace channels")
        return RankImport("channels", f"all {n_all} StyleSpace channels", a)
    if len(a) == n_conv:
        _check_permutation(a, n_conv, source, "the non-toRGB StyleSpace channels")
        return RankImport("channels", f"{n_conv} non-toRGB channels, mapped to flat S",
                          np.flatnonzero(~mask).astype(np.int64)[a])
    raise RankFormatError(_misfit(source, len(a), "channels", n_all, n_conv, layers))


def import_group_rank(arr: np.ndarray, layers: list[StyleLayer], source: str = GROUPS_FILE) -> RankImport:
    """An official 256-channel group rank -> indices into channel_groups(layers, 256, include_torgb=True)."""
    a = _as_index_vector(arr, source, "channel-group")
    all_groups = channel_groups(layers, GROUP_SIZE, include_torgb=True)
    conv_groups = channel_groups(layers, GROUP_SIZE, include_torgb=False)
    if len(a) == len(all_groups):
        _check_permutation(a, len(all_groups), source, "all 256-channel groups")
        return RankImport("groups", f"all {len(all_groups)} groups of 256 channels", a)
    if len(a) == len(conv_groups):
        _check_permutation(a, len(conv_groups), source, "the non-toRGB 256-channel groups")
        where = {int(g[0]): i for i, g in enumerate(all_groups)}
        mapped = np.array([where[int(conv_groups[i][0])] for i in a], dtype=np.int64)
        return RankImport("groups", f"{len(conv_groups)} non-toRGB groups, mapped to all groups", mapped)
    raise RankFormatError(_misfit(source, len(a), "groups", len(all_groups), len(conv_groups), layers))


def _misfit(source: str, n: int, what: str, n_all: int, n_conv: int, layers: list[StyleLayer]) -> str:
    res = max(layer.resolution for layer in layers)
    return (f"{source}: {n} entries fit neither layout of this {res} px generator ({n_all} {what} with toRGB, "
            f"{n_conv} without). It was made for another generator; use the rank file that matches the "
            f"StyleGAN2 checkpoint, or remove it from the cache dir to build without official ranks.")


def load_rank_file(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RankFormatError(f"{path}: not a plain .npy array ({exc}); delete it and run "
                              f"`styleid-edge models fetch {path.name}`.") from exc


# --- calibration latents ------------------------------------------------------------------
def load_calibration_latents(path: Path, n_latent: int, style_dim: int) -> np.ndarray:
    """celeba_samples.pt (W+ codes, weights-only) -> float32 (N, n_latent, style_dim)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, ...
        raise WeightsError(f"{path}: cannot be read as weights-only tensors ({type(exc).__name__}: {exc}); "
                           f"delete it and run `styleid-edge models fetch {path.name}`.") from exc
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        obj = tensors[0] if len(tensors) == 1 else obj
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(v, torch.Tensor) and v.ndim >= 2 for v in obj):
        obj = torch.cat([v.reshape(-1, *v.shape[-2:]) for v in obj])
    if not isinstance(obj, torch.Tensor):
        raise WeightsError(f"{path}: expected a tensor of W+ latent codes, found {type(obj).__name__}.")
    w = obj.detach().float().numpy()
    if w.ndim == 2 and w.shape[1] == style_dim:  # W codes: the same row for every layer
        w = np.repeat(w[:, None], n_latent, axis=1)
    if w.ndim != 3 or w.shape[1:] != (n_latent, style_dim):
        raise WeightsError(f"{path}: latent codes of shape {tuple(obj.shape)} do not fit this pack's W+ "
                           f"({n_latent}x{style_dim}); use the file made for this generator or remove it.")
    return np.ascontiguousarray(w, dtype=np.float32)


# --- build --------------------------------------------------------------------------------
def _source_entry(role: str, path: Path) -> dict[str, str]:
    return {"role": role, "file": path.name, "sha256": sha256_file(path)}


def build_from_cache(out: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None, *,
                     accept_licence: bool = False, opts: DownloadOptions | None = None,
                     specs: list[WeightFile] | None = None) -> BuildResult:
    """Fetch what is missing, export the pack, import ranks and calibration latents; `out` appears complete."""
    try:
        from ..export.pack_writer import build_pack, check_pack_out
    except ImportError as exc:
        raise WeightsError(f"`styleid-edge models build` needs the export extra (torch, onnx): "
                           f"pip install 'styleid-edge[export]'  ({exc})") from exc
    cache = resolve_cache_dir(cache_dir)
    results = fetch(cache_dir=cache, accept_licence=accept_licence, opts=opts,
                    specs=specs if specs is not None else list(OFFICIAL_FILES))
    by_role = {spec.role: r.path for spec, r in zip(specs or OFFICIAL_FILES, results)}
    if "stylegan2" not in by_role:
        raise WeightsError("models build needs the StyleGAN2 generator (stylegan2-ffhq-config-f.pt)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_pack_out(out, replace=True)
    staging = out.parent / f".{out.name}.building"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        build_pack(staging, stylegan2=by_role["stylegan2"], e4e=by_role.get("e4e"), arcface=by_role.get("arcface"),
                   mapper=by_role.get("mapper"))
        pack = ModelPack.load(staging)
        m = pack.manifest
        result = BuildResult(pack, by_role)
        sources = m.provenance.setdefault("sources", [])
        for role, importer, name in (("channels_rank", import_channel_rank, CHANNELS_FILE),
                                     ("groups_rank", import_group_rank, GROUPS_FILE)):
            if role not in by_role:
                continue
            imp = importer(load_rank_file(by_role[role]), m.layers, str(by_role[role]))
            np.save(staging / name, imp.rank)
            m.ranks[imp.kind] = name
            sources.append(_source_entry(role, by_role[role]))
            result.ranks.append(imp)
            log.info("%s: %s -> ranks.%s", by_role[role].name, imp.layout, imp.kind)
        if "calibration" in by_role:
            lat = load_calibration_latents(by_role["calibration"], m.n_latent, m.style_dim)
            np.save(staging / CALIBRATION_FILE, lat)
            m.defaults["calibration_latents"] = CALIBRATION_FILE
            sources.append(_source_entry("calibration", by_role["calibration"]))
            result.calibration_latents = len(lat)
            log.info("%s: %d W+ codes -> %s", by_role["calibration"].name, len(lat), CALIBRATION_FILE)
        if (result.ranks or result.calibration_latents) and not any(CELEBA_TERMS in lic for lic in m.licences):
            m.licences.append(f"StyleID identity ranks / CelebA-HQ latents: {CELEBA_TERMS}")
        pack.save_manifest(written=m.ranks.values())
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
        result.pack = ModelPack.load(out)
        log.info("pack written to %s", out)
        return result
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
