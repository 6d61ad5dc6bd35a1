"""Serve metric families over HTTP (``/metrics``, OpenMetrics or Prometheus text) from a background thread while a session lasts.

``MetricsServer(addr, collect)`` binds at once, so a bad address is one error line before
anything is attached; it is also a session sink whose ``close`` stops the server (and a
context manager, for a session that never started). ``collect`` returns the families of
the moment (``profiler.views.metrics``); it runs on the server's request threads.
prometheus_client answers in OpenMetrics when the scraper asks for it (Prometheus does),
else in the Prometheus text format.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import Metric

from profiler.errors import MigprofError
from profiler.session import BaseSink

_ADDR = re.compile(r"^(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$")


def parse_addr(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``127.0.0.1:9464``, ``[::1]:9464``, ``localhost:0``; ``:9464`` is every
    IPv4 address) as (host, port); MigprofError naming what is wrong."""
    m = _ADDR.match(text.strip())
    if not m or int(m["port"]) > 65535:
        raise MigprofError(f"--metrics {text}: expected ADDR:PORT (e.g. 127.0.0.1:9464, "
                           "[::1]:9464, :9464 for every address)")
    host = m["v6"] if m["v6"] is not None else m["host"]
    return host or "0.0.0.0", int(m["port"])


class _Collector:
    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class MetricsServer(BaseSink):
    """``collect()``'s families on ``http://ADDR:PORT/metrics`` until ``close()``; as a session
    sink, serving starts with the server and the session's end stops it."""

    def __init__(self, addr: str, collect: Callable[[], Iterable[Metric]]):
        host, port = parse_addr(addr)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(collect))
        try:
            self._httpd, self._thread = start_http_server(port, host, registry)
        except socket.gaierror as e:
            raise MigprofError(f"--metrics {addr}: unknown host {host!r} ({e.strerror or e})") from None
        except OSError as e:
            raise MigprofError(f"--metrics {addr}: cannot listen there ({e.strerror or e})") from None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        """Where it serves (the port the kernel chose, for port 0)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def close(self, health: Mapping[str, Any] | None = None) -> None:
        """Stop serving and free the port (a scrape that comes meanwhile is refused); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def serve_report(addr: str | None, name: str, pid: int, side: str) -> list:
    """--metrics: the model's sink and the HTTP server (last: it stops once all is flushed)."""
    if addr is None:
        return []
    from profiler.views.metrics import ReportMetrics

    model = ReportMetrics(name, pid, side)
    server = MetricsServer(addr, model.collect)
    print(f"migprof: metrics on {server.url}", file=sys.stderr, flush=True)
    return [model, server]


def serve_top(addr: str | None, board: Any) -> list:
    """`top --metrics`: the server over every QEMU the board shows (a session sink)."""
    if addr is None:
        return []
    from profiler.views.metrics import top_collector

    server = MetricsServer(addr, top_collector(board))
    print(f"migprof: metrics on {server.url}", file=sys.stderr, flush=True)
    return [server]
