"""`toolwire up`'s own process starts and watches the services; it neither serves nor calls
gRPC, and grpc's import is 20 MB of resident memory (docs/operations.md, "Memory"). Its
parsers, the service commands it builds and its module imports must leave grpc and the
protobuf runtime unloaded."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from toolwire.stack import cli, launcher
args = cli.parser().parse_args(["up", "--model", "embedded"])
commands = launcher.commands(args)
assert {"template", "decode", "extractor", "gateway"} <= set(commands), commands
print(sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "google")))
"""


def test_the_launcher_loads_no_grpc():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
