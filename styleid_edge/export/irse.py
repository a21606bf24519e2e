"""IR-SE residual body shared by the e4e encoder and the ArcFace recognizer.

This is the "improved residual + squeeze-excitation" ResNet of InsightFace
(as used by TreB1eN's ArcFace port and by pSp / encoder4editing). Module and
parameter names follow the real checkpoints exactly
(``../shared/reference/checkpoints/e4e_ffhq_encode_1024.json`` and
``arcface_ir_se50.json``)::

    input_layer.{0: Conv3x3 no bias, 1: BatchNorm2d, 2: PReLU}
    body.<i>.shortcut_layer            MaxPool2d(1, stride) when in == out channels (no params)
    body.<i>.shortcut_layer.{0,1}      Conv1x1(stride, no bias) + BatchNorm2d otherwise
    body.<i>.res_layer.{0: BN(in), 1: Conv3x3(in->out), 2: PReLU(out),
                        3: Conv3x3(out->out, stride), 4: BN(out), 5: SE(fc1, fc2)}

The 50-layer plan has four stages of 3 / 4 / 14 / 3 units at 64 / 128 / 256 /
512 channels; the first unit of every stage has stride 2. :class:`IRSEConfig`
describes any plan, so tests can build a tiny body with the same structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class IRSEConfig:
    """Stage plan of an IR-SE body: channels and number of units per stage."""

    stage_channels: tuple[int, ...] = (64, 128, 256, 512)
    stage_units: tuple[int, ...] = (3, 4, 14, 3)
    se_reduction: int = 16
    in_channels: int = 3

    def __post_init__(self) -> None:
        if len(self.stage_channels) != len(self.stage_units) or not self.stage_units:
            raise ValueError("IRSEConfig: stage_channels and stage_units must be non-empty and of equal length")
        if any(u < 1 for u in self.stage_units):
            raise ValueError(f"IRSEConfig: every stage needs at least one unit, got {self.stage_units}")
        too_narrow = [c for c in self.stage_channels if c // self.se_reduction < 1]
        if too_narrow:
            raise ValueError(f"IRSEConfig: channels {too_narrow} are narrower than se_reduction={self.se_reduction}; "
                             "widen the stages or lower se_reduction")

    @property
    def stem_channels(self) -> int:
        return self.stage_channels[0]

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    def unit_plan(self) -> list[tuple[int, int, int]]:
        """(in_channels, depth, stride) of every unit, in ``body`` order."""
        plan = []
        in_ch = self.stem_channels
        for depth, units in zip(self.stage_channels, self.stage_units):
            plan.append((in_ch, depth, 2))
            plan.extend((depth, depth, 1) for _ in range(units - 1))
            in_ch = depth
        return plan

    def stage_ends(self) -> list[int]:
        """Index in ``body`` of the last unit of each stage (IR-SE50: [2, 6, 20, 23])."""
        ends, total = [], 0
        for units in self.stage_units:
            total += units
            ends.append(total - 1)
        return ends

    @property
    def downsample(self) -> int:
        """Total spatial reduction of the body (16 for four stages)."""
        return 2 ** len(self.stage_units)


IRSE50 = IRSEConfig()


class SEModule(nn.Module):
    """Squeeze-excitation: global average -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: ``res_layer(x) + shortcut_layer(x)``."""

    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int = 16) -> None:
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, (1, 1), stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def make_input_layer(config: IRSEConfig = IRSE50) -> nn.Sequential:
    """``input_layer``: Conv3x3 (no bias) -> BatchNorm2d -> PReLU."""
    width = config.stem_channels
    return nn.Sequential(
        nn.Conv2d(config.in_channels, width, (3, 3), 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.PReLU(width),
    )


def make_body(config: IRSEConfig = IRSE50) -> nn.Sequential:
    """``body``: all units of all stages as one flat Sequential (real key numbering)."""
    return nn.Sequential(*[BottleneckIRSE(i, d, s, config.se_reduction) for i, d, s in config.unit_plan()])


def infer_irse_config(state: Mapping[str, torch.Tensor], *, se_reduction: int | None = None) -> IRSEConfig:
    """Read the stage plan back from a state dict with ``input_layer.*`` and ``body.<i>.*`` keys.

    A new stage starts at every unit whose output width differs from the previous
    unit's (that is also where the real plans put their stride-2 unit).
    Raises ``KeyError`` when the keys are not an IR-SE body.
    """
    depths = []
    i = 0
    while f"body.{i}.res_layer.1.weight" in state:
        depths.append(int(state[f"body.{i}.res_layer.1.weight"].shape[0]))
        i += 1
    if not depths or "input_layer.0.weight" not in state:
        raise KeyError("no IR-SE body keys (input_layer.0.weight, body.0.res_layer.1.weight)")
    channels: list[int] = []
    units: list[int] = []
    for d in depths:
        if channels and channels[-1] == d:
            units[-1] += 1
        else:
            channels.append(d)
            units.append(1)
    if se_reduction is None:
        fc1 = state.get("body.0.res_layer.5.fc1.weight")
        se_reduction = max(1, depths[0] // int(fc1.shape[0])) if fc1 is not None else 16
    in_channels = int(state["input_layer.0.weight"].shape[1])
    return IRSEConfig(tuple(channels), tuple(units), se_reduction=se_reduction, in_channels=in_channels)


@torch.no_grad()
def randomize_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Fill BatchNorm and PReLU parameters/statistics with non-trivial random values.

    Default init leaves BN as identity (mean 0, var 1, weight 1, bias 0) which would
    hide eval-mode and export mistakes; this makes every statistic matter while
    keeping activations in a sane range.
    """
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            if m.affine:
                m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            m.num_batches_tracked.fill_(1000)
        elif isinstance(m, nn.PReLU):
            m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 0.3)
    return module
