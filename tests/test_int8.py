"""`calibrate int8`: QDQ pack variant of the tiny pack, style path kept float, runtime runs it.

The tiny pack has random weights, so INT8 error is larger than on a trained pack; the bounds below
check what is meaningful here: the int8 outputs track the float ones closely (correlation, PSNR
floor, embedding cosine), and nothing quantized touches modulation/demodulation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from styleid_edge.calibration.int8 import (Int8Config, Int8Error, calibrate_int8, qdq_on_style_path,
                                           style_path)
from styleid_edge.calibration.int8_cli import register_int8
from styleid_edge.runtime.pack import ModelPack

PHOTOS = Path(__file__).parent / "data" / "photos"
QDQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def int8_result(tiny_pack, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "tiny32-int8"
    cfg = Int8Config(eval_samples=4, speed_repeats=3, intra_op_threads=1)
    return calibrate_int8(tiny_pack, out, synthetic=8, config=cfg)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_int8_pack_loads_with_qdq_models(tiny_pack, int8_result):
    pack, _ = int8_result
    pack = ModelPack.load(pack.root)  # validates the manifest and every file
    q = pack.manifest.defaults["quantization"]
    assert sorted(q["int8"]) == ["encoder", "recognizer", "synthesis"]
    assert q["calibration"].startswith("synthetic:8") and q["format"] == "QDQ"
    assert "int8" in pack.manifest.provenance and pack.manifest.synthetic
    assert pack.manifest.files["synthesis"].endswith(".int8.onnx")
    checks = dict(pack.verify_files())  # the quantized files' checksums, not the float ones'
    assert set(checks) == set(pack.manifest.files.values()) and set(checks.values()) == {"ok"}
    umask = os.umask(0)
    os.umask(umask)
    assert pack.root.stat().st_mode & 0o777 == 0o777 & ~umask  # staged owner-only, published as the umask allows
    for role in ("encoder", "synthesis", "recognizer"):
        ops = [n.op_type for n in onnx.load(str(pack.model_path(role))).graph.node]
        assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0, role
        assert pack.model_path(role).stat().st_size < 0.5 * tiny_pack.model_path(role).stat().st_size
    for role in ("mapping", "affine", "mapper"):  # float models copied as they are
        assert _sha(pack.model_path(role)) == _sha(tiny_pack.model_path(role))
    assert json.loads((pack.root / "int8_report.json").read_text())["models"]


def test_style_path_stays_float(tiny_pack, int8_result):
    pack, _ = int8_result
    fmodel = onnx.load(str(tiny_pack.model_path("synthesis")))
    qmodel = onnx.load(str(pack.model_path("synthesis")))
    assert qdq_on_style_path(qmodel) == []
    # independent check by names and inputs
    styles, island = style_path(fmodel)
    qnodes = [n for n in qmodel.graph.node if n.op_type in QDQ]
    produced_by_dq = {o for n in qnodes if n.op_type == "DequantizeLinear" for o in n.output}
    for n in qnodes:
        assert not any("demod" in t or t == "styles" or t.startswith("/Split_output") for t in [*n.input, *n.output]), n.name
    inits = {i.name: i for i in qmodel.graph.initializer}
    demod = [n for n in qmodel.graph.node if n.op_type == "MatMul" and any("demod_weight" in i for i in n.input)]
    n_sqrt = sum(n.op_type == "Sqrt" for n in qmodel.graph.node)
    assert len(demod) == n_sqrt == sum(n.op_type == "Sqrt" for n in fmodel.graph.node) > 0
    for n in demod:  # Σw² stays a float initializer, s² a float tensor
        w = [i for i in n.input if "demod_weight" in i][0]
        assert inits[w].data_type == onnx.TensorProto.FLOAT and not any(i in produced_by_dq for i in n.input)
    qnames = {n.name: n for n in qmodel.graph.node}
    for name in island:  # modulation x*s, demodulation *d, Sqrt/Div: still float nodes, style input not via DQ
        node = qnames[name]
        assert node.op_type not in QDQ and not node.op_type.startswith("QLinear")
        style_inputs = [i for i in node.input if i in styles]
        assert style_inputs and not any(i in produced_by_dq for i in style_inputs)
    assert {qnames[n].op_type for n in island} >= {"Mul", "MatMul", "Sqrt", "Div", "Split"}
    # the convolutions themselves are quantized (their weights come through DequantizeLinear)
    convs = [n for n in qmodel.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(n.input[1] in produced_by_dq for n in convs)


def test_quality_report_is_sane(int8_result):
    _, report = int8_result
    by = {m.role: m for m in report.models}
    assert set(by) == {"encoder", "recognizer", "synthesis"}
    s = by["synthesis"].quality
    # random weights: INT8 error is well above a trained model's, but the image must track the float one
    assert math.isfinite(s["psnr_db"]) and s["psnr_db"] > 18, s
    assert s["corr"] > 0.98, s
    e = by["encoder"].quality
    assert e["wplus_rel"] < 0.15 and e["corr"] > 0.98 and 0 < e["wplus_mean_abs"] <= e["wplus_max_abs"], e
    r = by["recognizer"].quality
    assert r["cosine_mean"] > 0.9 and r["cosine_min"] > 0.8, r
    for m in by.values():
        assert m.int8_mb < m.float_mb and m.float_ms > 0 and m.int8_ms > 0 and m.speedup > 0
    table = report.table()
    assert "psnr_db" in table and "speed-up" in table


def test_runtime_runs_int8_pack(int8_result):
    from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig

    pack, _ = int8_result
    frame = cv2.resize(cv2.imread(str(PHOTOS / "obama.jpg")), (455, 568))
    anon = Anonymizer(AnonymizerConfig(method="latent", seed=3, verify=False), pack=pack.root)
    out, faces = anon.process(frame)
    assert len(faces) == 1 and faces[0].method == "latent" and faces[0].fallback is None
    x1, y1, x2, y2 = map(int, faces[0].box)
    diff = np.abs(out[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2].astype(int)).mean()
    assert diff > 5, diff
    assert set(anon.finish().to_dict()["providers"].values()) <= {"CPUExecutionProvider"}


def test_data_folder_calibration_via_cli(tiny_pack, tmp_path, capsys):
    data = tmp_path / "faces"
    data.mkdir()
    for name in ("obama.jpg", "biden.jpg", "obama2.jpg"):
        shutil.copy(PHOTOS / name, data / name)
    (data / "notes.txt").write_text("not an image")
    parser = argparse.ArgumentParser()
    register_int8(parser.add_subparsers(dest="calibrate_command", required=True))
    out = tmp_path / "int8-data"
    args = parser.parse_args(["int8", "--pack", str(tiny_pack.root), "--data", str(data), "--out", str(out),
                              "--roles", "encoder,recognizer", "--no-speed", "--eval-samples", "2"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "INT8 pack written" in printed and "wplus_max_abs" in printed and "cosine_mean" in printed
    pack = ModelPack.load(out)
    q = pack.manifest.defaults["quantization"]
    assert q["int8"] == ["encoder", "recognizer"] and q["calibration"].startswith("data:")
    assert pack.manifest.files["synthesis"] == tiny_pack.manifest.files["synthesis"]  # left float
    report = json.loads((out / "int8_report.json").read_text())
    assert report["calibration"]["encoder_faces"] >= 3 and report["calibration"]["recognizer_faces"] >= 3


def test_errors_say_what_to_do(tiny_pack, int8_result, tmp_path):
    with pytest.raises(Int8Error, match="exactly one of"):
        calibrate_int8(tiny_pack, tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Int8Error, match="--synthetic"):
        calibrate_int8(tiny_pack, tmp_path / "y", data=tmp_path / "empty")
    with pytest.raises(Int8Error, match="already an INT8 pack"):
        calibrate_int8(int8_result[0], tmp_path / "z", synthetic=2)
    with pytest.raises(Int8Error, match="--out must differ"):
        calibrate_int8(tiny_pack, tiny_pack.root, synthetic=2)
    with pytest.raises(ValueError, match="stay float"):
        Int8Config(roles=("mapping",))


def test_subpixel_rewrite_is_exact(tiny_pack):
    import onnxruntime as ort

    from styleid_edge.calibration.int8 import convtranspose_to_subpixel

    path = tiny_pack.model_path("synthesis")
    model, n = convtranspose_to_subpixel(onnx.load(str(path)))
    assert n > 0 and not any(nd.op_type == "ConvTranspose" and "conv/" in nd.name for nd in model.graph.node)
    onnx.checker.check_model(model)
    s = np.random.default_rng(1).standard_normal((2, tiny_pack.manifest.n_styles)).astype(np.float32) + 1
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"styles": s})[0]
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"styles": s})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
