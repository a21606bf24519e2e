"""`styleid-edge export` and `pack info`: checkpoints in the real layouts -> a validated model pack whose
ONNX models reproduce the PyTorch models (and the original generator math) numerically."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from styleid_edge.cli import main as cli_main
from styleid_edge.export.checkpoints import sha256_file
from styleid_edge.export.e4e import E4EConfig, random_e4e, save_e4e_checkpoint
from styleid_edge.export.mapper import MapperConfig, random_mapper, save_mapper_checkpoint
from styleid_edge.export.stylegan2 import load_stylegan2, random_generator, save_rosinality_checkpoint
from styleid_edge.runtime.pack import ModelPack

import reference_stylegan2 as ref_impl


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    gen = random_generator(32, 1, seed=11, n_mlp=2)
    with torch.no_grad():
        avg = gen.mapping(torch.randn(512, 512, generator=torch.Generator().manual_seed(0))).mean(0)
    save_rosinality_checkpoint(gen, avg, d / "stylegan2.pt")
    enc = random_e4e(E4EConfig.tiny(32, input_size=64, style_dim=512), seed=12)
    save_e4e_checkpoint(enc, d / "e4e.pt")
    save_mapper_checkpoint(random_mapper(MapperConfig(n_latent=gen.n_latent), seed=13), d / "mapper.pt")
    return d


def _run(path, **feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})[0]


def test_export_cli_writes_a_pack_that_matches_torch(tmp_path, checkpoints, capsys):
    out = tmp_path / "pack"
    code = cli_main(["export", "--stylegan2", str(checkpoints / "stylegan2.pt"), "--e4e", str(checkpoints / "e4e.pt"),
                     "--mapper", str(checkpoints / "mapper.pt"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "StyleSpace" in printed and "mapper" in printed
    pack = ModelPack.load(out)
    m = pack.manifest
    assert m.synthetic is False and m.resolution == 32 and set(m.files) == {"mapping", "affine", "synthesis",
                                                                             "encoder", "mapper"}
    shas = {s["role"]: s["sha256"] for s in m.provenance["sources"]}
    assert shas["stylegan2"] == sha256_file(checkpoints / "stylegan2.pt")
    assert shas["e4e"] == sha256_file(checkpoints / "e4e.pt")
    assert any("Non" in lic or "non-commercial" in lic for lic in m.licences)

    gen, avg, _ = load_stylegan2(checkpoints / "stylegan2.pt")
    np.testing.assert_allclose(pack.latent_avg, avg.numpy(), rtol=1e-6)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 512)).astype(np.float32)
    w = _run(pack.model_path("mapping"), z=z)
    with torch.no_grad():
        w_ref = gen.mapping(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(w, w_ref, rtol=1e-3, atol=1e-4)
    wp = np.repeat(w[:, None], m.n_latent, 1) + 0.1 * rng.standard_normal((3, m.n_latent, 512)).astype(np.float32)
    s = _run(pack.model_path("affine"), w_plus=wp)
    assert s.shape == (3, m.n_styles)
    img = _run(pack.model_path("synthesis"), styles=s)
    # the original StyleID math (weight modulation, grouped conv) fed the same W+ on the same weights
    with torch.no_grad():
        ref = ref_impl_image(gen, torch.from_numpy(wp))
    scale = float(np.abs(ref).max())
    assert np.abs(img - ref).max() < 1e-3 * scale
    # S-channel swap through the pack equals the original math fed the swapped S
    s2 = s.copy()
    s2[0, :200] = s[1, :200]
    img2 = _run(pack.model_path("synthesis"), styles=s2)
    with torch.no_grad():
        ref2 = ref_impl_from_styles(gen, torch.from_numpy(s2))
    assert np.abs(img2 - ref2).max() < 1e-3 * scale
    assert np.abs(img2[0] - img[0]).max() > 1e-2  # the swap did something

    info = cli_main(["pack", "info", str(out), "--json"])
    assert info == 0
    assert json.loads(capsys.readouterr().out)["resolution"] == 32


def _reference(gen) -> "ref_impl.ReferenceStyleGAN2":
    cfg = gen.config()
    return ref_impl.ReferenceStyleGAN2(gen.state_dict(), cfg["size"], n_mlp=cfg["n_mlp"],
                                       channel_multiplier=cfg["channel_multiplier"])


def ref_impl_image(gen, w_plus):
    return _reference(gen).forward_wplus(w_plus)[0].numpy()


def ref_impl_from_styles(gen, styles):
    ref = _reference(gen)
    return ref.forward_stylespace(ref.unflatten(styles)).numpy()


def test_export_refuses_wrong_files_with_clear_message(tmp_path, checkpoints, capsys):
    code = cli_main(["export", "--stylegan2", str(checkpoints / "e4e.pt"), "--out", str(tmp_path / "p")])
    assert code == 2
    err = capsys.readouterr().err
    assert "not a rosinality StyleGAN2 checkpoint" in err and "e4e" in err
    assert not (tmp_path / "p").exists()
    code = cli_main(["export", "--stylegan2", str(checkpoints / "stylegan2.pt"), "--e4e",
                     str(checkpoints / "mapper.pt"), "--out", str(tmp_path / "p")])
    assert code == 2 and "latent-swapper" in capsys.readouterr().err.lower().replace(" ", "-")
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".pack-*"))


def test_pack_info_rejects_tampered_manifest(tmp_path, tiny_pack, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_pack.root, bad)
    raw = json.loads((bad / "manifest.json").read_text())
    raw["files"]["mapper"] = "../../etc/passwd"
    (bad / "manifest.json").write_text(json.dumps(raw))
    assert cli_main(["pack", "info", str(bad)]) == 2
    assert "plain file name" in capsys.readouterr().err
    assert cli_main(["pack", "info", str(tmp_path / "nothere")]) == 2
    assert "nothere does not exist" in capsys.readouterr().err


def test_pack_records_checksums_and_info_verify_catches_a_changed_or_missing_file(tmp_path, tiny_pack, capsys):
    import hashlib
    import shutil
    import subprocess

    from styleid_edge.runtime.pack import CHECKSUMS, ModelPack, read_checksums

    m = tiny_pack.manifest
    sums = read_checksums(tiny_pack.root)
    assert set(sums) == set(m.files.values()) and len(sums) == 6
    assert "checksums" not in json.loads((tiny_pack.root / "manifest.json").read_text())  # older readers load it
    syn = m.files["synthesis"]
    assert sums[syn] == hashlib.sha256((tiny_pack.root / syn).read_bytes()).hexdigest()
    if shutil.which("sha256sum"):  # the file is in sha256sum's own format
        subprocess.run(["sha256sum", "--quiet", "-c", CHECKSUMS], cwd=tiny_pack.root, check=True)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_pack.root, copy)
    assert cli_main(["pack", "info", str(copy), "--verify"]) == 0
    assert f"ok         {syn}" in capsys.readouterr().out
    # a bit flipped in transit (the file still parses as a pack file): caught
    data = bytearray((copy / syn).read_bytes())
    data[-100] ^= 0x01
    (copy / syn).write_bytes(bytes(data))
    assert cli_main(["pack", "info", str(copy), "--verify"]) == 2
    out, err = capsys.readouterr()
    assert f"changed    {syn}" in out and "1 pack file(s) differ" in err and syn in err
    # a later calibration step rewrites the manifest: the changed file keeps its old checksum (still caught),
    # files it writes get new ones
    pack = ModelPack.load(copy)
    np.save(copy / "extra_rank.npy", np.arange(3))
    pack.manifest.ranks = {"channels": "extra_rank.npy"}
    pack.save_manifest(written=["extra_rank.npy"])
    after = read_checksums(copy)
    assert after[syn] == sums[syn] and "extra_rank.npy" in after
    checks = dict(ModelPack.load(copy).verify_files())
    assert checks[syn] == "changed" and checks["extra_rank.npy"] == "ok"
    # a pack from before checksums: nothing to compare, said so, exit 0
    (copy / CHECKSUMS).unlink()
    assert cli_main(["pack", "info", str(copy), "--verify"]) == 0
    assert "before packs recorded checksums" in capsys.readouterr().err


def test_export_into_a_new_nested_folder(tmp_path):
    code = cli_main(["export", "--synthetic", "8", "--out", str(tmp_path / "packs" / "demo")])
    assert code == 0
    assert ModelPack.load(tmp_path / "packs" / "demo").manifest.synthetic
    assert [p.name for p in (tmp_path / "packs").iterdir()] == ["demo"]  # no staging leftovers


def test_export_never_replaces_a_pack_without_force_and_checks_out_before_any_work(tmp_path, capsys):
    pack = tmp_path / "demo"
    assert cli_main(["export", "--synthetic", "8", "--out", str(pack)]) == 0
    (pack / "ranks_channels.npy").write_bytes(b"calibrated")  # what a second export must not wipe silently
    capsys.readouterr()
    assert cli_main(["export", "--synthetic", "8", "--out", str(pack), "--seed", "1"]) == 2
    assert "already holds a model pack; pass --force" in capsys.readouterr().err
    assert (pack / "ranks_channels.npy").read_bytes() == b"calibrated"
    assert cli_main(["export", "--synthetic", "8", "--out", str(pack), "--seed", "1", "--force"]) == 0
    assert not (pack / "ranks_channels.npy").exists() and ModelPack.load(pack).manifest.synthetic

    a_file = tmp_path / "clip.mp4"
    a_file.write_bytes(b"x")
    assert cli_main(["export", "--synthetic", "8", "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    assert cli_main(["export", "--synthetic", "8", "--out", str(other)]) == 2
    assert "is not a model pack" in capsys.readouterr().err
    assert cli_main(["export", "--synthetic", "8", "--stylegan2", "g.pt", "--out", str(tmp_path / "n")]) == 2
    assert "takes no checkpoints" in capsys.readouterr().err
    assert not list(tmp_path.glob(".pack-*")) and not (tmp_path / "n").exists()


def test_pack_folder_is_readable_by_other_users_as_the_umask_allows(tiny_pack):
    import os

    umask = os.umask(0)
    os.umask(umask)
    # staged with mkdtemp (owner-only) and renamed into place: the final folder follows the umask
    assert tiny_pack.root.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_pack_whose_model_files_are_symlinks_to_shared_storage_loads(tmp_path, tiny_pack, capsys):
    """An appliance keeps the big models on another partition and links them into the pack folder."""
    import shutil

    from styleid_edge.runtime.pack import ModelPack

    storage, linked = tmp_path / "storage", tmp_path / "linked"
    shutil.copytree(tiny_pack.root, storage)
    linked.mkdir()
    for item in storage.iterdir():
        (linked / item.name).symlink_to(item)
    pack = ModelPack.load(linked)
    assert pack.model_path("synthesis") == linked.resolve() / tiny_pack.manifest.files["synthesis"]
    assert cli_main(["pack", "info", str(linked), "--verify"]) == 0
    assert "changed" not in capsys.readouterr().out
    raw = json.loads((storage / "manifest.json").read_text())
    raw["files"]["mapper"] = "../storage/mapper.onnx"  # a name that leaves the pack is still refused
    (linked / "manifest.json").unlink()
    (linked / "manifest.json").write_text(json.dumps(raw))
    assert cli_main(["pack", "info", str(linked)]) == 2
    assert "plain file name" in capsys.readouterr().err
