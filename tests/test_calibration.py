"""Calibration: identity ranks recover planted channels; resumable and deterministic; strength sweep; CLI on a pack."""

from __future__ import annotations

import argparse
import csv
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from styleid_edge.calibration.ranks import RankConfig, RankInterrupted, rank_channels
from styleid_edge.calibration.strength import (
    CSV_COLUMNS,
    CurveRow,
    StrengthConfig,
    choose_setting,
    sweep_strength,
)
from styleid_edge.runtime.stylespace import StyleLayer, channel_groups

# --- a synthetic generator whose identity lives in known channels ------------------------------------------
LAYERS = [StyleLayer("conv1", 24, 0, False, 4), StyleLayer("to_rgb1", 8, 1, True, 4),
          StyleLayer("convs.0", 24, 1, False, 8), StyleLayer("convs.1", 24, 2, False, 8),
          StyleLayer("to_rgbs.0", 8, 3, True, 8)]
S = sum(layer.size for layer in LAYERS)  # 88: 72 outside toRGB
PLANTED = np.array([5, 40, 41, 45, 70])  # groups of 8: 0, 5 (three plants), 8
RES, DIM = 16, 16


class _Fn:
    def __init__(self, fn):
        self.get = fn


def fake_models(seed: int = 0):
    """mapping/affine/synthesis as numpy functions: every channel changes the image, but the "face" region
    (the first 48 pixels) only depends on the planted channels; the recognizer only looks at that region.
    Non-planted channels change the image more than planted ones, so raw image change cannot rank them."""
    rng = np.random.default_rng(seed)
    mz = rng.standard_normal((DIM, DIM)) / np.sqrt(DIM)
    ma = rng.standard_normal((DIM, S)) * 1.5
    n_pix = 3 * RES * RES
    a = rng.standard_normal((n_pix, S)) * 0.15
    a[:, PLANTED] *= 0.3
    face = np.arange(48)
    a[face] = 0.0
    a[np.ix_(face, PLANTED)] = rng.standard_normal((48, len(PLANTED))) * 0.4
    q = rng.standard_normal((12, 48))
    manifest = SimpleNamespace(layers=LAYERS, n_latent=4, style_dim=DIM, n_styles=S, resolution=RES)
    pack = SimpleNamespace(manifest=manifest, latent_avg=np.zeros(DIM, np.float32))
    models = SimpleNamespace(
        pack=pack, has=lambda role: False,
        mapping=_Fn(lambda z: np.tanh(z @ mz).astype(np.float32)),
        affine=_Fn(lambda wp: (wp.mean(axis=1) @ ma).astype(np.float32)),
        synthesis=_Fn(lambda s: np.tanh(s @ a.T).reshape(len(s), 3, RES, RES).astype(np.float32)))

    def recognizer(images: np.ndarray) -> np.ndarray:
        e = images.reshape(len(images), -1)[:, face] @ q.T + 0.5
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    return models, recognizer


def test_ranks_recover_planted_channels_and_groups():
    models, rec = fake_models()
    res = rank_channels(models, RankConfig(pairs=4, seed=0, batch=10, group_size=8, recognizer=rec), progress=False)
    assert set(res.channel_rank[: len(PLANTED)].tolist()) == set(PLANTED.tolist())
    assert len(res.channel_rank) == 72 and not np.isin(res.channel_rank, range(24, 32)).any()  # no toRGB
    assert np.isnan(res.channel_scores[24:32]).all() and np.isnan(res.channel_scores[80:]).all()
    groups = channel_groups(LAYERS, 8, include_torgb=True)
    assert len(res.group_scores) == len(groups) == 11
    assert res.group_rank[0] == 5 and set(res.group_rank[:3].tolist()) == {0, 5, 8}  # agrees with channels
    assert 3 not in res.group_rank and 10 not in res.group_rank  # toRGB groups left out
    assert res.syntheses_per_pair == 1 + 72 + 9 and res.seconds_per_pair > 0

    fast = rank_channels(models, RankConfig(pairs=4, seed=0, batch=10, group_size=8, recognizer=rec,
                                            refine_groups=3), progress=False)
    assert fast.syntheses_per_pair == 1 + 9 + 24 and np.isfinite(fast.channel_scores).sum() == 24
    assert set(fast.channel_rank[: len(PLANTED)].tolist()) == set(PLANTED.tolist())
    assert sorted(fast.channel_rank.tolist()) == sorted(res.channel_rank.tolist())
    np.testing.assert_array_equal(fast.group_rank, res.group_rank)

    with_rgb = rank_channels(models, RankConfig(pairs=2, batch=32, group_size=8, include_torgb=True, recognizer=rec),
                             progress=False)
    assert len(with_rgb.channel_rank) == S and len(with_rgb.group_rank) == 11


def test_ranks_deterministic_per_seed():
    models, rec = fake_models()
    cfg = {"pairs": 3, "batch": 16, "group_size": 8, "recognizer": rec}
    a = rank_channels(models, RankConfig(seed=7, **cfg), progress=False)
    b = rank_channels(models, RankConfig(seed=7, **cfg), progress=False)
    c = rank_channels(models, RankConfig(seed=8, **cfg), progress=False)
    np.testing.assert_array_equal(a.channel_rank, b.channel_rank)
    np.testing.assert_array_equal(a.channel_scores, b.channel_scores)
    np.testing.assert_array_equal(a.group_rank, b.group_rank)
    assert not np.array_equal(a.id_change, c.id_change)  # other pairs...
    assert set(c.channel_rank[: len(PLANTED)].tolist()) == set(PLANTED.tolist())  # ...same answer


def test_ranks_resume_after_interrupt(tmp_path):
    models, rec = fake_models()
    cfg = RankConfig(pairs=3, seed=1, batch=8, group_size=8, recognizer=rec)
    full = rank_channels(models, cfg, progress=False)
    state = tmp_path / "state.npz"
    calls = []

    def stop_after_7(pair: int, block: int) -> None:
        calls.append((pair, block))
        if len(calls) == 7:
            raise RankInterrupted("stop")

    with pytest.raises(RankInterrupted):
        rank_channels(models, cfg, progress=False, state_path=state, on_block=stop_after_7)
    saved = np.load(state)
    assert 0 < np.isfinite(saved["id_change"]).sum() < saved["id_change"].size
    rest = []
    resumed = rank_channels(models, cfg, progress=False, state_path=state, on_block=lambda p, b: rest.append((p, b)))
    assert len(rest) + 7 == 3 * 11  # 2 group + 9 channel blocks per pair: nothing done twice
    np.testing.assert_array_equal(resumed.channel_scores, full.channel_scores)
    np.testing.assert_array_equal(resumed.channel_rank, full.channel_rank)
    np.testing.assert_array_equal(resumed.group_rank, full.group_rank)
    with pytest.raises(ValueError, match="different settings"):
        rank_channels(models, RankConfig(pairs=3, seed=2, batch=8, group_size=8, recognizer=rec), progress=False,
                      state_path=state)


def test_strength_monotone_on_synthetic_setup():
    models, rec = fake_models()
    ranks = rank_channels(models, RankConfig(pairs=3, batch=32, group_size=8, recognizer=rec), progress=False)
    settings = [1 / 72, 2 / 72, 3 / 72, 4 / 72, 5 / 72, 0.5, 1.0]
    res = sweep_strength(models, StrengthConfig("latent", 0.9, settings=settings, faces=12, recognizer=rec,
                                                rank=ranks.channel_rank), progress=False)
    sims = np.array([r.mean_similarity for r in res.rows])
    assert [r.channels for r in res.rows] == [1, 2, 3, 4, 5, 36, 72]
    assert np.all(np.diff(sims) <= 0.02), sims  # monotone up to noise
    assert sims[4] < sims[0] - 0.05  # the planted channels do the work...
    assert abs(sims[-1] - sims[4]) < 1e-6  # ...and nothing else changes identity
    changes = [r.mean_image_change for r in res.rows]
    assert changes[-1] > changes[0] > 0
    t = (sims[1] + sims[2]) / 2
    assert choose_setting(res.rows, t) == pytest.approx(settings[2])


def test_choose_setting_needs_to_stay_below():
    rows = [CurveRow(s, None, m, m, 0.0) for s, m in [(0.1, 0.9), (0.2, 0.2), (0.3, 0.5), (0.4, 0.25), (0.5, 0.1)]]
    assert choose_setting(rows, 0.3) == 0.4
    assert choose_setting(rows, 0.05) is None


# --- on a real (tiny, random-weight) pack through ONNX Runtime ---------------------------------------------
@pytest.fixture
def pack_copy(tiny_pack, tmp_path):
    from styleid_edge.runtime.pack import ModelPack

    root = tmp_path / "pack"
    shutil.copytree(tiny_pack.root, root)
    return ModelPack.load(root)


def _cli(argv: list[str]) -> int:
    from styleid_edge.calibration.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_calibrate_ranks_and_strength_on_pack(pack_copy, tmp_path, capsys):
    from styleid_edge.runtime.identity import ChannelSelector
    from styleid_edge.runtime.pack import ModelPack
    from styleid_edge.runtime.stylespace import torgb_channel_mask

    root = pack_copy.root
    assert ChannelSelector(pack_copy).source.startswith("structural prior")
    assert _cli(["calibrate", "ranks", "--pack", str(root), "--pairs", "1", "--batch", "64",
                 "--refine-groups", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "s per pair" in out
    pack = ModelPack.load(root)  # manifest still valid, files present
    m = pack.manifest
    assert set(m.ranks) == {"channels", "groups", "channel_scores"}
    assert not (root / "calibrate_ranks_state.npz").exists()
    ch, gr, sc = pack.load_rank("channels"), pack.load_rank("groups"), pack.load_rank("channel_scores")
    torgb = torgb_channel_mask(m.layers)
    assert sorted(ch.tolist()) == np.flatnonzero(~torgb).tolist()
    assert sc.shape == (m.n_styles,) and np.isnan(sc[torgb]).all() and np.isfinite(sc).sum() == 256
    assert np.all(np.diff(sc[ch[:256]]) <= 0)  # refined channels first, by descending score
    groups = channel_groups(m.layers, 256, include_torgb=True)
    assert sorted(gr.tolist()) == [g for g, idx in enumerate(groups) if not torgb[idx[0]]]
    assert ChannelSelector(pack).source == "pack channel rank"
    assert ChannelSelector(pack, use_groups=True).source == "pack group rank"
    assert m.provenance["calibrate_ranks"]["recognizer"] == "pack"

    out_dir = tmp_path / "curve"
    rc = _cli(["calibrate", "strength", "--pack", str(root), "--method", "latent", "--target-similarity", "1.0",
               "--settings", "0.05,0.5,1.0", "--faces", "4", "--out-dir", str(out_dir), "-q"])
    assert rc == 0
    with open(out_dir / "strength_latent.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and [float(r["setting"]) for r in rows] == [0.05, 0.5, 1.0]
    sims = [float(r["mean_similarity"]) for r in rows]
    assert sims[-1] <= sims[0] + 0.02  # monotone-ish
    assert all(float(r["max_similarity"]) >= float(r["mean_similarity"]) - 1e-9 for r in rows)
    png = (out_dir / "strength_latent.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pack = ModelPack.load(root)
    assert pack.manifest.defaults["strength"]["latent"] == 0.05
    assert pack.manifest.provenance["calibrate_strength"]["latent"]["rank"] == "pack channel rank"

    # unreachable target: curve written, nothing stored, exit code 1; SFace recognizer on the pixel method
    rc = _cli(["calibrate", "strength", "--pack", str(root), "--method", "pixel", "--target-similarity", "-1",
               "--settings", "0.5,1.0", "--faces", "2", "--recognizer", "sface", "-q"])
    assert rc == 1 and (root / "strength_pixel.csv").is_file()
    assert "pixel" not in ModelPack.load(root).manifest.defaults["strength"]
