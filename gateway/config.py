"""The gateway's settings, built once from its command line (`toolwire serve gateway`).

Each default is written here and nowhere else: the command line (toolwire/stack/cli.py) takes
its defaults from `DEFAULTS`, the request limits' from `Limits` (toolwire/request/limits.py).
The listening address (--host, --port) and the internal TLS flags (ClientSecurity.from_args)
are the server's, read from the command line as decode's are.

Repeatable flags are held as tuples (the config is frozen). The service addresses are
appended flags whose command-line default is None (argparse would append to a default list):
a flag not given there takes the address below."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from toolwire.request.limits import Limits

ADDRESSES = ("template_addr", "decode_addr", "extractor_addr")


@dataclass(frozen=True)
class GatewayConfig:
    served_model_name: tuple[str, ...] = ()  # aliases clients may use for the model
    grpc_port: int = 50051  # the gRPC ChatService
    api_key: tuple[str, ...] = ()  # accepted bearer keys, besides $TOOLWIRE_API_KEYS
    limits: Limits = Limits()
    stream_interval: int = 0  # hold tokens until this many gathered; 0 or 1: off
    stream_interval_ms: int = 0  # a held token waits at most this long (0: 50 ms)
    responses_store: str | None = None  # None: $TOOLWIRE_RESPONSES_STORE, else in state_dir
    state_dir: str | None = None  # None: $XDG_STATE_HOME/toolwire or ~/.local/state/toolwire
    responses_max_age: float = 30 * 24 * 3600  # seconds; OpenAI keeps 30 days
    responses_max_bytes: int = 16 * 1024 * 1024
    drop_hosted_tools: bool = False
    http_parser: str = "auto"  # auto | h11 | httptools
    template_addr: tuple[str, ...] = ("127.0.0.1:50061",)
    decode_addr: tuple[str, ...] = ("127.0.0.1:50062",)
    extractor_addr: tuple[str, ...] = ("127.0.0.1:50063",)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GatewayConfig:
        """The settings the command line gave; a flag it does not define, or leaves None (an
        address not given), keeps its default."""
        given = vars(args)
        values: dict = {
            "limits": Limits(**{f.name: given[f.name] for f in fields(Limits) if f.name in given})
        }
        for f in fields(cls):
            value = given.get(f.name)
            if f.name == "limits" or value is None or (f.name in ADDRESSES and not value):
                continue  # None: not given (or its default is None)
            values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def but(self, **changes) -> GatewayConfig:
        return replace(self, **changes)


DEFAULTS = GatewayConfig()
