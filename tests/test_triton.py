"""Triton serving end to end: a real tritonserver (PyTriton's) on loopback, the triton backend against it.

What an operator relies on: the remote backend gives the same faces as the local one; a dead or late
server never lets a face through (pixelated and counted); several servers share the load and dead ones
are skipped; dynamic batching merges concurrent clients; the exported model repository matches the pack.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="needs the serve extra (nvidia-pytriton)")
pytest.importorskip("tritonclient.grpc", reason="needs the triton extra (tritonclient[grpc,http])")

import media  # noqa: E402
from privacy import decode_frames, identity_scores  # noqa: E402
from styleid_edge.runtime import align  # noqa: E402
from styleid_edge.runtime.anonymizer import Anonymizer, AnonymizerConfig  # noqa: E402
from styleid_edge.runtime.backends import SessionOptions, make_runner  # noqa: E402
from styleid_edge.runtime.jobs import JobOptions, anonymize_path  # noqa: E402
from styleid_edge.runtime.methods import MethodConfig, StyleIDMethods  # noqa: E402
from styleid_edge.runtime.models import PackModels  # noqa: E402
from styleid_edge.runtime.recognize import SAME_PERSON_COSINE  # noqa: E402
from styleid_edge.runtime.triton_backend import (TritonOptions, TritonUnavailableError,  # noqa: E402
                                                 close_pools, server_pool)
from styleid_edge.serving.server import ServeConfig, StyleIDServer  # noqa: E402

SLOW_TIMEOUT_MS = 30000  # the tiny pack's generator takes ~0.3 s per face on 2 CPU cores


class ServeProcess:
    """`python -m styleid_edge.serving.server` (the `serve` command) in its own process group."""

    def __init__(self, pack: Path, log_path: Path, *extra: str):
        self.http, self.grpc, self.metrics = media.free_ports(3)
        self.log_path = log_path
        cmd = [sys.executable, "-m", "styleid_edge.serving.server", "--pack", str(pack), "--port", str(self.grpc),
               "--http-port", str(self.http), "--metrics-port", str(self.metrics), *extra]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while "serving " not in log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"serve did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def kill(self) -> None:
        """SIGKILL the whole process group: the server dies like a crashed machine."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def server(tiny_pack):
    http, grpc, metrics = media.free_ports(3)
    srv = StyleIDServer(ServeConfig(pack=tiny_pack.root, http_port=http, grpc_port=grpc, metrics_port=metrics,
                                    max_batch=16))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def aligned_crops(yunet):
    crops = []
    for name in ("obama.jpg", "biden.jpg", "astronaut.png"):
        image = media.load_photo(name)
        det = max(yunet.detect(image), key=lambda d: d.score)
        crops.append(align.ffhq_crop(image, det.landmarks, 256)[0])
    return np.stack(crops)


def triton_options(url: str, **extra) -> SessionOptions:
    return SessionOptions(backend="triton", backend_options={"url": url, "timeout_ms": SLOW_TIMEOUT_MS, **extra})


# --- parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_generated_faces_match_local_backend(server, tiny_pack, aligned_crops, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    remote = PackModels(tiny_pack, triton_options(url, protocol=protocol))
    local = PackModels(tiny_pack, SessionOptions())
    for method in ("swapper", "pixel"):
        a = StyleIDMethods(remote, MethodConfig(method)).generate(aligned_crops, [1, 2, 3])
        b = StyleIDMethods(local, MethodConfig(method)).generate(aligned_crops, [1, 2, 3])
        assert a.shape == b.shape == (3, 3, 32, 32)
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        assert np.abs(a).mean() > 0.05  # real images, not zeros
    assert all(p.startswith(f"Triton {protocol}://") for p in remote.providers().values()), remote.providers()
    assert set(remote.providers()) >= {"encoder", "mapping", "affine", "synthesis", "mapper"}
    close_pools()  # an idle HTTP keep-alive connection would hold up the server's shutdown


def test_anonymized_frames_match_local_backend(server, tiny_pack):
    # verify=False: the identity check runs locally either way; this compares what the backends make.
    clip = media.moving_faces_clip(n_frames=4, size=(480, 272), seed=2, background="plain")
    outputs, reports = [], []
    for config in (AnonymizerConfig(method="swapper", verify=False),
                   AnonymizerConfig(method="swapper", verify=False, backend="triton",
                                    backend_options={"url": server.grpc_url, "timeout_ms": SLOW_TIMEOUT_MS})):
        anon = Anonymizer(config, pack=tiny_pack.root)
        outputs.append([anon.process(f)[0] for f in clip.frames])
        reports.append(anon.finish().to_dict())
    local, remote = (np.stack(o).astype(int) for o in outputs)
    diff = np.abs(local - remote)
    assert diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert reports[1]["faces_by_method"] == reports[0]["faces_by_method"]
    assert reports[1]["faces_by_method"].get("swapper", 0) >= 6, reports[1]
    pack_models = {k: v for k, v in reports[1]["providers"].items() if not k.startswith(("detector", "verifier"))}
    assert pack_models and all("Triton grpc://" in p for p in pack_models.values()), reports[1]["providers"]
    assert reports[1]["providers"]["detector (yunet)"] == "CPUExecutionProvider"  # the detector runs locally
    for fin, fout, boxes in zip(clip.frames, outputs[1], clip.boxes):  # and the faces did change
        for b in boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in b.xyxy)
            assert np.abs(fin[y1:y2, x1:x2].astype(int) - fout[y1:y2, x1:x2]).mean() > 8


# --- failures ----------------------------------------------------------------------------------
def test_two_servers_one_dead_all_served_by_live_one(server, tiny_pack):
    dead = media.free_ports(1)[0]
    options = triton_options(f"127.0.0.1:{dead},{server.grpc_url}", backoff_ms=60000)
    runner = make_runner(tiny_pack.model_path("encoder"), "encoder", options)
    local = make_runner(tiny_pack.model_path("encoder"), "encoder", SessionOptions())
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    expected = local.run(None, {"image": x})[0]
    for _ in range(6):
        np.testing.assert_allclose(runner.run(None, {"image": x})[0], expected, rtol=1e-3, atol=1e-4)
    stats = runner.stats()
    assert stats[f"127.0.0.1:{dead}"] == {"served": 0, "errors": 1, "down": True}  # tried once, then skipped
    assert stats[server.grpc_url]["served"] >= 6 and stats[server.grpc_url]["errors"] == 0


def test_no_server_fails_fast_backs_off_and_pixelates(tiny_pack, tmp_path):
    dead1, dead2 = media.free_ports(2)
    url = f"127.0.0.1:{dead1},127.0.0.1:{dead2}"
    options = SessionOptions(backend="triton", backend_options={"url": url, "timeout_ms": 5000, "backoff_ms": 300})
    runner = make_runner(tiny_pack.model_path("encoder"), "encoder", options)  # names from the pack's file
    assert runner.input_names == ("image",) and runner.output_names == ("w_plus",)
    x = np.zeros((1, 3, 64, 64), np.float32)
    t = time.perf_counter()
    with pytest.raises(TritonUnavailableError, match="no Triton server answered"):
        runner.run(None, {"image": x})
    with pytest.raises(TritonUnavailableError, match="tried none"):  # both in back-off: fail at once
        runner.run(None, {"image": x})
    assert time.perf_counter() - t < 2.0  # refused connections fail long before the deadline
    errors = sum(s["errors"] for s in runner.stats().values())
    time.sleep(0.7)  # past the back-off: reconnect and try again
    with pytest.raises(TritonUnavailableError):
        runner.run(None, {"image": x})
    assert sum(s["errors"] for s in runner.stats().values()) > errors

    # The Anonymizer fails closed: the face is pixelated and counted, never left as it was.
    image = media.load_photo("obama.jpg")
    anon = Anonymizer(AnonymizerConfig(method="swapper", backend="triton", backend_options=options.backend_options),
                      pack=tiny_pack.root)
    out, faces = anon.process(image)
    assert faces and all(f.method == "pixelate" and f.fallback == "model_error" for f in faces)
    x1, y1, x2, y2 = media.FACE_BOXES["obama.jpg"]
    assert np.abs(out[y1:y2, x1:x2].astype(int) - image[y1:y2, x1:x2]).mean() > 10
    assert anon.finish().fallbacks["model_error"] == len(faces)


def _flatness(region: np.ndarray) -> float:
    """Share of horizontally adjacent pixels that (almost) agree: high for a mosaic, low for a face."""
    g = region.astype(int).sum(axis=2)
    return float((np.abs(np.diff(g, axis=1)) <= 6).mean())


@pytest.mark.slow
def test_server_killed_mid_video_every_face_pixelated(tiny_pack, tmp_path, sface, yunet):
    served = ServeProcess(tiny_pack.root, tmp_path / "serve.log")
    clip = media.moving_faces_clip(n_frames=14, size=(640, 360), path=tmp_path / "in.mp4", audio=True, seed=0)
    backend_options = {"url": served.url, "timeout_ms": SLOW_TIMEOUT_MS}
    pool = server_pool(TritonOptions.from_backend_options(backend_options))
    killed_after = []

    def killer() -> None:
        while pool.servers[0].served < 12 and served.proc.poll() is None:
            time.sleep(0.02)
        killed_after.append(pool.servers[0].served)
        served.kill()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out, report_path = tmp_path / "out.mp4", tmp_path / "report.json"
    try:
        report = anonymize_path(clip.path, out, AnonymizerConfig(method="swapper", backend="triton",
                                                                 backend_options=backend_options),
                                pack=tiny_pack.root, options=JobOptions(quiet=True, report=report_path)).to_dict()
    finally:
        thread.join(60)
        served.kill()
    assert killed_after, "the server was not killed"
    assert report["frames"] == 14 and report["faces_accounted"]
    assert report["fallbacks"].get("model_error", 0) >= 4, report  # the faces after the kill, counted
    assert report["faces_by_method"].get("swapper", 0) >= 2, report  # and the ones before it were generated
    assert report["faces_by_method"]["pixelate"] >= report["fallbacks"]["model_error"]
    frames_in, frames_out = decode_frames(clip.path), decode_frames(out)
    assert len(frames_out) == 14
    for fin, fout, boxes in zip(frames_in, frames_out, clip.boxes):  # no face region left as it was
        for b in boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in b.xyxy)
            assert np.abs(fin[y1:y2, x1:x2].astype(int) - fout[y1:y2, x1:x2]).mean() > 8
    # The last frames come long after the kill: their faces are mosaics.
    for b in clip.boxes[-1]:
        x1, y1, x2, y2 = (int(round(v)) for v in b.xyxy)
        assert _flatness(frames_out[-1][y1:y2, x1:x2]) > _flatness(frames_in[-1][y1:y2, x1:x2]) + 0.2
    scores = identity_scores(frames_in, frames_out, clip.boxes, yunet, sface)
    assert scores.max() < SAME_PERSON_COSINE, scores


# --- load ---------------------------------------------------------------------------------------
def _metric(metrics_port: int, name: str, model: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    m = re.search(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$', text, re.M)
    assert m, f"{name} for {model} not in Triton's metrics"
    return float(m.group(1))


def _load(url: str, clients: int, requests: int) -> float:
    """faces/s with ``clients`` concurrent gRPC clients, each sending ``requests`` single-face encoder calls."""
    import tritonclient.grpc as grpcclient

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    barrier = threading.Barrier(clients + 1)
    errors = []

    def client() -> None:
        c = grpcclient.InferenceServerClient(url)
        inp = grpcclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        c.infer("encoder", [inp])  # warm the connection
        barrier.wait()
        try:
            for _ in range(requests):
                c.infer("encoder", [inp], client_timeout=60)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    assert not errors, errors
    return clients * requests / (time.perf_counter() - start)


@pytest.mark.slow
def test_dynamic_batching_merges_concurrent_clients(tiny_pack, tmp_path):
    results = {}
    for mode, extra in (("on", ["--max-queue-delay-us", "20000"]), ("off", ["--no-dynamic-batching"])):
        served = ServeProcess(tiny_pack.root, tmp_path / f"serve_{mode}.log", "--roles", "encoder", "--threads", "1",
                              *extra)
        try:
            before = (_metric(served.metrics, "nv_inference_count", "encoder"),
                      _metric(served.metrics, "nv_inference_exec_count", "encoder"))
            fps = _load(served.url, clients=4, requests=12)
            after = (_metric(served.metrics, "nv_inference_count", "encoder"),
                     _metric(served.metrics, "nv_inference_exec_count", "encoder"))
            results[mode] = (fps, (after[0] - before[0]) / (after[1] - before[1]))
            # Clean shutdown on SIGTERM: exit code 0, ports released.
            served.proc.send_signal(signal.SIGTERM)
            assert served.proc.wait(60) == 0
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{served.http}/v2/health/live", timeout=2)
        finally:
            served.kill()
    print(f"\n4 clients, single-face encoder requests: dynamic batching on {results['on'][0]:.1f} faces/s "
          f"(mean batch {results['on'][1]:.2f}), off {results['off'][0]:.1f} faces/s (mean batch "
          f"{results['off'][1]:.2f}); ratio on/off {results['on'][0] / results['off'][0]:.2f}")
    assert results["off"][1] == 1.0  # without the batcher every request runs alone
    assert results["on"][1] > 1.5  # with it, concurrent requests share model runs


def test_health_and_metrics_endpoints(server):
    assert server.config.host == "127.0.0.1"
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/encoder/ready", "/v2/models/synthesis/ready"):
        with urllib.request.urlopen(f"http://{server.http_url}{path}", timeout=5) as resp:
            assert resp.status == 200, path
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert 'nv_inference_request_success{model="encoder"' in text


# --- model repository ----------------------------------------------------------------------------
def _parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_export_triton_repository_matches_pack(tiny_pack, tmp_path, capsys):
    from styleid_edge.runtime.backends import create_session
    from styleid_edge.serving.cli import register_export_triton

    parser = argparse.ArgumentParser()
    register_export_triton(parser.add_subparsers())
    repo = tmp_path / "repo"
    args = parser.parse_args(["triton", "--pack", str(tiny_pack.root), "--out", str(repo), "--max-batch", "8",
                              "--instances", "2"])
    assert args.func(args) == 0
    assert "docker run --gpus all" in capsys.readouterr().out
    configs = {p.parent.name: _parse(p) for p in repo.glob("*/config.pbtxt")}
    assert set(configs) == {"encoder", "mapping", "affine", "synthesis", "mapper", "recognizer",
                            "styleid_generate", "styleid_swapper"}
    for role in ("encoder", "mapping", "affine", "synthesis", "mapper", "recognizer"):
        cfg = configs[role]
        assert cfg.name == role and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
        assert cfg.HasField("dynamic_batching") and cfg.instance_group[0].count == 2
        assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_GPU
        session = create_session(tiny_pack.model_path(role))
        for declared, actual in ((cfg.input, session.get_inputs()), (cfg.output, session.get_outputs())):
            assert [t.name for t in declared] == [a.name for a in actual]
            assert [list(t.dims) for t in declared] == [[d if isinstance(d, int) else -1 for d in a.shape[1:]]
                                                        for a in actual]
        assert (repo / role / "1" / "model.onnx").read_bytes() == tiny_pack.model_path(role).read_bytes()
    # Ensembles: every step names a real model and its real tensors; every tensor is produced before use.
    for name in ("styleid_generate", "styleid_swapper"):
        cfg = configs[name]
        assert cfg.platform == "ensemble"
        available = {t.name for t in cfg.input}
        for step in cfg.ensemble_scheduling.step:
            model = configs[step.model_name]
            assert set(step.input_map) == {t.name for t in model.input}
            assert set(step.output_map) <= {t.name for t in model.output}
            assert set(step.input_map.values()) <= available
            available |= set(step.output_map.values())
        assert {t.name for t in cfg.output} <= available
    assert [s.model_name for s in configs["styleid_swapper"].ensemble_scheduling.step] == \
        ["encoder", "mapper", "affine", "synthesis"]
    assert list(configs["styleid_swapper"].output[0].dims) == [3, 32, 32]

    with pytest.raises(FileExistsError, match="--force"):
        args.func(args)
    args = parser.parse_args(["triton", "--pack", str(tiny_pack.root), "--out", str(repo), "--force",
                              "--platform", "onnxruntime-trt", "--no-ensemble", "--kind", "cpu"])
    assert args.func(args) == 0
    cfg = _parse(repo / "synthesis" / "config.pbtxt")
    assert cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU
    assert not (repo / "styleid_swapper").exists()
    args = parser.parse_args(["triton", "--pack", str(tiny_pack.root), "--out", str(tmp_path / "r2"),
                              "--platform", "tensorrt"])
    with pytest.raises(ValueError, match="--plans"):
        args.func(args)


def test_serve_cli_defaults_to_loopback():
    from styleid_edge.serving.cli import register_serve

    parser = argparse.ArgumentParser()
    register_serve(parser.add_subparsers())
    args = parser.parse_args(["serve", "--pack", "p"])
    assert (args.host, args.grpc_port, args.http_port, args.metrics_port) == ("127.0.0.1", 8001, 8000, 8002)
    assert not args.no_dynamic_batching and args.max_batch == 32
