"""Archive jobs: anonymize many files in parallel with Ray, resumable, one report for the whole job.

``styleid-edge anonymize FOLDER -o OUT --ray [ADDRESS] --workers N``: one Ray task per file. Without an
address a local Ray cluster is started on this machine (``--workers`` CPUs, no dashboard, loopback);
with ``--ray HOST:6379`` (or ``ray://HOST:10001``) the tasks run on an existing cluster, each worker
using the local backend or ``--backend triton``. Input and output paths must be the same on every
machine (a shared file system) when the cluster has more than one.

Resuming: the output folder holds a ledger (``.styleid-archive.json``): the sha256 of every finished
input, its output and its per-file report. A file whose content is in the ledger and whose output
exists is skipped; a file that changed, failed, or was interrupted is done again. The merged report
covers every file of the job, whether done in this run or an earlier one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..files import sha256_file
from .anonymizer import AnonymizerConfig, weak_threshold

log = logging.getLogger(__name__)

LEDGER = ".styleid-archive.json"
LEDGER_VERSION = 1


@dataclass
class ArchiveOptions:
    workers: int = 2  # local cluster size (CPUs = parallel files); on a remote cluster: its own
    ray_address: str | None = None  # None or "local": start a local cluster; else ray.init(address=...)
    crf: int = 18
    recursive: bool = True
    report: str | Path | None = None  # also write the merged report here
    on_file_done: Callable[[dict], None] | None = None  # driver side, after each file is in the ledger
    ray_init_kwargs: dict[str, Any] = field(default_factory=dict)




def _list_inputs(inputs: Iterable[str | Path] | str | Path, recursive: bool) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every image/video under ``inputs``."""
    from .images import iter_inputs

    roots = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    items: list[tuple[Path, Path]] = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
        for path in iter_inputs(root, recursive=recursive):
            items.append((path, path.relative_to(root) if root.is_dir() else Path(path.name)))
    if not items:
        raise ValueError(f"no images or videos in {', '.join(map(str, roots))}")
    return items


class Ledger:
    """The job's record of finished files, rewritten atomically after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.files: dict[str, dict] = {}
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
                if raw.get("version") == LEDGER_VERSION and isinstance(raw.get("files"), dict):
                    self.files = raw["files"]
                else:
                    log.warning("%s: unknown ledger format; starting the job from scratch", path)
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable ledger (%s); starting the job from scratch", path, exc)

    def done(self, sha: str) -> dict | None:
        entry = self.files.get(sha)
        if entry and Path(entry["output"]).is_file():
            return entry
        return None

    def record(self, sha: str, entry: dict) -> None:
        self.files[sha] = entry
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": LEDGER_VERSION, "files": self.files}, indent=1))
        tmp.replace(self.path)


def anonymize_file(src: str, dst: str, config: AnonymizerConfig, pack: str | None, crf: int) -> dict:
    """One file, in a Ray worker: anonymize ``src`` into ``dst``; its report, or the error."""
    from .jobs import JobOptions, anonymize_path

    started = time.time()
    entry: dict[str, Any] = {"input": src, "output": dst, "worker": socket.gethostname(), "pid": os.getpid()}
    try:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        report = anonymize_path(src, dst, config, pack=pack, options=JobOptions(crf=crf, quiet=True))
        entry["report"] = report.to_dict()
        if not Path(dst).is_file():
            entry["error"] = f"{dst} was not written"
        elif report.errors and not report.frames:
            entry["error"] = "; ".join(report.errors)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the job; it is reported
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["seconds"] = round(time.time() - started, 3)
    return entry


def _connect(address: str | None, workers: int, extra: dict) -> bool:
    """ray.init for the job; True when this call started Ray (so the job shuts it down)."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(f"--ray needs Ray: pip install 'styleid-edge[cluster]' ({exc})") from exc
    if ray.is_initialized():
        return False
    if address in (None, "", "local"):
        ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False, **extra)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False, **extra)
    return True


def run_archive(inputs: Iterable[str | Path] | str | Path, output_dir: str | Path, config: AnonymizerConfig,
                pack: str | Path | None = None, options: ArchiveOptions | None = None) -> dict:
    """Anonymize every image/video under ``inputs`` into ``output_dir`` with Ray; the merged report."""
    options = options or ArchiveOptions()
    if options.workers < 1:
        raise ValueError("--workers must be at least 1")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: an archive job writes a folder; choose a folder for -o")
    items = _list_inputs(inputs, options.recursive)
    out.mkdir(parents=True, exist_ok=True)
    items = [(s, r) for s, r in items if out.resolve() not in s.resolve().parents]  # never our own outputs
    ledger = Ledger(out / LEDGER)
    started = time.time()
    jobs, skipped, entries = [], 0, {}
    for src, rel in items:
        dst = (out / rel).resolve()
        if dst == src.resolve():
            raise ValueError(f"output {dst} is the input: choose another output folder")
        sha = sha256_file(src)
        done = ledger.done(sha)
        if done is not None:
            if Path(done["output"]) != dst and not dst.exists():  # same content listed under another name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(done["output"], dst)
            entries[str(src)] = {**done, "input": str(src), "output": str(dst), "skipped": True}
            skipped += 1
        else:
            jobs.append((src, dst, sha))
    log.info("archive job: %d file(s), %d already done, %d to do", len(items), skipped, len(jobs))
    if jobs:
        started_ray = _connect(options.ray_address, options.workers, options.ray_init_kwargs)
        import ray

        task = ray.remote(num_cpus=1, max_retries=1)(anonymize_file)
        pack_str = str(Path(pack).resolve()) if pack else None
        pending = {task.remote(str(src.resolve()), str(dst), config, pack_str, options.crf): (src, dst, sha)
                   for src, dst, sha in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    src, dst, sha = pending.pop(ref)
                    try:
                        entry = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - the worker died: report the file, keep going
                        entry = {"input": str(src), "output": str(dst), "error": f"{type(exc).__name__}: {exc}"}
                    entry.update(input=str(src), sha256=sha, finished=time.time())
                    if "error" not in entry:
                        ledger.record(sha, entry)
                    else:
                        log.error("%s: %s", src, entry["error"])
                    entries[str(src)] = entry
                    if options.on_file_done is not None:
                        options.on_file_done(entry)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            log.warning("archive job interrupted: %d file(s) done are in %s; run the same command again to resume",
                        len(ledger.files), ledger.path)
            raise
        finally:
            if started_ray:
                ray.shutdown()
    report = merge_reports([entries[str(src)] for src, _ in items if str(src) in entries])
    report["job"] = {"inputs": len(items), "done_now": len(jobs) - report["job_failed"], "skipped": skipped,
                     "failed": report.pop("job_failed"), "workers": options.workers,
                     "ray_address": options.ray_address or "local", "ledger": str(ledger.path),
                     "seconds": round(time.time() - started, 3)}
    if options.report:
        path = Path(options.report)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(path)
    return report


def merge_reports(entries: list[dict]) -> dict:
    """One report for the job: the per-file reports summed, every file listed."""
    counts = Counter()
    by_method, fallbacks = Counter(), Counter()
    notes, errors, providers = [], [], {}
    files, failed = [], 0
    for e in entries:
        rep = e.get("report") or {}
        for key in ("frames", "faces", "faces_detected", "faces_held", "tracks"):
            counts[key] += int(rep.get(key, 0))
        by_method.update(rep.get("faces_by_method", {}))
        fallbacks.update(rep.get("fallbacks", {}))
        providers.update(rep.get("providers", {}))
        notes += [n for n in rep.get("notes", []) if n not in notes]
        errors += [f"{e['input']}: {x}" for x in rep.get("errors", [])]
        if "error" in e:
            failed += 1
            errors.append(f"{e['input']}: {e['error']}")
        files.append({k: e.get(k) for k in ("input", "output", "sha256", "skipped", "error", "worker", "seconds")
                      if e.get(k) is not None} | {"frames": rep.get("frames", 0), "faces": rep.get("faces", 0),
                                                  "fallbacks": rep.get("fallbacks", {})})
    first = next((e["report"] for e in entries if e.get("report")), {})
    return {"pack": first.get("pack"), "pack_synthetic": first.get("pack_synthetic"), "method": first.get("method"),
            "detector": first.get("detector"), "providers": providers, "notes": notes, **dict(counts),
            "faces_by_method": dict(by_method), "fallbacks": dict(fallbacks),
            "faces_accounted": sum(by_method.values()) == counts["faces"], "errors": errors, "files": files,
            "job_failed": failed}


# --- CLI ------------------------------------------------------------------------------------
def register_archive_args(p: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]`` and ``--workers N`` for ``styleid-edge anonymize``."""
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="spread the files of a folder over a Ray cluster (no ADDRESS: a local one on this "
                        "machine); resumable: files already done are skipped")
    p.add_argument("--workers", type=int, default=None,
                   help="with --ray and a local cluster: files in parallel (default 2)")


def anonymize_with_ray(args: argparse.Namespace) -> int:
    """The ``anonymize --ray`` handler: the same flags as ``anonymize``, the output is a folder."""
    from .backend_args import backend_config
    from .backends import parse_providers

    config = AnonymizerConfig(method=args.method, strength=args.strength, seed=args.seed, target=args.target,
                              detector=args.detector, detector_threshold=args.thresh, min_face=args.min_face,
                              weak_threshold=weak_threshold(args.weak_thresh), detect_angles=args.detect_angles,
                              providers=parse_providers(args.providers), donors=args.donors,
                              **backend_config(args))
    options = ArchiveOptions(workers=2 if args.workers is None else args.workers, ray_address=None if args.ray == "local" else args.ray,
                             crf=args.crf, report=args.report)
    summary = run_archive(args.input, args.output, config, pack=args.pack, options=options)
    job = summary["job"]
    if not args.quiet:
        fb = ", ".join(f"{k}: {v}" for k, v in summary["fallbacks"].items()) or "none"
        print(f"{job['inputs']} files ({job['skipped']} already done, {job['done_now']} now, {job['failed']} failed): "
              f"{summary.get('frames', 0)} frames, {summary.get('faces', 0)} faces anonymized by "
              f"{summary['faces_by_method']}; fallbacks: {fb}")
        for note in summary["notes"]:
            print(f"NOTE: {note}")
        if args.report:
            print(f"report: {args.report}")
    return 1 if job["failed"] else 0
