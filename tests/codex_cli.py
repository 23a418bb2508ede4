"""Codex CLI for the tests that run it against toolwire: the npm package at a pinned version,
installed once into a cache outside the repository (`npm install --prefix`), or the binary
that $TOOLWIRE_CODEX names. The pin moves when a newer Codex has been run against the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

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


def codex_config(base_url: str, model: str, key_env: str, instructions: Path) -> str:
    """A config.toml for Codex on toolwire: the provider on the Responses API (the only wire
    Codex has), a short instructions file (Codex's own prompt is longer than a small model's
    context), and the tools a local server cannot run left out by Codex itself: web search
    off (else toolwire refuses it by name, unless the gateway runs with --drop-hosted-tools),
    sub-agents and goals off (a few thousand tokens of tool schemas)."""
    return f"""\
model = "{model}"
model_provider = "toolwire"
model_instructions_file = "{instructions}"
model_context_window = 8192
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
