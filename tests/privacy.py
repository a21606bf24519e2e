"""Privacy measurements shared by the end-to-end tests: does a real recognizer still match a face?"""

from __future__ import annotations

import numpy as np

from styleid_edge.runtime import align
from styleid_edge.runtime.recognize import cosine
from styleid_edge.runtime.video import VideoReader


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def identity_scores(frames_in, frames_out, gt_boxes, detector, sface):
    """SFace cosine between each ground-truth face in the input and the same place in the output."""
    scores = []
    for fin, fout, boxes in zip(frames_in, frames_out, gt_boxes):
        dets = detector.detect(fin)
        for gt in boxes:
            best = max(dets, key=lambda d: iou(d.box, gt.xyxy), default=None)
            assert best is not None and iou(best.box, gt.xyxy) > 0.3, "reference detector missed a clear face"
            a, _ = align.arcface_crop(fin, best.landmarks)
            b, _ = align.arcface_crop(fout, best.landmarks)
            scores.append(float(cosine(sface.embed(a[None]), sface.embed(b[None]))[0]))
    return np.array(scores)


def decode_frames(path):
    with VideoReader(path) as r:
        return [f.image for f in r]
