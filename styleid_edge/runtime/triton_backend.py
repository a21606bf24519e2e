"""The ``triton`` backend: the pack's heavy models run on Triton Inference Server(s), not here.

``--backend triton --url HOST:PORT[,HOST:PORT...]`` (gRPC by default; ``--backend-option protocol=http``
for Triton's HTTP port). Each pack role is the Triton model ``model_prefix + role`` (what
``styleid-edge serve`` and ``styleid-edge export triton`` create). Backend options:

- ``url``: one or more servers, comma-separated. Requests go round-robin over the servers that are
  up; a server that fails is skipped and retried after a back-off (0.5 s doubling to 10 s, with a
  fresh connection); when every server is in back-off the request fails at once.
- ``timeout_ms`` (default 2000): the deadline of one ``run`` call, retries included.
- ``model_prefix`` (default ""), ``protocol`` (grpc | http), ``backoff_ms`` / ``backoff_max_ms``.

A late or failed request raises :class:`TritonUnavailableError`; the Anonymizer catches model errors
and pixelates those faces (fail closed, counted as ``model_error`` in the report). Nothing is retried
past the deadline, so a dead server costs at most ``timeout_ms`` per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tritonclient.grpc as grpcclient  # noqa: F401 - ImportError here = backend not installed (see backends)
from tritonclient.utils import InferenceServerException

from .backends import SessionOptions

log = logging.getLogger(__name__)

NP_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64",
                np.dtype(np.int32): "INT32", np.dtype(np.uint8): "UINT8"}


class TritonUnavailableError(RuntimeError):
    """No Triton server answered a request in time (every server down, or the deadline passed)."""


@dataclass
class TritonOptions:
    urls: tuple[str, ...]
    protocol: str = "grpc"
    timeout_ms: float = 2000.0
    model_prefix: str = ""
    backoff_ms: float = 500.0
    backoff_max_ms: float = 10000.0

    @classmethod
    def from_backend_options(cls, options: dict[str, Any]) -> "TritonOptions":
        url = options.get("url")
        if not url:
            raise ValueError("--backend triton needs --url HOST:PORT of a Triton server (see styleid-edge serve)")
        urls = tuple(u.strip().removeprefix("grpc://").removeprefix("http://").rstrip("/")
                     for u in str(url).split(",") if u.strip())
        protocol = str(options.get("protocol", "grpc")).lower()
        if protocol not in ("grpc", "http"):
            raise ValueError(f"--backend-option protocol={protocol}: choose grpc or http")
        out = cls(urls=urls, protocol=protocol, timeout_ms=float(options.get("timeout_ms", 2000)),
                  model_prefix=str(options.get("model_prefix", "") or ""),
                  backoff_ms=float(options.get("backoff_ms", 500)),
                  backoff_max_ms=float(options.get("backoff_max_ms", 10000)))
        if out.timeout_ms <= 0:
            raise ValueError("--backend-option timeout_ms must be positive")
        return out


class _Server:
    """One Triton server: its client (recreated after failures), health and counters."""

    def __init__(self, url: str, protocol: str, timeout_s: float):
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self._client: Any = None
        self.down_until = 0.0
        self.failures = 0  # consecutive
        self.served = 0  # successful requests
        self.errors = 0  # failed attempts

    def client(self) -> Any:
        if self._client is None:
            if self.protocol == "grpc":
                import tritonclient.grpc as grpcclient

                self._client = grpcclient.InferenceServerClient(self.url)
            else:
                import tritonclient.http as httpclient

                self._client = httpclient.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                                network_timeout=self.timeout_s)
        return self._client

    def drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass


class ServerPool:
    """Round-robin over the servers that are up; back-off and reconnect for the ones that are not."""

    def __init__(self, options: TritonOptions):
        self.options = options
        self.servers = [_Server(u, options.protocol, options.timeout_ms / 1000.0) for u in options.urls]
        self._next = 0
        self._lock = threading.Lock()

    def candidates(self) -> list[_Server]:
        """Servers to try for one request, in order: those not in back-off, starting at the next in turn."""
        now = time.monotonic()
        with self._lock:
            n = len(self.servers)
            order = [self.servers[(self._next + i) % n] for i in range(n)]
            self._next = (self._next + 1) % n
        return [s for s in order if s.down_until <= now]

    def succeeded(self, server: _Server) -> None:
        with self._lock:
            if server.failures:
                log.info("Triton server %s is back", server.url)
            server.failures = 0
            server.served += 1

    def failed(self, server: _Server, exc: Exception, back_off: bool) -> None:
        with self._lock:
            server.errors += 1
            if not back_off:
                return
            server.failures += 1
            delay = min(self.options.backoff_ms * 2 ** (server.failures - 1), self.options.backoff_max_ms) / 1000.0
            server.down_until = time.monotonic() + delay
            server.drop_client()
        log.warning("Triton server %s failed (%s); skipping it for %.1f s", server.url, exc, delay)

    def stats(self) -> dict[str, dict[str, int]]:
        return {s.url: {"served": s.served, "errors": s.errors, "down": s.down_until > time.monotonic()}
                for s in self.servers}


_POOLS: dict[tuple, ServerPool] = {}
_POOLS_LOCK = threading.Lock()


def server_pool(options: TritonOptions) -> ServerPool:
    """One pool per server list and settings, shared by all models: a server found dead by one is skipped by all."""
    key = (options.urls, options.protocol, options.timeout_ms, options.backoff_ms, options.backoff_max_ms)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ServerPool(options)
        return _POOLS[key]


def close_pools() -> None:
    """Close every connection the triton backend holds (the next request reconnects)."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            for server in pool.servers:
                server.drop_client()


def _is_deadline(exc: Exception) -> bool:
    text = f"{getattr(exc, 'status', lambda: '')()} {exc}".lower()
    return "deadline" in text or "timed out" in text or "timeout" in text


def _local_io(path: Path) -> tuple[list[str], list[str], dict[str, tuple]]:
    """Input/output names and shapes from the pack's own ONNX file (graph only, no weights)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def shape(v) -> tuple:
        return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in v.type.tensor_type.shape.dim)

    inputs = [v for v in graph.input if v.name not in init]
    return [v.name for v in inputs], [v.name for v in graph.output], {v.name: shape(v) for v in inputs}


class TritonRunner:
    """One pack model served by Triton: ``run`` sends the batch, with a deadline, to a live server."""

    def __init__(self, model_name: str, pool: ServerPool, input_names: Sequence[str], output_names: Sequence[str],
                 input_shapes: dict[str, tuple], max_batch: int | None):
        self.model_name = model_name
        self.pool = pool
        self.options = pool.options
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.input_shapes = dict(input_shapes)
        self.max_batch = max_batch  # None: not known yet (asked on the first successful request)
        self.provider = f"Triton {self.options.protocol}://{','.join(self.options.urls)} model {model_name}"

    @classmethod
    def create(cls, path: Path, role: str, options: SessionOptions) -> "TritonRunner":
        opts = TritonOptions.from_backend_options(options.backend_options)
        pool = server_pool(opts)
        name = opts.model_prefix + role
        deadline = time.monotonic() + opts.timeout_ms / 1000.0
        for server in pool.candidates():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                meta, max_batch = _model_info(server, name, remaining)
            except InferenceServerException as exc:
                if "unknown model" in str(exc).lower() or "not found" in str(exc).lower():
                    raise RuntimeError(f"Triton server {server.url} has no model {name!r}: serve the same pack "
                                       "(styleid-edge serve --pack PACK) or set --backend-option model_prefix="
                                       ) from exc
                pool.failed(server, exc, back_off=not _is_deadline(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - any connection problem: try the next server
                pool.failed(server, exc, back_off=True)
                continue
            pool.succeeded(server)
            inputs = meta["inputs"]
            shapes = {i["name"]: tuple(int(d) if int(d) > 0 else None for d in i["shape"]) for i in inputs}
            return cls(name, pool, [i["name"] for i in inputs], [o["name"] for o in meta["outputs"]], shapes,
                       max_batch)
        # No server answered: take the names from the pack's file; requests fail (fail closed) until one does.
        if not Path(path).is_file():
            raise TritonUnavailableError(f"no Triton server at {', '.join(opts.urls)} answered for model {name!r} "
                                         f"and {path} is not here to read its inputs; start `styleid-edge serve`")
        log.warning("no Triton server at %s answered yet; %s takes its inputs from %s", ", ".join(opts.urls),
                    name, path)
        ins, outs, shapes = _local_io(Path(path))
        return cls(name, pool, ins, outs, shapes, None)

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = list(output_names) if output_names else list(self.output_names)
        deadline = time.monotonic() + self.options.timeout_ms / 1000.0
        batch = len(next(iter(feeds.values())))
        step = self.max_batch or batch
        if step >= batch:
            return self._run_once(names, feeds, deadline)
        parts = [self._run_once(names, {k: v[i:i + step] for k, v in feeds.items()}, deadline)
                 for i in range(0, batch, step)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(names))]

    def _run_once(self, names: list[str], feeds: dict[str, np.ndarray], deadline: float) -> list[np.ndarray]:
        tried = []
        for server in self.pool.candidates():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            tried.append(server.url)
            try:
                if self.max_batch is None:
                    self.max_batch = _model_info(server, self.model_name, remaining)[1]
                    if self.max_batch and len(next(iter(feeds.values()))) > self.max_batch:
                        return self.run(names, feeds)  # now that the limit is known, split
                    remaining = deadline - time.monotonic()
                result = _infer(server, self.model_name, names, feeds, remaining)
            except Exception as exc:  # noqa: BLE001 - any failure: next server, or fail closed
                late = _is_deadline(exc)
                self.pool.failed(server, exc, back_off=not late)
                if late:
                    raise TritonUnavailableError(f"Triton model {self.model_name} on {server.url} missed the "
                                                 f"{self.options.timeout_ms:.0f} ms deadline") from exc
                continue
            self.pool.succeeded(server)
            return result
        state = "; ".join(f"{u}: {'down' if s['down'] else 'up'}" for u, s in self.pool.stats().items())
        raise TritonUnavailableError(f"no Triton server answered for model {self.model_name} within "
                                     f"{self.options.timeout_ms:.0f} ms (tried {tried or 'none'}; {state})")

    def stats(self) -> dict[str, dict[str, int]]:
        return self.pool.stats()


def _model_info(server: _Server, name: str, timeout_s: float) -> tuple[dict, int]:
    client = server.client()
    if server.protocol == "grpc":
        meta = client.get_model_metadata(name, as_json=True, client_timeout=timeout_s)
        config = client.get_model_config(name, as_json=True, client_timeout=timeout_s)["config"]
    else:
        meta, config = client.get_model_metadata(name), client.get_model_config(name)
    return meta, int(config.get("max_batch_size", 0) or 0)


def _infer(server: _Server, name: str, output_names: list[str], feeds: dict[str, np.ndarray],
           timeout_s: float) -> list[np.ndarray]:
    client = server.client()
    if server.protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    inputs = []
    for key, value in feeds.items():
        value = np.ascontiguousarray(value)
        if value.dtype not in NP_TO_TRITON:
            raise TypeError(f"input {key}: dtype {value.dtype} is not supported by the triton backend")
        tensor = mod.InferInput(key, list(value.shape), NP_TO_TRITON[value.dtype])
        if server.protocol == "grpc":
            tensor.set_data_from_numpy(value)
        else:
            tensor.set_data_from_numpy(value, binary_data=True)
        inputs.append(tensor)
    if server.protocol == "grpc":
        outputs = [mod.InferRequestedOutput(n) for n in output_names]
        result = client.infer(name, inputs, outputs=outputs, client_timeout=timeout_s)
    else:
        outputs = [mod.InferRequestedOutput(n, binary_data=True) for n in output_names]
        result = client.infer(name, inputs, outputs=outputs)
    return [result.as_numpy(n) for n in output_names]
