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
from toolwire.request.limits import Limits

from . import request_log
from .app import build_app
from .auth import Auth
from .chat_service import ChatServicer
from .metrics import Metrics
from .orchestrator import Orchestrator
from .responses.store import open_store

log = logging.getLogger("toolwire.gateway")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def api_keys(args) -> list[str]:
    keys = [k.strip() for k in os.environ.get("TOOLWIRE_API_KEYS", "").split(",")]
    return [k for k in keys + list(args.api_key or []) if k]


def responses_store_url(args) -> str:
    """--responses-store, else $TOOLWIRE_RESPONSES_STORE (a Kubernetes Secret can hold a
    database password there), else responses.db in the state directory (made if absent)."""
    if args.responses_store:
        return args.responses_store
    if os.environ.get("TOOLWIRE_RESPONSES_STORE"):
        return os.environ["TOOLWIRE_RESPONSES_STORE"]
    state = pathlib.Path(
        args.state_dir
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


def stream_interval(args) -> tuple[int, int]:
    """(--stream-interval, --stream-interval-ms)."""
    return args.stream_interval or 0, args.stream_interval_ms or 0


async def serve(args) -> None:
    request_log.setup()
    auth = Auth(api_keys(args))
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
        args.template_addr or ["127.0.0.1:50061"],
        args.decode_addr or ["127.0.0.1:50062"],
        args.extractor_addr or ["127.0.0.1:50063"],
        list(args.served_model_name or []),
        Metrics(),
        Limits.from_args(args),
        ClientSecurity.from_args(args),
        stream_interval=stream_interval(args),
    )
    await orch.connect()
    store = open_store(
        responses_store_url(args),
        max_age_s=args.responses_max_age,
        max_bytes=args.responses_max_bytes,
    )
    await store.open()
    log.info("stored responses (/v1/responses) in %s", _redacted(responses_store_url(args)))
    grpc_server = GrpcServer(f"{host}:{args.grpc_port}")
    grpc_server.add(
        chat_pb2_grpc.add_ChatServiceServicer_to_server,
        ChatServicer(orch, auth),
        chat_pb2.DESCRIPTOR,
    )
    await grpc_server.start()
    config = uvicorn.Config(
        build_app(orch, auth, store, args.drop_hosted_tools),
        host=host,
        port=args.port,
        log_level="warning",
        lifespan="off",
        http=args.http_parser,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
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
        args.grpc_port,
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
