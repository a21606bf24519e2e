"""StyleGAN2 export model: parity with the original math, ONNX parity, strict checkpoint loading."""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from styleid_edge.export.checkpoints import CheckpointError, load_state_strict
from styleid_edge.export.layers import (Blur, Downsample, EqualLinear, PixelNorm, Upsample, fused_leaky_relu,
                                        make_kernel)
from styleid_edge.export.onnx_io import FORBIDDEN_OPS, export_onnx
from styleid_edge.export.stylegan2 import (AffineModule, Generator, MappingModule, ModulatedConv2d,
                                           SynthesisModule, load_stylegan2, load_stylegan2_state,
                                           random_generator, save_rosinality_checkpoint)
from styleid_edge.runtime.stylespace import stylespace_layout, torgb_channel_mask

try:
    from tests import reference_stylegan2 as ref_impl
except ImportError:  # tests/ on sys.path (pytest's rootdir-less import mode)
    import reference_stylegan2 as ref_impl

# Copies of ../shared/reference/checkpoints (the real files' key layouts), kept with the tests.
ROSINALITY_JSON = Path(__file__).resolve().parent / "data" / "reference" / "stylegan2_rosinality_1024_cm2.json"

# (size, channel multiplier, n_mlp): every path of the 32 px one, a 64 px one with cm 1 (256 channels at 64)
CONFIGS = [(32, 2, 8), (64, 1, 2)]


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (images here reach magnitudes of ~5)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"{c[0]}px-cm{c[1]}")
def pair(request):
    size, cm, n_mlp = request.param
    gen = random_generator(size, cm, seed=7, n_mlp=n_mlp)
    ref = ref_impl.ReferenceStyleGAN2(gen.state_dict(), size, n_mlp=n_mlp, channel_multiplier=cm)
    return gen, ref


@pytest.fixture(scope="module")
def gen32():
    return random_generator(32, 2, seed=3)


def wplus(gen: Generator, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = gen.mapping(torch.randn(batch * gen.n_latent, gen.style_dim, generator=g))
    return w.reshape(batch, gen.n_latent, gen.style_dim)


# ------------------------------------------------------------------------------------------ layers


@pytest.mark.parametrize("taps, pad", [((1, 3, 3, 1), (1, 1)), ((1, 3, 3, 1), (2, 1)), ((1, 2, 3), (0, -1)),
                                       ((1, 5, 2, 7), (3, 0)), ((1, 3, 3, 1), (-1, 2))])
def test_blur_matches_upfirdn2d(taps, pad):
    x = torch.randn(2, 5, 9, 9)
    blur = Blur(taps, pad, channels=5, upsample_factor=2)
    out = blur(x)
    ref = ref_impl.upfirdn2d(x, blur.kernel, pad=pad)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 1e-5


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 4, 6, 4, 1), (2, 5, 1, 3)])
def test_upsample_and_downsample_match_upfirdn2d(taps):
    x = torch.randn(2, 3, 7, 7)
    up = Upsample(taps, channels=3)
    ref_up = ref_impl.upfirdn2d(x, up.kernel, up=2, pad=up.pad)
    assert up(x).shape == ref_up.shape == (2, 3, 14, 14)
    assert float((up(x) - ref_up).abs().max()) < 1e-5
    down = Downsample(taps, channels=3)
    x2 = torch.randn(2, 3, 16, 16)
    ref_down = ref_impl.upfirdn2d(x2, down.kernel, down=2, pad=down.pad)
    assert down(x2).shape == ref_down.shape == (2, 3, 8, 8)
    assert float((down(x2) - ref_down).abs().max()) < 1e-5


def test_rosinality_kernel_and_pads():
    up = Upsample((1, 3, 3, 1), channels=3)
    assert up.pad == (2, 1)
    conv = ModulatedConv2d(8, 4, 3, 16, upsample=True)
    assert conv.blur.pad == (1, 1)
    expected = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64 * 4
    assert np.allclose(up.kernel.numpy(), expected) and np.allclose(conv.blur.kernel.numpy(), expected)
    assert np.allclose(make_kernel([1, 3, 3, 1]).sum().item(), 1.0)


def test_equal_linear_and_fused_leaky_relu_bias_on_last_dim():
    torch.manual_seed(0)
    lin = EqualLinear(16, 8, bias_init=0.5, lr_mul=0.01, activation="fused_lrelu")
    with torch.no_grad():
        lin.bias.normal_()
    lin.requires_grad_(False)
    x = torch.randn(3, 4, 16)  # 3-D, as the latent swapper feeds it
    ref = ref_impl.equal_linear(x, lin.weight, lin.bias, lr_mul=0.01, activation=True)
    assert float((lin(x) - ref).abs().max()) < 1e-6
    plain = EqualLinear(16, 8, bias_init=1.0).requires_grad_(False)
    x2 = torch.randn(5, 16)
    assert float((plain(x2) - (x2 @ plain.weight.t() / 4.0 + 1.0)).abs().max()) < 1e-6
    assert float((plain(x2) - ref_impl.equal_linear(x2, plain.weight, plain.bias)).abs().max()) < 1e-6
    bias = torch.randn(8)
    y = torch.randn(2, 3, 8)
    assert float((fused_leaky_relu(y, bias) - ref_impl.fused_leaky_relu(y, bias)).abs().max()) < 1e-6
    with pytest.raises(ValueError, match="fused_lrelu"):
        EqualLinear(4, 4, activation="relu")


def test_pixel_norm():
    x = torch.randn(4, 32) * 3
    assert float((PixelNorm()(x) - ref_impl.pixel_norm(x)).abs().max()) < 1e-6
    assert np.allclose((PixelNorm()(x) ** 2).mean(1).numpy(), 1.0, atol=1e-5)
    x3 = torch.randn(2, 18, 32)
    assert np.allclose((PixelNorm(dim=1)(x3) ** 2).mean(1).numpy(), 1.0, atol=1e-5)


def test_derived_weights_follow_parameter_changes():
    conv = ModulatedConv2d(8, 4, 3, 16, demodulate=False)
    conv.requires_grad_(False)
    x, s = torch.randn(2, 8, 5, 5), torch.rand(2, 8) + 0.5
    first = conv(x, s)
    with torch.no_grad():
        conv.weight.mul_(2.0)  # in place: the cached scaled weight must refresh
    assert float((conv(x, s) - 2 * first).abs().max()) < 1e-5
    conv.double()  # dtype change: cached fp32 weights must not be reused
    assert conv(x.double(), s.double()).dtype == torch.float64


# -------------------------------------------------------------------------------- generator math


def test_generator_layout_matches_stylespace(pair):
    gen, _ = pair
    assert gen.layers == stylespace_layout(gen.size, gen.channel_multiplier)
    assert gen.n_styles == sum(layer.size for layer in gen.layers)
    assert gen.n_latent == 2 * int(np.log2(gen.size)) - 2
    assert len(gen.layers) == 3 * int(np.log2(gen.size)) - 4


def test_mapping_matches_reference(pair):
    gen, ref = pair
    z = torch.randn(4, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w = gen.mapping(z)
    expected = ref.mapping(z)
    assert w.shape == (4, 512)
    assert float((w - expected).abs().max()) < 1e-5
    assert float(w.std()) > 0.1


def test_wplus_forward_matches_reference(pair):
    gen, ref = pair
    w = wplus(gen, 2, seed=2)
    with torch.no_grad():
        img = gen(w)
        s = gen.styles(w)
    ref_img, ref_styles = ref.forward_wplus(w)
    assert img.shape == (2, 3, gen.size, gen.size)
    assert float(ref_img.abs().max()) > 0.5 and float((img[0] - img[1]).abs().max()) > 0.1
    assert max_rel_err(img, ref_img) < 1e-5
    # S is StyleID's style vector: the raw modulation outputs, flattened in generator order
    assert s.shape == (2, gen.n_styles)
    assert float((s - ref.flatten(ref_styles)).abs().max()) < 1e-5


def test_stylespace_path_matches_reference(pair):
    gen, ref = pair
    w = wplus(gen, 2, seed=4)
    with torch.no_grad():
        s = gen.styles(w)
        img = gen.synthesize(s)
    ref_img = ref.forward_stylespace(ref.unflatten(s))
    assert max_rel_err(img, ref_img) < 1e-5


@pytest.mark.parametrize("upsample, demodulate, k", [(False, True, 3), (True, True, 3), (False, False, 1)])
def test_modulated_conv_float64_equals_weight_modulation(upsample, demodulate, k):
    """Activation modulation + static conv + output demodulation == per-sample weights + grouped conv."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 6, k, 16, demodulate=demodulate, upsample=upsample).double().requires_grad_(False)
    ref = ref_impl.ReferenceStyleGAN2({f"m.{key}": v for key, v in conv.state_dict().items()}, 8,
                                      dtype=torch.float64)
    x, w = torch.randn(3, 8, 5, 5, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    expected, style = ref._modulated_conv("m", x, w, False, demodulate, upsample)
    s = conv.modulation(w)
    assert float((style.reshape(3, 8) - s).abs().max()) < 1e-12
    out = conv(x, s)
    assert out.shape == expected.shape == (3, 6, 10 if upsample else 5, 10 if upsample else 5)
    assert max_rel_err(out, expected) < 1e-12


def test_affine_then_synthesis_equals_forward(gen32):
    w = wplus(gen32, 3, seed=6)
    with torch.no_grad():
        split = SynthesisModule(gen32)(AffineModule(gen32)(w))
        whole = gen32(w)
    assert split.shape == (3, 3, 32, 32)
    assert float((split - whole).abs().max()) == 0.0


def test_stylespace_channel_swap_matches_reference(gen32):
    gen, ref = gen32, ref_impl.ReferenceStyleGAN2(gen32.state_dict(), 32)
    w_src, w_tar = wplus(gen, 2, seed=8), wplus(gen, 2, seed=9)
    with torch.no_grad():
        s_src, s_tar = gen.styles(w_src), gen.styles(w_tar)
    idx = torch.randperm(gen.n_styles, generator=torch.Generator().manual_seed(0))[:200]
    swapped = s_src.clone()
    swapped[:, idx] = s_tar[:, idx]
    with torch.no_grad():
        img = gen.synthesize(swapped)
        img_src = gen(w_src)
    assert max_rel_err(img, ref.forward_stylespace(ref.unflatten(swapped))) < 1e-5
    assert float((img - img_src).abs().mean()) > 1e-3  # the swap changes the face
    # toRGB channels sit where the layout says
    mask = torgb_channel_mask(gen.layers)
    assert int(mask.sum()) == sum(layer.size for layer in gen.layers if layer.is_torgb)


def test_truncation(gen32):
    _, ref = gen32, ref_impl.ReferenceStyleGAN2(gen32.state_dict(), 32)
    with torch.no_grad():
        w = gen32.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(10)))
        avg = gen32.mean_latent(n=2000)
    assert avg.shape == (512,)
    t = Generator.truncate(w, 0.7, avg)
    assert float((t - ref.truncate(w, 0.7, avg)).abs().max()) < 1e-6
    assert float((t - (avg + 0.7 * (w - avg))).abs().max()) < 1e-6
    assert float((Generator.truncate(w, 1.0, avg) - w).abs().max()) < 1e-6
    assert float((Generator.truncate(w, 0.0, avg) - avg.expand(2, -1)).abs().max()) < 1e-6
    # closer to the mean, by exactly psi
    assert np.allclose(((t - avg).norm(dim=1) / (w - avg).norm(dim=1)).numpy(), 0.7, atol=1e-5)
    w_plus = Generator.truncate(w[:, None].expand(-1, gen32.n_latent, -1), 0.5, avg)
    with torch.no_grad():
        img = gen32(w_plus)
    assert max_rel_err(img, ref.forward_wplus(ref.truncate(w[:, None].repeat(1, 8, 1), 0.5, avg))[0]) < 1e-5


def test_random_generator_perturbs_zero_inits_and_is_deterministic():
    state_before = torch.random.get_rng_state()
    a, b, c = random_generator(16, 2, seed=1, n_mlp=2), random_generator(16, 2, seed=1, n_mlp=2), \
        random_generator(16, 2, seed=2, n_mlp=2)
    assert torch.equal(torch.random.get_rng_state(), state_before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.conv.weight"], sc["conv1.conv.weight"])
    for key, tensor in sa.items():
        if key.endswith(("noise.weight", "activate.bias")) or key.endswith(".bias") and "to_rgb" in key:
            assert float(tensor.abs().min()) > 0 or tensor.numel() > 1 and float(tensor.abs().max()) > 0.01, key
    assert float(sa["conv1.noise.weight"]) >= 0.1
    assert float((sa["convs.0.conv.modulation.bias"] - 1).abs().max()) > 0.05
    assert float((sa["style.1.bias"] * 0.01).std()) > 0.05
    # the noise strengths matter: zeroing them changes the image
    silent = copy.deepcopy(a)
    with torch.no_grad():
        for name, p in silent.named_parameters():
            if name.endswith("noise.weight"):
                p.zero_()
        w = wplus(a, 1, seed=0)
        assert float((a(w) - silent(w)).abs().mean()) > 1e-3


# -------------------------------------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def onnx_models(gen32, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    w1 = wplus(gen32, 1, seed=11)
    with torch.no_grad():
        s1 = gen32.styles(w1)
    paths = {
        "mapping": export_onnx(MappingModule(gen32), [torch.randn(1, 512)], out / "mapping.onnx",
                               input_names=["z"], output_names=["w"]),
        "affine": export_onnx(AffineModule(gen32), [w1], out / "affine.onnx",
                              input_names=["w_plus"], output_names=["styles"]),
        "synthesis": export_onnx(SynthesisModule(gen32), [s1], out / "synthesis.onnx",
                                 input_names=["styles"], output_names=["image"]),
    }
    return paths


def run_ort(path: Path, name: str, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [name]
    return sess.run(None, {name: x.numpy()})[0]


def test_onnx_parity_at_batch_3(gen32, onnx_models):
    z = torch.randn(3, 512, generator=torch.Generator().manual_seed(12))
    w3 = wplus(gen32, 3, seed=13)
    with torch.no_grad():
        expected = {"mapping": gen32.mapping(z), "affine": gen32.styles(w3)}
        s3 = expected["affine"]
        expected["synthesis"] = gen32.synthesize(s3)
    got = {"mapping": run_ort(onnx_models["mapping"], "z", z),
           "affine": run_ort(onnx_models["affine"], "w_plus", w3),
           "synthesis": run_ort(onnx_models["synthesis"], "styles", s3)}
    assert got["mapping"].shape == (3, 512)
    assert got["affine"].shape == (3, gen32.n_styles)
    assert got["synthesis"].shape == (3, 3, 32, 32)
    for key in got:
        np.testing.assert_allclose(got[key], expected[key].numpy(), rtol=1e-3, atol=1e-4, err_msg=key)


def test_onnx_graphs_are_static_and_clean(onnx_models):
    outputs = {"mapping": "w", "affine": "styles", "synthesis": "image"}
    for key, path in onnx_models.items():
        model = onnx.load(str(path))
        ops = Counter(node.op_type for node in model.graph.node)
        assert not set(ops) & FORBIDDEN_OPS, (key, ops)
        assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
        assert [o.name for o in model.graph.output] == [outputs[key]]
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    synth = onnx.load(str(onnx_models["synthesis"]))
    ops = Counter(node.op_type for node in synth.graph.node)
    # 7 modulated 3x3/1x1 convs + 4 FIR depthwise convs; 3 upsampling convs + 3 toRGB upsamples
    assert ops["Conv"] == 11 and ops["ConvTranspose"] == 6
    # Sum_k w^2, the scaled weights and the FIR weights are folded constants, not runtime ops
    assert ops["ReduceSum"] == 0 and ops["Pow"] == 0 and ops["Expand"] == 0
    # every conv weight is a named initializer (the exporter may alias identical FIR weights via Identity)
    initializers = {init.name for init in synth.graph.initializer}
    aliases = {node.output[0]: node.input[0] for node in synth.graph.node if node.op_type == "Identity"}
    conv_weights = [aliases.get(node.input[1], node.input[1]) for node in synth.graph.node
                    if node.op_type in ("Conv", "ConvTranspose")]
    assert all(name in initializers for name in conv_weights), conv_weights
    assert "derived_convs_1_conv_conv_weight" in conv_weights


def test_fresh_trainable_generator_exports_folded(tmp_path):
    gen = Generator(8, n_mlp=1)  # parameters still require grad
    path = export_onnx(SynthesisModule(gen), [torch.rand(1, gen.n_styles) + 0.5],
                       tmp_path / "s8.onnx", input_names=["styles"], output_names=["image"])
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    # Conv: conv1, to_rgb1, blur, conv, toRGB; ConvTranspose: upsampling conv, toRGB skip upsample
    assert ops["ReduceSum"] == 0 and ops["Conv"] == 5 and ops["ConvTranspose"] == 2
    s = torch.rand(2, gen.n_styles) + 0.5
    with torch.no_grad():
        expected = gen.synthesize(s).numpy()
    np.testing.assert_allclose(run_ort(path, "styles", s), expected, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------------ checkpoints


def test_save_and_load_round_trip(gen32, tmp_path):
    avg = gen32.mean_latent(n=1000)
    path = save_rosinality_checkpoint(gen32, avg, tmp_path / "g.pt")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"g_ema", "latent_avg"} and raw["latent_avg"].shape == (512,)
    gen, latent_avg, info = load_stylegan2(path)
    assert (info["size"], info["channel_multiplier"], info["n_mlp"], info["style_dim"]) == (32, 2, 8, 512)
    assert info["latent_avg_source"] == "checkpoint"
    assert torch.equal(latent_avg, avg)
    assert not gen.training
    w = wplus(gen32, 1, seed=14)
    with torch.no_grad():
        assert float((gen(w) - gen32(w)).abs().max()) == 0.0


def test_load_infers_64px_cm1_and_n_mlp(tmp_path):
    src = random_generator(64, 1, seed=5, n_mlp=3)
    path = save_rosinality_checkpoint(src, torch.zeros(512), tmp_path / "g64.pt")
    gen, _, info = load_stylegan2(path)
    assert (info["size"], info["channel_multiplier"], info["n_mlp"]) == (64, 1, 3)
    assert gen.n_styles == sum(layer.size for layer in stylespace_layout(64, 1))


def test_missing_latent_avg_is_computed_and_logged(tmp_path, caplog):
    src = random_generator(32, 2, seed=5, n_mlp=2)
    path = tmp_path / "bare.pt"
    torch.save({"g_ema": src.state_dict()}, path)
    with caplog.at_level(logging.WARNING, logger="styleid_edge.export.stylegan2"):
        gen, latent_avg, info = load_stylegan2(path)
    assert "no latent_avg" in caplog.text
    assert info["latent_avg_source"].startswith("computed")
    z = torch.randn(10_000, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = src.mapping(z).double().mean(0).float()
    assert latent_avg.shape == (512,)
    assert float((latent_avg - expected).abs().max()) < 1e-5
    # a bare state dict (no g_ema wrapper) loads too
    torch.save(src.state_dict(), tmp_path / "sd.pt")
    gen2, avg2, _ = load_stylegan2(tmp_path / "sd.pt")
    assert torch.equal(avg2, latent_avg) and gen2.size == 32


def test_e4e_decoder_keys_load_with_prefix(tmp_path):
    src = random_generator(32, 2, seed=6, n_mlp=2)
    state = {"encoder.input_layer.0.weight": torch.zeros(64, 3, 3, 3),
             **{f"decoder.{k}": v for k, v in src.state_dict().items()}}
    obj = {"state_dict": state, "latent_avg": torch.zeros(8, 512), "opts": {"stylegan_size": 32}}
    torch.save(obj, tmp_path / "e4e.pt")
    with pytest.raises(CheckpointError, match="encoder4editing") as err:
        load_stylegan2(tmp_path / "e4e.pt")
    assert "g_ema" in str(err.value)
    gen, info = load_stylegan2_state(state, "e4e.pt", prefix="decoder.", whole=obj)
    assert info["size"] == 32 and info["n_mlp"] == 2
    assert all(torch.equal(gen.state_dict()[k], v) for k, v in src.state_dict().items())
    with pytest.raises(CheckpointError, match="no keys start with 'generator.'"):
        load_stylegan2_state(state, "e4e.pt", prefix="generator.")


def test_size_mismatch_and_broken_state_dicts(tmp_path):
    src = random_generator(64, 2, seed=8, n_mlp=2)
    path = save_rosinality_checkpoint(src, torch.zeros(512), tmp_path / "g64.pt")
    with pytest.raises(CheckpointError, match=r"64 px .* size=32 was asked"):
        load_stylegan2(path, size=32)
    with pytest.raises(CheckpointError, match="channel_multiplier=1"):
        load_stylegan2(path, channel_multiplier=1)
    # a 64 px state dict into a 32 px generator: the extra layers are named
    with pytest.raises(CheckpointError) as err:
        load_state_strict(Generator(32, n_mlp=2), src.state_dict(), source="g64.pt",
                          expected="a 32 px generator")
    msg = str(err.value)
    # convs.6 (6 tensors with its blur kernel) + convs.7 (5) + to_rgbs.3 (5) + noise_7, noise_8
    assert "18 unexpected keys" in msg and "convs.6.conv.weight" in msg and "missing" not in msg
    # a damaged file: one key missing, one renamed, one of the wrong shape
    state = dict(src.state_dict())
    del state["to_rgbs.1.bias"]
    state["noises.noise_99"] = state.pop("noises.noise_8")
    state["convs.3.conv.weight"] = torch.zeros(1, 256, 512, 3, 3)
    torch.save({"g_ema": state, "latent_avg": torch.zeros(512)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_stylegan2(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "'noises.noise_8'" in msg and "'to_rgbs.1.bias'" in msg and "'noises.noise_99'" in msg
    assert "convs.3.conv.weight: file (1, 256, 512, 3, 3) vs model (1, 512, 512, 3, 3)" in msg
    # wrong latent_avg
    torch.save({"g_ema": src.state_dict(), "latent_avg": torch.zeros(18, 512)}, tmp_path / "avg.pt")
    with pytest.raises(CheckpointError, match=r"latent_avg must hold 512 values, got \(18, 512\)"):
        load_stylegan2(tmp_path / "avg.pt")


class _NeedsCode:
    def __init__(self):
        self.value = torch.zeros(2)


def test_files_that_are_not_stylegan2_checkpoints(tmp_path):
    torch.save(_NeedsCode(), tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_stylegan2(tmp_path / "pickle.pt")
    arcface = {"input_layer.0.weight": torch.zeros(64, 3, 3, 3), "output_layer.3.weight": torch.zeros(512, 10)}
    torch.save(arcface, tmp_path / "arcface.pt")
    with pytest.raises(CheckpointError, match="ArcFace"):
        load_stylegan2(tmp_path / "arcface.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_stylegan2(tmp_path / "missing.pt")
    # g_ema present but not a generator
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4, 4)}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="not a rosinality StyleGAN2 generator"):
        load_stylegan2(tmp_path / "partial.pt")


def test_real_1024_layout_loads_strictly(tmp_path):
    spec = json.loads(ROSINALITY_JSON.read_text())
    entries = spec["tensors"]["g_ema"]
    g = torch.Generator().manual_seed(0)
    state = {}
    for entry in entries:
        if "values" in entry:
            state[entry["name"]] = torch.tensor(entry["values"], dtype=torch.float32).reshape(entry["shape"])
        else:
            state[entry["name"]] = torch.randn(entry["shape"], generator=g)
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": state, "latent_avg": torch.randn(512, generator=g)}, path)
    gen, latent_avg, info = load_stylegan2(path)
    assert (info["size"], info["channel_multiplier"], info["n_mlp"], info["n_latent"]) == (1024, 2, 8, 18)
    assert gen.n_styles == 9088
    assert sum(layer.size for layer in gen.layers if not layer.is_torgb) == 6048
    assert latent_avg.shape == (512,)
    # our module writes exactly the real key list, in the real order, with the real shapes and FIR values
    fresh = Generator(1024).state_dict()
    assert list(fresh) == [e["name"] for e in entries]
    assert all(list(fresh[e["name"]].shape) == e["shape"] for e in entries)
    for entry in entries:
        if "values" in entry:
            assert np.allclose(fresh[entry["name"]].flatten().numpy(), entry["values"])
    loaded = gen.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
