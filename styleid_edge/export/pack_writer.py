"""Turn checkpoints into a model pack (DESIGN.md, "Model pack").

``build_pack`` loads each given checkpoint strictly, exports its ONNX model(s)
with a free batch dimension, checks them, and writes ``manifest.json`` with the
StyleSpace layout, latent_avg, sha256 provenance and licence notes.
``make_synthetic_pack`` writes random checkpoints in the real key layouts and
runs them through the same path (for tests, demos and benchmarks).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..files import umask_mode
from ..runtime.pack import Manifest, ModelPack
from .checkpoints import sha256_file
from .onnx_io import export_onnx

log = logging.getLogger(__name__)

LICENCE_NOTES = {
    "stylegan2": "StyleGAN2 FFHQ weights (stylegan2-ffhq-config-f.pt): NVIDIA Source Code License-NC, "
                 "non-commercial use only.",
    "e4e": "encoder4editing FFHQ encoder (e4e_ffhq_encode.pt): code MIT; trained on FFHQ with the NVIDIA "
           "StyleGAN2 generator (non-commercial terms apply).",
    "arcface": "ArcFace IR-SE50 (model_ir_se50.pth, InsightFace_Pytorch): code MIT; trained on MS-Celeb-1M "
               "derived data (research use).",
    "recognizer_onnx": "User-supplied recognizer ONNX: check its own licence (insightface models are "
                       "non-commercial research only).",
    "mapper": "StyleID latent swapper (mapper.pt): code MIT; trained on CelebA-HQ (CelebA research-only terms).",
    "synthetic": "Synthetic pack: random weights made by styleid-edge, no licence restrictions; it does not "
                 "make natural faces and exists for tests and demos.",
}


def _stage(label: str):
    log.info("exporting %s ...", label)
    return time.perf_counter()


def build_pack(out_dir: str | Path, *, stylegan2: str | Path, e4e: str | Path | None = None,
               arcface: str | Path | None = None, mapper: str | Path | None = None,
               synthetic: bool = False, replace: bool = True) -> ModelPack:
    """Export the given checkpoints into a pack at ``out_dir`` (created, or with ``replace`` an existing pack
    replaced, atomically)."""
    from .stylegan2 import AffineModule, MappingModule, SynthesisModule, load_stylegan2

    out_dir = Path(out_dir)
    check_pack_out(out_dir, replace)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # staged next to the destination (same filesystem), renamed into place only when complete
    work = Path(tempfile.mkdtemp(prefix=".pack-", dir=out_dir.parent))
    try:
        sources = []
        gen, latent_avg, info = load_stylegan2(stylegan2)
        sources.append({"role": "stylegan2", "file": Path(stylegan2).name, "sha256": sha256_file(stylegan2)})
        files: dict[str, str] = {}
        b = 1
        t = _stage("mapping")
        export_onnx(MappingModule(gen), [torch.randn(b, gen.style_dim)], work / "mapping.onnx",
                    input_names=["z"], output_names=["w"])
        files["mapping"] = "mapping.onnx"
        log.info("mapping done in %.1fs", time.perf_counter() - t)
        t = _stage("affine (W+ -> StyleSpace)")
        export_onnx(AffineModule(gen), [torch.randn(b, gen.n_latent, gen.style_dim)], work / "affine.onnx",
                    input_names=["w_plus"], output_names=["styles"])
        files["affine"] = "affine.onnx"
        log.info("affine done in %.1fs", time.perf_counter() - t)
        t = _stage(f"synthesis ({gen.size} px)")
        with torch.no_grad():
            s_example = gen.styles(latent_avg.reshape(1, 1, -1).expand(b, gen.n_latent, -1).contiguous())
        export_onnx(SynthesisModule(gen), [s_example], work / "synthesis.onnx",
                    input_names=["styles"], output_names=["image"])
        files["synthesis"] = "synthesis.onnx"
        log.info("synthesis done in %.1fs", time.perf_counter() - t)
        recognizer: dict = {}
        if e4e is not None:
            from .e4e import load_e4e

            enc, enc_info = load_e4e(e4e)
            if enc.n_latent != gen.n_latent:
                raise ValueError(f"{e4e}: the encoder makes {enc.n_latent} W+ rows but the generator in "
                                 f"{stylegan2} takes {gen.n_latent}; use an encoder trained for this generator")
            size = int(enc_info.get("input_size", 256))
            t = _stage(f"encoder ({size} px input)")
            export_onnx(enc, [torch.zeros(b, 3, size, size)], work / "encoder.onnx",
                        input_names=["image"], output_names=["w_plus"])
            files["encoder"] = "encoder.onnx"
            sources.append({"role": "e4e", "file": Path(e4e).name, "sha256": sha256_file(e4e)})
            log.info("encoder done in %.1fs", time.perf_counter() - t)
        if arcface is not None:
            t = _stage("recognizer")
            if str(arcface).lower().endswith(".onnx"):
                from .arcface import import_recognizer_onnx

                recognizer = dict(import_recognizer_onnx(arcface, work / "recognizer.onnx"))
            else:
                from .arcface import load_arcface

                rec, rec_info = load_arcface(arcface)
                export_onnx(rec, [torch.zeros(b, 3, 112, 112)], work / "recognizer.onnx",
                            input_names=["face"], output_names=["embedding"])
                recognizer = {"input_size": 112, "color": "RGB", "mean": 127.5, "std": 127.5,
                              "embedding_dim": int(rec_info.get("embedding_dim", 512)),
                              "kind": "arcface_ir_se"}
            files["recognizer"] = "recognizer.onnx"
            sources.append({"role": "arcface", "file": Path(arcface).name, "sha256": sha256_file(arcface)})
            log.info("recognizer done in %.1fs", time.perf_counter() - t)
        if mapper is not None:
            from .mapper import load_mapper

            mp, _ = load_mapper(mapper, n_latent=gen.n_latent)
            t = _stage("latent swapper")
            wp = torch.randn(b, gen.n_latent, gen.style_dim)
            export_onnx(mp, [wp, wp.clone()], work / "mapper.onnx", input_names=["w_src", "w_tar"],
                        output_names=["w_anon"])
            files["mapper"] = "mapper.onnx"
            sources.append({"role": "mapper", "file": Path(mapper).name, "sha256": sha256_file(mapper)})
            log.info("mapper done in %.1fs", time.perf_counter() - t)

        roles = [s["role"] for s in sources]
        licences = [LICENCE_NOTES["synthetic"]] if synthetic else [
            LICENCE_NOTES["recognizer_onnx" if r == "arcface" and str(arcface).endswith(".onnx") else r]
            for r in roles]
        manifest = Manifest(
            resolution=gen.size, n_latent=gen.n_latent, style_dim=gen.style_dim,
            channel_multiplier=gen.channel_multiplier, style_layers=[asdict(x) for x in gen.layers],
            latent_avg=[float(v) for v in latent_avg.reshape(-1).tolist()], files=files, recognizer=recognizer,
            provenance={"sources": sources, "tool": f"styleid-edge {__version__}", "torch": torch.__version__,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            synthetic=synthetic, licences=licences)
        ModelPack(work, manifest).save_manifest()  # validated; with checksums.sha256
        if out_dir.exists():  # an empty folder or a pack: check_pack_out said so before the export
            shutil.rmtree(out_dir)
        umask_mode(work)
        work.replace(out_dir)
        pack = ModelPack.load(out_dir)
        log.info("pack written to %s (%d px, S=%d, models: %s)", out_dir, manifest.resolution,
                 manifest.n_styles, ", ".join(files))
        return pack
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def check_pack_out(out_dir: Path, replace: bool) -> None:
    """Where a pack may be written (checked before any work): a new or empty folder, or an existing pack
    when ``replace`` (the CLI's --force)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; a pack is a folder: choose a folder path")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not (out_dir / "manifest.json").is_file():
        raise FileExistsError(f"{out_dir} exists and is not a model pack; choose an empty or new --out")
    if not replace:
        raise FileExistsError(f"{out_dir} already holds a model pack; pass --force to replace it (everything in it "
                              "goes, calibrated identity ranks, strength results and donor bank included), or "
                              "choose another --out")


def make_synthetic_pack(out_dir: str | Path, *, resolution: int = 32, channel_multiplier: int = 1,
                        seed: int = 0, encoder: bool = True, mapper: bool = True, recognizer: bool = False,
                        n_mlp: int = 2, encoder_input: int = 64, replace: bool = True) -> ModelPack:
    """A pack of random weights written through the real checkpoint layouts and loaders."""
    from .stylegan2 import random_generator, save_rosinality_checkpoint

    check_pack_out(Path(out_dir), replace)  # before the random checkpoints, not only in build_pack
    with tempfile.TemporaryDirectory(prefix="styleid-synth-") as tmp:
        tmp = Path(tmp)
        gen = random_generator(resolution, channel_multiplier, seed, n_mlp=n_mlp)
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            latent_avg = gen.mapping(torch.randn(2048, gen.style_dim, generator=g)).mean(0)
        save_rosinality_checkpoint(gen, latent_avg, tmp / "stylegan2.pt")
        kwargs: dict = {"stylegan2": tmp / "stylegan2.pt", "synthetic": True, "replace": replace}
        if encoder:
            from .e4e import E4EConfig, random_e4e, save_e4e_checkpoint

            enc = random_e4e(E4EConfig.tiny(resolution, input_size=encoder_input, style_dim=gen.style_dim),
                             seed=seed + 1)
            with torch.no_grad():  # start from the generator's average face, as e4e does
                enc.latent_avg.copy_(latent_avg.reshape(1, -1).expand_as(enc.latent_avg))
            save_e4e_checkpoint(enc, tmp / "e4e.pt")
            kwargs["e4e"] = tmp / "e4e.pt"
        if mapper:
            from .mapper import MapperConfig, random_mapper, save_mapper_checkpoint

            save_mapper_checkpoint(random_mapper(MapperConfig(n_latent=gen.n_latent, latent_dim=gen.style_dim),
                                                 seed=seed + 2), tmp / "mapper.pt")
            kwargs["mapper"] = tmp / "mapper.pt"
        if recognizer:
            from .arcface import ArcFaceConfig, random_arcface, save_arcface_checkpoint

            save_arcface_checkpoint(random_arcface(ArcFaceConfig.tiny(), seed=seed + 3), tmp / "arcface.pth")
            kwargs["arcface"] = tmp / "arcface.pth"
        return build_pack(out_dir, **kwargs)
