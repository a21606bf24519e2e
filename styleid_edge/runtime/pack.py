"""The model pack: a directory with ``manifest.json`` and ONNX files.

This module is the contract between export (writes packs), runtime (reads
them) and calibration (writes ranks and defaults back). A pack is data: the
manifest is validated field by field, file names must stay inside the pack
directory, and nothing in it is executed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..files import sha256_file
from .stylespace import StyleLayer, style_dim_total, stylespace_layout

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHECKSUMS = "checksums.sha256"  # sha256 of every model and rank file; beside the manifest, so older readers load
MODEL_ROLES = ("mapping", "affine", "synthesis", "encoder", "recognizer", "mapper")
REQUIRED_ROLES = ("mapping", "affine", "synthesis")
PACK_ENV = "STYLEID_EDGE_PACK"


class PackError(ValueError):
    """A model pack is missing, malformed or incomplete."""


def default_pack_dir() -> Path:
    """Where a pack is looked for when none is given: $STYLEID_EDGE_PACK, else the user data dir."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "styleid-edge" / "pack"


@dataclass
class Manifest:
    resolution: int
    n_latent: int
    style_dim: int  # W dimension (512)
    channel_multiplier: int
    style_layers: list[dict[str, Any]]  # StyleLayer fields, generator order
    latent_avg: list[float]
    files: dict[str, str]  # role -> file name inside the pack
    recognizer: dict[str, Any] = field(default_factory=dict)  # input size, embedding dim, normalisation
    ranks: dict[str, str] = field(default_factory=dict)  # "channels"/"groups"/"channel_scores" -> .npy file
    defaults: dict[str, Any] = field(default_factory=dict)  # chosen method strengths etc.
    provenance: dict[str, Any] = field(default_factory=dict)  # sources: [{role, file, sha256}], tool version
    synthetic: bool = False  # made from random / synthetic weights, not a trained checkpoint
    licences: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def listed_files(self) -> list[str]:
        """The file names the manifest points at (models, then identity ranks), each once."""
        return list(dict.fromkeys([*self.files.values(), *self.ranks.values()]))

    @property
    def layers(self) -> list[StyleLayer]:
        return [StyleLayer(**d) for d in self.style_layers]

    @property
    def n_styles(self) -> int:
        return style_dim_total(self.layers)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: Any, where: str = MANIFEST) -> "Manifest":
        if not isinstance(raw, dict):
            raise PackError(f"{where}: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise PackError(f"{where}: unknown fields {unknown}; is this pack from a newer styleid-edge?")
        try:
            m = cls(**raw)
        except TypeError as exc:
            raise PackError(f"{where}: {exc}") from exc
        m.validate(where)
        return m

    def validate(self, where: str = MANIFEST) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise PackError(f"{where}: {msg}")

        need(self.format_version == FORMAT_VERSION,
             f"format_version {self.format_version} is not supported (this styleid-edge reads {FORMAT_VERSION})")
        for name in ("resolution", "n_latent", "style_dim", "channel_multiplier"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0, f"{name} must be a positive integer")
        try:
            expected = stylespace_layout(self.resolution, self.channel_multiplier)
        except ValueError as exc:
            raise PackError(f"{where}: {exc}") from exc
        need(isinstance(self.style_layers, list), "style_layers must be a list")
        try:
            layers = self.layers
        except TypeError as exc:
            raise PackError(f"{where}: style_layers entries are malformed ({exc})") from exc
        need(layers == expected, "style_layers do not match the generator layout for this resolution")
        need(self.n_latent == max(layer.w_index for layer in layers) + 1, "n_latent does not match style_layers")
        need(isinstance(self.latent_avg, list) and len(self.latent_avg) == self.style_dim
             and all(isinstance(v, (int, float)) for v in self.latent_avg),
             f"latent_avg must be {self.style_dim} numbers")
        need(isinstance(self.files, dict), "files must be an object")
        for role, name in {**self.files, **self.ranks}.items():
            need(isinstance(name, str) and _is_plain_name(name),
                 f"file for {role!r} must be a plain file name inside the pack, got {name!r}")
        unknown_roles = sorted(set(self.files) - set(MODEL_ROLES))
        need(not unknown_roles, f"unknown model roles {unknown_roles}")
        missing = [r for r in REQUIRED_ROLES if r not in self.files]
        need(not missing, f"the pack lacks required models {missing}")
        for key in ("recognizer", "defaults", "provenance"):
            need(isinstance(getattr(self, key), dict), f"{key} must be an object")
        need(isinstance(self.synthetic, bool), "synthetic must be true or false")
        need(isinstance(self.licences, list) and all(isinstance(s, str) for s in self.licences),
             "licences must be a list of strings")


def file_checksums(root: Path, names: Iterable[str], known: dict[str, str] | None = None) -> dict[str, str]:
    """name -> sha256 of each file under ``root``; names in ``known`` keep the digest given there."""
    known = known or {}
    return {name: known[name] if name in known else sha256_file(Path(root) / name) for name in names}


def read_checksums(root: Path) -> dict[str, str]:
    """The pack's ``checksums.sha256`` (``sha256sum`` format) as name -> digest; {} when there is none."""
    path = Path(root) / CHECKSUMS
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        digest, sep, name = line.partition("  ")
        if sep and len(digest) == 64:
            out[name.strip()] = digest
    return out


def write_checksums(root: Path, sums: dict[str, str]) -> None:
    """Write ``checksums.sha256`` (atomically): ``sha256sum -c checksums.sha256`` in the pack checks it too."""
    tmp = Path(root) / (CHECKSUMS + ".tmp")
    tmp.write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    tmp.replace(Path(root) / CHECKSUMS)


def _is_plain_name(name: str) -> bool:
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and len(p.parts) <= 2 and "\\" not in name


@dataclass
class ModelPack:
    """A validated pack on disk."""

    root: Path
    manifest: Manifest

    @classmethod
    def load(cls, root: str | Path) -> "ModelPack":
        root = Path(root)
        mpath = root / MANIFEST
        if root.is_file():
            raise PackError(f"{root} is a file, not a model pack: --pack / ${PACK_ENV} take the folder that holds "
                            f"{MANIFEST} (e.g. {root.parent if root.name == MANIFEST else 'packs/ffhq'})")
        if not root.is_dir():
            raise PackError(f"{root} does not exist: check the path, or make a pack with `styleid-edge export` "
                            f"and point --pack / ${PACK_ENV} at it.")
        if not mpath.is_file():
            raise PackError(f"{root}: not a model pack (no {MANIFEST}). Make one with `styleid-edge export`, "
                            f"or point --pack / ${PACK_ENV} at one.")
        try:
            raw = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PackError(f"{mpath}: unreadable manifest ({exc})") from exc
        manifest = Manifest.from_dict(raw, str(mpath))
        pack = cls(root, manifest)
        for role, name in {**manifest.files, **manifest.ranks}.items():
            path = pack.path(name)
            if not path.is_file():
                raise PackError(f"{mpath}: {role} file {name!r} is missing from the pack directory")
        return pack

    def path(self, name: str) -> Path:
        """``name`` inside the pack. Checked by name (no absolute path, no ``..``), not by where it resolves:
        a model file may be a symlink to shared storage (a read-only partition on an appliance)."""
        if not _is_plain_name(name):
            raise PackError(f"{self.root}: {name!r} points outside the pack")
        return self.root.resolve() / name

    def has(self, role: str) -> bool:
        return role in self.manifest.files

    def model_path(self, role: str) -> Path:
        if role not in self.manifest.files:
            raise PackError(f"{self.root}: this pack has no {role} model")
        return self.path(self.manifest.files[role])

    @property
    def latent_avg(self) -> np.ndarray:
        return np.asarray(self.manifest.latent_avg, dtype=np.float32)

    def load_rank(self, kind: str) -> np.ndarray | None:
        """An identity rank array ("channels", "groups", "channel_scores"), or None if absent."""
        name = self.manifest.ranks.get(kind)
        if name is None:
            return None
        arr = np.load(self.path(name), allow_pickle=False)
        return arr

    def verify_files(self) -> list[tuple[str, str]]:
        """(file name, "ok" | "changed" | "missing" | "unrecorded") for every file the manifest lists: the
        sha256 of each against ``checksums.sha256`` (packs written before checksums say "unrecorded")."""
        out = []
        recorded = read_checksums(self.root)
        for name in self.manifest.listed_files():
            path = self.path(name)
            want = recorded.get(name)
            if not path.is_file():
                out.append((name, "missing"))
            elif want is None:
                out.append((name, "unrecorded"))
            else:
                out.append((name, "ok" if sha256_file(path) == want else "changed"))
        return out

    def save_manifest(self, written: Iterable[str] = ()) -> None:
        """Write ``manifest.json`` (atomically) and ``checksums.sha256``: the files in ``written`` (just
        written by the caller) and listed files without a digest are hashed now; the others keep theirs, so a
        file that changed on disk behind the pack's back is still caught by ``pack info --verify``."""
        self.manifest.validate(str(self.root / MANIFEST))
        fresh = set(written)
        known = {k: v for k, v in read_checksums(self.root).items() if k not in fresh}
        write_checksums(self.root, file_checksums(self.root, self.manifest.listed_files(), known))
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_text(self.manifest.to_json())
        tmp.replace(self.root / MANIFEST)


def find_pack(explicit: str | Path | None) -> ModelPack | None:
    """The pack to use: --pack, then $STYLEID_EDGE_PACK, then the default location; None if there is none."""
    if explicit:
        return ModelPack.load(explicit)
    env = os.environ.get(PACK_ENV)
    if env:
        return ModelPack.load(env)
    default = default_pack_dir()
    if (default / MANIFEST).is_file():
        return ModelPack.load(default)
    return None
