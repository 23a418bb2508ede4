"""Targets to addresses: a DNS name that resolves to several (a Kubernetes headless Service)
counts as one address per pod, so the gateway can reach every pod itself (decode replicas,
extractor pods) instead of one picked by the connection."""

from __future__ import annotations

import socket


def split(specs: list[str] | str) -> list[str]:
    """Flags that are repeatable and comma-separated, as one list."""
    specs = [specs] if isinstance(specs, str) else specs
    return [a for spec in specs for a in spec.split(",") if a]


def resolve(targets: list[str]) -> list[str]:
    """Every address the targets name now (a DNS name may give several)."""
    out = []
    for target in targets:
        host, _, port = target.rpartition(":")
        try:
            infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except (socket.gaierror, ValueError):
            out.append(target)  # let gRPC report it; keep the address we knew
            continue
        ips = sorted({str(info[4][0]) for info in infos})  # an INET/INET6 address: a str
        if len(ips) <= 1:
            out.append(target)  # one address: keep the name (TLS checks it)
        else:
            out += [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips]
    return out


def round_robin_target(addresses: list[str]) -> str:
    """A gRPC target for the round_robin policy: one name is resolved by gRPC's DNS resolver
    (every address of a headless Service); several are a static list (`toolwire up`)."""
    if len(addresses) == 1:
        target = addresses[0]
        return (
            target
            if "://" in target or target.startswith(("ipv4:", "ipv6:"))
            else (f"dns:///{target}")
        )
    v6 = any(a.startswith("[") for a in addresses)
    return ("ipv6:" if v6 else "ipv4:") + ",".join(addresses)
