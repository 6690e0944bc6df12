"""Serving ``OperatorMetrics`` over HTTP: ``GET /metrics`` in the text format, gzipped when asked.

A small stdlib server rather than prometheus_client's, because the per-object series are rendered straight from
``OperatorMetrics``' records (see ``exposition``), which prometheus_client's server cannot call.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from managed_secrets.metrics import DEFAULT_METRICS_PORT, OperatorMetrics

__all__ = ["MetricsServer", "start_metrics_server"]


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP server (a daemon thread); ``port`` is the bound port."""

    port: int
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _MetricsHandler(BaseHTTPRequestHandler):
    """``GET /metrics`` (and ``/``): ``OperatorMetrics.exposition()``, gzipped when the scraper accepts it."""

    metrics: OperatorMetrics

    def do_GET(self) -> None:
        if urlsplit(self.path).path not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = self.metrics.exposition()
        gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "")
        if gzipped:
            body = gzip.compress(body, compresslevel=1)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def start_metrics_server(
    metrics: OperatorMetrics,
    port: int = DEFAULT_METRICS_PORT,
    addr: str = "0.0.0.0",  # noqa: S104 - in a pod, Prometheus scrapes the pod IP
) -> MetricsServer:
    """Serves ``metrics`` on ``http://addr:port/metrics`` (port 0 picks a free port) in a daemon thread."""
    handler = type("MetricsHandler", (_MetricsHandler,), {"metrics": metrics})
    server = ThreadingHTTPServer((addr, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    return MetricsServer(port=int(server.server_address[1]), _server=server, _thread=thread)
