"""Prometheus metrics of the gateway: what a request looked like from the client's side.

Names follow vLLM's (`time_to_first_token_seconds`, `inter_token_latency_seconds`,
`e2e_request_latency_seconds`, `request_prompt_tokens`, ...) under a `toolwire_` prefix, each
labelled by `model_name` (the served model, never the name a client sent).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from toolwire.plumbing.service_metrics import LATENCY_BUCKETS

TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        m = ["model_name"]
        self.model = ""  # the served model, once the template service has said it
        self.requests = Counter(
            "toolwire_requests",
            "Requests by API (rest: chat completions, grpc: the ChatService, responses: "
            "/v1/responses) and HTTP status",
            m + ["api", "status"],
            registry=r,
        )
        self.refused = Counter(
            "toolwire_request_errors",
            "Requests refused or failed, by HTTP status and OpenAI error code",
            m + ["api", "status", "code"],
            registry=r,
        )
        self.success = Counter(
            "toolwire_request_success",
            "Requests finished, by finish reason",
            m + ["finish_reason"],
            registry=r,
        )
        self.length_capped = Counter(
            "toolwire_request_length_capped",
            "Requests without max_tokens that ended at the "
            "server's limit: --default-max-tokens (server_default) or the context (context)",
            m + ["limit"],
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "toolwire_time_to_first_token_seconds",
            "From request to the first generated token",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "toolwire_inter_token_latency_seconds",
            "Between two streamed chunks of one request",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "toolwire_e2e_request_latency_seconds",
            "From request to its last chunk",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Histogram(
            "toolwire_request_prompt_tokens",
            "Prompt tokens per request",
            m,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.generation_tokens = Histogram(
            "toolwire_request_generation_tokens",
            "Generated tokens per request",
            m,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens_generated = Counter(
            "toolwire_tokens_generated", "Completion tokens generated", m, registry=r
        )
        self.tool_calls = Counter(
            "toolwire_tool_calls",
            "Tool calls returned, by tool format and tool_choice mode",
            m + ["format", "tool_choice"],
            registry=r,
        )
        self.strict_violations = Counter(
            "toolwire_strict_violations",
            "Strict tool calls whose arguments failed their schema "
            "after decoding (the constraint should make this 0)",
            m,
            registry=r,
        )
        self.unparsed_arguments = Counter(
            "toolwire_unparsed_arguments",
            "Finished tool calls whose arguments are not JSON",
            m,
            registry=r,
        )
        self.client_disconnects = Counter(
            "toolwire_client_disconnects",
            "Streams whose client left before the end (decoding is aborted)",
            m,
            registry=r,
        )
        self.in_flight = Gauge(
            "toolwire_requests_in_flight",
            "Requests between admission and the end of their response",
            m,
            registry=r,
        )

    def count(self, api: str, status: int, code: str | None = None) -> None:
        """One finished request: by status, and by error code when it failed."""
        self.requests.labels(self.model, api, str(status)).inc()
        if status >= 400:
            self.refused.labels(self.model, api, str(status), code or "").inc()

    def init_model(self, model: str) -> None:
        """Series that must read 0 from the start (an alert on them needs a series)."""
        self.model = model
        for counter in (
            self.strict_violations,
            self.unparsed_arguments,
            self.tokens_generated,
            self.client_disconnects,
        ):
            counter.labels(model)
        for limit in ("server_default", "context"):
            self.length_capped.labels(model, limit)
