"""File helpers shared by every part of the package (no torch, no onnxruntime): hashes and cache dirs."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def user_cache_dir(*parts: str) -> Path:
    """The platform's user cache directory + ``styleid-edge`` + ``parts`` (not created here)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base.joinpath("styleid-edge", *parts)


def umask_mode(folder: str | os.PathLike[str]) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (owner-only, 0700) the mode new folders get under the
    user's umask, before it is renamed into place: packs are read by services running as other users."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
