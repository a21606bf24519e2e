"""Still images (jpg, png, webp, bmp, tiff) on OpenCV, and sorting a folder into images and videos.

``read_image`` returns BGR uint8 turned upright by the EXIF orientation tag (OpenCV's
``IMREAD_COLOR`` applies it; tests/test_video.py checks that on a JPEG tagged orientation 6), with
alpha dropped, grey expanded to 3 channels and 16-bit scaled to 8-bit. ``write_image`` writes
atomically: a temporary file in the same folder, renamed into place once complete.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
    ".wmv", ".flv", ".3gp", ".ogv", ".gif",
})
_UNSUPPORTED_HINTS = {
    ".heic": "HEIC/HEIF photos need converting first (e.g. `heif-convert in.heic out.jpg`)",
    ".heif": "HEIC/HEIF photos need converting first (e.g. `heif-convert in.heic out.jpg`)",
    ".avif": "AVIF is not read by this OpenCV build; convert it to PNG or JPEG",
    ".svg": "SVG is a drawing, not a photo; export it to PNG",
}


class ImageError(ValueError):
    """An image could not be read or written; the message names the file and what to do."""


def read_image(path: str | Path) -> np.ndarray:
    """BGR uint8 (H, W, 3), upright per EXIF."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image; pass a file, or the folder to iter_inputs()")
    data = np.fromfile(str(path), dtype=np.uint8)  # works for non-ASCII paths too
    if data.size == 0:
        raise ImageError(f"{path} is empty (0 bytes): the copy or download did not finish; copy it again")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        hint = _UNSUPPORTED_HINTS.get(path.suffix.lower(),
                                      "check that it is a jpg, png, webp, bmp or tiff image and not damaged")
        raise ImageError(f"{path} could not be decoded as an image: {hint}")
    return image


def _encode_params(suffix: str, quality: int) -> list[int]:
    if suffix in {".jpg", ".jpeg", ".jpe"}:
        return [cv2.IMWRITE_JPEG_QUALITY, quality]
    if suffix == ".webp":
        return [cv2.IMWRITE_WEBP_QUALITY, quality]
    if suffix == ".png":
        return [cv2.IMWRITE_PNG_COMPRESSION, 3]
    return []


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> Path:
    """Write ``image`` (BGR or grey uint8) atomically; the format follows the suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ImageError(f"cannot write {path}: unknown image type '{suffix}'; use .jpg, .png, .webp or .bmp")
    if not path.parent.is_dir():
        raise ImageError(f"cannot write {path}: folder {path.parent} does not exist; create it first")
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ImageError(f"cannot write {path}: expected a uint8 image, got {image.dtype} {image.shape}")
    ok, buffer = cv2.imencode(suffix, image, _encode_params(suffix, quality))
    if not ok:
        raise ImageError(f"cannot write {path}: OpenCV failed to encode a {image.shape} image as {suffix}")
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        with tmp.open("wb") as fh:
            fh.write(buffer.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def is_image(path: str | Path) -> bool:
    """By extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video(path: str | Path, probe: bool = True) -> bool:
    """By extension; a file with an unknown extension is opened with FFmpeg when ``probe``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return True
    if suffix in IMAGE_EXTENSIONS or not probe or not path.is_file() or path.stat().st_size == 0:
        return False
    from .video import VideoError, probe as probe_video  # PyAV only when needed

    try:
        probe_video(path)
    except VideoError:
        return False
    return True


def input_kind(path: str | Path, probe: bool = True) -> str | None:
    """'image', 'video' or None (neither), as :func:`iter_inputs` decides."""
    if is_image(path):
        return "image"
    if is_video(path, probe=probe):
        return "video"
    return None


SKIP_NOT_MEDIA = "neither an image nor a video"
SKIP_HIDDEN = "hidden (its name starts with '.'): hidden files are never inputs; rename it to process it"
SKIP_HIDDEN_FOLDER = ("hidden folder (its name starts with '.'): its {n} file(s) are not inputs; rename it to "
                      "process them")
SKIP_PARTIAL = ("a *.partial.* file: the name this tool gives an output that was not finished (Ctrl-C, a full "
                "disk), so it is never an input; rename it to process it")


def iter_inputs(folder: str | Path, recursive: bool = False, probe: bool = True,
                skipped: list[dict[str, str]] | None = None) -> Iterator[Path]:
    """The image and video files in ``folder`` (or ``folder`` itself when it is a file), sorted by
    path; :func:`input_kind` tells them apart. Hidden files and folders (our own temporary outputs start
    with '.'), ``*.partial.*`` leftovers and files that are neither images nor videos are skipped; with
    ``skipped`` each is appended there as ``{"path", "reason"}`` (a hidden folder once, ``path`` ending in
    the separator, with its file count), once the iteration is complete."""
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"{folder}: no such file or folder; check the path")
    if folder.is_file():
        if input_kind(folder, probe) is None:
            raise ImageError(f"{folder} is neither an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) nor a video")
        yield folder
        return
    hidden_folders: dict[Path, int] = {}

    def skip(path: str | Path, reason: str) -> None:
        if skipped is not None:
            skipped.append({"path": str(path), "reason": reason})

    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        parts = path.relative_to(folder).parts
        first_hidden = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
        if not path.is_file():
            continue
        if first_hidden is not None and first_hidden < len(parts) - 1:  # inside a hidden folder
            top = folder.joinpath(*parts[:first_hidden + 1])
            hidden_folders[top] = hidden_folders.get(top, 0) + 1
        elif first_hidden is not None:
            skip(path, SKIP_HIDDEN)
        elif ".partial." in path.name:
            log.debug("skipping partial output %s", path)
            skip(path, SKIP_PARTIAL)
        elif input_kind(path, probe) is None:
            log.debug("skipping %s: neither an image nor a video", path)
            skip(path, SKIP_NOT_MEDIA)
        else:
            yield path
    for top, n in hidden_folders.items():
        skip(str(top) + os.sep, SKIP_HIDDEN_FOLDER.format(n=n))
