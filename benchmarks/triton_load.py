"""Throughput of `styleid-edge serve` with 1, 2 and 4 concurrent clients, dynamic batching on vs off.

Run:  python benchmarks/triton_load.py --pack PACK [--clients 1,2,4] [--requests 16] [--reps 3]
                                       [--stage encoder|generate] [--threads 0]
      (no --pack: a 32 px synthetic pack is made in a temporary folder; needs the export extra)

For each mode (dynamic batching on with --max-queue-delay-us, then off) a real server is started on
loopback (`python -m styleid_edge.serving.server`, the `serve` command) in its own process; each client
is a thread with its own gRPC connection sending single-face requests back to back:
  encoder   one encoder call per face (what appliances send most)
  generate  encoder -> affine -> synthesis per face (the heavy path of the pixel method)
Prints the median faces/s over --reps runs, the mean batch Triton actually ran (from its Prometheus
metrics: nv_inference_count / nv_inference_exec_count), and the on/off ratio per client count.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media import free_ports  # noqa: E402 - the tests' loopback helpers


def start_server(pack: str, roles: str, extra: list[str], log_path: Path) -> tuple[subprocess.Popen, int, int]:
    http, grpc, metrics = free_ports(3)
    cmd = [sys.executable, "-m", "styleid_edge.serving.server", "--pack", pack, "--roles", roles, "--port", str(grpc),
           "--http-port", str(http), "--metrics-port", str(metrics), *extra]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while "serving " not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"server did not start; see {log_path}")
        time.sleep(0.3)
    return proc, grpc, metrics


def exec_stats(metrics_port: int, models: list[str]) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()

    def value(name: str, model: str) -> float:
        m = re.search(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.e+]+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    return (sum(value("nv_inference_count", m) for m in models),
            sum(value("nv_inference_exec_count", m) for m in models))


def run_load(url: str, pack_shapes: dict, stage: str, clients: int, requests: int) -> float:
    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, *pack_shapes["image"])).astype(np.float32)
    barrier = threading.Barrier(clients + 1)
    errors: list[Exception] = []

    def call(c, model: str, name: str, x: np.ndarray, out: str) -> np.ndarray:
        inp = grpcclient.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return c.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(out)],
                       client_timeout=120).as_numpy(out)

    def one_face(c) -> None:
        w = call(c, "encoder", "image", image, "w_plus")
        if stage == "generate":
            styles = call(c, "affine", "w_plus", w, "styles")
            call(c, "synthesis", "styles", styles, "image")

    def client() -> None:
        c = grpcclient.InferenceServerClient(url)
        try:
            one_face(c)  # warm-up: connection and first run
            barrier.wait()
            for _ in range(requests):
                one_face(c)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"client error: {errors[0]}")
    return clients * requests / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack")
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--requests", type=int, default=16, help="faces per client per run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--stage", choices=["encoder", "generate"], default="encoder")
    ap.add_argument("--max-queue-delay-us", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=0, help="server ONNX Runtime threads (0: all cores)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="triton-load-"))
    pack = args.pack
    if pack is None:
        from styleid_edge.export.pack_writer import make_synthetic_pack

        pack = str(make_synthetic_pack(tmp / "tiny32", resolution=32, channel_multiplier=1, seed=0).root)
    from styleid_edge.runtime.backends import create_session
    from styleid_edge.runtime.pack import ModelPack

    enc = create_session(ModelPack.load(pack).model_path("encoder")).get_inputs()[0]
    shapes = {"image": tuple(enc.shape[1:])}
    models = ["encoder"] if args.stage == "encoder" else ["encoder", "affine", "synthesis"]
    counts = [int(c) for c in args.clients.split(",")]
    results: dict[tuple[str, int], tuple[float, float]] = {}
    for mode, extra in (("on", ["--max-queue-delay-us", str(args.max_queue_delay_us)]),
                        ("off", ["--no-dynamic-batching"])):
        proc, grpc, metrics = start_server(pack, ",".join(models), extra + ["--threads", str(args.threads)],
                                           tmp / f"serve-{mode}.log")
        try:
            for n in counts:
                before = exec_stats(metrics, models)
                fps = [run_load(f"127.0.0.1:{grpc}", shapes, args.stage, n, args.requests) for _ in range(args.reps)]
                after = exec_stats(metrics, models)
                batch = (after[0] - before[0]) / max(after[1] - before[1], 1)
                results[(mode, n)] = (statistics.median(fps), batch)
                print(f"dynamic batching {mode:>3}, {n} client(s): {statistics.median(fps):7.1f} faces/s "
                      f"(median of {args.reps}; runs {', '.join(f'{f:.1f}' for f in fps)}), mean batch {batch:.2f}",
                      flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print(f"\nstage {args.stage}, {args.requests} faces per client per run, {os.cpu_count()} CPU cores")
    print("clients  on faces/s  off faces/s  on/off  scaling(on vs 1 client)")
    for n in counts:
        on, off = results[("on", n)][0], results[("off", n)][0]
        print(f"{n:>7}  {on:10.1f}  {off:11.1f}  {on / off:6.2f}  {on / results[('on', counts[0])][0]:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
