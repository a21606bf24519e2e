"""e4e encoder: architecture vs the real key layout, ONNX parity, eval-mode BN, loaders and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from styleid_edge.export.checkpoints import CheckpointError
from styleid_edge.export.e4e import (E4EConfig, E4EEncoderModule, e4e_from_checkpoint, infer_e4e_config, load_e4e,
                                     n_styles_for, random_e4e, save_e4e_checkpoint)
from styleid_edge.export.irse import IRSE50, make_body, make_input_layer
from styleid_edge.export.onnx_io import export_onnx

from layouts import reference_layout, state_from_layout

def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --------------------------------------------------------------------------- architecture vs the real layout


def test_irse50_body_matches_real_keys_and_taps():
    entries = reference_layout("e4e_ffhq_encode_1024.json")["tensors"]["encoder"]
    real = {e["name"]: tuple(e["shape"]) for e in entries if e["name"].startswith(("body.", "input_layer."))}
    ours = {f"input_layer.{k}": tuple(v.shape) for k, v in make_input_layer(IRSE50).state_dict().items()}
    ours.update({f"body.{k}": tuple(v.shape) for k, v in make_body(IRSE50).state_dict().items()})
    assert ours == real
    assert len(IRSE50.unit_plan()) == 24
    assert IRSE50.stage_ends() == [2, 6, 20, 23]  # e4e taps c1, c2, c3 after body[6], body[20], body[23]
    conv_shortcuts = sorted({int(k.split(".")[1]) for k in real if "shortcut_layer" in k})
    assert conv_shortcuts == [3, 7, 21]


def test_full_1024_layout_loads_strictly_and_runs():
    layout = reference_layout("e4e_ffhq_encode_1024.json")
    gen_layout = reference_layout("stylegan2_rosinality_1024_cm2.json")
    enc = state_from_layout(layout["tensors"]["encoder"])
    dec = state_from_layout(gen_layout["tensors"]["g_ema"], seed=1)
    latent_avg = torch.randn(18, 512)
    obj = {"state_dict": {**{f"encoder.{k}": v for k, v in enc.items()}, **{f"decoder.{k}": v for k, v in dec.items()}},
           "latent_avg": latent_avg, "opts": dict(layout["layout"]["opts"]["value"])}
    module, info = e4e_from_checkpoint(obj, source="e4e_ffhq_encode.pt")
    assert (info["n_latent"], info["style_dim"], info["input_size"], info["stylegan_size"]) == (18, 512, 256, 1024)
    assert info["body"]["stage_units"] == [3, 4, 14, 3]
    assert [len(module.encoder.styles[i].convs) // 2 for i in (0, 2, 3, 6, 7, 17)] == [4, 4, 5, 5, 6, 6]
    assert not module.training
    assert set(info["decoder_state"]) == {e["name"] for e in gen_layout["tensors"]["g_ema"]}
    loaded = module.encoder.state_dict()
    assert len(loaded) == len(enc) == 621
    for key in ("body.21.shortcut_layer.0.weight", "styles.17.convs.10.weight", "latlayer2.bias"):
        assert torch.equal(loaded[key], enc[key])
    assert torch.equal(module.latent_avg, latent_avg)
    with torch.no_grad():
        x = _images(1, 256)
        w = module(x)
    assert w.shape == (1, 18, 512) and torch.isfinite(w).all()
    assert float((w - latent_avg).abs().mean()) > 1e-3


# --------------------------------------------------------------------------- behaviour (tiny config)


@pytest.fixture(scope="module")
def tiny() -> E4EEncoderModule:
    return random_e4e(E4EConfig.tiny(stylegan_size=32, input_size=64), seed=3)


def test_tiny_config_shape(tiny):
    cfg = tiny.config
    assert cfg.n_styles == n_styles_for(32) == 8 and n_styles_for(1024) == 18 and n_styles_for(64) == 10
    assert [cfg.block_spatial(i) for i in (0, 3, 7)] == [4, 8, 16]
    assert infer_e4e_config(tiny.encoder.state_dict()) == cfg


def test_onnx_parity_batch1_export_batch3_run(tiny, tmp_path):
    path = export_onnx(tiny, [_images(1, 64)], tmp_path / "encoder.onnx", input_names=["image"],
                       output_names=["w_plus"])
    x = _images(3, 64, seed=7)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = tiny(x).numpy()
    assert got.shape == (3, 8, 64)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    # the encoder part really depends on the image (not only latent_avg)
    assert np.abs(got[0] - got[1]).mean() > 1e-3


def test_latent_avg_added_and_w0_repeated_plus_deltas(tiny):
    x = _images(2, 64)
    with torch.no_grad():
        full = tiny(x)
        raw = tiny.encoder(x)
        assert torch.allclose(full - raw, tiny.latent_avg.expand_as(full), atol=1e-6)
        assert float(tiny.latent_avg.abs().mean()) > 0.1
        # zero every delta head: every row becomes w0
        muted = random_e4e(tiny.config, seed=3)
        for block in muted.encoder.styles[1:]:
            block.linear.weight.zero_()
            block.linear.bias.zero_()
        rows = muted.encoder(x)
    assert torch.allclose(rows, rows[:, :1].expand_as(rows), atol=0)
    assert torch.allclose(rows[:, 0], raw[:, 0], atol=1e-6)
    assert float((raw[:, 1:] - raw[:, :1]).abs().mean()) > 1e-3


@pytest.mark.parametrize("layer, first_changed", [("latlayer1", 3), ("latlayer2", 7)])
def test_fpn_routing(tiny, layer, first_changed):
    """latlayer1 (c2) feeds styles 3.., latlayer2 (c1) feeds styles 7..; rows before are untouched."""
    x = _images(2, 64)
    other = random_e4e(tiny.config, seed=3)
    with torch.no_grad():
        getattr(other.encoder, layer).bias.add_(0.5)
        base, moved = tiny(x), other(x)
    diff = (moved - base).abs().amax(dim=(0, 2))
    assert float(diff[:first_changed].max()) == 0.0
    assert float(diff[first_changed:].min()) > 1e-4


def test_batchnorm_eval_batch_independent(tiny):
    assert not tiny.training
    x = _images(3, 64, seed=11)
    with torch.no_grad():
        alone = tiny(x[1:2])
        batched = tiny(x)
        again = tiny(x)
    torch.testing.assert_close(alone[0], batched[1], rtol=1e-5, atol=1e-5)
    assert torch.equal(batched, again)
    bn = tiny.encoder.input_layer[1]
    assert float(bn.running_var.std()) > 0.05  # statistics are not the identity defaults


def test_wrong_input_size_is_explained(tiny):
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        tiny(_images(1, 32))


# --------------------------------------------------------------------------- files


def test_checkpoint_roundtrip(tiny, tmp_path):
    decoder = {"style.1.weight": torch.randn(4, 4), "noises.noise_0": torch.randn(1, 1, 4, 4)}
    path = save_e4e_checkpoint(tiny, tmp_path / "e4e_tiny.pt", decoder_state=decoder)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "latent_avg", "opts"}
    assert raw["latent_avg"].shape == (8, 64) and raw["opts"]["stylegan_size"] == 32
    assert {k.split(".")[0] for k in raw["state_dict"]} == {"encoder", "decoder"}
    module, info = load_e4e(path)
    x = _images(2, 64)
    with torch.no_grad():
        assert torch.equal(module(x), tiny(x))
    assert info["n_latent"] == 8 and info["input_size"] == 64 and info["stylegan_size"] == 32
    assert len(info["sha256"]) == 64 and torch.equal(info["decoder_state"]["noises.noise_0"], decoder["noises.noise_0"])
    assert torch.equal(info["latent_avg"], tiny.latent_avg)


def test_latent_avg_single_row_is_repeated(tiny, tmp_path):
    path = save_e4e_checkpoint(tiny, tmp_path / "e4e.pt")
    raw = torch.load(path, weights_only=True)
    raw["latent_avg"] = torch.arange(64, dtype=torch.float32)
    torch.save(raw, path)
    module, info = load_e4e(path)
    assert module.latent_avg.shape == (8, 64)
    assert torch.equal(module.latent_avg, torch.arange(64, dtype=torch.float32).repeat(8, 1))
    assert info["decoder_state"] is None


def _tiny_file(tiny, tmp_path, mutate) -> Path:
    path = save_e4e_checkpoint(tiny, tmp_path / "e4e.pt")
    raw = torch.load(path, weights_only=True)
    mutate(raw)
    torch.save(raw, path)
    return path


def test_loader_errors_name_keys_and_file_kind(tiny, tmp_path):
    arcface_like = {e["name"]: torch.zeros(e["shape"], dtype=torch.int64 if e.get("dtype") == "int64"
                                           else torch.float32)
                    for e in reference_layout("arcface_ir_se50.json")["tensors"]["model"]}
    torch.save(arcface_like, tmp_path / "model_ir_se50.pth")
    with pytest.raises(CheckpointError) as err:
        load_e4e(tmp_path / "model_ir_se50.pth")
    msg = str(err.value)
    assert "ArcFace IR-SE backbone" in msg and "missing keys" in msg and "styles." in msg
    assert "unexpected keys" in msg and "output_layer" in msg

    mapper_like = {"state_dict": {"mapper.course_mapping.mapping.1.weight": torch.zeros(512, 1024)}}
    torch.save(mapper_like, tmp_path / "mapper.pt")
    with pytest.raises(CheckpointError, match=r"latent-swapper.*missing keys.*unexpected keys.*mapper\.course"):
        load_e4e(tmp_path / "mapper.pt")


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: raw["state_dict"].__setitem__("encoder.latlayer1.weight", torch.zeros(48, 30, 1, 1)),
     r"1 shape mismatches.*latlayer1\.weight"),
    (lambda raw: raw["state_dict"].pop("encoder.styles.2.linear.bias"), r"1 missing keys.*styles\.2\.linear\.bias"),
    (lambda raw: raw["state_dict"].__setitem__("encoder.extra.weight", torch.zeros(1)), r"unexpected keys.*extra"),
    (lambda raw: raw.pop("latent_avg"), r"no 'latent_avg'"),
    (lambda raw: raw.__setitem__("latent_avg", torch.zeros(5, 64)), r"latent_avg has shape \(5, 64\)"),
    (lambda raw: raw["opts"].__setitem__("encoder_type", "GradualStyleEncoder"), r"only 'Encoder4Editing'"),
])
def test_loader_rejects_inconsistent_files(tiny, tmp_path, mutate, message):
    path = _tiny_file(tiny, tmp_path, mutate)
    with pytest.raises(CheckpointError, match=message):
        load_e4e(path)


def test_not_a_weights_only_file(tmp_path):
    path = tmp_path / "e4e.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_e4e(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_e4e(tmp_path / "missing.pt")
