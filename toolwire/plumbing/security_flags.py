"""The internal-security flags and the token's variable (internal_security.py says what they
mean), apart from the gRPC side: the launcher and the CLI's parsers set them up without
loading grpc (20 MB of a process that only starts and watches the services)."""

from __future__ import annotations

import argparse

TOKEN_ENV = "TOOLWIRE_INTERNAL_TOKEN"


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("internal security (token in $TOOLWIRE_INTERNAL_TOKEN)")
    g.add_argument("--tls-cert", help="PEM server certificate chain: serve over TLS")
    g.add_argument("--tls-key", help="PEM private key of --tls-cert")
    g.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates (mTLS)")
    g.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address with neither TLS nor a token",
    )


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calls to the internal services (token in $TOOLWIRE_INTERNAL_TOKEN)")
    g.add_argument(
        "--internal-tls-ca",
        help="PEM CA bundle that signed the services' certificates: call them over TLS",
    )
    g.add_argument("--internal-tls-cert", help="PEM client certificate (for mTLS)")
    g.add_argument("--internal-tls-key", help="PEM private key of --internal-tls-cert")
