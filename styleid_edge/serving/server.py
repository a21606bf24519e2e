"""``styleid-edge serve``: the pack's heavy stages in a real Triton Inference Server.

One Triton model per pack role (encoder, mapping, affine, synthesis, and mapper when the pack has
one), each an ONNX Runtime session behind PyTriton (the ``nvidia-pytriton`` wheel bundles a real
``tritonserver`` with its Python backend; it runs on the CPU). Triton's dynamic batcher merges the
requests of many appliances into one batch per model run. Triton's own endpoints serve health
(``/v2/health/live``, ``/v2/health/ready``) and Prometheus metrics (``/metrics`` on the metrics port).
Everything binds 127.0.0.1 unless another host is given; SIGINT/SIGTERM stop the server cleanly.

Run on its own: ``python -m styleid_edge.serving.server --pack PACK``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..runtime.backends import create_session, parse_providers
from ..runtime.pack import ModelPack

log = logging.getLogger(__name__)

SERVED_ROLES = ("encoder", "mapping", "affine", "synthesis", "mapper")  # the heavy stages; recognizer stays local


@dataclass
class ServeConfig:
    """What ``serve`` hosts and where."""

    pack: str | Path
    host: str = "127.0.0.1"  # loopback unless told otherwise (DESIGN security rules)
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    max_batch: int = 32  # Triton max_batch_size of every model; clients split larger batches
    max_queue_delay_us: int = 2000  # how long the dynamic batcher waits to fill a batch
    dynamic_batching: bool = True
    instances: int = 1  # model instances (parallel executions) per model
    providers: Sequence[Any] = field(default_factory=lambda: ["cpu"])
    intra_op_threads: int = 0
    model_prefix: str = ""  # model names are PREFIX + role
    roles: Sequence[str] | None = None  # default: every served role the pack has
    start_timeout_s: float = 120.0


@dataclass
class HostedModel:
    name: str
    role: str
    inputs: list[tuple[str, tuple[int, ...]]]  # name, shape without the batch dimension (-1 = dynamic)
    outputs: list[tuple[str, tuple[int, ...]]]


def prefer_own_libpython() -> bool:
    """Make Triton's Python backend stub load this interpreter's libpython, not the system's.

    The bundled ``triton_python_backend_stub`` links ``libpython3.X.so.1.0`` dynamically; on a machine
    where another build of the same minor version is installed (e.g. Debian's 3.11.2 next to a pyenv
    3.11.7 virtual environment) the stub would run the newer standard library on the older runtime
    and fail in ``multiprocessing``. Prepending this interpreter's LIBDIR to LD_LIBRARY_PATH (inherited
    by the server process only) avoids that. Returns False when this Python has no shared libpython.
    """
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname or not (Path(libdir) / soname).is_file() or not soname.endswith((".so", ".so.1.0")):
        log.warning("this Python (%s) has no shared libpython; Triton's Python backend will load the system's "
                    "libpython%d.%d. If models fail to load, use a Python built with --enable-shared.",
                    sys.executable, *sys.version_info[:2])
        return False
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if not parts or parts[0] != libdir:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir] + [p for p in parts if p != libdir])
    return True


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    """ONNX Runtime shape without the batch dimension; symbolic dimensions become -1."""
    return tuple(int(d) if isinstance(d, int) and d > 0 else -1 for d in list(shape)[1:])


def _make_infer(session: Any, input_names: list[str], output_names: list[str]) -> Callable:
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {n: np.ascontiguousarray(inputs[n], dtype=np.float32) for n in input_names}
        return dict(zip(output_names, session.run(output_names, feeds)))

    return infer


class StyleIDServer:
    """The pack's models in a PyTriton server; ``start()`` / ``stop()`` or use as a context manager."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.pack = ModelPack.load(config.pack)
        roles = list(config.roles) if config.roles else [r for r in SERVED_ROLES if self.pack.has(r)]
        missing = [r for r in roles if not self.pack.has(r)]
        if missing:
            raise ValueError(f"pack {self.pack.root} has no {missing} model(s); serve only roles it has "
                             f"({', '.join(r for r in SERVED_ROLES if self.pack.has(r))})")
        if config.max_batch < 1 or config.instances < 1:
            raise ValueError("--max-batch and --instances must be at least 1")
        self.roles = roles
        self.models: list[HostedModel] = []
        self._triton = None

    # -- addresses -------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.config.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.config.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.config.metrics_port}/metrics"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "StyleIDServer":
        try:
            from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
            from pytriton.triton import Triton, TritonConfig
        except ImportError as exc:
            raise RuntimeError(f"`styleid-edge serve` needs PyTriton: pip install 'styleid-edge[serve]' ({exc})") \
                from exc
        cfg = self.config
        prefer_own_libpython()
        providers = parse_providers(cfg.providers if isinstance(cfg.providers, str) else list(cfg.providers))
        triton = Triton(config=TritonConfig(
            http_address=cfg.host, http_port=cfg.http_port, grpc_address=cfg.host, grpc_port=cfg.grpc_port,
            metrics_address=cfg.host, metrics_port=cfg.metrics_port, exit_timeout_secs=3,
            strict_readiness=True))
        try:
            for role in self.roles:
                path = self.pack.model_path(role)
                session = create_session(path, providers, intra_op_threads=cfg.intra_op_threads, name=path.name)
                ins = [(i.name, _dims(i.shape)) for i in session.get_inputs()]
                outs = [(o.name, _dims(o.shape)) for o in session.get_outputs()]
                name = f"{cfg.model_prefix}{role}"
                batcher = DynamicBatcher(max_queue_delay_microseconds=cfg.max_queue_delay_us) \
                    if cfg.dynamic_batching else None
                triton.bind(
                    model_name=name,
                    infer_func=[_make_infer(session, [n for n, _ in ins], [n for n, _ in outs])
                                for _ in range(cfg.instances)],
                    inputs=[Tensor(name=n, dtype=np.float32, shape=s) for n, s in ins],
                    outputs=[Tensor(name=n, dtype=np.float32, shape=s) for n, s in outs],
                    config=ModelConfig(batching=True, max_batch_size=cfg.max_batch, batcher=batcher),
                    strict=False)
                self.models.append(HostedModel(name, role, ins, outs))
            triton.run()
        except Exception as exc:
            triton.stop()
            raise RuntimeError(f"Triton server did not start ({type(exc).__name__}: {exc}); check that ports "
                               f"{cfg.http_port}, {cfg.grpc_port}, {cfg.metrics_port} on {cfg.host} are free "
                               "(--http-port/--grpc-port/--metrics-port)") from exc
        self._triton = triton
        self.wait_ready(cfg.start_timeout_s)
        log.info("Triton serving %s from %s: gRPC %s, HTTP %s, metrics %s (dynamic batching %s, max batch %d)",
                 ", ".join(m.name for m in self.models), self.pack.root, self.grpc_url, self.http_url,
                 self.metrics_url, "on" if cfg.dynamic_batching else "off", cfg.max_batch)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Block until Triton says the server and every model are ready (HTTP health endpoints)."""
        deadline = time.monotonic() + timeout_s
        urls = [f"http://{self.http_url}/v2/health/ready"] + \
               [f"http://{self.http_url}/v2/models/{m.name}/ready" for m in self.models]
        pending = list(urls)
        while pending:
            try:
                with urllib.request.urlopen(pending[0], timeout=2) as resp:
                    if resp.status == 200:
                        pending.pop(0)
                        continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Triton server not ready after {timeout_s:.0f} s ({pending[0]}); run with -v "
                                   "to see the server log")
            time.sleep(0.2)

    def is_alive(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def stop(self) -> None:
        if self._triton is not None:
            triton, self._triton = self._triton, None
            triton.stop()
            log.info("Triton server stopped")

    def __enter__(self) -> "StyleIDServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_forever(config: ServeConfig, ready: Callable[[StyleIDServer], None] | None = None) -> int:
    """Run until SIGINT/SIGTERM (then stop cleanly, exit 0) or until the server dies (exit 1)."""
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    server = StyleIDServer(config)
    try:
        server.start()
        if ready is not None:
            ready(server)
        while not stop.wait(1.0):
            if not server.is_alive():
                log.error("the Triton server process exited unexpectedly")
                return 1
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from .cli import add_serve_arguments, cmd_serve

    parser = argparse.ArgumentParser(prog="python -m styleid_edge.serving.server")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return cmd_serve(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
