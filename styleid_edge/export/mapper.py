"""StyleID's latent swapper (``mapper.pt``, ``LevelsJoinMapper``): (w_src, w_tar) -> w_anon.

What the original code does (minha12/StyleID at its last commit, 2023-03-12,
``mapper/latent_mappers.py`` and ``mapper/styleid_mapper.py``; read, not copied):

* ``LevelsJoinMapper(opts).forward(x, y, lock_tar_id=True)`` splits both W+
  codes (B, 18, 512) into rows 0-4 (coarse), 5-7 (identity), 8-11 (medium),
  12-17 (fine). ``course_mapping`` (sic), ``medium_mapping`` and
  ``fine_mapping`` are each a ``Mapper``: ``mapping`` = Sequential(PixelNorm,
  EqualLinear(1024, 512, lr_mul=0.01, fused_lrelu), EqualLinear(512, 512,
  lr_mul=0.01, fused_lrelu)), applied to ``cat([x_rows, y_rows], dim=2)``,
  followed by ``torch.sigmoid``. The identity rows are ``torch.ones_like``.
  The result, concatenated over rows, is (B, 18, 512) in [0, 1]. (With
  ``lock_tar_id=False`` it would be 5 + 7 + 6 rows with no identity block;
  inference uses the default, True.)
* PixelNorm is rosinality's ``x * rsqrt(mean(x**2, dim=1) + 1e-8)``: on these
  (B, rows, 1024) inputs dim 1 is the ROW axis, so each feature is normalised
  across the rows of its level (5, 4 or 6 rows), not across features. The
  trained weights depend on that; we keep it (``PixelNorm(dim=1)``).
* rosinality's fused_leaky_relu, as patched in StyleID, adds the bias on the
  LAST dim for 3-D inputs (``bias.view(1, 1, C)``), i.e. per feature.
* The checkpoint holds ``{"state_dict": {"mapper.<level>_mapping.mapping.{1,2}.{weight,bias}"}}``
  and is loaded with ``get_keys(ckpt, 'mapper')``, strict.
* What the repository does NOT show: how the output is consumed. The wrapper
  ``StyleIDMapper.forward`` calls ``self.mapper(x)`` with ONE argument (it
  cannot run a LevelsJoinMapper) and feeds the result to the generator as a
  latent; the mapper's real use is in ``StyleID.ipynb``, whose blob is missing
  from the stored snapshot, and the training code is not in the repository.
  The output cannot be a latent itself: it is a sigmoid in [0, 1] with whole
  rows of exact ones, nothing like a W+ code. It is a per-element mixing
  mask, and "lock_tar_id" (identity rows = 1) means 1 selects the *target*:
  ``w_anon = m * w_tar + (1 - m) * w_src``, identity rows taken from the
  target exactly. This is the reading in ``shared/reference/styleid-method.md``
  and the one implemented here. Which argument is ``x`` (source or target) is
  also only in the notebook; the training options list ``--latents_src_path``
  before ``--latents_tar_path`` (and a W-space L2 loss against
  ``--latents_truth_path``, which fits a mixed W+), so we pass
  ``x = w_src, y = w_tar`` and keep ``src_first=False`` as a switch should
  real weights show the other order.

For n_latent other than 18 (tiny test generators) the four blocks are placed
proportionally: boundaries ``round(n * b / 18)`` for b = 5, 8, 12, nudged so
that every block has at least one row (see :func:`level_bounds`). Real
weights are only meaningful at 18 rows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NoReturn

import torch
from torch import nn

from .checkpoints import (CheckpointError, describe_checkpoint, load_checkpoint, load_state_strict, sha256_file,
                          strip_prefix)
from .layers import EqualLinear, PixelNorm

log = logging.getLogger(__name__)

MAPPER_EXPECTED = "a StyleID latent-swapper checkpoint ({'state_dict': {'mapper.*'}}, LevelsJoinMapper)"
REAL_BOUNDS = (5, 8, 12)   # rows [0,5) coarse, [5,8) identity, [8,12) medium, [12,18) fine
REAL_N_LATENT = 18
LEVELS = ("course", "medium", "fine")  # attribute prefixes as in the real file ("course" sic)


def level_bounds(n_latent: int) -> tuple[int, int, int]:
    """Row boundaries (coarse_end, identity_end, medium_end) for ``n_latent`` rows.

    18 -> (5, 8, 12) exactly (StyleID). Otherwise each real boundary is scaled by
    n/18 and rounded half up, then nudged so all four blocks are non-empty,
    e.g. 8 -> (2, 4, 5), 10 -> (3, 4, 7), 14 -> (4, 6, 9).
    """
    if n_latent < 4:
        raise ValueError(f"the latent swapper needs at least 4 W+ rows (one per block), got {n_latent}")
    if n_latent == REAL_N_LATENT:
        return REAL_BOUNDS
    b = [int(math.floor(n_latent * r / REAL_N_LATENT + 0.5)) for r in REAL_BOUNDS]
    b[0] = min(max(b[0], 1), n_latent - 3)
    b[1] = min(max(b[1], b[0] + 1), n_latent - 2)
    b[2] = min(max(b[2], b[1] + 1), n_latent - 1)
    return b[0], b[1], b[2]


@dataclass(frozen=True)
class MapperConfig:
    n_latent: int = REAL_N_LATENT
    latent_dim: int = 512

    @property
    def bounds(self) -> tuple[int, int, int]:
        return level_bounds(self.n_latent)


class LevelMapping(nn.Module):
    """StyleID's ``Mapper``: PixelNorm(dim=1) -> 2 x EqualLinear(lr_mul 0.01, fused lrelu) -> sigmoid."""

    def __init__(self, latent_dim: int = 512) -> None:
        super().__init__()
        self.mapping = nn.Sequential(
            PixelNorm(dim=1),  # dim 1 = the row axis of (B, rows, 2*latent_dim): the real weights need this
            EqualLinear(2 * latent_dim, latent_dim, lr_mul=0.01, activation="fused_lrelu"),
            EqualLinear(latent_dim, latent_dim, lr_mul=0.01, activation="fused_lrelu"),
        )

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mapping(xy))


class LevelsJoinMapper(nn.Module):
    """(x, y) (B, n, D) each -> mixing mask (B, n, D) in [0, 1], identity rows exactly 1."""

    def __init__(self, config: MapperConfig = MapperConfig()) -> None:
        super().__init__()
        self.config = config
        self.course_mapping = LevelMapping(config.latent_dim)
        self.medium_mapping = LevelMapping(config.latent_dim)
        self.fine_mapping = LevelMapping(config.latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c, i, m = self.config.bounds
        coarse = self.course_mapping(torch.cat([x[:, :c], y[:, :c]], dim=2))
        identity = torch.ones_like(x[:, c:i])
        medium = self.medium_mapping(torch.cat([x[:, i:m], y[:, i:m]], dim=2))
        fine = self.fine_mapping(torch.cat([x[:, m:], y[:, m:]], dim=2))
        return torch.cat([coarse, identity, medium, fine], dim=1)


class MapperModule(nn.Module):
    """Pack latent swapper: ``w_src``, ``w_tar`` (B, n_latent, D) -> ``w_anon`` (B, n_latent, D).

    ``w_anon = m * w_tar + (1 - m) * w_src`` with ``m = mapper(w_src, w_tar)``
    (``mapper(w_tar, w_src)`` when ``src_first`` is False). State dict keys are
    the real file's (``mapper.course_mapping.mapping.1.weight``, ...).
    """

    def __init__(self, config: MapperConfig = MapperConfig(), *, src_first: bool = True) -> None:
        super().__init__()
        self.config = config
        self.src_first = src_first
        self.mapper = LevelsJoinMapper(config)

    def mask(self, w_src: torch.Tensor, w_tar: torch.Tensor) -> torch.Tensor:
        n, d = self.config.n_latent, self.config.latent_dim
        for name, w in (("w_src", w_src), ("w_tar", w_tar)):
            if w.dim() != 3 or w.shape[1] != n or w.shape[2] != d:
                raise ValueError(f"latent swapper expects {name} of shape (B, {n}, {d}), got {tuple(w.shape)}")
        return self.mapper(w_src, w_tar) if self.src_first else self.mapper(w_tar, w_src)

    def forward(self, w_src: torch.Tensor, w_tar: torch.Tensor) -> torch.Tensor:
        m = self.mask(w_src, w_tar)
        return m * w_tar + (1.0 - m) * w_src


def _raise_key_mismatch(state: Mapping[str, Any], obj: Any, source: str, why: str) -> NoReturn:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    load_state_strict(MapperModule(MapperConfig()), tensors, source=source, expected=MAPPER_EXPECTED, whole=obj)
    raise CheckpointError(f"{source}: {why}; the file looks like {describe_checkpoint(obj)}. "
                          "Pass StyleID's mapper.pt for the latent swapper.")


def mapper_from_checkpoint(obj: Any, *, source: str = "mapper checkpoint", n_latent: int = REAL_N_LATENT,
                           src_first: bool = True) -> tuple[MapperModule, dict[str, Any]]:
    """Build :class:`MapperModule` from an already loaded object. See :func:`load_mapper`."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state: Mapping[str, Any] = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise CheckpointError(f"{source}: is not {MAPPER_EXPECTED}; the file looks like {describe_checkpoint(obj)}. "
                              "Pass StyleID's mapper.pt for the latent swapper.")
    inner = strip_prefix(state, "mapper.")
    weight = inner.get("course_mapping.mapping.2.weight")
    if not inner or not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        _raise_key_mismatch(state, obj, source, "it has no 'mapper.course_mapping.*' tensors")
    config = MapperConfig(n_latent=n_latent, latent_dim=int(weight.shape[0]))
    if n_latent != REAL_N_LATENT:
        log.warning("%s: running the latent swapper at %d rows (trained at %d): blocks %s", source, n_latent,
                    REAL_N_LATENT, config.bounds)
    module = MapperModule(config, src_first=src_first)
    load_state_strict(module, {f"mapper.{k}": v for k, v in inner.items()}, source=source,
                      expected=MAPPER_EXPECTED, whole=obj)
    module.eval()
    opts = obj.get("opts") if isinstance(obj, Mapping) and isinstance(obj.get("opts"), Mapping) else None
    info = {
        "kind": "styleid_levels_join_mapper",
        "source": source,
        "n_latent": n_latent,
        "latent_dim": config.latent_dim,
        "bounds": list(config.bounds),
        "src_first": src_first,
        "formula": "w_anon = m * w_tar + (1 - m) * w_src",
        "opts": dict(opts) if opts else None,
    }
    return module, info


def load_mapper(path: str | Path, *, n_latent: int = REAL_N_LATENT, src_first: bool = True
                ) -> tuple[MapperModule, dict[str, Any]]:
    """Load StyleID's ``mapper.pt`` (weights only, strict) as an eval-mode :class:`MapperModule`.

    Returns ``(module, info)``; info has n_latent, latent_dim, the row bounds and sha256.
    """
    path = Path(path)
    module, info = mapper_from_checkpoint(load_checkpoint(path), source=str(path), n_latent=n_latent,
                                          src_first=src_first)
    info["sha256"] = sha256_file(path)
    return module, info


@torch.no_grad()
def random_mapper(config: MapperConfig | None = None, *, seed: int = 0, bias_scale: float = 0.3) -> MapperModule:
    """A latent swapper with random weights and non-zero biases, in eval mode (masks spread over (0, 1))."""
    config = config or MapperConfig()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = MapperModule(config)
    for layer in module.modules():
        if isinstance(layer, EqualLinear):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / layer.lr_mul)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * bias_scale / layer.lr_mul)
    return module.eval()


def save_mapper_checkpoint(module: MapperModule, path: str | Path, opts: Mapping[str, Any] | None = None) -> Path:
    """Write ``module`` in the real layout ``{"state_dict": {"mapper.*": ...}}`` (plus ``opts`` if given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj: dict[str, Any] = {"state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()}}
    if opts:
        obj["opts"] = dict(opts)
    torch.save(obj, path)
    return path
