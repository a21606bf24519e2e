"""Per-face time of the pack's encoder + generator on ONNX Runtime versus StyleID's original math in PyTorch.

Run:  python benchmarks/export_speed.py [--configs tiny,256] [--batches 1,4] [--repeats 3] [--warmup 1]
                                        [--min-time 2] [--json results.json] [--device cpu|cuda]
                                        [--torch-threads N] [--ort-threads N] [--paths original,torch-ours,ort]

For each config both paths get the SAME random weights (latency does not depend on their values):

  tiny   32 px generator (channel multiplier 1, n_mlp 2) + tiny e4e (IR-SE body, 64 px input, 8 styles),
         the shape the test suite's synthetic packs use
  256    256 px generator (channel multiplier 2, n_mlp 8) + the real-size e4e encoder
         (IR-SE50 body, 256 px input, n_styles 14)

Paths (``--paths``):

  original    the seed code's math in PyTorch eager under ``torch.no_grad``: the e4e encoder forward
              (our E4EEncoderModule is the same math as encoder4editing) + the original StyleGAN2
              generator from W+ (tests/reference_stylegan2.py: per-sample weight modulation, grouped
              conv with groups=batch, plain upfirdn2d), torch's default thread count
  ort         the pack models on ONNX Runtime: encoder.onnx (image -> W+), then affine.onnx
              (W+ -> S) + synthesis.onnx (S -> image), exported with ``export_onnx`` exactly as
              ``build_pack`` does, sessions made by the runtime's ``create_session``
              (ORT_ENABLE_ALL, CPUExecutionProvider unless ``--providers`` says otherwise)
  torch-ours  our export-friendly modules in PyTorch eager (E4EEncoderModule + Generator.forward:
              activation modulation, static conv weights); the default extra row with ``--device cuda``

"encoder" is image -> W+, "generator" is W+ -> image (affine + synthesis for the pack), "total" their sum,
all as the MEDIAN over the timed runs, divided by the batch size (ms per face). Paths are interleaved
run by run so that load changes on a shared machine hit them alike, with ``--gap`` idle seconds between
them (worker threads of ORT and OpenMP spin after a run and would slow whichever path runs next).
``ratio`` = original / path.

Before timing, one input goes through every path and the max abs differences of W+ and of the image
against the original are printed (the comparison is of equal work only if they agree).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from reference_stylegan2 import ReferenceStyleGAN2  # noqa: E402

from styleid_edge.export.e4e import E4EConfig, E4EEncoderModule, random_e4e  # noqa: E402
from styleid_edge.export.onnx_io import export_onnx  # noqa: E402
from styleid_edge.export.stylegan2 import AffineModule, Generator, SynthesisModule, random_generator  # noqa: E402
from styleid_edge.runtime.backends import SessionOptions, create_session, parse_providers  # noqa: E402

log = logging.getLogger("bench.export_speed")

SEED = 1234
OPT_LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
MAX_RUNS = 200


# --------------------------------------------------------------------------------------------
# Configs and models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    name: str
    size: int
    channel_multiplier: int
    n_mlp: int
    e4e: E4EConfig
    note: str


def make_config(name: str) -> BenchConfig:
    if name == "tiny":
        return BenchConfig("tiny", 32, 1, 2, E4EConfig.tiny(32, input_size=64, style_dim=512),
                           "32 px generator (cm 1) + tiny e4e (64 px input)")
    if name == "256":
        return BenchConfig("256", 256, 2, 8, E4EConfig(n_styles=14, input_size=256),
                           "256 px generator (cm 2, n_mlp 8) + e4e IR-SE50 (256 px input, 14 styles)")
    raise SystemExit(f"unknown config {name!r}; choose from: tiny, 256")


@dataclass
class Models:
    config: BenchConfig
    gen: Generator
    enc: E4EEncoderModule
    onnx_dir: Path
    export_s: dict[str, float] = field(default_factory=dict)


def build_models(cfg: BenchConfig, work: Path) -> Models:
    t = time.perf_counter()
    gen = random_generator(cfg.size, cfg.channel_multiplier, SEED, n_mlp=cfg.n_mlp)
    enc = random_e4e(cfg.e4e, seed=SEED + 1)
    if enc.n_latent != gen.n_latent:
        raise AssertionError(f"{cfg.name}: encoder makes {enc.n_latent} rows, generator takes {gen.n_latent}")
    with torch.no_grad():  # e4e starts from the generator's average latent; any W+ would do for timing
        g = torch.Generator().manual_seed(SEED)
        avg = gen.mapping(torch.randn(512, gen.style_dim, generator=g)).mean(0)
        enc.latent_avg.copy_(avg.reshape(1, -1).expand_as(enc.latent_avg))
    log.info("%s: random weights in %.1fs", cfg.name, time.perf_counter() - t)
    out = Models(cfg, gen, enc, work / cfg.name)
    size = cfg.e4e.input_size
    for label, fn in (
        ("encoder", lambda: export_onnx(enc, [torch.zeros(1, 3, size, size)], out.onnx_dir / "encoder.onnx",
                                        input_names=["image"], output_names=["w_plus"])),
        ("affine", lambda: export_onnx(AffineModule(gen), [torch.randn(1, gen.n_latent, gen.style_dim)],
                                       out.onnx_dir / "affine.onnx", input_names=["w_plus"],
                                       output_names=["styles"])),
        ("synthesis", lambda: export_onnx(SynthesisModule(gen), [gen.styles(avg.reshape(1, 1, -1).expand(
            1, gen.n_latent, -1).contiguous())], out.onnx_dir / "synthesis.onnx", input_names=["styles"],
            output_names=["image"])),
    ):
        t = time.perf_counter()
        with torch.no_grad():
            fn()
        out.export_s[label] = time.perf_counter() - t
        log.info("%s: exported %s in %.1fs", cfg.name, label, out.export_s[label])
    return out


def ort_session(path: Path, providers: list[str], threads: int, opt_level: str,
                spin: int | None = None) -> ort.InferenceSession:
    if opt_level == "all" and spin is None:  # exactly what the runtime does
        return create_session(path, SessionOptions(providers=providers, intra_op_threads=threads), name=path.name)
    so = ort.SessionOptions()
    so.graph_optimization_level = OPT_LEVELS[opt_level]
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    if spin is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", str(spin))
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)


# --------------------------------------------------------------------------------------------
# Paths: each is a pair (encode, generate) on numpy / torch values, timed stage by stage
# --------------------------------------------------------------------------------------------


class Path_:
    name: str = ""
    where: str = ""

    def encode(self, image: np.ndarray):
        raise NotImplementedError

    def generate(self, w_plus) -> object:
        raise NotImplementedError

    def to_numpy(self, x) -> np.ndarray:
        return x if isinstance(x, np.ndarray) else x.detach().float().cpu().numpy()

    def run_timed(self, image: np.ndarray) -> tuple[float, float]:
        t0 = time.perf_counter()
        w = self.encode(image)
        t1 = time.perf_counter()
        self.generate(w)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1


class TorchPath(Path_):
    def __init__(self, name: str, enc: E4EEncoderModule, generate_fn: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device):
        self.name = name
        self.enc = enc
        self.generate_fn = generate_fn
        self.device = device
        self.where = f"torch {torch.__version__} eager, {device.type}"
        self._inputs: tuple[np.ndarray, torch.Tensor] | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _input(self, image: np.ndarray) -> torch.Tensor:
        # Upload once per input array (the copy is not the models' work); the array is kept
        # alongside so that its id cannot be reused by another array while cached.
        cached = self._inputs
        if cached is None or cached[0] is not image:
            self._inputs = cached = (image, torch.from_numpy(image).to(self.device))
        return cached[1]

    def encode(self, image: np.ndarray) -> torch.Tensor:
        x = self._input(image)
        with torch.no_grad():
            w = self.enc(x)
        self._sync()
        return w

    def generate(self, w_plus) -> torch.Tensor:
        if isinstance(w_plus, np.ndarray):
            w_plus = torch.from_numpy(w_plus).to(self.device)
        with torch.no_grad():
            img = self.generate_fn(w_plus)
        self._sync()
        return img


class RunnerPath(Path_):
    """The pack's encoder, affine and synthesis ONNX files, each run by a runner with ``run(names, feeds)``
    (an ONNX Runtime session or a runtime backend's runner). ``files`` replaces some of them (INT8)."""

    ROLES = ("encoder", "affine", "synthesis")

    def __init__(self, name: str, onnx_dir: Path, files: dict[str, Path] | None,
                 load: Callable[[Path, str], object]):
        self.name = name
        paths = {role: onnx_dir / f"{role}.onnx" for role in self.ROLES} | (files or {})
        self.encoder, self.affine, self.synthesis = (load(paths[role], role) for role in self.ROLES)
        self.files_note = "; " + ", ".join(f"{r} {f.name}" for r, f in files.items()) if files else ""

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.encoder.run(["w_plus"], {"image": image})[0]

    def generate(self, w_plus) -> np.ndarray:
        w_plus = np.ascontiguousarray(self.to_numpy(w_plus), dtype=np.float32)
        styles = self.affine.run(["styles"], {"w_plus": w_plus})[0]
        return self.synthesis.run(["image"], {"styles": styles})[0]


class OrtPath(RunnerPath):
    def __init__(self, onnx_dir: Path, providers: list[str], threads: int, opt_level: str, spin: int | None,
                 name: str = "ort", files: dict[str, Path] | None = None):
        super().__init__(name, onnx_dir, files,
                         lambda path, role: ort_session(path, providers, threads, opt_level, spin))
        self.where = (f"onnxruntime {ort.__version__}, {self.encoder.get_providers()[0]}, opt {opt_level}"
                      + (f", allow_spinning {spin}" if spin is not None else "") + self.files_note)


class OpenVINOPath(RunnerPath):
    """The same ONNX files compiled by OpenVINO's CPU plugin (the runtime's ``--backend openvino``)."""

    def __init__(self, onnx_dir: Path, threads: int, name: str = "ov", files: dict[str, Path] | None = None):
        import openvino

        from styleid_edge.runtime.backends import SessionOptions as Opts
        from styleid_edge.runtime.openvino_backend import OpenVINORunner

        opts = Opts(intra_op_threads=threads, backend="openvino")
        super().__init__(name, onnx_dir, files, lambda path, role: OpenVINORunner.create(path, role, opts))
        self.where = f"openvino {openvino.__version__}, {self.encoder.provider}{self.files_note}"


def make_paths(models: Models, names: list[str], device: torch.device, providers: list[str], ort_threads: int,
               opt_level: str, ort_spin: int | None) -> list[Path_]:
    gen, enc = models.gen, models.enc
    out: list[Path_] = []
    int8_files: dict[str, Path] | None = None  # quantized once, shared by ort-int8 and ov-int8
    for name in names:
        if name == "original":
            dev_state = {k: v.to(device) for k, v in gen.state_dict().items()}
            ref = ReferenceStyleGAN2(dev_state, gen.size, n_mlp=gen.n_mlp,
                                     channel_multiplier=gen.channel_multiplier)
            enc_dev = enc.to(device) if device.type == "cpu" else _copy_module(enc, device)

            def ref_generate(w: torch.Tensor, ref=ref) -> torch.Tensor:
                # The reference creates tensors without a device (upfirdn2d's zero insertion):
                # make the requested device the default while it runs.
                with torch.device(device):
                    return ref.forward_wplus(w)[0]

            out.append(TorchPath("original", enc_dev, ref_generate, device))
        elif name == "torch-ours":
            g = gen if device.type == "cpu" else _copy_module(gen, device)
            g.precompute()
            out.append(TorchPath("torch-ours", enc if device.type == "cpu" else _copy_module(enc, device),
                                 g.forward, device))
        elif name == "ort":
            out.append(OrtPath(models.onnx_dir, providers, ort_threads, opt_level, ort_spin))
        elif name == "ort-int8":
            int8_files = int8_files or quantize_for_bench(models)
            out.append(OrtPath(models.onnx_dir, providers, ort_threads, opt_level, ort_spin, name="ort-int8",
                               files=int8_files))
        elif name == "ov":
            out.append(OpenVINOPath(models.onnx_dir, ort_threads))
        elif name == "ov-int8":
            int8_files = int8_files or quantize_for_bench(models)
            out.append(OpenVINOPath(models.onnx_dir, ort_threads, name="ov-int8", files=int8_files))
        else:
            raise SystemExit(f"unknown path {name!r}; choose from: original, torch-ours, ort, ort-int8, ov, ov-int8")
    return out


def quantize_for_bench(models: Models, n_calib: int = 8) -> dict[str, Path]:
    """INT8 (static QDQ) encoder.onnx and synthesis.onnx, exactly as ``styleid-edge calibrate int8`` makes them.

    Calibration data: generated faces (the generator on random W+, resized to the encoder's input) for the
    encoder, and the StyleSpace vectors of random W+ for the synthesis network. Mapping, affine and the
    style/demodulation path stay float (the calibration module's rules).
    """
    from styleid_edge.calibration.int8 import Int8Config, quantize_model

    gen, cfg = models.gen, models.config
    out_dir = models.onnx_dir / "int8"
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        g = torch.Generator().manual_seed(SEED + 7)
        w = gen.mapping(torch.randn(n_calib, gen.style_dim, generator=g))
        w_plus = w[:, None].expand(n_calib, gen.n_latent, gen.style_dim).contiguous()
        styles = torch.cat([gen.styles(w_plus[i:i + 1]) for i in range(n_calib)]).numpy()
        faces = torch.cat([gen(w_plus[i:i + 1]) for i in range(n_calib)])
        size = cfg.e4e.input_size
        if faces.shape[-1] != size:
            faces = torch.nn.functional.interpolate(faces, size=(size, size), mode="bilinear", align_corners=False)
        faces = faces.clamp(-1, 1).numpy()
    config = Int8Config(target="cpu")
    files = {}
    for role, data in (("encoder", faces), ("synthesis", styles)):
        t = time.perf_counter()
        q = quantize_model(models.onnx_dir / f"{role}.onnx", out_dir / f"{role}.int8.onnx", role,
                           data.astype(np.float32), config)
        models.export_s[f"{role}_int8"] = time.perf_counter() - t
        log.info("%s: quantized %s in %.1fs (%d Q/DQ nodes)", cfg.name, role, q.seconds, q.quantized_nodes)
        files[role] = out_dir / q.file
    return files


def _copy_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module).to(device).eval()


# --------------------------------------------------------------------------------------------
# Measure
# --------------------------------------------------------------------------------------------


def parity(paths: list[Path_], image: np.ndarray) -> dict[str, dict[str, float]]:
    """Max abs differences against the first path: W+, image from the same W+, end-to-end image."""
    base = paths[0]
    w_ref = base.encode(image)
    img_ref = base.to_numpy(base.generate(w_ref))
    w_ref_np = base.to_numpy(w_ref)
    out = {}
    for p in paths[1:]:
        w = p.to_numpy(p.encode(image))
        same_w = p.to_numpy(p.generate(w_ref_np))
        e2e = p.to_numpy(p.generate(w))
        out[p.name] = {"w_plus": float(np.abs(w - w_ref_np).max()),
                       "image_same_w": float(np.abs(same_w - img_ref).max()),
                       "image_end_to_end": float(np.abs(e2e - img_ref).max()),
                       "image_range": float(np.abs(img_ref).max()),
                       "psnr_end_to_end_db": _psnr(e2e, img_ref)}
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB with the reference image's own peak-to-peak range as the signal range."""
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    peak = float(b.max() - b.min()) or 1.0
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def measure(paths: list[Path_], image: np.ndarray, warmup: int, repeats: int,
            min_time: float, gap: float) -> dict[str, dict[str, list[float]]]:
    def pause() -> None:
        # Idle between paths: ORT's and OpenMP's worker threads spin for a while after a run
        # and would otherwise steal the cores from whichever path runs next.
        if gap > 0 and len(paths) > 1:
            time.sleep(gap)

    for _ in range(warmup):
        for p in paths:
            p.run_timed(image)
            pause()
    times = {p.name: {"encoder": [], "generator": []} for p in paths}
    spent = {p.name: 0.0 for p in paths}
    runs = 0
    while runs < MAX_RUNS and (runs < repeats or min(spent.values()) < min_time):
        for p in paths:  # interleaved: load drift on a shared machine hits every path alike
            e, g = p.run_timed(image)
            times[p.name]["encoder"].append(e)
            times[p.name]["generator"].append(g)
            spent[p.name] += e + g
            pause()
        runs += 1
    return times


def summarize(times: dict[str, dict[str, list[float]]], batch: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, t in times.items():
        total = [e + g for e, g in zip(t["encoder"], t["generator"])]
        out[name] = {"encoder_ms": 1e3 * statistics.median(t["encoder"]) / batch,
                     "generator_ms": 1e3 * statistics.median(t["generator"]) / batch,
                     "total_ms": 1e3 * statistics.median(total) / batch,
                     "runs": len(total)}
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_info(device: torch.device, ort_threads: int, opt_level: str, providers: list[str]) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_mkldnn": torch.backends.mkldnn.is_available(),
        "onnxruntime": ort.__version__,
        "ort_available_providers": ort.get_available_providers(),
        "ort_providers": providers,
        "ort_intra_op_threads": ort_threads or "default (0 = one per physical core)",
        "ort_graph_optimization": opt_level,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return info


def print_machine(info: dict) -> None:
    print("machine")
    for k, v in info.items():
        print(f"  {k:24s} {v}")
    print()


def print_table(rows: list[dict]) -> None:
    head = (f"{'config':7s} {'batch':>5s} {'path':12s} {'encoder ms':>11s} {'generator ms':>13s} "
            f"{'total ms':>10s} {'runs':>5s}   {'ratio enc':>9s} {'ratio gen':>9s} {'ratio total':>11s}")
    print("per-face medians (ms per face = median batch time / batch); ratio = original / path")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r.get("ratio")
        rs = (f"{ratio['encoder']:9.2f} {ratio['generator']:9.2f} {ratio['total']:11.2f}" if ratio
              else f"{'':9s} {'':9s} {'':11s}")
        print(f"{r['config']:7s} {r['batch']:5d} {r['path']:12s} {r['encoder_ms']:11.1f} {r['generator_ms']:13.1f} "
              f"{r['total_ms']:10.1f} {r['runs']:5d}   {rs}")
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,256", help="comma list of: tiny, 256 (default: tiny,256)")
    ap.add_argument("--batches", default="1,4", help="comma list of batch sizes (default: 1,4)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per path and batch (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="minimum timed runs per path and batch (default 3)")
    ap.add_argument("--min-time", type=float, default=2.0,
                    help="keep timing until every path has spent this many seconds (fast configs get more "
                         f"runs; at most {MAX_RUNS}; default 2)")
    ap.add_argument("--gap", type=float, default=0.3,
                    help="idle seconds between paths, so one runtime's spinning threads do not slow the next "
                         "(default 0.3)")
    ap.add_argument("--ort-spin", type=int, default=None, choices=[0, 1],
                    help="set session.intra_op.allow_spinning (default: ORT's own default, spinning on)")
    ap.add_argument("--paths", default=None,
                    help="comma list of: original, ort, ort-int8, torch-ours (default: original,ort on cpu; "
                         "original,torch-ours on cuda, plus ort when --providers is given)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the torch paths")
    ap.add_argument("--providers", default=None, help="ONNX Runtime providers for the ort path (default cpu)")
    ap.add_argument("--ort-threads", type=int, default=0, help="ORT intra-op threads (0 = ORT default)")
    ap.add_argument("--ort-opt", default="all", choices=list(OPT_LEVELS),
                    help="ORT graph optimization level (default all, as the runtime uses)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    ap.add_argument("--tf32", action="store_true",
                    help="with --device cuda: allow TF32 in cuDNN convs and matmuls (default off: strict fp32, "
                         "so the parity line compares like with like)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--keep-onnx", type=Path, default=None, help="export the ONNX files here and keep them")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device cuda was asked for but torch {torch.__version__} sees no CUDA device "
              f"(torch.version.cuda = {torch.version.cuda}); install a CUDA build of torch on a GPU "
              "machine, or run with --device cpu", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    providers = parse_providers(args.providers or "cpu")
    if args.paths:
        path_names = [p.strip() for p in args.paths.split(",") if p.strip()]
    elif device.type == "cpu":
        path_names = ["original", "ort"]
    else:
        path_names = ["original", "torch-ours"] + (["ort"] if args.providers else [])
    if path_names[0] != "original":
        path_names = ["original"] + [p for p in path_names if p != "original"]
    configs = [make_config(c.strip()) for c in args.configs.split(",") if c.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]

    info = machine_info(device, args.ort_threads, args.ort_opt, providers)
    print_machine(info)
    load = info["load_avg_1_5_15"]
    if load and info["cpu_count"] and load[0] > 0.75 * info["cpu_count"]:
        print(f"WARNING: load average {load[0]:.1f} on {info['cpu_count']} CPUs: other processes compete for the "
              "cores. Multi-threaded runtimes (torch's OpenMP above all) slow down far more than single-threaded "
              "ones under oversubscription; compare with --torch-threads 1 --ort-threads 1 too.\n")
    results: dict = {"machine": info, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                   for k, v in vars(args).items()},
                     "configs": {}}
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="styleid-bench-") as tmp:
        work = args.keep_onnx or Path(tmp)
        for cfg in configs:
            print(f"== {cfg.name}: {cfg.note}")
            models = build_models(cfg, work)
            paths = make_paths(models, path_names, device, providers, args.ort_threads, args.ort_opt,
                               args.ort_spin)
            for p in paths:
                print(f"  {p.name:12s} {p.where}")
            sizes = {str(f.relative_to(models.onnx_dir)): round(f.stat().st_size / 1e6, 1)
                     for f in sorted(models.onnx_dir.rglob("*.onnx"))}
            print(f"  export s   {', '.join(f'{k} {v:.1f}' for k, v in models.export_s.items())}; "
                  f"ONNX MB {sizes}")
            rng = np.random.default_rng(SEED)
            s = cfg.e4e.input_size
            check_img = rng.uniform(-1, 1, (1, 3, s, s)).astype(np.float32)
            diffs = parity(paths, check_img)
            for name, d in diffs.items():
                print(f"  parity {name} vs original (max abs diff): W+ {d['w_plus']:.2e}, image from the same W+ "
                      f"{d['image_same_w']:.2e}, image end to end {d['image_end_to_end']:.2e} "
                      f"(image max |x| {d['image_range']:.2f}; PSNR {d['psnr_end_to_end_db']:.1f} dB)")
            entry: dict = {"note": cfg.note, "export_s": models.export_s, "onnx_mb": sizes, "parity": diffs,
                           "batches": {}}
            for b in batches:
                image = rng.uniform(-1, 1, (b, 3, s, s)).astype(np.float32)
                t = time.perf_counter()
                times = measure(paths, image, args.warmup, args.repeats, args.min_time, args.gap)
                summary = summarize(times, b)
                log.info("%s batch %d measured in %.1fs", cfg.name, b, time.perf_counter() - t)
                base = summary["original"]
                for name, m in summary.items():
                    row = {"config": cfg.name, "batch": b, "path": name, **m}
                    if name != "original":
                        row["ratio"] = {k: base[f"{k}_ms"] / m[f"{k}_ms"] for k in ("encoder", "generator", "total")}
                    rows.append(row)
                entry["batches"][str(b)] = {"per_face": summary, "raw_s": times}
                print(f"  batch {b}: " + "; ".join(f"{n} {m['total_ms']:.1f} ms/face" for n, m in summary.items()))
            results["configs"][cfg.name] = entry
            del paths, models
            gc.collect()
            print()
    print_table(rows)
    results["table"] = rows
    results["elapsed_s"] = time.perf_counter() - started
    results["machine"]["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(f"load average at start {info['load_avg_1_5_15']}, at end {results['machine']['load_avg_end']}; "
          f"elapsed {results['elapsed_s']:.0f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
