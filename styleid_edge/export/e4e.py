"""encoder4editing (e4e): aligned face image -> W+ for a StyleGAN2 generator.

Architecture (as in omertov/encoder4editing, ``Encoder4Editing`` over the pSp
framework), module names matching the real checkpoint's ``encoder.*`` keys:

* ``input_layer`` + ``body``: an IR-SE50 body (:mod:`.irse`); features are
  tapped after the last unit of stages 2, 3 and 4 (``body`` indices 6, 20, 23
  for IR-SE50): ``c1`` (128 ch, 1/4 of the input), ``c2`` (256 ch, 1/8),
  ``c3`` (512 ch, 1/16).
* ``styles.<i>``: ``n_styles`` GradualStyleBlocks, each a stack of stride-2
  3x3 convs with ``nn.LeakyReLU()`` (slope 0.01) down to 1x1, then
  ``linear`` (EqualLinear, lr_mul 1, no activation). Blocks 0-2 read ``c3``
  (4 convs for a 256 px input), blocks 3-6 read ``p2`` (5 convs), blocks
  7.. read ``p1`` (6 convs).
* FPN: ``p2 = up(c3) + latlayer1(c2)``, ``p1 = up(p2) + latlayer2(c1)`` with
  bilinear, ``align_corners=True`` upsampling to the lateral's size.
* Output: ``w0 = styles[0](c3)`` repeated over all rows, and ``styles[i]``
  adds a delta to row i for i >= 1 (the "Inference" progressive stage, where
  every delta is on).

``n_styles = 2 * log2(stylegan_size) - 2`` (18 for 1024 px). The pack's
encoder adds ``latent_avg`` (the checkpoint's, shape (n_styles, 512)) so its
output is directly the generator's W+, as pSp does with
``start_from_latent_avg``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import (CheckpointError, describe_checkpoint, load_checkpoint, load_state_strict, sha256_file,
                          strip_prefix)
from .irse import IRSE50, IRSEConfig, infer_irse_config, make_body, make_input_layer, randomize_
from .layers import EqualLinear

log = logging.getLogger(__name__)

E4E_EXPECTED = "an encoder4editing checkpoint ({'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg', 'opts'})"
COARSE_IND = 3   # styles [0, 3) read c3
MIDDLE_IND = 7   # styles [3, 7) read p2, [7, n) read p1


def n_styles_for(stylegan_size: int) -> int:
    """Number of W+ rows for a generator of ``stylegan_size`` px (18 for 1024)."""
    log_size = int(round(math.log2(stylegan_size)))
    if 2 ** log_size != stylegan_size or stylegan_size < 4:
        raise ValueError(f"stylegan_size must be a power of two >= 4, got {stylegan_size}")
    return 2 * log_size - 2


@dataclass(frozen=True)
class E4EConfig:
    """Shape of an e4e encoder. Defaults: the real 1024 px FFHQ encoder (256 px input)."""

    n_styles: int = 18
    input_size: int = 256
    style_dim: int = 512
    body: IRSEConfig = field(default_factory=lambda: IRSE50)

    def __post_init__(self) -> None:
        if len(self.body.stage_units) < 3:
            raise ValueError("E4EConfig: the FPN needs a body with at least 3 stages")
        if self.n_styles < 1:
            raise ValueError(f"E4EConfig: n_styles must be >= 1, got {self.n_styles}")
        coarse = self.input_size // self.body.downsample
        if coarse < 2 or coarse * self.body.downsample != self.input_size or coarse & (coarse - 1):
            raise ValueError(f"E4EConfig: input_size {self.input_size} must be a power of two and at least "
                             f"{2 * self.body.downsample} for a body that downsamples by {self.body.downsample}")

    @property
    def stylegan_size(self) -> int | None:
        """Generator resolution this encoder targets (None when n_styles is odd, i.e. not a real config)."""
        return 2 ** ((self.n_styles + 2) // 2) if self.n_styles % 2 == 0 else None

    def block_spatial(self, i: int) -> int:
        """Spatial size of the feature map that style block ``i`` reads."""
        coarse = self.input_size // self.body.downsample
        return coarse if i < COARSE_IND else coarse * 2 if i < MIDDLE_IND else coarse * 4

    @classmethod
    def tiny(cls, stylegan_size: int = 32, input_size: int = 64, style_dim: int = 64) -> "E4EConfig":
        """A small encoder with the real structure (4 stages, conv and max-pool shortcuts) for tests."""
        body = IRSEConfig(stage_channels=(16, 24, 32, 48), stage_units=(1, 2, 2, 1), se_reduction=8)
        return cls(n_styles=n_styles_for(stylegan_size), input_size=input_size, style_dim=style_dim, body=body)


class GradualStyleBlock(nn.Module):
    """Stride-2 convs + LeakyReLU(0.01) from ``spatial`` down to 1x1, then EqualLinear."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int) -> None:
        super().__init__()
        num_pools = int(round(math.log2(spatial)))
        if num_pools < 1 or 2 ** num_pools != spatial:
            raise ValueError(f"GradualStyleBlock: spatial must be a power of two >= 2, got {spatial}")
        self.out_channels = out_channels
        layers: list[nn.Module] = []
        for k in range(num_pools):
            layers += [nn.Conv2d(in_channels if k == 0 else out_channels, out_channels, 3, stride=2, padding=1),
                       nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def _upsample_add(x: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class Encoder4Editing(nn.Module):
    """The e4e encoder proper: image -> W+ offsets (B, n_styles, style_dim), no latent_avg."""

    def __init__(self, config: E4EConfig = E4EConfig()) -> None:
        super().__init__()
        self.config = config
        body = config.body
        self.input_layer = make_input_layer(body)
        self.body = make_body(body)
        top = body.out_channels
        self.styles = nn.ModuleList(
            GradualStyleBlock(top, config.style_dim, config.block_spatial(i)) for i in range(config.n_styles))
        self.latlayer1 = nn.Conv2d(body.stage_channels[-2], top, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(body.stage_channels[-3], top, kernel_size=1, stride=1, padding=0)
        ends = body.stage_ends()
        self._taps = (ends[-3], ends[-2], ends[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x)
        c1 = c2 = c3 = x
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == self._taps[0]:
                c1 = x
            elif i == self._taps[1]:
                c2 = x
            elif i == self._taps[2]:
                c3 = x
        w0 = self.styles[0](c3)
        rows = [w0]
        features = c3
        p2 = c3
        for i in range(1, self.config.n_styles):
            if i == COARSE_IND:
                p2 = _upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == MIDDLE_IND:
                features = _upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](features))
        return torch.stack(rows, dim=1)


class E4EEncoderModule(nn.Module):
    """Pack encoder: ``image`` (B,3,H,W) RGB in [-1,1] -> ``w_plus`` (B,n_latent,style_dim), latent_avg added.

    Its state dict is ``encoder.*`` (the checkpoint's keys) plus the ``latent_avg`` buffer.
    BatchNorm runs on its running statistics: call ``.eval()`` (the loaders do).
    """

    def __init__(self, config: E4EConfig = E4EConfig(), latent_avg: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder4Editing(config)
        avg = torch.zeros(config.n_styles, config.style_dim)
        if latent_avg is not None:
            avg = _latent_avg_rows(latent_avg, config.n_styles, config.style_dim, source="latent_avg argument")
        self.register_buffer("latent_avg", avg)

    @property
    def n_latent(self) -> int:
        return self.config.n_styles

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[-2] != size or image.shape[-1] != size:
            raise ValueError(f"e4e expects an image batch of shape (B, 3, {size}, {size}) in [-1, 1], "
                             f"got {tuple(image.shape)}; align and resize the face first")
        return self.encoder(image) + self.latent_avg


def _latent_avg_rows(avg: torch.Tensor, n_styles: int, dim: int, *, source: str) -> torch.Tensor:
    avg = avg.detach().float()
    if avg.shape == (dim,) or avg.shape == (1, dim):
        return avg.reshape(1, dim).repeat(n_styles, 1)
    if avg.shape == (n_styles, dim):
        return avg.clone()
    raise CheckpointError(f"{source}: latent_avg has shape {tuple(avg.shape)}, expected ({n_styles}, {dim}) or "
                          f"({dim},) for an encoder with {n_styles} styles; the encoder and latent_avg do not match")


def infer_e4e_config(encoder_state: Mapping[str, torch.Tensor]) -> E4EConfig:
    """Read an :class:`E4EConfig` back from ``encoder.*`` keys (prefix stripped).

    Raises ``KeyError`` when the keys are not an e4e encoder.
    """
    body = infer_irse_config(encoder_state)
    n_styles = 0
    while f"styles.{n_styles}.linear.weight" in encoder_state:
        n_styles += 1
    if n_styles == 0:
        raise KeyError("no styles.<i>.linear.weight keys")
    style_dim = int(encoder_state["styles.0.linear.weight"].shape[0])
    n_convs = sum(1 for k in encoder_state if k.startswith("styles.0.convs.") and k.endswith(".weight"))
    if n_convs < 1:
        raise KeyError("no styles.0.convs.<j>.weight keys")
    return E4EConfig(n_styles=n_styles, input_size=(2 ** n_convs) * body.downsample, style_dim=style_dim, body=body)


def _raise_key_mismatch(state: Mapping[str, Any], obj: Any, source: str, why: str) -> NoReturn:
    """Raise a CheckpointError listing the keys ``state`` lacks / has extra against the real 1024 px encoder."""
    with torch.device("meta"):  # shapes only, no memory, no init cost
        reference = Encoder4Editing(E4EConfig())
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    load_state_strict(reference, tensors, source=source, expected=E4E_EXPECTED, whole=obj)
    raise CheckpointError(f"{source}: {why}; the file looks like {describe_checkpoint(obj)}. "
                          "Pass an encoder4editing checkpoint (e.g. e4e_ffhq_encode.pt).")


def e4e_from_checkpoint(obj: Any, *, source: str = "e4e checkpoint") -> tuple[E4EEncoderModule, dict[str, Any]]:
    """Build the pack encoder from an already loaded e4e checkpoint object. See :func:`load_e4e`."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state: Mapping[str, Any] = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a plain state dict: compared below so the error lists what is missing
    else:
        raise CheckpointError(f"{source}: is not {E4E_EXPECTED}; the file looks like {describe_checkpoint(obj)}. "
                              "Pass the e4e file (e.g. e4e_ffhq_encode.pt) for the encoder.")
    opts = dict(obj.get("opts") or {}) if isinstance(obj.get("opts"), Mapping) else {}
    encoder_type = opts.get("encoder_type", "Encoder4Editing")
    if encoder_type != "Encoder4Editing":
        raise CheckpointError(f"{source}: opts.encoder_type is {encoder_type!r}; only 'Encoder4Editing' (e4e) "
                              "checkpoints are supported (pSp's GradualStyleEncoder has the same keys but a "
                              "different forward pass). Use an e4e checkpoint.")
    enc = strip_prefix(state, "encoder.")
    if not enc:
        _raise_key_mismatch(state, obj, source, "it has no 'encoder.*' tensors")
    try:
        config = infer_e4e_config(enc)
    except (KeyError, ValueError) as exc:
        _raise_key_mismatch(enc, obj, source, f"cannot read the encoder shape from its keys ({exc})")
    with torch.device("meta"):  # every tensor is overwritten by the strict load: skip the (slow) random init
        module = E4EEncoderModule(config)
    module = module.to_empty(device="cpu")
    module.latent_avg.zero_()
    load_state_strict(module.encoder, enc, source=source, expected=E4E_EXPECTED, whole=obj)

    stylegan_size = opts.get("stylegan_size")
    if stylegan_size is not None and n_styles_for(int(stylegan_size)) != config.n_styles:
        log.warning("%s: opts.stylegan_size=%s implies %d styles but the weights have %d; using the weights",
                    source, stylegan_size, n_styles_for(int(stylegan_size)), config.n_styles)
    start_from_avg = bool(opts.get("start_from_latent_avg", True))
    raw_avg = obj.get("latent_avg")
    latent_avg = None
    if raw_avg is not None:
        if not isinstance(raw_avg, torch.Tensor):
            raise CheckpointError(f"{source}: latent_avg is a {type(raw_avg).__name__}, expected a tensor")
        latent_avg = _latent_avg_rows(raw_avg, config.n_styles, config.style_dim, source=source)
    if start_from_avg:
        if latent_avg is None:
            raise CheckpointError(f"{source}: opts.start_from_latent_avg is true but the file has no 'latent_avg'. "
                                  "Re-save the checkpoint with latent_avg (e4e computes it as the mean of 10000 "
                                  "mapped z), or set opts.start_from_latent_avg to false if it was trained without.")
        with torch.no_grad():
            module.latent_avg.copy_(latent_avg)
    else:
        log.info("%s: opts.start_from_latent_avg is false; the encoder output is used as W+ as is", source)
    module.eval()

    decoder_state = strip_prefix(state, "decoder.") or None
    if decoder_state is None:
        log.warning("%s: no 'decoder.*' tensors; the generator must come from a separate StyleGAN2 file", source)
    info: dict[str, Any] = {
        "kind": "e4e",
        "source": source,
        "n_latent": config.n_styles,
        "style_dim": config.style_dim,
        "input_size": config.input_size,
        "stylegan_size": int(stylegan_size) if stylegan_size is not None else config.stylegan_size,
        "body": {"stage_channels": list(config.body.stage_channels), "stage_units": list(config.body.stage_units)},
        "latent_avg": latent_avg,
        "latent_avg_added": start_from_avg,
        "opts": opts,
        "decoder_state": decoder_state,
    }
    log.info("%s: e4e encoder, %d styles x %d, input %d px, body %s", source, config.n_styles, config.style_dim,
             config.input_size, config.body.stage_units)
    return module, info


def load_e4e(path: str | Path) -> tuple[E4EEncoderModule, dict[str, Any]]:
    """Load an encoder4editing checkpoint (weights only, strict) into the pack encoder.

    Returns ``(module, info)``; ``module`` is in eval mode with ``latent_avg`` already
    added to its output. ``info`` holds ``n_latent``, ``style_dim``, ``input_size``,
    ``stylegan_size``, ``latent_avg`` ((n_latent, style_dim) or None), ``opts``,
    ``sha256``, and ``decoder_state``: the ``decoder.*`` tensors (a rosinality
    ``g_ema`` state dict) or None, for building the generator from the same file.
    """
    path = Path(path)
    module, info = e4e_from_checkpoint(load_checkpoint(path), source=str(path))
    info["sha256"] = sha256_file(path)
    return module, info


@torch.no_grad()
def random_e4e(config: E4EConfig | None = None, *, seed: int = 0, latent_avg_scale: float = 0.5) -> E4EEncoderModule:
    """An e4e pack encoder with random (but well-scaled, non-trivial) weights, in eval mode.

    BatchNorm statistics, PReLU slopes, EqualLinear biases and latent_avg are all
    non-zero so that every parameter influences the output.
    """
    config = config or E4EConfig()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = E4EEncoderModule(config)
    randomize_(module, gen)
    for block in module.encoder.styles:
        for conv in block.convs:
            if isinstance(conv, nn.Conv2d):  # He init for the LeakyReLU stack, so deltas are not vanishingly small
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
        block.linear.bias.copy_(torch.randn(block.linear.bias.shape, generator=gen) * 0.1)
    module.latent_avg.copy_(torch.randn(module.latent_avg.shape, generator=gen) * latent_avg_scale)
    return module.eval()


def save_e4e_checkpoint(module: E4EEncoderModule, path: str | Path,
                        decoder_state: Mapping[str, torch.Tensor] | None = None,
                        opts: Mapping[str, Any] | None = None) -> Path:
    """Write ``module`` in the real e4e layout: ``{"state_dict": {encoder.*, decoder.*}, "latent_avg", "opts"}``.

    ``opts`` defaults to what e4e stores for this shape (encoder_type, stylegan_size,
    input_nc, start_from_latent_avg, output_size).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v.detach().clone() for k, v in module.encoder.state_dict().items()}
    if decoder_state:
        state.update({f"decoder.{k}": v.detach().clone() for k, v in decoder_state.items()})
    size = module.config.stylegan_size
    default_opts: dict[str, Any] = {"encoder_type": "Encoder4Editing", "stylegan_size": size, "input_nc": 3,
                                    "start_from_latent_avg": True, "output_size": size}
    default_opts.update(opts or {})
    torch.save({"state_dict": state, "latent_avg": module.latent_avg.detach().clone(), "opts": default_opts}, path)
    log.info("wrote e4e checkpoint %s (%d encoder tensors%s)", path, len(module.encoder.state_dict()),
             f", {len(decoder_state)} decoder tensors" if decoder_state else "")
    return path
