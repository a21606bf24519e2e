"""Safe, strict checkpoint loading for the real StyleID-related files.

Files are read with ``torch.load(weights_only=True)``: the real rosinality,
e4e, ArcFace and mapper files hold only tensors and plain containers, so
anything that needs pickled code is refused. State dicts are loaded strictly:
every key must be consumed and every shape must match, and a wrong file gets
an error that says which keys are missing or unexpected and what kind of
checkpoint the file looks like.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..files import sha256_file  # noqa: F401 - loaders import it from here

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file cannot be used for what was asked."""




def load_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file. Check the path, or run `styleid-edge models fetch`.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only PyTorch checkpoint ({type(exc).__name__}: {exc}). "
            "styleid-edge refuses files that need pickled code; re-save the file as a plain state dict "
            "(torch.save({'state_dict': model.state_dict()}, path)) from a trusted environment."
        ) from exc


def describe_checkpoint(obj: Any) -> str:
    """Guess what kind of checkpoint an object is, for error messages."""
    if not isinstance(obj, Mapping):
        return f"not a dict but a {type(obj).__name__}"
    keys = set(obj.keys())
    if "g_ema" in keys:
        return "a rosinality StyleGAN2 checkpoint (has 'g_ema')"
    if "state_dict" in keys and isinstance(obj["state_dict"], Mapping):
        sd_keys = list(obj["state_dict"].keys())
        if any(k.startswith("encoder.") for k in sd_keys) and any(k.startswith("decoder.") for k in sd_keys):
            return "an encoder4editing / pSp checkpoint (state_dict with encoder.* and decoder.*)"
        if any(k.startswith("mapper.") for k in sd_keys):
            return "a StyleID latent-swapper checkpoint (state_dict with mapper.*)"
        return f"a checkpoint with a 'state_dict' of {len(sd_keys)} tensors (first: {sd_keys[:3]})"
    if keys and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if "output_layer.3.weight" in keys and "input_layer.0.weight" in keys:
            return "an ArcFace IR-SE backbone state dict (model_ir_se50.pth)"
        if "style.1.weight" in keys and "conv1.conv.weight" in keys:
            return "a bare StyleGAN2 generator state dict (no 'g_ema' wrapper)"
        return f"a plain state dict of {len(keys)} tensors (first: {sorted(keys)[:3]})"
    return f"a dict with keys {sorted(map(str, keys))[:8]}"


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys that start with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                      expected: str, whole: Any = None) -> None:
    """Copy ``state`` into ``module``; every key consumed, every shape checked.

    ``source`` names the file, ``expected`` what it should be; ``whole`` is the
    full loaded object, used to say what the file looks like instead.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or bad_shapes:
        looks = describe_checkpoint(whole if whole is not None else state)
        parts = [f"{source}: does not fit {expected}; the file looks like {looks}."]
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}")
        if bad_shapes:
            parts.append(f"{len(bad_shapes)} shape mismatches, e.g. {bad_shapes[:3]}")
        parts.append("Pass the right file for this option, or check the size / channel multiplier options.")
        raise CheckpointError(" ".join(parts))
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].dtype))
