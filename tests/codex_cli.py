"""Codex CLI for the tests that run it against toolwire: the npm package at a pinned version,
installed once into a cache outside the repository (`npm install --prefix`), or the binary
that $TOOLWIRE_CODEX names. The pin moves when a newer Codex has been run against the suite."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import httpx

CODEX_VERSION = "0.169.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "toolwire" / "codex"


def codex_binary() -> Path:
    """The Codex CLI to run; RuntimeError saying why where there is none and npm cannot fetch it."""
    named = os.environ.get("TOOLWIRE_CODEX")
    if named:
        return Path(named)
    binary = CACHE / "node_modules" / ".bin" / "codex"
    if binary.exists() and _version(binary) == CODEX_VERSION:
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH: Codex CLI cannot be installed")
    CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(CACHE),
            "--no-audit",
            "--no-fund",
            "--silent",
            f"@openai/codex@{CODEX_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not binary.exists():
        raise RuntimeError(f"npm install @openai/codex@{CODEX_VERSION} failed:\n{done.stderr}")
    return binary


def _version(binary: Path) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return out.stdout.split()[-1] if out.returncode == 0 and out.stdout.split() else None


def model_catalog(model: str, instructions: str, context_window: int) -> dict:
    """A `model_catalog_json` entry for a model Codex does not ship metadata for: its own short
    base instructions (Codex's default prompt is longer than a small model's context) and
    apply_patch as the freeform Lark tool that Codex's own models get (without an entry Codex
    falls back to metadata that offers no apply_patch at all)."""
    entry = {
        "slug": model,
        "display_name": model,
        "description": "served by toolwire",
        "supported_reasoning_levels": [],
        "shell_type": "shell_command",
        "visibility": "list",
        "supported_in_api": True,
        "priority": 1,
        "availability_nux": None,
        "upgrade": None,
        "base_instructions": instructions,
        "model_messages": None,
        "supports_reasoning_summaries": False,
        "default_reasoning_summary": "none",
        "support_verbosity": False,
        "default_verbosity": None,
        "apply_patch_tool_type": "freeform",
        "truncation_policy": {"mode": "tokens", "limit": 2000},
        "supports_parallel_tool_calls": False,
        "supports_image_detail_original": False,
        "context_window": context_window,
        "auto_compact_token_limit": None,
        "effective_context_window_percent": 95,
        "experimental_supported_tools": [],
        "input_modalities": ["text"],
        "supports_search_tool": False,
    }
    return {"models": [entry]}


def codex_config(base_url: str, model: str, key_env: str, catalog: Path) -> str:
    """A config.toml for Codex on toolwire: the provider on the Responses API (the only wire
    Codex has), the model's entry from `catalog` (model_catalog above), and the tools a local
    server cannot run left out by Codex itself: web search off (else toolwire refuses it by
    name, unless the gateway runs with --drop-hosted-tools), sub-agents and goals off (a few
    thousand tokens of tool schemas)."""
    return f"""\
model = "{model}"
model_provider = "toolwire"
model_catalog_json = "{catalog}"
approval_policy = "never"
sandbox_mode = "read-only"
web_search = "disabled"

[model_providers.toolwire]
name = "toolwire"
base_url = "{base_url}"
env_key = "{key_env}"
wire_api = "responses"

[agents]
enabled = false

[features]
goals = false
apps = false
"""


class RecordingProxy:
    """A loopback HTTP relay in front of the gateway that keeps each request body Codex sent
    (what it asks for is the test's input: its tools, its grammar) and passes the gateway's
    answer through as it streams. It forwards; it answers nothing itself."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.bodies: list[dict] = []
        proxy = self

        class Relay(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._relay(None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.bodies.append(json.loads(body))
                self._relay(body)

            def _relay(self, body: bytes | None) -> None:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                url = proxy.target + self.path.removeprefix("/v1")
                method = "POST" if body is not None else "GET"
                with httpx.stream(method, url, content=body, headers=headers, timeout=600) as r:
                    self.send_response(r.status_code)
                    for k, v in r.headers.items():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for chunk in r.iter_raw():
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
