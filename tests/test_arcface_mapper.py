"""ArcFace IR-SE50 recognizer, insightface ONNX import, and StyleID's latent swapper (LevelsJoinMapper)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from styleid_edge.export.arcface import (ArcFaceConfig, ArcFaceModule, arcface_from_checkpoint,
                                         import_recognizer_onnx, load_arcface, random_arcface,
                                         save_arcface_checkpoint)
from styleid_edge.export.checkpoints import CheckpointError
from styleid_edge.export.e4e import E4EConfig, random_e4e, save_e4e_checkpoint
from styleid_edge.export.mapper import (MapperConfig, MapperModule, level_bounds, load_mapper, mapper_from_checkpoint,
                                        random_mapper, save_mapper_checkpoint)
from styleid_edge.export.onnx_io import export_onnx

from layouts import reference_layout, state_from_layout

def _faces(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


# =========================================================================== ArcFace


@pytest.fixture(scope="module")
def tiny_arcface() -> ArcFaceModule:
    return random_arcface(ArcFaceConfig.tiny(embedding_dim=128), seed=5)


def test_arcface_onnx_parity_tiny(tiny_arcface, tmp_path):
    path = export_onnx(tiny_arcface, [_faces(1)], tmp_path / "recognizer.onnx", input_names=["face"],
                       output_names=["embedding"])
    x = _faces(3, seed=2)
    got = _run_onnx(path, {"face": x.numpy()})
    with torch.no_grad():
        want = tiny_arcface(x).numpy()
    assert got.shape == (3, 128)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert float(got[0] @ got[1]) < 0.999  # different faces, different embeddings


def test_arcface_eval_is_batch_independent_and_deterministic(tiny_arcface):
    assert not tiny_arcface.training
    x = _faces(3, seed=3)
    with torch.no_grad():
        alone, batched, again = tiny_arcface(x[2:3]), tiny_arcface(x), tiny_arcface(x)
    torch.testing.assert_close(alone[0], batched[2], rtol=1e-5, atol=1e-6)
    assert torch.equal(batched, again)  # dropout off


@pytest.fixture(scope="module")
def real_layout_arcface() -> tuple[ArcFaceModule, dict[str, torch.Tensor]]:
    state = state_from_layout(reference_layout("arcface_ir_se50.json")["tensors"]["model"])
    module, info = arcface_from_checkpoint(state, source="model_ir_se50.pth")
    assert (info["input_size"], info["embedding_dim"]) == (112, 512)
    return module, state


def test_arcface_real_layout_strict_load(real_layout_arcface):
    """The full IR-SE50 from model_ir_se50.pth's exact keys loads strictly and runs."""
    module, state = real_layout_arcface
    assert module.config.body.stage_units == (3, 4, 14, 3) and module.config.bn_affine
    assert set(module.state_dict()) == set(state) and len(state) == 397
    assert torch.equal(module.state_dict()["output_layer.3.weight"], state["output_layer.3.weight"])
    assert torch.equal(module.state_dict()["body.23.res_layer.5.fc2.weight"], state["body.23.res_layer.5.fc2.weight"])
    with torch.no_grad():
        emb = module(_faces(2, seed=4))
    assert emb.shape == (2, 512) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert float((emb[0] - emb[1]).abs().max()) > 1e-3


@pytest.mark.slow
def test_arcface_real_size_onnx_parity(real_layout_arcface, tmp_path):
    module, _ = real_layout_arcface
    path = export_onnx(module, [_faces(1)], tmp_path / "recognizer.onnx", input_names=["face"],
                       output_names=["embedding"])
    x = _faces(3, seed=4)
    got = _run_onnx(path, {"face": x.numpy()})
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    assert got.shape == (3, 512)


def test_arcface_roundtrip_and_dataparallel_prefix(tiny_arcface, tmp_path):
    path = save_arcface_checkpoint(tiny_arcface, tmp_path / "ir_se.pth")
    module, info = load_arcface(path)
    x = _faces(2)
    with torch.no_grad():
        assert torch.equal(module(x), tiny_arcface(x))
    assert info["embedding_dim"] == 128 and len(info["sha256"]) == 64
    prefixed = {f"module.{k}": v for k, v in torch.load(path, weights_only=True).items()}
    torch.save(prefixed, tmp_path / "dp.pth")
    module2, _ = load_arcface(tmp_path / "dp.pth")
    with torch.no_grad():
        assert torch.equal(module2(x), tiny_arcface(x))


def test_arcface_loader_rejects_other_files(tmp_path):
    decoder = {"style.1.weight": torch.zeros(4, 4)}  # real e4e files carry the generator as decoder.*
    save_e4e_checkpoint(random_e4e(E4EConfig.tiny()), tmp_path / "e4e.pt", decoder_state=decoder)
    with pytest.raises(CheckpointError) as err:
        load_arcface(tmp_path / "e4e.pt")
    msg = str(err.value)
    assert "encoder4editing" in msg and "397 missing keys" in msg and "unexpected keys" in msg and "encoder.body" in msg
    save_mapper_checkpoint(random_mapper(), tmp_path / "mapper.pt")
    with pytest.raises(CheckpointError, match=r"latent-swapper.*missing keys.*unexpected keys.*course_mapping"):
        load_arcface(tmp_path / "mapper.pt")


# --------------------------------------------------------------------------- insightface ONNX recognizers


class _MxnetStyle(nn.Module):
    """Recognizer that normalises inside the graph, like insightface's mxnet-converted models (Sub, Mul first)."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core((x - 127.5) * (1.0 / 127.5))


class _Nhwc(nn.Module):
    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core(x.permute(0, 3, 1, 2))


def _export_plain(module: nn.Module, example: torch.Tensor, path: Path, dynamic: bool, in_name: str = "input.1"):
    """A third-party style ONNX file (not through our exporter): names like insightface's, optional fixed batch."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[in_name], output_names=["fc1"],
                          dynamic_axes={in_name: {0: "None"}, "fc1": {0: "None"}} if dynamic else None,
                          opset_version=17, dynamo=False)
    return path


def test_import_recognizer_insightface_style(tiny_arcface, tmp_path):
    src = _export_plain(tiny_arcface, _faces(1), tmp_path / "w600k_r50.onnx", dynamic=True)
    info = import_recognizer_onnx(src, tmp_path / "pack" / "recognizer.onnx")
    assert (tmp_path / "pack" / "recognizer.onnx").read_bytes() == src.read_bytes()
    assert info["input_name"] == "input.1" and info["output_name"] == "fc1"
    assert info["input_size"] == [112, 112] and info["layout"] == "NCHW" and info["channels"] == "RGB"
    assert (info["input_mean"], info["input_std"], info["normalisation_in_graph"]) == (127.5, 127.5, False)
    assert info["from_unit_range"] == {"scale": 1.0, "offset": 0.0}
    assert info["embedding_dim"] == 128 and info["dynamic_batch"] and info["batch"] is None


def test_import_recognizer_baked_normalisation_and_nhwc(tiny_arcface, tmp_path):
    src = _export_plain(_MxnetStyle(tiny_arcface), _faces(1) * 127.5 + 127.5, tmp_path / "mx.onnx", dynamic=False)
    info = import_recognizer_onnx(src, tmp_path / "recognizer.onnx")
    assert info["normalisation_in_graph"] and (info["input_mean"], info["input_std"]) == (0.0, 1.0)
    assert info["from_unit_range"] == {"scale": 127.5, "offset": 127.5}
    assert info["batch"] == 1 and not info["dynamic_batch"] and any("batch is fixed" in n for n in info["notes"])
    # following the reported recipe reproduces the torch embedding
    face = _faces(1, seed=9)
    fed = face.numpy() * info["from_unit_range"]["scale"] + info["from_unit_range"]["offset"]
    got = _run_onnx(tmp_path / "recognizer.onnx", {info["input_name"]: fed.astype(np.float32)})
    with torch.no_grad():
        np.testing.assert_allclose(got, tiny_arcface(face).numpy(), rtol=1e-3, atol=1e-4)

    nhwc = _export_plain(_Nhwc(tiny_arcface), _faces(1).permute(0, 2, 3, 1), tmp_path / "nhwc.onnx", dynamic=True)
    info = import_recognizer_onnx(nhwc, tmp_path / "recognizer2.onnx")
    assert info["layout"] == "NHWC" and info["input_size"] == [112, 112] and info["input_shape"][3] == 3


def test_import_recognizer_rejects_non_recognizers(tmp_path):
    class Detector(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(x, 4)

    det = _export_plain(Detector(), torch.zeros(1, 3, 64, 64), tmp_path / "det.onnx", dynamic=True)
    with pytest.raises(CheckpointError, match=r"expected \(B, D\) embeddings"):
        import_recognizer_onnx(det, tmp_path / "out.onnx")
    gray = _export_plain(nn.Flatten(), torch.zeros(1, 1, 112, 112), tmp_path / "gray.onnx", dynamic=True)
    with pytest.raises(CheckpointError, match="no 3-channel axis"):
        import_recognizer_onnx(gray, tmp_path / "out.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(CheckpointError, match="not a valid ONNX model"):
        import_recognizer_onnx(tmp_path / "junk.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


# =========================================================================== latent swapper


@pytest.fixture(scope="module")
def mapper() -> MapperModule:
    return random_mapper(MapperConfig(), seed=2)


def _w(n: int, rows: int = 18, dim: int = 512, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, rows, dim, generator=torch.Generator().manual_seed(seed))


def test_level_bounds():
    assert level_bounds(18) == (5, 8, 12)
    assert level_bounds(8) == (2, 4, 5) and level_bounds(10) == (3, 4, 7) and level_bounds(14) == (4, 6, 9)
    for n in range(4, 40):
        c, i, m = level_bounds(n)
        assert 0 < c < i < m < n, n
    with pytest.raises(ValueError, match="at least 4"):
        level_bounds(3)


def _reference_mask(module: MapperModule, w_src: torch.Tensor, w_tar: torch.Tensor) -> torch.Tensor:
    """StyleID's math written out by hand (PixelNorm over dim 1, bias on the last dim, sigmoid, ones for id)."""
    c, i, m = module.config.bounds
    parts = []
    for lo, hi, level in ((0, c, "course"), (c, i, None), (i, m, "medium"), (m, w_src.shape[1], "fine")):
        if level is None:
            parts.append(torch.ones_like(w_src[:, lo:hi]))
            continue
        x = torch.cat([w_src[:, lo:hi], w_tar[:, lo:hi]], dim=2)
        x = x * torch.rsqrt((x ** 2).mean(dim=1, keepdim=True) + 1e-8)
        for j in (1, 2):
            lin = getattr(module.mapper, f"{level}_mapping").mapping[j]
            w = lin.weight * 0.01 / math.sqrt(lin.weight.shape[1])
            x = torch.nn.functional.leaky_relu(x @ w.T + (lin.bias * 0.01).view(1, 1, -1), 0.2) * math.sqrt(2)
        parts.append(torch.sigmoid(x))
    return torch.cat(parts, dim=1)


def test_mapper_math_matches_styleid(mapper):
    w_src, w_tar = _w(2, seed=1), _w(2, seed=2)
    with torch.no_grad():
        m = mapper.mask(w_src, w_tar)
        ref = _reference_mask(mapper, w_src, w_tar)
        out = mapper(w_src, w_tar)
    torch.testing.assert_close(m, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, m * w_tar + (1 - m) * w_src, rtol=0, atol=0)
    free = torch.cat([m[:, :5], m[:, 8:]], dim=1)
    assert 0.0 < float(free.min()) and float(free.max()) < 1.0 and float(free.std()) > 0.05


def test_identity_rows_are_the_target_exactly(mapper, tmp_path):
    w_src, w_tar = _w(3, seed=3), _w(3, seed=4)
    with torch.no_grad():
        out = mapper(w_src, w_tar)
    assert torch.equal(out[:, 5:8], w_tar[:, 5:8])
    assert float((out[:, :5] - w_tar[:, :5]).abs().mean()) > 0.1  # other rows really are mixed
    path = export_onnx(mapper, [w_src[:1], w_tar[:1]], tmp_path / "mapper.onnx", input_names=["w_src", "w_tar"],
                       output_names=["w_anon"])
    got = _run_onnx(path, {"w_src": w_src.numpy(), "w_tar": w_tar.numpy()})
    np.testing.assert_array_equal(got[:, 5:8], w_tar[:, 5:8].numpy())
    np.testing.assert_allclose(got, out.numpy(), rtol=1e-3, atol=1e-4)


def test_pixelnorm_runs_over_the_layer_axis(mapper):
    """Changing one coarse row of w_src changes the other coarse rows' masks (normalised together), nothing else."""
    w_src, w_tar = _w(1, seed=5), _w(1, seed=6)
    moved = w_src.clone()
    moved[:, 0] *= 3.0
    with torch.no_grad():
        diff = (mapper.mask(moved, w_tar) - mapper.mask(w_src, w_tar)).abs().amax(dim=(0, 2))
    assert float(diff[1:5].min()) > 1e-4      # rows 1-4 were not edited but their normalisation changed
    assert float(diff[5:].max()) == 0.0        # identity, medium and fine blocks untouched
    # a per-row (feature-axis) PixelNorm would leave rows 1-4 unchanged: the quirk is real
    x = torch.cat([w_src[:, :5], w_tar[:, :5]], dim=2)
    x2 = torch.cat([moved[:, :5], w_tar[:, :5]], dim=2)
    per_row = lambda t: t * torch.rsqrt((t ** 2).mean(dim=2, keepdim=True) + 1e-8)  # noqa: E731
    assert torch.allclose(per_row(x)[:, 1:], per_row(x2)[:, 1:])


def test_mapper_batch_independent_and_tiny_parity(tmp_path):
    module = random_mapper(MapperConfig(n_latent=8, latent_dim=64), seed=7)
    w_src, w_tar = _w(3, 8, 64, seed=8), _w(3, 8, 64, seed=9)
    path = export_onnx(module, [w_src[:1], w_tar[:1]], tmp_path / "mapper.onnx", input_names=["w_src", "w_tar"],
                       output_names=["w_anon"])
    got = _run_onnx(path, {"w_src": w_src.numpy(), "w_tar": w_tar.numpy()})
    with torch.no_grad():
        want = module(w_src, w_tar)
        alone = module(w_src[1:2], w_tar[1:2])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(alone[0], want[1], rtol=1e-6, atol=1e-6)
    assert torch.equal(want[:, 2:4], w_tar[:, 2:4])  # identity block of 8 rows: (2, 4)


def test_mapper_real_layout_strict_load_and_roundtrip(tmp_path):
    entries = reference_layout("styleid_mapper_levelsjoin.json")["tensors"]["mapper"]
    g = torch.Generator().manual_seed(0)
    # lr_mul=0.01 layers store weight / lr_mul and bias / lr_mul (rosinality's init is randn / lr_mul)
    state = {f"mapper.{e['name']}": torch.randn(e["shape"], generator=g) * (100.0 if len(e["shape"]) == 2 else 30.0)
             for e in entries}
    module, info = mapper_from_checkpoint({"state_dict": state}, source="mapper.pt")
    assert info["n_latent"] == 18 and info["latent_dim"] == 512 and info["bounds"] == [5, 8, 12]
    own = module.state_dict()
    assert set(own) == set(state) and len(state) == 12
    assert all(torch.equal(own[k], v) for k, v in state.items())
    path = save_mapper_checkpoint(module, tmp_path / "mapper.pt")
    again, info2 = load_mapper(path)
    w_src, w_tar = _w(2, seed=10), _w(2, seed=11)
    with torch.no_grad():
        assert torch.equal(again(w_src, w_tar), module(w_src, w_tar))
        swapped, _ = load_mapper(path, src_first=False)
        assert float((swapped(w_src, w_tar) - module(w_src, w_tar)).abs().max()) > 1e-3
    assert len(info2["sha256"]) == 64 and not swapped.src_first


def test_mapper_loader_errors(tmp_path):
    save_e4e_checkpoint(random_e4e(E4EConfig.tiny()), tmp_path / "e4e.pt",
                        decoder_state={"style.1.weight": torch.zeros(4, 4)})
    with pytest.raises(CheckpointError) as err:
        load_mapper(tmp_path / "e4e.pt")
    msg = str(err.value)
    assert "encoder4editing" in msg and "12 missing keys" in msg and "mapper.course_mapping" in msg
    assert "unexpected keys" in msg and "encoder." in msg
    state = random_mapper().state_dict()
    state.pop("mapper.fine_mapping.mapping.2.bias")
    torch.save({"state_dict": state}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"1 missing keys.*fine_mapping\.mapping\.2\.bias"):
        load_mapper(tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"w_src of shape \(B, 18, 512\)"):
        random_mapper()(_w(1, 14), _w(1, 14))
