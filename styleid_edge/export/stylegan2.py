"""StyleGAN2 generator in rosinality's state-dict layout, with export-friendly math.

Keys match rosinality's ``Generator`` exactly (``style.N.*``, ``input.input``,
``conv1.*``, ``to_rgb1.*``, ``convs.N.*``, ``to_rgbs.N.*``, ``noises.noise_N``,
the FIR kernels as buffers), so ``g_ema`` of a real checkpoint (e.g.
stylegan2-ffhq-config-f.pt) and e4e's ``decoder.*`` load strictly.

The forward is split the way StyleID uses the generator:

    z --mapping--> w --truncate--> W+ --styles--> S (flat StyleSpace) --synthesize--> image

and differs from the original only in form, not in value:

- activations are modulated instead of weights: ``conv(x * s, W * scale) * d`` with
  ``d = rsqrt(s^2 @ sum_k (W * scale)^2 ^T + 1e-8)`` (NVlabs' ``fused_modconv=False``),
  so the conv weights stay static and the batch stays free;
- noise is the checkpoint's constant buffers times ``noise.weight`` (no RandomNormal);
- FIR up/down-sampling is depthwise Conv / ConvTranspose (see :mod:`.layers`).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from styleid_edge.export.checkpoints import (CheckpointError, describe_checkpoint, load_checkpoint,
                                             load_state_strict, strip_prefix)
from styleid_edge.export.layers import (FUSED_LRELU, Blur, EqualLinear, FusedLeakyReLU, PixelNorm,
                                        Upsample, derived, register_derived)
from styleid_edge.runtime.stylespace import (StyleLayer, check_resolution, generator_channels,
                                             style_dim_total, stylespace_layout)

log = logging.getLogger(__name__)

DEMOD_EPS = 1e-8
LATENT_AVG_SAMPLES = 10_000
LATENT_AVG_SEED = 0


class ModulatedConv2d(nn.Module):
    """Modulated conv taking the StyleSpace slice ``s`` (B, in_channels) directly.

    ``modulation`` (EqualLinear, bias 1) maps a W row to ``s``; :meth:`Generator.styles`
    calls it, the synthesis path does not.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        if upsample:
            # rosinality: transposed conv (stride 2, padding 0) then Blur with these pads
            # and kernel * factor^2; (1, 1) for a 4-tap kernel and a 3x3 conv.
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), channels=out_channels,
                             upsample_factor=factor)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def conv_weight(self) -> torch.Tensor:
        """Static conv weight, equalized-lr scale folded: (O, I, k, k), or (I, O, k, k) for the transposed conv."""
        def make() -> torch.Tensor:
            w = self.weight[0] * self.scale
            return (w.transpose(0, 1) if self.upsample else w).contiguous()
        return derived(self, "conv_weight", [self.weight], make)

    def demod_weight(self) -> torch.Tensor:
        """(I, O) = (sum over the k x k taps of (weight * scale)^2)^T, for d = rsqrt(s^2 @ it + eps)."""
        return derived(self, "demod_weight", [self.weight],
                       lambda: (self.weight[0] * self.scale).square().sum(dim=(2, 3)).t().contiguous())

    def precompute(self) -> None:
        self.conv_weight()
        if self.demodulate:
            self.demod_weight()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = x * s.reshape(-1, self.in_channels, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, self.conv_weight(), stride=2))
        else:
            out = F.conv2d(x, self.conv_weight(), padding=self.padding)
        if self.demodulate:
            d = torch.rsqrt((s * s) @ self.demod_weight() + DEMOD_EPS)  # (B, O)
            out = out * d.reshape(-1, self.out_channels, 1, 1)
        return out


class NoiseInjection(nn.Module):
    """``x + weight * noise`` with a constant noise buffer (param ``weight``, shape (1,))."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))


class StyledConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, s), noise))


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel, channels=3)  # rosinality pads (2, 1) for a 4-tap kernel
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, s: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, s) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class Generator(nn.Module):
    """rosinality StyleGAN2 generator (any power-of-two size 8..1024, any channel multiplier)."""

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 lr_mlp: float = 0.01, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        log_size = check_resolution(size)
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.log_size = log_size
        self.n_latent = log_size * 2 - 2
        self.num_layers = (log_size - 2) * 2 + 1
        channels = generator_channels(channel_multiplier)
        self.channels = channels

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=FUSED_LRELU) for _ in range(n_mlp)])

        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_ch = channels[4]
        for log_res in range(3, log_size + 1):
            out_ch = channels[2**log_res]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))  # rosinality: always the default [1, 3, 3, 1]
            in_ch = out_ch

        self.layers: list[StyleLayer] = stylespace_layout(size, channel_multiplier)
        self.n_styles = style_dim_total(self.layers)
        self._check_layout()

    @torch.no_grad()
    def precompute(self) -> None:
        """Fill the caches of parameter-derived tensors (scaled weights, demodulation sums, FIR weights).

        Export wrappers call this so that the traced graph holds them as folded constants;
        the caches refresh themselves when a parameter is replaced or modified in place.
        """
        for module in self.modules():
            if module is not self and hasattr(module, "precompute"):
                module.precompute()

    def _check_layout(self) -> None:
        for layer in self.layers:
            mod = self.get_submodule(layer.name).conv
            if mod.in_channels != layer.size:
                raise AssertionError(f"StyleSpace layout disagrees with the generator at {layer.name}")

    # ------------------------------------------------------------------ z -> w -> W+ -> S
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, style_dim) -> w (B, style_dim): PixelNorm + n_mlp EqualLinear(lr 0.01, fused lrelu)."""
        return self.style(z)

    @staticmethod
    def truncate(w: torch.Tensor, psi: float | torch.Tensor, latent_avg: torch.Tensor) -> torch.Tensor:
        """``latent_avg + psi * (w - latent_avg)`` (w may be (B, 512) or W+ (B, n_latent, 512))."""
        return latent_avg + psi * (w - latent_avg)

    def styles(self, w_plus: torch.Tensor) -> torch.Tensor:
        """W+ (B, n_latent, style_dim) -> flat StyleSpace S (B, n_styles), in generator order."""
        if w_plus.ndim != 3 or w_plus.shape[1] != self.n_latent:
            raise ValueError(f"w_plus must be (B, {self.n_latent}, {self.style_dim}), got {tuple(w_plus.shape)}; "
                             "repeat a single w with w[:, None].expand(-1, n_latent, -1)")
        return torch.cat([self.get_submodule(layer.name).conv.modulation(w_plus[:, layer.w_index])
                          for layer in self.layers], dim=1)

    def split_styles(self, s: torch.Tensor) -> list[torch.Tensor]:
        """Flat S (B, n_styles) -> one (B, size) tensor per StyleSpace layer."""
        if s.ndim != 2 or s.shape[1] != self.n_styles:
            raise ValueError(f"styles must be (B, {self.n_styles}), got {tuple(s.shape)}")
        return list(torch.split(s, [layer.size for layer in self.layers], dim=1))

    def synthesize(self, s: torch.Tensor) -> torch.Tensor:
        """Flat S (B, n_styles) -> image (B, 3, size, size) in the generator's [-1, 1] scale."""
        parts = self.split_styles(s)
        noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        # The constant input broadcasts against the per-sample modulation: no batch repeat needed.
        out = self.conv1(self.input.input, parts[0], noise[0])
        skip = self.to_rgb1(out, parts[1])
        for k in range(len(self.to_rgbs)):
            out = self.convs[2 * k](out, parts[2 + 3 * k], noise[1 + 2 * k])
            out = self.convs[2 * k + 1](out, parts[3 + 3 * k], noise[2 + 2 * k])
            skip = self.to_rgbs[k](out, parts[4 + 3 * k], skip)
        return skip

    def forward(self, w_plus: torch.Tensor) -> torch.Tensor:
        """W+ (B, n_latent, style_dim) -> image (B, 3, size, size)."""
        return self.synthesize(self.styles(w_plus))

    @torch.no_grad()
    def mean_latent(self, n: int = LATENT_AVG_SAMPLES, seed: int = LATENT_AVG_SEED,
                    chunk: int = 2000) -> torch.Tensor:
        """Mean of mapping(z) over ``n`` seeded normal z: (style_dim,)."""
        z = torch.randn(n, self.style_dim, generator=torch.Generator().manual_seed(seed))
        total = torch.zeros(self.style_dim, dtype=torch.float64)
        for part in torch.split(z, chunk):
            total += self.mapping(part.to(self.input.input)).double().sum(0)
        return (total / n).float()

    def config(self) -> dict[str, int]:
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channel_multiplier": self.channel_multiplier, "n_latent": self.n_latent,
                "n_styles": self.n_styles}


# ---------------------------------------------------------------------- export wrappers


class MappingModule(nn.Module):
    """z (B, 512) -> w (B, 512). Export with input ``z``, output ``w``."""

    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gen.mapping(z)


class AffineModule(nn.Module):
    """w_plus (B, n_latent, 512) -> styles (B, S). Export with input ``w_plus``, output ``styles``."""

    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen

    def forward(self, w_plus: torch.Tensor) -> torch.Tensor:
        return self.gen.styles(w_plus)


class SynthesisModule(nn.Module):
    """styles (B, S) -> image (B, 3, R, R). Export with input ``styles``, output ``image``."""

    def __init__(self, gen: Generator):
        super().__init__()
        self.gen = gen
        gen.precompute()  # scaled conv weights, demodulation sums, FIR weights: exported as initializers
        register_derived(self, gen)

    def forward(self, styles: torch.Tensor) -> torch.Tensor:
        return self.gen.synthesize(styles)


# ---------------------------------------------------------------------- loading / saving

_STYLE_KEY = re.compile(r"^style\.(\d+)\.weight$")
_TORGB_KEY = re.compile(r"^to_rgbs\.(\d+)\.conv\.weight$")
_BASE_CHANNELS = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def infer_config(state: Mapping[str, torch.Tensor], source: str = "state dict",
                 whole: Any = None) -> dict[str, Any]:
    """size, style_dim, n_mlp, channel_multiplier and blur kernel length from rosinality keys."""
    def fail(why: str) -> CheckpointError:
        looks = describe_checkpoint(whole if whole is not None else state)
        return CheckpointError(f"{source}: not a rosinality StyleGAN2 generator ({why}); the file looks like "
                               f"{looks}. Pass a StyleGAN2 checkpoint such as stylegan2-ffhq-config-f.pt.")

    for key in ("conv1.conv.weight", "conv1.conv.modulation.weight", "input.input"):
        if key not in state:
            raise fail(f"no {key!r}")
    style_ids = sorted(int(m.group(1)) for k in state if (m := _STYLE_KEY.match(k)))
    n_mlp = len(style_ids)
    if n_mlp == 0 or style_ids != list(range(1, n_mlp + 1)):
        raise fail(f"mapping layers style.1..style.N expected, found {style_ids}")
    style_dim = int(state["conv1.conv.modulation.weight"].shape[1])
    n_torgb = len([k for k in state if _TORGB_KEY.match(k)])
    size = 2 ** (n_torgb + 2)
    if size > 1024:
        raise fail(f"{n_torgb} toRGB layers means {size} px; at most 1024 px is supported")
    cm = 2
    if size >= 64:
        last_key = f"convs.{2 * n_torgb - 1}.conv.weight"
        if last_key not in state:
            raise fail(f"no {last_key!r}")
        out_ch = int(state[last_key].shape[1])
        if out_ch % _BASE_CHANNELS[size]:
            raise fail(f"{out_ch} channels at {size} px is not a multiple of {_BASE_CHANNELS[size]}")
        cm = out_ch // _BASE_CHANNELS[size]
    else:
        log.debug("%s: channel multiplier has no effect at %d px; using 2", source, size)
    blur_len = 4
    if "convs.0.conv.blur.kernel" in state:
        blur_len = int(state["convs.0.conv.blur.kernel"].shape[0])
    return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": cm,
            "blur_kernel_size": blur_len}


def load_stylegan2_state(obj: Mapping[str, torch.Tensor], source: str, prefix: str = "", *,
                         whole: Any = None, size: int | None = None,
                         channel_multiplier: int | None = None) -> tuple[Generator, dict[str, Any]]:
    """Build a :class:`Generator` from a rosinality state dict (keys under ``prefix``) and load it strictly.

    ``prefix`` selects e.g. e4e's ``"decoder."`` keys. ``size`` / ``channel_multiplier``,
    when given, must match what the keys say. Returns (generator in eval, info).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict, got {describe_checkpoint(obj)}.")
    state = strip_prefix(obj, prefix) if prefix else dict(obj)
    if prefix and not state:
        raise CheckpointError(f"{source}: no keys start with {prefix!r}; the file looks like "
                              f"{describe_checkpoint(whole if whole is not None else obj)}.")
    cfg = infer_config(state, source, whole if whole is not None else obj)
    for name, want in (("size", size), ("channel_multiplier", channel_multiplier)):
        if want is not None and cfg[name] != want:
            raise CheckpointError(f"{source}: the checkpoint is a {cfg['size']} px generator with channel "
                                  f"multiplier {cfg['channel_multiplier']}, but {name}={want} was asked for. "
                                  f"Pass the matching checkpoint, or drop the {name} option.")
    blur = (1, 3, 3, 1) if cfg["blur_kernel_size"] == 4 else (1,) * cfg["blur_kernel_size"]
    with torch.random.fork_rng():  # the random init is overwritten; keep the caller's RNG untouched
        gen = Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"], cfg["channel_multiplier"], blur_kernel=blur)
    load_state_strict(gen, state, source=source, whole=whole if whole is not None else obj,
                      expected=f"a {cfg['size']} px StyleGAN2 generator (channel multiplier "
                               f"{cfg['channel_multiplier']}, {cfg['n_mlp']} mapping layers)")
    gen.eval().requires_grad_(False)
    info = {**gen.config(), "source": source}
    return gen, info


def load_stylegan2(path: str | Path, *, size: int | None = None,
                   channel_multiplier: int | None = None) -> tuple[Generator, torch.Tensor, dict[str, Any]]:
    """Load a rosinality checkpoint ``{"g_ema": state_dict, "latent_avg": (512,)}`` safely and strictly.

    A bare generator state dict is accepted too. Without ``latent_avg`` the mean of
    mapping(z) over 10000 seeded z is used (and logged). Returns (generator in eval,
    latent_avg (style_dim,), info with size, channel_multiplier, n_mlp, ...).
    """
    source = str(path)
    obj = load_checkpoint(path)
    if isinstance(obj, Mapping) and "g_ema" in obj:
        state = obj["g_ema"]
    elif isinstance(obj, Mapping) and "style.1.weight" in obj and "conv1.conv.weight" in obj:
        log.info("%s: bare generator state dict (no 'g_ema' wrapper)", source)
        state = obj
    else:
        raise CheckpointError(
            f"{source}: not a rosinality StyleGAN2 checkpoint; it looks like {describe_checkpoint(obj)}. "
            "Expected {'g_ema': state_dict, 'latent_avg': (512,)} as in stylegan2-ffhq-config-f.pt "
            "(an e4e checkpoint goes to the encoder option; its decoder is loaded from there).")
    gen, info = load_stylegan2_state(state, source, whole=obj, size=size, channel_multiplier=channel_multiplier)
    latent_avg = obj.get("latent_avg") if state is not obj else None
    if latent_avg is None:
        log.warning("%s has no latent_avg; using the mean of mapping(z) over %d seeded samples (seed %d)",
                    source, LATENT_AVG_SAMPLES, LATENT_AVG_SEED)
        latent_avg = gen.mean_latent()
        info["latent_avg_source"] = (f"computed: mean of mapping(z), {LATENT_AVG_SAMPLES} samples, "
                                     f"seed {LATENT_AVG_SEED}")
    else:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != gen.style_dim:
            shape = tuple(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
            raise CheckpointError(f"{source}: latent_avg must hold {gen.style_dim} values, got {shape}. "
                                  "Re-save the checkpoint with the generator's mean latent.")
        latent_avg = latent_avg.detach().reshape(gen.style_dim).float().clone()
        info["latent_avg_source"] = "checkpoint"
    return gen, latent_avg, info


def save_rosinality_checkpoint(gen: Generator, latent_avg: torch.Tensor, path: str | Path) -> Path:
    """Write ``{"g_ema": state_dict, "latent_avg": (style_dim,)}`` exactly as rosinality's files are laid out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in gen.state_dict().items()}
    torch.save({"g_ema": state, "latent_avg": latent_avg.detach().cpu().reshape(-1).float().clone()}, path)
    return path


def random_generator(size: int, channel_multiplier: int, seed: int, n_mlp: int = 8,
                     style_dim: int = 512) -> Generator:
    """A deterministic random generator whose zero-initialised parameters are perturbed.

    Noise strengths, activation and toRGB biases, mapping biases and modulation
    biases (around their init of 1) are all non-zero, so parity tests catch
    bias and noise bugs. The global RNG is left untouched.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gen = Generator(size, style_dim, n_mlp, channel_multiplier)
        with torch.no_grad():
            for name, p in gen.named_parameters():
                if name.endswith("noise.weight"):
                    p.copy_(0.1 + 0.2 * torch.rand_like(p))
                elif name.endswith("modulation.bias"):
                    p.add_(0.2 * torch.randn_like(p))
                elif name.startswith("style.") and name.endswith(".bias"):
                    p.copy_(10.0 * torch.randn_like(p))  # x lr_mul 0.01 -> effective std 0.1
                elif name.endswith("activate.bias") or name.endswith("to_rgb1.bias") or \
                        (name.startswith("to_rgbs.") and name.endswith(".bias")):
                    p.copy_(0.1 * torch.randn_like(p))
    return gen.eval().requires_grad_(False)
