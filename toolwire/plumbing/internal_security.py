"""Who may call the internal services (template, decode, extractor): only the gateway.

Two mechanisms, either or both: TLS (a server certificate; with a client CA, mutual TLS) and a
shared token sent by the gateway in every call's metadata (`TOOLWIRE_INTERNAL_TOKEN`, which
`toolwire up` generates per run and k8s takes from a Secret). A service bound to a non-loopback
address refuses to start with neither, unless `--insecure` says so. grpc.health.v1 stays open:
Kubernetes' gRPC probes send no metadata, and it reveals nothing.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from toolwire.plumbing.security_flags import TOKEN_ENV

log = logging.getLogger("toolwire")

TOKEN_KEY = "x-toolwire-internal-token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
OPEN_METHODS = ("/grpc.health.v1.Health/",)

# Messages carry whole prompts (token ids) and tool schemas: allow more than the 4 MiB default.
# A restarted service is reconnected to within a second, not after grpc's default 2 minutes.
MAX_MESSAGE = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


@dataclass
class ServerSecurity:
    token: str = ""
    cert: bytes | None = None
    key: bytes | None = None
    client_ca: bytes | None = None
    insecure: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerSecurity:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        if args.tls_client_ca and not args.tls_cert:
            raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key")
        return cls(
            token=os.environ.get(TOKEN_ENV, ""),
            cert=_read(args.tls_cert),
            key=_read(args.tls_key),
            client_ca=_read(args.tls_client_ca),
            insecure=args.insecure,
        )

    def check_address(self, host: str) -> None:
        """Refuse an open door: a non-loopback address needs TLS or a token."""
        if host in LOOPBACK or self.cert or self.token:
            return
        if not self.insecure:
            raise SystemExit(
                f"refusing to serve on {host} with neither TLS (--tls-cert/--tls-key) nor a "
                f"token (${TOKEN_ENV}): anyone who can reach it could call it. Pass --insecure "
                "to do it anyway."
            )
        log.warning("serving on %s with neither TLS nor a token (--insecure)", host)

    def credentials(self) -> grpc.ServerCredentials | None:
        if not self.cert:
            return None
        assert self.key is not None, "--tls-cert goes with --tls-key"
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [TokenInterceptor(self.token)] if self.token else []


@dataclass
class ClientSecurity:
    token: str = ""
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientSecurity:
        if bool(args.internal_tls_cert) != bool(args.internal_tls_key):
            raise SystemExit("--internal-tls-cert and --internal-tls-key go together")
        return cls(
            token=os.environ.get(TOKEN_ENV, ""),
            ca=_read(args.internal_tls_ca),
            cert=_read(args.internal_tls_cert),
            key=_read(args.internal_tls_key),
        )

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return ((TOKEN_KEY, self.token),) if self.token else None

    def channel(self, address: str, options=()) -> grpc.aio.Channel:
        options = CHANNEL_OPTIONS + list(options)
        if self.ca is None and self.cert is None:
            return grpc.aio.insecure_channel(address, options=options)
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
        return grpc.aio.secure_channel(address, creds, options=options)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse every call without the shared token (compared in constant time), except health."""

    def __init__(self, token: str):
        self.token = token.encode()

    async def intercept_service(self, continuation, details):
        if details.method.startswith(OPEN_METHODS):
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get(TOKEN_KEY, "")
        if isinstance(given, str):
            given = given.encode()
        if hmac.compare_digest(given, self.token):
            return await continuation(details)
        handler = await continuation(details)
        return _refusal(handler) if handler is not None else None


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def deny(request, context):
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "this service accepts calls from the toolwire gateway only",
        )

    async def deny_stream(request, context):
        await deny(request, context)
        yield  # an async generator, as streaming handlers are

    kw = dict(
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kw)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kw)
