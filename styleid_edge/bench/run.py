"""The benchmark: per-stage latency of the real runtime on a 1080p frame, and StyleID's original math as baseline.

Stages (medians, milliseconds): ``detect`` (per frame), ``align`` (per face), ``encode``, ``manipulate``,
``synthesize`` (affine + synthesis), ``synthesize_to_crops`` (affine + synthesis straight to uint8 crops, what
the anonymizer runs), ``paste_back`` (a crop blended into the frame: colour matching + feathered mask), per face
at each batch size; faces/s and 1080p frames/s sum the anonymizer's per-face path (align, encode, manipulate,
synthesize_to_crops, paste_back); ``video_decode`` / ``video_encode`` per 1080p frame (PyAV, H.264). In the same
run: the original math (encoder4editing forward + StyleID's weight-modulated generator from W+, PyTorch
eager, fp32) on the same weights, its images compared with the fast path's, and the ratio
baseline / fast for encoder + synthesis per face.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    pack: str | None = None  # None: a random-weight pack made in a temp dir
    resolution: int = 1024
    channel_multiplier: int = 2
    encoder: str = "full"  # random pack: "full" = IR-SE50 e4e with 256 px input, "tiny" = the test-size e4e
    device: str = "cpu"  # cpu | cuda
    backend: str | None = None  # default: onnxruntime on cpu, torch on cuda
    backend_options: dict[str, Any] = field(default_factory=dict)
    batches: list[int] = field(default_factory=lambda: [1, 8])
    frames: int = 30  # video stages: 1080p frames encoded then decoded
    faces: int = 5  # faces in the composed frame
    photos: str | None = None
    repeats: int = 5
    warmup: int = 2
    baseline: bool = True
    threads: int = 0  # CPU threads for torch and ONNX Runtime (0 = their defaults)
    seed: int = 0
    soak_seconds: float = 0.0  # > 0: afterwards, run the whole per-face path this long and sample memory


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


class Clock:
    """Median wall time of a callable, synchronising CUDA when the device is a GPU."""

    def __init__(self, device: str, repeats: int, warmup: int):
        self.device, self.repeats, self.warmup = device, max(1, repeats), max(0, warmup)
        self._sync: Callable[[], None] = lambda: None
        if device.startswith("cuda"):
            import torch

            self._sync = torch.cuda.synchronize

    def ms(self, fn: Callable[[], Any], repeats: int | None = None, warmup: int | None = None) -> float:
        for _ in range(self.warmup if warmup is None else warmup):
            fn()
        self._sync()
        times = []
        for _ in range(self.repeats if repeats is None else repeats):
            t = time.perf_counter()
            fn()
            self._sync()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)


def make_bench_pack(out_dir: str | Path, resolution: int, channel_multiplier: int, encoder: str = "full",
                    seed: int = 0) -> Any:
    """A random-weight pack (mapping with 8 layers, e4e, latent swapper) written through the real export path."""
    from styleid_edge.export.e4e import E4EConfig, n_styles_for, random_e4e, save_e4e_checkpoint
    from styleid_edge.export.mapper import MapperConfig, random_mapper, save_mapper_checkpoint
    from styleid_edge.export.pack_writer import build_pack
    from styleid_edge.export.stylegan2 import random_generator, save_rosinality_checkpoint
    import torch

    tiny = encoder == "tiny"
    with tempfile.TemporaryDirectory(prefix="styleid-bench-") as tmp:
        tmp = Path(tmp)
        gen = random_generator(resolution, channel_multiplier, seed, n_mlp=2 if tiny else 8)
        with torch.no_grad():
            latent_avg = gen.mapping(torch.randn(2048, gen.style_dim, generator=torch.Generator().manual_seed(seed)))
            latent_avg = latent_avg.mean(0)
        save_rosinality_checkpoint(gen, latent_avg, tmp / "stylegan2.pt")
        config = (E4EConfig.tiny(resolution, input_size=64, style_dim=gen.style_dim) if tiny
                  else E4EConfig(n_styles=n_styles_for(resolution), input_size=256, style_dim=gen.style_dim))
        enc = random_e4e(config, seed=seed + 1)
        with torch.no_grad():
            enc.latent_avg.copy_(latent_avg.reshape(1, -1).expand_as(enc.latent_avg))
        save_e4e_checkpoint(enc, tmp / "e4e.pt")
        save_mapper_checkpoint(random_mapper(MapperConfig(n_latent=gen.n_latent, latent_dim=gen.style_dim),
                                             seed=seed + 2), tmp / "mapper.pt")
        return build_pack(out_dir, stylegan2=tmp / "stylegan2.pt", e4e=tmp / "e4e.pt", mapper=tmp / "mapper.pt",
                          synthetic=True)


def _session_options(cfg: BenchConfig):
    from styleid_edge.runtime.backends import SessionOptions

    backend = cfg.backend or ("torch" if cfg.device.startswith("cuda") else "onnxruntime")
    options = dict(cfg.backend_options)
    providers = ["CPUExecutionProvider"]
    if backend == "torch":
        options.setdefault("device", cfg.device)
    elif backend == "onnxruntime" and cfg.device.startswith("cuda"):
        providers = ["CUDAExecutionProvider"]
    return SessionOptions(providers=providers, intra_op_threads=cfg.threads, backend=backend, backend_options=options)


def _video_stages(frame: np.ndarray, n: int, clock_note: list[str]) -> dict[str, float] | None:
    try:
        import av
    except ImportError:
        clock_note.append("video stages skipped: PyAV (av) is not installed")
        return None
    with tempfile.TemporaryDirectory(prefix="styleid-bench-video-") as tmp:
        path = Path(tmp) / "clip.mp4"
        t = time.perf_counter()
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
            stream.options = {"crf": "18"}
            for i in range(n):
                img = np.roll(frame, 4 * i, axis=1)  # motion, so the encoder does real work
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        encode_ms = (time.perf_counter() - t) * 1e3 / n
        t = time.perf_counter()
        count = 0
        with av.open(str(path)) as inp:
            for vf in inp.decode(video=0):
                vf.to_ndarray(format="bgr24")
                count += 1
        decode_ms = (time.perf_counter() - t) * 1e3 / max(count, 1)
    return {"video_encode": round(encode_ms, 3), "video_decode": round(decode_ms, 3), "video_frames": count}


def _baseline(pack: Any, device: str):
    """The original math on the pack's weights: e4e (E4EEncoderModule, eager fp32) + StyleID's generator."""
    import torch

    from styleid_edge.export.original_math import ReferenceStyleGAN2
    from styleid_edge.export.torch_runner import encoder_from_onnx, generator_from_pack

    gen = generator_from_pack(pack, roles=("affine", "synthesis"))
    ref = ReferenceStyleGAN2(gen.state_dict(), gen.size, n_mlp=gen.n_mlp, channel_multiplier=gen.channel_multiplier)
    ref.sd = {k: v.to(device) for k, v in ref.sd.items()}
    enc = encoder_from_onnx(pack.model_path("encoder"), pack.manifest.n_latent).to(device).eval()

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return enc(x)

    def generate(w_plus: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ref.forward_wplus(w_plus)[0]

    return encode, generate


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run everything; returns the result dict that ``--json`` writes."""
    from styleid_edge.runtime import align, blend
    from styleid_edge.runtime.methods import MethodConfig, StyleIDMethods, crops_to_input, images_to_crops
    from styleid_edge.runtime.models import PackModels
    from styleid_edge.runtime.pack import ModelPack
    from styleid_edge.runtime.stylespace import identity_rows

    from .frames import compose_frame

    notes: list[str] = []
    result: dict[str, Any] = {"config": asdict(cfg), "notes": notes}
    result.update(_machine(cfg))  # fails early when CUDA is asked for and absent
    with tempfile.TemporaryDirectory(prefix="styleid-bench-pack-") as tmp:
        if cfg.pack:
            pack = ModelPack.load(cfg.pack)
        else:
            t = time.perf_counter()
            pack = make_bench_pack(Path(tmp) / "pack", cfg.resolution, cfg.channel_multiplier, cfg.encoder, cfg.seed)
            result["pack_export_seconds"] = round(time.perf_counter() - t, 2)
            notes.append(f"random-weight pack: {cfg.resolution} px, channel multiplier {cfg.channel_multiplier}, "
                         f"{cfg.encoder} e4e (latency does not depend on weight values)")
        missing = [r for r in ("encoder", "affine", "synthesis", "mapping") if not pack.has(r)]
        if missing:
            raise ValueError(f"{pack.root}: bench needs the encoder and generator models; the pack lacks {missing}")
        m = pack.manifest
        if cfg.pack:  # the random-pack settings do not apply: record what the pack is
            result["config"]["resolution"] = m.resolution
            result["config"]["channel_multiplier"] = getattr(m, "channel_multiplier", None)
            result["config"]["encoder"] = None
        result["pack"] = {"root": str(pack.root) if cfg.pack else None, "resolution": m.resolution,
                          "n_latent": m.n_latent, "synthetic": m.synthetic, "models": sorted(m.files)}
        options = _session_options(cfg)
        models = PackModels(pack, options)
        method = "swapper" if pack.has("mapper") else "pixel"
        engine = StyleIDMethods(models, MethodConfig(method))
        result["backend"] = options.backend
        result["providers"] = {r: getattr(models, r).provider for r in ("encoder", "affine", "synthesis", "mapping")}
        if method == "swapper":
            result["providers"]["mapper"] = models.mapper.provider
        for role, provider in result["providers"].items():
            print(f"{role} runs on {provider} [{options.backend}]")
        clock = Clock(cfg.device, cfg.repeats, cfg.warmup)
        frame = compose_frame(cfg.photos, cfg.faces)
        stages: dict[str, Any] = {}
        landmarks = frame.landmarks
        try:
            from styleid_edge.runtime.detect import make_detector

            detector = make_detector("yunet", providers=["CPUExecutionProvider"])
            found = detector.detect(frame.image)
            stages["detect_ms_per_frame"] = round(clock.ms(lambda: detector.detect(frame.image)), 3)
            stages["faces_detected"] = len(found)
            if len(found) >= len(landmarks):
                landmarks = [np.asarray(d.landmarks, np.float32) for d in found]
        except Exception as exc:  # noqa: BLE001 - a missing detector model must not stop the model timings
            notes.append(f"detect skipped ({type(exc).__name__}: {exc}); faces placed at known landmarks")
        faces = len(landmarks)
        crop_size = max(256, min(m.resolution, 512))
        crops_m = [align.ffhq_crop(frame.image, lm, crop_size) for lm in landmarks]
        stages["align_ms_per_face"] = round(
            clock.ms(lambda: [align.ffhq_crop(frame.image, lm, crop_size) for lm in landmarks]) / faces, 3)
        enc_size = engine.encoder_size
        result["faces_in_frame"] = faces
        video = _video_stages(frame.image, max(2, cfg.frames), notes)
        if video:
            stages.update({"video_encode_ms_per_frame": video["video_encode"],
                           "video_decode_ms_per_frame": video["video_decode"]})
        cuda = cfg.device.startswith("cuda")
        before_baseline = _cuda_allocated_mb() if cuda else 0.0
        baseline = _baseline(pack, cfg.device) if cfg.baseline else None
        if baseline is None:
            notes.append("baseline skipped (--no-baseline)")
        per_batch: dict[str, Any] = {}
        mem = {"rss_mb_start": round(_rss_mb(), 1)}
        baseline_weights = 0.0  # the baseline's weights stay on the GPU through the fast path's runs
        if cuda:
            mem["cuda_allocated_mb_start"] = _cuda_allocated_mb()
            baseline_weights = round(mem["cuda_allocated_mb_start"] - before_baseline, 1)
            _cuda_peak_mb(reset=True)
        fast_peak = baseline_peak = 0.0
        for b in cfg.batches:
            idx = [i % faces for i in range(b)]
            crops = np.stack([crops_m[i][0] for i in idx])
            x = crops_to_input(crops, enc_size)
            seeds = list(range(b))
            w_src = models.encoder.get(x)
            rows = identity_rows(m.n_latent)

            def manipulate() -> np.ndarray:
                wt = engine.target_wplus_for(seeds)
                if method == "swapper":
                    return models.mapper.get(w_src, wt)
                mixed = w_src.copy()
                mixed[:, rows] = wt[:, rows]
                return mixed

            w = manipulate()
            styles = models.affine.get(w)
            images = models.synthesis.get(styles)
            row: dict[str, Any] = {
                "encode_ms_per_face": clock.ms(lambda: models.encoder.get(x)) / b,
                "manipulate_ms_per_face": clock.ms(manipulate) / b,
                "synthesize_ms_per_face": clock.ms(lambda: models.synthesis.get(models.affine.get(w))) / b,
            }
            # what the anonymizer runs: affine + synthesis straight to uint8 crops (on the device with the torch
            # backend), then each crop blended into the frame on the host
            row["synthesize_to_crops_ms_per_face"] = clock.ms(
                lambda: models.synthesis.get_crops(models.affine.get(w), crop_size)) / b
            new = images_to_crops(images, crop_size)
            out = frame.image.copy()

            def paste() -> None:
                for j in range(b):
                    blend.paste_back(out, new[j], crops_m[idx[j]][1])

            row["paste_back_ms_per_face"] = clock.ms(paste) / b
            row["align_ms_per_face"] = stages["align_ms_per_face"]
            row["encoder_plus_synthesis_ms_per_face"] = row["encode_ms_per_face"] + row["synthesize_ms_per_face"]
            per_face = sum(row[k] for k in ("align_ms_per_face", "encode_ms_per_face", "manipulate_ms_per_face",
                                            "synthesize_to_crops_ms_per_face", "paste_back_ms_per_face"))
            row["faces_per_s"] = 1000.0 / per_face
            frame_ms = per_face * faces + stages.get("detect_ms_per_frame", 0.0) + \
                stages.get("video_decode_ms_per_frame", 0.0) + stages.get("video_encode_ms_per_frame", 0.0)
            row["frames_per_s_1080p"] = 1000.0 / frame_ms
            device_ms = _device_only(models, x, w, clock, b)
            if device_ms is not None:
                row["device_encoder_plus_synthesis_ms_per_face"] = device_ms
            if cuda:  # the fast path's peak, apart from the baseline's (eager fp32 at 1024 px: tens of GB)
                fast_peak = max(fast_peak, round(_cuda_peak_mb(reset=True) - baseline_weights, 1))
            if baseline is not None:
                import torch

                encode_ref, generate_ref = baseline
                xt = torch.from_numpy(x).to(cfg.device)
                wt_ = torch.from_numpy(w).to(cfg.device)
                enc_ms = clock.ms(lambda: encode_ref(xt), warmup=1) / b
                gen_ms = clock.ms(lambda: generate_ref(wt_), warmup=1) / b
                row["baseline_encode_ms_per_face"] = enc_ms
                row["baseline_generator_ms_per_face"] = gen_ms
                row["baseline_encoder_plus_synthesis_ms_per_face"] = enc_ms + gen_ms
                row["ratio_baseline_over_fast"] = (enc_ms + gen_ms) / row["encoder_plus_synthesis_ms_per_face"]
                if device_ms is not None:
                    row["ratio_baseline_over_fast_device"] = (enc_ms + gen_ms) / device_ms
                if cuda:
                    baseline_peak = max(baseline_peak, _cuda_peak_mb(reset=True))
            per_batch[f"batch{b}"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
        mem["rss_mb_end"] = round(_rss_mb(), 1)
        if cuda:
            mem["cuda_allocated_mb_end"] = _cuda_allocated_mb()
            mem["cuda_max_allocated_mb"] = fast_peak  # without the baseline's resident weights
            if baseline is not None:
                mem["baseline_cuda_max_allocated_mb"] = baseline_peak
                mem["baseline_weights_cuda_mb"] = baseline_weights
        if cfg.soak_seconds > 0:
            b = max(cfg.batches)
            idx = [i % faces for i in range(b)]
            mem["soak"] = _soak(engine, crops_m, idx, crop_size, frame.image, cfg)
        result["stages"] = stages
        result["batches"] = per_batch
        result["memory"] = mem
        if baseline is not None:
            result["image_check"] = _image_check(models, baseline, crops_m, enc_size, cfg, options)
    return result


def _cuda_allocated_mb() -> float:
    import torch

    return round(torch.cuda.memory_allocated() / 2**20, 1)


def _cuda_peak_mb(reset: bool) -> float:
    """The CUDA allocator's peak since the last reset, in MB (then reset when asked)."""
    import torch

    torch.cuda.synchronize()
    peak = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


def _soak(engine: Any, crops_m: list, idx: list[int], crop_size: int, image: np.ndarray,
          cfg: BenchConfig) -> dict[str, Any]:
    """The whole per-face path (``engine.generate_crops``: encode, new identity, affine + synthesis to crops;
    then paste back into a fresh copy of the frame) in a loop for ``cfg.soak_seconds``, with host RSS and
    CUDA memory sampled about ten times.

    Growth is the last sample minus the one taken at a third of the run (past most of the allocators'
    warm-up; the samples show the whole curve)."""
    from styleid_edge.runtime import blend

    cuda_mb: Callable[[], tuple[float, float]] = lambda: (float("nan"), float("nan"))  # noqa: E731
    if cfg.device.startswith("cuda"):
        import torch

        def cuda_mb() -> tuple[float, float]:  # allocated, and reserved by the caching allocator
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated() / 2**20, torch.cuda.memory_reserved() / 2**20

    crops = np.stack([crops_m[i][0] for i in idx])
    seeds = list(range(len(idx)))
    samples: list[tuple[float, int, float, tuple[float, float]]] = []
    interval = cfg.soak_seconds / 10.0
    start = time.perf_counter()
    next_sample, iterations = start, 0
    while True:
        now = time.perf_counter()
        if now >= next_sample:
            samples.append((now - start, iterations, _rss_mb(), cuda_mb()))
            next_sample += interval
            if now - start >= cfg.soak_seconds:
                break
        new = engine.generate_crops(crops, seeds, crop_size)  # what the anonymizer runs per batch of faces
        out = image.copy()
        for j, i in enumerate(idx):
            blend.paste_back(out, new[j], crops_m[i][1])
        seeds = [s + len(idx) for s in seeds]  # new pseudo-identities every round, as on a long video
        iterations += 1
    base = samples[len(samples) // 3]
    last = samples[-1]

    def mb(v: float) -> float | None:
        return None if v != v else round(v, 1)

    return {"seconds": round(last[0], 1), "batch": len(idx), "iterations": iterations,
            "faces_per_s": round(iterations * len(idx) / max(last[0], 1e-9), 2),
            "samples": [{"t": round(t, 1), "iterations": n, "rss_mb": round(r, 1), "cuda_allocated_mb": mb(c[0]),
                         "cuda_reserved_mb": mb(c[1])} for t, n, r, c in samples],
            "rss_growth_mb": round(last[2] - base[2], 1),
            "cuda_growth_mb": mb(last[3][0] - base[3][0]),
            "cuda_reserved_growth_mb": mb(last[3][1] - base[3][1])}


def _device_only(models: Any, x: np.ndarray, w: np.ndarray, clock: Clock, b: int) -> float | None:
    """Encoder + affine + synthesis with device-resident tensors (torch backend only), ms per face."""
    runners = [models.encoder.runner, models.affine.runner, models.synthesis.runner]
    if not all(hasattr(r, "run_torch") for r in runners):
        return None
    import torch

    enc, aff, syn = runners
    xt = torch.from_numpy(x).to(enc.device)
    wt = torch.from_numpy(w).to(enc.device)

    def run() -> None:
        enc.run_torch(xt)
        syn.run_torch(aff.run_torch(wt))

    return clock.ms(run) / b


def _image_check(models: Any, baseline: tuple, crops_m: list, enc_size: int, cfg: BenchConfig, options: Any) -> dict:
    """Baseline images (original e4e + generator) vs the fast path's, on the same aligned faces."""
    import torch

    from styleid_edge.runtime.methods import crops_to_input

    crops = np.stack([c for c, _ in crops_m[:2]])
    x = crops_to_input(crops, enc_size)
    fast = models.synthesis.get(models.affine.get(models.encoder.get(x)))
    encode_ref, generate_ref = baseline
    ref = generate_ref(encode_ref(torch.from_numpy(x).to(cfg.device))).float().cpu().numpy()
    diff = float(np.abs(fast - ref).max())
    scale = float(np.abs(ref).max())
    half = options.backend == "torch" and bool(options.backend_options.get("fp16", cfg.device.startswith("cuda")))
    tol = (5e-2 if half else 1e-3) * max(1.0, scale)
    return {"max_abs_diff": diff, "mean_abs_diff": float(np.abs(fast - ref).mean()), "output_scale": scale,
            "tolerance": tol, "precision": "fp16" if half else "fp32", "ok": diff <= tol, "faces": len(crops)}


def _machine(cfg: BenchConfig) -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {"python": platform.python_version(), "onnxruntime": ort.__version__,
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        info["torch_threads"] = torch.get_num_threads()
        if cfg.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError(f"bench --device cuda: torch {torch.__version__} sees no CUDA GPU; run it on a "
                                   "machine with an NVIDIA GPU and a CUDA build of PyTorch, or use --device cpu")
            info["gpu"] = torch.cuda.get_device_name(0)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
    except ImportError as exc:
        raise RuntimeError("bench needs PyTorch for the baseline and the random pack: "
                           "pip install 'styleid-edge[export]'") from exc
    return {"machine": info}
