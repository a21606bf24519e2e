"""Polyphase upsampling (export.polyphase): one 3x3 conv + pixel shuffle equals the exported upsampling ops."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from styleid_edge.export import polyphase  # noqa: E402
from styleid_edge.export.layers import fir_filter, fir_upsample  # noqa: E402
from styleid_edge.export.stylegan2 import random_generator  # noqa: E402


@pytest.fixture(scope="module")
def gen():
    g = random_generator(64, 1, seed=3, n_mlp=2)
    g.precompute()
    return g


def test_upconv_blur_equals_transposed_conv_then_blur(gen):
    convs = [layer.conv for layer in gen.convs if layer.conv.upsample]
    assert len(convs) == 4
    for conv in convs:
        w, blur = conv.conv_weight().detach(), conv.blur.depthwise()
        k = polyphase.upconv_blur_kernel(w, blur, conv.blur.pad)
        assert k.shape == (4 * w.shape[1], w.shape[0], 3, 3) and k.dtype == torch.float64
        for size in (4, 9):
            x = torch.randn(2, w.shape[0], size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
            ref = fir_filter(F.conv_transpose2d(x, w.double(), stride=2), blur.double(), conv.blur.pad)
            got = polyphase.apply(x, k)
            assert got.shape == ref.shape == (2, w.shape[1], 2 * size, 2 * size)
            assert float((got - ref).abs().max()) < 1e-12 * float(ref.abs().max())


def test_rgb_skip_upsample_equals_fir_upsample(gen):
    up = gen.to_rgbs[0].upsample
    k = polyphase.upsample_kernel(up.depthwise(), up.pad, up.factor)
    assert k.shape == (12, 3, 3, 3)
    x = torch.randn(3, 3, 7, 7, dtype=torch.float64)
    ref = fir_upsample(x, up.depthwise().double(), up.pad, up.factor)
    assert float((polyphase.apply(x, k) - ref).abs().max()) < 1e-13
    for o in range(3):  # channels do not mix
        for c in range(3):
            if o != c:
                assert float(k[4 * o:4 * o + 4, c].abs().max()) == 0.0


def test_kernels_that_do_not_fit_are_refused(gen):
    conv = next(layer.conv for layer in gen.convs if layer.conv.upsample)
    blur = conv.blur.depthwise().clone()
    blur[1] *= 2
    with pytest.raises(ValueError, match="same taps"):
        polyphase.upconv_blur_kernel(conv.conv_weight().detach(), blur, conv.blur.pad)
    wide = torch.ones(2, 1, 8, 8)  # an 8-tap upsampler needs more than 3x3 taps per phase
    with pytest.raises(ValueError, match="does not fit"):
        polyphase.upsample_kernel(wide, (4, 3))
    with pytest.raises(ValueError, match="factor"):
        polyphase.upsample_kernel(blur[:2], (2, 1), factor=4)
    w = conv.conv_weight().detach()
    for bad_pad in ((1, 0), (1, 2), (1, -2), (0, 2)):  # not exact 2x, or shifted
        with pytest.raises(ValueError):
            polyphase.upconv_blur_kernel(w, conv.blur.depthwise(), bad_pad)
    up = gen.to_rgbs[0].upsample
    for bad_pad in ((20, -17), (7, -4), (-3, 6)):  # shifted out of view / beyond a 3x3 support
        with pytest.raises(ValueError):
            polyphase.upsample_kernel(up.depthwise(), bad_pad)


def test_fast_synthesis_polyphase_matches_the_exported_form(gen):
    from styleid_edge.export.torch_runner import FastSynthesis

    styles = gen.styles(torch.randn(3, gen.n_latent, gen.style_dim, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        ref = gen.synthesize(styles)
        plain = FastSynthesis(gen, polyphase_up=False)(styles)
        poly = FastSynthesis(gen, polyphase_up=True)(styles)
    scale = float(ref.abs().max())
    assert scale > 0.1
    assert float((plain - ref).abs().max()) < 1e-4 * scale
    assert float((poly - ref).abs().max()) < 1e-4 * scale
    assert float((poly - plain).abs().max()) > 0.0  # really a different computation
