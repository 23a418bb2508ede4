"""The gateway process: REST (uvicorn) and the gRPC ChatService on one event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib

import uvicorn

from toolwire.grpc_gen.chat.v1 import chat_pb2, chat_pb2_grpc
from toolwire.plumbing.grpc_server import GrpcServer, wait_for_signal
from toolwire.plumbing.internal_security import ClientSecurity

from . import request_log
from .app import build_app
from .auth import Auth
from .chat_service import ChatServicer
from .config import GatewayConfig
from .metrics import Metrics
from .orchestrator import Orchestrator
from .responses.store import open_store

log = logging.getLogger("toolwire.gateway")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def api_keys(config: GatewayConfig) -> list[str]:
    keys = [k.strip() for k in os.environ.get("TOOLWIRE_API_KEYS", "").split(",")]
    return [k for k in keys + list(config.api_key) if k]


def responses_store_url(config: GatewayConfig) -> str:
    """--responses-store, else $TOOLWIRE_RESPONSES_STORE (a Kubernetes Secret can hold a
    database password there), else responses.db in the state directory (made if absent)."""
    if config.responses_store:
        return config.responses_store
    if os.environ.get("TOOLWIRE_RESPONSES_STORE"):
        return os.environ["TOOLWIRE_RESPONSES_STORE"]
    state = pathlib.Path(
        config.state_dir
        or os.path.join(
            os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "toolwire"
        )
    )
    state.mkdir(parents=True, exist_ok=True)
    return str(state / "responses.db")


def _redacted(url: str) -> str:
    """A store URL for the log: a password in it is not printed."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        return f"{head}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def stream_interval(config: GatewayConfig) -> tuple[int, int]:
    """(--stream-interval, --stream-interval-ms)."""
    return config.stream_interval or 0, config.stream_interval_ms or 0


async def serve(args) -> None:
    request_log.setup()
    config = GatewayConfig.from_args(args)
    auth = Auth(api_keys(config))
    host = args.host
    if not auth.enabled and host not in LOOPBACK:
        log.warning(
            "no API key configured (TOOLWIRE_API_KEYS or --api-key): binding to "
            "127.0.0.1 only, not %s",
            host,
        )
        host = "127.0.0.1"
    elif not auth.enabled:
        log.warning("no API key configured: serving without authentication on loopback only")
    orch = Orchestrator(
        list(config.template_addr),
        list(config.decode_addr),
        list(config.extractor_addr),
        list(config.served_model_name),
        Metrics(),
        config.limits,
        ClientSecurity.from_args(args),
        stream_interval=stream_interval(config),
    )
    await orch.connect()
    store_url = responses_store_url(config)
    store = open_store(
        store_url,
        max_age_s=config.responses_max_age,
        max_bytes=config.responses_max_bytes,
    )
    await store.open()
    log.info("stored responses (/v1/responses) in %s", _redacted(store_url))
    grpc_server = GrpcServer(f"{host}:{config.grpc_port}")
    grpc_server.add(
        chat_pb2_grpc.add_ChatServiceServicer_to_server,
        ChatServicer(orch, auth),
        chat_pb2.DESCRIPTOR,
    )
    await grpc_server.start()
    uvicorn_config = uvicorn.Config(
        build_app(orch, auth, store, config.drop_hosted_tools),
        host=host,
        port=args.port,
        log_level="warning",
        lifespan="off",
        http=config.http_parser,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(uvicorn_config)
    # Our own handler stops both servers: uvicorn (0.29 on) takes SIGINT/SIGTERM only while
    # serve() runs, and wait_for_signal's handlers, added once it has started, replace its.
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if task.done():
        raise SystemExit(f"gateway could not listen on {host}:{args.port}")
    log.info(
        "gateway on http://%s:%s/v1 (gRPC ChatService on %s:%s), model %s; a request "
        "without max_tokens stops at %d tokens (--default-max-tokens), max_tokens above %d "
        "is refused",
        host,
        args.port,
        host,
        config.grpc_port,
        ", ".join(orch.names),
        orch.limits.default_max_tokens,
        orch.limits.max_tokens_ceiling,
    )
    await wait_for_signal()
    server.should_exit = True
    await task
    await grpc_server.stop()
    await store.close()
    await orch.close()
