"""Export-friendly torch building blocks shared by our StyleGAN2, e4e and mapper models.

Parameter and buffer names follow rosinality's stylegan2-pytorch (``weight``,
``bias``, ``kernel``) so real checkpoints load strictly; the forward math is
written with plain ONNX-exportable ops only:

- equalized learning rate: the runtime weight scale is applied in ``forward``;
  ONNX constant folding bakes it into linear weights, and tensors derived from
  conv weights are cached (:func:`derived`) so they export as initializers;
- fused leaky ReLU: ``leaky_relu(x + b, 0.2) * sqrt(2)`` with ordinary ops;
- FIR filters (rosinality's ``upfirdn2d``): depthwise ``Conv`` / ``ConvTranspose``
  (stride 2) plus ``Pad`` / ``Slice``. No custom ops.

``upfirdn2d`` convolves with the *flipped* kernel (true convolution); the
helpers below keep that convention so asymmetric kernels match too.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = 2**0.5
FUSED_LRELU = "fused_lrelu"


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias, negative_slope) * scale`` with ``bias`` added on the LAST dim.

    This is rosinality's behaviour for 2-D inputs and StyleID's for 3-D inputs
    (e.g. the latent swapper's (B, 18, 512)); for NCHW feature maps use
    :class:`FusedLeakyReLU`, which adds its bias per channel (dim 1).
    """
    if bias is not None:
        x = x + bias
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Per-channel bias + scaled leaky ReLU for NCHW feature maps (param ``bias``, shape (C,))."""

    def __init__(self, channels: int, bias: bool = True, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            x = x + self.bias.view(1, -1, *([1] * (x.ndim - 2)))
        return F.leaky_relu(x, self.negative_slope) * self.scale


class PixelNorm(nn.Module):
    """``x * rsqrt(mean(x^2, dim) + 1e-8)``. rosinality normalises dim 1 (the feature axis for (B, 512))."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=self.dim, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """rosinality's equalized-lr linear layer.

    y = x @ (weight * lr_mul / sqrt(in_dim))^T + bias * lr_mul, or with
    ``activation="fused_lrelu"``: fused_leaky_relu(x @ W^T, bias * lr_mul)
    (bias on the last dim). Parameters: ``weight`` (out_dim, in_dim), ``bias`` (out_dim,).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str | None = None):
        super().__init__()
        if activation not in (None, FUSED_LRELU):
            raise ValueError(f"EqualLinear activation must be None or {FUSED_LRELU!r}, got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale)
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(out, bias)
        return out if bias is None else out + bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """rosinality's equalized-lr conv: ``conv2d(x, weight / sqrt(fan_in), bias)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


# --------------------------------------------------------------------------- derived constants


def derived(module: nn.Module, name: str, sources: Sequence[torch.Tensor],
            fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``fn()``, cached on ``module`` until one of ``sources`` is replaced or modified in place.

    Used for tensors computed from parameters (scaled weights, the demodulation
    sum of squares, depthwise FIR weights). Cached tensors enter an ONNX trace as
    constants, so the exported graph holds them folded; call the owning model's
    ``precompute()`` before tracing. While gradients flow into a source, nothing
    is cached.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
        return fn()  # autograd needs the graph
    if any(t.is_inference() for t in sources):
        return fn()  # inference tensors have no version counter to watch
    cache: dict = module.__dict__.setdefault("_derived_cache", {})
    key = [(t, t.data_ptr(), t.dtype, t.device, t._version) for t in sources]
    hit = cache.get(name)
    if hit is not None and len(hit[0]) == len(key) and all(
            a[0] is b[0] and a[1:] == b[1:] for a, b in zip(hit[0], key)):
        return hit[2]
    with torch.no_grad():
        value = fn()
    # The detached aliases keep the source storages alive, so a data pointer seen here is
    # never reused by another tensor while this entry exists (e.g. after module.to()).
    cache[name] = (key, [t.detach() for t in sources], value)
    return value


def derived_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every cached derived tensor under ``model``, named ``<module path>.<name>``."""
    out = {}
    for path, module in model.named_modules():
        for name, (_, _, value) in module.__dict__.get("_derived_cache", {}).items():
            out[f"{path}.{name}" if path else name] = value
    return out


def register_derived(wrapper: nn.Module, model: nn.Module) -> None:
    """Register ``model``'s cached derived tensors as buffers of ``wrapper``.

    The tracer binds a module's state-dict tensors (persistent buffers) by identity,
    so an ONNX trace of ``wrapper`` stores them as named initializers (as
    quantization tools expect for conv weights) rather than anonymous Constant nodes.
    """
    for name, value in derived_tensors(model).items():
        wrapper.register_buffer("derived_" + name.replace(".", "_"), value)


# --------------------------------------------------------------------------- FIR filters


def make_kernel(kernel: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """rosinality's ``make_kernel``: outer product of a 1-D kernel, normalised to sum 1."""
    k = torch.as_tensor(kernel, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {tuple(k.shape)}")
    return k / k.sum()


def pad_or_crop(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Pad (positive) or crop (negative) the last two dims by the same (left, right) amounts."""
    if left > 0 or right > 0:
        x = F.pad(x, [max(left, 0), max(right, 0), max(left, 0), max(right, 0)])
    if left < 0 or right < 0:
        h, w = x.shape[-2], x.shape[-1]
        x = x[..., max(-left, 0): h - max(-right, 0), max(-left, 0): w - max(-right, 0)]
    return x


def depthwise_weight(kernel: torch.Tensor, channels: int, flip: bool) -> torch.Tensor:
    """(channels, 1, K, K) depthwise conv weight from a (K, K) FIR kernel."""
    k = kernel.flip([0, 1]) if flip else kernel
    return k.reshape(1, 1, *kernel.shape).repeat(channels, 1, 1, 1)


def fir_filter(x: torch.Tensor, weight: torch.Tensor, pad: tuple[int, int], down: int = 1) -> torch.Tensor:
    """upfirdn2d(x, kernel, up=1, down, pad) as Pad + depthwise Conv (stride ``down``).

    ``weight`` = depthwise_weight(kernel, channels, flip=True).
    """
    p0, p1 = pad
    groups = weight.shape[0]
    if p0 == p1 and p0 >= 0:
        return F.conv2d(x, weight, stride=down, padding=p0, groups=groups)
    return F.conv2d(pad_or_crop(x, p0, p1), weight, stride=down, groups=groups)


def fir_upsample(x: torch.Tensor, weight: torch.Tensor, pad: tuple[int, int], factor: int = 2) -> torch.Tensor:
    """upfirdn2d(x, kernel, up=factor, pad=pad) as a depthwise ConvTranspose (stride ``factor``).

    ``weight`` = depthwise_weight(kernel, channels, flip=False): zero insertion
    followed by a correlation with the flipped kernel equals a transposed conv
    with the unflipped kernel and padding K-1-pad0. The output end is matched
    with output_padding, or with Pad / Slice where that cannot express it.
    """
    size, groups = weight.shape[-1], weight.shape[0]
    p0, p1 = pad
    trans_pad = size - 1 - p0
    extra = p1 - p0 + factor - 1  # upfirdn length minus the ConvTranspose length at output_padding 0
    if trans_pad >= 0 and 0 <= extra < factor:
        return F.conv_transpose2d(x, weight, stride=factor, padding=trans_pad, output_padding=extra,
                                  groups=groups)
    full = F.conv_transpose2d(x, weight, stride=factor, groups=groups)  # padding 0
    out_len = x.shape[-1] * factor + p0 + p1 - size + 1
    left = -trans_pad
    return pad_or_crop(full, left, out_len - full.shape[-1] - left)


class _FIR(nn.Module):
    """Holds the ``kernel`` buffer (rosinality's name) and its cached depthwise weight."""

    flip = True

    def __init__(self, kernel: torch.Tensor, channels: int):
        super().__init__()
        self.channels = int(channels)
        self.register_buffer("kernel", kernel)

    def depthwise(self) -> torch.Tensor:
        return derived(self, "depthwise", [self.kernel],
                       lambda: depthwise_weight(self.kernel, self.channels, self.flip))

    def precompute(self) -> None:
        self.depthwise()


class Blur(_FIR):
    """rosinality's ``Blur``: upfirdn2d(x, kernel, pad); buffer ``kernel`` = make_kernel * factor^2.

    ``channels`` (the input channels) makes the exported depthwise weight a constant.
    """

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], channels: int, upsample_factor: int = 1):
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor**2
        super().__init__(k, channels)
        self.pad = (int(pad[0]), int(pad[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_filter(x, self.depthwise(), self.pad)


class Upsample(_FIR):
    """rosinality's ``Upsample``: up=factor, kernel * factor^2, pads ((p+1)//2 + factor-1, p//2), p = K - factor."""

    flip = False

    def __init__(self, kernel: Sequence[float], channels: int, factor: int = 2):
        k = make_kernel(kernel) * factor**2
        super().__init__(k, channels)
        self.factor = factor
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_upsample(x, self.depthwise(), self.pad, self.factor)


class Downsample(_FIR):
    """rosinality's ``Downsample``: FIR low-pass, keep every ``factor``-th sample; pads ((p+1)//2, p//2)."""

    def __init__(self, kernel: Sequence[float], channels: int, factor: int = 2):
        k = make_kernel(kernel)
        super().__init__(k, channels)
        self.factor = factor
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_filter(x, self.depthwise(), self.pad, down=self.factor)
