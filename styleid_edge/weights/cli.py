"""The `styleid-edge models` command: fetch, build, list.

Wire it into styleid_edge/cli.py's build_parser with ``weights_cli.register(sub)``.
`fetch` and `list` never import torch; `build` imports the export package lazily.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cache import LOCK_NAME, LockFile, resolve_cache_dir, sha256_file
from .download import fetch, licence_notice
from .errors import WeightsError
from .registry import OFFICIAL_FILES, names

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `models {fetch,build,list}` to the top-level subparsers."""
    models = subparsers.add_parser("models", help="download the official weights and build a pack from them")
    sub = models.add_subparsers(dest="models_command", required=True)

    f = sub.add_parser("fetch", help="download official files into the weights cache")
    f.add_argument("names", nargs="*", metavar="NAME", help=f"files to fetch (default: all): {', '.join(names())}")
    _dir_arg(f)
    f.add_argument("--accept-licence", action="store_true",
                   help="accept the non-commercial / research-only terms shown for each file")
    f.add_argument("--verify", action="store_true",
                   help=f"re-hash cached files and check them against {LOCK_NAME}")
    f.add_argument("--lock", metavar="FILE", help=f"lock file to record/verify against (default DIR/{LOCK_NAME})")
    f.set_defaults(func=cmd_fetch)

    b = sub.add_parser("build", help="fetch what is missing and export a model pack with the official ranks")
    _dir_arg(b)
    b.add_argument("--out", required=True, metavar="PACK", help="pack directory to write")
    b.add_argument("--accept-licence", action="store_true",
                   help="accept the non-commercial / research-only terms of files that must be downloaded")
    b.set_defaults(func=cmd_build)

    ls = sub.add_parser("list", help="what is cached: sizes, sha256, licences, lock status, packs using it")
    _dir_arg(ls)
    ls.add_argument("--packs", nargs="*", default=[], metavar="DIR",
                    help="pack directories (or folders of packs) to check for use of the cached files")
    ls.set_defaults(func=cmd_list)


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", metavar="DIR", help="weights cache (default $STYLEID_EDGE_WEIGHTS, else "
                                                 "~/.cache/styleid-edge/weights)")


def _fail(exc: WeightsError) -> int:
    log.debug("weights error: %r", exc)
    print(f"error: {exc}", file=sys.stderr)
    return 2


def cmd_fetch(args: argparse.Namespace) -> int:
    try:
        results = fetch(args.names or None, args.dir, accept_licence=args.accept_licence, verify=args.verify,
                        lock_path=args.lock)
    except WeightsError as exc:
        return _fail(exc)
    for r in results:
        print(f"{r.status:<10} {r.name:<28} {r.size / 1e6:9.1f} MB  sha256 {r.sha256}")
    print(f"cache: {resolve_cache_dir(args.dir)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build_from_cache

    try:
        result = build_from_cache(args.out, args.dir, accept_licence=args.accept_licence)
    except WeightsError as exc:
        return _fail(exc)
    m = result.pack.manifest
    print(f"pack: {result.pack.root}  ({m.resolution} px, models: {', '.join(m.files)})")
    for imp in result.ranks:
        print(f"  ranks.{imp.kind}: {m.ranks[imp.kind]} (official file indexed {imp.layout})")
    if result.calibration_latents:
        print(f"  calibration latents: {result.calibration_latents} W+ codes")
    for lic in m.licences:
        print(f"  licence: {lic}")
    return 0


# --- list ---------------------------------------------------------------------------------
@dataclass
class CachedFile:
    name: str
    present: bool
    size: int = 0
    sha256: str = ""
    lock: str = ""  # "locked" | "not in lock" | "size differs from lock" | "partial"
    licence: str = ""
    used_by: list[str] = field(default_factory=list)


def pack_usage(pack_dirs: list[str | Path]) -> dict[str, list[str]]:
    """sha256 -> packs whose manifest provenance lists a source with that digest."""
    usage: dict[str, list[str]] = {}
    for d in map(Path, pack_dirs):
        candidates = [d] if (d / "manifest.json").is_file() else sorted(p for p in d.glob("*")
                                                                         if (p / "manifest.json").is_file())
        for pack in candidates:
            try:
                raw = json.loads((pack / "manifest.json").read_text())
                sources = raw.get("provenance", {}).get("sources", [])
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("%s: unreadable manifest (%s); skipped", pack, exc)
                continue
            for s in sources if isinstance(sources, list) else []:
                if isinstance(s, dict) and isinstance(s.get("sha256"), str):
                    usage.setdefault(s["sha256"], []).append(str(pack))
    return usage


def list_cache(cache_dir: str | Path | None = None, pack_dirs: list[str | Path] | None = None) -> list[CachedFile]:
    cache = resolve_cache_dir(cache_dir)
    lock = LockFile.load(cache / LOCK_NAME)
    usage = pack_usage(pack_dirs or [])
    rows = []
    for spec in OFFICIAL_FILES:
        path, part = cache / spec.name, cache / f"{spec.name}.part"
        row = CachedFile(spec.name, path.is_file(), licence=licence_notice(spec))
        if row.present:
            row.size = path.stat().st_size
            entry = lock.get(spec.name)
            if entry is None:
                row.sha256, row.lock = sha256_file(path), "not in lock"
            else:
                row.sha256 = entry.sha256
                row.lock = "locked" if entry.size == row.size else "size differs from lock"
            row.used_by = usage.get(row.sha256, [])
        elif part.is_file():
            row.size, row.lock = part.stat().st_size, "partial"
        rows.append(row)
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    try:
        rows = list_cache(args.dir, args.packs)
    except WeightsError as exc:
        return _fail(exc)
    print(f"cache: {resolve_cache_dir(args.dir)}")
    print(f"{'file':<28} {'size':>10}  {'sha256':<16}  {'lock':<22} used by")
    for r in rows:
        state = f"{r.size / 1e6:8.1f}MB" if r.present or r.lock == "partial" else "   missing"
        used = ", ".join(r.used_by) if r.used_by else ("-" if r.present else "")
        print(f"{r.name:<28} {state:>10}  {r.sha256[:16]:<16}  {r.lock:<22} {used}")
    print("licences:")
    for r in rows:
        print(f"  {r.licence}")
    return 0
