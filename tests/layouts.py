"""The real checkpoints' key layouts (copies of ../shared/reference/checkpoints) and random states in them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"  # copies of ../shared/reference/checkpoints


def reference_layout(name: str) -> dict:
    path = REFERENCE / name
    if not path.is_file():
        raise FileNotFoundError(f"reference key layout {path} missing from the repository")
    return json.loads(path.read_text())


def state_from_layout(entries: list[dict], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the layout's exact names/shapes; fan-in scaled weights, sane BN statistics.

    Values are windows at random offsets into one shared normal pool (cheap for the 267M-parameter
    encoder, yet every tensor gets different contents).
    """
    g = torch.Generator().manual_seed(seed)
    largest = max(math.prod(e["shape"]) for e in entries)
    pool = torch.randn(2 * largest, generator=g)

    def normal(shape: tuple[int, ...]) -> torch.Tensor:
        n = math.prod(shape)
        start = int(torch.randint(0, largest + 1, (1,), generator=g))
        return pool[start:start + n].reshape(shape)

    out = {}
    for e in entries:
        name, shape = e["name"], tuple(e["shape"])
        if e.get("dtype") == "int64":
            out[name] = torch.tensor(100, dtype=torch.int64).reshape(shape)
        elif "values" in e:
            out[name] = torch.tensor(e["values"], dtype=torch.float32).reshape(shape)
        elif name.endswith("running_var") or (e.get("role") == "bn" and name.endswith("weight")):
            out[name] = normal(shape).abs() * 0.25 + 0.75
        elif e.get("role") == "bn":
            out[name] = normal(shape) * 0.1
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            out[name] = normal(shape) / math.sqrt(fan_in)
    return out
