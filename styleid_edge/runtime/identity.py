"""Pseudo-identities and identity-channel selection for the StyleID methods.

A pseudo-identity is a W vector from ``mapping(z)`` with ``z`` drawn from a
seed, truncated toward ``latent_avg``; the runtime derives one seed per track
so a person keeps one fake face for the whole video.

Identity channels: the latent method swaps the top-ranked StyleSpace channels.
Where they come from, in order:
1. the pack's single-channel rank (``ranks.channels``: flat S indices, most
   identity-bearing first), written by ``styleid-edge calibrate ranks`` or
   imported from StyleID's ``channels_rank.npy``;
2. the pack's 256-channel group rank (``ranks.groups``) when ``groups=True`` or
   when only groups exist;
3. with no ranks at all, a structural prior: the non-toRGB channels of the
   layers fed by the identity rows of W+ (rows 5-9 at 18 rows, scaled), in
   generator order, then the remaining non-toRGB channels of the coarse and
   middle layers. The runtime says so once; calibrate the pack to do better.
"""

from __future__ import annotations

import logging

import numpy as np

from .pack import ModelPack
from .stylespace import channel_groups, identity_rows, layer_offsets

log = logging.getLogger(__name__)


_MASK64 = (1 << 64) - 1


def _splitmix64(seed: int, n: int) -> np.ndarray:
    """``n`` outputs of the SplitMix64 generator started at ``seed`` (uint64)."""
    with np.errstate(over="ignore"):
        state = np.uint64(seed & _MASK64) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def seed_z(seed: int, dim: int = 512) -> np.ndarray:
    """The latent z of a seed: SplitMix64 + Box-Muller in float64, then float32.

    The same derivation as the native runtime's ``styleid_edge_seed_z`` (native/include/styleid_edge.h),
    so one seed is one fake face in the Python and the C++ runtimes, on every platform.
    """
    pairs = (dim + 1) // 2
    bits = _splitmix64(seed, 2 * pairs) >> np.uint64(11)  # 53 random bits each
    u1 = (bits[0::2].astype(np.float64) + 1.0) * 2.0 ** -53  # (0, 1]: log() is finite
    u2 = bits[1::2].astype(np.float64) * 2.0 ** -53
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.empty(2 * pairs, np.float64)
    z[0::2] = r * np.cos(2.0 * np.pi * u2)
    z[1::2] = r * np.sin(2.0 * np.pi * u2)
    return z[:dim].astype(np.float32)


def truncate(w: np.ndarray, latent_avg: np.ndarray, psi: float) -> np.ndarray:
    return latent_avg + psi * (w - latent_avg)


def prior_channel_rank(pack: ModelPack) -> np.ndarray:
    """The structural fallback rank (see module docstring): flat S indices, no toRGB."""
    m = pack.manifest
    layers = m.layers
    offsets = layer_offsets(layers)
    id_rows = set(identity_rows(m.n_latent))
    first, rest = [], []
    for layer, start in zip(layers, offsets[:-1]):
        if layer.is_torgb:
            continue
        idx = np.arange(start, start + layer.size)
        (first if layer.w_index in id_rows else rest).append(idx)
    return np.concatenate(first + rest).astype(np.int64)


class ChannelSelector:
    """Which S channels the latent method takes from the target, for a strength in (0, 1]."""

    def __init__(self, pack: ModelPack, use_groups: bool = False):
        m = pack.manifest
        self.layers = m.layers
        self.source = "pack channel rank"
        channels = pack.load_rank("channels")
        groups = pack.load_rank("groups")
        self.group_index = channel_groups(self.layers, 256, include_torgb=True)
        n_s = m.n_styles
        if use_groups and groups is None:
            log.warning("pack has no group rank; using the channel rank instead")
        if (use_groups or channels is None) and groups is not None:
            groups = np.asarray(groups, dtype=np.int64).ravel()
            if groups.min() < 0 or groups.max() >= len(self.group_index):
                raise ValueError(f"{pack.root}: group rank indexes {groups.max() + 1} groups, "
                                 f"the pack has {len(self.group_index)}")
            self.rank = np.concatenate([self.group_index[g] for g in groups])
            self.source = "pack group rank"
        elif channels is not None:
            self.rank = np.asarray(channels, dtype=np.int64).ravel()
            if self.rank.min() < 0 or self.rank.max() >= n_s:
                raise ValueError(f"{pack.root}: channel rank indexes past S ({n_s} channels)")
        else:
            self.rank = prior_channel_rank(pack)
            self.source = "structural prior (pack has no identity ranks; run `styleid-edge calibrate ranks`)"
            log.warning("latent method: %s", self.source)

    def channels(self, strength: float) -> np.ndarray:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        k = max(1, int(round(strength * len(self.rank))))
        return self.rank[:k]
