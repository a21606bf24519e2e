"""The weights cache directory and its lock file (``weights.lock.json``).

The lock file records the sha256 and size of every file when it first enters
the cache. Users can keep it (e.g. next to their deployment) and later runs
verify the cached files against it, so a file that changed on the host or on
disk is noticed. Torch-free.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import sha256_file, user_cache_dir  # noqa: F401 - sha256_file re-exported

from .errors import WeightsError

log = logging.getLogger(__name__)

WEIGHTS_ENV = "STYLEID_EDGE_WEIGHTS"
LOCK_NAME = "weights.lock.json"
LOCK_FORMAT = 1


def default_cache_dir() -> Path:
    """The platform's user cache dir + ``styleid-edge/weights``."""
    return user_cache_dir("weights")


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--dir, then $STYLEID_EDGE_WEIGHTS, then the default cache dir."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else default_cache_dir()



@dataclass
class LockEntry:
    sha256: str
    size: int
    drive_id: str = ""
    recorded: str = ""


@dataclass
class LockFile:
    """sha256/size of each cached file, recorded at first download."""

    path: Path
    files: dict[str, LockEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LockFile:
        path = Path(path)
        if not path.is_file():
            return cls(path)
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != LOCK_FORMAT or not isinstance(raw.get("files"), dict):
                raise ValueError(f"expected format {LOCK_FORMAT} with a 'files' object")
            files = {str(k): LockEntry(**v) for k, v in raw["files"].items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{path}: unreadable lock file ({exc}). Fix or delete it; deleting it "
                               f"re-records the hashes of the files now in the cache.") from exc
        return cls(path, files)

    def get(self, name: str) -> LockEntry | None:
        return self.files.get(name)

    def record(self, name: str, sha256: str, size: int, drive_id: str = "") -> None:
        self.files[name] = LockEntry(sha256, size, drive_id, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        body = {"format": LOCK_FORMAT, "files": {k: asdict(v) for k, v in sorted(self.files.items())}}
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(self.path)


def looks_like_html(first: bytes) -> bool:
    """The first bytes of a web page where a file was expected (a download or quota page)."""
    head = first[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<!--"))


FORMAT_MAGIC = {".pt": (b"PK\x03\x04", b"\x80"), ".pth": (b"PK\x03\x04", b"\x80"), ".npy": (b"\x93NUMPY",)}
FORMAT_NAME = {".pt": "PyTorch checkpoint", ".pth": "PyTorch checkpoint", ".npy": "NumPy array"}


def format_problem(path: Path) -> str | None:
    """Why ``path`` is not the kind of file its suffix says (torch.save zip/pickle, .npy), or None.

    Catches what a browser or a quota page leaves behind under a weight file's name (an HTML page,
    an empty or cut-off file) before its sha256 is recorded as the trusted one.
    """
    magics = FORMAT_MAGIC.get(path.suffix.lower())
    if magics is None:
        return None
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "it is empty"
    if head.startswith(magics):
        return None
    if looks_like_html(head):
        return "it is an HTML page (a download page or quota message saved instead of the file)"
    return f"it does not start like a {FORMAT_NAME[path.suffix.lower()]} ({head[:8]!r})"


@dataclass
class VerifyResult:
    name: str
    path: Path
    sha256: str
    size: int
    status: str  # "ok" | "recorded" (no entry before) | "mismatch"
    expected: str | None = None


def verify_file(path: Path, lock: LockFile, *, drive_id: str = "", expected_sha256: str | None = None,
                record: bool = True) -> VerifyResult:
    """Hash a cached file and compare it with the registry digest and the lock entry (recording it if new)."""
    digest = sha256_file(path)
    size = path.stat().st_size
    entry = lock.get(path.name)
    want = expected_sha256 or (entry.sha256 if entry else None)
    if want is not None and digest != want:
        return VerifyResult(path.name, path, digest, size, "mismatch", want)
    if entry is None:
        if record:
            lock.record(path.name, digest, size, drive_id)
        return VerifyResult(path.name, path, digest, size, "recorded")
    return VerifyResult(path.name, path, digest, size, "ok", want)
