"""Parity reference: StyleID's original StyleGAN2 math.

It lives in the package now (:mod:`styleid_edge.export.original_math`, the baseline of ``styleid-edge bench``);
this module re-exports it so ``import reference_stylegan2`` keeps working in tests and benchmarks.
"""

from styleid_edge.export.original_math import (ReferenceStyleGAN2, equal_linear, fused_leaky_relu,  # noqa: F401
                                               kernel_1d_to_2d, pixel_norm, upfirdn2d)

__all__ = ["ReferenceStyleGAN2", "equal_linear", "fused_leaky_relu", "kernel_1d_to_2d", "pixel_norm", "upfirdn2d"]
