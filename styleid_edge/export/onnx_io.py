"""Export a torch module to ONNX with a free batch dimension, then check it.

All pack models go through :func:`export_onnx`: TorchScript exporter (stable
``dynamic_axes`` for the batch), opset 17, constant folding, then
``onnx.checker`` with full shape inference and a scan for node types that a
pack must not contain (random ops, custom domains).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import onnx
import torch
from torch import nn

log = logging.getLogger(__name__)

OPSET = 17
FORBIDDEN_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}


class OnnxExportError(RuntimeError):
    pass


def export_onnx(module: nn.Module, example_inputs: Sequence[torch.Tensor], path: str | Path, *,
                input_names: Sequence[str], output_names: Sequence[str], opset: int = OPSET) -> Path:
    """Export ``module`` to ``path`` with dim 0 of every input and output dynamic ("batch")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    module = module.eval()
    tmp = path.with_suffix(".onnx.partial")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notes
        torch.onnx.export(module, tuple(example_inputs), str(tmp), input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    check_onnx(tmp)
    tmp.replace(path)
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def check_onnx(path: str | Path) -> onnx.ModelProto:
    """checker + strict shape inference + no random / custom-domain nodes."""
    path = Path(path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    bad = sorted({n.op_type for n in model.graph.node if n.op_type in FORBIDDEN_OPS})
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if bad or custom:
        raise OnnxExportError(f"{path}: forbidden nodes {bad + custom}")
    return model
