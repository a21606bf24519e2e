"""A tiny threaded HTTP server (stdlib) for the MJPEG and metrics endpoints; loopback by default."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``PORT``, ``:PORT`` or ``HOST:PORT`` -> (host, port); the host defaults to loopback."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080, or just 8080)") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range 0-65535")
    return (host.strip("[]") or default_host), number


CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer is normal (a scraper's time-out, a closed browser tab):
        a debug line, not a traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE):
            log.debug("%s: the client went away (%s)", client_address, exc)
            return
        log.error("HTTP request from %s failed", client_address, exc_info=exc)


def serve_http(host: str, port: int, handle: Callable[[BaseHTTPRequestHandler], None],
               name: str = "http") -> ThreadingHTTPServer:
    """Start a server whose GET requests all go to ``handle(handler)``, in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "styleid-edge"

        def do_GET(self) -> None:
            try:
                handle(self)
            except CLIENT_GONE as exc:
                log.debug("%s %s: the client went away (%s)", name, self.address_string(), exc)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("%s %s: " + fmt, name, self.address_string(), *args)

    try:
        server = _Server((host, port), Handler)
    except OSError as exc:
        raise RuntimeError(f"cannot listen on {host}:{port} for {name} ({exc.strerror}); choose another port "
                           "or stop the program using it") from exc
    server.daemon_threads = True
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("%s endpoint listens on %s: reachable from other machines", name, host)
    threading.Thread(target=server.serve_forever, name=f"{name}-server", daemon=True).start()
    return server


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/stats.json`` (JSON) of a :class:`LiveStats`."""

    def __init__(self, stats, host: str = "127.0.0.1", port: int = 9108) -> None:
        self.stats = stats
        self._server = serve_http(host, port, self._handle, name="metrics")
        self.host, self.port = self._server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics and /stats.json", self.host, self.port)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        if path in ("/metrics", "/"):
            body, ctype = self.stats.prometheus().encode(), "text/plain; version=0.0.4"
        elif path in ("/stats.json", "/stats"):
            body, ctype = self.stats.to_json().encode(), "application/json"
        else:
            handler.send_error(404, "try /metrics or /stats.json")
            return
        handler.send_response(200)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
