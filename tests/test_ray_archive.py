"""Archive jobs on a real local Ray cluster: parallel files, interrupted and resumed by content hash."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

ray = pytest.importorskip("ray", reason="needs the cluster extra (ray)")

import media  # noqa: E402
from privacy import decode_frames  # noqa: E402
from styleid_edge.runtime.anonymizer import AnonymizerConfig  # noqa: E402
from styleid_edge.runtime.archive import (LEDGER, ArchiveOptions, anonymize_with_ray,  # noqa: E402
                                          register_archive_args, run_archive)

from conftest import PHOTOS  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    """One small local cluster for the module (starting Ray takes ~10 s)."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture()
def archive(tmp_path):
    src = tmp_path / "archive"
    (src / "day2").mkdir(parents=True)
    for i, name in enumerate(("cam1.mp4", "cam2.mp4", "day2/cam3.mp4")):
        media.moving_faces_clip(n_frames=3, size=(480, 272), path=src / name, audio=False, seed=i,
                                background="plain")
    shutil.copy(PHOTOS / "obama.jpg", src / "photo.jpg")
    return src


class Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.slow
def test_two_workers_interrupted_and_resumed(ray_cluster, archive, tmp_path, tiny_pack):
    out = tmp_path / "out"
    config = AnonymizerConfig(method="swapper")
    done_first = []

    def stop_after_first(entry: dict) -> None:
        done_first.append(entry)
        raise Interrupt()  # Ctrl+C in the driver after one file

    with pytest.raises(Interrupt):
        run_archive(archive, out, config, pack=tiny_pack.root,
                    options=ArchiveOptions(workers=2, on_file_done=stop_after_first))
    ledger = json.loads((out / LEDGER).read_text())["files"]
    assert len(ledger) == 1 and "error" not in done_first[0], done_first
    first_output = done_first[0]["output"]
    first_mtime = (out / first_output).stat().st_mtime_ns

    report_path = tmp_path / "job.json"
    report = run_archive(archive, out, config, pack=tiny_pack.root,
                         options=ArchiveOptions(workers=2, report=report_path))
    job = report["job"]
    assert (job["inputs"], job["skipped"], job["done_now"], job["failed"]) == (4, 1, 3, 0), job
    assert (out / first_output).stat().st_mtime_ns == first_mtime  # the finished file was not redone
    for name in ("cam1.mp4", "cam2.mp4", "day2/cam3.mp4"):
        assert len(decode_frames(out / name)) == 3
    assert (out / "photo.jpg").is_file()
    # One report for the whole job, including the file done before the interruption.
    assert json.loads(report_path.read_text())["job"] == job
    assert report["frames"] == 3 * 3 + 1 and len(report["files"]) == 4
    assert report["faces_accounted"] and report["faces"] >= 2 * 9 + 1
    assert report["faces_by_method"].get("swapper", 0) + sum(report["fallbacks"].values()) == report["faces"]
    assert not report["errors"]

    # A changed file (new content, same name) is done again; the others are skipped by hash.
    media.moving_faces_clip(n_frames=4, size=(480, 272), path=archive / "cam2.mp4", audio=False, seed=9,
                            background="plain")
    report = run_archive(archive, out, config, pack=tiny_pack.root, options=ArchiveOptions(workers=2))
    assert (report["job"]["skipped"], report["job"]["done_now"]) == (3, 1)
    assert len(decode_frames(out / "cam2.mp4")) == 4
    assert report["frames"] == 3 * 2 + 4 + 1


def test_everything_done_needs_no_cluster_and_cli_handler(archive, tmp_path, tiny_pack, capsys):
    """With every file in the ledger the job only hashes: no Ray start, same merged report."""
    out = tmp_path / "out"
    out.mkdir()
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    register_archive_args(parser)
    args = parser.parse_args([str(archive), "--ray", "--workers", "2"])
    assert (args.ray, args.workers) == ("local", 2)
    assert parser.parse_args([str(archive), "--ray", "10.0.0.5:6379"]).ray == "10.0.0.5:6379"
    assert parser.parse_args([str(archive)]).ray is None
    # Pretend a previous run finished every file: outputs and ledger entries (sha256 of the inputs).
    from styleid_edge.runtime.archive import Ledger, sha256_file

    ledger = Ledger(out / LEDGER)
    for path in sorted(p for p in archive.rglob("*") if p.is_file()):
        dst = out / path.relative_to(archive)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dst)
        ledger.record(sha256_file(path), {"input": str(path), "output": str(dst),
                                          "report": {"frames": 1, "faces": 1, "faces_by_method": {"pixelate": 1}}})
    ns = argparse.Namespace(input=str(archive), output=str(out), pack=str(tiny_pack.root), method="pixelate",
                            strength=None, seed=0, target=None, detector="yunet", thresh=None, weak_thresh=None,
                            min_face=24, detect_angles=(-30.0, 30.0),
                            providers="cpu", donors=None, backend="onnxruntime", url=None, backend_option=[],
                            crf=18, report=str(tmp_path / "r.json"), quiet=False, ray="local", workers=2)
    assert anonymize_with_ray(ns) == 0
    printed = capsys.readouterr().out
    assert "4 files (4 already done, 0 now, 0 failed)" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames"] == 4 and report["faces_by_method"] == {"pixelate": 4} and report["faces_accounted"]
