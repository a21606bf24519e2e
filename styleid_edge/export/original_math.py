"""StyleID's original generator math: StyleGAN2 as StyleID's (rosinality-based) code computes it.

The baseline of ``styleid-edge bench`` and the parity reference of the tests (``tests/reference_stylegan2.py``
re-exports it).

Written from the original math, deliberately in the original *form* and sharing
no code with ``styleid_edge.export.layers``:

- weight modulation: per-sample weights (B*O, I, k, k), demodulated, run as one
  grouped conv with ``groups=batch`` (transposed for the upsampling convs);
- upfirdn2d written out plainly: zero insertion, pad / crop, correlation with
  the flipped kernel on a (N*C, 1, H, W) view, then subsampling;
- StyleID's fused_leaky_relu (bias on the last dim for 3-D inputs, on dim 1 otherwise);
- noise injection from the constant ``noises.noise_i`` buffers (randomize_noise=False);
- StyleID's StyleSpace path: a list of per-layer styles (B, 1, I, 1, 1) fed to the convs.

It reads a rosinality state dict (e.g. our ``Generator.state_dict()``) as plain tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    p0, p1 = pad
    # 1. upsample by zero insertion
    u = torch.zeros(n, c, h * up, w * up, dtype=x.dtype, device=x.device)
    u[:, :, ::up, ::up] = x
    # 2. pad (positive) or crop (negative) both spatial dims
    u = F.pad(u, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    hh, ww = u.shape[2], u.shape[3]
    u = u[:, :, max(-p0, 0): hh - max(-p1, 0), max(-p0, 0): ww - max(-p1, 0)]
    # 3. FIR: true convolution = correlation with the flipped kernel, channel by channel
    flipped = torch.flip(kernel, [0, 1]).reshape(1, 1, kh, kw)
    y = F.conv2d(u.reshape(n * c, 1, u.shape[2], u.shape[3]), flipped)
    y = y.reshape(n, c, y.shape[2], y.shape[3])
    # 4. downsample
    return y[:, :, ::down, ::down]


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = 2**0.5) -> torch.Tensor:
    """StyleID's version: bias on the last dim for 3-D inputs, on dim 1 otherwise."""
    rest = [1] * (x.ndim - bias.ndim - 1)
    if x.ndim == 3:
        b = bias.view(1, *rest, bias.shape[0])
    else:
        b = bias.view(1, bias.shape[0], *rest)
    return F.leaky_relu(x + b, negative_slope=negative_slope) * scale


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


def equal_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lr_mul: float = 1.0,
                 activation: bool = False) -> torch.Tensor:
    scale = (1 / math.sqrt(weight.shape[1])) * lr_mul
    if activation:
        return fused_leaky_relu(F.linear(x, weight * scale), bias * lr_mul)
    return F.linear(x, weight * scale, bias=bias * lr_mul)


def kernel_1d_to_2d(k: list[float]) -> torch.Tensor:
    t = torch.tensor(k, dtype=torch.float32)
    t = t[None, :] * t[:, None]
    return t / t.sum()


class ReferenceStyleGAN2:
    """Original-form StyleGAN2 forward over a rosinality state dict."""

    def __init__(self, state: dict[str, torch.Tensor], size: int, n_mlp: int = 8, channel_multiplier: int = 2,
                 lr_mlp: float = 0.01, dtype: torch.dtype = torch.float32):
        self.sd = {k: v.detach().clone().to(dtype) for k, v in state.items()}
        self.size = size
        self.n_mlp = n_mlp
        self.lr_mlp = lr_mlp
        self.log_size = int(math.log(size, 2))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        cm = channel_multiplier
        self.channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm,
                         256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}

    # -------------------------------------------------------------- mapping
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for i in range(1, self.n_mlp + 1):
            x = equal_linear(x, self.sd[f"style.{i}.weight"], self.sd[f"style.{i}.bias"], self.lr_mlp, True)
        return x

    def truncate(self, w: torch.Tensor, truncation: float, truncation_latent: torch.Tensor) -> torch.Tensor:
        # rosinality Generator.forward: truncation_latent + truncation * (style - truncation_latent)
        return truncation_latent + truncation * (w - truncation_latent)

    # -------------------------------------------------------------- blocks
    def _modulated_conv(self, prefix: str, x: torch.Tensor, style: torch.Tensor, is_stylespace: bool,
                        demodulate: bool, upsample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        sd = self.sd
        weight_param = sd[f"{prefix}.weight"]  # (1, O, I, k, k)
        _, out_ch, in_ch, k, _ = weight_param.shape
        batch = x.shape[0]
        if not is_stylespace:
            style = equal_linear(style, sd[f"{prefix}.modulation.weight"], sd[f"{prefix}.modulation.bias"])
            style = style.view(batch, 1, in_ch, 1, 1)
        scale = 1 / math.sqrt(in_ch * k * k)
        weight = scale * weight_param * style  # (B, O, I, k, k)
        if demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, out_ch, 1, 1, 1)
        h, w = x.shape[2], x.shape[3]
        inp = x.reshape(1, batch * in_ch, h, w)
        if upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
            out = F.conv_transpose2d(inp, weight, padding=0, stride=2, groups=batch)
            out = out.view(batch, out_ch, out.shape[2], out.shape[3])
            # Blur after the transposed conv: pads from (len(kernel) - 2) - (k - 1)
            kernel = sd[f"{prefix}.blur.kernel"]
            p = (kernel.shape[0] - 2) - (k - 1)
            out = upfirdn2d(out, kernel, pad=((p + 1) // 2 + 1, p // 2 + 1))
        else:
            weight = weight.reshape(batch * out_ch, in_ch, k, k)
            out = F.conv2d(inp, weight, padding=k // 2, groups=batch)
            out = out.view(batch, out_ch, out.shape[2], out.shape[3])
        return out, style

    def _styled_conv(self, prefix, x, style, noise, is_stylespace, upsample=False):
        out, style = self._modulated_conv(f"{prefix}.conv", x, style, is_stylespace, True, upsample)
        out = out + self.sd[f"{prefix}.noise.weight"] * noise
        out = fused_leaky_relu(out, self.sd[f"{prefix}.activate.bias"])
        return out, style

    def _to_rgb(self, prefix, x, style, skip, is_stylespace):
        out, style = self._modulated_conv(f"{prefix}.conv", x, style, is_stylespace, False, False)
        out = out + self.sd[f"{prefix}.bias"]
        if skip is not None:
            # Upsample(kernel * 4): up=2, pad=((p + 1) // 2 + 1, p // 2), p = len(kernel) - 2 -> (2, 1)
            kernel = self.sd[f"{prefix}.upsample.kernel"]
            p = kernel.shape[0] - 2
            skip = upfirdn2d(skip, kernel, up=2, pad=((p + 1) // 2 + 1, p // 2))
            out = out + skip
        return out, style

    # -------------------------------------------------------------- generator
    def _run(self, latent, is_stylespace: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        sd = self.sd
        noise = [sd[f"noises.noise_{i}"] for i in range(self.num_layers)]
        styles: list[torch.Tensor] = []
        if is_stylespace:
            def pick(i):
                return latent[i]
            batch = latent[0].shape[0]
        else:
            def pick(i):
                return latent[:, i]
            batch = latent.shape[0]
        const = sd["input.input"].repeat(batch, 1, 1, 1)
        out, st = self._styled_conv("conv1", const, pick(0), noise[0], is_stylespace)
        styles.append(st)
        skip, st = self._to_rgb("to_rgb1", out, pick(1), None, is_stylespace)
        styles.append(st)
        i = 1 if not is_stylespace else 2
        for k in range(self.log_size - 2):
            out, s1 = self._styled_conv(f"convs.{2 * k}", out, pick(i), noise[1 + 2 * k], is_stylespace,
                                        upsample=True)
            out, s2 = self._styled_conv(f"convs.{2 * k + 1}", out, pick(i + 1), noise[2 + 2 * k], is_stylespace)
            skip, s3 = self._to_rgb(f"to_rgbs.{k}", out, pick(i + 2), skip, is_stylespace)
            styles.extend([s1, s2, s3])
            i += 2 if not is_stylespace else 3
        return skip, styles

    def forward_wplus(self, w_plus: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """W+ (B, n_latent, 512) -> (image, StyleSpace list of (B, 1, I, 1, 1))."""
        return self._run(w_plus, is_stylespace=False)

    def forward_stylespace(self, styles: list[torch.Tensor]) -> torch.Tensor:
        """StyleID's ``input_is_stylespace=True`` path."""
        return self._run(styles, is_stylespace=True)[0]

    @staticmethod
    def flatten(styles: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([s.reshape(s.shape[0], -1) for s in styles], dim=1)

    def style_sizes(self) -> list[int]:
        """Channels of each StyleSpace entry, in StyleID's order (conv1, to_rgb1, then per level 3 entries)."""
        names = ["conv1.conv", "to_rgb1.conv"]
        for k in range(self.log_size - 2):
            names += [f"convs.{2 * k}.conv", f"convs.{2 * k + 1}.conv", f"to_rgbs.{k}.conv"]
        return [self.sd[f"{name}.modulation.weight"].shape[0] for name in names]

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Flat S (B, n) -> StyleID's style list of (B, 1, I, 1, 1)."""
        out, start = [], 0
        for n in self.style_sizes():
            out.append(flat[:, start:start + n].reshape(flat.shape[0], 1, n, 1, 1).to(self.sd["input.input"]))
            start += n
        assert start == flat.shape[1], f"S has {flat.shape[1]} channels, the generator {start}"
        return out
