"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("toolwire_requests", "Chat completion requests by outcome",
                                ["api", "status"], registry=self.registry)
        self.time_to_first_token = Histogram(
            "toolwire_time_to_first_token_seconds", "From request to the first generated token",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.tokens_generated = Counter("toolwire_tokens_generated", "Completion tokens generated",
                                        registry=self.registry)
        self.tool_calls = Counter("toolwire_tool_calls", "Tool calls returned",
                                  registry=self.registry)
        self.client_disconnects = Counter(
            "toolwire_client_disconnects", "Streams whose client left before the end (decoding "
            "is aborted)", registry=self.registry)
        self.in_flight = Gauge("toolwire_requests_in_flight",
                               "Requests between admission and the end of their response",
                               registry=self.registry)
