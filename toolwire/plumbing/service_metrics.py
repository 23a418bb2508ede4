"""Prometheus endpoints of the gRPC services (`--metrics-port`; `toolwire up` gives each one).

Counts a service already keeps (the engine's steps, the compile pool's hits) are read when
Prometheus scrapes, through callbacks, rather than mirrored on every event; distributions
(histograms) are observed where they happen and registered on the same registry. Every series
carries `model_name`, as vLLM's do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("toolwire")

# Latency buckets in seconds (vLLM's, for comparable dashboards).
LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)


class ServiceMetrics(Collector):
    """One registry per process: callback counters and gauges, plus histograms."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.registry = CollectorRegistry()
        self._values: list[tuple[str, str, str, Callable[[], float]]] = []
        self.registry.register(self)

    def counter(self, name: str, help_text: str, fn: Callable[[], float]) -> None:
        self._values.append(("counter", name, help_text, fn))

    def gauge(self, name: str, help_text: str, fn: Callable[[], float]) -> None:
        self._values.append(("gauge", name, help_text, fn))

    def histogram(self, name: str, help_text: str, buckets=LATENCY_BUCKETS) -> Histogram:
        h = Histogram(name, help_text, ["model_name"], buckets=buckets, registry=self.registry)
        return h.labels(self.model_name)

    def collect(self) -> Iterator:
        for kind, name, help_text, fn in self._values:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, help_text, labels=["model_name"]
            )
            family.add_metric([self.model_name], fn())
            yield family

    def describe(self) -> list:
        return []  # collected only when scraped: the callbacks may not be ready at register

    def serve(self, port: int | None, host: str = "0.0.0.0") -> None:
        """On the service's own host: loopback in `toolwire up`, the pod's address in k8s."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
            log.info("metrics on http://%s:%s/metrics", host, port)
