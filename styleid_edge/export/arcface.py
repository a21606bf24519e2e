"""ArcFace IR-SE50 recognizer (``model_ir_se50.pth``) and insightface recognizer ONNX import.

The PyTorch model is TreB1eN's InsightFace ``Backbone(112, 50, mode='ir_se')``,
the identity network StyleID (and pSp / e4e) train with:
``input_layer`` + IR-SE ``body`` (:mod:`.irse`) + ``output_layer`` =
BatchNorm2d(512) -> Dropout -> Flatten -> Linear(512*7*7, 512) -> BatchNorm1d(512),
then L2 normalisation. Input: aligned 112x112 RGB in [-1, 1] (TreB1eN
normalises with mean 0.5, std 0.5 on [0, 1] pixels). The real file is a plain
state dict; keys as in ``../shared/reference/checkpoints/arcface_ir_se50.json``.

insightface's own recognizers (``w600k_r50.onnx``, ``glintr100.onnx``, ...) are
used as they are: :func:`import_recognizer_onnx` validates one, copies it into
a pack and reports how to feed it.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NoReturn

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import (CheckpointError, describe_checkpoint, load_checkpoint, load_state_strict, sha256_file,
                          strip_prefix)
from .irse import IRSE50, IRSEConfig, infer_irse_config, make_body, make_input_layer, randomize_

log = logging.getLogger(__name__)

ARCFACE_EXPECTED = "an ArcFace IR-SE backbone state dict (model_ir_se50.pth)"


@dataclass(frozen=True)
class ArcFaceConfig:
    """Shape of an IR-SE ArcFace backbone. Defaults: the real IR-SE50 at 112 px."""

    input_size: int = 112
    embedding_dim: int = 512
    body: IRSEConfig = field(default_factory=lambda: IRSE50)
    bn_affine: bool = True  # TreB1eN's Backbone default; pSp's IR_SE_50() builder uses False
    drop_ratio: float = 0.6

    def __post_init__(self) -> None:
        if self.input_size % self.body.downsample:
            raise ValueError(f"ArcFaceConfig: input_size {self.input_size} is not a multiple of the body's "
                             f"downsampling {self.body.downsample}")

    @property
    def feature_size(self) -> int:
        """Spatial size of the last feature map (7 for 112 px)."""
        return self.input_size // self.body.downsample

    @classmethod
    def tiny(cls, embedding_dim: int = 128) -> "ArcFaceConfig":
        """Narrow, shallow backbone with the real structure, still taking 112 px faces (for tests)."""
        body = IRSEConfig(stage_channels=(16, 24, 32, 48), stage_units=(1, 2, 1, 1), se_reduction=8)
        return cls(embedding_dim=embedding_dim, body=body)


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class ArcFaceModule(nn.Module):
    """``face`` (B,3,112,112) RGB in [-1,1] -> ``embedding`` (B,D), L2-normalised.

    State dict keys are exactly the real file's (``input_layer.*``, ``body.*``,
    ``output_layer.*``). Call ``.eval()`` (the loaders do): BatchNorm must use its
    running statistics and Dropout must be off.
    """

    def __init__(self, config: ArcFaceConfig = ArcFaceConfig()) -> None:
        super().__init__()
        self.config = config
        body = config.body
        self.input_layer = make_input_layer(body)
        self.body = make_body(body)
        s = config.feature_size
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(body.out_channels),
            nn.Dropout(config.drop_ratio),
            _Flatten(),
            nn.Linear(body.out_channels * s * s, config.embedding_dim),
            nn.BatchNorm1d(config.embedding_dim, affine=config.bn_affine),
        )

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if face.dim() != 4 or face.shape[1] != 3 or face.shape[-2] != size or face.shape[-1] != size:
            raise ValueError(f"ArcFace expects aligned faces of shape (B, 3, {size}, {size}) in [-1, 1], "
                             f"got {tuple(face.shape)}")
        x = self.output_layer(self.body(self.input_layer(face)))
        return F.normalize(x, p=2.0, dim=1)


def infer_arcface_config(state: Mapping[str, torch.Tensor]) -> ArcFaceConfig:
    """Read an :class:`ArcFaceConfig` back from a backbone state dict; ``KeyError`` if it is not one."""
    body = infer_irse_config(state)
    linear = state["output_layer.3.weight"]
    embedding_dim, in_features = (int(d) for d in linear.shape)
    s = math.isqrt(in_features // body.out_channels)
    if s * s * body.out_channels != in_features:
        raise KeyError(f"output_layer.3.weight has {in_features} inputs, not {body.out_channels} x s x s")
    return ArcFaceConfig(input_size=s * body.downsample, embedding_dim=embedding_dim, body=body,
                         bn_affine="output_layer.4.weight" in state)


def _raise_key_mismatch(state: Mapping[str, Any], obj: Any, source: str, why: str) -> NoReturn:
    with torch.device("meta"):  # shapes only
        reference = ArcFaceModule(ArcFaceConfig())
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    load_state_strict(reference, tensors, source=source, expected=ARCFACE_EXPECTED, whole=obj)
    raise CheckpointError(f"{source}: {why}; the file looks like {describe_checkpoint(obj)}. "
                          "Pass the ArcFace IR-SE50 file (model_ir_se50.pth).")


def arcface_from_checkpoint(obj: Any, *, source: str = "ArcFace checkpoint") -> tuple[ArcFaceModule, dict[str, Any]]:
    """Build :class:`ArcFaceModule` from an already loaded object. See :func:`load_arcface`."""
    state: Any = obj
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state = obj["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: is not {ARCFACE_EXPECTED}; the file looks like {describe_checkpoint(obj)}.")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = strip_prefix(state, "module.")
    try:
        config = infer_arcface_config(state)
    except (KeyError, ValueError) as exc:
        _raise_key_mismatch(state, obj, source, f"cannot read an IR-SE backbone from its keys ({exc})")
    with torch.device("meta"):  # every tensor is overwritten by the strict load: skip the random init
        module = ArcFaceModule(config)
    module = module.to_empty(device="cpu")
    load_state_strict(module, state, source=source, expected=ARCFACE_EXPECTED, whole=obj)
    module.eval()
    info = {
        "kind": "arcface_irse",
        "source": source,
        "input_size": config.input_size,
        "embedding_dim": config.embedding_dim,
        "body": {"stage_channels": list(config.body.stage_channels), "stage_units": list(config.body.stage_units)},
        "layout": "NCHW",
        "channels": "RGB",
        "input_range": [-1.0, 1.0],
    }
    log.info("%s: ArcFace IR-SE backbone, units %s, %d-d embedding", source, config.body.stage_units,
             config.embedding_dim)
    return module, info


def load_arcface(path: str | Path) -> tuple[ArcFaceModule, dict[str, Any]]:
    """Load ``model_ir_se50.pth`` (weights only, strict) as an eval-mode :class:`ArcFaceModule`.

    Also accepts the same tensors under ``{"state_dict": ...}`` or with a ``module.``
    prefix. Returns ``(module, info)``; info has input_size, embedding_dim and sha256.
    """
    path = Path(path)
    module, info = arcface_from_checkpoint(load_checkpoint(path), source=str(path))
    info["sha256"] = sha256_file(path)
    return module, info


@torch.no_grad()
def random_arcface(config: ArcFaceConfig | None = None, *, seed: int = 0) -> ArcFaceModule:
    """An ArcFace backbone with random, non-trivial weights (BN statistics, PReLU slopes), in eval mode."""
    config = config or ArcFaceConfig()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = ArcFaceModule(config)
    randomize_(module, gen)
    return module.eval()


def save_arcface_checkpoint(module: ArcFaceModule, path: str | Path) -> Path:
    """Write ``module`` as a plain state dict, the layout of ``model_ir_se50.pth``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, path)
    return path


# --------------------------------------------------------------------------- insightface ONNX recognizers


def _dims(value_info: Any) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _has_baked_normalisation(graph: Any) -> bool:
    """insightface's rule: mxnet-converted models start with Sub and Mul nodes (normalisation in the graph).

    insightface (``model_zoo/arcface_onnx.py``) looks at the first 8 nodes' names
    (``Sub*`` / ``_minus*`` and ``Mul*`` / ``_mul*``); we also accept the op types.
    """
    head = list(graph.node[:8])
    sub = any(n.name.startswith(("Sub", "_minus")) or n.op_type == "Sub" for n in head)
    mul = any(n.name.startswith(("Mul", "_mul")) or n.op_type == "Mul" for n in head)
    return sub and mul


def import_recognizer_onnx(path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Validate an insightface-style face recognizer ``.onnx``, copy it to ``out_path``, describe its input.

    Checks: loads, passes ``onnx.checker``, opens in ONNX Runtime (CPU), has one
    4-D float image input with 3 channels (NCHW or NHWC) and a 2-D (B, D) output.

    Returns a dict with ``input_name``, ``output_name``, ``input_size`` [H, W]
    (112x112 assumed and said so when the graph leaves it free), ``layout``
    ("NCHW"/"NHWC"), ``channels`` ("RGB": insightface feeds ``swapRB=True`` blobs),
    ``input_mean`` / ``input_std`` on 0..255 pixels ((x - 127.5) / 127.5, or 0 / 1
    when the graph normalises itself), ``from_unit_range`` ({scale, offset}: the
    model input is ``face * scale + offset`` for a face in [-1, 1]),
    ``embedding_dim``, ``dynamic_batch``, ``batch`` (fixed size or None),
    ``normalize_output`` (True: insightface embeddings are not L2-normalised),
    ``sha256``.
    """
    path, out_path = Path(path), Path(out_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file. Pass the recognizer .onnx (e.g. w600k_r50.onnx).")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise CheckpointError(f"{path}: is not a valid ONNX model ({type(exc).__name__}: {exc}). "
                              "Pass an insightface recognizer .onnx file.") from exc
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) < 1:
        raise CheckpointError(f"{path}: a recognizer has exactly one input image; this graph has inputs "
                              f"{[i.name for i in inputs]} and outputs {[o.name for o in graph.output]}.")
    inp, out = inputs[0], graph.output[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise CheckpointError(f"{path}: input {inp.name!r} is not float32; quantized-input recognizers are not "
                              "supported, export a float model.")
    in_dims, out_dims = _dims(inp), _dims(out)
    if len(in_dims) != 4:
        raise CheckpointError(f"{path}: input {inp.name!r} has shape {in_dims}; a face recognizer takes "
                              "(B, 3, H, W) or (B, H, W, 3).")
    if in_dims[1] == 3:
        layout, hw = "NCHW", in_dims[2:4]
    elif in_dims[3] == 3:
        layout, hw = "NHWC", in_dims[1:3]
    else:
        raise CheckpointError(f"{path}: input {inp.name!r} has shape {in_dims}: no 3-channel axis at position 1 "
                              "(NCHW) or 3 (NHWC); this is not an RGB face recognizer.")
    if len(out_dims) not in (0, 2):  # rank 0: the graph does not say; the probe run below decides
        raise CheckpointError(f"{path}: output {out.name!r} has shape {out_dims}; expected (B, D) embeddings. "
                              "Is this a detector rather than a recognizer?")
    notes = []
    if all(isinstance(d, int) for d in hw):
        input_size = [int(hw[0]), int(hw[1])]  # type: ignore[arg-type]
    else:
        input_size = [112, 112]
        notes.append(f"input spatial size is free in the graph ({hw}); assuming 112x112 (insightface default)")
    if input_size != [112, 112]:
        notes.append(f"input is {input_size[0]}x{input_size[1]}, not the usual 112x112; align faces to that size")
    baked = _has_baked_normalisation(graph)
    mean, std = (0.0, 1.0) if baked else (127.5, 127.5)
    # face in [-1, 1] -> pixels p = (face + 1) * 127.5 -> model input (p - mean) / std
    scale, offset = 127.5 / std, (127.5 - mean) / std

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        sess_in = sess.get_inputs()[0]
    except Exception as exc:
        raise CheckpointError(f"{path}: ONNX Runtime cannot open it ({type(exc).__name__}: {exc}).") from exc
    if sess_in.name != inp.name:
        raise CheckpointError(f"{path}: ONNX Runtime sees input {sess_in.name!r}, the graph says {inp.name!r}")
    # one probe run on a blank face: the embedding size even where the graph leaves it symbolic
    batch = in_dims[0]
    probe_shape = [batch if isinstance(batch, int) else 1, 3, *input_size]
    if layout == "NHWC":
        probe_shape = [probe_shape[0], *input_size, 3]
    try:
        emb = sess.run([out.name], {inp.name: np.zeros(probe_shape, np.float32)})[0]
    except Exception as exc:
        raise CheckpointError(f"{path}: a probe run on a {probe_shape} input failed ({type(exc).__name__}: {exc}); "
                              "check the model's input size.") from exc
    if emb.ndim != 2:
        raise CheckpointError(f"{path}: output {out.name!r} has shape {list(emb.shape)} on a {probe_shape} input; "
                              "expected (B, D) embeddings. Is this a detector rather than a recognizer?")

    info: dict[str, Any] = {
        "kind": "recognizer_onnx",
        "source": str(path),
        "input_name": inp.name,
        "output_name": out.name,
        "input_shape": in_dims,
        "input_size": input_size,
        "layout": layout,
        "channels": "RGB",
        "input_mean": mean,
        "input_std": std,
        "normalisation_in_graph": baked,
        "from_unit_range": {"scale": scale, "offset": offset},
        "embedding_dim": int(emb.shape[1]),
        "dynamic_batch": not isinstance(batch, int),
        "batch": batch if isinstance(batch, int) else None,
        "normalize_output": True,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "notes": notes,
        "sha256": sha256_file(path),
    }
    if isinstance(batch, int) and batch != 1:
        notes.append(f"batch is fixed at {batch}")
    elif isinstance(batch, int):
        notes.append("batch is fixed at 1: faces are run one at a time")
    for note in notes:
        log.warning("%s: %s", path, note)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if path.resolve() != out_path.resolve():
        shutil.copyfile(path, out_path)
    info["path"] = str(out_path)
    log.info("%s: recognizer %s %s %s, mean %.1f std %.1f, %d-d -> %s", path, layout, input_size, "RGB", mean, std,
             info["embedding_dim"], out_path)
    return info
