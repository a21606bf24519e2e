"""``styleid-edge export triton``: a Triton model repository made from a model pack.

Layout (https://github.com/triton-inference-server/server/blob/main/docs/user_guide/model_repository.md)::

    REPO/
      encoder/config.pbtxt     encoder/1/model.onnx      (or model.plan with --platform tensorrt)
      mapping/ affine/ synthesis/ mapper/ ...            one model per pack ONNX
      styleid_generate/config.pbtxt  styleid_generate/1/ ensemble: W+ -> affine -> synthesis -> image
      styleid_swapper/config.pbtxt   styleid_swapper/1/  ensemble (packs with a mapper): image + target W+
                                                         -> encoder -> mapper -> affine -> synthesis -> image

Each per-stage model gets ``max_batch_size``, ``dynamic_batching`` and an ``instance_group``; its
inputs/outputs are the ONNX file's, with the batch dimension left out (Triton adds it) and symbolic
dimensions as -1. The ensembles are plain Triton ensembles (no Python code): the swapper one is the
published swapper method (strength 1). ``--backend triton`` itself calls the per-stage models and does
the small manipulation step (channel swap, W+ row mix, strength) on the appliance in numpy, so all
three methods work against the same repository.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..runtime.pack import ModelPack

log = logging.getLogger(__name__)

STAGE_ROLES = ("encoder", "mapping", "affine", "synthesis", "mapper", "recognizer")
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "onnxruntime-trt": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"  # any recent <yy.mm>-py3 release works
ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int32)": "TYPE_INT32",
             "tensor(int64)": "TYPE_INT64", "tensor(int8)": "TYPE_INT8", "tensor(uint8)": "TYPE_UINT8",
             "tensor(bool)": "TYPE_BOOL", "tensor(double)": "TYPE_FP64"}


@dataclass
class RepositoryConfig:
    platform: str = "onnxruntime"  # onnxruntime | onnxruntime-trt | tensorrt
    plans: str | Path | None = None  # folder of ROLE.plan / ROLE.engine (tensorrt platform)
    max_batch: int = 32
    max_queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "gpu"  # instance_group kind: gpu | cpu
    model_prefix: str = ""
    ensemble: bool = True
    overwrite: bool = False


@dataclass
class TensorSpec:
    name: str
    dtype: str  # Triton TYPE_*
    dims: tuple[int, ...]  # without the batch dimension


def onnx_io(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX file as ONNX Runtime sees them (shapes after its shape inference)."""
    from ..runtime.backends import create_session

    session = create_session(path, ["CPUExecutionProvider"], name=Path(path).name)

    def spec(v) -> TensorSpec:
        if not v.shape:
            raise ValueError(f"{path}: {v.name} has no batch dimension; re-export the pack")
        if v.type not in ORT_TYPES:
            raise ValueError(f"{path}: {v.name} is {v.type}, which Triton cannot serve")
        return TensorSpec(v.name, ORT_TYPES[v.type], tuple(d if isinstance(d, int) and d > 0 else -1
                                                           for d in v.shape[1:]))

    return [spec(v) for v in session.get_inputs()], [spec(v) for v in session.get_outputs()]


def _tensor_block(key: str, specs: list[TensorSpec]) -> list[str]:
    lines = [f"{key} ["]
    for i, s in enumerate(specs):
        sep = "," if i < len(specs) - 1 else ""
        lines.append(f'  {{ name: "{s.name}" data_type: {s.dtype} dims: [ {", ".join(map(str, s.dims))} ] }}{sep}')
    lines.append("]")
    return lines


def stage_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], config: RepositoryConfig) -> str:
    """config.pbtxt of one per-stage model."""
    platform = PLATFORMS[config.platform]
    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {config.max_batch}"]
    lines += _tensor_block("input", inputs) + _tensor_block("output", outputs)
    lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {config.max_queue_delay_us} }}")
    lines.append(f"instance_group [ {{ count: {config.instances} kind: KIND_{config.kind.upper()} }} ]")
    if config.platform == "onnxruntime-trt":
        lines.append('optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt" } ] } }')
    return "\n".join(lines) + "\n"


def ensemble_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                    steps: list[tuple[str, dict[str, str], dict[str, str]]], config: RepositoryConfig) -> str:
    """config.pbtxt of an ensemble; steps are (model, {model input: tensor}, {model output: tensor})."""
    lines = [f'name: "{name}"', 'platform: "ensemble"', f"max_batch_size: {config.max_batch}"]
    lines += _tensor_block("input", inputs) + _tensor_block("output", outputs)
    lines.append("ensemble_scheduling {")
    lines.append("  step [")
    for i, (model, in_map, out_map) in enumerate(steps):
        maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in in_map.items()]
        maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in out_map.items()]
        sep = "," if i < len(steps) - 1 else ""
        lines.append(f'    {{ model_name: "{model}" model_version: -1 {" ".join(maps)} }}{sep}')
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _plan_file(plans: Path, role: str, pack: ModelPack) -> Path:
    stem = Path(pack.manifest.files[role]).stem
    for candidate in (f"{role}.plan", f"{role}.engine", f"{stem}.plan", f"{stem}.engine"):
        if (plans / candidate).is_file():
            return plans / candidate
    raise FileNotFoundError(f"{plans}: no TensorRT engine for {role} ({role}.plan or {role}.engine); build them "
                            "on the server's GPU with `styleid-edge export tensorrt`, or use --platform onnxruntime")


def write_repository(pack: ModelPack | str | Path, out: str | Path, config: RepositoryConfig | None = None) -> list[str]:
    """Write the model repository; returns the model names written."""
    config = config or RepositoryConfig()
    if config.platform not in PLATFORMS:
        raise ValueError(f"platform {config.platform!r}: choose one of {', '.join(PLATFORMS)}")
    if config.max_batch < 1 or config.instances < 1:
        raise ValueError("--max-batch and --instances must be at least 1")
    if config.kind not in ("gpu", "cpu"):
        raise ValueError(f"--kind {config.kind!r}: choose gpu or cpu")
    if config.platform == "tensorrt" and not config.plans:
        raise ValueError("--platform tensorrt needs --plans DIR with the TensorRT engines (ROLE.plan)")
    pack = pack if isinstance(pack, ModelPack) else ModelPack.load(pack)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not config.overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --force")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = config.model_prefix
    specs: dict[str, tuple[list[TensorSpec], list[TensorSpec]]] = {}
    written = []
    for role in STAGE_ROLES:
        if not pack.has(role):
            continue
        src = pack.model_path(role)
        inputs, outputs = onnx_io(src)
        specs[role] = (inputs, outputs)
        name = prefix + role
        version = out / name / "1"
        version.mkdir(parents=True)
        if config.platform == "tensorrt":
            shutil.copyfile(_plan_file(Path(config.plans), role, pack), version / "model.plan")
        else:
            shutil.copyfile(src, version / "model.onnx")
            for extra in src.parent.glob(src.name + ".data"):  # external weights next to a large ONNX file
                shutil.copyfile(extra, version / extra.name)
        (out / name / "config.pbtxt").write_text(stage_config(name, inputs, outputs, config))
        written.append(name)
    if config.ensemble:
        written += _write_ensembles(out, pack, specs, config)
    log.info("wrote Triton model repository %s: %s", out, ", ".join(written))
    return written


def _write_ensembles(out: Path, pack: ModelPack, specs: dict, config: RepositoryConfig) -> list[str]:
    prefix, written = config.model_prefix, []

    def one(role: str, kind: int) -> TensorSpec:
        return specs[role][kind][0]

    image = TensorSpec("image_anon", one("synthesis", 1).dtype, one("synthesis", 1).dims)
    w_plus = one("affine", 0)
    gen = [(prefix + "affine", {w_plus.name: "w_plus"}, {one("affine", 1).name: "styles"}),
           (prefix + "synthesis", {one("synthesis", 0).name: "styles"}, {one("synthesis", 1).name: "image_anon"})]
    name = prefix + "styleid_generate"
    (out / name / "1").mkdir(parents=True)
    (out / name / "config.pbtxt").write_text(ensemble_config(
        name, [TensorSpec("w_plus", w_plus.dtype, w_plus.dims)], [image], gen, config))
    written.append(name)
    if "encoder" in specs and "mapper" in specs:
        enc_in, mapper_ins = one("encoder", 0), specs["mapper"][0]
        src_name, tar_name = (s.name for s in mapper_ins[:2])  # w_src, w_tar (pack contract order)
        steps = [(prefix + "encoder", {enc_in.name: "image"}, {one("encoder", 1).name: "w_src"}),
                 (prefix + "mapper", {src_name: "w_src", tar_name: "w_tar"}, {one("mapper", 1).name: "w_plus"})]
        steps += gen
        name = prefix + "styleid_swapper"
        (out / name / "1").mkdir(parents=True)
        (out / name / "config.pbtxt").write_text(ensemble_config(
            name, [TensorSpec("image", enc_in.dtype, enc_in.dims), TensorSpec("w_tar", mapper_ins[1].dtype,
                                                                              mapper_ins[1].dims)],
            [image], steps, config))
        written.append(name)
    return written


def docker_command(repository: str | Path, image: str = TRITON_IMAGE) -> str:
    """The official Triton container command line that serves ``repository``."""
    repo = Path(repository).resolve()
    return (f"docker run --gpus all --rm --shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 "
            f"-v {repo}:/models {image} tritonserver --model-repository=/models")
