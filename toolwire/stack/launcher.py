"""`toolwire up`: the four services as child processes on loopback, watched together. A service
that dies is restarted (with back-off) on the same port; the gateway keeps serving meanwhile,
answering 503 for what needs the missing service."""

from __future__ import annotations

import json
import os
import pathlib
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from toolwire.plumbing.security_flags import TOKEN_ENV
from toolwire.request.limits import Limits
from toolwire.runtime.cpus import usable_cpus

CHILD_GRACE_S = 10
BACKOFF_S = (1, 2, 4, 8, 16, 30)  # delay before the n-th restart in a row
STABLE_S = 60  # a service up this long has its back-off reset


def child_pids(ppid: int) -> list[int]:
    """The processes whose parent is ppid, from /proc (Linux)."""
    out = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct ports free now, below the kernel's ephemeral range: a port the kernel hands
    out (bind to 0) can be taken by any outgoing connection before the service binds it."""
    try:
        low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    held: list[socket.socket] = []
    try:
        for port in random.sample(range(10000, max(low, 10000 + 4 * n)), 4 * n + 200):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)  # held until all are found: the n are distinct
            if len(held) == n:
                return [h.getsockname()[1] for h in held]
        raise RuntimeError("no free ports below the ephemeral range")
    finally:
        for s in held:
            s.close()


def _common(args) -> list[str]:
    out = ["--model", args.model]
    for name in args.served_model_name:
        out += ["--served-model-name", name]
    if args.tool_format:
        out += ["--tool-format", args.tool_format]
    if args.max_model_len:
        out += ["--max-model-len", str(args.max_model_len)]
    return out


def commands(args) -> dict[str, list[str]]:
    def several(service: str, n: int) -> list[str]:
        return [f"{service}-{i}" if i else service for i in range(n)]

    replicas = several("decode", args.decode_replicas)
    templates = several("template", args.template_replicas)
    extractors = several("extractor", args.extractor_replicas)
    names = (*templates, *replicas, *extractors)
    picked = free_ports(2 * len(names))
    ports = dict(zip(names, picked))
    metrics_ports = dict(zip(names, picked[len(names) :]))
    base = [sys.executable, "-m", "toolwire.stack.cli", "serve"]
    common = _common(args)
    # Every service serves /metrics too (the gateway on its HTTP port).
    cmds = {
        name: base
        + [name.split("-")[0], "--port", str(port), "--metrics-port", str(metrics_ports[name])]
        + common
        for name, port in ports.items()
    }
    decode_flags = [
        "--engine",
        args.engine,
        "--dtype",
        args.dtype,
        "--device",
        args.device,
        "--step",
        args.step,
        "--kv-tokens",
        str(args.kv_tokens),
        "--max-batch",
        str(args.max_batch),
        "--tensor-parallel-size",
        str(args.tensor_parallel_size),
        "--kv-cache-fraction",
        str(args.kv_cache_fraction),
        "--max-queue",
        str(args.max_queue),
        "--queue-timeout",
        str(args.queue_timeout),
        "--prefix-cache-mb",
        str(args.prefix_cache_mb),
        "--null-step-ms",
        str(args.null_step_ms),
    ]
    # Replicas on one machine share its CPUs: a step thread per CPU in each of them stalls all
    # of them (ggml's threads spin at every op's barrier; two 2-thread decodes on 2 cores:
    # 45-470 ms a token against 8-10 ms alone, 12-14 ms each at one thread).
    threads = args.threads
    if not threads and len(replicas) > 1:
        threads = max(1, usable_cpus() // len(replicas))
    decode_flags += ["--threads", str(threads)] if threads else []
    decode_flags += ["--kv-type", args.kv_type] if args.kv_type else []
    decode_flags += ["--thread-policy", args.thread_policy]
    decode_flags += ["--no-prefix-reuse"] if args.no_prefix_reuse else []
    decode_flags += ["--no-jump-forward"] if args.no_jump_forward else []
    decode_flags += ["--speculation", args.speculation]
    for name in replicas:
        cmds[name] += decode_flags
    for name in templates:
        cmds[name] += [
            "--grammar-timeout",
            str(args.grammar_timeout),
            "--grammar-workers",
            str(args.grammar_workers),
        ]
    cmds["gateway"] = (
        base
        + [
            "gateway",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--grpc-port",
            str(args.grpc_port),
        ]
        + common
        + [f"--{name.split('-')[0]}-addr=127.0.0.1:{port}" for name, port in ports.items()]
    )
    cmds["gateway"] += Limits.from_args(args).as_flags()
    cmds["gateway"] += ["--http-parser", args.http_parser]
    cmds["gateway"] += ["--stream-interval", str(args.stream_interval)]
    cmds["gateway"] += ["--stream-interval-ms", str(args.stream_interval_ms)]
    for key in args.api_key:
        cmds["gateway"] += ["--api-key", key]
    for flag in ("responses_store", "state_dir"):
        if getattr(args, flag) is not None:
            cmds["gateway"] += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    cmds["gateway"] += ["--responses-max-age", str(args.responses_max_age)]
    cmds["gateway"] += ["--responses-max-bytes", str(args.responses_max_bytes)]
    if args.drop_hosted_tools:
        cmds["gateway"].append("--drop-hosted-tools")
    return cmds


def _health(url: str) -> dict | None:
    """The gateway's /health body once every service is serving, else None."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r) if r.status == 200 else None
    except (OSError, ValueError):
        return None


def wait_for_health(url: str, proc: subprocess.Popen, timeout: float = 600) -> dict:
    """Poll a `toolwire up` started as `proc` until its /health is 200; return the body."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"toolwire up exited with code {proc.returncode}")
        status = _health(url)
        if status:
            return status
        time.sleep(0.5)
    raise RuntimeError(f"the stack did not become healthy in {timeout:.0f} s")


class Child:
    """One service process, restarted with back-off when it dies."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log=None):
        self.name, self.cmd, self.env = name, cmd, env
        self.log = log  # a file for the service's stdout and stderr; None: the console
        self.restarts = 0  # in a row, since it last ran STABLE_S
        self.restart_at: float | None = None
        self.start()

    def start(self) -> None:
        self.started = time.monotonic()
        self.restart_at = None
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.log, stderr=self.log)

    def watch(self) -> None:
        """Schedule a restart if it died; start it when its back-off is over."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                print(f"toolwire: restarting the {self.name} service", file=sys.stderr, flush=True)
                self.start()
            return
        if self.proc.poll() is None:
            return
        if now - self.started > STABLE_S:
            self.restarts = 0
        delay = BACKOFF_S[min(self.restarts, len(BACKOFF_S) - 1)]
        self.restarts += 1
        self.restart_at = now + delay
        print(
            f"toolwire: the {self.name} service exited (code {self.proc.returncode}); "
            f"restarting it in {delay} s",
            file=sys.stderr,
            flush=True,
        )


def up(args) -> int:
    children: dict[str, Child] = {}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    health = f"http://{host}:{args.port}/health"
    # Every run gets its own internal token: on a shared machine, another local user's
    # process cannot call the services behind the gateway's back. Passed in the environment,
    # never on a command line (visible in ps).
    env = dict(os.environ, **{TOKEN_ENV: os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)})
    log = open(args.log_file, "ab", buffering=0) if args.log_file else None
    try:
        for name, cmd in commands(args).items():
            children[name] = Child(name, cmd, env, log)
        deadline = time.monotonic() + 600
        ready = False
        while not stopping:
            if not ready:
                # A service that dies before the stack first serves is misconfigured (a port
                # taken, a model that does not load): stop, do not restart it forever.
                dead = [c for c in children.values() if c.proc.poll() is not None]
                if dead:
                    print(
                        f"toolwire: the {dead[0].name} service exited (code "
                        f"{dead[0].proc.returncode})",
                        file=sys.stderr,
                    )
                    return 1
            for child in children.values():
                child.watch()
            status = None if ready else _health(health)
            if status:
                ready = True
                print(
                    f"toolwire is up: base URL http://{host}:{args.port}/v1  "
                    f"model {', '.join(status['models'])}  "
                    f"gRPC ChatService {host}:{args.grpc_port}",
                    flush=True,
                )
            if not ready and time.monotonic() > deadline:
                print("toolwire: services did not become healthy in 600 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        procs = [c.proc for c in children.values()]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + CHILD_GRACE_S
        for p in procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        if log is not None:
            log.close()
