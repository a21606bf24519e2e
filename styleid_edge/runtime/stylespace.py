"""StyleSpace (S) layout of a StyleGAN2 generator in the rosinality layout.

S is the flat concatenation of every modulation output (the raw affine output
``modulation(w)``, before the conv's 1/sqrt(fan_in) scale) in generator order:
conv1 at 4 px, toRGB1, then per resolution 8..R: upsampling conv, conv, toRGB.
At 1024 px with channel multiplier 2 that is 26 layers and 9088 channels, 6048
of them outside toRGB. Torch-free: both the export and the runtime use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StyleLayer:
    """One modulated convolution's slice of S."""

    name: str  # module path in the rosinality generator, e.g. "convs.3" or "to_rgbs.1"
    size: int  # channels = the conv's input channels
    w_index: int  # which W+ row feeds its affine
    is_torgb: bool
    resolution: int


def generator_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Feature channels per resolution (rosinality's table)."""
    cm = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm,
            256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}


def check_resolution(resolution: int) -> int:
    """Return log2(resolution); raise for sizes the architecture cannot have."""
    log_size = int(round(math.log2(resolution))) if resolution > 0 else 0
    if resolution < 8 or 2**log_size != resolution or resolution > 1024:
        raise ValueError(f"resolution must be a power of two from 8 to 1024, got {resolution}")
    return log_size


def n_latent_for(resolution: int) -> int:
    """Number of W+ rows (18 at 1024 px, 14 at 256 px)."""
    return check_resolution(resolution) * 2 - 2


def stylespace_layout(resolution: int, channel_multiplier: int = 2) -> list[StyleLayer]:
    """All S layers of a generator, in generator order."""
    log_size = check_resolution(resolution)
    ch = generator_channels(channel_multiplier)
    layers = [StyleLayer("conv1", ch[4], 0, False, 4), StyleLayer("to_rgb1", ch[4], 1, True, 4)]
    for k, log_res in enumerate(range(3, log_size + 1)):
        res = 2**log_res
        layers.append(StyleLayer(f"convs.{2 * k}", ch[res // 2], 1 + 2 * k, False, res))
        layers.append(StyleLayer(f"convs.{2 * k + 1}", ch[res], 2 + 2 * k, False, res))
        layers.append(StyleLayer(f"to_rgbs.{k}", ch[res], 3 + 2 * k, True, res))
    return layers


def style_dim_total(layers: list[StyleLayer]) -> int:
    return sum(layer.size for layer in layers)


def layer_offsets(layers: list[StyleLayer]) -> np.ndarray:
    """Start offset of each layer in flat S (length len(layers) + 1)."""
    return np.concatenate([[0], np.cumsum([layer.size for layer in layers])]).astype(np.int64)


def torgb_channel_mask(layers: list[StyleLayer]) -> np.ndarray:
    """Boolean mask over flat S: True for channels of toRGB layers."""
    return np.concatenate([np.full(layer.size, layer.is_torgb) for layer in layers])


def channel_groups(layers: list[StyleLayer], group_size: int = 256,
                   include_torgb: bool = False) -> list[np.ndarray]:
    """Split S into groups of ``group_size`` consecutive channels of one layer.

    Layers smaller than the group size form one group each. Returns the flat S
    indices of every group, in generator order.
    """
    offsets = layer_offsets(layers)
    groups: list[np.ndarray] = []
    for layer, start in zip(layers, offsets[:-1]):
        if layer.is_torgb and not include_torgb:
            continue
        for g in range(0, layer.size, group_size):
            groups.append(np.arange(start + g, start + min(g + group_size, layer.size), dtype=np.int64))
    return groups


def identity_rows(n_latent: int) -> list[int]:
    """W+ rows that carry identity for the pixel method: 5-9 at 18 rows, scaled otherwise."""
    lo = int(round(5 * n_latent / 18))
    hi = max(lo, int(round(9 * n_latent / 18)))
    return list(range(lo, hi + 1))
