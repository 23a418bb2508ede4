"""`toolwire serve <service>` runs one service; `toolwire up` runs all four on loopback."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from toolwire.gateway.config import DEFAULTS as GATEWAY
from toolwire.plumbing.security_flags import add_client_arguments, add_server_arguments
from toolwire.request.limits import Limits
from toolwire.runtime import model_source
from toolwire.runtime.without_torch import keep_torch_out
from toolwire.services.decode.config import DEFAULTS as DECODE
from toolwire.services.template.config import DEFAULTS as TEMPLATE

SERVICES = ("template", "decode", "extractor", "gateway")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=model_source.EMBEDDED,
        help="`embedded` (SmolLM2-135M-Instruct), a model folder, a .gguf file, random:<preset> "
        "(random weights) or null (no model: tokens without a forward, to measure serving)",
    )
    p.add_argument(
        "--served-model-name",
        action="append",
        default=[],
        help="a name clients may use for the model (repeatable; aliases)",
    )
    p.add_argument(
        "--tool-format",
        default=None,
        help="the model's tool format (default: detected from its chat template)",
    )
    p.add_argument("--max-model-len", type=int, default=None)


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        default=DECODE.engine,
        choices=["batch", "torch", "trtllm"],
        help="batch: toolwire's continuous-batching engine over a ggml or torch step (torch is "
        "its old name, kept as an alias); trtllm: TensorRT-LLM on a GPU",
    )
    p.add_argument(
        "--dtype",
        default=DECODE.dtype,
        help="auto | bf16 | fp32 | fp16 | int8 (weight-only int8, Llama family; auto on a CPU)",
    )
    p.add_argument("--device", default=DECODE.device)
    p.add_argument(
        "--step",
        default=DECODE.step,
        choices=["auto", "torch", "ggml"],
        help="the batch engine's forward step: ggml (llama.cpp's kernels on the GGUF as it is), "
        "torch (transformers weights); auto: ggml for a GGUF on the CPU, else torch",
    )
    p.add_argument(
        "--kv-tokens",
        type=int,
        default=DECODE.kv_tokens,
        help="ggml step: KV cache cells shared by all sequences (q8_0, ~12 KB a token on the "
        "embedded model)",
    )
    p.add_argument(
        "--kv-type",
        default=DECODE.kv_type,
        choices=["q8_0", "f16"],
        help="ggml step: the KV cache's type (default q8_0); f16 holds twice the bytes a token "
        "and prefills about a fifth faster on the embedded model (docs/performance.md, The decode step); "
        "refused on the torch step",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=DECODE.threads,
        help="CPU threads of one engine step (torch and ggml steps); default: every CPU this "
        "process may run on, capped by its container's CPU quota (cgroup cpu.max)",
    )
    p.add_argument(
        "--thread-policy",
        default=DECODE.thread_policy,
        choices=["adaptive", "fixed"],
        help="adaptive: each step runs the thread count (up to --threads) that has lately been "
        "fastest, fewer while other processes take the CPUs; fixed: always --threads "
        "(docs/engines.md, Step threads)",
    )
    p.add_argument("--max-batch", type=int, default=DECODE.max_batch)
    p.add_argument(
        "--tensor-parallel-size", type=int, default=DECODE.tensor_parallel_size, help="trtllm only"
    )
    p.add_argument(
        "--kv-cache-fraction", type=float, default=DECODE.kv_cache_fraction, help="trtllm only"
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=DECODE.max_queue,
        help="requests waiting for a decode slot before new ones get 429",
    )
    p.add_argument(
        "--queue-timeout",
        type=float,
        default=DECODE.queue_timeout,
        help="seconds a request may wait for a decode slot before it fails (503)",
    )
    p.add_argument(
        "--prefix-cache-mb",
        type=int,
        default=DECODE.prefix_cache_mb,
        help="torch: memory for finished requests' prompt KV, reused by a later prompt with "
        "the same prefix (LRU); 0 keeps none (running requests still share)",
    )
    p.add_argument(
        "--no-prefix-reuse",
        action="store_true",
        help="torch: prefill every prompt whole (no KV reuse, cached_tokens always 0)",
    )
    p.add_argument(
        "--null-step-ms",
        type=float,
        default=DECODE.null_step_ms,
        help="--model null: how long one engine step takes (a GPU's step time, to measure the "
        "serving path at a given rate); 0: one step per event-loop turn, as fast as it goes",
    )
    p.add_argument(
        "--no-jump-forward",
        action="store_true",
        help="torch: decode text the grammar forces one token a step instead of in one forward",
    )
    p.add_argument(
        "--speculation",
        choices=["auto", "ngram", "off"],
        default=DECODE.speculation,
        help="drafts verified in each forward: ngram (prompt lookup, services/decode/drafts.py; "
        "with --engine trtllm, TensorRT-LLM's own n-gram drafter); auto: ngram on the batch "
        "engine's ggml and Llama torch steps, off with --engine trtllm",
    )


def _template_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grammar-timeout",
        type=float,
        default=TEMPLATE.grammar_timeout,
        help="seconds a request's constraint may take to compile before a 400",
    )
    p.add_argument(
        "--grammar-workers",
        type=int,
        default=TEMPLATE.grammar_workers,
        help="the most processes compiling constraints at once (each holds the vocabulary): "
        "one always runs, more start while every one is busy and exit after a minute unused",
    )


def _gateway_args(p: argparse.ArgumentParser, addresses: bool) -> None:
    p.add_argument(
        "--grpc-port", type=int, default=GATEWAY.grpc_port, help="the gRPC ChatService port"
    )
    p.add_argument(
        "--api-key",
        action="append",
        default=list(GATEWAY.api_key),  # a list: argparse appends to it (a copy)
        help="accepted bearer key (repeatable); also TOOLWIRE_API_KEYS",
    )
    Limits.add_arguments(p.add_argument_group("request limits"))
    p.add_argument(
        "--stream-interval",
        type=int,
        default=GATEWAY.stream_interval,
        metavar="N",
        help="hold a request's tokens until N have gathered (fewer, larger stream chunks); "
        "the first token and the finish are never held; 0 or 1: off (the default)",
    )
    p.add_argument(
        "--stream-interval-ms",
        type=int,
        default=GATEWAY.stream_interval_ms,
        metavar="MS",
        help="with --stream-interval: a held token waits at most this long, whatever the "
        "engine's steps take (0: 50 ms)",
    )
    g = p.add_argument_group("the Responses API (/v1/responses)")
    g.add_argument(
        "--responses-store",
        default=GATEWAY.responses_store,
        metavar="URL",
        help="where stored responses are kept: a SQLite file (a path, or sqlite:///path) or "
        "postgresql://... (every gateway replica pointed at one database); default "
        "$TOOLWIRE_RESPONSES_STORE, else responses.db in --state-dir",
    )
    g.add_argument(
        "--state-dir",
        default=GATEWAY.state_dir,
        help="the gateway's state directory (the default SQLite response store); default "
        "$XDG_STATE_HOME/toolwire or ~/.local/state/toolwire",
    )
    g.add_argument(
        "--responses-max-age",
        type=float,
        default=GATEWAY.responses_max_age,
        metavar="SECONDS",
        help="stored responses older than this are deleted (OpenAI keeps 30 days, the default)",
    )
    g.add_argument(
        "--responses-max-bytes",
        type=int,
        default=GATEWAY.responses_max_bytes,
        metavar="BYTES",
        help="a response whose stored form (input items, output) is larger is refused with "
        "store: true (ask with store: false)",
    )
    g.add_argument(
        "--drop-hosted-tools",
        action="store_true",
        default=GATEWAY.drop_hosted_tools,
        help="leave OpenAI's hosted tools (web_search, file_search, image_generation, ...) out "
        "of a Responses request, logged, instead of refusing it with a 400: Codex sends "
        "web_search by default",
    )
    p.add_argument(
        "--http-parser",
        choices=["auto", "h11", "httptools"],
        default=GATEWAY.http_parser,
        help="uvicorn's HTTP parser; auto takes httptools (installed with toolwire) when it "
        "imports, else h11",
    )
    if addresses:
        # Appended flags: their default is None, and GatewayConfig.from_args takes its own
        # address for one not given (argparse would append to a default list).
        p.add_argument(
            "--template-addr",
            action="append",
            default=None,
            help="template service address (repeatable or comma-separated); calls go round "
            "robin over every address, and over every address a DNS name resolves to; "
            f"default {','.join(GATEWAY.template_addr)}",
        )
        p.add_argument(
            "--decode-addr",
            action="append",
            default=None,
            help="a decode replica (repeatable or comma-separated; a DNS name that "
            "resolves to several addresses counts one replica each); "
            f"default {','.join(GATEWAY.decode_addr)}",
        )
        p.add_argument(
            "--extractor-addr",
            action="append",
            default=None,
            help="an extractor pod (repeatable or comma-separated; a DNS name that resolves "
            "to several addresses counts one pod each): one stream to each, a request "
            f"sticky to one; default {','.join(GATEWAY.extractor_addr)}",
        )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="toolwire", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service")
    services = serve.add_subparsers(dest="service", required=True)
    ports = {"template": 50061, "decode": 50062, "extractor": 50063, "gateway": 8000}
    for name in SERVICES:
        p = services.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=ports[name])
        if name != "gateway":
            p.add_argument(
                "--metrics-port",
                type=int,
                default=None,
                help="serve Prometheus metrics on this port",
            )
            add_server_arguments(p)
        _model_args(p)
        if name == "decode":
            _decode_args(p)
            add_client_arguments(p)  # it dials the extractor pods (routed tokens)
        if name == "template":
            _template_args(p)
        if name == "gateway":
            _gateway_args(p, addresses=True)
            add_client_arguments(p)
    up = sub.add_parser(
        "up",
        help="run all four services on loopback, on the embedded model "
        "unless --model says otherwise",
    )
    up.add_argument("--host", default="127.0.0.1", help="where the gateway listens")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument(
        "--log-file",
        default=None,
        help="append the services' own logs (startup lines, one JSON line per request) to this "
        "file instead of the console; `make up` writes them to toolwire-up.log",
    )
    _model_args(up)
    _decode_args(up)
    up.add_argument(
        "--decode-replicas",
        type=int,
        default=1,
        help="decode processes, each with its own model copy; the gateway sends "
        "each request to the one with the fewest outstanding",
    )
    up.add_argument(
        "--template-replicas", type=int, default=1, help="template processes (round robin)"
    )
    up.add_argument(
        "--extractor-replicas",
        type=int,
        default=1,
        help="extractor processes; each request sticks to one",
    )
    _template_args(up)
    _gateway_args(up, addresses=False)
    health = sub.add_parser(
        "health",
        help="exit 0 if the gRPC service at ADDRESS reports "
        "SERVING, else 1 (for container health checks)",
    )
    health.add_argument("address", nargs="?", default="127.0.0.1:50062")
    health.add_argument("--timeout", type=float, default=3.0)
    return top


def setup_logging() -> None:
    # Read when transformers loads, in the services that load it: its verbosity, and its
    # progress bars (off with the hub's), without importing it here (25 MB in each process).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from toolwire.plumbing.request_context import RequestIdFilter

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s%(request_id)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())  # lines logged for a request name it


async def _health(address: str, timeout: float) -> int:
    import grpc

    from toolwire.plumbing.grpc_server import check_serving

    async with grpc.aio.insecure_channel(address) as channel:  # health needs no token
        return 0 if await check_serving(channel, timeout) else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "health":
        return asyncio.run(_health(args.address, args.timeout))
    setup_logging()
    if args.command == "up":
        from toolwire.stack.launcher import up

        return up(args)
    if args.service != "decode":
        # Only the torch step uses torch; the libraries these services use import it where
        # it is installed (toolwire/runtime/without_torch.py): 185 MB each.
        keep_torch_out()
    if args.service == "template":
        from toolwire.services.template.server import serve
    elif args.service == "decode":
        # Before torch loads: torch's libgomp.so.1 is the OpenMP runtime the ggml step's library
        # then shares (same soname), and it reads this once. Spinning OpenMP threads cost
        # the ggml step 3x its CPU time on a busy 2-core machine (2 threads: 500 ms of CPU for a
        # 16-sequence step, against 153 ms on one thread).
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
        from toolwire.services.decode.server import serve
    elif args.service == "extractor":
        from toolwire.services.extractor.server import serve
    else:
        from toolwire.gateway.server import serve
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
