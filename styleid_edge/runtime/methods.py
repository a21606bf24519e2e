"""The StyleID anonymization methods on aligned face crops (numpy between ONNX stages).

Input to every method: a batch of FFHQ-aligned BGR crops, their 5 landmarks in
crop coordinates and one pseudo-identity seed per face. Output: the new crops
plus, per face, the crop-space mask to paste with (None = the default soft
square). See DESIGN.md "The three StyleID methods".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .crops import crops_to_input, images_to_crops  # noqa: F401 - re-exported (bench, calibration, donors)
from .identity import ChannelSelector, seed_z, truncate
from .models import PackModels
from .stylespace import identity_rows

log = logging.getLogger(__name__)

GENERATIVE_METHODS = ("latent", "pixel", "swapper", "donor")
OBSCURING_METHODS = ("blur", "pixelate")
METHODS = GENERATIVE_METHODS + OBSCURING_METHODS
DEFAULT_STRENGTH = {"latent": 0.5, "pixel": 1.0, "swapper": 1.0, "donor": 1.0}


def best_method(pack, has_donors: bool = False) -> str:
    """The default method for what a pack allows (README: "Methods").

    swapper (trained network) > latent (if the pack has identity ranks) > pixel > donor bank > pixelate.
    """
    if pack is None:
        return "donor" if has_donors else "pixelate"
    files, ranks = pack.manifest.files, pack.manifest.ranks
    if "encoder" in files and "mapper" in files:
        return "swapper"
    if "encoder" in files and ranks:
        return "latent"
    if "encoder" in files:
        return "pixel"
    return "donor" if has_donors else "pixelate"


def required_roles(method: str) -> tuple[str, ...]:
    return {"latent": ("encoder", "affine", "synthesis", "mapping"),
            "pixel": ("encoder", "affine", "synthesis", "mapping"),
            "swapper": ("encoder", "mapper", "affine", "synthesis", "mapping")}.get(method, ())


@dataclass
class MethodConfig:
    method: str
    strength: float | None = None  # None: the pack's calibrated default, else DEFAULT_STRENGTH
    truncation: float = 0.7  # pseudo-identities pulled toward the average face (more natural)
    use_groups: bool = False  # latent method: rank 256-channel groups instead of channels


class StyleIDMethods:
    """Runs one generative method on batches of aligned crops."""

    def __init__(self, models: PackModels, config: MethodConfig):
        if config.method not in ("latent", "pixel", "swapper"):
            raise ValueError(f"StyleIDMethods runs latent, pixel or swapper, not {config.method!r}")
        missing = [r for r in required_roles(config.method) if not models.has(r)]
        if missing:
            raise ValueError(f"method {config.method!r} needs {missing} in the pack ({models.pack.root}); "
                             f"re-export it with those models or choose another --method")
        self.models = models
        self.config = config
        m = models.pack.manifest
        self.n_latent = m.n_latent
        self.latent_avg = models.pack.latent_avg
        defaults = m.defaults.get("strength", {}) if isinstance(m.defaults.get("strength"), dict) else {}
        self.strength = config.strength if config.strength is not None else float(
            defaults.get(config.method, DEFAULT_STRENGTH[config.method]))
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"--strength must be in (0, 1], got {self.strength}")
        self.selector = ChannelSelector(models.pack, config.use_groups) if config.method == "latent" else None
        self.encoder_size = int(models.encoder.input_shape()[-1])
        self.target_wplus: np.ndarray | None = None  # set_target(): a chosen face instead of seeds
        self._w_cache: dict[int, np.ndarray] = {}

    # -- identities -------------------------------------------------------------------------
    def set_target(self, target_crop: np.ndarray) -> None:
        """Anonymize toward a chosen face (an FFHQ-aligned BGR crop) instead of random identities."""
        self.target_wplus = self.models.encoder.get(crops_to_input(target_crop[None], self.encoder_size))[0]

    def pseudo_w(self, seeds: list[int]) -> np.ndarray:
        """W (B,512) for seeds, truncated toward latent_avg; cached per seed."""
        todo = [s for s in dict.fromkeys(seeds) if s not in self._w_cache]
        if todo:
            w = self.models.mapping.get(np.stack([seed_z(s) for s in todo]))
            for s, wi in zip(todo, truncate(w, self.latent_avg, self.config.truncation)):
                self._w_cache[s] = wi
            if len(self._w_cache) > 4096:  # long runs with many tracks: keep memory flat
                for key in list(self._w_cache)[: len(self._w_cache) - 2048]:
                    del self._w_cache[key]
        return np.stack([self._w_cache[s] for s in seeds])

    def target_wplus_for(self, seeds: list[int]) -> np.ndarray:
        if self.target_wplus is not None:
            return np.repeat(self.target_wplus[None], len(seeds), axis=0)
        w = self.pseudo_w(seeds)
        return np.repeat(w[:, None, :], self.n_latent, axis=1)

    # -- the methods ------------------------------------------------------------------------
    def encode(self, crops: np.ndarray) -> np.ndarray:
        return self.models.encoder.get(crops_to_input(crops, self.encoder_size))

    def generate(self, crops: np.ndarray, seeds: list[int]) -> np.ndarray:
        """New faces (B,3,R,R) RGB in [-1,1] for aligned crops, by the configured method."""
        return self.models.synthesis.get(self.new_styles(crops, seeds))

    def generate_crops(self, crops: np.ndarray, seeds: list[int], size: int) -> np.ndarray:
        """New faces as BGR uint8 crops (B,size,size,3). Backends that can convert on their device (the torch
        backend) copy only the small uint8 crops to the host instead of the float image."""
        return self.models.synthesis.get_crops(self.new_styles(crops, seeds), size)

    def new_styles(self, crops: np.ndarray, seeds: list[int]) -> np.ndarray:
        """The StyleSpace vectors (B,S) of the new faces, by the configured method."""
        w_src = self.encode(crops)
        w_tar = self.target_wplus_for(seeds)
        method = self.config.method
        if method == "latent":
            styles = self.models.affine.get(np.concatenate([w_src, w_tar]))
            s_src, s_tar = styles[: len(crops)], styles[len(crops):]
            idx = self.selector.channels(self.strength)
            s_src[:, idx] = s_tar[:, idx]
            return s_src
        if method == "pixel":
            rows = identity_rows(self.n_latent)
            w = w_src.copy()
            w[:, rows] = w_tar[:, rows]
        else:  # swapper: the trained network mixes source and target W+
            w = self.models.mapper.get(w_src, w_tar)
        # strength a in (0, 1]: w = w_src + a (w_method - w_src); 1 = the method as published
        # (the same knob `styleid-edge calibrate strength` sweeps for these two methods)
        if self.strength != 1.0:
            w = w_src + np.float32(self.strength) * (w - w_src)
        return self.models.affine.get(w)
