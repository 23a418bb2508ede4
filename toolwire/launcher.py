"""`toolwire up`: the four services as child processes on loopback, watched together."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

CHILD_GRACE_S = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    ports = {name: free_port() for name in ("template", "decode", "extractor")}
    base = [sys.executable, "-m", "toolwire.cli", "serve"]
    common = _common(args)
    cmds = {name: base + [name, "--port", str(port)] + common for name, port in ports.items()}
    cmds["decode"] += ["--engine", args.engine, "--dtype", args.dtype, "--device", args.device,
                       "--max-batch", str(args.max_batch),
                       "--tensor-parallel-size", str(args.tensor_parallel_size),
                       "--kv-cache-fraction", str(args.kv_cache_fraction)]
    cmds["gateway"] = base + ["gateway", "--host", args.host, "--port", str(args.port),
                              "--grpc-port", str(args.grpc_port)] + common + [
        f"--{name}-addr=127.0.0.1:{port}" for name, port in ports.items()]
    for key in args.api_key:
        cmds["gateway"] += ["--api-key", key]
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


def up(args) -> int:
    procs: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    health = f"http://{host}:{args.port}/health"
    try:
        for name, cmd in commands(args).items():
            procs[name] = subprocess.Popen(cmd)
        deadline = time.monotonic() + 600
        ready = False
        while not stopping:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                print(f"toolwire: the {dead[0]} service exited (code {procs[dead[0]].returncode})",
                      file=sys.stderr)
                return 1
            status = None if ready else _health(health)
            if status:
                ready = True
                print(f"toolwire is up: base URL http://{host}:{args.port}/v1  "
                      f"model {', '.join(status['models'])}  "
                      f"gRPC ChatService {host}:{args.grpc_port}", flush=True)
            if not ready and time.monotonic() > deadline:
                print("toolwire: services did not become healthy in 600 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + CHILD_GRACE_S
        for p in procs.values():
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
