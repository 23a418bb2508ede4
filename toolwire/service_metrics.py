"""Prometheus endpoints of the gRPC services (`--metrics-port`): each service reports the
numbers only it knows, read when Prometheus scrapes."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Gauge, start_http_server


def serve_metrics(port: int | None, values: dict[str, tuple[str, Callable[[], float]]]) -> None:
    """values: metric name -> (help, function giving the current value)."""
    if not port:
        return
    registry = CollectorRegistry()
    for name, (help_text, fn) in values.items():
        Gauge(name, help_text, registry=registry).set_function(fn)
    start_http_server(port, addr="0.0.0.0", registry=registry)
