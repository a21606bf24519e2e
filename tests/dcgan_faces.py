"""Small natural-looking test faces from the DCGAN in the ``gan-face-generate`` wheel (tests only).

The wheel (1.1.1, code MIT) carries ``gan_face_generate/weights.tar``: a torch zip archive whose
``netG_state_dict`` is a DCGAN generator, z (100) -> 64x64 RGB in [-1, 1]. Its layout (the
PyTorch-tutorial DCGAN, ngf = 64): four blocks of ConvTranspose2d (no bias) + BatchNorm2d + ReLU
growing 1 -> 4 -> 8 -> 16 -> 32 px with 512, 256, 128, 64 channels, then ConvTranspose2d to 3
channels at 64 px and tanh. We load those weights into our own module, strictly (every key used,
every shape checked, ``torch.load(weights_only=True)``: no pickled code runs).

Licence: the generator was trained on DigiFace-1M (Microsoft, non-commercial research licence).
The faces it makes are used as test donors and test inputs ONLY; neither the weights nor any image
made from them is ever shipped with styleid-edge or written into a model pack.

Importing this module needs torch (a test dependency); the runtime never imports it.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np

Z_DIM = 100
NATIVE_SIZE = 64
_CHANNELS = (512, 256, 128, 64)  # feature maps of the four BN blocks (ngf * 8, 4, 2, 1)


def weights_path() -> Path | None:
    """Where the installed wheel keeps ``weights.tar`` (None when the wheel is not installed)."""
    spec = find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "weights.tar"
    return path if path.is_file() else None


def _module():
    import torch
    from torch import nn

    class DCGANFaceGenerator(nn.Module):
        """z (B, 100) -> image (B, 3, 64, 64) RGB in [-1, 1]."""

        def __init__(self) -> None:
            super().__init__()
            ups, norms = [], []
            c_in = Z_DIM
            for i, c_out in enumerate(_CHANNELS):
                # first block: 1x1 -> 4x4 (stride 1, no padding); then each doubles the size
                stride, pad = (1, 0) if i == 0 else (2, 1)
                ups.append(nn.ConvTranspose2d(c_in, c_out, 4, stride, pad, bias=False))
                norms.append(nn.BatchNorm2d(c_out))
                c_in = c_out
            self.ups = nn.ModuleList(ups)
            self.norms = nn.ModuleList(norms)
            self.to_rgb = nn.ConvTranspose2d(c_in, 3, 4, 2, 1, bias=False)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            x = z.reshape(z.shape[0], Z_DIM, 1, 1)
            for up, norm in zip(self.ups, self.norms):
                x = torch.relu(norm(up(x)))
            return torch.tanh(self.to_rgb(x))

        def load_checkpoint_state(self, state: dict) -> None:
            """Map the checkpoint's ``main.<i>.*`` keys (Sequential indices) onto ours, strictly."""
            ours: dict = {}
            for k, v in state.items():
                idx, _, rest = k.partition(".")[2].partition(".")
                i = int(idx)
                block, pos = divmod(i, 3)  # conv, bn, relu per block
                if block < len(_CHANNELS) and pos == 0:
                    ours[f"ups.{block}.{rest}"] = v
                elif block < len(_CHANNELS) and pos == 1:
                    ours[f"norms.{block}.{rest}"] = v
                elif block == len(_CHANNELS) and pos == 0:
                    ours[f"to_rgb.{rest}"] = v
                else:
                    raise KeyError(f"unexpected checkpoint key {k}")
            own = self.state_dict()
            missing, extra = set(own) - set(ours), set(ours) - set(own)
            if missing or extra:
                raise KeyError(f"DCGAN checkpoint does not fit: missing {sorted(missing)}, extra {sorted(extra)}")
            for k, v in ours.items():
                if tuple(v.shape) != tuple(own[k].shape):
                    raise ValueError(f"DCGAN checkpoint {k}: shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
            self.load_state_dict(ours, strict=True)

    return DCGANFaceGenerator


@lru_cache(maxsize=1)
def load_generator():
    """Our generator with the wheel's weights, in eval mode (BatchNorm uses its running statistics)."""
    import torch

    path = weights_path()
    if path is None:
        raise FileNotFoundError("gan-face-generate is not installed: pip install --no-deps gan-face-generate==1.1.1")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    net = _module()()
    net.load_checkpoint_state(checkpoint["netG_state_dict"])
    return net.eval()


def generate_faces(n: int, seed: int = 0, size: int = 256) -> list[np.ndarray]:
    """``n`` faces as BGR uint8 ``size`` x ``size`` images (64 px output upscaled bicubically so real
    detectors find the faces); the same ``seed`` gives the same faces."""
    import torch

    net = load_generator()
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, Z_DIM, generator=g)
    with torch.no_grad():
        rgb = net(z).permute(0, 2, 3, 1).numpy()
    images = np.clip((rgb + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    out = []
    for im in images:
        bgr = np.ascontiguousarray(im[..., ::-1])
        if size != NATIVE_SIZE:
            bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_CUBIC)
        out.append(bgr)
    return out
