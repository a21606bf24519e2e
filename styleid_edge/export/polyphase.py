"""Stride-2 upsampling layers rewritten as one 3x3 convolution and a pixel shuffle (polyphase form).

StyleGAN2 upsamples twice per resolution: the styled conv is a transposed conv (stride 2) followed by a
4x4 FIR blur, and the RGB skip is a FIR upsampler. Both are linear and shift-equivariant with stride 2, so
each output phase (row parity, column parity) is an ordinary convolution of the input. Stacking the four
phases as output channels gives

    blur(conv_transpose2d(x, W, stride=2)) == pixel_shuffle(conv2d(x, K, padding=1), 2)

with ``K`` of shape (4 * out_channels, in_channels, 3, 3), channel ``4 * o + 2 * py + px`` holding phase
(py, px) of output channel ``o``. On a GPU this replaces a transposed conv plus a depthwise pass over the
full-resolution map by one dense 3x3 conv at the input resolution (tensor-core friendly) and a reshuffle.
The kernels are built in float64 from impulse responses of the original ops, then checked against the
original op on a random input (a few input channels), so a kernel is either exact up to rounding or refused.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .layers import fir_filter, fir_upsample

_P0 = 3  # impulse position: far enough from the borders for a 3x3 support on each side
_L = 8  # impulse image size (input resolution)


def _window(response: torch.Tensor, what: str) -> torch.Tensor:
    """The 6x6 window of full impulse responses (..., 2L, 2L) that a 3x3 polyphase kernel covers; an error
    when any of the response lies outside it."""
    lo = 2 * _P0 - 2
    window = response[..., lo:lo + 6, lo:lo + 6]
    covered, total = float(window.square().sum()), float(response.square().sum())
    if total == 0.0 or abs(covered - total) > 1e-12 * total:
        raise ValueError(f"{what}: the response does not fit a 3x3 polyphase kernel ({covered:.6g} of {total:.6g})")
    return window


def _gather(window: torch.Tensor) -> torch.Tensor:
    """(C_in, C_out, 6, 6) response windows -> (4 * C_out, C_in, 3, 3) polyphase kernel.

    Phase (py, px), tap (ty, tx) of the 3x3 conv (padding 1) reads window[4 - 2 * ty + py, 4 - 2 * tx + px]."""
    c_in, c_out = window.shape[:2]
    k = window.new_zeros(c_out, 2, 2, c_in, 3, 3)
    for ty in range(3):
        for tx in range(3):
            for py in range(2):
                for px in range(2):
                    k[:, py, px, :, ty, tx] = window[:, :, 4 - 2 * ty + py, 4 - 2 * tx + px].t()
    return k.reshape(4 * c_out, c_in, 3, 3)


def _verify(kernel: torch.Tensor, op: Callable[[torch.Tensor], torch.Tensor], c_in: int, what: str) -> None:
    """``apply(x, kernel)`` against ``op(x)`` on a random float64 input with up to 8 input channels (``op``
    sees exactly those channels): same shape and values, or ValueError."""
    n = min(c_in, 8)
    x = torch.randn(1, n, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref, got = op(x), apply(x, kernel[:, :n])
    if ref.shape != got.shape:
        raise ValueError(f"{what}: the op gives {tuple(ref.shape)} where the polyphase form gives {tuple(got.shape)}; "
                         "only exact 2x upsampling (output twice the input) has a polyphase form")
    err, scale = float((ref - got).abs().max()), float(ref.abs().max())
    if not err <= 1e-9 * max(scale, 1e-30):
        raise ValueError(f"{what}: the polyphase form differs from the op (max error {err:.3g} at scale {scale:.3g})")


def upconv_blur_kernel(weight: torch.Tensor, blur: torch.Tensor, blur_pad: tuple[int, int]) -> torch.Tensor:
    """Polyphase kernel of ``fir_filter(conv_transpose2d(x, weight, stride=2), blur, blur_pad)``.

    ``weight`` (I, O, 3, 3) is the transposed conv's weight, ``blur`` the (O, 1, K, K) depthwise filter
    (the same taps for every channel, as in StyleGAN2). Returns (4 * O, I, 3, 3) float64.

    An impulse at input pixel p places ``weight[c, o]`` at 2p in the transposed conv's output; the blur of
    each of the 9 taps is computed once and the responses are their weighted sums."""
    c_in, c_out, kh, kw = weight.shape
    if (kh, kw) != (3, 3):
        raise ValueError(f"upconv_blur_kernel: a {kh}x{kw} transposed conv; only 3x3 is supported")
    taps = blur[0:1].double()
    if not torch.equal(blur.double(), taps.expand_as(blur)):
        raise ValueError("upconv_blur_kernel: the blur must use the same taps for every channel")
    size = 2 * _L + 1  # conv_transpose2d output for an L x L input, stride 2, 3 x 3 kernel
    basis = torch.zeros(9, 1, size, size, dtype=torch.float64)
    for t in range(9):
        basis[t, 0, 2 * _P0 + t // 3, 2 * _P0 + t % 3] = 1.0
    per_tap = _window(fir_filter(basis, taps, blur_pad)[:, 0], "upconv_blur_kernel")  # (9, 6, 6)
    window = (weight.double().reshape(c_in * c_out, 9) @ per_tap.reshape(9, 36)).reshape(c_in, c_out, 6, 6)
    kernel = _gather(window)
    w8, blur64 = weight[:8].double(), blur.double()
    _verify(kernel, lambda x: fir_filter(F.conv_transpose2d(x, w8, stride=2), blur64, blur_pad), c_in,
            "upconv_blur_kernel")
    return kernel


def upsample_kernel(depthwise: torch.Tensor, pad: tuple[int, int], factor: int = 2) -> torch.Tensor:
    """Polyphase kernel of ``fir_upsample(x, depthwise, pad, factor=2)`` (depthwise, C channels):
    (4 * C, C, 3, 3) float64, zero between different channels."""
    if factor != 2:
        raise ValueError(f"upsample_kernel: factor {factor}; only 2 has a polyphase form here")
    channels = depthwise.shape[0]
    z = torch.zeros(channels, channels, _L, _L, dtype=torch.float64)
    for c in range(channels):
        z[c, c, _P0, _P0] = 1.0
    dw = depthwise.double()
    response = fir_upsample(z, dw, pad, factor)
    if response.shape[-1] != 2 * _L:
        raise ValueError(f"upsample_kernel: output size {response.shape[-1]} is not twice the input")
    kernel = _gather(_window(response, "upsample_kernel"))
    n = min(channels, 8)
    _verify(kernel[: 4 * n], lambda x: fir_upsample(x, dw[:n], pad, factor), channels, "upsample_kernel")
    return kernel


def apply(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The upsampled map: ``pixel_shuffle(conv2d(x, kernel, padding=1), 2)``."""
    return F.pixel_shuffle(F.conv2d(x, kernel, padding=1), 2)
