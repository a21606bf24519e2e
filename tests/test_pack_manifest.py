"""The pack manifest contract: layout, validation, and refusal of unsafe packs (no ONNX needed)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from styleid_edge.runtime.identity import ChannelSelector, prior_channel_rank
from styleid_edge.runtime.pack import Manifest, ModelPack, PackError, find_pack
from styleid_edge.runtime.stylespace import (channel_groups, identity_rows, n_latent_for, style_dim_total,
                                             stylespace_layout, torgb_channel_mask)


def test_stylespace_layout_1024_matches_styleid():
    layers = stylespace_layout(1024, 2)
    assert len(layers) == 26
    assert [x.size for x in layers] == [512] * 15 + [256] * 3 + [128] * 3 + [64] * 3 + [32] * 2
    assert style_dim_total(layers) == 9088
    assert int((~torgb_channel_mask(layers)).sum()) == 6048
    assert [i for i, x in enumerate(layers) if x.is_torgb] == list(range(1, 26, 3))
    assert [x.w_index for x in layers][:5] == [0, 1, 1, 2, 3]
    assert max(x.w_index for x in layers) + 1 == n_latent_for(1024) == 18
    assert identity_rows(18) == [5, 6, 7, 8, 9]


def test_channel_groups_cover_non_torgb_once():
    layers = stylespace_layout(256, 2)
    groups = channel_groups(layers, 256)
    flat = np.concatenate(groups)
    assert len(np.unique(flat)) == len(flat) == int((~torgb_channel_mask(layers)).sum())
    assert all(len(g) <= 256 for g in groups)


def _write_pack(root: Path, overrides: dict | None = None, resolution: int = 32, cm: int = 1) -> Path:
    layers = stylespace_layout(resolution, cm)
    m = Manifest(resolution=resolution, n_latent=n_latent_for(resolution), style_dim=512, channel_multiplier=cm,
                 style_layers=[asdict(x) for x in layers], latent_avg=[0.0] * 512,
                 files={"mapping": "mapping.onnx", "affine": "affine.onnx", "synthesis": "synthesis.onnx"},
                 synthetic=True)
    raw = asdict(m)
    raw.update(overrides or {})
    root.mkdir(parents=True, exist_ok=True)
    for name in ("mapping.onnx", "affine.onnx", "synthesis.onnx"):
        (root / name).write_bytes(b"x")
    (root / "manifest.json").write_text(json.dumps(raw))
    return root


def test_valid_pack_loads(tmp_path):
    pack = ModelPack.load(_write_pack(tmp_path / "p"))
    assert pack.manifest.n_styles == style_dim_total(stylespace_layout(32, 1))
    assert pack.has("mapping") and not pack.has("encoder")


@pytest.mark.parametrize("override, message", [
    ({"files": {"mapping": "../evil.onnx", "affine": "affine.onnx", "synthesis": "synthesis.onnx"}}, "plain file"),
    ({"files": {"mapping": "/etc/passwd", "affine": "affine.onnx", "synthesis": "synthesis.onnx"}}, "plain file"),
    ({"files": {"mapping": "mapping.onnx"}}, "lacks required"),
    ({"resolution": 64}, "do not match"),
    ({"n_latent": 99}, "n_latent"),
    ({"latent_avg": [0.0] * 3}, "latent_avg"),
    ({"format_version": 7}, "format_version"),
    ({"surprise": 1}, "unknown fields"),
    ({"files": {"mapping": "mapping.onnx", "affine": "affine.onnx", "synthesis": "synthesis.onnx",
                "exec": "run.onnx"}}, "unknown model roles"),
])
def test_bad_manifests_are_refused(tmp_path, override, message):
    root = _write_pack(tmp_path / "p", override)
    with pytest.raises(PackError, match=message):
        ModelPack.load(root)


def test_missing_model_file_is_named(tmp_path):
    root = _write_pack(tmp_path / "p")
    (root / "affine.onnx").unlink()
    with pytest.raises(PackError, match="affine"):
        ModelPack.load(root)


def test_not_a_pack_says_how_to_make_one(tmp_path):
    with pytest.raises(PackError, match="styleid-edge export"):
        ModelPack.load(tmp_path)


def test_find_pack_env_and_default(tmp_path, monkeypatch):
    root = _write_pack(tmp_path / "p")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "nothing"))
    monkeypatch.delenv("STYLEID_EDGE_PACK", raising=False)
    assert find_pack(None) is None
    monkeypatch.setenv("STYLEID_EDGE_PACK", str(root))
    assert find_pack(None).root == root


def test_channel_selector_prior_and_ranks(tmp_path):
    root = _write_pack(tmp_path / "p")
    pack = ModelPack.load(root)
    sel = ChannelSelector(pack)
    layers = pack.manifest.layers
    mask = torgb_channel_mask(layers)
    assert "structural prior" in sel.source
    assert not mask[sel.rank].any()  # toRGB never in the prior
    assert len(np.unique(sel.rank)) == len(sel.rank) == int((~mask).sum())
    rows = set(identity_rows(pack.manifest.n_latent))
    first = sel.channels(0.05)
    offsets = np.cumsum([0] + [x.size for x in layers])
    owners = np.searchsorted(offsets, first, side="right") - 1
    assert all(layers[o].w_index in rows for o in owners)
    assert len(sel.channels(1.0)) == len(sel.rank)
    with pytest.raises(ValueError):
        sel.channels(0.0)
    # A calibrated rank in the pack takes precedence.
    rank = np.arange(pack.manifest.n_styles)[::-1].copy()
    np.save(root / "channels_rank.npy", rank)
    raw = json.loads((root / "manifest.json").read_text())
    raw["ranks"] = {"channels": "channels_rank.npy"}
    (root / "manifest.json").write_text(json.dumps(raw))
    sel2 = ChannelSelector(ModelPack.load(root))
    assert sel2.source == "pack channel rank"
    assert list(sel2.channels(3 / len(rank))) == list(rank[:3])
    assert len(prior_channel_rank(pack)) == int((~mask).sum())
